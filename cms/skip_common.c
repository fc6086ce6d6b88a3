/* The SKIP rules shared by the device and the issuer (see skip_common.h). */
#include "skip_common.h"

#include <string.h>

#include "key_der.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/x509.h>

/* Large enough for Z on secp521r1 (66 bytes), the largest supported curve. */
#define SKIP_MAX_Z 72

int skip_derive_aes_key(EVP_PKEY *own_private, EVP_PKEY *peer_public, int aes_bits, uint8_t key[32])
{
    EVP_PKEY_CTX *c = NULL;
    uint8_t z[SKIP_MAX_Z];
    size_t zlen = sizeof(z), klen = (size_t)aes_bits / 8;
    int ok = 0;

    if (aes_bits != 128 && aes_bits != 256)
        return 0;
    /* OpenSSL's ECDH output is already the x coordinate left-padded to the field size, so
     * the "full field length" Z needs no further padding. */
    c = EVP_PKEY_CTX_new_from_pkey(NULL, own_private, NULL);
    if (c == NULL || EVP_PKEY_derive_init(c) != 1 || EVP_PKEY_CTX_set_ecdh_kdf_type(c, EVP_PKEY_ECDH_KDF_NONE) != 1
        || EVP_PKEY_derive_set_peer(c, peer_public) != 1 || EVP_PKEY_derive(c, z, &zlen) != 1 || zlen < klen)
        goto done;
    /* CKD_NULL truncation: the key is the *rightmost* bytes of Z. */
    memcpy(key, z + (zlen - klen), klen);
    ok = 1;
done:
    OPENSSL_cleanse(z, sizeof(z));
    if (!ok)
        OPENSSL_cleanse(key, 32);
    EVP_PKEY_CTX_free(c);
    return ok;
}

/* A DER length (contents shorter than 64 KiB) at out; its size. */
static size_t der_length(uint8_t *out, size_t len)
{
    if (len < 0x80) {
        out[0] = (uint8_t)len;
        return 1;
    }
    if (len < 0x100) {
        out[0] = 0x81;
        out[1] = (uint8_t)len;
        return 2;
    }
    out[0] = 0x82;
    out[1] = (uint8_t)(len >> 8);
    out[2] = (uint8_t)len;
    return 3;
}

/* The SPKI of an EC key with a named curve of key_der.c's list whose point comes out
 * uncompressed, written from its parts: the bytes i2d_PUBKEY writes for it (the plain form),
 * without OpenSSL 3.0's encoder chain, which cost 3.6 M instructions per call, the largest
 * single step of a client's skip import. 0 for any other key (the caller then encodes it
 * the long way). */
static int plain_ec_spki(EVP_PKEY *pub, uint8_t *der, size_t cap)
{
    char group[64], encoding[32];
    uint8_t point[1 + 2 * 66], alg[64], bits_head[4];
    size_t plen = 0, a = 0, b, n, i, h;
    const spki_curve *c = NULL;

    if (EVP_PKEY_get_utf8_string_param(pub, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), NULL) != 1
        || EVP_PKEY_get_utf8_string_param(pub, OSSL_PKEY_PARAM_EC_ENCODING, encoding, sizeof(encoding), NULL) != 1
        || strcmp(encoding, OSSL_PKEY_EC_ENCODING_GROUP) != 0)
        return 0;
    for (i = 0; i < SPKI_NCURVES && c == NULL; i++)
        if (strcmp(group, SPKI_CURVES[i].group) == 0)
            c = &SPKI_CURVES[i];
    if (c == NULL
        || EVP_PKEY_get_octet_string_param(pub, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof(point), &plen) != 1
        || plen != 1 + 2 * c->field || point[0] != 0x04)
        return 0;
    /* AlgorithmIdentifier: id-ecPublicKey, the curve's OID */
    alg[a++] = 0x30;
    a += der_length(alg + a, 4 + sizeof(OID_EC_PUBLIC_KEY) + c->oid_len);
    alg[a++] = 0x06;
    alg[a++] = (uint8_t)sizeof(OID_EC_PUBLIC_KEY);
    memcpy(alg + a, OID_EC_PUBLIC_KEY, sizeof(OID_EC_PUBLIC_KEY));
    a += sizeof(OID_EC_PUBLIC_KEY);
    alg[a++] = 0x06;
    alg[a++] = (uint8_t)c->oid_len;
    memcpy(alg + a, c->oid, c->oid_len);
    a += c->oid_len;
    /* BIT STRING, no unused bits, the point */
    bits_head[0] = 0x03;
    b = 1 + der_length(bits_head + 1, plen + 1);
    bits_head[b++] = 0;
    n = a + b + plen;
    if (cap < n + 4)
        return 0;
    der[0] = 0x30;
    h = 1 + der_length(der + 1, n);
    memcpy(der + h, alg, a);
    memcpy(der + h + a, bits_head, b);
    memcpy(der + h + a + b, point, plen);
    return (int)(h + n);
}

/* SPKI DER with the point uncompressed, whatever form the key was decoded from. */
static int uncompressed_spki(EVP_PKEY *pub, unsigned char **der)
{
    EVP_PKEY *copy;
    uint8_t plain[256];
    int len;

    ERR_set_mark();
    len = plain_ec_spki(pub, plain, sizeof(plain));
    ERR_pop_to_mark();
    if (len > 0)
        return (*der = OPENSSL_memdup(plain, (size_t)len)) != NULL ? len : -1;
    copy = EVP_PKEY_dup(pub);
    len = -1;

    if (copy != NULL
        && EVP_PKEY_set_utf8_string_param(copy, OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT,
                                          OSSL_PKEY_EC_POINT_CONVERSION_FORMAT_UNCOMPRESSED)
               == 1)
        len = i2d_PUBKEY(copy, der);
    EVP_PKEY_free(copy);
    return len;
}

int skip_session_id(EVP_PKEY *factory_public, char out[33])
{
    static const char B64URL[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    unsigned char *der = NULL, md[32];
    int len, i;

    out[0] = '\0';
    if (EVP_PKEY_get_base_id(factory_public) != EVP_PKEY_EC || (len = uncompressed_spki(factory_public, &der)) <= 0)
        return 0;
    if (EVP_Digest(der, (size_t)len, md, NULL, EVP_sha256(), NULL) != 1) {
        OPENSSL_free(der);
        return 0;
    }
    OPENSSL_free(der);
    /* 32 characters of 6 bits each: the first 192 bits of the hash, most significant first. */
    for (i = 0; i < 32; i++) {
        int bit = i * 6, byte = bit / 8, shift = bit % 8;
        unsigned v = ((unsigned)md[byte] << 8 | (unsigned)md[byte + 1]) >> (10 - shift);
        out[i] = B64URL[v & 63];
    }
    out[32] = '\0';
    return 1;
}
