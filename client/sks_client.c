/*
 * The typed SKS client: one function per method of docs/wire-format.md. Every function has
 * the same shape: call_begin() writes the method id, the arguments are appended, call_run()
 * makes the transport call and consumes the status (copying the device's message on
 * failure), the outputs are read, and call_end() checks that the reply was consumed exactly
 * and wipes both buffers.
 */
#include "sks_client.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>

/* ------------------------------------------------------------------ errors */

static void set_error(sks_client_error *err, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void set_error(sks_client_error *err, int status, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL)
        return;
    err->status = status;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
}

const char *sks_client_status_name(int status)
{
    static const char *const NAMES[] = {
        "OK", "ERROR_AUTHORIZATION", "ERROR_NOT_ALLOWED", "ERROR_STORAGE", "ERROR_MAC", "ERROR_CRYPTO",
        "ERROR_NO_SESSION", "ERROR_NO_KEY", "ERROR_ALGORITHM", "ERROR_OPTION", "ERROR_INTERNAL",
        "ERROR_EXTERNAL", "ERROR_USER_ABORT", "ERROR_NOT_AVAILABLE",
    };

    switch (status) {
    case SKS_CLIENT_ERROR_TRANSPORT:
        return "transport error";
    case SKS_CLIENT_ERROR_REPLY:
        return "malformed reply";
    case SKS_CLIENT_ERROR_ARGUMENT:
        return "invalid argument";
    case SKS_CLIENT_ERROR_SPACE:
        return "output buffer too small";
    default:
        break;
    }
    if (status >= 0 && (size_t)status < sizeof(NAMES) / sizeof(NAMES[0]))
        return NAMES[status];
    return "unknown status";
}

/* ------------------------------------------------------------------ owned outputs */

static void bytes_free(sks_bytes *b)
{
    OPENSSL_clear_free(b->data, b->len);
    b->data = NULL;
    b->len = 0;
}

void sks_bytes_list_free(sks_bytes_list *l)
{
    size_t i;

    if (l == NULL)
        return;
    for (i = 0; i < l->count && l->items != NULL; i++)
        bytes_free(&l->items[i]);
    OPENSSL_free(l->items);
    l->items = NULL;
    l->count = 0;
}

void sks_string_list_free(sks_string_list *l)
{
    size_t i;

    if (l == NULL)
        return;
    for (i = 0; i < l->count && l->items != NULL; i++)
        OPENSSL_free(l->items[i]);
    OPENSSL_free(l->items);
    l->items = NULL;
    l->count = 0;
}

/* Marks a reader failed; decoders then read zeros and call_end() reports the field. */
static void reader_fail(sks_reader *r, const char *error, const char *field)
{
    if (r->error == NULL) {
        r->error = error;
        r->field = field;
    }
}

/* Copies a span into owned bytes (a zero-length span gives data = NULL). */
static void take_bytes(sks_reader *r, sks_span s, sks_bytes *out, const char *field)
{
    out->data = NULL;
    out->len = 0;
    if (!sks_reader_ok(r) || s.n == 0)
        return;
    out->data = OPENSSL_memdup(s.p, s.n);
    if (out->data == NULL)
        reader_fail(r, "out of memory", field);
    else
        out->len = s.n;
}

/* Copies a span into a NUL-terminated string; never returns NULL unless the reader failed. */
static char *take_string(sks_reader *r, sks_span s, const char *field)
{
    char *str;

    if (!sks_reader_ok(r))
        return NULL;
    str = sks_span_strdup(s);
    if (str == NULL)
        reader_fail(r, "out of memory", field);
    return str;
}

static void read_bytes_list(sks_reader *r, sks_bytes_list *l, const char *field)
{
    uint16_t n = sks_get_ushort(r, field);
    size_t i;

    l->count = 0;
    l->items = NULL;
    if (!sks_reader_ok(r) || n == 0)
        return;
    l->items = OPENSSL_zalloc(n * sizeof(*l->items));
    if (l->items == NULL) {
        reader_fail(r, "out of memory", field);
        return;
    }
    l->count = n;
    for (i = 0; i < n && sks_reader_ok(r); i++)
        take_bytes(r, sks_get_array(r, field), &l->items[i], field);
}

/* A list of uri (validated as such by the reader). */
static void read_uri_list(sks_reader *r, sks_string_list *l, const char *field)
{
    uint16_t n = sks_get_ushort(r, field);
    size_t i;

    l->count = 0;
    l->items = NULL;
    if (!sks_reader_ok(r) || n == 0)
        return;
    l->items = OPENSSL_zalloc(n * sizeof(*l->items));
    if (l->items == NULL) {
        reader_fail(r, "out of memory", field);
        return;
    }
    l->count = n;
    for (i = 0; i < n && sks_reader_ok(r); i++)
        l->items[i] = take_string(r, sks_get_uri(r, field), field);
}

/* Reads a byte[] that must be exactly `n` bytes into a fixed array. */
static void read_fixed(sks_reader *r, uint8_t *out, size_t n, const char *field)
{
    sks_span s = sks_get_array(r, field);

    if (sks_reader_ok(r) && s.n != n)
        reader_fail(r, "has the wrong length", field);
    if (sks_reader_ok(r))
        memcpy(out, s.p, n);
}

/* Appends a byte[] output to a caller's buffer. */
static void read_into_buf(sks_reader *r, sks_span s, sks_buf *out, const char *field)
{
    if (!sks_reader_ok(r))
        return;
    sks_buf_put(out, s.p, s.n);
    if (out->failed)
        reader_fail(r, "out of memory", field);
}

/* ------------------------------------------------------------------ one call */

typedef struct {
    const char *method;
    sks_buf req;
    sks_buf reply;
    sks_reader r; /* over the reply, after the status byte */
    sks_client_error *err;
    sks_client_buffers *borrowed; /* req and reply are on loan from it (NULL: our own) */
} call_ctx;

static void call_begin(call_ctx *c, uint8_t id, const char *method, sks_client_error *err)
{
    c->method = method;
    c->err = err;
    c->borrowed = NULL;
    sks_buf_init(&c->req);
    sks_buf_init(&c->reply);
    sks_reader_init(&c->r, NULL, 0);
    sks_buf_byte(&c->req, id);
    if (err != NULL) {
        err->status = SKS_OK;
        err->message[0] = '\0';
    }
}

/* call_begin over a connection's reusable buffers: their storage is taken for this call
 * and handed back, wiped, by call_end. */
static void call_begin_reusing(call_ctx *c, sks_client_buffers *b, uint8_t id, const char *method,
                               sks_client_error *err)
{
    c->method = method;
    c->err = err;
    c->borrowed = b;
    c->req = b->req;
    c->reply = b->reply;
    sks_buf_reset(&c->req);
    sks_buf_reset(&c->reply);
    sks_reader_init(&c->r, NULL, 0);
    sks_buf_byte(&c->req, id);
    if (err != NULL) {
        err->status = SKS_OK;
        err->message[0] = '\0';
    }
}

/* Copies the device's error string (status already read) into err. */
static void take_device_error(call_ctx *c, uint8_t status)
{
    sks_span m = sks_get_string(&c->r, "message");

    if (sks_reader_ok(&c->r) && m.n > 0)
        set_error(c->err, status, "%.*s", (int)m.n, (const char *)m.p);
    else
        set_error(c->err, status, "%s failed with %s (the device gave no message)", c->method,
                  sks_client_status_name(status));
}

