/*
 * Signatures with sks keys: ECDSA, RSA (PKCS#1 v1.5 and PSS) and Ed25519.
 *
 * Hashing happens here, in the default provider; only the hash (the message for Ed25519)
 * goes to the device, so a TLS handshake costs exactly one device operation. Verification
 * and the AlgorithmIdentifier are answered by a "shadow" context in the default provider on
 * the cached public key: they never reach the device.
 */
#include "../provider/provider.h"

#include <string.h>

#include <openssl/asn1.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/params.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

static OSSL_FUNC_signature_newctx_fn ecdsa_newctx, rsa_newctx, ed25519_newctx;
static OSSL_FUNC_signature_freectx_fn sig_freectx;
static OSSL_FUNC_signature_dupctx_fn sig_dupctx;
static OSSL_FUNC_signature_sign_init_fn sig_sign_init;
static OSSL_FUNC_signature_sign_fn sig_sign;
static OSSL_FUNC_signature_verify_init_fn sig_verify_init;
static OSSL_FUNC_signature_verify_fn sig_verify;
static OSSL_FUNC_signature_digest_sign_init_fn sig_digest_sign_init;
static OSSL_FUNC_signature_digest_sign_update_fn sig_digest_update;
static OSSL_FUNC_signature_digest_sign_final_fn sig_digest_sign_final;
static OSSL_FUNC_signature_digest_verify_init_fn sig_digest_verify_init;
static OSSL_FUNC_signature_digest_verify_final_fn sig_digest_verify_final;
static OSSL_FUNC_signature_digest_sign_fn ed_digest_sign;
static OSSL_FUNC_signature_digest_verify_fn ed_digest_verify;
static OSSL_FUNC_signature_get_ctx_params_fn sig_get_ctx_params;
static OSSL_FUNC_signature_gettable_ctx_params_fn sig_gettable_ctx_params;
static OSSL_FUNC_signature_set_ctx_params_fn sig_set_ctx_params;
static OSSL_FUNC_signature_settable_ctx_params_fn ecdsa_settable_ctx_params, rsa_settable_ctx_params,
    ed25519_settable_ctx_params;

typedef struct {
    sks_provctx *ctx;
    sks_key_kind kind; /* the algorithm this context implements */
    sks_key *key;
    int operation;     /* EVP_PKEY_OP_SIGN or EVP_PKEY_OP_VERIFY */
    char mdname[64];   /* "" = no digest chosen */
    EVP_MD_CTX *mdctx; /* running hash of digest_sign */
    int pad;           /* RSA: RSA_PKCS1_PADDING or RSA_PKCS1_PSS_PADDING */
    int saltlen;       /* RSA-PSS: length or RSA_PSS_SALTLEN_* */
    char mgf1name[64]; /* RSA-PSS: "" = same as the digest */
    EVP_PKEY_CTX *shadow; /* default-provider verify context on the public key */
    EVP_MD_CTX *shadow_md; /* Ed25519 has no plain verify: its shadow is a digest-verify context */
} sigctx;

static void *newctx(void *provctx, sks_key_kind kind)
{
    sigctx *c = OPENSSL_zalloc(sizeof(*c));

    if (c == NULL)
        return NULL;
    c->ctx = provctx;
    c->kind = kind;
    c->pad = RSA_PKCS1_PADDING;
    c->saltlen = RSA_PSS_SALTLEN_AUTO;
    return c;
}

static void *ecdsa_newctx(void *provctx, const char *propq)
{
    (void)propq;
    return newctx(provctx, SKS_KIND_EC);
}

static void *rsa_newctx(void *provctx, const char *propq)
{
    (void)propq;
    return newctx(provctx, SKS_KIND_RSA);
}

static void *ed25519_newctx(void *provctx, const char *propq)
{
    (void)propq;
    return newctx(provctx, SKS_KIND_ED25519);
}

static void sig_freectx(void *vctx)
{
    sigctx *c = vctx;

    if (c == NULL)
        return;
    sks_key_free(c->key);
    EVP_MD_CTX_free(c->mdctx);
    if (c->shadow_md == NULL)
        EVP_PKEY_CTX_free(c->shadow);
    EVP_MD_CTX_free(c->shadow_md);
    OPENSSL_free(c);
}

