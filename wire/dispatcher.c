/*
 * The one dispatcher: decodes the method id, runs the handler inside one transaction, and
 * encodes the reply. Every transport ends here (the in-process one calls it directly).
 *
 * Transaction rules:
 *  - success commits, and so does ERROR_AUTHORIZATION outside provisioning (a wrong PIN
 *    must be counted);
 *  - any other error rolls the call back, and if the call named an open provisioning
 *    session, that session is then removed with everything it created (spec 7.4,
 *    createProvisioningSession remarks).
 */
#include "../device/internal.h"

#include <pthread.h>
#include <stddef.h>
#include <string.h>

typedef enum { TXN_READ, TXN_WRITE, TXN_BY_KEY } txn_mode;

/* What a provisioning method's first argument names: the session it belongs to, directly
 * or through a key. A call that fails before its handler identified the session (e.g. a
 * malformed argument) still terminates that session. */
typedef enum { FIRST_OTHER, FIRST_SESSION, FIRST_KEY } first_arg;

/* Who may call a method where the transport distinguishes callers (sksd's administrators,
 * sks-vcard without --allow-management): USERS for the User API and the read-only queries
 * about keys (which the device answers only for keys the caller may see); ADMINS for
 * provisioning (sessions included: enumerateProvisioningSessions describes the issuers),
 * key management, PIN changes and the project extensions. */
typedef enum { ADMINS, USERS } access;

typedef struct {
    uint8_t id;
    const char *name;
    sks_handler handler;
    txn_mode txn;
    first_arg first;
    access who;
} method;

static const method METHODS[] = {
    { 1, "getDeviceInfo", h_get_device_info, TXN_READ, FIRST_OTHER, USERS },
    { 2, "createProvisioningSession", h_create_provisioning_session, TXN_WRITE, FIRST_OTHER, ADMINS },
    { 3, "closeProvisioningSession", h_close_provisioning_session, TXN_WRITE, FIRST_SESSION, ADMINS },
    { 4, "enumerateProvisioningSessions", h_enumerate_provisioning_sessions, TXN_READ, FIRST_OTHER, ADMINS },
    { 5, "abortProvisioningSession", h_abort_provisioning_session, TXN_WRITE, FIRST_OTHER, ADMINS },
    { 7, "updateKeyManagementKey", h_update_key_management_key, TXN_WRITE, FIRST_OTHER, ADMINS },
    { 8, "createPukPolicy", h_create_puk_policy, TXN_WRITE, FIRST_SESSION, ADMINS },
    { 9, "createPinPolicy", h_create_pin_policy, TXN_WRITE, FIRST_SESSION, ADMINS },
    { 10, "createKeyEntry", h_create_key_entry, TXN_WRITE, FIRST_SESSION, ADMINS },
    { 11, "getKeyHandle", h_get_key_handle, TXN_WRITE, FIRST_SESSION, ADMINS },
    { 12, "setCertificatePath", h_set_certificate_path, TXN_WRITE, FIRST_KEY, ADMINS },
    { 13, "importSymmetricKey", h_import_symmetric_key, TXN_WRITE, FIRST_KEY, ADMINS },
    { 14, "importPrivateKey", h_import_private_key, TXN_WRITE, FIRST_KEY, ADMINS },
    { 15, "addExtension", h_add_extension, TXN_WRITE, FIRST_KEY, ADMINS },
    { 50, "postDeleteKey", h_post_delete_key, TXN_WRITE, FIRST_SESSION, ADMINS },
    { 51, "postUnlockKey", h_post_unlock_key, TXN_WRITE, FIRST_SESSION, ADMINS },
    { 52, "postUpdateKey", h_post_update_key, TXN_WRITE, FIRST_KEY, ADMINS },
    { 53, "postCloneKeyProtection", h_post_clone_key_protection, TXN_WRITE, FIRST_KEY, ADMINS },
    { 70, "enumerateKeys", h_enumerate_keys, TXN_READ, FIRST_OTHER, USERS },
    { 71, "getKeyAttributes", h_get_key_attributes, TXN_READ, FIRST_OTHER, USERS },
    { 72, "getKeyProtectionInfo", h_get_key_protection_info, TXN_READ, FIRST_OTHER, USERS },
    { 73, "getExtension", h_get_extension, TXN_READ, FIRST_OTHER, USERS },
    { 74, "setProperty", h_set_property, TXN_WRITE, FIRST_OTHER, ADMINS },
    { 80, "deleteKey", h_delete_key, TXN_WRITE, FIRST_OTHER, ADMINS },
    { 81, "exportKey", h_export_key, TXN_WRITE, FIRST_OTHER, ADMINS },
    { 82, "unlockKey", h_unlock_key, TXN_WRITE, FIRST_OTHER, ADMINS },
    { 83, "changePin", h_change_pin, TXN_WRITE, FIRST_OTHER, ADMINS },
    { 84, "setPin", h_set_pin, TXN_WRITE, FIRST_OTHER, ADMINS },
    { 90, "updateFirmware", h_update_firmware, TXN_READ, FIRST_OTHER, ADMINS },
    { 100, "signHashedData", h_sign_hashed_data, TXN_BY_KEY, FIRST_OTHER, USERS },
    { 101, "asymmetricKeyDecrypt", h_asymmetric_key_decrypt, TXN_BY_KEY, FIRST_OTHER, USERS },
    { 102, "keyAgreement", h_key_agreement, TXN_BY_KEY, FIRST_OTHER, USERS },
    { 103, "performHmac", h_perform_hmac, TXN_BY_KEY, FIRST_OTHER, USERS },
    { 104, "symmetricKeyEncrypt", h_symmetric_key_encrypt, TXN_BY_KEY, FIRST_OTHER, USERS },
    /* Project extensions (ids >= 200). skipImport names its session but must not end it on
     * failure: a refused package leaves the request pending for a corrected one (the device
     * withdraws it itself after SKIP_MAX_FAILED_UNWRAPS verified packages that do not unwrap). */
    { 200, "skipRequest", h_skip_request, TXN_WRITE, FIRST_OTHER, ADMINS },
    { 201, "skipImport", h_skip_import, TXN_WRITE, FIRST_OTHER, ADMINS },
    /* The keys enumerateKeys lists that carry one certificate (an sks:sha256= URI): one call
     * instead of reading every key. */
    { 202, "findKeysByCertificate", h_find_keys_by_certificate, TXN_READ, FIRST_OTHER, USERS },
};

