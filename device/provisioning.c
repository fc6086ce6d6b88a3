/*
 * The provisioning API (spec methods 2-53): sessions built on session.1, MACs with the
 * sequence counter, encrypted data, attestations, policies, key entries, imports,
 * extensions, and the post-provisioning operations that wait for closeProvisioningSession.
 *
 * Each handler runs inside one database transaction opened by the dispatcher. A handler
 * that has identified its session sets call->abort_session; if it then fails, the
 * dispatcher rolls the call back and removes the whole session.
 */
#include "internal.h"
#include "../cms/skip_common.h"

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/x509.h>

#define SESSION_ALG SKS_ALG_PREFIX "session.1"
#define KEY_ENTRY_ALG SKS_ALG_PREFIX "key.1"
#define ALG_NONE SKS_ALG_PREFIX "none"

enum { POST_DELETE = 1, POST_UNLOCK = 2, POST_UPDATE = 3, POST_CLONE = 4 };

/* ------------------------------------------------------------------ session key use */

/* Every use of the session key counts against sessionKeyLimit. */
static sks_status use_session_key(sks_call *call, prov_session *s)
{
    if (s->key_limit == 0)
        return sks_fail(call, SKS_ERROR_NOT_ALLOWED, "sessionKeyLimit of provisioning session #%u exceeded",
                        s->handle);
    s->key_limit--;
    return SKS_OK;
}

/* HMAC-SHA256 keyed with sessionKey || name || uint16(counter); advances the counter. */
static sks_status counted_hmac(sks_call *call, prov_session *s, const char *name, const uint8_t *data, size_t n,
                               uint8_t out[32])
{
    sks_buf key;
    int ok;
    sks_status rc = use_session_key(call, s);

    if (rc != SKS_OK)
        return rc;
    if (s->mac_counter > 0xFFFF)
        return sks_fail(call, SKS_ERROR_NOT_ALLOWED, "MAC sequence counter exhausted");
    sks_buf_init(&key);
    sks_buf_put(&key, s->session_key, 32);
    sks_buf_put(&key, name, strlen(name));
    sks_buf_ushort(&key, (uint16_t)s->mac_counter);
    ok = !key.failed && hmac_sha256(key.data, key.len, data, n, out);
    sks_buf_free(&key);
    s->mac_counter++;
    return ok ? SKS_OK : sks_fail(call, SKS_ERROR_INTERNAL, "HMAC failed");
}

static sks_status verify_mac(sks_call *call, prov_session *s, const char *method, const sks_buf *data, sks_span mac)
{
    uint8_t expect[32];
    sks_status rc;

    if (data->failed)
        return sks_fail(call, SKS_ERROR_INTERNAL, "out of memory");
    rc = counted_hmac(call, s, method, data->data, data->len, expect);
    if (rc != SKS_OK)
        return rc;
    if (mac.n != 32 || CRYPTO_memcmp(expect, mac.p, 32) != 0)
        return sks_fail(call, SKS_ERROR_MAC, "%s: \"mac\" does not match the supplied data", method);
    return SKS_OK;
}

static sks_status attest(sks_call *call, prov_session *s, const sks_buf *data, uint8_t out[32])
{
    if (data->failed)
        return sks_fail(call, SKS_ERROR_INTERNAL, "out of memory");
    return counted_hmac(call, s, "DeviceAttestation", data->data, data->len, out);
}

/* Encrypted Data (6.1): IV(16) || AES-256-CBC-PKCS7 under HMAC(sessionKey, "EncryptionKey"). */
static sks_status decrypt_data(sks_call *call, prov_session *s, const char *what, sks_span in, sks_buf *out)
{
    uint8_t ek[32];
    sks_status rc = use_session_key(call, s);
    int ok;

    if (rc != SKS_OK)
        return rc;
    if (in.n < 32 || in.n % 16 != 0)
        return sks_fail(call, SKS_ERROR_CRYPTO, "encrypted %s must be IV || AES-CBC blocks, got %zu bytes", what,
                        in.n);
    if (!hmac_sha256(s->session_key, 32, (const uint8_t *)"EncryptionKey", 13, ek))
        return sks_fail(call, SKS_ERROR_INTERNAL, "HMAC failed");
    ok = aes_cbc(0, 1, ek, 32, in.p, in.p + 16, in.n - 16, out);
    OPENSSL_cleanse(ek, sizeof(ek));
    return ok ? SKS_OK : sks_fail(call, SKS_ERROR_CRYPTO, "encrypted %s cannot be decrypted (bad padding)", what);
}

static int id_taken(sks_device *dev, uint32_t session, sks_span id)
{
    sqlite3_stmt *st = NULL;
    int taken = 1;

    if (sqlite3_prepare_v2(dev->db,
                           "SELECT 1 FROM keys WHERE session = ?1 AND id = ?2 UNION ALL"
                           " SELECT 1 FROM pin_policies WHERE session = ?1 AND id = ?2 UNION ALL"
                           " SELECT 1 FROM puk_policies WHERE session = ?1 AND id = ?2",
                           -1, &st, NULL)
        != SQLITE_OK)
        return 1;
    sqlite3_bind_int64(st, 1, session);
    sqlite3_bind_text(st, 2, (const char *)id.p, (int)id.n, SQLITE_STATIC);
    taken = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    return taken;
}

/* Open sessions past their sessionLifeTime by the device's clock (clientTime is the issuer's
 * word). A SKIP factory-key session (issuer and algorithm urn:sks:skip, which only skip.c can
 * make: createProvisioningSession refuses that issuer and has its own algorithm) waits for its
 * package as long as it takes (docs/skip.md). */
#define SESSION_EXPIRED                                                                                       \
    "open = 1 AND NOT (issuer_uri = '" SKIP_ISSUER_URI "' AND algorithm = '" SKIP_ISSUER_URI "')"              \
    " AND created + lifetime < CAST(strftime('%s','now') AS INTEGER)"

/* A session whose lifetime has run out is unusable from that moment, not only once the next
 * session is created; the failed call then removes it (wire/dispatcher.c). */
static sks_status require_alive(sks_device *dev, sks_call *call, uint32_t handle)
{
    sqlite3_stmt *st = store_prepare(dev, call, "SELECT 1 FROM sessions WHERE handle = ? AND " SESSION_EXPIRED);
    int step;

    if (st == NULL)
        return SKS_ERROR_STORAGE;
    sqlite3_bind_int64(st, 1, handle);
    step = sqlite3_step(st);
    sqlite3_finalize(st);
    if (step == SQLITE_ROW)
        return sks_fail(call, SKS_ERROR_NO_SESSION, "provisioning session #%u has expired (sessionLifeTime)", handle);
    if (step != SQLITE_DONE)
        return sks_fail(call, SKS_ERROR_STORAGE, "storage error: %s", sqlite3_errmsg(dev->db));
    return SKS_OK;
}

/* Opens the session a provisioning call names and marks it for abort on failure. */
static sks_status open_session(sks_device *dev, sks_call *call, uint32_t handle, prov_session *s)
{
    sks_status rc = session_load(dev, call, handle, 1, s);

    if (rc == SKS_OK)
        rc = require_alive(dev, call, handle);
    if (rc == SKS_OK)
        call->abort_session = handle;
    return rc;
}

/* Loads a key that belongs to an open session, and that session. */
static sks_status open_key(sks_device *dev, sks_call *call, uint32_t handle, key_entry *k, prov_session *s)
{
    sks_status rc = key_load(dev, call, handle, k);

    if (rc != SKS_OK)
        return rc;
    rc = session_load(dev, call, k->session, 0, s);
    if (rc != SKS_OK)
        return rc;
    if (!s->open)
        return sks_fail(call, SKS_ERROR_NO_SESSION, "key #%u does not belong to an open provisioning session",
                        handle);
    if ((rc = require_alive(dev, call, s->handle)) != SKS_OK)
        return rc;
    call->abort_session = s->handle;
    return SKS_OK;
}

static sks_status require_certificate(sks_call *call, const key_entry *k, const char *method)
{
    if (!k->has_certificates)
        return sks_fail(call, SKS_ERROR_NOT_ALLOWED, "%s: key #%u has no certificate path yet (setCertificatePath)",
                        method, k->handle);
    return SKS_OK;
}

/* ------------------------------------------------------------------ sessions */

