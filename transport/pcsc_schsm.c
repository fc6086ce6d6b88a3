/*
 * The SmartCard-HSM on the PC/SC link: the probe SELECT of its application when the link
 * connects or reconnects, and the adapter that gives the driver (schsm/schsm.h) the link as a
 * schsm_io. The driver turns each SKS wire request into the card's APDUs; the link runs them
 * all inside one transaction, so no other application's SELECT (which would reset the PIN
 * state) comes in between.
 */
#include "pcsc_link.h"

#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>

#include "../schsm/schsm.h"

/* Command data per extended APDU: the smallest APDU buffer of the card's platforms (JCOP3,
 * 1232 bytes) less header, Lc and Le, as OpenSC keeps to. */
#define SCHSM_MAX_COMMAND_DATA 1223
#define SW_OK 0x9000

typedef struct {
    schsm_card *card;
    pcsc_card *link; /* during a call */
} schsm_state;

static const uint8_t SCHSM_AID[SCHSM_AID_LEN] = { SCHSM_AID_BYTES };

static int io_transmit(schsm_io *io, const uint8_t *apdu, size_t n, sks_buf *resp, unsigned *sw, char *err,
                       size_t errlen)
{
    schsm_state *s = io->ctx;

    if (pcsc_card_exchange(s->link, apdu, n, io->extended, resp, sw))
        return 1;
    snprintf(err, errlen, "%s", pcsc_card_error(s->link));
    return 0;
}

/* SELECT with a short Le 00, as the card requires (OpenSC does the same). A 9000 says the
 * card has the application; the driver takes this SELECT and its FCP as its own, so a card
 * session starts with one SELECT. */
static int schsm_select(pcsc_card *c, void *state)
{
    uint8_t apdu[5 + SCHSM_AID_LEN + 1];
    size_t n = pcsc_apdu_build(apdu, 0x00, 0xA4, 0x04, 0x00, SCHSM_AID, SCHSM_AID_LEN, 256, 0);
    unsigned sw;
    sks_buf fcp;
    int ok;

    sks_buf_init(&fcp);
    ok = pcsc_card_exchange(c, apdu, n, 0, &fcp, &sw);
    if (ok && sw != SW_OK) {
        pcsc_card_fail(c, "the card in reader \"%s\" answered %04X to SELECT of the SmartCard-HSM application",
                       pcsc_card_reader(c), sw);
        ok = 0;
    }
    if (ok)
        schsm_card_selected(((schsm_state *)state)->card, fcp.data, fcp.len);
    sks_buf_free(&fcp);
    return ok;
}

static int schsm_call(pcsc_card *c, void *state, const uint8_t *req, size_t n, sks_buf *reply)
{
    schsm_state *s = state;
    size_t reader_max = pcsc_card_reader_max(c);
    schsm_io io;
    char err[512];
    int ok;

    memset(&io, 0, sizeof(io));
    io.transmit = io_transmit;
    io.extended = reader_max > 256;
    io.max_command_data = !io.extended ? 255 : reader_max < SCHSM_MAX_COMMAND_DATA ? reader_max : SCHSM_MAX_COMMAND_DATA;
    io.reader = pcsc_card_reader(c);
    io.ctx = s;
    s->link = c;
    err[0] = '\0';
    ok = schsm_card_call(s->card, &io, req, n, reply, err, sizeof(err));
    s->link = NULL;
    /* A lost link has its message already; any other failure (an answer the link or the
     * driver could not use) leaves the card in a state the driver does not know: start
     * afresh on the next call. */
    if (!ok && !pcsc_card_lost(c))
        pcsc_card_drop(c, "%s", err[0] ? err : "the SmartCard-HSM driver failed");
    return ok;
}

static void *schsm_state_new(void)
{
    schsm_state *s = OPENSSL_zalloc(sizeof(*s));

    if (s != NULL && (s->card = schsm_card_new()) == NULL) {
        OPENSSL_free(s);
        s = NULL;
    }
    return s;
}

static void schsm_state_free(void *state)
{
    schsm_state *s = state;

    if (s == NULL)
        return;
    schsm_card_free(s->card);
    OPENSSL_free(s);
}

static void schsm_forget(void *state)
{
    schsm_card_forget(((schsm_state *)state)->card);
}

const pcsc_app pcsc_app_schsm = {
    .name = "SmartCard-HSM",
    .state_new = schsm_state_new,
    .state_free = schsm_state_free,
    .select = schsm_select,
    .forget = schsm_forget,
    .call = schsm_call,
};
