/*
 * The device's own DER paths for keys (device/crypto.c) against OpenSSL's encoders and
 * decoders, which they stand in for because those cost more than the operations around them
 * (README "Benchmarks"): for every curve the device knows and Ed25519, byte-identical
 * SubjectPublicKeyInfo and PrivateKeyInfo, parsed keys equal to OpenSSL's, points off the
 * curve refused, forms they do not handle left to OpenSSL; ECDH peers and the reused
 * signing and ECDH contexts give the results OpenSSL gives.
 *
 * Usage: test_key_der      exit status 0 and "key_der: N checks" on success
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "cms/skip_common.h"
#include "device/internal.h"

static int checks, failures;

#define CHECK(cond, ...)                                                                       \
    do {                                                                                       \
        checks++;                                                                              \
        if (!(cond)) {                                                                         \
            failures++;                                                                        \
            fprintf(stderr, "key_der: FAILED %s:%d: ", __FILE__, __LINE__);                    \
            fprintf(stderr, __VA_ARGS__);                                                      \
            fputc('\n', stderr);                                                               \
        }                                                                                      \
    } while (0)

static const char *const CURVES[] = { "P-256", "P-384", "P-521", "brainpoolP256r1", "brainpoolP320r1",
                                      "brainpoolP384r1", "brainpoolP512r1" };

static int same(const unsigned char *a, int alen, const sks_buf *b)
{
    return alen > 0 && (size_t)alen == b->len && memcmp(a, b->data, b->len) == 0;
}

static int pkcs8_ref(EVP_PKEY *k, unsigned char **der)
{
    PKCS8_PRIV_KEY_INFO *p8 = EVP_PKEY2PKCS8(k);
    int n = p8 != NULL ? i2d_PKCS8_PRIV_KEY_INFO(p8, der) : -1;

    PKCS8_PRIV_KEY_INFO_free(p8);
    return n;
}

/* spki_der, spki_parse, pkcs8_der and pkcs8_parse on one key, against OpenSSL. */
static void check_key(const char *what, EVP_PKEY *k)
{
    unsigned char *spki = NULL, *p8 = NULL;
    int spki_len = i2d_PUBKEY(k, &spki), p8_len = pkcs8_ref(k, &p8);
    sks_buf b;
    EVP_PKEY *pub, *priv;

    sks_buf_init(&b);
    CHECK(spki_der(k, &b) && same(spki, spki_len, &b), "%s: spki_der differs from i2d_PUBKEY", what);
    pub = spki_parse(spki, (size_t)spki_len);
    CHECK(pub != NULL && EVP_PKEY_eq(pub, k) == 1, "%s: spki_parse", what);
    sks_buf_reset(&b);
    CHECK(pub != NULL && spki_der(pub, &b) && same(spki, spki_len, &b), "%s: parsed SPKI re-encodes differently", what);
    sks_buf_reset(&b);
    CHECK(pkcs8_der(k, &b) && same(p8, p8_len, &b), "%s: pkcs8_der differs from EVP_PKEY2PKCS8", what);
    priv = pkcs8_parse(p8, (size_t)p8_len);
    CHECK(priv != NULL && EVP_PKEY_eq(priv, k) == 1, "%s: pkcs8_parse", what);
    sks_buf_reset(&b);
    CHECK(priv != NULL && pkcs8_der(priv, &b) && same(p8, p8_len, &b), "%s: parsed PKCS#8 re-encodes differently",
          what);
    EVP_PKEY_free(pub);
    EVP_PKEY_free(priv);
    OPENSSL_free(spki);
    OPENSSL_free(p8);
    sks_buf_free(&b);
}

/* The last byte of the point flipped: off the curve, refused by both paths. */
static void check_off_curve(const char *curve, EVP_PKEY *k)
{
    unsigned char *spki = NULL;
    int n = i2d_PUBKEY(k, &spki);
    EVP_PKEY *p;
    int validated = 1;

    spki[n - 1] ^= 1;
    p = spki_parse(spki, (size_t)n);
    CHECK(p == NULL, "%s: spki_parse accepts a point off the curve", curve);
    EVP_PKEY_free(p);
    p = ecdh_peer_parse(k, spki, (size_t)n, &validated);
    CHECK(p == NULL, "%s: ecdh_peer_parse accepts a point off the curve", curve);
    EVP_PKEY_free(p);
    OPENSSL_free(spki);
    ERR_clear_error();
}

/* ECDH through ecdh_peer_parse and a kept context, against OpenSSL's. */
static void check_ecdh(const char *curve, EVP_PKEY *k, key_contexts *kc)
{
    EVP_PKEY *peer = EVP_PKEY_Q_keygen(NULL, NULL, "EC", curve), *parsed;
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_pkey(NULL, peer, NULL);
    unsigned char *spki = NULL, ref[132];
    size_t ref_len = sizeof(ref);
    int n = i2d_PUBKEY(peer, &spki), validated = 0;
    sks_buf z;

    sks_buf_init(&z);
    CHECK(c != NULL && EVP_PKEY_derive_init(c) == 1 && EVP_PKEY_derive_set_peer(c, k) == 1
              && EVP_PKEY_derive(c, ref, &ref_len) == 1,
          "%s: reference ECDH", curve);
    parsed = ecdh_peer_parse(k, spki, (size_t)n, &validated);
    CHECK(parsed != NULL && validated, "%s: ecdh_peer_parse", curve);
    CHECK(parsed != NULL && ecdh_z_reuse(kc, k, parsed, validated, &z) && z.len == ref_len
              && memcmp(z.data, ref, ref_len) == 0,
          "%s: ECDH result differs", curve);
    EVP_PKEY_free(parsed);
    EVP_PKEY_CTX_free(c);
    EVP_PKEY_free(peer);
    OPENSSL_free(spki);
    sks_buf_free(&z);
}

