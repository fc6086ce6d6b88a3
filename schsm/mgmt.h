/*
 * Internals of the SmartCard-HSM key management (schsm/manage.h): the byte formats
 * (schsm/mgmt_data.c, no card needed, unit-tested by test/unit/test_schsm_mgmt.c) and the
 * APDU exchanges (schsm/mgmt_apdu.c).
 */
#ifndef SKS_SCHSM_MGMT_H
#define SKS_SCHSM_MGMT_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "schsm.h"

/* ---- mgmt_data.c: formats ---- */

/* What GENERATE ASYMMETRIC KEY PAIR is asked to make. */
typedef struct {
    int is_rsa;
    unsigned rsa_bits; /* RSA */
    int curve_nid;     /* EC: OpenSSL's NID */
    const char *curve; /* EC: OpenSSL's group name */
} schsm_keyspec;

/* A key generation URI of docs/algorithms.md the card can make: 1 and *ks, or 0. */
int schsm_keyspec_from_uri(const uint8_t *uri, size_t n, schsm_keyspec *ks);

/* One BER-TLV (tag of 1 or 2 bytes, definite length) appended to out. */
void schsm_mgmt_tlv_put(sks_buf *out, unsigned tag, const uint8_t *value, size_t n);

/* Finds the first TLV with this tag among the TLVs of p[0..n) (not descending). Bounded:
 * 0 if the list is malformed before the tag is found or the tag is absent. *tlv_start and
 * *tlv_len (optional) give the whole TLV, *value and *value_len its contents. */
int schsm_mgmt_tlv_find(const uint8_t *p, size_t n, unsigned tag, const uint8_t **value, size_t *value_len,
                   const uint8_t **tlv_start, size_t *tlv_len);

/* The C-data of GENERATE ASYMMETRIC KEY PAIR: CPI, CAR, the public key template (RSA:
 * exponent 65537 and size; EC: the curve's explicit domain parameters), CHR. 0 on failure. */
int schsm_keygen_cdata(const schsm_keyspec *ks, const char *car, const char *chr, sks_buf *out);

/* The PKCS#15 private key description (PrKD) OpenSC writes to C4<kid>: label, flags
 * private|modifiable, authId 01, iD, usage, keyReference kid, and the key's size in bits
 * (EC: field size; RSA: modulus). */
int schsm_prkd_encode(const schsm_keyspec *ks, const char *label, size_t label_len, const uint8_t *id, size_t id_len,
                      uint8_t kid, unsigned size_bits, sks_buf *out);

/* The SO-PIN: 16 hexadecimal digits packed into 8 bytes (either case). 0 if malformed. */
int schsm_pack_so_pin(const uint8_t *hex, size_t n, uint8_t out[8]);

/* The C-data of INITIALIZE DEVICE. dkek_shares 0..255 or -1 (no DKEK), key_domains 0 (none). */
typedef struct {
    uint16_t options;
    const uint8_t *user_pin;
    size_t user_pin_len;
    const uint8_t *so_pin; /* 8 packed bytes */
    uint8_t retry_limit;
    int dkek_shares;
    uint8_t key_domains;
} schsm_init_params;
int schsm_init_cdata(const schsm_init_params *p, sks_buf *out);

/* Takes the public key out of the authenticated CV request that key generation answers
 * (67 { 7F21 { 7F4E {.. 7F49 ..}, 5F37 } ...}) and verifies the request's inner signature
 * (made with the new private key over the 7F4E TLV) with it. The key must be of the kind
 * asked for (ks). 1 and *pub, or 0 with why. */
int schsm_cv_request_key(const uint8_t *p, size_t n, const schsm_keyspec *ks, EVP_PKEY **pub, char *why,
                         size_t whylen);

/* CKA_ID as OpenSC derives it: SHA-1 of the EC point (04||x||y) or of the RSA modulus. */
int schsm_key_id(EVP_PKEY *pub, uint8_t id[20]);

/* The key's size for the PrKD: EC field bits or RSA modulus bits. */
unsigned schsm_key_bits(EVP_PKEY *pub);

/* ---- mgmt_apdu.c: exchanges ---- */

