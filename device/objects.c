/*
 * Loading, saving and deleting the objects of the credential database: provisioning
 * sessions, key entries, PIN and PUK policies.
 */
#include "internal.h"

#include <string.h>

#include <openssl/crypto.h>

static char *col_text(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return OPENSSL_strdup(t ? (const char *)t : "");
}

static void col_blob(sqlite3_stmt *st, int i, sks_buf *out)
{
    sks_buf_put(out, sqlite3_column_blob(st, i), (size_t)sqlite3_column_bytes(st, i));
}

void device_id(const sks_device *dev, int privacy, const uint8_t **p, size_t *n)
{
    if (privacy) {
        *p = (const uint8_t *)"Anonymous";
        *n = 9;
    } else {
        *p = dev->device_cert;
        *n = dev->device_cert_len;
    }
}

sks_status session_load(sks_device *dev, sks_call *call, uint32_t handle, int must_be_open, prov_session *s)
{
    sqlite3_stmt *st;
    sks_buf sk;
    sks_status rc = SKS_OK;
    int step;

    memset(s, 0, sizeof(*s));
    sks_buf_init(&s->kmk);
    st = store_prepare(dev, call,
                       "SELECT open, session_key, algorithm, privacy, client_session_id, server_session_id,"
                       " issuer_uri, kmk, client_time, lifetime, key_limit, mac_counter"
                       " FROM sessions WHERE handle = ?");
    if (st == NULL)
        return SKS_ERROR_STORAGE;
    sqlite3_bind_int64(st, 1, handle);
    step = sqlite3_step(st);
    if (step != SQLITE_ROW) {
        sqlite3_finalize(st);
        if (step != SQLITE_DONE)
            return sks_fail(call, SKS_ERROR_STORAGE, "storage error: %s", sqlite3_errmsg(dev->db));
        return sks_fail(call, SKS_ERROR_NO_SESSION, "provisioning session #%u does not exist", handle);
    }
    s->handle = handle;
    s->open = sqlite3_column_int(st, 0);
    sks_buf_init(&sk);
    rc = row_verify(dev, call, "sessions", handle);
    if (rc == SKS_OK
        && (!unseal_row(dev, "sessions", "session_key", handle, sqlite3_column_blob(st, 1),
                        (size_t)sqlite3_column_bytes(st, 1), &sk)
            || sk.len != 32)) {
        rc = sks_fail(call, SKS_ERROR_STORAGE,
                      "integrity error: the session key of provisioning session #%u cannot be unsealed for its row",
                      handle);
    } else if (rc == SKS_OK) {
        memcpy(s->session_key, sk.data, 32);
    }
    sks_buf_free(&sk);
    s->algorithm = col_text(st, 2);
    s->privacy = sqlite3_column_int(st, 3);
    s->client_session_id = col_text(st, 4);
    s->server_session_id = col_text(st, 5);
    s->issuer_uri = col_text(st, 6);
    col_blob(st, 7, &s->kmk);
    s->client_time = (uint32_t)sqlite3_column_int64(st, 8);
    s->lifetime = (uint32_t)sqlite3_column_int64(st, 9);
    s->key_limit = (uint32_t)sqlite3_column_int64(st, 10);
    s->mac_counter = (uint32_t)sqlite3_column_int64(st, 11);
    sqlite3_finalize(st);
    if (rc == SKS_OK && must_be_open && !s->open)
        rc = sks_fail(call, SKS_ERROR_NO_SESSION, "provisioning session #%u is closed", handle);
    if (rc == SKS_OK && (s->algorithm == NULL || s->client_session_id == NULL || s->server_session_id == NULL
                         || s->issuer_uri == NULL || s->kmk.failed))
        rc = sks_fail(call, SKS_ERROR_INTERNAL, "out of memory");
    return rc;
}

void session_free(prov_session *s)
{
    OPENSSL_cleanse(s->session_key, sizeof(s->session_key));
    OPENSSL_free(s->algorithm);
    OPENSSL_free(s->client_session_id);
    OPENSSL_free(s->server_session_id);
    OPENSSL_free(s->issuer_uri);
    sks_buf_free(&s->kmk);
    memset(s, 0, sizeof(*s));
}

