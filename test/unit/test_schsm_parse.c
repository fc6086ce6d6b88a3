/*
 * The SmartCard-HSM driver's parsers of card output, on bytes OpenSC and the card really
 * produce (docs/smartcard-hsm.md): PrKD entries written by OpenSC 0.23, a CD entry of a
 * certificate OpenSC stored apart, the FCP of SELECT; every truncation of them must be
 * refused (never read past the end: the sanitized build checks); APDU encoding and what
 * status words become.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schsm/internal.h"

static int failures;

#define CHECK(cond)                                                                                                    \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);                                  \
            failures++;                                                                                                \
        }                                                                                                              \
    } while (0)

static size_t unhex(const char *h, uint8_t *out, size_t cap)
{
    size_t n = 0;
    unsigned v;

    while (*h && n < cap) {
        if (*h == ' ') {
            h++;
            continue;
        }
        if (sscanf(h, "%2x", &v) != 1)
            abort();
        out[n++] = (uint8_t)v;
        h += 2;
    }
    return n;
}

/* Every proper prefix of a structure must be refused, from a buffer of exactly that size. */
static void truncations_refused(const uint8_t *p, size_t n, int (*parse)(const uint8_t *, size_t))
{
    size_t i;

    for (i = 0; i < n; i++) {
        uint8_t *copy = malloc(i ? i : 1);
        memcpy(copy, p, i);
        CHECK(!parse(i ? copy : NULL, i));
        free(copy);
    }
}

static int parse_prkd(const uint8_t *p, size_t n)
{
    schsm_key k;

    memset(&k, 0, sizeof(k));
    return schsm_prkd_decode(p, n, &k);
}

static int parse_cd(const uint8_t *p, size_t n)
{
    uint8_t id[64];
    size_t len;

    return schsm_cd_id(p, n, id, sizeof(id), &len);
}

static int parse_fcp(const uint8_t *p, size_t n)
{
    uint8_t t, a, b;
    uint16_t o;

    return schsm_parse_fcp(p, n, &t, &a, &b, &o);
}

static void test_prkd_ec_from_opensc(void)
{
    /* OpenSC 0.23 pkcs11-tool --keypairgen EC:prime256v1 --id 01 --label eckey1 (pico-hsm) */
    uint8_t b[128];
    size_t n = unhex("A02A300F0C06 65636B657931 030206C0 040101 300B 040101 0303073080 020101"
                     " A10A 3008 30020400 02020100", b, sizeof(b));
    schsm_key k;

    memset(&k, 0, sizeof(k));
    CHECK(n == 44);
    CHECK(schsm_prkd_decode(b, n, &k));
    CHECK(k.type == SCHSM_KEY_EC);
    CHECK(strcmp(k.label, "eckey1") == 0);
    CHECK(k.id_len == 1 && k.id[0] == 0x01);
    CHECK(k.bits == 256);
    truncations_refused(b, n, parse_prkd);
}

static void test_prkd_with_access_flags(void)
{
    /* OpenSC 0.23 on sks-vhsm: CommonKeyAttributes with accessFlags, after --set-id 06 */
    uint8_t b[128];
    size_t n = unhex("a02d300e0c0563616b6579030206c0040101300f0401060303073080030203b8020101"
                     "a10a30083002040002020100", b, sizeof(b));
    schsm_key k;

    memset(&k, 0, sizeof(k));
    CHECK(schsm_prkd_decode(b, n, &k));
    CHECK(k.type == SCHSM_KEY_EC && strcmp(k.label, "cakey") == 0 && k.id_len == 1 && k.id[0] == 6 && k.bits == 256);
    truncations_refused(b, n, parse_prkd);
}

static void test_prkd_malformed_type_attributes(void)
{
    /* a broken [1] (its own length beyond the entry, or its SEQUENCE beyond it): the key keeps
     * its name and iD, its size is unknown */
    static const char *const BROKEN[] = {
        "A02A300F0C06 65636B657931 030206C0 040101 300B 040101 0303073080 020101 A10B 3008 30020400 02020100",
        "A02A300F0C06 65636B657931 030206C0 040101 300B 040101 0303073080 020101 A10A 3009 30020400 02020100",
    };
    uint8_t b[128];
    size_t i, n;
    schsm_key k;

    for (i = 0; i < 2; i++) {
        memset(&k, 0, sizeof(k));
        n = unhex(BROKEN[i], b, sizeof(b));
        CHECK(schsm_prkd_decode(b, n, &k));
        CHECK(strcmp(k.label, "eckey1") == 0 && k.id_len == 1 && k.bits == 0);
    }
}

static void test_prkd_rsa(void)
{
    uint8_t b[128];
    size_t n = unhex("302A300F0C06 7273616B6579 030206C0 040102 300B 040102 0303027400 020102"
                     " A10A 3008 30020400 02020800", b, sizeof(b));
    schsm_key k;

    memset(&k, 0, sizeof(k));
    CHECK(schsm_prkd_decode(b, n, &k));
    CHECK(k.type == SCHSM_KEY_RSA && strcmp(k.label, "rsakey") == 0 && k.bits == 2048);
}