/* want_response: none, Le as long as the link takes (extended 0000 or short 00), or a short
 * Le 00 (SELECT, which the card wants so). */
enum { SCHSM_LE_NONE = 0, SCHSM_LE_LINK = 1, SCHSM_LE_SHORT = 2 };

/* A command APDU (short, or extended when the data needs it or a long answer is wanted and
 * the link takes extended length) sent through io: 1 with *sw and resp, 0 if the link failed. */
int schsm_apdu(schsm_io *io, uint8_t cla, uint8_t ins, uint8_t p1, uint8_t p2, const uint8_t *data, size_t n,
               int want_response, sks_buf *resp, unsigned *sw, char *err, size_t errlen);

/* The statuses of docs/wire-format.md this code answers. */
enum {
    MG_OK = 0x00,
    MG_ERROR_AUTHORIZATION = 0x01,
    MG_ERROR_NOT_ALLOWED = 0x02,
    MG_ERROR_STORAGE = 0x03,
    MG_ERROR_CRYPTO = 0x05,
    MG_ERROR_ALGORITHM = 0x08,
    MG_ERROR_OPTION = 0x09,
    MG_ERROR_INTERNAL = 0x0A,
    MG_ERROR_EXTERNAL = 0x0B
};

/* One management call: the link, the reply being built, the last response. Steps return
 * MG_STEP_OK, MG_STEP_ANSWERED (an error reply is written) or MG_STEP_LINK (err says why). */
typedef struct {
    schsm_io *io;
    sks_buf *reply;
    char *err;
    size_t errlen;
    sks_buf resp; /* the last response data */
    unsigned sw;
    const char *method;
} mg_call;

enum { MG_STEP_LINK = -1, MG_STEP_ANSWERED = 0, MG_STEP_OK = 1 };

