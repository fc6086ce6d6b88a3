/*
 * The pcsc: transport (docs/pcsc.md): the PC/SC link (pcsc_link.c) with the two card
 * protocols it can find on a card, the SKS card (sks_card.c) and the SmartCard-HSM
 * (pcsc_schsm.c over the driver in schsm/). `pcsc:` takes the first card that answers SELECT
 * for either; the SKS application is asked first.
 */
#include "pcsc_link.h"
#include "transport.h"

#include <stdio.h>

#include <openssl/crypto.h>

typedef struct {
    sks_transport base;
    pcsc_link *link;
} pcsc_transport;

static const pcsc_app *const CARD_APPS[] = { &pcsc_app_sks, &pcsc_app_schsm };

static int pcsc_call(sks_transport *t, const uint8_t *req, size_t n, sks_buf *reply, char *err, size_t errlen)
{
    return pcsc_link_call(((pcsc_transport *)t)->link, req, n, reply, err, errlen);
}

static const char *pcsc_describe(sks_transport *t)
{
    return pcsc_link_describe(((pcsc_transport *)t)->link);
}

static void pcsc_close(sks_transport *t)
{
    pcsc_transport *p = (pcsc_transport *)t;

    pcsc_link_close(p->link);
    OPENSSL_free(p);
}

sks_transport *sks_transport_open_pcsc(const char *reader, char *err, size_t errlen)
{
    pcsc_transport *p = OPENSSL_zalloc(sizeof(*p));

    if (p == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    p->link = pcsc_link_open(reader, CARD_APPS, sizeof(CARD_APPS) / sizeof(CARD_APPS[0]), err, errlen);
    if (p->link == NULL) {
        OPENSSL_free(p);
        return NULL;
    }
    p->base.call = pcsc_call;
    p->base.describe = pcsc_describe;
    p->base.close = pcsc_close;
    return &p->base;
}