sks_status session_save_counters(sks_device *dev, sks_call *call, const prov_session *s)
{
    sqlite3_stmt *st = store_prepare(dev, call, "UPDATE sessions SET mac_counter = ?, key_limit = ? WHERE handle = ?");

    if (st == NULL)
        return SKS_ERROR_STORAGE;
    sqlite3_bind_int64(st, 1, s->mac_counter);
    sqlite3_bind_int64(st, 2, s->key_limit);
    sqlite3_bind_int64(st, 3, s->handle);
    return store_step_done(dev, call, st) ? SKS_OK : SKS_ERROR_STORAGE;
}

static sks_status exec_with_handle(sks_device *dev, sks_call *call, const char *sql, uint32_t handle)
{
    sqlite3_stmt *st = store_prepare(dev, call, sql);

    if (st == NULL)
        return SKS_ERROR_STORAGE;
    sqlite3_bind_int64(st, 1, handle);
    return store_step_done(dev, call, st) ? SKS_OK : SKS_ERROR_STORAGE;
}

sks_status session_delete_all(sks_device *dev, sks_call *call, uint32_t handle)
{
    static const char *const SQL[] = {
        "DELETE FROM extensions WHERE key IN (SELECT handle FROM keys WHERE session = ?1)",
        "DELETE FROM keys WHERE session = ?1",
        "DELETE FROM pins WHERE policy IN (SELECT handle FROM pin_policies WHERE session = ?1)",
        "DELETE FROM pin_policies WHERE session = ?1",
        "DELETE FROM puk_policies WHERE session = ?1",
        "DELETE FROM post_ops WHERE session = ?1",
        "DELETE FROM skip_requests WHERE session = ?1",
        "DELETE FROM sessions WHERE handle = ?1",
    };
    size_t i;

    for (i = 0; i < sizeof(SQL) / sizeof(SQL[0]); i++)
        if (exec_with_handle(dev, call, SQL[i], handle) != SKS_OK)
            return SKS_ERROR_STORAGE;
    return SKS_OK;
}

sks_status key_load(sks_device *dev, sks_call *call, uint32_t handle, key_entry *k)
{
    sqlite3_stmt *st;
    int step;

    memset(k, 0, sizeof(*k));
    st = store_cached(dev, call,
                       "SELECT session, id, pin_policy, pin, device_pin, pin_caching, biometric,"
                       " export_protection, delete_protection, app_usage, friendly_name, key_algorithm,"
                       " key_parameters, endorsed, public_key, private_key IS NOT NULL, symmetric_length,"
                       " certificates, key_backup, mac FROM keys WHERE handle = ?");
    if (st == NULL)
        return SKS_ERROR_STORAGE;
    sqlite3_bind_int64(st, 1, handle);
    step = sqlite3_step(st);
    if (step != SQLITE_ROW) {
        store_release(dev, st);
        if (step != SQLITE_DONE)
            return sks_fail(call, SKS_ERROR_STORAGE, "storage error: %s", sqlite3_errmsg(dev->db));
        return sks_fail(call, SKS_ERROR_NO_KEY, "key #%u does not exist", handle);
    }
    k->handle = handle;
    k->session = (uint32_t)sqlite3_column_int64(st, 0);
    k->id = col_text(st, 1);
    k->pin_policy = (uint32_t)sqlite3_column_int64(st, 2);
    k->pin = sqlite3_column_int64(st, 3);
    k->device_pin = sqlite3_column_int(st, 4);
    k->pin_caching = sqlite3_column_int(st, 5);
    k->biometric = (uint8_t)sqlite3_column_int(st, 6);
    k->export_protection = (uint8_t)sqlite3_column_int(st, 7);
    k->delete_protection = (uint8_t)sqlite3_column_int(st, 8);
    k->app_usage = (uint8_t)sqlite3_column_int(st, 9);
    k->friendly_name = col_text(st, 10);
    k->key_algorithm = col_text(st, 11);
    col_blob(st, 12, &k->key_parameters);
    col_blob(st, 13, &k->endorsed);
    col_blob(st, 14, &k->public_key);
    k->has_private_key = sqlite3_column_int(st, 15);
    k->symmetric_length = (uint32_t)sqlite3_column_int64(st, 16);
    k->has_certificates = sqlite3_column_type(st, 17) != SQLITE_NULL;
    col_blob(st, 17, &k->certificates);
    k->key_backup = (uint8_t)sqlite3_column_int(st, 18);
    col_blob(st, 19, &k->mac);
    store_release(dev, st);
    if (row_verify(dev, call, "keys", handle) != SKS_OK)
        return SKS_ERROR_STORAGE;
    if (k->id == NULL || k->friendly_name == NULL || k->key_algorithm == NULL || k->key_parameters.failed
        || k->endorsed.failed || k->public_key.failed || k->certificates.failed || k->mac.failed)
        return sks_fail(call, SKS_ERROR_INTERNAL, "out of memory");
    return SKS_OK;
}

