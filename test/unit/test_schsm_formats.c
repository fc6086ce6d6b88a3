/*
 * The SmartCard-HSM key-management formats (schsm/keymgmt_formats.h): DKEK share files, n-of-m
 * share passwords, wrapped-key blobs and wrap files, CV certificates. Known answers come from
 * outside the project where there are any (SHA-256 of 32 zero bytes; the published scheme roots
 * and their self-signatures); cross-checks with independent implementations (openssl enc,
 * python3-cryptography) are in test/python/test_schsm_formats.py.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "schsm/keymgmt_formats.h"

static int failures;

#define CHECK(cond)                                                                                                    \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);                                   \
            failures++;                                                                                                \
        }                                                                                                              \
    } while (0)

#define CHECK_ERR(err, text)                                                                                           \
    do {                                                                                                               \
        if (!strstr(err, text)) {                                                                                      \
            fprintf(stderr, "%s:%d: error \"%s\" does not say \"%s\"\n", __FILE__, __LINE__, err, text);              \
            failures++;                                                                                                \
        }                                                                                                              \
    } while (0)

static const uint8_t pw[] = "correct horse";

static void count_progress(void *arg, int finished)
{
    int *calls = arg;
    calls[finished ? 1 : 0]++;
}

static void test_share_file(void)
{
    uint8_t share[32], back[32], file[SCHSM_SHARE_FILE_LEN];
    char err[256] = "";
    int calls[2] = {0, 0};
    RAND_bytes(share, sizeof share);

    CHECK(schsm_share_encrypt(share, pw, sizeof pw - 1, NULL, 1000, count_progress, calls, file, err, sizeof err));
    CHECK(memcmp(file, "Salted__", 8) == 0);
    CHECK(calls[0] == 1 && calls[1] == 1);
    CHECK(schsm_share_decrypt(file, sizeof file, pw, sizeof pw - 1, 1000, NULL, NULL, back, err, sizeof err));
    CHECK(memcmp(share, back, 32) == 0);

    /* wrong password: detected by the padding/length, reported as such */
    int wrong_detected = 0;
    for (int i = 0; i < 8; i++) {
        uint8_t other[] = "wrong password 0";
        other[15] = (uint8_t)('0' + i);
        err[0] = 0;
        if (!schsm_share_decrypt(file, sizeof file, other, sizeof other - 1, 1000, NULL, NULL, back, err, sizeof err)) {
            CHECK_ERR(err, "wrong password or not a share file");
            wrong_detected++;
        }
    }
    CHECK(wrong_detected == 8);
    /* the iteration count is part of the key: a different one is a wrong password too */
    CHECK(!schsm_share_decrypt(file, sizeof file, pw, sizeof pw - 1, 999, NULL, NULL, back, err, sizeof err));

    CHECK(!schsm_share_decrypt(file, 63, pw, sizeof pw - 1, 1000, NULL, NULL, back, err, sizeof err));
    CHECK_ERR(err, "truncated");
    CHECK(!schsm_share_decrypt(file, 8, pw, sizeof pw - 1, 1000, NULL, NULL, back, err, sizeof err));
    CHECK_ERR(err, "Salted__");
    uint8_t garbled[SCHSM_SHARE_FILE_LEN];
    memcpy(garbled, file, sizeof garbled);
    garbled[0] = 's';
    CHECK(!schsm_share_decrypt(garbled, sizeof garbled, pw, sizeof pw - 1, 1000, NULL, NULL, back, err, sizeof err));
    CHECK_ERR(err, "not a DKEK share file");
    /* a flipped ciphertext byte in the last two blocks garbles the padding */
    for (int at = 32; at < SCHSM_SHARE_FILE_LEN; at += 5) {
        memcpy(garbled, file, sizeof garbled);
        garbled[at] ^= 0x01;
        err[0] = 0;
        CHECK(!schsm_share_decrypt(garbled, sizeof garbled, pw, sizeof pw - 1, 1000, NULL, NULL, back, err,
                                   sizeof err));
        CHECK_ERR(err, "wrong password or not a share file");
    }

    /* fixed salt: deterministic output */
    uint8_t salt[8] = {1, 2, 3, 4, 5, 6, 7, 8}, file2[SCHSM_SHARE_FILE_LEN];
    CHECK(schsm_share_encrypt(share, pw, sizeof pw - 1, salt, 10, NULL, NULL, file, err, sizeof err));
    CHECK(schsm_share_encrypt(share, pw, sizeof pw - 1, salt, 10, NULL, NULL, file2, err, sizeof err));
    CHECK(memcmp(file, file2, sizeof file) == 0 && memcmp(file + 8, salt, 8) == 0);
}

