/*
 * sks-issuer's SQLite state (state.h).
 */
#include "state.h"

#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>

static const char SCHEMA[] =
    "CREATE TABLE IF NOT EXISTS enrolments(who TEXT PRIMARY KEY, profile TEXT NOT NULL, device TEXT NOT NULL,"
    " expires INTEGER NOT NULL, factory TEXT, package BLOB, issued INTEGER, confirmed INTEGER);"
    "CREATE TABLE IF NOT EXISTS hits(who TEXT NOT NULL, t INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS hits_who ON hits(who, t);";

static const char ARCHIVE_SCHEMA[] =
    "CREATE TABLE IF NOT EXISTS archive.archived_keys(serial TEXT PRIMARY KEY, device TEXT NOT NULL,"
    " profile TEXT NOT NULL, certificate BLOB NOT NULL, envelope BLOB NOT NULL, archived INTEGER NOT NULL);";

static int exec(issuer_state *s, const char *sql)
{
    return sqlite3_exec(s->db, sql, NULL, NULL, NULL) == SQLITE_OK;
}

int state_open(issuer_state *s, const issuer_config *c, char *err, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    int ok;

    if (sqlite3_open_v2(c->database, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "cannot open the database %s: %s", c->database, sqlite3_errmsg(s->db));
        return 0;
    }
    sqlite3_busy_timeout(s->db, 60000);
    ok = exec(s, SCHEMA);
    if (ok && c->archive[0]) {
        ok = sqlite3_prepare_v2(s->db, "ATTACH DATABASE ? AS archive", -1, &st, NULL) == SQLITE_OK
             && sqlite3_bind_text(st, 1, c->archive, -1, SQLITE_STATIC) == SQLITE_OK && sqlite3_step(st) == SQLITE_DONE;
        sqlite3_finalize(st);
        ok = ok && exec(s, ARCHIVE_SCHEMA);
    }
    if (!ok)
        snprintf(err, errlen, "cannot set up the database %s or the archive %s: %s", c->database, c->archive,
                 sqlite3_errmsg(s->db));
    return ok;
}

void state_close(issuer_state *s)
{
    sqlite3_close(s->db);
    s->db = NULL;
}

/* IMMEDIATE: the enrolment is read and written under one write lock, so two requests with one
 * token cannot both bind it. */
int state_begin(issuer_state *s)
{
    return exec(s, "BEGIN IMMEDIATE");
}

int state_commit(issuer_state *s)
{
    return exec(s, "COMMIT");
}

void state_rollback(issuer_state *s)
{
    exec(s, "ROLLBACK");
}

int state_rate_ok(issuer_state *s, const char *who, unsigned limit, long now)
{
    sqlite3_stmt *st = NULL;
    long count = -1;

    if (sqlite3_prepare_v2(s->db, "DELETE FROM hits WHERE t < ?", -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, now - 60);
        sqlite3_step(st);
    }
    sqlite3_finalize(st);
    if (sqlite3_prepare_v2(s->db, "INSERT INTO hits(who, t) VALUES(?, ?)", -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, who, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, now);
        sqlite3_step(st);
    }
    sqlite3_finalize(st);
    if (sqlite3_prepare_v2(s->db, "SELECT count(*) FROM hits WHERE who = ? AND t >= ?", -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, who, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, now - 60);
        if (sqlite3_step(st) == SQLITE_ROW)
            count = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    return count >= 0 && count <= (long)limit;
}

static int insert_enrolment(issuer_state *s, const char *verb, const char *who, const char *profile,
                            const char *device, long expires)
{
    char sql[200];
    sqlite3_stmt *st = NULL;
    int ok;

    snprintf(sql, sizeof(sql), "%s INTO enrolments(who, profile, device, expires) VALUES(?, ?, ?, ?)", verb);
    ok = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) == SQLITE_OK
         && sqlite3_bind_text(st, 1, who, -1, SQLITE_STATIC) == SQLITE_OK
         && sqlite3_bind_text(st, 2, profile, -1, SQLITE_STATIC) == SQLITE_OK
         && sqlite3_bind_text(st, 3, device, -1, SQLITE_STATIC) == SQLITE_OK
         && sqlite3_bind_int64(st, 4, expires) == SQLITE_OK && sqlite3_step(st) == SQLITE_DONE;
    sqlite3_finalize(st);
    return ok;
}

int state_add_enrolment(issuer_state *s, const char *who, const char *profile, const char *device, long expires)
{
    return insert_enrolment(s, "INSERT", who, profile, device, expires);
}

int state_ensure_enrolment(issuer_state *s, const char *who, const char *profile, const char *device, long expires)
{
    return insert_enrolment(s, "INSERT OR IGNORE", who, profile, device, expires);
}