static void random_session_id(char out[33])
{
    static const char ALPHABET[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    uint8_t r[32];
    int i;

    random_bytes(r, sizeof(r));
    for (i = 0; i < 32; i++)
        out[i] = ALPHABET[r[i] & 63];
    out[32] = '\0';
}

static int is_ec_on_supported_curve(EVP_PKEY *k, char *curve, size_t n)
{
    return ec_curve_name(k, curve, n) != NULL && alg_for_curve(curve) != NULL;
}

static int supported_kmk(EVP_PKEY *k)
{
    char curve[64];
    int t = EVP_PKEY_get_base_id(k);

    return t == EVP_PKEY_RSA || (t == EVP_PKEY_EC && is_ec_on_supported_curve(k, curve, sizeof(curve)));
}

/* Expired sessions are abandoned provisioning: remove them, as the lifetime exists for. */
static sks_status remove_expired_sessions(sks_device *dev, sks_call *call)
{
    sqlite3_stmt *st = store_prepare(dev, call, "SELECT handle FROM sessions WHERE " SESSION_EXPIRED);
    uint32_t expired[64];
    size_t n = 0, i;
    sks_status rc = SKS_OK;

    if (st == NULL)
        return SKS_ERROR_STORAGE;
    while (n < sizeof(expired) / sizeof(expired[0]) && sqlite3_step(st) == SQLITE_ROW)
        expired[n++] = (uint32_t)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    for (i = 0; i < n && rc == SKS_OK; i++)
        rc = session_delete_all(dev, call, expired[i]);
    return rc;
}

SKS_HANDLER(h_create_provisioning_session)
{
    sks_span alg = sks_get_uri(in, "sessionKeyAlgorithm");
    int privacy = sks_get_bool(in, "privacyEnabled");
    sks_span ssid = sks_get_id(in, "serverSessionId");
    sks_span server_eph = sks_get_array(in, "serverEphemeralKey");
    sks_span issuer = sks_get_uri(in, "issuerUri");
    sks_span kmk = sks_get_array(in, "keyManagementKey");
    uint32_t client_time = sks_get_uint(in, "clientTime");
    uint16_t lifetime = sks_get_ushort(in, "sessionLifeTime");
    uint16_t limit = sks_get_ushort(in, "sessionKeyLimit");
    sks_span server_cert = sks_get_array(in, "serverCertificate");
    EVP_PKEY *peer = NULL, *eph = NULL, *kmk_key = NULL;
    sks_buf z, kdf, att_in, client_eph, att, sealed;
    uint8_t session_key[32];
    const uint8_t *did;
    size_t did_len;
    char csid[33] = "", curve[64];
    sqlite3_stmt *st;
    sks_status rc;

    sks_reader_expect_end(in);
    if ((rc = reader_status(call, "createProvisioningSession", in)) != SKS_OK)
        return rc;
    sks_buf_init(&z);
    sks_buf_init(&kdf);
    sks_buf_init(&att_in);
    sks_buf_init(&client_eph);
    sks_buf_init(&att);
    sks_buf_init(&sealed);
    if (!sks_span_eq_str(alg, SESSION_ALG)) {
        rc = sks_fail(call, SKS_ERROR_ALGORITHM, "sessionKeyAlgorithm must be %s", SESSION_ALG);
        goto done;
    }
    if (issuer.n == 0) {
        rc = sks_fail(call, SKS_ERROR_OPTION, "issuerUri must not be empty");
        goto done;
    }
    /* reserved for the device's own SKIP sessions, which never expire */
    if (issuer.n == strlen(SKIP_ISSUER_URI)
        && OPENSSL_strncasecmp((const char *)issuer.p, SKIP_ISSUER_URI, issuer.n) == 0) {
        rc = sks_fail(call, SKS_ERROR_OPTION, "issuerUri \"%s\" is reserved for SKIP", SKIP_ISSUER_URI);
        goto done;
    }
    peer = spki_parse(server_eph.p, server_eph.n);
    if (peer == NULL || !is_ec_on_supported_curve(peer, curve, sizeof(curve))) {
        rc = sks_fail(call, SKS_ERROR_ALGORITHM, "serverEphemeralKey must be an EC public key on a supported curve");
        goto done;
    }
    if (kmk.n > 0 && ((kmk_key = spki_parse(kmk.p, kmk.n)) == NULL || !supported_kmk(kmk_key))) {
        rc = sks_fail(call, SKS_ERROR_ALGORITHM, "keyManagementKey must be an RSA or supported EC public key");
        goto done;
    }
    if (dev->hooks.ephemeral_key != NULL)
        eph = dev->hooks.ephemeral_key(dev->hooks.ctx);
    if (eph == NULL)
        eph = ec_generate(curve);
    if (dev->hooks.client_session_id == NULL || !dev->hooks.client_session_id(dev->hooks.ctx, csid))
        random_session_id(csid);
    if (eph == NULL || !spki_der(eph, &client_eph) || !ecdh_z(eph, peer, &z)) {
        rc = sks_fail(call, SKS_ERROR_CRYPTO, "ECDH with serverEphemeralKey failed");
        goto done;
    }
    /* sessionKey = HMAC-SHA256(Z, clientSessionId || serverSessionId || issuerUri || DeviceID) */
    device_id(dev, privacy, &did, &did_len);
    sks_buf_string(&kdf, csid);
    sks_buf_array(&kdf, ssid.p, ssid.n);
    sks_buf_array(&kdf, issuer.p, issuer.n);
    sks_buf_array(&kdf, did, did_len);
    if (kdf.failed || !hmac_sha256(z.data, z.len, kdf.data, kdf.len, session_key)) {
        rc = sks_fail(call, SKS_ERROR_INTERNAL, "session key derivation failed");
        goto done;
    }
    sks_buf_put(&att_in, kdf.data, kdf.len);
    sks_buf_array(&att_in, alg.p, alg.n);
    sks_buf_bool(&att_in, privacy);
    sks_buf_array(&att_in, server_eph.p, server_eph.n);
    sks_buf_array(&att_in, client_eph.data, client_eph.len);
    sks_buf_array(&att_in, kmk.p, kmk.n);
    sks_buf_uint(&att_in, client_time);
    sks_buf_ushort(&att_in, lifetime);
    sks_buf_ushort(&att_in, limit);
    sks_buf_array(&att_in, server_cert.p, server_cert.n);
    if (att_in.failed) {
        rc = sks_fail(call, SKS_ERROR_INTERNAL, "out of memory");
        goto done;
    }
    if (privacy) {
        uint8_t mac[32];
        if (!hmac_sha256(session_key, 32, att_in.data, att_in.len, mac)) {
            rc = sks_fail(call, SKS_ERROR_INTERNAL, "HMAC failed");
            goto done;
        }
        sks_buf_put(&att, mac, 32);
    } else if (!sign_sha256(dev->device_key, att_in.data, att_in.len, &att)) {
        rc = sks_fail(call, SKS_ERROR_CRYPTO, "device attestation signature failed");
        goto done;
    }
    if (!seal_new_row(dev, "sessions", "session_key", session_key, 32, &sealed)) {
        rc = sks_fail(call, SKS_ERROR_INTERNAL, "cannot seal the session key");
        goto done;
    }
    if ((rc = remove_expired_sessions(dev, call)) != SKS_OK)
        goto done;
    st = store_prepare(dev, call,
                       "INSERT INTO sessions (open, session_key, algorithm, privacy, client_session_id,"
                       " server_session_id, issuer_uri, kmk, client_time, lifetime, key_limit, mac_counter)"
                       " VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)");
    if (st == NULL) {
        rc = SKS_ERROR_STORAGE;
        goto done;
    }
    sqlite3_bind_blob(st, 1, sealed.data, (int)sealed.len, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, (const char *)alg.p, (int)alg.n, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, privacy);
    sqlite3_bind_text(st, 4, csid, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, (const char *)ssid.p, (int)ssid.n, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, (const char *)issuer.p, (int)issuer.n, SQLITE_STATIC);
    sqlite3_bind_blob(st, 7, kmk.n ? kmk.p : (const uint8_t *)"", (int)kmk.n, SQLITE_STATIC);
    sqlite3_bind_int64(st, 8, client_time);
    sqlite3_bind_int64(st, 9, lifetime);
    sqlite3_bind_int64(st, 10, limit);
    if (!store_step_done(dev, call, st)) {
        rc = SKS_ERROR_STORAGE;
        goto done;
    }
    sks_buf_string(out, csid);
    sks_buf_array(out, client_eph.data, client_eph.len);
    sks_buf_array(out, att.data, att.len);
    sks_buf_uint(out, (uint32_t)sqlite3_last_insert_rowid(dev->db));
    rc = SKS_OK;
done:
    OPENSSL_cleanse(session_key, sizeof(session_key));
    EVP_PKEY_free(peer);
    EVP_PKEY_free(eph);
    EVP_PKEY_free(kmk_key);
    sks_buf_free(&z);
    sks_buf_free(&kdf);
    sks_buf_free(&att_in);
    sks_buf_free(&client_eph);
    sks_buf_free(&att);
    sks_buf_free(&sealed);
    return rc;
}

SKS_HANDLER(h_enumerate_provisioning_sessions)
{
    uint32_t after = sks_get_uint(in, "provisioningHandle");
    int want_open = sks_get_bool(in, "provisioningState");
    sqlite3_stmt *st;
    sks_status rc;

    sks_reader_expect_end(in);
    if ((rc = reader_status(call, "enumerateProvisioningSessions", in)) != SKS_OK)
        return rc;
    st = store_prepare(dev, call,
                       "SELECT handle, algorithm, privacy, kmk, client_time, lifetime, server_session_id,"
                       " client_session_id, issuer_uri FROM sessions WHERE handle > ? AND open = ?"
                       " ORDER BY handle LIMIT 1");
    if (st == NULL)
        return SKS_ERROR_STORAGE;
    sqlite3_bind_int64(st, 1, after);
    sqlite3_bind_int(st, 2, want_open);
    if (sqlite3_step(st) != SQLITE_ROW) {
        sks_buf_uint(out, 0);
    } else if ((rc = row_verify(dev, call, "sessions", sqlite3_column_int64(st, 0))) == SKS_OK) {
        sks_buf_uint(out, (uint32_t)sqlite3_column_int64(st, 0));
        sks_buf_string(out, (const char *)sqlite3_column_text(st, 1));
        sks_buf_bool(out, sqlite3_column_int(st, 2));
        sks_buf_array(out, sqlite3_column_blob(st, 3), (size_t)sqlite3_column_bytes(st, 3));
        sks_buf_uint(out, (uint32_t)sqlite3_column_int64(st, 4));
        sks_buf_uint(out, (uint32_t)sqlite3_column_int64(st, 5));
        sks_buf_string(out, (const char *)sqlite3_column_text(st, 6));
        sks_buf_string(out, (const char *)sqlite3_column_text(st, 7));
        sks_buf_string(out, (const char *)sqlite3_column_text(st, 8));
    }
    sqlite3_finalize(st);
    return rc;
}

SKS_HANDLER(h_abort_provisioning_session)
{
    uint32_t handle = sks_get_uint(in, "provisioningHandle");
    prov_session s;
    sks_status rc;

    (void)out;
    sks_reader_expect_end(in);
    if ((rc = reader_status(call, "abortProvisioningSession", in)) != SKS_OK)
        return rc;
    rc = session_load(dev, call, handle, 1, &s);
    session_free(&s);
    if (rc != SKS_OK)
        return rc;
    return session_delete_all(dev, call, handle);
}

SKS_HANDLER(h_update_key_management_key)
{
    uint32_t handle = sks_get_uint(in, "provisioningHandle");
    sks_span kmk = sks_get_array(in, "keyManagementKey");
    sks_span auth = sks_get_array(in, "authorization");
    EVP_PKEY *old_key = NULL, *new_key = NULL;
    sks_buf tbs;
    prov_session s;
    sqlite3_stmt *st;
    sks_status rc;

    (void)out;
    sks_reader_expect_end(in);
    if ((rc = reader_status(call, "updateKeyManagementKey", in)) != SKS_OK)
        return rc;
    sks_buf_init(&tbs);
    rc = session_load(dev, call, handle, 0, &s);
    if (rc != SKS_OK)
        goto done;
    if (s.open) {
        rc = sks_fail(call, SKS_ERROR_NOT_ALLOWED, "updateKeyManagementKey: provisioning session #%u is still open",
                      handle);
        goto done;
    }
    if (s.kmk.len == 0 || (old_key = spki_parse(s.kmk.data, s.kmk.len)) == NULL) {
        rc = sks_fail(call, SKS_ERROR_NOT_ALLOWED, "provisioning session #%u has no keyManagementKey", handle);
        goto done;
    }
    if ((new_key = spki_parse(kmk.p, kmk.n)) == NULL || !supported_kmk(new_key)) {
        rc = sks_fail(call, SKS_ERROR_ALGORITHM, "the new keyManagementKey must be an RSA or supported EC public key");
        goto done;
    }
    sks_buf_put(&tbs, "RollOverAuthorization", 21);
    sks_buf_put(&tbs, kmk.p, kmk.n);
    if (tbs.failed || !verify_sha256(old_key, tbs.data, tbs.len, auth.p, auth.n)) {
        rc = sks_fail(call, SKS_ERROR_AUTHORIZATION,
                      "updateKeyManagementKey: \"authorization\" does not verify with the current keyManagementKey");
        goto done;
    }
    st = store_prepare(dev, call, "UPDATE sessions SET kmk = ? WHERE handle = ?");
    if (st == NULL) {
        rc = SKS_ERROR_STORAGE;
        goto done;
    }
    sqlite3_bind_blob(st, 1, kmk.p, (int)kmk.n, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, handle);
    rc = store_step_done(dev, call, st) ? SKS_OK : SKS_ERROR_STORAGE;
done:
    EVP_PKEY_free(old_key);
    EVP_PKEY_free(new_key);
    sks_buf_free(&tbs);
    session_free(&s);
    return rc;
}

/* ------------------------------------------------------------------ policies */

SKS_HANDLER(h_create_puk_policy)
{
    uint32_t handle = sks_get_uint(in, "provisioningHandle");
    sks_span id = sks_get_id(in, "id");
    sks_span enc = sks_get_array(in, "encryptedPuk");
    uint8_t format = sks_get_byte(in, "format");
    uint16_t retry = sks_get_ushort(in, "retryLimit");
    sks_span mac = sks_get_array(in, "mac");
    prov_session s;
    sks_buf data, puk, sealed;
    sqlite3_stmt *st;
    sks_status rc;

    sks_reader_expect_end(in);
    if ((rc = reader_status(call, "createPukPolicy", in)) != SKS_OK)
        return rc;
    sks_buf_init(&data);
    sks_buf_init(&puk);
    sks_buf_init(&sealed);
    if ((rc = open_session(dev, call, handle, &s)) != SKS_OK)
        goto done;
    if ((rc = decrypt_data(call, &s, "PUK", enc, &puk)) != SKS_OK)
        goto done;
    sks_buf_array(&data, id.p, id.n);
    sks_buf_array(&data, enc.p, enc.n);
    sks_buf_byte(&data, format);
    sks_buf_ushort(&data, retry);
    if ((rc = verify_mac(call, &s, "createPUKPolicy", &data, mac)) != SKS_OK)
        goto done;
    if (id_taken(dev, handle, id)) {
        rc = sks_fail(call, SKS_ERROR_OPTION, "createPukPolicy: id \"%.*s\" is already used in this session",
                      (int)id.n, id.p);
        goto done;
    }
    if (retry > 10000) {
        rc = sks_fail(call, SKS_ERROR_OPTION, "createPukPolicy: \"retryLimit\" must be 0..10000, got %u", retry);
        goto done;
    }
    if ((rc = pin_check_format(call, "PUK", format, puk.data, puk.len)) != SKS_OK)
        goto done;
    if (!seal_new_row(dev, "puk_policies", "value", puk.data, puk.len, &sealed)) {
        rc = sks_fail(call, SKS_ERROR_INTERNAL, "cannot seal the PUK");
        goto done;
    }
    st = store_prepare(dev, call,
                       "INSERT INTO puk_policies (session, id, value, format, retry_limit) VALUES (?, ?, ?, ?, ?)");
    if (st == NULL) {
        rc = SKS_ERROR_STORAGE;
        goto done;
    }
    sqlite3_bind_int64(st, 1, handle);
    sqlite3_bind_text(st, 2, (const char *)id.p, (int)id.n, SQLITE_STATIC);
    sqlite3_bind_blob(st, 3, sealed.data, (int)sealed.len, SQLITE_STATIC);
    sqlite3_bind_int(st, 4, format);
    sqlite3_bind_int(st, 5, retry);
    if (!store_step_done(dev, call, st)) {
        rc = SKS_ERROR_STORAGE;
        goto done;
    }
    sks_buf_uint(out, (uint32_t)sqlite3_last_insert_rowid(dev->db));
    rc = session_save_counters(dev, call, &s);
done:
    sks_buf_free(&data);
    sks_buf_free(&puk);
    sks_buf_free(&sealed);
    session_free(&s);
    return rc;
}

/* Looks up a policy of this session by handle; returns its id (OPENSSL_malloc) or NULL. */
static char *policy_id_in_session(sks_device *dev, const char *table, uint32_t handle, uint32_t session)
{
    char sql[96];
    sqlite3_stmt *st = NULL;
    char *id = NULL;

    snprintf(sql, sizeof(sql), "SELECT id FROM %s WHERE handle = ? AND session = ?", table);
    if (sqlite3_prepare_v2(dev->db, sql, -1, &st, NULL) != SQLITE_OK)
        return NULL;
    sqlite3_bind_int64(st, 1, handle);
    sqlite3_bind_int64(st, 2, session);
    if (sqlite3_step(st) == SQLITE_ROW)
        id = OPENSSL_strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return id;
}

SKS_HANDLER(h_create_pin_policy)
{
    uint32_t handle = sks_get_uint(in, "provisioningHandle");
    sks_span id = sks_get_id(in, "id");
    uint32_t puk = sks_get_uint(in, "pukPolicyHandle");
    int user_defined = sks_get_bool(in, "userDefined");
    int user_modifiable = sks_get_bool(in, "userModifiable");
    uint8_t format = sks_get_byte(in, "format");
    uint16_t retry = sks_get_ushort(in, "retryLimit");
    uint8_t grouping = sks_get_byte(in, "grouping");
    uint8_t patterns = sks_get_byte(in, "patternRestrictions");
    uint16_t min_len = sks_get_ushort(in, "minLength");
    uint16_t max_len = sks_get_ushort(in, "maxLength");
    uint8_t input = sks_get_byte(in, "inputMethod");
    sks_span mac = sks_get_array(in, "mac");
    prov_session s;
    sks_buf data;
    char *puk_id = NULL;
    sqlite3_stmt *st;
    sks_status rc;

    sks_reader_expect_end(in);
    if ((rc = reader_status(call, "createPinPolicy", in)) != SKS_OK)
        return rc;
    sks_buf_init(&data);
    if ((rc = open_session(dev, call, handle, &s)) != SKS_OK)
        goto done;
    if (puk != 0 && (puk_id = policy_id_in_session(dev, "puk_policies", puk, handle)) == NULL) {
        rc = sks_fail(call, SKS_ERROR_OPTION, "createPinPolicy: pukPolicyHandle #%u is not a PUK policy of session #%u",
                      puk, handle);
        goto done;
    }
    sks_buf_array(&data, id.p, id.n);
    sks_buf_string(&data, puk_id ? puk_id : "");
    sks_buf_bool(&data, user_defined);
    sks_buf_bool(&data, user_modifiable);
    sks_buf_byte(&data, format);
    sks_buf_ushort(&data, retry);
    sks_buf_byte(&data, grouping);
    sks_buf_byte(&data, patterns);
    sks_buf_ushort(&data, min_len);
    sks_buf_ushort(&data, max_len);
    sks_buf_byte(&data, input);
    if ((rc = verify_mac(call, &s, "createPINPolicy", &data, mac)) != SKS_OK)
        goto done;
    if (id_taken(dev, handle, id))
        rc = sks_fail(call, SKS_ERROR_OPTION, "createPinPolicy: id \"%.*s\" is already used in this session",
                      (int)id.n, id.p);
    else if (format > 3)
        rc = sks_fail(call, SKS_ERROR_OPTION, "createPinPolicy: \"format\" %u is unknown (0-3)", format);
    else if (retry < 1 || retry > 10000)
        rc = sks_fail(call, SKS_ERROR_OPTION, "createPinPolicy: \"retryLimit\" must be 1..10000, got %u", retry);
    else if (grouping > 3)
        rc = sks_fail(call, SKS_ERROR_OPTION, "createPinPolicy: \"grouping\" %u is unknown (0-3)", grouping);
    else if (patterns & ~0x1F)
        rc = sks_fail(call, SKS_ERROR_OPTION, "createPinPolicy: \"patternRestrictions\" 0x%02x has unknown bits",
                      patterns);
    else if ((patterns & 0x10) && format != 1 && format != 2)
        rc = sks_fail(call, SKS_ERROR_OPTION,
                      "createPinPolicy: missing-group needs the alphanumeric or string format");
    else if (min_len < 1 || min_len > max_len || max_len > SKS_MAX_PIN)
        rc = sks_fail(call, SKS_ERROR_OPTION, "createPinPolicy: need 1 <= minLength (%u) <= maxLength (%u) <= %d",
                      min_len, max_len, SKS_MAX_PIN);
    else if (input > 2)
        rc = sks_fail(call, SKS_ERROR_OPTION, "createPinPolicy: \"inputMethod\" %u is unknown (0-2)", input);
    if (rc != SKS_OK)
        goto done;
    st = store_prepare(dev, call,
                       "INSERT INTO pin_policies (session, id, puk, user_defined, user_modifiable, format,"
                       " retry_limit, grouping, patterns, min_length, max_length, input_method)"
                       " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    if (st == NULL) {
        rc = SKS_ERROR_STORAGE;
        goto done;
    }
    sqlite3_bind_int64(st, 1, handle);
    sqlite3_bind_text(st, 2, (const char *)id.p, (int)id.n, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, puk);
    sqlite3_bind_int(st, 4, user_defined);
    sqlite3_bind_int(st, 5, user_modifiable);
    sqlite3_bind_int(st, 6, format);
    sqlite3_bind_int(st, 7, retry);
    sqlite3_bind_int(st, 8, grouping);
    sqlite3_bind_int(st, 9, patterns);
    sqlite3_bind_int(st, 10, min_len);
    sqlite3_bind_int(st, 11, max_len);
    sqlite3_bind_int(st, 12, input);
    if (!store_step_done(dev, call, st)) {
        rc = SKS_ERROR_STORAGE;
        goto done;
    }
    sks_buf_uint(out, (uint32_t)sqlite3_last_insert_rowid(dev->db));
    rc = session_save_counters(dev, call, &s);
done:
    OPENSSL_free(puk_id);
    sks_buf_free(&data);
    session_free(&s);
    return rc;
}

/* ------------------------------------------------------------------ key entries */

/* The PIN object slot a key takes under its policy's grouping (5.7); -1 = a new object. */
static int pin_slot(uint8_t grouping, uint8_t app_usage)
{
    switch (grouping) {
    case 1: /* shared */
        return 0;
    case 2: /* signature+standard */
        return app_usage == 0 ? 0 : 1;
    case 3: /* unique */
        return app_usage;
    default:
        return -1;
    }
}

/* Finds or creates the PIN object for a new key, enforcing grouping: keys in one slot share
 * a PIN; under signature+standard and unique, different slots must have different PINs. */
static sks_status assign_pin_object(sks_device *dev, sks_call *call, const pin_policy *p, uint8_t app_usage,
                                    const uint8_t *pin, size_t pin_len, int64_t *out)
{
    int slot = pin_slot(p->grouping, app_usage);
    sqlite3_stmt *st;
    sks_buf sealed, value;
    sks_status rc = SKS_OK;

    *out = 0;
    sks_buf_init(&sealed);
    sks_buf_init(&value);
    if (slot >= 0) {
        st = store_prepare(dev, call, "SELECT handle, slot, value FROM pins WHERE policy = ?");
        if (st == NULL)
            return SKS_ERROR_STORAGE;
        sqlite3_bind_int64(st, 1, p->handle);
        while (rc == SKS_OK && sqlite3_step(st) == SQLITE_ROW) {
            int same;
            sks_buf_reset(&value);
            if ((rc = row_verify(dev, call, "pins", sqlite3_column_int64(st, 0))) != SKS_OK)
                break;
            if (!unseal_row(dev, "pins", "value", sqlite3_column_int64(st, 0), sqlite3_column_blob(st, 2),
                            (size_t)sqlite3_column_bytes(st, 2), &value)) {
                rc = sks_fail(call, SKS_ERROR_STORAGE, "integrity error: a PIN object cannot be unsealed for its row");
                break;
            }
            same = value.len == pin_len && CRYPTO_memcmp(value.data, pin, pin_len) == 0;
            if (sqlite3_column_int(st, 1) == slot) {
                if (!same)
                    rc = sks_fail(call, SKS_ERROR_OPTION,
                                  "createKeyEntry: PIN grouping of policy \"%s\" requires the same PIN as the other"
                                  " keys of its group", p->id);
                else
                    *out = sqlite3_column_int64(st, 0);
            } else if (same) {
                rc = sks_fail(call, SKS_ERROR_OPTION,
                              "createKeyEntry: PIN grouping of policy \"%s\" requires a PIN different from other"
                              " groups' PINs", p->id);
            }
        }
        sqlite3_finalize(st);
    }
    if (rc == SKS_OK && *out == 0) {
        if (!seal_new_row(dev, "pins", "value", pin, pin_len, &sealed)) {
            rc = sks_fail(call, SKS_ERROR_INTERNAL, "cannot seal the PIN");
            goto done;
        }
        st = store_prepare(dev, call, "INSERT INTO pins (policy, slot, value) VALUES (?, ?, ?)");
        if (st == NULL) {
            rc = SKS_ERROR_STORAGE;
            goto done;
        }
        sqlite3_bind_int64(st, 1, p->handle);
        sqlite3_bind_int(st, 2, slot);
        sqlite3_bind_blob(st, 3, sealed.data, (int)sealed.len, SQLITE_STATIC);
        if (!store_step_done(dev, call, st))
            rc = SKS_ERROR_STORAGE;
        else
            *out = sqlite3_last_insert_rowid(dev->db);
    }
done:
    sks_buf_free(&sealed);
    sks_buf_free(&value);
    return rc;
}

static EVP_PKEY *generate_key(const sks_algorithm *alg, sks_span params)
{
    EVP_PKEY_CTX *c = NULL;
    EVP_PKEY *k = NULL;
    BIGNUM *e = NULL;

    switch (alg->key) {
    case KEYTYPE_EC:
        return ec_generate(alg->curve);
    case KEYTYPE_ED25519:
        return EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    case KEYTYPE_RSA:
        c = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
        if (c == NULL || EVP_PKEY_keygen_init(c) != 1 || EVP_PKEY_CTX_set_rsa_keygen_bits(c, alg->rsa_bits) != 1)
            break;
        if (params.n > 0) {
            e = BN_bin2bn(params.p, (int)params.n, NULL);
            if (e == NULL || EVP_PKEY_CTX_set1_rsa_keygen_pubexp(c, e) != 1)
                break;
        }
        if (EVP_PKEY_keygen(c, &k) != 1)
            k = NULL;
        break;
    default:
        break;
    }
    BN_free(e);
    EVP_PKEY_CTX_free(c);
    return k;
}

/* Endorsed algorithms: known, user-API algorithms, strictly ascending, "none" alone. */
static sks_status check_endorsed_list(sks_call *call, const sks_span *list, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        const sks_algorithm *a = alg_find_n((const char *)list[i].p, list[i].n);
        int is_none = sks_span_eq_str(list[i], ALG_NONE);
        int usable = a != NULL && (a->cls != ALG_SPECIAL || is_none)
                     && (a->cls != ALG_KEY_GEN || a->key == KEYTYPE_ED25519);

        if (!usable)
            return sks_fail(call, SKS_ERROR_ALGORITHM, "createKeyEntry: endorsedAlgorithm \"%.*s\" is not supported",
                            (int)list[i].n, list[i].p);
        if (is_none && n != 1)
            return sks_fail(call, SKS_ERROR_ALGORITHM,
                            "createKeyEntry: endorsedAlgorithm \"none\" must be the only one");
        if (i > 0) {
            size_t m = list[i - 1].n < list[i].n ? list[i - 1].n : list[i].n;
            int c = memcmp(list[i - 1].p, list[i].p, m);
            if (c > 0 || (c == 0 && list[i - 1].n >= list[i].n))
                return sks_fail(call, SKS_ERROR_OPTION,
                                "createKeyEntry: endorsedAlgorithm URIs must be sorted in strictly ascending order");
        }
    }
    return SKS_OK;
}

