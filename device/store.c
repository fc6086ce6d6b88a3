/*
 * The credential database: one SQLite file per store, every state change one transaction,
 * private and secret material sealed with AES-256-GCM under a master key kept in a
 * separate 0600 file.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/kdf.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#define SEAL_VERSION 1
#define SEAL_NONCE 12
#define SEAL_TAG 16

/* The schema version in meta "format". sks-2: sealed columns bound to their row, and row MACs
 * (docs/storage.md). sks-3: sessions.post_ops_queued. Older stores are refused. */
#define STORE_FORMAT "sks-3"

/* Who may use a key of a shared device (device/owner.c). Stores made before it was part of
 * the schema get it when opened (schema_upgrade). */
#define KEY_OWNERS_TABLE                                                                                               \
    "CREATE TABLE IF NOT EXISTS key_owners (handle INTEGER PRIMARY KEY, uid INTEGER NOT NULL,"                         \
    " gid INTEGER NOT NULL, mac BLOB NOT NULL);"

/* The trigger older sks versions kept in the store (SQLite's text of it): dropped when such a
 * store is opened; the device now deletes a session's SKIP request itself. */
#define OLD_SKIP_TRIGGER_SQL                                                                                           \
    "CREATE TRIGGER skip_requests_gone AFTER DELETE ON sessions"                                                       \
    " BEGIN DELETE FROM skip_requests WHERE session = OLD.handle; END"

/* The whole schema: a store whose schema is anything else is refused (schema_verify). No
 * triggers or views: the schema is part of a file others may be able to write, so nothing
 * in it may run on the device's behalf (docs/storage.md). */
static const char SCHEMA[] =
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);"
    /* Provisioning sessions. open = 1 until closeProvisioningSession succeeds. */
    "CREATE TABLE IF NOT EXISTS sessions ("
    " handle INTEGER PRIMARY KEY AUTOINCREMENT, open INTEGER NOT NULL,"
    " session_key BLOB NOT NULL, algorithm TEXT NOT NULL, privacy INTEGER NOT NULL,"
    " client_session_id TEXT NOT NULL, server_session_id TEXT NOT NULL, issuer_uri TEXT NOT NULL,"
    " kmk BLOB NOT NULL, client_time INTEGER NOT NULL, lifetime INTEGER NOT NULL,"
    " key_limit INTEGER NOT NULL, mac_counter INTEGER NOT NULL,"
    /* the post operations queued in post_ops: empty, or u32 count || SHA-256 chain (provisioning.c) */
    " post_ops_queued BLOB NOT NULL DEFAULT x'',"
    /* device clock at creation: open sessions older than their lifetime are removed */
    " created INTEGER NOT NULL DEFAULT (strftime('%s','now')));"
    "CREATE TABLE IF NOT EXISTS puk_policies ("
    " handle INTEGER PRIMARY KEY AUTOINCREMENT, session INTEGER NOT NULL, id TEXT NOT NULL,"
    " value BLOB NOT NULL, format INTEGER NOT NULL, retry_limit INTEGER NOT NULL,"
    " error_count INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE IF NOT EXISTS pin_policies ("
    " handle INTEGER PRIMARY KEY AUTOINCREMENT, session INTEGER NOT NULL, id TEXT NOT NULL,"
    " puk INTEGER NOT NULL, user_defined INTEGER NOT NULL, user_modifiable INTEGER NOT NULL,"
    " format INTEGER NOT NULL, retry_limit INTEGER NOT NULL, grouping INTEGER NOT NULL,"
    " patterns INTEGER NOT NULL, min_length INTEGER NOT NULL, max_length INTEGER NOT NULL,"
    " input_method INTEGER NOT NULL);"
    /* A PIN object: value and error counter shared by the keys PIN grouping puts together. */
    "CREATE TABLE IF NOT EXISTS pins ("
    " handle INTEGER PRIMARY KEY AUTOINCREMENT, policy INTEGER NOT NULL, slot INTEGER NOT NULL,"
    " value BLOB NOT NULL, error_count INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE IF NOT EXISTS keys ("
    " handle INTEGER PRIMARY KEY AUTOINCREMENT, session INTEGER NOT NULL, id TEXT NOT NULL,"
    " pin_policy INTEGER NOT NULL, pin INTEGER NOT NULL, device_pin INTEGER NOT NULL,"
    " pin_caching INTEGER NOT NULL, biometric INTEGER NOT NULL, export_protection INTEGER NOT NULL,"
    " delete_protection INTEGER NOT NULL, app_usage INTEGER NOT NULL, friendly_name TEXT NOT NULL,"
    " key_algorithm TEXT NOT NULL, key_parameters BLOB NOT NULL, endorsed BLOB NOT NULL,"
    " public_key BLOB NOT NULL, private_key BLOB, symmetric_key BLOB, symmetric_length INTEGER NOT NULL DEFAULT 0,"
    " certificates BLOB, ee_sha256 BLOB, key_backup INTEGER NOT NULL DEFAULT 0, mac BLOB NOT NULL);"
    "CREATE INDEX IF NOT EXISTS keys_session ON keys(session);"
    "CREATE INDEX IF NOT EXISTS keys_ee ON keys(ee_sha256);"
    "CREATE TABLE IF NOT EXISTS extensions ("
    " key INTEGER NOT NULL, type TEXT NOT NULL, sub_type INTEGER NOT NULL, qualifier TEXT NOT NULL,"
    " data BLOB NOT NULL, PRIMARY KEY (key, type));"
    /* Post-provisioning operations wait here, in call order, until close. */
    "CREATE TABLE IF NOT EXISTS post_ops ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT, session INTEGER NOT NULL, kind INTEGER NOT NULL,"
    " new_key INTEGER NOT NULL, target INTEGER NOT NULL);"
    /* SKIP requests (device/skip.c): the trust anchors a skipRequest was made for (list
     * byte[]) and how many verified packages failed to unwrap. Gone with their session. */
    "CREATE TABLE IF NOT EXISTS skip_requests ("
    " session INTEGER PRIMARY KEY, anchors BLOB NOT NULL, failed_unwraps INTEGER NOT NULL DEFAULT 0);"
    KEY_OWNERS_TABLE
    /* One HMAC per row of the protected tables (ROW_TABLES below, docs/storage.md). */
    "CREATE TABLE IF NOT EXISTS row_macs ("
    " tbl TEXT NOT NULL, id INTEGER NOT NULL, mac BLOB NOT NULL, PRIMARY KEY (tbl, id)) WITHOUT ROWID;";

