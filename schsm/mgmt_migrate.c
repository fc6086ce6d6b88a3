/*
 * Moving a key between two SmartCard-HSMs of one key domain (docs/smartcard-hsm-keymgmt.md,
 * "Key domains"): hsmDomainWrapKey (227) is WRAP KEY (80 72 <kid> 92), the key encrypted under its
 * domain's KEK; hsmDomainUnwrapKey (228) is UNWRAP KEY (80 74 <kid> 93) on the other card, which
 * picks the domain by the blob's KCV. The blob does not carry the public key, so the caller
 * also hands in the key's CV request from the source card, or its X.509 certificate; the card
 * signs a fresh challenge with the unwrapped key and the signature must verify with that key —
 * no description is written for a key the card does not hold. Then the PrKD goes to C4<kid> and
 * an X.509 certificate to CE<kid>: the one given, else (or with a subject) one the card signs
 * for the key (as hsmGenerateKeyPair with a subject), since the driver offers a key to the provider only with
 * a certificate.
 */
#include <string.h>

#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/objects.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "keymgmt_formats.h"
#include "mgmt.h"

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

EVP_PKEY *mg_cv_request_public_key(mg_call *m, sks_span req, schsm_keyspec *ks)
{
    char err[256] = "", group[64];
    EVP_PKEY *pub = NULL;
    schsm_cvc c;
    int ok;

    ok = schsm_cvc_parse(req.p, req.n, &c, NULL, err, sizeof(err)) && c.authenticated
         && schsm_cvc_public_key(&c, &c, &pub, err, sizeof(err));
    memset(ks, 0, sizeof(*ks));
    if (ok && EVP_PKEY_is_a(pub, "RSA")) {
        ks->is_rsa = 1;
        ks->rsa_bits = (unsigned)EVP_PKEY_get_bits(pub);
    } else if (ok && EVP_PKEY_get_utf8_string_param(pub, "group", group, sizeof(group), NULL)) {
        ks->curve_nid = OBJ_sn2nid(group);
        ks->curve = OBJ_nid2sn(ks->curve_nid);
    } else {
        ok = 0;
    }
    if (!ok) {
        EVP_PKEY_free(pub);
        mg_fail(m, MG_ERROR_OPTION, "the key's CV request is not usable: %s", err);
        return NULL;
    }
    return pub;
}

/* The public key of the key's X.509 certificate (DER, nothing after it). */
static EVP_PKEY *certificate_key(mg_call *m, sks_span cert, schsm_keyspec *ks)
{
    const unsigned char *q = cert.p;
    X509 *x = d2i_X509(NULL, &q, (long)cert.n);
    EVP_PKEY *pub = x != NULL && q == cert.p + cert.n ? X509_get_pubkey(x) : NULL;

    X509_free(x);
    if (pub == NULL || (!EVP_PKEY_is_a(pub, "RSA") && !EVP_PKEY_is_a(pub, "EC"))) {
        EVP_PKEY_free(pub);
        mg_fail(m, MG_ERROR_OPTION, "the certificate is not a DER X.509 certificate of an RSA or EC key");
        return NULL;
    }
    memset(ks, 0, sizeof(*ks));
    ks->is_rsa = EVP_PKEY_is_a(pub, "RSA");
    return pub;
}

int mg_key_matches(mg_call *m, uint8_t kid, EVP_PKEY *pub)
{
    uint8_t challenge[32];
    EVP_MD_CTX *ctx;
    int r, ok;

    if (RAND_bytes(challenge, sizeof(challenge)) != 1)
        return mg_fail(m, MG_ERROR_INTERNAL, "no random challenge");
    if ((r = mg_sign_sha256(m, kid, pub, challenge, sizeof(challenge))) != MG_STEP_OK)
        return r;
    if (m->sw != 0x9000)
        return mg_fail(m, MG_ERROR_NOT_ALLOWED, "the unwrapped key %u does not sign (SW %04X): an imported key "
                       "must allow %s", kid, m->sw, EVP_PKEY_is_a(pub, "RSA") ? "raw RSA (20)" : "ECDSA (70)");
    ctx = EVP_MD_CTX_new();
    ok = ctx != NULL && EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, pub) == 1
         && EVP_DigestVerify(ctx, m->resp.data, m->resp.len, challenge, sizeof(challenge)) == 1;
    EVP_MD_CTX_free(ctx);
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

typedef struct {
    sks_span pin, label, blob, req, cert, subject;
    uint32_t days;
    X509_NAME *name; /* the subject of the certificate the card signs; NULL: cert is stored */
} unwrap_request;

