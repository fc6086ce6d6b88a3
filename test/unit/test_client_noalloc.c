/*
 * The client's allocation-free User API calls (client/sks_client.h, sks_client_*_to) allocate
 * nothing once the connection's buffers have grown, and leave neither the PIN nor the result
 * in those buffers. Counted with OpenSSL's memory hooks, set before anything allocates, over a
 * transport that answers every call with a canned reply (status OK, a 64-byte result) and
 * records the request it saw.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "client/sks_client.h"

static long allocations;

static void *count_malloc(size_t n, const char *file, int line)
{
    (void)file;
    (void)line;
    allocations++;
    return malloc(n);
}

static void *count_realloc(void *p, size_t n, const char *file, int line)
{
    (void)file;
    (void)line;
    allocations++;
    return realloc(p, n);
}

static void plain_free(void *p, const char *file, int line)
{
    (void)file;
    (void)line;
    free(p);
}

static uint8_t seen[512];
static size_t seen_len;

static int canned_call(sks_transport *t, const uint8_t *req, size_t n, sks_buf *reply, char *err, size_t errlen)
{
    uint8_t out[3 + 64];

    (void)t;
    (void)err;
    (void)errlen;
    seen_len = n < sizeof(seen) ? n : sizeof(seen);
    memcpy(seen, req, seen_len);
    out[0] = SKS_OK;
    out[1] = 0;
    out[2] = 64;
    memset(out + 3, 0xA5, 64);
    sks_buf_put(reply, out, sizeof(out));
    return 1;
}

static int failures;

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "FAIL: %s\n", what);
        failures++;
    }
}

static int contains(const uint8_t *hay, size_t n, const char *needle)
{
    size_t m = strlen(needle), i;

    for (i = 0; i + m <= n; i++)
        if (memcmp(hay + i, needle, m) == 0)
            return 1;
    return 0;
}

int main(void)
{
    static const char PIN[] = "pin-31415926";
    sks_transport t = { canned_call, NULL, NULL };
    sks_client_buffers b;
    sks_client_error e;
    sks_user_args a = { 7, "https://webpki.github.io/sks/algorithm#ed25519", { NULL, 0 }, 0,
                        { (const uint8_t *)PIN, sizeof(PIN) - 1 } };
    uint8_t data[32] = { 1 }, out[128], small[16];
    sks_span d = { data, sizeof(data) };
    size_t len = 0;
    long before;
    sks_buf owned;
    int round;

    if (!CRYPTO_set_mem_functions(count_malloc, count_realloc, plain_free)) {
        fprintf(stderr, "cannot set OpenSSL's memory functions\n");
        return 2;
    }
    sks_client_buffers_init(&b);
    /* the first call grows the buffers */
    check(sks_client_sign_hashed_data_to(&t, &b, &a, d, out, sizeof(out), &len, &e), "first sign");
    check(contains(seen, seen_len, PIN), "the request carries the PIN");
    for (round = 0; round < 3; round++) {
        before = allocations;
        check(sks_client_sign_hashed_data_to(&t, &b, &a, d, out, sizeof(out), &len, &e), "sign");
        check(sks_client_key_agreement_to(&t, &b, &a, d, out, sizeof(out), &len, &e), "key agreement");
        check(sks_client_asymmetric_key_decrypt_to(&t, &b, &a, d, out, sizeof(out), &len, &e), "decrypt");
        check(allocations == before, "no allocation once the buffers have grown");
        check(len == 64 && out[0] == 0xA5 && out[63] == 0xA5, "the result in the caller's buffer");
    }
    check(b.req.len == 0 && b.reply.len == 0, "buffers emptied after the call");
    check(!contains(b.req.data, b.req.cap, PIN), "no PIN left in the request buffer");
    check(!contains(b.reply.data, b.reply.cap, "\xA5\xA5\xA5\xA5"), "no result left in the reply buffer");
    /* a result that does not fit: an error, the caller's buffer untouched */
    memset(small, 0x11, sizeof(small));
    check(!sks_client_sign_hashed_data_to(&t, &b, &a, d, small, sizeof(small), &len, &e)
              && e.status == SKS_CLIENT_ERROR_SPACE && small[0] == 0x11 && len == 0,
          "a result longer than the buffer fails with SKS_CLIENT_ERROR_SPACE");
    /* the counter works: the allocating form allocates */
    before = allocations;
    sks_buf_init(&owned);
    check(sks_client_sign_hashed_data(&t, &a, d, &owned, &e), "allocating sign");
    check(allocations > before, "the allocating form is counted");
    sks_buf_free(&owned);
    sks_client_buffers_free(&b);
    if (failures == 0)
        printf("ok: User API calls over reused buffers allocate nothing\n");
    return failures != 0;
}
