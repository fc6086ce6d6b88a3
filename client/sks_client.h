/*
 * A typed C client for every method of the SKS wire format (docs/wire-format.md), over any
 * sks_transport. Each function encodes one request, makes one transport call, checks the
 * status and decodes the outputs.
 *
 * Conventions:
 *  - Every function returns 1 on success and 0 on failure; on failure `err` (may be NULL)
 *    holds the device's status and message, or one of the negative SKS_CLIENT_* codes below
 *    when the failure happened on this side of the transport.
 *  - Inputs of type byte[] are sks_span (pointer + length; {NULL, 0} is the empty array);
 *    id, uri and string inputs are NUL-terminated UTF-8.
 *  - Outputs go into caller-provided structs. Variable-length outputs are allocated with
 *    OPENSSL_malloc and released by the struct's _free function (which wipes them), or are
 *    appended to a caller-provided sks_buf (sks_buf_free wipes it). Outputs are only valid when
 *    the call succeeded; the _free functions are safe on zeroed or failed structs.
 *  - Request and reply buffers are wiped after each call: they may carry PINs, PUKs,
 *    encrypted keys or exported key material.
 */
#ifndef SKS_CLIENT_H
#define SKS_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "../transport/transport.h"

/* Failures on the client side (the device's own statuses are sks_status, 0x01-0x0D). */
#define SKS_CLIENT_ERROR_TRANSPORT (-1) /* the device could not be reached */
#define SKS_CLIENT_ERROR_REPLY (-2)     /* the reply does not decode as the method's outputs */
#define SKS_CLIENT_ERROR_ARGUMENT (-3)  /* an input does not fit the wire format */
#define SKS_CLIENT_ERROR_SPACE (-4)     /* the result does not fit the caller's output buffer */

typedef struct sks_client_error {
    int status; /* sks_status from the device, or SKS_CLIENT_ERROR_* */
    char message[2048];
} sks_client_error;

/* The English name of a status ("ERROR_MAC", "transport error", ...). */
const char *sks_client_status_name(int status);

/* Owned byte string (OPENSSL_malloc). */
typedef struct {
    uint8_t *data;
    size_t len;
} sks_bytes;

typedef struct {
    size_t count;
    sks_bytes *items;
} sks_bytes_list;

typedef struct {
    size_t count;
    char **items; /* NUL-terminated */
} sks_string_list;

void sks_bytes_list_free(sks_bytes_list *l);
void sks_string_list_free(sks_string_list *l);

