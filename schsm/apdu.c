/*
 * Command APDUs (ISO 7816-4 short and extended length), the transmit wrapper, SELECT, and
 * what the card's status words mean (docs/smartcard-hsm.md, "Status words").
 */
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int schsm_fail(schsm_ctx *c, int status, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(c->message, sizeof(c->message), fmt, ap);
    va_end(ap);
    return status;
}

size_t schsm_apdu_encode(uint8_t *out, size_t cap, uint8_t cla, uint8_t ins, uint8_t p1, uint8_t p2,
                         const uint8_t *data, size_t nc, int le, int extended)
{
    size_t n = 0, need = 4 + (nc ? (extended ? 3 : 1) + nc : 0) + (le >= 0 ? (extended ? (nc ? 2 : 3) : 1) : 0);

    if (need > cap || nc > (extended ? 65535u : 255u) || le > (extended ? 65536 : 256))
        return 0;
    out[n++] = cla;
    out[n++] = ins;
    out[n++] = p1;
    out[n++] = p2;
    if (nc > 0) {
        if (extended) {
            out[n++] = 0;
            out[n++] = (uint8_t)(nc >> 8);
        }
        out[n++] = (uint8_t)nc;
        memcpy(out + n, data, nc);
        n += nc;
    }
    if (le >= 0) {
        /* 0 (and 256 / 65536) encode as zero bytes: "as much as there is" */
        if (extended) {
            if (nc == 0)
                out[n++] = 0;
            out[n++] = (uint8_t)((unsigned)le >> 8);
        }
        out[n++] = (uint8_t)le;
    }
    return n;
}

int schsm_transmit(schsm_ctx *c, uint8_t cla, uint8_t ins, uint8_t p1, uint8_t p2, const uint8_t *data, size_t nc,
                   int le, sks_buf *resp, unsigned *sw)
{
    uint8_t apdu[4 + 3 + 1024 + 2]; /* the longest command: a 512-byte RSA-4096 block */
    /* Extended length whenever the link has it (RSA-4096 results, whole files), except for
     * SELECT, which the card wants short. */
    int extended = c->io->extended && !(ins == 0xA4);
    size_t n;
    int ok;

    *sw = 0;
    sks_buf_reset(resp);
    if (nc > c->io->max_command_data && c->io->max_command_data != 0)
        return schsm_fail(c, SKS_ERROR_NOT_AVAILABLE, "%zu bytes of command data exceed what reader %s takes (%zu)", nc,
                          c->io->reader ? c->io->reader : "?", c->io->max_command_data);
    if (nc > 255 && !extended)
        return schsm_fail(c, SKS_ERROR_NOT_AVAILABLE, "reader %s has no extended-length APDUs, needed for %zu bytes",
                          c->io->reader ? c->io->reader : "?", nc);
    n = schsm_apdu_encode(apdu, sizeof(apdu), cla, ins, p1, p2, data, nc, le, extended);
    if (n == 0)
        return schsm_fail(c, SKS_ERROR_INTERNAL, "APDU %02X does not encode", ins);
    ok = c->io->transmit(c->io, apdu, n, resp, sw, c->err, c->errlen);
    OPENSSL_cleanse(apdu, n); /* may hold a PIN or a ciphertext's plaintext-to-be */
    if (!ok)
        return SCHSM_LINK_FAILED;
    if (resp->failed)
        return schsm_fail(c, SKS_ERROR_INTERNAL, "out of memory reading the card's answer");
    if (resp->len > SCHSM_MAX_RESPONSE)
        return schsm_fail(c, SKS_ERROR_EXTERNAL, "the card answered %zu bytes to %02X, more than %d", resp->len, ins,
                          SCHSM_MAX_RESPONSE);
    return SKS_OK;
}

const char *schsm_sw_text(unsigned sw)
{
    if (SW_IS_TRIES_LEFT(sw))
        return "wrong PIN";
    switch (sw) {
    case 0x9000:
        return "success";
    case 0x6282:
        return "end of file";
    case 0x6400:
        return "execution error";
    case 0x6581:
        return "memory failure";
    case 0x6700:
        return "wrong length";
    case 0x6982:
        return "security status not satisfied (PIN not verified)";
    case 0x6983:
        return "PIN blocked";
    case 0x6984:
        return "reference data not usable (transport PIN or not initialised)";
    case 0x6985:
        return "conditions of use not satisfied (algorithm not allowed for the key)";
    case 0x6A80:
        return "incorrect data";
    case 0x6A81:
        return "function not supported";
    case 0x6A82:
        return "file or key not found";
    case 0x6A84:
        return "not enough memory (key use counter exhausted)";
    case 0x6A86:
    case 0x6B00:
        return "wrong parameters P1-P2";
    case 0x6A88:
        return "referenced data not found";
    case 0x6D00:
        return "instruction not supported";
    case 0x6E00:
        return "class not supported";
    default:
        return "unexpected status";
    }
}

int schsm_sw_status(unsigned sw)
{
    if (SW_IS_TRIES_LEFT(sw) || sw == SW_PIN_BLOCKED || sw == SW_SECURITY)
        return SKS_ERROR_AUTHORIZATION;
    switch (sw) {
    case SW_NOT_FOUND:
    case SW_REF_NOT_FOUND:
        return SKS_ERROR_NO_KEY;
    case SW_CONDITIONS:
    case 0x6A81:
        return SKS_ERROR_ALGORITHM;
    case 0x6A84:
    case SW_DATA_INVALID:
        return SKS_ERROR_NOT_ALLOWED;
    case 0x6700:
    case 0x6A80:
        return SKS_ERROR_OPTION;
    default:
        return SKS_ERROR_EXTERNAL;
    }
}

int schsm_parse_fcp(const uint8_t *p, size_t n, uint8_t *type, uint8_t *major, uint8_t *minor, uint16_t *options)
{
    schsm_tlv fcp, t85;

    if (p == NULL || n == 0) /* no answer: no pointer arithmetic on NULL */
        return 0;
    if (!schsm_tlv_next(&p, p + n, &fcp) || fcp.tag != 0x62 || !schsm_tlv_find(fcp.v, fcp.v + fcp.len, 0x85, &t85)
        || t85.len < 2)
        return 0;
    *major = t85.v[t85.len - 2];
    *minor = t85.v[t85.len - 1];
    *type = t85.len >= 3 ? t85.v[t85.len - 3] : 0;
    *options = t85.len >= 5 ? (uint16_t)((t85.v[t85.len - 5] << 8) | t85.v[t85.len - 4]) : 0;
    return 1;
}

int schsm_select(schsm_ctx *c)
{
    static const uint8_t AID[] = { SCHSM_AID_BYTES };
    schsm_card *card = c->card;
    sks_buf resp;
    unsigned sw;
    int rc;

    /* A SELECT ends any PIN verification on the card. */
    schsm_pin_forget(card);
    card->selected = 0;
    sks_buf_init(&resp);
    rc = schsm_transmit(c, 0x00, 0xA4, 0x04, 0x00, AID, sizeof(AID), 0, &resp, &sw);
    if (rc == SKS_OK && sw != SW_OK)
        rc = schsm_fail(c, SKS_ERROR_NOT_AVAILABLE, "the card in %s has no SmartCard-HSM application (SELECT: %04X %s)",
                        c->io->reader ? c->io->reader : "?", sw, schsm_sw_text(sw));
    if (rc == SKS_OK) {
        card->have_version =
            schsm_parse_fcp(resp.data, resp.len, &card->fcp_type, &card->fw_major, &card->fw_minor, &card->options);
        card->selected = 1;
    }
    sks_buf_free(&resp);
    return rc;
}