/* Signatures with a kept context verify; r||s of every length ECDSA produces. */
static void check_signatures(const char *what, EVP_PKEY *k, key_contexts *kc, int count)
{
    uint8_t msg[8] = { 0 }, h[32];
    int i, good = 0;

    for (i = 0; i < count; i++) {
        uint8_t sig[SKS_MAX_SIGNATURE];
        size_t siglen = sizeof(sig);
        EVP_MD_CTX *m = EVP_MD_CTX_new();
        msg[0] = (uint8_t)i;
        msg[1] = (uint8_t)(i >> 8);
        if (EVP_PKEY_get_base_id(k) == EVP_PKEY_ED25519) {
            good += sign_hash_to(kc, k, NULL, 0, -1, NULL, msg, sizeof(msg), sig, &siglen)
                    && EVP_DigestVerifyInit_ex(m, NULL, NULL, NULL, NULL, k, NULL) == 1
                    && EVP_DigestVerify(m, sig, siglen, msg, sizeof(msg)) == 1;
        } else {
            good += sha256(msg, sizeof(msg), h) && sign_hash_to(kc, k, EVP_sha256(), 0, -1, NULL, h, 32, sig, &siglen)
                    && verify_sha256(k, msg, sizeof(msg), sig, siglen);
        }
        EVP_MD_CTX_free(m);
    }
    CHECK(good == count, "%s: %d of %d signatures with kept contexts verify", what, good, count);
}

/* skip_session_id writes a plain key's SPKI from its parts (cms/skip_common.c) and any other
 * through OpenSSL's encoder: the same key decoded from a compressed point (which takes the
 * encoder) must give the same id, so both encodings are byte-identical. */
static void check_session_id(const char *what, EVP_PKEY *k)
{
    unsigned char *der = NULL;
    const unsigned char *q;
    char fast[33], slow[33];
    EVP_PKEY *copy = EVP_PKEY_dup(k), *compressed = NULL;
    int n;

    if (copy != NULL && EVP_PKEY_set_utf8_string_param(copy, OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT,
                                                       OSSL_PKEY_EC_POINT_CONVERSION_FORMAT_COMPRESSED) == 1
        && (n = i2d_PUBKEY(copy, &der)) > 0) {
        q = der;
        compressed = d2i_PUBKEY(NULL, &q, n);
    }
    CHECK(compressed != NULL, "%s: no compressed copy", what);
    CHECK(skip_session_id(k, fast) && compressed != NULL && skip_session_id(compressed, slow)
              && strcmp(fast, slow) == 0,
          "%s: session id %s from the plain SPKI, %s through OpenSSL's encoder", what, fast,
          compressed != NULL ? slow : "-");
    OPENSSL_free(der);
    EVP_PKEY_free(copy);
    EVP_PKEY_free(compressed);
}

int main(void)
{
    size_t i;
    int j;

    for (i = 0; i < sizeof(CURVES) / sizeof(CURVES[0]); i++) {
        for (j = 0; j < 10; j++) {
            EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", CURVES[i]);
            key_contexts kc = { 0 };
            CHECK(k != NULL, "%s: keygen", CURVES[i]);
            if (k == NULL)
                continue;
            check_key(CURVES[i], k);
            check_session_id(CURVES[i], k);
            if (j == 0) {
                check_off_curve(CURVES[i], k);
                check_signatures(CURVES[i], k, &kc, 300);
            }
            check_ecdh(CURVES[i], k, &kc);
            key_contexts_free(&kc);
            EVP_PKEY_free(k);
        }
    }
    {
        EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
        key_contexts kc = { 0 };
        check_key("Ed25519", k);
        check_signatures("Ed25519", k, &kc, 50);
        key_contexts_free(&kc);
        EVP_PKEY_free(k);
    }
    /* Forms the fast paths leave to OpenSSL come out as OpenSSL has them. */
    {
        EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
        EVP_PKEY_set_utf8_string_param(k, OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT, "compressed");
        check_key("P-256 compressed", k);
        EVP_PKEY_set_utf8_string_param(k, OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT, "uncompressed");
        EVP_PKEY_set_int_param(k, OSSL_PKEY_PARAM_EC_INCLUDE_PUBLIC, 0);
        check_key("P-256 without its public key in PKCS#8", k);
        EVP_PKEY_free(k);
        k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "secp256k1");
        check_key("secp256k1", k);
        EVP_PKEY_free(k);
        k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
        check_key("RSA-2048", k);
        EVP_PKEY_free(k);
    }
    printf("key_der: %d checks, %d failed\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