/* Method ids (docs/wire-format.md). */
enum {
    SKS_METHOD_GET_DEVICE_INFO = 1,
    SKS_METHOD_CREATE_PROVISIONING_SESSION = 2,
    SKS_METHOD_CLOSE_PROVISIONING_SESSION = 3,
    SKS_METHOD_ENUMERATE_PROVISIONING_SESSIONS = 4,
    SKS_METHOD_ABORT_PROVISIONING_SESSION = 5,
    SKS_METHOD_UPDATE_KEY_MANAGEMENT_KEY = 7,
    SKS_METHOD_CREATE_PUK_POLICY = 8,
    SKS_METHOD_CREATE_PIN_POLICY = 9,
    SKS_METHOD_CREATE_KEY_ENTRY = 10,
    SKS_METHOD_GET_KEY_HANDLE = 11,
    SKS_METHOD_SET_CERTIFICATE_PATH = 12,
    SKS_METHOD_IMPORT_SYMMETRIC_KEY = 13,
    SKS_METHOD_IMPORT_PRIVATE_KEY = 14,
    SKS_METHOD_ADD_EXTENSION = 15,
    SKS_METHOD_POST_DELETE_KEY = 50,
    SKS_METHOD_POST_UNLOCK_KEY = 51,
    SKS_METHOD_POST_UPDATE_KEY = 52,
    SKS_METHOD_POST_CLONE_KEY_PROTECTION = 53,
    SKS_METHOD_ENUMERATE_KEYS = 70,
    SKS_METHOD_GET_KEY_ATTRIBUTES = 71,
    SKS_METHOD_GET_KEY_PROTECTION_INFO = 72,
    SKS_METHOD_GET_EXTENSION = 73,
    SKS_METHOD_SET_PROPERTY = 74,
    SKS_METHOD_DELETE_KEY = 80,
    SKS_METHOD_EXPORT_KEY = 81,
    SKS_METHOD_UNLOCK_KEY = 82,
    SKS_METHOD_CHANGE_PIN = 83,
    SKS_METHOD_SET_PIN = 84,
    SKS_METHOD_UPDATE_FIRMWARE = 90,
    SKS_METHOD_SIGN_HASHED_DATA = 100,
    SKS_METHOD_ASYMMETRIC_KEY_DECRYPT = 101,
    SKS_METHOD_KEY_AGREEMENT = 102,
    SKS_METHOD_PERFORM_HMAC = 103,
    SKS_METHOD_SYMMETRIC_KEY_ENCRYPT = 104,
    /* project extensions (docs/skip.md) */
    SKS_METHOD_SKIP_REQUEST = 200,
    SKS_METHOD_SKIP_IMPORT = 201,
    SKS_METHOD_FIND_KEYS_BY_CERTIFICATE = 202,
    /* project extensions for SmartCard-HSM devices (docs/wire-format.md) */
    SKS_METHOD_HSM_GENERATE_KEY_PAIR = 210,
    SKS_METHOD_HSM_INITIALIZE = 211,
    SKS_METHOD_HSM_STATUS = 212,
    SKS_METHOD_HSM_DKEK_IMPORT_SHARE = 213,
    SKS_METHOD_HSM_KEY_DOMAIN_STATUS = 214,
    SKS_METHOD_HSM_WRAP_KEY = 215,
    SKS_METHOD_HSM_UNWRAP_KEY = 216,
    SKS_METHOD_HSM_GET_CHALLENGE = 217,
    SKS_METHOD_HSM_DEVICE_CERTIFICATES = 220,
    SKS_METHOD_HSM_KEY_GENERATION_RESPONSE = 221,
    SKS_METHOD_HSM_DOMAIN_STATUS = 222,
    SKS_METHOD_HSM_KEY_DOMAIN_CREATE = 223,
    SKS_METHOD_HSM_KEY_DOMAIN_JOIN = 224,
    SKS_METHOD_HSM_GENERATE_DOMAIN_KEY = 225,
    SKS_METHOD_HSM_DERIVE_XKEK = 226,
    SKS_METHOD_HSM_DOMAIN_WRAP_KEY = 227,
    SKS_METHOD_HSM_DOMAIN_UNWRAP_KEY = 228
};

/* Values of the specification's byte enumerations. */
enum { SKS_APP_SIGNATURE = 0, SKS_APP_AUTHENTICATION = 1, SKS_APP_ENCRYPTION = 2, SKS_APP_UNIVERSAL = 3 };
enum { SKS_PIN_FORMAT_NUMERIC = 0, SKS_PIN_FORMAT_ALPHANUMERIC = 1, SKS_PIN_FORMAT_STRING = 2, SKS_PIN_FORMAT_BINARY = 3 };
enum { SKS_GROUPING_NONE = 0, SKS_GROUPING_SHARED = 1, SKS_GROUPING_SIGNATURE_PLUS_STANDARD = 2, SKS_GROUPING_UNIQUE = 3 };
enum { SKS_INPUT_ANY = 0, SKS_INPUT_PROGRAMMATIC = 1, SKS_INPUT_TRUSTED_GUI = 2 };
/* exportProtection / deleteProtection */
enum { SKS_PROTECT_NONE = 0, SKS_PROTECT_PIN = 1, SKS_PROTECT_PUK = 2, SKS_PROTECT_NEVER = 3 };
/* getKeyProtectionInfo protectionStatus bits */
#define SKS_PROTSTAT_PIN_PROTECTED 0x01
#define SKS_PROTSTAT_PUK_PROTECTED 0x02
#define SKS_PROTSTAT_PIN_BLOCKED 0x04
#define SKS_PROTSTAT_PUK_BLOCKED 0x08
/* keyBackup bits */
#define SKS_KEYBACKUP_IMPORTED 0x01
#define SKS_KEYBACKUP_EXPORTED 0x02

