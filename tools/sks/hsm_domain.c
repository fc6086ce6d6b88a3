/*
 * sks hsm domain status|create|join and sks hsm kdm issue: SmartCard-HSM key domains
 * (docs/smartcard-hsm-keymgmt.md, "Key domains").
 *
 * kdm issue runs on the group signer's side, without a card: it verifies the device chain a
 * card exported (sks hsm attest --out), then signs 54 ‖ X(device key) with the group signer's
 * brainpoolP256r1 key, which may live in any sks device (an sks: URI, signed through the sks
 * provider) or a PEM file, and assembles the key domain membership the card checks at join.
 */
#include "cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/store.h>
#include <openssl/ui.h>

#include "files.h"
#include "schsm/keymgmt_formats.h"

#define MAX_FILE 8192
#define FIELD_BYTES 32 /* brainpoolP256r1 */
#define SIGNER_CHR "KDMSIGNER00001"

static const char USAGE[] =
    "usage: sks hsm domain status [--pin-file FILE]\n"
    "       sks hsm domain create --domain D --dkek N [--pin-file FILE]\n"
    "       sks hsm domain join --domain D [--pin-file FILE] KDM\n"
    "       sks hsm kdm issue --signer KEY --device-id FILE --out KDM [--root FILE]...\n"
    "  On a SmartCard-HSM initialised with key domains (sks hsm init --key-domains K).\n"
    "  status: every key domain: DKEK shares total and missing, KCV, XKEK domain UID.\n"
    "  create: domain D (0..254) as a DKEK domain of N shares (1..255).\n"
    "  join:   domain D as an XKEK domain from a key domain membership (KDM) issued for this\n"
    "          card; prints the domain UID (the group signer's key).\n"
    "  kdm issue (no card): the group signer signs a membership for one card.\n"
    "  --signer KEY      the group signer's brainpoolP256r1 key: an sks: URI (signed through the\n"
    "                    sks provider) or a PEM file\n"
    "  --device-id FILE  the card's device chain (sks hsm attest --out FILE); it must verify\n"
    "  --root FILE       trust this CV root for --device-id too (built in: the SmartCard-HSM roots)\n"
    "  --out KDM         the membership to write (new file)\n"
    "  --pin-file FILE   the card's user PIN (status: optional; pico-hsm shows a KCV only after it)\n";

static void print_hex(const uint8_t *p, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        printf("%02x", p[i]);
}

static void print_domain(const sks_hsm_domain *d)
{
    printf("domain %u:    ", d->domain);
    if (d->shares_total == 0xFF)
        printf("XKEK");
    else
        printf("DKEK, %u shares, %u missing", d->shares_total, d->shares_missing);
    printf(", KCV ");
    print_hex(d->kcv, sizeof(d->kcv));
    if (d->uid_len > 0) {
        printf(", UID ");
        print_hex(d->uid, d->uid_len);
    }
    printf("\n");
}

static int domain_status(cli_store *store, int argc, char **argv)
{
    static sks_hsm_domain domains[SKS_HSM_MAX_DOMAINS];
    const char *pin = NULL;
    const cli_opt opts[] = { { "--pin", OPT_SECRET, &pin } };
    sks_client_error e;
    sks_transport *t;
    size_t n, i;
    int rc;

    if ((rc = cli_parse_command("hsm domain status", argc, argv, 3, opts, 1, USAGE)) != CLI_CONTINUE)
        return rc;
    if ((t = cli_open(store, "hsm domain status")) == NULL)
        return CLI_EXIT_FAIL;
    rc = CLI_EXIT_FAIL;
    if (!sks_client_hsm_domain_status(t, cli_span(pin), domains, SKS_HSM_MAX_DOMAINS, &n, &e))
        cli_client_error("hsm domain status", &e);
    else {
        for (i = 0; i < n; i++)
            print_domain(&domains[i]);
        if (n == 0)
            printf("no key domains\n");
        rc = CLI_EXIT_OK;
    }
    t->close(t);
    return rc;
}

