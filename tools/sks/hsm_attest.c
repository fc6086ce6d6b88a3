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
    "  \"chain: INVALID\" (exit 1), and per key \"attested\", \"unattested\" (signed by the\n"
    "  device key of a chain without a known root), \"no generation response\", \"not\n"
    "  attested\" (another device's response, e.g. of a key restored from its backup) or\n"
    "  \"NOT attested\" (its signature fails; exit 1).\n";

typedef struct {
    schsm_root roots[MAX_ROOTS + 2];
    uint8_t files[MAX_ROOTS][MAX_ROOT_FILE];
    char names[MAX_ROOTS][SCHSM_CVC_REF_MAX + 1];
    size_t n;
} root_set;

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
        if (!cli_read_whole("hsm attest", files->items[i], rs->files[i], MAX_ROOT_FILE, &len))
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

/* ---- the shared judgement: hsm attest, info --verify, list ---------------------------------- */

struct cli_attestation {
    sks_bytes chain;           /* EF.C_DevAut as the card keeps it */
    schsm_chain_status status; /* of the chain against the roots, dates included */
    char why[512];             /* the chain's reason when not verified */
    char root[SCHSM_CVC_REF_MAX + 1];
    int have_dev;              /* dev parsed (it points into chain) */
    schsm_cvc dev;
    /* verified: the device key; unknown root: the key the device certificate claims (nothing
     * vouches for it); NULL when the chain is invalid or the key unusable (dev_why says) */
    EVP_PKEY *device_key;
    char dev_why[512];
};

/* Judges a->chain against rs once: status, device certificate, device key. */
static void judge_chain(cli_attestation *a, const root_set *rs)
{
    const uint8_t *chain = a->chain.data;
    size_t n = a->chain.len;

    a->status = schsm_cvc_verify_chain(chain, n, rs->roots, rs->n, &a->device_key, NULL, a->why, sizeof(a->why));
    if (a->status == SCHSM_CHAIN_VERIFIED && !chain_in_date(chain, n, a->why, sizeof(a->why))) {
        EVP_PKEY_free(a->device_key);
        a->device_key = NULL;
        a->status = SCHSM_CHAIN_INVALID;
    }
    a->have_dev = schsm_cvc_parse(chain, n, &a->dev, NULL, NULL, 0) && !a->dev.authenticated;
    if (a->status == SCHSM_CHAIN_VERIFIED)
        chain_root_name(chain, n, a->root);
    else if (a->status == SCHSM_CHAIN_UNKNOWN_ROOT
             && !schsm_cvc_device_key_unverified(chain, n, &a->dev, &a->device_key, a->dev_why, sizeof(a->dev_why)))
        a->device_key = NULL;
}

int cli_attestation_open(sks_transport *t, const char *cmd, const cli_list *root_files, cli_attestation **out,
                         char *why, size_t whylen)
{
    static root_set rs;
    sks_client_error e;
    cli_attestation *a;

    *out = NULL;
    memset(&rs, 0, sizeof(rs));
    if (!load_roots(root_files, &rs))
        return 0;
    if ((a = OPENSSL_zalloc(sizeof(*a))) == NULL) {
        cli_error("%s: out of memory", cmd);
        return 0;
    }
    if (!sks_client_hsm_device_certificates(t, &a->chain, &e)) {
        OPENSSL_free(a);
        if (e.status < 0) { /* the link, not the device's answer */
            cli_client_error(cmd, &e);
            return 0;
        }
        snprintf(why, whylen, "%s (%s)", e.message, sks_client_status_name(e.status));
        return 1;
    }
    judge_chain(a, &rs);
    *out = a;
    return 1;
}

void cli_attestation_free(cli_attestation *a)
{
    if (a == NULL)
        return;
    EVP_PKEY_free(a->device_key);
    OPENSSL_free(a->chain.data);
    OPENSSL_free(a);
}

const char *cli_attest_word(cli_attest_verdict v)
{
    switch (v) {
    case CLI_ATTEST_YES:
        return "yes";
    case CLI_ATTEST_UNATTESTED:
        return "unattested";
    case CLI_ATTEST_NONE:
    case CLI_ATTEST_OTHER_DEVICE:
        return "no";
    default:
        return "INVALID";
    }
}

