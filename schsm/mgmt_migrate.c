/*
 * Moving a key between two SmartCard-HSMs of one key domain (docs/smartcard-hsm-keymgmt.md,
 * "Key domains"): hsmDomainWrapKey (227) is WRAP KEY (80 72 <kid> 92), the key encrypted under its
 * domain's KEK; hsmDomainUnwrapKey (228) is UNWRAP KEY (80 74 <kid> 93) on the other card, which
 * picks the domain by the blob's KCV. The blob does not carry the public key, so the caller
 * also hands in the key's CV request from the source card; before that request is stored in
 * CE<kid> and the PrKD in C4<kid>, the card signs a fresh challenge with the unwrapped key and
 * the signature must verify with the request's key — no description is written for a key the
 * card does not hold.
 */
#include <string.h>

#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/objects.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "keymgmt_formats.h"
#include "mgmt.h"

#define MAX_LABEL 64
#define CARD_ECDSA 0x70

int mg_domain_wrap_key(mg_call *m, sks_reader *in)
{
    sks_span pin = sks_get_array(in, "authorization");
    uint32_t handle = sks_get_uint(in, "keyHandle");
    int r;

    if ((r = mg_key_request_begin(m, in, pin, handle)) != MG_STEP_OK)
        return r;
    if (mg_apdu(m, 0x80, 0x72, (uint8_t)handle, 0x92, NULL, 0, SCHSM_LE_LINK) != MG_STEP_OK)
        return MG_STEP_LINK;
    if (m->sw == 0x6985)
        return mg_fail(m, MG_ERROR_NOT_ALLOWED, "key %u may not be wrapped (no 92 in its algorithm list)", handle);
    if (m->sw == 0x6A88)
        return mg_fail(m, MG_ERROR_NOT_ALLOWED, "key %u is not there, or its domain has no complete KEK", handle);
    if (m->sw != 0x9000 || m->resp.len < 8)
        return mg_fail(m, MG_ERROR_EXTERNAL, "WRAP KEY %u: SW %04X, %zu bytes", handle, m->sw, m->resp.len);
    sks_buf_reset(m->reply);
    sks_buf_byte(m->reply, MG_OK);
    sks_buf_array(m->reply, m->resp.data, m->resp.len);
    return MG_STEP_OK;
}

/* The EC public key of the source card's CV request (its curve from the request itself). */
static EVP_PKEY *request_key(mg_call *m, sks_span req, schsm_keyspec *ks)
{
    char err[256], group[64];
    EVP_PKEY *pub = NULL;
    schsm_cvc c;

    if (!schsm_cvc_parse(req.p, req.n, &c, NULL, err, sizeof(err)) || !c.authenticated
        || !schsm_cvc_public_key(&c, &c, &pub, err, sizeof(err))
        || !EVP_PKEY_get_utf8_string_param(pub, "group", group, sizeof(group), NULL)) {
        EVP_PKEY_free(pub);
        mg_fail(m, MG_ERROR_OPTION, "the key's CV request is not usable: %s", err);
        return NULL;
    }
    memset(ks, 0, sizeof(*ks));
    ks->curve_nid = OBJ_sn2nid(group);
    ks->curve = OBJ_nid2sn(ks->curve_nid);
    return pub;
}

/* SIGN a random challenge with the unwrapped key; the signature must verify with pub. */
static int key_matches(mg_call *m, uint8_t kid, EVP_PKEY *pub)
{
    uint8_t challenge[32], hash[32];
    unsigned hlen = 0;
    EVP_PKEY_CTX *ctx;
    int ok;

    if (RAND_bytes(challenge, sizeof(challenge)) != 1
        || !EVP_Digest(challenge, sizeof(challenge), hash, &hlen, EVP_sha256(), NULL))
        return mg_fail(m, MG_ERROR_INTERNAL, "no random challenge");
    if (mg_apdu(m, 0x80, 0x68, kid, CARD_ECDSA, hash, sizeof(hash), SCHSM_LE_LINK) != MG_STEP_OK)
        return MG_STEP_LINK;
    if (m->sw != 0x9000)
        return mg_fail(m, MG_ERROR_NOT_ALLOWED, "the unwrapped key %u does not sign (SW %04X): an imported key "
                       "must allow ECDSA (70)", kid, m->sw);
    ctx = EVP_PKEY_CTX_new(pub, NULL);
    ok = ctx != NULL && EVP_PKEY_verify_init(ctx) == 1
         && EVP_PKEY_verify(ctx, m->resp.data, m->resp.len, hash, sizeof(hash)) == 1;
    EVP_PKEY_CTX_free(ctx);
    if (!ok)
        return mg_fail(m, MG_ERROR_CRYPTO, "the unwrapped key is not the key of the CV request given");
    return MG_STEP_OK;
}

