/*
 * DKEK shares, key backup (WRAP KEY) and restore (UNWRAP KEY) on a SmartCard-HSM
 * (schsm/mgmt_dkek.h; APDUs in docs/smartcard-hsm-keymgmt.md).
 */
#include "mgmt_dkek.h"

#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/x509.h>

#include "keymgmt_formats.h"

#define MAX_FILE 8192       /* PrKD or certificate read back from the card */
#define MAX_CHALLENGE 1024  /* what one hsmGetChallenge returns at most */
#define SHARE_LEN 32

static int malformed(mg_call *m, sks_reader *in)
{
    return mg_fail(m, MG_ERROR_OPTION, "malformed request: %s %s", in->field ? in->field : "request",
                   in->error ? in->error : "is invalid");
}

static void hex8(const uint8_t *p, char out[17])
{
    int i;

    for (i = 0; i < 8; i++)
        snprintf(out + 2 * i, 3, "%02x", p[i]);
}

/* ---- MANAGE KEY DOMAIN P1 00: import a share / status ---- */

typedef struct {
    uint8_t total, missing, kcv[SCHSM_KCV_LEN];
} domain_state;

/* 80 52 00 <domain> [share]: the card's answer total ‖ missing ‖ KCV [‖ UID] in *st. */
static int manage_key_domain(mg_call *m, uint8_t domain, const uint8_t *share, domain_state *st)
{
    if (mg_apdu(m, 0x80, 0x52, 0x00, domain, share, share ? SHARE_LEN : 0, SCHSM_LE_LINK) != MG_STEP_OK)
        return MG_STEP_LINK;
    switch (m->sw) {
    case 0x9000:
        break;
    case 0x6D00:
    case 0x6B00:
        return mg_fail(m, MG_ERROR_NOT_ALLOWED,
                       "the card has no DKEK (initialise it with sks hsm init --dkek-shares N)");
    case 0x6A88:
        return mg_fail(m, MG_ERROR_NOT_ALLOWED, "the card has no key domain %u", domain);
    case 0x6986:
        return mg_fail(m, MG_ERROR_NOT_ALLOWED, "every DKEK share of key domain %u is imported already", domain);
    case 0x6982:
        return mg_fail(m, MG_ERROR_AUTHORIZATION, "the card wants the user PIN first");
    default:
        return mg_fail(m, MG_ERROR_EXTERNAL, "MANAGE KEY DOMAIN: SW %04X", m->sw);
    }
    if (m->resp.len < 2 + SCHSM_KCV_LEN)
        return mg_fail(m, MG_ERROR_EXTERNAL, "MANAGE KEY DOMAIN answered %zu bytes, not total, missing and KCV",
                       m->resp.len);
    st->total = m->resp.data[0];
    st->missing = m->resp.data[1];
    memcpy(st->kcv, m->resp.data + 2, SCHSM_KCV_LEN);
    return MG_STEP_OK;
}

static int answer_domain(mg_call *m, const domain_state *st)
{
    sks_buf_reset(m->reply);
    sks_buf_byte(m->reply, MG_OK);
    sks_buf_byte(m->reply, st->total);
    sks_buf_byte(m->reply, st->missing);
    sks_buf_array(m->reply, st->kcv, SCHSM_KCV_LEN);
    return MG_STEP_OK;
}

/* An empty authorization sends no VERIFY (the real card imports shares without the PIN; pico
 * reports the KCV only when it is verified). */
static int maybe_verify(mg_call *m, sks_span pin)
{
    return pin.n == 0 ? MG_STEP_OK : mg_verify_pin(m, pin);
}

