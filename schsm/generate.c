/*
 * hsmGenerateKeyPair (docs/wire-format.md): GENERATE ASYMMETRIC KEY PAIR into the first free
 * key reference, the CV request it answers into CE<kid> and the PKCS#15 PrKD into C4<kid>, as
 * OpenSC does, so OpenSC and sks both see the key; with a subject, a self-signed X.509
 * certificate (to-be-signed part built here, signed by the card) replaces the CV request.
 */
#include <stdio.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/x509.h>

#include "mgmt.h"

typedef struct {
    sks_span pin;
    sks_span label;
    sks_span uri;
    sks_span subject;
    uint32_t days;
    schsm_keyspec ks;
    X509_NAME *name;
} gen_request;

static int parse_request(mg_call *m, sks_reader *in, gen_request *g)
{
    g->pin = sks_get_array(in, "authorization");
    g->label = sks_get_string(in, "friendlyName");
    g->uri = sks_get_uri(in, "keyAlgorithm");
    g->subject = sks_get_array(in, "subjectDER");
    g->days = sks_get_uint(in, "validityDays");
    sks_reader_expect_end(in);
    if (!sks_reader_ok(in))
        return mg_fail(m, MG_ERROR_OPTION, "malformed request: %s %s", in->field ? in->field : "request",
                       in->error ? in->error : "is invalid");
    if (!schsm_keyspec_from_uri(g->uri.p, g->uri.n, &g->ks))
        return mg_fail(m, MG_ERROR_ALGORITHM, "a SmartCard-HSM cannot make %.*s keys", (int)g->uri.n,
                       (const char *)g->uri.p);
    if (g->label.n == 0 || g->label.n > MG_MAX_LABEL)
        return mg_fail(m, MG_ERROR_OPTION, "the friendly name (the key's label) must be 1..%d bytes", MG_MAX_LABEL);
    if (g->subject.n > 0)
        return mg_certificate_subject(m, g->subject, NULL, 0, g->days, &g->name);
    return MG_STEP_OK;
}

/* The C-data of GENERATE ASYMMETRIC KEY PAIR, with the key domain's options when there is one:
 * 91 <algorithms> and 92 01 <domain>. */
static int keygen_cdata(const schsm_keyspec *ks, const mg_key_domain *dom, uint8_t kid, sks_buf *cdata)
{
    char chr[16];

    /* CAR and CHR only name the request; OpenSC uses a test CAR likewise */
    snprintf(chr, sizeof(chr), "UTSKS%05u", kid);
    if (!schsm_keygen_cdata(ks, "UTCA00001", chr, cdata))
        return 0;
    if (dom != NULL) {
        schsm_mgmt_tlv_put(cdata, 0x91, dom->algorithms.p, dom->algorithms.n);
        schsm_mgmt_tlv_put(cdata, 0x92, &dom->domain, 1);
    }
    return !cdata->failed;
}

int mg_generate_on_card(mg_call *m, const schsm_keyspec *ks, const mg_key_domain *dom, uint8_t kid)
{
    sks_buf cdata;
    int r;

    sks_buf_init(&cdata);
    if (!keygen_cdata(ks, dom, kid, &cdata)) {
        sks_buf_free(&cdata);
        return mg_fail(m, MG_ERROR_INTERNAL, "cannot encode the key generation data");
    }
    r = mg_apdu(m, 0x00, 0x46, kid, 0x00, cdata.data, cdata.len, SCHSM_LE_LINK);
    sks_buf_free(&cdata);
    if (r != MG_STEP_OK)
        return r;
    if (m->sw == 0x9000)
        return MG_STEP_OK;
    if (dom != NULL && m->sw == 0x6A88)
        return mg_fail(m, MG_ERROR_NOT_ALLOWED, "key domain %u is not there (sks hsm domain create or join)",
                       dom->domain);
    if (m->sw == 0x6A81 || m->sw == 0x6A80)
        return mg_fail(m, MG_ERROR_ALGORITHM, "the card does not make %s keys (SW %04X)",
                       ks->is_rsa ? "these RSA" : ks->curve, m->sw);
    if (m->sw == 0x6A84)
        return mg_fail(m, MG_ERROR_STORAGE, "the card is full (SW 6A84)");
    if (m->sw == 0x6982)
        return mg_fail(m, MG_ERROR_AUTHORIZATION, "the card wants the user PIN (SW 6982)");
    if (dom != NULL)
        return mg_fail(m, MG_ERROR_EXTERNAL, "GENERATE ASYMMETRIC KEY PAIR in domain %u: SW %04X", dom->domain,
                       m->sw);
    return mg_fail(m, MG_ERROR_EXTERNAL, "GENERATE ASYMMETRIC KEY PAIR: SW %04X", m->sw);
}

