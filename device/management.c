/*
 * Queries and key management after provisioning (spec methods 1, 70-90): device info,
 * enumeration, attributes, protection info, extensions and properties, delete, export,
 * unlock, and PIN changes.
 */
#include "internal.h"

#include <string.h>

#include <openssl/crypto.h>

#define PROT_PIN_PROTECTED 0x01
#define PROT_PUK_PROTECTED 0x02
#define PROT_PIN_BLOCKED 0x04
#define PROT_PUK_BLOCKED 0x08

#define BACKUP_EXPORTED 0x02

SKS_HANDLER(h_get_device_info)
{
    size_t n, i;
    const sks_algorithm *algs = alg_table(&n);
    sks_status rc;

    (void)dev;
    sks_reader_expect_end(in);
    if ((rc = reader_status(call, "getDeviceInfo", in)) != SKS_OK)
        return rc;
    sks_buf_ushort(out, SKS_API_LEVEL);
    sks_buf_byte(out, 0x01); /* LOCATION_EMBEDDED | TYPE_SOFTWARE */
    sks_buf_string(out, "");
    sks_buf_string(out, "sks project");
    sks_buf_string(out, "Software Secure Key Store on SQLite, key material sealed with AES-256-GCM");
    sks_buf_ushort(out, 1);
    sks_buf_array(out, dev->device_cert, dev->device_cert_len);
    sks_buf_ushort(out, (uint16_t)n);
    for (i = 0; i < n; i++)
        sks_buf_string(out, algs[i].uri);
    sks_buf_uint(out, SKS_CRYPTO_DATA_SIZE);
    sks_buf_uint(out, SKS_EXTENSION_DATA_SIZE);
    sks_buf_bool(out, 0);
    sks_buf_bool(out, 0);
    return SKS_OK;
}

SKS_HANDLER(h_enumerate_keys)
{
    uint32_t after = sks_get_uint(in, "keyHandle");
    sqlite3_stmt *st;
    sks_status rc;
    int row;

    sks_reader_expect_end(in);
    if ((rc = reader_status(call, "enumerateKeys", in)) != SKS_OK)
        return rc;
    st = store_cached(dev, call,
                      "SELECT k.handle, k.session FROM keys k JOIN sessions s ON s.handle = k.session"
                      " WHERE k.handle > ? AND s.open = 0 ORDER BY k.handle");
    if (st == NULL)
        return SKS_ERROR_STORAGE;
    sqlite3_bind_int64(st, 1, after);
    /* The next key the caller may see (owner.c): others' keys are skipped. */
    while ((row = sqlite3_step(st) == SQLITE_ROW) && !owner_may_see(dev, (uint32_t)sqlite3_column_int64(st, 0)))
        ;
    if (row) {
        sks_buf_uint(out, (uint32_t)sqlite3_column_int64(st, 0));
        sks_buf_uint(out, (uint32_t)sqlite3_column_int64(st, 1));
    } else {
        sks_buf_uint(out, 0);
    }
    store_release(dev, st);
    return SKS_OK;
}

/*
 * findKeysByCertificate (project extension, docs/wire-format.md): the keys enumerateKeys would
 * list whose end-entity certificate has this SHA-256, in handle order. The store keeps that
 * hash beside every certificate path (keys.ee_sha256, written with it by setCertificatePath,
 * skipImport and postUpdateKey, and indexed), so this is one indexed query instead of a
 * getKeyAttributes per key. It only narrows the search: the provider reads each key it names
 * with getKeyAttributes (row MAC checked) and compares the hash of the certificate it gets.
 */