int mg_dkek_import_share(mg_call *m, sks_reader *in)
{
    sks_span pin = sks_get_array(in, "authorization");
    uint8_t domain = sks_get_byte(in, "keyDomain");
    sks_span share = sks_get_array(in, "share");
    domain_state st;
    int r;

    sks_reader_expect_end(in);
    if (!sks_reader_ok(in))
        return malformed(m, in);
    if (share.n != SHARE_LEN)
        return mg_fail(m, MG_ERROR_OPTION, "a DKEK share is %d bytes, not %zu", SHARE_LEN, share.n);
    if ((r = mg_select(m)) == MG_STEP_OK && (r = maybe_verify(m, pin)) == MG_STEP_OK
        && (r = manage_key_domain(m, domain, share.p, &st)) == MG_STEP_OK)
        r = answer_domain(m, &st);
    return r;
}

int mg_key_domain_status(mg_call *m, sks_reader *in)
{
    sks_span pin = sks_get_array(in, "authorization");
    uint8_t domain = sks_get_byte(in, "keyDomain");
    domain_state st;
    int r;

    sks_reader_expect_end(in);
    if (!sks_reader_ok(in))
        return malformed(m, in);
    if ((r = mg_select(m)) == MG_STEP_OK && (r = maybe_verify(m, pin)) == MG_STEP_OK
        && (r = manage_key_domain(m, domain, NULL, &st)) == MG_STEP_OK)
        r = answer_domain(m, &st);
    return r;
}

/* ---- GET CHALLENGE ---- */

int mg_get_challenge(mg_call *m, sks_reader *in)
{
    uint16_t want = sks_get_ushort(in, "length");
    sks_buf random;
    int r = MG_STEP_OK;

    sks_reader_expect_end(in);
    if (!sks_reader_ok(in))
        return malformed(m, in);
    if (want < 1 || want > MAX_CHALLENGE)
        return mg_fail(m, MG_ERROR_OPTION, "length must be 1..%d, got %u", MAX_CHALLENGE, want);
    if ((r = mg_select(m)) != MG_STEP_OK)
        return r;
    sks_buf_init(&random);
    while (random.len < want) {
        if ((r = mg_apdu(m, 0x00, 0x84, 0x00, 0x00, NULL, 0, SCHSM_LE_SHORT)) != MG_STEP_OK)
            break;
        if (m->sw != 0x9000 || m->resp.len == 0) {
            r = mg_fail(m, MG_ERROR_EXTERNAL, "GET CHALLENGE: SW %04X, %zu bytes", m->sw, m->resp.len);
            break;
        }
        sks_buf_put(&random, m->resp.data, m->resp.len < want - random.len ? m->resp.len : want - random.len);
    }
    if (r == MG_STEP_OK) {
        sks_buf_reset(m->reply);
        sks_buf_byte(m->reply, MG_OK);
        sks_buf_array(m->reply, random.data, random.len);
    }
    OPENSSL_cleanse(random.data, random.cap);
    sks_buf_free(&random);
    return r;
}

/* ---- WRAP KEY ---- */

/* READ BINARY of a whole file (00 B1 with offset 54 02): empty if the card has no such file. */
static int read_file(mg_call *m, uint16_t fid, sks_buf *out)
{
    uint8_t off[4];

    sks_buf_reset(out);
    for (;;) {
        off[0] = 0x54;
        off[1] = 0x02;
        off[2] = (uint8_t)(out->len >> 8);
        off[3] = (uint8_t)out->len;
        if (mg_apdu(m, 0x00, 0xB1, (uint8_t)(fid >> 8), (uint8_t)fid, off, sizeof(off), SCHSM_LE_LINK) != MG_STEP_OK)
            return MG_STEP_LINK;
        if (m->sw == 0x6A82 && out->len == 0)
            return MG_STEP_OK;
        /* past the end after whole chunks: the file ended there */
        if (m->sw != 0x9000 && m->sw != 0x6282 && out->len > 0 && (m->sw == 0x6B00 || m->sw == 0x6A86 || m->sw == 0x6700))
            return MG_STEP_OK;
        if (m->sw != 0x9000 && m->sw != 0x6282)
            return mg_fail(m, MG_ERROR_EXTERNAL, "READ BINARY of file %04X: SW %04X", fid, m->sw);
        if (out->len + m->resp.len > MAX_FILE)
            return mg_fail(m, MG_ERROR_EXTERNAL, "file %04X on the card is larger than %d bytes", fid, MAX_FILE);
        sks_buf_put(out, m->resp.data, m->resp.len);
        if (m->sw == 0x6282 || m->resp.len == 0)
            return MG_STEP_OK;
    }
}