static void test_dkek(void)
{
    /* SHA-256 of 32 zero bytes = 66687aadf862bd77 6c8fc18b... */
    uint8_t dkek[32] = {0}, kcv[8], share[32];
    static const uint8_t zero_kcv[8] = {0x66, 0x68, 0x7a, 0xad, 0xf8, 0x62, 0xbd, 0x77};
    CHECK(schsm_dkek_kcv(dkek, kcv) && memcmp(kcv, zero_kcv, 8) == 0);
    memset(share, 0xA5, sizeof share);
    schsm_dkek_add_share(dkek, share);
    schsm_dkek_add_share(dkek, share);
    CHECK(dkek[0] == 0 && dkek[31] == 0);
}

/* ---- n-of-m -------------------------------------------------------------------------------- */

static void test_pwd_known_answer(void)
{
    /* p = 2^64 - 59 (the largest 64-bit prime), f(x) = 0x0011223344556677 + 5x: shares as
     * sc-hsm-tool prints them. The password starts with 00: it must come back as 8 bytes. */
    const char *s1 = "Prime       : ff:ff:ff:ff:ff:ff:ff:c5\nShare ID    : 1\nShare value : 11:22:33:44:55:66:7c\n";
    const char *s2 = "Share value : 11:22:33:44:55:66:81\nPrime : FF FF FF FF FF FF FF C5\nShare ID : 2\n";
    schsm_pwd_share sh[2];
    uint8_t pwd[8];
    char err[256] = "", text[SCHSM_PWD_SHARE_TEXT_LEN];
    static const uint8_t want[8] = {0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77};
    CHECK(schsm_pwd_share_parse(s1, &sh[0], err, sizeof err));
    CHECK(schsm_pwd_share_parse(s2, &sh[1], err, sizeof err));
    CHECK(sh[0].prime == 0xFFFFFFFFFFFFFFC5ULL && sh[1].id == 2);
    CHECK(schsm_pwd_combine(sh, 2, pwd, err, sizeof err) && memcmp(pwd, want, 8) == 0);
    CHECK(schsm_pwd_share_format(&sh[0], text, sizeof text) && strcmp(text, s1) == 0);

    /* wrap-around mod p: f(x) = (p - 1) + 3x */
    schsm_pwd_share w[2] = {{0xFFFFFFFFFFFFFFC5ULL, 1, 2}, {0xFFFFFFFFFFFFFFC5ULL, 2, 5}};
    CHECK(schsm_pwd_combine(w, 2, pwd, err, sizeof err));
    CHECK(pwd[0] == 0xff && pwd[7] == 0xc4);
}

static void test_pwd_split(void)
{
    uint8_t pwd[8], back[8];
    schsm_pwd_share sh[12];
    char err[256] = "";
    CHECK(schsm_pwd_random(pwd, err, sizeof err) && pwd[0] < 0x80 && pwd[0] != 0);
    /* a leading zero byte (which sc-hsm-tool drops) is drawn again, the top bit cleared */
    for (int i = 0; i < 64; i++) {
        uint8_t z[8] = { (uint8_t)(i & 1 ? 0x80 : 0), 1, 2, 3, 4, 5, 6, 7 };
        CHECK(schsm_pwd_shape(z, err, sizeof err) && z[0] != 0 && z[0] < 0x80 && z[7] == 7);
    }
    pwd[0] = 0; /* a password from elsewhere may still start with 00: our combine keeps it */
    CHECK(schsm_pwd_split(pwd, 3, 12, sh, err, sizeof err));
    /* every 3 of the last 5 (IDs >= 10 included), through the printed text */
    for (int a = 7; a < 12; a++)
        for (int b = a + 1; b < 12; b++)
            for (int c = b + 1; c < 12; c++) {
                schsm_pwd_share pick[3];
                int idx[3] = {a, b, c};
                for (int i = 0; i < 3; i++) {
                    char text[SCHSM_PWD_SHARE_TEXT_LEN];
                    CHECK(schsm_pwd_share_format(&sh[idx[i]], text, sizeof text));
                    CHECK(schsm_pwd_share_parse(text, &pick[i], err, sizeof err));
                }
                memset(back, 0xEE, sizeof back);
                CHECK(schsm_pwd_combine(pick, 3, back, err, sizeof err) && memcmp(back, pwd, 8) == 0);
            }
    CHECK(sh[11].id == 12 && sh[0].prime == sh[11].prime && sh[0].prime > 0xC000000000000000ULL);
    /* too few shares: some other number */
    CHECK(schsm_pwd_combine(sh, 2, back, err, sizeof err) && memcmp(back, pwd, 8) != 0);
    /* more than the threshold: still right */
    CHECK(schsm_pwd_combine(sh, 6, back, err, sizeof err) && memcmp(back, pwd, 8) == 0);

    schsm_pwd_share dup[2] = {sh[0], sh[0]};
    CHECK(!schsm_pwd_combine(dup, 2, back, err, sizeof err));
    CHECK_ERR(err, "twice");
    schsm_pwd_share mixed[2] = {sh[0], sh[1]};
    mixed[1].prime ^= 2;
    CHECK(!schsm_pwd_combine(mixed, 2, back, err, sizeof err));
    CHECK_ERR(err, "another prime");
    CHECK(!schsm_pwd_split(pwd, 1, 3, sh, err, sizeof err));
    CHECK(!schsm_pwd_split(pwd, 4, 3, sh, err, sizeof err));
}