/* A real copy: OpenSSL 3.0 duplicates the context inside EVP_DigestSignFinal. */
static void *sig_dupctx(void *vctx)
{
    sigctx *src = vctx, *c = OPENSSL_memdup(src, sizeof(*src));

    if (c == NULL)
        return NULL;
    c->key = NULL;
    c->mdctx = NULL;
    c->shadow = NULL;
    c->shadow_md = NULL;
    if (src->key != NULL && sks_key_up_ref(src->key))
        c->key = src->key;
    if (src->mdctx != NULL
        && ((c->mdctx = EVP_MD_CTX_new()) == NULL || !EVP_MD_CTX_copy_ex(c->mdctx, src->mdctx)))
        goto fail;
    if (src->shadow_md != NULL) {
        if ((c->shadow_md = EVP_MD_CTX_new()) == NULL || !EVP_MD_CTX_copy_ex(c->shadow_md, src->shadow_md))
            goto fail;
        c->shadow = EVP_MD_CTX_get_pkey_ctx(c->shadow_md);
    } else if (src->shadow != NULL && (c->shadow = EVP_PKEY_CTX_dup(src->shadow)) == NULL) {
        goto fail;
    }
    return c;
fail:
    sig_freectx(c);
    return NULL;
}

static int key_kind_fits(const sigctx *c, const sks_key *k)
{
    if (c->kind == SKS_KIND_RSA)
        return k->kind == SKS_KIND_RSA || k->kind == SKS_KIND_RSA_PSS;
    return k->kind == c->kind;
}

/* Mirrors our settings onto the shadow context so it validates them and can produce the
 * AlgorithmIdentifier and verify. */
static int sync_shadow(sigctx *c)
{
    OSSL_PARAM params[5], *p = params;
    char padname[16];
    int salt = c->saltlen;

    if (c->shadow == NULL)
        return 1;
    if (c->mdname[0] != '\0')
        *p++ = OSSL_PARAM_construct_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, c->mdname, 0);
    if (c->kind == SKS_KIND_RSA) {
        strcpy(padname, c->pad == RSA_PKCS1_PSS_PADDING ? OSSL_PKEY_RSA_PAD_MODE_PSS : OSSL_PKEY_RSA_PAD_MODE_PKCSV15);
        *p++ = OSSL_PARAM_construct_utf8_string(OSSL_SIGNATURE_PARAM_PAD_MODE, padname, 0);
        if (c->pad == RSA_PKCS1_PSS_PADDING) {
            *p++ = OSSL_PARAM_construct_int(OSSL_SIGNATURE_PARAM_PSS_SALTLEN, &salt);
            if (c->mgf1name[0] != '\0')
                *p++ = OSSL_PARAM_construct_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_DIGEST, c->mgf1name, 0);
        }
    }
    *p = OSSL_PARAM_construct_end();
    if (p == params)
        return 1; /* nothing to mirror (Ed25519 contexts take no parameters at all) */
    return EVP_PKEY_CTX_set_params(c->shadow, params) == 1;
}

static int signverify_init(sigctx *c, void *vkey, int operation, const OSSL_PARAM params[])
{
    sks_key *k = vkey;

    if (k != NULL) {
        if (!key_kind_fits(c, k) || k->pub == NULL || k->params_only) {
            sks_raise(c->ctx, SKS_R_UNSUPPORTED, "the key is not a %s key", sks_kind_name(c->kind));
            return 0;
        }
        sks_key_free(c->key);
        sks_key_up_ref(k);
        c->key = k;
        if (k->kind == SKS_KIND_RSA_PSS)
            c->pad = RSA_PKCS1_PSS_PADDING;
    }
    if (c->key == NULL)
        return 0;
    c->operation = operation;
    /* The shadow is made on first need (verify, parameters): signing never needs it. */
    if (c->shadow_md == NULL)
        EVP_PKEY_CTX_free(c->shadow);
    EVP_MD_CTX_free(c->shadow_md);
    c->shadow = NULL;
    c->shadow_md = NULL;
    return sig_set_ctx_params(c, params);
}