static int wrap_on_card(mg_call *m, uint8_t kid, sks_buf *blob)
{
    if (mg_apdu(m, 0x80, 0x72, kid, 0x92, NULL, 0, SCHSM_LE_LINK) != MG_STEP_OK)
        return MG_STEP_LINK;
    if (m->sw == 0x6A88 || m->sw == 0x6A82)
        return mg_fail(m, MG_ERROR_NOT_ALLOWED,
                       "WRAP KEY of key %u: SW %04X (no such key, or its key domain has no complete DKEK)", kid, m->sw);
    if (m->sw == 0x6985 || m->sw == 0x6982)
        return mg_fail(m, MG_ERROR_NOT_ALLOWED,
                       "WRAP KEY of key %u: SW %04X (the key may not be exported: its algorithm list lacks wrap, 92)",
                       kid, m->sw);
    if (m->sw != 0x9000 || m->resp.len < SCHSM_KCV_LEN + 1 + 16)
        return mg_fail(m, MG_ERROR_EXTERNAL, "WRAP KEY of key %u: SW %04X, %zu bytes", kid, m->sw, m->resp.len);
    sks_buf_reset(blob);
    sks_buf_put(blob, m->resp.data, m->resp.len);
    return MG_STEP_OK;
}

int mg_wrap_key(mg_call *m, sks_reader *in)
{
    sks_span pin = sks_get_array(in, "authorization");
    uint32_t handle = sks_get_uint(in, "keyHandle");
    sks_buf blob, prkd, cert;
    int r;

    sks_reader_expect_end(in);
    if (!sks_reader_ok(in))
        return malformed(m, in);
    if (handle < 1 || handle > 255)
        return mg_fail(m, MG_ERROR_OPTION, "no key #%u on a SmartCard-HSM (key references are 1..255)", handle);
    sks_buf_init(&blob);
    sks_buf_init(&prkd);
    sks_buf_init(&cert);
    if ((r = mg_select(m)) == MG_STEP_OK && (r = mg_verify_pin(m, pin)) == MG_STEP_OK
        && (r = wrap_on_card(m, (uint8_t)handle, &blob)) == MG_STEP_OK
        && (r = read_file(m, (uint16_t)(0xC400 | handle), &prkd)) == MG_STEP_OK
        && (r = read_file(m, (uint16_t)(0xCE00 | handle), &cert)) == MG_STEP_OK) {
        sks_buf_reset(m->reply);
        sks_buf_byte(m->reply, MG_OK);
        sks_buf_array(m->reply, blob.data, blob.len);
        sks_buf_array(m->reply, prkd.data, prkd.len);
        sks_buf_array(m->reply, cert.data, cert.len);
    }
    sks_buf_free(&blob);
    sks_buf_free(&prkd);
    sks_buf_free(&cert);
    return r;
}

/* ---- UNWRAP KEY ---- */

typedef struct {
    sks_span pin, blob, prkd, cert, name;
    sks_span subject; /* for the certificate the card signs for a CV request's key; empty: CN=<label> */
    uint32_t days;
    X509_NAME *cert_name; /* that certificate's subject, settled before anything is sent */
    sks_buf new_prkd;
    EVP_PKEY *request_key; /* the key of a CV request in the certificate's place */
    schsm_keyspec ks;
} unwrap_request;

/* The PrKD to write: the file's, for the new key reference (and renamed), or one made from the
 * certificate's public key as hsmGenerateKeyPair makes it. */
