/*
 * The issuer emulated inside the tool (SKS spec, Appendix B: "If keys are to be created
 * entirely locally, this requires local software emulation of an issuer").
 *
 * issuer.c runs the issuer's side of a real provisioning session through the client: its own
 * ephemeral key, the session key, the device's session attestation, every MAC with the
 * sequence counter, encrypted PINs/PUKs/keys, and the key.1 and close attestations. It never
 * sees a generated private key; it certifies the public key with a local CA (issuer_ca.c).
 */
#ifndef SKS_TOOL_ISSUER_H
#define SKS_TOOL_ISSUER_H

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "../../client/sks_client.h"

#define ISSUER_ERROR_MAX 2400
/* Longest certificate path the tool sends (end-entity plus chain). */
#define ISSUER_MAX_PATH 32

/* ------------------------------------------------------------------ provisioning session */

typedef struct {
    sks_transport *t;
    uint32_t handle; /* 0 when no session is open */
    char server_session_id[33];
    char client_session_id[33];
    const char *issuer_uri;
    uint8_t session_key[32];
    uint32_t mac_counter; /* advanced on every MAC and every attestation, as the device does */
    unsigned objects;     /* numbers the session's object ids (they share one namespace) */
    sks_buf device_id;    /* the device certificate DER */
    char error[ISSUER_ERROR_MAX];
} issuer_session;

/* A key created in the session: what later MACs need. */
typedef struct {
    char id[33];
    uint32_t handle;
    sks_bytes public_key; /* SPKI DER the device generated */
    sks_buf ee;           /* end-entity certificate DER, after issuer_set_certificates */
} issuer_key;

/* PIN protection for a key; pin == NULL means none. The PIN is issuer-set (sent encrypted). */
typedef struct {
    sks_span pin;
    sks_span puk; /* empty: no PUK policy */
    uint16_t pin_retries;
    uint16_t puk_retries;
} issuer_pin_spec;

typedef struct {
    const char *friendly_name;
    const char *key_algorithm; /* device URI */
    sks_span key_parameters;
    uint8_t app_usage;
    uint8_t export_protection;
    uint8_t delete_protection;
    const char *const *endorsed; /* sorted, strictly ascending */
    size_t endorsed_count;
    issuer_pin_spec pin;
} issuer_key_spec;

/*
 * Opens a session: getDeviceInfo, createProvisioningSession with a fresh P-256 ephemeral key,
 * session key derivation, and verification of the device's attestation with its certificate.
 * server_cert (may be NULL) is sent as the session's serverCertificate.
 */
int issuer_open(issuer_session *s, sks_transport *t, X509 *server_cert);

/* PUK policy (if any), PIN policy (if any), createKeyEntry, and the key.1 attestation. */
int issuer_create_key(issuer_session *s, const issuer_key_spec *spec, issuer_key *key);

/* setCertificatePath: certs[0] is the end-entity certificate. */
int issuer_set_certificates(issuer_session *s, issuer_key *key, X509 *const *certs, size_t count);

/* importPrivateKey with the key's PKCS#8, encrypted under the session's EncryptionKey. */
int issuer_import_private_key(issuer_session *s, const issuer_key *key, EVP_PKEY *priv);

/* closeProvisioningSession and its attestation. */
int issuer_close(issuer_session *s);

/* Aborts the session if it is still open and wipes the session key. */
void issuer_end(issuer_session *s);
void issuer_key_free(issuer_key *key);

/* ------------------------------------------------------------------ local CA */

typedef struct {
    EVP_PKEY *key;
    X509 *cert;
} issuer_ca;

/*
 * The CA that certifies generated keys: key_path/cert_path if given (both or neither), else
 * "<store_path>.issuer-ca.pem" (key and certificate, 0600), created on first use.
 * pass (may be NULL) decrypts an encrypted CA key.
 */
int issuer_ca_load(issuer_ca *ca, const char *store_path, const char *key_path, const char *cert_path,
                   const char *pass, char *err, size_t errlen);
void issuer_ca_free(issuer_ca *ca);

/* Issues an end-entity certificate for `pub`, subject a DN ("CN=a,O=b" or "/CN=a/O=b"). */
X509 *issuer_ca_issue(const issuer_ca *ca, EVP_PKEY *pub, const char *subject, int days, char *err, size_t errlen);
/* The same for a subject already in X.509 form (SKIP: the subject of a PKCS#10 request). */
X509 *issuer_ca_issue_name(const issuer_ca *ca, EVP_PKEY *pub, const X509_NAME *subject, int days);
/* The same with an extendedKeyUsage (an OpenSSL config value such as "critical,1.2.3"). */
X509 *issuer_ca_issue_name_eku(const issuer_ca *ca, EVP_PKEY *pub, const X509_NAME *subject, int days,
                               const char *eku);

/* Parses a DN in either of the two forms above; NULL with a message naming the bad part. */
X509_NAME *issuer_parse_dn(const char *dn, char *err, size_t errlen);

#endif