static int domain_create(cli_store *store, int argc, char **argv)
{
    const char *pin = NULL, *domain = NULL, *shares = NULL;
    const cli_opt opts[] = { { "--pin", OPT_SECRET, &pin },
                             { "--domain", OPT_VALUE, &domain },
                             { "--dkek", OPT_VALUE, &shares } };
    unsigned long d, s;
    sks_hsm_domain out;
    sks_client_error e;
    sks_transport *t;
    int rc;

    if ((rc = cli_parse_command("hsm domain create", argc, argv, 3, opts, 3, USAGE)) != CLI_CONTINUE)
        return rc;
    if (domain == NULL || shares == NULL) {
        cli_error("hsm domain create: give --domain D and --dkek N");
        return CLI_EXIT_USAGE;
    }
    if (!cli_parse_number("hsm domain create", "--domain", domain, 0, 254, &d)
        || !cli_parse_number("hsm domain create", "--dkek", shares, 1, 255, &s))
        return CLI_EXIT_USAGE;
    if ((t = cli_open_with_pin(store, "hsm domain create", &pin, &rc)) == NULL)
        return rc;
    if (sks_client_hsm_domain_create(t, cli_span(pin), (uint8_t)d, (uint8_t)s, &out, &e)) {
        print_domain(&out);
        rc = CLI_EXIT_OK;
    } else {
        cli_client_error("hsm domain create", &e);
        rc = CLI_EXIT_FAIL;
    }
    t->close(t);
    return rc;
}

static int domain_join(cli_store *store, int argc, char **argv)
{
    static uint8_t kdm[MAX_FILE];
    const char *pin = NULL, *domain = NULL, *path = NULL;
    const cli_opt opts[] = { { "--pin", OPT_SECRET, &pin }, { "--domain", OPT_VALUE, &domain } };
    unsigned long d;
    sks_hsm_domain out;
    sks_client_error e;
    sks_transport *t;
    sks_span span;
    size_t n;
    int rc;

    if (!cli_take_file_argument("hsm domain join", &argc, argv, 3, &path))
        return CLI_EXIT_USAGE;
    if ((rc = cli_parse_command("hsm domain join", argc, argv, 3, opts, 2, USAGE)) != CLI_CONTINUE)
        return rc;
    if (domain == NULL || path == NULL) {
        cli_error("hsm domain join: give --domain D and the KDM file");
        return CLI_EXIT_USAGE;
    }
    if (!cli_parse_number("hsm domain join", "--domain", domain, 0, 254, &d))
        return CLI_EXIT_USAGE;
    if (!cli_read_whole("hsm domain join", path, kdm, sizeof(kdm), &n))
        return CLI_EXIT_FAIL;
    if ((t = cli_open_with_pin(store, "hsm domain join", &pin, &rc)) == NULL)
        return rc;
    span.p = kdm;
    span.n = n;
    if (sks_client_hsm_domain_join(t, cli_span(pin), (uint8_t)d, span, &out, &e)) {
        print_domain(&out);
        printf("uid:         ");
        print_hex(out.uid, out.uid_len);
        printf("\n");
        rc = CLI_EXIT_OK;
    } else {
        cli_client_error("hsm domain join", &e);
        rc = CLI_EXIT_FAIL;
    }
    t->close(t);
    return rc;
}

/* ---- kdm issue ---- */

/* One BER-TLV (tag of 1-2 bytes, length up to 0xFFFF) appended to b: card data, not wire data. */
static void put_tlv(sks_buf *b, unsigned tag, const uint8_t *v, size_t n)
{
    uint8_t head[5];
    size_t h = 0;

    if (tag > 0xFF)
        head[h++] = (uint8_t)(tag >> 8);
    head[h++] = (uint8_t)tag;
    if (n < 0x80) {
        head[h++] = (uint8_t)n;
    } else if (n <= 0xFF) {
        head[h++] = 0x81;
        head[h++] = (uint8_t)n;
    } else {
        head[h++] = 0x82;
        head[h++] = (uint8_t)(n >> 8);
        head[h++] = (uint8_t)n;
    }
    sks_buf_put(b, head, h);
    sks_buf_put(b, v, n);
}

