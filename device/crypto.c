/*
 * The device's cryptographic primitives, all on OpenSSL's EVP API. Every function returns
 * 1/0; callers turn 0 into a status with a message that says what failed.
 */
#include "internal.h"
#include "rsa/pkcs1_implicit.h"

#include <limits.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

int hmac_sha256(const uint8_t *key, size_t keylen, const uint8_t *data, size_t n, uint8_t out[32])
{
    unsigned int len = 0;
    /* HMAC() needs a non-NULL key even when it is empty. */
    static const uint8_t empty = 0;

    return HMAC(EVP_sha256(), keylen ? key : &empty, (int)keylen, data, n, out, &len) != NULL
           && len == 32;
}

int sha256(const uint8_t *data, size_t n, uint8_t out[32])
{
    return EVP_Digest(data, n, out, NULL, EVP_sha256(), NULL) == 1;
}

static const EVP_CIPHER *aes_cipher(const char *mode, size_t keylen)
{
    char name[32];

    if (keylen != 16 && keylen != 24 && keylen != 32)
        return NULL;
    snprintf(name, sizeof(name), "AES-%zu-%s", keylen * 8, mode);
    return EVP_get_cipherbyname(name);
}

static int aes_run(const EVP_CIPHER *cipher, int encrypt, int pad, const uint8_t *key,
                   const uint8_t *iv, const uint8_t *in, size_t n, sks_buf *out)
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    size_t start = out->len;
    int len1 = 0, len2 = 0, ok = 0;

    if (c == NULL || cipher == NULL || n > INT32_MAX - 32)
        goto done;
    sks_buf_put(out, in, n);
    sks_buf_put(out, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 16); /* room for padding */
    if (out->failed)
        goto done;
    if (EVP_CipherInit_ex(c, cipher, NULL, key, iv, encrypt) != 1 || EVP_CIPHER_CTX_set_padding(c, pad) != 1
        || EVP_CipherUpdate(c, out->data + start, &len1, in, (int)n) != 1
        || EVP_CipherFinal_ex(c, out->data + start + len1, &len2) != 1)
        goto done;
    out->len = start + (size_t)len1 + (size_t)len2;
    ok = 1;
done:
    if (!ok && out->data != NULL) {
        OPENSSL_cleanse(out->data + start, out->len - start);
        out->len = start;
    }
    EVP_CIPHER_CTX_free(c);
    return ok;
}

int aes_cbc(int encrypt, int pad, const uint8_t *key, size_t keylen, const uint8_t iv[16],
            const uint8_t *in, size_t n, sks_buf *out)
{
    return aes_run(aes_cipher("CBC", keylen), encrypt, pad, key, iv, in, n, out);
}

int aes_ecb_nopad(int encrypt, const uint8_t *key, size_t keylen, const uint8_t *in, size_t n, sks_buf *out)
{
    if (n % 16 != 0)
        return 0;
    return aes_run(aes_cipher("ECB", keylen), encrypt, 0, key, NULL, in, n, out);
}

/*
 * Fast paths for the DER forms of keys. OpenSSL 3.0 sets up a whole decoder or encoder chain
 * for every d2i_PUBKEY, i2d_PUBKEY, EVP_PKCS82PKEY and EVP_PKEY2PKCS8 (in microseconds: 106,
 * 58, 416 and 81 for a P-256 key, against 50 for a P-256 ECDH): parsing an ECDH peer cost as
 * much as the ECDH, and an 8-key SKIP import spent half its time there (bench/, README
 * "Benchmarks"). The keys the device meets (EC on the curves below, Ed25519) in the one plain
 * DER form OpenSSL itself writes are parsed and written here from their parts. Anything else,
 * including any variation of the DER, goes the long way, so which inputs are accepted and
 * the bytes written do not change: only named curves, uncompressed points (d2i keeps a
 * compressed key compressed), EC private keys with their public key (d2i remembers a missing
 * one and leaves it out again), exact DER lengths. Every curve here has cofactor 1.
 */
/* The size of a DER element with `len` bytes of contents. */
static size_t der_size(size_t len)
{
    return len + (len < 0x80 ? 2 : len < 0x100 ? 3 : 4);
}

/* The index in SPKI_CURVES of an EC key in the plain form (named curve, uncompressed point,
 * and for `private_form` its public key included in private key encodings), or -1. */
