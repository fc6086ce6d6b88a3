/*
 * RSA decryption with sks keys: PKCS#1 v1.5 (rsa.es.pkcs1_5) and OAEP with SHA-1/224/256/
 * 384/512, any of them for MGF1, and a label. OAEP that the specification's URIs name
 * (rsa.oaep.sha1, rsa.oaep.sha256: same MGF1 digest, no label) goes by those URIs; all other
 * OAEP by the project's rsa.oaep with its parameters (docs/algorithms.md). Encryption needs
 * only the public key and is done in the default provider.
 */
#include "../provider/provider.h"

#include <limits.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/params.h>
#include <openssl/rsa.h>

static OSSL_FUNC_asym_cipher_newctx_fn rsa_newctx;
static OSSL_FUNC_asym_cipher_freectx_fn rsa_freectx;
static OSSL_FUNC_asym_cipher_dupctx_fn rsa_dupctx;
static OSSL_FUNC_asym_cipher_encrypt_init_fn rsa_encrypt_init;
static OSSL_FUNC_asym_cipher_encrypt_fn rsa_encrypt;
static OSSL_FUNC_asym_cipher_decrypt_init_fn rsa_decrypt_init;
static OSSL_FUNC_asym_cipher_decrypt_fn rsa_decrypt;
static OSSL_FUNC_asym_cipher_set_ctx_params_fn rsa_set_ctx_params;
static OSSL_FUNC_asym_cipher_settable_ctx_params_fn rsa_settable_ctx_params;
static OSSL_FUNC_asym_cipher_get_ctx_params_fn rsa_get_ctx_params;
static OSSL_FUNC_asym_cipher_gettable_ctx_params_fn rsa_gettable_ctx_params;

typedef struct {
    sks_provctx *ctx;
    sks_key *key;
    int pad;
    char oaep_md[64];   /* canonical name (SHA1, SHA224, ...) or as the application named it; "" = SHA1 */
    char mgf1_md[64];   /* as oaep_md; "" = the OAEP digest */
    uint8_t *label;     /* OAEP label, NULL when empty */
    size_t label_len;
} rsa_ctx;

/* The OAEP digests the device supports, for the OAEP hash and for MGF1. */
static const char *const OAEP_DIGESTS[] = { "SHA1", "SHA224", "SHA256", "SHA384", "SHA512" };

static void label_clear(rsa_ctx *c)
{
    OPENSSL_free(c->label);
    c->label = NULL;
    c->label_len = 0;
}

static void *rsa_newctx(void *provctx)
{
    rsa_ctx *c = OPENSSL_zalloc(sizeof(*c));

    if (c != NULL) {
        c->ctx = provctx;
        c->pad = RSA_PKCS1_PADDING;
    }
    return c;
}

static void rsa_freectx(void *vctx)
{
    rsa_ctx *c = vctx;

    if (c != NULL) {
        sks_key_free(c->key);
        label_clear(c);
        OPENSSL_free(c);
    }
}

static void *rsa_dupctx(void *vctx)
{
    const rsa_ctx *src = vctx;
    rsa_ctx *c = OPENSSL_memdup(src, sizeof(rsa_ctx));

    if (c == NULL)
        return NULL;
    c->label = NULL;
    if (src->label != NULL && (c->label = OPENSSL_memdup(src->label, src->label_len)) == NULL) {
        OPENSSL_free(c);
        return NULL;
    }
    if (c->key != NULL)
        sks_key_up_ref(c->key);
    return c;
}

static int cipher_init(rsa_ctx *c, sks_key *k, const OSSL_PARAM params[])
{
    if (k == NULL || (k->kind != SKS_KIND_RSA))
        return 0;
    sks_key_free(c->key);
    sks_key_up_ref(k);
    c->key = k;
    c->pad = RSA_PKCS1_PADDING;
    c->oaep_md[0] = c->mgf1_md[0] = '\0';
    label_clear(c);
    return rsa_set_ctx_params(c, params);
}

static int rsa_encrypt_init(void *vctx, void *vkey, const OSSL_PARAM params[])
{
    return cipher_init(vctx, vkey, params);
}

static int rsa_decrypt_init(void *vctx, void *vkey, const OSSL_PARAM params[])
{
    return cipher_init(vctx, vkey, params);
}

static const char *oaep_md(const rsa_ctx *c)
{
    return c->oaep_md[0] ? c->oaep_md : "SHA1";
}

static const char *mgf1_md(const rsa_ctx *c)
{
    return c->mgf1_md[0] ? c->mgf1_md : oaep_md(c);
}

