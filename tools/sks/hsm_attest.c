/*
 * sks hsm attest: what a SmartCard-HSM proves (docs/smartcard-hsm-keymgmt.md, "Attestation").
 * The card's EF.C_DevAut (device CV certificate ‖ DICA certificate) is verified up to a root
 * this program knows (the built-in scheme roots, plus --root files); then each key's
 * generation response (the authenticated CV request the card answered with) is checked for the
 * card's outer signature made with the device key. Everything is verified here, on the host.
 */
#include "cli.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "files.h"
#include "schsm/keymgmt_formats.h"

#define MAX_ROOTS 16
#define MAX_ROOT_FILE 4096

static const char USAGE[] =
    "usage: sks hsm attest [--root FILE]... [--out FILE] [--chain FILE]\n"
    "  Verifies the SmartCard-HSM's device certificate chain (EF 2F02: device certificate and\n"
    "  DICA certificate) up to a known root, then which keys the card proves it generated.\n"
    "  --root FILE   also trust this CV root certificate (e.g. sks-vhsm --export-root);\n"
    "                the built-in ones are the SmartCard-HSM production and test roots\n"
    "  --out FILE    write the chain as read from the card to FILE (new file)\n"
    "  --chain FILE  verify the chain in FILE (written by --out) instead of a card's\n"
    "  Prints \"chain: verified\", \"chain: unattested\" (no known root; exit 0) or\n"
    "  \"chain: INVALID\" (exit 1), and per key \"attested\", \"no generation response\" or\n"
    "  \"NOT attested\" (exit 1).\n";

typedef struct {
    schsm_root roots[MAX_ROOTS + 2];
    uint8_t files[MAX_ROOTS][MAX_ROOT_FILE];
    char names[MAX_ROOTS][SCHSM_CVC_REF_MAX + 1];
    size_t n;
} root_set;

static int read_whole(const char *path, uint8_t *buf, size_t size, size_t *n)
{
    FILE *f = fopen(path, "rb");

    if (f == NULL) {
        cli_error("hsm attest: cannot open %s: %s", path, strerror(errno));
        return 0;
    }
    *n = fread(buf, 1, size, f);
    if (*n == size || ferror(f)) {
        cli_error("hsm attest: %s is not a CV certificate file (larger than %zu bytes)", path, size - 1);
        fclose(f);
        return 0;
    }
    fclose(f);
    return 1;
}

/* The built-in roots plus each --root file, named by its CHR. */
static int load_roots(const cli_list *files, root_set *rs)
{
    const schsm_root *builtin;
    size_t nb, i, len;
    schsm_cvc c;
    char err[256];

    builtin = schsm_builtin_roots(&nb);
    for (i = 0; i < nb && i < 2; i++)
        rs->roots[rs->n++] = builtin[i];
    for (i = 0; i < files->count && i < MAX_ROOTS; i++) {
        if (!read_whole(files->items[i], rs->files[i], MAX_ROOT_FILE, &len))
            return 0;
        if (!schsm_cvc_parse(rs->files[i], len, &c, NULL, err, sizeof(err)) || c.authenticated) {
            cli_error("hsm attest: --root %s: not a CV certificate (%s)", files->items[i], err);
            return 0;
        }
        memcpy(rs->names[i], c.chr, sizeof(rs->names[i]));
        rs->roots[rs->n].name = rs->names[i];
        rs->roots[rs->n].cert = rs->files[i];
        rs->roots[rs->n].len = len;
        rs->n++;
    }
    return 1;
}

/* "YYMMDD" of today (UTC), comparable with a CV certificate's dates as strings. */
static void today_yymmdd(char out[7])
{
    time_t now = time(NULL);
    struct tm tm;
    char buf[32];

    gmtime_r(&now, &tm);
    snprintf(buf, sizeof(buf), "%02u%02u%02u", (unsigned)(tm.tm_year % 100) % 100u, (unsigned)(tm.tm_mon + 1) % 100u,
             (unsigned)tm.tm_mday % 100u);
    memcpy(out, buf, 6);
    out[6] = 0;
}