/* Creates the shadow context on the cached public key and mirrors our settings onto it. */
static int ensure_shadow(sigctx *c)
{
    if (c->shadow != NULL)
        return 1;
    if (c->key == NULL)
        return 0;
    if (c->kind == SKS_KIND_ED25519) {
        c->shadow_md = EVP_MD_CTX_new();
        if (c->shadow_md == NULL
            || EVP_DigestVerifyInit_ex(c->shadow_md, &c->shadow, NULL, c->ctx->libctx, "provider=default", c->key->pub,
                                       NULL) != 1)
            return 0;
    } else {
        c->shadow = EVP_PKEY_CTX_new_from_pkey(c->ctx->libctx, c->key->pub, "provider=default");
        if (c->shadow == NULL || EVP_PKEY_verify_init(c->shadow) != 1)
            return 0;
    }
    return sync_shadow(c);
}

static int sig_sign_init(void *vctx, void *vkey, const OSSL_PARAM params[])
{
    return signverify_init(vctx, vkey, EVP_PKEY_OP_SIGN, params);
}

static int sig_verify_init(void *vctx, void *vkey, const OSSL_PARAM params[])
{
    return signverify_init(vctx, vkey, EVP_PKEY_OP_VERIFY, params);
}

static size_t hash_len_of(const char *mdname)
{
    static const struct {
        const char *name;
        size_t len;
    } MD[] = { { "SHA1", 20 }, { "SHA224", 28 }, { "SHA256", 32 }, { "SHA384", 48 }, { "SHA512", 64 } };
    size_t i;

    for (i = 0; i < sizeof(MD) / sizeof(MD[0]); i++)
        if (strcmp(MD[i].name, mdname) == 0)
            return MD[i].len;
    return 0;
}

/* Canonical digest name ("SHA256") for any of OpenSSL's aliases ("sha-256", "SHA2-256").
 * The common spellings are answered from a table: a fetch on every init costs. */
static int canonical_md(sks_provctx *ctx, const char *name, char *out, size_t n)
{
    static const struct {
        const char *alias, *name;
    } KNOWN[] = { { "SHA256", "SHA256" }, { "SHA2-256", "SHA256" }, { "SHA-256", "SHA256" },
                  { "SHA384", "SHA384" }, { "SHA2-384", "SHA384" }, { "SHA-384", "SHA384" },
                  { "SHA512", "SHA512" }, { "SHA2-512", "SHA512" }, { "SHA-512", "SHA512" },
                  { "SHA1", "SHA1" },     { "SHA-1", "SHA1" },      { "SHA224", "SHA224" },
                  { "SHA2-224", "SHA224" }, { "SHA-224", "SHA224" } };
    EVP_MD *md;
    size_t i;
    int ok = 0;

    for (i = 0; i < sizeof(KNOWN) / sizeof(KNOWN[0]); i++)
        if (OPENSSL_strcasecmp(name, KNOWN[i].alias) == 0) {
            size_t len = strlen(KNOWN[i].name); /* a copy, not snprintf: this runs on every signature */
            if (len >= n)
                return 0;
            memcpy(out, KNOWN[i].name, len + 1);
            return 1;
        }
    md = EVP_MD_fetch(ctx->libctx, name, "provider=default");

    if (md == NULL)
        return 0;
    if (EVP_MD_is_a(md, "SHA1"))
        ok = snprintf(out, n, "SHA1") > 0;
    else if (EVP_MD_is_a(md, "SHA224"))
        ok = snprintf(out, n, "SHA224") > 0;
    else if (EVP_MD_is_a(md, "SHA256"))
        ok = snprintf(out, n, "SHA256") > 0;
    else if (EVP_MD_is_a(md, "SHA384"))
        ok = snprintf(out, n, "SHA384") > 0;
    else if (EVP_MD_is_a(md, "SHA512"))
        ok = snprintf(out, n, "SHA512") > 0;
    EVP_MD_free(md);
    return ok;
}

/* The device algorithm for a hash-then-sign operation: the specific URI when the digest
 * has one, else the generic "none" form, subject to the key's endorsement list. */
static const char *choose_uri(sigctx *c, const char *specific, const char *generic)
{
    if (specific != NULL && sks_key_endorses(c->key, specific))
        return specific;
    if (generic != NULL && sks_key_endorses(c->key, generic))
        return generic;
    sks_raise(c->ctx, SKS_R_NOT_ENDORSED, "sks key \"%s\" is not endorsed for %s", c->key->name ? c->key->name : "?",
              specific ? specific : generic);
    return NULL;
}

/* One unsigned big-endian integer as a DER INTEGER: leading zeros dropped, a zero byte added
 * when the top bit is set. Writes to out (if not NULL); returns the encoded length. */