sks_status key_load_usable(sks_device *dev, sks_call *call, uint32_t handle, key_entry *k)
{
    sqlite3_stmt *st;
    int open = 1;
    sks_status rc = key_load(dev, call, handle, k);

    if (rc != SKS_OK)
        return rc;
    /* The session's open flag decides whether the key is usable: its row must be intact. */
    if ((rc = row_verify(dev, call, "sessions", k->session)) != SKS_OK)
        return rc;
    st = store_cached(dev, call, "SELECT open FROM sessions WHERE handle = ?");
    if (st == NULL)
        return SKS_ERROR_STORAGE;
    sqlite3_bind_int64(st, 1, k->session);
    if (sqlite3_step(st) == SQLITE_ROW)
        open = sqlite3_column_int(st, 0);
    store_release(dev, st);
    if (open)
        return sks_fail(call, SKS_ERROR_NO_KEY, "key #%u is still being provisioned (its session is open)", handle);
    return SKS_OK;
}

void key_free(key_entry *k)
{
    OPENSSL_free(k->id);
    OPENSSL_free(k->friendly_name);
    OPENSSL_free(k->key_algorithm);
    sks_buf_free(&k->key_parameters);
    sks_buf_free(&k->endorsed);
    sks_buf_free(&k->public_key);
    sks_buf_free(&k->certificates);
    sks_buf_free(&k->mac);
    memset(k, 0, sizeof(*k));
}

sks_span key_ee_certificate(const key_entry *k)
{
    sks_reader r;
    sks_span s = { NULL, 0 };

    if (!k->has_certificates)
        return s;
    sks_reader_init(&r, k->certificates.data, k->certificates.len);
    if (sks_get_ushort(&r, "count") == 0)
        return s;
    s = sks_get_array(&r, "certificate");
    return sks_reader_ok(&r) ? s : (sks_span){ NULL, 0 };
}

static sks_status load_sealed_column(sks_device *dev, sks_call *call, uint32_t handle, const char *column,
                                     const char *label, sks_buf *out)
{
    char sql[128];
    sqlite3_stmt *st;
    sks_status rc = SKS_OK;

    snprintf(sql, sizeof(sql), "SELECT %s FROM keys WHERE handle = ?", column);
    st = store_prepare(dev, call, sql);
    if (st == NULL)
        return SKS_ERROR_STORAGE;
    sqlite3_bind_int64(st, 1, handle);
    if (sqlite3_step(st) != SQLITE_ROW || sqlite3_column_type(st, 0) == SQLITE_NULL)
        rc = sks_fail(call, SKS_ERROR_NO_KEY, "key #%u has no %s", handle, label);
    else if (!unseal_row(dev, "keys", column, handle, sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0),
                         out))
        rc = sks_fail(call, SKS_ERROR_STORAGE, "integrity error: the %s of key #%u cannot be unsealed for its row",
                      label, handle);
    sqlite3_finalize(st);
    return rc;
}

static key_cache_entry *cache_lookup(sks_device *dev, uint32_t handle, const uint8_t *tag)
{
    size_t i;

    for (i = 0; i < SKS_KEY_CACHE; i++)
        if (dev->key_cache[i].pkey != NULL && dev->key_cache[i].handle == handle
            && memcmp(dev->key_cache[i].tag, tag, sizeof(dev->key_cache[i].tag)) == 0)
            return &dev->key_cache[i];
    return NULL;
}

static void cache_store(sks_device *dev, uint32_t handle, const uint8_t *tag, EVP_PKEY *pkey)
{
    key_cache_entry *e = &dev->key_cache[dev->key_cache_next++ % SKS_KEY_CACHE];

    EVP_PKEY_free(e->pkey);
    e->pkey = EVP_PKEY_up_ref(pkey) ? pkey : NULL;
    e->handle = handle;
    memcpy(e->tag, tag, sizeof(e->tag));
}

void key_cache_clear(sks_device *dev)
{
    size_t i;

    for (i = 0; i < SKS_KEY_CACHE; i++) {
        EVP_PKEY_free(dev->key_cache[i].pkey);
        dev->key_cache[i].pkey = NULL;
    }
}

