/*
 * Key owners: which user of a shared device (sksd) may use which key (sks_device.h).
 *
 * The owners live in a table of their own, key_owners(handle, uid, gid, mac), created on
 * first use. Each row carries an HMAC under a key derived from the master key, so that a
 * row written without the master key is not believed: such a row, like a missing one,
 * leaves the key to root alone. Key handles are AUTOINCREMENT and never reused, so a row
 * left behind by a deleted key can never name another key.
 *
 * The one hook where keys are created is a TEMP trigger on this connection's inserts into
 * `keys`: every key a caller's call creates (createKeyEntry, skipImport, ...) is recorded
 * with the caller as owner in the same transaction. Enumeration skips keys the caller may
 * not see (management.c); the dispatcher checks the key a call names before the call runs.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#define OWNER_SCHEMA                                                                                                   \
    "CREATE TABLE IF NOT EXISTS key_owners (handle INTEGER PRIMARY KEY, uid INTEGER NOT NULL,"                         \
    " gid INTEGER NOT NULL, mac BLOB NOT NULL);"

#define OWNER_INSERT_TRIGGER                                                                                           \
    "CREATE TEMP TRIGGER IF NOT EXISTS sks_owner_on_insert AFTER INSERT ON main.keys BEGIN"                            \
    " INSERT OR REPLACE INTO key_owners (handle, uid, gid, mac)"                                                  \
    " VALUES (NEW.handle, sks_caller_uid(), 4294967295, sks_owner_mac(NEW.handle, sks_caller_uid(), 4294967295));"     \
    " END;"

/* Methods whose first argument is the handle of an existing key, outside provisioning (which
 * sksd keeps to administrators): attributes, protection info, extensions, properties, key
 * management and the User API. */