sks_status sks_fail(sks_call *call, sks_status status, const char *fmt, ...)
{
    va_list ap;

    if (call->message[0] == '\0') {
        va_start(ap, fmt);
        vsnprintf(call->message, sizeof(call->message), fmt, ap);
        va_end(ap);
    }
    return status;
}

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static char *default_master_path(const sks_store_location *loc, char *buf, size_t n)
{
    if (loc->master_key_path != NULL && loc->master_key_path[0] != '\0')
        snprintf(buf, n, "%s", loc->master_key_path);
    else
        snprintf(buf, n, "%s.key", loc->db_path);
    return buf;
}

static int write_master_key(const char *path, const uint8_t key[32], char *err, size_t errlen)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    ssize_t w;

    if (fd < 0) {
        set_err(err, errlen, "cannot create master key file %s: %s", path, strerror(errno));
        return 0;
    }
    w = write(fd, key, 32);
    if (w != 32 || fsync(fd) != 0) {
        set_err(err, errlen, "cannot write master key file %s: %s", path, strerror(errno));
        close(fd);
        unlink(path);
        return 0;
    }
    close(fd);
    return 1;
}

/* The master key unlocks every key of the store: it must be a regular file that only its
 * owner can read or write, and that owner must be this process's user or root (a file
 * someone else owns could be swapped or read by them). Checked on the open descriptor. */
static int master_key_file_ok(const char *path, const struct stat *st, char *err, size_t errlen)
{
    if (!S_ISREG(st->st_mode)) {
        set_err(err, errlen, "master key file %s is not a regular file", path);
        return 0;
    }
    if ((st->st_mode & (S_IRWXG | S_IRWXO)) != 0) {
        set_err(err, errlen,
                "master key file %s has mode %04o: group or others may access it; it must be 0600 or 0400"
                " (chmod 600 %s)",
                path, (unsigned)(st->st_mode & 07777), path);
        return 0;
    }
    if (st->st_uid != geteuid() && st->st_uid != 0) {
        set_err(err, errlen, "master key file %s belongs to uid %u, not to this user (uid %u) or root", path,
                (unsigned)st->st_uid, (unsigned)geteuid());
        return 0;
    }
    return 1;
}

static int read_master_key(const char *path, uint8_t key[32], char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK); /* a FIFO must not hang us */
    struct stat st;
    ssize_t r;

    if (fd < 0) {
        set_err(err, errlen, "cannot open master key file %s: %s", path, strerror(errno));
        return 0;
    }
    if (fstat(fd, &st) != 0) {
        set_err(err, errlen, "cannot read master key file %s: %s", path, strerror(errno));
        close(fd);
        return 0;
    }
    if (!master_key_file_ok(path, &st, err, errlen)) {
        close(fd);
        return 0;
    }
    if (st.st_size != 32) {
        set_err(err, errlen, "master key file %s must hold exactly 32 bytes", path);
        close(fd);
        return 0;
    }
    r = read(fd, key, 32);
    close(fd);
    if (r != 32) {
        set_err(err, errlen, "cannot read master key file %s", path);
        return 0;
    }
    return 1;
}

/*
 * Nothing stored in the file runs on the device's behalf: no triggers (a trigger runs inside
 * the device's transaction, and the row MACs would then bless what it wrote), no views, no
 * functions or virtual tables named by the schema, and no writable_schema or other ways of
 * corrupting the file through SQL. Set on every connection before it reads the schema.
 */
static int db_harden(sqlite3 *db)
{
    static const int OFF[] = { SQLITE_DBCONFIG_TRUSTED_SCHEMA, SQLITE_DBCONFIG_ENABLE_TRIGGER,
                               SQLITE_DBCONFIG_ENABLE_VIEW };
    size_t i;
    int now = 0;

    if (sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, &now) != SQLITE_OK || now != 1)
        return 0;
    for (i = 0; i < sizeof(OFF) / sizeof(OFF[0]); i++)
        if (sqlite3_db_config(db, OFF[i], 0, &now) != SQLITE_OK || now != 0)
            return 0;
    return 1;
}

static int db_open(const char *path, int create, sqlite3 **out, char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    /* A new store is never made through a symlink someone planted at its path. */
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX
                | (create ? SQLITE_OPEN_CREATE | SQLITE_OPEN_NOFOLLOW : 0);
    char *msg = NULL;

    if (sqlite3_open_v2(path, &db, flags, NULL) != SQLITE_OK) {
        set_err(err, errlen, "cannot open store %s: %s", path, db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        return 0;
    }
    if (!db_harden(db)) {
        set_err(err, errlen, "cannot configure store %s: %s", path, sqlite3_errmsg(db));
        sqlite3_close(db);
        return 0;
    }
    /* Several processes share a store: wait for each other's transactions rather than fail.
     * WAL lets readers proceed beside a writer; FULL sync makes a commit survive power loss. */
    sqlite3_busy_timeout(db, 30000);
    if (sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=OFF;",
                     NULL, NULL, &msg) != SQLITE_OK) {
        set_err(err, errlen, "cannot configure store %s: %s", path, msg ? msg : "?");
        sqlite3_free(msg);
        sqlite3_close(db);
        return 0;
    }
    *out = db;
    return 1;
}

static int meta_put(sqlite3 *db, const char *name, const void *v, size_t n)
{
    sqlite3_stmt *st = NULL;
    int ok;

    if (sqlite3_prepare_v2(db, "INSERT OR REPLACE INTO meta(name, value) VALUES (?, ?)", -1, &st, NULL)
        != SQLITE_OK)
        return 0;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, v, (int)n, SQLITE_STATIC);
    ok = sqlite3_step(st) == SQLITE_DONE;
    sqlite3_finalize(st);
    return ok;
}

/* Reads a meta value into out; returns 1 if present. */
static int meta_get(sqlite3 *db, const char *name, sks_buf *out)
{
    sqlite3_stmt *st = NULL;
    int ok = 0;

    if (sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE name = ?", -1, &st, NULL) != SQLITE_OK)
        return 0;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) {
        sks_buf_put(out, sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0));
        ok = !out->failed;
    }
    sqlite3_finalize(st);
    return ok;
}

static int seal(const sks_device *dev, const char *label, const uint8_t *in, size_t n, sks_buf *out);
static int unseal(const sks_device *dev, const char *label, const uint8_t *in, size_t n, sks_buf *out);
static int rows_open(sks_device *dev, const char *db_path, char *err, size_t errlen);
static void rows_close(sks_device *dev);
static int format_check(sks_device *dev, const char *db_path, char *err, size_t errlen);

/* ---- the schema: exactly this sks's own ---- */

static int schema_version(sqlite3 *db, int *out)
{
    sqlite3_stmt *st = NULL;
    int ok;

    if (sqlite3_prepare_v2(db, "PRAGMA schema_version", -1, &st, NULL) != SQLITE_OK)
        return 0;
    ok = sqlite3_step(st) == SQLITE_ROW;
    if (ok)
        *out = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return ok;
}