EVP_PKEY *key_private(sks_device *dev, sks_call *call, const key_entry *k)
{
    sqlite3_stmt *st;
    key_cache_entry *hit;
    const uint8_t *blob;
    uint8_t tag[13];
    sks_buf der;
    EVP_PKEY *pkey = NULL;
    int n;

    st = store_prepare(dev, call, "SELECT private_key FROM keys WHERE handle = ?");
    if (st == NULL)
        return NULL;
    sqlite3_bind_int64(st, 1, k->handle);
    if (sqlite3_step(st) != SQLITE_ROW || (blob = sqlite3_column_blob(st, 0)) == NULL
        || (n = sqlite3_column_bytes(st, 0)) < (int)sizeof(tag)) {
        sqlite3_finalize(st);
        sks_fail(call, SKS_ERROR_NO_KEY, "key #%u has no private key", k->handle);
        return NULL;
    }
    memcpy(tag, blob, sizeof(tag));
    if ((hit = cache_lookup(dev, k->handle, tag)) != NULL && EVP_PKEY_up_ref(hit->pkey)) {
        sqlite3_finalize(st);
        return hit->pkey;
    }
    sks_buf_init(&der);
    if (!unseal_row(dev, "keys", "private_key", k->handle, blob, (size_t)n, &der))
        sks_fail(call, SKS_ERROR_STORAGE, "integrity error: the private key of key #%u cannot be unsealed for its row",
                 k->handle);
    else if ((pkey = pkcs8_parse(der.data, der.len)) == NULL)
        sks_fail(call, SKS_ERROR_INTERNAL, "the private key of key #%u is corrupt", k->handle);
    else
        cache_store(dev, k->handle, tag, pkey);
    sqlite3_finalize(st);
    sks_buf_free(&der);
    return pkey;
}

sks_status key_reseal_moved(sks_device *dev, sks_call *call, uint32_t from, uint32_t to)
{
    static const char *const COLUMNS[] = { "private_key", "symmetric_key" };
    char sql[96];
    sqlite3_stmt *st;
    sks_buf clear, sealed;
    sks_status rc = SKS_OK;
    size_t i;

    sks_buf_init(&clear);
    sks_buf_init(&sealed);
    for (i = 0; rc == SKS_OK && i < sizeof(COLUMNS) / sizeof(COLUMNS[0]); i++) {
        sks_buf_reset(&clear);
        sks_buf_reset(&sealed);
        snprintf(sql, sizeof(sql), "SELECT %s FROM keys WHERE handle = ?", COLUMNS[i]);
        if ((st = store_prepare(dev, call, sql)) == NULL)
            return SKS_ERROR_STORAGE;
        sqlite3_bind_int64(st, 1, to);
        if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL
            && (!unseal_row(dev, "keys", COLUMNS[i], from, sqlite3_column_blob(st, 0),
                            (size_t)sqlite3_column_bytes(st, 0), &clear)
                || !seal_row(dev, "keys", COLUMNS[i], to, clear.data, clear.len, &sealed)))
            rc = sks_fail(call, SKS_ERROR_STORAGE, "integrity error: the %s of key #%u cannot be unsealed for its row",
                          COLUMNS[i], from);
        sqlite3_finalize(st);
        if (rc == SKS_OK && sealed.len > 0) {
            snprintf(sql, sizeof(sql), "UPDATE keys SET %s = ? WHERE handle = ?", COLUMNS[i]);
            if ((st = store_prepare(dev, call, sql)) == NULL)
                rc = SKS_ERROR_STORAGE;
            else {
                sqlite3_bind_blob(st, 1, sealed.data, (int)sealed.len, SQLITE_STATIC);
                sqlite3_bind_int64(st, 2, to);
                rc = store_step_done(dev, call, st) ? SKS_OK : SKS_ERROR_STORAGE;
            }
        }
    }
    sks_buf_free(&clear);
    sks_buf_free(&sealed);
    return rc;
}

sks_status key_symmetric(sks_device *dev, sks_call *call, const key_entry *k, sks_buf *out)
{
    return load_sealed_column(dev, call, k->handle, "symmetric_key", "symmetric-key", out);
}