/* ------------------------------------------------------------------ device */

typedef struct {
    uint16_t api_level;
    uint8_t device_type;
    char *update_url;
    char *vendor_name;
    char *vendor_description;
    sks_bytes_list certificates; /* DER, device certificate first */
    sks_string_list algorithms;
    uint32_t crypto_data_size;
    uint32_t extension_data_size;
    int device_pin_support;
    int biometric_support;
} sks_device_info;

int sks_client_get_device_info(sks_transport *t, sks_device_info *out, sks_client_error *err);
void sks_device_info_free(sks_device_info *d);

/* updateFirmware: *next_url (OPENSSL_malloc) receives the next URL. */
int sks_client_update_firmware(sks_transport *t, sks_span chunk, char **next_url, sks_client_error *err);

/* ------------------------------------------------------------------ provisioning sessions */

typedef struct {
    const char *session_key_algorithm;
    int privacy_enabled;
    const char *server_session_id;
    sks_span server_ephemeral_key; /* SPKI DER */
    const char *issuer_uri;
    sks_span key_management_key; /* SPKI DER or empty */
    uint32_t client_time;
    uint16_t session_life_time;
    uint16_t session_key_limit;
    sks_span server_certificate; /* DER */
} sks_session_request;

typedef struct {
    char client_session_id[33];
    sks_bytes client_ephemeral_key; /* SPKI DER */
    sks_bytes attestation;
    uint32_t provisioning_handle;
} sks_session_reply;

int sks_client_create_provisioning_session(sks_transport *t, const sks_session_request *in, sks_session_reply *out,
                                           sks_client_error *err);
void sks_session_reply_free(sks_session_reply *r);

/* attestation: the 32-byte close attestation. */
int sks_client_close_provisioning_session(sks_transport *t, uint32_t provisioning_handle, sks_span nonce, sks_span mac,
                                          uint8_t attestation[32], sks_client_error *err);

typedef struct {
    uint32_t provisioning_handle; /* 0: no more sessions; the other fields are then empty */
    char *session_key_algorithm;
    int privacy_enabled;
    sks_bytes key_management_key;
    uint32_t client_time;
    uint32_t session_life_time;
    char *server_session_id;
    char *client_session_id;
    char *issuer_uri;
} sks_session_info;

/* The next session after `after` (0: the first) that is open (open_state=1) or closed. */
int sks_client_enumerate_provisioning_sessions(sks_transport *t, uint32_t after, int open_state,
                                               sks_session_info *out, sks_client_error *err);
void sks_session_info_free(sks_session_info *s);

int sks_client_abort_provisioning_session(sks_transport *t, uint32_t provisioning_handle, sks_client_error *err);

int sks_client_update_key_management_key(sks_transport *t, uint32_t provisioning_handle, sks_span key_management_key,
                                         sks_span authorization, sks_client_error *err);

/* ------------------------------------------------------------------ policies and keys */

typedef struct {
    uint32_t provisioning_handle;
    const char *id;
    sks_span encrypted_puk;
    uint8_t format;
    uint16_t retry_limit;
    sks_span mac;
} sks_puk_policy_args;

int sks_client_create_puk_policy(sks_transport *t, const sks_puk_policy_args *a, uint32_t *puk_policy_handle,
                                 sks_client_error *err);

typedef struct {
    uint32_t provisioning_handle;
    const char *id;
    uint32_t puk_policy_handle; /* 0: none */
    int user_defined;
    int user_modifiable;
    uint8_t format;
    uint16_t retry_limit;
    uint8_t grouping;
    uint8_t pattern_restrictions;
    uint16_t min_length;
    uint16_t max_length;
    uint8_t input_method;
    sks_span mac;
} sks_pin_policy_args;