/* EVP_PKEY_CTX_set0_rsa_oaep_label takes over a copy of the label (none when empty). */
static int encrypt_label(EVP_PKEY_CTX *e, const rsa_ctx *c)
{
    void *copy;

    if (c->label == NULL)
        return 1;
    if (c->label_len > INT_MAX || (copy = OPENSSL_memdup(c->label, c->label_len)) == NULL)
        return 0;
    if (EVP_PKEY_CTX_set0_rsa_oaep_label(e, copy, (int)c->label_len) != 1) {
        OPENSSL_free(copy);
        return 0;
    }
    return 1;
}

/* Encryption with the public half, in the default provider. */
static int rsa_encrypt(void *vctx, unsigned char *out, size_t *outlen, size_t outsize, const unsigned char *in,
                       size_t inlen)
{
    rsa_ctx *c = vctx;
    EVP_PKEY_CTX *e = EVP_PKEY_CTX_new_from_pkey(c->ctx->libctx, c->key->pub, "provider=default");
    int ok = e != NULL && EVP_PKEY_encrypt_init(e) == 1 && EVP_PKEY_CTX_set_rsa_padding(e, c->pad) == 1
             && (c->pad != RSA_PKCS1_OAEP_PADDING
                 || (EVP_PKEY_CTX_set_rsa_oaep_md_name(e, oaep_md(c), NULL) == 1
                     && EVP_PKEY_CTX_set_rsa_mgf1_md_name(e, mgf1_md(c), NULL) == 1 && encrypt_label(e, c)));

    *outlen = outsize;
    ok = ok && EVP_PKEY_encrypt(e, out, outlen, in, inlen) == 1;
    EVP_PKEY_CTX_free(e);
    return ok;
}

static int oaep_digest_supported(const char *name)
{
    size_t i;

    for (i = 0; i < sizeof(OAEP_DIGESTS) / sizeof(OAEP_DIGESTS[0]); i++)
        if (strcmp(name, OAEP_DIGESTS[i]) == 0)
            return 1;
    return 0;
}

/* The specification's URI for OAEP it names (same MGF1 digest, no label), else NULL. */
static const char *oaep_spec_uri(const rsa_ctx *c)
{
    if (c->label != NULL || strcmp(oaep_md(c), mgf1_md(c)) != 0)
        return NULL;
    if (strcmp(oaep_md(c), "SHA1") == 0)
        return SKS_ALG_URI("rsa.oaep.sha1");
    if (strcmp(oaep_md(c), "SHA256") == 0)
        return SKS_ALG_URI("rsa.oaep.sha256");
    return NULL;
}

/*
 * The URI (and for rsa.oaep its parameters) for this decryption: PKCS#1 v1.5; OAEP by a
 * specification URI where one names it and the key is endorsed for it (old devices and keys
 * endorsed for that URI keep working); else rsa.oaep with string oaepDigest, string
 * mgf1Digest, byte[] label. NULL, with the reason raised, when the device cannot do it or
 * the key is not endorsed for it.
 */
static const char *decrypt_uri(rsa_ctx *c, sks_buf *params)
{
    const char *spec, *generic = SKS_ALG_URI("rsa.oaep"), *pkcs1 = SKS_ALG_URI("rsa.es.pkcs1_5");

    if (c->pad == RSA_PKCS1_PADDING) {
        if (sks_key_endorses(c->key, pkcs1))
            return pkcs1;
        sks_raise(c->ctx, SKS_R_NOT_ENDORSED, "sks key \"%s\" is not endorsed for %s", c->key->name ? c->key->name : "?",
                  pkcs1);
        return NULL;
    }
    if (!oaep_digest_supported(oaep_md(c)) || !oaep_digest_supported(mgf1_md(c))) {
        sks_raise(c->ctx, SKS_R_UNSUPPORTED,
                  "sks keys decrypt PKCS#1 v1.5, or OAEP with SHA-1, SHA-224, SHA-256, SHA-384 or SHA-512"
                  " (OAEP digest %s, MGF1 digest %s asked)", oaep_md(c), mgf1_md(c));
        return NULL;
    }
    spec = oaep_spec_uri(c);
    if (spec != NULL && sks_key_endorses(c->key, spec))
        return spec;
    if (!sks_key_endorses(c->key, generic)) {
        sks_raise(c->ctx, SKS_R_NOT_ENDORSED, "sks key \"%s\" is not endorsed for %s%s%s",
                  c->key->name ? c->key->name : "?", spec != NULL ? spec : "", spec != NULL ? " or " : "", generic);
        return NULL;
    }
    return sks_client_oaep_parameters(oaep_md(c), mgf1_md(c), c->label, c->label_len, params) ? generic : NULL;
}

