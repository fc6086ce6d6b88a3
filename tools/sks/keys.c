/* The store as the commands see it: opening it, finding keys, describing them. */
#include "cli.h"
#include "files.h"

#include <stdio.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>

sks_transport *cli_open(const cli_store *store, const char *cmd)
{
    char err[512] = "";
    sks_transport *t = sks_transport_open(store->device, store->loc.master_key_path, err, sizeof(err));

    if (t == NULL)
        cli_error("%s: cannot open the device %s: %s", cmd, store->device, err[0] ? err : "out of memory");
    return t;
}

sks_transport *cli_open_with_pin(const cli_store *store, const char *cmd, const char **pin, int *rc)
{
    sks_transport *t;

    *rc = CLI_EXIT_USAGE;
    if (!cli_need_secret(cmd, "--pin", "the card's user PIN", 0, pin))
        return NULL;
    *rc = CLI_EXIT_FAIL;
    if ((t = cli_open(store, cmd)) != NULL)
        *rc = CLI_EXIT_OK;
    return t;
}

int cli_read_whole(const char *cmd, const char *path, uint8_t *buf, size_t size, size_t *n)
{
    char err[600];

    if (files_read_whole(path, buf, size, n, err, sizeof(err)))
        return 1;
    cli_error("%s: %s", cmd, err);
    return 0;
}

void cli_client_error(const char *cmd, const sks_client_error *e)
{
    cli_error("%s: %s (%s)", cmd, e->message, sks_client_status_name(e->status));
}

/* Calls fn for every provisioned key until it returns 0 (stop). 0 if the device failed. */
static int for_each_key(sks_transport *t, const char *cmd,
                        int (*fn)(void *ctx, uint32_t handle, const sks_key_attributes *a), void *ctx)
{
    sks_client_error e;
    uint32_t handle = 0;

    for (;;) {
        sks_key_attributes a;
        int r;

        if (!sks_client_enumerate_keys(t, handle, &handle, NULL, &e)) {
            cli_client_error(cmd, &e);
            return 0;
        }
        if (handle == 0)
            return 1;
        if (!sks_client_get_key_attributes(t, handle, &a, &e)) {
            cli_client_error(cmd, &e);
            return 0;
        }
        r = fn(ctx, handle, &a);
        sks_key_attributes_free(&a);
        if (r == 0)
            return 1;
    }
}

typedef struct {
    const char *name;
    uint32_t found;
    unsigned matches;
} name_search;

static int match_name(void *ctx, uint32_t handle, const sks_key_attributes *a)
{
    name_search *s = ctx;

    if (strcmp(a->friendly_name, s->name) == 0) {
        if (s->matches++ == 0)
            s->found = handle;
    }
    return 1;
}

int cli_name_taken(sks_transport *t, const char *cmd, const char *name, int *taken)
{
    name_search s = { name, 0, 0 };

    if (!for_each_key(t, cmd, match_name, &s))
        return 0;
    *taken = s.matches > 0;
    return 1;
}

typedef struct {
    const uint8_t *der;
    size_t len;
    uint32_t found;
    char *name;
} cert_search;

static int match_certificate(void *ctx, uint32_t handle, const sks_key_attributes *a)
{
    cert_search *s = ctx;
    const sks_bytes *ee = a->certificates.count ? &a->certificates.items[0] : NULL;

    if (ee == NULL || ee->len != s->len || memcmp(ee->data, s->der, s->len) != 0)
        return 1;
    s->found = handle;
    s->name = OPENSSL_strdup(a->friendly_name);
    return 0;
}

int cli_certificate_taken(sks_transport *t, const char *cmd, X509 *cert)
{
    unsigned char *der = NULL;
    int len = i2d_X509(cert, &der);
    cert_search s = { der, len > 0 ? (size_t)len : 0, 0, NULL };
    int ok = len > 0 && for_each_key(t, cmd, match_certificate, &s);

    if (ok && s.found != 0)
        cli_error("%s: this certificate already belongs to key %u ('%s'); the device keeps one key per certificate",
                  cmd, s.found, s.name ? s.name : "");
    OPENSSL_free(s.name);
    OPENSSL_free(der);
    return !ok || s.found != 0;
}

int cli_check_auth(sks_transport *t, const char *cmd, uint32_t handle, int for_export, const char **auth)
{
    sks_key_protection_info p;
    sks_client_error e;
    uint8_t prot;

    if (*auth != NULL)
        return 1;
    if (!sks_client_get_key_protection_info(t, handle, &p, &e)) {
        cli_client_error(cmd, &e);
        return 0;
    }
    prot = for_export ? p.export_protection : p.delete_protection;
    if (prot == SKS_PROTECT_PIN || prot == SKS_PROTECT_PUK)
        return cli_need_secret(cmd, "--auth", prot == SKS_PROTECT_PIN ? "PIN of the key" : "PUK of the key", 0, auth);
    return 1;
}

int cli_find_key(sks_transport *t, const char *cmd, const char *name, const char *handle, uint32_t *out)
{
    name_search s = { name, 0, 0 };

    if ((name == NULL) == (handle == NULL)) {
        cli_error("%s: give the key with exactly one of --name or --handle", cmd);
        return 0;
    }
    if (handle != NULL) {
        unsigned long h;
        if (!cli_parse_number(cmd, "--handle", handle, 1, 0xFFFFFFFFul, &h))
            return 0;
        *out = (uint32_t)h;
        return 1;
    }
    if (!for_each_key(t, cmd, match_name, &s))
        return 0;
    if (s.matches == 0) {
        cli_error("%s: no key named '%s' (see sks list)", cmd, name);
        return 0;
    }
    if (s.matches > 1) {
        cli_error("%s: %u keys are named '%s'; choose one with --handle (see sks list)", cmd, s.matches, name);
        return 0;
    }
    *out = s.found;
    return 1;
}