typedef struct {
    uint32_t provisioning_handle;
    sks_span id, key_entry_alg, server_seed, pin_value, friendly_name, key_alg, key_params, mac;
    int device_pin, pin_caching;
    uint32_t pin_policy;
    uint8_t biometric, export_protection, delete_protection, app_usage;
    sks_span endorsed[256];
    size_t endorsed_count;
    sks_buf endorsed_wire;
} key_entry_args;

static void read_key_entry_args(sks_reader *in, key_entry_args *a)
{
    uint16_t i, n;

    a->provisioning_handle = sks_get_uint(in, "provisioningHandle");
    a->id = sks_get_id(in, "id");
    a->key_entry_alg = sks_get_uri(in, "keyEntryAlgorithm");
    a->server_seed = sks_get_array(in, "serverSeed");
    a->device_pin = sks_get_bool(in, "devicePinProtection");
    a->pin_policy = sks_get_uint(in, "pinPolicyHandle");
    a->pin_value = sks_get_array(in, "pinValue");
    a->pin_caching = sks_get_bool(in, "enablePinCaching");
    a->biometric = sks_get_byte(in, "biometricProtection");
    a->export_protection = sks_get_byte(in, "exportProtection");
    a->delete_protection = sks_get_byte(in, "deleteProtection");
    a->app_usage = sks_get_byte(in, "appUsage");
    a->friendly_name = sks_get_string(in, "friendlyName");
    a->key_alg = sks_get_uri(in, "keyAlgorithm");
    a->key_params = sks_get_array(in, "keyParameters");
    n = sks_get_ushort(in, "endorsedAlgorithm count");
    if (n > 255 && sks_reader_ok(in)) {
        in->error = "at most 255 endorsed algorithms";
        in->field = "endorsedAlgorithm";
    }
    sks_buf_init(&a->endorsed_wire);
    sks_buf_ushort(&a->endorsed_wire, n);
    for (i = 0; i < n && i < 256 && sks_reader_ok(in); i++) {
        a->endorsed[i] = sks_get_uri(in, "endorsedAlgorithm");
        sks_buf_array(&a->endorsed_wire, a->endorsed[i].p, a->endorsed[i].n);
    }
    a->endorsed_count = i;
    a->mac = sks_get_array(in, "mac");
    sks_reader_expect_end(in);
}