int sks_client_create_pin_policy(sks_transport *t, const sks_pin_policy_args *a, uint32_t *pin_policy_handle,
                                 sks_client_error *err);

typedef struct {
    uint32_t provisioning_handle;
    const char *id;
    const char *key_entry_algorithm;
    sks_span server_seed;
    int device_pin_protection;
    uint32_t pin_policy_handle; /* 0: none */
    sks_span pin_value;         /* encrypted (issuer-set) or clear (user-defined) */
    int enable_pin_caching;
    uint8_t biometric_protection;
    uint8_t export_protection;
    uint8_t delete_protection;
    uint8_t app_usage;
    const char *friendly_name;
    const char *key_algorithm;
    sks_span key_parameters;
    const char *const *endorsed_algorithms; /* sorted ascending */
    size_t endorsed_count;
    sks_span mac;
} sks_key_entry_args;

typedef struct {
    uint32_t key_handle;
    sks_bytes public_key; /* SPKI DER */
    uint8_t attestation[32];
} sks_key_entry_reply;

int sks_client_create_key_entry(sks_transport *t, const sks_key_entry_args *a, sks_key_entry_reply *out,
                                sks_client_error *err);
void sks_key_entry_reply_free(sks_key_entry_reply *r);

int sks_client_get_key_handle(sks_transport *t, uint32_t provisioning_handle, const char *id, uint32_t *key_handle,
                              sks_client_error *err);

/* certificates: DER, end-entity first. */
int sks_client_set_certificate_path(sks_transport *t, uint32_t key_handle, const sks_span *certificates, size_t count,
                                    sks_span mac, sks_client_error *err);

int sks_client_import_symmetric_key(sks_transport *t, uint32_t key_handle, sks_span encrypted_key, sks_span mac,
                                    sks_client_error *err);
int sks_client_import_private_key(sks_transport *t, uint32_t key_handle, sks_span encrypted_key, sks_span mac,
                                  sks_client_error *err);

int sks_client_add_extension(sks_transport *t, uint32_t key_handle, const char *type, uint8_t sub_type,
                             const char *qualifier, sks_span extension_data, sks_span mac, sks_client_error *err);

/* ------------------------------------------------------------------ post-provisioning */

int sks_client_post_delete_key(sks_transport *t, uint32_t provisioning_handle, uint32_t target_key_handle,
                               sks_span authorization, sks_span mac, sks_client_error *err);
int sks_client_post_unlock_key(sks_transport *t, uint32_t provisioning_handle, uint32_t target_key_handle,
                               sks_span authorization, sks_span mac, sks_client_error *err);
int sks_client_post_update_key(sks_transport *t, uint32_t key_handle, uint32_t target_key_handle,
                               sks_span authorization, sks_span mac, sks_client_error *err);
int sks_client_post_clone_key_protection(sks_transport *t, uint32_t key_handle, uint32_t target_key_handle,
                                         sks_span authorization, sks_span mac, sks_client_error *err);

/* ------------------------------------------------------------------ key queries */

/* The next provisioned key after `after` (0: the first). *key_handle = 0 at the end. */
int sks_client_enumerate_keys(sks_transport *t, uint32_t after, uint32_t *key_handle, uint32_t *provisioning_handle,
                              sks_client_error *err);

typedef struct {
    uint16_t symmetric_key_length; /* 0 for asymmetric keys */
    sks_bytes_list certificates;   /* DER, end-entity first */
    uint8_t app_usage;
    char *friendly_name;
    sks_string_list endorsed_algorithms;
    sks_string_list extension_types;
} sks_key_attributes;

int sks_client_get_key_attributes(sks_transport *t, uint32_t key_handle, sks_key_attributes *out,
                                  sks_client_error *err);

/* findKeysByCertificate (project extension): the keys enumerateKeys lists whose end-entity
 * certificate has this SHA-256, ascending, into key_handles (room for max); *count how many.
 * A device without the method answers SKS_ERROR_OPTION (unknown method id) or
 * SKS_ERROR_NOT_AVAILABLE: enumerate the keys instead. */
