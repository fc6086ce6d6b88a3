/*
 * The byte formats of SmartCard-HSM key management (docs/smartcard-hsm.md): key generation
 * C-data, the CV request it answers, the PKCS#15 PrKD, INITIALIZE's C-data, the SO-PIN.
 */
#include "mgmt.h"
#include "keymgmt_formats.h"

#include <stdio.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/obj_mac.h>
#include <openssl/param_build.h>
#include <openssl/sha.h>

#define KEYGEN_URI(x) "https://webpki.github.io/sks/algorithm#" x

static const struct {
    const char *uri;
    schsm_keyspec ks;
} KEY_URIS[] = {
    { KEYGEN_URI("ec.nist.p256"), { 0, 0, NID_X9_62_prime256v1, "prime256v1" } },
    { KEYGEN_URI("ec.nist.p384"), { 0, 0, NID_secp384r1, "secp384r1" } },
    { KEYGEN_URI("ec.nist.p521"), { 0, 0, NID_secp521r1, "secp521r1" } },
    { KEYGEN_URI("ec.brainpool.p256r1"), { 0, 0, NID_brainpoolP256r1, "brainpoolP256r1" } },
    { KEYGEN_URI("ec.brainpool.p320r1"), { 0, 0, NID_brainpoolP320r1, "brainpoolP320r1" } },
    { KEYGEN_URI("ec.brainpool.p384r1"), { 0, 0, NID_brainpoolP384r1, "brainpoolP384r1" } },
    { KEYGEN_URI("ec.brainpool.p512r1"), { 0, 0, NID_brainpoolP512r1, "brainpoolP512r1" } },
    { KEYGEN_URI("rsa2048"), { 1, 2048, 0, NULL } },
    { KEYGEN_URI("rsa3072"), { 1, 3072, 0, NULL } },
    { KEYGEN_URI("rsa4096"), { 1, 4096, 0, NULL } },
};

/* id-TA-RSA-v1-5-SHA-256 and id-TA-ECDSA-SHA-256 (BSI TR-03110): the key's kind for the card. */
static const uint8_t OID_TA_RSA_SHA256[] = { 0x04, 0x00, 0x7F, 0x00, 0x07, 0x02, 0x02, 0x02, 0x01, 0x02 };
static const uint8_t OID_TA_ECDSA_SHA256[] = { 0x04, 0x00, 0x7F, 0x00, 0x07, 0x02, 0x02, 0x02, 0x02, 0x03 };

int schsm_keyspec_from_uri(const uint8_t *uri, size_t n, schsm_keyspec *ks)
{
    size_t i;

    for (i = 0; i < sizeof(KEY_URIS) / sizeof(KEY_URIS[0]); i++)
        if (strlen(KEY_URIS[i].uri) == n && memcmp(KEY_URIS[i].uri, uri, n) == 0) {
            *ks = KEY_URIS[i].ks;
            return 1;
        }
    return 0;
}

/* ---- BER-TLV ---- */

static void put_length(sks_buf *out, size_t n)
{
    if (n < 0x80) {
        sks_buf_byte(out, (uint8_t)n);
    } else if (n < 0x100) {
        sks_buf_byte(out, 0x81);
        sks_buf_byte(out, (uint8_t)n);
    } else if (n < 0x10000) {
        sks_buf_byte(out, 0x82);
        sks_buf_ushort(out, (uint16_t)n);
    } else {
        out->failed = 1;
    }
}

void schsm_mgmt_tlv_put(sks_buf *out, unsigned tag, const uint8_t *value, size_t n)
{
    if (tag > 0xFF)
        sks_buf_byte(out, (uint8_t)(tag >> 8));
    sks_buf_byte(out, (uint8_t)tag);
    put_length(out, n);
    if (n > 0)
        sks_buf_put(out, value, n);
}

int schsm_mgmt_tlv_find(const uint8_t *p, size_t n, unsigned tag, const uint8_t **value, size_t *value_len,
                   const uint8_t **tlv_start, size_t *tlv_len)
{
    const uint8_t *end;
    schsm_kmtlv t;

    if (p == NULL)
        return 0;
    for (end = p + n; p < end;) {
        if (!schsm_kmtlv_next(&p, end, &t))
            return 0;
        if (t.tag == tag) {
            *value = t.value;
            *value_len = t.len;
            if (tlv_start != NULL)
                *tlv_start = t.tlv;
            if (tlv_len != NULL)
                *tlv_len = t.tlvlen;
            return 1;
        }
    }
    return 0;
}

/* ---- key generation C-data ---- */

/* A big number as exactly len big-endian bytes. */
static int put_bn_tlv(sks_buf *out, unsigned tag, const BIGNUM *bn, size_t len)
{
    uint8_t buf[133];

    if (len > sizeof(buf) || BN_bn2binpad(bn, buf, (int)len) < 0)
        return 0;
    schsm_mgmt_tlv_put(out, tag, buf, len);
    return 1;
}