static size_t utf8_chars(sks_span s)
{
    size_t i, n = 0;

    for (i = 0; i < s.n; i++)
        if ((s.p[i] & 0xC0) != 0x80)
            n++;
    return n;
}

/* Option checks of createKeyEntry that need no database lookups. */
static sks_status check_key_entry_options(sks_call *call, const key_entry_args *a, const pin_policy *p,
                                          const puk_policy *puk, const sks_algorithm **alg_out)
{
    const sks_algorithm *alg = alg_find_n((const char *)a->key_alg.p, a->key_alg.n);

    if (!sks_span_eq_str(a->key_entry_alg, KEY_ENTRY_ALG))
        return sks_fail(call, SKS_ERROR_ALGORITHM, "createKeyEntry: keyEntryAlgorithm must be %s", KEY_ENTRY_ALG);
    if (a->server_seed.n > 64)
        return sks_fail(call, SKS_ERROR_OPTION, "createKeyEntry: \"serverSeed\" must be 0-64 bytes");
    if (alg == NULL || alg->cls != ALG_KEY_GEN)
        return sks_fail(call, SKS_ERROR_ALGORITHM, "createKeyEntry: keyAlgorithm \"%.*s\" is not supported",
                        (int)a->key_alg.n, a->key_alg.p);
    if (alg->rsa_exp_param ? (a->key_params.n < 1 || a->key_params.n > 8 || a->key_params.p[a->key_params.n - 1] % 2 == 0)
                           : a->key_params.n != 0)
        return sks_fail(call, SKS_ERROR_OPTION,
                        alg->rsa_exp_param ? "createKeyEntry: \"keyParameters\" must be a 1-8 byte odd exponent"
                                           : "createKeyEntry: \"keyParameters\" must be empty for this keyAlgorithm");
    if (a->device_pin)
        return sks_fail(call, SKS_ERROR_OPTION, "createKeyEntry: this device has no device PIN");
    if (a->biometric != 0)
        return sks_fail(call, SKS_ERROR_OPTION, "createKeyEntry: this device has no biometric support");
    if (a->export_protection > 3 || a->delete_protection > 3)
        return sks_fail(call, SKS_ERROR_OPTION, "createKeyEntry: export/delete protection must be 0-3");
    if (a->app_usage > 3)
        return sks_fail(call, SKS_ERROR_OPTION, "createKeyEntry: \"appUsage\" %u is unknown (0-3)", a->app_usage);
    if (utf8_chars(a->friendly_name) > 100)
        return sks_fail(call, SKS_ERROR_OPTION, "createKeyEntry: \"friendlyName\" exceeds 100 characters");
    if ((a->export_protection == 1 || a->delete_protection == 1) && p == NULL)
        return sks_fail(call, SKS_ERROR_OPTION, "createKeyEntry: \"pin\" protection needs a PIN policy");
    if ((a->export_protection == 2 || a->delete_protection == 2) && (p == NULL || puk == NULL))
        return sks_fail(call, SKS_ERROR_OPTION, "createKeyEntry: \"puk\" protection needs a PIN policy with a PUK");
    if (a->pin_caching && (p == NULL || p->input_method != 2))
        return sks_fail(call, SKS_ERROR_OPTION,
                        "createKeyEntry: \"enablePinCaching\" needs a PIN policy with inputMethod trusted-gui");
    if (p == NULL && a->pin_value.n != 0)
        return sks_fail(call, SKS_ERROR_OPTION, "createKeyEntry: \"pinValue\" must be empty without a PIN policy");
    *alg_out = alg;
    return check_endorsed_list(call, a->endorsed, a->endorsed_count);
}

SKS_HANDLER(h_create_key_entry)
{
    key_entry_args a;
    prov_session s;
    pin_policy p;
    puk_policy puk;
    int have_policy = 0, have_puk = 0;
    const sks_algorithm *alg = NULL;
    sks_buf data, pin, spki, pkcs8, sealed, att_in;
    uint8_t attestation[32];
    EVP_PKEY *key = NULL;
    int64_t pin_object = 0;
    char id[33];
    size_t i;
    sqlite3_stmt *st;
    sks_status rc;

    memset(&p, 0, sizeof(p));
    memset(&puk, 0, sizeof(puk));
    memset(&s, 0, sizeof(s));
    read_key_entry_args(in, &a);
    sks_buf_init(&data);
    sks_buf_init(&pin);
    sks_buf_init(&spki);
    sks_buf_init(&pkcs8);
    sks_buf_init(&sealed);
    sks_buf_init(&att_in);
    if ((rc = reader_status(call, "createKeyEntry", in)) != SKS_OK)
        goto done;
    if ((rc = open_session(dev, call, a.provisioning_handle, &s)) != SKS_OK)
        goto done;
    if (a.pin_policy != 0) {
        char *pid = policy_id_in_session(dev, "pin_policies", a.pin_policy, s.handle);
        OPENSSL_free(pid);
        if (pid == NULL) {
            rc = sks_fail(call, SKS_ERROR_OPTION,
                          "createKeyEntry: pinPolicyHandle #%u is not a PIN policy of session #%u", a.pin_policy,
                          s.handle);
            goto done;
        }
        if ((rc = pin_policy_load(dev, call, a.pin_policy, &p)) != SKS_OK)
            goto done;
        have_policy = 1;
        if (p.puk != 0) {
            if ((rc = puk_policy_load(dev, call, p.puk, &puk)) != SKS_OK)
                goto done;
            have_puk = 1;
        }
        if (p.user_defined)
            sks_buf_put(&pin, a.pin_value.p, a.pin_value.n);
        else if ((rc = decrypt_data(call, &s, "pinValue", a.pin_value, &pin)) != SKS_OK)
            goto done;
    }
    /* MAC data, in the order of the conformance notes. */
    sks_buf_array(&data, a.id.p, a.id.n);
    sks_buf_array(&data, a.key_entry_alg.p, a.key_entry_alg.n);
    sks_buf_array(&data, a.server_seed.p, a.server_seed.n);
    sks_buf_string(&data, have_policy ? p.id : "");
    if (have_policy && !p.user_defined)
        sks_buf_array(&data, a.pin_value.p, a.pin_value.n);
    else
        sks_buf_string(&data, "");
    sks_buf_bool(&data, a.device_pin);
    sks_buf_bool(&data, a.pin_caching);
    sks_buf_byte(&data, a.biometric);
    sks_buf_byte(&data, a.export_protection);
    sks_buf_byte(&data, a.delete_protection);
    sks_buf_byte(&data, a.app_usage);
    sks_buf_array(&data, a.friendly_name.p, a.friendly_name.n);
    sks_buf_array(&data, a.key_alg.p, a.key_alg.n);
    sks_buf_array(&data, a.key_params.p, a.key_params.n);
    for (i = 0; i < a.endorsed_count; i++)
        sks_buf_array(&data, a.endorsed[i].p, a.endorsed[i].n);
    if ((rc = verify_mac(call, &s, "createKeyEntry", &data, a.mac)) != SKS_OK)
        goto done;
    if (id_taken(dev, s.handle, a.id)) {
        rc = sks_fail(call, SKS_ERROR_OPTION, "createKeyEntry: id \"%.*s\" is already used in this session",
                      (int)a.id.n, a.id.p);
        goto done;
    }
    rc = check_key_entry_options(call, &a, have_policy ? &p : NULL, have_puk ? &puk : NULL, &alg);
    if (rc != SKS_OK)
        goto done;
    if (have_policy) {
        if ((rc = pin_check_policy(call, &p, pin.data, pin.len)) != SKS_OK)
            goto done;
        if ((rc = assign_pin_object(dev, call, &p, a.app_usage, pin.data, pin.len, &pin_object)) != SKS_OK)
            goto done;
    }
    memcpy(id, a.id.p, a.id.n);
    id[a.id.n] = '\0';
    if (dev->hooks.generated_key != NULL)
        key = dev->hooks.generated_key(dev->hooks.ctx, id);
    if (key == NULL)
        key = generate_key(alg, a.key_params);
    if (key == NULL || !spki_der(key, &spki) || !pkcs8_der(key, &pkcs8)
        || !seal_new_row(dev, "keys", "private_key", pkcs8.data, pkcs8.len, &sealed)) {
        rc = sks_fail(call, SKS_ERROR_CRYPTO, "createKeyEntry: key generation failed");
        goto done;
    }
    /* key.1 attestation over arr(publicKey) || arr(mac) */
    sks_buf_array(&att_in, spki.data, spki.len);
    sks_buf_array(&att_in, a.mac.p, a.mac.n);
    if ((rc = attest(call, &s, &att_in, attestation)) != SKS_OK)
        goto done;
    st = store_prepare(dev, call,
                       "INSERT INTO keys (session, id, pin_policy, pin, device_pin, pin_caching, biometric,"
                       " export_protection, delete_protection, app_usage, friendly_name, key_algorithm,"
                       " key_parameters, endorsed, public_key, private_key, mac)"
                       " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    if (st == NULL) {
        rc = SKS_ERROR_STORAGE;
        goto done;
    }
    sqlite3_bind_int64(st, 1, s.handle);
    sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, a.pin_policy);
    sqlite3_bind_int64(st, 4, pin_object);
    sqlite3_bind_int(st, 5, a.device_pin);
    sqlite3_bind_int(st, 6, a.pin_caching);
    sqlite3_bind_int(st, 7, a.biometric);
    sqlite3_bind_int(st, 8, a.export_protection);
    sqlite3_bind_int(st, 9, a.delete_protection);
    sqlite3_bind_int(st, 10, a.app_usage);
    sqlite3_bind_text(st, 11, (const char *)(a.friendly_name.n ? a.friendly_name.p : (const uint8_t *)""),
                      (int)a.friendly_name.n, SQLITE_STATIC);
    sqlite3_bind_text(st, 12, (const char *)a.key_alg.p, (int)a.key_alg.n, SQLITE_STATIC);
    sqlite3_bind_blob(st, 13, a.key_params.n ? a.key_params.p : (const uint8_t *)"", (int)a.key_params.n,
                      SQLITE_STATIC);
    sqlite3_bind_blob(st, 14, a.endorsed_wire.data, (int)a.endorsed_wire.len, SQLITE_STATIC);
    sqlite3_bind_blob(st, 15, spki.data, (int)spki.len, SQLITE_STATIC);
    sqlite3_bind_blob(st, 16, sealed.data, (int)sealed.len, SQLITE_STATIC);
    sqlite3_bind_blob(st, 17, a.mac.p, (int)a.mac.n, SQLITE_STATIC);
    if (!store_step_done(dev, call, st)) {
        rc = SKS_ERROR_STORAGE;
        goto done;
    }
    sks_buf_uint(out, (uint32_t)sqlite3_last_insert_rowid(dev->db));
    sks_buf_array(out, spki.data, spki.len);
    sks_buf_array(out, attestation, 32);
    rc = session_save_counters(dev, call, &s);
