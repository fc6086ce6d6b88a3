/* The provider's key object, shared by keymgmt, the operations and the store. */
#include "provider.h"

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/objects.h>

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
    OPENSSL_free(k->spki);
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

int sks_ec_spki(const char *group, const uint8_t *point, size_t plen, uint8_t *out, size_t size, size_t *len)
{
    static const uint8_t EC_PUBLIC_KEY[] = { 0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01 };
    uint8_t oid[32], alg[64], *p = oid;
    size_t alg_len, bits_len, n;
    const ASN1_OBJECT *obj;
    int nid, oid_len;

    if (plen == 0 || plen > 0xFF00 || (nid = OBJ_sn2nid(group)) == NID_undef || (obj = OBJ_nid2obj(nid)) == NULL
        || (oid_len = i2d_ASN1_OBJECT(obj, NULL)) <= 0 || (size_t)oid_len > sizeof(oid) - 16
        || i2d_ASN1_OBJECT(obj, &p) != oid_len)
        return 0;
    /* AlgorithmIdentifier { id-ecPublicKey, namedCurve } */
    alg_len = sks_der_header(alg, 0x30, sizeof(EC_PUBLIC_KEY) + (size_t)oid_len);
    memcpy(alg + alg_len, EC_PUBLIC_KEY, sizeof(EC_PUBLIC_KEY));
    memcpy(alg + alg_len + sizeof(EC_PUBLIC_KEY), oid, (size_t)oid_len);
    alg_len += sizeof(EC_PUBLIC_KEY) + (size_t)oid_len;
    /* SEQUENCE { AlgorithmIdentifier, BIT STRING { 0 unused bits, point } } */
    bits_len = 1 + plen + (plen + 1 < 0x80 ? 2 : plen + 1 < 0x100 ? 3 : 4);
    if (size < 4 + alg_len + bits_len)
        return 0;
    n = sks_der_header(out, 0x30, alg_len + bits_len);
    memcpy(out + n, alg, alg_len);
    n += alg_len;
    n += sks_der_header(out + n, 0x03, plen + 1);
    out[n++] = 0;
    memcpy(out + n, point, plen);
    *len = n + plen;
    return 1;
}
