/*
 * Public keys in the one plain DER form OpenSSL itself writes (EC on the curves below with a
 * named curve and an uncompressed point, Ed25519), parsed from their parts: d2i_PUBKEY sets
 * up OpenSSL 3.0's decoder chain for every key, which cost more than the ECDH the key was
 * parsed for (device/crypto.c says more). Anything else goes the long way (d2i_PUBKEY), so
 * which inputs are accepted does not change. Shared by the device and the SKIP package
 * parser (cms/skip_package.c), which meets one such key per container.
 */
#include "key_der.h"

#include <string.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/x509.h>

const spki_curve SPKI_CURVES[SPKI_NCURVES] = {
    { { 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07 }, 8, "prime256v1", 32 },
    { { 0x2B, 0x81, 0x04, 0x00, 0x22 }, 5, "secp384r1", 48 },
    { { 0x2B, 0x81, 0x04, 0x00, 0x23 }, 5, "secp521r1", 66 },
    { { 0x2B, 0x24, 0x03, 0x03, 0x02, 0x08, 0x01, 0x01, 0x07 }, 9, "brainpoolP256r1", 32 },
    { { 0x2B, 0x24, 0x03, 0x03, 0x02, 0x08, 0x01, 0x01, 0x09 }, 9, "brainpoolP320r1", 40 },
    { { 0x2B, 0x24, 0x03, 0x03, 0x02, 0x08, 0x01, 0x01, 0x0B }, 9, "brainpoolP384r1", 48 },
    { { 0x2B, 0x24, 0x03, 0x03, 0x02, 0x08, 0x01, 0x01, 0x0D }, 9, "brainpoolP512r1", 64 },
};
const uint8_t OID_EC_PUBLIC_KEY[7] = { 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01 };
const uint8_t OID_ED25519[3] = { 0x2B, 0x65, 0x70 };

/* One DER element with the given tag at *p (minimal length encoding, at most 2 length
 * bytes): its contents in *v, *len; *p moves past it. */
int der_element(const uint8_t **p, const uint8_t *end, uint8_t tag, const uint8_t **v, size_t *len)
{
    const uint8_t *q = *p;
    size_t n;

    if (end - q < 2 || *q++ != tag)
        return 0;
    n = *q++;
    if (n == 0x81) {
        if (q >= end || *q < 0x80)
            return 0;
        n = *q++;
    } else if (n == 0x82) {
        if (end - q < 2 || (n = ((size_t)q[0] << 8) | q[1]) < 0x100)
            return 0;
        q += 2;
    } else if (n >= 0x80) {
        return 0;
    }
    if ((size_t)(end - q) < n)
        return 0;
    *v = q;
    *len = n;
    *p = q + n;
    return 1;
}

/* The parts of a SubjectPublicKeyInfo in the plain form: an EC point (uncompressed) on a
 * curve of SPKI_CURVES (*curve = its index) or an Ed25519 key (*curve = -1); the key bytes in
 * *key, *key_len. 0 for anything else. */
int spki_split(const uint8_t *p, size_t n, int *curve, const uint8_t **key, size_t *key_len)
{
    const uint8_t *end = p + n, *body, *alg, *bits, *oid, *c;
    size_t body_len, alg_len, bits_len, oid_len, c_len, i;

    if (!der_element(&p, end, 0x30, &body, &body_len) || p != end)
        return 0;
    end = body + body_len;
    if (!der_element(&body, end, 0x30, &alg, &alg_len) || !der_element(&body, end, 0x03, &bits, &bits_len)
        || body != end || bits_len < 2 || bits[0] != 0)
        return 0;
    end = alg + alg_len;
    if (!der_element(&alg, end, 0x06, &oid, &oid_len))
        return 0;
    *key = bits + 1;
    *key_len = bits_len - 1;
    if (oid_len == sizeof(OID_ED25519) && memcmp(oid, OID_ED25519, oid_len) == 0) {
        *curve = -1;
        return alg == end && *key_len == 32;
    }
    if (oid_len != sizeof(OID_EC_PUBLIC_KEY) || memcmp(oid, OID_EC_PUBLIC_KEY, oid_len) != 0
        || !der_element(&alg, end, 0x06, &c, &c_len) || alg != end)
        return 0;
    for (i = 0; i < SPKI_NCURVES; i++)
        if (c_len == SPKI_CURVES[i].oid_len && memcmp(c, SPKI_CURVES[i].oid, c_len) == 0) {
            *curve = (int)i;
            return *key_len == 1 + 2 * SPKI_CURVES[i].field && bits[1] == 0x04;
        }
    return 0;
}

static EVP_PKEY *spki_parse_plain(const uint8_t *p, size_t n)
{
    const uint8_t *key;
    size_t key_len;
    int curve;
    EVP_PKEY_CTX *c;
    EVP_PKEY *k = NULL;
    OSSL_PARAM params[3];

    if (!spki_split(p, n, &curve, &key, &key_len))
        return NULL;
    if (curve < 0)
        return EVP_PKEY_new_raw_public_key_ex(NULL, "ED25519", NULL, key, key_len);
    /* EC_POINT_oct2point, under EVP_PKEY_fromdata, refuses points not on the curve */
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)SPKI_CURVES[curve].group, 0);
    params[1] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, (void *)key, key_len);
    params[2] = OSSL_PARAM_construct_end();
    c = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    if (c == NULL || EVP_PKEY_fromdata_init(c) != 1 || EVP_PKEY_fromdata(c, &k, EVP_PKEY_PUBLIC_KEY, params) != 1)
        k = NULL;
    EVP_PKEY_CTX_free(c);
    return k;
}

EVP_PKEY *spki_parse(const uint8_t *p, size_t n)
{
    const unsigned char *q = p;
    EVP_PKEY *k;

    if (n == 0 || n > INT32_MAX)
        return NULL;
    ERR_set_mark();
    k = spki_parse_plain(p, n);
    ERR_pop_to_mark(); /* a refused key goes the long way, which reports for itself */
    if (k != NULL)
        return k;
    k = d2i_PUBKEY(NULL, &q, (long)n);
    if (k != NULL && q != p + n) { /* trailing garbage */
        EVP_PKEY_free(k);
        return NULL;
    }
    return k;
}