static int prkd_for(mg_call *m, unwrap_request *u, uint8_t kid)
{
    const uint8_t *label = u->name.n > 0 ? u->name.p : NULL, *p = u->cert.p;
    size_t label_len = u->name.n;
    X509 *x = NULL;
    EVP_PKEY *pub;
    schsm_keyspec ks;
    uint8_t id[20];
    int ok;

    sks_buf_reset(&u->new_prkd);
    if (u->prkd.n > 0) {
        if (!schsm_prkd_rewrite(u->prkd.p, u->prkd.n, kid, label, label_len, &u->new_prkd))
            return mg_fail(m, MG_ERROR_OPTION, "the key description (PrKD) is not a PKCS#15 private key description");
        return MG_STEP_OK;
    }
    if (label == NULL)
        return mg_fail(m, MG_ERROR_OPTION, "the key comes without a description: give it a name");
    if (u->cert.n == 0 || (x = d2i_X509(NULL, &p, (long)u->cert.n)) == NULL || p != u->cert.p + u->cert.n) {
        X509_free(x);
        return mg_fail(m, MG_ERROR_OPTION,
                       "the key comes with neither a key description nor an X.509 certificate (sks hsm wrap --cert)");
    }
    memset(&ks, 0, sizeof(ks));
    pub = X509_get0_pubkey(x);
    ks.is_rsa = pub != NULL && EVP_PKEY_is_a(pub, "RSA");
    ok = pub != NULL && schsm_key_id(pub, id)
         && schsm_prkd_encode(&ks, (const char *)label, label_len, id, sizeof(id), kid, schsm_key_bits(pub),
                              &u->new_prkd);
    X509_free(x);
    return ok ? MG_STEP_OK : mg_fail(m, MG_ERROR_OPTION, "the certificate's public key cannot be described");
}

/* Refuses, before UNWRAP is sent, a blob for another DKEK than the card's (key domain 0). */
static int check_kcv(mg_call *m, sks_span blob)
{
    domain_state st;
    char want[17], have[17];
    int r;

    if ((r = manage_key_domain(m, 0, NULL, &st)) != MG_STEP_OK)
        return r;
    if (st.missing > 0)
        return mg_fail(m, MG_ERROR_NOT_ALLOWED, "the card's DKEK is not complete: %u of %u shares missing", st.missing,
                       st.total);
    if (CRYPTO_memcmp(st.kcv, blob.p, SCHSM_KCV_LEN) != 0) {
        hex8(blob.p, want);
        hex8(st.kcv, have);
        return mg_fail(m, MG_ERROR_CRYPTO,
                       "the key is wrapped under the DKEK with KCV %s, but the card's DKEK has KCV %s: nothing sent",
                       want, have);
    }
    return MG_STEP_OK;
}

static int unwrap_on_card(mg_call *m, uint8_t kid, sks_span blob)
{
    int r;

    if (blob.n <= 255 || m->io->extended)
        r = mg_apdu(m, 0x80, 0x74, kid, 0x93, blob.p, blob.n, SCHSM_LE_NONE);
    else if ((r = mg_write_file(m, 0x2F10, blob.p, blob.n)) == MG_STEP_OK) /* staged, OpenSC >= 0.24 */
        r = mg_apdu(m, 0x80, 0x74, kid, 0x93, NULL, 0, SCHSM_LE_NONE);
    if (r != MG_STEP_OK)
        return r;
    if (m->sw == 0x9000)
        return MG_STEP_OK;
    if (m->sw == 0x6A80 || m->sw == 0x6A86 || m->sw == 0x6400 || m->sw == 0x6984)
        return mg_fail(m, MG_ERROR_CRYPTO,
                       "the card refused the wrapped key (UNWRAP KEY: SW %04X): its CMAC or contents do not check "
                       "under the card's DKEK",
                       m->sw);
    return mg_fail(m, MG_ERROR_EXTERNAL, "UNWRAP KEY into key %u: SW %04X", kid, m->sw);
}

