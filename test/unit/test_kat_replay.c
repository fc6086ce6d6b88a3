/*
 * Replays the SKS reference implementation's known-answer transcript
 * (test/data/kat/sks-kat-transcript.jsonl, see its README.md) against the software
 * device, through sks_device_dispatch() with real wire bytes, and checks every output.
 *
 * The transcript's randomness is supplied through the device's test hooks: the client
 * ephemeral key (internal.clientEphemeralKey), the clientSessionId (the call's
 * out.clientSessionId) and each generated key pair (internal.generatedKeyPair). Everything
 * else must come out byte for byte, except ECDSA signatures (verified with the key's public
 * key) and the random IV of the internal-IV AES mode (the output is decrypted instead).
 *
 * Besides the call.* events the test keeps a model of the key store (handles, sessions,
 * certificates, extensions, PINs) and, after every closeProvisioningSession, checks the
 * device against it with enumerateKeys, getKeyAttributes, getKeyProtectionInfo and
 * enumerateProvisioningSessions, so the effect of the post-provisioning operations (unlock,
 * clone, update, delete, session adoption) is verified too.
 *
 * Where User API events leave inputs out, the replay fills them in as follows (each choice
 * is confirmed by the transcript itself, see below):
 *  - signHashedData without in.algorithm: ecdsa-sha256 for EC keys, rsa-sha256 for RSA keys;
 *    without in.data: the hash of the transcript's first signHashedData with in.data (the
 *    transcript's own ECDSA signatures are verified over it as well);
 *  - without in.authorization: for calls expected to fail with a bad PIN, the transcript's
 *    first wrong PIN; otherwise the key's current PIN, tracked from the provisioned pinValue,
 *    successful authorizations, changePin, and postCloneKeyProtection (the clone shares the
 *    target's PIN);
 *  - setProperty without in.type: the key's property-bag extension (subType 2).
 *
 * Usage: test_kat_replay <path to sks-kat-transcript.jsonl>
 * Exit status 0 and "kat: N calls replayed, M values compared" on success; on the first
 * mismatch a message naming the transcript seq and exit status 1.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cJSON.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "device/sks_device.h"

#define ALG_ECDSA_SHA256 "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
#define ALG_RSA_SHA256 "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"

enum {
    M_CREATE_PROVISIONING_SESSION = 2,
    M_CLOSE_PROVISIONING_SESSION = 3,
    M_ENUMERATE_PROVISIONING_SESSIONS = 4,
    M_UPDATE_KEY_MANAGEMENT_KEY = 7,
    M_CREATE_PUK_POLICY = 8,
    M_CREATE_PIN_POLICY = 9,
    M_CREATE_KEY_ENTRY = 10,
    M_SET_CERTIFICATE_PATH = 12,
    M_IMPORT_SYMMETRIC_KEY = 13,
    M_IMPORT_PRIVATE_KEY = 14,
    M_ADD_EXTENSION = 15,
    M_POST_DELETE_KEY = 50,
    M_POST_UNLOCK_KEY = 51,
    M_POST_UPDATE_KEY = 52,
    M_POST_CLONE_KEY_PROTECTION = 53,
    M_ENUMERATE_KEYS = 70,
    M_GET_KEY_ATTRIBUTES = 71,
    M_GET_KEY_PROTECTION_INFO = 72,
    M_GET_EXTENSION = 73,
    M_SET_PROPERTY = 74,
    M_CHANGE_PIN = 83,
    M_SIGN_HASHED_DATA = 100,
    M_ASYMMETRIC_KEY_DECRYPT = 101,
    M_KEY_AGREEMENT = 102,
    M_PERFORM_HMAC = 103,
    M_SYMMETRIC_KEY_ENCRYPT = 104
};

#define PROT_PIN_PROTECTED 0x01
#define PROT_PIN_BLOCKED 0x04

/* ------------------------------------------------------------------ reporting */

static long g_seq;
static char g_event[128] = "start";
static unsigned long g_calls, g_values;
static char g_tmpdir[4096];

