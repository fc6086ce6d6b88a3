/*
 * PIN and PUK handling: formats (spec 5.6), pattern restrictions (5.5), and verification
 * with error counters that lock a PIN object at its retry limit. Counters change inside the
 * caller's write transaction, which the dispatcher commits even when the call answers
 * ERROR_AUTHORIZATION, so concurrent wrong guesses are counted exactly.
 */
#include "internal.h"

#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

#define PATTERN_TWO_IN_A_ROW 0x01
#define PATTERN_THREE_IN_A_ROW 0x02
#define PATTERN_SEQUENCE 0x04
#define PATTERN_REPEATED 0x08
#define PATTERN_MISSING_GROUP 0x10

#define FORMAT_NUMERIC 0
#define FORMAT_ALPHANUMERIC 1
#define FORMAT_STRING 2
#define FORMAT_BINARY 3

sks_status pin_check_format(sks_call *call, const char *what, uint8_t format, const uint8_t *v, size_t n)
{
    size_t i;

    if (n == 0 || n > SKS_MAX_PIN)
        return sks_fail(call, SKS_ERROR_OPTION, "%s must be 1-%d bytes, got %zu", what, SKS_MAX_PIN, n);
    switch (format) {
    case FORMAT_NUMERIC:
        for (i = 0; i < n; i++)
            if (v[i] < '0' || v[i] > '9')
                return sks_fail(call, SKS_ERROR_OPTION, "%s has format numeric but contains a non-digit", what);
        break;
    case FORMAT_ALPHANUMERIC:
        for (i = 0; i < n; i++)
            if (!((v[i] >= '0' && v[i] <= '9') || (v[i] >= 'A' && v[i] <= 'Z')))
                return sks_fail(call, SKS_ERROR_OPTION,
                                "%s has format alphanumeric but contains a character outside 0-9 A-Z", what);
        break;
    case FORMAT_STRING:
        if (!sks_utf8_valid(v, n))
            return sks_fail(call, SKS_ERROR_OPTION, "%s has format string but is not valid UTF-8", what);
        break;
    case FORMAT_BINARY:
        break;
    default:
        return sks_fail(call, SKS_ERROR_OPTION, "%s format %u is unknown (0-3)", what, format);
    }
    return SKS_OK;
}

static int is_sequence(const uint8_t *v, size_t n)
{
    int step;
    size_t i;

    if (n < 2)
        return 0;
    step = (int)v[1] - (int)v[0];
    if (step != 1 && step != -1)
        return 0;
    for (i = 1; i < n; i++)
        if ((int)v[i] - (int)v[i - 1] != step)
            return 0;
    return 1;
}

static int has_run(const uint8_t *v, size_t n, size_t run)
{
    size_t i, same = 1;

    for (i = 1; i < n; i++) {
        same = v[i] == v[i - 1] ? same + 1 : 1;
        if (same >= run)
            return 1;
    }
    return 0;
}

static int has_repeat(const uint8_t *v, size_t n)
{
    uint8_t seen[256] = { 0 };
    size_t i;

    for (i = 0; i < n; i++) {
        if (seen[v[i]])
            return 1;
        seen[v[i]] = 1;
    }
    return 0;
}

static int missing_group(uint8_t format, const uint8_t *v, size_t n)
{
    int upper = 0, lower = 0, digit = 0, other = 0;
    size_t i;

    for (i = 0; i < n; i++) {
        if (v[i] >= 'A' && v[i] <= 'Z')
            upper = 1;
        else if (v[i] >= 'a' && v[i] <= 'z')
            lower = 1;
        else if (v[i] >= '0' && v[i] <= '9')
            digit = 1;
        else
            other = 1;
    }
    /* Letters and digits; the string format also lowercase and non-alphanumerics. */
    return !upper || !digit || (format == FORMAT_STRING && (!lower || !other));
}

sks_status pin_check_policy(sks_call *call, const pin_policy *p, const uint8_t *v, size_t n)
{
    sks_status rc = pin_check_format(call, "PIN", p->format, v, n);

    if (rc != SKS_OK)
        return rc;
    if (n < p->min_length || n > p->max_length)
        return sks_fail(call, SKS_ERROR_OPTION, "PIN length %zu is outside the policy's %u-%u", n, p->min_length,
                        p->max_length);
    if ((p->patterns & PATTERN_TWO_IN_A_ROW) && has_run(v, n, 2))
        return sks_fail(call, SKS_ERROR_OPTION, "PIN violates pattern restriction two-in-a-row");
    if ((p->patterns & PATTERN_THREE_IN_A_ROW) && has_run(v, n, 3))
        return sks_fail(call, SKS_ERROR_OPTION, "PIN violates pattern restriction three-in-a-row");
    if ((p->patterns & PATTERN_SEQUENCE) && is_sequence(v, n))
        return sks_fail(call, SKS_ERROR_OPTION, "PIN violates pattern restriction sequence");
    if ((p->patterns & PATTERN_REPEATED) && has_repeat(v, n))
        return sks_fail(call, SKS_ERROR_OPTION, "PIN violates pattern restriction repeated (bytes must be unique)");
    if ((p->patterns & PATTERN_MISSING_GROUP) && missing_group(p->format, v, n))
        return sks_fail(call, SKS_ERROR_OPTION, "PIN violates pattern restriction missing-group");
    return SKS_OK;
}

