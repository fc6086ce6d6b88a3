/*
 * Shared by the files of the software SKS. Not a public interface.
 */
#ifndef SKS_DEVICE_INTERNAL_H
#define SKS_DEVICE_INTERNAL_H

#include <sqlite3.h>

#include "sks_device.h"
#include "algorithms.h"
#include "../cms/key_der.h" /* spki_parse, the plain curves */

#define SKS_API_LEVEL 100
#define SKS_CRYPTO_DATA_SIZE 65536
#define SKS_EXTENSION_DATA_SIZE 65536
#define SKS_MAX_SYMMETRIC_KEY 128
#define SKS_MAX_PIN 128

/* Parsed private keys, so a signature does not re-decode PKCS#8 every time. An entry is
 * valid while the sealed blob in the database still starts with the same version and
 * nonce: every seal draws a fresh nonce, so any change of the key material shows. */
#define SKS_KEY_CACHE 32
typedef struct {
    uint32_t handle;
    uint8_t tag[13];
    EVP_PKEY *pkey;
} key_cache_entry;

/* Contexts on one private key, kept between operations (crypto.c: sign_hash_to,
 * ecdh_z_reuse): making them costs a tenth of a P-256 signature. */
typedef struct {
    EVP_PKEY_CTX *ecdsa;   /* initialised for signing */
    EVP_MD_CTX *ed25519;   /* initialised for DigestSign */
    int ed25519_reusable;  /* ed25519 has signed again after its first signature (crypto.c) */
    EVP_PKEY_CTX *ecdh;    /* initialised for derive; the peer is set per call */
    struct ec_key_st *ec;  /* the key as an EC_KEY, for ecdh_z_direct (ecdh_direct.c) */
    int ec_unusable;       /* it cannot be had: ECDH takes the EVP route */
} key_contexts;

/* A committed state of the store, as SQLite's WAL index names it (generation.c). */
typedef struct {
    uint32_t change, frames, salt[2];
    int valid; /* 0: unknown, equal to nothing */
} store_gen;

/* What the User API needs of a key without PIN protection, kept between calls while the
 * store's version stays put (generation.c). */
#define SKS_USER_CACHE 32 /* an entry lives at handle % SKS_USER_CACHE */
typedef struct {
    uint32_t handle;
    store_gen gen;
    sks_buf endorsed;
    EVP_PKEY *pkey;
    key_type type;    /* of pkey */
    key_contexts ctx; /* on pkey, made on first use */
    /* The algorithm the last call on this key named, for its method class, once it passed the
     * checks that depend only on the algorithm and the key (known URI of the class, endorsed,
     * fits the key type): a later call naming the same URI passes them again, as the table,
     * the key and its endorsed list do not change while the entry lives (user_api.c). */
    const sks_algorithm *approved;
    alg_class approved_cls;
    size_t approved_len; /* strlen(approved->uri) */
} user_cache_entry;

/* Row integrity (store.c, docs/storage.md): the rows of the protected tables changed by the
 * current transaction, whose MACs store_commit checks (old state) and renews (new state). */
typedef struct {
    uint8_t table; /* index into the protected tables */
    int64_t id;
} row_ref;

typedef struct {
    sqlite3 *committed; /* read-only connection: the last committed state */
    uint8_t mac_key[32];
    EVP_MAC_CTX *mac_keyed; /* HMAC-SHA256 keyed with mac_key, copied for each row (store.c) */
    row_ref *dirty;
    size_t dirty_n, dirty_cap;
    int dirty_overflow; /* out of memory while recording: the commit is refused */
    char error[640];    /* why the last commit or begin was refused */
} row_integrity;

/* Prepared statements kept between calls (store_cached): preparing the handful of queries a
 * key load runs cost SQLite's parser more than everything else in it (bench/). */
#define SKS_STMT_CACHE 32
typedef struct {
    char *sql;
    sqlite3 *db; /* the device's connection, or the committed-state one (row integrity) */
    sqlite3_stmt *st;
    int busy; /* handed out and not yet released */
} stmt_cache_entry;

struct sks_device {
    sqlite3 *db;
    stmt_cache_entry stmts[SKS_STMT_CACHE];
    unsigned stmts_next;
    const volatile uint32_t *wal_index; /* SQLite's WAL-index header, NULL if unavailable */
    row_integrity rows;
    user_cache_entry user_cache[SKS_USER_CACHE];
    /* The entry the dispatcher found for the User API call it is answering from the cache,
     * so the handler does not read the store's version and look again; NULL otherwise. */
    user_cache_entry *user_hit;
    key_cache_entry key_cache[SKS_KEY_CACHE];
    unsigned key_cache_next;
    uint8_t master_key[32];
    EVP_PKEY *device_key;
    uint8_t *device_cert; /* DER */
    size_t device_cert_len;
    sks_test_hooks hooks;
    int schema_version; /* PRAGMA schema_version when the schema was last verified */
    sks_caller caller;  /* owner.c: who calls, when has_caller */
    int has_caller;
};