static size_t der_uint(const uint8_t *v, size_t n, uint8_t *out)
{
    size_t pad;

    while (n > 1 && v[0] == 0) {
        v++;
        n--;
    }
    pad = n > 0 && (v[0] & 0x80) ? 1 : 0;
    if (out != NULL) {
        out[0] = 0x02;
        out[1] = (uint8_t)(n + pad);
        out[2] = 0;
        memcpy(out + 2 + pad, v, n);
    }
    return 2 + pad + n;
}

/* r||s from the device -> DER ECDSA-Sig-Value. Written directly, without ECDSA_SIG and its
 * BIGNUMs (and i2d_ECDSA_SIG twice): this runs on every ECDSA signature. */
static int ecdsa_raw_to_der(const uint8_t *raw, size_t n, unsigned char *sig, size_t *siglen, size_t sigsize)
{
    size_t half = n / 2, body, head, rlen;

    if (n == 0 || n % 2 != 0 || half > 66) /* P-521: 66-byte coordinates, the largest */
        return 0;
    body = der_uint(raw, half, NULL) + der_uint(raw + half, half, NULL);
    head = body < 0x80 ? 2 : 3;
    if (head + body > sigsize)
        return 0;
    sig[0] = 0x30;
    if (head == 3) {
        sig[1] = 0x81;
        sig[2] = (uint8_t)body;
    } else {
        sig[1] = (uint8_t)body;
    }
    rlen = der_uint(raw, half, sig + head);
    der_uint(raw + half, half, sig + head + rlen);
    *siglen = head + body;
    return 1;
}

/* DigestInfo DER for rsa.pkcs1.none when the digest has no specific SKS URI, into
 * out[size]; its length, 0 on failure. */
static size_t digest_info(const char *mdname, const uint8_t *h, size_t hlen, uint8_t *out, size_t size)
{
    X509_SIG *sig = X509_SIG_new();
    X509_ALGOR *alg;
    ASN1_OCTET_STRING *digest;
    unsigned char *p = out;
    int nid = OBJ_sn2nid(mdname), len;
    size_t done = 0;

    if (sig == NULL || nid == NID_undef)
        goto end;
    X509_SIG_getm(sig, &alg, &digest);
    if (!X509_ALGOR_set0(alg, OBJ_nid2obj(nid), V_ASN1_NULL, NULL) || !ASN1_OCTET_STRING_set(digest, h, (int)hlen))
        goto end;
    len = i2d_X509_SIG(sig, NULL);
    if (len > 0 && (size_t)len <= size && i2d_X509_SIG(sig, &p) == len)
        done = (size_t)len;
end:
    X509_SIG_free(sig);
    return done;
}

/* Salt length as the device must use it, resolving OpenSSL's special values. */
static int actual_saltlen(const sigctx *c, size_t hlen)
{
    int bits = EVP_PKEY_get_bits(c->key->pub), emlen = (bits - 1 + 7) / 8;

    if (c->saltlen >= 0)
        return c->saltlen;
    if (c->saltlen == RSA_PSS_SALTLEN_DIGEST)
        return (int)hlen;
    return emlen - (int)hlen - 2; /* AUTO or MAX when signing: the maximum */
}

/* The largest ECDSA signature the device returns raw (r || s on P-521). */
#define RAW_ECDSA_MAX 132