static int parse_unwrap(mg_call *m, sks_reader *in, unwrap_request *u)
{
    u->pin = sks_get_array(in, "authorization");
    u->blob = sks_get_array(in, "wrappedKey");
    u->prkd = sks_get_array(in, "keyDescription");
    u->cert = sks_get_array(in, "certificate");
    u->name = sks_get_string(in, "friendlyName");
    u->subject = sks_get_array(in, "subjectDER");
    u->days = sks_get_uint(in, "validityDays");
    sks_reader_expect_end(in);
    if (!sks_reader_ok(in))
        return malformed(m, in);
    if (u->days < 1 || u->days > MG_MAX_CERT_DAYS)
        return mg_fail(m, MG_ERROR_OPTION, "validityDays must be 1..%d, got %u", MG_MAX_CERT_DAYS, u->days);
    if (u->name.n > MG_MAX_LABEL)
        return mg_fail(m, MG_ERROR_OPTION, "the friendly name (the key's label) must be 1..%d bytes", MG_MAX_LABEL);
    if (u->blob.n < SCHSM_KCV_LEN + 1 + 16 + 16)
        return mg_fail(m, MG_ERROR_OPTION, "the wrapped key is %zu bytes: too short for a SmartCard-HSM key blob",
                       u->blob.n);
    if (u->blob.p[8] != SCHSM_KEY_RSA && u->blob.p[8] != SCHSM_KEY_RSA_CRT && u->blob.p[8] != SCHSM_KEY_EC)
        return mg_fail(m, MG_ERROR_ALGORITHM,
                       "the wrapped key is of type %u; sks restores RSA (5, 6) and EC (12) keys only", u->blob.p[8]);
    return MG_STEP_OK;
}

/* A CV request in the certificate's place (a key generated without a certificate, backed up as
 * sks and OpenSC keep it) is not a certificate, and the driver offers the provider only keys with
 * one: its key must be the unwrapped key (the card signs a challenge), and the card signs a
 * self-signed certificate for it (subjectDER, else CN = the key's label; validityDays) that goes
 * to CE<kid> instead. */
static int certify_request_key(mg_call *m, unwrap_request *u, uint8_t kid, sks_buf *cert)
{
    int r;

    if ((r = mg_key_matches(m, kid, u->request_key)) == MG_STEP_OK)
        r = mg_make_certificate(m, kid, u->request_key, u->cert_name, u->days, cert);
    return r;
}

/* The subject of the certificate the card will sign for a CV request's key: subjectDER, else
 * CN=<the label of the PrKD to be written>; refused before anything is sent if it cannot be one. */
static int request_certificate_subject(mg_call *m, unwrap_request *u)
{
    const uint8_t *label = NULL;
    size_t label_len = 0;

    if (!schsm_prkd_label(u->new_prkd.data, u->new_prkd.len, &label, &label_len))
        label_len = 0;
    return mg_certificate_subject(m, u->subject, label, label_len, u->days, &u->cert_name);
}

/* The key of a CV request in the certificate's place, refused before anything is sent if unusable. */
static int take_request_key(mg_call *m, unwrap_request *u)
{
    if (u->cert.n == 0 || u->cert.p[0] != 0x67)
        return u->subject.n == 0 ? MG_STEP_OK
                                 : mg_fail(m, MG_ERROR_OPTION, "subjectDER is only for a key backed up with its CV "
                                                               "request; this backup carries %s",
                                           u->cert.n == 0 ? "no certificate" : "the key's certificate");
    u->request_key = mg_cv_request_public_key(m, u->cert, &u->ks);
    if (u->request_key == NULL)
        return MG_STEP_ANSWERED;
    return request_certificate_subject(m, u);
}

