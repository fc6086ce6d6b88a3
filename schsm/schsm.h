/*
 * The SmartCard-HSM driver (SmartCard-HSM 4K, Nitrokey HSM 2, pico-hsm): a device that answers
 * the SKS wire format (docs/wire-format.md) from the card's own APDUs (docs/smartcard-hsm.md).
 *
 * The driver never talks to PC/SC itself: it sends command APDUs through a schsm_io that the
 * caller supplies (transport/pcsc_schsm.c over the PC/SC link; the fuzz target with a fuzzed card), so the
 * driver can be driven by anything that answers APDUs.
 */
#ifndef SKS_SCHSM_H
#define SKS_SCHSM_H

#include <stddef.h>
#include <stdint.h>

#include "../wire/codec.h"

/* The longest key label (PrKD label, the SKS friendly name) the driver writes, in bytes. */
#define SCHSM_MAX_LABEL 64

/* The SmartCard-HSM application identifier. */
#define SCHSM_AID_BYTES 0xE8, 0x2B, 0x06, 0x01, 0x04, 0x01, 0x81, 0xC3, 0x1F, 0x02, 0x01
#define SCHSM_AID_LEN 11

/* The card link as the driver sees it. Every call of schsm_card_call runs inside one
 * exclusive PC/SC transaction the caller holds, so no other client can SELECT in between. */
typedef struct schsm_io {
    /* Sends one command APDU (already encoded by the driver, short or extended) and gives back
     * the response data (after the link followed any 61xx with GET RESPONSE and any 6Cxx) in
     * resp (reset first) and the final status word in *sw. 1 if an answer came; 0 if the link
     * failed (card removed, reader gone, timeout): then err says why, naming the reader. */
    int (*transmit)(struct schsm_io *io, const uint8_t *apdu, size_t n, sks_buf *resp, unsigned *sw, char *err,
                    size_t errlen);
    int extended;            /* reader and card take extended-length APDUs */
    size_t max_command_data; /* Nc limit per APDU */
    const char *reader;      /* for messages */
    void *ctx;               /* the caller's */
} schsm_io;

/* The driver's state for one card connection: PIN verified or not, the key cache. */
typedef struct schsm_card schsm_card;

schsm_card *schsm_card_new(void);
/* Wipes what it holds (the PIN check value) and frees it. */
void schsm_card_free(schsm_card *c);

/* The link was (re)established, or the card was reset or re-inserted: the selection, the
 * PIN state and every cached key description are gone. The next call SELECTs again. */
void schsm_card_forget(schsm_card *c);

/* The caller has just SELECTed the application on this card connection (the PC/SC link's
 * probe at connect and reconnect) and the card answered 9000 with fcp: that is the card
 * session's SELECT, so the driver sends none of its own. */
void schsm_card_selected(schsm_card *c, const uint8_t *fcp, size_t n);

/* Answers one request in the SKS byte stream (method id first). 1: reply holds the answer
 * (status byte first; a device error such as a wrong PIN is an answer, not a failure);
 * 0: the link failed, err says why, and the caller drops the connection. */
int schsm_card_call(schsm_card *c, schsm_io *io, const uint8_t *req, size_t n, sks_buf *reply, char *err,
                    size_t errlen);

#endif