static int plain_ec_curve(EVP_PKEY *key, int private_form)
{
    char group[64], form[32], encoding[32];
    int include_public = 1;
    size_t i;

    if (EVP_PKEY_get_base_id(key) != EVP_PKEY_EC
        || EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), NULL) != 1
        || EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT, form, sizeof(form),
                                          NULL) != 1
        || EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_EC_ENCODING, encoding, sizeof(encoding), NULL) != 1
        || strcmp(form, OSSL_PKEY_EC_POINT_CONVERSION_FORMAT_UNCOMPRESSED) != 0
        || strcmp(encoding, OSSL_PKEY_EC_ENCODING_GROUP) != 0
        || (private_form && EVP_PKEY_get_int_param(key, OSSL_PKEY_PARAM_EC_INCLUDE_PUBLIC, &include_public) == 1
            && !include_public))
        return -1;
    for (i = 0; i < SPKI_NCURVES; i++)
        if (strcmp(group, SPKI_CURVES[i].group) == 0)
            return (int)i;
    return -1;
}

/* AlgorithmIdentifier of a plain key (curve index, or -1 for Ed25519) into out (64 bytes). */
static size_t algorithm_id(int curve, uint8_t *out)
{
    size_t n;

    if (curve < 0) {
        n = sks_der_header(out, 0x30, 2 + sizeof(OID_ED25519));
        n += sks_der_header(out + n, 0x06, sizeof(OID_ED25519));
        memcpy(out + n, OID_ED25519, sizeof(OID_ED25519));
        return n + sizeof(OID_ED25519);
    }
    n = sks_der_header(out, 0x30, 4 + sizeof(OID_EC_PUBLIC_KEY) + SPKI_CURVES[curve].oid_len);
    n += sks_der_header(out + n, 0x06, sizeof(OID_EC_PUBLIC_KEY));
    memcpy(out + n, OID_EC_PUBLIC_KEY, sizeof(OID_EC_PUBLIC_KEY));
    n += sizeof(OID_EC_PUBLIC_KEY);
    n += sks_der_header(out + n, 0x06, SPKI_CURVES[curve].oid_len);
    memcpy(out + n, SPKI_CURVES[curve].oid, SPKI_CURVES[curve].oid_len);
    return n + SPKI_CURVES[curve].oid_len;
}

/* The SubjectPublicKeyInfo of a plain key; 0 if the key is not one (the caller then asks
 * OpenSSL's encoder). */
static int spki_der_plain(EVP_PKEY *key, sks_buf *out)
{
    uint8_t der[256], point[1 + 2 * 66];
    size_t n, alg, plen = 0;
    int curve = EVP_PKEY_get_base_id(key) == EVP_PKEY_ED25519 ? -1 : plain_ec_curve(key, 0);

    if (curve < 0) {
        plen = 32;
        if (EVP_PKEY_get_base_id(key) != EVP_PKEY_ED25519 || EVP_PKEY_get_raw_public_key(key, point, &plen) != 1
            || plen != 32)
            return 0;
    } else if (EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof(point), &plen) != 1
               || plen != 1 + 2 * SPKI_CURVES[curve].field || point[0] != 0x04) {
        return 0;
    }
    alg = algorithm_id(curve, der + 8);
    n = sks_der_header(der + 8 + alg, 0x03, plen + 1);
    der[8 + alg + n] = 0;
    memcpy(der + 8 + alg + n + 1, point, plen);
    n += alg + 1 + plen;
    /* the outer SEQUENCE header goes right before the contents */
    {
        uint8_t head[4];
        size_t h = sks_der_header(head, 0x30, n);
        memcpy(der + 8 - h, head, h);
        sks_buf_put(out, der + 8 - h, h + n);
    }
    return !out->failed;
}

int spki_der(EVP_PKEY *pkey, sks_buf *out)
{
    unsigned char *der = NULL;
    size_t start = out->len;
    int len;

    /* The error queue stays as it was (the application's, in-process), whatever the fast
     * path tried. */
    ERR_set_mark();
    if (spki_der_plain(pkey, out)) {
        ERR_pop_to_mark();
        return 1;
    }
    ERR_pop_to_mark();
    out->len = start;
    /* EC keys must use a named curve and an uncompressed point (OpenSSL's defaults for
     * keys it generates or parses from such a form). */
    len = i2d_PUBKEY(pkey, &der);
    if (len <= 0)
        return 0;
    sks_buf_put(out, der, (size_t)len);
    OPENSSL_free(der);
    return !out->failed;
}

int ec_spki_point(const uint8_t *p, size_t n, const char **curve, const uint8_t **point, size_t *point_len)
{
    int c;

    if (!spki_split(p, n, &c, point, point_len) || c < 0)
        return 0;
    *curve = SPKI_CURVES[c].group;
    return 1;
}

/* The PrivateKeyInfo of a plain key, as OpenSSL writes it: version 0, the algorithm, and
 * for EC an ECPrivateKey (version 1, the scalar at the order's length, the public key in [1],
 * no parameters), for Ed25519 the 32-byte key; no attributes. 0 if the key is not plain. */
