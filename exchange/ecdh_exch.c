/*
 * ECDH key exchange with an sks key: the device computes Z (ecdh.raw); an optional X9.63
 * KDF (as CMS uses for ECDH recipients) runs here in the default provider.
 */
#include "../provider/provider.h"

#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/x509.h>

static OSSL_FUNC_keyexch_newctx_fn ecdh_newctx;
static OSSL_FUNC_keyexch_init_fn ecdh_init;
static OSSL_FUNC_keyexch_set_peer_fn ecdh_set_peer;
static OSSL_FUNC_keyexch_derive_fn ecdh_derive;
static OSSL_FUNC_keyexch_freectx_fn ecdh_freectx;
static OSSL_FUNC_keyexch_dupctx_fn ecdh_dupctx;
static OSSL_FUNC_keyexch_set_ctx_params_fn ecdh_set_ctx_params;
static OSSL_FUNC_keyexch_settable_ctx_params_fn ecdh_settable_ctx_params;
static OSSL_FUNC_keyexch_get_ctx_params_fn ecdh_get_ctx_params;
static OSSL_FUNC_keyexch_gettable_ctx_params_fn ecdh_gettable_ctx_params;

typedef struct {
    sks_provctx *ctx;
    sks_key *key;
    sks_key *peer;
    int kdf_x963;        /* 0: plain Z */
    char kdf_md[64];
    size_t kdf_outlen;
    unsigned char *ukm;
    size_t ukm_len;
} ecdh_ctx;

static void *ecdh_newctx(void *provctx)
{
    ecdh_ctx *c = OPENSSL_zalloc(sizeof(*c));

    if (c != NULL)
        c->ctx = provctx;
    return c;
}

static void ecdh_freectx(void *vctx)
{
    ecdh_ctx *c = vctx;

    if (c == NULL)
        return;
    sks_key_free(c->key);
    sks_key_free(c->peer);
    OPENSSL_free(c->ukm);
    OPENSSL_free(c);
}

static void *ecdh_dupctx(void *vctx)
{
    ecdh_ctx *src = vctx, *c = OPENSSL_memdup(src, sizeof(*src));

    if (c == NULL)
        return NULL;
    if (c->key != NULL)
        sks_key_up_ref(c->key);
    if (c->peer != NULL)
        sks_key_up_ref(c->peer);
    if (src->ukm != NULL && (c->ukm = OPENSSL_memdup(src->ukm, src->ukm_len)) == NULL) {
        c->ukm_len = 0;
        ecdh_freectx(c);
        return NULL;
    }
    return c;
}

static int ecdh_init(void *vctx, void *vkey, const OSSL_PARAM params[])
{
    ecdh_ctx *c = vctx;
    sks_key *k = vkey;

    if (k == NULL || k->kind != SKS_KIND_EC)
        return 0;
    sks_key_free(c->key);
    sks_key_up_ref(k);
    c->key = k;
    c->kdf_x963 = 0;
    return ecdh_set_ctx_params(c, params);
}

static int ecdh_set_peer(void *vctx, void *vpeer)
{
    ecdh_ctx *c = vctx;
    sks_key *p = vpeer;

    if (p == NULL || p->pub == NULL || p->params_only) /* a peer needs its public point */
        return 0;
    sks_key_free(c->peer);
    sks_key_up_ref(p);
    c->peer = p;
    return 1;
}

static int x963_kdf(ecdh_ctx *c, const uint8_t *z, size_t zlen, unsigned char *out, size_t outlen)
{
    EVP_KDF *kdf = EVP_KDF_fetch(c->ctx->libctx, "X963KDF", "provider=default");
    EVP_KDF_CTX *kctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
    OSSL_PARAM params[4], *p = params;
    int ok;

    *p++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, c->kdf_md, 0);
    *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)z, zlen);
    if (c->ukm != NULL)
        *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, c->ukm, c->ukm_len);
    *p = OSSL_PARAM_construct_end();
    ok = kctx != NULL && EVP_KDF_derive(kctx, out, outlen, params) == 1;
    EVP_KDF_CTX_free(kctx);
    EVP_KDF_free(kdf);
    return ok;
}