static int schema_has(sqlite3 *db, const char *type, const char *name, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int found;

    if (sqlite3_prepare_v2(db, "SELECT 1 FROM sqlite_master WHERE type = ?1 AND name = ?2 AND (?3 IS NULL OR sql = ?3)",
                           -1, &st, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_text(st, 1, type, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
    if (sql != NULL)
        sqlite3_bind_text(st, 3, sql, -1, SQLITE_STATIC);
    found = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    return found;
}

/* Brings a store made by an earlier sks of the same format to today's schema: drops the
 * trigger it had (only the exact one sks made) and adds key_owners. Nothing else changes. */
static int schema_upgrade(sqlite3 *db, const char *path, char *err, size_t errlen)
{
    int old_trigger = schema_has(db, "trigger", "skip_requests_gone", OLD_SKIP_TRIGGER_SQL);
    int owners = schema_has(db, "table", "key_owners", NULL);
    char *msg = NULL;

    if (old_trigger < 0 || owners < 0) {
        set_err(err, errlen, "cannot read the schema of store %s: %s", path, sqlite3_errmsg(db));
        return 0;
    }
    if (!old_trigger && owners)
        return 1;
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, &msg) != SQLITE_OK
        || (old_trigger && schema_has(db, "trigger", "skip_requests_gone", OLD_SKIP_TRIGGER_SQL) == 1
            && sqlite3_exec(db, "DROP TRIGGER skip_requests_gone", NULL, NULL, &msg) != SQLITE_OK)
        || sqlite3_exec(db, KEY_OWNERS_TABLE, NULL, NULL, &msg) != SQLITE_OK
        || sqlite3_exec(db, "COMMIT", NULL, NULL, &msg) != SQLITE_OK) {
        set_err(err, errlen, "cannot bring the schema of store %s up to date: %s", path,
                msg != NULL ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        if (!sqlite3_get_autocommit(db))
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return 0;
    }
    return 1;
}

#define SCHEMA_LIST "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name, tbl_name, sql"

static const char *col_text(sqlite3_stmt *st, int i)
{
    const char *t = (const char *)sqlite3_column_text(st, i);

    return t != NULL ? t : "";
}

/* 1 if the current rows of a and b (type, name, tbl_name, sql) are the same entry. */
static int schema_entry_same(sqlite3_stmt *a, sqlite3_stmt *b)
{
    int i;

    for (i = 0; i < 4; i++)
        if (sqlite3_column_type(a, i) != sqlite3_column_type(b, i) || strcmp(col_text(a, i), col_text(b, i)) != 0)
            return 0;
    return 1;
}

/* Orders two schema entries as SCHEMA_LIST does (by type, then name; NULLs first). */
static int schema_entry_cmp(sqlite3_stmt *a, sqlite3_stmt *b)
{
    int i, c;

    for (i = 0; i < 2; i++)
        if ((c = strcmp(col_text(a, i), col_text(b, i))) != 0)
            return c;
    return 0;
}

/*
 * Compares the store's schema, every entry of sqlite_master (SQLite's own included), with the
 * one SCHEMA makes in a new in-memory database. An extra trigger, view or index, a table
 * with another definition (an added column, a changed DEFAULT written through writable_schema)
 * or a missing one is refused, the message naming it.
 */
static int schema_verify(sqlite3 *db, char *why, size_t whylen)
{
    sqlite3 *ref = NULL;
    sqlite3_stmt *have = NULL, *want = NULL;
    int rh, rw, ok = 0;

    if (sqlite3_open_v2(":memory:", &ref, SQLITE_OPEN_READWRITE | SQLITE_OPEN_MEMORY, NULL) != SQLITE_OK
        || !db_harden(ref) || sqlite3_exec(ref, SCHEMA, NULL, NULL, NULL) != SQLITE_OK
        || sqlite3_prepare_v2(ref, SCHEMA_LIST, -1, &want, NULL) != SQLITE_OK) {
        set_err(why, whylen, "cannot build the reference schema: %s", ref ? sqlite3_errmsg(ref) : "out of memory");
        goto done;
    }
    if (sqlite3_prepare_v2(db, SCHEMA_LIST, -1, &have, NULL) != SQLITE_OK) {
        set_err(why, whylen, "cannot read the schema: %s", sqlite3_errmsg(db));
        goto done;
    }
    rh = sqlite3_step(have);
    rw = sqlite3_step(want);
    while (rh == SQLITE_ROW && rw == SQLITE_ROW && schema_entry_same(have, want)) {
        rh = sqlite3_step(have);
        rw = sqlite3_step(want);
    }
    if (rh == SQLITE_DONE && rw == SQLITE_DONE) {
        ok = 1;
    } else if (rh == SQLITE_ROW && rw == SQLITE_ROW && schema_entry_cmp(have, want) == 0) {
        set_err(why, whylen, "%s %s is not as this sks defines it: %.300s", col_text(have, 0), col_text(have, 1),
                col_text(have, 3));
    } else if (rh == SQLITE_ROW && (rw != SQLITE_ROW || schema_entry_cmp(have, want) < 0)) {
        set_err(why, whylen, "unexpected %s %s on %s: %.300s", col_text(have, 0), col_text(have, 1),
                col_text(have, 2), col_text(have, 3));
    } else if (rw == SQLITE_ROW) {
        set_err(why, whylen, "%s %s is missing", col_text(want, 0), col_text(want, 1));
    } else {
        set_err(why, whylen, "cannot read the schema: %s", sqlite3_errmsg(db));
    }
done:
    sqlite3_finalize(have);
    sqlite3_finalize(want);
    sqlite3_close(ref);
    return ok;
}

/* At open: the schema must be this sks's own (docs/storage.md); its version is remembered so
 * store_begin notices a change made while the device is open. */
static int schema_check(sks_device *dev, const char *path, char *err, size_t errlen)
{
    char why[400];

    if (!schema_version(dev->db, &dev->schema_version)) {
        set_err(err, errlen, "cannot read the schema of store %s: %s", path, sqlite3_errmsg(dev->db));
        return 0;
    }
    if (!schema_verify(dev->db, why, sizeof(why))) {
        set_err(err, errlen, "integrity error: store %s has a schema this sks did not make (%s): refused", path, why);
        return 0;
    }
    return 1;
}

static X509 *self_signed_device_cert(EVP_PKEY *key)
{
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();
    uint8_t serial[16];
    BIGNUM *bn = NULL;
    X509V3_CTX ctx;
    X509_EXTENSION *ext;
    int ok = 0;

    if (x == NULL || name == NULL || RAND_bytes(serial, sizeof(serial)) != 1)
        goto done;
    serial[0] &= 0x7F;
    bn = BN_bin2bn(serial, sizeof(serial), NULL);
    if (bn == NULL || BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) == NULL)
        goto done;
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, (const unsigned char *)"sks", -1, -1, 0);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)"sks software device", -1, -1, 0);
    if (!X509_set_version(x, 2) || !X509_set_subject_name(x, name) || !X509_set_issuer_name(x, name)
        || X509_gmtime_adj(X509_getm_notBefore(x), 0) == NULL
        || X509_gmtime_adj(X509_getm_notAfter(x), 60L * 60 * 24 * 365 * 20) == NULL
        || !X509_set_pubkey(x, key))
        goto done;
    X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_key_usage, "critical,digitalSignature");
    if (ext == NULL || !X509_add_ext(x, ext, -1)) {
        X509_EXTENSION_free(ext);
        goto done;
    }
    X509_EXTENSION_free(ext);
    if (X509_sign(x, key, EVP_sha256()) <= 0)
        goto done;
    ok = 1;