/* Sends the request; 1 if the device answered OK (the reader then points at the outputs). */
static int call_run(call_ctx *c, sks_transport *t)
{
    char terr[512] = "";
    uint8_t status;

    if (c->req.failed) {
        set_error(c->err, SKS_CLIENT_ERROR_ARGUMENT,
                  "%s: an argument does not fit the wire format (byte[] longer than 65535 bytes, or out of memory)",
                  c->method);
        return 0;
    }
    if (t == NULL || !t->call(t, c->req.data, c->req.len, &c->reply, terr, sizeof(terr))) {
        set_error(c->err, SKS_CLIENT_ERROR_TRANSPORT, "%s: cannot reach the device: %s", c->method,
                  terr[0] ? terr : "no transport");
        return 0;
    }
    sks_reader_init(&c->r, c->reply.data, c->reply.len);
    status = sks_get_byte(&c->r, "status");
    if (!sks_reader_ok(&c->r)) {
        set_error(c->err, SKS_CLIENT_ERROR_REPLY, "%s: empty reply", c->method);
        return 0;
    }
    if (status != SKS_OK) {
        take_device_error(c, status);
        return 0;
    }
    return 1;
}

/* Finishes a call: on success the reply must have been consumed exactly. Wipes both
 * buffers (they may hold secrets) and returns the final result. */
static int call_end(call_ctx *c, int ok)
{
    if (ok) {
        sks_reader_expect_end(&c->r);
        if (!sks_reader_ok(&c->r)) {
            set_error(c->err, SKS_CLIENT_ERROR_REPLY, "%s: malformed reply: %s %s", c->method,
                      c->r.field ? c->r.field : "reply", c->r.error ? c->r.error : "is invalid");
            ok = 0;
        }
    }
    if (c->borrowed != NULL) {
        /* wiped, storage kept for the next call */
        sks_buf_reset(&c->req);
        sks_buf_reset(&c->reply);
        c->borrowed->req = c->req;
        c->borrowed->reply = c->reply;
    } else {
        sks_buf_free(&c->req);
        sks_buf_free(&c->reply);
    }
    return ok;
}

/* A call without outputs. */
static int call_simple(call_ctx *c, sks_transport *t)
{
    return call_end(c, call_run(c, t));
}

static void put_span(sks_buf *b, sks_span s)
{
    sks_buf_array(b, s.p, s.n);
}

static void put_str(sks_buf *b, const char *s)
{
    sks_buf_string(b, s ? s : "");
}

/* ------------------------------------------------------------------ device */

int sks_client_get_device_info(sks_transport *t, sks_device_info *out, sks_client_error *err)
{
    call_ctx c;
    int ok;

    memset(out, 0, sizeof(*out));
    call_begin(&c, SKS_METHOD_GET_DEVICE_INFO, "getDeviceInfo", err);
    ok = call_run(&c, t);
    if (ok) {
        sks_reader *r = &c.r;
        out->api_level = sks_get_ushort(r, "apiLevel");
        out->device_type = sks_get_byte(r, "deviceType");
        out->update_url = take_string(r, sks_get_uri(r, "updateUrl"), "updateUrl");
        out->vendor_name = take_string(r, sks_get_string(r, "vendorName"), "vendorName");
        out->vendor_description = take_string(r, sks_get_string(r, "vendorDescription"), "vendorDescription");
        read_bytes_list(r, &out->certificates, "certificate");
        read_uri_list(r, &out->algorithms, "supportedAlgorithm");
        out->crypto_data_size = sks_get_uint(r, "cryptoDataSize");
        out->extension_data_size = sks_get_uint(r, "extensionDataSize");
        out->device_pin_support = sks_get_bool(r, "devicePinSupport");
        out->biometric_support = sks_get_bool(r, "biometricSupport");
    }
    ok = call_end(&c, ok);
    if (!ok)
        sks_device_info_free(out);
    return ok;
}

void sks_device_info_free(sks_device_info *d)
{
    if (d == NULL)
        return;
    OPENSSL_free(d->update_url);
    OPENSSL_free(d->vendor_name);
    OPENSSL_free(d->vendor_description);
    sks_bytes_list_free(&d->certificates);
    sks_string_list_free(&d->algorithms);
    memset(d, 0, sizeof(*d));
}

int sks_client_update_firmware(sks_transport *t, sks_span chunk, char **next_url, sks_client_error *err)
{
    call_ctx c;
    int ok;

    *next_url = NULL;
    call_begin(&c, SKS_METHOD_UPDATE_FIRMWARE, "updateFirmware", err);
    sks_buf_blob(&c.req, chunk.p, chunk.n);
    ok = call_run(&c, t);
    if (ok)
        *next_url = take_string(&c.r, sks_get_uri(&c.r, "nextURL"), "nextURL");
    ok = call_end(&c, ok);
    if (!ok) {
        OPENSSL_free(*next_url);
        *next_url = NULL;
    }
    return ok;
}

/* ------------------------------------------------------------------ provisioning sessions */

int sks_client_create_provisioning_session(sks_transport *t, const sks_session_request *in, sks_session_reply *out,
                                           sks_client_error *err)
{
    call_ctx c;
    int ok;

    memset(out, 0, sizeof(*out));
    call_begin(&c, SKS_METHOD_CREATE_PROVISIONING_SESSION, "createProvisioningSession", err);
    put_str(&c.req, in->session_key_algorithm);
    sks_buf_bool(&c.req, in->privacy_enabled);
    put_str(&c.req, in->server_session_id);
    put_span(&c.req, in->server_ephemeral_key);
    put_str(&c.req, in->issuer_uri);
    put_span(&c.req, in->key_management_key);
    sks_buf_uint(&c.req, in->client_time);
    sks_buf_ushort(&c.req, in->session_life_time);
    sks_buf_ushort(&c.req, in->session_key_limit);
    put_span(&c.req, in->server_certificate);
    ok = call_run(&c, t);
    if (ok) {
        sks_reader *r = &c.r;
        sks_span id = sks_get_id(r, "clientSessionId");
        if (sks_reader_ok(r)) {
            memcpy(out->client_session_id, id.p, id.n); /* an id is at most 32 characters */
            out->client_session_id[id.n] = '\0';
        }
        take_bytes(r, sks_get_array(r, "clientEphemeralKey"), &out->client_ephemeral_key, "clientEphemeralKey");
        take_bytes(r, sks_get_array(r, "attestation"), &out->attestation, "attestation");
        out->provisioning_handle = sks_get_uint(r, "provisioningHandle");
    }
    ok = call_end(&c, ok);
    if (!ok)
        sks_session_reply_free(out);
    return ok;
}

void sks_session_reply_free(sks_session_reply *r)
{
    if (r == NULL)
        return;
    bytes_free(&r->client_ephemeral_key);
    bytes_free(&r->attestation);
    memset(r, 0, sizeof(*r));
}

int sks_client_close_provisioning_session(sks_transport *t, uint32_t provisioning_handle, sks_span nonce, sks_span mac,
                                          uint8_t attestation[32], sks_client_error *err)
{
    call_ctx c;
    int ok;

    call_begin(&c, SKS_METHOD_CLOSE_PROVISIONING_SESSION, "closeProvisioningSession", err);
    sks_buf_uint(&c.req, provisioning_handle);
    put_span(&c.req, nonce);
    put_span(&c.req, mac);
    ok = call_run(&c, t);
    if (ok)
        read_fixed(&c.r, attestation, 32, "attestation");
    return call_end(&c, ok);
}