/* Loads a PIN object's value and error count. */
static sks_status pin_object_load(sks_device *dev, sks_call *call, int64_t pin, sks_buf *value, int *errors)
{
    sqlite3_stmt *st = store_prepare(dev, call, "SELECT value, error_count FROM pins WHERE handle = ?");
    sks_status rc = SKS_OK;

    if (st == NULL)
        return SKS_ERROR_STORAGE;
    sqlite3_bind_int64(st, 1, pin);
    if (sqlite3_step(st) != SQLITE_ROW)
        rc = sks_fail(call, SKS_ERROR_INTERNAL, "PIN object #%lld is missing", (long long)pin);
    else {
        *errors = sqlite3_column_int(st, 1);
        if (value != NULL
            && !unseal(dev, "pin", sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0), value))
            rc = sks_fail(call, SKS_ERROR_INTERNAL, "PIN object #%lld cannot be unsealed", (long long)pin);
    }
    sqlite3_finalize(st);
    return rc;
}

static sks_status set_error_count(sks_device *dev, sks_call *call, const char *table, int64_t handle, int count)
{
    char sql[96];
    sqlite3_stmt *st;

    snprintf(sql, sizeof(sql), "UPDATE %s SET error_count = ? WHERE handle = ?", table);
    st = store_prepare(dev, call, sql);
    if (st == NULL)
        return SKS_ERROR_STORAGE;
    sqlite3_bind_int(st, 1, count);
    sqlite3_bind_int64(st, 2, handle);
    return store_step_done(dev, call, st) ? SKS_OK : SKS_ERROR_STORAGE;
}

static int values_equal(const sks_buf *stored, sks_span given)
{
    return stored->len == given.n && (given.n == 0 || CRYPTO_memcmp(stored->data, given.p, given.n) == 0);
}

int pin_blocked(sks_device *dev, const key_entry *k, const pin_policy *p)
{
    sks_call scratch = { .message = "" };
    int errors = 0;

    if (k->pin_policy == 0 || pin_object_load(dev, &scratch, k->pin, NULL, &errors) != SKS_OK)
        return 0;
    return errors >= p->retry_limit;
}

sks_status pin_verify(sks_device *dev, sks_call *call, const key_entry *k, int biometric_auth, sks_span authorization)
{
    pin_policy p;
    sks_buf value;
    int errors = 0;
    sks_status rc;

    if (biometric_auth)
        return sks_fail(call, SKS_ERROR_AUTHORIZATION, "key #%u has no biometric protection", k->handle);
    if (k->pin_policy == 0) {
        if (authorization.n != 0)
            return sks_fail(call, SKS_ERROR_AUTHORIZATION,
                            "key #%u is not PIN protected: authorization must be empty", k->handle);
        return SKS_OK;
    }
    rc = pin_policy_load(dev, call, k->pin_policy, &p);
    if (rc != SKS_OK)
        return rc;
    sks_buf_init(&value);
    rc = pin_object_load(dev, call, k->pin, &value, &errors);
    if (rc == SKS_OK && errors >= p.retry_limit)
        rc = sks_fail(call, SKS_ERROR_AUTHORIZATION, "key #%u is locked: PIN retry limit (%u) reached", k->handle,
                      p.retry_limit);
    else if (rc == SKS_OK && !values_equal(&value, authorization)) {
        rc = set_error_count(dev, call, "pins", k->pin, errors + 1);
        if (rc == SKS_OK)
            rc = sks_fail(call, SKS_ERROR_AUTHORIZATION, "\"authorization\" error for key #%u%s", k->handle,
                          errors + 1 >= p.retry_limit ? " (the key is now locked)" : "");
    } else if (rc == SKS_OK && errors != 0)
        rc = set_error_count(dev, call, "pins", k->pin, 0);
    sks_buf_free(&value);
    pin_policy_free(&p);
    return rc;
}

sks_status puk_verify(sks_device *dev, sks_call *call, const key_entry *k, sks_span authorization)
{
    pin_policy p;
    sqlite3_stmt *st = NULL;
    sks_buf value;
    int errors = 0, limit = 0;
    sks_status rc;

    if (k->pin_policy == 0)
        return sks_fail(call, SKS_ERROR_NOT_ALLOWED, "key #%u is not PIN protected, so it has no PUK", k->handle);
    rc = pin_policy_load(dev, call, k->pin_policy, &p);
    if (rc != SKS_OK)
        return rc;
    if (p.puk == 0) {
        pin_policy_free(&p);
        return sks_fail(call, SKS_ERROR_NOT_ALLOWED, "key #%u has no PUK", k->handle);
    }
    sks_buf_init(&value);
    st = store_prepare(dev, call, "SELECT value, error_count, retry_limit FROM puk_policies WHERE handle = ?");
    if (st == NULL) {
        rc = SKS_ERROR_STORAGE;
        goto done;
    }
    sqlite3_bind_int64(st, 1, p.puk);
    if (sqlite3_step(st) != SQLITE_ROW
        || !unseal(dev, "puk", sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0), &value)) {
        rc = sks_fail(call, SKS_ERROR_INTERNAL, "PUK policy #%u cannot be read", p.puk);
        goto done;
    }
    errors = sqlite3_column_int(st, 1);
    limit = sqlite3_column_int(st, 2);
    if (limit != 0 && errors >= limit) {
        rc = sks_fail(call, SKS_ERROR_AUTHORIZATION, "the PUK of key #%u is locked: retry limit (%d) reached",
                      k->handle, limit);
        goto done;
    }
    /* retryLimit 0: no lock-out, but a delay before acting thwarts exhaustive search. */
    if (limit == 0)
        sleep(1);
    if (!values_equal(&value, authorization)) {
        rc = set_error_count(dev, call, "puk_policies", p.puk, errors + 1);
        if (rc == SKS_OK)
            rc = sks_fail(call, SKS_ERROR_AUTHORIZATION, "PUK \"authorization\" error for key #%u", k->handle);
    } else if (errors != 0) {
        rc = set_error_count(dev, call, "puk_policies", p.puk, 0);
    }
done:
    sqlite3_finalize(st);
    sks_buf_free(&value);
    pin_policy_free(&p);
    return rc;
}