static int pkcs8_der_plain(EVP_PKEY *key, sks_buf *out)
{
    uint8_t der[384], inner[256], point[1 + 2 * 66];
    size_t n = 0, i = 0, alg, plen = 0, field, a1, body;
    BIGNUM *d = NULL;
    int curve = EVP_PKEY_get_base_id(key) == EVP_PKEY_ED25519 ? -1 : plain_ec_curve(key, 1), ok = 0;

    if (curve < 0) {
        size_t klen = 32;
        /* CurvePrivateKey ::= OCTET STRING */
        i = sks_der_header(inner, 0x04, 32);
        if (EVP_PKEY_get_base_id(key) != EVP_PKEY_ED25519 || EVP_PKEY_get_raw_private_key(key, inner + i, &klen) != 1
            || klen != 32)
            goto done;
        i += 32;
    } else {
        field = SPKI_CURVES[curve].field;
        if (EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof(point), &plen) != 1
            || plen != 1 + 2 * field || point[0] != 0x04
            || EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_PRIV_KEY, &d) != 1)
            goto done;
        /* ECPrivateKey ::= SEQUENCE { version 1, privateKey, [1] publicKey } */
        a1 = der_size(plen + 1);                     /* the BIT STRING */
        body = 3 + der_size(field) + der_size(a1);
        i = sks_der_header(inner, 0x30, body);
        memcpy(inner + i, "\x02\x01\x01", 3);
        i += 3;
        i += sks_der_header(inner + i, 0x04, field);
        if (BN_bn2binpad(d, inner + i, (int)field) < 0)
            goto done;
        i += field;
        i += sks_der_header(inner + i, 0xA1, a1);
        i += sks_der_header(inner + i, 0x03, plen + 1);
        inner[i++] = 0;
        memcpy(inner + i, point, plen);
        i += plen;
    }
    /* PrivateKeyInfo contents: version 0, algorithm, OCTET STRING privateKey */
    n = 8;
    memcpy(der + n, "\x02\x01\x00", 3);
    n += 3;
    alg = algorithm_id(curve, der + n);
    n += alg;
    n += sks_der_header(der + n, 0x04, i);
    memcpy(der + n, inner, i);
    n += i;
    {
        uint8_t head[4];
        size_t h = sks_der_header(head, 0x30, n - 8);
        memcpy(der + 8 - h, head, h);
        sks_buf_put(out, der + 8 - h, h + n - 8);
    }
    ok = !out->failed;
done:
    BN_clear_free(d);
    OPENSSL_cleanse(der, sizeof(der));
    OPENSSL_cleanse(inner, sizeof(inner));
    OPENSSL_cleanse(point, sizeof(point));
    return ok;
}

int pkcs8_der(EVP_PKEY *pkey, sks_buf *out)
{
    PKCS8_PRIV_KEY_INFO *p8;
    unsigned char *der = NULL;
    size_t start = out->len;
    int len;

    ERR_set_mark();
    if (pkcs8_der_plain(pkey, out)) {
        ERR_pop_to_mark();
        return 1;
    }
    ERR_pop_to_mark();
    if (out->len > start)
        OPENSSL_cleanse(out->data + start, out->len - start);
    out->len = start;
    if ((p8 = EVP_PKEY2PKCS8(pkey)) == NULL)
        return 0;
    len = i2d_PKCS8_PRIV_KEY_INFO(p8, &der);
    PKCS8_PRIV_KEY_INFO_free(p8);
    if (len <= 0)
        return 0;
    sks_buf_put(out, der, (size_t)len);
    OPENSSL_clear_free(der, (size_t)len);
    return !out->failed;
}

/* A PrivateKeyInfo in the plain form pkcs8_der_plain writes (an EC key without its public
 * key, or with parameters or attributes, is not plain), made into a key from its parts; NULL
 * for anything else. */