static int rsa_decrypt(void *vctx, unsigned char *out, size_t *outlen, size_t outsize, const unsigned char *in,
                       size_t inlen)
{
    rsa_ctx *c = vctx;
    const char *uri;
    sks_buf params;
    int ok = 0;

    if (c->key == NULL)
        return 0;
    if (out == NULL) {
        *outlen = (size_t)EVP_PKEY_get_size(c->key->pub);
        return 1;
    }
    sks_buf_init(&params); /* filled only for the project's rsa.oaep */
    if ((uri = decrypt_uri(c, &params)) != NULL)
        ok = sks_op_decrypt(c->key, uri, params.data, params.len, in, inlen, out, outsize, outlen) == SKS_P_OK;
    sks_buf_free(&params);
    return ok;
}

static int md_param(rsa_ctx *c, const OSSL_PARAM *p, char *dst, size_t n)
{
    char name[64], *s = name;
    EVP_MD *md;
    size_t i;

    if (!OSSL_PARAM_get_utf8_string(p, &s, sizeof(name)))
        return 0;
    md = EVP_MD_fetch(c->ctx->libctx, name, "provider=default");
    if (md == NULL)
        return 0;
    /* The device's spelling for the digests it knows; any other keeps its name, for the
     * refusal at decryption (encryption, in the default provider, can use it). */
    snprintf(dst, n, "%s", name);
    for (i = 0; i < sizeof(OAEP_DIGESTS) / sizeof(OAEP_DIGESTS[0]); i++)
        if (EVP_MD_is_a(md, OAEP_DIGESTS[i]))
            snprintf(dst, n, "%s", OAEP_DIGESTS[i]);
    EVP_MD_free(md);
    return 1;
}

/* Keeps a copy of the label; an empty one is no label (OAEP's default). */
static int label_param(rsa_ctx *c, const OSSL_PARAM *p)
{
    void *copy = NULL;
    size_t n = 0;

    if (!OSSL_PARAM_get_octet_string(p, &copy, 0, &n))
        return 0;
    label_clear(c);
    if (n == 0) {
        OPENSSL_free(copy);
        return 1;
    }
    c->label = copy;
    c->label_len = n;
    return 1;
}

static int rsa_set_ctx_params(void *vctx, const OSSL_PARAM params[])
{
    rsa_ctx *c = vctx;
    const OSSL_PARAM *p;

    if (params == NULL)
        return 1;
    if ((p = OSSL_PARAM_locate_const(params, OSSL_ASYM_CIPHER_PARAM_PAD_MODE)) != NULL) {
        if (p->data_type == OSSL_PARAM_UTF8_STRING) {
            const char *s = p->data;
            c->pad = strcmp(s, OSSL_PKEY_RSA_PAD_MODE_OAEP) == 0      ? RSA_PKCS1_OAEP_PADDING
                     : strcmp(s, OSSL_PKEY_RSA_PAD_MODE_PKCSV15) == 0 ? RSA_PKCS1_PADDING
                                                                       : -1;
        } else if (!OSSL_PARAM_get_int(p, &c->pad)) {
            return 0;
        }
        if (c->pad != RSA_PKCS1_PADDING && c->pad != RSA_PKCS1_OAEP_PADDING) {
            sks_raise(c->ctx, SKS_R_UNSUPPORTED, "sks RSA keys decrypt with PKCS#1 v1.5 or OAEP padding only");
            return 0;
        }
    }
    if ((p = OSSL_PARAM_locate_const(params, OSSL_ASYM_CIPHER_PARAM_OAEP_DIGEST)) != NULL
        && !md_param(c, p, c->oaep_md, sizeof(c->oaep_md)))
        return 0;
    if ((p = OSSL_PARAM_locate_const(params, OSSL_ASYM_CIPHER_PARAM_MGF1_DIGEST)) != NULL
        && !md_param(c, p, c->mgf1_md, sizeof(c->mgf1_md)))
        return 0;
    if ((p = OSSL_PARAM_locate_const(params, OSSL_ASYM_CIPHER_PARAM_OAEP_LABEL)) != NULL && !label_param(c, p))
        return 0;
    return 1;
}

