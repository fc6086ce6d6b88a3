/*
 * Keys in a SmartCard-HSM key domain (docs/smartcard-hsm-keymgmt.md, "Key domains"):
 * hsmGenerateDomainKey (225) makes an EC key with the domain (tag 92) and an algorithm list
 * (tag 91) in its generation data — with list 84 (ECDH_XKEK) it is the key an XKEK domain
 * agrees on, and its CV request carries the domain UID; hsmDeriveXkek (226) hands the peer
 * card's request to DECIPHER with algorithm 84, so the card derives the domain's KEK. The host
 * verifies the peer's chain and request before it calls 226 (sks hsm xkek derive).
 */
#include <stdio.h>
#include <string.h>

#include <openssl/x509.h>

#include "mgmt.h"

#define MAX_LABEL 64
#define MAX_ALGORITHMS 16
#define ALG_DERIVE_XKEK 0x84

typedef struct {
    sks_span pin, label, uri, algorithms;
    uint8_t domain;
    schsm_keyspec ks;
} domain_key_request;

static int parse_domain_key(mg_call *m, sks_reader *in, domain_key_request *g)
{
    g->pin = sks_get_array(in, "authorization");
    g->label = sks_get_string(in, "friendlyName");
    g->uri = sks_get_uri(in, "keyAlgorithm");
    g->domain = sks_get_byte(in, "domain");
    g->algorithms = sks_get_array(in, "algorithms");
    sks_reader_expect_end(in);
    if (!sks_reader_ok(in))
        return mg_fail(m, MG_ERROR_OPTION, "malformed request");
    if (!schsm_keyspec_from_uri(g->uri.p, g->uri.n, &g->ks) || g->ks.is_rsa)
        return mg_fail(m, MG_ERROR_ALGORITHM, "a key domain key here is an EC key; %.*s is not one", (int)g->uri.n,
                       (const char *)g->uri.p);
    if (g->label.n == 0 || g->label.n > MAX_LABEL)
        return mg_fail(m, MG_ERROR_OPTION, "the friendly name (the key's label) must be 1..%d bytes", MAX_LABEL);
    if (g->algorithms.n == 0 || g->algorithms.n > MAX_ALGORITHMS)
        return mg_fail(m, MG_ERROR_OPTION, "the algorithm list must have 1..%d entries", MAX_ALGORITHMS);
    return MG_STEP_OK;
}

/* GENERATE ASYMMETRIC KEY PAIR with 91 <algorithms> and 92 01 <domain>; the CV request stays
 * in m->resp. */
static int generate_in_domain(mg_call *m, const domain_key_request *g, uint8_t kid)
{
    char chr[16];
    sks_buf cdata;
    int r;

    snprintf(chr, sizeof(chr), "UTSKS%05u", kid);
    sks_buf_init(&cdata);
    if (!schsm_keygen_cdata(&g->ks, "UTCA00001", chr, &cdata)) {
        sks_buf_free(&cdata);
        return mg_fail(m, MG_ERROR_INTERNAL, "cannot encode the key generation data");
    }
    schsm_mgmt_tlv_put(&cdata, 0x91, g->algorithms.p, g->algorithms.n);
    schsm_mgmt_tlv_put(&cdata, 0x92, &g->domain, 1);
    r = cdata.failed ? mg_fail(m, MG_ERROR_INTERNAL, "out of memory")
                     : mg_apdu(m, 0x00, 0x46, kid, 0x00, cdata.data, cdata.len, SCHSM_LE_LINK);
    sks_buf_free(&cdata);
    if (r != MG_STEP_OK)
        return r;
    if (m->sw == 0x9000)
        return MG_STEP_OK;
    if (m->sw == 0x6A88)
        return mg_fail(m, MG_ERROR_NOT_ALLOWED, "key domain %u is not there (sks hsm domain create or join)",
                       g->domain);
    if (m->sw == 0x6A81 || m->sw == 0x6A80)
        return mg_fail(m, MG_ERROR_ALGORITHM, "the card does not make this key (SW %04X)", m->sw);
    if (m->sw == 0x6A84)
        return mg_fail(m, MG_ERROR_STORAGE, "the card is full (SW 6A84)");
    return mg_fail(m, MG_ERROR_EXTERNAL, "GENERATE ASYMMETRIC KEY PAIR in domain %u: SW %04X", g->domain, m->sw);
}

