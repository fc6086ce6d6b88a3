/*
 * PIN and PUK handling: formats (spec 5.6), pattern restrictions (5.5), and verification
 * with error counters that lock a PIN object at its retry limit.
 *
 * Every try is recorded before its outcome is used: under the write lock the count is read,
 * the value compared, and the new count (0 for the right value, count + 1 for a wrong one)
 * committed in a transaction of its own; only then is the outcome acted on, in a new write
 * transaction the dispatcher commits. A try whose record cannot be made durable (disk full,
 * I/O error) is answered ERROR_STORAGE whatever the value was, so a store that cannot count
 * cannot be searched; and concurrent tries are still counted exactly (one lock holder).
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
    else if ((rc = row_verify(dev, call, "pins", pin)) == SKS_OK) {
        *errors = sqlite3_column_int(st, 1);
        if (value != NULL
            && !unseal_row(dev, "pins", "value", pin, sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0),
                           value))
            rc = sks_fail(call, SKS_ERROR_STORAGE, "integrity error: PIN object #%lld cannot be unsealed for its row",
                          (long long)pin);
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

/* Commits the tries counted so far in the caller's transaction, then waits `delay` seconds
 * holding no lock, then opens the write transaction the call goes on in. */
static sks_status commit_tries(sks_device *dev, sks_call *call, unsigned delay)
{
    if (!store_commit(dev)) {
        sks_fail(call, SKS_ERROR_STORAGE, "cannot record the PIN/PUK try (%s): nothing was checked",
                 store_error(dev));
        store_rollback(dev);
        return SKS_ERROR_STORAGE;
    }
    if (delay > 0)
        sleep(delay);
    if (!store_begin(dev, 1))
        return sks_fail(call, SKS_ERROR_STORAGE, "%s", store_error(dev));
    return SKS_OK;
}

/* Records one try on a PIN object or PUK policy: its new error count, durably. The store's
 * try counter changes with every try, so the commit writes even when the error count stays
 * 0 (the right value again): a store that cannot write fails every try alike. */
static sks_status record_try(sks_device *dev, sks_call *call, const char *table, int64_t handle, int count,
                             unsigned delay)
{
    sks_call scratch = { .message = "" };

    if (set_error_count(dev, &scratch, table, handle, count) != SKS_OK
        || !store_exec(dev, &scratch, "INSERT INTO meta (name, value) VALUES ('tries', 1) ON CONFLICT (name)"
                                      " DO UPDATE SET value = value + 1")) {
        store_rollback(dev);
        return sks_fail(call, SKS_ERROR_STORAGE, "cannot record the PIN/PUK try (%s): nothing was checked",
                        scratch.message);
    }
    return commit_tries(dev, call, delay);
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
    else if (rc == SKS_OK) {
        int right = values_equal(&value, authorization);

        rc = record_try(dev, call, "pins", k->pin, right ? 0 : errors + 1, 0);
        if (rc == SKS_OK && !right)
            rc = sks_fail(call, SKS_ERROR_AUTHORIZATION, "\"authorization\" error for key #%u%s", k->handle,
                          errors + 1 >= p.retry_limit ? " (the key is now locked)" : "");
    }
    sks_buf_free(&value);
    pin_policy_free(&p);
    return rc;
}

