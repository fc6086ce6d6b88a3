/*
 * Key management of a SmartCard-HSM that is not an SKS method: the project extensions
 * hsmGenerateKeyPair (210), hsmInitialize (211) and hsmStatus (212) of docs/wire-format.md,
 * answered with the card's own APDUs (docs/smartcard-hsm.md).
 *
 * The driver's method table (schsm/driver.c) hands these ids to schsm_manage_call.
 */
#ifndef SKS_SCHSM_MANAGE_H
#define SKS_SCHSM_MANAGE_H

#include "schsm.h"

/* 1 if schsm_manage_call answers this method id. */
int schsm_manage_handles(uint8_t method_id);

/*
 * Answers one request (method id first) like schsm_card_call: 1 with the reply in reply
 * (status byte first), 0 if the link failed (err says why).
 * Every call SELECTs the application and may VERIFY or INITIALIZE: afterwards the card's
 * PIN state and its key list are not what the driver remembers, so the caller must run
 * schsm_card_forget on its card state after each call.
 */
int schsm_manage_call(schsm_io *io, const uint8_t *req, size_t n, sks_buf *reply, char *err, size_t errlen);

#endif
