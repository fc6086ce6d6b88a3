/* sks info: what the device says about itself (getDeviceInfo). */
#include "cli.h"

#include <stdio.h>
#include <string.h>

#include <openssl/x509.h>

int cmd_info(cli_store *store, int argc, char **argv)
{
    sks_transport *t;
    sks_device_info d;
    sks_client_error e;
    sks_hsm_status st;
    int hsm, have_info;
    size_t i;

    if (argc > 1 && strcmp(argv[1], "--help") == 0) {
        printf("usage: sks info\n  Shows the device's vendor, API level, certificate and algorithms; on a\n"
               "  SmartCard-HSM its kind, firmware, user PIN state and tries left (as sks hsm status).\n");
        return 0;
    }
    t = cli_open(store, "info");
    if (t == NULL)
        return 1;
    /* a SmartCard-HSM adds its own state (hsmStatus) to what getDeviceInfo says */
    hsm = cli_maybe_hsm(store) && cli_hsm_status(t, &st);
    have_info = sks_client_get_device_info(t, &d, &e);
    if (!have_info && !hsm) {
        cli_error("info: %s", e.message);
        t->close(t);
        return 1;
    }
    printf("device:      %s\n", store->device);
    if (t->describe != NULL && t->describe(t) != NULL && *t->describe(t))
        printf("card:        %s\n", t->describe(t)); /* which kind of card pcsc: found, and where */
    if (hsm)
        cli_hsm_print_status(&st);
    if (!have_info) {
        t->close(t);
        return 0;
    }
    printf("vendor:      %s\n", d.vendor_name);
    printf("description: %s\n", d.vendor_description);
    printf("API level:   %u.%02u\n", d.api_level / 100, d.api_level % 100);
    printf("device type: 0x%02x\n", d.device_type);
    for (i = 0; i < d.certificates.count; i++) {
        const unsigned char *q = d.certificates.items[i].data;
        X509 *x = d2i_X509(NULL, &q, (long)d.certificates.items[i].len);
        if (x != NULL) {
            char *subj = X509_NAME_oneline(X509_get_subject_name(x), NULL, 0);
            printf("certificate: %s\n", subj ? subj : "?");
            OPENSSL_free(subj);
            X509_free(x);
        }
    }
    printf("algorithms:\n");
    for (i = 0; i < d.algorithms.count; i++)
        printf("  %s\n", d.algorithms.items[i]);
    sks_device_info_free(&d);
    t->close(t);
    return 0;
}