/* Project extensions that only a SmartCard-HSM device answers (schsm/manage.c); a store
 * knows them, so it can say why it refuses them instead of calling them unknown. */
static const struct {
    uint8_t id;
    const char *name;
} HSM_ONLY[] = {
    { 210, "hsmGenerateKeyPair" },
    { 211, "hsmInitialize" },
    { 212, "hsmStatus" },
    { 213, "hsmDkekImportShare" },
    { 214, "hsmKeyDomainStatus" },
    { 215, "hsmWrapKey" },
    { 216, "hsmUnwrapKey" },
    { 217, "hsmGetChallenge" },
    { 220, "hsmDeviceCertificates" },
    { 221, "hsmKeyGenerationResponse" },
    { 222, "hsmDomainStatus" },
    { 223, "hsmKeyDomainCreate" },
    { 224, "hsmKeyDomainJoin" },
    { 225, "hsmGenerateDomainKey" },
    { 226, "hsmDeriveXkek" },
    { 227, "hsmDomainWrapKey" },
    { 228, "hsmDomainUnwrapKey" },
};

static const char *hsm_only_method(uint8_t id)
{
    size_t i;

    for (i = 0; i < sizeof(HSM_ONLY) / sizeof(HSM_ONLY[0]); i++)
        if (HSM_ONLY[i].id == id)
            return HSM_ONLY[i].name;
    return NULL;
}

/* METHODS by id, made once: a search through the table cost a twentieth of what the device
 * adds to a signature. */
static const method *BY_ID[256];
static pthread_once_t by_id_once = PTHREAD_ONCE_INIT;

static void index_methods(void)
{
    size_t i;

    for (i = 0; i < sizeof(METHODS) / sizeof(METHODS[0]); i++)
        BY_ID[METHODS[i].id] = &METHODS[i];
}

