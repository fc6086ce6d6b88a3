/*
 * RSA decryption with sks keys: PKCS#1 v1.5 (rsa.es.pkcs1_5) and OAEP with SHA-1 or
 * SHA-256 (the same digest for MGF1, no label). Encryption needs only the public key and
 * is done in the default provider.
 */
#include "../provider/provider.h"

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
    char oaep_md[64];
    char mgf1_md[64];
    int has_label;
} rsa_ctx;

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
        OPENSSL_free(c);
    }
}

static void *rsa_dupctx(void *vctx)
{
    rsa_ctx *c = OPENSSL_memdup(vctx, sizeof(rsa_ctx));

    if (c != NULL && c->key != NULL)
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
    c->has_label = 0;
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

/* Encryption with the public half, in the default provider. */
static int rsa_encrypt(void *vctx, unsigned char *out, size_t *outlen, size_t outsize, const unsigned char *in,
                       size_t inlen)
{
    rsa_ctx *c = vctx;
    EVP_PKEY_CTX *e = EVP_PKEY_CTX_new_from_pkey(c->ctx->libctx, c->key->pub, "provider=default");
    int ok = e != NULL && EVP_PKEY_encrypt_init(e) == 1 && EVP_PKEY_CTX_set_rsa_padding(e, c->pad) == 1
             && (c->pad != RSA_PKCS1_OAEP_PADDING
                 || (EVP_PKEY_CTX_set_rsa_oaep_md_name(e, c->oaep_md[0] ? c->oaep_md : "SHA1", NULL) == 1
                     && EVP_PKEY_CTX_set_rsa_mgf1_md_name(e, c->mgf1_md[0] ? c->mgf1_md : (c->oaep_md[0] ? c->oaep_md : "SHA1"), NULL) == 1));

    *outlen = outsize;
    ok = ok && EVP_PKEY_encrypt(e, out, outlen, in, inlen) == 1;
    EVP_PKEY_CTX_free(e);
    return ok;
}

static const char *decrypt_uri(rsa_ctx *c)
{
    const char *md = c->oaep_md[0] ? c->oaep_md : "SHA1";
    const char *mgf1 = c->mgf1_md[0] ? c->mgf1_md : md;

    if (c->pad == RSA_PKCS1_PADDING)
        return SKS_ALG_URI("rsa.es.pkcs1_5");
    if (c->pad != RSA_PKCS1_OAEP_PADDING || c->has_label || strcmp(md, mgf1) != 0)
        return NULL;
    if (strcmp(md, "SHA1") == 0)
        return SKS_ALG_URI("rsa.oaep.sha1");
    if (strcmp(md, "SHA256") == 0)
        return SKS_ALG_URI("rsa.oaep.sha256");
    return NULL;
}

static int rsa_decrypt(void *vctx, unsigned char *out, size_t *outlen, size_t outsize, const unsigned char *in,
                       size_t inlen)
{
    rsa_ctx *c = vctx;
    const char *uri;

    if (c->key == NULL)
        return 0;
    if (out == NULL) {
        *outlen = (size_t)EVP_PKEY_get_size(c->key->pub);
        return 1;
    }
    if ((uri = decrypt_uri(c)) == NULL) {
        sks_raise(c->ctx, SKS_R_UNSUPPORTED,
                  "sks keys decrypt PKCS#1 v1.5, or OAEP with SHA-1/SHA-256 (same MGF1 digest, no label)");
        return 0;
    }
    if (!sks_key_endorses(c->key, uri)) {
        sks_raise(c->ctx, SKS_R_NOT_ENDORSED, "sks key \"%s\" is not endorsed for %s", c->key->name ? c->key->name : "?",
                  uri);
        return 0;
    }
    return sks_op_decrypt(c->key, uri, NULL, 0, in, inlen, out, outsize, outlen) == SKS_P_OK;
}

static int md_param(rsa_ctx *c, const OSSL_PARAM *p, char *dst, size_t n)
{
    char name[64], *s = name;
    EVP_MD *md;

    if (!OSSL_PARAM_get_utf8_string(p, &s, sizeof(name)))
        return 0;
    md = EVP_MD_fetch(c->ctx->libctx, name, "provider=default");
    if (md == NULL)
        return 0;
    snprintf(dst, n, "%s", EVP_MD_is_a(md, "SHA1") ? "SHA1" : EVP_MD_is_a(md, "SHA256") ? "SHA256" : name);
    EVP_MD_free(md);
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
    if ((p = OSSL_PARAM_locate_const(params, OSSL_ASYM_CIPHER_PARAM_OAEP_LABEL)) != NULL)
        c->has_label = p->data_size > 0;
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
        && !OSSL_PARAM_set_utf8_string(p, c->oaep_md[0] ? c->oaep_md : "SHA1"))
        return 0;
    return 1;
}

static const OSSL_PARAM *rsa_gettable_ctx_params(void *vctx, void *provctx)
{
    static const OSSL_PARAM params[] = {
        OSSL_PARAM_utf8_string(OSSL_ASYM_CIPHER_PARAM_PAD_MODE, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_ASYM_CIPHER_PARAM_OAEP_DIGEST, NULL, 0),
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