static void test_pwd_parse_errors(void)
{
    schsm_pwd_share s;
    uint64_t v;
    char err[256] = "";
    CHECK(schsm_pwd_parse_hex("0a:1b", &v, err, sizeof err) && v == 0x0a1b);
    CHECK(schsm_pwd_parse_hex("0A1B2C", &v, err, sizeof err) && v == 0x0a1b2c);
    CHECK(!schsm_pwd_parse_hex("a:1b", &v, err, sizeof err));
    CHECK(!schsm_pwd_parse_hex("11:22:33:44:55:66:77:88:99", &v, err, sizeof err));
    CHECK_ERR(err, "longer than 8 bytes");
    CHECK(!schsm_pwd_parse_hex("zz", &v, err, sizeof err));
    CHECK(!schsm_pwd_parse_hex("", &v, err, sizeof err));
    CHECK(!schsm_pwd_share_parse("Prime : 0b\nShare ID : 0x1\nShare value : 01\n", &s, err, sizeof err));
    CHECK_ERR(err, "decimal");
    CHECK(!schsm_pwd_share_parse("Prime : 0b\nShare value : 01\n", &s, err, sizeof err));
    CHECK(schsm_pwd_share_parse("  Prime: 0b\r\nShare ID: 10\r\nShare value: 01\r\n", &s, err, sizeof err));
    CHECK(s.id == 10 && s.prime == 11 && s.value == 1);
}

/* ---- wrapped keys ------------------------------------------------------------------------ */

static EVP_PKEY *gen_key(const char *alg, const char *curve, unsigned bits)
{
    return curve ? EVP_PKEY_Q_keygen(NULL, NULL, "EC", curve) : EVP_PKEY_Q_keygen(NULL, NULL, alg, (size_t)bits);
}