static const OSSL_PARAM *rsa_settable_ctx_params(void *vctx, void *provctx)
{
    static const OSSL_PARAM params[] = {
        OSSL_PARAM_utf8_string(OSSL_ASYM_CIPHER_PARAM_PAD_MODE, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_ASYM_CIPHER_PARAM_OAEP_DIGEST, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_ASYM_CIPHER_PARAM_MGF1_DIGEST, NULL, 0),
        OSSL_PARAM_octet_string(OSSL_ASYM_CIPHER_PARAM_OAEP_LABEL, NULL, 0),
        OSSL_PARAM_END
    };
    (void)vctx;
    (void)provctx;
    return params;
}

static int rsa_get_ctx_params(void *vctx, OSSL_PARAM params[])
{
    rsa_ctx *c = vctx;
    OSSL_PARAM *p;

    if ((p = OSSL_PARAM_locate(params, OSSL_ASYM_CIPHER_PARAM_PAD_MODE)) != NULL) {
        if (p->data_type == OSSL_PARAM_UTF8_STRING) {
            if (!OSSL_PARAM_set_utf8_string(p, c->pad == RSA_PKCS1_OAEP_PADDING ? OSSL_PKEY_RSA_PAD_MODE_OAEP
                                                                                 : OSSL_PKEY_RSA_PAD_MODE_PKCSV15))
                return 0;
        } else if (!OSSL_PARAM_set_int(p, c->pad)) {
            return 0;
        }
    }
    if ((p = OSSL_PARAM_locate(params, OSSL_ASYM_CIPHER_PARAM_OAEP_DIGEST)) != NULL
        && !OSSL_PARAM_set_utf8_string(p, oaep_md(c)))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_ASYM_CIPHER_PARAM_MGF1_DIGEST)) != NULL
        && !OSSL_PARAM_set_utf8_string(p, mgf1_md(c)))
        return 0;
    /* as the default provider: a pointer to the context's own copy (EVP_PKEY_CTX_get0_rsa_oaep_label) */
    if ((p = OSSL_PARAM_locate(params, OSSL_ASYM_CIPHER_PARAM_OAEP_LABEL)) != NULL
        && !OSSL_PARAM_set_octet_ptr(p, c->label, c->label_len))
        return 0;
    return 1;
}

static const OSSL_PARAM *rsa_gettable_ctx_params(void *vctx, void *provctx)
{
    static const OSSL_PARAM params[] = {
        OSSL_PARAM_utf8_string(OSSL_ASYM_CIPHER_PARAM_PAD_MODE, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_ASYM_CIPHER_PARAM_OAEP_DIGEST, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_ASYM_CIPHER_PARAM_MGF1_DIGEST, NULL, 0),
        OSSL_PARAM_octet_ptr(OSSL_ASYM_CIPHER_PARAM_OAEP_LABEL, NULL, 0),
        OSSL_PARAM_END
    };
    (void)vctx;
    (void)provctx;
    return params;
}

const OSSL_DISPATCH sks_rsa_asym_cipher_functions[] = {
    { OSSL_FUNC_ASYM_CIPHER_NEWCTX, (void (*)(void))rsa_newctx },
    { OSSL_FUNC_ASYM_CIPHER_FREECTX, (void (*)(void))rsa_freectx },
    { OSSL_FUNC_ASYM_CIPHER_DUPCTX, (void (*)(void))rsa_dupctx },
    { OSSL_FUNC_ASYM_CIPHER_ENCRYPT_INIT, (void (*)(void))rsa_encrypt_init },
    { OSSL_FUNC_ASYM_CIPHER_ENCRYPT, (void (*)(void))rsa_encrypt },
    { OSSL_FUNC_ASYM_CIPHER_DECRYPT_INIT, (void (*)(void))rsa_decrypt_init },
    { OSSL_FUNC_ASYM_CIPHER_DECRYPT, (void (*)(void))rsa_decrypt },
    { OSSL_FUNC_ASYM_CIPHER_SET_CTX_PARAMS, (void (*)(void))rsa_set_ctx_params },
    { OSSL_FUNC_ASYM_CIPHER_SETTABLE_CTX_PARAMS, (void (*)(void))rsa_settable_ctx_params },
    { OSSL_FUNC_ASYM_CIPHER_GET_CTX_PARAMS, (void (*)(void))rsa_get_ctx_params },
    { OSSL_FUNC_ASYM_CIPHER_GETTABLE_CTX_PARAMS, (void (*)(void))rsa_gettable_ctx_params },
    { 0, NULL }
};