static void column_text(sqlite3_stmt *st, int i, char *out, size_t size)
{
    const unsigned char *t = sqlite3_column_text(st, i);

    snprintf(out, size, "%s", t ? (const char *)t : "");
}

int state_get(issuer_state *s, const char *who, enrolment *e)
{
    sqlite3_stmt *st = NULL;
    int rc;

    memset(e, 0, sizeof(*e));
    if (sqlite3_prepare_v2(s->db,
                           "SELECT profile, device, expires, factory, package, issued, confirmed FROM enrolments"
                           " WHERE who = ?", -1, &st, NULL) != SQLITE_OK
        || sqlite3_bind_text(st, 1, who, -1, SQLITE_STATIC) != SQLITE_OK) {
        sqlite3_finalize(st);
        return 0;
    }
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        int n = sqlite3_column_bytes(st, 4);
        e->found = 1;
        column_text(st, 0, e->profile, sizeof(e->profile));
        column_text(st, 1, e->device, sizeof(e->device));
        e->expires = (long)sqlite3_column_int64(st, 2);
        column_text(st, 3, e->factory, sizeof(e->factory));
        if (sqlite3_column_type(st, 4) == SQLITE_BLOB && n > 0 && (e->package = OPENSSL_malloc((size_t)n)) != NULL) {
            memcpy(e->package, sqlite3_column_blob(st, 4), (size_t)n);
            e->package_len = (size_t)n;
        }
        e->issued = (long)sqlite3_column_int64(st, 5);
        e->confirmed = (long)sqlite3_column_int64(st, 6);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE;
}

void enrolment_free(enrolment *e)
{
    OPENSSL_free(e->package);
    e->package = NULL;
}

int state_store_package(issuer_state *s, const char *who, const char *factory, const unsigned char *der, size_t len,
                        long now)
{
    sqlite3_stmt *st = NULL;
    int ok = sqlite3_prepare_v2(s->db, "UPDATE enrolments SET factory = ?, package = ?, issued = ? WHERE who = ?", -1,
                                &st, NULL) == SQLITE_OK
             && sqlite3_bind_text(st, 1, factory, -1, SQLITE_STATIC) == SQLITE_OK
             && sqlite3_bind_blob(st, 2, der, (int)len, SQLITE_STATIC) == SQLITE_OK
             && sqlite3_bind_int64(st, 3, now) == SQLITE_OK && sqlite3_bind_text(st, 4, who, -1, SQLITE_STATIC) == SQLITE_OK
             && sqlite3_step(st) == SQLITE_DONE && sqlite3_changes(s->db) == 1;

    sqlite3_finalize(st);
    return ok;
}

int state_confirm(issuer_state *s, const char *who, long now)
{
    sqlite3_stmt *st = NULL;
    int ok = sqlite3_prepare_v2(s->db, "UPDATE enrolments SET package = NULL, confirmed = ? WHERE who = ?", -1, &st,
                                NULL) == SQLITE_OK
             && sqlite3_bind_int64(st, 1, now) == SQLITE_OK && sqlite3_bind_text(st, 2, who, -1, SQLITE_STATIC) == SQLITE_OK
             && sqlite3_step(st) == SQLITE_DONE && sqlite3_changes(s->db) == 1;

    sqlite3_finalize(st);
    return ok;
}

int state_archive(issuer_state *s, const char *serial, const char *device, const char *profile,
                  const unsigned char *cert, size_t cert_len, const unsigned char *envelope, size_t env_len, long now)
{
    sqlite3_stmt *st = NULL;
    int ok = sqlite3_prepare_v2(s->db,
                                "INSERT INTO archive.archived_keys(serial, device, profile, certificate, envelope,"
                                " archived) VALUES(?, ?, ?, ?, ?, ?)", -1, &st, NULL) == SQLITE_OK
             && sqlite3_bind_text(st, 1, serial, -1, SQLITE_STATIC) == SQLITE_OK
             && sqlite3_bind_text(st, 2, device, -1, SQLITE_STATIC) == SQLITE_OK
             && sqlite3_bind_text(st, 3, profile, -1, SQLITE_STATIC) == SQLITE_OK
             && sqlite3_bind_blob(st, 4, cert, (int)cert_len, SQLITE_STATIC) == SQLITE_OK
             && sqlite3_bind_blob(st, 5, envelope, (int)env_len, SQLITE_STATIC) == SQLITE_OK
             && sqlite3_bind_int64(st, 6, now) == SQLITE_OK && sqlite3_step(st) == SQLITE_DONE;

    sqlite3_finalize(st);
    return ok;
}