static int sign_hash(sigctx *c, unsigned char *sig, size_t *siglen, size_t sigsize, const unsigned char *tbs,
                     size_t tbslen)
{
    const char *md = c->mdname[0] ? c->mdname : NULL;
    const char *uri = NULL;
    const uint8_t *data = tbs;
    uint8_t info[128], params[64], raw[RAW_ECDSA_MAX];
    size_t data_len = tbslen, params_len = 0, raw_len = 0;
    int ok = 0;

    if (md != NULL && hash_len_of(md) != tbslen) {
        sks_raise(c->ctx, SKS_R_UNSUPPORTED, "input is %zu bytes, not a %s hash", tbslen, md);
        return 0;
    }
    if (c->kind == SKS_KIND_EC) {
        const char *specific = md == NULL ? NULL
                               : strcmp(md, "SHA256") == 0 ? SKS_XMLDSIG_MORE("ecdsa-sha256")
                               : strcmp(md, "SHA384") == 0 ? SKS_XMLDSIG_MORE("ecdsa-sha384")
                               : strcmp(md, "SHA512") == 0 ? SKS_XMLDSIG_MORE("ecdsa-sha512")
                                                            : NULL;
        uri = choose_uri(c, specific, SKS_ALG_URI("ecdsa.none"));
    } else if (c->pad == RSA_PKCS1_PSS_PADDING) {
        const char *mgf1 = c->mgf1name[0] ? c->mgf1name : md;
        int salt;
        uri = md == NULL ? NULL
              : strcmp(md, "SHA256") == 0 ? SKS_ALG_URI("rsa.pss.sha256")
              : strcmp(md, "SHA384") == 0 ? SKS_ALG_URI("rsa.pss.sha384")
              : strcmp(md, "SHA512") == 0 ? SKS_ALG_URI("rsa.pss.sha512")
                                          : NULL;
        if (uri == NULL) {
            sks_raise(c->ctx, SKS_R_UNSUPPORTED, "RSA-PSS with sks keys needs SHA-256, SHA-384 or SHA-512");
            return 0;
        }
        uri = choose_uri(c, uri, NULL);
        salt = actual_saltlen(c, tbslen);
        if (salt < 0 || salt > 0xFFFF) {
            sks_raise(c->ctx, SKS_R_UNSUPPORTED, "RSA-PSS salt length does not fit the key");
            return 0;
        }
        /* Non-default PSS parameters go along as signHashedData's parameters. */
        if (((size_t)salt != tbslen || strcmp(mgf1, md) != 0)
            && (params_len = sks_client_pss_parameters((uint16_t)salt, mgf1, params, sizeof(params))) == 0) {
            sks_raise(c->ctx, SKS_R_UNSUPPORTED, "RSA-PSS MGF1 digest name too long: %s", mgf1);
            return 0;
        }
    } else {
        const char *specific = md == NULL ? NULL
                               : strcmp(md, "SHA256") == 0 ? SKS_XMLDSIG_MORE("rsa-sha256")
                               : strcmp(md, "SHA384") == 0 ? SKS_XMLDSIG_MORE("rsa-sha384")
                               : strcmp(md, "SHA512") == 0 ? SKS_XMLDSIG_MORE("rsa-sha512")
                                                            : NULL;
        uri = choose_uri(c, specific, SKS_ALG_URI("rsa.pkcs1.none"));
        if (uri != NULL && md != NULL && strstr(uri, "rsa.pkcs1.none") != NULL) {
            if ((data_len = digest_info(md, tbs, tbslen, info, sizeof(info))) == 0)
                return 0;
            data = info;
        }
    }
    if (uri == NULL)
        return 0;
    if (c->kind == SKS_KIND_EC) {
        /* raw r || s from the device, DER for OpenSSL */
        if (sks_op_sign(c->key, uri, params, params_len, data, data_len, raw, sizeof(raw), &raw_len) != SKS_P_OK)
            return 0;
        ok = ecdsa_raw_to_der(raw, raw_len, sig, siglen, sigsize);
        if (!ok)
            sks_raise(c->ctx, SKS_R_INTERNAL, "signature does not fit the output buffer");
        return ok;
    }
    return sks_op_sign(c->key, uri, params, params_len, data, data_len, sig, sigsize, siglen) == SKS_P_OK;
}

static int sig_sign(void *vctx, unsigned char *sig, size_t *siglen, size_t sigsize, const unsigned char *tbs,
                    size_t tbslen)
{
    sigctx *c = vctx;

    if (c->key == NULL)
        return 0;
    if (sig == NULL) {
        *siglen = (size_t)EVP_PKEY_get_size(c->key->pub);
        return 1;
    }
    if (c->kind == SKS_KIND_ED25519)
        return choose_uri(c, SKS_ALG_URI("ed25519"), NULL) != NULL
               && sks_op_sign(c->key, SKS_ALG_URI("ed25519"), NULL, 0, tbs, tbslen, sig, sigsize, siglen) == SKS_P_OK;
    return sign_hash(c, sig, siglen, sigsize, tbs, tbslen);
}

static int sig_verify(void *vctx, const unsigned char *sig, size_t siglen, const unsigned char *tbs, size_t tbslen)
{
    sigctx *c = vctx;

    return ensure_shadow(c) && EVP_PKEY_verify(c->shadow, sig, siglen, tbs, tbslen) == 1;
}

