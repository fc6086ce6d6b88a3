/*
 * Keys in a SmartCard-HSM key domain (docs/smartcard-hsm-keymgmt.md, "Key domains"):
 * hsmGenerateDomainKey (225) makes an EC key with the domain (tag 92) and an algorithm list
 * (tag 91) in its generation data — with list 84 (ECDH_XKEK) it is the key an XKEK domain
 * agrees on, and its CV request carries the domain UID; hsmDeriveXkek (226) hands the peer
 * card's request to DECIPHER with algorithm 84, so the card derives the domain's KEK. The host
 * verifies the peer's chain and request before it calls 226 (sks hsm xkek derive).
 */
#include <string.h>

#include <openssl/x509.h>

#include "mgmt.h"

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
    if (g->label.n == 0 || g->label.n > MG_MAX_LABEL)
        return mg_fail(m, MG_ERROR_OPTION, "the friendly name (the key's label) must be 1..%d bytes", MG_MAX_LABEL);
    if (g->algorithms.n == 0 || g->algorithms.n > MAX_ALGORITHMS)
        return mg_fail(m, MG_ERROR_OPTION, "the algorithm list must have 1..%d entries", MAX_ALGORITHMS);
    return MG_STEP_OK;
}

/* The key (tag 91/92 options in its generation data) described as hsmGenerateKeyPair does;
 * the answer carries the CV request (for the peer card). */
int mg_generate_domain_key(mg_call *m, sks_reader *in)
{
    domain_key_request g;
    mg_key_domain dom;
    EVP_PKEY *pub = NULL;
    sks_buf cv;
    uint8_t kid = 0;
    int r;

    memset(&g, 0, sizeof(g));
    sks_buf_init(&cv);
    if ((r = parse_domain_key(m, in, &g)) == MG_STEP_OK) {
        dom.algorithms = g.algorithms;
        dom.domain = g.domain;
        if ((r = mg_select(m)) == MG_STEP_OK && (r = mg_verify_pin(m, g.pin)) == MG_STEP_OK
            && (r = mg_free_key_reference(m, &kid)) == MG_STEP_OK
            && (r = mg_generate_on_card(m, &g.ks, &dom, kid)) == MG_STEP_OK
            && (r = mg_describe_generated(m, &g.ks, g.label, kid, &pub, &cv)) == MG_STEP_OK)
            r = mg_answer_key(m, kid, pub, &cv);
    }
    EVP_PKEY_free(pub);
    sks_buf_free(&cv);
    return r;
}

int mg_derive_xkek(mg_call *m, sks_reader *in)
{
    sks_span pin = sks_get_array(in, "authorization");
    uint32_t handle = sks_get_uint(in, "keyHandle");
    sks_span peer = sks_get_array(in, "peerRequest");
    int r;

    if (sks_reader_ok(in) && (peer.n == 0 || peer.p[0] != 0x67))
        return mg_fail(m, MG_ERROR_OPTION, "the peer's request must be an authenticated CV request (67)");
    if ((r = mg_key_request_begin(m, in, pin, handle)) != MG_STEP_OK)
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