static void test_prkd_label_not_utf8(void)
{
    uint8_t b[128];
    size_t n = unhex("A02A300F0C06 65FF6B0A6579 030206C0 040101 300B 040101 0303073080 020101"
                     " A10A 3008 30020400 02020100", b, sizeof(b));
    schsm_key k;

    memset(&k, 0, sizeof(k));
    CHECK(schsm_prkd_decode(b, n, &k));
    CHECK(strcmp(k.label, "e?k?ey") == 0); /* the wire carries UTF-8 only */
}

static void test_cd_from_opensc(void)
{
    /* the CD entry C800 OpenSC wrote for a certificate with CKA_ID 06 stored as CA00 */
    uint8_t b[64], id[64];
    size_t n = unhex("301c300b0c0563616b6579030206403003040106a108300630040402ca00", b, sizeof(b)), len = 0;

    CHECK(schsm_cd_id(b, n, id, sizeof(id), &len));
    CHECK(len == 1 && id[0] == 0x06);
    truncations_refused(b, n, parse_cd);
}

static void test_fcp(void)
{
    /* pico-hsm 6.6 answers SELECT with this FCP */
    uint8_t b[64], type = 0, major = 0, minor = 0;
    uint16_t options = 0;
    size_t n = unhex("6222 81020000 820101 83020000 840BE82B0601040181C31F0201 8A0105 85050001FF0606", b, sizeof(b));

    CHECK(schsm_parse_fcp(b, n, &type, &major, &minor, &options));
    CHECK(type == 0xFF && major == 6 && minor == 6 && options == 0x0001);
    truncations_refused(b, n, parse_fcp);
}

static void test_request_key(void)
{
    /* 67 { 7F21 { 7F4E { 7F49 { 06 OID, 86 04||X||Y } } } } (shortened point) */
    uint8_t b[64], out[16];
    size_t n = unhex("6714 7F2111 7F4E0E 7F490B 0603040506 860404AABBCC", b, sizeof(b)), len = 0;

    CHECK(schsm_request_key(b, n, out, sizeof(out), &len));
    CHECK(len == 4 && memcmp(out, "\x04\xAA\xBB\xCC", 4) == 0);
    CHECK(!schsm_request_key(b, n, out, 3, &len)); /* does not fit: refused */
}

static void test_apdu_encoding(void)
{
    uint8_t out[300], data[300];
    size_t n;

    memset(data, 0xAB, sizeof(data));
    n = schsm_apdu_encode(out, sizeof(out), 0x00, 0x20, 0x00, 0x81, NULL, 0, -1, 0); /* case 1 */
    CHECK(n == 4);
    n = schsm_apdu_encode(out, sizeof(out), 0x80, 0x58, 0, 0, NULL, 0, 0, 0); /* case 2 short, Le 256 */
    CHECK(n == 5 && out[4] == 0);
    n = schsm_apdu_encode(out, sizeof(out), 0x80, 0x58, 0, 0, NULL, 0, 0, 1); /* case 2 extended */
    CHECK(n == 7 && out[4] == 0 && out[5] == 0 && out[6] == 0);
    n = schsm_apdu_encode(out, sizeof(out), 0x80, 0x68, 1, 0x70, data, 32, 0, 0); /* case 4 short */
    CHECK(n == 4 + 1 + 32 + 1 && out[4] == 32 && out[37] == 0);
    n = schsm_apdu_encode(out, sizeof(out), 0x80, 0x68, 1, 0x20, data, 256, 0, 1); /* case 4 extended */
    CHECK(n == 4 + 3 + 256 + 2 && out[4] == 0 && out[5] == 1 && out[6] == 0 && out[263] == 0 && out[264] == 0);
    CHECK(schsm_apdu_encode(out, sizeof(out), 0x80, 0x68, 1, 0x20, data, 256, 0, 0) == 0); /* too long for short */
    CHECK(schsm_apdu_encode(out, 10, 0x80, 0x68, 1, 0x70, data, 32, 0, 0) == 0);           /* buffer too small */
}

static void test_status_words(void)
{
    CHECK(schsm_sw_status(0x63C2) == SKS_ERROR_AUTHORIZATION);
    CHECK(schsm_sw_status(0x6983) == SKS_ERROR_AUTHORIZATION);
    CHECK(schsm_sw_status(0x6A82) == SKS_ERROR_NO_KEY);
    CHECK(schsm_sw_status(0x6985) == SKS_ERROR_ALGORITHM);
    CHECK(schsm_sw_status(0x6A84) == SKS_ERROR_NOT_ALLOWED);
    CHECK(schsm_sw_status(0x6F00) == SKS_ERROR_EXTERNAL);
    CHECK(strcmp(schsm_sw_text(0x6983), "PIN blocked") == 0);
}

int main(void)
{
    test_prkd_ec_from_opensc();
    test_prkd_with_access_flags();
    test_prkd_malformed_type_attributes();
    test_prkd_rsa();
    test_prkd_label_not_utf8();
    test_cd_from_opensc();
    test_fcp();
    test_request_key();
    test_apdu_encoding();
    test_status_words();
    if (failures) {
        fprintf(stderr, "%d checks failed\n", failures);
        return 1;
    }
    printf("schsm parsers: all checks passed\n");
    return 0;
}