int sks_client_enumerate_provisioning_sessions(sks_transport *t, uint32_t after, int open_state,
                                               sks_session_info *out, sks_client_error *err)
{
    call_ctx c;
    int ok;

    memset(out, 0, sizeof(*out));
    call_begin(&c, SKS_METHOD_ENUMERATE_PROVISIONING_SESSIONS, "enumerateProvisioningSessions", err);
    sks_buf_uint(&c.req, after);
    sks_buf_bool(&c.req, open_state);
    ok = call_run(&c, t);
    if (ok) {
        sks_reader *r = &c.r;
        out->provisioning_handle = sks_get_uint(r, "provisioningHandle");
        if (sks_reader_ok(r) && out->provisioning_handle != 0) {
            out->session_key_algorithm = take_string(r, sks_get_uri(r, "sessionKeyAlgorithm"), "sessionKeyAlgorithm");
            out->privacy_enabled = sks_get_bool(r, "privacyEnabled");
            take_bytes(r, sks_get_array(r, "keyManagementKey"), &out->key_management_key, "keyManagementKey");
            out->client_time = sks_get_uint(r, "clientTime");
            out->session_life_time = sks_get_uint(r, "sessionLifeTime");
            out->server_session_id = take_string(r, sks_get_id(r, "serverSessionId"), "serverSessionId");
            out->client_session_id = take_string(r, sks_get_id(r, "clientSessionId"), "clientSessionId");
            out->issuer_uri = take_string(r, sks_get_uri(r, "issuerUri"), "issuerUri");
        }
    }
    ok = call_end(&c, ok);
    if (!ok)
        sks_session_info_free(out);
    return ok;
}

void sks_session_info_free(sks_session_info *s)
{
    if (s == NULL)
        return;
    OPENSSL_free(s->session_key_algorithm);
    bytes_free(&s->key_management_key);
    OPENSSL_free(s->server_session_id);
    OPENSSL_free(s->client_session_id);
    OPENSSL_free(s->issuer_uri);
    memset(s, 0, sizeof(*s));
}

int sks_client_abort_provisioning_session(sks_transport *t, uint32_t provisioning_handle, sks_client_error *err)
{
    call_ctx c;

    call_begin(&c, SKS_METHOD_ABORT_PROVISIONING_SESSION, "abortProvisioningSession", err);
    sks_buf_uint(&c.req, provisioning_handle);
    return call_simple(&c, t);
}

int sks_client_update_key_management_key(sks_transport *t, uint32_t provisioning_handle, sks_span key_management_key,
                                         sks_span authorization, sks_client_error *err)
{
    call_ctx c;

    call_begin(&c, SKS_METHOD_UPDATE_KEY_MANAGEMENT_KEY, "updateKeyManagementKey", err);
    sks_buf_uint(&c.req, provisioning_handle);
    put_span(&c.req, key_management_key);
    put_span(&c.req, authorization);
    return call_simple(&c, t);
}

/* ------------------------------------------------------------------ policies and keys */

/* A call whose only output is one uint handle. */
static int call_handle_out(call_ctx *c, sks_transport *t, uint32_t *handle, const char *field)
{
    int ok = call_run(c, t);

    *handle = 0;
    if (ok)
        *handle = sks_get_uint(&c->r, field);
    ok = call_end(c, ok);
    if (!ok)
        *handle = 0;
    return ok;
}

int sks_client_create_puk_policy(sks_transport *t, const sks_puk_policy_args *a, uint32_t *puk_policy_handle,
                                 sks_client_error *err)
{
    call_ctx c;

    call_begin(&c, SKS_METHOD_CREATE_PUK_POLICY, "createPukPolicy", err);
    sks_buf_uint(&c.req, a->provisioning_handle);
    put_str(&c.req, a->id);
    put_span(&c.req, a->encrypted_puk);
    sks_buf_byte(&c.req, a->format);
    sks_buf_ushort(&c.req, a->retry_limit);
    put_span(&c.req, a->mac);
    return call_handle_out(&c, t, puk_policy_handle, "pukPolicyHandle");
}

int sks_client_create_pin_policy(sks_transport *t, const sks_pin_policy_args *a, uint32_t *pin_policy_handle,
                                 sks_client_error *err)
{
    call_ctx c;

    call_begin(&c, SKS_METHOD_CREATE_PIN_POLICY, "createPinPolicy", err);
    sks_buf_uint(&c.req, a->provisioning_handle);
    put_str(&c.req, a->id);
    sks_buf_uint(&c.req, a->puk_policy_handle);
    sks_buf_bool(&c.req, a->user_defined);
    sks_buf_bool(&c.req, a->user_modifiable);
    sks_buf_byte(&c.req, a->format);
    sks_buf_ushort(&c.req, a->retry_limit);
    sks_buf_byte(&c.req, a->grouping);
    sks_buf_byte(&c.req, a->pattern_restrictions);
    sks_buf_ushort(&c.req, a->min_length);
    sks_buf_ushort(&c.req, a->max_length);
    sks_buf_byte(&c.req, a->input_method);
    put_span(&c.req, a->mac);
    return call_handle_out(&c, t, pin_policy_handle, "pinPolicyHandle");
}

static void put_key_entry_args(sks_buf *b, const sks_key_entry_args *a)
{
    size_t i;

    sks_buf_uint(b, a->provisioning_handle);
    put_str(b, a->id);
    put_str(b, a->key_entry_algorithm);
    put_span(b, a->server_seed);
    sks_buf_bool(b, a->device_pin_protection);
    sks_buf_uint(b, a->pin_policy_handle);
    put_span(b, a->pin_value);
    sks_buf_bool(b, a->enable_pin_caching);
    sks_buf_byte(b, a->biometric_protection);
    sks_buf_byte(b, a->export_protection);
    sks_buf_byte(b, a->delete_protection);
    sks_buf_byte(b, a->app_usage);
    put_str(b, a->friendly_name);
    put_str(b, a->key_algorithm);
    put_span(b, a->key_parameters);
    if (a->endorsed_count > 0xFFFF)
        b->failed = 1;
    sks_buf_ushort(b, (uint16_t)a->endorsed_count);
    for (i = 0; i < a->endorsed_count; i++)
        put_str(b, a->endorsed_algorithms[i]);
    put_span(b, a->mac);
}

int sks_client_create_key_entry(sks_transport *t, const sks_key_entry_args *a, sks_key_entry_reply *out,
                                sks_client_error *err)
{
    call_ctx c;
    int ok;

    memset(out, 0, sizeof(*out));
    call_begin(&c, SKS_METHOD_CREATE_KEY_ENTRY, "createKeyEntry", err);
    put_key_entry_args(&c.req, a);
    ok = call_run(&c, t);
    if (ok) {
        out->key_handle = sks_get_uint(&c.r, "keyHandle");
        take_bytes(&c.r, sks_get_array(&c.r, "publicKey"), &out->public_key, "publicKey");
        read_fixed(&c.r, out->attestation, 32, "attestation");
    }
    ok = call_end(&c, ok);
    if (!ok)
        sks_key_entry_reply_free(out);
    return ok;
}

void sks_key_entry_reply_free(sks_key_entry_reply *r)
{
    if (r == NULL)
        return;
    bytes_free(&r->public_key);
    memset(r, 0, sizeof(*r));
}

int sks_client_get_key_handle(sks_transport *t, uint32_t provisioning_handle, const char *id, uint32_t *key_handle,
                              sks_client_error *err)
{
    call_ctx c;

    call_begin(&c, SKS_METHOD_GET_KEY_HANDLE, "getKeyHandle", err);
    sks_buf_uint(&c.req, provisioning_handle);
    put_str(&c.req, id);
    return call_handle_out(&c, t, key_handle, "keyHandle");
}

int sks_client_set_certificate_path(sks_transport *t, uint32_t key_handle, const sks_span *certificates, size_t count,
                                    sks_span mac, sks_client_error *err)
{
    call_ctx c;
    size_t i;

    call_begin(&c, SKS_METHOD_SET_CERTIFICATE_PATH, "setCertificatePath", err);
    sks_buf_uint(&c.req, key_handle);
    if (count > 0xFFFF)
        c.req.failed = 1;
    sks_buf_ushort(&c.req, (uint16_t)count);
    for (i = 0; i < count; i++)
        put_span(&c.req, certificates[i]);
    put_span(&c.req, mac);
    return call_simple(&c, t);
}