static int digest_init(sigctx *c, const char *mdname, void *vkey, int operation, const OSSL_PARAM params[])
{
    EVP_MD *md;

    if (mdname != NULL && *mdname != '\0' && !canonical_md(c->ctx, mdname, c->mdname, sizeof(c->mdname))) {
        sks_raise(c->ctx, SKS_R_UNSUPPORTED, "digest %s is not supported with sks keys", mdname);
        return 0;
    }
    if (!signverify_init(c, vkey, operation, params))
        return 0;
    if (c->mdname[0] == '\0')
        strcpy(c->mdname, "SHA256");
    md = sks_md_fetch(c->ctx, c->mdname);
    if (c->mdctx == NULL)
        c->mdctx = EVP_MD_CTX_new(); /* else reset by EVP_DigestInit_ex2 */
    if (md == NULL || c->mdctx == NULL || EVP_DigestInit_ex2(c->mdctx, md, NULL) != 1) {
        EVP_MD_free(md);
        return 0;
    }
    EVP_MD_free(md);
    return sync_shadow(c);
}

static int sig_digest_sign_init(void *vctx, const char *mdname, void *vkey, const OSSL_PARAM params[])
{
    return digest_init(vctx, mdname, vkey, EVP_PKEY_OP_SIGN, params);
}

static int sig_digest_verify_init(void *vctx, const char *mdname, void *vkey, const OSSL_PARAM params[])
{
    return digest_init(vctx, mdname, vkey, EVP_PKEY_OP_VERIFY, params);
}

static int sig_digest_update(void *vctx, const unsigned char *data, size_t n)
{
    sigctx *c = vctx;

    return c->mdctx != NULL && EVP_DigestUpdate(c->mdctx, data, n) == 1;
}

static int finish_digest(sigctx *c, unsigned char *h, unsigned int *hlen)
{
    return c->mdctx != NULL && EVP_DigestFinal_ex(c->mdctx, h, hlen) == 1;
}

static int sig_digest_sign_final(void *vctx, unsigned char *sig, size_t *siglen, size_t sigsize)
{
    sigctx *c = vctx;
    unsigned char h[EVP_MAX_MD_SIZE];
    unsigned int hlen = 0;

    if (c->key == NULL)
        return 0;
    if (sig == NULL) {
        *siglen = (size_t)EVP_PKEY_get_size(c->key->pub);
        return 1;
    }
    return finish_digest(c, h, &hlen) && sign_hash(c, sig, siglen, sigsize, h, hlen);
}

static int sig_digest_verify_final(void *vctx, const unsigned char *sig, size_t siglen)
{
    sigctx *c = vctx;
    unsigned char h[EVP_MAX_MD_SIZE];
    unsigned int hlen = 0;

    return finish_digest(c, h, &hlen) && sig_verify(c, sig, siglen, h, hlen);
}

/* Ed25519 is one-shot: the device signs the message itself. */
static int ed_digest_init(void *vctx, const char *mdname, void *vkey, const OSSL_PARAM params[], int operation)
{
    sigctx *c = vctx;

    if (mdname != NULL && *mdname != '\0') {
        sks_raise(c->ctx, SKS_R_UNSUPPORTED, "Ed25519 takes no digest");
        return 0;
    }
    return signverify_init(c, vkey, operation, params);
}

static int ed_digest_sign_init(void *vctx, const char *mdname, void *vkey, const OSSL_PARAM params[])
{
    return ed_digest_init(vctx, mdname, vkey, params, EVP_PKEY_OP_SIGN);
}

static int ed_digest_verify_init(void *vctx, const char *mdname, void *vkey, const OSSL_PARAM params[])
{
    return ed_digest_init(vctx, mdname, vkey, params, EVP_PKEY_OP_VERIFY);
}

static int ed_digest_sign(void *vctx, unsigned char *sig, size_t *siglen, size_t sigsize, const unsigned char *tbs,
                          size_t tbslen)
{
    return sig_sign(vctx, sig, siglen, sigsize, tbs, tbslen);
}

static int ed_digest_verify(void *vctx, const unsigned char *sig, size_t siglen, const unsigned char *tbs,
                            size_t tbslen)
{
    sigctx *c = vctx;
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    int ok = m != NULL && EVP_DigestVerifyInit_ex(m, NULL, NULL, c->ctx->libctx, "provider=default", c->key->pub, NULL) == 1
             && EVP_DigestVerify(m, sig, siglen, tbs, tbslen) == 1;

    EVP_MD_CTX_free(m);
    return ok;
}

