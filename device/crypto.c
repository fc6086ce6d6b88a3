/*
 * The device's cryptographic primitives, all on OpenSSL's EVP API. Every function returns
 * 1/0; callers turn 0 into a status with a message that says what failed.
 */
#include "internal.h"

#include <string.h>

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/hmac.h>
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

int spki_der(EVP_PKEY *pkey, sks_buf *out)
{
    unsigned char *der = NULL;
    int len;

    /* EC keys must use a named curve and an uncompressed point (OpenSSL's defaults for
     * keys it generates or parses from such a form). */
    len = i2d_PUBKEY(pkey, &der);
    if (len <= 0)
        return 0;
    sks_buf_put(out, der, (size_t)len);
    OPENSSL_free(der);
    return !out->failed;
}

EVP_PKEY *spki_parse(const uint8_t *p, size_t n)
{
    const unsigned char *q = p;
    EVP_PKEY *k;

    if (n == 0 || n > INT32_MAX)
        return NULL;
    k = d2i_PUBKEY(NULL, &q, (long)n);
    if (k != NULL && q != p + n) { /* trailing garbage */
        EVP_PKEY_free(k);
        return NULL;
    }
    return k;
}

int pkcs8_der(EVP_PKEY *pkey, sks_buf *out)
{
    PKCS8_PRIV_KEY_INFO *p8 = EVP_PKEY2PKCS8(pkey);
    unsigned char *der = NULL;
    int len;

    if (p8 == NULL)
        return 0;
    len = i2d_PKCS8_PRIV_KEY_INFO(p8, &der);
    PKCS8_PRIV_KEY_INFO_free(p8);
    if (len <= 0)
        return 0;
    sks_buf_put(out, der, (size_t)len);
    OPENSSL_clear_free(der, (size_t)len);
    return !out->failed;
}

EVP_PKEY *pkcs8_parse(const uint8_t *p, size_t n)
{
    const unsigned char *q = p;
    PKCS8_PRIV_KEY_INFO *p8;
    EVP_PKEY *k = NULL;

    if (n == 0 || n > INT32_MAX)
        return NULL;
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

int ecdh_z(EVP_PKEY *priv, EVP_PKEY *peer, sks_buf *z)
{
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_pkey(NULL, priv, NULL);
    size_t len = 0, start = z->len;
    int ok = 0;

    if (c == NULL || EVP_PKEY_derive_init(c) != 1 || EVP_PKEY_derive_set_peer(c, peer) != 1
        || EVP_PKEY_derive(c, NULL, &len) != 1)
        goto done;
    sks_buf_put(z, "", 0);
    {
        uint8_t tmp[132];
        if (len > sizeof(tmp) || EVP_PKEY_derive(c, tmp, &len) != 1)
            goto done;
        sks_buf_put(z, tmp, len);
        OPENSSL_cleanse(tmp, sizeof(tmp));
    }
    ok = !z->failed;
done:
    if (!ok)
        z->len = start;
    EVP_PKEY_CTX_free(c);
    return ok;
}

/* Field size in bytes of an EC key, for r||s encoding. */
static size_t ec_field_bytes(EVP_PKEY *key)
{
    return (size_t)(EVP_PKEY_get_bits(key) + 7) / 8;
}

/* DER ECDSA-Sig-Value -> r||s, each left-padded to the field size. */
static int ecdsa_der_to_raw(EVP_PKEY *key, const uint8_t *der, size_t derlen, sks_buf *out)
{
    const unsigned char *q = der;
    ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &q, (long)derlen);
    const BIGNUM *r, *s;
    size_t fb = ec_field_bytes(key);
    uint8_t buf[2 * 66];
    int ok = 0;

    if (sig == NULL || fb > 66)
        goto done;
    ECDSA_SIG_get0(sig, &r, &s);
    if (BN_bn2binpad(r, buf, (int)fb) < 0 || BN_bn2binpad(s, buf + fb, (int)fb) < 0)
        goto done;
    sks_buf_put(out, buf, 2 * fb);
    ok = !out->failed;
done:
    ECDSA_SIG_free(sig);
    return ok;
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
    int type = EVP_PKEY_get_base_id(key);
    EVP_PKEY_CTX *c = NULL;
    EVP_MD_CTX *mc = NULL;
    uint8_t buf[1024];
    size_t len = sizeof(buf);
    int ok = 0;

    if (type == EVP_PKEY_ED25519) {
        /* Ed25519 signs the message itself (one-shot). */
        mc = EVP_MD_CTX_new();
        if (mc == NULL || EVP_DigestSignInit_ex(mc, NULL, NULL, NULL, NULL, key, NULL) != 1
            || EVP_DigestSign(mc, buf, &len, data, n) != 1)
            goto done;
        sks_buf_put(sig, buf, len);
        ok = !sig->failed;
        goto done;
    }
    c = EVP_PKEY_CTX_new_from_pkey(NULL, key, NULL);
    if (c == NULL || EVP_PKEY_sign_init(c) != 1)
        goto done;
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
    if (EVP_PKEY_sign(c, buf, &len, data, n) != 1)
        goto done;
    if (type == EVP_PKEY_EC)
        ok = ecdsa_der_to_raw(key, buf, len, sig);
    else {
        sks_buf_put(sig, buf, len);
        ok = !sig->failed;
    }
done:
    OPENSSL_cleanse(buf, sizeof(buf));
    EVP_PKEY_CTX_free(c);
    EVP_MD_CTX_free(mc);
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