/* CE<kid>: the file's certificate, or one the card signs for the key of its CV request. A key
 * whose algorithm list forbids signing gets its CV request, as before (no certificate). */
static int write_certificate(mg_call *m, unwrap_request *u, uint8_t kid)
{
    sks_buf cert;
    int r = MG_STEP_OK;

    if (u->cert.n == 0)
        return MG_STEP_OK;
    sks_buf_init(&cert);
    if (u->request_key != NULL)
        r = certify_request_key(m, u, kid, &cert);
    if (u->request_key == NULL || (r == MG_STEP_ANSWERED && m->sw != 0x9000 && m->sw != 0 && u->subject.n == 0)) {
        /* no request, or the card refused to SIGN with the key (the SW of that SIGN is kept):
         * the request is stored, unless a subject was asked for (then the key is refused) */
        sks_buf_reset(&cert);
        sks_buf_put(&cert, u->cert.p, u->cert.n);
        r = MG_STEP_OK;
    }
    /* the card may have put a CV request there; the certificate replaces it */
    if (r == MG_STEP_OK)
        r = mg_replace_certificate(m, kid, cert.data, cert.len);
    sks_buf_free(&cert);
    return r;
}

int mg_unwrap_key(mg_call *m, sks_reader *in)
{
    unwrap_request u;
    uint8_t kid = 0;
    int r;

    memset(&u, 0, sizeof(u));
    sks_buf_init(&u.new_prkd);
    if ((r = parse_unwrap(m, in, &u)) == MG_STEP_OK && (r = prkd_for(m, &u, 1)) == MG_STEP_OK /* checked early */
        && (r = take_request_key(m, &u)) == MG_STEP_OK
        && (r = mg_select(m)) == MG_STEP_OK && (r = mg_verify_pin(m, u.pin)) == MG_STEP_OK
        && (r = check_kcv(m, u.blob)) == MG_STEP_OK && (r = mg_free_key_reference(m, &kid)) == MG_STEP_OK
        && (r = prkd_for(m, &u, kid)) == MG_STEP_OK && (r = mg_delete_file(m, 0xC400 | kid)) == MG_STEP_OK
        && (r = unwrap_on_card(m, kid, u.blob)) == MG_STEP_OK) {
        /* a refusal from here on (the key is not its CV request's, a file cannot be written)
         * leaves no half-restored key behind */
        if ((r = mg_write_file(m, 0xC400 | kid, u.new_prkd.data, u.new_prkd.len)) == MG_STEP_OK
            && (r = write_certificate(m, &u, kid)) == MG_STEP_OK) {
            sks_buf_reset(m->reply);
            sks_buf_byte(m->reply, MG_OK);
            sks_buf_uint(m->reply, kid);
        } else {
            r = mg_drop_new_key(m, kid, r);
        }
    }
    EVP_PKEY_free(u.request_key);
    X509_NAME_free(u.cert_name);
    sks_buf_free(&u.new_prkd);
    return r;
}

/* ---- the PrKD ---- */

/* Appends tag ‖ DER length ‖ value. */
static void put_tlv(sks_buf *out, unsigned tag, const uint8_t *v, size_t n)
{
    schsm_mgmt_tlv_put(out, tag, v, n);
}

/* commonObjectAttributes with the label replaced (or put first if absent). */
static int rewrite_common(const schsm_kmtlv *t, const uint8_t *label, size_t label_len, sks_buf *out)
{
    const uint8_t *p = t->value, *end = t->value + t->len;
    schsm_kmtlv e;
    sks_buf body;
    int seen = 0;

    sks_buf_init(&body);
    if (label == NULL) {
        sks_buf_put(out, t->tlv, t->tlvlen);
        sks_buf_free(&body);
        return 1;
    }
    while (p < end) {
        if (!schsm_kmtlv_next(&p, end, &e)) {
            sks_buf_free(&body);
            return 0;
        }
        if (e.tag == 0x0C && !seen) {
            put_tlv(&body, 0x0C, label, label_len);
            seen = 1;
        } else {
            sks_buf_put(&body, e.tlv, e.tlvlen);
        }
    }
    if (!seen) {
        sks_buf b2;
        sks_buf_init(&b2);
        put_tlv(&b2, 0x0C, label, label_len);
        sks_buf_put(&b2, body.data, body.len);
        sks_buf_free(&body);
        body = b2;
    }
    put_tlv(out, t->tag, body.data, body.len);
    sks_buf_free(&body);
    return 1;
}

