/*
 * The byte formats of SmartCard-HSM key management (schsm/mgmt_data.c) against bytes the
 * card and OpenSC produce (docs/smartcard-hsm.md): the PrKD OpenSC writes for an EC key,
 * INITIALIZE as OpenSC's sc-hsm-tool sends it, the SO-PIN packing, the key generation C-data,
 * and the CV request check (inner signature made with OpenSSL here, then tampered with).
 */
#include <stdio.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>

#include "schsm/mgmt.h"

#define URI(x) "https://webpki.github.io/sks/algorithm#" x

static int failures;

#define CHECK(cond)                                                                                                   \
    do {                                                                                                              \
        if (!(cond)) {                                                                                                \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);                                  \
            failures++;                                                                                               \
        }                                                                                                             \
    } while (0)

static int same(const sks_buf *b, const uint8_t *want, size_t n)
{
    size_t i;

    if (b->len == n && memcmp(b->data, want, n) == 0)
        return 1;
    fprintf(stderr, "got  ");
    for (i = 0; i < b->len; i++)
        fprintf(stderr, "%02X", b->data[i]);
    fprintf(stderr, "\nwant ");
    for (i = 0; i < n; i++)
        fprintf(stderr, "%02X", want[i]);
    fprintf(stderr, "\n");
    return 0;
}

static schsm_keyspec spec(const char *uri)
{
    schsm_keyspec ks;

    memset(&ks, 0, sizeof(ks));
    CHECK(schsm_keyspec_from_uri((const uint8_t *)uri, strlen(uri), &ks));
    return ks;
}

/* OpenSC 0.23's PrKD for an EC key "eckey1", CKA_ID 01, key reference 1, 256 bits. */
static void test_prkd_ec(void)
{
    static const uint8_t WANT[] = { 0xA0, 0x2A, 0x30, 0x0F, 0x0C, 0x06, 'e',  'c',  'k',  'e',  'y',  '1',
                                    0x03, 0x02, 0x06, 0xC0, 0x04, 0x01, 0x01, 0x30, 0x0B, 0x04, 0x01, 0x01,
                                    0x03, 0x03, 0x07, 0x30, 0x80, 0x02, 0x01, 0x01, 0xA1, 0x0A, 0x30, 0x08,
                                    0x30, 0x02, 0x04, 0x00, 0x02, 0x02, 0x01, 0x00 };
    schsm_keyspec ks = spec(URI("ec.nist.p256"));
    const uint8_t id = 0x01;
    sks_buf b;

    sks_buf_init(&b);
    CHECK(schsm_prkd_encode(&ks, "eckey1", 6, &id, 1, 1, 256, &b));
    CHECK(same(&b, WANT, sizeof(WANT)));
    sks_buf_free(&b);
}

/* RSA: the SEQUENCE alternative, usage decrypt|sign|signRecover|unwrap, modulus bits. */
static void test_prkd_rsa(void)
{
    static const uint8_t WANT[] = { 0x30, 0x27, 0x30, 0x0D, 0x0C, 0x04, 'r',  's',  'a',  '1',  0x03,
                                    0x02, 0x06, 0xC0, 0x04, 0x01, 0x01, 0x30, 0x0A, 0x04, 0x01, 0x02,
                                    0x03, 0x02, 0x02, 0x74, 0x02, 0x01, 0x03, 0xA1, 0x0A, 0x30, 0x08,
                                    0x30, 0x02, 0x04, 0x00, 0x02, 0x02, 0x08, 0x00 };
    schsm_keyspec ks = spec(URI("rsa2048"));
    const uint8_t id = 0x02;
    sks_buf b;

    sks_buf_init(&b);
    CHECK(schsm_prkd_encode(&ks, "rsa1", 4, &id, 1, 3, 2048, &b));
    CHECK(same(&b, WANT, sizeof(WANT)));
    sks_buf_free(&b);
}

/* sc-hsm-tool --initialize --so-pin 3537363231383830 --pin 648219 (3 tries), as the card saw it. */
static void test_initialize(void)
{
    static const uint8_t WANT[] = { 0x80, 0x02, 0x00, 0x01, 0x81, 0x06, 0x36, 0x34, 0x38, 0x32, 0x31, 0x39, 0x82,
                                    0x08, 0x35, 0x37, 0x36, 0x32, 0x31, 0x38, 0x38, 0x30, 0x91, 0x01, 0x03 };
    uint8_t so[8];
    schsm_init_params p;
    sks_buf b;

    CHECK(schsm_pack_so_pin((const uint8_t *)"3537363231383830", 16, so));
    memset(&p, 0, sizeof(p));
    p.options = 0x0001;
    p.user_pin = (const uint8_t *)"648219";
    p.user_pin_len = 6;
    p.so_pin = so;
    p.retry_limit = 3;
    p.dkek_shares = -1;
    sks_buf_init(&b);
    CHECK(schsm_init_cdata(&p, &b));
    CHECK(same(&b, WANT, sizeof(WANT)));
    /* with DKEK shares and key domains */
    sks_buf_reset(&b);
    p.dkek_shares = 2;
    p.key_domains = 4;
    CHECK(schsm_init_cdata(&p, &b));
    CHECK(b.len == sizeof(WANT) + 6 && memcmp(b.data + sizeof(WANT), "\x92\x01\x02\x97\x01\x04", 6) == 0);
    sks_buf_free(&b);
}