static void cleanup_tmpdir(void)
{
    static const char *const FILES[] = { "store.db", "store.db-wal", "store.db-shm", "store.db-journal", "store.db.key" };
    char path[4200];
    size_t i;

    if (g_tmpdir[0] == '\0')
        return;
    for (i = 0; i < sizeof(FILES) / sizeof(FILES[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", g_tmpdir, FILES[i]);
        unlink(path);
    }
    rmdir(g_tmpdir);
    g_tmpdir[0] = '\0';
}

static void fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void fail(const char *fmt, ...)
{
    va_list ap;

    fflush(stdout);
    fprintf(stderr, "kat: FAIL at seq %ld (%s): ", g_seq, g_event);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    cleanup_tmpdir();
    exit(1);
}

static void print_hex(FILE *f, const uint8_t *p, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        fprintf(f, "%02x", p[i]);
}

static const char *status_name(unsigned s)
{
    static const char *const NAMES[] = { "OK", "ERROR_AUTHORIZATION", "ERROR_NOT_ALLOWED", "ERROR_STORAGE",
                                         "ERROR_MAC", "ERROR_CRYPTO", "ERROR_NO_SESSION", "ERROR_NO_KEY",
                                         "ERROR_ALGORITHM", "ERROR_OPTION", "ERROR_INTERNAL", "ERROR_EXTERNAL",
                                         "ERROR_USER_ABORT", "ERROR_NOT_AVAILABLE" };

    return s < sizeof(NAMES) / sizeof(NAMES[0]) ? NAMES[s] : "unknown status";
}

/* ------------------------------------------------------------------ comparisons */

static void cmp_bytes(const char *what, const uint8_t *got, size_t got_n, const uint8_t *exp, size_t exp_n)
{
    size_t i;

    g_values++;
    if (got_n == exp_n && (exp_n == 0 || memcmp(got, exp, exp_n) == 0))
        return;
    for (i = 0; i < got_n && i < exp_n && got[i] == exp[i]; i++)
        ;
    fflush(stdout);
    fprintf(stderr, "kat: FAIL at seq %ld (%s): %s differs from the transcript (first difference at byte %zu)\n",
            g_seq, g_event, what, i);
    fprintf(stderr, "  transcript (%zu bytes): ", exp_n);
    print_hex(stderr, exp, exp_n);
    fprintf(stderr, "\n  device     (%zu bytes): ", got_n);
    print_hex(stderr, got, got_n);
    fputc('\n', stderr);
    cleanup_tmpdir();
    exit(1);
}

static void cmp_uint(const char *what, unsigned long long got, unsigned long long exp)
{
    g_values++;
    if (got != exp)
        fail("%s: transcript has %llu, device answered %llu", what, exp, got);
}

static void cmp_text(const char *what, sks_span got, const char *exp)
{
    g_values++;
    if (got.n != strlen(exp) || memcmp(got.p, exp, got.n) != 0)
        fail("%s: transcript has \"%s\", device answered \"%.*s\"", what, exp, (int)got.n, (const char *)got.p);
}

/* ------------------------------------------------------------------ transcript access */

static const cJSON *g_ev; /* the event being replayed */
static const char *g_used[64];
static size_t g_nused;

static void mark_used(const char *name)
{
    if (g_nused < sizeof(g_used) / sizeof(g_used[0]))
        g_used[g_nused++] = name;
}

static void begin_event(const cJSON *ev)
{
    const cJSON *seq = cJSON_GetObjectItemCaseSensitive(ev, "seq");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(ev, "event");

    g_ev = ev;
    g_nused = 0;
    g_seq = cJSON_IsNumber(seq) ? (long)seq->valuedouble : -1;
    snprintf(g_event, sizeof(g_event), "%s", cJSON_IsString(name) ? name->valuestring : "?");
}

/* Fields that describe rather than feed the replay. */
static int informational(const char *name)
{
    static const char *const NAMES[] = { "seq", "event", "session", "note", "verified", "attestationVerified",
                                         "toBeSigned", "peerPrivateKeyPkcs8" };
    size_t i;

    for (i = 0; i < sizeof(NAMES) / sizeof(NAMES[0]); i++)
        if (strcmp(name, NAMES[i]) == 0)
            return 1;
    return 0;
}

/* Every field of a call event must have been replayed or compared: nothing is skipped. */
static void end_event(void)
{
    const cJSON *item;
    size_t i;

    cJSON_ArrayForEach(item, g_ev)
    {
        int used = informational(item->string);
        for (i = 0; i < g_nused && !used; i++)
            used = strcmp(g_used[i], item->string) == 0;
        if (!used)
            fail("the replay does not handle the transcript field \"%s\"", item->string);
    }
}

static const cJSON *field(const char *name)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(g_ev, name);

    if (j != NULL)
        mark_used(j->string);
    return j;
}

static const cJSON *need(const char *name)
{
    const cJSON *j = field(name);

    if (j == NULL)
        fail("transcript event lacks the field \"%s\"", name);
    return j;
}

/* The field whose name starts with prefix (e.g. "in.authorization(ECDSA raw r||s ...)"). */
static const cJSON *need_prefixed(const char *prefix)
{
    const cJSON *item;

    cJSON_ArrayForEach(item, g_ev)
    {
        if (strncmp(item->string, prefix, strlen(prefix)) == 0) {
            mark_used(item->string);
            return item;
        }
    }
    fail("transcript event lacks a field \"%s...\"", prefix);
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static void hex_decode(const char *what, const char *hex, sks_buf *out)
{
    size_t i, n = strlen(hex);

    if (n % 2 != 0)
        fail("transcript value %s is not hex (odd length)", what);
    for (i = 0; i < n; i += 2) {
        int hi = hex_value(hex[i]), lo = hex_value(hex[i + 1]);
        if (hi < 0 || lo < 0)
            fail("transcript value %s is not hex", what);
        sks_buf_byte(out, (uint8_t)(hi << 4 | lo));
    }
    if (out->failed)
        fail("out of memory");
}

/* A byte-array value: hex, or null for an empty array. */
static void json_hex(const char *what, const cJSON *j, sks_buf *out)
{
    sks_buf_reset(out);
    if (cJSON_IsNull(j))
        return;
    if (!cJSON_IsString(j))
        fail("transcript value %s is not a hex string", what);
    hex_decode(what, j->valuestring, out);
}

static void need_hex(const char *name, sks_buf *out)
{
    json_hex(name, need(name), out);
}

/* A string value; null means empty. */
static const char *need_str(const char *name)
{
    const cJSON *j = need(name);

    if (cJSON_IsNull(j))
        return "";
    if (!cJSON_IsString(j))
        fail("transcript field \"%s\" is not a string", name);
    return j->valuestring;
}

static unsigned long long json_uint(const char *name, const cJSON *j, unsigned long long max)
{
    if (!cJSON_IsNumber(j) || j->valuedouble < 0 || j->valuedouble > (double)max
        || j->valuedouble != (double)(unsigned long long)j->valuedouble)
        fail("transcript field \"%s\" is not an integer in 0..%llu", name, max);
    return (unsigned long long)j->valuedouble;
}

static unsigned long long need_uint(const char *name, unsigned long long max)
{
    return json_uint(name, need(name), max);
}

static int need_bool(const char *name)
{
    const cJSON *j = need(name);

    if (!cJSON_IsBool(j))
        fail("transcript field \"%s\" is not a boolean", name);
    return cJSON_IsTrue(j);
}

static void put_arr(sks_buf *req, const char *name)
{
    sks_buf b;

    sks_buf_init(&b);
    need_hex(name, &b);
    if (b.len > 0xFFFF)
        fail("transcript field \"%s\" is too long for a byte[]", name);
    sks_buf_array(req, b.data, b.len);
    sks_buf_free(&b);
}

static void put_blob(sks_buf *req, const char *name)
{
    sks_buf b;

    sks_buf_init(&b);
    need_hex(name, &b);
    sks_buf_blob(req, b.data, b.len);
    sks_buf_free(&b);
}

static void put_str(sks_buf *req, const char *name)
{
    sks_buf_string(req, need_str(name));
}

static void put_bool(sks_buf *req, const char *name)
{
    sks_buf_bool(req, need_bool(name));
}

static void put_byte(sks_buf *req, const char *name)
{
    sks_buf_byte(req, (uint8_t)need_uint(name, 0xFF));
}

static void put_ushort(sks_buf *req, const char *name)
{
    sks_buf_ushort(req, (uint16_t)need_uint(name, 0xFFFF));
}

static uint32_t put_uint(sks_buf *req, const char *name)
{
    uint32_t v = (uint32_t)need_uint(name, 0xFFFFFFFFu);

    sks_buf_uint(req, v);
    return v;
}

/* Compares a byte-array output with the transcript's hex field. */
static void cmp_field(const char *what, sks_span got, const char *name)
{
    sks_buf exp;

    sks_buf_init(&exp);
    need_hex(name, &exp);
    cmp_bytes(what, got.p, got.n, exp.data, exp.len);
    sks_buf_free(&exp);
}

/* ------------------------------------------------------------------ the device */

static sks_device *g_dev;

/* Test hook state: what the device must use instead of its own randomness. */
typedef struct {
    EVP_PKEY *ephemeral; /* from the latest internal.clientEphemeralKey */
    int ephemeral_taken;
    char client_session_id[33];
    struct {
        char id[33];
        const char *pkcs8_hex;
    } generated[64];
    size_t n_generated;
    char generated_asked[33];
} hook_state;

static hook_state g_hooks;

static EVP_PKEY *pkcs8_from_hex(const char *what, const char *hex)
{
    sks_buf der;
    const unsigned char *q;
    PKCS8_PRIV_KEY_INFO *p8;
    EVP_PKEY *k = NULL;

    sks_buf_init(&der);
    hex_decode(what, hex, &der);
    q = der.data;
    p8 = d2i_PKCS8_PRIV_KEY_INFO(NULL, &q, (long)der.len);
    if (p8 != NULL && q == der.data + der.len)
        k = EVP_PKCS82PKEY(p8);
    PKCS8_PRIV_KEY_INFO_free(p8);
    sks_buf_free(&der);
    if (k == NULL)
        fail("transcript value %s is not a PKCS#8 private key", what);
    return k;
}

static EVP_PKEY *hook_ephemeral_key(void *ctx)
{
    hook_state *h = ctx;

    if (h->ephemeral == NULL || h->ephemeral_taken)
        return NULL;
    h->ephemeral_taken = 1;
    EVP_PKEY_up_ref(h->ephemeral); /* the device frees its reference */
    return h->ephemeral;
}

static int hook_client_session_id(void *ctx, char out[33])
{
    hook_state *h = ctx;

    if (h->client_session_id[0] == '\0')
        return 0;
    memcpy(out, h->client_session_id, sizeof(h->client_session_id));
    return 1;
}

static EVP_PKEY *hook_generated_key(void *ctx, const char *id)
{
    hook_state *h = ctx;
    size_t i;

    snprintf(h->generated_asked, sizeof(h->generated_asked), "%s", id);
    for (i = h->n_generated; i-- > 0;)
        if (strcmp(h->generated[i].id, id) == 0)
            return pkcs8_from_hex("internal.generatedKeyPair.privateKeyPkcs8", h->generated[i].pkcs8_hex);
    return NULL;
}

static void run(sks_buf *req, sks_buf *rep)
{
    if (req->failed)
        fail("out of memory encoding the request");
    sks_buf_reset(rep);
    sks_device_dispatch(g_dev, req->data, req->len, rep);
    if (rep->failed || rep->len == 0)
        fail("the device returned no reply");
}

/* Checks that the reply has status OK and positions r after the status byte. */
static void expect_ok(const char *method, const sks_buf *rep, sks_reader *r)
{
    uint8_t status;

    sks_reader_init(r, rep->data, rep->len);
    status = sks_get_byte(r, "status");
    g_values++;
    if (status != SKS_OK) {
        sks_span msg = sks_get_string(r, "message");
        fail("%s: expected status 0x00 (OK), the device answered 0x%02X (%s): %.*s", method, status,
             status_name(status), (int)msg.n, (const char *)msg.p);
    }
}

static void expect_end(const char *method, sks_reader *r)
{
    sks_reader_expect_end(r);
    if (!sks_reader_ok(r))
        fail("%s: malformed reply: field \"%s\": %s", method, r->field, r->error);
}

/* Checks that the reply is the error `status`; returns its message. */
static sks_span expect_error(const char *method, const sks_buf *rep, unsigned status)
{
    sks_reader r;
    uint8_t got;
    sks_span msg;

    sks_reader_init(&r, rep->data, rep->len);
    got = sks_get_byte(&r, "status");
    msg = sks_get_string(&r, "message");
    g_values++;
    if (got != status)
        fail("%s: expected status 0x%02X (%s), the device answered 0x%02X (%s)%s%.*s", method, status,
             status_name(status), got, status_name(got), got ? ": " : "", got ? (int)msg.n : 0,
             got ? (const char *)msg.p : "");
    expect_end(method, &r);
    return msg;
}

/* Runs a request that must succeed and have no outputs. */
static void run_no_output(const char *method, sks_buf *req, sks_buf *rep)
{
    sks_reader r;

    run(req, rep);
    expect_ok(method, rep, &r);
    expect_end(method, &r);
}

/* ------------------------------------------------------------------ the model of the store */

#define MAX_HANDLES 64

typedef struct {
    char *type;
    uint8_t sub_type;
    char *qualifier;
    sks_buf data; /* as getExtension returns it (decrypted for sub-type 1) */
} model_ext;

typedef struct {
    int live;
    char id[33];
    uint32_t session;
    int has_certs;
    sks_buf certs; /* list of byte[], wire encoding */
    sks_buf ee;    /* end-entity certificate DER */
    uint8_t app_usage;
    char *friendly_name;
    sks_buf endorsed; /* list of uri, wire encoding */
    model_ext ext[8];
    size_t n_ext;
    sks_buf symmetric; /* the imported secret key, empty if none */
    int pin_protected;
    sks_buf pin; /* the current PIN */
} model_key;

typedef struct {
    char letter;
    uint32_t handle;
    int open, removed;
    char *algorithm, *server_session_id, *client_session_id, *issuer_uri;
    int privacy;
    sks_buf kmk;
    uint32_t client_time, lifetime;
    struct {
        int method;
        uint32_t new_key, target;
    } ops[16];
    size_t n_ops;
} model_session;

static model_key g_keys[MAX_HANDLES + 1];
static int g_created[MAX_HANDLES + 1]; /* handles createKeyEntry ever returned */
static struct {
    char id[33];
    uint32_t handle;
} g_ids[MAX_HANDLES];
static size_t g_n_ids;
static model_session g_sessions[8];
static size_t g_n_sessions;
static struct {
    uint32_t handle;
    int user_defined;
} g_pin_policies[16];
static size_t g_n_pin_policies;
/* server.encrypt: what the issuer encrypted, so the replay knows PINs and secret keys. */
static struct {
    sks_buf encrypted, plaintext;
} g_encrypted[32];
static size_t g_n_encrypted;

static model_key *model_key_at(uint32_t handle)
{
    if (handle == 0 || handle > MAX_HANDLES || !g_keys[handle].live)
        fail("the replay has no live key #%u in its model", handle);
    return &g_keys[handle];
}

static void model_key_clear(model_key *k)
{
    size_t i;

    sks_buf_free(&k->certs);
    sks_buf_free(&k->ee);
    sks_buf_free(&k->endorsed);
    sks_buf_free(&k->symmetric);
    sks_buf_free(&k->pin);
    free(k->friendly_name);
    for (i = 0; i < k->n_ext; i++) {
        free(k->ext[i].type);
        free(k->ext[i].qualifier);
        sks_buf_free(&k->ext[i].data);
    }
    memset(k, 0, sizeof(*k));
}

static model_session *session_by_letter(const char *letter)
{
    size_t i;

    for (i = 0; i < g_n_sessions; i++)
        if (g_sessions[i].letter == letter[0] && !g_sessions[i].removed)
            return &g_sessions[i];
    fail("no provisioning session \"%s\" has been created", letter);
}

static model_session *session_by_handle(uint32_t handle)
{
    size_t i;

    for (i = 0; i < g_n_sessions; i++)
        if (g_sessions[i].handle == handle && !g_sessions[i].removed)
            return &g_sessions[i];
    fail("the replay has no provisioning session #%u in its model", handle);
}

static const sks_buf *plaintext_of(const sks_buf *encrypted)
{
    size_t i;

    for (i = 0; i < g_n_encrypted; i++)
        if (g_encrypted[i].encrypted.len == encrypted->len
            && memcmp(g_encrypted[i].encrypted.data, encrypted->data, encrypted->len) == 0)
            return &g_encrypted[i].plaintext;
    fail("no server.encrypt event produced this encrypted value");
}

static char *xstrdup(const char *s)
{
    char *d = strdup(s);

    if (d == NULL)
        fail("out of memory");
    return d;
}

/* The public key of a key's end-entity certificate. */
static EVP_PKEY *model_public_key(const model_key *k)
{
    const unsigned char *q = k->ee.data;
    X509 *x;
    EVP_PKEY *pub;

    if (!k->has_certs)
        fail("key \"%s\" has no certificate in the model", k->id);
    x = d2i_X509(NULL, &q, (long)k->ee.len);
    pub = x ? X509_get_pubkey(x) : NULL;
    X509_free(x);
    if (pub == NULL)
        fail("the certificate of key \"%s\" cannot be parsed", k->id);
    return pub;
}

/* ------------------------------------------------------------------ store checks */

static void check_protection(uint32_t handle, int want_protected, int check_blocked, int want_blocked)
{
    sks_buf req, rep;
    sks_reader r;
    uint8_t status;
    char what[96];

    sks_buf_init(&req);
    sks_buf_init(&rep);
    sks_buf_byte(&req, M_GET_KEY_PROTECTION_INFO);
    sks_buf_uint(&req, handle);
    run(&req, &rep);
    expect_ok("getKeyProtectionInfo", &rep, &r);
    status = sks_get_byte(&r, "protectionStatus");
    if (!sks_reader_ok(&r))
        fail("getKeyProtectionInfo: malformed reply");
    snprintf(what, sizeof(what), "getKeyProtectionInfo(key #%u) PIN-protected flag", handle);
    cmp_uint(what, (status & PROT_PIN_PROTECTED) != 0, want_protected != 0);
    if (check_blocked) {
        snprintf(what, sizeof(what), "getKeyProtectionInfo(key #%u) PIN-blocked flag", handle);
        cmp_uint(what, (status & PROT_PIN_BLOCKED) != 0, want_blocked != 0);
    }
    sks_buf_free(&req);
    sks_buf_free(&rep);
}

/* Reads a `list of byte[]/uri` from a reply and returns its wire encoding in out. */
static uint16_t read_list(sks_reader *r, const char *name, sks_buf *out)
{
    uint16_t n = sks_get_ushort(r, name), i;

    sks_buf_reset(out);
    sks_buf_ushort(out, n);
    for (i = 0; i < n && sks_reader_ok(r); i++) {
        sks_span s = sks_get_array(r, name);
        sks_buf_array(out, s.p, s.n);
    }
    return n;
}

static void check_key_attributes(uint32_t handle, const model_key *k)
{
    sks_buf req, rep, list, exp;
    sks_reader r;
    uint16_t sym, n, i;
    uint8_t app_usage;
    sks_span friendly;
    char what[128];

    sks_buf_init(&req);
    sks_buf_init(&rep);
    sks_buf_init(&list);
    sks_buf_init(&exp);
    sks_buf_byte(&req, M_GET_KEY_ATTRIBUTES);
    sks_buf_uint(&req, handle);
    run(&req, &rep);
    expect_ok("getKeyAttributes", &rep, &r);
    sym = sks_get_ushort(&r, "symmetricKeyLength");
    snprintf(what, sizeof(what), "getKeyAttributes(key #%u \"%s\") symmetricKeyLength", handle, k->id);
    cmp_uint(what, sym, k->symmetric.len);
    read_list(&r, "certificate", &list);
    snprintf(what, sizeof(what), "getKeyAttributes(key #%u \"%s\") certificate path", handle, k->id);
    if (!sks_reader_ok(&r))
        fail("getKeyAttributes: malformed reply");
    if (k->has_certs)
        cmp_bytes(what, list.data, list.len, k->certs.data, k->certs.len);
    else
        cmp_bytes(what, list.data, list.len, (const uint8_t *)"\0", 2);
    app_usage = sks_get_byte(&r, "appUsage");
    snprintf(what, sizeof(what), "getKeyAttributes(key #%u \"%s\") appUsage", handle, k->id);
    cmp_uint(what, app_usage, k->app_usage);
    friendly = sks_get_string(&r, "friendlyName");
    snprintf(what, sizeof(what), "getKeyAttributes(key #%u \"%s\") friendlyName", handle, k->id);
    cmp_text(what, friendly, k->friendly_name);
    read_list(&r, "endorsedAlgorithm", &list);
    snprintf(what, sizeof(what), "getKeyAttributes(key #%u \"%s\") endorsed algorithms", handle, k->id);
    cmp_bytes(what, list.data, list.len, k->endorsed.data, k->endorsed.len);
    n = read_list(&r, "extensionType", &list);
    (void)n;
    sks_buf_ushort(&exp, (uint16_t)k->n_ext);
    for (i = 0; i < k->n_ext; i++)
        sks_buf_string(&exp, k->ext[i].type);
    snprintf(what, sizeof(what), "getKeyAttributes(key #%u \"%s\") extension types", handle, k->id);
    cmp_bytes(what, list.data, list.len, exp.data, exp.len);
    expect_end("getKeyAttributes", &r);
    sks_buf_free(&req);
    sks_buf_free(&rep);
    sks_buf_free(&list);
    sks_buf_free(&exp);
}

/*
 * The device against the model, after a session closed: enumerateKeys lists exactly the live
 * keys of closed sessions with their (possibly adopting) session, each key's attributes and
 * PIN protection match, keys that were deleted or replaced are gone, and
 * enumerateProvisioningSessions lists exactly the closed sessions that still exist.
 */
static void check_store(void)
{
    sks_buf req, rep;
    sks_reader r;
    uint32_t after = 0, h, expect_h;
    size_t i;
    char what[128];

    sks_buf_init(&req);
    sks_buf_init(&rep);
    expect_h = 0;
    for (;;) {
        uint32_t prov = 0;
        /* The next live key of a closed session after expect_h, in the model. */
        for (h = expect_h + 1; h <= MAX_HANDLES; h++)
            if (g_keys[h].live && !session_by_handle(g_keys[h].session)->open)
                break;
        expect_h = h <= MAX_HANDLES ? h : 0;
        sks_buf_reset(&req);
        sks_buf_byte(&req, M_ENUMERATE_KEYS);
        sks_buf_uint(&req, after);
        run(&req, &rep);
        expect_ok("enumerateKeys", &rep, &r);
        h = sks_get_uint(&r, "keyHandle");
        if (h != 0)
            prov = sks_get_uint(&r, "provisioningHandle");
        expect_end("enumerateKeys", &r);
        snprintf(what, sizeof(what), "enumerateKeys(after #%u) keyHandle", after);
        cmp_uint(what, h, expect_h);
        if (h == 0)
            break;
        snprintf(what, sizeof(what), "enumerateKeys: provisioningHandle of key #%u \"%s\"", h, g_keys[h].id);
        cmp_uint(what, prov, g_keys[h].session);
        check_key_attributes(h, &g_keys[h]);
        check_protection(h, g_keys[h].pin_protected, 0, 0);
        after = h;
    }
    /* Deleted keys and keys whose handle went to an update are gone. */
    for (h = 1; h <= MAX_HANDLES; h++) {
        if (!g_created[h] || g_keys[h].live)
            continue;
        sks_buf_reset(&req);
        sks_buf_byte(&req, M_GET_KEY_ATTRIBUTES);
        sks_buf_uint(&req, h);
        run(&req, &rep);
        snprintf(what, sizeof(what), "getKeyAttributes(key #%u, deleted or replaced)", h);
        expect_error(what, &rep, SKS_ERROR_NO_KEY);
    }
    /* Closed sessions: adopted ones are removed, the others report what they were created with. */
    after = 0;
    for (i = 0;; i++) {
        model_session *s = NULL;
        size_t j;
        for (j = 0; j < g_n_sessions; j++)
            if (!g_sessions[j].removed && !g_sessions[j].open && g_sessions[j].handle > after
                && (s == NULL || g_sessions[j].handle < s->handle))
                s = &g_sessions[j];
        sks_buf_reset(&req);
        sks_buf_byte(&req, M_ENUMERATE_PROVISIONING_SESSIONS);
        sks_buf_uint(&req, after);
        sks_buf_bool(&req, 0);
        run(&req, &rep);
        expect_ok("enumerateProvisioningSessions", &rep, &r);
        h = sks_get_uint(&r, "provisioningHandle");
        snprintf(what, sizeof(what), "enumerateProvisioningSessions(closed, after #%u) provisioningHandle", after);
        cmp_uint(what, h, s ? s->handle : 0);
        if (h == 0) {
            expect_end("enumerateProvisioningSessions", &r);
            break;
        }
        snprintf(what, sizeof(what), "enumerateProvisioningSessions: session #%u sessionKeyAlgorithm", h);
        cmp_text(what, sks_get_uri(&r, "sessionKeyAlgorithm"), s->algorithm);
        snprintf(what, sizeof(what), "enumerateProvisioningSessions: session #%u privacyEnabled", h);
        cmp_uint(what, (unsigned)sks_get_bool(&r, "privacyEnabled"), (unsigned)s->privacy);
        {
            sks_span kmk = sks_get_array(&r, "keyManagementKey");
            snprintf(what, sizeof(what), "enumerateProvisioningSessions: session #%u keyManagementKey", h);
            cmp_bytes(what, kmk.p, kmk.n, s->kmk.data, s->kmk.len);
        }
        snprintf(what, sizeof(what), "enumerateProvisioningSessions: session #%u clientTime", h);
        cmp_uint(what, sks_get_uint(&r, "clientTime"), s->client_time);
        snprintf(what, sizeof(what), "enumerateProvisioningSessions: session #%u sessionLifeTime", h);
        cmp_uint(what, sks_get_uint(&r, "sessionLifeTime"), s->lifetime);
        snprintf(what, sizeof(what), "enumerateProvisioningSessions: session #%u serverSessionId", h);
        cmp_text(what, sks_get_id(&r, "serverSessionId"), s->server_session_id);
        snprintf(what, sizeof(what), "enumerateProvisioningSessions: session #%u clientSessionId", h);
        cmp_text(what, sks_get_id(&r, "clientSessionId"), s->client_session_id);
        snprintf(what, sizeof(what), "enumerateProvisioningSessions: session #%u issuerUri", h);
        cmp_text(what, sks_get_uri(&r, "issuerUri"), s->issuer_uri);
        expect_end("enumerateProvisioningSessions", &r);
        after = h;
        if (i > 64)
            fail("enumerateProvisioningSessions does not terminate");
    }
    sks_buf_free(&req);
    sks_buf_free(&rep);
}

/* ------------------------------------------------------------------ crypto helpers */

static int ecdsa_raw_verify(EVP_PKEY *pub, const uint8_t *hash, size_t hash_n, const uint8_t *sig, size_t sig_n)
{
    size_t fb = (size_t)(EVP_PKEY_get_bits(pub) + 7) / 8;
    ECDSA_SIG *s = NULL;
    BIGNUM *r = NULL, *sv = NULL;
    unsigned char *der = NULL;
    EVP_PKEY_CTX *c = NULL;
    int len, ok = 0;

    if (EVP_PKEY_get_base_id(pub) != EVP_PKEY_EC || sig_n != 2 * fb)
        return 0;
    s = ECDSA_SIG_new();
    r = BN_bin2bn(sig, (int)fb, NULL);
    sv = BN_bin2bn(sig + fb, (int)fb, NULL);
    if (s == NULL || r == NULL || sv == NULL || ECDSA_SIG_set0(s, r, sv) != 1)
        goto done;
    r = sv = NULL;
    if ((len = i2d_ECDSA_SIG(s, &der)) <= 0)
        goto done;
    c = EVP_PKEY_CTX_new_from_pkey(NULL, pub, NULL);
    ok = c != NULL && EVP_PKEY_verify_init(c) == 1 && EVP_PKEY_verify(c, der, (size_t)len, hash, hash_n) == 1;
done:
    BN_free(r);
    BN_free(sv);
    ECDSA_SIG_free(s);
    OPENSSL_free(der);
    EVP_PKEY_CTX_free(c);
    return ok;
}

/* AES-CBC/PKCS#7 decryption of IV || ciphertext with a 16/24/32-byte key. */
static int aes_cbc_decrypt(const sks_buf *key, const uint8_t *in, size_t n, sks_buf *out)
{
    const EVP_CIPHER *cipher = key->len == 16 ? EVP_aes_128_cbc() : key->len == 24 ? EVP_aes_192_cbc()
                             : key->len == 32 ? EVP_aes_256_cbc() : NULL;
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    uint8_t buf[4096];
    int l1 = 0, l2 = 0, ok = 0;

    if (c != NULL && cipher != NULL && n >= 32 && n - 16 <= sizeof(buf) - 16
        && EVP_DecryptInit_ex(c, cipher, NULL, key->data, in) == 1
        && EVP_DecryptUpdate(c, buf, &l1, in + 16, (int)(n - 16)) == 1 && EVP_DecryptFinal_ex(c, buf + l1, &l2) == 1) {
        sks_buf_reset(out);
        sks_buf_put(out, buf, (size_t)(l1 + l2));
        ok = !out->failed;
    }
    EVP_CIPHER_CTX_free(c);
    return ok;
}

/* ------------------------------------------------------------------ provisioning calls */

static void replay_create_provisioning_session(sks_buf *req, sks_buf *rep)
{
    const char *letter = need_str("session");
    const char *csid = need_str("out.clientSessionId");
    model_session *s;
    sks_reader r;
    size_t i;

    for (i = 0; i < g_n_sessions; i++)
        if (g_sessions[i].letter == letter[0] && !g_sessions[i].removed)
            fail("session \"%s\" is created twice", letter);
    if (g_n_sessions == sizeof(g_sessions) / sizeof(g_sessions[0]))
        fail("too many sessions");
    s = &g_sessions[g_n_sessions++];
    memset(s, 0, sizeof(*s));
    s->letter = letter[0];
    s->open = 1;
    if (g_hooks.ephemeral == NULL || g_hooks.ephemeral_taken)
        fail("no internal.clientEphemeralKey event precedes this session");
    if (strlen(csid) > 32)
        fail("out.clientSessionId is longer than 32 characters");
    snprintf(g_hooks.client_session_id, sizeof(g_hooks.client_session_id), "%s", csid);

    sks_buf_byte(req, M_CREATE_PROVISIONING_SESSION);
    s->algorithm = xstrdup(need_str("in.sessionKeyAlgorithm"));
    sks_buf_string(req, s->algorithm);
    s->privacy = need_bool("in.privacyEnabled");
    sks_buf_bool(req, s->privacy);
    s->server_session_id = xstrdup(need_str("in.serverSessionId"));
    sks_buf_string(req, s->server_session_id);
    put_arr(req, "in.serverEphemeralKey");
    s->issuer_uri = xstrdup(need_str("in.issuerUri"));
    sks_buf_string(req, s->issuer_uri);
    sks_buf_init(&s->kmk);
    need_hex("in.keyManagementKey", &s->kmk);
    sks_buf_array(req, s->kmk.data, s->kmk.len);
    s->client_time = put_uint(req, "in.clientTime");
    s->lifetime = (uint32_t)need_uint("in.sessionLifeTime", 0xFFFF);
    sks_buf_ushort(req, (uint16_t)s->lifetime);
    put_ushort(req, "in.sessionKeyLimit");
    put_arr(req, "in.serverCertificate");
    run(req, rep);
    g_hooks.client_session_id[0] = '\0';
    if (!g_hooks.ephemeral_taken)
        fail("createProvisioningSession did not ask the test hook for the client ephemeral key");
    EVP_PKEY_free(g_hooks.ephemeral);
    g_hooks.ephemeral = NULL;

    expect_ok("createProvisioningSession", rep, &r);
    {
        sks_span got_csid = sks_get_id(&r, "clientSessionId");
        sks_span eph = sks_get_array(&r, "clientEphemeralKey");
        sks_span att = sks_get_array(&r, "attestation");
        uint32_t handle = sks_get_uint(&r, "provisioningHandle");

        expect_end("createProvisioningSession", &r);
        cmp_text("createProvisioningSession clientSessionId", got_csid, csid);
        cmp_field("createProvisioningSession clientEphemeralKey", eph, "out.clientEphemeralKey");
        cmp_field(s->privacy ? "createProvisioningSession attestation (privacy HMAC)"
                             : "createProvisioningSession attestation (device signature)",
                  att, "out.attestation");
        cmp_uint("createProvisioningSession provisioningHandle", handle,
                 need_uint("out.provisioningHandle", 0xFFFFFFFFu));
        s->handle = handle;
        s->client_session_id = xstrdup(csid);
    }
}

static void replay_create_puk_policy(sks_buf *req, sks_buf *rep)
{
    model_session *s = session_by_letter(need_str("session"));
    sks_reader r;

    sks_buf_byte(req, M_CREATE_PUK_POLICY);
    sks_buf_uint(req, s->handle);
    put_str(req, "in.id");
    put_arr(req, "in.encryptedPuk");
    put_byte(req, "in.format");
    put_ushort(req, "in.retryLimit");
    put_arr(req, "in.mac");
    run(req, rep);
    expect_ok("createPukPolicy", rep, &r);
    cmp_uint("createPukPolicy pukPolicyHandle", sks_get_uint(&r, "pukPolicyHandle"),
             need_uint("out.pukPolicyHandle", 0xFFFFFFFFu));
    expect_end("createPukPolicy", &r);
}

static void replay_create_pin_policy(sks_buf *req, sks_buf *rep)
{
    model_session *s = session_by_letter(need_str("session"));
    int user_defined;
    uint32_t handle;
    sks_reader r;

    sks_buf_byte(req, M_CREATE_PIN_POLICY);
    sks_buf_uint(req, s->handle);
    put_str(req, "in.id");
    put_uint(req, "in.pukPolicyHandle");
    user_defined = need_bool("in.userDefined");
    sks_buf_bool(req, user_defined);
    put_bool(req, "in.userModifiable");
    put_byte(req, "in.format");
    put_ushort(req, "in.retryLimit");
    put_byte(req, "in.grouping");
    put_byte(req, "in.patternRestrictions");
    put_ushort(req, "in.minLength");
    put_ushort(req, "in.maxLength");
    put_byte(req, "in.inputMethod");
    put_arr(req, "in.mac");
    run(req, rep);
    expect_ok("createPinPolicy", rep, &r);
    handle = sks_get_uint(&r, "pinPolicyHandle");
    expect_end("createPinPolicy", &r);
    cmp_uint("createPinPolicy pinPolicyHandle", handle, need_uint("out.pinPolicyHandle", 0xFFFFFFFFu));
    if (g_n_pin_policies == sizeof(g_pin_policies) / sizeof(g_pin_policies[0]))
        fail("too many PIN policies");
    g_pin_policies[g_n_pin_policies].handle = handle;
    g_pin_policies[g_n_pin_policies++].user_defined = user_defined;
}

static void replay_create_key_entry(sks_buf *req, sks_buf *rep)
{
    model_session *s = session_by_letter(need_str("session"));
    const char *id = need_str("in.id");
    const cJSON *endorsed = need("in.endorsedAlgorithms"), *item;
    uint32_t pin_policy, handle;
    sks_buf pin_value;
    model_key *k;
    sks_reader r;
    size_t i;

    sks_buf_init(&pin_value);
    sks_buf_byte(req, M_CREATE_KEY_ENTRY);
    sks_buf_uint(req, s->handle);
    sks_buf_string(req, id);
    put_str(req, "in.keyEntryAlgorithm");
    put_arr(req, "in.serverSeed");
    put_bool(req, "in.devicePinProtection");
    pin_policy = put_uint(req, "in.pinPolicyHandle");
    need_hex("in.pinValue", &pin_value);
    sks_buf_array(req, pin_value.data, pin_value.len);
    put_bool(req, "in.enablePinCaching");
    put_byte(req, "in.biometricProtection");
    put_byte(req, "in.exportProtection");
    put_byte(req, "in.deleteProtection");
    put_byte(req, "in.appUsage");
    put_str(req, "in.friendlyName");
    put_str(req, "in.keyAlgorithm");
    put_arr(req, "in.keyParameters");
    if (!cJSON_IsArray(endorsed) && !cJSON_IsNull(endorsed))
        fail("in.endorsedAlgorithms is not a list");
    sks_buf_ushort(req, (uint16_t)cJSON_GetArraySize(endorsed));
    cJSON_ArrayForEach(item, endorsed)
    {
        if (!cJSON_IsString(item))
            fail("in.endorsedAlgorithms holds a non-string");
        sks_buf_string(req, item->valuestring);
    }
    put_arr(req, "in.mac");
    g_hooks.generated_asked[0] = '\0';
    run(req, rep);
    expect_ok("createKeyEntry", rep, &r);
    if (strcmp(g_hooks.generated_asked, id) != 0)
        fail("createKeyEntry did not ask the test hook for the key pair of \"%s\"", id);
    handle = sks_get_uint(&r, "keyHandle");
    cmp_uint("createKeyEntry keyHandle", handle, need_uint("out.keyHandle", 0xFFFFFFFFu));
    cmp_field("createKeyEntry publicKey", sks_get_array(&r, "publicKey"), "out.publicKey");
    cmp_field("createKeyEntry attestation (key.1)", sks_get_array(&r, "attestation"), "out.attestation");
    expect_end("createKeyEntry", &r);

    if (handle == 0 || handle > MAX_HANDLES || g_created[handle])
        fail("key handle #%u is out of the replay's range or reused", handle);
    g_created[handle] = 1;
    k = &g_keys[handle];
    memset(k, 0, sizeof(*k));
    k->live = 1;
    snprintf(k->id, sizeof(k->id), "%s", id);
    k->session = s->handle;
    k->app_usage = (uint8_t)need_uint("in.appUsage", 0xFF);
    k->friendly_name = xstrdup(need_str("in.friendlyName"));
    sks_buf_ushort(&k->endorsed, (uint16_t)cJSON_GetArraySize(endorsed));
    cJSON_ArrayForEach(item, endorsed)
    {
        sks_buf_string(&k->endorsed, item->valuestring);
    }
    if (pin_policy != 0) {
        k->pin_protected = 1;
        for (i = 0; i < g_n_pin_policies && g_pin_policies[i].handle != pin_policy; i++)
            ;
        if (i == g_n_pin_policies)
            fail("in.pinPolicyHandle #%u was not created", pin_policy);
        if (g_pin_policies[i].user_defined) {
            sks_buf_put(&k->pin, pin_value.data, pin_value.len);
        } else {
            const sks_buf *clear = plaintext_of(&pin_value);
            sks_buf_put(&k->pin, clear->data, clear->len);
        }
    }
    if (g_n_ids < sizeof(g_ids) / sizeof(g_ids[0])) {
        snprintf(g_ids[g_n_ids].id, sizeof(g_ids[g_n_ids].id), "%s", id);
        g_ids[g_n_ids++].handle = handle;
    }
    sks_buf_free(&pin_value);
}

static void replay_set_certificate_path(sks_buf *req, sks_buf *rep)
{
    const cJSON *path = need("in.certificatePath"), *item;
    uint32_t handle;
    model_key *k;
    sks_buf cert;

    sks_buf_init(&cert);
    sks_buf_byte(req, M_SET_CERTIFICATE_PATH);
    handle = put_uint(req, "in.keyHandle");
    k = model_key_at(handle);
    if (!cJSON_IsArray(path) || cJSON_GetArraySize(path) == 0)
        fail("in.certificatePath is not a non-empty list");
    sks_buf_reset(&k->certs);
    sks_buf_ushort(req, (uint16_t)cJSON_GetArraySize(path));
    sks_buf_ushort(&k->certs, (uint16_t)cJSON_GetArraySize(path));
    cJSON_ArrayForEach(item, path)
    {
        json_hex("in.certificatePath[]", item, &cert);
        sks_buf_array(req, cert.data, cert.len);
        sks_buf_array(&k->certs, cert.data, cert.len);
        if (item == path->child) {
            sks_buf_reset(&k->ee);
            sks_buf_put(&k->ee, cert.data, cert.len);
        }
    }
    put_arr(req, "in.mac");
    run_no_output("setCertificatePath", req, rep);
    k->has_certs = 1;
    sks_buf_free(&cert);
}

static void replay_add_extension(sks_buf *req, sks_buf *rep)
{
    uint32_t handle;
    model_key *k;
    model_ext *e;
    sks_buf data;

    sks_buf_init(&data);
    sks_buf_byte(req, M_ADD_EXTENSION);
    handle = put_uint(req, "in.keyHandle");
    k = model_key_at(handle);
    if (k->n_ext == sizeof(k->ext) / sizeof(k->ext[0]))
        fail("too many extensions");
    e = &k->ext[k->n_ext];
    memset(e, 0, sizeof(*e));
    e->type = xstrdup(need_str("in.type"));
    sks_buf_string(req, e->type);
    e->sub_type = (uint8_t)need_uint("in.subType", 0xFF);
    sks_buf_byte(req, e->sub_type);
    e->qualifier = xstrdup(need_str("in.qualifier"));
    sks_buf_string(req, e->qualifier);
    need_hex("in.extensionData", &data);
    sks_buf_blob(req, data.data, data.len);
    put_arr(req, "in.mac");
    run_no_output("addExtension", req, rep);
    if (e->sub_type == 1) { /* encrypted: the device keeps (and returns) the plaintext */
        const sks_buf *clear = plaintext_of(&data);
        sks_buf_put(&e->data, clear->data, clear->len);
    } else {
        sks_buf_put(&e->data, data.data, data.len);
    }
    k->n_ext++;
    sks_buf_free(&data);
}

static void replay_import_key(sks_buf *req, sks_buf *rep, int symmetric)
{
    uint32_t handle;
    model_key *k;
    sks_buf enc;

    sks_buf_init(&enc);
    sks_buf_byte(req, symmetric ? M_IMPORT_SYMMETRIC_KEY : M_IMPORT_PRIVATE_KEY);
    handle = put_uint(req, "in.keyHandle");
    k = model_key_at(handle);
    need_hex("in.encryptedKey", &enc);
    sks_buf_array(req, enc.data, enc.len);
    put_arr(req, "in.mac");
    run_no_output(symmetric ? "importSymmetricKey" : "importPrivateKey", req, rep);
    if (symmetric) {
        const sks_buf *clear = plaintext_of(&enc);
        sks_buf_reset(&k->symmetric);
        sks_buf_put(&k->symmetric, clear->data, clear->len);
    }
    sks_buf_free(&enc);
}

static void replay_post_operation(sks_buf *req, sks_buf *rep, int method, const char *name)
{
    model_session *s = session_by_letter(need_str("session"));
    const cJSON *key_handle = need("in.keyHandle");
    uint32_t prov = (uint32_t)need_uint("in.provisioningHandle", 0xFFFFFFFFu), new_key = 0, target;

    if (prov != s->handle)
        fail("in.provisioningHandle #%u is not session %c (#%u)", prov, s->letter, s->handle);
    sks_buf_byte(req, (uint8_t)method);
    if (method == M_POST_UPDATE_KEY || method == M_POST_CLONE_KEY_PROTECTION) {
        new_key = (uint32_t)json_uint("in.keyHandle", key_handle, 0xFFFFFFFFu);
        if (model_key_at(new_key)->session != s->handle)
            fail("%s: the new key #%u is not of session %c", name, new_key, s->letter);
        sks_buf_uint(req, new_key);
    } else {
        if (!cJSON_IsNull(key_handle))
            fail("%s: in.keyHandle should be null", name);
        sks_buf_uint(req, prov);
    }
    target = put_uint(req, "in.targetKeyHandle");
    model_key_at(target);
    put_arr(req, "in.authorization");
    put_arr(req, "in.mac");
    run_no_output(name, req, rep);
    if (s->n_ops == sizeof(s->ops) / sizeof(s->ops[0]))
        fail("too many post operations");
    s->ops[s->n_ops].method = method;
    s->ops[s->n_ops].new_key = new_key;
    s->ops[s->n_ops++].target = target;
}

/* The model's view of closeProvisioningSession: post operations in call order, then the
 * sessions of their targets are adopted by the closing session. */
static void model_close(model_session *s)
{
    uint32_t owners[16];
    size_t n_owners = 0, i, j;
    uint32_t h;

    for (i = 0; i < s->n_ops; i++) {
        uint32_t owner = model_key_at(s->ops[i].target)->session;
        for (j = 0; j < n_owners && owners[j] != owner; j++)
            ;
        if (j == n_owners)
            owners[n_owners++] = owner;
    }
    for (i = 0; i < s->n_ops; i++) {
        model_key *t = model_key_at(s->ops[i].target);
        switch (s->ops[i].method) {
        case M_POST_DELETE_KEY:
            model_key_clear(t);
            break;
        case M_POST_UNLOCK_KEY: /* error counters are checked through getKeyProtectionInfo */
            break;
        case M_POST_UPDATE_KEY: {
            /* The new key takes the target's handle and keeps the target's PIN protection. */
            model_key *n = model_key_at(s->ops[i].new_key);
            int pin_protected = t->pin_protected;
            sks_buf pin = t->pin;
            sks_buf_init(&t->pin);
            model_key_clear(t);
            *t = *n;
            sks_buf_free(&t->pin);
            t->pin = pin;
            t->pin_protected = pin_protected;
            memset(n, 0, sizeof(*n));
            for (j = 0; j < g_n_ids; j++)
                if (g_ids[j].handle == s->ops[i].new_key)
                    g_ids[j].handle = s->ops[i].target;
            break;
        }
        case M_POST_CLONE_KEY_PROTECTION: {
            model_key *n = model_key_at(s->ops[i].new_key);
            n->pin_protected = t->pin_protected;
            sks_buf_reset(&n->pin);
            sks_buf_put(&n->pin, t->pin.data, t->pin.len);
            break;
        }
        default:
            fail("unknown post operation");
        }
    }
    for (i = 0; i < n_owners; i++) {
        if (owners[i] == s->handle)
            continue;
        for (h = 1; h <= MAX_HANDLES; h++)
            if (g_keys[h].live && g_keys[h].session == owners[i])
                g_keys[h].session = s->handle;
        session_by_handle(owners[i])->removed = 1;
    }
    s->n_ops = 0;
    s->open = 0;
    for (h = 1; h <= MAX_HANDLES && !(g_keys[h].live && g_keys[h].session == s->handle); h++)
        ;
    if (h > MAX_HANDLES) /* a session that owns no key goes at once */
        s->removed = 1;
}

static void replay_close_provisioning_session(sks_buf *req, sks_buf *rep)
{
    model_session *s = session_by_letter(need_str("session"));
    sks_reader r;

    sks_buf_byte(req, M_CLOSE_PROVISIONING_SESSION);
    if (put_uint(req, "in.provisioningHandle") != s->handle)
        fail("in.provisioningHandle is not session %c (#%u)", s->letter, s->handle);
    put_arr(req, "in.nonce");
    put_arr(req, "in.mac");
    run(req, rep);
    expect_ok("closeProvisioningSession", rep, &r);
    cmp_field("closeProvisioningSession attestation", sks_get_array(&r, "attestation"), "out.attestation");
    expect_end("closeProvisioningSession", &r);
    model_close(s);
    check_store();
}

static void replay_update_key_management_key(sks_buf *req, sks_buf *rep)
{
    model_session *s;
    uint32_t handle;
    sks_buf kmk, auth;

    sks_buf_init(&kmk);
    sks_buf_init(&auth);
    sks_buf_byte(req, M_UPDATE_KEY_MANAGEMENT_KEY);
    handle = put_uint(req, "in.provisioningHandle");
    s = session_by_handle(handle);
    need_hex("in.keyManagementKey", &kmk);
    sks_buf_array(req, kmk.data, kmk.len);
    json_hex("in.authorization", need_prefixed("in.authorization"), &auth);
    sks_buf_array(req, auth.data, auth.len);
    run_no_output("updateKeyManagementKey", req, rep);
    sks_buf_free(&s->kmk);
    s->kmk = kmk;
    sks_buf_free(&auth);
}

/* ------------------------------------------------------------------ User API calls */

static const char *g_default_hash_hex; /* the first signHashedData in.data */
static const char *g_bad_pin_hex;      /* the first wrong PIN */

static uint32_t user_key_handle(void)
{
    const cJSON *j = field("keyHandle");

    if (j == NULL)
        j = need("in.keyHandle");
    return (uint32_t)json_uint("keyHandle", j, 0xFFFFFFFFu);
}

/* Expected error status of the event, or 0. */
static unsigned expected_error(void)
{
    const cJSON *j = field("error");

    return j ? (unsigned)json_uint("error", j, 0xFF) : 0;
}

/* authorization: as given, else a wrong PIN for calls expected to fail, else the key's PIN. */
static void user_authorization(const model_key *k, unsigned error, sks_buf *auth)
{
    const cJSON *j = field("in.authorization");

    sks_buf_reset(auth);
    if (j != NULL)
        json_hex("in.authorization", j, auth);
    else if (error == SKS_ERROR_AUTHORIZATION) {
        if (g_bad_pin_hex == NULL)
            fail("the transcript has no wrong PIN to replay this call with");
        hex_decode("bad PIN", g_bad_pin_hex, auth);
    } else if (k->pin_protected)
        sks_buf_put(auth, k->pin.data, k->pin.len);
}

/* The User API prefix: keyHandle, algorithm, [mode], parameters, biometricAuth, authorization. */
static void put_user_prefix(sks_buf *req, int method, uint32_t handle, const char *algorithm, int with_mode,
                            const sks_buf *auth)
{
    sks_buf params;
    const cJSON *j;

    sks_buf_init(&params);
    sks_buf_byte(req, (uint8_t)method);
    sks_buf_uint(req, handle);
    sks_buf_string(req, algorithm);
    if (with_mode)
        put_bool(req, "in.mode");
    if ((j = field("in.parameters")) != NULL)
        json_hex("in.parameters", j, &params);
    sks_buf_array(req, params.data, params.len);
    sks_buf_bool(req, 0);
    sks_buf_array(req, auth->data, auth->len);
    sks_buf_free(&params);
}

/* After an expected error: the status, the message if the transcript has one, and the
 * PIN-blocked state if it has that. */
static void check_user_error(const char *method, const sks_buf *rep, unsigned error, uint32_t handle)
{
    const cJSON *msg, *blocked;
    sks_span got = expect_error(method, rep, error);
    char what[96];

    if ((msg = field("message")) != NULL) {
        if (!cJSON_IsString(msg))
            fail("message is not a string");
        snprintf(what, sizeof(what), "%s error message", method);
        cmp_text(what, got, msg->valuestring);
    }
    if ((blocked = field("pinBlocked")) != NULL) {
        if (!cJSON_IsBool(blocked))
            fail("pinBlocked is not a boolean");
        check_protection(handle, model_key_at(handle)->pin_protected, 1, cJSON_IsTrue(blocked));
    }
}

static void replay_sign_hashed_data(sks_buf *req, sks_buf *rep)
{
    uint32_t handle = user_key_handle();
    model_key *k = model_key_at(handle);
    unsigned error = expected_error();
    EVP_PKEY *pub = model_public_key(k);
    const cJSON *alg_j = field("in.algorithm"), *data_j = field("in.data");
    const char *algorithm = alg_j ? need_str("in.algorithm")
                                  : EVP_PKEY_get_base_id(pub) == EVP_PKEY_EC ? ALG_ECDSA_SHA256 : ALG_RSA_SHA256;
    sks_buf auth, data, tsig;
    sks_reader r;

    sks_buf_init(&auth);
    sks_buf_init(&data);
    sks_buf_init(&tsig);
    user_authorization(k, error, &auth);
    if (data_j != NULL)
        json_hex("in.data", data_j, &data);
    else if (g_default_hash_hex != NULL)
        hex_decode("default hash", g_default_hash_hex, &data);
    else
        fail("the transcript has no signHashedData data to replay this call with");
    put_user_prefix(req, M_SIGN_HASHED_DATA, handle, algorithm, 0, &auth);
    sks_buf_array(req, data.data, data.len);
    run(req, rep);
    if (error != 0) {
        check_user_error("signHashedData", rep, error, handle);
    } else {
        sks_span sig;
        expect_ok("signHashedData", rep, &r);
        sig = sks_get_array(&r, "result");
        expect_end("signHashedData", &r);
        if (field("out.signatureRawRS") != NULL) {
            /* ECDSA is randomized: verify the device's signature, and check that the
             * transcript's own one verifies over the same hash (so the inputs are right). */
            need_hex("out.signatureRawRS", &tsig);
            if (!ecdsa_raw_verify(pub, data.data, data.len, tsig.data, tsig.len))
                fail("the transcript's ECDSA signature does not verify with key #%u over the replayed hash: the "
                     "replay's inputs are wrong",
                     handle);
            g_values++;
            if (!ecdsa_raw_verify(pub, data.data, data.len, sig.p, sig.n))
                fail("signHashedData: the device's ECDSA signature (%zu bytes) does not verify with the public key of "
                     "key #%u \"%s\"",
                     sig.n, handle, k->id);
            g_values++;
            if (sig.n != tsig.len)
                fail("signHashedData: ECDSA r||s is %zu bytes, the transcript's is %zu", sig.n, tsig.len);
        } else {
            cmp_field("signHashedData signature", sig, "out.signature");
        }
        if (auth.len > 0) { /* a PIN that worked is the key's PIN */
            sks_buf_reset(&k->pin);
            sks_buf_put(&k->pin, auth.data, auth.len);
        }
    }
    EVP_PKEY_free(pub);
    sks_buf_free(&auth);
    sks_buf_free(&data);
    sks_buf_free(&tsig);
}

/* asymmetricKeyDecrypt, keyAgreement, performHmac: one input, one byte[] output. */
static void replay_simple_user_call(sks_buf *req, sks_buf *rep, int method, const char *name, const char *in_field,
                                    int blob_input, const char *out_field)
{
    uint32_t handle = user_key_handle();
    model_key *k = model_key_at(handle);
    unsigned error = expected_error();
    sks_buf auth;
    sks_reader r;

    sks_buf_init(&auth);
    user_authorization(k, error, &auth);
    put_user_prefix(req, method, handle, need_str("in.algorithm"), 0, &auth);
    if (blob_input)
        put_blob(req, in_field);
    else
        put_arr(req, in_field);
    run(req, rep);
    if (error != 0) {
        check_user_error(name, rep, error, handle);
    } else {
        char what[64];
        expect_ok(name, rep, &r);
        snprintf(what, sizeof(what), "%s result", name);
        cmp_field(what, sks_get_array(&r, "result"), out_field);
        expect_end(name, &r);
    }
    sks_buf_free(&auth);
}

static void replay_symmetric_key_encrypt(sks_buf *req, sks_buf *rep)
{
    uint32_t handle = user_key_handle();
    model_key *k = model_key_at(handle);
    unsigned error = expected_error();
    int mode = need_bool("in.mode");
    sks_buf auth, data, exp, clear;
    sks_reader r;

    sks_buf_init(&auth);
    sks_buf_init(&data);
    sks_buf_init(&exp);
    sks_buf_init(&clear);
    user_authorization(k, error, &auth);
    put_user_prefix(req, M_SYMMETRIC_KEY_ENCRYPT, handle, need_str("in.algorithm"), 1, &auth);
    need_hex("in.data", &data);
    sks_buf_blob(req, data.data, data.len);
    run(req, rep);
    if (error != 0) {
        check_user_error("symmetricKeyEncrypt", rep, error, handle);
    } else {
        sks_span out;
        expect_ok("symmetricKeyEncrypt", rep, &r);
        out = sks_get_blob(&r, "result");
        expect_end("symmetricKeyEncrypt", &r);
        if (field("out.data(IV||ciphertext)") != NULL) {
            /* A random IV: decrypt the device's output with the key instead. */
            if (!mode)
                fail("an internal-IV output for a decryption");
            need_hex("out.data(IV||ciphertext)", &exp);
            if (!aes_cbc_decrypt(&k->symmetric, exp.data, exp.len, &clear)
                || clear.len != data.len || memcmp(clear.data, data.data, data.len) != 0)
                fail("the transcript's IV||ciphertext does not decrypt to in.data with the key: the replay's key is "
                     "wrong");
            cmp_uint("symmetricKeyEncrypt IV||ciphertext length", out.n, exp.len);
            sks_buf_reset(&clear);
            if (!aes_cbc_decrypt(&k->symmetric, out.p, out.n, &clear))
                fail("symmetricKeyEncrypt: the device's IV||ciphertext does not decrypt with the key");
            cmp_bytes("symmetricKeyEncrypt output decrypted with the key", clear.data, clear.len, data.data, data.len);
        } else {
            cmp_field("symmetricKeyEncrypt result", out, "out.data");
        }
    }
    sks_buf_free(&auth);
    sks_buf_free(&data);
    sks_buf_free(&exp);
    sks_buf_free(&clear);
}

/* getExtension of `type` on a key; compares with the model and returns the data. */
static void get_extension(uint32_t handle, const model_ext *e, sks_buf *rep, sks_span *data)
{
    sks_buf req;
    sks_reader r;
    char what[160];

    sks_buf_init(&req);
    sks_buf_byte(&req, M_GET_EXTENSION);
    sks_buf_uint(&req, handle);
    sks_buf_string(&req, e->type);
    run(&req, rep);
    expect_ok("getExtension", rep, &r);
    snprintf(what, sizeof(what), "getExtension(\"%s\") subType", e->type);
    cmp_uint(what, sks_get_byte(&r, "subType"), e->sub_type);
    snprintf(what, sizeof(what), "getExtension(\"%s\") qualifier", e->type);
    cmp_text(what, sks_get_string(&r, "qualifier"), e->qualifier);
    *data = sks_get_blob(&r, "extensionData");
    expect_end("getExtension", &r);
    sks_buf_free(&req);
}

static model_ext *find_ext(model_key *k, const char *type, int sub_type)
{
    size_t i;

    for (i = 0; i < k->n_ext; i++)
        if ((type != NULL && strcmp(k->ext[i].type, type) == 0) || (type == NULL && k->ext[i].sub_type == sub_type))
            return &k->ext[i];
    if (type != NULL)
        fail("key \"%s\" has no extension \"%s\" in the model", k->id, type);
    fail("key \"%s\" has no extension of sub-type %d in the model", k->id, sub_type);
}

static void replay_get_extension(sks_buf *req, sks_buf *rep)
{
    uint32_t handle = user_key_handle();
    model_key *k = model_key_at(handle);
    model_ext *e = find_ext(k, need_str("in.type"), -1);
    sks_span data;

    (void)req;
    cmp_uint("getExtension: the transcript's out.subType against the added extension",
             need_uint("out.subType", 0xFF), e->sub_type);
    get_extension(handle, e, rep, &data);
    cmp_field("getExtension extensionData", data, "out.data");
}

static void replay_set_property(sks_buf *req, sks_buf *rep)
{
    uint32_t handle = user_key_handle();
    model_key *k = model_key_at(handle);
    const cJSON *type_j = field("in.type");
    model_ext *e = find_ext(k, type_j ? need_str("in.type") : NULL, 2);
    sks_span data;

    sks_buf_byte(req, M_SET_PROPERTY);
    sks_buf_uint(req, handle);
    sks_buf_string(req, e->type);
    put_str(req, "in.name");
    put_str(req, "in.value");
    run_no_output("setProperty", req, rep);
    get_extension(handle, e, rep, &data);
    cmp_field("getExtension property bag after setProperty", data, "out.propertyBag");
    sks_buf_reset(&e->data);
    sks_buf_put(&e->data, data.p, data.n);
}

static void replay_change_pin(sks_buf *req, sks_buf *rep)
{
    uint32_t handle = user_key_handle();
    model_key *k = model_key_at(handle);
    unsigned error = expected_error();
    sks_buf auth, pin;
    uint32_t h;

    sks_buf_init(&auth);
    sks_buf_init(&pin);
    user_authorization(k, error, &auth);
    need_hex("in.newPin", &pin);
    sks_buf_byte(req, M_CHANGE_PIN);
    sks_buf_uint(req, handle);
    sks_buf_array(req, auth.data, auth.len);
    sks_buf_array(req, pin.data, pin.len);
    run(req, rep);
    if (error != 0) {
        check_user_error("changePin", rep, error, handle);
    } else {
        sks_reader r;
        expect_ok("changePin", rep, &r);
        expect_end("changePin", &r);
        /* Every key sharing the PIN object (same old PIN and PIN protection) gets the new PIN;
         * in this transcript that is the changed key itself. */
        for (h = 1; h <= MAX_HANDLES; h++)
            if (g_keys[h].live && g_keys[h].pin_protected && h != handle && g_keys[h].pin.len == k->pin.len
                && memcmp(g_keys[h].pin.data, k->pin.data, k->pin.len) == 0) {
                sks_buf_reset(&g_keys[h].pin);
                sks_buf_put(&g_keys[h].pin, pin.data, pin.len);
            }
        sks_buf_reset(&k->pin);
        sks_buf_put(&k->pin, pin.data, pin.len);
    }
    sks_buf_free(&auth);
    sks_buf_free(&pin);
}

/* ------------------------------------------------------------------ state events */

static uint32_t handle_of_id(const char *id, size_t id_len)
{
    size_t i;

    for (i = 0; i < g_n_ids; i++)
        if (strlen(g_ids[i].id) == id_len && memcmp(g_ids[i].id, id, id_len) == 0)
            return g_ids[i].handle;
    fail("no key \"%.*s\" was created", (int)id_len, id);
}

/* state.*: facts about the store, e.g. "Key.1.pinBlocked", "Key.3.handle(now Key.U)",
 * "Key.3.isSymmetric". */
static void replay_state(void)
{
    const cJSON *item;
    size_t n;

    cJSON_ArrayForEach(item, g_ev)
    {
        const char *name = item->string, *p;
        char what[160];

        if (informational(name))
            continue;
        mark_used(name);
        n = strlen(name);
        if (n > 11 && strcmp(name + n - 11, ".pinBlocked") == 0) {
            uint32_t h = handle_of_id(name, n - 11);
            if (!cJSON_IsBool(item))
                fail("%s is not a boolean", name);
            check_protection(h, model_key_at(h)->pin_protected, 1, cJSON_IsTrue(item));
        } else if (n > 12 && strcmp(name + n - 12, ".isSymmetric") == 0) {
            uint32_t h = handle_of_id(name, n - 12);
            sks_buf req, rep;
            sks_reader r;
            if (!cJSON_IsBool(item))
                fail("%s is not a boolean", name);
            sks_buf_init(&req);
            sks_buf_init(&rep);
            sks_buf_byte(&req, M_GET_KEY_ATTRIBUTES);
            sks_buf_uint(&req, h);
            run(&req, &rep);
            expect_ok("getKeyAttributes", &rep, &r);
            snprintf(what, sizeof(what), "%s (getKeyAttributes(key #%u) symmetricKeyLength != 0)", name, h);
            cmp_uint(what, sks_get_ushort(&r, "symmetricKeyLength") != 0, cJSON_IsTrue(item));
            sks_buf_free(&req);
            sks_buf_free(&rep);
        } else if ((p = strstr(name, ".handle(now ")) != NULL && name[n - 1] == ')') {
            /* "<old id>.handle(now <new id>)": the old key's handle now holds the new key. The
             * device must answer for that handle with the new key's certificate path. */
            const char *new_id = p + 12;
            size_t new_len = n - 1 - (size_t)(new_id - name);
            uint32_t exp = (uint32_t)json_uint(name, item, 0xFFFFFFFFu);
            uint32_t old_h = handle_of_id(name, (size_t)(p - name)), new_h = handle_of_id(new_id, new_len);
            model_key *k = model_key_at(new_h);
            if (old_h != exp || new_h != exp)
                fail("%s = %u, but the replay's model has the old key at #%u and \"%.*s\" at #%u", name, exp,
                     old_h, (int)new_len, new_id, new_h);
            if (strlen(k->id) != new_len || memcmp(k->id, new_id, new_len) != 0)
                fail("%s: the replay's model has \"%s\" at #%u", name, k->id, exp);
            check_key_attributes(exp, k);
        } else {
            fail("the replay does not know the state fact \"%s\"", name);
        }
    }
}

/* ------------------------------------------------------------------ main */

static cJSON **load_transcript(const char *path, size_t *count)
{
    FILE *f = fopen(path, "r");
    cJSON **events = NULL;
    char *line = NULL;
    size_t cap = 0, n = 0, alloc = 0;
    ssize_t len;

    if (f == NULL) {
        fprintf(stderr,
                "kat: FAIL: cannot open the known-answer transcript %s: %s\n"
                "  (it is test/data/kat/sks-kat-transcript.jsonl in the repository; pass its path as the argument)\n",
                path, strerror(errno));
        exit(1);
    }
    while ((len = getline(&line, &cap, f)) != -1) {
        cJSON *ev;
        if (len == 0 || line[0] == '\n')
            continue;
        if ((ev = cJSON_Parse(line)) == NULL || !cJSON_IsObject(ev)) {
            fprintf(stderr, "kat: FAIL: %s line %zu is not a JSON object\n", path, n + 1);
            exit(1);
        }
        if (n == alloc) {
            alloc = alloc ? alloc * 2 : 256;
            events = realloc(events, alloc * sizeof(*events));
            if (events == NULL) {
                fprintf(stderr, "kat: FAIL: out of memory\n");
                exit(1);
            }
        }
        events[n++] = ev;
    }
    free(line);
    fclose(f);
    *count = n;
    return events;
}

static const char *event_name(const cJSON *ev)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(ev, "event");

    return cJSON_IsString(j) ? j->valuestring : "";
}

/* Values the User API events leave out, taken from the rest of the transcript. */
static void prepass(cJSON **events, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        const char *name = event_name(events[i]);
        const cJSON *data = cJSON_GetObjectItemCaseSensitive(events[i], "in.data");
        const cJSON *auth = cJSON_GetObjectItemCaseSensitive(events[i], "in.authorization");
        const cJSON *error = cJSON_GetObjectItemCaseSensitive(events[i], "error");

        if (strncmp(name, "call.signHashedData", 19) == 0 && g_default_hash_hex == NULL && cJSON_IsString(data))
            g_default_hash_hex = data->valuestring;
        if (strncmp(name, "call.", 5) == 0 && g_bad_pin_hex == NULL && cJSON_IsNumber(error)
            && (int)error->valuedouble == SKS_ERROR_AUTHORIZATION && cJSON_IsString(auth))
            g_bad_pin_hex = auth->valuestring;
    }
}