SKS_HANDLER(h_find_keys_by_certificate)
{
    sks_span hash = sks_get_array(in, "certificateSha256");
    sqlite3_stmt *st;
    sks_buf handles;
    uint16_t n = 0;
    int step;
    sks_status rc;

    sks_reader_expect_end(in);
    if ((rc = reader_status(call, "findKeysByCertificate", in)) != SKS_OK)
        return rc;
    if (hash.n != 32)
        return sks_fail(call, SKS_ERROR_OPTION, "findKeysByCertificate: \"certificateSha256\" must be 32 bytes, got %zu",
                        hash.n);
    st = store_cached(dev, call,
                      "SELECT k.handle FROM keys k JOIN sessions s ON s.handle = k.session"
                      " WHERE k.ee_sha256 = ? AND s.open = 0 ORDER BY k.handle");
    if (st == NULL)
        return SKS_ERROR_STORAGE;
    sks_buf_init(&handles);
    sqlite3_bind_blob(st, 1, hash.p, 32, SQLITE_STATIC);
    while ((step = sqlite3_step(st)) == SQLITE_ROW && n < 0xFFFF) {
        uint32_t h = (uint32_t)sqlite3_column_int64(st, 0);
        if (!owner_may_see(dev, h)) /* others' keys are not even named (owner.c) */
            continue;
        sks_buf_uint(&handles, h);
        n++;
    }
    if (step != SQLITE_ROW && step != SQLITE_DONE)
        rc = sks_fail(call, SKS_ERROR_STORAGE, "findKeysByCertificate: %s", sqlite3_errmsg(dev->db));
    store_release(dev, st);
    if (rc == SKS_OK) {
        sks_buf_ushort(out, n);
        sks_buf_put(out, handles.data, handles.len);
    }
    sks_buf_free(&handles);
    return rc;
}

SKS_HANDLER(h_get_key_attributes)
{
    uint32_t handle = sks_get_uint(in, "keyHandle");
    key_entry k;
    sqlite3_stmt *st;
    sks_buf types;
    uint16_t ntypes = 0;
    sks_status rc;

    sks_reader_expect_end(in);
    if ((rc = reader_status(call, "getKeyAttributes", in)) != SKS_OK)
        return rc;
    if ((rc = key_load(dev, call, handle, &k)) != SKS_OK) {
        key_free(&k);
        return rc;
    }
    sks_buf_init(&types);
    st = store_cached(dev, call, "SELECT type FROM extensions WHERE key = ? ORDER BY rowid");
    if (st == NULL) {
        rc = SKS_ERROR_STORAGE;
        goto done;
    }
    sqlite3_bind_int64(st, 1, handle);
    while (sqlite3_step(st) == SQLITE_ROW) {
        sks_buf_string(&types, (const char *)sqlite3_column_text(st, 0));
        ntypes++;
    }
    store_release(dev, st);
    sks_buf_ushort(out, (uint16_t)k.symmetric_length);
    if (k.has_certificates)
        sks_buf_put(out, k.certificates.data, k.certificates.len);
    else
        sks_buf_ushort(out, 0);
    sks_buf_byte(out, k.app_usage);
    sks_buf_string(out, k.friendly_name);
    sks_buf_put(out, k.endorsed.data, k.endorsed.len);
    sks_buf_ushort(out, ntypes);
    sks_buf_put(out, types.data, types.len);
done:
    sks_buf_free(&types);
    key_free(&k);
    return rc;
}

SKS_HANDLER(h_get_key_protection_info)
{
    uint32_t handle = sks_get_uint(in, "keyHandle");
    key_entry k;
    pin_policy p;
    puk_policy u;
    uint8_t status = 0;
    sks_status rc;

    memset(&p, 0, sizeof(p));
    memset(&u, 0, sizeof(u));
    sks_reader_expect_end(in);
    if ((rc = reader_status(call, "getKeyProtectionInfo", in)) != SKS_OK)
        return rc;
    if ((rc = key_load(dev, call, handle, &k)) != SKS_OK)
        goto done;
    if (k.pin_policy != 0) {
        if ((rc = pin_policy_load(dev, call, k.pin_policy, &p)) != SKS_OK)
            goto done;
        status |= PROT_PIN_PROTECTED;
        if (pin_blocked(dev, &k, &p))
            status |= PROT_PIN_BLOCKED;
        if (p.puk != 0) {
            if ((rc = puk_policy_load(dev, call, p.puk, &u)) != SKS_OK)
                goto done;
            status |= PROT_PUK_PROTECTED;
            if (u.retry_limit != 0 && u.error_count >= u.retry_limit)
                status |= PROT_PUK_BLOCKED;
        }
    }
    sks_buf_byte(out, status);
    sks_buf_byte(out, u.format);
    sks_buf_ushort(out, u.retry_limit);
    sks_buf_ushort(out, u.error_count);
    sks_buf_bool(out, p.user_defined);
    sks_buf_bool(out, p.user_modifiable);
    sks_buf_byte(out, p.format);
    sks_buf_ushort(out, p.retry_limit);
    sks_buf_byte(out, p.grouping);
    sks_buf_byte(out, p.patterns);
    sks_buf_ushort(out, p.min_length);
    sks_buf_ushort(out, p.max_length);
    sks_buf_byte(out, p.input_method);
    {
        int errors = 0;
        if (k.pin_policy != 0) {
            sqlite3_stmt *st = store_prepare(dev, call, "SELECT error_count FROM pins WHERE handle = ?");
            if (st == NULL) {
                rc = SKS_ERROR_STORAGE;
                goto done;
            }
            sqlite3_bind_int64(st, 1, k.pin);
            if (sqlite3_step(st) == SQLITE_ROW)
                errors = sqlite3_column_int(st, 0);
            sqlite3_finalize(st);
            if ((rc = row_verify(dev, call, "pins", k.pin)) != SKS_OK)
                goto done;
        }
        sks_buf_ushort(out, (uint16_t)errors);
    }
    sks_buf_bool(out, k.pin_caching);
    sks_buf_byte(out, k.biometric);
    sks_buf_byte(out, k.export_protection);
    sks_buf_byte(out, k.delete_protection);
    sks_buf_byte(out, k.key_backup);
done:
    key_free(&k);
    pin_policy_free(&p);
    puk_policy_free(&u);
    return rc;
}