static int sig_get_ctx_params(void *vctx, OSSL_PARAM params[])
{
    sigctx *c = vctx;

    /* The shadow context holds the same digest, padding and salt settings, and computes the
     * AlgorithmIdentifier exactly as the default provider would. */
    return ensure_shadow(c) && EVP_PKEY_CTX_get_params(c->shadow, params) == 1;
}

static const OSSL_PARAM *sig_gettable_ctx_params(void *vctx, void *provctx)
{
    static const OSSL_PARAM params[] = {
        OSSL_PARAM_octet_string(OSSL_SIGNATURE_PARAM_ALGORITHM_ID, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PAD_MODE, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_DIGEST, NULL, 0),
        OSSL_PARAM_int(OSSL_SIGNATURE_PARAM_PSS_SALTLEN, NULL),
        OSSL_PARAM_END
    };
    (void)vctx;
    (void)provctx;
    return params;
}

static int set_pad_mode(sigctx *c, const OSSL_PARAM *p)
{
    int mode;

    if (p->data_type == OSSL_PARAM_UTF8_STRING) {
        if (strcmp(p->data, OSSL_PKEY_RSA_PAD_MODE_PKCSV15) == 0)
            mode = RSA_PKCS1_PADDING;
        else if (strcmp(p->data, OSSL_PKEY_RSA_PAD_MODE_PSS) == 0)
            mode = RSA_PKCS1_PSS_PADDING;
        else
            mode = -1;
    } else if (!OSSL_PARAM_get_int(p, &mode)) {
        return 0;
    }
    if (mode != RSA_PKCS1_PADDING && mode != RSA_PKCS1_PSS_PADDING) {
        sks_raise(c->ctx, SKS_R_UNSUPPORTED, "sks RSA keys sign with PKCS#1 v1.5 or PSS padding only");
        return 0;
    }
    if (c->key != NULL && c->key->kind == SKS_KIND_RSA_PSS && mode != RSA_PKCS1_PSS_PADDING)
        return 0;
    c->pad = mode;
    return 1;
}

static int set_saltlen(sigctx *c, const OSSL_PARAM *p)
{
    if (p->data_type == OSSL_PARAM_UTF8_STRING) {
        const char *s = p->data;
        if (strcmp(s, OSSL_PKEY_RSA_PSS_SALT_LEN_DIGEST) == 0)
            c->saltlen = RSA_PSS_SALTLEN_DIGEST;
        else if (strcmp(s, OSSL_PKEY_RSA_PSS_SALT_LEN_MAX) == 0)
            c->saltlen = RSA_PSS_SALTLEN_MAX;
        else if (strcmp(s, OSSL_PKEY_RSA_PSS_SALT_LEN_AUTO) == 0)
            c->saltlen = RSA_PSS_SALTLEN_AUTO;
        else
            c->saltlen = atoi(s);
        return 1;
    }
    return OSSL_PARAM_get_int(p, &c->saltlen);
}

static int sig_set_ctx_params(void *vctx, const OSSL_PARAM params[])
{
    sigctx *c = vctx;
    const OSSL_PARAM *p;
    char name[64];

    if (params == NULL)
        return 1;
    if ((p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_DIGEST)) != NULL) {
        char *s = name;
        if (!OSSL_PARAM_get_utf8_string(p, &s, sizeof(name)) || !canonical_md(c->ctx, name, c->mdname, sizeof(c->mdname))) {
            sks_raise(c->ctx, SKS_R_UNSUPPORTED, "digest %s is not supported with sks keys", name);
            return 0;
        }
    }
    if (c->kind == SKS_KIND_RSA) {
        if ((p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_PAD_MODE)) != NULL && !set_pad_mode(c, p))
            return 0;
        if ((p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_PSS_SALTLEN)) != NULL && !set_saltlen(c, p))
            return 0;
        if ((p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_MGF1_DIGEST)) != NULL) {
            char *s = name;
            if (!OSSL_PARAM_get_utf8_string(p, &s, sizeof(name))
                || !canonical_md(c->ctx, name, c->mgf1name, sizeof(c->mgf1name)))
                return 0;
        }
    }
    return sync_shadow(c);
}