static int method_names_key(uint8_t id)
{
    return (id >= 71 && id <= 74) || (id >= 80 && id <= 84) || (id >= 100 && id <= 104);
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* HMAC-SHA256 over handle, uid and gid under a key of its own, derived from the master key. */
static int owner_mac(const sks_device *dev, uint32_t handle, uint32_t uid, uint32_t gid, uint8_t mac[32])
{
    static const char LABEL[] = "sks key owner v1";
    uint8_t key[32], data[12];
    int ok;

    put_be32(data, handle);
    put_be32(data + 4, uid);
    put_be32(data + 8, gid);
    ok = hmac_sha256(dev->master_key, sizeof(dev->master_key), (const uint8_t *)LABEL, sizeof(LABEL) - 1, key)
         && hmac_sha256(key, sizeof(key), data, sizeof(data), mac);
    OPENSSL_cleanse(key, sizeof(key));
    return ok;
}

static void sql_caller_uid(sqlite3_context *c, int argc, sqlite3_value **argv)
{
    const sks_device *dev = sqlite3_user_data(c);

    (void)argc;
    (void)argv;
    sqlite3_result_int64(c, dev->caller.uid);
}

static void sql_owner_mac(sqlite3_context *c, int argc, sqlite3_value **argv)
{
    const sks_device *dev = sqlite3_user_data(c);
    uint8_t mac[32];

    (void)argc;
    if (!owner_mac(dev, (uint32_t)sqlite3_value_int64(argv[0]), (uint32_t)sqlite3_value_int64(argv[1]),
                   (uint32_t)sqlite3_value_int64(argv[2]), mac)) {
        sqlite3_result_error(c, "sks_owner_mac failed", -1);
        return;
    }
    sqlite3_result_blob(c, mac, sizeof(mac), SQLITE_TRANSIENT);
}

static int owner_table_ensure(sks_device *dev, char *err, size_t errlen)
{
    char *msg = NULL;

    if (sqlite3_exec(dev->db, OWNER_SCHEMA, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, errlen, "cannot create the key owner table: %s", msg ? msg : "?");
        sqlite3_free(msg);
        return 0;
    }
    return 1;
}

int sks_device_set_caller(sks_device *dev, const sks_caller *caller, char *err, size_t errlen)
{
    char *msg = NULL;

    if (caller->ngids < 0 || caller->ngids > SKS_CALLER_MAX_GROUPS) {
        snprintf(err, errlen, "too many groups");
        return 0;
    }
    dev->caller = *caller;
    dev->has_caller = 1;
    if (!owner_table_ensure(dev, err, errlen))
        return 0;
    if (sqlite3_create_function(dev->db, "sks_caller_uid", 0, SQLITE_UTF8, dev, sql_caller_uid, NULL, NULL)
            != SQLITE_OK
        || sqlite3_create_function(dev->db, "sks_owner_mac", 3, SQLITE_UTF8, dev, sql_owner_mac, NULL, NULL)
               != SQLITE_OK
        || sqlite3_exec(dev->db, OWNER_INSERT_TRIGGER, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, errlen, "cannot record key owners: %s", msg ? msg : sqlite3_errmsg(dev->db));
        sqlite3_free(msg);
        return 0;
    }
    return 1;
}

/* The key's owner from a row whose MAC holds; 0 if there is none (then the key is root's). */
static int owner_lookup(sks_device *dev, uint32_t handle, uint32_t *uid, uint32_t *gid)
{
    sqlite3_stmt *st = NULL;
    uint8_t mac[32];
    int found = 0;

    if (sqlite3_prepare_v2(dev->db, "SELECT uid, gid, mac FROM key_owners WHERE handle = ?", -1, &st, NULL)
        != SQLITE_OK)
        return 0;
    sqlite3_bind_int64(st, 1, handle);
    if (sqlite3_step(st) == SQLITE_ROW) {
        *uid = (uint32_t)sqlite3_column_int64(st, 0);
        *gid = (uint32_t)sqlite3_column_int64(st, 1);
        found = sqlite3_column_bytes(st, 2) == (int)sizeof(mac) && owner_mac(dev, handle, *uid, *gid, mac)
                && CRYPTO_memcmp(mac, sqlite3_column_blob(st, 2), sizeof(mac)) == 0;
    }
    sqlite3_finalize(st);
    return found;
}

static int caller_in_group(const sks_caller *c, uint32_t gid)
{
    int i;

    for (i = 0; gid != SKS_NO_GROUP && i < c->ngids; i++)
        if (c->gids[i] == gid)
            return 1;
    return 0;
}

int owner_may_see(sks_device *dev, uint32_t handle)
{
    uint32_t uid = 0, gid = SKS_NO_GROUP;

    if (!dev->has_caller || dev->caller.admin)
        return 1;
    if (!owner_lookup(dev, handle, &uid, &gid))
        return 0; /* root's: administrators only */
    return uid == dev->caller.uid || caller_in_group(&dev->caller, gid);
}

sks_status owner_check_call(sks_device *dev, uint8_t method, const uint8_t *args, size_t n, sks_call *call)
{
    uint32_t handle;

    if (!dev->has_caller || dev->caller.admin || !method_names_key(method) || n < 4)
        return SKS_OK;
    handle = ((uint32_t)args[0] << 24) | ((uint32_t)args[1] << 16) | ((uint32_t)args[2] << 8) | args[3];
    if (owner_may_see(dev, handle))
        return SKS_OK;
    /* The same answer as for a key that does not exist: others' keys are not even named. */
    return sks_fail(call, SKS_ERROR_NO_KEY, "key #%u does not exist", handle);
}

/* The handle of a key given by friendly name or #HANDLE; 0 if none or ambiguous. */
static uint32_t find_key(sks_device *dev, const char *key, char *err, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    uint32_t handle = 0;
    int rows = 0;

    if (key[0] == '#') {
        if (sqlite3_prepare_v2(dev->db, "SELECT handle FROM keys WHERE handle = ?", -1, &st, NULL) != SQLITE_OK)
            return 0;
        sqlite3_bind_int64(st, 1, strtoll(key + 1, NULL, 10));
    } else {
        if (sqlite3_prepare_v2(dev->db, "SELECT handle FROM keys WHERE friendly_name = ?", -1, &st, NULL)
            != SQLITE_OK)
            return 0;
        sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
    }
    while (sqlite3_step(st) == SQLITE_ROW) {
        handle = (uint32_t)sqlite3_column_int64(st, 0);
        rows++;
    }
    sqlite3_finalize(st);
    if (rows != 1) {
        snprintf(err, errlen, rows == 0 ? "no key %s" : "%s names several keys: give #HANDLE", key);
        return 0;
    }
    return handle;
}

int sks_device_set_key_owner(sks_device *dev, const char *key, uint32_t uid, uint32_t gid, char *err, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    uint8_t mac[32];
    uint32_t handle;
    int ok;

    if (!owner_table_ensure(dev, err, errlen) || (handle = find_key(dev, key, err, errlen)) == 0)
        return 0;
    if (!owner_mac(dev, handle, uid, gid, mac)
        || sqlite3_prepare_v2(dev->db, "INSERT OR REPLACE INTO key_owners (handle, uid, gid, mac) VALUES (?, ?, ?, ?)",
                              -1, &st, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "cannot record the owner of %s: %s", key, sqlite3_errmsg(dev->db));
        return 0;
    }
    sqlite3_bind_int64(st, 1, handle);
    sqlite3_bind_int64(st, 2, uid);
    sqlite3_bind_int64(st, 3, gid);
    sqlite3_bind_blob(st, 4, mac, sizeof(mac), SQLITE_TRANSIENT);
    ok = sqlite3_step(st) == SQLITE_DONE;
    if (!ok)
        snprintf(err, errlen, "cannot record the owner of %s: %s", key, sqlite3_errmsg(dev->db));
    sqlite3_finalize(st);
    return ok;
}