/* importSymmetricKey and importPrivateKey: (keyHandle, encryptedKey, mac). */
static int import_key(sks_transport *t, uint8_t id, const char *method, uint32_t key_handle, sks_span encrypted_key,
                      sks_span mac, sks_client_error *err)
{
    call_ctx c;

    call_begin(&c, id, method, err);
    sks_buf_uint(&c.req, key_handle);
    put_span(&c.req, encrypted_key);
    put_span(&c.req, mac);
    return call_simple(&c, t);
}

int sks_client_import_symmetric_key(sks_transport *t, uint32_t key_handle, sks_span encrypted_key, sks_span mac,
                                    sks_client_error *err)
{
    return import_key(t, SKS_METHOD_IMPORT_SYMMETRIC_KEY, "importSymmetricKey", key_handle, encrypted_key, mac, err);
}

int sks_client_import_private_key(sks_transport *t, uint32_t key_handle, sks_span encrypted_key, sks_span mac,
                                  sks_client_error *err)
{
    return import_key(t, SKS_METHOD_IMPORT_PRIVATE_KEY, "importPrivateKey", key_handle, encrypted_key, mac, err);
}

int sks_client_add_extension(sks_transport *t, uint32_t key_handle, const char *type, uint8_t sub_type,
                             const char *qualifier, sks_span extension_data, sks_span mac, sks_client_error *err)
{
    call_ctx c;

    call_begin(&c, SKS_METHOD_ADD_EXTENSION, "addExtension", err);
    sks_buf_uint(&c.req, key_handle);
    put_str(&c.req, type);
    sks_buf_byte(&c.req, sub_type);
    put_str(&c.req, qualifier);
    sks_buf_blob(&c.req, extension_data.p, extension_data.n);
    put_span(&c.req, mac);
    return call_simple(&c, t);
}

/* ------------------------------------------------------------------ post-provisioning */

/* All four post operations take (uint, uint, byte[] authorization, byte[] mac). */
static int post_op(sks_transport *t, uint8_t id, const char *method, uint32_t first, uint32_t target,
                   sks_span authorization, sks_span mac, sks_client_error *err)
{
    call_ctx c;

    call_begin(&c, id, method, err);
    sks_buf_uint(&c.req, first);
    sks_buf_uint(&c.req, target);
    put_span(&c.req, authorization);
    put_span(&c.req, mac);
    return call_simple(&c, t);
}

int sks_client_post_delete_key(sks_transport *t, uint32_t provisioning_handle, uint32_t target_key_handle,
                               sks_span authorization, sks_span mac, sks_client_error *err)
{
    return post_op(t, SKS_METHOD_POST_DELETE_KEY, "postDeleteKey", provisioning_handle, target_key_handle,
                   authorization, mac, err);
}

int sks_client_post_unlock_key(sks_transport *t, uint32_t provisioning_handle, uint32_t target_key_handle,
                               sks_span authorization, sks_span mac, sks_client_error *err)
{
    return post_op(t, SKS_METHOD_POST_UNLOCK_KEY, "postUnlockKey", provisioning_handle, target_key_handle,
                   authorization, mac, err);
}

int sks_client_post_update_key(sks_transport *t, uint32_t key_handle, uint32_t target_key_handle,
                               sks_span authorization, sks_span mac, sks_client_error *err)
{
    return post_op(t, SKS_METHOD_POST_UPDATE_KEY, "postUpdateKey", key_handle, target_key_handle, authorization, mac,
                   err);
}

int sks_client_post_clone_key_protection(sks_transport *t, uint32_t key_handle, uint32_t target_key_handle,
                                         sks_span authorization, sks_span mac, sks_client_error *err)
{
    return post_op(t, SKS_METHOD_POST_CLONE_KEY_PROTECTION, "postCloneKeyProtection", key_handle, target_key_handle,
                   authorization, mac, err);
}

/* ------------------------------------------------------------------ key queries */

int sks_client_enumerate_keys(sks_transport *t, uint32_t after, uint32_t *key_handle, uint32_t *provisioning_handle,
                              sks_client_error *err)
{
    call_ctx c;
    int ok;

    *key_handle = 0;
    if (provisioning_handle != NULL)
        *provisioning_handle = 0;
    call_begin(&c, SKS_METHOD_ENUMERATE_KEYS, "enumerateKeys", err);
    sks_buf_uint(&c.req, after);
    ok = call_run(&c, t);
    if (ok) {
        uint32_t k = sks_get_uint(&c.r, "keyHandle");
        uint32_t p = k != 0 ? sks_get_uint(&c.r, "provisioningHandle") : 0;
        if (sks_reader_ok(&c.r)) {
            *key_handle = k;
            if (provisioning_handle != NULL)
                *provisioning_handle = p;
        }
    }
    ok = call_end(&c, ok);
    if (!ok)
        *key_handle = 0;
    return ok;
}

int sks_client_find_keys_by_certificate(sks_transport *t, const uint8_t sha256[32], uint32_t *key_handles,
                                        size_t max, size_t *count, sks_client_error *err)
{
    call_ctx c;
    size_t i;
    uint16_t n;
    int ok;

    *count = 0;
    call_begin(&c, SKS_METHOD_FIND_KEYS_BY_CERTIFICATE, "findKeysByCertificate", err);
    sks_buf_array(&c.req, sha256, 32);
    ok = call_run(&c, t);
    if (ok) {
        n = sks_get_ushort(&c.r, "keyHandle count");
        if (sks_reader_ok(&c.r) && n > max)
            reader_fail(&c.r, "lists more keys than there is room for", "keyHandle");
        for (i = 0; i < n && sks_reader_ok(&c.r); i++)
            key_handles[i] = sks_get_uint(&c.r, "keyHandle");
        if (sks_reader_ok(&c.r))
            *count = n;
    }
    ok = call_end(&c, ok);
    if (!ok)
        *count = 0;
    return ok;
}

int sks_client_get_key_attributes(sks_transport *t, uint32_t key_handle, sks_key_attributes *out,
                                  sks_client_error *err)
{
    call_ctx c;
    int ok;

    memset(out, 0, sizeof(*out));
    call_begin(&c, SKS_METHOD_GET_KEY_ATTRIBUTES, "getKeyAttributes", err);
    sks_buf_uint(&c.req, key_handle);
    ok = call_run(&c, t);
    if (ok) {
        sks_reader *r = &c.r;
        out->symmetric_key_length = sks_get_ushort(r, "symmetricKeyLength");
        read_bytes_list(r, &out->certificates, "certificate");
        out->app_usage = sks_get_byte(r, "appUsage");
        out->friendly_name = take_string(r, sks_get_string(r, "friendlyName"), "friendlyName");
        read_uri_list(r, &out->endorsed_algorithms, "endorsedAlgorithm");
        read_uri_list(r, &out->extension_types, "extensionType");
    }
    ok = call_end(&c, ok);
    if (!ok)
        sks_key_attributes_free(out);
    return ok;
}

void sks_key_attributes_free(sks_key_attributes *a)
{
    if (a == NULL)
        return;
    sks_bytes_list_free(&a->certificates);
    OPENSSL_free(a->friendly_name);
    sks_string_list_free(&a->endorsed_algorithms);
    sks_string_list_free(&a->extension_types);
    memset(a, 0, sizeof(*a));
}