/* The explicit domain parameters 81 p, 82 a, 83 b, 84 G, 85 n, 87 h of a named curve. */
static int put_ec_domain(sks_buf *out, int nid)
{
    EC_GROUP *g = EC_GROUP_new_by_curve_name(nid);
    BN_CTX *bnctx = BN_CTX_new();
    BIGNUM *p = BN_new(), *a = BN_new(), *b = BN_new();
    uint8_t gen[1 + 2 * 66], h = 0;
    size_t flen, glen;
    int ok = 0;

    if (g == NULL || bnctx == NULL || p == NULL || a == NULL || b == NULL
        || !EC_GROUP_get_curve(g, p, a, b, bnctx))
        goto done;
    flen = (size_t)BN_num_bytes(p);
    glen = EC_POINT_point2oct(g, EC_GROUP_get0_generator(g), POINT_CONVERSION_UNCOMPRESSED, gen, sizeof(gen), bnctx);
    if (glen != 1 + 2 * flen || BN_num_bits(EC_GROUP_get0_cofactor(g)) > 8)
        goto done;
    h = (uint8_t)BN_get_word(EC_GROUP_get0_cofactor(g));
    ok = put_bn_tlv(out, 0x81, p, flen) && put_bn_tlv(out, 0x82, a, flen) && put_bn_tlv(out, 0x83, b, flen);
    if (ok) {
        schsm_mgmt_tlv_put(out, 0x84, gen, glen);
        ok = put_bn_tlv(out, 0x85, EC_GROUP_get0_order(g), (size_t)BN_num_bytes(EC_GROUP_get0_order(g)));
        schsm_mgmt_tlv_put(out, 0x87, &h, 1);
    }
done:
    BN_free(p);
    BN_free(a);
    BN_free(b);
    BN_CTX_free(bnctx);
    EC_GROUP_free(g);
    return ok;
}

int schsm_keygen_cdata(const schsm_keyspec *ks, const char *car, const char *chr, sks_buf *out)
{
    static const uint8_t CPI = 0x00, EXPONENT[] = { 0x01, 0x00, 0x01 };
    sks_buf key;
    uint8_t bits[2];
    int ok = 1;

    sks_buf_init(&key);
    if (ks->is_rsa) {
        schsm_mgmt_tlv_put(&key, 0x06, OID_TA_RSA_SHA256, sizeof(OID_TA_RSA_SHA256));
        schsm_mgmt_tlv_put(&key, 0x82, EXPONENT, sizeof(EXPONENT));
        bits[0] = (uint8_t)(ks->rsa_bits >> 8);
        bits[1] = (uint8_t)ks->rsa_bits;
        schsm_mgmt_tlv_put(&key, 0x02, bits, 2);
    } else {
        schsm_mgmt_tlv_put(&key, 0x06, OID_TA_ECDSA_SHA256, sizeof(OID_TA_ECDSA_SHA256));
        ok = put_ec_domain(&key, ks->curve_nid);
    }
    schsm_mgmt_tlv_put(out, 0x5F29, &CPI, 1);
    schsm_mgmt_tlv_put(out, 0x42, (const uint8_t *)car, strlen(car));
    schsm_mgmt_tlv_put(out, 0x7F49, key.data, key.len);
    schsm_mgmt_tlv_put(out, 0x5F20, (const uint8_t *)chr, strlen(chr));
    ok = ok && !key.failed && !out->failed;
    sks_buf_free(&key);
    return ok;
}

/* ---- PKCS#15 PrKD ---- */

/* A DER TLV (the PrKD is DER, single-byte tags). */
static void der(sks_buf *out, uint8_t tag, const sks_buf *content)
{
    schsm_mgmt_tlv_put(out, tag, content->data, content->len);
}