static int parse_unwrap(mg_call *m, sks_reader *in, unwrap_request *u)
{
    u->pin = sks_get_array(in, "authorization");
    u->label = sks_get_string(in, "friendlyName");
    u->blob = sks_get_array(in, "blob");
    u->req = sks_get_array(in, "request");
    u->cert = sks_get_array(in, "certificate");
    u->subject = sks_get_array(in, "subjectDER");
    u->days = sks_get_uint(in, "validityDays");
    sks_reader_expect_end(in);
    if (!sks_reader_ok(in))
        return mg_fail(m, MG_ERROR_OPTION, "malformed request");
    if (u->label.n == 0 || u->label.n > MG_MAX_LABEL)
        return mg_fail(m, MG_ERROR_OPTION, "the friendly name (the key's label) must be 1..%d bytes", MG_MAX_LABEL);
    if (u->blob.n < 8)
        return mg_fail(m, MG_ERROR_OPTION, "the blob is too short");
    if (u->req.n == 0 && u->cert.n == 0)
        return mg_fail(m, MG_ERROR_OPTION, "give the key's CV request or its X.509 certificate");
    if (u->cert.n > 0 && u->subject.n == 0)
        return MG_STEP_OK; /* the certificate given is stored */
    return mg_certificate_subject(m, u->subject, u->label.p, u->label.n, u->days, &u->name);
}

/* The key the unwrapped one must be: the CV request's, or the certificate's; given both, the
 * certificate must be for the request's key. */
static EVP_PKEY *expected_key(mg_call *m, const unwrap_request *u, schsm_keyspec *ks)
{
    EVP_PKEY *pub = NULL, *certified = NULL;
    schsm_keyspec cks;

    memset(&cks, 0, sizeof(cks));
    if (u->cert.n > 0 && (certified = certificate_key(m, u->cert, &cks)) == NULL)
        return NULL;
    if (u->req.n == 0) {
        *ks = cks;
        return certified;
    }
    if ((pub = mg_cv_request_public_key(m, u->req, ks)) != NULL && certified != NULL && EVP_PKEY_eq(pub, certified) != 1) {
        mg_fail(m, MG_ERROR_OPTION, "the certificate is not for the key of the CV request");
        EVP_PKEY_free(pub);
        pub = NULL;
    }
    EVP_PKEY_free(certified);
    return pub;
}

/* The PrKD, and in CE<kid> the certificate given or one the card signs; the answer. */
static int describe_unwrapped(mg_call *m, uint8_t kid, const unwrap_request *u, const schsm_keyspec *ks,
                              EVP_PKEY *pub)
{
    sks_buf cert;
    int r;

    sks_buf_init(&cert);
    if (u->name == NULL)
        sks_buf_put(&cert, u->cert.p, u->cert.n);
    else if ((r = mg_make_certificate(m, kid, pub, u->name, u->days, &cert)) != MG_STEP_OK)
        goto done;
    if ((r = mg_write_prkd(m, ks, u->label, kid, pub)) == MG_STEP_OK
        && (r = mg_replace_certificate(m, kid, cert.data, cert.len)) == MG_STEP_OK)
        r = mg_answer_key(m, kid, pub, &cert);
done:
    sks_buf_free(&cert);
    return r;
}

int mg_domain_unwrap_key(mg_call *m, sks_reader *in)
{
    unwrap_request u;
    schsm_keyspec ks;
    EVP_PKEY *pub = NULL;
    uint8_t kid = 0;
    int r;

    memset(&u, 0, sizeof(u));
    if ((r = parse_unwrap(m, in, &u)) != MG_STEP_OK)
        goto done;
    if ((pub = expected_key(m, &u, &ks)) == NULL) {
        r = MG_STEP_ANSWERED;
        goto done;
    }
    if ((r = mg_select(m)) == MG_STEP_OK && (r = mg_verify_pin(m, u.pin)) == MG_STEP_OK
        && (r = mg_free_key_reference(m, &kid)) == MG_STEP_OK && (r = unwrap_on_card(m, kid, u.blob)) == MG_STEP_OK) {
        /* a key that does not match its description, or whose description or certificate
         * cannot be written, is not kept */
        if ((r = mg_key_matches(m, kid, pub)) == MG_STEP_OK)
            r = describe_unwrapped(m, kid, &u, &ks, pub);
        if (r != MG_STEP_OK)
            r = mg_drop_new_key(m, kid, r);
    }
done:
    EVP_PKEY_free(pub);
    X509_NAME_free(u.name);
    return r;
}
