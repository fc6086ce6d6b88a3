/*
 * The SmartCard-HSM driver: one SKS wire request in, the card's APDUs, one reply out.
 */
#include "schsm.h"
#include "manage.h"

#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>

#define SCHSM_ERROR_NOT_AVAILABLE 0x0D

struct schsm_card {
    int selected;
};

schsm_card *schsm_card_new(void)
{
    return OPENSSL_zalloc(sizeof(schsm_card));
}

void schsm_card_free(schsm_card *c)
{
    if (c == NULL)
        return;
    OPENSSL_clear_free(c, sizeof(*c));
}

void schsm_card_forget(schsm_card *c)
{
    if (c != NULL)
        c->selected = 0;
}

int schsm_card_call(schsm_card *c, schsm_io *io, const uint8_t *req, size_t n, sks_buf *reply, char *err,
                    size_t errlen)
{
    char msg[80];

    if (n > 0 && schsm_manage_handles(req[0])) { /* hsm* key management: schsm/manage.c */
        int answered = schsm_manage_call(io, req, n, reply, err, errlen);
        schsm_card_forget(c);
        return answered;
    }
    (void)c;
    (void)io;
    (void)err;
    (void)errlen;
    snprintf(msg, sizeof(msg), "method %u: not on a SmartCard-HSM", n > 0 ? req[0] : 0);
    sks_buf_reset(reply);
    sks_buf_byte(reply, SCHSM_ERROR_NOT_AVAILABLE);
    sks_buf_string(reply, msg);
    return 1;
}