int schsm_prkd_encode(const schsm_keyspec *ks, const char *label, size_t label_len, const uint8_t *id, size_t id_len,
                      uint8_t kid, unsigned size_bits, sks_buf *out)
{
    /* flags private|modifiable; authId 01 (the user PIN); usage as OpenSC sets it: EC
     * sign|signRecover|derive, RSA decrypt|sign|signRecover|unwrap */
    static const uint8_t FLAGS[] = { 0x06, 0xC0 }, AUTH_ID = 0x01;
    static const uint8_t EC_USAGE[] = { 0x07, 0x30, 0x80 }, RSA_USAGE[] = { 0x02, 0x74 };
    static const uint8_t EMPTY_PATH[] = { 0x04, 0x00 };
    sks_buf common, key, path, attrs, type, body;
    uint8_t size[2];
    int ok;

    sks_buf_init(&common);
    sks_buf_init(&key);
    sks_buf_init(&path);
    sks_buf_init(&attrs);
    sks_buf_init(&type);
    sks_buf_init(&body);
    schsm_mgmt_tlv_put(&common, 0x0C, (const uint8_t *)label, label_len);
    schsm_mgmt_tlv_put(&common, 0x03, FLAGS, sizeof(FLAGS));
    schsm_mgmt_tlv_put(&common, 0x04, &AUTH_ID, 1);
    schsm_mgmt_tlv_put(&key, 0x04, id, id_len);
    if (ks->is_rsa)
        schsm_mgmt_tlv_put(&key, 0x03, RSA_USAGE, sizeof(RSA_USAGE));
    else
        schsm_mgmt_tlv_put(&key, 0x03, EC_USAGE, sizeof(EC_USAGE));
    schsm_mgmt_tlv_put(&key, 0x02, &kid, 1);
    /* INTEGER: every key size of the card (256..4096 bits) is two bytes, top bit clear */
    size[0] = (uint8_t)(size_bits >> 8);
    size[1] = (uint8_t)size_bits;
    sks_buf_put(&path, EMPTY_PATH, sizeof(EMPTY_PATH));
    der(&attrs, 0x30, &path);
    schsm_mgmt_tlv_put(&attrs, 0x02, size, 2);
    der(&type, 0x30, &attrs);
    der(&body, 0x30, &common);
    der(&body, 0x30, &key);
    der(&body, 0xA1, &type);
    /* privateRSAKey is the SEQUENCE alternative, privateECKey [0] */
    der(out, ks->is_rsa ? 0x30 : 0xA0, &body);
    ok = !(common.failed || key.failed || path.failed || attrs.failed || type.failed || body.failed || out->failed)
         && size_bits >= 0x100 && size_bits <= 0x7FFF;
    sks_buf_free(&common);
    sks_buf_free(&key);
    sks_buf_free(&path);
    sks_buf_free(&attrs);
    sks_buf_free(&type);
    sks_buf_free(&body);
    return ok;
}

/* ---- INITIALIZE ---- */

static int hex_digit(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int schsm_pack_so_pin(const uint8_t *hex, size_t n, uint8_t out[8])
{
    size_t i;
    int hi, lo;

    if (n != 16)
        return 0;
    for (i = 0; i < 8; i++) {
        hi = hex_digit(hex[2 * i]);
        lo = hex_digit(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            OPENSSL_cleanse(out, 8);
            return 0;
        }
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 1;
}

int schsm_init_cdata(const schsm_init_params *p, sks_buf *out)
{
    uint8_t opt[2] = { (uint8_t)(p->options >> 8), (uint8_t)p->options }, b;

    schsm_mgmt_tlv_put(out, 0x80, opt, 2);
    schsm_mgmt_tlv_put(out, 0x81, p->user_pin, p->user_pin_len);
    schsm_mgmt_tlv_put(out, 0x82, p->so_pin, 8);
    schsm_mgmt_tlv_put(out, 0x91, &p->retry_limit, 1);
    if (p->dkek_shares >= 0) {
        b = (uint8_t)p->dkek_shares;
        schsm_mgmt_tlv_put(out, 0x92, &b, 1);
    }
    if (p->key_domains > 0)
        schsm_mgmt_tlv_put(out, 0x97, &p->key_domains, 1);
    return !out->failed && p->dkek_shares <= 255;
}

/* ---- the CV request key generation answers ---- */

static EVP_PKEY *pkey_from_params(const char *type, OSSL_PARAM_BLD *bld)
{
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    EVP_PKEY *pkey = NULL;

    if (params == NULL || ctx == NULL || EVP_PKEY_fromdata_init(ctx) <= 0
        || EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
        pkey = NULL;
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    return pkey;
}

/* The public key of a 7F49 template: RSA 81 n, 82 e; EC 86 point on the curve asked for. */
static EVP_PKEY *public_key_of(const uint8_t *t, size_t n, const schsm_keyspec *ks)
{
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    const uint8_t *a, *b;
    size_t alen, blen;
    BIGNUM *mod = NULL, *exp = NULL;
    EVP_PKEY *pkey = NULL;

    if (bld == NULL)
        return NULL;
    if (ks->is_rsa) {
        if (schsm_mgmt_tlv_find(t, n, 0x81, &a, &alen, NULL, NULL)
            && schsm_mgmt_tlv_find(t, n, 0x82, &b, &blen, NULL, NULL)
            && (mod = BN_bin2bn(a, (int)alen, NULL)) != NULL && (exp = BN_bin2bn(b, (int)blen, NULL)) != NULL
            && (unsigned)BN_num_bits(mod) == ks->rsa_bits && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, mod)
            && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, exp))
            pkey = pkey_from_params("RSA", bld);
    } else if (schsm_mgmt_tlv_find(t, n, 0x86, &a, &alen, NULL, NULL)
               && OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, ks->curve, 0)
               && OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, a, alen)) {
        pkey = pkey_from_params("EC", bld);
    }
    BN_free(mod);
    BN_free(exp);
    OSSL_PARAM_BLD_free(bld);
    return pkey;
}