static void read_protection_info(sks_reader *r, sks_key_protection_info *o)
{
    o->protection_status = sks_get_byte(r, "protectionStatus");
    o->puk_format = sks_get_byte(r, "pukFormat");
    o->puk_retry_limit = sks_get_ushort(r, "pukRetryLimit");
    o->puk_error_count = sks_get_ushort(r, "pukErrorCount");
    o->user_defined = sks_get_bool(r, "userDefined");
    o->user_modifiable = sks_get_bool(r, "userModifiable");
    o->format = sks_get_byte(r, "format");
    o->retry_limit = sks_get_ushort(r, "retryLimit");
    o->grouping = sks_get_byte(r, "grouping");
    o->pattern_restrictions = sks_get_byte(r, "patternRestrictions");
    o->min_length = sks_get_ushort(r, "minLength");
    o->max_length = sks_get_ushort(r, "maxLength");
    o->input_method = sks_get_byte(r, "inputMethod");
    o->pin_error_count = sks_get_ushort(r, "pinErrorCount");
    o->enable_pin_caching = sks_get_bool(r, "enablePinCaching");
    o->biometric_protection = sks_get_byte(r, "biometricProtection");
    o->export_protection = sks_get_byte(r, "exportProtection");
    o->delete_protection = sks_get_byte(r, "deleteProtection");
    o->key_backup = sks_get_byte(r, "keyBackup");
}

int sks_client_get_key_protection_info(sks_transport *t, uint32_t key_handle, sks_key_protection_info *out,
                                       sks_client_error *err)
{
    call_ctx c;
    int ok;

    memset(out, 0, sizeof(*out));
    call_begin(&c, SKS_METHOD_GET_KEY_PROTECTION_INFO, "getKeyProtectionInfo", err);
    sks_buf_uint(&c.req, key_handle);
    ok = call_run(&c, t);
    if (ok)
        read_protection_info(&c.r, out);
    ok = call_end(&c, ok);
    if (!ok)
        memset(out, 0, sizeof(*out));
    return ok;
}

int sks_client_get_extension(sks_transport *t, uint32_t key_handle, const char *type, sks_extension *out,
                             sks_client_error *err)
{
    call_ctx c;
    int ok;

    memset(out, 0, sizeof(*out));
    call_begin(&c, SKS_METHOD_GET_EXTENSION, "getExtension", err);
    sks_buf_uint(&c.req, key_handle);
    put_str(&c.req, type);
    ok = call_run(&c, t);
    if (ok) {
        out->sub_type = sks_get_byte(&c.r, "subType");
        out->qualifier = take_string(&c.r, sks_get_string(&c.r, "qualifier"), "qualifier");
        take_bytes(&c.r, sks_get_blob(&c.r, "extensionData"), &out->data, "extensionData");
    }
    ok = call_end(&c, ok);
    if (!ok)
        sks_extension_free(out);
    return ok;
}

void sks_extension_free(sks_extension *e)
{
    if (e == NULL)
        return;
    OPENSSL_free(e->qualifier);
    bytes_free(&e->data); /* an encrypted extension is returned in clear: wipe it */
    memset(e, 0, sizeof(*e));
}

int sks_client_set_property(sks_transport *t, uint32_t key_handle, const char *type, const char *name,
                            const char *value, sks_client_error *err)
{
    call_ctx c;

    call_begin(&c, SKS_METHOD_SET_PROPERTY, "setProperty", err);
    sks_buf_uint(&c.req, key_handle);
    put_str(&c.req, type);
    put_str(&c.req, name);
    put_str(&c.req, value);
    return call_simple(&c, t);
}

/* ------------------------------------------------------------------ key management */

/* deleteKey and unlockKey: (keyHandle, authorization). */
static int key_auth_op(sks_transport *t, uint8_t id, const char *method, uint32_t key_handle, sks_span authorization,
                       sks_client_error *err)
{
    call_ctx c;

    call_begin(&c, id, method, err);
    sks_buf_uint(&c.req, key_handle);
    put_span(&c.req, authorization);
    return call_simple(&c, t);
}

int sks_client_delete_key(sks_transport *t, uint32_t key_handle, sks_span authorization, sks_client_error *err)
{
    return key_auth_op(t, SKS_METHOD_DELETE_KEY, "deleteKey", key_handle, authorization, err);
}

int sks_client_unlock_key(sks_transport *t, uint32_t key_handle, sks_span authorization, sks_client_error *err)
{
    return key_auth_op(t, SKS_METHOD_UNLOCK_KEY, "unlockKey", key_handle, authorization, err);
}

int sks_client_export_key(sks_transport *t, uint32_t key_handle, sks_span authorization, sks_buf *key,
                          sks_client_error *err)
{
    call_ctx c;
    size_t start = key->len;
    int ok;

    call_begin(&c, SKS_METHOD_EXPORT_KEY, "exportKey", err);
    sks_buf_uint(&c.req, key_handle);
    put_span(&c.req, authorization);
    ok = call_run(&c, t);
    if (ok)
        read_into_buf(&c.r, sks_get_array(&c.r, "key"), key, "key");
    ok = call_end(&c, ok);
    if (!ok && key->data != NULL && key->len > start) {
        OPENSSL_cleanse(key->data + start, key->len - start);
        key->len = start;
    }
    return ok;
}

/* changePin and setPin: (keyHandle, authorization, newPin). */
static int new_pin_op(sks_transport *t, uint8_t id, const char *method, uint32_t key_handle, sks_span authorization,
                      sks_span new_pin, sks_client_error *err)
{
    call_ctx c;

    call_begin(&c, id, method, err);
    sks_buf_uint(&c.req, key_handle);
    put_span(&c.req, authorization);
    put_span(&c.req, new_pin);
    return call_simple(&c, t);
}

int sks_client_change_pin(sks_transport *t, uint32_t key_handle, sks_span authorization, sks_span new_pin,
                          sks_client_error *err)
{
    return new_pin_op(t, SKS_METHOD_CHANGE_PIN, "changePin", key_handle, authorization, new_pin, err);
}

int sks_client_set_pin(sks_transport *t, uint32_t key_handle, sks_span authorization, sks_span new_pin,
                       sks_client_error *err)
{
    return new_pin_op(t, SKS_METHOD_SET_PIN, "setPin", key_handle, authorization, new_pin, err);
}

/* ------------------------------------------------------------------ User API */

static void put_user_args(sks_buf *b, const sks_user_args *a, int with_mode, int mode)
{
    sks_buf_uint(b, a->key_handle);
    put_str(b, a->algorithm);
    if (with_mode)
        sks_buf_bool(b, mode);
    put_span(b, a->parameters);
    sks_buf_bool(b, a->biometric_auth);
    put_span(b, a->authorization);
}

/* How one User API method lays out its data and result. */
typedef struct {
    uint8_t id;
    const char *name;
    int has_mode;    /* symmetricKeyEncrypt's bool mode after the algorithm */
    int blob_data;   /* data is a blob, not a byte[] */
    int blob_result; /* result is a blob, not a byte[] */
} user_method;

static const user_method SIGN = { SKS_METHOD_SIGN_HASHED_DATA, "signHashedData", 0, 0, 0 };
static const user_method DECRYPT = { SKS_METHOD_ASYMMETRIC_KEY_DECRYPT, "asymmetricKeyDecrypt", 0, 0, 0 };
static const user_method AGREE = { SKS_METHOD_KEY_AGREEMENT, "keyAgreement", 0, 0, 0 };
static const user_method HMAC_OP = { SKS_METHOD_PERFORM_HMAC, "performHmac", 0, 1, 0 };
static const user_method SYM_ENCRYPT = { SKS_METHOD_SYMMETRIC_KEY_ENCRYPT, "symmetricKeyEncrypt", 1, 1, 1 };

/* Runs a User API call and appends its result to `result` (untouched on failure: a
 * decryption result is secret, so a partial append is wiped). */