/* commonKeyAttributes: iD, usage, [native], [accessFlags], [keyReference], ...: keyReference
 * replaced, or added after the fields before it. */
static int rewrite_key_attrs(const schsm_kmtlv *t, uint8_t kid, sks_buf *out)
{
    const uint8_t *p = t->value, *end = t->value + t->len;
    uint8_t ref[2] = { 0x00, kid };
    size_t ref_len = kid & 0x80 ? 2 : 1; /* INTEGER: positive */
    schsm_kmtlv e;
    sks_buf body;
    int done = 0;

    sks_buf_init(&body);
    while (p < end) {
        /* iD (OCTET STRING) comes first: a certificate in the description's place fails here */
        if (!schsm_kmtlv_next(&p, end, &e) || (body.len == 0 && e.tag != 0x04)) {
            sks_buf_free(&body);
            return 0;
        }
        if (!done && (e.tag == 0x02 || (e.tag != 0x04 && e.tag != 0x03 && e.tag != 0x01))) {
            put_tlv(&body, 0x02, ref + 2 - ref_len, ref_len);
            done = 1;
            if (e.tag == 0x02)
                continue;
        }
        sks_buf_put(&body, e.tlv, e.tlvlen);
    }
    if (!done)
        put_tlv(&body, 0x02, ref + 2 - ref_len, ref_len);
    put_tlv(out, t->tag, body.data, body.len);
    sks_buf_free(&body);
    return 1;
}

int schsm_prkd_rewrite(const uint8_t *prkd, size_t n, uint8_t kid, const uint8_t *label, size_t label_len,
                       sks_buf *out)
{
    const uint8_t *p = prkd, *end = prkd + n;
    schsm_kmtlv outer, e;
    sks_buf body;
    int i = 0, ok = 1;

    sks_buf_reset(out);
    if (!schsm_kmtlv_next(&p, end, &outer) || p != end || (outer.tag != 0x30 && outer.tag != 0xA0))
        return 0;
    sks_buf_init(&body);
    p = outer.value;
    end = outer.value + outer.len;
    for (i = 0; ok && p < end; i++) {
        if (!schsm_kmtlv_next(&p, end, &e)) {
            ok = 0;
            break;
        }
        if (i == 0)
            ok = e.tag == 0x30 && rewrite_common(&e, label, label_len, &body);
        else if (i == 1)
            ok = e.tag == 0x30 && rewrite_key_attrs(&e, kid, &body);
        else
            sks_buf_put(&body, e.tlv, e.tlvlen);
    }
    ok = ok && i >= 2;
    if (ok)
        put_tlv(out, outer.tag, body.data, body.len);
    ok = ok && !body.failed && !out->failed;
    sks_buf_free(&body);
    return ok;
}

int schsm_prkd_label(const uint8_t *prkd, size_t n, const uint8_t **label, size_t *label_len)
{
    const uint8_t *p = prkd, *end = prkd + n;
    schsm_kmtlv outer, common;

    if (!schsm_kmtlv_next(&p, end, &outer) || (outer.tag != 0x30 && outer.tag != 0xA0))
        return 0;
    p = outer.value;
    if (!schsm_kmtlv_next(&p, outer.value + outer.len, &common) || common.tag != 0x30)
        return 0;
    return schsm_mgmt_tlv_find(common.value, common.len, 0x0C, label, label_len, NULL, NULL);
}