int cli_device_supports(sks_transport *t, const char *cmd, const char *uri, const char *name)
{
    sks_device_info info;
    sks_client_error e;
    size_t i;
    int found = 0;

    if (!sks_client_get_device_info(t, &info, &e)) {
        cli_client_error(cmd, &e);
        return 0;
    }
    for (i = 0; i < info.algorithms.count; i++)
        found |= strcmp(info.algorithms.items[i], uri) == 0;
    sks_device_info_free(&info);
    if (!found)
        cli_error("%s: the device does not support %s (%s)", cmd, name, uri);
    return found;
}

/* ------------------------------------------------------------------ descriptions */

void cli_algorithm_name(EVP_PKEY *pub, char *buf, size_t n)
{
    static const struct {
        const char *group, *name;
    } CURVES[] = {
        { "prime256v1", "P-256" },
        { "secp384r1", "P-384" },
        { "secp521r1", "P-521" },
    };
    char group[64];
    size_t len = 0, i;

    switch (EVP_PKEY_get_base_id(pub)) {
    case EVP_PKEY_RSA:
        snprintf(buf, n, "RSA-%d", EVP_PKEY_get_bits(pub));
        return;
    case EVP_PKEY_ED25519:
        snprintf(buf, n, "Ed25519");
        return;
    case EVP_PKEY_ED448:
        snprintf(buf, n, "Ed448");
        return;
    case EVP_PKEY_EC:
        if (EVP_PKEY_get_utf8_string_param(pub, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), &len) != 1)
            break;
        for (i = 0; i < sizeof(CURVES) / sizeof(CURVES[0]); i++)
            if (strcmp(group, CURVES[i].group) == 0) {
                snprintf(buf, n, "%s", CURVES[i].name);
                return;
            }
        snprintf(buf, n, "%s", group); /* brainpoolP256r1 etc. are named as OpenSSL names them */
        return;
    default:
        break;
    }
    snprintf(buf, n, "unknown");
}

void cli_fingerprint(const uint8_t *der, size_t n, char out[96])
{
    uint8_t md[32];
    unsigned int len = 0, i;

    out[0] = '\0';
    if (EVP_Digest(der, n, md, &len, EVP_sha256(), NULL) != 1)
        return;
    for (i = 0; i < len; i++)
        snprintf(out + 3 * i, 4, i + 1 < len ? "%02X:" : "%02X", md[i]);
}

static const char *const APP_USAGE[] = { "signature", "authentication", "encryption", "universal" };

const char *cli_app_usage_name(uint8_t app_usage)
{
    return app_usage < 4 ? APP_USAGE[app_usage] : "unknown";
}

int cli_app_usage_parse(const char *s, uint8_t *out)
{
    uint8_t i;

    for (i = 0; i < 4; i++)
        if (strcmp(s, APP_USAGE[i]) == 0) {
            *out = i;
            return 1;
        }
    return 0;
}

/* RFC 2253 form, but UTF-8 kept as is (not \XX-escaped) so JSON shows real names. */
static char *subject_string(X509 *x)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *data = NULL, *s = NULL;
    long n;

    if (b == NULL)
        return NULL;
    if (X509_NAME_print_ex(b, X509_get_subject_name(x), 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) >= 0
        && (n = BIO_get_mem_data(b, &data)) >= 0) {
        s = OPENSSL_malloc((size_t)n + 1);
        if (s != NULL) {
            memcpy(s, data, (size_t)n);
            s[n] = '\0';
        }
    }
    BIO_free(b);
    return s;
}

/* Algorithm, fingerprint and subject from the end-entity certificate. */
static void describe_certificate(cli_key_info *k)
{
    const sks_bytes *ee = &k->attr.certificates.items[0];
    const unsigned char *q = ee->data;
    X509 *x = d2i_X509(NULL, &q, (long)ee->len);
    EVP_PKEY *pub = x ? X509_get0_pubkey(x) : NULL;

    cli_fingerprint(ee->data, ee->len, k->sha256);
    if (k->attr.symmetric_key_length > 0)
        snprintf(k->algorithm, sizeof(k->algorithm), "symmetric-%u", k->attr.symmetric_key_length * 8u);
    else if (pub != NULL)
        cli_algorithm_name(pub, k->algorithm, sizeof(k->algorithm));
    if (x != NULL)
        k->subject = subject_string(x);
    X509_free(x);
}

int cli_key_info_load(sks_transport *t, const char *cmd, uint32_t handle, cli_key_info *k)
{
    sks_client_error e;

    memset(k, 0, sizeof(*k));
    k->handle = handle;
    snprintf(k->algorithm, sizeof(k->algorithm), "unknown");
    if (!sks_client_get_key_attributes(t, handle, &k->attr, &e)
        || !sks_client_get_key_protection_info(t, handle, &k->prot, &e)) {
        cli_client_error(cmd, &e);
        cli_key_info_free(k);
        return 0;
    }
    if (k->attr.certificates.count > 0)
        describe_certificate(k);
    if (k->subject == NULL)
        k->subject = OPENSSL_zalloc(1);
    if (k->subject == NULL) {
        cli_error("%s: out of memory", cmd);
        cli_key_info_free(k);
        return 0;
    }
    return 1;
}

void cli_key_info_free(cli_key_info *k)
{
    sks_key_attributes_free(&k->attr);
    OPENSSL_free(k->subject);
    k->subject = NULL;
}
