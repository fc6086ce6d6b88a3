/*
 * The SKS card's APDU layer (docs/pcsc.md): parses command APDUs, keeps the state a card
 * keeps between them (selection, a chained request being assembled, a reply being read out
 * with GET RESPONSE) and hands each complete request to a dispatcher. No I/O: sks-vcard feeds
 * it from vpcd, the fuzz target feeds it directly.
 */
#ifndef SKS_VCARD_APDU_H
#define SKS_VCARD_APDU_H

#include <stddef.h>
#include <stdint.h>

#include "../../wire/codec.h"

/* A command APDU, cases 1-4, short or extended (ISO/IEC 7816-3 12.1.3). */
typedef struct {
    uint8_t cla, ins, p1, p2;
    const uint8_t *data; /* points into the parsed bytes */
    size_t nc;           /* command data length */
    size_t ne;           /* expected response length: 0 (no Le), 1..256, or 1..65536 */
    int extended;
} sks_capdu;

/* 1 if p..n is a well-formed command APDU, 0 if not. */
int sks_capdu_parse(const uint8_t *p, size_t n, sks_capdu *out);

/* One complete request in, one reply out (status byte first): sks_device_dispatch's shape. */
typedef void (*sks_card_dispatch_fn)(void *ctx, const uint8_t *req, size_t n, sks_buf *reply);

typedef struct {
    int extended;        /* extended-length APDUs accepted */
    size_t max_command;  /* most command data in one APDU (255 without extended length) */
    size_t max_response; /* most response data in one R-APDU (256 without extended length) */
} sks_card_limits;

typedef struct {
    sks_card_limits lim;
    sks_card_dispatch_fn dispatch;
    void *dispatch_ctx;
    int selected;
    int chaining;        /* `request` holds the first parts of a chained request */
    sks_buf request;
    sks_buf response;    /* the SELECT answer or a reply, sent from response_off on */
    size_t response_off;
    int response_pending;
} sks_card;

void sks_card_init(sks_card *c, const sks_card_limits *lim, sks_card_dispatch_fn fn, void *ctx);
/* Power off, power on or reset: the card forgets its selection and anything half done. */
void sks_card_reset(sks_card *c);
void sks_card_free(sks_card *c);

/* Handles one command APDU; `out` receives the response APDU: data, then SW1 SW2. */
void sks_card_command(sks_card *c, const uint8_t *apdu, size_t n, sks_buf *out);

#endif