/* The signatures say nothing about time: a certificate past its expiry date (or not yet
 * effective) makes the chain invalid all the same. */
static int chain_in_date(const uint8_t *chain, size_t n, char *why, size_t whylen)
{
    char today[7], err[256];
    size_t used = 0, off = 0;
    schsm_cvc c;

    today_yymmdd(today);
    while (off < n && schsm_cvc_parse(chain + off, n - off, &c, &used, err, sizeof(err))) {
        if (c.expiry[0] && strcmp(c.expiry, today) < 0) {
            snprintf(why, whylen, "certificate %s expired on 20%.2s-%.2s-%.2s", c.chr, c.expiry, c.expiry + 2,
                     c.expiry + 4);
            return 0;
        }
        if (c.effective[0] && strcmp(c.effective, today) > 0) {
            snprintf(why, whylen, "certificate %s is not valid before 20%.2s-%.2s-%.2s", c.chr, c.effective,
                     c.effective + 2, c.effective + 4);
            return 0;
        }
        off += used;
    }
    return 1;
}

/* The CAR of the DICA certificate: the root the chain names. */
static void chain_root_name(const uint8_t *chain, size_t n, char out[SCHSM_CVC_REF_MAX + 1])
{
    schsm_cvc c;
    size_t used = 0;

    out[0] = 0;
    if (schsm_cvc_parse(chain, n, &c, &used, NULL, 0) && used < n
        && schsm_cvc_parse(chain + used, n - used, &c, NULL, NULL, 0))
        memcpy(out, c.car, SCHSM_CVC_REF_MAX + 1);
}

/* The device key's OID (for the hash of the outer signatures): from the device certificate. */
static int device_key_oid(const uint8_t *chain, size_t n, schsm_cvc *dev)
{
    return schsm_cvc_parse(chain, n, dev, NULL, NULL, 0);
}

/* Prints the chain's verdict; *device_key is set when it is verified. Returns 0 if invalid. */
static int verify_chain(const uint8_t *chain, size_t n, const root_set *rs, EVP_PKEY **device_key)
{
    char err[512], chr[SCHSM_CVC_REF_MAX + 1] = "", root[SCHSM_CVC_REF_MAX + 1];
    schsm_chain_status st;

    st = schsm_cvc_verify_chain(chain, n, rs->roots, rs->n, device_key, chr, err, sizeof(err));
    if (st == SCHSM_CHAIN_VERIFIED && !chain_in_date(chain, n, err, sizeof(err))) {
        EVP_PKEY_free(*device_key);
        *device_key = NULL;
        st = SCHSM_CHAIN_INVALID;
    }
    switch (st) {
    case SCHSM_CHAIN_VERIFIED:
        chain_root_name(chain, n, root);
        printf("device:      %s\nchain:       verified (root %s)\n", chr, root);
        return 1;
    case SCHSM_CHAIN_UNKNOWN_ROOT:
        printf("chain:       unattested (%s)\n", err);
        return 1;
    default:
        printf("chain:       INVALID (%s)\n", err);
        return 0;
    }
}

/* One key: 1 attested or nothing to check, 0 when the card's response does not verify. */
static int attest_key(sks_transport *t, uint32_t handle, EVP_PKEY *device, const schsm_bytes *oid)
{
    sks_client_error e;
    sks_bytes req;
    schsm_cvc c;
    char err[512];
    int ok = 1;

    if (!sks_client_hsm_key_generation_response(t, handle, &req, &e)) {
        cli_client_error("hsm attest", &e);
        return 0;
    }
    printf("key %u:       ", handle);
    memset(&c, 0, sizeof(c));
    err[0] = 0;
    if (req.len == 0)
        printf("no generation response (the card keeps none, e.g. a certificate replaced it)\n");
    else if (!schsm_cvc_parse(req.data, req.len, &c, NULL, err, sizeof(err)) || !c.authenticated) {
        printf("NOT attested (%s)\n", err[0] ? err : "not an authenticated CV request");
        ok = 0;
    } else if (device == NULL)
        printf("not attested (the device chain is not verified)\n");
    else if (!schsm_cvc_verify_outer(&c, device, oid, err, sizeof(err))) {
        printf("NOT attested (%s)\n", err);
        ok = 0;
    } else
        printf("attested (generated on the card, %s)\n", c.chr);
    OPENSSL_free(req.data);
    return ok;
}