/* The verdict on one generation response req (bytes of CE<kid>; empty: none). */
static cli_attest_verdict judge_response(const cli_attestation *a, const sks_bytes *req, char *why, size_t whylen)
{
    schsm_cvc c;

    why[0] = 0;
    if (req->len == 0) {
        snprintf(why, whylen, "no generation response (the card keeps none: an imported, restored or unwrapped key, "
                              "or a certificate replaced it)");
        return CLI_ATTEST_NONE;
    }
    if (!schsm_cvc_parse(req->data, req->len, &c, NULL, why, whylen) || !c.authenticated) {
        if (!why[0])
            snprintf(why, whylen, "not an authenticated CV request");
        return CLI_ATTEST_INVALID;
    }
    if (a->status == SCHSM_CHAIN_INVALID || !a->have_dev) {
        snprintf(why, whylen, "the device chain is invalid: %s", a->why[0] ? a->why : "no device certificate");
        return CLI_ATTEST_INVALID;
    }
    if (a->device_key == NULL) {
        snprintf(why, whylen, "%s", a->dev_why);
        return CLI_ATTEST_INVALID;
    }
    switch (schsm_cvc_verify_generated(&c, a->device_key, &a->dev, why, whylen)) {
    case SCHSM_GEN_VERIFIED:
        break;
    case SCHSM_GEN_OTHER_DEVICE:
        return CLI_ATTEST_OTHER_DEVICE;
    default:
        return CLI_ATTEST_INVALID;
    }
    if (a->status == SCHSM_CHAIN_VERIFIED) {
        snprintf(why, whylen, "generated on the card, %s", c.chr);
        return CLI_ATTEST_YES;
    }
    snprintf(why, whylen, "generated by the card's device key %s, %s; its chain has no known root", a->dev.chr, c.chr);
    return CLI_ATTEST_UNATTESTED;
}

int cli_attestation_key(sks_transport *t, const char *cmd, const cli_attestation *a, uint32_t handle,
                        cli_attest_verdict *v, char *why, size_t whylen)
{
    sks_client_error e;
    sks_bytes req = { NULL, 0 };

    if (!sks_client_hsm_key_generation_response(t, handle, &req, &e)) {
        cli_client_error(cmd, &e);
        return 0;
    }
    *v = judge_response(a, &req, why, whylen);
    OPENSSL_free(req.data);
    return 1;
}

/* "chain: ..." as hsm attest prints it; 0 if the chain is invalid. */
static int print_chain(const cli_attestation *a)
{
    if (a->have_dev && a->status != SCHSM_CHAIN_INVALID)
        printf("device:      %s\n", a->dev.chr);
    switch (a->status) {
    case SCHSM_CHAIN_VERIFIED:
        printf("chain:       verified (root %s)\n", a->root);
        return 1;
    case SCHSM_CHAIN_UNKNOWN_ROOT:
        printf("chain:       unattested (%s)\n", a->why);
        return 1;
    default:
        printf("chain:       INVALID (%s)\n", a->why);
        return 0;
    }
}

static const char *verdict_text(cli_attest_verdict v)
{
    switch (v) {
    case CLI_ATTEST_YES:
        return "attested";
    case CLI_ATTEST_UNATTESTED:
        return "unattested";
    case CLI_ATTEST_NONE:
        return "";
    case CLI_ATTEST_OTHER_DEVICE:
        return "not attested";
    default:
        return "NOT attested";
    }
}

int cli_attestation_report(sks_transport *t, const char *cmd, const cli_attestation *a)
{
    sks_client_error e;
    uint32_t handle = 0;
    int ok = print_chain(a);

    for (;;) {
        cli_attest_verdict v;
        char why[600];

        if (!sks_client_enumerate_keys(t, handle, &handle, NULL, &e)) {
            cli_client_error(cmd, &e);
            return CLI_EXIT_FAIL;
        }
        if (handle == 0)
            return ok ? CLI_EXIT_OK : CLI_EXIT_FAIL;
        if (!cli_attestation_key(t, cmd, a, handle, &v, why, sizeof(why)))
            return CLI_EXIT_FAIL;
        printf("key %u:       %s%s%s%s\n", handle, verdict_text(v), v == CLI_ATTEST_NONE ? "" : " (", why,
               v == CLI_ATTEST_NONE ? "" : ")");
        if (v == CLI_ATTEST_INVALID)
            ok = 0;
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
    cli_error("%s: the device chain is %s: %s%s", cmd, st == SCHSM_CHAIN_UNKNOWN_ROOT ? "unattested" : "invalid",
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
    static cli_attestation offline;
    static uint8_t file[8192];
    cli_attestation *a = NULL;
    sks_transport *t = NULL;
    char why[512];
    size_t n;
    int rc;

    memset(&root_files, 0, sizeof(root_files));
    if ((rc = cli_parse_command("hsm attest", argc, argv, 2, opts, 3, USAGE)) != CLI_CONTINUE)
        return rc;
    if (!load_roots(&root_files, &rs))
        return CLI_EXIT_USAGE;
    if (chain_file != NULL) {
        if (!cli_read_whole("hsm attest", chain_file, file, sizeof(file), &n))
            return CLI_EXIT_FAIL;
        offline.chain.data = file;
        offline.chain.len = n;
        judge_chain(&offline, &rs);
        rc = print_chain(&offline) ? CLI_EXIT_OK : CLI_EXIT_FAIL;
        EVP_PKEY_free(offline.device_key);
        return rc;
    }
    if ((t = cli_open(store, "hsm attest")) == NULL)
        return CLI_EXIT_FAIL;
    rc = CLI_EXIT_FAIL;
    why[0] = 0;
    if (cli_attestation_open(t, "hsm attest", &root_files, &a, why, sizeof(why))) {
        if (a == NULL)
            cli_error("hsm attest: %s", why);
        else if (out == NULL || write_chain(out, &a->chain))
            rc = cli_attestation_report(t, "hsm attest", a);
    }
    cli_attestation_free(a);
    t->close(t);
    return rc;
}
