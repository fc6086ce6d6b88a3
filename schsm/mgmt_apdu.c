/*
 * Command APDUs for SmartCard-HSM key management, sent through the caller's schsm_io.
 */
#include "mgmt.h"

#include <stdio.h>

/* ISO 7816-4 encoding: short when data and response fit, extended otherwise (and when a long
 * response is wanted and the link takes extended length, so RSA-4096 answers come whole). */
static void encode_apdu(sks_buf *out, const uint8_t hdr[4], const uint8_t *data, size_t n, int want_response,
                        int extended)
{
    int ext = n > 255 || (want_response == SCHSM_LE_LINK && extended);

    sks_buf_put(out, hdr, 4);
    if (n > 0) {
        if (ext) {
            sks_buf_byte(out, 0x00);
            sks_buf_ushort(out, (uint16_t)n);
        } else {
            sks_buf_byte(out, (uint8_t)n);
        }
        sks_buf_put(out, data, n);
    }
    if (want_response) {
        if (ext && n == 0)
            sks_buf_byte(out, 0x00);
        if (ext)
            sks_buf_ushort(out, 0x0000);
        else
            sks_buf_byte(out, 0x00);
    }
}

int schsm_apdu(schsm_io *io, uint8_t cla, uint8_t ins, uint8_t p1, uint8_t p2, const uint8_t *data, size_t n,
               int want_response, sks_buf *resp, unsigned *sw, char *err, size_t errlen)
{
    const uint8_t hdr[4] = { cla, ins, p1, p2 };
    sks_buf apdu;
    int ok;

    if (n > 0xFFFF || n > io->max_command_data || (n > 255 && !io->extended)) {
        snprintf(err, errlen, "reader %s: a command of %zu bytes does not fit one APDU", io->reader, n);
        return 0;
    }
    sks_buf_init(&apdu);
    encode_apdu(&apdu, hdr, data, n, want_response, io->extended);
    if (apdu.failed) {
        sks_buf_free(&apdu);
        snprintf(err, errlen, "out of memory");
        return 0;
    }
    ok = io->transmit(io, apdu.data, apdu.len, resp, sw, err, errlen);
    sks_buf_free(&apdu); /* may hold a PIN */
    return ok;
}
