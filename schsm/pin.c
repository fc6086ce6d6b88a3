/*
 * The card's user PIN, which guards every key (docs/smartcard-hsm.md, "PIN rules"):
 *  - verified once per card session; afterwards only a salted hash of the verified PIN stays
 *    in memory, and a request's PIN is compared with it in constant time, so operations send
 *    no VERIFY;
 *  - a PIN other than the verified one goes to the card (and counts like any try there);
 *  - before a VERIFY the PIN's state is known (the card is asked, with no data: costs no try,
 *    unless it answered already in this card session), so a blocked PIN is refused without
 *    spending anything (and a PIN blocked since by another application is refused by the
 *    card, which counts no try on a blocked PIN);
 *  - a wrong PIN is answered with the tries left and never retried here;
 *  - after 6982 (the card lost the verification: someone re-selected the application) the
 *    driver re-selects, re-verifies with the request's PIN and retries the command once.
 */
#include "internal.h"

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

void schsm_pin_forget(schsm_card *card)
{
    card->pin_verified = 0;
    OPENSSL_cleanse(card->pin_check, sizeof(card->pin_check));
    card->pin_sw_known = 0;
}

/* Keeps a status word that tells the user PIN's state, for schsm_pin_status. */
static void remember_pin_sw(schsm_card *card, unsigned sw)
{
    card->pin_sw_known = sw == SW_OK || SW_IS_TRIES_LEFT(sw) || sw == SW_PIN_BLOCKED;
    card->pin_sw = sw;
}

static int pin_hash(const schsm_card *card, sks_span pin, uint8_t out[32])
{
    unsigned int len = 0;

    return HMAC(EVP_sha256(), card->pin_salt, sizeof(card->pin_salt), pin.p, pin.n, out, &len) != NULL && len == 32;
}

static const char *reader_of(const schsm_ctx *c)
{
    return c->io->reader != NULL ? c->io->reader : "?";
}

static void note_tries(schsm_card *card, unsigned tries)
{
    if (tries > card->max_tries_seen)
        card->max_tries_seen = tries;
}

int schsm_pin_status(schsm_ctx *c, int *tries_left, int *blocked, int *verified)
{
    sks_buf resp;
    unsigned sw;
    int rc;

    *tries_left = -1;
    *blocked = *verified = 0;
    if (c->card->pin_sw_known) {
        sw = c->card->pin_sw;
    } else {
        sks_buf_init(&resp);
        rc = schsm_transmit(c, 0x00, 0x20, 0x00, 0x81, NULL, 0, -1, &resp, &sw);
        sks_buf_free(&resp);
        if (rc != SKS_OK)
            return rc;
        remember_pin_sw(c->card, sw);
    }
    if (sw == SW_OK)
        *verified = 1;
    else if (SW_IS_TRIES_LEFT(sw))
        note_tries(c->card, (unsigned)(*tries_left = (int)(sw & 0x0F)));
    else if (sw == SW_PIN_BLOCKED)
        *blocked = 1;
    else if (sw == SW_REF_NOT_FOUND || sw == SW_DATA_INVALID)
        return schsm_fail(c, SKS_ERROR_NOT_ALLOWED,
                          "the SmartCard-HSM in %s has no usable user PIN (not initialised, or the transport PIN is"
                          " still set): %04X",
                          reader_of(c), sw);
    else
        return schsm_fail(c, SKS_ERROR_EXTERNAL, "PIN status query failed on the card in %s: %04X %s", reader_of(c),
                          sw, schsm_sw_text(sw));
    return SKS_OK;
}

static int blocked_error(schsm_ctx *c)
{
    return schsm_fail(c, SKS_ERROR_AUTHORIZATION,
                      "the user PIN of the SmartCard-HSM in %s is blocked (no tries left); unblock it with the SO-PIN"
                      " (sks unlock / sc-hsm-tool --unlock-pin)",
                      reader_of(c));
}

static int wrong_pin_error(schsm_ctx *c, unsigned sw)
{
    unsigned left = sw & 0x0F;

    return schsm_fail(c, SKS_ERROR_AUTHORIZATION, "wrong PIN for the SmartCard-HSM in %s: %u %s left", reader_of(c),
                      left, left == 1 ? "try" : "tries");
}

