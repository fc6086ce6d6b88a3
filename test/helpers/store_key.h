/* The test helpers' one way of loading a private key through OSSL_STORE (an sks: URI). */
#ifndef SKS_TEST_STORE_KEY_H
#define SKS_TEST_STORE_KEY_H

#include <openssl/evp.h>
#include <openssl/store.h>

/* The first private key the URI yields, or NULL. */
static inline EVP_PKEY *load_key(const char *uri)
{
    OSSL_STORE_CTX *s = OSSL_STORE_open(uri, NULL, NULL, NULL, NULL);
    EVP_PKEY *key = NULL;

    while (s != NULL && key == NULL && !OSSL_STORE_eof(s)) {
        OSSL_STORE_INFO *i = OSSL_STORE_load(s);
        if (i != NULL && OSSL_STORE_INFO_get_type(i) == OSSL_STORE_INFO_PKEY)
            key = OSSL_STORE_INFO_get1_PKEY(i);
        OSSL_STORE_INFO_free(i);
    }
    OSSL_STORE_close(s);
    return key;
}

#endif