sks_status key_delete(sks_device *dev, sks_call *call, uint32_t handle)
{
    /* Delete the key, then every object that only it kept alive (spec 3.2, 3.3). Closed
     * sessions die with their last key; open sessions are left to close/abort. */
    static const char *const SQL[] = {
        "DELETE FROM extensions WHERE key = ?1",
        "DELETE FROM keys WHERE handle = ?1",
        "DELETE FROM pins WHERE handle NOT IN (SELECT pin FROM keys)",
        "DELETE FROM pin_policies WHERE handle NOT IN (SELECT pin_policy FROM keys)"
        " AND session IN (SELECT handle FROM sessions WHERE open = 0)",
        "DELETE FROM puk_policies WHERE handle NOT IN (SELECT puk FROM pin_policies)"
        " AND session IN (SELECT handle FROM sessions WHERE open = 0)",
        "DELETE FROM sessions WHERE open = 0 AND handle NOT IN (SELECT session FROM keys)",
        "DELETE FROM skip_requests WHERE session NOT IN (SELECT handle FROM sessions)",
    };
    size_t i;

    for (i = 0; i < sizeof(SQL) / sizeof(SQL[0]); i++)
        if (exec_with_handle(dev, call, SQL[i], handle) != SKS_OK)
            return SKS_ERROR_STORAGE;
    return SKS_OK;
}

sks_status pin_policy_load(sks_device *dev, sks_call *call, uint32_t handle, pin_policy *p)
{
    sqlite3_stmt *st;
    sks_status rc = SKS_OK;

    memset(p, 0, sizeof(*p));
    st = store_prepare(dev, call,
                       "SELECT id, puk, user_defined, user_modifiable, format, retry_limit, grouping, patterns,"
                       " min_length, max_length, input_method FROM pin_policies WHERE handle = ?");
    if (st == NULL)
        return SKS_ERROR_STORAGE;
    sqlite3_bind_int64(st, 1, handle);
    if (sqlite3_step(st) != SQLITE_ROW) {
        rc = sks_fail(call, SKS_ERROR_NO_KEY, "PIN policy #%u does not exist", handle);
    } else if ((rc = row_verify(dev, call, "pin_policies", handle)) == SKS_OK) {
        p->handle = handle;
        p->id = col_text(st, 0);
        p->puk = (uint32_t)sqlite3_column_int64(st, 1);
        p->user_defined = sqlite3_column_int(st, 2);
        p->user_modifiable = sqlite3_column_int(st, 3);
        p->format = (uint8_t)sqlite3_column_int(st, 4);
        p->retry_limit = (uint16_t)sqlite3_column_int(st, 5);
        p->grouping = (uint8_t)sqlite3_column_int(st, 6);
        p->patterns = (uint8_t)sqlite3_column_int(st, 7);
        p->min_length = (uint16_t)sqlite3_column_int(st, 8);
        p->max_length = (uint16_t)sqlite3_column_int(st, 9);
        p->input_method = (uint8_t)sqlite3_column_int(st, 10);
    }
    sqlite3_finalize(st);
    return rc;
}

void pin_policy_free(pin_policy *p)
{
    OPENSSL_free(p->id);
    memset(p, 0, sizeof(*p));
}

sks_status puk_policy_load(sks_device *dev, sks_call *call, uint32_t handle, puk_policy *p)
{
    sqlite3_stmt *st;
    sks_status rc = SKS_OK;

    memset(p, 0, sizeof(*p));
    st = store_prepare(dev, call, "SELECT id, format, retry_limit, error_count FROM puk_policies WHERE handle = ?");
    if (st == NULL)
        return SKS_ERROR_STORAGE;
    sqlite3_bind_int64(st, 1, handle);
    if (sqlite3_step(st) != SQLITE_ROW) {
        rc = sks_fail(call, SKS_ERROR_NO_KEY, "PUK policy #%u does not exist", handle);
    } else if ((rc = row_verify(dev, call, "puk_policies", handle)) == SKS_OK) {
        p->handle = handle;
        p->id = col_text(st, 0);
        p->format = (uint8_t)sqlite3_column_int(st, 1);
        p->retry_limit = (uint16_t)sqlite3_column_int(st, 2);
        p->error_count = (uint16_t)sqlite3_column_int(st, 3);
    }
    sqlite3_finalize(st);
    return rc;
}

void puk_policy_free(puk_policy *p)
{
    OPENSSL_free(p->id);
    memset(p, 0, sizeof(*p));
}

sks_status reader_status(sks_call *call, const char *method, const sks_reader *r)
{
    if (sks_reader_ok(r))
        return SKS_OK;
    return sks_fail(call, SKS_ERROR_OPTION, "%s: argument \"%s\": %s", method, r->field, r->error);
}
