/*
 * A long-running application for the integration tests: loads one key through the sks
 * provider once, then signs whenever a line on stdin asks, so a test can change the device
 * underneath it (pull a card, put it back) and see what the same process gets next.
 *
 *   sks_sign_loop URI        (providers: default and sks; OPENSSL_MODULES finds sks)
 *
 * stdin lines and their answers on stdout:
 *   sign MESSAGE   ok HEX-SIGNATURE (SHA-256, the key's own scheme)  |  error MESSAGES
 *   bench N        bench N SECONDS (N signatures, one after the other)  |  error MESSAGES
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/provider.h>
#include <openssl/store.h>

#include "store_key.h"

/* The error queue on one line, so the test reads one answer per request. */
static int print_error(const char *str, size_t len, void *u)
{
    (void)u;
    printf(" %.*s", (int)(len && str[len - 1] == '\n' ? len - 1 : len), str);
    return 1;
}

static void answer_error(void)
{
    printf("error");
    ERR_print_errors_cb(print_error, NULL);
    printf("\n");
}

static int sign(EVP_PKEY *key, const char *msg, unsigned char *sig, size_t *len)
{
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    /* Ed25519 takes no separate digest */
    const char *md = EVP_PKEY_is_a(key, "ED25519") ? NULL : "SHA256";
    int ok = m != NULL && EVP_DigestSignInit_ex(m, NULL, md, NULL, NULL, key, NULL) == 1
             && EVP_DigestSign(m, sig, len, (const unsigned char *)msg, strlen(msg)) == 1;

    EVP_MD_CTX_free(m);
    return ok;
}

static void do_sign(EVP_PKEY *key, const char *msg)
{
    unsigned char sig[1024];
    size_t len = sizeof(sig), i;

    if (!sign(key, msg, sig, &len)) {
        answer_error();
        return;
    }
    printf("ok ");
    for (i = 0; i < len; i++)
        printf("%02x", sig[i]);
    printf("\n");
}

static void do_bench(EVP_PKEY *key, int n)
{
    unsigned char sig[1024];
    struct timespec a, b;
    int i;

    clock_gettime(CLOCK_MONOTONIC, &a);
    for (i = 0; i < n; i++) {
        size_t len = sizeof(sig);
        if (!sign(key, "bench", sig, &len)) {
            answer_error();
            return;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("bench %d %.6f\n", n, (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9);
}

int main(int argc, char **argv)
{
    char line[4096];
    EVP_PKEY *key;

    if (argc != 2) {
        fprintf(stderr, "usage: sks_sign_loop URI\n");
        return 2;
    }
    if (OSSL_PROVIDER_load(NULL, "default") == NULL || OSSL_PROVIDER_load(NULL, "sks") == NULL
        || (key = load_key(argv[1])) == NULL) {
        fprintf(stderr, "sks_sign_loop: cannot load %s:\n", argv[1]);
        ERR_print_errors_fp(stderr);
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    while (fgets(line, sizeof(line), stdin) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        if (strncmp(line, "sign ", 5) == 0)
            do_sign(key, line + 5);
        else if (strncmp(line, "bench ", 6) == 0)
            do_bench(key, atoi(line + 6));
        else
            printf("error unknown request: %s\n", line);
        ERR_clear_error();
        fflush(stdout);
    }
    EVP_PKEY_free(key);
    return 0;
}
