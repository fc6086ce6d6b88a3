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

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#define SEAL_VERSION 1
#define SEAL_NONCE 12
#define SEAL_TAG 16

static const char SCHEMA[] =
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);"
    /* Provisioning sessions. open = 1 until closeProvisioningSession succeeds. */
    "CREATE TABLE IF NOT EXISTS sessions ("
    " handle INTEGER PRIMARY KEY AUTOINCREMENT, open INTEGER NOT NULL,"
    " session_key BLOB NOT NULL, algorithm TEXT NOT NULL, privacy INTEGER NOT NULL,"
    " client_session_id TEXT NOT NULL, server_session_id TEXT NOT NULL, issuer_uri TEXT NOT NULL,"
    " kmk BLOB NOT NULL, client_time INTEGER NOT NULL, lifetime INTEGER NOT NULL,"
    " key_limit INTEGER NOT NULL, mac_counter INTEGER NOT NULL,"
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
    "CREATE TRIGGER IF NOT EXISTS skip_requests_gone AFTER DELETE ON sessions"
    " BEGIN DELETE FROM skip_requests WHERE session = OLD.handle; END;";

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
        || !meta_put(db, "format", "sks-1", 5)
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

int store_begin(sks_device *dev, int write)
{
    return sqlite3_exec(dev->db, write ? "BEGIN IMMEDIATE" : "BEGIN", NULL, NULL, NULL) == SQLITE_OK;
}

int store_commit(sks_device *dev)
{
    return sqlite3_exec(dev->db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK;
}

void store_rollback(sks_device *dev)
{
    if (!sqlite3_get_autocommit(dev->db))
        sqlite3_exec(dev->db, "ROLLBACK", NULL, NULL, NULL);
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

/* Sealed blob: version(1) || nonce(12) || ciphertext || tag(16); AAD = "sks-seal:" label. */
int seal(const sks_device *dev, const char *label, const uint8_t *in, size_t n, sks_buf *out)
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    uint8_t nonce[SEAL_NONCE], tag[SEAL_TAG];
    char aad[64];
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

int unseal(const sks_device *dev, const char *label, const uint8_t *in, size_t n, sks_buf *out)
{
    EVP_CIPHER_CTX *c = NULL;
    char aad[64];
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