static void test_so_pin(void)
{
    static const uint8_t WANT[] = { 0x01, 0x23, 0x45, 0x67, 0x89, 0xAB, 0xCD, 0xEF };
    uint8_t so[8];

    CHECK(schsm_pack_so_pin((const uint8_t *)"0123456789abcdef", 16, so) && memcmp(so, WANT, 8) == 0);
    CHECK(schsm_pack_so_pin((const uint8_t *)"0123456789ABCDEF", 16, so) && memcmp(so, WANT, 8) == 0);
    CHECK(!schsm_pack_so_pin((const uint8_t *)"0123456789abcde", 15, so));
    CHECK(!schsm_pack_so_pin((const uint8_t *)"0123456789abcdef0", 17, so));
    CHECK(!schsm_pack_so_pin((const uint8_t *)"0123456789abcdeg", 16, so));
    CHECK(!schsm_pack_so_pin((const uint8_t *)"01234567 9abcdef", 16, so));
}

static void test_cdata_rsa(void)
{
    static const uint8_t WANT[] = { 0x5F, 0x29, 0x01, 0x00, 0x42, 0x09, 'U',  'T',  'C',  'A',  '0',  '0',  '0',
                                    '0',  '1',  0x7F, 0x49, 0x15, 0x06, 0x0A, 0x04, 0x00, 0x7F, 0x00, 0x07, 0x02,
                                    0x02, 0x02, 0x01, 0x02, 0x82, 0x03, 0x01, 0x00, 0x01, 0x02, 0x02, 0x08, 0x00,
                                    0x5F, 0x20, 0x05, 'U',  'T',  'S',  'K',  'S' };
    schsm_keyspec ks = spec(URI("rsa2048"));
    sks_buf b;

    sks_buf_init(&b);
    CHECK(schsm_keygen_cdata(&ks, "UTCA00001", "UTSKS", &b));
    CHECK(same(&b, WANT, sizeof(WANT)));
    sks_buf_free(&b);
}

/* EC: the explicit domain parameters of P-256 (SEC 2) and brainpoolP320r1's field size. */
static void test_cdata_ec(void)
{
    static const uint8_t P256_P[] = { 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
                                      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF,
                                      0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF };
    static const uint8_t P256_GX[] = { 0x04, 0x6B, 0x17, 0xD1, 0xF2 };
    schsm_keyspec ks = spec(URI("ec.nist.p256"));
    const uint8_t *key, *v;
    size_t key_len, n;
    sks_buf b;

    sks_buf_init(&b);
    CHECK(schsm_keygen_cdata(&ks, "UTCA00001", "UTSKS00001", &b));
    CHECK(schsm_mgmt_tlv_find(b.data, b.len, 0x7F49, &key, &key_len, NULL, NULL));
    CHECK(schsm_mgmt_tlv_find(key, key_len, 0x06, &v, &n, NULL, NULL) && n == 10 && v[9] == 0x03);
    CHECK(schsm_mgmt_tlv_find(key, key_len, 0x81, &v, &n, NULL, NULL) && n == 32 && memcmp(v, P256_P, 32) == 0);
    CHECK(schsm_mgmt_tlv_find(key, key_len, 0x82, &v, &n, NULL, NULL) && n == 32 && v[31] == 0xFC);
    CHECK(schsm_mgmt_tlv_find(key, key_len, 0x83, &v, &n, NULL, NULL) && n == 32 && v[0] == 0x5A);
    CHECK(schsm_mgmt_tlv_find(key, key_len, 0x84, &v, &n, NULL, NULL) && n == 65 && memcmp(v, P256_GX, 5) == 0);
    CHECK(schsm_mgmt_tlv_find(key, key_len, 0x85, &v, &n, NULL, NULL) && n == 32 && v[31] == 0x51);
    CHECK(schsm_mgmt_tlv_find(key, key_len, 0x87, &v, &n, NULL, NULL) && n == 1 && v[0] == 0x01);
    sks_buf_reset(&b);
    ks = spec(URI("ec.brainpool.p320r1"));
    CHECK(schsm_keygen_cdata(&ks, "UTCA00001", "UTSKS00001", &b));
    CHECK(schsm_mgmt_tlv_find(b.data, b.len, 0x7F49, &key, &key_len, NULL, NULL));
    CHECK(schsm_mgmt_tlv_find(key, key_len, 0x81, &v, &n, NULL, NULL) && n == 40);
    CHECK(schsm_mgmt_tlv_find(key, key_len, 0x84, &v, &n, NULL, NULL) && n == 81);
    sks_buf_free(&b);
    CHECK(!schsm_keyspec_from_uri((const uint8_t *)URI("ed25519"), strlen(URI("ed25519")), &ks));
}