static EVP_PKEY *pkcs8_parse_plain(const uint8_t *p, size_t n)
{
    const uint8_t *end = p + n, *body, *ver, *alg, *oid, *c, *key, *ec, *d, *pubw, *pub;
    size_t body_len, ver_len, alg_len, oid_len, c_len, key_len, ec_len, d_len, pubw_len, pub_len, i;
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    EVP_PKEY *k = NULL;
    BIGNUM *bn = NULL;

    if (!der_element(&p, end, 0x30, &body, &body_len) || p != end)
        return NULL;
    end = body + body_len;
    if (!der_element(&body, end, 0x02, &ver, &ver_len) || ver_len != 1 || ver[0] != 0
        || !der_element(&body, end, 0x30, &alg, &alg_len) || !der_element(&body, end, 0x04, &key, &key_len)
        || body != end)
        return NULL;
    end = alg + alg_len;
    if (!der_element(&alg, end, 0x06, &oid, &oid_len))
        return NULL;
    if (oid_len == sizeof(OID_ED25519) && memcmp(oid, OID_ED25519, oid_len) == 0) {
        /* CurvePrivateKey ::= OCTET STRING (32 bytes) */
        const uint8_t *ed = key, *raw;
        size_t raw_len;
        if (alg != end || !der_element(&ed, key + key_len, 0x04, &raw, &raw_len) || ed != key + key_len
            || raw_len != 32)
            return NULL;
        return EVP_PKEY_new_raw_private_key_ex(NULL, "ED25519", NULL, raw, raw_len);
    }
    if (oid_len != sizeof(OID_EC_PUBLIC_KEY) || memcmp(oid, OID_EC_PUBLIC_KEY, oid_len) != 0
        || !der_element(&alg, end, 0x06, &c, &c_len) || alg != end)
        return NULL;
    for (i = 0; i < SPKI_NCURVES; i++)
        if (c_len == SPKI_CURVES[i].oid_len && memcmp(c, SPKI_CURVES[i].oid, c_len) == 0)
            break;
    if (i == SPKI_NCURVES)
        return NULL;
    /* ECPrivateKey: version 1, privateKey (the order's length), [1] publicKey; no [0] */
    end = key + key_len;
    if (!der_element(&key, end, 0x30, &ec, &ec_len) || key != end)
        return NULL;
    end = ec + ec_len;
    if (!der_element(&ec, end, 0x02, &ver, &ver_len) || ver_len != 1 || ver[0] != 1
        || !der_element(&ec, end, 0x04, &d, &d_len) || d_len != SPKI_CURVES[i].field
        || !der_element(&ec, end, 0xA1, &pubw, &pubw_len) || ec != end
        || !der_element(&pubw, pubw + pubw_len, 0x03, &pub, &pub_len) || pubw != pub + pub_len
        || pub_len != 2 + 2 * SPKI_CURVES[i].field || pub[0] != 0 || pub[1] != 0x04)
        return NULL;
    /* EC_POINT_oct2point, under EVP_PKEY_fromdata, refuses a point not on the curve */
    if ((bn = BN_secure_new()) == NULL || BN_bin2bn(d, (int)d_len, bn) == NULL || (bld = OSSL_PARAM_BLD_new()) == NULL
        || !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, SPKI_CURVES[i].group, 0)
        || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, bn)
        || !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub + 1, pub_len - 1)
        || (params = OSSL_PARAM_BLD_to_param(bld)) == NULL
        || (ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL)) == NULL
        || EVP_PKEY_fromdata_init(ctx) != 1 || EVP_PKEY_fromdata(ctx, &k, EVP_PKEY_KEYPAIR, params) != 1)
        k = NULL;
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params); /* clears the secure part holding the scalar */
    OSSL_PARAM_BLD_free(bld);
    BN_clear_free(bn);
    return k;
}

EVP_PKEY *pkcs8_parse(const uint8_t *p, size_t n)
{
    const unsigned char *q = p;
    PKCS8_PRIV_KEY_INFO *p8;
    EVP_PKEY *k = NULL;

    if (n == 0 || n > INT32_MAX)
        return NULL;
    ERR_set_mark();
    k = pkcs8_parse_plain(p, n);
    ERR_pop_to_mark();
    if (k != NULL)
        return k;
    p8 = d2i_PKCS8_PRIV_KEY_INFO(NULL, &q, (long)n);
    if (p8 != NULL && q == p + n)
        k = EVP_PKCS82PKEY(p8);
    PKCS8_PRIV_KEY_INFO_free(p8);
    return k;
}

const char *ec_curve_name(EVP_PKEY *pkey, char *buf, size_t buflen)
{
    size_t len = 0;

    if (EVP_PKEY_get_base_id(pkey) != EVP_PKEY_EC)
        return NULL;
    if (EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, buf, buflen, &len) != 1)
        return NULL;
    return buf;
}

EVP_PKEY *ec_generate(const char *curve)
{
    return EVP_PKEY_Q_keygen(NULL, NULL, "EC", curve);
}