static int user_op(sks_transport *t, const user_method *m, const sks_user_args *a, int mode, sks_span data,
                   sks_buf *result, sks_client_error *err)
{
    call_ctx c;
    size_t start = result->len;
    int ok;

    call_begin(&c, m->id, m->name, err);
    put_user_args(&c.req, a, m->has_mode, mode);
    if (m->blob_data)
        sks_buf_blob(&c.req, data.p, data.n);
    else
        sks_buf_array(&c.req, data.p, data.n);
    ok = call_run(&c, t);
    if (ok)
        read_into_buf(&c.r, m->blob_result ? sks_get_blob(&c.r, "result") : sks_get_array(&c.r, "result"), result,
                      "result");
    ok = call_end(&c, ok);
    if (!ok && result->data != NULL && result->len > start) {
        OPENSSL_cleanse(result->data + start, result->len - start);
        result->len = start;
    }
    return ok;
}

int sks_client_sign_hashed_data(sks_transport *t, const sks_user_args *a, sks_span data, sks_buf *result,
                                sks_client_error *err)
{
    return user_op(t, &SIGN, a, 0, data, result, err);
}

int sks_client_asymmetric_key_decrypt(sks_transport *t, const sks_user_args *a, sks_span data, sks_buf *result,
                                      sks_client_error *err)
{
    return user_op(t, &DECRYPT, a, 0, data, result, err);
}

int sks_client_key_agreement(sks_transport *t, const sks_user_args *a, sks_span public_key, sks_buf *result,
                             sks_client_error *err)
{
    return user_op(t, &AGREE, a, 0, public_key, result, err);
}

int sks_client_perform_hmac(sks_transport *t, const sks_user_args *a, sks_span data, sks_buf *result,
                            sks_client_error *err)
{
    return user_op(t, &HMAC_OP, a, 0, data, result, err);
}

int sks_client_symmetric_key_encrypt(sks_transport *t, const sks_user_args *a, int mode, sks_span data,
                                     sks_buf *result, sks_client_error *err)
{
    return user_op(t, &SYM_ENCRYPT, a, mode, data, result, err);
}

/* ------------------------------------------------------------------ User API, allocation-free */

void sks_client_buffers_init(sks_client_buffers *b)
{
    sks_buf_init(&b->req);
    sks_buf_init(&b->reply);
}

void sks_client_buffers_free(sks_client_buffers *b)
{
    if (b == NULL)
        return;
    sks_buf_free(&b->req);
    sks_buf_free(&b->reply);
}

/* user_op over reusable buffers, the result copied into the caller's out[size]. */
static int user_op_to(sks_transport *t, sks_client_buffers *b, const user_method *m, const sks_user_args *a,
                      sks_span data, uint8_t *out, size_t size, size_t *out_len, sks_client_error *err)
{
    call_ctx c;
    sks_span s;
    int ok;

    *out_len = 0;
    call_begin_reusing(&c, b, m->id, m->name, err);
    put_user_args(&c.req, a, m->has_mode, 0);
    if (m->blob_data)
        sks_buf_blob(&c.req, data.p, data.n);
    else
        sks_buf_array(&c.req, data.p, data.n);
    ok = call_run(&c, t);
    if (ok) {
        s = m->blob_result ? sks_get_blob(&c.r, "result") : sks_get_array(&c.r, "result");
        sks_reader_expect_end(&c.r);
        if (sks_reader_ok(&c.r) && s.n > size) {
            set_error(err, SKS_CLIENT_ERROR_SPACE, "%s: the result (%zu bytes) does not fit the %zu bytes given",
                      m->name, s.n, size);
            ok = 0;
        } else if (sks_reader_ok(&c.r)) {
            memcpy(out, s.p, s.n);
            *out_len = s.n;
        }
    }
    return call_end(&c, ok);
}

int sks_client_sign_hashed_data_to(sks_transport *t, sks_client_buffers *b, const sks_user_args *a, sks_span data,
                                   uint8_t *out, size_t size, size_t *out_len, sks_client_error *err)
{
    return user_op_to(t, b, &SIGN, a, data, out, size, out_len, err);
}

int sks_client_asymmetric_key_decrypt_to(sks_transport *t, sks_client_buffers *b, const sks_user_args *a,
                                         sks_span data, uint8_t *out, size_t size, size_t *out_len,
                                         sks_client_error *err)
{
    return user_op_to(t, b, &DECRYPT, a, data, out, size, out_len, err);
}

int sks_client_key_agreement_to(sks_transport *t, sks_client_buffers *b, const sks_user_args *a, sks_span public_key,
                                uint8_t *out, size_t size, size_t *out_len, sks_client_error *err)
{
    return user_op_to(t, b, &AGREE, a, public_key, out, size, out_len, err);
}

size_t sks_client_pss_parameters(uint16_t salt_length, const char *mgf1_digest, uint8_t *out, size_t size)
{
    size_t n = strlen(mgf1_digest);

    if (n > 0xFFFF || size < 4 + n)
        return 0;
    out[0] = (uint8_t)(salt_length >> 8);
    out[1] = (uint8_t)salt_length;
    out[2] = (uint8_t)(n >> 8);
    out[3] = (uint8_t)n;
    memcpy(out + 4, mgf1_digest, n);
    return 4 + n;
}

int sks_client_oaep_parameters(const char *oaep_digest, const char *mgf1_digest, const uint8_t *label,
                               size_t label_len, sks_buf *out)
{
    if (strlen(oaep_digest) > 0xFFFF || strlen(mgf1_digest) > 0xFFFF || label_len > 0xFFFF)
        return 0;
    sks_buf_string(out, oaep_digest);
    sks_buf_string(out, mgf1_digest);
    sks_buf_array(out, label, label_len);
    return !out->failed;
}

/* ------------------------------------------------------------------ SKIP */

int sks_client_skip_request(sks_transport *t, const char *curve_algorithm, sks_span subject_der,
                            const sks_span *anchors, size_t anchor_count, uint32_t *provisioning_handle,
                            sks_bytes *pkcs10, sks_client_error *err)
{
    call_ctx c;
    size_t i;
    int ok;

    *provisioning_handle = 0;
    memset(pkcs10, 0, sizeof(*pkcs10));
    call_begin(&c, SKS_METHOD_SKIP_REQUEST, "skipRequest", err);
    put_str(&c.req, curve_algorithm);
    put_span(&c.req, subject_der);
    if (anchor_count > 0xFFFF)
        c.req.failed = 1;
    sks_buf_ushort(&c.req, (uint16_t)anchor_count);
    for (i = 0; i < anchor_count; i++)
        put_span(&c.req, anchors[i]);
    ok = call_run(&c, t);
    if (ok) {
        *provisioning_handle = sks_get_uint(&c.r, "provisioningHandle");
        take_bytes(&c.r, sks_get_array(&c.r, "pkcs10"), pkcs10, "pkcs10");
    }
    ok = call_end(&c, ok);
    if (!ok)
        bytes_free(pkcs10);
    return ok;
}

int sks_client_skip_import(sks_transport *t, uint32_t provisioning_handle, sks_span package, uint32_t *key_handles,
                           size_t max, size_t *count, sks_client_error *err)
{
    call_ctx c;
    size_t i;
    uint16_t n;
    int ok;

    *count = 0;
    call_begin(&c, SKS_METHOD_SKIP_IMPORT, "skipImport", err);
    sks_buf_uint(&c.req, provisioning_handle);
    if (package.n > 0xFFFFFFFFu)
        c.req.failed = 1;
    sks_buf_blob(&c.req, package.p, package.n);
    ok = call_run(&c, t);
    if (ok) {
        n = sks_get_ushort(&c.r, "keyHandle count");
        if (sks_reader_ok(&c.r) && n > max)
            reader_fail(&c.r, "lists more keys than were sent", "keyHandle");
        for (i = 0; i < n && sks_reader_ok(&c.r); i++)
            key_handles[i] = sks_get_uint(&c.r, "keyHandle");
        if (sks_reader_ok(&c.r))
            *count = n;
    }
    ok = call_end(&c, ok);
    if (!ok)
        *count = 0;
    return ok;
}