SKS_HANDLER(h_get_extension)
{
    uint32_t handle = sks_get_uint(in, "keyHandle");
    sks_span type = sks_get_uri(in, "type");
    key_entry k;
    sqlite3_stmt *st;
    sks_status rc;

    sks_reader_expect_end(in);
    if ((rc = reader_status(call, "getExtension", in)) != SKS_OK)
        return rc;
    rc = key_load(dev, call, handle, &k);
    key_free(&k);
    if (rc != SKS_OK)
        return rc;
    st = store_prepare(dev, call, "SELECT sub_type, qualifier, data FROM extensions WHERE key = ? AND type = ?");
    if (st == NULL)
        return SKS_ERROR_STORAGE;
    sqlite3_bind_int64(st, 1, handle);
    sqlite3_bind_text(st, 2, (const char *)type.p, (int)type.n, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) {
        sks_buf_byte(out, (uint8_t)sqlite3_column_int(st, 0));
        sks_buf_string(out, (const char *)sqlite3_column_text(st, 1));
        sks_buf_blob(out, sqlite3_column_blob(st, 2), (size_t)sqlite3_column_bytes(st, 2));
    } else {
        rc = sks_fail(call, SKS_ERROR_OPTION, "key #%u has no extension of type \"%.*s\"", handle, (int)type.n, type.p);
    }
    sqlite3_finalize(st);
    return rc;
}

/* Rewrites a property bag with one property's value replaced. */
static sks_status replace_property(sks_call *call, const uint8_t *bag, size_t n, sks_span name, sks_span value,
                                   sks_buf *out)
{
    sks_reader r;
    int found = 0;

    sks_reader_init(&r, bag, n);
    while (sks_reader_ok(&r) && r.off < r.n) {
        sks_span pn = sks_get_array(&r, "name");
        int writable = sks_get_bool(&r, "writable");
        sks_span pv = sks_get_array(&r, "value");

        if (!sks_reader_ok(&r))
            break;
        sks_buf_array(out, pn.p, pn.n);
        sks_buf_bool(out, writable);
        if (sks_span_eq(pn, name)) {
            if (!writable)
                return sks_fail(call, SKS_ERROR_NOT_ALLOWED, "setProperty: property \"%.*s\" is not writable",
                                (int)name.n, name.p);
            found = 1;
            sks_buf_array(out, value.p, value.n);
        } else {
            sks_buf_array(out, pv.p, pv.n);
        }
    }
    if (!sks_reader_ok(&r))
        return sks_fail(call, SKS_ERROR_INTERNAL, "stored property bag is malformed");
    if (!found)
        return sks_fail(call, SKS_ERROR_OPTION, "setProperty: no property \"%.*s\"", (int)name.n, name.p);
    if (out->len > SKS_EXTENSION_DATA_SIZE || out->failed)
        return sks_fail(call, SKS_ERROR_OPTION, "setProperty: the property bag would exceed %d bytes",
                        SKS_EXTENSION_DATA_SIZE);
    return SKS_OK;
}