static int unwrap_on_card(mg_call *m, uint8_t kid, sks_span blob)
{
    if (mg_apdu(m, 0x80, 0x74, kid, 0x93, blob.p, blob.n, SCHSM_LE_NONE) != MG_STEP_OK)
        return MG_STEP_LINK;
    if (m->sw == 0x9000)
        return MG_STEP_OK;
    if (m->sw == 0x6A80 || m->sw == 0x6A86 || m->sw == 0x6400)
        return mg_fail(m, MG_ERROR_NOT_ALLOWED, "the card has no key domain whose KEK opens this blob (SW %04X)",
                       m->sw);
    return mg_fail(m, MG_ERROR_EXTERNAL, "UNWRAP KEY: SW %04X", m->sw);
}

static int describe_unwrapped(mg_call *m, uint8_t kid, sks_span label, sks_span req, const schsm_keyspec *ks,
                              EVP_PKEY *pub)
{
    unsigned char *spki = NULL;
    uint8_t id[20];
    sks_buf prkd;
    int r, n;

    sks_buf_init(&prkd);
    if (!schsm_key_id(pub, id)
        || !schsm_prkd_encode(ks, (const char *)label.p, label.n, id, sizeof(id), kid, schsm_key_bits(pub), &prkd)
        || (n = i2d_PUBKEY(pub, &spki)) <= 0) {
        sks_buf_free(&prkd);
        return mg_fail(m, MG_ERROR_INTERNAL, "cannot encode the key description");
    }
    if ((r = mg_write_file(m, 0xCE00 | kid, req.p, req.n)) == MG_STEP_OK
        && (r = mg_write_file(m, 0xC400 | kid, prkd.data, prkd.len)) == MG_STEP_OK) {
        sks_buf_reset(m->reply);
        sks_buf_byte(m->reply, MG_OK);
        sks_buf_uint(m->reply, kid);
        sks_buf_array(m->reply, spki, (size_t)n);
    }
    OPENSSL_free(spki);
    sks_buf_free(&prkd);
    return r;
}

int mg_domain_unwrap_key(mg_call *m, sks_reader *in)
{
    sks_span pin = sks_get_array(in, "authorization");
    sks_span label = sks_get_string(in, "friendlyName");
    sks_span blob = sks_get_array(in, "blob");
    sks_span req = sks_get_array(in, "request");
    schsm_keyspec ks;
    EVP_PKEY *pub;
    uint8_t kid = 0;
    int r;

    sks_reader_expect_end(in);
    if (!sks_reader_ok(in))
        return mg_fail(m, MG_ERROR_OPTION, "malformed request");
    if (label.n == 0 || label.n > MAX_LABEL)
        return mg_fail(m, MG_ERROR_OPTION, "the friendly name (the key's label) must be 1..%d bytes", MAX_LABEL);
    if (blob.n < 8)
        return mg_fail(m, MG_ERROR_OPTION, "the blob is too short");
    if ((pub = request_key(m, req, &ks)) == NULL)
        return MG_STEP_ANSWERED;
    if ((r = mg_select(m)) == MG_STEP_OK && (r = mg_verify_pin(m, pin)) == MG_STEP_OK
        && (r = mg_free_key_reference(m, &kid)) == MG_STEP_OK && (r = unwrap_on_card(m, kid, blob)) == MG_STEP_OK) {
        if ((r = key_matches(m, kid, pub)) == MG_STEP_OK)
            r = describe_unwrapped(m, kid, label, req, &ks, pub);
        else if (r != MG_STEP_LINK) {
            /* keep the refusal, drop the key that does not match its description */
            sks_buf keep;
            sks_buf_init(&keep);
            sks_buf_put(&keep, m->reply->data, m->reply->len);
            if (mg_delete_file(m, 0xCC00 | kid) == MG_STEP_LINK)
                r = MG_STEP_LINK;
            else {
                sks_buf_reset(m->reply);
                sks_buf_put(m->reply, keep.data, keep.len);
            }
            sks_buf_free(&keep);
        }
    }
    EVP_PKEY_free(pub);
    return r;
}
