/*
 * SmartCard-HSM key domains (docs/smartcard-hsm-keymgmt.md, "Key domains"): MANAGE KEY DOMAIN
 * (80 52 P1 <domain>) for hsmDomainStatus (222, P1 00 without data on every domain),
 * hsmKeyDomainCreate (223, P1 01: a DKEK domain of n shares) and hsmKeyDomainJoin (224, P1 02:
 * an XKEK domain from a key domain membership the group signer issued). The card checks the
 * membership's signature against its own device key; this code only passes it on.
 */
#include <string.h>

#include <openssl/crypto.h>

#include "mgmt.h"

#define INS_MANAGE_KEY_DOMAIN 0x52
#define DOMAIN_STATUS_MIN 10 /* total, missing, KCV 8 [, UID] */

enum { KD_STATUS = 0x00, KD_CREATE_DKEK = 0x01, KD_CREATE_XKEK = 0x02 };

/* One domain of a reply: byte domain, byte sharesTotal, byte sharesMissing, byte[] kcv,
 * byte[] uid (the card's status answer split up). */
static void put_domain(sks_buf *out, uint8_t domain, const uint8_t *st, size_t n)
{
    sks_buf_byte(out, domain);
    sks_buf_byte(out, st[0]);
    sks_buf_byte(out, st[1]);
    sks_buf_array(out, st + 2, 8);
    sks_buf_array(out, st + DOMAIN_STATUS_MIN, n - DOMAIN_STATUS_MIN);
}

/* Why the card refused a MANAGE KEY DOMAIN: answered. */
static int domain_refused(mg_call *m, uint8_t p1, uint8_t domain)
{
    switch (m->sw) {
    case 0x6982:
        return mg_fail(m, MG_ERROR_AUTHORIZATION, "the card wants its user PIN first");
    case 0x6A89:
        return mg_fail(m, MG_ERROR_NOT_ALLOWED, "key domain %u exists already", domain);
    case 0x6A86:
        return mg_fail(m, MG_ERROR_OPTION, "key domain %u is beyond the domains set at initialisation (sks hsm "
                       "init --key-domains)", domain);
    case 0x6A88:
        return mg_fail(m, MG_ERROR_NOT_ALLOWED, "key domain %u is not there", domain);
    case 0x6A80:
        if (p1 == KD_CREATE_XKEK)
            return mg_fail(m, MG_ERROR_NOT_ALLOWED, "the card refused the key domain membership: its signature "
                           "does not verify for this card's device key (issued for another card, or by "
                           "another signer) (SW 6A80)");
        return mg_fail(m, MG_ERROR_OPTION, "the card refused the data (SW 6A80)");
    default:
        return mg_fail(m, MG_ERROR_EXTERNAL, "MANAGE KEY DOMAIN P1 %02X domain %u: SW %04X", p1, domain, m->sw);
    }
}

/* Sends MANAGE KEY DOMAIN and answers with the domain's status. */
static int manage_domain(mg_call *m, uint8_t p1, uint8_t domain, const uint8_t *data, size_t n)
{
    if (mg_apdu(m, 0x80, INS_MANAGE_KEY_DOMAIN, p1, domain, data, n, SCHSM_LE_LINK) != MG_STEP_OK)
        return MG_STEP_LINK;
    if (m->sw != 0x9000)
        return domain_refused(m, p1, domain);
    if (m->resp.len < DOMAIN_STATUS_MIN || m->resp.len > DOMAIN_STATUS_MIN + 133)
        return mg_fail(m, MG_ERROR_EXTERNAL, "MANAGE KEY DOMAIN answered %zu bytes", m->resp.len);
    sks_buf_reset(m->reply);
    sks_buf_byte(m->reply, MG_OK);
    put_domain(m->reply, domain, m->resp.data, m->resp.len);
    return MG_STEP_OK;
}

/* SELECT, then VERIFY when a PIN is given (pico shows a DKEK's KCV only after it). */
static int open_card(mg_call *m, sks_span pin, int pin_needed)
{
    int r;

    if ((r = mg_select(m)) != MG_STEP_OK)
        return r;
    if (pin.n == 0 && !pin_needed)
        return MG_STEP_OK;
    return mg_verify_pin(m, pin);
}

int mg_domain_status(mg_call *m, sks_reader *in)
{
    sks_span pin = sks_get_array(in, "authorization");
    sks_buf list;
    unsigned d, count = 0;
    int r;

    sks_reader_expect_end(in);
    if (!sks_reader_ok(in))
        return mg_fail(m, MG_ERROR_OPTION, "malformed request");
    if ((r = open_card(m, pin, 0)) != MG_STEP_OK)
        return r;
    sks_buf_init(&list);
    /* The card does not say how many domains it was given: ask each number; an absent
     * domain answers 6A88 (6D00 for domain 0 without DKEK, 6A86 beyond the range). */
    for (d = 0; d < 255; d++) {
        if ((r = mg_apdu(m, 0x80, INS_MANAGE_KEY_DOMAIN, KD_STATUS, (uint8_t)d, NULL, 0, SCHSM_LE_LINK))
            != MG_STEP_OK)
            break;
        if (m->sw == 0x6A86 || m->sw == 0x6B00)
            break;
        if (m->sw != 0x9000)
            continue;
        if (m->resp.len < DOMAIN_STATUS_MIN || m->resp.len > DOMAIN_STATUS_MIN + 133) {
            r = mg_fail(m, MG_ERROR_EXTERNAL, "MANAGE KEY DOMAIN answered %zu bytes for domain %u", m->resp.len, d);
            break;
        }
        put_domain(&list, (uint8_t)d, m->resp.data, m->resp.len);
        count++;
    }
    if (r == MG_STEP_OK) {
        sks_buf_reset(m->reply);
        sks_buf_byte(m->reply, MG_OK);
        sks_buf_ushort(m->reply, (uint16_t)count);
        sks_buf_put(m->reply, list.data, list.len);
    }
    sks_buf_free(&list);
    return r;
}

int mg_domain_create(mg_call *m, sks_reader *in)
{
    sks_span pin = sks_get_array(in, "authorization");
    uint8_t domain = sks_get_byte(in, "domain");
    uint8_t shares = sks_get_byte(in, "dkekShares");
    int r;

    sks_reader_expect_end(in);
    if (!sks_reader_ok(in))
        return mg_fail(m, MG_ERROR_OPTION, "malformed request");
    if (shares < 1)
        return mg_fail(m, MG_ERROR_OPTION, "a DKEK domain needs 1..255 shares");
    if ((r = open_card(m, pin, 1)) != MG_STEP_OK)
        return r;
    return manage_domain(m, KD_CREATE_DKEK, domain, &shares, 1);
}

int mg_domain_join(mg_call *m, sks_reader *in)
{
    sks_span pin = sks_get_array(in, "authorization");
    uint8_t domain = sks_get_byte(in, "domain");
    sks_span kdm = sks_get_array(in, "membership");
    int r;

    sks_reader_expect_end(in);
    if (!sks_reader_ok(in))
        return mg_fail(m, MG_ERROR_OPTION, "malformed request");
    if (kdm.n == 0 || kdm.p[0] != 0x30)
        return mg_fail(m, MG_ERROR_OPTION, "a key domain membership is a 30 TLV");
    if ((r = open_card(m, pin, 1)) != MG_STEP_OK)
        return r;
    return manage_domain(m, KD_CREATE_XKEK, domain, kdm.p, kdm.n);
}