int sks_client_find_keys_by_certificate(sks_transport *t, const uint8_t sha256[32], uint32_t *key_handles,
                                        size_t max, size_t *count, sks_client_error *err);
void sks_key_attributes_free(sks_key_attributes *a);

typedef struct {
    uint8_t protection_status; /* SKS_PROTSTAT_* bits */
    uint8_t puk_format;
    uint16_t puk_retry_limit;
    uint16_t puk_error_count;
    int user_defined;
    int user_modifiable;
    uint8_t format;
    uint16_t retry_limit;
    uint8_t grouping;
    uint8_t pattern_restrictions;
    uint16_t min_length;
    uint16_t max_length;
    uint8_t input_method;
    uint16_t pin_error_count;
    int enable_pin_caching;
    uint8_t biometric_protection;
    uint8_t export_protection;
    uint8_t delete_protection;
    uint8_t key_backup; /* SKS_KEYBACKUP_* bits */
} sks_key_protection_info;

int sks_client_get_key_protection_info(sks_transport *t, uint32_t key_handle, sks_key_protection_info *out,
                                       sks_client_error *err);

typedef struct {
    uint8_t sub_type;
    char *qualifier;
    sks_bytes data;
} sks_extension;

int sks_client_get_extension(sks_transport *t, uint32_t key_handle, const char *type, sks_extension *out,
                             sks_client_error *err);
void sks_extension_free(sks_extension *e);

int sks_client_set_property(sks_transport *t, uint32_t key_handle, const char *type, const char *name,
                            const char *value, sks_client_error *err);

/* ------------------------------------------------------------------ key management */

/* authorization: the PIN or PUK the key's delete/export protection asks for, else empty. */
int sks_client_delete_key(sks_transport *t, uint32_t key_handle, sks_span authorization, sks_client_error *err);
/* Appends the exported key (PKCS#8 DER, or the raw symmetric key) to `key`. */
int sks_client_export_key(sks_transport *t, uint32_t key_handle, sks_span authorization, sks_buf *key,
                          sks_client_error *err);
/* authorization: the PUK. */
int sks_client_unlock_key(sks_transport *t, uint32_t key_handle, sks_span authorization, sks_client_error *err);
/* authorization: the current PIN. */
int sks_client_change_pin(sks_transport *t, uint32_t key_handle, sks_span authorization, sks_span new_pin,
                          sks_client_error *err);
/* authorization: the PUK. */
int sks_client_set_pin(sks_transport *t, uint32_t key_handle, sks_span authorization, sks_span new_pin,
                       sks_client_error *err);

/* ------------------------------------------------------------------ User API */

/* The arguments every User API method starts with. */
typedef struct {
    uint32_t key_handle;
    const char *algorithm;
    sks_span parameters;
    int biometric_auth;
    sks_span authorization; /* the PIN, or empty */
} sks_user_args;

/* Each appends its result to `result`. */
int sks_client_sign_hashed_data(sks_transport *t, const sks_user_args *a, sks_span data, sks_buf *result,
                                sks_client_error *err);
int sks_client_asymmetric_key_decrypt(sks_transport *t, const sks_user_args *a, sks_span data, sks_buf *result,
                                      sks_client_error *err);
/* public_key: the peer's SPKI DER. */
int sks_client_key_agreement(sks_transport *t, const sks_user_args *a, sks_span public_key, sks_buf *result,
                             sks_client_error *err);
int sks_client_perform_hmac(sks_transport *t, const sks_user_args *a, sks_span data, sks_buf *result,
                            sks_client_error *err);
/* mode: 1 encrypt, 0 decrypt. */
int sks_client_symmetric_key_encrypt(sks_transport *t, const sks_user_args *a, int mode, sks_span data,
                                     sks_buf *result, sks_client_error *err);