/* The signer key through its provider (sks: URIs through the sks provider). */
static EVP_PKEY *load_signer(const cli_store *store, const char *uri)
{
    char err[512];
    OSSL_STORE_CTX *s;
    EVP_PKEY *key = NULL;

    if (strncmp(uri, "sks:", 4) != 0) {
        if ((key = files_read_key(uri, NULL, err, sizeof(err))) == NULL)
            cli_error("hsm kdm issue: --signer: %s", err);
        return key;
    }
    if (secure_getenv("SKS_DEVICE") == NULL && secure_getenv("SKS_STORE") == NULL)
        setenv("SKS_STORE", store->db_path, 1);
    if (store->master_path[0] != '\0' && secure_getenv("SKS_MASTER_KEY") == NULL)
        setenv("SKS_MASTER_KEY", store->master_path, 1);
    if (!cli_load_providers()) {
        cli_error("hsm kdm issue: cannot load the sks provider (set OPENSSL_MODULES to the directory holding "
                  "sks.so)");
        return NULL;
    }
    if ((s = OSSL_STORE_open(uri, UI_OpenSSL(), NULL, NULL, NULL)) != NULL
        && OSSL_STORE_expect(s, OSSL_STORE_INFO_PKEY) == 1)
        while (key == NULL && !OSSL_STORE_eof(s)) {
            OSSL_STORE_INFO *info = OSSL_STORE_load(s);
            if (info == NULL)
                break;
            if (OSSL_STORE_INFO_get_type(info) == OSSL_STORE_INFO_PKEY)
                key = OSSL_STORE_INFO_get1_PKEY(info);
            OSSL_STORE_INFO_free(info);
        }
    OSSL_STORE_close(s);
    if (key == NULL) {
        cli_error("hsm kdm issue: no private key at the --signer URI");
        ERR_print_errors_fp(stderr);
    }
    return key;
}

/* ECDSA-SHA256 by key over data, as r ‖ s of FIELD_BYTES each (CV form). */
static int sign_raw(EVP_PKEY *key, const uint8_t *data, size_t n, uint8_t out[2 * FIELD_BYTES])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char der[160];
    const unsigned char *q = der;
    size_t len = sizeof(der);
    ECDSA_SIG *sig = NULL;
    int ok;

    ok = md != NULL && EVP_DigestSignInit_ex(md, NULL, "SHA256", NULL, NULL, key, NULL) == 1
         && EVP_DigestSign(md, der, &len, data, n) == 1 && (sig = d2i_ECDSA_SIG(NULL, &q, (long)len)) != NULL
         && BN_bn2binpad(ECDSA_SIG_get0_r(sig), out, FIELD_BYTES) == FIELD_BYTES
         && BN_bn2binpad(ECDSA_SIG_get0_s(sig), out + FIELD_BYTES, FIELD_BYTES) == FIELD_BYTES;
    ECDSA_SIG_free(sig);
    EVP_MD_CTX_free(md);
    return ok;
}

/* 7F49 { 06 id-TA-ECDSA-SHA-256, 81 p, 82 a, 83 b, 84 G, 85 n, 86 point, 87 h } of the signer. */
static int signer_public_key(EVP_PKEY *key, sks_buf *out)
{
    static const uint8_t OID_ECDSA_SHA256[] = { 0x04, 0x00, 0x7F, 0x00, 0x07, 0x02, 0x02, 0x02, 0x02, 0x03 };
    uint8_t point[1 + 2 * FIELD_BYTES], num[FIELD_BYTES], g[1 + 2 * FIELD_BYTES];
    char group[64];
    size_t plen = 0;
    BIGNUM *p = BN_new(), *a = BN_new(), *b = BN_new();
    EC_GROUP *grp = NULL;
    sks_buf t;
    int ok;
    uint8_t h = 1;

    sks_buf_init(&t);
    ok = p && a && b && EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), NULL)
         && strcmp(group, "brainpoolP256r1") == 0
         && EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof(point), &plen)
         && plen == sizeof(point) && (grp = EC_GROUP_new_by_curve_name(NID_brainpoolP256r1)) != NULL
         && EC_GROUP_get_curve(grp, p, a, b, NULL)
         && EC_POINT_point2oct(grp, EC_GROUP_get0_generator(grp), POINT_CONVERSION_UNCOMPRESSED, g, sizeof(g), NULL)
                == sizeof(g);
    if (ok) {
        put_tlv(&t, 0x06, OID_ECDSA_SHA256, sizeof(OID_ECDSA_SHA256));
        BN_bn2binpad(p, num, FIELD_BYTES);
        put_tlv(&t, 0x81, num, FIELD_BYTES);
        BN_bn2binpad(a, num, FIELD_BYTES);
        put_tlv(&t, 0x82, num, FIELD_BYTES);
        BN_bn2binpad(b, num, FIELD_BYTES);
        put_tlv(&t, 0x83, num, FIELD_BYTES);
        put_tlv(&t, 0x84, g, sizeof(g));
        BN_bn2binpad(EC_GROUP_get0_order(grp), num, FIELD_BYTES);
        put_tlv(&t, 0x85, num, FIELD_BYTES);
        put_tlv(&t, 0x86, point, sizeof(point));
        put_tlv(&t, 0x87, &h, 1);
        put_tlv(out, 0x7F49, t.data, t.len);
    }
    EC_GROUP_free(grp);
    BN_free(p);
    BN_free(a);
    BN_free(b);
    sks_buf_free(&t);
    return ok && !out->failed;
}