/* ECDSA of the SHA-256 hash (algorithm 70, DER answer), or RSA raw (algorithm 20) over a
 * PKCS#1 v1.5 block with the SHA-256 DigestInfo. */
int mg_sign_sha256(mg_call *m, uint8_t kid, EVP_PKEY *pub, const uint8_t *tbs, size_t tbs_len)
{
    static const uint8_t SHA256_DIGEST_INFO[] = { 0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                                                  0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20 };
    uint8_t hash[32], block[512];
    size_t k = (size_t)EVP_PKEY_get_size(pub), pad;
    unsigned int hlen = 0;
    int rsa = EVP_PKEY_is_a(pub, "RSA");

    if (!EVP_Digest(tbs, tbs_len, hash, &hlen, EVP_sha256(), NULL) || hlen != sizeof(hash))
        return mg_fail(m, MG_ERROR_INTERNAL, "cannot hash the certificate");
    if (!rsa)
        return mg_apdu(m, 0x80, 0x68, kid, 0x70, hash, sizeof(hash), SCHSM_LE_LINK);
    if (k > sizeof(block) || k < sizeof(SHA256_DIGEST_INFO) + sizeof(hash) + 11)
        return mg_fail(m, MG_ERROR_INTERNAL, "unexpected RSA modulus size %zu bytes", k);
    pad = k - sizeof(SHA256_DIGEST_INFO) - sizeof(hash) - 3;
    block[0] = 0x00;
    block[1] = 0x01;
    memset(block + 2, 0xFF, pad);
    block[2 + pad] = 0x00;
    memcpy(block + 3 + pad, SHA256_DIGEST_INFO, sizeof(SHA256_DIGEST_INFO));
    memcpy(block + 3 + pad + sizeof(SHA256_DIGEST_INFO), hash, sizeof(hash));
    return mg_apdu(m, 0x80, 0x68, kid, 0x20, block, k, SCHSM_LE_LINK);
}

/* Sets the signature algorithm in the to-be-signed part and outside it (no key object of
 * OpenSSL's holds the card's private key, so X509_sign cannot do it). */
static int set_signature_algorithm(X509 *x, int rsa)
{
    const X509_ALGOR *outer = NULL;
    const ASN1_BIT_STRING *sig = NULL;
    int nid = rsa ? NID_sha256WithRSAEncryption : NID_ecdsa_with_SHA256;

    X509_get0_signature(&sig, &outer, x);
    return X509_ALGOR_set0((X509_ALGOR *)X509_get0_tbs_sigalg(x), OBJ_nid2obj(nid), rsa ? V_ASN1_NULL : V_ASN1_UNDEF,
                           NULL)
           && X509_ALGOR_set0((X509_ALGOR *)outer, OBJ_nid2obj(nid), rsa ? V_ASN1_NULL : V_ASN1_UNDEF, NULL);
}

static X509 *certificate_template(EVP_PKEY *pub, X509_NAME *name, uint32_t days)
{
    X509 *x = X509_new();
    BIGNUM *serial = BN_new();
    int ok;

    ok = x != NULL && serial != NULL && X509_set_version(x, 2)
         && BN_rand(serial, 127, BN_RAND_TOP_ONE, BN_RAND_BOTTOM_ANY)
         && BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(x)) != NULL && X509_set_subject_name(x, name)
         && X509_set_issuer_name(x, name) && X509_gmtime_adj(X509_getm_notBefore(x), 0) != NULL
         && X509_time_adj_ex(X509_getm_notAfter(x), (int)days, 0, NULL) != NULL && X509_set_pubkey(x, pub)
         && set_signature_algorithm(x, EVP_PKEY_is_a(pub, "RSA"));
    BN_free(serial);
    if (!ok) {
        X509_free(x);
        return NULL;
    }
    return x;
}

