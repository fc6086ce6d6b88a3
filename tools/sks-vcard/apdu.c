/* The SKS card's APDU layer: parser and state machine (docs/pcsc.md). */
#include "apdu.h"

#include <string.h>

#include "../../transport/pcsc_apdu.h"

static const uint8_t SKS_AID[SKS_AID_LEN] = { SKS_AID_BYTES };

/* Short Le: 00 means 256. Extended Le: 0000 means 65536. */
static size_t short_le(uint8_t b)
{
    return b ? b : 256;
}

static size_t extended_le(const uint8_t *p)
{
    size_t v = ((size_t)p[0] << 8) | p[1];
    return v ? v : 65536;
}

/* The body after an extended marker 00: case 2E (Le only), 3E (Lc data) or 4E (Lc data Le). */
static int parse_extended(const uint8_t *body, size_t len, sks_capdu *a)
{
    size_t lc;

    a->extended = 1;
    if (len == 3) {
        a->ne = extended_le(body + 1);
        return 1;
    }
    if (len < 3)
        return 0;
    lc = ((size_t)body[1] << 8) | body[2];
    if (lc == 0)
        return 0; /* Lc 0000 is not an encoding of "no data": the APDU is malformed */
    a->data = body + 3;
    a->nc = lc;
    if (len == 3 + lc)
        return 1;
    if (len == 5 + lc) {
        a->ne = extended_le(body + 3 + lc);
        return 1;
    }
    return 0;
}

int sks_capdu_parse(const uint8_t *p, size_t n, sks_capdu *a)
{
    const uint8_t *body = p + 4;
    size_t len;

    memset(a, 0, sizeof(*a));
    if (n < 4)
        return 0;
    a->cla = p[0];
    a->ins = p[1];
    a->p1 = p[2];
    a->p2 = p[3];
    len = n - 4;
    if (len == 0)
        return 1; /* case 1 */
    if (len == 1) {
        a->ne = short_le(body[0]); /* case 2S */
        return 1;
    }
    if (body[0] == 0)
        return parse_extended(body, len, a);
    a->data = body + 1;
    a->nc = body[0];
    if (len == 1 + a->nc)
        return 1; /* case 3S */
    if (len == 2 + a->nc) {
        a->ne = short_le(body[len - 1]); /* case 4S */
        return 1;
    }
    return 0;
}

void sks_card_init(sks_card *c, const sks_card_limits *lim, sks_card_dispatch_fn fn, void *ctx)
{
    memset(c, 0, sizeof(*c));
    c->lim = *lim;
    c->dispatch = fn;
    c->dispatch_ctx = ctx;
    sks_buf_init(&c->request);
    sks_buf_init(&c->response);
}

/* Requests carry PINs and replies carry decrypted data: wipe both as soon as they are done. */
static void drop_chain(sks_card *c)
{
    sks_buf_reset(&c->request);
    c->chaining = 0;
}

static void drop_response(sks_card *c)
{
    sks_buf_reset(&c->response);
    c->response_off = 0;
    c->response_pending = 0;
}

void sks_card_reset(sks_card *c)
{
    drop_chain(c);
    drop_response(c);
    c->selected = 0;
}

void sks_card_free(sks_card *c)
{
    sks_buf_free(&c->request);
    sks_buf_free(&c->response);
}