done:
    BN_free(bn);
    X509_NAME_free(name);
    if (!ok) {
        X509_free(x);
        x = NULL;
    }
    return x;
}

/* SQLite creates the database through the umask; a new store is its owner's alone (0600)
 * until an administrator decides otherwise. By descriptor, never following a symlink, so a
 * file swapped in by the directory's owner is not what gets changed. */
static int make_private(const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
    struct stat st;
    int ok = 0;

    if (fd < 0 || fstat(fd, &st) != 0)
        set_err(err, errlen, "cannot make store %s private (mode 0600): %s", path, strerror(errno));
    else if (!S_ISREG(st.st_mode))
        set_err(err, errlen, "cannot make store %s private: not a regular file", path);
    else if (fchmod(fd, 0600) != 0)
        set_err(err, errlen, "cannot make store %s private (mode 0600): %s", path, strerror(errno));
    else
        ok = 1;
    if (fd >= 0)
        close(fd);
    return ok;
}

int sks_store_create(const sks_store_location *loc, EVP_PKEY *device_key, X509 *device_cert,
                     char *err, size_t errlen)
{
    char mpath[4096];
    uint8_t mk[32];
    sqlite3 *db = NULL;
    EVP_PKEY *key = device_key;
    X509 *cert = device_cert;
    sks_buf der, sealed;
    unsigned char *cder = NULL;
    int cder_len, ok = 0;
    struct stat st;
    sks_device tmp;

    sks_buf_init(&der);
    sks_buf_init(&sealed);
    default_master_path(loc, mpath, sizeof(mpath));
    if (lstat(loc->db_path, &st) == 0) {
        set_err(err, errlen, "store %s already exists%s", loc->db_path,
                S_ISLNK(st.st_mode) ? " (as a symbolic link: a new store is not made through one)" : "");
        return 0;
    }
    if (RAND_priv_bytes(mk, sizeof(mk)) != 1) {
        set_err(err, errlen, "no randomness for the master key");
        return 0;
    }
    if (!write_master_key(mpath, mk, err, errlen))
        goto wipe;
    if (key == NULL && (key = ec_generate("prime256v1")) == NULL) {
        set_err(err, errlen, "cannot generate the device key");
        goto fail;
    }
    if (cert == NULL && (cert = self_signed_device_cert(key)) == NULL) {
        set_err(err, errlen, "cannot make the device certificate");
        goto fail;
    }
    if (X509_check_private_key(cert, key) != 1) {
        set_err(err, errlen, "device certificate does not match the device key");
        goto fail;
    }
    if (!db_open(loc->db_path, 1, &db, err, errlen))
        goto fail;
    if (!make_private(loc->db_path, err, errlen))
        goto fail;
    memset(&tmp, 0, sizeof(tmp));
    memcpy(tmp.master_key, mk, 32);
    cder_len = i2d_X509(cert, &cder);
    if (cder_len <= 0 || !pkcs8_der(key, &der) || !seal(&tmp, "device-key", der.data, der.len, &sealed)) {
        set_err(err, errlen, "cannot encode the device identity");
        goto fail;
    }
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK
        || sqlite3_exec(db, SCHEMA, NULL, NULL, NULL) != SQLITE_OK
        || !meta_put(db, "device_certificate", cder, (size_t)cder_len)
        || !meta_put(db, "device_key", sealed.data, sealed.len)
        || !meta_put(db, "format", STORE_FORMAT, strlen(STORE_FORMAT))
        || sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        set_err(err, errlen, "cannot initialise store %s: %s", loc->db_path, sqlite3_errmsg(db));
        goto fail;
    }
    ok = 1;
fail:
    OPENSSL_cleanse(&tmp, sizeof(tmp));
    OPENSSL_free(cder);
    sqlite3_close(db);
    if (!ok) {
        unlink(loc->db_path);
        unlink(mpath);
    }
    if (key != device_key)
        EVP_PKEY_free(key);
    if (cert != device_cert)
        X509_free(cert);
wipe:
    OPENSSL_cleanse(mk, sizeof(mk));
    sks_buf_free(&der);
    sks_buf_free(&sealed);
    return ok;
}

sks_device *sks_device_open(const sks_store_location *loc, char *err, size_t errlen)
{
    sks_device *dev = OPENSSL_zalloc(sizeof(*dev));
    char mpath[4096];
    sks_buf sealed, der;
    struct stat st;

    sks_buf_init(&sealed);
    sks_buf_init(&der);
    if (dev == NULL) {
        set_err(err, errlen, "out of memory");
        return NULL;
    }
    if (stat(loc->db_path, &st) != 0) {
        set_err(err, errlen, "store %s does not exist (create it with 'sks init')", loc->db_path);
        goto fail;
    }
    if (!read_master_key(default_master_path(loc, mpath, sizeof(mpath)), dev->master_key, err, errlen))
        goto fail;
    if (!db_open(loc->db_path, 0, &dev->db, err, errlen))
        goto fail;
    if (!meta_get(dev->db, "device_certificate", &der) || !meta_get(dev->db, "device_key", &sealed)) {
        set_err(err, errlen, "%s is not an sks store (no device identity)", loc->db_path);
        goto fail;
    }
    gen_open(dev); /* after a first read: SQLite maps the WAL index then */
    if (!format_check(dev, loc->db_path, err, errlen) || !schema_upgrade(dev->db, loc->db_path, err, errlen)
        || !schema_check(dev, loc->db_path, err, errlen) || !rows_open(dev, loc->db_path, err, errlen))
        goto fail;
    dev->device_cert = OPENSSL_memdup(der.data, der.len);
    dev->device_cert_len = der.len;
    sks_buf_reset(&der);
    if (dev->device_cert == NULL || !unseal(dev, "device-key", sealed.data, sealed.len, &der)
        || (dev->device_key = pkcs8_parse(der.data, der.len)) == NULL) {
        set_err(err, errlen, "cannot unseal the device key of %s: wrong master key %s?", loc->db_path, mpath);
        goto fail;
    }
    sks_buf_free(&sealed);
    sks_buf_free(&der);
    return dev;
fail:
    sks_buf_free(&sealed);
    sks_buf_free(&der);
    sks_device_close(dev);
    return NULL;
}

