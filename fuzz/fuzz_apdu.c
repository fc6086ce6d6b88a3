/*
 * libFuzzer target for the SKS card's APDU layer (tools/sks-vcard/apdu.c): the parser and
 * the state machine behind it (selection, chaining, GET RESPONSE), without sockets.
 *
 * Input: one byte of card options (bit 0: short APDUs only), then command APDUs, each
 * preceded by a 2-byte big-endian length, as vpcd would deliver them. The dispatcher is a
 * stand-in that answers with the request echoed, so replies of every size come back.
 * Every answer must be a well-formed response APDU within the card's limits and Ne.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../tools/sks-vcard/apdu.h"
#include "../transport/pcsc_apdu.h"

static void echo(void *ctx, const uint8_t *req, size_t n, sks_buf *reply)
{
    size_t times = n > 0 ? 1 + req[0] % 3 : 1, i;

    (void)ctx;
    sks_buf_reset(reply);
    sks_buf_byte(reply, 0);
    for (i = 0; i < times; i++)
        sks_buf_put(reply, req, n);
}

/* A parse that succeeds must account for every byte: header, Lc field, data, Le field. */
static void check_parse(const uint8_t *p, size_t n)
{
    sks_capdu a;
    size_t lc_field, le_field;

    if (!sks_capdu_parse(p, n, &a))
        return;
    lc_field = a.nc == 0 ? 0 : a.extended ? 3 : 1;
    le_field = a.ne == 0 ? 0 : a.extended ? (a.nc ? 2 : 3) : 1;
    if (4 + lc_field + a.nc + le_field != n || a.ne > 65536 || (!a.extended && (a.nc > 255 || a.ne > 256)))
        abort();
    if (a.nc > 0 && (a.data < p || a.data + a.nc > p + n))
        abort();
}

static void check_response(const sks_card *c, const uint8_t *apdu, size_t n, const sks_buf *out)
{
    sks_capdu a;
    size_t data;
    unsigned sw;

    if (out->failed || out->len < 2)
        abort();
    data = out->len - 2;
    sw = ((unsigned)out->data[out->len - 2] << 8) | out->data[out->len - 1];
    if (data > c->lim.max_response)
        abort();
    if (data > 0 && (!sks_capdu_parse(apdu, n, &a) || data > a.ne))
        abort(); /* never more than Ne */
    if (data > 0 && sw != SKS_SW_OK && (sw & 0xFF00) != SKS_SW_MORE)
        abort(); /* data only with success */
    if ((sw & 0xFF00) == SKS_SW_MORE && !c->response_pending)
        abort(); /* 61xx promises a pending response */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sks_card card;
    sks_card_limits lim;
    sks_buf out;
    size_t off = 1;

    if (size < 1)
        return 0;
    lim.extended = !(data[0] & 1);
    lim.max_command = lim.extended ? 65526 : 255;
    lim.max_response = lim.extended ? 65533 : 256;
    sks_card_init(&card, &lim, echo, NULL);
    sks_buf_init(&out);
    while (off + 2 <= size) {
        size_t n = ((size_t)data[off] << 8) | data[off + 1];
        off += 2;
        if (n > size - off)
            n = size - off;
        check_parse(data + off, n);
        sks_card_command(&card, data + off, n, &out);
        check_response(&card, data + off, n, &out);
        off += n;
    }
    sks_buf_free(&out);
    sks_card_free(&card);
    return 0;
}