EVP_PKEY *ecdh_peer_parse(EVP_PKEY *priv, const uint8_t *p, size_t n, int *validated)
{
    const uint8_t *point;
    size_t point_len;
    int curve;
    char c1[64], c2[64];
    EVP_PKEY *peer;

    *validated = 0;
    if (ec_curve_name(priv, c1, sizeof(c1)) == NULL)
        return NULL;
    ERR_set_mark();
    if (spki_split(p, n, &curve, &point, &point_len) && curve >= 0 && strcmp(SPKI_CURVES[curve].group, c1) == 0) {
        /* The key's own domain parameters (a copy of its group costs a fraction of making
         * one from the curve's name) and the peer's point. EC_POINT_oct2point refuses a point
         * outside the field or not on the curve, and the uncompressed form cannot encode
         * infinity: the checks of SP 800-56A's partial validation. On these curves (cofactor
         * 1) that is full validation, so the ECDH below need not multiply the point by the
         * order once more, which costs as much as the ECDH itself. */
        peer = EVP_PKEY_new();
        if (peer != NULL && EVP_PKEY_copy_parameters(peer, priv) == 1
            && EVP_PKEY_set1_encoded_public_key(peer, point, point_len) == 1) {
            ERR_pop_to_mark();
            *validated = 1;
            return peer;
        }
        EVP_PKEY_free(peer);
    }
    ERR_pop_to_mark(); /* a refused point goes the long way, which reports for itself */
    peer = spki_parse(p, n);
    if (peer == NULL || ec_curve_name(peer, c2, sizeof(c2)) == NULL || strcmp(c1, c2) != 0) {
        EVP_PKEY_free(peer);
        return NULL;
    }
    return peer;
}

int ecdh_z(EVP_PKEY *priv, EVP_PKEY *peer, sks_buf *z)
{
    return ecdh_z_reuse(NULL, priv, peer, 0, z);
}

int ecdh_z_reuse(key_contexts *keep, EVP_PKEY *priv, EVP_PKEY *peer, int validated, sks_buf *z)
{
    EVP_PKEY_CTX *c = keep != NULL ? keep->ecdh : NULL;
    uint8_t tmp[132];
    size_t len = 0, start = z->len;
    int ok = 0;

    /* A kept context stays initialised for ECDH on priv; each call sets its peer. */
    if (c == NULL && ((c = EVP_PKEY_CTX_new_from_pkey(NULL, priv, NULL)) == NULL || EVP_PKEY_derive_init(c) != 1))
        goto done;
    if (keep != NULL)
        keep->ecdh = c;
    if (EVP_PKEY_derive_set_peer_ex(c, peer, !validated) != 1 || EVP_PKEY_derive(c, NULL, &len) != 1
        || len > sizeof(tmp) || EVP_PKEY_derive(c, tmp, &len) != 1)
        goto done;
    sks_buf_put(z, tmp, len);
    ok = !z->failed;
done:
    OPENSSL_cleanse(tmp, sizeof(tmp));
    if (!ok)
        z->len = start;
    if (keep == NULL || keep->ecdh != c)
        EVP_PKEY_CTX_free(c);
    return ok;
}

/* Field size in bytes of an EC key, for r||s encoding. */
static size_t ec_field_bytes(EVP_PKEY *key)
{
    return (size_t)(EVP_PKEY_get_bits(key) + 7) / 8;
}

/* A DER INTEGER of ECDSA-Sig-Value (non-negative) into `fb` bytes, left-padded. */
static int der_uint_to_fixed(const uint8_t **p, const uint8_t *end, uint8_t *out, size_t fb)
{
    const uint8_t *v;
    size_t n;

    if (!der_element(p, end, 0x02, &v, &n) || n == 0 || (v[0] & 0x80) != 0)
        return 0;
    while (n > 0 && v[0] == 0) {
        v++;
        n--;
    }
    if (n > fb)
        return 0;
    memset(out, 0, fb - n);
    memcpy(out + fb - n, v, n);
    return 1;
}

/* DER ECDSA-Sig-Value -> r||s, each left-padded to the field size. Read directly, without
 * ECDSA_SIG and its two BIGNUMs: this runs on every ECDSA signature. */
/* DER ECDSA-Sig-Value -> r||s into out[*outlen] (in: its size); 0 if it does not fit. */
static int ecdsa_der_to_raw(EVP_PKEY *key, const uint8_t *der, size_t derlen, uint8_t *out, size_t *outlen)
{
    const uint8_t *p = der, *end = der + derlen, *seq;
    size_t fb = ec_field_bytes(key), n;

    if (fb > 66 || 2 * fb > *outlen || !der_element(&p, end, 0x30, &seq, &n) || p != end)
        return 0;
    end = seq + n;
    if (!der_uint_to_fixed(&seq, end, out, fb) || !der_uint_to_fixed(&seq, end, out + fb, fb) || seq != end)
        return 0;
    *outlen = 2 * fb;
    return 1;
}