void sks_device_close(sks_device *dev)
{
    if (dev == NULL)
        return;
    key_cache_clear(dev);
    user_cache_clear(dev);
    store_cached_clear(dev); /* before the connections: SQLite keeps them open while statements live */
    rows_close(dev);
    gen_close(dev);
    sqlite3_close(dev->db);
    EVP_PKEY_free(dev->device_key);
    OPENSSL_free(dev->device_cert);
    OPENSSL_clear_free(dev, sizeof(*dev));
}

void sks_device_set_test_hooks(sks_device *dev, const sks_test_hooks *hooks)
{
    if (hooks != NULL)
        dev->hooks = *hooks;
    else
        memset(&dev->hooks, 0, sizeof(dev->hooks));
}

static void dirty_clear(sks_device *dev)
{
    dev->rows.dirty_n = 0;
    dev->rows.dirty_overflow = 0;
}

/* The schema in this transaction's snapshot is still the one checked, or checked again. */
/* A statement without result rows (BEGIN, COMMIT, ROLLBACK) through the kept statements:
 * sqlite3_exec parses it anew on every transaction. On failure SQLite's message goes to err. */
static int exec_kept(sks_device *dev, const char *sql, char *err, size_t errlen)
{
    sqlite3_stmt *st = store_cached(dev, NULL, sql);
    int rc;

    if (st == NULL) {
        if (err != NULL)
            snprintf(err, errlen, "%s", sqlite3_errmsg(dev->db));
        return 0;
    }
    rc = sqlite3_step(st);
    if (rc != SQLITE_DONE && err != NULL)
        snprintf(err, errlen, "%s", sqlite3_errmsg(dev->db));
    store_release(dev, st);
    return rc == SQLITE_DONE;
}

/* PRAGMA schema_version of the main connection, with a kept statement (it reads the file
 * header when stepped, so a kept one sees every change). */
static int schema_version_kept(sks_device *dev, int *out)
{
    sqlite3_stmt *st = store_cached(dev, NULL, "PRAGMA schema_version");
    int ok;

    if (st == NULL)
        return 0;
    ok = sqlite3_step(st) == SQLITE_ROW;
    if (ok)
        *out = sqlite3_column_int(st, 0);
    store_release(dev, st);
    return ok;
}

static int schema_unchanged(sks_device *dev)
{
    char why[400];
    int version;

    if (!schema_version_kept(dev, &version)) {
        snprintf(dev->rows.error, sizeof(dev->rows.error), "the store is busy or unavailable: %s",
                 sqlite3_errmsg(dev->db));
        return 0;
    }
    if (version == dev->schema_version)
        return 1;
    if (!schema_verify(dev->db, why, sizeof(why))) {
        snprintf(dev->rows.error, sizeof(dev->rows.error),
                 "integrity error: the store's schema was changed outside the device (%s)", why);
        return 0;
    }
    dev->schema_version = version;
    return 1;
}

int store_begin(sks_device *dev, int write)
{
    char err[400];

    dirty_clear(dev);
    dev->rows.error[0] = '\0';
    if (!exec_kept(dev, write ? "BEGIN IMMEDIATE" : "BEGIN", err, sizeof(err))) {
        snprintf(dev->rows.error, sizeof(dev->rows.error), "the store is busy or unavailable: %s", err);
        return 0;
    }
    /* One PRAGMA (SQLite reads it from the file header): the schema is compared again only
     * when it changed. This read also fixes the transaction's snapshot. */
    if (!schema_unchanged(dev)) {
        exec_kept(dev, "ROLLBACK", NULL, 0);
        return 0;
    }
    return 1;
}

static int rows_seal_changes(sks_device *dev);

int store_commit(sks_device *dev)
{
    dev->rows.error[0] = '\0';
    if (!rows_seal_changes(dev))
        return 0;
    if (!exec_kept(dev, "COMMIT", dev->rows.error, sizeof(dev->rows.error)))
        return 0;
    dirty_clear(dev);
    return 1;
}

void store_rollback(sks_device *dev)
{
    dirty_clear(dev);
    if (!sqlite3_get_autocommit(dev->db))
        exec_kept(dev, "ROLLBACK", NULL, 0);
}

const char *store_error(sks_device *dev)
{
    return dev->rows.error[0] != '\0' ? dev->rows.error : sqlite3_errmsg(dev->db);
}

sqlite3_stmt *store_prepare(sks_device *dev, sks_call *call, const char *sql)
{
    sqlite3_stmt *st = NULL;

    if (sqlite3_prepare_v2(dev->db, sql, -1, &st, NULL) != SQLITE_OK) {
        sks_fail(call, SKS_ERROR_STORAGE, "storage error: %s", sqlite3_errmsg(dev->db));
        return NULL;
    }
    return st;
}

sqlite3_stmt *store_cached(sks_device *dev, sks_call *call, const char *sql)
{
    return store_cached_on(dev, dev->db, call, sql);
}

sqlite3_stmt *store_cached_on(sks_device *dev, sqlite3 *db, sks_call *call, const char *sql)
{
    stmt_cache_entry *e = NULL;
    sqlite3_stmt *st = NULL;
    size_t i;

    for (i = 0; i < SKS_STMT_CACHE; i++)
        if (dev->stmts[i].sql != NULL && dev->stmts[i].db == db && strcmp(dev->stmts[i].sql, sql) == 0) {
            if (dev->stmts[i].busy)
                break; /* in use further up the stack: a statement of its own below */
            dev->stmts[i].busy = 1;
            return dev->stmts[i].st;
        }
    if (i == SKS_STMT_CACHE) {
        /* a free slot, else the next one not in use */
        for (i = 0; i < SKS_STMT_CACHE && dev->stmts[i].sql != NULL; i++)
            ;
        for (size_t tries = 0; i == SKS_STMT_CACHE && tries < SKS_STMT_CACHE; tries++) {
            size_t j = dev->stmts_next++ % SKS_STMT_CACHE;
            if (!dev->stmts[j].busy)
                i = j;
        }
        if (i < SKS_STMT_CACHE)
            e = &dev->stmts[i];
    }
    if (sqlite3_prepare_v3(db, sql, -1, e != NULL ? SQLITE_PREPARE_PERSISTENT : 0, &st, NULL) != SQLITE_OK) {
        sqlite3_finalize(st);
        if (call != NULL)
            sks_fail(call, SKS_ERROR_STORAGE, "storage error: %s", sqlite3_errmsg(db));
        return NULL;
    }
    if (e != NULL) {
        char *copy = OPENSSL_strdup(sql);
        if (copy == NULL)
            return st; /* not kept: store_release finalizes it */
        OPENSSL_free(e->sql);
        sqlite3_finalize(e->st);
        e->sql = copy;
        e->db = db;
        e->st = st;
        e->busy = 1;
    }
    return st;
}