/* The User API calls an application makes on every operation, without allocating: the
 * request is built in, and the reply read from, buffers kept with the connection and reused
 * from call to call (wiped after each: they carry the PIN and the result), and the result is
 * copied into the caller's out[size], *out_len receiving its length. A result longer than
 * size fails with SKS_CLIENT_ERROR_SPACE. One sks_client_buffers serves one call at a time:
 * the caller serialises calls as it does for the transport. */
typedef struct {
    sks_buf req;
    sks_buf reply;
} sks_client_buffers;

void sks_client_buffers_init(sks_client_buffers *b);
/* Wipes and frees the storage. */
void sks_client_buffers_free(sks_client_buffers *b);

int sks_client_sign_hashed_data_to(sks_transport *t, sks_client_buffers *b, const sks_user_args *a, sks_span data,
                                   uint8_t *out, size_t size, size_t *out_len, sks_client_error *err);
int sks_client_asymmetric_key_decrypt_to(sks_transport *t, sks_client_buffers *b, const sks_user_args *a,
                                         sks_span data, uint8_t *out, size_t size, size_t *out_len,
                                         sks_client_error *err);
/* public_key: the peer's SPKI DER. */
int sks_client_key_agreement_to(sks_transport *t, sks_client_buffers *b, const sks_user_args *a, sks_span public_key,
                                uint8_t *out, size_t size, size_t *out_len, sks_client_error *err);

/* signHashedData's `parameters` for RSA-PSS with other than the algorithm's defaults
 * (docs/algorithms.md): ushort saltLength || string mgf1Digest ("SHA256", ...), into
 * out[size]; returns the length, 0 if it does not fit. */
size_t sks_client_pss_parameters(uint16_t salt_length, const char *mgf1_digest, uint8_t *out, size_t size);

/* asymmetricKeyDecrypt's `parameters` for the project's rsa.oaep (docs/algorithms.md):
 * string oaepDigest || string mgf1Digest ("SHA256", ...) || byte[] label, appended to out;
 * 0 if out failed (memory) or a field is too long. */
int sks_client_oaep_parameters(const char *oaep_digest, const char *mgf1_digest, const uint8_t *label,
                               size_t label_len, sks_buf *out);

/* ------------------------------------------------------------------ SKIP (docs/skip.md) */

/* skipRequest: a factory key on an EC curve (curve_algorithm: an ec.* key algorithm URI)
 * in a new pending session that stores the trust anchors (DER certificates, 1-16) its
 * package must verify to; *pkcs10 receives the DER request signed with the factory key. */
int sks_client_skip_request(sks_transport *t, const char *curve_algorithm, sks_span subject_der,
                            const sks_span *anchors, size_t anchor_count, uint32_t *provisioning_handle,
                            sks_bytes *pkcs10, sks_client_error *err);

/* skipImport: the whole package (CMS ContentInfo DER) for the pending request; the device
 * verifies it against the request's anchors before it decrypts anything. All keys or none.
 * key_handles (room for max) receives the new keys in container order, *count how many. */
int sks_client_skip_import(sks_transport *t, uint32_t provisioning_handle, sks_span package, uint32_t *key_handles,
                           size_t max, size_t *count, sks_client_error *err);

/* ------------------------------------------------- SmartCard-HSM (docs/wire-format.md) */

/* hsmGenerateKeyPair: a key pair made on the card (key_algorithm: a key generation URI of
 * docs/algorithms.md), described for PKCS#15 with friendly_name as its label. A non-empty
 * subject_der (DER X.509 Name) also gets a self-signed certificate valid validity_days days.
 * public_key receives the SubjectPublicKeyInfo (DER), certificate the certificate (DER, empty
 * without a subject). authorization is the card's user PIN. */
int sks_client_hsm_generate_key_pair(sks_transport *t, sks_span authorization, const char *friendly_name,
                                     const char *key_algorithm, sks_span subject_der, uint32_t validity_days,
                                     uint32_t *key_handle, sks_bytes *public_key, sks_bytes *certificate,
                                     sks_client_error *err);