/* The group signer's self-signed CV request (67 { 7F21 {7F4E, 5F37}, 42, 5F37 }): how the
 * membership names the key that signed it (its X is the domain UID). */
static int signer_request(EVP_PKEY *key, sks_buf *out)
{
    static const uint8_t CPI = 0;
    uint8_t sig[2 * FIELD_BYTES];
    sks_buf body, inner, cert, signed_part;
    int ok = 0;

    sks_buf_init(&body);
    sks_buf_init(&inner);
    sks_buf_init(&cert);
    sks_buf_init(&signed_part);
    put_tlv(&inner, 0x5F29, &CPI, 1);
    put_tlv(&inner, 0x42, (const uint8_t *)SIGNER_CHR, strlen(SIGNER_CHR));
    if (!signer_public_key(key, &inner)) {
        cli_error("hsm kdm issue: the --signer key must be a brainpoolP256r1 key");
        goto done;
    }
    put_tlv(&inner, 0x5F20, (const uint8_t *)SIGNER_CHR, strlen(SIGNER_CHR));
    put_tlv(&body, 0x7F4E, inner.data, inner.len);
    if (!sign_raw(key, body.data, body.len, sig))
        goto sign_failed;
    sks_buf_reset(&inner);
    sks_buf_put(&inner, body.data, body.len);
    put_tlv(&inner, 0x5F37, sig, sizeof(sig));
    put_tlv(&signed_part, 0x7F21, inner.data, inner.len);
    put_tlv(&signed_part, 0x42, (const uint8_t *)SIGNER_CHR, strlen(SIGNER_CHR));
    if (!sign_raw(key, signed_part.data, signed_part.len, sig))
        goto sign_failed;
    sks_buf_put(&cert, signed_part.data, signed_part.len);
    put_tlv(&cert, 0x5F37, sig, sizeof(sig));
    put_tlv(out, 0x67, cert.data, cert.len);
    ok = !out->failed;
    goto done;
sign_failed:
    cli_error("hsm kdm issue: the --signer key does not sign");
    ERR_print_errors_fp(stderr);
done:
    sks_buf_free(&body);
    sks_buf_free(&inner);
    sks_buf_free(&cert);
    sks_buf_free(&signed_part);
    return ok;
}

/* The device's verified public key (its X is what the membership signs) and the chain's two
 * certificates. */
static int device_identity(const uint8_t *chain, size_t n, const cli_list *root_files, EVP_PKEY **dev,
                           schsm_bytes *dev_cert, schsm_bytes *dica_cert)
{
    char chr[SCHSM_CVC_REF_MAX + 1];
    schsm_cvc c;
    size_t used = 0;

    /* the same check as xkek derive's: up to a known root, every certificate in date */
    if (!cli_hsm_verified_device("hsm kdm issue --device-id", chain, n, root_files, dev, chr))
        return 0;
    if (!schsm_cvc_parse(chain, n, &c, &used, NULL, 0)) {
        EVP_PKEY_free(*dev);
        *dev = NULL;
        return 0;
    }
    dev_cert->p = chain;
    dev_cert->n = used;
    dica_cert->p = chain + used;
    dica_cert->n = n - used;
    return 1;
}