void store_release(sks_device *dev, sqlite3_stmt *st)
{
    size_t i;

    if (st == NULL)
        return;
    for (i = 0; i < SKS_STMT_CACHE; i++)
        if (dev->stmts[i].st == st) {
            /* reset ends its read; bound values (handles, never secrets) are cleared too */
            sqlite3_reset(st);
            sqlite3_clear_bindings(st);
            dev->stmts[i].busy = 0;
            return;
        }
    sqlite3_finalize(st);
}

void store_cached_clear(sks_device *dev)
{
    size_t i;

    for (i = 0; i < SKS_STMT_CACHE; i++) {
        sqlite3_finalize(dev->stmts[i].st);
        OPENSSL_free(dev->stmts[i].sql);
        memset(&dev->stmts[i], 0, sizeof(dev->stmts[i]));
    }
}

int store_step_done(sks_device *dev, sks_call *call, sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);

    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        sks_fail(call, SKS_ERROR_STORAGE, "storage error: %s", sqlite3_errmsg(dev->db));
        return 0;
    }
    return 1;
}

int store_exec(sks_device *dev, sks_call *call, const char *sql)
{
    char *msg = NULL;

    if (sqlite3_exec(dev->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        sks_fail(call, SKS_ERROR_STORAGE, "storage error: %s", msg ? msg : "?");
        sqlite3_free(msg);
        return 0;
    }
    return 1;
}

/* Sealed blob: version(1) || nonce(12) || ciphertext || tag(16); AAD = "sks-seal:" label,
 * the label naming what the blob is: "device-key", or "table.column#handle" for a row. */
static int seal(const sks_device *dev, const char *label, const uint8_t *in, size_t n, sks_buf *out)
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    uint8_t nonce[SEAL_NONCE], tag[SEAL_TAG];
    char aad[128];
    int len, ok = 0;
    size_t start;

    snprintf(aad, sizeof(aad), "sks-seal:%s", label);
    if (c == NULL || RAND_bytes(nonce, sizeof(nonce)) != 1 || n > INT32_MAX)
        goto done;
    sks_buf_byte(out, SEAL_VERSION);
    sks_buf_put(out, nonce, sizeof(nonce));
    start = out->len;
    sks_buf_put(out, in, n); /* reserve, then encrypt in place */
    if (out->failed)
        goto done;
    if (EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, dev->master_key, nonce) != 1
        || EVP_EncryptUpdate(c, NULL, &len, (const uint8_t *)aad, (int)strlen(aad)) != 1
        || (n > 0 && EVP_EncryptUpdate(c, out->data + start, &len, out->data + start, (int)n) != 1)
        || EVP_EncryptFinal_ex(c, out->data + start + n, &len) != 1
        || EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, SEAL_TAG, tag) != 1)
        goto done;
    sks_buf_put(out, tag, sizeof(tag));
    ok = !out->failed;
done:
    EVP_CIPHER_CTX_free(c);
    return ok;
}

static int unseal(const sks_device *dev, const char *label, const uint8_t *in, size_t n, sks_buf *out)
{
    EVP_CIPHER_CTX *c = NULL;
    char aad[128];
    int len, ok = 0;
    size_t ctlen, start;

    if (n < 1 + SEAL_NONCE + SEAL_TAG || in[0] != SEAL_VERSION)
        return 0;
    ctlen = n - 1 - SEAL_NONCE - SEAL_TAG;
    snprintf(aad, sizeof(aad), "sks-seal:%s", label);
    c = EVP_CIPHER_CTX_new();
    start = out->len;
    sks_buf_put(out, in + 1 + SEAL_NONCE, ctlen);
    if (c == NULL || out->failed)
        goto done;
    if (EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, dev->master_key, in + 1) != 1
        || EVP_DecryptUpdate(c, NULL, &len, (const uint8_t *)aad, (int)strlen(aad)) != 1
        || (ctlen > 0 && EVP_DecryptUpdate(c, out->data + start, &len, out->data + start, (int)ctlen) != 1)
        || EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, SEAL_TAG, (void *)(in + n - SEAL_TAG)) != 1
        || EVP_DecryptFinal_ex(c, out->data + start + ctlen, &len) != 1)
        goto done;
    ok = 1;
done:
    if (!ok && out->data != NULL) {
        OPENSSL_cleanse(out->data + start, out->len - start);
        out->len = start;
    }
    EVP_CIPHER_CTX_free(c);
    return ok;
}

int store_run(sks_device *dev, sks_call *call, const char *sql, int64_t a, int64_t b)
{
    sqlite3_stmt *st = store_prepare(dev, call, sql);
    int n;

    if (st == NULL)
        return 0;
    n = sqlite3_bind_parameter_count(st);
    if (n >= 1)
        sqlite3_bind_int64(st, 1, a);
    if (n >= 2)
        sqlite3_bind_int64(st, 2, b);
    return store_step_done(dev, call, st);
}

/* ---- sealed columns bound to their row ---- */

static void row_label(char *buf, size_t n, const char *table, const char *column, int64_t handle)
{
    snprintf(buf, n, "%s.%s#%lld", table, column, (long long)handle);
}

int seal_row(const sks_device *dev, const char *table, const char *column, int64_t handle, const uint8_t *in,
             size_t n, sks_buf *out)
{
    char label[96];

    row_label(label, sizeof(label), table, column, handle);
    return seal(dev, label, in, n, out);
}

int unseal_row(const sks_device *dev, const char *table, const char *column, int64_t handle, const uint8_t *in,
               size_t n, sks_buf *out)
{
    char label[96];

    row_label(label, sizeof(label), table, column, handle);
    return in != NULL && unseal(dev, label, in, n, out);
}

/* ---- row MACs ---- */

/* The tables whose every column is covered by a row MAC (docs/storage.md lists why). */
static const char *const ROW_TABLES[] = { "sessions", "puk_policies", "pin_policies", "pins", "keys", "post_ops",
                                          "skip_requests" };
#define ROW_TABLE_COUNT (sizeof(ROW_TABLES) / sizeof(ROW_TABLES[0]))

static int row_table_index(const char *table)
{
    size_t i;

    for (i = 0; i < ROW_TABLE_COUNT; i++)
        if (strcmp(ROW_TABLES[i], table) == 0)
            return (int)i;
    return -1;
}

int seal_new_row(sks_device *dev, const char *table, const char *column, const uint8_t *in, size_t n,
                 sks_buf *out)
{
    char sql[200];
    sqlite3_stmt *st = NULL;
    int64_t next = 0;

    if (row_table_index(table) < 0)
        return 0;
    /* AUTOINCREMENT: one more than the largest handle the table ever had. */
    snprintf(sql, sizeof(sql),
             "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = '%s'), 0),"
             " coalesce((SELECT max(handle) FROM %s), 0)) + 1",
             table, table);
    if ((st = store_cached(dev, NULL, sql)) != NULL && sqlite3_step(st) == SQLITE_ROW)
        next = sqlite3_column_int64(st, 0);
    store_release(dev, st);
    return next > 0 && seal_row(dev, table, column, next, in, n, out);
}