static void setup_device(void)
{
    const char *tmp = getenv("TMPDIR");
    sks_store_location loc;
    char db[4200], err[512];
    sks_buf der;
    const unsigned char *q;
    EVP_PKEY *key;
    X509 *cert;
    sks_test_hooks hooks;

    if (strcmp(g_event, "meta") != 0)
        fail("the transcript does not start with a meta event");
    key = pkcs8_from_hex("meta.devicePrivateKeyPkcs8", need_str("devicePrivateKeyPkcs8"));
    sks_buf_init(&der);
    need_hex("deviceCertificate", &der);
    q = der.data;
    cert = d2i_X509(NULL, &q, (long)der.len);
    if (cert == NULL || q != der.data + der.len)
        fail("meta.deviceCertificate is not a DER certificate");
    sks_buf_free(&der);

    snprintf(g_tmpdir, sizeof(g_tmpdir), "%s/sks-kat-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    if (mkdtemp(g_tmpdir) == NULL) {
        g_tmpdir[0] = '\0';
        fail("cannot create a temporary directory: %s", strerror(errno));
    }
    snprintf(db, sizeof(db), "%s/store.db", g_tmpdir);
    loc.db_path = db;
    loc.master_key_path = NULL;
    if (!sks_store_create(&loc, key, cert, err, sizeof(err)))
        fail("sks_store_create: %s", err);
    EVP_PKEY_free(key);
    X509_free(cert);
    if ((g_dev = sks_device_open(&loc, err, sizeof(err))) == NULL)
        fail("sks_device_open: %s", err);
    memset(&hooks, 0, sizeof(hooks));
    hooks.ctx = &g_hooks;
    hooks.ephemeral_key = hook_ephemeral_key;
    hooks.client_session_id = hook_client_session_id;
    hooks.generated_key = hook_generated_key;
    sks_device_set_test_hooks(g_dev, &hooks);
}

