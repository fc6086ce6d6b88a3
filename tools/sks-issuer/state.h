/*
 * sks-issuer's state in SQLite (docs/skip-issuer.md): enrolments (one per token or client
 * certificate: its profile, device name, the factory key it was bound to and the package
 * kept until the device confirms), the rate-limit counters, and the key archive, attached
 * to the same connection so that archiving and releasing a package commit together.
 */
#ifndef SKS_ISSUER_STATE_H
#define SKS_ISSUER_STATE_H

#include <stddef.h>

#include <sqlite3.h>

#include "config.h"

typedef struct {
    sqlite3 *db;
} issuer_state;

typedef struct {
    int found;
    char profile[64];
    char device[256];
    long expires;
    char factory[33];        /* "" until a request bound it */
    unsigned char *package;  /* NULL unless issued and not yet confirmed (OPENSSL_free) */
    size_t package_len;
    long issued, confirmed;  /* 0: not yet */
} enrolment;

int state_open(issuer_state *s, const issuer_config *c, char *err, size_t errlen);
void state_close(issuer_state *s);

int state_begin(issuer_state *s);
int state_commit(issuer_state *s);
void state_rollback(issuer_state *s);

/* Counts a request by `who` now; 0 if more than `limit` requests came in the last minute. */
int state_rate_ok(issuer_state *s, const char *who, unsigned limit, long now);

int state_add_enrolment(issuer_state *s, const char *who, const char *profile, const char *device, long expires);
/* The enrolment for a client certificate is made on its first request. */
int state_ensure_enrolment(issuer_state *s, const char *who, const char *profile, const char *device, long expires);
int state_get(issuer_state *s, const char *who, enrolment *e);
void enrolment_free(enrolment *e);
int state_store_package(issuer_state *s, const char *who, const char *factory, const unsigned char *der, size_t len,
                        long now);
int state_confirm(issuer_state *s, const char *who, long now);
int state_archive(issuer_state *s, const char *serial, const char *device, const char *profile,
                  const unsigned char *cert, size_t cert_len, const unsigned char *envelope, size_t env_len, long now);

#endif