/* ------------------------------------------------------------------ SmartCard-HSM */

/* The reply of the card methods that make a key: keyHandle, publicKey and one more array
 * (certificate or request). On failure nothing is left allocated and the handle is 0. */
static int call_key_reply(call_ctx *c, sks_transport *t, uint32_t *key_handle, sks_bytes *public_key,
                          sks_bytes *second, const char *second_name)
{
    int ok;

    *key_handle = 0;
    memset(public_key, 0, sizeof(*public_key));
    memset(second, 0, sizeof(*second));
    ok = call_run(c, t);
    if (ok) {
        *key_handle = sks_get_uint(&c->r, "keyHandle");
        take_bytes(&c->r, sks_get_array(&c->r, "publicKey"), public_key, "publicKey");
        take_bytes(&c->r, sks_get_array(&c->r, second_name), second, second_name);
    }
    ok = call_end(c, ok);
    if (!ok) {
        *key_handle = 0;
        bytes_free(public_key);
        bytes_free(second);
    }
    return ok;
}

int sks_client_hsm_generate_key_pair(sks_transport *t, sks_span authorization, const char *friendly_name,
                                     const char *key_algorithm, sks_span subject_der, uint32_t validity_days,
                                     uint32_t *key_handle, sks_bytes *public_key, sks_bytes *certificate,
                                     sks_client_error *err)
{
    call_ctx c;

    call_begin(&c, SKS_METHOD_HSM_GENERATE_KEY_PAIR, "hsmGenerateKeyPair", err);
    put_span(&c.req, authorization);
    put_str(&c.req, friendly_name);
    put_str(&c.req, key_algorithm);
    put_span(&c.req, subject_der);
    sks_buf_uint(&c.req, validity_days);
    return call_key_reply(&c, t, key_handle, public_key, certificate, "certificate");
}

int sks_client_hsm_initialize(sks_transport *t, sks_span so_pin, sks_span user_pin, const sks_hsm_init_args *a,
                              sks_client_error *err)
{
    call_ctx c;

    call_begin(&c, SKS_METHOD_HSM_INITIALIZE, "hsmInitialize", err);
    put_span(&c.req, so_pin);
    put_span(&c.req, user_pin);
    sks_buf_ushort(&c.req, a->options);
    sks_buf_byte(&c.req, a->retry_limit);
    sks_buf_ushort(&c.req, a->dkek_shares);
    sks_buf_byte(&c.req, a->key_domains);
    sks_buf_bool(&c.req, a->force);
    return call_simple(&c, t);
}

int sks_client_hsm_status(sks_transport *t, sks_hsm_status *out, sks_client_error *err)
{
    call_ctx c;
    sks_span kind;
    int ok;

    memset(out, 0, sizeof(*out));
    call_begin(&c, SKS_METHOD_HSM_STATUS, "hsmStatus", err);
    ok = call_run(&c, t);
    if (ok) {
        kind = sks_get_string(&c.r, "kind");
        if (kind.n >= sizeof(out->kind))
            reader_fail(&c.r, "is too long", "kind");
        else if (sks_reader_ok(&c.r))
            memcpy(out->kind, kind.p, kind.n);
        out->firmware_major = sks_get_byte(&c.r, "firmwareMajor");
        out->firmware_minor = sks_get_byte(&c.r, "firmwareMinor");
        out->options = sks_get_ushort(&c.r, "options");
        out->pin_state = sks_get_byte(&c.r, "userPinState");
        out->pin_tries = sks_get_byte(&c.r, "userPinTries");
        out->so_pin_tries = sks_get_byte(&c.r, "soPinTries");
    }
    ok = call_end(&c, ok);
    if (!ok)
        memset(out, 0, sizeof(*out));
    return ok;
}

/* total ‖ missing ‖ KCV, the reply of hsmDkekImportShare and hsmKeyDomainStatus */
static int dkek_status_reply(call_ctx *c, int ok, sks_hsm_dkek_status *out)
{
    sks_span kcv;

    if (ok) {
        out->shares_total = sks_get_byte(&c->r, "sharesTotal");
        out->shares_missing = sks_get_byte(&c->r, "sharesMissing");
        kcv = sks_get_array(&c->r, "kcv");
        if (sks_reader_ok(&c->r) && kcv.n != sizeof(out->kcv))
            reader_fail(&c->r, "is not 8 bytes", "kcv");
        else if (sks_reader_ok(&c->r))
            memcpy(out->kcv, kcv.p, kcv.n);
    }
    ok = call_end(c, ok);
    if (!ok)
        memset(out, 0, sizeof(*out));
    return ok;
}

int sks_client_hsm_dkek_import_share(sks_transport *t, sks_span authorization, uint8_t key_domain, sks_span share,
                                     sks_hsm_dkek_status *out, sks_client_error *err)
{
    call_ctx c;

    memset(out, 0, sizeof(*out));
    call_begin(&c, SKS_METHOD_HSM_DKEK_IMPORT_SHARE, "hsmDkekImportShare", err);
    put_span(&c.req, authorization);
    sks_buf_byte(&c.req, key_domain);
    put_span(&c.req, share);
    return dkek_status_reply(&c, call_run(&c, t), out);
}

int sks_client_hsm_key_domain_status(sks_transport *t, sks_span authorization, uint8_t key_domain,
                                     sks_hsm_dkek_status *out, sks_client_error *err)
{
    call_ctx c;

    memset(out, 0, sizeof(*out));
    call_begin(&c, SKS_METHOD_HSM_KEY_DOMAIN_STATUS, "hsmKeyDomainStatus", err);
    put_span(&c.req, authorization);
    sks_buf_byte(&c.req, key_domain);
    return dkek_status_reply(&c, call_run(&c, t), out);
}

int sks_client_hsm_wrap_key(sks_transport *t, sks_span authorization, uint32_t key_handle, sks_bytes *blob,
                            sks_bytes *key_description, sks_bytes *certificate, sks_client_error *err)
{
    call_ctx c;
    int ok;

    memset(blob, 0, sizeof(*blob));
    memset(key_description, 0, sizeof(*key_description));
    memset(certificate, 0, sizeof(*certificate));
    call_begin(&c, SKS_METHOD_HSM_WRAP_KEY, "hsmWrapKey", err);
    put_span(&c.req, authorization);
    sks_buf_uint(&c.req, key_handle);
    ok = call_run(&c, t);
    if (ok) {
        take_bytes(&c.r, sks_get_array(&c.r, "wrappedKey"), blob, "wrappedKey");
        take_bytes(&c.r, sks_get_array(&c.r, "keyDescription"), key_description, "keyDescription");
        take_bytes(&c.r, sks_get_array(&c.r, "certificate"), certificate, "certificate");
    }
    ok = call_end(&c, ok);
    if (!ok) {
        bytes_free(blob);
        bytes_free(key_description);
        bytes_free(certificate);
    }
    return ok;
}

int sks_client_hsm_unwrap_key(sks_transport *t, sks_span authorization, sks_span blob, sks_span key_description,
                              sks_span certificate, const char *friendly_name, sks_span subject_der,
                              uint32_t validity_days, uint32_t *key_handle, sks_client_error *err)
{
    call_ctx c;
    int ok;

    *key_handle = 0;
    call_begin(&c, SKS_METHOD_HSM_UNWRAP_KEY, "hsmUnwrapKey", err);
    put_span(&c.req, authorization);
    put_span(&c.req, blob);
    put_span(&c.req, key_description);
    put_span(&c.req, certificate);
    put_str(&c.req, friendly_name);
    put_span(&c.req, subject_der);
    sks_buf_uint(&c.req, validity_days);
    ok = call_run(&c, t);
    if (ok)
        *key_handle = sks_get_uint(&c.r, "keyHandle");
    ok = call_end(&c, ok);
    if (!ok)
        *key_handle = 0;
    return ok;
}