static void replay_call(const char *method, sks_buf *req, sks_buf *rep)
{
    if (strcmp(method, "createProvisioningSession") == 0)
        replay_create_provisioning_session(req, rep);
    else if (strcmp(method, "createPukPolicy") == 0)
        replay_create_puk_policy(req, rep);
    else if (strcmp(method, "createPinPolicy") == 0)
        replay_create_pin_policy(req, rep);
    else if (strcmp(method, "createKeyEntry") == 0)
        replay_create_key_entry(req, rep);
    else if (strcmp(method, "setCertificatePath") == 0)
        replay_set_certificate_path(req, rep);
    else if (strcmp(method, "addExtension") == 0)
        replay_add_extension(req, rep);
    else if (strcmp(method, "importSymmetricKey") == 0)
        replay_import_key(req, rep, 1);
    else if (strcmp(method, "importPrivateKey") == 0)
        replay_import_key(req, rep, 0);
    else if (strcmp(method, "closeProvisioningSession") == 0)
        replay_close_provisioning_session(req, rep);
    else if (strcmp(method, "updateKeyManagementKey") == 0)
        replay_update_key_management_key(req, rep);
    else if (strcmp(method, "postUnlockKey") == 0)
        replay_post_operation(req, rep, M_POST_UNLOCK_KEY, method);
    else if (strcmp(method, "postDeleteKey") == 0)
        replay_post_operation(req, rep, M_POST_DELETE_KEY, method);
    else if (strcmp(method, "postUpdateKey") == 0)
        replay_post_operation(req, rep, M_POST_UPDATE_KEY, method);
    else if (strcmp(method, "postCloneKeyProtection") == 0)
        replay_post_operation(req, rep, M_POST_CLONE_KEY_PROTECTION, method);
    else if (strcmp(method, "signHashedData") == 0)
        replay_sign_hashed_data(req, rep);
    else if (strcmp(method, "asymmetricKeyDecrypt") == 0)
        replay_simple_user_call(req, rep, M_ASYMMETRIC_KEY_DECRYPT, method, "in.data", 0, "out.plaintext");
    else if (strcmp(method, "performHmac") == 0)
        replay_simple_user_call(req, rep, M_PERFORM_HMAC, method, "in.data", 1, "out.hmac");
    else if (strcmp(method, "keyAgreement") == 0)
        replay_simple_user_call(req, rep, M_KEY_AGREEMENT, method, "in.publicKey", 0, "out.Z");
    else if (strcmp(method, "symmetricKeyEncrypt") == 0)
        replay_symmetric_key_encrypt(req, rep);
    else if (strcmp(method, "getExtension") == 0)
        replay_get_extension(req, rep);
    else if (strcmp(method, "setProperty+getExtension") == 0)
        replay_set_property(req, rep);
    else if (strcmp(method, "changePin") == 0)
        replay_change_pin(req, rep);
    else
        fail("the replay does not know the call \"%s\"", method);
}