/* r||s (CV certificates) as a DER ECDSA-Sig-Value. */
static int ecdsa_raw_to_der(const uint8_t *sig, size_t n, uint8_t **der, size_t *der_len)
{
    ECDSA_SIG *s = ECDSA_SIG_new();
    BIGNUM *r, *sv;
    unsigned char *p = NULL;
    int len = 0;

    if (s == NULL || n == 0 || n % 2 != 0) {
        ECDSA_SIG_free(s);
        return 0;
    }
    r = BN_bin2bn(sig, (int)(n / 2), NULL);
    sv = BN_bin2bn(sig + n / 2, (int)(n / 2), NULL);
    if (r == NULL || sv == NULL || !ECDSA_SIG_set0(s, r, sv)) {
        BN_free(r);
        BN_free(sv);
    } else {
        len = i2d_ECDSA_SIG(s, &p);
    }
    ECDSA_SIG_free(s);
    if (len <= 0)
        return 0;
    *der = p;
    *der_len = (size_t)len;
    return 1;
}

static int verify_sha256(EVP_PKEY *pub, const uint8_t *sig, size_t siglen, const uint8_t *msg, size_t msglen)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int ok;

    ok = md != NULL && EVP_DigestVerifyInit_ex(md, NULL, "SHA256", NULL, NULL, pub, NULL) == 1
         && EVP_DigestVerify(md, sig, siglen, msg, msglen) == 1;
    EVP_MD_CTX_free(md);
    return ok;
}

int schsm_cv_request_key(const uint8_t *p, size_t n, const schsm_keyspec *ks, EVP_PKEY **pub, char *why,
                         size_t whylen)
{
    const uint8_t *req, *cert, *body, *body_tlv, *key, *sig;
    size_t req_len, cert_len, body_len, body_tlv_len, key_len, sig_len, der_len = 0;
    uint8_t *der = NULL;
    EVP_PKEY *pkey;
    int ok;

    *pub = NULL;
    if (!schsm_mgmt_tlv_find(p, n, 0x67, &req, &req_len, NULL, NULL)
        || !schsm_mgmt_tlv_find(req, req_len, 0x7F21, &cert, &cert_len, NULL, NULL)
        || !schsm_mgmt_tlv_find(cert, cert_len, 0x7F4E, &body, &body_len, &body_tlv, &body_tlv_len)
        || !schsm_mgmt_tlv_find(cert, cert_len, 0x5F37, &sig, &sig_len, NULL, NULL)
        || !schsm_mgmt_tlv_find(body, body_len, 0x7F49, &key, &key_len, NULL, NULL)) {
        snprintf(why, whylen, "the card's key generation answer is not a CV request");
        return 0;
    }
    pkey = public_key_of(key, key_len, ks);
    if (pkey == NULL) {
        snprintf(why, whylen, "the card's CV request holds no %s public key of the size asked for",
                 ks->is_rsa ? "RSA" : ks->curve);
        return 0;
    }
    if (ks->is_rsa)
        ok = verify_sha256(pkey, sig, sig_len, body_tlv, body_tlv_len);
    else
        ok = ecdsa_raw_to_der(sig, sig_len, &der, &der_len)
             && verify_sha256(pkey, der, der_len, body_tlv, body_tlv_len);
    OPENSSL_free(der);
    if (!ok) {
        EVP_PKEY_free(pkey);
        snprintf(why, whylen, "the card's CV request is not signed by the key it holds");
        return 0;
    }
    *pub = pkey;
    return 1;
}

int schsm_key_id(EVP_PKEY *pub, uint8_t id[20])
{
    uint8_t buf[1024];
    size_t len = 0;
    BIGNUM *n = NULL;
    int ok;

    if (EVP_PKEY_is_a(pub, "RSA")) {
        ok = EVP_PKEY_get_bn_param(pub, OSSL_PKEY_PARAM_RSA_N, &n) && BN_num_bytes(n) <= (int)sizeof(buf);
        if (ok)
            len = (size_t)BN_bn2bin(n, buf);
        BN_free(n);
    } else {
        ok = EVP_PKEY_get_octet_string_param(pub, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, buf, sizeof(buf), &len);
    }
    return ok && SHA1(buf, len, id) != NULL;
}

unsigned schsm_key_bits(EVP_PKEY *pub)
{
    return (unsigned)EVP_PKEY_get_bits(pub);
}