/* The peer's SubjectPublicKeyInfo, from its curve and point (sks_ec_spki): i2d_PUBKEY sets up
 * an encoder chain on every call in OpenSSL 3.0, a fifth of the cost of a whole ECDH
 * (bench/, README "Benchmarks"). A peer imported from its parameters has it already. 0 if the
 * key is not a named-curve EC key; the caller then falls back to i2d_PUBKEY. */
static int peer_spki(const sks_key *peer, uint8_t *out, size_t size, size_t *len)
{
    char group[64];
    uint8_t point[160];
    size_t glen = 0, plen = 0;

    if (peer->spki != NULL && peer->spki_len <= size) {
        memcpy(out, peer->spki, peer->spki_len);
        *len = peer->spki_len;
        return 1;
    }
    return EVP_PKEY_get_utf8_string_param(peer->pub, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), &glen) == 1
           && EVP_PKEY_get_octet_string_param(peer->pub, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, point, sizeof(point),
                                              &plen) == 1
           && sks_ec_spki(group, point, plen, out, size, len);
}

/* The largest shared secret: an x coordinate on P-521. */
#define Z_MAX 66

static int ecdh_derive(void *vctx, unsigned char *secret, size_t *secretlen, size_t outlen)
{
    ecdh_ctx *c = vctx;
    unsigned char *spki = NULL, buf[256], z[Z_MAX];
    size_t spki_len = 0, zlen = 0;
    int der_len, ok = 0;

    if (c->key == NULL || c->peer == NULL)
        return 0;
    if (secret == NULL) {
        *secretlen = c->kdf_x963 ? c->kdf_outlen : (size_t)(EVP_PKEY_get_bits(c->key->pub) + 7) / 8;
        return 1;
    }
    if (!peer_spki(c->peer, buf, sizeof(buf), &spki_len)) {
        if ((der_len = i2d_PUBKEY(c->peer->pub, &spki)) <= 0)
            return 0;
        spki_len = (size_t)der_len;
    }
    if (!c->kdf_x963) {
        /* the shared secret straight into the caller's buffer */
        ok = sks_op_agree(c->key, spki != NULL ? spki : buf, spki_len, secret, outlen, secretlen) == SKS_P_OK;
    } else if (outlen >= c->kdf_outlen
               && sks_op_agree(c->key, spki != NULL ? spki : buf, spki_len, z, sizeof(z), &zlen) == SKS_P_OK) {
        ok = x963_kdf(c, z, zlen, secret, c->kdf_outlen);
        *secretlen = c->kdf_outlen;
    }
    OPENSSL_cleanse(z, sizeof(z));
    OPENSSL_free(spki);
    return ok;
}

static int ecdh_set_ctx_params(void *vctx, const OSSL_PARAM params[])
{
    ecdh_ctx *c = vctx;
    const OSSL_PARAM *p;
    char name[64], *s = name;

    if (params == NULL)
        return 1;
    if ((p = OSSL_PARAM_locate_const(params, OSSL_EXCHANGE_PARAM_KDF_TYPE)) != NULL) {
        if (!OSSL_PARAM_get_utf8_string(p, &s, sizeof(name)))
            return 0;
        if (name[0] == '\0')
            c->kdf_x963 = 0;
        else if (OPENSSL_strcasecmp(name, OSSL_KDF_NAME_X963KDF) == 0)
            c->kdf_x963 = 1;
        else {
            sks_raise(c->ctx, SKS_R_UNSUPPORTED, "ECDH KDF %s is not supported with sks keys", name);
            return 0;
        }
    }
    if ((p = OSSL_PARAM_locate_const(params, OSSL_EXCHANGE_PARAM_KDF_DIGEST)) != NULL) {
        s = c->kdf_md;
        if (!OSSL_PARAM_get_utf8_string(p, &s, sizeof(c->kdf_md)))
            return 0;
    }
    if ((p = OSSL_PARAM_locate_const(params, OSSL_EXCHANGE_PARAM_KDF_OUTLEN)) != NULL
        && !OSSL_PARAM_get_size_t(p, &c->kdf_outlen))
        return 0;
    if ((p = OSSL_PARAM_locate_const(params, OSSL_EXCHANGE_PARAM_KDF_UKM)) != NULL) {
        void *ukm = NULL;
        size_t n = 0;
        if (!OSSL_PARAM_get_octet_string(p, &ukm, 0, &n))
            return 0;
        OPENSSL_free(c->ukm);
        c->ukm = ukm;
        c->ukm_len = n;
    }
    if ((p = OSSL_PARAM_locate_const(params, OSSL_EXCHANGE_PARAM_EC_ECDH_COFACTOR_MODE)) != NULL) {
        int mode;
        /* The supported curves have cofactor 1: both modes give the same result. */
        if (!OSSL_PARAM_get_int(p, &mode) || mode < -1 || mode > 1)
            return 0;
    }
    return 1;
}