/* Writes an error reply "<method>: <message>". Returns MG_STEP_ANSWERED. */
int mg_fail(mg_call *m, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Sends one APDU; MG_STEP_OK when it was answered (any SW), MG_STEP_LINK otherwise. */
int mg_apdu(mg_call *m, uint8_t cla, uint8_t ins, uint8_t p1, uint8_t p2, const uint8_t *data, size_t n, int le);
/* SELECT the application; the FCP stays in m->resp. */
int mg_select(mg_call *m);
/* VERIFY the user PIN (wrong PIN, blocked, not initialised: answered). */
int mg_verify_pin(mg_call *m, sks_span pin);
/* The end of a request that names one key (handle): the request complete, the handle a key
 * reference 1..255, the application selected; _begin: and the user PIN verified. */
int mg_key_request_select(mg_call *m, sks_reader *in, uint32_t handle);
int mg_key_request_begin(mg_call *m, sks_reader *in, sks_span pin, uint32_t handle);
/* UPDATE BINARY of a whole file in chunks (creating it); DELETE FILE. */
int mg_write_file(mg_call *m, uint16_t fid, const uint8_t *data, size_t n);
int mg_delete_file(mg_call *m, uint16_t fid);
/* ENUMERATE OBJECTS: the first key reference 1..255 without a CC file. */
int mg_free_key_reference(mg_call *m, uint8_t *kid);
/* CE<kid> replaced by cert (deleted first, so nothing of a longer old file remains). */
int mg_replace_certificate(mg_call *m, uint8_t kid, const uint8_t *cert, size_t n);
/* Deletes a key just made in kid (key, PrKD, certificate) after a refusal; returns r, or
 * MG_STEP_LINK if the card went away meanwhile. */
int mg_drop_new_key(mg_call *m, uint8_t kid, int r);

/* ---- generate.c: new keys, shared with key domains and migration ---- */

/* A key domain's options for GENERATE ASYMMETRIC KEY PAIR: 91 <algorithms>, 92 01 <domain>. */
typedef struct {
    sks_span algorithms;
    uint8_t domain;
} mg_key_domain;

/* GENERATE ASYMMETRIC KEY PAIR into kid (in a key domain when dom is given); the CV request
 * stays in m->resp. */
int mg_generate_on_card(mg_call *m, const schsm_keyspec *ks, const mg_key_domain *dom, uint8_t kid);
/* After generation: the public key out of the CV request in m->resp (*pub, the caller's to
 * free; the request copied to cv), the request written to CE<kid> and the PrKD to C4<kid> (as
 * OpenSC). A request that does not verify removes the key. */
int mg_describe_generated(mg_call *m, const schsm_keyspec *ks, sks_span label, uint8_t kid, EVP_PKEY **pub,
                          sks_buf *cv);
/* The PrKD (label, iD from pub, key reference kid) written to C4<kid>. */
int mg_write_prkd(mg_call *m, const schsm_keyspec *ks, sks_span label, uint8_t kid, EVP_PKEY *pub);
/* The card's signature with key kid over SHA-256(data) in m->resp: ECDSA (DER) for an EC pub,
 * PKCS#1 v1.5 for an RSA pub. MG_STEP_OK whatever the SW (the caller checks m->sw). */
int mg_sign_sha256(mg_call *m, uint8_t kid, EVP_PKEY *pub, const uint8_t *data, size_t n);
/* A self-signed X.509 certificate (subject = issuer = name, valid `days` from now) for the
 * card's key kid whose public key is pub, signed by that key on the card and verified with pub;
 * its DER appended to der. */
int mg_make_certificate(mg_call *m, uint8_t kid, EVP_PKEY *pub, X509_NAME *name, uint32_t days, sks_buf *der);
#define MG_MAX_CERT_DAYS 36500
/* The longest key label (friendlyName, the PrKD's label) the key management writes, in bytes:
 * refused above it before any APDU, for every method that makes a key. */
#define MG_MAX_LABEL SCHSM_MAX_LABEL
#define MG_MAX_SUBJECT_DER 1024 /* keeps the certificate well inside a card file (and a backup) */
/* The subject of a certificate the card is to sign: subject_der (exactly one DER Name), else
 * CN=<label>; and days checked (1..MG_MAX_CERT_DAYS). MG_STEP_OK with *name the caller's to
 * free, else answered (ERROR_OPTION, naming what is wrong). */
int mg_certificate_subject(mg_call *m, sks_span subject_der, const uint8_t *label, size_t label_len, uint32_t days,
                           X509_NAME **name);
/* The OK reply: kid, the public key (SubjectPublicKeyInfo) and, if given, trailer as an array. */
int mg_answer_key(mg_call *m, uint8_t kid, EVP_PKEY *pub, const sks_buf *trailer);

/* The handlers (generate.c, initialize.c). */
int mg_generate(mg_call *m, sks_reader *in);
int mg_initialize(mg_call *m, sks_reader *in);
int mg_status(mg_call *m, sks_reader *in);
/* mgmt_attest.c: EF.C_DevAut and the key generation responses (220, 221) */
int mg_device_certificates(mg_call *m, sks_reader *in);
int mg_key_generation_response(mg_call *m, sks_reader *in);
/* mgmt_domain.c: MANAGE KEY DOMAIN (222-224) */
int mg_domain_status(mg_call *m, sks_reader *in);
int mg_domain_create(mg_call *m, sks_reader *in);
int mg_domain_join(mg_call *m, sks_reader *in);
/* mgmt_xkek.c: keys in a domain, DERIVE XKEK (225, 226) */
int mg_generate_domain_key(mg_call *m, sks_reader *in);
int mg_derive_xkek(mg_call *m, sks_reader *in);
/* mgmt_migrate.c: WRAP / UNWRAP KEY between cards of one XKEK domain (227, 228) */
int mg_domain_wrap_key(mg_call *m, sks_reader *in);
int mg_domain_unwrap_key(mg_call *m, sks_reader *in);
/* The public key of a key's authenticated CV request (*ks: its kind; an EC key's curve from
 * the request itself), or NULL with an error reply written. */
EVP_PKEY *mg_cv_request_public_key(mg_call *m, sks_span req, schsm_keyspec *ks);
/* The card SIGNs a random challenge with key kid; the signature must verify with pub
 * (else answered: ERROR_NOT_ALLOWED if the key does not sign, ERROR_CRYPTO if another key). */
int mg_key_matches(mg_call *m, uint8_t kid, EVP_PKEY *pub);

#endif