static void mac_u64(EVP_MAC_CTX *m, uint64_t v)
{
    uint8_t b[8];
    int i;

    for (i = 7; i >= 0; i--, v >>= 8)
        b[i] = (uint8_t)v;
    EVP_MAC_update(m, b, 8);
}

static void mac_bytes(EVP_MAC_CTX *m, const void *p, size_t n)
{
    mac_u64(m, n);
    if (n > 0)
        EVP_MAC_update(m, p, n);
}

/* A fresh HMAC-SHA256 context under the row MAC key: a copy of one keyed once per device
 * (fetching HMAC and keying it on every row cost a fifth of a key load, bench/). */
static EVP_MAC_CTX *row_mac_start(sks_device *dev)
{
    OSSL_PARAM params[] = { OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
                            OSSL_PARAM_construct_end() };

    if (dev->rows.mac_keyed == NULL) {
        EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
        EVP_MAC_CTX *m = mac != NULL ? EVP_MAC_CTX_new(mac) : NULL;

        EVP_MAC_free(mac);
        if (m == NULL || EVP_MAC_init(m, dev->rows.mac_key, sizeof(dev->rows.mac_key), params) != 1) {
            EVP_MAC_CTX_free(m);
            return NULL;
        }
        dev->rows.mac_keyed = m;
    }
    return EVP_MAC_CTX_dup(dev->rows.mac_keyed);
}

/*
 * The MAC of one row as `db` holds it: HMAC-SHA256 over "sks-row-mac-v1", the table name,
 * the handle, then every column of the row as (name, type, value). *exists = 0 if there is no
 * such row. Returns 0 on an SQLite or crypto failure.
 */
static int row_mac(sks_device *dev, sqlite3 *db, int table, int64_t id, uint8_t out[32], int *exists)
{
    char sql[96];
    sqlite3_stmt *st = NULL;
    EVP_MAC_CTX *m = NULL;
    int i, ncol, step, ok = 0;
    size_t outlen = 0;

    snprintf(sql, sizeof(sql), "SELECT * FROM %s WHERE rowid = ?", ROW_TABLES[table]);
    /* kept on both connections: a commit reads each changed row in both states */
    if ((st = store_cached_on(dev, db, NULL, sql)) == NULL)
        return 0;
    sqlite3_bind_int64(st, 1, id);
    step = sqlite3_step(st);
    *exists = step == SQLITE_ROW;
    if (step != SQLITE_ROW) {
        ok = step == SQLITE_DONE;
        goto done;
    }
    if ((m = row_mac_start(dev)) == NULL)
        goto done;
    mac_bytes(m, "sks-row-mac-v1", 14);
    mac_bytes(m, ROW_TABLES[table], strlen(ROW_TABLES[table]));
    mac_u64(m, (uint64_t)id);
    ncol = sqlite3_column_count(st);
    for (i = 0; i < ncol; i++) {
        const char *name = sqlite3_column_name(st, i);
        int type = sqlite3_column_type(st, i);
        uint8_t t = (uint8_t)type;

        mac_bytes(m, name, strlen(name));
        EVP_MAC_update(m, &t, 1);
        if (type == SQLITE_INTEGER) {
            mac_u64(m, (uint64_t)sqlite3_column_int64(st, i));
        } else if (type == SQLITE_FLOAT) {
            double d = sqlite3_column_double(st, i);
            mac_bytes(m, &d, sizeof(d));
        } else if (type != SQLITE_NULL) {
            const void *p = type == SQLITE_TEXT ? (const void *)sqlite3_column_text(st, i) : sqlite3_column_blob(st, i);
            mac_bytes(m, p, (size_t)sqlite3_column_bytes(st, i));
        }
    }
    ok = EVP_MAC_final(m, out, &outlen, 32) == 1 && outlen == 32;
done:
    EVP_MAC_CTX_free(m);
    store_release(dev, st);
    return ok;
}

/* The stored MAC of a row in `db`; 0 if there is none. */
static int row_mac_stored(sks_device *dev, sqlite3 *db, int table, int64_t id, uint8_t out[32])
{
    static const char SQL[] = "SELECT mac FROM row_macs WHERE tbl = ? AND id = ?";
    sqlite3_stmt *st = NULL;
    int ok = 0;

    if ((st = store_cached_on(dev, db, NULL, SQL)) == NULL)
        return 0;
    sqlite3_bind_text(st, 1, ROW_TABLES[table], -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, id);
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_bytes(st, 0) == 32) {
        memcpy(out, sqlite3_column_blob(st, 0), 32);
        ok = 1;
    }
    store_release(dev, st);
    return ok;
}

/* 1: the row is absent or matches its MAC; 0: it does not (or cannot be read). */
static int row_intact(sks_device *dev, sqlite3 *db, int table, int64_t id, int *exists)
{
    uint8_t have[32], want[32];

    if (!row_mac(dev, db, table, id, have, exists))
        return 0;
    if (!*exists)
        return 1;
    return row_mac_stored(dev, db, table, id, want) && CRYPTO_memcmp(have, want, 32) == 0;
}

static int row_is_dirty(const sks_device *dev, int table, int64_t id)
{
    size_t i;

    for (i = 0; i < dev->rows.dirty_n; i++)
        if (dev->rows.dirty[i].table == table && dev->rows.dirty[i].id == id)
            return 1;
    return 0;
}

sks_status row_verify(sks_device *dev, sks_call *call, const char *table, int64_t handle)
{
    int t = row_table_index(table), exists = 0;

    if (t < 0)
        return sks_fail(call, SKS_ERROR_INTERNAL, "no row MAC for table %s", table);
    if (row_is_dirty(dev, t, handle))
        return SKS_OK; /* its committed state is checked by store_commit */
    if (!row_intact(dev, dev->db, t, handle, &exists))
        return sks_fail(call, SKS_ERROR_STORAGE,
                        "integrity error: %s row #%lld does not match its MAC (changed outside the device)", table,
                        (long long)handle);
    return SKS_OK;
}

/* SQLite's update hook: remembers every protected row the transaction inserts, changes or
 * deletes. (row_macs is WITHOUT ROWID, so its own changes do not come here.) */
