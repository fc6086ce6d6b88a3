/* The provider's key object, shared by keymgmt, the operations and the store. */
#include "provider.h"

#include <string.h>

#include <openssl/crypto.h>

sks_key *sks_key_new(sks_provctx *ctx, sks_key_kind kind)
{
    sks_key *k = OPENSSL_zalloc(sizeof(*k));

    if (k == NULL)
        return NULL;
    k->ctx = ctx;
    k->kind = kind;
    k->refs = 1;
    pthread_mutex_init(&k->ref_lock, NULL);
    return k;
}

int sks_key_up_ref(sks_key *k)
{
    pthread_mutex_lock(&k->ref_lock);
    k->refs++;
    pthread_mutex_unlock(&k->ref_lock);
    return 1;
}

void sks_key_free(sks_key *k)
{
    int refs;
    size_t i;

    if (k == NULL)
        return;
    pthread_mutex_lock(&k->ref_lock);
    refs = --k->refs;
    pthread_mutex_unlock(&k->ref_lock);
    if (refs > 0)
        return;
    EVP_PKEY_free(k->pub);
    if (k->pin != NULL)
        OPENSSL_clear_free(k->pin, strlen(k->pin));
    for (i = 0; k->endorsed != NULL && k->endorsed[i] != NULL; i++)
        OPENSSL_free(k->endorsed[i]);
    OPENSSL_free(k->endorsed);
    OPENSSL_free(k->name);
    pthread_mutex_destroy(&k->ref_lock);
    OPENSSL_free(k);
}

int sks_key_endorses(const sks_key *k, const char *uri)
{
    size_t i;

    if (k->endorsed == NULL || k->endorsed[0] == NULL)
        return 1;
    for (i = 0; k->endorsed[i] != NULL; i++)
        if (strcmp(k->endorsed[i], uri) == 0)
            return 1;
    return 0;
}

const char *sks_kind_name(sks_key_kind kind)
{
    switch (kind) {
    case SKS_KIND_EC:
        return "EC";
    case SKS_KIND_RSA:
        return "RSA";
    case SKS_KIND_RSA_PSS:
        return "RSA-PSS";
    case SKS_KIND_ED25519:
        return "ED25519";
    }
    return "?";
}