int sks_client_hsm_get_challenge(sks_transport *t, uint8_t *out, size_t n, sks_client_error *err)
{
    call_ctx c;
    sks_span r;
    int ok;

    call_begin(&c, SKS_METHOD_HSM_GET_CHALLENGE, "hsmGetChallenge", err);
    if (n > 0xFFFF)
        c.req.failed = 1;
    sks_buf_ushort(&c.req, (uint16_t)n);
    ok = call_run(&c, t);
    if (ok) {
        r = sks_get_array(&c.r, "random");
        if (sks_reader_ok(&c.r) && r.n != n)
            reader_fail(&c.r, "is not of the length asked for", "random");
        else if (sks_reader_ok(&c.r))
            memcpy(out, r.p, n);
    }
    return call_end(&c, ok);
}

static int call_bytes_out(call_ctx *c, sks_transport *t, sks_bytes *out, const char *field)
{
    int ok = call_run(c, t);

    if (ok)
        take_bytes(&c->r, sks_get_array(&c->r, field), out, field);
    ok = call_end(c, ok);
    if (!ok)
        bytes_free(out);
    return ok;
}

int sks_client_hsm_device_certificates(sks_transport *t, sks_bytes *devaut, sks_client_error *err)
{
    call_ctx c;

    memset(devaut, 0, sizeof(*devaut));
    call_begin(&c, SKS_METHOD_HSM_DEVICE_CERTIFICATES, "hsmDeviceCertificates", err);
    return call_bytes_out(&c, t, devaut, "devAut");
}

int sks_client_hsm_key_generation_response(sks_transport *t, uint32_t key_handle, sks_bytes *request,
                                           sks_client_error *err)
{
    call_ctx c;

    memset(request, 0, sizeof(*request));
    call_begin(&c, SKS_METHOD_HSM_KEY_GENERATION_RESPONSE, "hsmKeyGenerationResponse", err);
    sks_buf_uint(&c.req, key_handle);
    return call_bytes_out(&c, t, request, "request");
}

static void get_domain(sks_reader *r, sks_hsm_domain *d)
{
    sks_span kcv, uid;

    memset(d, 0, sizeof(*d));
    d->domain = sks_get_byte(r, "domain");
    d->shares_total = sks_get_byte(r, "sharesTotal");
    d->shares_missing = sks_get_byte(r, "sharesMissing");
    kcv = sks_get_array(r, "kcv");
    uid = sks_get_array(r, "uid");
    if (!sks_reader_ok(r))
        return;
    if (kcv.n != sizeof(d->kcv) || uid.n > sizeof(d->uid)) {
        reader_fail(r, "has the wrong length", kcv.n != sizeof(d->kcv) ? "kcv" : "uid");
        return;
    }
    memcpy(d->kcv, kcv.p, kcv.n);
    if (uid.n > 0)
        memcpy(d->uid, uid.p, uid.n);
    d->uid_len = uid.n;
}

int sks_client_hsm_domain_status(sks_transport *t, sks_span authorization, sks_hsm_domain *domains, size_t max,
                                 size_t *count, sks_client_error *err)
{
    call_ctx c;
    size_t i, n;
    int ok;

    *count = 0;
    call_begin(&c, SKS_METHOD_HSM_DOMAIN_STATUS, "hsmDomainStatus", err);
    put_span(&c.req, authorization);
    ok = call_run(&c, t);
    if (ok) {
        n = sks_get_ushort(&c.r, "domains");
        if (n > max)
            reader_fail(&c.r, "has too many items", "domains");
        for (i = 0; i < n && sks_reader_ok(&c.r); i++)
            get_domain(&c.r, &domains[i]);
        if (sks_reader_ok(&c.r))
            *count = n;
    }
    return call_end(&c, ok);
}

static int domain_call(call_ctx *c, sks_transport *t, sks_hsm_domain *out)
{
    int ok = call_run(c, t);

    if (ok)
        get_domain(&c->r, out);
    return call_end(c, ok);
}

int sks_client_hsm_domain_create(sks_transport *t, sks_span authorization, uint8_t domain, uint8_t dkek_shares,
                                 sks_hsm_domain *out, sks_client_error *err)
{
    call_ctx c;

    call_begin(&c, SKS_METHOD_HSM_KEY_DOMAIN_CREATE, "hsmKeyDomainCreate", err);
    put_span(&c.req, authorization);
    sks_buf_byte(&c.req, domain);
    sks_buf_byte(&c.req, dkek_shares);
    return domain_call(&c, t, out);
}

int sks_client_hsm_domain_join(sks_transport *t, sks_span authorization, uint8_t domain, sks_span membership,
                               sks_hsm_domain *out, sks_client_error *err)
{
    call_ctx c;

    call_begin(&c, SKS_METHOD_HSM_KEY_DOMAIN_JOIN, "hsmKeyDomainJoin", err);
    put_span(&c.req, authorization);
    sks_buf_byte(&c.req, domain);
    put_span(&c.req, membership);
    return domain_call(&c, t, out);
}

int sks_client_hsm_generate_domain_key(sks_transport *t, sks_span authorization, const char *friendly_name,
                                       const char *key_algorithm, uint8_t domain, sks_span algorithms,
                                       uint32_t *key_handle, sks_bytes *public_key, sks_bytes *request,
                                       sks_client_error *err)
{
    call_ctx c;

    call_begin(&c, SKS_METHOD_HSM_GENERATE_DOMAIN_KEY, "hsmGenerateDomainKey", err);
    put_span(&c.req, authorization);
    put_str(&c.req, friendly_name);
    put_str(&c.req, key_algorithm);
    sks_buf_byte(&c.req, domain);
    put_span(&c.req, algorithms);
    return call_key_reply(&c, t, key_handle, public_key, request, "request");
}

int sks_client_hsm_derive_xkek(sks_transport *t, sks_span authorization, uint32_t key_handle, sks_span peer_request,
                               sks_client_error *err)
{
    call_ctx c;

    call_begin(&c, SKS_METHOD_HSM_DERIVE_XKEK, "hsmDeriveXkek", err);
    put_span(&c.req, authorization);
    sks_buf_uint(&c.req, key_handle);
    put_span(&c.req, peer_request);
    return call_simple(&c, t);
}

int sks_client_hsm_domain_wrap_key(sks_transport *t, sks_span authorization, uint32_t key_handle, sks_bytes *blob,
                            sks_client_error *err)
{
    call_ctx c;

    memset(blob, 0, sizeof(*blob));
    call_begin(&c, SKS_METHOD_HSM_DOMAIN_WRAP_KEY, "hsmDomainWrapKey", err);
    put_span(&c.req, authorization);
    sks_buf_uint(&c.req, key_handle);
    return call_bytes_out(&c, t, blob, "blob");
}

int sks_client_hsm_domain_unwrap_key(sks_transport *t, sks_span authorization, const char *friendly_name, sks_span blob,
                                     sks_span request, sks_span certificate, sks_span subject_der,
                                     uint32_t validity_days, uint32_t *key_handle, sks_bytes *public_key,
                                     sks_bytes *stored_certificate, sks_client_error *err)
{
    call_ctx c;

    call_begin(&c, SKS_METHOD_HSM_DOMAIN_UNWRAP_KEY, "hsmDomainUnwrapKey", err);
    put_span(&c.req, authorization);
    put_str(&c.req, friendly_name);
    put_span(&c.req, blob);
    put_span(&c.req, request);
    put_span(&c.req, certificate);
    put_span(&c.req, subject_der);
    sks_buf_uint(&c.req, validity_days);
    return call_key_reply(&c, t, key_handle, public_key, stored_certificate, "certificate");
}