done:
    EVP_PKEY_free(key);
    sks_buf_free(&a.endorsed_wire);
    sks_buf_free(&data);
    sks_buf_free(&pin);
    sks_buf_free(&spki);
    sks_buf_free(&pkcs8);
    sks_buf_free(&sealed);
    sks_buf_free(&att_in);
    pin_policy_free(&p);
    puk_policy_free(&puk);
    session_free(&s);
    return rc;
}

SKS_HANDLER(h_get_key_handle)
{
    uint32_t handle = sks_get_uint(in, "provisioningHandle");
    sks_span id = sks_get_id(in, "id");
    prov_session s;
    sqlite3_stmt *st;
    sks_status rc;

    sks_reader_expect_end(in);
    if ((rc = reader_status(call, "getKeyHandle", in)) != SKS_OK)
        return rc;
    rc = open_session(dev, call, handle, &s);
    session_free(&s);
    if (rc != SKS_OK)
        return rc;
    st = store_prepare(dev, call, "SELECT handle FROM keys WHERE session = ? AND id = ?");
    if (st == NULL)
        return SKS_ERROR_STORAGE;
    sqlite3_bind_int64(st, 1, handle);
    sqlite3_bind_text(st, 2, (const char *)id.p, (int)id.n, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW)
        sks_buf_uint(out, (uint32_t)sqlite3_column_int64(st, 0));
    else
        rc = sks_fail(call, SKS_ERROR_NO_KEY, "getKeyHandle: no key \"%.*s\" in session #%u", (int)id.n, id.p, handle);
    sqlite3_finalize(st);
    return rc;
}

/* The public key types the device can generate: RSA, EC on a supported curve, Ed25519. */
static int supported_public_key(EVP_PKEY *k)
{
    char curve[64];
    int t = EVP_PKEY_get_base_id(k);

    return t == EVP_PKEY_RSA || t == EVP_PKEY_ED25519 || (t == EVP_PKEY_EC && is_ec_on_supported_curve(k, curve, sizeof(curve)));
}

SKS_HANDLER(h_set_certificate_path)
{
    uint32_t handle = sks_get_uint(in, "keyHandle");
    uint16_t count = sks_get_ushort(in, "certificate count"), i;
    sks_span certs[64];
    sks_span mac;
    key_entry k;
    prov_session s;
    sks_buf data, list;
    uint8_t ee_hash[32];
    sqlite3_stmt *st;
    sks_status rc;

    (void)out;
    memset(&k, 0, sizeof(k));
    memset(&s, 0, sizeof(s));
    sks_buf_init(&data);
    sks_buf_init(&list);
    if (count == 0 || count > 64) {
        in->error = in->error ? in->error : "must hold 1-64 certificates";
        in->field = in->field ? in->field : "certificate";
    }
    for (i = 0; i < count && i < 64 && sks_reader_ok(in); i++)
        certs[i] = sks_get_array(in, "certificate");
    mac = sks_get_array(in, "mac");
    sks_reader_expect_end(in);
    if ((rc = reader_status(call, "setCertificatePath", in)) != SKS_OK)
        goto done;
    if ((rc = open_key(dev, call, handle, &k, &s)) != SKS_OK)
        goto done;
    sks_buf_array(&data, k.public_key.data, k.public_key.len);
    sks_buf_string(&data, k.id);
    sks_buf_ushort(&list, count);
    for (i = 0; i < count; i++) {
        sks_buf_array(&data, certs[i].p, certs[i].n);
        sks_buf_array(&list, certs[i].p, certs[i].n);
    }
    if ((rc = verify_mac(call, &s, "setCertificatePath", &data, mac)) != SKS_OK)
        goto done;
    if (k.has_certificates) {
        rc = sks_fail(call, SKS_ERROR_NOT_ALLOWED, "setCertificatePath: key #%u already has a certificate path", handle);
        goto done;
    }
    for (i = 0; i < count; i++) {
        const unsigned char *q = certs[i].p;
        X509 *x = certs[i].n > SKS_CRYPTO_DATA_SIZE ? NULL : d2i_X509(NULL, &q, (long)certs[i].n);
        EVP_PKEY *pub = x ? X509_get0_pubkey(x) : NULL;
        int ok = x != NULL && q == certs[i].p + certs[i].n && (i > 0 || (pub != NULL && supported_public_key(pub)));

        X509_free(x);
        if (!ok) {
            rc = sks_fail(call, SKS_ERROR_OPTION,
                          i == 0 ? "setCertificatePath: the end-entity certificate is not DER X.509 with a supported"
                                   " public key"
                                 : "setCertificatePath: certificate %u is not DER X.509",
                          i);
            goto done;
        }
    }
    if (!sha256(certs[0].p, certs[0].n, ee_hash) || list.failed) {
        rc = sks_fail(call, SKS_ERROR_INTERNAL, "out of memory");
        goto done;
    }
    st = store_prepare(dev, call, "UPDATE keys SET certificates = ?, ee_sha256 = ? WHERE handle = ?");
    if (st == NULL) {
        rc = SKS_ERROR_STORAGE;
        goto done;
    }
    sqlite3_bind_blob(st, 1, list.data, (int)list.len, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, ee_hash, 32, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, handle);
    if (!store_step_done(dev, call, st)) {
        rc = SKS_ERROR_STORAGE;
        goto done;
    }
    rc = session_save_counters(dev, call, &s);
done:
    sks_buf_free(&data);
    sks_buf_free(&list);
    key_free(&k);
    session_free(&s);
    return rc;
}

/* importSymmetricKey and importPrivateKey share everything but what they store. */
static sks_status import_key(sks_device *dev, sks_reader *in, sks_call *call, int symmetric)
{
    const char *method = symmetric ? "importSymmetricKey" : "importPrivateKey";
    uint32_t handle = sks_get_uint(in, "keyHandle");
    sks_span enc = sks_get_array(in, "encryptedKey");
    sks_span mac = sks_get_array(in, "mac");
    key_entry k;
    prov_session s;
    sks_buf data, clear, sealed;
    EVP_PKEY *pkey = NULL;
    sqlite3_stmt *st;
    sks_status rc;

    memset(&k, 0, sizeof(k));
    memset(&s, 0, sizeof(s));
    sks_buf_init(&data);
    sks_buf_init(&clear);
    sks_buf_init(&sealed);
    sks_reader_expect_end(in);
    if ((rc = reader_status(call, method, in)) != SKS_OK)
        goto done;
    if ((rc = open_key(dev, call, handle, &k, &s)) != SKS_OK || (rc = require_certificate(call, &k, method)) != SKS_OK)
        goto done;
    {
        sks_span ee = key_ee_certificate(&k);
        sks_buf_array(&data, ee.p, ee.n);
    }
    sks_buf_array(&data, enc.p, enc.n);
    if ((rc = verify_mac(call, &s, symmetric ? "importSymmetricKey" : "importPrivateKey", &data, mac)) != SKS_OK)
        goto done;
    if ((rc = decrypt_data(call, &s, symmetric ? "symmetric key" : "private key", enc, &clear)) != SKS_OK)
        goto done;
    if ((k.key_backup & 1) != 0) {
        rc = sks_fail(call, SKS_ERROR_NOT_ALLOWED, "%s: key #%u has already been imported", method, handle);
        goto done;
    }
    if (symmetric) {
        if (clear.len == 0 || clear.len > SKS_MAX_SYMMETRIC_KEY) {
            rc = sks_fail(call, SKS_ERROR_OPTION, "importSymmetricKey: key must be 1-%d bytes, got %zu",
                          SKS_MAX_SYMMETRIC_KEY, clear.len);
            goto done;
        }
    } else if ((pkey = pkcs8_parse(clear.data, clear.len)) == NULL || !supported_public_key(pkey)) {
        rc = sks_fail(call, SKS_ERROR_ALGORITHM,
                      "importPrivateKey: not a PKCS#8 RSA, EC (supported curve) or Ed25519 private key");
        goto done;
    }
    if (!seal_row(dev, "keys", symmetric ? "symmetric_key" : "private_key", handle, clear.data, clear.len, &sealed)) {
        rc = sks_fail(call, SKS_ERROR_INTERNAL, "cannot seal the imported key");
        goto done;
    }
    st = store_prepare(dev, call,
                       symmetric ? "UPDATE keys SET symmetric_key = ?, symmetric_length = ?, key_backup = key_backup | 1"
                                   " WHERE handle = ?"
                                 : "UPDATE keys SET private_key = ?1, key_backup = key_backup | 1 WHERE handle = ?2");
    if (st == NULL) {
        rc = SKS_ERROR_STORAGE;
        goto done;
    }
    sqlite3_bind_blob(st, 1, sealed.data, (int)sealed.len, SQLITE_STATIC);
    if (symmetric) {
        sqlite3_bind_int64(st, 2, (sqlite3_int64)clear.len);
        sqlite3_bind_int64(st, 3, handle);
    } else {
        sqlite3_bind_int64(st, 2, handle);
    }
    if (!store_step_done(dev, call, st)) {
        rc = SKS_ERROR_STORAGE;
        goto done;
    }
    rc = session_save_counters(dev, call, &s);
done:
    EVP_PKEY_free(pkey);
    sks_buf_free(&data);
    sks_buf_free(&clear);
    sks_buf_free(&sealed);
    key_free(&k);
    session_free(&s);
    return rc;
}

SKS_HANDLER(h_import_symmetric_key)
{
    (void)out;
    return import_key(dev, in, call, 1);
}

SKS_HANDLER(h_import_private_key)
{
    (void)out;
    return import_key(dev, in, call, 0);
}

/* Property bag blob: repeated arr(name, non-empty) || bool(writable) || arr(value). */
static int property_bag_valid(const uint8_t *p, size_t n)
{
    sks_reader r;

    sks_reader_init(&r, p, n);
    if (n == 0)
        return 0;
    while (sks_reader_ok(&r) && r.off < r.n) {
        sks_span name = sks_get_string(&r, "name");
        sks_get_bool(&r, "writable");
        sks_get_string(&r, "value");
        if (sks_reader_ok(&r) && (name.n == 0 || name.n > 255))
            return 0;
    }
    return sks_reader_ok(&r);
}