static const method *find_method(uint8_t id)
{
    pthread_once(&by_id_once, index_methods);
    return BY_ID[id];
}

int sks_method_open_to_users(uint8_t id)
{
    const method *m = find_method(id);

    return m != NULL && m->who == USERS;
}

static uint32_t first_uint(const uint8_t *args, size_t n)
{
    return n < 4 ? 0 : ((uint32_t)args[0] << 24) | ((uint32_t)args[1] << 16) | ((uint32_t)args[2] << 8) | args[3];
}

/* User API calls on keys without a PIN only read; with a PIN they update the error counter
 * and must hold the write lock from the start so concurrent guesses are counted exactly. */
static int needs_write_lock(sks_device *dev, const method *m, const uint8_t *args, size_t n)
{
    sqlite3_stmt *st = NULL;
    uint32_t handle;
    int write = 1;

    if (m->txn != TXN_BY_KEY)
        return m->txn == TXN_WRITE;
    if (n < 4)
        return 0;
    handle = first_uint(args, n);
    if (sqlite3_prepare_v2(dev->db, "SELECT pin_policy FROM keys WHERE handle = ?", -1, &st, NULL) != SQLITE_OK)
        return 1;
    sqlite3_bind_int64(st, 1, handle);
    if (sqlite3_step(st) == SQLITE_ROW)
        write = sqlite3_column_int64(st, 0) != 0;
    else
        write = 0;
    sqlite3_finalize(st);
    return write;
}

static void write_error(sks_buf *reply, sks_status status, const char *message)
{
    size_t n = strlen(message);

    sks_buf_reset(reply);
    sks_buf_byte(reply, (uint8_t)status);
    sks_buf_array(reply, message, n > 2000 ? 2000 : n);
}

/* The open session a failed provisioning call names by its first argument, or 0. */
static uint32_t named_open_session(sks_device *dev, const method *m, const uint8_t *args, size_t n)
{
    static const char *const SQL[] = {
        [FIRST_SESSION] = "SELECT handle FROM sessions WHERE handle = ? AND open = 1",
        [FIRST_KEY] = "SELECT s.handle FROM keys k JOIN sessions s ON s.handle = k.session"
                      " WHERE k.handle = ? AND s.open = 1",
    };
    sqlite3_stmt *st = NULL;
    uint32_t first, session = 0;

    if (m->first == FIRST_OTHER || n < 4)
        return 0;
    first = ((uint32_t)args[0] << 24) | ((uint32_t)args[1] << 16) | ((uint32_t)args[2] << 8) | args[3];
    if (sqlite3_prepare_v2(dev->db, SQL[m->first], -1, &st, NULL) != SQLITE_OK)
        return 0;
    sqlite3_bind_int64(st, 1, first);
    if (sqlite3_step(st) == SQLITE_ROW)
        session = (uint32_t)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return session;
}

/* Removes a failed session in a transaction of its own. */
static void terminate_session(sks_device *dev, uint32_t handle)
{
    sks_call scratch;

    memset(&scratch, 0, sizeof(scratch));
    if (!store_begin(dev, 1))
        return;
    if (session_delete_all(dev, &scratch, handle) != SKS_OK || !store_commit(dev))
        store_rollback(dev);
}

/* A fresh call record. Its 2000-byte message is only made empty (sks_fail writes it whole,
 * NUL-terminated): zeroing it all cost more than the rest of the dispatch. */
static void call_init(sks_call *c)
{
    _Static_assert(offsetof(sks_call, message) == 0, "sks_call starts with its message");
    memset((char *)c + sizeof(c->message), 0, sizeof(*c) - sizeof(c->message));
    c->message[0] = '\0';
}

/* A User API call on a cached key (no PIN, nothing changed since) needs no transaction:
 * the handler answers from the cache and the crypto library alone, straight into the reply. */