/* A CV request as the card builds it, made here with an OpenSSL key on curve. */
static void build_cv_request(EVP_PKEY *key, int corrupt, sks_buf *out)
{
    static const uint8_t OID[] = { 0x04, 0x00, 0x7F, 0x00, 0x07, 0x02, 0x02, 0x02, 0x02, 0x03 }, CPI = 0;
    uint8_t point[133], sigder[160], raw[132];
    size_t plen = 0, siglen = sizeof(sigder), half;
    sks_buf pk, body, body_tlv, cert, req;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    const unsigned char *p;
    ECDSA_SIG *s;

    sks_buf_init(&pk);
    sks_buf_init(&body);
    sks_buf_init(&body_tlv);
    sks_buf_init(&cert);
    sks_buf_init(&req);
    EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, point, sizeof(point), &plen);
    schsm_mgmt_tlv_put(&pk, 0x06, OID, sizeof(OID));
    schsm_mgmt_tlv_put(&pk, 0x86, point, plen);
    schsm_mgmt_tlv_put(&body, 0x5F29, &CPI, 1);
    schsm_mgmt_tlv_put(&body, 0x42, (const uint8_t *)"UTCA00001", 9);
    schsm_mgmt_tlv_put(&body, 0x7F49, pk.data, pk.len);
    schsm_mgmt_tlv_put(&body, 0x5F20, (const uint8_t *)"UTSKS00001", 10);
    schsm_mgmt_tlv_put(&body_tlv, 0x7F4E, body.data, body.len);
    EVP_DigestSignInit_ex(md, NULL, "SHA256", NULL, NULL, key, NULL);
    EVP_DigestSign(md, sigder, &siglen, body_tlv.data, body_tlv.len);
    p = sigder;
    s = d2i_ECDSA_SIG(NULL, &p, (long)siglen);
    half = (plen - 1) / 2;
    BN_bn2binpad(ECDSA_SIG_get0_r(s), raw, (int)half);
    BN_bn2binpad(ECDSA_SIG_get0_s(s), raw + half, (int)half);
    if (corrupt)
        raw[3] ^= 0x01;
    sks_buf_put(&cert, body_tlv.data, body_tlv.len);
    schsm_mgmt_tlv_put(&cert, 0x5F37, raw, 2 * half);
    schsm_mgmt_tlv_put(&req, 0x7F21, cert.data, cert.len);
    schsm_mgmt_tlv_put(&req, 0x42, (const uint8_t *)"ESPICOHSMTR00001", 16);
    schsm_mgmt_tlv_put(&req, 0x5F37, raw, 2 * half); /* outer signature: not checked here */
    schsm_mgmt_tlv_put(out, 0x67, req.data, req.len);
    ECDSA_SIG_free(s);
    EVP_MD_CTX_free(md);
    sks_buf_free(&pk);
    sks_buf_free(&body);
    sks_buf_free(&body_tlv);
    sks_buf_free(&cert);
    sks_buf_free(&req);
}

static void test_cv_request(void)
{
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384"), *pub = NULL;
    schsm_keyspec p384 = spec(URI("ec.nist.p384")), p256 = spec(URI("ec.nist.p256"));
    char why[200];
    sks_buf good, bad;
    size_t i;

    sks_buf_init(&good);
    sks_buf_init(&bad);
    build_cv_request(key, 0, &good);
    build_cv_request(key, 1, &bad);
    CHECK(schsm_cv_request_key(good.data, good.len, &p384, &pub, why, sizeof(why)));
    CHECK(pub != NULL && EVP_PKEY_eq(pub, key) == 1);
    EVP_PKEY_free(pub);
    pub = NULL;
    CHECK(!schsm_cv_request_key(bad.data, bad.len, &p384, &pub, why, sizeof(why)) && pub == NULL);
    CHECK(strstr(why, "not signed") != NULL);
    /* a key on another curve than asked for */
    CHECK(!schsm_cv_request_key(good.data, good.len, &p256, &pub, why, sizeof(why)) && pub == NULL);
    /* every truncation is refused, never read past */
    for (i = 0; i < good.len; i++)
        CHECK(!schsm_cv_request_key(good.data, i, &p384, &pub, why, sizeof(why)) && pub == NULL);
    EVP_PKEY_free(key);
    sks_buf_free(&good);
    sks_buf_free(&bad);
}

int main(void)
{
    test_prkd_ec();
    test_prkd_rsa();
    test_initialize();
    test_so_pin();
    test_cdata_rsa();
    test_cdata_ec();
    test_cv_request();
    if (failures) {
        fprintf(stderr, "%d checks failed\n", failures);
        return 1;
    }
    printf("schsm management formats: all checks passed\n");
    return 0;
}
