/* sks info: what the device says about itself (getDeviceInfo); --verify: what it proves. */
#include "cli.h"

#include <stdio.h>
#include <string.h>

#include <openssl/x509.h>

/* info --verify on a device that cannot attest its keys (documented in man/sks.1) */
#define INFO_EXIT_CANNOT_ATTEST 3

static const char USAGE[] =
    "usage: sks info [--verify [--root FILE]...]\n"
    "  Shows the device's vendor, API level, certificate and algorithms; on a\n"
    "  SmartCard-HSM its kind, firmware, user PIN state and tries left (as sks hsm status).\n"
    "  --verify     also verify what a SmartCard-HSM proves, as sks hsm attest does: its\n"
    "               device certificate chain and, per key, whether the card generated it.\n"
    "               Exit 1 if the chain or a key's generation response is INVALID; exit 3 if\n"
    "               the device cannot attest (the software store, an SKS card)\n"
    "  --root FILE  with --verify: also trust this CV root certificate\n";

/* The attestation part of info --verify; returns the exit code. */
static int verify_device(sks_transport *t, const cli_store *store, int hsm, const cli_list *roots)
{
    cli_attestation *a = NULL;
    char why[2200];
    int rc;

    if (!hsm) {
        cli_error("info --verify: this device cannot attest its keys: only a SmartCard-HSM (pcsc:) carries a "
                  "device certificate chain, %s is %s",
                  store->device, cli_maybe_hsm(store) ? "not a SmartCard-HSM" : "not a card");
        return INFO_EXIT_CANNOT_ATTEST;
    }
    why[0] = 0;
    if (!cli_attestation_open(t, "info --verify", roots, &a, why, sizeof(why)))
        return CLI_EXIT_FAIL;
    if (a == NULL) {
        cli_error("info --verify: this device cannot attest its keys: %s", why);
        return INFO_EXIT_CANNOT_ATTEST;
    }
    rc = cli_attestation_report(t, "info --verify", a);
    cli_attestation_free(a);
    return rc;
}

static void print_device_info(const sks_device_info *d)
{
    size_t i;

    printf("vendor:      %s\n", d->vendor_name);
    printf("description: %s\n", d->vendor_description);
    printf("API level:   %u.%02u\n", d->api_level / 100, d->api_level % 100);
    printf("device type: 0x%02x\n", d->device_type);
    for (i = 0; i < d->certificates.count; i++) {
        const unsigned char *q = d->certificates.items[i].data;
        X509 *x = d2i_X509(NULL, &q, (long)d->certificates.items[i].len);
        if (x != NULL) {
            char *subj = X509_NAME_oneline(X509_get_subject_name(x), NULL, 0);
            printf("certificate: %s\n", subj ? subj : "?");
            OPENSSL_free(subj);
            X509_free(x);
        }
    }
    printf("algorithms:\n");
    for (i = 0; i < d->algorithms.count; i++)
        printf("  %s\n", d->algorithms.items[i]);
}

int cmd_info(cli_store *store, int argc, char **argv)
{
    int verify = 0, rc;
    cli_list roots;
    const cli_opt opts[] = { { "--verify", OPT_FLAG, &verify }, { "--root", OPT_LIST, &roots } };
    sks_transport *t;
    sks_device_info d;
    sks_client_error e;
    sks_hsm_status st;
    int hsm, have_info;

    memset(&roots, 0, sizeof(roots));
    if ((rc = cli_parse_command("info", argc, argv, 1, opts, 2, USAGE)) != CLI_CONTINUE)
        return rc;
    if (roots.count > 0 && !verify) {
        cli_error("info: --root needs --verify");
        return CLI_EXIT_USAGE;
    }
    t = cli_open(store, "info");
    if (t == NULL)
        return CLI_EXIT_FAIL;
    /* a SmartCard-HSM adds its own state (hsmStatus) to what getDeviceInfo says */
    hsm = cli_maybe_hsm(store) && cli_hsm_status(t, &st);
    have_info = sks_client_get_device_info(t, &d, &e);
    if (!have_info && !hsm) {
        cli_error("info: %s", e.message);
        t->close(t);
        return CLI_EXIT_FAIL;
    }
    printf("device:      %s\n", store->device);
    if (t->describe != NULL && t->describe(t) != NULL && *t->describe(t))
        printf("card:        %s\n", t->describe(t)); /* which kind of card pcsc: found, and where */
    if (hsm)
        cli_hsm_print_status(&st);
    if (have_info) {
        print_device_info(&d);
        sks_device_info_free(&d);
    }
    rc = verify ? verify_device(t, store, hsm, &roots) : CLI_EXIT_OK;
    t->close(t);
    return rc;
}
