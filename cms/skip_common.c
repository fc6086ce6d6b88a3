/* The SKIP rules shared by the device and the issuer (see skip_common.h). */
#include "skip_common.h"

#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/x509.h>

/* Large enough for Z on secp521r1 (66 bytes), the largest supported curve. */
#define SKIP_MAX_Z 72

int skip_derive_aes_key(EVP_PKEY *own_private, EVP_PKEY *peer_public, int aes_bits, uint8_t key[32])
{
    EVP_PKEY_CTX *c = NULL;
    uint8_t z[SKIP_MAX_Z];
    size_t zlen = sizeof(z), klen = (size_t)aes_bits / 8;
    int ok = 0;

    if (aes_bits != 128 && aes_bits != 256)
        return 0;
    /* OpenSSL's ECDH output is already the x coordinate left-padded to the field size, so
     * the "full field length" Z needs no further padding. */
    c = EVP_PKEY_CTX_new_from_pkey(NULL, own_private, NULL);
    if (c == NULL || EVP_PKEY_derive_init(c) != 1 || EVP_PKEY_CTX_set_ecdh_kdf_type(c, EVP_PKEY_ECDH_KDF_NONE) != 1
        || EVP_PKEY_derive_set_peer(c, peer_public) != 1 || EVP_PKEY_derive(c, z, &zlen) != 1 || zlen < klen)
        goto done;
    /* CKD_NULL truncation: the key is the *rightmost* bytes of Z. */
    memcpy(key, z + (zlen - klen), klen);
    ok = 1;
done:
    OPENSSL_cleanse(z, sizeof(z));
    if (!ok)
        OPENSSL_cleanse(key, 32);
    EVP_PKEY_CTX_free(c);
    return ok;
}

/* SPKI DER with the point uncompressed, whatever form the key was decoded from. */
static int uncompressed_spki(EVP_PKEY *pub, unsigned char **der)
{
    EVP_PKEY *copy = EVP_PKEY_dup(pub);
    int len = -1;

    if (copy != NULL
        && EVP_PKEY_set_utf8_string_param(copy, OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT,
                                          OSSL_PKEY_EC_POINT_CONVERSION_FORMAT_UNCOMPRESSED)
               == 1)
        len = i2d_PUBKEY(copy, der);
    EVP_PKEY_free(copy);
    return len;
}

int skip_session_id(EVP_PKEY *factory_public, char out[33])
{
    static const char B64URL[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    unsigned char *der = NULL, md[32];
    int len, i;

    out[0] = '\0';
    if (EVP_PKEY_get_base_id(factory_public) != EVP_PKEY_EC || (len = uncompressed_spki(factory_public, &der)) <= 0)
        return 0;
    if (EVP_Digest(der, (size_t)len, md, NULL, EVP_sha256(), NULL) != 1) {
        OPENSSL_free(der);
        return 0;
    }
    OPENSSL_free(der);
    /* 32 characters of 6 bits each: the first 192 bits of the hash, most significant first. */
    for (i = 0; i < 32; i++) {
        int bit = i * 6, byte = bit / 8, shift = bit % 8;
        unsigned v = ((unsigned)md[byte] << 8 | (unsigned)md[byte + 1]) >> (10 - shift);
        out[i] = B64URL[v & 63];
    }
    out[32] = '\0';
    return 1;
}