#define SKS_HSM_NO_DKEK 0xFFFF
typedef struct {
    uint16_t options;     /* INITIALIZE option word (0x0001: the SO-PIN may reset the user PIN) */
    uint8_t retry_limit;  /* user PIN tries, 1..10 */
    uint16_t dkek_shares; /* 0..255, or SKS_HSM_NO_DKEK */
    uint8_t key_domains;  /* 0: none */
    int force;            /* wipe an initialised card (the card still checks the SO-PIN) */
} sks_hsm_init_args;

/* hsmInitialize: so_pin is the 16 hexadecimal digits of the SO-PIN, user_pin the new user PIN. */
int sks_client_hsm_initialize(sks_transport *t, sks_span so_pin, sks_span user_pin, const sks_hsm_init_args *a,
                              sks_client_error *err);

/* hsmStatus user PIN states */
enum {
    SKS_HSM_PIN_NOT_INITIALIZED = 0,
    SKS_HSM_PIN_SET = 1,
    SKS_HSM_PIN_VERIFIED = 2,
    SKS_HSM_PIN_BLOCKED = 3,
    SKS_HSM_PIN_TRANSPORT = 4
};
#define SKS_HSM_TRIES_UNKNOWN 0xFF

typedef struct {
    char kind[128];             /* "SmartCard-HSM", ... */
    uint8_t firmware_major;
    uint8_t firmware_minor;
    uint16_t options;           /* the option word set at INITIALIZE */
    uint8_t pin_state;          /* SKS_HSM_PIN_* */
    uint8_t pin_tries;          /* user PIN tries left, or SKS_HSM_TRIES_UNKNOWN */
    uint8_t so_pin_tries;       /* SO-PIN tries left, or SKS_HSM_TRIES_UNKNOWN */
} sks_hsm_status;

int sks_client_hsm_status(sks_transport *t, sks_hsm_status *out, sks_client_error *err);

/* A key domain's DKEK: shares it needs, shares still missing, key check value (SHA-256 of the
 * DKEK, first 8 bytes; zeros while shares are missing). */
typedef struct {
    uint8_t shares_total;
    uint8_t shares_missing;
    uint8_t kcv[8];
} sks_hsm_dkek_status;

/* hsmDkekImportShare: one 32-byte DKEK share into key_domain (0: the DKEK of INITIALIZE).
 * authorization (the user PIN) may be empty. The caller wipes share. */
int sks_client_hsm_dkek_import_share(sks_transport *t, sks_span authorization, uint8_t key_domain, sks_span share,
                                     sks_hsm_dkek_status *out, sks_client_error *err);

/* hsmKeyDomainStatus: the DKEK state of key_domain; authorization may be empty. */
int sks_client_hsm_key_domain_status(sks_transport *t, sks_span authorization, uint8_t key_domain,
                                     sks_hsm_dkek_status *out, sks_client_error *err);

/* hsmWrapKey: the key wrapped under its domain's DKEK (the card's blob), its PKCS#15 key
 * description and its certificate as stored on the card (either may be empty). */
int sks_client_hsm_wrap_key(sks_transport *t, sks_span authorization, uint32_t key_handle, sks_bytes *blob,
                            sks_bytes *key_description, sks_bytes *certificate, sks_client_error *err);

/* hsmUnwrapKey: a blob (with the description and certificate of hsmWrapKey, either may be
 * empty) into a free key reference; friendly_name "" keeps the description's label. When
 * certificate is the key's CV request, the card signs a certificate for the key: subject_der
 * (a DER Name; empty: CN=<label>), valid validity_days (1..36500). */
int sks_client_hsm_unwrap_key(sks_transport *t, sks_span authorization, sks_span blob, sks_span key_description,
                              sks_span certificate, const char *friendly_name, sks_span subject_der,
                              uint32_t validity_days, uint32_t *key_handle, sks_client_error *err);