int main(int argc, char **argv)
{
    cJSON **events;
    size_t n, i;
    int done = 0;
    sks_buf req, rep;

    if (argc != 2) {
        fprintf(stderr, "usage: %s <sks-kat-transcript.jsonl>\n", argv[0]);
        return 2;
    }
    events = load_transcript(argv[1], &n);
    if (n == 0) {
        fprintf(stderr, "kat: FAIL: %s holds no events\n", argv[1]);
        return 1;
    }
    prepass(events, n);
    sks_buf_init(&req);
    sks_buf_init(&rep);
    for (i = 0; i < n; i++) {
        const char *name;

        begin_event(events[i]);
        name = g_event;
        if (g_seq != (long)i + 1)
            fail("events are out of order: expected seq %zu", i + 1);
        if (done)
            fail("events after \"done\"");
        if (i == 0) {
            setup_device();
            continue;
        }
        if (strcmp(name, "server.encrypt") == 0) {
            if (g_n_encrypted == sizeof(g_encrypted) / sizeof(g_encrypted[0]))
                fail("too many server.encrypt events");
            sks_buf_init(&g_encrypted[g_n_encrypted].encrypted);
            sks_buf_init(&g_encrypted[g_n_encrypted].plaintext);
            need_hex("encrypted", &g_encrypted[g_n_encrypted].encrypted);
            need_hex("plaintext", &g_encrypted[g_n_encrypted].plaintext);
            g_n_encrypted++;
        } else if (strcmp(name, "internal.clientEphemeralKey") == 0) {
            EVP_PKEY_free(g_hooks.ephemeral);
            g_hooks.ephemeral = pkcs8_from_hex("internal.clientEphemeralKey.privateKeyPkcs8", need_str("privateKeyPkcs8"));
            g_hooks.ephemeral_taken = 0;
        } else if (strcmp(name, "internal.generatedKeyPair") == 0) {
            if (g_hooks.n_generated == sizeof(g_hooks.generated) / sizeof(g_hooks.generated[0]))
                fail("too many generated key pairs");
            snprintf(g_hooks.generated[g_hooks.n_generated].id, sizeof(g_hooks.generated[0].id), "%s", need_str("id"));
            g_hooks.generated[g_hooks.n_generated++].pkcs8_hex = need_str("privateKeyPkcs8");
        } else if (strncmp(name, "server.", 7) == 0 || strncmp(name, "internal.", 9) == 0) {
            /* The issuer's and the device's inner workings: not observable through the API. */
        } else if (strncmp(name, "call.", 5) == 0) {
            char method[sizeof(g_event)];
            char *paren;

            snprintf(method, sizeof(method), "%s", name + 5);
            if ((paren = strchr(method, '(')) != NULL) /* "signHashedData(badPin)" */
                *paren = '\0';
            sks_buf_reset(&req);
            replay_call(method, &req, &rep);
            end_event();
            g_calls++;
        } else if (strncmp(name, "state.", 6) == 0) {
            replay_state();
        } else if (strcmp(name, "done") == 0) {
            const cJSON *ok = need("ok");
            if (!cJSON_IsTrue(ok))
                fail("the transcript's recording did not finish (\"ok\" is not true)");
            done = 1;
        } else {
            fail("unknown event type");
        }
    }
    if (!done)
        fail("the transcript ends without a \"done\" event (truncated?)");
    for (i = 1; i <= MAX_HANDLES; i++)
        model_key_clear(&g_keys[i]);
    sks_buf_free(&req);
    sks_buf_free(&rep);
    sks_device_close(g_dev);
    cleanup_tmpdir();
    for (i = 0; i < n; i++)
        cJSON_Delete(events[i]);
    free(events);
    printf("kat: %lu calls replayed, %lu values compared\n", g_calls, g_values);
    return 0;
}
