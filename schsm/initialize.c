/*
 * hsmInitialize and hsmStatus (docs/wire-format.md): INITIALIZE DEVICE with the user PIN, the
 * SO-PIN and the options, refusing to wipe an initialised card unless asked to (the card
 * itself checks the SO-PIN, which goes nowhere else); the card's state for `sks info`.
 */
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>

#include "mgmt.h"

#define NO_DKEK 0xFFFF

typedef struct {
    sks_span so_pin;
    sks_span user_pin;
    uint16_t options;
    uint8_t retries;
    uint16_t dkek_shares;
    uint8_t key_domains;
    int force;
} init_request;

static int parse_init(mg_call *m, sks_reader *in, init_request *q)
{
    q->so_pin = sks_get_array(in, "soPin");
    q->user_pin = sks_get_array(in, "userPin");
    q->options = sks_get_ushort(in, "options");
    q->retries = sks_get_byte(in, "retryLimit");
    q->dkek_shares = sks_get_ushort(in, "dkekShares");
    q->key_domains = sks_get_byte(in, "keyDomains");
    q->force = sks_get_bool(in, "force");
    sks_reader_expect_end(in);
    if (!sks_reader_ok(in))
        return mg_fail(m, MG_ERROR_OPTION, "malformed request: %s %s", in->field ? in->field : "request",
                       in->error ? in->error : "is invalid");
    if (q->user_pin.n < 6 || q->user_pin.n > 16)
        return mg_fail(m, MG_ERROR_OPTION, "the user PIN must be 6..16 bytes, got %zu", q->user_pin.n);
    if (q->retries < 1 || q->retries > 10)
        return mg_fail(m, MG_ERROR_OPTION, "retryLimit must be 1..10, got %u", q->retries);
    if (q->dkek_shares > 255 && q->dkek_shares != NO_DKEK)
        return mg_fail(m, MG_ERROR_OPTION, "dkekShares must be 0..255 (or 65535: no DKEK), got %u", q->dkek_shares);
    return MG_STEP_OK;
}

/* 1 if the card has never been initialised: the user PIN status answers 6A88. */
static int user_pin_status(mg_call *m)
{
    return mg_apdu(m, 0x00, 0x20, 0x00, 0x81, NULL, 0, SCHSM_LE_NONE);
}

static int send_initialize(mg_call *m, const init_request *q, const uint8_t so[8])
{
    schsm_init_params p;
    sks_buf cdata;
    int r;

    memset(&p, 0, sizeof(p));
    p.options = q->options;
    p.user_pin = q->user_pin.p;
    p.user_pin_len = q->user_pin.n;
    p.so_pin = so;
    p.retry_limit = q->retries;
    p.dkek_shares = q->dkek_shares == NO_DKEK ? -1 : q->dkek_shares;
    p.key_domains = q->key_domains;
    sks_buf_init(&cdata);
    if (!schsm_init_cdata(&p, &cdata)) {
        sks_buf_free(&cdata);
        return mg_fail(m, MG_ERROR_INTERNAL, "cannot encode INITIALIZE");
    }
    r = mg_apdu(m, 0x80, 0x50, 0x00, 0x00, cdata.data, cdata.len, SCHSM_LE_NONE);
    sks_buf_free(&cdata); /* wipes both PINs */
    if (r != MG_STEP_OK || m->sw == 0x9000)
        return r;
    if (m->sw == 0x6982 || m->sw == 0x6985 || m->sw == 0x6986 || (m->sw & 0xFFF0) == 0x63C0
        || m->sw == 0x6983)
        return mg_fail(m, MG_ERROR_AUTHORIZATION, "the card refused the SO-PIN (SW %04X); nothing was changed",
                       m->sw);
    return mg_fail(m, MG_ERROR_EXTERNAL, "INITIALIZE: SW %04X", m->sw);
}