static const OSSL_PARAM *ecdh_settable_ctx_params(void *vctx, void *provctx)
{
    static const OSSL_PARAM params[] = {
        OSSL_PARAM_int(OSSL_EXCHANGE_PARAM_EC_ECDH_COFACTOR_MODE, NULL),
        OSSL_PARAM_utf8_string(OSSL_EXCHANGE_PARAM_KDF_TYPE, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_EXCHANGE_PARAM_KDF_DIGEST, NULL, 0),
        OSSL_PARAM_size_t(OSSL_EXCHANGE_PARAM_KDF_OUTLEN, NULL),
        OSSL_PARAM_octet_string(OSSL_EXCHANGE_PARAM_KDF_UKM, NULL, 0),
        OSSL_PARAM_END
    };
    (void)vctx;
    (void)provctx;
    return params;
}

static int ecdh_get_ctx_params(void *vctx, OSSL_PARAM params[])
{
    ecdh_ctx *c = vctx;
    OSSL_PARAM *p;

    if ((p = OSSL_PARAM_locate(params, OSSL_EXCHANGE_PARAM_KDF_TYPE)) != NULL
        && !OSSL_PARAM_set_utf8_string(p, c->kdf_x963 ? OSSL_KDF_NAME_X963KDF : ""))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_EXCHANGE_PARAM_KDF_DIGEST)) != NULL
        && !OSSL_PARAM_set_utf8_string(p, c->kdf_md))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_EXCHANGE_PARAM_KDF_OUTLEN)) != NULL
        && !OSSL_PARAM_set_size_t(p, c->kdf_outlen))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_EXCHANGE_PARAM_EC_ECDH_COFACTOR_MODE)) != NULL
        && !OSSL_PARAM_set_int(p, 0))
        return 0;
    return 1;
}

static const OSSL_PARAM *ecdh_gettable_ctx_params(void *vctx, void *provctx)
{
    static const OSSL_PARAM params[] = {
        OSSL_PARAM_int(OSSL_EXCHANGE_PARAM_EC_ECDH_COFACTOR_MODE, NULL),
        OSSL_PARAM_utf8_string(OSSL_EXCHANGE_PARAM_KDF_TYPE, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_EXCHANGE_PARAM_KDF_DIGEST, NULL, 0),
        OSSL_PARAM_size_t(OSSL_EXCHANGE_PARAM_KDF_OUTLEN, NULL),
        OSSL_PARAM_END
    };
    (void)vctx;
    (void)provctx;
    return params;
}

const OSSL_DISPATCH sks_ecdh_keyexch_functions[] = {
    { OSSL_FUNC_KEYEXCH_NEWCTX, (void (*)(void))ecdh_newctx },
    { OSSL_FUNC_KEYEXCH_INIT, (void (*)(void))ecdh_init },
    { OSSL_FUNC_KEYEXCH_SET_PEER, (void (*)(void))ecdh_set_peer },
    { OSSL_FUNC_KEYEXCH_DERIVE, (void (*)(void))ecdh_derive },
    { OSSL_FUNC_KEYEXCH_FREECTX, (void (*)(void))ecdh_freectx },
    { OSSL_FUNC_KEYEXCH_DUPCTX, (void (*)(void))ecdh_dupctx },
    { OSSL_FUNC_KEYEXCH_SET_CTX_PARAMS, (void (*)(void))ecdh_set_ctx_params },
    { OSSL_FUNC_KEYEXCH_SETTABLE_CTX_PARAMS, (void (*)(void))ecdh_settable_ctx_params },
    { OSSL_FUNC_KEYEXCH_GET_CTX_PARAMS, (void (*)(void))ecdh_get_ctx_params },
    { OSSL_FUNC_KEYEXCH_GETTABLE_CTX_PARAMS, (void (*)(void))ecdh_gettable_ctx_params },
    { 0, NULL }
};
