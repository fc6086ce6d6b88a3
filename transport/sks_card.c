/*
 * The SKS card protocol on the PC/SC link (docs/pcsc.md): SELECT of the SKS application, which
 * says what APDU sizes the card takes; then each request in one CALL APDU when it fits, else in
 * a chain of parts, and the reply in the response data (the link reads 61xx with GET
 * RESPONSE). The constants are in pcsc_apdu.h, shared with the card (tools/sks-vcard).
 */
#include "pcsc_apdu.h"
#include "pcsc_link.h"

#include <string.h>

#include <openssl/crypto.h>

typedef struct {
    int extended;        /* both reader and card take extended-length APDUs */
    size_t max_command;  /* command data per APDU */
    size_t max_response; /* Ne we ask for */
    uint8_t capdu[4 + 3 + 65535 + 2];
} sks_card_state;

static const uint8_t SKS_AID[SKS_AID_LEN] = { SKS_AID_BYTES };

static const char *sw_meaning(unsigned sw)
{
    switch (sw) {
    case SKS_SW_WRONG_LENGTH:
        return "wrong length";
    case SKS_SW_CHANNEL_UNSUPPORTED:
        return "logical channel not supported";
    case SKS_SW_SM_UNSUPPORTED:
        return "secure messaging not supported";
    case SKS_SW_CHAIN_UNSUPPORTED:
        return "command chaining not supported";
    case SKS_SW_NOT_SELECTED:
        return "conditions of use not satisfied: SKS application not selected, or no response pending";
    case SKS_SW_WRONG_DATA:
        return "wrong data";
    case SKS_SW_NOT_FOUND:
        return "no SKS application on the card";
    case SKS_SW_TOO_LARGE:
        return "request too large for the card";
    case SKS_SW_WRONG_P1P2:
        return "wrong P1/P2";
    case SKS_SW_INS_UNSUPPORTED:
        return "instruction not supported";
    case SKS_SW_CLA_UNSUPPORTED:
        return "class not supported";
    case SKS_SW_INTERNAL:
        return "the card could not form a reply";
    default:
        return (sw & 0xFF00) == 0x6C00 ? "wrong Le" : "unexpected status";
    }
}

static int sw_failed(pcsc_card *c, unsigned sw, const char *what)
{
    pcsc_card_fail(c, "the card in reader \"%s\" answered %04X (%s) to %s", pcsc_card_reader(c), sw, sw_meaning(sw),
                   what);
    return 0;
}

static size_t get_uint32(const uint8_t *p)
{
    return ((size_t)p[0] << 24) | ((size_t)p[1] << 16) | ((size_t)p[2] << 8) | p[3];
}

/* Sets the APDU sizes from what the reader and the card each allow. */
static void set_limits(sks_card_state *s, size_t reader_max, int card_extended, size_t card_cmd, size_t card_resp)
{
    s->extended = card_extended && reader_max > PCSC_SHORT_MAX_RESPONSE && card_cmd > PCSC_SHORT_MAX_COMMAND
                  && card_resp > PCSC_SHORT_MAX_RESPONSE;
    if (!s->extended) {
        s->max_command = PCSC_SHORT_MAX_COMMAND;
        s->max_response = PCSC_SHORT_MAX_RESPONSE;
        return;
    }
    s->max_command = card_cmd < reader_max ? card_cmd : reader_max;
    if (s->max_command > 65535)
        s->max_command = 65535;
    /* Ne may exceed what the card sends at once: it then says 61xx and the link GETs RESPONSE */
    s->max_response = reader_max < PCSC_EXTENDED_MAX ? reader_max : PCSC_EXTENDED_MAX;
}

/* Takes the card's limits from its SELECT answer. */
static int apply_select_info(pcsc_card *c, sks_card_state *s, const sks_buf *info)
{
    const uint8_t *d = info->data;

    if (info->len < SKS_SELECT_RESPONSE_LEN || d[0] < SKS_SELECT_VERSION) {
        pcsc_card_fail(c, "the card in reader \"%s\" answered SELECT with %zu bytes, not an SKS application",
                       pcsc_card_reader(c), info->len);
        return 0;
    }
    set_limits(s, pcsc_card_reader_max(c), (d[1] & SKS_SELECT_FLAG_EXTENDED) != 0, get_uint32(d + 2),
               get_uint32(d + 6));
    return 1;
}

/* SELECT is a short APDU: every reader and card takes it, and it says what else they take. */
static int sks_select(pcsc_card *c, void *state)
{
    sks_card_state *s = state;
    uint8_t apdu[16];
    size_t n = pcsc_apdu_build(apdu, SKS_CLA_ISO, SKS_INS_SELECT, 0x04 /* by DF name */, 0x00 /* return data */,
                               SKS_AID, SKS_AID_LEN, PCSC_SHORT_MAX_RESPONSE, 0);
    unsigned sw;
    sks_buf info;
    int ok;

    sks_buf_init(&info);
    /* until the card has said more: GET RESPONSE in short APDUs */
    ok = pcsc_card_exchange(c, apdu, n, 0, &info, &sw)
         && (sw == SKS_SW_OK || sw_failed(c, sw, "SELECT of the SKS application")) && apply_select_info(c, s, &info);
    sks_buf_free(&info);
    return ok;
}

/* Sends one part of the request: CALL with the chaining bit unless it is the last. */
static int send_part(pcsc_card *c, sks_card_state *s, const uint8_t *part, size_t len, int last, sks_buf *resp,
                     unsigned *sw)
{
    static const uint8_t none;
    size_t n = pcsc_apdu_build(s->capdu, (uint8_t)(SKS_CLA_PROPRIETARY | (last ? 0 : SKS_CLA_CHAIN)), SKS_INS_CALL, 0,
                               0, len ? part : &none, len, last ? s->max_response : 0, s->extended);
    int ok = pcsc_card_exchange(c, s->capdu, n, s->extended, resp, sw);

    OPENSSL_cleanse(s->capdu, n); /* requests carry PINs */
    return ok;
}

/* Sends the request: one APDU if it fits, else a chain of parts as large as allowed; the
 * answer to the last part is the reply. */
static int sks_call(pcsc_card *c, void *state, const uint8_t *req, size_t n, sks_buf *reply)
{
    sks_card_state *s = state;
    size_t off = 0;
    int reselected = 0;
    unsigned sw;

    for (;;) {
        size_t part = n - off < s->max_command ? n - off : s->max_command;
        int last = off + part == n;

        if (!send_part(c, s, req + off, part, last, reply, &sw))
            return 0;
        /* Another application may have selected something else on a shared card: select
         * again once, before the first part has been taken. */
        if (off == 0 && sw == SKS_SW_NOT_SELECTED && !reselected) {
            reselected = 1;
            if (!sks_select(c, s))
                return 0;
            continue;
        }
        if (sw != SKS_SW_OK)
            return sw_failed(c, sw, last ? "the request" : "a chained request part");
        if (last)
            return 1;
        off += part;
    }
}

static void *sks_state_new(void)
{
    return OPENSSL_zalloc(sizeof(sks_card_state));
}

static void sks_state_free(void *state)
{
    OPENSSL_clear_free(state, sizeof(sks_card_state));
}

/* The SKS card keeps nothing across a reset that the next SELECT does not set up again. */
static void sks_forget(void *state)
{
    (void)state;
}

const pcsc_app pcsc_app_sks = {
    .name = "SKS card",
    .state_new = sks_state_new,
    .state_free = sks_state_free,
    .select = sks_select,
    .forget = sks_forget,
    .call = sks_call,
};