sks_status puk_verify(sks_device *dev, sks_call *call, const key_entry *k, sks_span authorization)
{
    pin_policy p;
    sqlite3_stmt *st = NULL;
    sks_buf value;
    int errors = 0, limit = 0, right;
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
    if (sqlite3_step(st) != SQLITE_ROW) {
        rc = sks_fail(call, SKS_ERROR_INTERNAL, "PUK policy #%u cannot be read", p.puk);
        goto done;
    }
    if ((rc = row_verify(dev, call, "puk_policies", p.puk)) != SKS_OK)
        goto done;
    if (!unseal_row(dev, "puk_policies", "value", p.puk, sqlite3_column_blob(st, 0),
                    (size_t)sqlite3_column_bytes(st, 0), &value)) {
        rc = sks_fail(call, SKS_ERROR_STORAGE, "integrity error: the PUK of policy #%u cannot be unsealed for its row",
                      p.puk);
        goto done;
    }
    errors = sqlite3_column_int(st, 1);
    limit = sqlite3_column_int(st, 2);
    if (limit != 0 && errors >= limit) {
        rc = sks_fail(call, SKS_ERROR_AUTHORIZATION, "the PUK of key #%u is locked: retry limit (%d) reached",
                      k->handle, limit);
        goto done;
    }
    right = values_equal(&value, authorization);
    sqlite3_finalize(st);
    st = NULL;
    /* retryLimit 0: no lock-out, but a delay before acting thwarts exhaustive search. It is
     * spent after the try is recorded, holding no lock, so the store stays usable. */
    rc = record_try(dev, call, "puk_policies", p.puk, right ? 0 : errors + 1, limit == 0 ? 1 : 0);
    if (rc == SKS_OK && !right)
        rc = sks_fail(call, SKS_ERROR_AUTHORIZATION, "PUK \"authorization\" error for key #%u", k->handle);
done:
    sqlite3_finalize(st);
    sks_buf_free(&value);
    pin_policy_free(&p);
    return rc;
}

/* Is the PIN object of another group of this policy locked? Then nothing may be compared
 * with its PIN. */
static sks_status other_groups_locked(sks_device *dev, sks_call *call, const key_entry *k, const pin_policy *p)
{
    sqlite3_stmt *st = store_prepare(dev, call,
                                     "SELECT count(*) FROM pins WHERE policy = ? AND handle != ? AND error_count >= ?");
    int locked;

    if (st == NULL)
        return SKS_ERROR_STORAGE;
    sqlite3_bind_int64(st, 1, p->handle);
    sqlite3_bind_int64(st, 2, k->pin);
    sqlite3_bind_int(st, 3, p->retry_limit);
    locked = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : 1;
    sqlite3_finalize(st);
    if (locked)
        return sks_fail(call, SKS_ERROR_NOT_ALLOWED,
                        "the PIN of another group of PIN policy #%u is locked: unlock it before changing this PIN",
                        p->handle);
    return SKS_OK;
}

sks_status pin_check_other_groups(sks_device *dev, sks_call *call, const key_entry *k, const pin_policy *p,
                                  sks_span pin)
{
    sqlite3_stmt *st;
    sks_buf other;
    sks_status rc;
    int same = 0;

    if (p->grouping < 2)
        return SKS_OK;
    if ((rc = other_groups_locked(dev, call, k, p)) != SKS_OK)
        return rc;
    st = store_prepare(dev, call, "SELECT handle, value FROM pins WHERE policy = ? AND handle != ?");
    if (st == NULL)
        return SKS_ERROR_STORAGE;
    sqlite3_bind_int64(st, 1, p->handle);
    sqlite3_bind_int64(st, 2, k->pin);
    sks_buf_init(&other);
    while (rc == SKS_OK && sqlite3_step(st) == SQLITE_ROW) {
        int64_t h = sqlite3_column_int64(st, 0);

        sks_buf_reset(&other);
        if ((rc = row_verify(dev, call, "pins", h)) != SKS_OK)
            break;
        if (!unseal_row(dev, "pins", "value", h, sqlite3_column_blob(st, 1), (size_t)sqlite3_column_bytes(st, 1),
                        &other))
            rc = sks_fail(call, SKS_ERROR_STORAGE, "integrity error: PIN object #%lld cannot be unsealed for its row",
                          (long long)h);
        else
            same |= values_equal(&other, pin);
    }
    sqlite3_finalize(st);
    sks_buf_free(&other);
    /* Each comparison tells whether the new PIN is another group's PIN: a try on that PIN,
     * counted (durably, before the answer) whatever its outcome. */
    if (rc == SKS_OK && !store_run(dev, call, "UPDATE pins SET error_count = error_count + 1 WHERE policy = ?1"
                                   " AND handle != ?2", p->handle, k->pin))
        rc = SKS_ERROR_STORAGE;
    if (rc == SKS_OK)
        rc = commit_tries(dev, call, 0);
    if (rc == SKS_OK && same)
        rc = sks_fail(call, SKS_ERROR_OPTION, "the new PIN must differ from the PINs of the policy's other groups");
    return rc;
}