/* CE<kid> keeps the CV request, C4<kid> the PrKD (as OpenSC), then the answer. */
static int describe_domain_key(mg_call *m, const domain_key_request *g, uint8_t kid)
{
    EVP_PKEY *pub = NULL;
    unsigned char *spki = NULL;
    sks_buf cv, prkd;
    uint8_t id[20];
    char why[200];
    int r, n;

    sks_buf_init(&cv);
    sks_buf_init(&prkd);
    sks_buf_put(&cv, m->resp.data, m->resp.len);
    if (cv.failed || !schsm_cv_request_key(cv.data, cv.len, &g->ks, &pub, why, sizeof(why))) {
        r = mg_delete_file(m, 0xCC00 | kid);
        if (r != MG_STEP_LINK)
            r = mg_fail(m, MG_ERROR_CRYPTO, "%s", cv.failed ? "out of memory" : why);
        goto done;
    }
    if (!schsm_key_id(pub, id)
        || !schsm_prkd_encode(&g->ks, (const char *)g->label.p, g->label.n, id, sizeof(id), kid, schsm_key_bits(pub),
                              &prkd)) {
        r = mg_fail(m, MG_ERROR_INTERNAL, "cannot encode the key description");
        goto done;
    }
    if ((r = mg_write_file(m, 0xCE00 | kid, cv.data, cv.len)) != MG_STEP_OK
        || (r = mg_write_file(m, 0xC400 | kid, prkd.data, prkd.len)) != MG_STEP_OK)
        goto done;
    if ((n = i2d_PUBKEY(pub, &spki)) <= 0) {
        r = mg_fail(m, MG_ERROR_INTERNAL, "cannot encode the public key");
        goto done;
    }
    sks_buf_reset(m->reply);
    sks_buf_byte(m->reply, MG_OK);
    sks_buf_uint(m->reply, kid);
    sks_buf_array(m->reply, spki, (size_t)n);
    sks_buf_array(m->reply, cv.data, cv.len);
    OPENSSL_free(spki);
done:
    EVP_PKEY_free(pub);
    sks_buf_free(&cv);
    sks_buf_free(&prkd);
    return r;
}

int mg_generate_domain_key(mg_call *m, sks_reader *in)
{
    domain_key_request g;
    uint8_t kid = 0;
    int r;

    memset(&g, 0, sizeof(g));
    if ((r = parse_domain_key(m, in, &g)) == MG_STEP_OK && (r = mg_select(m)) == MG_STEP_OK
        && (r = mg_verify_pin(m, g.pin)) == MG_STEP_OK && (r = mg_free_key_reference(m, &kid)) == MG_STEP_OK
        && (r = generate_in_domain(m, &g, kid)) == MG_STEP_OK)
        r = describe_domain_key(m, &g, kid);
    return r;
}

int mg_derive_xkek(mg_call *m, sks_reader *in)
{
    sks_span pin = sks_get_array(in, "authorization");
    uint32_t handle = sks_get_uint(in, "keyHandle");
    sks_span peer = sks_get_array(in, "peerRequest");
    int r;

    sks_reader_expect_end(in);
    if (!sks_reader_ok(in))
        return mg_fail(m, MG_ERROR_OPTION, "malformed request");
    if (handle < 1 || handle > 255)
        return mg_fail(m, MG_ERROR_OPTION, "no key with handle %u on a SmartCard-HSM", handle);
    if (peer.n == 0 || peer.p[0] != 0x67)
        return mg_fail(m, MG_ERROR_OPTION, "the peer's request must be an authenticated CV request (67)");
    if ((r = mg_select(m)) != MG_STEP_OK || (r = mg_verify_pin(m, pin)) != MG_STEP_OK)
        return r;
    if (mg_apdu(m, 0x80, 0x62, (uint8_t)handle, ALG_DERIVE_XKEK, peer.p, peer.n, SCHSM_LE_LINK) != MG_STEP_OK)
        return MG_STEP_LINK;
    switch (m->sw) {
    case 0x9000:
        sks_buf_reset(m->reply);
        sks_buf_byte(m->reply, MG_OK);
        return MG_STEP_OK;
    case 0x6A80:
        return mg_fail(m, MG_ERROR_NOT_ALLOWED, "the card refused the peer's request: not in this key's domain "
                       "(UID), or not a key on the same curve (SW 6A80)");
    case 0x6985:
        return mg_fail(m, MG_ERROR_NOT_ALLOWED, "key %u is not made for XKEK derivation (algorithm 84)", handle);
    case 0x6A88:
        return mg_fail(m, MG_ERROR_NOT_ALLOWED, "key %u is not in an XKEK domain, or not there", handle);
    default:
        return mg_fail(m, MG_ERROR_EXTERNAL, "DERIVE XKEK with key %u: SW %04X", handle, m->sw);
    }
}