static void put_uint32(uint8_t *p, size_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/*
 * Sends as much of the pending response as Ne and the card's limit allow. 9000 when it is
 * all out; otherwise 61xx (xx = what is left, 00 for 256 or more) and GET RESPONSE goes on.
 */
static unsigned deliver(sks_card *c, size_t ne, sks_buf *out)
{
    size_t left = c->response.len - c->response_off;
    size_t k = left;

    if (k > ne)
        k = ne;
    if (k > c->lim.max_response)
        k = c->lim.max_response;
    sks_buf_put(out, c->response.data + c->response_off, k);
    c->response_off += k;
    left -= k;
    if (left == 0) {
        drop_response(c);
        return SKS_SW_OK;
    }
    return SKS_SW_MORE | (left > 255 ? 0 : (unsigned)left);
}

static void start_response(sks_card *c)
{
    c->response_off = 0;
    c->response_pending = 1;
}

static unsigned select_application(sks_card *c, const sks_capdu *a, sks_buf *out)
{
    uint8_t info[SKS_SELECT_RESPONSE_LEN];

    if (a->p1 != 0x04 || (a->p2 != 0x00 && a->p2 != 0x0C))
        return SKS_SW_WRONG_P1P2; /* by DF name only; first occurrence, with or without data */
    if (a->nc != SKS_AID_LEN || memcmp(a->data, SKS_AID, SKS_AID_LEN) != 0)
        return SKS_SW_NOT_FOUND; /* like a real card: a failed SELECT keeps the current one */
    c->selected = 1;
    drop_chain(c);
    if (a->p2 == 0x0C)
        return SKS_SW_OK;
    info[0] = SKS_SELECT_VERSION;
    info[1] = c->lim.extended ? SKS_SELECT_FLAG_EXTENDED : 0;
    put_uint32(info + 2, c->lim.max_command);
    put_uint32(info + 6, c->lim.max_response);
    put_uint32(info + 10, SKS_APDU_MAX_REQUEST);
    sks_buf_put(&c->response, info, sizeof(info));
    start_response(c);
    return deliver(c, a->ne, out);
}

static unsigned get_response(sks_card *c, const sks_capdu *a, sks_buf *out)
{
    if (a->p1 != 0 || a->p2 != 0)
        return SKS_SW_WRONG_P1P2;
    if (!c->response_pending)
        return SKS_SW_NO_RESPONSE;
    if (a->ne == 0)
        return SKS_SW_WRONG_LENGTH;
    return deliver(c, a->ne, out);
}

/* The last part of a request arrived: run it and start sending the reply. */
static unsigned run_request(sks_card *c, const sks_capdu *a, sks_buf *out)
{
    c->chaining = 0;
    if (c->request.failed) {
        drop_chain(c);
        return SKS_SW_INTERNAL;
    }
    c->dispatch(c->dispatch_ctx, c->request.data, c->request.len, &c->response);
    drop_chain(c);
    if (c->response.failed || c->response.len == 0) {
        drop_response(c);
        return SKS_SW_INTERNAL;
    }
    start_response(c);
    return deliver(c, a->ne, out);
}

static unsigned call(sks_card *c, const sks_capdu *a, int more, sks_buf *out)
{
    if (!c->selected) {
        drop_chain(c);
        return SKS_SW_NOT_SELECTED;
    }
    if (a->p1 != 0 || a->p2 != 0) {
        drop_chain(c);
        return SKS_SW_WRONG_P1P2;
    }
    if (a->nc > SKS_APDU_MAX_REQUEST - c->request.len) {
        drop_chain(c);
        return SKS_SW_TOO_LARGE;
    }
    sks_buf_put(&c->request, a->data, a->nc);
    if (more) {
        c->chaining = 1;
        return SKS_SW_OK;
    }
    return run_request(c, a, out);
}

/* Checks the class byte: 1 and *type (0x00 or 0x80) if usable, else 0 with *sw set. */
static int check_class(uint8_t cla, uint8_t *type, unsigned *sw)
{
    *type = cla & 0xE0;
    if (cla == 0xFF || (*type != SKS_CLA_ISO && *type != SKS_CLA_PROPRIETARY)) {
        *sw = SKS_SW_CLA_UNSUPPORTED;
        return 0;
    }
    if (cla & 0x03) {
        *sw = SKS_SW_CHANNEL_UNSUPPORTED; /* only the basic logical channel */
        return 0;
    }
    if (cla & 0x0C) {
        *sw = SKS_SW_SM_UNSUPPORTED;
        return 0;
    }
    return 1;
}

/* Checks the APDU against the card's limits: extended length only if the card said so. */
static int within_limits(const sks_card *c, const sks_capdu *a)
{
    return (!a->extended || c->lim.extended) && a->nc <= c->lim.max_command;
}

static unsigned dispatch_apdu(sks_card *c, const sks_capdu *a, sks_buf *out)
{
    uint8_t type;
    unsigned sw;
    int more = (a->cla & SKS_CLA_CHAIN) != 0;

    if (!check_class(a->cla, &type, &sw))
        return sw;
    if (type == SKS_CLA_PROPRIETARY && a->ins == SKS_INS_CALL)
        return call(c, a, more, out);
    drop_chain(c); /* any other command breaks a chain off */
    if (type != SKS_CLA_ISO || (a->ins != SKS_INS_SELECT && a->ins != SKS_INS_GET_RESPONSE))
        return SKS_SW_INS_UNSUPPORTED;
    if (more)
        return SKS_SW_CHAIN_UNSUPPORTED;
    return a->ins == SKS_INS_SELECT ? select_application(c, a, out) : get_response(c, a, out);
}

static unsigned handle(sks_card *c, const uint8_t *apdu, size_t n, sks_buf *out)
{
    sks_capdu a;
    int parsed = sks_capdu_parse(apdu, n, &a);

    /* Only GET RESPONSE reads a pending response; anything else discards it (ISO 7816-4). */
    if (!parsed || a.cla != SKS_CLA_ISO || a.ins != SKS_INS_GET_RESPONSE)
        drop_response(c);
    if (!parsed || !within_limits(c, &a)) {
        drop_chain(c);
        return SKS_SW_WRONG_LENGTH;
    }
    return dispatch_apdu(c, &a, out);
}

void sks_card_command(sks_card *c, const uint8_t *apdu, size_t n, sks_buf *out)
{
    unsigned sw;

    sks_buf_reset(out);
    sw = handle(c, apdu, n, out);
    if (out->failed) {
        /* No memory for the data: answer 6F00 alone in a fresh (small) buffer. */
        sks_buf_free(out);
        drop_response(c);
        sw = SKS_SW_INTERNAL;
    }
    sks_buf_byte(out, (uint8_t)(sw >> 8));
    sks_buf_byte(out, (uint8_t)sw);
}
