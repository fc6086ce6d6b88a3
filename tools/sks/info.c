/* sks info: what the device says about itself (getDeviceInfo). */
#include "cli.h"

#include <stdio.h>
#include <string.h>

#include <openssl/x509.h>

int cmd_info(cli_store *store, int argc, char **argv)
{
    char err[512] = "";
    sks_transport *t;
    sks_buf reply;
    uint8_t req = 1;
    sks_reader r;
    int rc = 1;

    if (argc > 1 && strcmp(argv[1], "--help") == 0) {
        printf("usage: sks info\n  Shows the device's vendor, API level, certificate and algorithms.\n");
        return 0;
    }
    t = cli_open(store, "info");
    if (t == NULL)
        return 1;
    sks_buf_init(&reply);
    if (!t->call(t, &req, 1, &reply, err, sizeof(err))) {
        cli_error("info: %s", err);
        goto done;
    }
    sks_reader_init(&r, reply.data, reply.len);
    if (sks_get_byte(&r, "status") != 0) {
        sks_span m = sks_get_string(&r, "message");
        cli_error("info: %.*s", (int)m.n, m.p);
        goto done;
    }
    {
        uint16_t api = sks_get_ushort(&r, "apiLevel");
        uint8_t type = sks_get_byte(&r, "deviceType");
        sks_span url = sks_get_uri(&r, "updateUrl");
        sks_span vendor = sks_get_string(&r, "vendorName");
        sks_span desc = sks_get_string(&r, "vendorDescription");
        uint16_t ncert = sks_get_ushort(&r, "certificates"), i;
        (void)url;
        printf("device:      %s\n", store->device);
        printf("vendor:      %.*s\n", (int)vendor.n, vendor.p);
        printf("description: %.*s\n", (int)desc.n, desc.p);
        printf("API level:   %u.%02u\n", api / 100, api % 100);
        printf("device type: 0x%02x\n", type);
        for (i = 0; i < ncert && sks_reader_ok(&r); i++) {
            sks_span c = sks_get_array(&r, "certificate");
            const unsigned char *q = c.p;
            X509 *x = d2i_X509(NULL, &q, (long)c.n);
            if (x != NULL) {
                char *subj = X509_NAME_oneline(X509_get_subject_name(x), NULL, 0);
                printf("certificate: %s\n", subj ? subj : "?");
                OPENSSL_free(subj);
                X509_free(x);
            }
        }
        {
            uint16_t nalg = sks_get_ushort(&r, "algorithms");
            printf("algorithms:\n");
            for (i = 0; i < nalg && sks_reader_ok(&r); i++) {
                sks_span a = sks_get_uri(&r, "algorithm");
                printf("  %.*s\n", (int)a.n, a.p);
            }
        }
    }
    rc = sks_reader_ok(&r) ? 0 : 1;
    if (rc)
        cli_error("info: malformed reply");
done:
    sks_buf_free(&reply);
    t->close(t);
    return rc;
}