static void roundtrip(EVP_PKEY *k, int want_type)
{
    uint8_t dkek[32], *blob = NULL;
    size_t n = 0;
    char err[256] = "";
    static const uint8_t algs[] = {0x70, 0x92};
    schsm_unwrapped u;
    RAND_bytes(dkek, sizeof dkek);
    CHECK(schsm_wrap_key(dkek, k, algs, sizeof algs, &blob, &n, err, sizeof err));
    if (!blob) {
        fprintf(stderr, "wrap failed: %s\n", err);
        return;
    }
    CHECK(blob[8] == want_type && (n - 16) % 16 != 0);
    CHECK(schsm_unwrap_key(dkek, blob, n, &u, err, sizeof err));
    CHECK(u.type == want_type && u.pkey && EVP_PKEY_eq(u.pkey, k) == 1);
    CHECK(u.nalgorithms == 2 && u.algorithms[0] == 0x70 && u.algorithms[1] == 0x92);
    /* the private half came back, not just the public one */
    BIGNUM *priv = NULL;
    CHECK(u.pkey && EVP_PKEY_get_bn_param(u.pkey, want_type == SCHSM_KEY_EC ? "priv" : "d", &priv));
    BN_clear_free(priv);
    schsm_unwrapped_clear(&u);

    /* a different DKEK: the error names both KCVs */
    uint8_t other[32], kcv[8];
    char hex[17];
    memcpy(other, dkek, 32);
    other[0] ^= 1;
    CHECK(!schsm_unwrap_key(other, blob, n, &u, err, sizeof err));
    CHECK_ERR(err, "KCV");
    schsm_dkek_kcv(other, kcv);
    for (int i = 0; i < 8; i++)
        snprintf(hex + 2 * i, 3, "%02x", kcv[i]);
    CHECK_ERR(err, hex);
    for (int i = 0; i < 8; i++)
        snprintf(hex + 2 * i, 3, "%02x", blob[i]);
    CHECK_ERR(err, hex);

    /* any altered byte after the KCV fails the CMAC */
    for (size_t i = 8; i < n; i += 7) {
        blob[i] ^= 0x10;
        CHECK(!schsm_unwrap_key(dkek, blob, n, &u, err, sizeof err));
        CHECK(u.pkey == NULL);
        blob[i] ^= 0x10;
    }
    CHECK(!schsm_unwrap_key(dkek, blob, n - 16, &u, err, sizeof err));
    CHECK(!schsm_unwrap_key(dkek, blob, 20, &u, err, sizeof err));

    /* the wrap file round trip, with and without PrKD and certificate */
    static const uint8_t prkd[] = {0xA0, 0x03, 0x30, 0x01, 0x00};
    static const uint8_t cert[] = {0x30, 0x02, 0x05, 0x00};
    uint8_t *file = NULL;
    size_t flen = 0, bl, pl, cl;
    const uint8_t *b, *p, *c;
    CHECK(schsm_wrap_file_build(blob, n, prkd, sizeof prkd, cert, sizeof cert, &file, &flen, err, sizeof err));
    CHECK(file && file[0] == 0x30);
    CHECK(schsm_wrap_file_parse(file, flen, &b, &bl, &p, &pl, &c, &cl, err, sizeof err));
    CHECK(bl == n && memcmp(b, blob, n) == 0 && pl == sizeof prkd && memcmp(p, prkd, pl) == 0 && cl == sizeof cert);
    CHECK(!schsm_wrap_file_parse(file, flen - 1, &b, &bl, &p, &pl, &c, &cl, err, sizeof err));
    OPENSSL_free(file);
    CHECK(schsm_wrap_file_build(blob, n, NULL, 0, NULL, 0, &file, &flen, err, sizeof err));
    CHECK(schsm_wrap_file_parse(file, flen, &b, &bl, &p, &pl, &c, &cl, err, sizeof err));
    CHECK(bl == n && p == NULL && c == NULL);
    OPENSSL_free(file);
    OPENSSL_free(blob);
}

static void test_wrap(void)
{
    const char *curves[] = {"P-256", "P-384", "P-521", "brainpoolP256r1", "brainpoolP320r1", "brainpoolP384r1",
                            "brainpoolP512r1"};
    for (size_t i = 0; i < sizeof curves / sizeof curves[0]; i++) {
        EVP_PKEY *k = gen_key("EC", curves[i], 0);
        CHECK(k);
        if (k)
            roundtrip(k, SCHSM_KEY_EC);
        EVP_PKEY_free(k);
    }
    EVP_PKEY *rsa = gen_key("RSA", NULL, 2048);
    roundtrip(rsa, SCHSM_KEY_RSA_CRT);
    EVP_PKEY_free(rsa);
    rsa = gen_key("RSA", NULL, 3072);
    roundtrip(rsa, SCHSM_KEY_RSA);
    EVP_PKEY_free(rsa);

    /* refused: small RSA, a curve the card lacks, other key types */
    uint8_t dkek[32] = {0}, *blob = NULL;
    size_t n;
    char err[256] = "";
    EVP_PKEY *k = gen_key("RSA", NULL, 1024);
    CHECK(!schsm_wrap_key(dkek, k, NULL, 0, &blob, &n, err, sizeof err) && !blob);
    CHECK_ERR(err, "2048 to 4096");
    EVP_PKEY_free(k);
    k = gen_key("EC", "secp224r1", 0);
    CHECK(!schsm_wrap_key(dkek, k, NULL, 0, &blob, &n, err, sizeof err) && !blob);
    EVP_PKEY_free(k);
    k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    CHECK(!schsm_wrap_key(dkek, k, NULL, 0, &blob, &n, err, sizeof err) && !blob);
    EVP_PKEY_free(k);
}

/* ---- CV certificates --------------------------------------------------------------------- */