static int kdm_issue(cli_store *store, int argc, char **argv)
{
    static const uint8_t OID_KDM[] = { 0x2B, 0x06, 0x01, 0x04, 0x01, 0x81, 0xC3, 0x1F, 0x04, 0x02, 0x01 };
    static uint8_t chain[MAX_FILE];
    const char *signer = NULL, *device_id = NULL, *out = NULL;
    cli_list root_files;
    const cli_opt opts[] = { { "--signer", OPT_VALUE, &signer },
                             { "--device-id", OPT_VALUE, &device_id },
                             { "--out", OPT_VALUE, &out },
                             { "--root", OPT_LIST, &root_files } };
    uint8_t point[1 + 2 * 66], tbs[1 + 66], sig[2 * FIELD_BYTES];
    EVP_PKEY *dev = NULL, *key = NULL;
    schsm_bytes dev_cert, dica_cert;
    sks_buf request, content, kdm;
    size_t n, plen = 0;
    char err[512];
    int rc;

    memset(&root_files, 0, sizeof(root_files));
    if ((rc = cli_parse_command("hsm kdm issue", argc, argv, 3, opts, 4, USAGE)) != CLI_CONTINUE)
        return rc;
    if (signer == NULL || device_id == NULL || out == NULL) {
        cli_error("hsm kdm issue: give --signer KEY, --device-id FILE and --out KDM");
        return CLI_EXIT_USAGE;
    }
    if (!cli_read_whole("hsm kdm issue", device_id, chain, sizeof(chain), &n)
        || !device_identity(chain, n, &root_files, &dev, &dev_cert, &dica_cert))
        return CLI_EXIT_FAIL;
    rc = CLI_EXIT_FAIL;
    sks_buf_init(&request);
    sks_buf_init(&content);
    sks_buf_init(&kdm);
    if (!EVP_PKEY_get_octet_string_param(dev, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof(point), &plen) || plen < 3
        || point[0] != 0x04) {
        cli_error("hsm kdm issue: the device key is not an uncompressed EC point");
        goto done;
    }
    /* the membership signs 54 ‖ X of the device authentication key */
    tbs[0] = 0x54;
    memcpy(tbs + 1, point + 1, (plen - 1) / 2);
    if ((key = load_signer(store, signer)) == NULL || !signer_request(key, &request))
        goto done;
    if (!sign_raw(key, tbs, 1 + (plen - 1) / 2, sig)) {
        cli_error("hsm kdm issue: the --signer key does not sign");
        goto done;
    }
    put_tlv(&content, 0x06, OID_KDM, sizeof(OID_KDM));
    put_tlv(&content, 0x61, dica_cert.p, dica_cert.n);
    put_tlv(&content, 0x62, dev_cert.p, dev_cert.n);
    put_tlv(&content, 0x63, request.data, request.len);
    put_tlv(&content, 0x54, sig, sizeof(sig));
    put_tlv(&kdm, 0x30, content.data, content.len);
    if (kdm.failed || !files_write_new(out, kdm.data, kdm.len, err, sizeof(err))) {
        cli_error("hsm kdm issue: --out: %s", kdm.failed ? "out of memory" : err);
        goto done;
    }
    printf("wrote %s: key domain membership for the device key X ", out);
    {
        size_t i;
        for (i = 1; i < 1 + (plen - 1) / 2; i++)
            printf("%02x", point[i]);
    }
    printf("\nuid:         ");
    {
        uint8_t sp[1 + 2 * FIELD_BYTES];
        size_t splen = 0;
        if (EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_PUB_KEY, sp, sizeof(sp), &splen))
            print_hex(sp + 1, FIELD_BYTES);
    }
    printf("\n");
    rc = CLI_EXIT_OK;
done:
    EVP_PKEY_free(key);
    EVP_PKEY_free(dev);
    sks_buf_free(&request);
    sks_buf_free(&content);
    sks_buf_free(&kdm);
    return rc;
}

int cli_hsm_domain(cli_store *store, int argc, char **argv)
{
    const char *sub = argc > 2 ? argv[2] : "";

    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0 || sub[0] == 0) {
        fputs(USAGE, sub[0] ? stdout : stderr);
        return sub[0] ? CLI_EXIT_OK : CLI_EXIT_USAGE;
    }
    if (strcmp(argv[1], "kdm") == 0) {
        if (strcmp(sub, "issue") == 0)
            return kdm_issue(store, argc, argv);
        cli_error("hsm kdm: give the subcommand issue (see sks hsm domain --help)");
        return CLI_EXIT_USAGE;
    }
    if (strcmp(sub, "status") == 0)
        return domain_status(store, argc, argv);
    if (strcmp(sub, "create") == 0)
        return domain_create(store, argc, argv);
    if (strcmp(sub, "join") == 0)
        return domain_join(store, argc, argv);
    cli_error("hsm domain: give a subcommand: status, create or join (see sks hsm domain --help)");
    return CLI_EXIT_USAGE;
}