/* r||s -> DER, for verification. */
static int ecdsa_raw_to_der(EVP_PKEY *key, const uint8_t *raw, size_t n, sks_buf *out)
{
    size_t fb = ec_field_bytes(key);
    ECDSA_SIG *sig = NULL;
    BIGNUM *r = NULL, *s = NULL;
    unsigned char *der = NULL;
    int len, ok = 0;

    if (n != 2 * fb)
        return 0;
    sig = ECDSA_SIG_new();
    r = BN_bin2bn(raw, (int)fb, NULL);
    s = BN_bin2bn(raw + fb, (int)fb, NULL);
    if (sig == NULL || r == NULL || s == NULL || ECDSA_SIG_set0(sig, r, s) != 1)
        goto done;
    r = s = NULL;
    len = i2d_ECDSA_SIG(sig, &der);
    if (len <= 0)
        goto done;
    sks_buf_put(out, der, (size_t)len);
    ok = !out->failed;
done:
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(sig);
    OPENSSL_free(der);
    return ok;
}

int sign_hash(EVP_PKEY *key, const EVP_MD *md, int pss, int saltlen, const EVP_MD *mgf1, const uint8_t *data,
              size_t n, sks_buf *sig)
{
    uint8_t buf[SKS_MAX_SIGNATURE];
    size_t len = sizeof(buf);
    int ok = sign_hash_to(NULL, key, md, pss, saltlen, mgf1, data, n, buf, &len);

    if (ok) {
        sks_buf_put(sig, buf, len);
        ok = !sig->failed;
        OPENSSL_cleanse(buf, len);
    }
    return ok;
}

void key_contexts_free(key_contexts *kc)
{
    EVP_PKEY_CTX_free(kc->ecdsa);
    EVP_MD_CTX_free(kc->ed25519);
    EVP_PKEY_CTX_free(kc->ecdh);
    ecdh_direct_free(kc);
    kc->ecdsa = NULL;
    kc->ed25519 = NULL;
    kc->ecdh = NULL;
}

/* Ed25519 signs the message itself (one-shot). A kept context is used again as it is; should
 * a later OpenSSL refuse a second EVP_DigestSign on one context, it is made afresh once. */
static int ed25519_sign(key_contexts *keep, EVP_PKEY *key, const uint8_t *data, size_t n, uint8_t *out, size_t *len)
{
    EVP_MD_CTX *mc = keep != NULL ? keep->ed25519 : NULL;
    size_t cap = *len;
    int fresh, ok;

    if (mc != NULL && keep->ed25519_reusable) {
        /* This OpenSSL signs again with a used context (seen below): no retry to prepare
         * for. A failure now is the signature's own; the context goes with it. */
        if ((ok = EVP_DigestSign(mc, out, len, data, n) == 1) == 0) {
            EVP_MD_CTX_free(mc);
            keep->ed25519 = NULL;
            keep->ed25519_reusable = 0;
        }
        return ok;
    }
    ERR_set_mark();
    for (;;) {
        fresh = mc == NULL;
        if (fresh
            && ((mc = EVP_MD_CTX_new()) == NULL || EVP_DigestSignInit_ex(mc, NULL, NULL, NULL, NULL, key, NULL) != 1))
            ok = 0;
        else
            ok = EVP_DigestSign(mc, out, len, data, n) == 1;
        if (ok || fresh)
            break;
        /* the kept context refused: its errors are forgotten, a fresh one tries */
        ERR_pop_to_mark();
        ERR_set_mark();
        EVP_MD_CTX_free(mc);
        mc = NULL;
        *len = cap;
    }
    ERR_clear_last_mark();
    if (keep != NULL && ok) {
        keep->ed25519_reusable = !fresh; /* a kept context signed again */
        keep->ed25519 = mc;
    } else {
        if (keep != NULL && keep->ed25519 == mc)
            keep->ed25519 = NULL;
        EVP_MD_CTX_free(mc);
    }
    return ok;
}

/* The key's type: a kept context already says which it is (EVP_PKEY_get_base_id costs a
 * few hundred instructions, a tenth of what the device adds to a P-256 signature). */
static int key_base_id(const key_contexts *keep, EVP_PKEY *key)
{
    if (keep != NULL && keep->ecdsa != NULL)
        return EVP_PKEY_EC;
    if (keep != NULL && keep->ed25519 != NULL)
        return EVP_PKEY_ED25519;
    return EVP_PKEY_get_base_id(key);
}

