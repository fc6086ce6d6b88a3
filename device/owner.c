/*
 * Key owners: which user of a shared device (sksd) may use which key (sks_device.h).
 *
 * The owners live in the table key_owners(handle, uid, gid, mac) (device/store.c). Each row
 * carries an HMAC under a key derived from the master key over the handle, the owner and the
 * key's identity (SHA-256 of its public key), so that a row written without the master key,
 * or a row of a deleted key put back under a reused handle, is not believed: such a row, like
 * a missing one, leaves the key to root alone.
 *
 * Owners follow the keys at every commit (owner_follow_key, from store_commit): a key created
 * by a caller of a shared device belongs to that caller, a deleted key's row goes with it in
 * the same transaction, and a key whose material was replaced (postUpdateKey) keeps its owner.
 * This is C code, not SQL: nothing in the store's schema runs on the device's behalf, and no
 * SQL function is registered that could compute an owner MAC (docs/storage.md). Enumeration
 * skips keys the caller may not see (management.c); the dispatcher checks the key a call
 * names before the call runs.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

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

/* The key's identity: SHA-256 of its public key as `db` holds it. 1 found, 0 no such key,
 * -1 an SQLite error. */
static int key_identity(sks_device *dev, sqlite3 *db, int64_t handle, uint8_t id[32])
{
    static const char SQL[] = "SELECT public_key FROM keys WHERE handle = ?";
    sqlite3_stmt *st = NULL;
    int rc;

    /* A kept statement (on either connection): every commit runs this twice for each key it
     * wrote (a SKIP import, 9 keys). */
    if ((st = store_cached_on(dev, db, NULL, SQL)) == NULL)
        return -1;
    sqlite3_bind_int64(st, 1, handle);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        rc = sha256(sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0), id) ? 1 : -1;
    else
        rc = rc == SQLITE_DONE ? 0 : -1;
    store_release(dev, st);
    return rc;
}

/* HMAC-SHA256 over handle, uid, gid and the key's identity under a key of its own, derived
 * from the master key. */
static int owner_mac(const sks_device *dev, uint32_t handle, uint32_t uid, uint32_t gid, const uint8_t id[32],
                     uint8_t mac[32])
{
    static const char LABEL[] = "sks key owner v2";
    uint8_t key[32], data[12 + 32];
    int ok;

    put_be32(data, handle);
    put_be32(data + 4, uid);
    put_be32(data + 8, gid);
    memcpy(data + 12, id, 32);
    ok = hmac_sha256(dev->master_key, sizeof(dev->master_key), (const uint8_t *)LABEL, sizeof(LABEL) - 1, key)
         && hmac_sha256(key, sizeof(key), data, sizeof(data), mac);
    OPENSSL_cleanse(key, sizeof(key));
    return ok;
}

int sks_device_set_caller(sks_device *dev, const sks_caller *caller, char *err, size_t errlen)
{
    if (caller->ngids < 0 || caller->ngids > SKS_CALLER_MAX_GROUPS) {
        snprintf(err, errlen, "too many groups");
        return 0;
    }
    dev->caller = *caller;
    dev->has_caller = 1;
    return 1;
}

/* The key's owner, as `db` holds it, from a row whose MAC holds for the key there; 0 if
 * there is none (then the key is root's). */
static int owner_lookup(sks_device *dev, sqlite3 *db, uint32_t handle, uint32_t *uid, uint32_t *gid)
{
    sqlite3_stmt *st = NULL;
    uint8_t id[32], mac[32];
    int found = 0;

    if (key_identity(dev, db, handle, id) != 1
        || sqlite3_prepare_v2(db, "SELECT uid, gid, mac FROM key_owners WHERE handle = ?", -1, &st, NULL) != SQLITE_OK)
        return 0;
    sqlite3_bind_int64(st, 1, handle);
    if (sqlite3_step(st) == SQLITE_ROW) {
        *uid = (uint32_t)sqlite3_column_int64(st, 0);
        *gid = (uint32_t)sqlite3_column_int64(st, 1);
        found = sqlite3_column_bytes(st, 2) == (int)sizeof(mac) && owner_mac(dev, handle, *uid, *gid, id, mac)
                && CRYPTO_memcmp(mac, sqlite3_column_blob(st, 2), sizeof(mac)) == 0;
    }
    sqlite3_finalize(st);
    return found;
}

/* Writes (or replaces) the owner row of a key whose identity is `id`, on the device's connection. */
static int owner_write(sks_device *dev, uint32_t handle, uint32_t uid, uint32_t gid, const uint8_t id[32])
{
    sqlite3_stmt *st = NULL;
    uint8_t mac[32];
    int ok;

    if (!owner_mac(dev, handle, uid, gid, id, mac)
        || (st = store_cached(dev, NULL, "INSERT OR REPLACE INTO key_owners (handle, uid, gid, mac) VALUES (?, ?, ?, ?)"))
               == NULL)
        return 0;
    sqlite3_bind_int64(st, 1, handle);
    sqlite3_bind_int64(st, 2, uid);
    sqlite3_bind_int64(st, 3, gid);
    sqlite3_bind_blob(st, 4, mac, sizeof(mac), SQLITE_TRANSIENT);
    ok = sqlite3_step(st) == SQLITE_DONE;
    store_release(dev, st);
    return ok;
}

static int owner_delete(sks_device *dev, int64_t handle)
{
    sqlite3_stmt *st = NULL;
    int ok;

    if ((st = store_cached(dev, NULL, "DELETE FROM key_owners WHERE handle = ?")) == NULL)
        return 0;
    sqlite3_bind_int64(st, 1, handle);
    ok = sqlite3_step(st) == SQLITE_DONE;
    store_release(dev, st);
    return ok;
}

int owner_follow_key(sks_device *dev, sqlite3 *committed, int64_t handle)
{
    uint8_t now[32], before[32];
    uint32_t uid, gid;
    int exists = key_identity(dev, dev->db, handle, now), existed;

    if (exists < 0)
        return 0;
    if (exists == 0 || handle <= 0 || handle > UINT32_MAX)
        return owner_delete(dev, handle); /* the key is gone: so is its owner */
    if ((existed = key_identity(dev, committed, handle, before)) < 0)
        return 0;
    if (existed == 0) /* created by this call: its caller's, else nobody's (root) */
        return dev->has_caller ? owner_write(dev, (uint32_t)handle, dev->caller.uid, SKS_NO_GROUP, now)
                               : owner_delete(dev, handle);
    if (CRYPTO_memcmp(now, before, 32) == 0 || !owner_lookup(dev, committed, (uint32_t)handle, &uid, &gid))
        return 1;
    return owner_write(dev, (uint32_t)handle, uid, gid, now); /* new material, same owner */
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
    if (!owner_lookup(dev, dev->db, handle, &uid, &gid))
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
    uint8_t id[32];
    uint32_t handle;

    if (!store_begin(dev, 1)) {
        snprintf(err, errlen, "cannot record the owner of %s: %s", key, store_error(dev));
        return 0;
    }
    if ((handle = find_key(dev, key, err, errlen)) == 0) {
        store_rollback(dev);
        return 0;
    }
    if (key_identity(dev, dev->db, handle, id) != 1 || !owner_write(dev, handle, uid, gid, id) || !store_commit(dev)) {
        snprintf(err, errlen, "cannot record the owner of %s: %s", key, store_error(dev));
        store_rollback(dev);
        return 0;
    }
    return 1;
}