static int answer_from_cache(sks_device *dev, const method *m, const uint8_t *req, size_t reqlen, sks_buf *reply)
{
    sks_reader in;
    sks_call call;
    sks_status rc;

    if (m->txn != TXN_BY_KEY || (dev->user_hit = user_cache_current(dev, first_uint(req + 1, reqlen - 1))) == NULL)
        return 0;
    call_init(&call);
    sks_reader_init(&in, req + 1, reqlen - 1);
    sks_buf_byte(reply, SKS_OK); /* reply is empty (sks_device_dispatch) */
    rc = m->handler(dev, &in, reply, &call); /* it takes the key from dev->user_hit */
    dev->user_hit = NULL;
    if (rc == SKS_OK && reply->failed)
        rc = sks_fail(&call, SKS_ERROR_INTERNAL, "%s: out of memory", m->name);
    if (rc != SKS_OK) {
        sks_buf_reset(reply); /* drops whatever the handler wrote (sks_buf_reset wipes) */
        write_error(reply, rc, call.message[0] ? call.message : "error");
    }
    return 1;
}

void sks_device_dispatch(sks_device *dev, const uint8_t *req, size_t reqlen, sks_buf *reply)
{
    const method *m;
    sks_reader in;
    sks_buf out;
    sks_call call;
    sks_status rc;
    int write;

    call_init(&call);
    sks_buf_reset(reply);
    if (reqlen == 0) {
        write_error(reply, SKS_ERROR_OPTION, "empty request: a request starts with the method id byte");
        return;
    }
    m = find_method(req[0]);
    if (m == NULL && hsm_only_method(req[0]) != NULL) {
        char msg[200];
        snprintf(msg, sizeof(msg),
                 "%s: not available on this device (a SmartCard-HSM method; this device is an sks store)",
                 hsm_only_method(req[0]));
        write_error(reply, SKS_ERROR_NOT_AVAILABLE, msg);
        return;
    }
    if (m == NULL) {
        char msg[80];
        snprintf(msg, sizeof(msg), "unknown method id %u", req[0]);
        write_error(reply, SKS_ERROR_OPTION, msg);
        return;
    }
    /* A shared device (sksd) serves a key only to its owner, group and administrators. */
    if ((rc = owner_check_call(dev, m->id, req + 1, reqlen - 1, &call)) != SKS_OK) {
        write_error(reply, rc, call.message);
        return;
    }
    if (answer_from_cache(dev, m, req, reqlen, reply))
        return;
    write = needs_write_lock(dev, m, req + 1, reqlen - 1);
    if (!store_begin(dev, write)) {
        char msg[700];
        snprintf(msg, sizeof(msg), "%s: %s", m->name, store_error(dev));
        write_error(reply, SKS_ERROR_STORAGE, msg);
        return;
    }
    /* Other processes see a change by the store's version, which SQLite moves with the
     * commit itself (device/generation.c). */
    sks_buf_init(&out);
    sks_reader_init(&in, req + 1, reqlen - 1);
    rc = m->handler(dev, &in, &out, &call);
    if (rc == SKS_OK && out.failed)
        rc = sks_fail(&call, SKS_ERROR_INTERNAL, "%s: out of memory", m->name);
    /* A wrong PIN or PUK in the User API or key management is not fatal and its error
     * count must stick; in provisioning every error is fatal. A handler may also ask for its
     * failure's writes to stick (skipImport counting packages that do not unwrap). */
    if (rc == SKS_OK || (rc == SKS_ERROR_AUTHORIZATION && m->id >= 70) || call.commit_on_error) {
        if (!store_commit(dev)) {
            store_rollback(dev);
            rc = sks_fail(&call, SKS_ERROR_STORAGE, "%s: commit failed: %s", m->name, store_error(dev));
        }
    } else {
        store_rollback(dev);
        if (call.abort_session == 0)
            call.abort_session = named_open_session(dev, m, req + 1, reqlen - 1);
        if (call.abort_session != 0)
            terminate_session(dev, call.abort_session);
    }
    if (rc == SKS_OK) {
        sks_buf_byte(reply, SKS_OK);
        sks_buf_put(reply, out.data, out.len);
    } else {
        write_error(reply, rc, call.message[0] ? call.message : "error");
    }
    sks_buf_free(&out);
}