/* What a handler reports besides its status: the message, and which provisioning session
 * (if any) must be terminated when the call fails. */
typedef struct {
    char message[2000];
    uint32_t abort_session;
    /* The failed call's writes must stick (skipImport's count of packages that verified but
     * did not unwrap): the dispatcher commits instead of rolling back. */
    int commit_on_error;
} sks_call;

/* Records the first error of a call and returns its status, so handlers can write
 * `return sks_fail(call, SKS_ERROR_MAC, "...", ...)`. */
sks_status sks_fail(sks_call *call, sks_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- store.c: SQLite and sealing ---- */

int store_begin(sks_device *dev, int write);
/* Commits, after checking the committed state of every protected row the transaction changed
 * and renewing their MACs; 0 (rolled back by the caller) on failure, see store_error. */
int store_commit(sks_device *dev);
void store_rollback(sks_device *dev);
/* Why the last store_commit failed. */
const char *store_error(sks_device *dev);
/* Prepared statement helper: returns NULL and sets the call's error on failure. */
sqlite3_stmt *store_prepare(sks_device *dev, sks_call *call, const char *sql);
/* The same for a query run on every key load or use: the statement is prepared once and kept
 * (schema changes re-prepare it, as SQLite does for any statement). Give it back with
 * store_release, on every path, instead of sqlite3_finalize. call may be NULL. */
sqlite3_stmt *store_cached(sks_device *dev, sks_call *call, const char *sql);
/* The same on `db`: the device's connection or its read-only committed-state connection. */
sqlite3_stmt *store_cached_on(sks_device *dev, sqlite3 *db, sks_call *call, const char *sql);
void store_release(sks_device *dev, sqlite3_stmt *st);
void store_cached_clear(sks_device *dev);
/* Runs a statement without results; binds are done by the caller. SQLITE_DONE -> 1. */
int store_step_done(sks_device *dev, sks_call *call, sqlite3_stmt *st);
/* Runs one statement whose parameters are ?1 (a) and, if present, ?2 (b). */
int store_run(sks_device *dev, sks_call *call, const char *sql, int64_t a, int64_t b);
/* Executes literal SQL with no bindings. */
int store_exec(sks_device *dev, sks_call *call, const char *sql);

/* Sealed columns: AES-256-GCM under the master key, the associated data naming table, column
 * and row handle, so a blob opens only in the row and column it was sealed for. */
int seal_row(const sks_device *dev, const char *table, const char *column, int64_t handle, const uint8_t *in,
             size_t n, sks_buf *out);
int unseal_row(const sks_device *dev, const char *table, const char *column, int64_t handle, const uint8_t *in,
               size_t n, sks_buf *out);
/* seal_row for the row the next INSERT into `table` creates (AUTOINCREMENT handles are
 * predictable under the write lock). */
int seal_new_row(sks_device *dev, const char *table, const char *column, const uint8_t *in, size_t n,
                 sks_buf *out);
/* Checks a protected row against its MAC (docs/storage.md); ERROR_STORAGE "integrity error"
 * if it was changed, added or copied outside the device. Rows changed by the current
 * transaction are checked at commit instead. */
sks_status row_verify(sks_device *dev, sks_call *call, const char *table, int64_t handle);

/* ---- generation.c: the store's version, shared by every process that opens it ---- */

/* After the first read of dev->db in WAL mode. */
void gen_open(sks_device *dev);
void gen_close(sks_device *dev);
/* The store's committed version now; 0 (and g->valid = 0) if it cannot be known. Read it
 * before the first query of a transaction whose results are cached under it. */
int gen_current(const sks_device *dev, store_gen *g);
/* 1 if both are known and the same: nothing was committed in between. */
int gen_equal(const store_gen *a, const store_gen *b);

/* ---- user_api.c ---- */

/* The cache entry of this key if a User API call on it can be answered from the cache,
 * without the database (nothing committed since the entry was filled); else NULL. */
user_cache_entry *user_cache_current(sks_device *dev, uint32_t handle);
void user_cache_clear(sks_device *dev);

/* ---- owner.c: key owners ---- */

/* SKS_OK if the caller may make this call, judged by the key its first argument names
 * (for the methods that name one); else SKS_ERROR_NO_KEY, as if the key did not exist. */
sks_status owner_check_call(sks_device *dev, uint8_t method, const uint8_t *args, size_t n, sks_call *call);
/* 1 if the caller may see the key (always, without a caller). */
int owner_may_see(sks_device *dev, uint32_t handle);
/* At commit, for a key row the transaction inserted, changed or deleted: records the new key's
 * owner (the caller of a shared device), drops a deleted key's owner, re-MACs the owner of a
 * key whose public key changed. `committed` reads the last committed state. 0 on an SQLite
 * or crypto failure. */
int owner_follow_key(sks_device *dev, sqlite3 *committed, int64_t handle);

/* ---- crypto.c ---- */

int hmac_sha256(const uint8_t *key, size_t keylen, const uint8_t *data, size_t n, uint8_t out[32]);
int sha256(const uint8_t *data, size_t n, uint8_t out[32]);
/* AES-CBC with PKCS#7 padding (pad=1) or none; key length selects AES-128/192/256. */
int aes_cbc(int encrypt, int pad, const uint8_t *key, size_t keylen, const uint8_t iv[16],
            const uint8_t *in, size_t n, sks_buf *out);
int aes_ecb_nopad(int encrypt, const uint8_t *key, size_t keylen, const uint8_t *in, size_t n,
                  sks_buf *out);
/* SubjectPublicKeyInfo DER of a key, in the strict form the MACs use. */
int spki_der(EVP_PKEY *pkey, sks_buf *out);
int pkcs8_der(EVP_PKEY *pkey, sks_buf *out);
EVP_PKEY *pkcs8_parse(const uint8_t *p, size_t n);
/* The curve's short name (OpenSSL's), or NULL for non-EC keys. */
const char *ec_curve_name(EVP_PKEY *pkey, char *buf, size_t buflen);
EVP_PKEY *ec_generate(const char *curve);
/* ECDH: Z = the x coordinate at full field length. The peer's public key is validated. */
int ecdh_z(EVP_PKEY *priv, EVP_PKEY *peer, sks_buf *z);
/* The same, with validated = 1 for a peer that ecdh_peer_parse already validated, and the
 * derive context kept in *keep (if not NULL) for the next call. */
int ecdh_z_reuse(key_contexts *keep, EVP_PKEY *priv, EVP_PKEY *peer, int validated, sks_buf *z);
/* An ECDH peer's SubjectPublicKeyInfo, which must be an EC key on priv's curve (else NULL).
 * *validated = 1 when its point has been fully validated on the way in. */
EVP_PKEY *ecdh_peer_parse(EVP_PKEY *priv, const uint8_t *p, size_t n, int *validated);
/* The point of a plain named-curve EC SubjectPublicKeyInfo (uncompressed, at the curve's
 * length) and the curve's OpenSSL short name; 0 if it is not one. */
int ec_spki_point(const uint8_t *p, size_t n, const char **curve, const uint8_t **point, size_t *point_len);
/* ECDH on a kept key: Z into z for the peer's SubjectPublicKeyInfo, with OpenSSL's EC_KEY
 * functions (ecdh_direct.c). 1 done, 0 the computation failed, -1 not done (a peer that is not
 * a valid point on the key's curve, a key that has no EC_KEY form): the caller takes the EVP
 * route, which reports for itself. */
int ecdh_z_direct(key_contexts *keep, EVP_PKEY *priv, const uint8_t *spki, size_t n, sks_buf *z);
void ecdh_direct_free(key_contexts *keep);
/* The OAEP parameters of one decryption: the digest, the MGF1 digest and the label
 * (label may be empty; it points into the request). */
typedef struct {
    const EVP_MD *md;
    const EVP_MD *mgf1;
    const uint8_t *label;
    size_t label_len;
} oaep_params;

/* RSA decryption, RSA_PKCS1_PADDING (with implicit rejection: a wrong padding gives a
 * synthetic message, never an error; oaep is ignored) or RSA_PKCS1_OAEP_PADDING with *oaep.
 * Every failure is the same 0 with an empty error queue. */
int rsa_decrypt(EVP_PKEY *key, int padding, const oaep_params *oaep, const uint8_t *in, size_t n, sks_buf *out);
/* Signature in the SKS encoding: ECDSA as r||s, RSA PKCS#1 v1.5, Ed25519 raw.
 * `md` is the digest the data was hashed with (NULL: data signed as is, for ecdsa.none,
 * rsa.pkcs1.none and Ed25519); `pss` selects RSA-PSS with the given salt length (-1: the
 * hash length) and MGF1 digest (NULL: md). */
int sign_hash(EVP_PKEY *key, const EVP_MD *md, int pss, int saltlen, const EVP_MD *mgf1, const uint8_t *data,
              size_t n, sks_buf *sig);
/* sign_hash into sig[*siglen] (in: its size, SKS_MAX_SIGNATURE is enough for every key; out:
 * the signature's length), for a key that signs again and again: the contexts an ECDSA or
 * Ed25519 signature needs are made on first use into *keep (if not NULL) and used again by
 * later calls. The caller frees them with the key (key_contexts_free). */
#define SKS_MAX_SIGNATURE 1024 /* RSA up to 8192 bits */
int sign_hash_to(key_contexts *keep, EVP_PKEY *key, const EVP_MD *md, int pss, int saltlen, const EVP_MD *mgf1,
                 const uint8_t *data, size_t n, uint8_t *sig, size_t *siglen);
void key_contexts_free(key_contexts *sc);
/* Signs SHA-256(data) the way attestations and authorizations are signed. */
int sign_sha256(EVP_PKEY *key, const uint8_t *data, size_t n, sks_buf *sig);
int verify_sha256(EVP_PKEY *key, const uint8_t *data, size_t n, const uint8_t *sig, size_t siglen);
int public_keys_equal(EVP_PKEY *a, EVP_PKEY *b);
int random_bytes(uint8_t *p, size_t n);


/* ---- objects.c: rows of the credential database as structs ---- */

typedef struct {
    uint32_t handle;
    int open;
    uint8_t session_key[32];
    char *algorithm;
    int privacy;
    char *client_session_id;
    char *server_session_id;
    char *issuer_uri;
    sks_buf kmk; /* SPKI DER, empty if none */
    uint32_t client_time;
    uint32_t lifetime;
    uint32_t key_limit;
    uint32_t mac_counter;
} prov_session;

typedef struct {
    uint32_t handle;
    uint32_t session;
    char *id;
    uint32_t pin_policy;
    int64_t pin;
    int device_pin;
    int pin_caching;
    uint8_t biometric;
    uint8_t export_protection;
    uint8_t delete_protection;
    uint8_t app_usage;
    char *friendly_name;
    char *key_algorithm;
    sks_buf key_parameters;
    sks_buf endorsed;     /* list of uri, wire encoding */
    sks_buf public_key;   /* SPKI of the generated key */
    sks_buf certificates; /* list of byte[], wire encoding; empty until setCertificatePath */
    int has_certificates;
    int has_private_key;
    uint32_t symmetric_length;
    uint8_t key_backup;
    sks_buf mac; /* the createKeyEntry MAC */
} key_entry;

typedef struct {
    uint32_t handle;
    char *id;
    uint32_t puk;
    int user_defined;
    int user_modifiable;
    uint8_t format;
    uint16_t retry_limit;
    uint8_t grouping;
    uint8_t patterns;
    uint16_t min_length;
    uint16_t max_length;
    uint8_t input_method;
} pin_policy;

typedef struct {
    uint32_t handle;
    char *id;
    uint8_t format;
    uint16_t retry_limit;
    uint16_t error_count;
} puk_policy;

/* Loads a session; SKS_ERROR_NO_SESSION if missing, or if must_be_open and it is closed. */
sks_status session_load(sks_device *dev, sks_call *call, uint32_t handle, int must_be_open, prov_session *s);
void session_free(prov_session *s);
/* Persists mac_counter and key_limit. */
sks_status session_save_counters(sks_device *dev, sks_call *call, const prov_session *s);
/* Removes a session and everything it owns (keys, policies, PINs, extensions, pending ops). */
sks_status session_delete_all(sks_device *dev, sks_call *call, uint32_t handle);
/* The Device ID of the specification (2.7). */
void device_id(const sks_device *dev, int privacy, const uint8_t **p, size_t *n);

sks_status key_load(sks_device *dev, sks_call *call, uint32_t handle, key_entry *k);
/* A key ready for use: loaded, and its provisioning session is closed (else ERROR_NO_KEY). */
sks_status key_load_usable(sks_device *dev, sks_call *call, uint32_t handle, key_entry *k);
void key_free(key_entry *k);
/* The end-entity certificate (first of the path); empty span if none. */
sks_span key_ee_certificate(const key_entry *k);
/* The private key, unsealed and parsed; NULL with an error in call. */
EVP_PKEY *key_private(sks_device *dev, sks_call *call, const key_entry *k);
/* Drops the parsed private keys (wiped by OpenSSL when freed). */
void key_cache_clear(sks_device *dev);
/* After key #from's sealed columns were copied into key #to (postUpdateKey), seals them
 * again for #to's row. */
sks_status key_reseal_moved(sks_device *dev, sks_call *call, uint32_t from, uint32_t to);
/* The symmetric key, unsealed into out. */
sks_status key_symmetric(sks_device *dev, sks_call *call, const key_entry *k, sks_buf *out);
/* Deletes a key and the PIN/PUK/session objects only it kept alive. */
sks_status key_delete(sks_device *dev, sks_call *call, uint32_t handle);

sks_status pin_policy_load(sks_device *dev, sks_call *call, uint32_t handle, pin_policy *p);
void pin_policy_free(pin_policy *p);
sks_status puk_policy_load(sks_device *dev, sks_call *call, uint32_t handle, puk_policy *p);
void puk_policy_free(puk_policy *p);

/* ---- pin.c: PIN syntax, patterns, and verification with error counters ---- */

/* Checks a PIN/PUK value against a format (5.6). */
sks_status pin_check_format(sks_call *call, const char *what, uint8_t format, const uint8_t *v, size_t n);
/* Checks a PIN against its policy: format, length, patterns. */
sks_status pin_check_policy(sks_call *call, const pin_policy *p, const uint8_t *v, size_t n);
/* Verifies the authorization of a User API call or of a PIN-protected management
 * operation; counts errors and blocks at the retry limit. */
sks_status pin_verify(sks_device *dev, sks_call *call, const key_entry *k, int biometric_auth,
                      sks_span authorization);
/* Verifies a PUK for the key's PIN policy, counting PUK errors. */
sks_status puk_verify(sks_device *dev, sks_call *call, const key_entry *k, sks_span authorization);
/* Under signature+standard or unique grouping a new PIN must differ from the other groups'
 * PINs: compares it with them, counting (durably) a try on each, and refuses while one of
 * them is locked. */
sks_status pin_check_other_groups(sks_device *dev, sks_call *call, const key_entry *k, const pin_policy *p,
                                  sks_span pin);
/* 1 if the key's PIN object has reached its retry limit. */
int pin_blocked(sks_device *dev, const key_entry *k, const pin_policy *p);

/* ---- handlers: one per method, in provisioning.c, management.c, user_api.c ---- */

typedef sks_status (*sks_handler)(sks_device *dev, sks_reader *in, sks_buf *out, sks_call *call);

#define SKS_HANDLER(name) sks_status name(sks_device *dev, sks_reader *in, sks_buf *out, sks_call *call)
SKS_HANDLER(h_get_device_info);
SKS_HANDLER(h_create_provisioning_session);
SKS_HANDLER(h_close_provisioning_session);
SKS_HANDLER(h_enumerate_provisioning_sessions);
SKS_HANDLER(h_abort_provisioning_session);
SKS_HANDLER(h_update_key_management_key);
SKS_HANDLER(h_create_puk_policy);
SKS_HANDLER(h_create_pin_policy);
SKS_HANDLER(h_create_key_entry);
SKS_HANDLER(h_get_key_handle);
SKS_HANDLER(h_set_certificate_path);
SKS_HANDLER(h_import_symmetric_key);
SKS_HANDLER(h_import_private_key);
SKS_HANDLER(h_add_extension);
SKS_HANDLER(h_post_delete_key);
SKS_HANDLER(h_post_unlock_key);
SKS_HANDLER(h_post_update_key);
SKS_HANDLER(h_post_clone_key_protection);
SKS_HANDLER(h_enumerate_keys);
SKS_HANDLER(h_find_keys_by_certificate);
SKS_HANDLER(h_get_key_attributes);
SKS_HANDLER(h_get_key_protection_info);
SKS_HANDLER(h_get_extension);
SKS_HANDLER(h_set_property);
SKS_HANDLER(h_delete_key);
SKS_HANDLER(h_export_key);
SKS_HANDLER(h_unlock_key);
SKS_HANDLER(h_change_pin);
SKS_HANDLER(h_set_pin);
SKS_HANDLER(h_update_firmware);
SKS_HANDLER(h_sign_hashed_data);
SKS_HANDLER(h_asymmetric_key_decrypt);
SKS_HANDLER(h_key_agreement);
SKS_HANDLER(h_perform_hmac);
SKS_HANDLER(h_symmetric_key_encrypt);
/* Project extensions (docs/wire-format.md, docs/skip.md), in skip.c. */
SKS_HANDLER(h_skip_request);
SKS_HANDLER(h_skip_import);

/* Turns a decoding error into a status with the field named; SKS_OK if the reader is fine. */
sks_status reader_status(sks_call *call, const char *method, const sks_reader *r);

#endif