int sign_hash_to(key_contexts *keep, EVP_PKEY *key, const EVP_MD *md, int pss, int saltlen, const EVP_MD *mgf1,
                 const uint8_t *data, size_t n, uint8_t *sig, size_t *siglen)
{
    int type = key_base_id(keep, key);
    EVP_PKEY_CTX *c = NULL;
    uint8_t der[2 * 66 + 16]; /* an ECDSA-Sig-Value up to P-521 */
    uint8_t *buf = type == EVP_PKEY_EC ? der : sig;
    size_t cap = type == EVP_PKEY_EC ? sizeof(der) : *siglen, len = cap;
    int ok = 0;

    if (type == EVP_PKEY_ED25519) {
        ok = ed25519_sign(keep, key, data, n, sig, &len);
        goto done;
    }
    if (type == EVP_PKEY_EC && keep != NULL && keep->ecdsa != NULL) {
        /* An ECDSA context has no settings: one initialised context signs any number of
         * hashes, and making it (EVP_PKEY_CTX_new_from_pkey looks the key type up by name)
         * costs about a tenth of a P-256 signature. */
        c = keep->ecdsa;
    } else {
        c = EVP_PKEY_CTX_new_from_pkey(NULL, key, NULL);
        if (c == NULL || EVP_PKEY_sign_init(c) != 1)
            goto done;
        if (type == EVP_PKEY_EC && keep != NULL)
            keep->ecdsa = c;
    }
    if (type == EVP_PKEY_RSA) {
        if (pss) {
            if (EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_PSS_PADDING) != 1
                || EVP_PKEY_CTX_set_signature_md(c, md) != 1
                || EVP_PKEY_CTX_set_rsa_mgf1_md(c, mgf1 != NULL ? mgf1 : md) != 1
                || EVP_PKEY_CTX_set_rsa_pss_saltlen(c, saltlen >= 0 ? saltlen : RSA_PSS_SALTLEN_DIGEST) != 1)
                goto done;
        } else if (EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_PADDING) != 1
                   || (md != NULL && EVP_PKEY_CTX_set_signature_md(c, md) != 1)) {
            goto done;
        }
    } else if (type == EVP_PKEY_EC) {
        /* ECDSA signs the hash as given; the digest only fixes its expected length. */
    } else {
        goto done;
    }
    if (EVP_PKEY_sign(c, buf, &len, data, n) != 1) {
        len = cap;
        goto done;
    }
    if (type == EVP_PKEY_EC) {
        ok = ecdsa_der_to_raw(key, der, len, sig, siglen);
        OPENSSL_cleanse(der, len <= sizeof(der) ? len : sizeof(der));
        goto free_ctx;
    }
    ok = 1;
done:
    if (ok)
        *siglen = len;
    else
        OPENSSL_cleanse(buf, len <= cap ? len : cap); /* whatever a failed signature left */
free_ctx:
    if (keep == NULL || c != keep->ecdsa)
        EVP_PKEY_CTX_free(c);
    return ok;
}

int sign_sha256(EVP_PKEY *key, const uint8_t *data, size_t n, sks_buf *sig)
{
    uint8_t h[32];

    if (!sha256(data, n, h))
        return 0;
    return sign_hash(key, EVP_sha256(), 0, -1, NULL, h, sizeof(h), sig);
}

int verify_sha256(EVP_PKEY *key, const uint8_t *data, size_t n, const uint8_t *sig, size_t siglen)
{
    int type = EVP_PKEY_get_base_id(key);
    EVP_PKEY_CTX *c = NULL;
    uint8_t h[32];
    sks_buf der;
    int ok = 0;

    sks_buf_init(&der);
    if (!sha256(data, n, h))
        return 0;
    c = EVP_PKEY_CTX_new_from_pkey(NULL, key, NULL);
    if (c == NULL || EVP_PKEY_verify_init(c) != 1)
        goto done;
    if (type == EVP_PKEY_RSA) {
        if (EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_PADDING) != 1
            || EVP_PKEY_CTX_set_signature_md(c, EVP_sha256()) != 1)
            goto done;
        ok = EVP_PKEY_verify(c, sig, siglen, h, sizeof(h)) == 1;
    } else if (type == EVP_PKEY_EC) {
        if (!ecdsa_raw_to_der(key, sig, siglen, &der))
            goto done;
        ok = EVP_PKEY_verify(c, der.data, der.len, h, sizeof(h)) == 1;
    }
done:
    sks_buf_free(&der);
    EVP_PKEY_CTX_free(c);
    return ok;
}

int public_keys_equal(EVP_PKEY *a, EVP_PKEY *b)
{
    return EVP_PKEY_eq(a, b) == 1;
}

int random_bytes(uint8_t *p, size_t n)
{
    return RAND_bytes(p, (int)n) == 1;
}

/* ---- RSA decryption without a padding oracle ---- */