static int attest_keys(sks_transport *t, EVP_PKEY *device, const schsm_bytes *oid)
{
    sks_client_error e;
    uint32_t handle = 0;
    int ok = 1;

    for (;;) {
        if (!sks_client_enumerate_keys(t, handle, &handle, NULL, &e)) {
            cli_client_error("hsm attest", &e);
            return 0;
        }
        if (handle == 0)
            return ok;
        ok &= attest_key(t, handle, device, oid);
    }
}

static int write_chain(const char *path, const sks_bytes *chain)
{
    char err[256];

    if (!files_write_new(path, chain->data, chain->len, err, sizeof(err))) {
        cli_error("hsm attest: --out: %s", err);
        return 0;
    }
    return 1;
}

int cli_hsm_verified_device(const char *cmd, const uint8_t *chain, size_t n, const cli_list *root_files,
                            EVP_PKEY **device_key, char chr[SCHSM_CVC_REF_MAX + 1])
{
    static root_set rs;
    char err[512];
    schsm_chain_status st;

    memset(&rs, 0, sizeof(rs));
    *device_key = NULL;
    if (!load_roots(root_files, &rs))
        return 0;
    st = schsm_cvc_verify_chain(chain, n, rs.roots, rs.n, device_key, chr, err, sizeof(err));
    if (st == SCHSM_CHAIN_VERIFIED && chain_in_date(chain, n, err, sizeof(err)))
        return 1;
    EVP_PKEY_free(*device_key);
    *device_key = NULL;
    cli_error("%s: the peer's device chain is %s: %s%s", cmd, st == SCHSM_CHAIN_UNKNOWN_ROOT ? "unattested" : "invalid",
              err, st == SCHSM_CHAIN_UNKNOWN_ROOT ? " (give its root with --root)" : "");
    return 0;
}

int cli_hsm_attest(cli_store *store, int argc, char **argv)
{
    static root_set rs;
    cli_list root_files;
    const char *out = NULL, *chain_file = NULL;
    const cli_opt opts[] = { { "--root", OPT_LIST, &root_files },
                             { "--out", OPT_VALUE, &out },
                             { "--chain", OPT_VALUE, &chain_file } };
    static uint8_t file[8192];
    sks_client_error e;
    sks_transport *t = NULL;
    sks_bytes chain = { NULL, 0 };
    EVP_PKEY *device = NULL;
    schsm_cvc dev;
    size_t n;
    int rc;

    memset(&root_files, 0, sizeof(root_files));
    if ((rc = cli_parse_command("hsm attest", argc, argv, 2, opts, 3, USAGE)) != CLI_CONTINUE)
        return rc;
    if (!load_roots(&root_files, &rs))
        return CLI_EXIT_USAGE;
    if (chain_file != NULL) {
        if (!read_whole(chain_file, file, sizeof(file), &n))
            return CLI_EXIT_FAIL;
        return verify_chain(file, n, &rs, &device) ? (EVP_PKEY_free(device), CLI_EXIT_OK) : CLI_EXIT_FAIL;
    }
    if ((t = cli_open(store, "hsm attest")) == NULL)
        return CLI_EXIT_FAIL;
    rc = CLI_EXIT_FAIL;
    if (!sks_client_hsm_device_certificates(t, &chain, &e))
        cli_client_error("hsm attest", &e);
    else if (out == NULL || write_chain(out, &chain)) {
        int chain_ok = verify_chain(chain.data, chain.len, &rs, &device);
        int keys_ok = device_key_oid(chain.data, chain.len, &dev)
                      && attest_keys(t, device, &dev.key_oid);
        rc = chain_ok && keys_ok ? CLI_EXIT_OK : CLI_EXIT_FAIL;
    }
    EVP_PKEY_free(device);
    OPENSSL_free(chain.data);
    t->close(t);
    return rc;
}