int mg_certificate_subject(mg_call *m, sks_span subject_der, const uint8_t *label, size_t label_len, uint32_t days,
                           X509_NAME **name)
{
    const unsigned char *p = subject_der.p;

    *name = NULL;
    if (subject_der.n > MG_MAX_SUBJECT_DER)
        return mg_fail(m, MG_ERROR_OPTION, "subjectDER is %zu bytes; at most %d", subject_der.n, MG_MAX_SUBJECT_DER);
    if (subject_der.n > 0) {
        *name = d2i_X509_NAME(NULL, &p, (long)subject_der.n);
        if (*name == NULL || p != subject_der.p + subject_der.n) {
            X509_NAME_free(*name);
            *name = NULL;
            return mg_fail(m, MG_ERROR_OPTION, "subjectDER is not a DER X.509 Name");
        }
    } else if (label_len == 0 || (*name = X509_NAME_new()) == NULL
               || !X509_NAME_add_entry_by_txt(*name, "CN", MBSTRING_UTF8, label, (int)label_len, -1, 0)) {
        X509_NAME_free(*name);
        *name = NULL;
        return mg_fail(m, MG_ERROR_OPTION,
                       label_len == 0 ? "no subject for the key's certificate: give subjectDER (the key has no label)"
                                      : "the key's label cannot be the CN of its certificate (over 64 characters, or "
                                        "not UTF-8): give subjectDER");
    }
    if (days < 1 || days > MG_MAX_CERT_DAYS) {
        X509_NAME_free(*name);
        *name = NULL;
        return mg_fail(m, MG_ERROR_OPTION, "validityDays must be 1..%d, got %u", MG_MAX_CERT_DAYS, days);
    }
    return MG_STEP_OK;
}

int mg_make_certificate(mg_call *m, uint8_t kid, EVP_PKEY *pub, X509_NAME *name, uint32_t days, sks_buf *der)
{
    X509 *x = certificate_template(pub, name, days);
    ASN1_BIT_STRING *sig = NULL;
    const ASN1_BIT_STRING *csig = NULL;
    unsigned char *tbs = NULL, *out = NULL;
    int tbs_len, out_len = 0, r;

    if (x == NULL || (tbs_len = i2d_re_X509_tbs(x, &tbs)) <= 0) {
        X509_free(x);
        return mg_fail(m, MG_ERROR_INTERNAL, "cannot build the certificate");
    }
    r = mg_sign_sha256(m, kid, pub, tbs, (size_t)tbs_len);
    OPENSSL_free(tbs);
    if (r == MG_STEP_OK && m->sw != 0x9000)
        r = mg_fail(m, MG_ERROR_EXTERNAL, "SIGN of the certificate: SW %04X", m->sw);
    if (r == MG_STEP_OK) {
        X509_get0_signature(&csig, NULL, x);
        sig = (ASN1_BIT_STRING *)csig;
        /* all bits used: without the flag the encoder would drop trailing zero bytes */
        sig->flags &= ~(ASN1_STRING_FLAG_BITS_LEFT | 0x07);
        sig->flags |= ASN1_STRING_FLAG_BITS_LEFT;
        if (!ASN1_BIT_STRING_set(sig, m->resp.data, (int)m->resp.len) || X509_verify(x, pub) != 1
            || (out_len = i2d_X509(x, &out)) <= 0)
            r = mg_fail(m, MG_ERROR_CRYPTO, "the card's signature of the certificate does not verify");
        else
            sks_buf_put(der, out, (size_t)out_len);
    }
    OPENSSL_free(out);
    X509_free(x);
    return r;
}