SKS_HANDLER(h_add_extension)
{
    uint32_t handle = sks_get_uint(in, "keyHandle");
    sks_span type = sks_get_uri(in, "type");
    uint8_t sub_type = sks_get_byte(in, "subType");
    sks_span qualifier = sks_get_string(in, "qualifier");
    sks_span ext = sks_get_blob(in, "extensionData");
    sks_span mac = sks_get_array(in, "mac");
    key_entry k;
    prov_session s;
    sks_buf data, clear;
    const uint8_t *stored;
    size_t stored_len;
    sqlite3_stmt *st;
    sks_status rc;

    (void)out;
    memset(&k, 0, sizeof(k));
    memset(&s, 0, sizeof(s));
    sks_buf_init(&data);
    sks_buf_init(&clear);
    sks_reader_expect_end(in);
    if ((rc = reader_status(call, "addExtension", in)) != SKS_OK)
        goto done;
    if ((rc = open_key(dev, call, handle, &k, &s)) != SKS_OK
        || (rc = require_certificate(call, &k, "addExtension")) != SKS_OK)
        goto done;
    {
        sks_span ee = key_ee_certificate(&k);
        sks_buf_array(&data, ee.p, ee.n);
    }
    sks_buf_array(&data, type.p, type.n);
    sks_buf_byte(&data, sub_type);
    sks_buf_array(&data, qualifier.p, qualifier.n);
    sks_buf_blob(&data, ext.p, ext.n);
    if ((rc = verify_mac(call, &s, "addExtension", &data, mac)) != SKS_OK)
        goto done;
    stored = ext.p;
    stored_len = ext.n;
    if (type.n == 0)
        rc = sks_fail(call, SKS_ERROR_OPTION, "addExtension: \"type\" must not be empty");
    else if (sub_type > 3)
        rc = sks_fail(call, SKS_ERROR_OPTION, "addExtension: \"subType\" %u is unknown (0-3)", sub_type);
    else if (qualifier.n > 128)
        rc = sks_fail(call, SKS_ERROR_OPTION, "addExtension: \"qualifier\" exceeds 128 bytes");
    else if ((sub_type == 3) != (qualifier.n > 0))
        rc = sks_fail(call, SKS_ERROR_OPTION,
                      "addExtension: a logotype needs a qualifier (its MIME type); other sub-types need an empty one");
    else if (ext.n > SKS_EXTENSION_DATA_SIZE + (sub_type == 1 ? 32 : 0)) /* IV and padding */
        rc = sks_fail(call, SKS_ERROR_OPTION, "addExtension: \"extensionData\" exceeds %d bytes",
                      SKS_EXTENSION_DATA_SIZE);
    else if (sub_type == 2 && !property_bag_valid(ext.p, ext.n))
        rc = sks_fail(call, SKS_ERROR_OPTION, "addExtension: malformed property bag");
    if (rc != SKS_OK)
        goto done;
    if (sub_type == 1) {
        if ((rc = decrypt_data(call, &s, "extension", ext, &clear)) != SKS_OK)
            goto done;
        stored = clear.data;
        stored_len = clear.len;
        if (stored_len > SKS_EXTENSION_DATA_SIZE) {
            rc = sks_fail(call, SKS_ERROR_OPTION, "addExtension: decrypted \"extensionData\" exceeds %d bytes",
                          SKS_EXTENSION_DATA_SIZE);
            goto done;
        }
    }
    st = store_prepare(dev, call, "SELECT 1 FROM extensions WHERE key = ? AND type = ?");
    if (st == NULL) {
        rc = SKS_ERROR_STORAGE;
        goto done;
    }
    sqlite3_bind_int64(st, 1, handle);
    sqlite3_bind_text(st, 2, (const char *)type.p, (int)type.n, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW)
        rc = sks_fail(call, SKS_ERROR_OPTION, "addExtension: key #%u already has an extension of type \"%.*s\"",
                      handle, (int)type.n, type.p);
    sqlite3_finalize(st);
    if (rc != SKS_OK)
        goto done;
    st = store_prepare(dev, call,
                       "INSERT INTO extensions (key, type, sub_type, qualifier, data) VALUES (?, ?, ?, ?, ?)");
    if (st == NULL) {
        rc = SKS_ERROR_STORAGE;
        goto done;
    }
    sqlite3_bind_int64(st, 1, handle);
    sqlite3_bind_text(st, 2, (const char *)type.p, (int)type.n, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, sub_type);
    sqlite3_bind_text(st, 4, (const char *)(qualifier.n ? qualifier.p : (const uint8_t *)""), (int)qualifier.n,
                      SQLITE_STATIC);
    sqlite3_bind_blob(st, 5, stored_len ? stored : (const uint8_t *)"", (int)stored_len, SQLITE_STATIC);
    if (!store_step_done(dev, call, st)) {
        rc = SKS_ERROR_STORAGE;
        goto done;
    }
    rc = session_save_counters(dev, call, &s);
done:
    sks_buf_free(&data);
    sks_buf_free(&clear);
    key_free(&k);
    session_free(&s);
    return rc;
}

/* ------------------------------------------------------------------ post-provisioning */

/* Target Key Reference (6.4): the target must be a key of a closed session with a
 * keyManagementKey and the same privacy mode, and `authorization` must be that key's
 * signature over "TargetKeyReference" || HMAC(sessionKey || DeviceID, target EE cert). */
static sks_status verify_target_key(sks_device *dev, sks_call *call, prov_session *s, uint32_t target,
                                    sks_span authorization, key_entry *t)
{
    prov_session owner;
    EVP_PKEY *kmk = NULL;
    sks_buf key, tbs;
    uint8_t inner[32];
    const uint8_t *did;
    size_t did_len;
    sks_span ee;
    sks_status rc;

    memset(&owner, 0, sizeof(owner));
    sks_buf_init(&key);
    sks_buf_init(&tbs);
    if ((rc = key_load(dev, call, target, t)) != SKS_OK)
        goto done;
    if ((rc = session_load(dev, call, t->session, 0, &owner)) != SKS_OK)
        goto done;
    if (owner.open) {
        rc = sks_fail(call, SKS_ERROR_NOT_ALLOWED, "target key #%u belongs to an open session", target);
        goto done;
    }
    if (owner.kmk.len == 0 || (kmk = spki_parse(owner.kmk.data, owner.kmk.len)) == NULL) {
        rc = sks_fail(call, SKS_ERROR_NOT_ALLOWED, "target key #%u is not updatable (its session has no keyManagementKey)",
                      target);
        goto done;
    }
    if (owner.privacy != s->privacy) {
        rc = sks_fail(call, SKS_ERROR_NOT_ALLOWED, "target key #%u was provisioned with privacyEnabled=%s, this session"
                      " has %s", target, owner.privacy ? "true" : "false", s->privacy ? "true" : "false");
        goto done;
    }
    if ((rc = use_session_key(call, s)) != SKS_OK)
        goto done;
    ee = key_ee_certificate(t);
    device_id(dev, s->privacy, &did, &did_len);
    sks_buf_put(&key, s->session_key, 32);
    sks_buf_put(&key, did, did_len);
    if (key.failed || !hmac_sha256(key.data, key.len, ee.p, ee.n, inner)) {
        rc = sks_fail(call, SKS_ERROR_INTERNAL, "HMAC failed");
        goto done;
    }
    sks_buf_put(&tbs, "TargetKeyReference", 18);
    sks_buf_put(&tbs, inner, 32);
    if (tbs.failed || !verify_sha256(kmk, tbs.data, tbs.len, authorization.p, authorization.n))
        rc = sks_fail(call, SKS_ERROR_AUTHORIZATION,
                      "\"authorization\" for target key #%u does not verify with its keyManagementKey", target);
done:
    EVP_PKEY_free(kmk);
    sks_buf_free(&key);
    sks_buf_free(&tbs);
    session_free(&owner);
    return rc;
}

/* Rules for mixing post operations on one target: a delete stands alone; one update,
 * any number of clones; and a new key serves one operation. */
static sks_status check_post_conflicts(sks_device *dev, sks_call *call, uint32_t session, int kind, uint32_t target,
                                       uint32_t new_key)
{
    sqlite3_stmt *st = store_prepare(dev, call, "SELECT kind, new_key, target FROM post_ops WHERE session = ?");
    sks_status rc = SKS_OK;

    if (st == NULL)
        return SKS_ERROR_STORAGE;
    sqlite3_bind_int64(st, 1, session);
    while (rc == SKS_OK && sqlite3_step(st) == SQLITE_ROW) {
        int k = sqlite3_column_int(st, 0);
        uint32_t nk = (uint32_t)sqlite3_column_int64(st, 1), t = (uint32_t)sqlite3_column_int64(st, 2);

        if (t == target && (k == POST_DELETE || kind == POST_DELETE))
            rc = sks_fail(call, SKS_ERROR_NOT_ALLOWED,
                          "postDeleteKey cannot be mixed with other post operations on target key #%u", target);
        else if (t == target && k == kind && kind != POST_CLONE)
            rc = sks_fail(call, SKS_ERROR_NOT_ALLOWED, "a second %s on target key #%u",
                          kind == POST_UPDATE ? "postUpdateKey" : "postUnlockKey", target);
        else if (new_key != 0 && nk == new_key)
            rc = sks_fail(call, SKS_ERROR_NOT_ALLOWED, "key #%u is already the new key of another post operation",
                          new_key);
    }
    sqlite3_finalize(st);
    return rc;
}

/*
 * What a session queued, kept in its (row-MACed) sessions row: how many post operations and a
 * running hash of them. A post_ops row has a MAC of its own, but a deleted row leaves nothing
 * behind, so without this, deleting the row of a queued postDeleteKey or postUnlockKey from the
 * file would cancel it silently. closeProvisioningSession applies the rows only if they are
 * exactly these (docs/storage.md).
 */
typedef struct {
    uint32_t count;
    uint8_t chain[32]; /* all zero before the first operation */
} post_ops_queued;

#define POST_OPS_QUEUED_LEN (4 + 32)