static int check_pin_length(schsm_ctx *c, sks_span pin)
{
    if (pin.n == 0)
        return schsm_fail(c, SKS_ERROR_AUTHORIZATION,
                          "the keys of the SmartCard-HSM in %s need the user PIN (no PIN was given)", reader_of(c));
    if (pin.n < SCHSM_PIN_MIN || pin.n > SCHSM_PIN_MAX)
        return schsm_fail(c, SKS_ERROR_AUTHORIZATION, "a SmartCard-HSM user PIN has %d to %d characters, got %zu",
                          SCHSM_PIN_MIN, SCHSM_PIN_MAX, pin.n);
    return SKS_OK;
}

/* Sends VERIFY with pin, after the state query. */
static int verify(schsm_ctx *c, sks_span pin)
{
    schsm_card *card = c->card;
    int tries, blocked, verified, rc;
    sks_buf resp;
    unsigned sw;

    if ((rc = schsm_pin_status(c, &tries, &blocked, &verified)) != SKS_OK)
        return rc;
    if (blocked)
        return blocked_error(c);
    sks_buf_init(&resp);
    rc = schsm_transmit(c, 0x00, 0x20, 0x00, 0x81, pin.p, pin.n, -1, &resp, &sw);
    sks_buf_free(&resp);
    if (rc != SKS_OK)
        return rc;
    if (sw == SW_OK) {
        if (RAND_bytes(card->pin_salt, sizeof(card->pin_salt)) != 1 || !pin_hash(card, pin, card->pin_check))
            return schsm_fail(c, SKS_ERROR_INTERNAL, "cannot keep the PIN check value");
        card->pin_verified = 1;
        remember_pin_sw(card, sw);
        return SKS_OK;
    }
    schsm_pin_forget(card);
    remember_pin_sw(card, sw); /* the tries left, or blocked */
    if (SW_IS_TRIES_LEFT(sw))
        return wrong_pin_error(c, sw);
    if (sw == SW_PIN_BLOCKED)
        return blocked_error(c);
    return schsm_fail(c, schsm_sw_status(sw) == SKS_ERROR_AUTHORIZATION ? SKS_ERROR_EXTERNAL : schsm_sw_status(sw),
                      "VERIFY failed on the card in %s: %04X %s", reader_of(c), sw, schsm_sw_text(sw));
}

int schsm_pin_ensure(schsm_ctx *c, sks_span pin)
{
    schsm_card *card = c->card;
    uint8_t check[32];
    int same, rc;

    if ((rc = check_pin_length(c, pin)) != SKS_OK)
        return rc;
    if (!card->selected && (rc = schsm_select(c)) != SKS_OK)
        return rc;
    if (card->pin_verified) {
        if (!pin_hash(card, pin, check))
            return schsm_fail(c, SKS_ERROR_INTERNAL, "cannot hash the PIN");
        same = CRYPTO_memcmp(check, card->pin_check, sizeof(check)) == 0;
        OPENSSL_cleanse(check, sizeof(check));
        if (same)
            return SKS_OK;
    }
    return verify(c, pin);
}

int schsm_with_pin(schsm_ctx *c, sks_span pin, uint8_t cla, uint8_t ins, uint8_t p1, uint8_t p2,
                   const uint8_t *data, size_t nc, sks_buf *resp, unsigned *sw)
{
    int rc;

    if ((rc = schsm_pin_ensure(c, pin)) != SKS_OK)
        return rc;
    if ((rc = schsm_transmit(c, cla, ins, p1, p2, data, nc, 0, resp, sw)) != SKS_OK || *sw != SW_SECURITY)
        return rc;
    /* The card forgot the verification (another application selected it in between): once. */
    if ((rc = schsm_select(c)) != SKS_OK || (rc = schsm_pin_ensure(c, pin)) != SKS_OK)
        return rc;
    return schsm_transmit(c, cla, ins, p1, p2, data, nc, 0, resp, sw);
}

