/*
 * What a SmartCard-HSM proves about itself and its keys (docs/smartcard-hsm-keymgmt.md,
 * "Attestation"): hsmDeviceCertificates (220) hands out EF.C_DevAut (2F02: the device CV
 * certificate ‖ the DICA certificate) and hsmKeyGenerationResponse (221) the authenticated CV
 * request the card answered key generation with (kept in CE<kid>). The host verifies both; the
 * card side only reads files, which needs no PIN.
 */
#include <string.h>

#include "mgmt.h"

#define DEVAUT_FID 0x2F02
#define CERT_PREFIX 0xCE
#define MAX_FILE 8192 /* more than any CV chain or certificate the card keeps */
#define SW_END_OF_FILE 0x6282

/* READ BINARY of a whole file in chunks (54 02 <offset>); *found is 0 when the card has no
 * such file (6A82). Bounded by MAX_FILE. A non-zero first_tag stops after the first chunk
 * when the file does not start with it (sks list asks this of every key: one APDU for a key
 * whose CE file holds an X.509 certificate). */
static int read_file(mg_call *m, uint16_t fid, uint8_t first_tag, sks_buf *out, int *found)
{
    const size_t chunk = 256;
    uint8_t off[4] = { 0x54, 0x02, 0, 0 };

    *found = 1;
    sks_buf_reset(out);
    for (;;) {
        off[2] = (uint8_t)(out->len >> 8);
        off[3] = (uint8_t)out->len;
        if (mg_apdu(m, 0x00, 0xB1, (uint8_t)(fid >> 8), (uint8_t)fid, off, sizeof(off), SCHSM_LE_SHORT)
            != MG_STEP_OK)
            return MG_STEP_LINK;
        if (m->sw == 0x6A82 && out->len == 0) {
            *found = 0;
            return MG_STEP_OK;
        }
        /* past the end after a whole number of chunks: the file ended there */
        if (m->sw != 0x9000 && m->sw != SW_END_OF_FILE) {
            if (out->len > 0 && (m->sw == 0x6B00 || m->sw == 0x6A86 || m->sw == 0x6700))
                return MG_STEP_OK;
            return mg_fail(m, MG_ERROR_EXTERNAL, "READ BINARY of file %04X: SW %04X", fid, m->sw);
        }
        if (out->len + m->resp.len > MAX_FILE)
            return mg_fail(m, MG_ERROR_EXTERNAL, "file %04X on the card is larger than %d bytes", fid, MAX_FILE);
        sks_buf_put(out, m->resp.data, m->resp.len);
        if (first_tag != 0 && out->len > 0 && out->data[0] != first_tag)
            return MG_STEP_OK;
        if (m->sw == SW_END_OF_FILE || m->resp.len < chunk)
            return MG_STEP_OK;
    }
}

int mg_device_certificates(mg_call *m, sks_reader *in)
{
    sks_buf file;
    int r, found;

    sks_reader_expect_end(in);
    if (!sks_reader_ok(in))
        return mg_fail(m, MG_ERROR_OPTION, "takes no arguments");
    if ((r = mg_select(m)) != MG_STEP_OK)
        return r;
    sks_buf_init(&file);
    if ((r = read_file(m, DEVAUT_FID, 0, &file, &found)) == MG_STEP_OK) {
        if (!found || file.len == 0)
            r = mg_fail(m, MG_ERROR_NOT_ALLOWED, "the card has no device certificate (EF 2F02)");
        else {
            sks_buf_reset(m->reply);
            sks_buf_byte(m->reply, MG_OK);
            sks_buf_array(m->reply, file.data, file.len);
        }
    }
    sks_buf_free(&file);
    return r;
}

int mg_key_generation_response(mg_call *m, sks_reader *in)
{
    uint32_t handle = sks_get_uint(in, "keyHandle");
    sks_buf file;
    int r, found;

    if ((r = mg_key_request_select(m, in, handle)) != MG_STEP_OK)
        return r;
    sks_buf_init(&file);
    if ((r = read_file(m, (uint16_t)(CERT_PREFIX << 8 | handle), 0x67, &file, &found)) == MG_STEP_OK) {
        sks_buf_reset(m->reply);
        sks_buf_byte(m->reply, MG_OK);
        /* only an authenticated CV request (67) is the card's answer; an X.509 certificate
         * written over it (a --subject at generation) proves nothing about where the key was made */
        if (found && file.len > 0 && file.data[0] == 0x67)
            sks_buf_array(m->reply, file.data, file.len);
        else
            sks_buf_array(m->reply, NULL, 0);
    }
    sks_buf_free(&file);
    return r;
}
