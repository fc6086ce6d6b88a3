/*
 * keyAgreement straight over a transport, with peer public keys exactly as given: what an
 * sksd client (or anything speaking the wire format) can send, including points an OpenSSL
 * application could never hold (off the curve, outside the field). For the invalid-curve
 * attack test (test_ecdh_peer.py).
 *
 *   sks_ecdh_peer SPEC HANDLE HEX-SPKI...
 *
 * One line per peer, in order, all on one connection (so the device's key cache is warm
 * from the second call on):  ok HEX-Z  |  error STATUS-NAME
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "../../client/sks_client.h"
#include "../../transport/transport.h"

int main(int argc, char **argv)
{
    char err[512] = "";
    sks_transport *t;
    sks_user_args a;
    int i;

    if (argc < 4) {
        fprintf(stderr, "usage: sks_ecdh_peer SPEC HANDLE HEX-SPKI...\n");
        return 2;
    }
    if ((t = sks_transport_open(argv[1], NULL, err, sizeof(err))) == NULL) {
        fprintf(stderr, "sks_ecdh_peer: %s\n", err);
        return 1;
    }
    memset(&a, 0, sizeof(a));
    a.key_handle = (uint32_t)strtoul(argv[2], NULL, 10);
    a.algorithm = "https://webpki.github.io/sks/algorithm#ecdh.raw";
    for (i = 3; i < argc; i++) {
        long n = 0;
        unsigned char *spki = OPENSSL_hexstr2buf(argv[i], &n);
        sks_span peer = { spki, (size_t)n };
        sks_client_error e;
        sks_buf z;
        size_t j;

        sks_buf_init(&z);
        if (spki == NULL) {
            fprintf(stderr, "sks_ecdh_peer: not hex: %s\n", argv[i]);
            return 2;
        }
        if (sks_client_key_agreement(t, &a, peer, &z, &e)) {
            printf("ok ");
            for (j = 0; j < z.len; j++)
                printf("%02x", z.data[j]);
            printf("\n");
        } else {
            printf("error %s\n", sks_client_status_name(e.status));
        }
        sks_buf_free(&z);
        OPENSSL_free(spki);
    }
    t->close(t);
    return 0;
}