SKS_HANDLER(h_set_property)
{
    uint32_t handle = sks_get_uint(in, "keyHandle");
    sks_span type = sks_get_uri(in, "type");
    sks_span name = sks_get_string(in, "name");
    sks_span value = sks_get_string(in, "value");
    key_entry k;
    sqlite3_stmt *st;
    sks_buf bag;
    sks_status rc;

    (void)out;
    sks_reader_expect_end(in);
    if ((rc = reader_status(call, "setProperty", in)) != SKS_OK)
        return rc;
    if (name.n == 0 || name.n > 255)
        return sks_fail(call, SKS_ERROR_OPTION, "setProperty: \"name\" must be 1-255 bytes");
    rc = key_load_usable(dev, call, handle, &k);
    key_free(&k);
    if (rc != SKS_OK)
        return rc;
    sks_buf_init(&bag);
    st = store_prepare(dev, call, "SELECT sub_type, data FROM extensions WHERE key = ? AND type = ?");
    if (st == NULL)
        return SKS_ERROR_STORAGE;
    sqlite3_bind_int64(st, 1, handle);
    sqlite3_bind_text(st, 2, (const char *)type.p, (int)type.n, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_ROW)
        rc = sks_fail(call, SKS_ERROR_OPTION, "key #%u has no extension of type \"%.*s\"", handle, (int)type.n, type.p);
    else if (sqlite3_column_int(st, 0) != 2)
        rc = sks_fail(call, SKS_ERROR_OPTION, "setProperty: extension \"%.*s\" is not a property bag", (int)type.n,
                      type.p);
    else
        rc = replace_property(call, sqlite3_column_blob(st, 1), (size_t)sqlite3_column_bytes(st, 1), name, value, &bag);
    sqlite3_finalize(st);
    if (rc == SKS_OK) {
        st = store_prepare(dev, call, "UPDATE extensions SET data = ? WHERE key = ? AND type = ?");
        if (st == NULL) {
            sks_buf_free(&bag);
            return SKS_ERROR_STORAGE;
        }
        sqlite3_bind_blob(st, 1, bag.data, (int)bag.len, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, handle);
        sqlite3_bind_text(st, 3, (const char *)type.p, (int)type.n, SQLITE_STATIC);
        rc = store_step_done(dev, call, st) ? SKS_OK : SKS_ERROR_STORAGE;
    }
    sks_buf_free(&bag);
    return rc;
}

/* Export and delete protection (5.1, 5.2): none, pin, puk, or never. */
static sks_status check_protection(sks_device *dev, sks_call *call, const key_entry *k, uint8_t protection,
                                   sks_span authorization, const char *what)
{
    switch (protection) {
    case 0:
        return SKS_OK;
    case 1:
        return pin_verify(dev, call, k, 0, authorization);
    case 2:
        return puk_verify(dev, call, k, authorization);
    default:
        return sks_fail(call, SKS_ERROR_NOT_ALLOWED, "key #%u is %s", k->handle, what);
    }
}

SKS_HANDLER(h_delete_key)
{
    uint32_t handle = sks_get_uint(in, "keyHandle");
    sks_span auth = sks_get_array(in, "authorization");
    key_entry k;
    sks_status rc;

    (void)out;
    sks_reader_expect_end(in);
    if ((rc = reader_status(call, "deleteKey", in)) != SKS_OK)
        return rc;
    if ((rc = key_load_usable(dev, call, handle, &k)) == SKS_OK
        && (rc = check_protection(dev, call, &k, k.delete_protection, auth, "non-deletable")) == SKS_OK)
        rc = key_delete(dev, call, handle);
    key_free(&k);
    return rc;
}

SKS_HANDLER(h_export_key)
{
    uint32_t handle = sks_get_uint(in, "keyHandle");
    sks_span auth = sks_get_array(in, "authorization");
    key_entry k;
    sks_buf key;
    sks_status rc;

    sks_reader_expect_end(in);
    if ((rc = reader_status(call, "exportKey", in)) != SKS_OK)
        return rc;
    sks_buf_init(&key);
    if ((rc = key_load_usable(dev, call, handle, &k)) != SKS_OK
        || (rc = check_protection(dev, call, &k, k.export_protection, auth, "non-exportable")) != SKS_OK)
        goto done;
    if (k.symmetric_length > 0) {
        rc = key_symmetric(dev, call, &k, &key);
    } else {
        EVP_PKEY *pkey = key_private(dev, call, &k);
        rc = pkey != NULL && pkcs8_der(pkey, &key) ? SKS_OK : SKS_ERROR_INTERNAL;
        EVP_PKEY_free(pkey);
    }
    if (rc != SKS_OK)
        goto done;
    if (!store_run(dev, call, "UPDATE keys SET key_backup = key_backup | 2 WHERE handle = ?1", handle, 0)) {
        rc = SKS_ERROR_STORAGE;
        goto done;
    }
    sks_buf_array(out, key.data, key.len);
done:
    sks_buf_free(&key);
    key_free(&k);
    return rc;
}

