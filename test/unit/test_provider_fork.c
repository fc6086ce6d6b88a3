/*
 * An application that loads the sks provider with OSSL_PROVIDER_load into its own library
 * context, loads a key through OSSL_STORE, signs, then forks and signs in parent and
 * child. Every signature is verified with the default provider alone, against the public
 * key of the certificate the store returned.
 *
 * usage: test_provider_fork SKS_BINARY PROVIDER_MODULE WORKDIR
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/provider.h>
#include <openssl/store.h>
#include <openssl/x509.h>

#define FAIL(...)                                                                                                      \
    do {                                                                                                               \
        fprintf(stderr, "provider_fork: " __VA_ARGS__);                                                                \
        fputc('\n', stderr);                                                                                           \
        ERR_print_errors_fp(stderr);                                                                                   \
        exit(1);                                                                                                       \
    } while (0)

static void run(const char *cmd)
{
    if (system(cmd) != 0)
        FAIL("command failed: %s", cmd);
}

/* Loads the first object of a type from a URI in a library context. */
static OSSL_STORE_INFO *load(OSSL_LIB_CTX *ctx, const char *uri, int type)
{
    OSSL_STORE_CTX *s = OSSL_STORE_open_ex(uri, ctx, NULL, NULL, NULL, NULL, NULL, NULL);
    OSSL_STORE_INFO *found = NULL;

    if (s == NULL)
        FAIL("OSSL_STORE_open_ex(%s) failed", uri);
    while (found == NULL && !OSSL_STORE_eof(s)) {
        OSSL_STORE_INFO *i = OSSL_STORE_load(s);
        if (i != NULL && OSSL_STORE_INFO_get_type(i) == type)
            found = i;
        else
            OSSL_STORE_INFO_free(i);
    }
    OSSL_STORE_close(s);
    if (found == NULL)
        FAIL("no object of type %d at %s", type, uri);
    return found;
}

static size_t sign(OSSL_LIB_CTX *ctx, EVP_PKEY *key, const char *msg, unsigned char *sig, size_t cap)
{
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    size_t len = cap;

    if (m == NULL || EVP_DigestSignInit_ex(m, NULL, "SHA256", ctx, NULL, key, NULL) != 1
        || EVP_DigestSign(m, sig, &len, (const unsigned char *)msg, strlen(msg)) != 1)
        FAIL("signing \"%s\" failed", msg);
    EVP_MD_CTX_free(m);
    return len;
}

/* Verification in a library context that has only the default provider. */
static void verify(OSSL_LIB_CTX *plain, X509 *cert, const char *msg, const unsigned char *sig, size_t len)
{
    unsigned char *der = NULL;
    const unsigned char *p;
    int n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der);
    EVP_PKEY *pub;
    EVP_MD_CTX *m = EVP_MD_CTX_new();

    p = der;
    pub = n > 0 ? d2i_PUBKEY_ex(NULL, &p, n, plain, NULL) : NULL;
    if (pub == NULL || m == NULL || EVP_DigestVerifyInit_ex(m, NULL, "SHA256", plain, NULL, pub, NULL) != 1
        || EVP_DigestVerify(m, sig, len, (const unsigned char *)msg, strlen(msg)) != 1)
        FAIL("signature over \"%s\" does not verify with the default provider", msg);
    if (strcmp(OSSL_PROVIDER_get0_name(EVP_PKEY_get0_provider(pub)), "default") != 0)
        FAIL("verification key is not held by the default provider");
    EVP_MD_CTX_free(m);
    EVP_PKEY_free(pub);
    OPENSSL_free(der);
}

int main(int argc, char **argv)
{
    char cmd[32768], store[1024], uri[] = "sks:name=forktest";
    OSSL_LIB_CTX *ctx, *plain;
    OSSL_PROVIDER *dflt, *sks, *plain_dflt;
    OSSL_STORE_INFO *ki, *ci;
    EVP_PKEY *key;
    X509 *cert;
    unsigned char sig[512];
    size_t len;
    pid_t pid;
    int status;

    if (argc != 4)
        FAIL("usage: test_provider_fork SKS_BINARY PROVIDER_MODULE WORKDIR");
    snprintf(store, sizeof(store), "%s/fork-store.db", argv[3]);
    snprintf(cmd, sizeof(cmd), "rm -f '%s' '%s.key' '%s.issuer-ca.pem' && '%s' --store '%s' init >/dev/null && "
             "'%s' --store '%s' generate --name forktest --algorithm P-256 >/dev/null",
             store, store, store, argv[1], store, argv[1], store);
    run(cmd);
    setenv("SKS_STORE", store, 1);

    /* The application's own library context: default first, then sks by path. */
    ctx = OSSL_LIB_CTX_new();
    plain = OSSL_LIB_CTX_new();
    dflt = OSSL_PROVIDER_load(ctx, "default");
    sks = OSSL_PROVIDER_load(ctx, argv[2]);
    plain_dflt = OSSL_PROVIDER_load(plain, "default");
    if (ctx == NULL || plain == NULL || dflt == NULL || sks == NULL || plain_dflt == NULL)
        FAIL("cannot load the providers (sks from %s)", argv[2]);

    ki = load(ctx, uri, OSSL_STORE_INFO_PKEY);
    ci = load(ctx, uri, OSSL_STORE_INFO_CERT);
    key = OSSL_STORE_INFO_get1_PKEY(ki);
    cert = OSSL_STORE_INFO_get1_CERT(ci);
    if (EVP_PKEY_get0_provider(key) != sks)
        FAIL("the loaded key is not held by the sks provider");

    len = sign(ctx, key, "before fork", sig, sizeof(sig));
    verify(plain, cert, "before fork", sig, len);

    fflush(NULL);
    pid = fork();
    if (pid < 0)
        FAIL("fork failed");
    if (pid == 0) {
        len = sign(ctx, key, "in the child", sig, sizeof(sig));
        verify(plain, cert, "in the child", sig, len);
        _exit(0);
    }
    len = sign(ctx, key, "in the parent", sig, sizeof(sig));
    verify(plain, cert, "in the parent", sig, len);
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        FAIL("the child failed to sign");
    len = sign(ctx, key, "after the child", sig, sizeof(sig));
    verify(plain, cert, "after the child", sig, len);

    printf("provider_fork: signed and verified before fork, in child and parent, and after\n");
    EVP_PKEY_free(key);
    X509_free(cert);
    OSSL_STORE_INFO_free(ki);
    OSSL_STORE_INFO_free(ci);
    OSSL_PROVIDER_unload(sks);
    OSSL_PROVIDER_unload(dflt);
    OSSL_PROVIDER_unload(plain_dflt);
    OSSL_LIB_CTX_free(ctx);
    OSSL_LIB_CTX_free(plain);
    return 0;
}
