/*
 * The PC/SC link (docs/pcsc.md, "Layers"): pcsc-lite contexts, the choice of reader, the card
 * connection, exclusive transactions, APDU exchange (GET RESPONSE on 61xx, re-send on 6Cxx),
 * timeouts, fork, and recovery after a card reset or removal. What the APDUs mean is left to
 * the card protocols on top (transport/sks_card.c, transport/pcsc_schsm.c), each a pcsc_app.
 */
#ifndef SKS_PCSC_LINK_H
#define SKS_PCSC_LINK_H

#include <stddef.h>
#include <stdint.h>

#include "../wire/codec.h"

/* The connected card while one operation runs (in the link's worker thread, inside an
 * exclusive transaction): what a protocol sends its APDUs through. */
typedef struct pcsc_card pcsc_card;

/* A card application the link can connect to. Its state lives as long as one connection. */
typedef struct pcsc_app {
    const char *name; /* "SKS card", "SmartCard-HSM": for messages and `sks info` */
    void *(*state_new)(void);
    void (*state_free)(void *state);
    /* SELECTs the application on a card just connected or reconnected (never per call: a
     * SELECT may reset the card's PIN state). 1 if the card has it; 0 if not, with the reason
     * given to pcsc_card_fail (or the link's error if the link failed). */
    int (*select)(pcsc_card *c, void *state);
    /* The card was reset and reconnected: selection and PIN state are gone. */
    void (*forget)(void *state);
    /* One request in the SKS byte stream: 1 with the reply (status byte first); 0 if it could
     * not be carried (reason as for select). */
    int (*call)(pcsc_card *c, void *state, const uint8_t *req, size_t n, sks_buf *reply);
} pcsc_app;

/* ---- for the protocols, during select and call ---- */

/* Sends a command APDU and collects the response data in resp (reset first): GET RESPONSE
 * while the card says 61xx (extended Le when `extended`, else Le = xx), the same APDU once
 * more with Le = xx on 6Cxx. *sw = the final status word. 1 if the card answered; 0 if the
 * link failed (the error names the reader; the link drops or recovers the connection). */
int pcsc_card_exchange(pcsc_card *c, const uint8_t *apdu, size_t n, int extended, sks_buf *resp, unsigned *sw);
/* A failure of the protocol (a status word it cannot use): the connection is kept. */
void pcsc_card_fail(pcsc_card *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A failure after which the card's state is unknown: the connection is dropped and the next
 * call connects afresh. */
void pcsc_card_drop(pcsc_card *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Whether the link failed during this call (the connection will be dropped or recovered). */
int pcsc_card_lost(const pcsc_card *c);
/* The message of the last failure (it names the reader). */
const char *pcsc_card_error(const pcsc_card *c);
const char *pcsc_card_reader(const pcsc_card *c);
/* The reader's limit for extended-length APDU data (PC/SC part 10); 0: short APDUs only. */
size_t pcsc_card_reader_max(const pcsc_card *c);

/* Encodes a command APDU: short or extended, data and Ne optional (Ne 256/65536 as 00/0000). */
size_t pcsc_apdu_build(uint8_t *out, uint8_t cla, uint8_t ins, uint8_t p1, uint8_t p2, const uint8_t *data, size_t nc,
                       size_t ne, int extended);

#define PCSC_SHORT_MAX_COMMAND 255
#define PCSC_SHORT_MAX_RESPONSE 256
#define PCSC_EXTENDED_MAX 65536

/* ---- for the transport ---- */

typedef struct pcsc_link pcsc_link;

/* Connects to a card with one of apps (tried in this order on each reader). reader: a reader
 * name, or part of one (a reader of exactly that name wins); "" = the first reader whose card
 * has one of the applications. NULL with err on failure. */
pcsc_link *pcsc_link_open(const char *reader, const pcsc_app *const *apps, size_t napps, char *err, size_t errlen);
/* One request to the card's application, inside one transaction; connects first if the last
 * call lost the connection. A card reset reported before the card answered anything is
 * recovered from at once (reconnect, forget, SELECT, the request once more). */
int pcsc_link_call(pcsc_link *l, const uint8_t *req, size_t n, sks_buf *reply, char *err, size_t errlen);
/* The application and reader of the card last connected: "SmartCard-HSM in reader \"...\"". */
const char *pcsc_link_describe(pcsc_link *l);
void pcsc_link_close(pcsc_link *l);

/* ---- the card protocols on the link ---- */

extern const pcsc_app pcsc_app_sks;   /* transport/sks_card.c */
extern const pcsc_app pcsc_app_schsm; /* transport/pcsc_schsm.c, over the driver in schsm/ */

#endif