static void on_row_change(void *arg, int op, const char *dbname, const char *table, sqlite3_int64 id)
{
    sks_device *dev = arg;
    int t = row_table_index(table);
    row_ref *grown;

    (void)op;
    (void)dbname;
    if (t < 0 || row_is_dirty(dev, t, id))
        return;
    if (dev->rows.dirty_n == dev->rows.dirty_cap) {
        size_t cap = dev->rows.dirty_cap ? dev->rows.dirty_cap * 2 : 16;
        grown = OPENSSL_realloc(dev->rows.dirty, cap * sizeof(*grown));
        if (grown == NULL) {
            dev->rows.dirty_overflow = 1;
            return;
        }
        dev->rows.dirty = grown;
        dev->rows.dirty_cap = cap;
    }
    dev->rows.dirty[dev->rows.dirty_n].table = (uint8_t)t;
    dev->rows.dirty[dev->rows.dirty_n].id = id;
    dev->rows.dirty_n++;
}

/* Stores a changed row's new MAC, or drops the MAC of a deleted row (exists = 0). */
static int row_mac_renew(sks_device *dev, int table, int64_t id, const uint8_t mac[32], int exists)
{
    sqlite3_stmt *st = NULL;
    int ok;

    /* kept statements: a commit renews one MAC per changed row (ten for a SKIP import) */
    if ((st = store_cached(dev, NULL,
                           exists ? "INSERT INTO row_macs (tbl, id, mac) VALUES (?1, ?2, ?3)"
                                    " ON CONFLICT (tbl, id) DO UPDATE SET mac = excluded.mac"
                                  : "DELETE FROM row_macs WHERE tbl = ?1 AND id = ?2"))
        == NULL)
        return 0;
    sqlite3_bind_text(st, 1, ROW_TABLES[table], -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, id);
    if (exists)
        sqlite3_bind_blob(st, 3, mac, 32, SQLITE_STATIC);
    ok = sqlite3_step(st) == SQLITE_DONE;
    store_release(dev, st);
    return ok;
}

/*
 * Before a commit: every protected row the transaction changed and kept must have been intact
 * in the committed state (so a row edited outside the device is never re-MACed by a later
 * legitimate change), and then gets the MAC of its new state. Deleted rows only lose their
 * MAC: removing an edited row (e.g. with a failed session) launders nothing.
 */
static int rows_seal_changes(sks_device *dev)
{
    sqlite3 *committed = dev->rows.committed;
    size_t i;
    int ok = 1, exists;

    if (dev->rows.dirty_overflow) {
        snprintf(dev->rows.error, sizeof(dev->rows.error), "out of memory recording changed rows");
        return 0;
    }
    if (dev->rows.dirty_n == 0)
        return 1;
    if (sqlite3_exec(committed, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(dev->rows.error, sizeof(dev->rows.error), "cannot read the committed state: %s",
                 sqlite3_errmsg(committed));
        return 0;
    }
    for (i = 0; ok && i < dev->rows.dirty_n; i++) {
        const row_ref *r = &dev->rows.dirty[i];
        uint8_t now[32];
        int kept = 0;

        if (strcmp(ROW_TABLES[r->table], "keys") == 0 && !owner_follow_key(dev, committed, r->id)) {
            snprintf(dev->rows.error, sizeof(dev->rows.error), "cannot record a key's owner: %s",
                     sqlite3_errmsg(dev->db));
            ok = 0;
        } else if (!row_mac(dev, dev->db, r->table, r->id, now, &kept)) {
            snprintf(dev->rows.error, sizeof(dev->rows.error), "cannot read a changed row: %s",
                     sqlite3_errmsg(dev->db));
            ok = 0;
        } else if (kept && !row_intact(dev, committed, r->table, r->id, &exists)) {
            snprintf(dev->rows.error, sizeof(dev->rows.error),
                     "integrity error: %s row #%lld does not match its MAC (changed outside the device)",
                     ROW_TABLES[r->table], (long long)r->id);
            ok = 0;
        } else if (!row_mac_renew(dev, r->table, r->id, now, kept)) {
            snprintf(dev->rows.error, sizeof(dev->rows.error), "cannot renew a row MAC: %s", sqlite3_errmsg(dev->db));
            ok = 0;
        }
    }
    sqlite3_exec(committed, "COMMIT", NULL, NULL, NULL);
    return ok;
}

/* The row MAC key: HKDF-SHA256 of the master key, for this purpose only (the master key
 * itself is the sealing key). */
static int derive_row_mac_key(const uint8_t master[32], uint8_t out[32])
{
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    EVP_KDF_CTX *k = kdf != NULL ? EVP_KDF_CTX_new(kdf) : NULL;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)master, 32),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)"sks row mac key v1", 18),
        OSSL_PARAM_construct_end(),
    };
    int ok = k != NULL && EVP_KDF_derive(k, out, 32, params) == 1;

    EVP_KDF_CTX_free(k);
    EVP_KDF_free(kdf);
    return ok;
}

static int format_check(sks_device *dev, const char *db_path, char *err, size_t errlen)
{
    sks_buf f;
    int ok;

    sks_buf_init(&f);
    ok = meta_get(dev->db, "format", &f) && f.len == strlen(STORE_FORMAT) && memcmp(f.data, STORE_FORMAT, f.len) == 0;
    if (!ok)
        set_err(err, errlen,
                "store %s has schema version \"%.*s\", this sks needs \"%s\" (sealed values bound to their rows,"
                " row MACs): it cannot use the store; create a new one with 'sks init' and provision the keys again",
                db_path, (int)(f.len > 32 ? 32 : f.len), f.data != NULL ? (const char *)f.data : "", STORE_FORMAT);
    sks_buf_free(&f);
    return ok;
}

static int rows_open(sks_device *dev, const char *db_path, char *err, size_t errlen)
{
    if (!derive_row_mac_key(dev->master_key, dev->rows.mac_key)) {
        set_err(err, errlen, "cannot derive the row MAC key");
        return 0;
    }
    if (sqlite3_open_v2(db_path, &dev->rows.committed, SQLITE_OPEN_READONLY | SQLITE_OPEN_FULLMUTEX, NULL)
        != SQLITE_OK) {
        set_err(err, errlen, "cannot open store %s: %s", db_path,
                dev->rows.committed ? sqlite3_errmsg(dev->rows.committed) : "out of memory");
        return 0;
    }
    if (!db_harden(dev->rows.committed)) {
        set_err(err, errlen, "cannot configure store %s: %s", db_path, sqlite3_errmsg(dev->rows.committed));
        return 0;
    }
    sqlite3_busy_timeout(dev->rows.committed, 30000);
    sqlite3_update_hook(dev->db, on_row_change, dev);
    return 1;
}

static void rows_close(sks_device *dev)
{
    if (dev->db != NULL)
        sqlite3_update_hook(dev->db, NULL, NULL);
    sqlite3_close(dev->rows.committed);
    EVP_MAC_CTX_free(dev->rows.mac_keyed); /* wipes the keyed state */
    OPENSSL_free(dev->rows.dirty);
    OPENSSL_cleanse(dev->rows.mac_key, sizeof(dev->rows.mac_key));
    memset(&dev->rows, 0, sizeof(dev->rows));
}