int mg_write_prkd(mg_call *m, const schsm_keyspec *ks, sks_span label, uint8_t kid, EVP_PKEY *pub)
{
    uint8_t id[20];
    sks_buf prkd;
    int r;

    sks_buf_init(&prkd);
    if (!schsm_key_id(pub, id)
        || !schsm_prkd_encode(ks, (const char *)label.p, label.n, id, sizeof(id), kid, schsm_key_bits(pub), &prkd)) {
        sks_buf_free(&prkd);
        return mg_fail(m, MG_ERROR_INTERNAL, "cannot encode the key description");
    }
    r = mg_write_file(m, 0xC400 | kid, prkd.data, prkd.len);
    sks_buf_free(&prkd);
    return r;
}

int mg_answer_key(mg_call *m, uint8_t kid, EVP_PKEY *pub, const sks_buf *trailer)
{
    unsigned char *spki = NULL;
    int n = i2d_PUBKEY(pub, &spki);

    if (n <= 0)
        return mg_fail(m, MG_ERROR_INTERNAL, "cannot encode the public key");
    sks_buf_reset(m->reply);
    sks_buf_byte(m->reply, MG_OK);
    sks_buf_uint(m->reply, kid);
    sks_buf_array(m->reply, spki, (size_t)n);
    if (trailer != NULL)
        sks_buf_array(m->reply, trailer->data, trailer->len);
    OPENSSL_free(spki);
    return MG_STEP_OK;
}

int mg_describe_generated(mg_call *m, const schsm_keyspec *ks, sks_span label, uint8_t kid, EVP_PKEY **pub,
                          sks_buf *cv)
{
    char why[200];
    int r;

    *pub = NULL;
    sks_buf_reset(cv);
    sks_buf_put(cv, m->resp.data, m->resp.len);
    if (cv->failed || !schsm_cv_request_key(cv->data, cv->len, ks, pub, why, sizeof(why))) {
        /* a key whose public half is unknown is of no use: remove it */
        r = mg_delete_file(m, 0xCC00 | kid);
        return r == MG_STEP_LINK ? r : mg_fail(m, MG_ERROR_CRYPTO, "%s", cv->failed ? "out of memory" : why);
    }
    if ((r = mg_write_file(m, 0xCE00 | kid, cv->data, cv->len)) != MG_STEP_OK)
        return r;
    return mg_write_prkd(m, ks, label, kid, *pub);
}

/* Everything after the key exists on the card; a failure leaves the key described (CV
 * request and PrKD) whenever it got that far, as OpenSC would. */
static int describe_key(mg_call *m, const gen_request *g, uint8_t kid)
{
    EVP_PKEY *pub = NULL;
    sks_buf cv, cert;
    int r;

    sks_buf_init(&cv);
    sks_buf_init(&cert);
    if ((r = mg_describe_generated(m, &g->ks, g->label, kid, &pub, &cv)) != MG_STEP_OK)
        goto done;
    if (g->name != NULL
        && ((r = mg_make_certificate(m, kid, pub, g->name, g->days, &cert)) != MG_STEP_OK
            || (r = mg_replace_certificate(m, kid, cert.data, cert.len)) != MG_STEP_OK))
        goto done;
    r = mg_answer_key(m, kid, pub, &cert);
done:
    EVP_PKEY_free(pub);
    sks_buf_free(&cv);
    sks_buf_free(&cert);
    return r;
}

int mg_generate(mg_call *m, sks_reader *in)
{
    gen_request g;
    uint8_t kid = 0;
    int r;

    memset(&g, 0, sizeof(g));
    if ((r = parse_request(m, in, &g)) == MG_STEP_OK && (r = mg_select(m)) == MG_STEP_OK
        && (r = mg_verify_pin(m, g.pin)) == MG_STEP_OK && (r = mg_free_key_reference(m, &kid)) == MG_STEP_OK
        && (r = mg_generate_on_card(m, &g.ks, NULL, kid)) == MG_STEP_OK)
        r = describe_key(m, &g, kid);
    X509_NAME_free(g.name);
    return r;
}