static void put_u64(uint8_t *p, uint64_t v)
{
    int i;

    for (i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

/* chain = SHA-256("sks-post-ops-v1" || chain || u64 seq, session, kind, new_key, target) */
static int post_ops_chain_extend(post_ops_queued *q, int64_t seq, uint32_t session, int kind, uint32_t new_key,
                                 uint32_t target)
{
    static const char LABEL[] = "sks-post-ops-v1";
    uint8_t in[sizeof(LABEL) - 1 + 32 + 5 * 8], *p = in;

    memcpy(p, LABEL, sizeof(LABEL) - 1);
    p += sizeof(LABEL) - 1;
    memcpy(p, q->chain, 32);
    p += 32;
    put_u64(p, (uint64_t)seq);
    put_u64(p + 8, session);
    put_u64(p + 16, (uint64_t)kind);
    put_u64(p + 24, new_key);
    put_u64(p + 32, target);
    q->count++;
    return sha256(in, sizeof(in), q->chain);
}

/* The session's record of its queued operations (its row was checked against its MAC when the
 * session was opened). */
static sks_status post_ops_queued_load(sks_device *dev, sks_call *call, uint32_t session, post_ops_queued *q)
{
    sqlite3_stmt *st = store_prepare(dev, call, "SELECT post_ops_queued FROM sessions WHERE handle = ?");
    const uint8_t *v;
    sks_status rc = SKS_OK;
    int n;

    memset(q, 0, sizeof(*q));
    if (st == NULL)
        return SKS_ERROR_STORAGE;
    sqlite3_bind_int64(st, 1, session);
    if (sqlite3_step(st) != SQLITE_ROW) {
        rc = sks_fail(call, SKS_ERROR_STORAGE, "storage error: provisioning session #%u is unreadable", session);
    } else if ((n = sqlite3_column_bytes(st, 0)) == POST_OPS_QUEUED_LEN) {
        v = sqlite3_column_blob(st, 0);
        q->count = (uint32_t)v[0] << 24 | (uint32_t)v[1] << 16 | (uint32_t)v[2] << 8 | v[3];
        memcpy(q->chain, v + 4, 32);
    } else if (n != 0) {
        rc = sks_fail(call, SKS_ERROR_STORAGE, "integrity error: the post operations of provisioning session #%u"
                      " are recorded in an unknown form", session);
    }
    sqlite3_finalize(st);
    return rc;
}

static sks_status post_ops_queued_save(sks_device *dev, sks_call *call, uint32_t session, const post_ops_queued *q)
{
    sqlite3_stmt *st = store_prepare(dev, call, "UPDATE sessions SET post_ops_queued = ? WHERE handle = ?");
    uint8_t v[POST_OPS_QUEUED_LEN];

    if (st == NULL)
        return SKS_ERROR_STORAGE;
    v[0] = (uint8_t)(q->count >> 24);
    v[1] = (uint8_t)(q->count >> 16);
    v[2] = (uint8_t)(q->count >> 8);
    v[3] = (uint8_t)q->count;
    memcpy(v + 4, q->chain, 32);
    sqlite3_bind_blob(st, 1, v, sizeof(v), SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, session);
    return store_step_done(dev, call, st) ? SKS_OK : SKS_ERROR_STORAGE;
}

/* Queues one operation and records it in the session row, in the caller's transaction. */
static sks_status queue_post_op(sks_device *dev, sks_call *call, uint32_t session, int kind, uint32_t new_key,
                                uint32_t target)
{
    sqlite3_stmt *st = store_prepare(dev, call, "INSERT INTO post_ops (session, kind, new_key, target) VALUES (?, ?, ?, ?)");
    post_ops_queued q;
    sks_status rc;

    if (st == NULL)
        return SKS_ERROR_STORAGE;
    sqlite3_bind_int64(st, 1, session);
    sqlite3_bind_int(st, 2, kind);
    sqlite3_bind_int64(st, 3, new_key);
    sqlite3_bind_int64(st, 4, target);
    if (!store_step_done(dev, call, st))
        return SKS_ERROR_STORAGE;
    if ((rc = post_ops_queued_load(dev, call, session, &q)) != SKS_OK)
        return rc;
    if (!post_ops_chain_extend(&q, sqlite3_last_insert_rowid(dev->db), session, kind, new_key, target))
        return sks_fail(call, SKS_ERROR_INTERNAL, "SHA-256 failed");
    return post_ops_queued_save(dev, call, session, &q);
}

/* postDeleteKey and postUnlockKey: (provisioningHandle, target, authorization, mac). */
static sks_status post_session_op(sks_device *dev, sks_reader *in, sks_call *call, int kind)
{
    const char *method = kind == POST_DELETE ? "postDeleteKey" : "postUnlockKey";
    uint32_t handle = sks_get_uint(in, "provisioningHandle");
    uint32_t target = sks_get_uint(in, "targetKeyHandle");
    sks_span auth = sks_get_array(in, "authorization");
    sks_span mac = sks_get_array(in, "mac");
    prov_session s;
    key_entry t;
    sks_buf data;
    sks_status rc;

    memset(&s, 0, sizeof(s));
    memset(&t, 0, sizeof(t));
    sks_buf_init(&data);
    sks_reader_expect_end(in);
    if ((rc = reader_status(call, method, in)) != SKS_OK)
        goto done;
    if ((rc = open_session(dev, call, handle, &s)) != SKS_OK)
        goto done;
    if ((rc = verify_target_key(dev, call, &s, target, auth, &t)) != SKS_OK)
        goto done;
    sks_buf_array(&data, auth.p, auth.n);
    if ((rc = verify_mac(call, &s, method, &data, mac)) != SKS_OK)
        goto done;
    if (kind == POST_UNLOCK && t.pin_policy == 0) {
        rc = sks_fail(call, SKS_ERROR_NOT_ALLOWED, "postUnlockKey: target key #%u is not PIN protected", target);
        goto done;
    }
    if ((rc = check_post_conflicts(dev, call, handle, kind, target, 0)) != SKS_OK
        || (rc = queue_post_op(dev, call, handle, kind, 0, target)) != SKS_OK)
        goto done;
    rc = session_save_counters(dev, call, &s);
done:
    sks_buf_free(&data);
    key_free(&t);
    session_free(&s);
    return rc;
}

SKS_HANDLER(h_post_delete_key)
{
    (void)out;
    return post_session_op(dev, in, call, POST_DELETE);
}

SKS_HANDLER(h_post_unlock_key)
{
    (void)out;
    return post_session_op(dev, in, call, POST_UNLOCK);
}

/* postUpdateKey and postCloneKeyProtection: (new keyHandle, target, authorization, mac). */
static sks_status post_key_op(sks_device *dev, sks_reader *in, sks_call *call, int kind)
{
    const char *method = kind == POST_UPDATE ? "postUpdateKey" : "postCloneKeyProtection";
    uint32_t handle = sks_get_uint(in, "keyHandle");
    uint32_t target = sks_get_uint(in, "targetKeyHandle");
    sks_span auth = sks_get_array(in, "authorization");
    sks_span mac = sks_get_array(in, "mac");
    prov_session s;
    key_entry k, t;
    pin_policy tp;
    sks_buf data;
    sks_status rc;

    memset(&s, 0, sizeof(s));
    memset(&k, 0, sizeof(k));
    memset(&t, 0, sizeof(t));
    memset(&tp, 0, sizeof(tp));
    sks_buf_init(&data);
    sks_reader_expect_end(in);
    if ((rc = reader_status(call, method, in)) != SKS_OK)
        goto done;
    if ((rc = open_key(dev, call, handle, &k, &s)) != SKS_OK || (rc = require_certificate(call, &k, method)) != SKS_OK)
        goto done;
    if ((rc = verify_target_key(dev, call, &s, target, auth, &t)) != SKS_OK)
        goto done;
    {
        sks_span ee = key_ee_certificate(&k);
        sks_buf_array(&data, ee.p, ee.n);
    }
    sks_buf_array(&data, auth.p, auth.n);
    if ((rc = verify_mac(call, &s, method, &data, mac)) != SKS_OK)
        goto done;
    if (k.pin_policy != 0 || k.device_pin) {
        rc = sks_fail(call, SKS_ERROR_NOT_ALLOWED, "%s: the new key #%u must not be PIN protected (it inherits)", method,
                      handle);
        goto done;
    }
    if (kind == POST_UPDATE && k.app_usage != t.app_usage) {
        rc = sks_fail(call, SKS_ERROR_NOT_ALLOWED, "postUpdateKey: key #%u and target key #%u differ in appUsage",
                      handle, target);
        goto done;
    }
    if (kind == POST_CLONE && t.pin_policy != 0) {
        if ((rc = pin_policy_load(dev, call, t.pin_policy, &tp)) != SKS_OK)
            goto done;
        if (tp.grouping != 1) {
            rc = sks_fail(call, SKS_ERROR_NOT_ALLOWED,
                          "postCloneKeyProtection: the target's PIN policy must have grouping \"shared\"");
            goto done;
        }
    }
    if ((rc = check_post_conflicts(dev, call, s.handle, kind, target, handle)) != SKS_OK
        || (rc = queue_post_op(dev, call, s.handle, kind, handle, target)) != SKS_OK)
        goto done;
    rc = session_save_counters(dev, call, &s);
done:
    sks_buf_free(&data);
    key_free(&k);
    key_free(&t);
    pin_policy_free(&tp);
    session_free(&s);
    return rc;
}

SKS_HANDLER(h_post_update_key)
{
    (void)out;
    return post_key_op(dev, in, call, POST_UPDATE);
}

SKS_HANDLER(h_post_clone_key_protection)
{
    (void)out;
    return post_key_op(dev, in, call, POST_CLONE);
}

/* ------------------------------------------------------------------ close */

/* Is a target of this session's update or delete operations (so its EE may repeat). */
static int is_replaced_target(sks_device *dev, uint32_t session, uint32_t key)
{
    sqlite3_stmt *st = NULL;
    int yes = 0;

    if (sqlite3_prepare_v2(dev->db, "SELECT 1 FROM post_ops WHERE session = ? AND target = ? AND kind IN (1, 3)", -1,
                           &st, NULL)
        != SQLITE_OK)
        return 0;
    sqlite3_bind_int64(st, 1, session);
    sqlite3_bind_int64(st, 2, key);
    yes = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    return yes;
}

static sks_status check_no_unreferenced_policies(sks_device *dev, sks_call *call, uint32_t session)
{
    sqlite3_stmt *st = store_prepare(
        dev, call,
        "SELECT 'PIN', id FROM pin_policies p WHERE session = ?1 AND NOT EXISTS"
        " (SELECT 1 FROM keys k WHERE k.pin_policy = p.handle) UNION ALL"
        " SELECT 'PUK', id FROM puk_policies u WHERE session = ?1 AND NOT EXISTS"
        " (SELECT 1 FROM pin_policies p WHERE p.puk = u.handle)");
    sks_status rc = SKS_OK;

    if (st == NULL)
        return SKS_ERROR_STORAGE;
    sqlite3_bind_int64(st, 1, session);
    if (sqlite3_step(st) == SQLITE_ROW)
        rc = sks_fail(call, SKS_ERROR_NOT_ALLOWED, "closeProvisioningSession: %s policy \"%s\" is not referenced",
                      (const char *)sqlite3_column_text(st, 0), (const char *)sqlite3_column_text(st, 1));
    sqlite3_finalize(st);
    return rc;
}

/* Is an endorsed algorithm usable with this key's material? */
static int endorsed_fits(const sks_algorithm *a, int sym_len, int key_type)
{
    if (a->cls == ALG_SPECIAL)
        return 1; /* "none" */
    if (sym_len > 0) {
        if (a->cls == ALG_HMAC)
            return 1;
        if (a->cls == ALG_SYM_ENCRYPT)
            return a->sym_key_len ? (size_t)sym_len == a->sym_key_len : (sym_len == 16 || sym_len == 24 || sym_len == 32);
        return 0;
    }
    if (a->cls == ALG_HMAC || a->cls == ALG_SYM_ENCRYPT)
        return 0;
    return (key_type == EVP_PKEY_RSA && a->key == KEYTYPE_RSA) || (key_type == EVP_PKEY_EC && a->key == KEYTYPE_EC)
           || (key_type == EVP_PKEY_ED25519 && a->key == KEYTYPE_ED25519);
}

/* Close-time checks on one key of the session. */
static sks_status check_key_at_close(sks_device *dev, sks_call *call, const key_entry *k)
{
    EVP_PKEY *priv = NULL, *cert_key = NULL;
    X509 *x = NULL;
    sks_span ee = key_ee_certificate(k);
    const unsigned char *q = ee.p;
    sqlite3_stmt *st;
    sks_reader r;
    uint16_t n, i;
    sks_status rc = SKS_OK;

    if (!k->has_certificates)
        return sks_fail(call, SKS_ERROR_NOT_ALLOWED, "closeProvisioningSession: key \"%s\" has no certificate", k->id);
    x = d2i_X509(NULL, &q, (long)ee.n);
    cert_key = x ? X509_get0_pubkey(x) : NULL;
    if (cert_key == NULL) {
        rc = sks_fail(call, SKS_ERROR_INTERNAL, "certificate of key \"%s\" cannot be parsed", k->id);
        goto done;
    }
    if (k->symmetric_length == 0) {
        if ((priv = key_private(dev, call, k)) == NULL) {
            rc = SKS_ERROR_INTERNAL;
            goto done;
        }
        if (!public_keys_equal(priv, cert_key)) {
            rc = sks_fail(call, SKS_ERROR_CRYPTO,
                          "closeProvisioningSession: the private key of \"%s\" does not match its certificate", k->id);
            goto done;
        }
    }
    /* No other key may carry the same end-entity certificate, unless it is being replaced. */
    st = store_prepare(dev, call, "SELECT handle FROM keys WHERE ee_sha256 = (SELECT ee_sha256 FROM keys WHERE handle = ?)"
                                  " AND handle != ?");
    if (st == NULL) {
        rc = SKS_ERROR_STORAGE;
        goto done;
    }
    sqlite3_bind_int64(st, 1, k->handle);
    sqlite3_bind_int64(st, 2, k->handle);
    while (rc == SKS_OK && sqlite3_step(st) == SQLITE_ROW) {
        uint32_t other = (uint32_t)sqlite3_column_int64(st, 0);
        if (!is_replaced_target(dev, k->session, other))
            rc = sks_fail(call, SKS_ERROR_NOT_ALLOWED,
                          "closeProvisioningSession: key \"%s\" has the same certificate as key #%u", k->id, other);
    }
    sqlite3_finalize(st);
    if (rc != SKS_OK)
        goto done;
    sks_reader_init(&r, k->endorsed.data, k->endorsed.len);
    n = sks_get_ushort(&r, "count");
    for (i = 0; i < n && rc == SKS_OK; i++) {
        sks_span u = sks_get_array(&r, "uri");
        const sks_algorithm *a = alg_find_n((const char *)u.p, u.n);
        if (a == NULL || !endorsed_fits(a, (int)k->symmetric_length, EVP_PKEY_get_base_id(priv ? priv : cert_key)))
            rc = sks_fail(call, SKS_ERROR_ALGORITHM,
                          "closeProvisioningSession: endorsed algorithm \"%.*s\" does not fit the key material of \"%s\"",
                          (int)u.n, u.p, k->id);
    }
done:
    EVP_PKEY_free(priv);
    X509_free(x);
    return rc;
}

static sks_status for_each_session_key(sks_device *dev, sks_call *call, uint32_t session,
                                       sks_status (*fn)(sks_device *, sks_call *, const key_entry *))
{
    sqlite3_stmt *st = store_prepare(dev, call, "SELECT handle FROM keys WHERE session = ? ORDER BY handle");
    sks_status rc = SKS_OK;

    if (st == NULL)
        return SKS_ERROR_STORAGE;
    sqlite3_bind_int64(st, 1, session);
    while (rc == SKS_OK && sqlite3_step(st) == SQLITE_ROW) {
        key_entry k;
        rc = key_load(dev, call, (uint32_t)sqlite3_column_int64(st, 0), &k);
        if (rc == SKS_OK)
            rc = fn(dev, call, &k);
        key_free(&k);
    }
    sqlite3_finalize(st);
    return rc;
}

/* The new key takes the target's place and handle; the target's PIN link stays. */
static sks_status apply_update(sks_device *dev, sks_call *call, uint32_t new_key, uint32_t target)
{
    static const char *const SQL[] = {
        "UPDATE keys SET (session, id, device_pin, pin_caching, biometric, export_protection, delete_protection,"
        " app_usage, friendly_name, key_algorithm, key_parameters, endorsed, public_key, private_key, symmetric_key,"
        " symmetric_length, certificates, ee_sha256, key_backup, mac) = (SELECT session, id, device_pin, pin_caching,"
        " biometric, export_protection, delete_protection, app_usage, friendly_name, key_algorithm, key_parameters,"
        " endorsed, public_key, private_key, symmetric_key, symmetric_length, certificates, ee_sha256, key_backup, mac"
        " FROM keys WHERE handle = ?1) WHERE handle = ?2",
        "DELETE FROM extensions WHERE key = ?2",
        "UPDATE extensions SET key = ?2 WHERE key = ?1",
        "UPDATE post_ops SET new_key = ?2 WHERE new_key = ?1",
        "DELETE FROM keys WHERE handle = ?1",
    };
    size_t i;

    for (i = 0; i < sizeof(SQL) / sizeof(SQL[0]); i++) {
        if (!store_run(dev, call, SQL[i], new_key, target))
            return SKS_ERROR_STORAGE;
        /* The copied sealed columns were sealed for the new key's row. */
        if (i == 0 && key_reseal_moved(dev, call, new_key, target) != SKS_OK)
            return SKS_ERROR_STORAGE;
    }
    return SKS_OK;
}

static sks_status apply_unlock(sks_device *dev, sks_call *call, uint32_t target)
{
    /* Clears the PIN error count and, if the PIN policy has a PUK, the PUK error count. */
    if (!store_run(dev, call, "UPDATE pins SET error_count = 0 WHERE handle = (SELECT pin FROM keys WHERE handle = ?1)",
                   target, 0)
        || !store_run(dev, call,
                      "UPDATE puk_policies SET error_count = 0 WHERE handle = (SELECT p.puk FROM pin_policies p"
                      " JOIN keys k ON k.pin_policy = p.handle WHERE k.handle = ?1)",
                      target, 0))
        return SKS_ERROR_STORAGE;
    return SKS_OK;
}

/* Moves every object of a session touched by a post operation into the closing session,
 * then removes the emptied session (spec: closeProvisioningSession). */
static sks_status adopt_session(sks_device *dev, sks_call *call, uint32_t from, uint32_t to)
{
    static const char *const SQL[] = {
        "UPDATE keys SET session = ?2 WHERE session = ?1",
        "UPDATE pin_policies SET session = ?2 WHERE session = ?1",
        "UPDATE puk_policies SET session = ?2 WHERE session = ?1",
        "DELETE FROM skip_requests WHERE session = ?1 AND ?2 != ?1",
        "DELETE FROM sessions WHERE handle = ?1 AND ?2 != ?1",
    };
    size_t i;

    for (i = 0; i < sizeof(SQL) / sizeof(SQL[0]); i++)
        if (!store_run(dev, call, SQL[i], from, to))
            return SKS_ERROR_STORAGE;
    return SKS_OK;
}

/* Runs the queued post operations in call order. Target sessions are adopted after all
 * operations ran, so a deleted target's session is found before it disappears. */
static sks_status apply_post_ops(sks_device *dev, sks_call *call, uint32_t session)
{
    sqlite3_stmt *st = store_prepare(
        dev, call,
        "SELECT o.kind, o.new_key, o.target, k.session, o.seq FROM post_ops o LEFT JOIN keys k ON k.handle = o.target"
        " WHERE o.session = ? ORDER BY o.seq");
    uint32_t owners[256];
    size_t n_owners = 0, i;
    struct {
        int kind;
        uint32_t new_key, target;
    } ops[256];
    size_t n_ops = 0;
    post_ops_queued queued, present;
    sks_status rc;

    memset(&present, 0, sizeof(present));
    if (st == NULL)
        return SKS_ERROR_STORAGE;
    if ((rc = post_ops_queued_load(dev, call, session, &queued)) != SKS_OK) {
        sqlite3_finalize(st);
        return rc;
    }
    sqlite3_bind_int64(st, 1, session);
    while (sqlite3_step(st) == SQLITE_ROW) {
        uint32_t owner = (uint32_t)sqlite3_column_int64(st, 3);
        if ((rc = row_verify(dev, call, "post_ops", sqlite3_column_int64(st, 4))) != SKS_OK)
            break;
        if (!post_ops_chain_extend(&present, sqlite3_column_int64(st, 4), session, sqlite3_column_int(st, 0),
                                   (uint32_t)sqlite3_column_int64(st, 1), (uint32_t)sqlite3_column_int64(st, 2))) {
            rc = sks_fail(call, SKS_ERROR_INTERNAL, "SHA-256 failed");
            break;
        }
        if (sqlite3_column_type(st, 3) == SQLITE_NULL) {
            rc = sks_fail(call, SKS_ERROR_NO_KEY,
                          "closeProvisioningSession: target key #%u of a post operation no longer exists",
                          (uint32_t)sqlite3_column_int64(st, 2));
            break;
        }
        if (n_ops == sizeof(ops) / sizeof(ops[0])) {
            rc = sks_fail(call, SKS_ERROR_NOT_ALLOWED, "too many post operations in one session");
            break;
        }
        ops[n_ops].kind = sqlite3_column_int(st, 0);
        ops[n_ops].new_key = (uint32_t)sqlite3_column_int64(st, 1);
        ops[n_ops].target = (uint32_t)sqlite3_column_int64(st, 2);
        n_ops++;
        for (i = 0; i < n_owners && owners[i] != owner; i++)
            ;
        if (i == n_owners && n_owners < sizeof(owners) / sizeof(owners[0]))
            owners[n_owners++] = owner;
    }
    sqlite3_finalize(st);
    /* Exactly the operations the session queued, before any is applied: a row deleted (or put
     * back from elsewhere) outside the device would otherwise cancel or add one unnoticed. */
    if (rc == SKS_OK && (present.count != queued.count || CRYPTO_memcmp(present.chain, queued.chain, 32) != 0))
        rc = sks_fail(call, SKS_ERROR_STORAGE,
                      "integrity error: provisioning session #%u queued %u post operation(s), but the %u in the"
                      " store are not those (deleted, added or changed outside the device)",
                      session, queued.count, present.count);
    for (i = 0; i < n_ops && rc == SKS_OK; i++) {
        switch (ops[i].kind) {
        case POST_DELETE:
            rc = store_run(dev, call, "DELETE FROM extensions WHERE key = ?1", ops[i].target, 0)
                         && store_run(dev, call, "DELETE FROM keys WHERE handle = ?1", ops[i].target, 0)
                     ? SKS_OK
                     : SKS_ERROR_STORAGE;
            break;
        case POST_UNLOCK:
            rc = apply_unlock(dev, call, ops[i].target);
            break;
        case POST_UPDATE:
            rc = apply_update(dev, call, ops[i].new_key, ops[i].target);
            break;
        case POST_CLONE:
            rc = store_run(dev, call,
                           "UPDATE keys SET (pin_policy, pin) = (SELECT pin_policy, pin FROM keys WHERE handle = ?2)"
                           " WHERE handle = ?1",
                           ops[i].new_key, ops[i].target)
                     ? SKS_OK
                     : SKS_ERROR_STORAGE;
            break;
        default:
            rc = sks_fail(call, SKS_ERROR_INTERNAL, "unknown post operation %d", ops[i].kind);
        }
    }
    for (i = 0; i < n_owners && rc == SKS_OK; i++)
        rc = adopt_session(dev, call, owners[i], session);
    /* Objects that only deleted keys kept alive go too; policies of other open sessions
     * may still be waiting for their keys and are left alone. */
    if (rc == SKS_OK
        && (!store_run(dev, call, "DELETE FROM post_ops WHERE session = ?1", session, 0)
            || !store_run(dev, call, "DELETE FROM pins WHERE handle NOT IN (SELECT pin FROM keys)", 0, 0)
            || !store_run(dev, call,
                          "DELETE FROM pin_policies WHERE handle NOT IN (SELECT pin_policy FROM keys) AND (session = ?1"
                          " OR session IN (SELECT handle FROM sessions WHERE open = 0))",
                          session, 0)
            || !store_run(dev, call,
                          "DELETE FROM puk_policies WHERE handle NOT IN (SELECT puk FROM pin_policies) AND (session = ?1"
                          " OR session IN (SELECT handle FROM sessions WHERE open = 0))",
                          session, 0)))
        rc = SKS_ERROR_STORAGE;
    return rc;
}

SKS_HANDLER(h_close_provisioning_session)
{
    uint32_t handle = sks_get_uint(in, "provisioningHandle");
    sks_span nonce = sks_get_array(in, "nonce");
    sks_span mac = sks_get_array(in, "mac");
    prov_session s;
    sks_buf data, att_in;
    uint8_t attestation[32];
    sks_status rc;

    memset(&s, 0, sizeof(s));
    sks_buf_init(&data);
    sks_buf_init(&att_in);
    sks_reader_expect_end(in);
    if ((rc = reader_status(call, "closeProvisioningSession", in)) != SKS_OK)
        goto done;
    if ((rc = open_session(dev, call, handle, &s)) != SKS_OK)
        goto done;
    sks_buf_string(&data, s.client_session_id);
    sks_buf_string(&data, s.server_session_id);
    sks_buf_string(&data, s.issuer_uri);
    sks_buf_array(&data, nonce.p, nonce.n);
    if ((rc = verify_mac(call, &s, "closeProvisioningSession", &data, mac)) != SKS_OK)
        goto done;
    if (nonce.n < 1 || nonce.n > 32) {
        rc = sks_fail(call, SKS_ERROR_OPTION, "closeProvisioningSession: \"nonce\" must be 1-32 bytes");
        goto done;
    }
    if ((rc = check_no_unreferenced_policies(dev, call, handle)) != SKS_OK
        || (rc = for_each_session_key(dev, call, handle, check_key_at_close)) != SKS_OK)
        goto done;
    if ((rc = apply_post_ops(dev, call, handle)) != SKS_OK)
        goto done;
    sks_buf_array(&att_in, nonce.p, nonce.n);
    if ((rc = attest(call, &s, &att_in, attestation)) != SKS_OK)
        goto done;
    if ((rc = session_save_counters(dev, call, &s)) != SKS_OK)
        goto done;
    /* A session that ends up owning no key has no mission and goes at once (spec 3.3). */
    if (!store_run(dev, call, "UPDATE sessions SET open = 0 WHERE handle = ?1", handle, 0)
        || !store_run(dev, call,
                      "DELETE FROM sessions WHERE handle = ?1 AND NOT EXISTS (SELECT 1 FROM keys WHERE session = ?1)",
                      handle, 0)
        || !store_run(dev, call,
                      "DELETE FROM skip_requests WHERE session = ?1 AND NOT EXISTS (SELECT 1 FROM sessions WHERE handle = ?1)",
                      handle, 0)) {
        rc = SKS_ERROR_STORAGE;
        goto done;
    }
    sks_buf_array(out, attestation, 32);
done:
    sks_buf_free(&data);
    sks_buf_free(&att_in);
    session_free(&s);
    return rc;
}
