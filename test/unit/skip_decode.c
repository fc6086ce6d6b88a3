/*
 * An application that decodes a SKIP package with OSSL_DECODER_CTX_new_for_pkey, as any
 * OpenSSL 3 program decodes a key file, and signs with the key it gets. The sks provider
 * and its skip-trust come from OPENSSL_CONF. Used by test/python/test_skip_provider.py.
 *
 * usage: skip_decode PACKAGE DER|PEM EC|ED25519|any MESSAGE SIGNATURE_OUT
 * Prints "provider: NAME" and the key's public half (PEM); exit 1 with OpenSSL's errors.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/decoder.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/provider.h>

static void fail(const char *what)
{
    fprintf(stderr, "skip_decode: %s\n", what);
    ERR_print_errors_fp(stderr);
    exit(1);
}

static EVP_PKEY *decode(const char *path, const char *input, const char *keytype)
{
    EVP_PKEY *pkey = NULL;
    OSSL_DECODER_CTX *dctx = OSSL_DECODER_CTX_new_for_pkey(&pkey, input, NULL, strcmp(keytype, "any") ? keytype : NULL,
                                                           EVP_PKEY_KEYPAIR, NULL, NULL);
    BIO *in = BIO_new_file(path, "rb");

    if (dctx == NULL || in == NULL)
        fail("cannot set up the decoder");
    if (OSSL_DECODER_from_bio(dctx, in) != 1 || pkey == NULL)
        fail("the package does not decode to a key");
    BIO_free(in);
    OSSL_DECODER_CTX_free(dctx);
    return pkey;
}

static void sign(EVP_PKEY *key, const char *message_path, const char *sig_path)
{
    unsigned char msg[4096], sig[1024];
    size_t n, siglen = sizeof(sig);
    FILE *f = fopen(message_path, "rb");
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    const char *md = EVP_PKEY_is_a(key, "ED25519") ? NULL : "SHA256";

    if (f == NULL)
        fail("cannot read the message");
    n = fread(msg, 1, sizeof(msg), f);
    fclose(f);
    if (m == NULL || EVP_DigestSignInit_ex(m, NULL, md, NULL, NULL, key, NULL) != 1
        || EVP_DigestSign(m, sig, &siglen, msg, n) != 1)
        fail("signing failed");
    EVP_MD_CTX_free(m);
    if ((f = fopen(sig_path, "wb")) == NULL || fwrite(sig, 1, siglen, f) != siglen || fclose(f) != 0)
        fail("cannot write the signature");
}

int main(int argc, char **argv)
{
    EVP_PKEY *key;

    if (argc != 6) {
        fprintf(stderr, "usage: skip_decode PACKAGE DER|PEM EC|ED25519|any MESSAGE SIGNATURE_OUT\n");
        return 2;
    }
    key = decode(argv[1], argv[2], argv[3]);
    printf("provider: %s\n", OSSL_PROVIDER_get0_name(EVP_PKEY_get0_provider(key)));
    PEM_write_PUBKEY(stdout, key);
    sign(key, argv[4], argv[5]);
    EVP_PKEY_free(key);
    return 0;
}