static const OSSL_PARAM *ecdsa_settable_ctx_params(void *vctx, void *provctx)
{
    static const OSSL_PARAM params[] = {
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PROPERTIES, NULL, 0),
        OSSL_PARAM_END
    };
    (void)vctx;
    (void)provctx;
    return params;
}

static const OSSL_PARAM *rsa_settable_ctx_params(void *vctx, void *provctx)
{
    static const OSSL_PARAM params[] = {
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PROPERTIES, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PAD_MODE, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_DIGEST, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PSS_SALTLEN, NULL, 0),
        OSSL_PARAM_END
    };
    (void)vctx;
    (void)provctx;
    return params;
}

static const OSSL_PARAM *ed25519_settable_ctx_params(void *vctx, void *provctx)
{
    static const OSSL_PARAM params[] = { OSSL_PARAM_END };
    (void)vctx;
    (void)provctx;
    return params;
}

#define SIG_COMMON                                                                               \
    { OSSL_FUNC_SIGNATURE_FREECTX, (void (*)(void))sig_freectx },                               \
    { OSSL_FUNC_SIGNATURE_DUPCTX, (void (*)(void))sig_dupctx },                                 \
    { OSSL_FUNC_SIGNATURE_SIGN_INIT, (void (*)(void))sig_sign_init },                           \
    { OSSL_FUNC_SIGNATURE_SIGN, (void (*)(void))sig_sign },                                     \
    { OSSL_FUNC_SIGNATURE_VERIFY_INIT, (void (*)(void))sig_verify_init },                       \
    { OSSL_FUNC_SIGNATURE_VERIFY, (void (*)(void))sig_verify },                                 \
    { OSSL_FUNC_SIGNATURE_GET_CTX_PARAMS, (void (*)(void))sig_get_ctx_params },                 \
    { OSSL_FUNC_SIGNATURE_GETTABLE_CTX_PARAMS, (void (*)(void))sig_gettable_ctx_params },       \
    { OSSL_FUNC_SIGNATURE_SET_CTX_PARAMS, (void (*)(void))sig_set_ctx_params }

#define SIG_DIGEST                                                                               \
    { OSSL_FUNC_SIGNATURE_DIGEST_SIGN_INIT, (void (*)(void))sig_digest_sign_init },             \
    { OSSL_FUNC_SIGNATURE_DIGEST_SIGN_UPDATE, (void (*)(void))sig_digest_update },              \
    { OSSL_FUNC_SIGNATURE_DIGEST_SIGN_FINAL, (void (*)(void))sig_digest_sign_final },           \
    { OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_INIT, (void (*)(void))sig_digest_verify_init },         \
    { OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_UPDATE, (void (*)(void))sig_digest_update },            \
    { OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_FINAL, (void (*)(void))sig_digest_verify_final }

const OSSL_DISPATCH sks_ecdsa_signature_functions[] = {
    { OSSL_FUNC_SIGNATURE_NEWCTX, (void (*)(void))ecdsa_newctx },
    SIG_COMMON,
    SIG_DIGEST,
    { OSSL_FUNC_SIGNATURE_SETTABLE_CTX_PARAMS, (void (*)(void))ecdsa_settable_ctx_params },
    { 0, NULL }
};

const OSSL_DISPATCH sks_rsa_signature_functions[] = {
    { OSSL_FUNC_SIGNATURE_NEWCTX, (void (*)(void))rsa_newctx },
    SIG_COMMON,
    SIG_DIGEST,
    { OSSL_FUNC_SIGNATURE_SETTABLE_CTX_PARAMS, (void (*)(void))rsa_settable_ctx_params },
    { 0, NULL }
};

const OSSL_DISPATCH sks_ed25519_signature_functions[] = {
    { OSSL_FUNC_SIGNATURE_NEWCTX, (void (*)(void))ed25519_newctx },
    SIG_COMMON,
    { OSSL_FUNC_SIGNATURE_DIGEST_SIGN_INIT, (void (*)(void))ed_digest_sign_init },
    { OSSL_FUNC_SIGNATURE_DIGEST_SIGN, (void (*)(void))ed_digest_sign },
    { OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_INIT, (void (*)(void))ed_digest_verify_init },
    { OSSL_FUNC_SIGNATURE_DIGEST_VERIFY, (void (*)(void))ed_digest_verify },
    { OSSL_FUNC_SIGNATURE_SETTABLE_CTX_PARAMS, (void (*)(void))ed25519_settable_ctx_params },
    { 0, NULL }
};