/* KDK = HMAC-SHA256(SHA256(d as k bytes), ciphertext): secret, and fixed per key and ciphertext. */
static int implicit_kdk(EVP_PKEY *key, const uint8_t *in, size_t k, uint8_t kdk[32])
{
    BIGNUM *d = NULL;
    uint8_t *dbytes = OPENSSL_malloc(k), dh[32];
    int ok;

    ok = dbytes != NULL && EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_D, &d) == 1
         && BN_bn2binpad(d, dbytes, (int)k) == (int)k && sha256(dbytes, k, dh) && hmac_sha256(dh, 32, in, k, kdk);
    BN_clear_free(d);
    OPENSSL_clear_free(dbytes, k);
    OPENSSL_cleanse(dh, sizeof(dh));
    return ok;
}

/*
 * RSAES-PKCS1-v1_5 decryption with implicit rejection: a ciphertext whose padding is wrong
 * decrypts to a synthetic message derived from the private key and the ciphertext (the same
 * one every time, unpredictable without the key) instead of failing, so neither the answer
 * nor its timing tells whether the padding was right (Bleichenbacher, Marvin). Only public
 * facts fail: a ciphertext not of the modulus' length or not below the modulus.
 */
static int rsa_decrypt_pkcs1_implicit(EVP_PKEY *key, const uint8_t *in, size_t n, sks_buf *out)
{
    EVP_PKEY_CTX *c = NULL;
    size_t k = (size_t)EVP_PKEY_get_size(key), len = k;
    uint8_t *em = OPENSSL_malloc(k), kdk[32];
    int ok = 0;

    if (em == NULL || k < 11 || n != k)
        goto done;
    c = EVP_PKEY_CTX_new_from_pkey(NULL, key, NULL);
    if (c == NULL || EVP_PKEY_decrypt_init(c) != 1 || EVP_PKEY_CTX_set_rsa_padding(c, RSA_NO_PADDING) != 1
        || EVP_PKEY_decrypt(c, em, &len, in, n) != 1 || len != k)
        goto done;
    ok = implicit_kdk(key, in, k, kdk) && sks_pkcs1_unpad_implicit(kdk, em, k, out);
done:
    OPENSSL_cleanse(kdk, sizeof(kdk));
    OPENSSL_clear_free(em, k);
    EVP_PKEY_CTX_free(c);
    return ok;
}

/* Hands OpenSSL its own copy of the label (EVP_PKEY_CTX_set0_rsa_oaep_label takes it over);
 * an empty label is OAEP's default and needs no call. */
static int set_oaep_label(EVP_PKEY_CTX *c, const uint8_t *label, size_t n)
{
    void *copy;

    if (n == 0)
        return 1;
    if (n > INT_MAX || (copy = OPENSSL_memdup(label, n)) == NULL)
        return 0;
    if (EVP_PKEY_CTX_set0_rsa_oaep_label(c, copy, (int)n) != 1) {
        OPENSSL_free(copy);
        return 0;
    }
    return 1;
}

static int rsa_decrypt_oaep(EVP_PKEY *key, const oaep_params *oaep, const uint8_t *in, size_t n, sks_buf *out)
{
    EVP_PKEY_CTX *c = NULL;
    uint8_t buf[1024];
    size_t len = sizeof(buf);
    int ok;

    if (oaep == NULL || oaep->md == NULL || oaep->mgf1 == NULL)
        return 0;
    c = EVP_PKEY_CTX_new_from_pkey(NULL, key, NULL);
    ok = c != NULL && (size_t)EVP_PKEY_get_size(key) <= sizeof(buf) && EVP_PKEY_decrypt_init(c) == 1
         && EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_OAEP_PADDING) == 1
         && EVP_PKEY_CTX_set_rsa_oaep_md(c, oaep->md) == 1 && EVP_PKEY_CTX_set_rsa_mgf1_md(c, oaep->mgf1) == 1
         && set_oaep_label(c, oaep->label, oaep->label_len) && EVP_PKEY_decrypt(c, buf, &len, in, n) == 1;
    if (ok) {
        sks_buf_put(out, buf, len);
        ok = !out->failed;
    }
    OPENSSL_cleanse(buf, sizeof(buf));
    EVP_PKEY_CTX_free(c);
    return ok;
}

int rsa_decrypt(EVP_PKEY *key, int padding, const oaep_params *oaep, const uint8_t *in, size_t n, sks_buf *out)
{
    int ok = 0;

    if (padding == RSA_PKCS1_PADDING)
        ok = rsa_decrypt_pkcs1_implicit(key, in, n, out);
    else if (padding == RSA_PKCS1_OAEP_PADDING)
        ok = rsa_decrypt_oaep(key, oaep, in, n, out);
    /* Whatever failed (length, range, OAEP decoding) leaves one answer and nothing in the
     * error queue that could tell the cases apart. */
    if (!ok)
        ERR_clear_error();
    return ok;
}