/* hsmGetChallenge: n (1..1024) random bytes from the card's generator into out. */
int sks_client_hsm_get_challenge(sks_transport *t, uint8_t *out, size_t n, sks_client_error *err);
/* hsmDeviceCertificates: the card's EF.C_DevAut (device CV certificate ‖ DICA certificate), as
 * the card holds it; the caller verifies it (schsm/keymgmt_formats.h). */
int sks_client_hsm_device_certificates(sks_transport *t, sks_bytes *devaut, sks_client_error *err);

/* hsmKeyGenerationResponse: the authenticated CV request the card answered the key's
 * generation with (empty when the card keeps none for it); the caller verifies it. */
int sks_client_hsm_key_generation_response(sks_transport *t, uint32_t key_handle, sks_bytes *request,
                                           sks_client_error *err);

/* One key domain as MANAGE KEY DOMAIN reports it. */
#define SKS_HSM_MAX_DOMAINS 255
typedef struct {
    uint8_t domain;
    uint8_t shares_total;   /* 0xFF: an XKEK domain */
    uint8_t shares_missing;
    uint8_t kcv[8];         /* zeros while the KEK is incomplete */
    uint8_t uid[133];       /* XKEK: the group signer's key (the domain UID) */
    size_t uid_len;
} sks_hsm_domain;

/* hsmDomainStatus: every domain the card has (*count of them, at most max).
 * authorization: the user PIN, or empty (pico-hsm shows a DKEK's KCV only after VERIFY). */
int sks_client_hsm_domain_status(sks_transport *t, sks_span authorization, sks_hsm_domain *domains, size_t max,
                                 size_t *count, sks_client_error *err);
/* hsmKeyDomainCreate: a DKEK domain of dkek_shares (1..255) shares. */
int sks_client_hsm_domain_create(sks_transport *t, sks_span authorization, uint8_t domain, uint8_t dkek_shares,
                                 sks_hsm_domain *out, sks_client_error *err);
/* hsmKeyDomainJoin: an XKEK domain from a key domain membership (KDM) the group signer issued. */
int sks_client_hsm_domain_join(sks_transport *t, sks_span authorization, uint8_t domain, sks_span membership,
                               sks_hsm_domain *out, sks_client_error *err);

/* hsmGenerateDomainKey: an EC key (key_algorithm: an ec.* key generation URI) in key domain
 * `domain` allowed only `algorithms` (card algorithm ids, 1..16; 0x84 = ECDH for the XKEK);
 * request receives the authenticated CV request the card answered with. */
int sks_client_hsm_generate_domain_key(sks_transport *t, sks_span authorization, const char *friendly_name,
                                       const char *key_algorithm, uint8_t domain, sks_span algorithms,
                                       uint32_t *key_handle, sks_bytes *public_key, sks_bytes *request,
                                       sks_client_error *err);
/* hsmDeriveXkek: the key's domain KEK from the peer card's request (its chain and signatures
 * verified by the caller first). */
int sks_client_hsm_derive_xkek(sks_transport *t, sks_span authorization, uint32_t key_handle, sks_span peer_request,
                               sks_client_error *err);

/* hsmDomainWrapKey: the key encrypted under its domain's KEK (WRAP KEY). */
int sks_client_hsm_domain_wrap_key(sks_transport *t, sks_span authorization, uint32_t key_handle, sks_bytes *blob,
                            sks_client_error *err);
/* hsmDomainUnwrapKey: a blob of another card of the same domain, with the key's CV request from that
 * card and/or its X.509 certificate (the device checks the unwrapped key signs for that public
 * key). The key gets the certificate given, else a self-signed one the card signs (subject_der:
 * a DER Name, empty for CN=friendly_name; validity_days). *certificate: the one stored. */
int sks_client_hsm_domain_unwrap_key(sks_transport *t, sks_span authorization, const char *friendly_name, sks_span blob,
                                     sks_span request, sks_span certificate, sks_span subject_der,
                                     uint32_t validity_days, uint32_t *key_handle, sks_bytes *public_key,
                                     sks_bytes *stored_certificate, sks_client_error *err);

#endif