static void test_roots(void)
{
    size_t nroots = 0;
    const schsm_root *roots = schsm_builtin_roots(&nroots);
    char err[256] = "";
    CHECK(nroots == 2 && strcmp(roots[0].name, "DESRCACC100001") == 0);
    for (size_t i = 0; i < nroots; i++) {
        schsm_cvc c;
        size_t used = 0;
        EVP_PKEY *k = NULL;
        CHECK(schsm_cvc_parse(roots[i].cert, roots[i].len, &c, &used, err, sizeof err) && used == roots[i].len);
        CHECK(strcmp(c.car, roots[i].name) == 0 && strcmp(c.chr, roots[i].name) == 0);
        CHECK(strcmp(c.effective, "121109") == 0 && strcmp(c.expiry, "321108") == 0);
        CHECK(c.chat.n == 1 && c.chat.p[0] == 0xC0 && c.cpi == 0);
        CHECK(schsm_cvc_public_key(&c, NULL, &k, err, sizeof err));
        char curve[64] = "";
        CHECK(k && EVP_PKEY_get_utf8_string_param(k, "group", curve, sizeof curve, NULL) &&
              strcmp(curve, "brainpoolP256r1") == 0);
        /* the published self-signature verifies ... */
        CHECK(schsm_cvc_verify(&c, k, &c.key_oid, err, sizeof err));
        /* ... and fails on any change of the signed body or the signature */
        uint8_t copy[512];
        memcpy(copy, roots[i].cert, roots[i].len);
        for (size_t at = 10; at < roots[i].len; at += 37) {
            schsm_cvc t;
            copy[at] ^= 1;
            if (schsm_cvc_parse(copy, roots[i].len, &t, NULL, err, sizeof err)) {
                EVP_PKEY *tk = NULL;
                int verified = schsm_cvc_public_key(&t, NULL, &tk, err, sizeof err) &&
                               schsm_cvc_verify(&t, k, &c.key_oid, err, sizeof err);
                CHECK(!verified);
                EVP_PKEY_free(tk);
            }
            copy[at] ^= 1;
        }
        /* every truncation is refused, without reading past the end */
        for (size_t len = 0; len < roots[i].len; len++) {
            uint8_t *t = malloc(len ? len : 1);
            memcpy(t, roots[i].cert, len);
            schsm_cvc tc;
            CHECK(!schsm_cvc_parse(t, len, &tc, NULL, err, sizeof err));
            free(t);
        }
        EVP_PKEY_free(k);
    }
    /* the production root alone (no DICA): the device certificate is the root itself, which is
     * self-signed but, as a single certificate, is not a device chain under a root */
    EVP_PKEY *dk = NULL;
    CHECK(schsm_cvc_verify_chain(roots[0].cert, roots[0].len, roots, nroots, &dk, NULL, err, sizeof err) ==
          SCHSM_CHAIN_UNKNOWN_ROOT);
    CHECK(dk == NULL);
    /* the same root with its key taken as if the domain parameters were elsewhere: the curve is
     * found by its point alone (the one supported curve it lies on) */
    schsm_cvc dev;
    CHECK(schsm_cvc_device_key_unverified(roots[0].cert, roots[0].len, &dev, &dk, err, sizeof err) && dk != NULL);
    EVP_PKEY_free(dk);
    CHECK(schsm_cvc_parse(roots[0].cert, roots[0].len, &dev, NULL, err, sizeof err));
    const char *by_point = schsm_curve_of_point(dev.q.p, dev.q.n);
    CHECK(by_point != NULL && strcmp(by_point, "brainpoolP256r1") == 0);
    uint8_t off_curve[65];
    memcpy(off_curve, dev.q.p, sizeof off_curve);
    off_curve[64] ^= 1;
    CHECK(dev.q.n == sizeof off_curve && schsm_curve_of_point(off_curve, sizeof off_curve) == NULL);
}

static void test_tlv(void)
{
    schsm_kmtlv t;
    const uint8_t ok3[] = {0x04, 0x83, 0x00, 0x00, 0x01, 0xAA};
    const uint8_t *p = ok3;
    CHECK(schsm_kmtlv_next(&p, ok3 + sizeof ok3, &t) && t.len == 1 && p == ok3 + sizeof ok3);
    const uint8_t four[] = {0x04, 0x84, 0x00, 0x00, 0x00, 0x01, 0xAA};
    p = four;
    CHECK(!schsm_kmtlv_next(&p, four + sizeof four, &t));
    const uint8_t indefinite[] = {0x30, 0x80, 0x00, 0x00};
    p = indefinite;
    CHECK(!schsm_kmtlv_next(&p, indefinite + sizeof indefinite, &t));
    const uint8_t longtag[] = {0x7F, 0x81, 0x01, 0x00};
    p = longtag;
    CHECK(!schsm_kmtlv_next(&p, longtag + sizeof longtag, &t));
    const uint8_t overrun[] = {0x04, 0x82, 0xFF, 0xFF, 0x00};
    p = overrun;
    CHECK(!schsm_kmtlv_next(&p, overrun + sizeof overrun, &t));
}

int main(void)
{
    test_share_file();
    test_dkek();
    test_pwd_known_answer();
    test_pwd_split();
    test_pwd_parse_errors();
    test_wrap();
    test_roots();
    test_tlv();
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("schsm formats: all checks passed\n");
    return 0;
}