int schsm_change_pin(schsm_ctx *c, sks_span old_pin, sks_span new_pin)
{
    uint8_t data[2 * SCHSM_PIN_MAX];
    int tries, blocked, verified, rc;
    sks_buf resp;
    unsigned sw;

    if ((rc = check_pin_length(c, old_pin)) != SKS_OK)
        return rc;
    if (new_pin.n < SCHSM_PIN_MIN || new_pin.n > SCHSM_PIN_MAX)
        return schsm_fail(c, SKS_ERROR_OPTION, "changePin: a SmartCard-HSM user PIN has %d to %d characters, got %zu",
                          SCHSM_PIN_MIN, SCHSM_PIN_MAX, new_pin.n);
    if (!c->card->selected && (rc = schsm_select(c)) != SKS_OK)
        return rc;
    if ((rc = schsm_pin_status(c, &tries, &blocked, &verified)) != SKS_OK)
        return rc;
    if (blocked)
        return blocked_error(c);
    memcpy(data, old_pin.p, old_pin.n);
    memcpy(data + old_pin.n, new_pin.p, new_pin.n);
    sks_buf_init(&resp);
    rc = schsm_transmit(c, 0x00, 0x24, 0x00, 0x81, data, old_pin.n + new_pin.n, -1, &resp, &sw);
    OPENSSL_cleanse(data, sizeof(data));
    sks_buf_free(&resp);
    schsm_pin_forget(c->card); /* the next operation verifies the new PIN */
    if (rc != SKS_OK)
        return rc;
    if (sw == SW_OK)
        return SKS_OK;
    if (SW_IS_TRIES_LEFT(sw))
        return wrong_pin_error(c, sw);
    if (sw == SW_PIN_BLOCKED)
        return blocked_error(c);
    return schsm_fail(c, SKS_ERROR_NOT_ALLOWED, "changePin: the card in %s refused the new PIN: %04X %s", reader_of(c),
                      sw, schsm_sw_text(sw));
}

static int hex_digit(uint8_t ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

int schsm_unblock_pin(schsm_ctx *c, sks_span so_pin_hex)
{
    uint8_t so[SCHSM_SO_PIN_LEN];
    sks_buf resp;
    unsigned sw;
    size_t i;
    int rc, hi, lo;

    if (so_pin_hex.n != 2 * SCHSM_SO_PIN_LEN)
        return schsm_fail(c, SKS_ERROR_AUTHORIZATION, "unlockKey: the authorization is the SO-PIN as 16 hex digits");
    for (i = 0; i < SCHSM_SO_PIN_LEN; i++) {
        hi = hex_digit(so_pin_hex.p[2 * i]);
        lo = hex_digit(so_pin_hex.p[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            OPENSSL_cleanse(so, sizeof(so));
            return schsm_fail(c, SKS_ERROR_AUTHORIZATION, "unlockKey: the authorization is the SO-PIN as 16 hex digits");
        }
        so[i] = (uint8_t)(hi << 4 | lo);
    }
    if (!c->card->selected && (rc = schsm_select(c)) != SKS_OK) {
        OPENSSL_cleanse(so, sizeof(so));
        return rc;
    }
    sks_buf_init(&resp);
    rc = schsm_transmit(c, 0x00, 0x2C, 0x01, 0x81, so, sizeof(so), -1, &resp, &sw);
    OPENSSL_cleanse(so, sizeof(so));
    sks_buf_free(&resp);
    if (rc != SKS_OK)
        return rc;
    schsm_pin_forget(c->card);
    c->card->so_sw_known = 0; /* the SO-PIN's counter moved */
    if (sw == SW_OK)
        return SKS_OK;
    if (SW_IS_TRIES_LEFT(sw))
        return schsm_fail(c, SKS_ERROR_AUTHORIZATION, "unlockKey: wrong SO-PIN for the SmartCard-HSM in %s: %u %s left",
                          reader_of(c), sw & 0x0F, (sw & 0x0F) == 1 ? "try" : "tries");
    if (sw == SW_PIN_BLOCKED)
        return schsm_fail(c, SKS_ERROR_AUTHORIZATION, "unlockKey: the SO-PIN of the SmartCard-HSM in %s is blocked",
                          reader_of(c));
    return schsm_fail(c, SKS_ERROR_NOT_ALLOWED,
                      "unlockKey: the card in %s does not reset the PIN with the SO-PIN (%04X %s); it must be"
                      " initialised with that option",
                      reader_of(c), sw, schsm_sw_text(sw));
}