SKS_HANDLER(h_unlock_key)
{
    uint32_t handle = sks_get_uint(in, "keyHandle");
    sks_span auth = sks_get_array(in, "authorization");
    key_entry k;
    sks_status rc;

    (void)out;
    sks_reader_expect_end(in);
    if ((rc = reader_status(call, "unlockKey", in)) != SKS_OK)
        return rc;
    if ((rc = key_load_usable(dev, call, handle, &k)) == SKS_OK && (rc = puk_verify(dev, call, &k, auth)) == SKS_OK
        && !store_run(dev, call, "UPDATE pins SET error_count = 0 WHERE handle = ?1", k.pin, 0))
        rc = SKS_ERROR_STORAGE;
    key_free(&k);
    return rc;
}

static sks_status store_new_pin(sks_device *dev, sks_call *call, const key_entry *k, sks_span pin)
{
    sks_buf sealed;
    sqlite3_stmt *st;
    sks_status rc = SKS_OK;

    sks_buf_init(&sealed);
    if (!seal_row(dev, "pins", "value", k->pin, pin.p, pin.n, &sealed))
        rc = sks_fail(call, SKS_ERROR_INTERNAL, "cannot seal the PIN");
    else if ((st = store_prepare(dev, call, "UPDATE pins SET value = ?, error_count = 0 WHERE handle = ?")) == NULL)
        rc = SKS_ERROR_STORAGE;
    else {
        sqlite3_bind_blob(st, 1, sealed.data, (int)sealed.len, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, k->pin);
        rc = store_step_done(dev, call, st) ? SKS_OK : SKS_ERROR_STORAGE;
    }
    sks_buf_free(&sealed);
    return rc;
}

/* changePin (old PIN) and setPin (PUK): both need a user-modifiable local PIN policy. */
static sks_status new_pin(sks_device *dev, sks_reader *in, sks_call *call, int by_puk)
{
    const char *method = by_puk ? "setPin" : "changePin";
    uint32_t handle = sks_get_uint(in, "keyHandle");
    sks_span auth = sks_get_array(in, "authorization");
    sks_span pin = sks_get_array(in, "newPin");
    key_entry k;
    pin_policy p;
    sks_status rc;

    memset(&p, 0, sizeof(p));
    sks_reader_expect_end(in);
    if ((rc = reader_status(call, method, in)) != SKS_OK)
        return rc;
    if ((rc = key_load_usable(dev, call, handle, &k)) != SKS_OK)
        goto done;
    if (k.pin_policy == 0) {
        rc = sks_fail(call, SKS_ERROR_NOT_ALLOWED, "%s: key #%u is not protected by a local PIN policy", method, handle);
        goto done;
    }
    if ((rc = pin_policy_load(dev, call, k.pin_policy, &p)) != SKS_OK)
        goto done;
    if (!p.user_modifiable) {
        rc = sks_fail(call, SKS_ERROR_NOT_ALLOWED, "%s: the PIN of key #%u is not user-modifiable", method, handle);
        goto done;
    }
    /* The old PIN (or the PUK) first, counted; then the policy; then the other groups' PINs,
     * each comparison counted on them (pin_check_other_groups). */
    rc = by_puk ? puk_verify(dev, call, &k, auth) : pin_verify(dev, call, &k, 0, auth);
    if (rc == SKS_OK && (rc = pin_check_policy(call, &p, pin.p, pin.n)) == SKS_OK
        && (rc = pin_check_other_groups(dev, call, &k, &p, pin)) == SKS_OK)
        rc = store_new_pin(dev, call, &k, pin);
done:
    pin_policy_free(&p);
    key_free(&k);
    return rc;
}

SKS_HANDLER(h_change_pin)
{
    (void)out;
    return new_pin(dev, in, call, 0);
}

SKS_HANDLER(h_set_pin)
{
    (void)out;
    return new_pin(dev, in, call, 1);
}

SKS_HANDLER(h_update_firmware)
{
    (void)dev;
    (void)in;
    (void)out;
    return sks_fail(call, SKS_ERROR_NOT_AVAILABLE, "updateFirmware is not available: this device has no updateUrl");
}