int mg_initialize(mg_call *m, sks_reader *in)
{
    init_request q;
    uint8_t so[8];
    int r;

    memset(&q, 0, sizeof(q));
    if ((r = parse_init(m, in, &q)) != MG_STEP_OK)
        return r;
    if (!schsm_pack_so_pin(q.so_pin.p, q.so_pin.n, so))
        return mg_fail(m, MG_ERROR_OPTION, "the SO-PIN must be 16 hexadecimal digits");
    if ((r = mg_select(m)) == MG_STEP_OK && (r = user_pin_status(m)) == MG_STEP_OK) {
        if (m->sw != 0x6A88 && !q.force)
            r = mg_fail(m, MG_ERROR_NOT_ALLOWED,
                        "the card is initialised already (user PIN status SW %04X); wiping it needs force "
                        "and its SO-PIN",
                        m->sw);
        else
            r = send_initialize(m, &q, so);
    }
    OPENSSL_cleanse(so, sizeof(so));
    if (r == MG_STEP_OK) {
        sks_buf_reset(m->reply);
        sks_buf_byte(m->reply, MG_OK);
    }
    return r;
}

/* ---- hsmStatus ---- */

/* Firmware and options from the FCP's tag 85 (SELECT's answer). */
static void read_fcp(const sks_buf *fcp, uint8_t *major, uint8_t *minor, uint16_t *options, int *pico)
{
    const uint8_t *body, *v;
    size_t body_len, n;

    *major = *minor = 0;
    *options = 0;
    *pico = 0;
    if (!schsm_mgmt_tlv_find(fcp->data, fcp->len, 0x62, &body, &body_len, NULL, NULL)
        || !schsm_mgmt_tlv_find(body, body_len, 0x85, &v, &n, NULL, NULL) || n < 2)
        return;
    *major = v[n - 2];
    *minor = v[n - 1];
    if (n >= 3)
        *pico = v[n - 3] == 0xFF;
    if (n >= 5)
        *options = (uint16_t)(v[n - 5] << 8 | v[n - 4]);
}

static void pin_state(unsigned sw, uint8_t *state, uint8_t *tries)
{
    *tries = 0xFF;
    if (sw == 0x9000) {
        *state = 2;
    } else if ((sw & 0xFFF0) == 0x63C0) {
        *state = 1;
        *tries = sw & 0x0F;
    } else if (sw == 0x6983) {
        *state = 3;
        *tries = 0;
    } else if (sw == 0x6984) {
        *state = 4;
    } else {
        *state = 0; /* 6A88 */
    }
}

int mg_status(mg_call *m, sks_reader *in)
{
    uint8_t major, minor, user, user_tries, so, so_tries;
    uint16_t options;
    int pico, r;

    sks_reader_expect_end(in);
    if (!sks_reader_ok(in))
        return mg_fail(m, MG_ERROR_OPTION, "takes no arguments");
    if ((r = mg_select(m)) != MG_STEP_OK)
        return r;
    read_fcp(&m->resp, &major, &minor, &options, &pico);
    if ((r = user_pin_status(m)) != MG_STEP_OK)
        return r;
    pin_state(m->sw, &user, &user_tries);
    if ((r = mg_apdu(m, 0x00, 0x20, 0x00, 0x88, NULL, 0, SCHSM_LE_NONE)) != MG_STEP_OK)
        return r;
    pin_state(m->sw, &so, &so_tries);
    sks_buf_reset(m->reply);
    sks_buf_byte(m->reply, MG_OK);
    sks_buf_string(m->reply, pico ? "SmartCard-HSM (pico-hsm)" : "SmartCard-HSM");
    sks_buf_byte(m->reply, major);
    sks_buf_byte(m->reply, minor);
    sks_buf_ushort(m->reply, options);
    sks_buf_byte(m->reply, user);
    sks_buf_byte(m->reply, user_tries);
    sks_buf_byte(m->reply, so_tries);
    return MG_STEP_OK;
}
