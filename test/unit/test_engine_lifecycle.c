/*
 * An application that uses the sks ENGINE the way openssl's -keyform engine does: it loads
 * the engine, initialises it, loads a key, finishes the engine at once and only then signs
 * with the key; the signature is verified by the default provider against the key's
 * certificate. It frees the engine and signs again: the engine, loaded by path, is in no
 * list and is destroyed, and the key it handed out and the default provider it loaded must
 * keep working. Then it exits: under scripts/test.sh --sanitize (CTest runs with
 * LeakSanitizer) nothing the engine and the provider it loaded allocated may be left at exit.
 *
 * usage: test_engine_lifecycle SKS_BINARY ENGINE_MODULE PROVIDER_DIR WORKDIR
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/engine.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#define FAIL(...)                                                                                                      \
    do {                                                                                                               \
        fprintf(stderr, "engine_lifecycle: " __VA_ARGS__);                                                             \
        fputc('\n', stderr);                                                                                           \
        ERR_print_errors_fp(stderr);                                                                                   \
        exit(1);                                                                                                       \
    } while (0)

static ENGINE *load_engine(const char *module)
{
    ENGINE *e;

    ENGINE_load_dynamic();
    if ((e = ENGINE_by_id("dynamic")) == NULL || !ENGINE_ctrl_cmd_string(e, "SO_PATH", module, 0)
        || !ENGINE_ctrl_cmd_string(e, "ID", "sks", 0) || !ENGINE_ctrl_cmd_string(e, "LOAD", NULL, 0))
        FAIL("cannot load the engine %s", module);
    return e;
}

/* The certificate `sks cert` writes for the key: the one the signature must verify against. */
static X509 *key_certificate(const char *sks, const char *store, const char *workdir)
{
    char cmd[16384], path[4096];
    FILE *f;
    X509 *cert;

    snprintf(path, sizeof(path), "%s/engine-key.pem", workdir);
    snprintf(cmd, sizeof(cmd), "'%s' --store '%s' cert --name engkey > '%s'", sks, store, path);
    if (system(cmd) != 0 || (f = fopen(path, "r")) == NULL)
        FAIL("command failed: %s", cmd);
    cert = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if (cert == NULL)
        FAIL("no certificate in %s", path);
    return cert;
}

static void sign_and_verify(EVP_PKEY *key, X509 *cert)
{
    static const unsigned char msg[] = "signed after ENGINE_finish";
    unsigned char sig[512];
    size_t len = sizeof(sig);
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    EVP_PKEY *pub = X509_get0_pubkey(cert);

    if (m == NULL || EVP_DigestSignInit(m, NULL, EVP_sha256(), NULL, key) != 1
        || EVP_DigestSign(m, sig, &len, msg, sizeof(msg)) != 1)
        FAIL("signing with the key from the engine failed after ENGINE_finish");
    EVP_MD_CTX_free(m);
    if (pub == NULL || (m = EVP_MD_CTX_new()) == NULL
        || EVP_DigestVerifyInit_ex(m, NULL, "SHA256", NULL, "provider=default", pub, NULL) != 1
        || EVP_DigestVerify(m, sig, len, msg, sizeof(msg)) != 1)
        FAIL("the signature does not verify with the default provider");
    EVP_MD_CTX_free(m);
}

int main(int argc, char **argv)
{
    char cmd[32768], store[1024];
    ENGINE *e;
    EVP_PKEY *key;
    X509 *cert;

    if (argc != 5)
        FAIL("usage: test_engine_lifecycle SKS_BINARY ENGINE_MODULE PROVIDER_DIR WORKDIR");
    snprintf(store, sizeof(store), "%s/engine-store.db", argv[4]);
    snprintf(cmd, sizeof(cmd), "rm -f '%s' '%s.key' '%s.issuer-ca.pem' && '%s' --store '%s' init >/dev/null && "
             "'%s' --store '%s' generate --name engkey --algorithm P-256 >/dev/null",
             store, store, store, argv[1], store, argv[1], store);
    if (system(cmd) != 0)
        FAIL("command failed: %s", cmd);
    setenv("SKS_STORE", store, 1);
    setenv("OPENSSL_MODULES", argv[3], 1);
    cert = key_certificate(argv[1], store, argv[4]);

    e = load_engine(argv[2]);
    if (!ENGINE_init(e))
        FAIL("ENGINE_init failed");
    key = ENGINE_load_private_key(e, "sks:name=engkey", NULL, NULL);
    /* as openssl's load_key does: the engine is finished as soon as the key is loaded */
    ENGINE_finish(e);
    if (key == NULL)
        FAIL("ENGINE_load_private_key(sks:name=engkey) failed");
    sign_and_verify(key, cert);
    /* An engine loaded by path is in no list: freeing it destroys it. Its key, and the
     * default provider the engine loaded (the process's only one), must still work. */
    ENGINE_free(e);
    sign_and_verify(key, cert);
    EVP_PKEY_free(key);
    X509_free(cert);
    printf("engine_lifecycle: signed after ENGINE_finish and after ENGINE_free, verified\n");
    return 0;
}
