/*
 * libFuzzer target for the provisioning methods that carry a MAC under the session key:
 * createPukPolicy, createPinPolicy, createKeyEntry, setCertificatePath, importPrivateKey,
 * importSymmetricKey, addExtension, closeProvisioningSession, the four post operations,
 * getKeyHandle, and updateKeyManagementKey (authorized by a signature). A fuzzed request cannot reach them (the session key comes from an ECDH with a
 * random device key), so this target plays the issuer: it opens a real session through the
 * dispatcher, derives the session key as an issuer does (device/provisioning.c, tools/sks/
 * issuer.c), and for every fuzzed call computes the correct MAC over the fuzzed fields. The
 * fuzzer explores field contents, not MACs.
 *
 * An input is a session flags byte, then operations: an operation byte (OP_* below, modulo
 * OP_COUNT) and the fields it reads from the input (in_* readers: a byte chooses between a
 * harness-made value, e.g. a known algorithm URI, a key of this session or a certificate for
 * that key, and raw fuzzed bytes). Values an issuer encrypts (PUK, PIN, keys, encrypted
 * extensions) are encrypted by the harness unless the operation asks for raw bytes.
 *
 * Every input starts from a fresh copy of a template store that the harness provisions once
 * at start (a session with a keyManagementKey: keys with and without PIN and PUK, closed), so
 * post operations have targets. Keys createKeyEntry "generates" are pre-made per algorithm
 * (sks_device_set_test_hooks), so RSA-4096 costs nothing and the harness can import and
 * certify them. Checked on every call: each reply is well formed (wire_reply.h); the key.1
 * and close attestations the device returns are the ones the issuer computes.
 *
 * SKS_FUZZ_WRITE_SEEDS=DIR writes the built-in seed inputs to DIR and exits
 * (fuzz/corpus/provisioning/ holds them).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "../client/sks_client.h"
#include "store_files.h"
#include "wire_reply.h"

#define ALG "https://webpki.github.io/sks/algorithm#"
#define XMLDSIG_MORE "http://www.w3.org/2001/04/xmldsig-more#"
#define XMLENC "http://www.w3.org/2001/04/xmlenc#"
#define SESSION_ALGORITHM ALG "session.1"
#define KEY_ENTRY_ALGORITHM ALG "key.1"
#define ISSUER_URI "https://issuer.example.com/sks-fuzz"
#define MAX_OPS 48
#define MAX_OBJECTS 16
#define MAX_PATH 4

enum {
    OP_PUK_POLICY,
    OP_PIN_POLICY,
    OP_KEY_ENTRY,
    OP_CERTIFICATE_PATH,
    OP_IMPORT_PRIVATE,
    OP_IMPORT_SYMMETRIC,
    OP_EXTENSION,
    OP_CLOSE,
    OP_GET_KEY_HANDLE,
    OP_POST_DELETE,
    OP_POST_UNLOCK,
    OP_POST_UPDATE,
    OP_POST_CLONE,
    OP_NEW_SESSION,
    OP_UPDATE_KMK,
    OP_COUNT
};

/* Session flags byte. */
#define SESSION_PRIVACY 0x01
#define SESSION_KMK 0x02
#define SESSION_KEY_LIMIT_FROM_INPUT 0x04

/* ------------------------------------------------------------------ key material */

/* keyAlgorithm URIs and the key the harness hands the device for each (made on first use). */
static const struct {
    const char *uri;
    const char *type; /* "RSA", "EC", "ED25519" */
    const char *curve;
    size_t bits;
} KEY_ALGS[] = {
    { ALG "ec.nist.p256", "EC", "P-256", 0 },
    { ALG "ec.nist.p384", "EC", "P-384", 0 },
    { ALG "ec.nist.p521", "EC", "P-521", 0 },
    { ALG "ec.brainpool.p256r1", "EC", "brainpoolP256r1", 0 },
    { ALG "ec.brainpool.p320r1", "EC", "brainpoolP320r1", 0 },
    { ALG "ec.brainpool.p384r1", "EC", "brainpoolP384r1", 0 },
    { ALG "ec.brainpool.p512r1", "EC", "brainpoolP512r1", 0 },
    { ALG "ed25519", "ED25519", NULL, 0 },
    { ALG "rsa1024", "RSA", NULL, 1024 },
    { ALG "rsa2048", "RSA", NULL, 2048 },
    { ALG "rsa3072", "RSA", NULL, 3072 },
    { ALG "rsa4096", "RSA", NULL, 4096 },
    { ALG "rsa1024.exp", "RSA", NULL, 1024 },
    { ALG "rsa2048.exp", "RSA", NULL, 2048 },
    { ALG "rsa3072.exp", "RSA", NULL, 3072 },
    { ALG "rsa4096.exp", "RSA", NULL, 4096 },
};
#define N_KEY_ALGS (sizeof(KEY_ALGS) / sizeof(KEY_ALGS[0]))

/* Endorsed algorithm candidates (the harness sorts a list when asked to). */
static const char *const ENDORSED[] = {
    ALG "none", ALG "ed25519", ALG "ecdh.raw", ALG "ecdsa.none", ALG "rsa.pkcs1.none", ALG "rsa.pss.sha256",
    ALG "rsa.es.pkcs1_5", ALG "rsa.oaep.sha256", ALG "rsa.oaep", ALG "aes.cbc", ALG "aes.ecb.nopad",
    XMLDSIG_MORE "ecdsa-sha256", XMLDSIG_MORE "rsa-sha256", XMLDSIG_MORE "hmac-sha256",
    "http://www.w3.org/2000/09/xmldsig#hmac-sha1", XMLENC "aes128-cbc", XMLENC "aes256-cbc", ALG "session.1",
    ALG "ec.nist.p256",
};
#define N_ENDORSED (sizeof(ENDORSED) / sizeof(ENDORSED[0]))

static const char *const EXTENSION_TYPES[] = {
    "https://example.com/sks-fuzz/extension",
    "https://example.com/sks-fuzz/properties",
    "http://xmlns.webpki.org/keygen2/logotype#list",
    "urn:x",
};
#define N_EXTENSION_TYPES (sizeof(EXTENSION_TYPES) / sizeof(EXTENSION_TYPES[0]))

static EVP_PKEY *premade[N_KEY_ALGS];
static EVP_PKEY *issuer_ephemeral; /* the issuer's ECDH key, P-256 */
static EVP_PKEY *kmk;              /* the issuer's keyManagementKey, P-256 */
static EVP_PKEY *kmk2;             /* the one updateKeyManagementKey rolls over to, P-384 */
static EVP_PKEY *ca_key;           /* Ed25519: certificates come out the same every time */
static X509 *ca_cert;
static sks_buf ca_der, issuer_ephemeral_spki, kmk_spki, kmk2_spki;

static void die(const char *what, const char *detail) __attribute__((noreturn));

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_provisioning: %s: %s\n", what, detail);
    abort();
}

static EVP_PKEY *premade_key(size_t alg)
{
    if (premade[alg] == NULL) {
        if (strcmp(KEY_ALGS[alg].type, "RSA") == 0)
            premade[alg] = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", KEY_ALGS[alg].bits);
        else if (strcmp(KEY_ALGS[alg].type, "EC") == 0)
            premade[alg] = EVP_PKEY_Q_keygen(NULL, NULL, "EC", KEY_ALGS[alg].curve);
        else
            premade[alg] = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
        if (premade[alg] == NULL)
            die("key generation", KEY_ALGS[alg].uri);
    }
    return premade[alg];
}

/* The key createKeyEntry is about to generate, set before each call (test hook). */
static EVP_PKEY *next_generated;

static EVP_PKEY *hook_generated_key(void *ctx, const char *id)
{
    (void)ctx;
    (void)id;
    if (next_generated == NULL || !EVP_PKEY_up_ref(next_generated))
        return NULL;
    return next_generated;
}

static void der_of_pubkey(EVP_PKEY *k, sks_buf *out)
{
    unsigned char *der = NULL;
    int n = i2d_PUBKEY(k, &der);

    if (n <= 0)
        die("i2d_PUBKEY", "failed");
    sks_buf_put(out, der, (size_t)n);
    OPENSSL_free(der);
}

static void der_of_pkcs8(EVP_PKEY *k, sks_buf *out)
{
    PKCS8_PRIV_KEY_INFO *p8 = EVP_PKEY2PKCS8(k);
    unsigned char *der = NULL;
    int n = p8 ? i2d_PKCS8_PRIV_KEY_INFO(p8, &der) : -1;

    if (n <= 0)
        die("PKCS#8", "failed");
    sks_buf_put(out, der, (size_t)n);
    OPENSSL_clear_free(der, (size_t)n);
    PKCS8_PRIV_KEY_INFO_free(p8);
}

/* A certificate from the harness CA for `pub`; serial and validity fixed, Ed25519 signature:
 * the same DER for the same key and serial. */
static X509 *make_cert(EVP_PKEY *pub, long serial, int self_signed)
{
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();

    if (x == NULL || name == NULL || X509_set_version(x, 2) != 1
        || ASN1_INTEGER_set(X509_get_serialNumber(x), serial) != 1
        || X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)(self_signed ? "sks fuzz CA" : "sks fuzz key"), -1, -1, 0) != 1
        || X509_set_subject_name(x, name) != 1
        || X509_set_issuer_name(x, self_signed ? name : X509_get_subject_name(ca_cert)) != 1
        || ASN1_TIME_set(X509_getm_notBefore(x), 1700000000) == NULL
        || ASN1_TIME_set(X509_getm_notAfter(x), 2000000000) == NULL || X509_set_pubkey(x, pub) != 1
        || X509_sign(x, ca_key, NULL) <= 0)
        die("certificate", "cannot be made");
    X509_NAME_free(name);
    return x;
}

static void der_of_cert(X509 *x, sks_buf *out)
{
    unsigned char *der = NULL;
    int n = i2d_X509(x, &der);

    if (n <= 0)
        die("i2d_X509", "failed");
    sks_buf_put(out, der, (size_t)n);
    OPENSSL_free(der);
}

static void cert_for_spki(const uint8_t *spki, size_t n, long serial, sks_buf *out)
{
    const unsigned char *q = spki;
    EVP_PKEY *pub = d2i_PUBKEY(NULL, &q, (long)n);
    X509 *x;

    if (pub == NULL)
        return; /* not a key: the harness sends an empty certificate */
    x = make_cert(pub, serial, 0);
    der_of_cert(x, out);
    X509_free(x);
    EVP_PKEY_free(pub);
}

static int hmac_sha256(const uint8_t *key, size_t keylen, const uint8_t *data, size_t n, uint8_t out[32])
{
    size_t len = 0;

    return EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, keylen, data, n, out, 32, &len) != NULL && len == 32;
}

/* SHA-256 with ECDSA, raw r || s as the device expects (keyManagementKey authorizations). */
static void sign_raw(EVP_PKEY *key, const sks_buf *data, sks_buf *out)
{
    EVP_MD_CTX *mc = EVP_MD_CTX_new();
    unsigned char der[160], raw[132];
    const unsigned char *q = der;
    size_t n = sizeof(der);
    int half = (EVP_PKEY_get_bits(key) + 7) / 8;
    ECDSA_SIG *sig;

    if (mc == NULL || half > 66 || EVP_DigestSignInit_ex(mc, NULL, "SHA256", NULL, NULL, key, NULL) != 1
        || EVP_DigestSign(mc, der, &n, data->data, data->len) != 1 || (sig = d2i_ECDSA_SIG(NULL, &q, (long)n)) == NULL)
        die("ECDSA", "signature failed");
    if (BN_bn2binpad(ECDSA_SIG_get0_r(sig), raw, half) != half
        || BN_bn2binpad(ECDSA_SIG_get0_s(sig), raw + half, half) != half)
        die("ECDSA", "r or s too long");
    sks_buf_put(out, raw, 2 * (size_t)half);
    ECDSA_SIG_free(sig);
    EVP_MD_CTX_free(mc);
}

/* ------------------------------------------------------------------ the transport */

static sks_device *dev;

/* The client's requests go straight to the dispatcher; every reply is checked. */
static int fuzz_transport_call(sks_transport *t, const uint8_t *req, size_t n, sks_buf *reply, char *err, size_t errlen)
{
    (void)t;
    (void)err;
    (void)errlen;
    sks_device_dispatch(dev, req, n, reply);
    fuzz_check_reply(reply);
    return 1;
}

static void fuzz_transport_close(sks_transport *t)
{
    (void)t;
}

static sks_transport transport = { fuzz_transport_call, fuzz_transport_close, NULL };

/* ------------------------------------------------------------------ the input */

typedef struct {
    const uint8_t *p;
    size_t n;
} fuzz_in;

static uint8_t in_byte(fuzz_in *in)
{
    uint8_t v = 0;

    if (in->n > 0) {
        v = *in->p++;
        in->n--;
    }
    return v;
}

static uint16_t in_u16(fuzz_in *in)
{
    uint16_t hi = in_byte(in);
    return (uint16_t)(hi << 8 | in_byte(in));
}

static uint32_t in_u32(fuzz_in *in)
{
    uint32_t hi = in_u16(in);
    return hi << 16 | in_u16(in);
}

/* A length (u16, modulo max + 1) and that many bytes, as many as are left. */
static sks_span in_bytes(fuzz_in *in, size_t max)
{
    size_t len = in_u16(in) % (max + 1);
    sks_span s;

    if (len > in->n)
        len = in->n;
    s.p = in->p;
    s.n = len;
    in->p += len;
    in->n -= len;
    return s;
}

/* Fuzzed text for a string, id or uri argument: up to the first NUL (the client takes C
 * strings; the wire decoder's own checks of these fields are fuzz_wire's business). */
static void in_text(fuzz_in *in, char *out, size_t cap)
{
    sks_span s = in_bytes(in, cap - 1);
    size_t n = strnlen((const char *)s.p, s.n);

    memcpy(out, s.p, n);
    out[n] = '\0';
}

/* id: "id<byte>" for a byte below 0xC0, else fuzzed text. */
static void in_id(fuzz_in *in, char out[48])
{
    uint8_t b = in_byte(in);

    if (b < 0xC0)
        snprintf(out, 48, "id%u", b);
    else
        in_text(in, out, 48);
}

/* One of a table's entries for a byte below 0xF0, else fuzzed text. Returns the entry's
 * index, or -1 for text. */
static int in_choice(fuzz_in *in, const char *const *table, size_t n, char *out, size_t cap)
{
    uint8_t b = in_byte(in);

    if (b < 0xF0 && n > 0) {
        snprintf(out, cap, "%s", table[b % n]);
        return (int)(b % n);
    }
    in_text(in, out, cap);
    return -1;
}

/* Up to three byte edits (position, value) on harness-made DER. */
static void in_edits(fuzz_in *in, sks_buf *b)
{
    unsigned n = in_byte(in) % 4, i;

    for (i = 0; i < n; i++) {
        uint16_t pos = in_u16(in);
        uint8_t v = in_byte(in);
        if (b->len > 0)
            b->data[pos % b->len] = v;
    }
}

/* ------------------------------------------------------------------ the issuer's session */

typedef struct {
    char id[48];
    uint32_t handle;
    int user_defined;
} policy;

typedef struct {
    char id[48];
    uint32_t handle;
    size_t alg; /* index into KEY_ALGS of the key the device got */
    sks_buf spki;
    sks_buf ee; /* empty until setCertificatePath */
} issued_key;

typedef struct {
    uint32_t handle; /* 0: none open */
    char client_session_id[33], server_session_id[33];
    int privacy;
    uint8_t key[32];
    uint32_t counter;
    policy puks[MAX_OBJECTS], pins[MAX_OBJECTS];
    size_t n_puks, n_pins;
    issued_key keys[MAX_OBJECTS];
    size_t n_keys;
} session;

static sks_buf device_cert; /* the device ID of sessions without privacy */

/* Keys of the template's closed session: the post operations' targets. */
static issued_key targets[MAX_OBJECTS];
static size_t n_targets;
static uint32_t template_session;
/* The template session's keyManagementKey in this input (updateKeyManagementKey changes it). */
static EVP_PKEY *target_kmk;

static void session_clear(session *s)
{
    size_t i;

    for (i = 0; i < s->n_keys; i++) {
        sks_buf_free(&s->keys[i].spki);
        sks_buf_free(&s->keys[i].ee);
    }
    OPENSSL_cleanse(s, sizeof(*s));
}

static sks_span span_of(const sks_buf *b)
{
    sks_span s = { b->data, b->len };
    return s;
}

static void device_id(const session *s, const uint8_t **p, size_t *n)
{
    if (s->privacy) {
        *p = (const uint8_t *)"Anonymous";
        *n = 9;
    } else {
        *p = device_cert.data;
        *n = device_cert.len;
    }
}

/* HMAC-SHA256(sessionKey || method || u16(counter), data) at the counter `counter`. */
static void counted_mac(const session *s, const char *method, uint32_t counter, const sks_buf *data, uint8_t out[32])
{
    sks_buf key;

    sks_buf_init(&key);
    sks_buf_put(&key, s->key, 32);
    sks_buf_put(&key, method, strlen(method));
    sks_buf_ushort(&key, (uint16_t)counter);
    if (key.failed || data->failed || !hmac_sha256(key.data, key.len, data->data, data->len, out))
        die("HMAC", method);
    sks_buf_free(&key);
}

/* The MAC of the next call. The counter moves only when the device accepts the call (a
 * failed call is rolled back with the session's counter). */
static void call_mac(const session *s, const char *method, const sks_buf *data, uint8_t out[32])
{
    counted_mac(s, method, s->counter, data, out);
}

/* A key.1 or close attestation must be the issuer's own computation. */
static void check_attestation(const session *s, uint32_t counter, const sks_buf *data, const uint8_t att[32])
{
    uint8_t expect[32];

    counted_mac(s, "DeviceAttestation", counter, data, expect);
    if (memcmp(expect, att, 32) != 0)
        die("attestation", "the device's attestation differs from the issuer's computation");
}

/* Encrypted data (spec 6.1): IV || AES-256-CBC-PKCS#7 under HMAC(sessionKey, "EncryptionKey").
 * A fixed IV keeps inputs replayable. */
static void encrypt_for_session(const session *s, sks_span clear, sks_buf *out)
{
    static const uint8_t IV[16] = { 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a,
                                    0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a };
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    uint8_t ek[32];
    int n1 = 0, n2 = 0;
    size_t start;

    if (c == NULL || !hmac_sha256(s->key, 32, (const uint8_t *)"EncryptionKey", 13, ek))
        die("encryption", "key");
    sks_buf_put(out, IV, 16);
    start = out->len;
    sks_buf_put(out, clear.p, clear.n);
    sks_buf_put(out, IV, 16); /* room for the padding */
    if (out->failed || EVP_EncryptInit_ex2(c, EVP_aes_256_cbc(), ek, IV, NULL) != 1
        || EVP_EncryptUpdate(c, out->data + start, &n1, clear.p, (int)clear.n) != 1
        || EVP_EncryptFinal_ex(c, out->data + start + n1, &n2) != 1)
        die("encryption", "AES");
    out->len = start + (size_t)n1 + (size_t)n2;
    OPENSSL_cleanse(ek, sizeof(ek));
    EVP_CIPHER_CTX_free(c);
}

/* Fuzzed secret bytes, encrypted for the session unless `raw`. */
static void in_encrypted(fuzz_in *in, const session *s, size_t max, int raw, sks_buf *out)
{
    sks_span clear = in_bytes(in, max);

    if (raw)
        sks_buf_put(out, clear.p, clear.n);
    else
        encrypt_for_session(s, clear, out);
}

static int session_open(session *s, uint8_t flags, fuzz_in *in)
{
    sks_session_request rq;
    sks_session_reply rp;
    sks_buf kdf;
    const uint8_t *did;
    size_t did_len, zlen = 66;
    uint8_t z[66];
    const unsigned char *q;
    EVP_PKEY *peer;
    EVP_PKEY_CTX *c;
    static unsigned opened;

    session_clear(s);
    memset(&rq, 0, sizeof(rq));
    s->privacy = flags & SESSION_PRIVACY;
    snprintf(s->server_session_id, sizeof(s->server_session_id), "fuzz-%u", opened++);
    rq.session_key_algorithm = SESSION_ALGORITHM;
    rq.privacy_enabled = s->privacy;
    rq.server_session_id = s->server_session_id;
    rq.server_ephemeral_key = span_of(&issuer_ephemeral_spki);
    rq.issuer_uri = ISSUER_URI;
    if (flags & SESSION_KMK)
        rq.key_management_key = span_of(&kmk_spki);
    rq.client_time = 1700000000;
    rq.session_life_time = 3600;
    rq.session_key_limit = (flags & SESSION_KEY_LIMIT_FROM_INPUT) ? in_byte(in) : 1000;
    rq.server_certificate = span_of(&ca_der);
    if (!sks_client_create_provisioning_session(&transport, &rq, &rp, NULL))
        return 0;
    s->handle = rp.provisioning_handle;
    memcpy(s->client_session_id, rp.client_session_id, sizeof(s->client_session_id));
    /* sessionKey = HMAC-SHA256(Z, clientSessionId || serverSessionId || issuerUri || DeviceID) */
    q = rp.client_ephemeral_key.data;
    peer = d2i_PUBKEY(NULL, &q, (long)rp.client_ephemeral_key.len);
    c = EVP_PKEY_CTX_new_from_pkey(NULL, issuer_ephemeral, NULL);
    if (peer == NULL || c == NULL || EVP_PKEY_derive_init(c) != 1 || EVP_PKEY_derive_set_peer(c, peer) != 1
        || EVP_PKEY_derive(c, z, &zlen) != 1)
        die("createProvisioningSession", "ECDH with the device's ephemeral key failed");
    sks_buf_init(&kdf);
    device_id(s, &did, &did_len);
    sks_buf_string(&kdf, s->client_session_id);
    sks_buf_string(&kdf, s->server_session_id);
    sks_buf_string(&kdf, ISSUER_URI);
    sks_buf_array(&kdf, did, did_len);
    if (kdf.failed || !hmac_sha256(z, zlen, kdf.data, kdf.len, s->key))
        die("createProvisioningSession", "session key");
    OPENSSL_cleanse(z, sizeof(z));
    sks_buf_free(&kdf);
    EVP_PKEY_CTX_free(c);
    EVP_PKEY_free(peer);
    sks_session_reply_free(&rp);
    return 1;
}

/* A key of this session for a byte below 0xF0 (handle 0 if there is none), else a fuzzed
 * handle. *k is the harness's record of the key, or NULL. */
static uint32_t in_key(fuzz_in *in, session *s, issued_key **k)
{
    uint8_t b = in_byte(in);

    *k = NULL;
    if (b >= 0xF0)
        return in_u32(in);
    if (s->n_keys == 0)
        return 0;
    *k = &s->keys[b % s->n_keys];
    return (*k)->handle;
}

static uint32_t in_policy(fuzz_in *in, policy *list, size_t n, const policy **p)
{
    uint8_t b = in_byte(in);

    *p = NULL;
    if (b == 0)
        return 0;
    if (b >= 0xF0)
        return in_u32(in);
    if (n == 0)
        return 0;
    *p = &list[(b - 1) % n];
    return (*p)->handle;
}

static const policy *policy_by_handle(const policy *list, size_t n, uint32_t handle)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (list[i].handle == handle)
            return &list[i];
    return NULL;
}

/* ------------------------------------------------------------------ operations */

static int op_puk_policy(fuzz_in *in, session *s)
{
    sks_puk_policy_args a;
    sks_buf enc, data;
    char id[48];
    uint8_t mac[32];
    uint32_t handle;
    int raw, ok;

    memset(&a, 0, sizeof(a));
    sks_buf_init(&enc);
    sks_buf_init(&data);
    in_id(in, id);
    raw = in_byte(in) & 1;
    in_encrypted(in, s, 80, raw, &enc);
    a.provisioning_handle = s->handle;
    a.id = id;
    a.encrypted_puk = span_of(&enc);
    a.format = in_byte(in);
    a.retry_limit = in_u16(in);
    sks_buf_string(&data, id);
    sks_buf_array(&data, enc.data, enc.len);
    sks_buf_byte(&data, a.format);
    sks_buf_ushort(&data, a.retry_limit);
    call_mac(s, "createPUKPolicy", &data, mac);
    a.mac.p = mac;
    a.mac.n = 32;
    ok = sks_client_create_puk_policy(&transport, &a, &handle, NULL);
    if (ok) {
        s->counter++;
        if (s->n_puks < MAX_OBJECTS) {
            snprintf(s->puks[s->n_puks].id, sizeof(s->puks[0].id), "%s", id);
            s->puks[s->n_puks++].handle = handle;
        }
    }
    sks_buf_free(&enc);
    sks_buf_free(&data);
    return ok;
}

static int op_pin_policy(fuzz_in *in, session *s)
{
    sks_pin_policy_args a;
    const policy *puk;
    sks_buf data;
    char id[48];
    uint8_t mac[32], flags;
    uint32_t handle;
    int ok;

    memset(&a, 0, sizeof(a));
    sks_buf_init(&data);
    in_id(in, id);
    a.provisioning_handle = s->handle;
    a.id = id;
    a.puk_policy_handle = in_policy(in, s->puks, s->n_puks, &puk);
    if (puk == NULL)
        puk = policy_by_handle(s->puks, s->n_puks, a.puk_policy_handle);
    flags = in_byte(in);
    a.user_defined = flags & 1;
    a.user_modifiable = (flags >> 1) & 1;
    a.format = in_byte(in);
    a.retry_limit = in_u16(in);
    a.grouping = in_byte(in);
    a.pattern_restrictions = in_byte(in);
    a.min_length = in_u16(in);
    a.max_length = in_u16(in);
    a.input_method = in_byte(in);
    sks_buf_string(&data, id);
    sks_buf_string(&data, puk ? puk->id : "");
    sks_buf_bool(&data, a.user_defined);
    sks_buf_bool(&data, a.user_modifiable);
    sks_buf_byte(&data, a.format);
    sks_buf_ushort(&data, a.retry_limit);
    sks_buf_byte(&data, a.grouping);
    sks_buf_byte(&data, a.pattern_restrictions);
    sks_buf_ushort(&data, a.min_length);
    sks_buf_ushort(&data, a.max_length);
    sks_buf_byte(&data, a.input_method);
    call_mac(s, "createPINPolicy", &data, mac);
    a.mac.p = mac;
    a.mac.n = 32;
    ok = sks_client_create_pin_policy(&transport, &a, &handle, NULL);
    if (ok) {
        s->counter++;
        if (s->n_pins < MAX_OBJECTS) {
            snprintf(s->pins[s->n_pins].id, sizeof(s->pins[0].id), "%s", id);
            s->pins[s->n_pins].user_defined = a.user_defined;
            s->pins[s->n_pins++].handle = handle;
        }
    }
    sks_buf_free(&data);
    return ok;
}

static int compare_strings(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Key entry flags byte. */
#define KEY_DEVICE_PIN 0x01
#define KEY_PIN_CACHING 0x02
#define KEY_RAW_PIN 0x04      /* send pinValue as given, not encrypted */
#define KEY_SORT_ENDORSED 0x08
#define KEY_WRONG_ALGORITHM 0x10 /* hand the device the key of another algorithm */

/* createKeyEntry's MAC data, in the device's order (device/provisioning.c h_create_key_entry):
 * the PIN policy's id, and pinValue only when the issuer set it (encrypted). */
static void key_entry_mac_data(const sks_key_entry_args *a, const policy *pin, sks_buf *data)
{
    size_t i;

    sks_buf_string(data, a->id);
    sks_buf_string(data, a->key_entry_algorithm);
    sks_buf_array(data, a->server_seed.p, a->server_seed.n);
    sks_buf_string(data, pin ? pin->id : "");
    if (pin != NULL && !pin->user_defined)
        sks_buf_array(data, a->pin_value.p, a->pin_value.n);
    else
        sks_buf_string(data, "");
    sks_buf_bool(data, a->device_pin_protection);
    sks_buf_bool(data, a->enable_pin_caching);
    sks_buf_byte(data, a->biometric_protection);
    sks_buf_byte(data, a->export_protection);
    sks_buf_byte(data, a->delete_protection);
    sks_buf_byte(data, a->app_usage);
    sks_buf_string(data, a->friendly_name);
    sks_buf_string(data, a->key_algorithm);
    sks_buf_array(data, a->key_parameters.p, a->key_parameters.n);
    for (i = 0; i < a->endorsed_count; i++)
        sks_buf_string(data, a->endorsed_algorithms[i]);
}

static int op_key_entry(fuzz_in *in, session *s)
{
    sks_key_entry_args a;
    sks_key_entry_reply r;
    const policy *pin;
    sks_buf pin_value, data, att_in;
    char id[48], kea[300], friendly[160], key_alg[300], endorsed[4][300];
    const char *endorsed_ptr[4];
    sks_span seed;
    uint8_t mac[32], flags;
    size_t i, n_endorsed;
    int alg, ok;

    memset(&a, 0, sizeof(a));
    sks_buf_init(&pin_value);
    sks_buf_init(&data);
    sks_buf_init(&att_in);
    in_id(in, id);
    flags = in_byte(in);
    if (in_byte(in) < 0xF8)
        snprintf(kea, sizeof(kea), "%s", KEY_ENTRY_ALGORITHM);
    else
        in_text(in, kea, sizeof(kea));
    seed = in_bytes(in, 80);
    a.pin_policy_handle = in_policy(in, s->pins, s->n_pins, &pin);
    if (pin == NULL)
        pin = policy_by_handle(s->pins, s->n_pins, a.pin_policy_handle);
    in_encrypted(in, s, 140, (flags & KEY_RAW_PIN) || pin == NULL || pin->user_defined, &pin_value);
    a.biometric_protection = in_byte(in);
    a.export_protection = in_byte(in);
    a.delete_protection = in_byte(in);
    a.app_usage = in_byte(in);
    in_text(in, friendly, sizeof(friendly));
    {
        const char *uris[N_KEY_ALGS];
        for (i = 0; i < N_KEY_ALGS; i++)
            uris[i] = KEY_ALGS[i].uri;
        alg = in_choice(in, uris, N_KEY_ALGS, key_alg, sizeof(key_alg));
    }
    a.key_parameters = in_bytes(in, 10);
    n_endorsed = in_byte(in) % 5;
    for (i = 0; i < n_endorsed; i++) {
        in_choice(in, ENDORSED, N_ENDORSED, endorsed[i], sizeof(endorsed[i]));
        endorsed_ptr[i] = endorsed[i];
    }
    if (flags & KEY_SORT_ENDORSED)
        qsort(endorsed_ptr, n_endorsed, sizeof(endorsed_ptr[0]), compare_strings);
    if (alg >= 0 && (flags & KEY_WRONG_ALGORITHM))
        alg = (alg + 1 + in_byte(in)) % (int)N_KEY_ALGS;
    next_generated = alg >= 0 ? premade_key((size_t)alg) : NULL;

    a.provisioning_handle = s->handle;
    a.id = id;
    a.key_entry_algorithm = kea;
    a.server_seed = seed;
    a.device_pin_protection = flags & KEY_DEVICE_PIN;
    a.pin_value = span_of(&pin_value);
    a.enable_pin_caching = (flags & KEY_PIN_CACHING) != 0;
    a.friendly_name = friendly;
    a.key_algorithm = key_alg;
    a.endorsed_algorithms = endorsed_ptr;
    a.endorsed_count = n_endorsed;
    key_entry_mac_data(&a, pin, &data);
    call_mac(s, "createKeyEntry", &data, mac);
    a.mac.p = mac;
    a.mac.n = 32;
    ok = sks_client_create_key_entry(&transport, &a, &r, NULL);
    next_generated = NULL;
    if (ok) {
        /* key.1 attestation over arr(publicKey) || arr(mac), at the next counter */
        sks_buf_array(&att_in, r.public_key.data, r.public_key.len);
        sks_buf_array(&att_in, mac, 32);
        check_attestation(s, s->counter + 1, &att_in, r.attestation);
        s->counter += 2;
        if (s->n_keys < MAX_OBJECTS) {
            issued_key *k = &s->keys[s->n_keys++];
            snprintf(k->id, sizeof(k->id), "%s", id);
            k->handle = r.key_handle;
            k->alg = alg >= 0 ? (size_t)alg : 0;
            sks_buf_init(&k->spki);
            sks_buf_init(&k->ee);
            sks_buf_put(&k->spki, r.public_key.data, r.public_key.len);
        }
    }
    sks_key_entry_reply_free(&r);
    sks_buf_free(&pin_value);
    sks_buf_free(&data);
    sks_buf_free(&att_in);
    return ok;
}

/* One certificate of a path: for the key's own public key (serial from the input), for
 * another key of the session, the harness CA, any of them with byte edits, or fuzzed DER. */
static void in_certificate(fuzz_in *in, session *s, const issued_key *k, sks_buf *out)
{
    uint8_t kind = in_byte(in);

    switch (kind % 4) {
    case 0:
        if (k != NULL)
            cert_for_spki(k->spki.data, k->spki.len, 1 + in_byte(in), out);
        break;
    case 1:
        if (s->n_keys > 0) {
            const issued_key *other = &s->keys[in_byte(in) % s->n_keys];
            cert_for_spki(other->spki.data, other->spki.len, 1000 + in_byte(in), out);
        }
        break;
    case 2:
        sks_buf_put(out, ca_der.data, ca_der.len);
        break;
    default: {
        sks_span der = in_bytes(in, 2048);
        sks_buf_put(out, der.p, der.n);
        break;
    }
    }
    if (kind & 0x80)
        in_edits(in, out);
}

static int op_certificate_path(fuzz_in *in, session *s)
{
    issued_key *k;
    uint32_t handle = in_key(in, s, &k);
    size_t count = 1 + in_byte(in) % MAX_PATH, i;
    sks_buf certs[MAX_PATH], data;
    sks_span spans[MAX_PATH];
    uint8_t mac[32];
    int ok;

    sks_buf_init(&data);
    for (i = 0; i < count; i++) {
        sks_buf_init(&certs[i]);
        in_certificate(in, s, k, &certs[i]);
        spans[i] = span_of(&certs[i]);
    }
    if (k != NULL) {
        sks_buf_array(&data, k->spki.data, k->spki.len);
        sks_buf_string(&data, k->id);
    }
    for (i = 0; i < count; i++)
        sks_buf_array(&data, certs[i].data, certs[i].len);
    call_mac(s, "setCertificatePath", &data, mac);
    ok = sks_client_set_certificate_path(&transport, handle, spans, count, (sks_span){ mac, 32 }, NULL);
    if (ok) {
        s->counter++;
        if (k != NULL)
            sks_buf_put(&k->ee, certs[0].data, certs[0].len);
    }
    for (i = 0; i < count; i++)
        sks_buf_free(&certs[i]);
    sks_buf_free(&data);
    return ok;
}

/* importPrivateKey / importSymmetricKey. Private key content: the PKCS#8 of the key the
 * device made for this entry (so it matches its certificate), of another algorithm's key,
 * either with byte edits, or fuzzed bytes; encrypted unless the mode's high bit asks for raw
 * bytes. */
static int op_import(fuzz_in *in, session *s, int symmetric)
{
    const char *method = symmetric ? "importSymmetricKey" : "importPrivateKey";
    issued_key *k;
    uint32_t handle = in_key(in, s, &k);
    uint8_t mode = in_byte(in), mac[32];
    sks_buf clear, enc, data;
    int ok;

    sks_buf_init(&clear);
    sks_buf_init(&enc);
    sks_buf_init(&data);
    if (!symmetric && (mode & 3) == 0 && k != NULL)
        der_of_pkcs8(premade_key(k->alg), &clear);
    else if (!symmetric && (mode & 3) == 1)
        der_of_pkcs8(premade_key(in_byte(in) % N_KEY_ALGS), &clear);
    if (clear.len > 0) {
        in_edits(in, &clear);
    } else {
        sks_span b = in_bytes(in, 300);
        sks_buf_put(&clear, b.p, b.n);
    }
    if (mode & 0x80)
        sks_buf_put(&enc, clear.data, clear.len);
    else
        encrypt_for_session(s, span_of(&clear), &enc);
    if (k != NULL)
        sks_buf_array(&data, k->ee.data, k->ee.len);
    sks_buf_array(&data, enc.data, enc.len);
    call_mac(s, method, &data, mac);
    ok = symmetric ? sks_client_import_symmetric_key(&transport, handle, span_of(&enc), (sks_span){ mac, 32 }, NULL)
                   : sks_client_import_private_key(&transport, handle, span_of(&enc), (sks_span){ mac, 32 }, NULL);
    if (ok)
        s->counter++;
    sks_buf_free(&clear);
    sks_buf_free(&enc);
    sks_buf_free(&data);
    return ok;
}

/* Extension mode byte. */
#define EXT_RAW 0x01           /* an encrypted extension's data as given */
#define EXT_PROPERTY_BAG 0x02  /* data: a property bag the harness writes from fuzzed entries */

static int op_extension(fuzz_in *in, session *s)
{
    issued_key *k;
    uint32_t handle = in_key(in, s, &k);
    char type[300], qualifier[160];
    uint8_t sub_type, mode, mac[32];
    sks_buf ext, data;
    int ok;

    sks_buf_init(&ext);
    sks_buf_init(&data);
    in_choice(in, EXTENSION_TYPES, N_EXTENSION_TYPES, type, sizeof(type));
    sub_type = in_byte(in);
    in_text(in, qualifier, sizeof(qualifier));
    mode = in_byte(in);
    if (mode & EXT_PROPERTY_BAG) {
        /* arr(name) || bool(writable) || arr(value), repeated */
        unsigned n = in_byte(in) % 5, i;
        for (i = 0; i < n; i++) {
            sks_span name = in_bytes(in, 300), value = in_bytes(in, 200);
            uint8_t writable = in_byte(in);
            sks_buf_array(&ext, name.p, name.n);
            sks_buf_byte(&ext, writable);
            sks_buf_array(&ext, value.p, value.n);
        }
    } else {
        sks_span b = in_bytes(in, 66000);
        if (sub_type == 1 && !(mode & EXT_RAW))
            encrypt_for_session(s, b, &ext);
        else
            sks_buf_put(&ext, b.p, b.n);
    }
    if (k != NULL)
        sks_buf_array(&data, k->ee.data, k->ee.len);
    sks_buf_string(&data, type);
    sks_buf_byte(&data, sub_type);
    sks_buf_string(&data, qualifier);
    sks_buf_blob(&data, ext.data, ext.len);
    call_mac(s, "addExtension", &data, mac);
    ok = sks_client_add_extension(&transport, handle, type, sub_type, qualifier, span_of(&ext), (sks_span){ mac, 32 },
                                  NULL);
    if (ok)
        s->counter++;
    sks_buf_free(&ext);
    sks_buf_free(&data);
    return ok;
}

static int op_close(fuzz_in *in, session *s)
{
    sks_span nonce = in_bytes(in, 40);
    sks_buf data, att_in;
    uint8_t mac[32], att[32];
    int ok;

    sks_buf_init(&data);
    sks_buf_init(&att_in);
    sks_buf_string(&data, s->client_session_id);
    sks_buf_string(&data, s->server_session_id);
    sks_buf_string(&data, ISSUER_URI);
    sks_buf_array(&data, nonce.p, nonce.n);
    call_mac(s, "closeProvisioningSession", &data, mac);
    ok = sks_client_close_provisioning_session(&transport, s->handle, nonce, (sks_span){ mac, 32 }, att, NULL);
    if (ok) {
        sks_buf_array(&att_in, nonce.p, nonce.n);
        check_attestation(s, s->counter + 1, &att_in, att);
        s->counter += 2;
    }
    sks_buf_free(&data);
    sks_buf_free(&att_in);
    return ok;
}

static int op_get_key_handle(fuzz_in *in, session *s)
{
    char id[48];
    uint32_t handle;

    in_id(in, id);
    return sks_client_get_key_handle(&transport, s->handle, id, &handle, NULL);
}

/* The target's authorization: the keyManagementKey's signature over "TargetKeyReference" ||
 * HMAC(sessionKey || DeviceID, target EE certificate), with edits; or fuzzed bytes. */
static void in_authorization(fuzz_in *in, const session *s, const issued_key *target, sks_buf *out)
{
    uint8_t kind = in_byte(in);

    if ((kind & 1) == 0 && target != NULL) {
        sks_buf key, tbs;
        const uint8_t *did;
        size_t did_len;
        uint8_t inner[32];

        sks_buf_init(&key);
        sks_buf_init(&tbs);
        device_id(s, &did, &did_len);
        sks_buf_put(&key, s->key, 32);
        sks_buf_put(&key, did, did_len);
        if (key.failed || !hmac_sha256(key.data, key.len, target->ee.data, target->ee.len, inner))
            die("HMAC", "target key reference");
        sks_buf_put(&tbs, "TargetKeyReference", 18);
        sks_buf_put(&tbs, inner, 32);
        sign_raw(target_kmk, &tbs, out);
        sks_buf_free(&key);
        sks_buf_free(&tbs);
        if (kind & 0x80)
            in_edits(in, out);
    } else {
        sks_span b = in_bytes(in, 600);
        sks_buf_put(out, b.p, b.n);
    }
}

static uint32_t in_target(fuzz_in *in, const issued_key **t)
{
    uint8_t b = in_byte(in);

    *t = NULL;
    if (b >= 0xF0 || n_targets == 0)
        return in_u32(in);
    *t = &targets[b % n_targets];
    return (*t)->handle;
}

/* postDeleteKey, postUnlockKey (session first) and postUpdateKey, postCloneKeyProtection
 * (a new key of this session first). */
static int op_post(fuzz_in *in, session *s, int op)
{
    static const char *const NAMES[] = { "postDeleteKey", "postUnlockKey", "postUpdateKey", "postCloneKeyProtection" };
    const char *method = NAMES[op - OP_POST_DELETE];
    issued_key *k = NULL;
    const issued_key *t;
    uint32_t first = s->handle, target;
    sks_buf auth, data;
    uint8_t mac[32];
    sks_span m = { mac, 32 };
    int ok;

    sks_buf_init(&auth);
    sks_buf_init(&data);
    if (op == OP_POST_UPDATE || op == OP_POST_CLONE)
        first = in_key(in, s, &k);
    target = in_target(in, &t);
    in_authorization(in, s, t, &auth);
    if (k != NULL)
        sks_buf_array(&data, k->ee.data, k->ee.len);
    sks_buf_array(&data, auth.data, auth.len);
    call_mac(s, method, &data, mac);
    switch (op) {
    case OP_POST_DELETE:
        ok = sks_client_post_delete_key(&transport, first, target, span_of(&auth), m, NULL);
        break;
    case OP_POST_UNLOCK:
        ok = sks_client_post_unlock_key(&transport, first, target, span_of(&auth), m, NULL);
        break;
    case OP_POST_UPDATE:
        ok = sks_client_post_update_key(&transport, first, target, span_of(&auth), m, NULL);
        break;
    default:
        ok = sks_client_post_clone_key_protection(&transport, first, target, span_of(&auth), m, NULL);
        break;
    }
    if (ok)
        s->counter++;
    sks_buf_free(&auth);
    sks_buf_free(&data);
    return ok;
}

/* updateKeyManagementKey of a closed session (the template's, this input's, or a fuzzed handle)
 * to the harness's second key or fuzzed bytes, authorized by the current key's signature over
 * "RollOverAuthorization" || new key (with edits), or fuzzed bytes. */
static int op_update_kmk(fuzz_in *in, session *s)
{
    uint8_t which = in_byte(in), kind = in_byte(in);
    uint32_t handle = which >= 0xF0 ? in_u32(in) : (which & 1) ? s->handle : template_session;
    sks_buf new_key, tbs, auth;
    int ok;

    sks_buf_init(&new_key);
    sks_buf_init(&tbs);
    sks_buf_init(&auth);
    if ((kind & 1) == 0) {
        sks_buf_put(&new_key, kmk2_spki.data, kmk2_spki.len);
    } else {
        sks_span b = in_bytes(in, 600);
        sks_buf_put(&new_key, b.p, b.n);
    }
    if ((kind & 2) == 0) {
        sks_buf_put(&tbs, "RollOverAuthorization", 21);
        sks_buf_put(&tbs, new_key.data, new_key.len);
        sign_raw(handle == template_session ? target_kmk : kmk, &tbs, &auth);
        if (kind & 0x80)
            in_edits(in, &auth);
    } else {
        sks_span b = in_bytes(in, 600);
        sks_buf_put(&auth, b.p, b.n);
    }
    ok = sks_client_update_key_management_key(&transport, handle, span_of(&new_key), span_of(&auth), NULL);
    if (ok && handle == template_session && (kind & 1) == 0)
        target_kmk = kmk2;
    sks_buf_free(&new_key);
    sks_buf_free(&tbs);
    sks_buf_free(&auth);
    return ok;
}

/* Runs an input; returns how many operations the device accepted (and the number run). */
static unsigned run_input(fuzz_in *in, session *s, unsigned *ran)
{
    unsigned accepted = 0, n = 0;

    target_kmk = kmk;
    if (!session_open(s, in_byte(in), in))
        return 0;
    while (in->n > 0 && n < MAX_OPS) {
        int op = in_byte(in) % OP_COUNT, ok = 0;

        n++;
        switch (op) {
        case OP_PUK_POLICY:
            ok = op_puk_policy(in, s);
            break;
        case OP_PIN_POLICY:
            ok = op_pin_policy(in, s);
            break;
        case OP_KEY_ENTRY:
            ok = op_key_entry(in, s);
            break;
        case OP_CERTIFICATE_PATH:
            ok = op_certificate_path(in, s);
            break;
        case OP_IMPORT_PRIVATE:
            ok = op_import(in, s, 0);
            break;
        case OP_IMPORT_SYMMETRIC:
            ok = op_import(in, s, 1);
            break;
        case OP_EXTENSION:
            ok = op_extension(in, s);
            break;
        case OP_CLOSE:
            ok = op_close(in, s);
            break;
        case OP_GET_KEY_HANDLE:
            ok = op_get_key_handle(in, s);
            break;
        case OP_NEW_SESSION:
            ok = session_open(s, in_byte(in), in);
            break;
        case OP_UPDATE_KMK:
            ok = op_update_kmk(in, s);
            break;
        default:
            ok = op_post(in, s, op);
            break;
        }
        accepted += ok != 0;
    }
    if (ran != NULL)
        *ran = n;
    return accepted;
}

/* ------------------------------------------------------------------ seeds */

/* Seed writers: the same layout the in_* readers take. */
static void put_bytes(sks_buf *b, const void *p, size_t n)
{
    sks_buf_ushort(b, (uint16_t)n);
    sks_buf_put(b, p, n);
}

static void put_text(sks_buf *b, const char *s)
{
    put_bytes(b, s, strlen(s));
}

static size_t key_alg_index(const char *uri)
{
    size_t i;

    for (i = 0; i < N_KEY_ALGS && strcmp(KEY_ALGS[i].uri, uri) != 0; i++)
        ;
    return i;
}

static void seed_puk(sks_buf *b, uint8_t id, const char *puk)
{
    sks_buf_byte(b, OP_PUK_POLICY);
    sks_buf_byte(b, id);
    sks_buf_byte(b, 0); /* encrypted */
    put_text(b, puk);
    sks_buf_byte(b, 0);      /* numeric */
    sks_buf_ushort(b, 3);    /* retryLimit */
}

/* PIN policy with the n-th PUK policy (0: none). */
static void seed_pin(sks_buf *b, uint8_t id, uint8_t puk, int user_defined, uint8_t grouping)
{
    sks_buf_byte(b, OP_PIN_POLICY);
    sks_buf_byte(b, id);
    sks_buf_byte(b, puk);
    sks_buf_byte(b, (uint8_t)(user_defined ? 3 : 2));
    sks_buf_byte(b, 0);   /* numeric */
    sks_buf_ushort(b, 5); /* retryLimit */
    sks_buf_byte(b, grouping);
    sks_buf_byte(b, 0);   /* patterns */
    sks_buf_ushort(b, 4);
    sks_buf_ushort(b, 8);
    sks_buf_byte(b, 0);   /* inputMethod any */
}

/* Key entry: pin = the n-th PIN policy (0: none) and its PIN; endorsed from ENDORSED. */
static void seed_key(sks_buf *b, uint8_t id, const char *key_alg, uint8_t pin, const char *pin_value, uint8_t export,
                     uint8_t app_usage, const uint8_t *endorsed, size_t n_endorsed)
{
    size_t i;

    sks_buf_byte(b, OP_KEY_ENTRY);
    sks_buf_byte(b, id);
    sks_buf_byte(b, KEY_SORT_ENDORSED);
    sks_buf_byte(b, 0); /* key.1 */
    put_text(b, "");    /* serverSeed */
    sks_buf_byte(b, pin);
    put_text(b, pin_value);
    sks_buf_byte(b, 0); /* biometric */
    sks_buf_byte(b, export);
    sks_buf_byte(b, export); /* delete protection */
    sks_buf_byte(b, app_usage);
    put_text(b, "fuzz key");
    sks_buf_byte(b, (uint8_t)key_alg_index(key_alg));
    put_text(b, ""); /* keyParameters */
    sks_buf_byte(b, (uint8_t)n_endorsed);
    for (i = 0; i < n_endorsed; i++)
        sks_buf_byte(b, endorsed[i]);
}

/* Certificate path: the key's own certificate (serial 1 + serial), then the CA. */
static void seed_cert(sks_buf *b, uint8_t key, uint8_t serial)
{
    sks_buf_byte(b, OP_CERTIFICATE_PATH);
    sks_buf_byte(b, key);
    sks_buf_byte(b, 1); /* two certificates */
    sks_buf_byte(b, 0);
    sks_buf_byte(b, serial);
    sks_buf_byte(b, 2);
}

static void seed_import_private(sks_buf *b, uint8_t key)
{
    sks_buf_byte(b, OP_IMPORT_PRIVATE);
    sks_buf_byte(b, key);
    sks_buf_byte(b, 0); /* the key's own PKCS#8, encrypted */
    sks_buf_byte(b, 0); /* no edits */
}

static void seed_import_symmetric(sks_buf *b, uint8_t key, size_t len)
{
    static const uint8_t SECRET[32] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                                        17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32 };
    sks_buf_byte(b, OP_IMPORT_SYMMETRIC);
    sks_buf_byte(b, key);
    sks_buf_byte(b, 0);
    put_bytes(b, SECRET, len);
}

static void seed_extension(sks_buf *b, uint8_t key, uint8_t type, uint8_t sub_type, const char *qualifier,
                           const char *data)
{
    sks_buf_byte(b, OP_EXTENSION);
    sks_buf_byte(b, key);
    sks_buf_byte(b, type);
    sks_buf_byte(b, sub_type);
    put_text(b, qualifier);
    if (sub_type == 2) {
        sks_buf_byte(b, EXT_PROPERTY_BAG);
        sks_buf_byte(b, 2);
        put_text(b, "Label");
        put_text(b, data);
        sks_buf_byte(b, 1);
        put_text(b, "Fixed");
        put_text(b, "1");
        sks_buf_byte(b, 0);
    } else {
        sks_buf_byte(b, 0);
        put_text(b, data);
    }
}

static void seed_close(sks_buf *b)
{
    sks_buf_byte(b, OP_CLOSE);
    put_text(b, "fuzz nonce");
}

/* ENDORSED indexes */
enum { E_NONE = 0, E_ECDH = 2, E_RSA_PSS = 5, E_OAEP = 7, E_AES_CBC = 9, E_ECDSA_SHA256 = 11, E_HMAC_SHA256 = 13 };

/* The template's session: a keyManagementKey; key 0 EC P-256 without PIN, key 1 EC P-256
 * under a shared-grouping PIN policy with a PUK, key 2 EC P-384 without PIN. Closed. */
static void seed_template(sks_buf *b)
{
    static const uint8_t EC[] = { E_ECDH, E_ECDSA_SHA256 };

    sks_buf_byte(b, SESSION_KMK);
    seed_puk(b, 1, "12345678");
    seed_pin(b, 2, 1, 0, 1);
    seed_key(b, 10, ALG "ec.nist.p256", 0, "", 0, 0, EC, 2);
    seed_cert(b, 0, 10);
    seed_key(b, 11, ALG "ec.nist.p256", 1, "1234", 1, 1, EC, 2);
    seed_cert(b, 1, 11);
    seed_key(b, 12, ALG "ec.nist.p384", 0, "", 0, 1, EC, 1);
    seed_cert(b, 2, 12);
    seed_close(b);
}

/* Imports (EC, RSA, Ed25519, symmetric) and every extension sub-type, then close. */
static void seed_imports(sks_buf *b)
{
    static const uint8_t EC[] = { E_ECDSA_SHA256 }, RSA[] = { E_OAEP, E_RSA_PSS }, SYM[] = { E_AES_CBC, E_HMAC_SHA256 };
    static const uint8_t ED[] = { 1 };

    sks_buf_byte(b, 0);
    seed_key(b, 1, ALG "ec.nist.p256", 0, "", 0, 3, EC, 1);
    seed_cert(b, 0, 1);
    seed_import_private(b, 0);
    seed_extension(b, 0, 0, 0, "", "plain extension");
    seed_extension(b, 0, 1, 2, "", "label");
    seed_extension(b, 0, 2, 3, "image/png", "logo");
    seed_extension(b, 0, 3, 1, "", "encrypted extension");
    seed_key(b, 2, ALG "rsa2048", 0, "", 0, 2, RSA, 2);
    seed_cert(b, 1, 2);
    seed_import_private(b, 1);
    seed_key(b, 3, ALG "ed25519", 0, "", 0, 0, ED, 1);
    seed_cert(b, 2, 3);
    seed_import_private(b, 2);
    seed_key(b, 4, ALG "ec.brainpool.p256r1", 0, "", 0, 3, SYM, 2);
    seed_cert(b, 3, 4);
    seed_import_symmetric(b, 3, 32);
    sks_buf_byte(b, OP_GET_KEY_HANDLE);
    sks_buf_byte(b, 2);
    seed_close(b);
}

/* PIN and PUK policies: user-defined PINs, each grouping, PUK protection; then close. */
static void seed_policies(sks_buf *b)
{
    static const uint8_t EC[] = { E_NONE };

    sks_buf_byte(b, SESSION_PRIVACY);
    seed_puk(b, 1, "87654321");
    seed_pin(b, 2, 1, 1, 3);
    seed_pin(b, 3, 0, 0, 2);
    seed_key(b, 10, ALG "ec.nist.p256", 1, "2468", 2, 0, EC, 1);
    seed_cert(b, 0, 1);
    seed_key(b, 11, ALG "ec.nist.p384", 1, "1357", 1, 1, EC, 1);
    seed_cert(b, 1, 2);
    seed_key(b, 12, ALG "ec.nist.p521", 2, "97531", 1, 0, EC, 1);
    seed_cert(b, 2, 3);
    seed_key(b, 13, ALG "ec.nist.p521", 2, "86420", 1, 2, EC, 1);
    seed_cert(b, 3, 4);
    seed_close(b);
}

/* Post operations on the template's keys: delete key 0, unlock key 1, a new key that clones
 * key 1's protection, a new key that updates key 2; then close. */
static void seed_post(sks_buf *b)
{
    static const uint8_t EC[] = { E_ECDSA_SHA256 };

    sks_buf_byte(b, SESSION_KMK);
    sks_buf_byte(b, OP_POST_DELETE);
    sks_buf_byte(b, 0); /* target 0 */
    sks_buf_byte(b, 0); /* valid authorization */
    sks_buf_byte(b, OP_POST_UNLOCK);
    sks_buf_byte(b, 1);
    sks_buf_byte(b, 0);
    seed_key(b, 20, ALG "ec.nist.p256", 0, "", 0, 1, EC, 1);
    seed_cert(b, 0, 20);
    sks_buf_byte(b, OP_POST_CLONE);
    sks_buf_byte(b, 0); /* key 0 of the session */
    sks_buf_byte(b, 1); /* target 1 */
    sks_buf_byte(b, 0);
    seed_key(b, 21, ALG "ec.nist.p384", 0, "", 0, 1, EC, 1);
    seed_cert(b, 1, 21);
    sks_buf_byte(b, OP_POST_UPDATE);
    sks_buf_byte(b, 1);
    sks_buf_byte(b, 2); /* target 2 */
    sks_buf_byte(b, 0);
    seed_close(b);
}

/* The template session's keyManagementKey rolled over to the second key, then a post
 * operation authorized by the new one. */
static void seed_kmk(sks_buf *b)
{
    sks_buf_byte(b, 0);
    sks_buf_byte(b, OP_UPDATE_KMK);
    sks_buf_byte(b, 0); /* the template's session */
    sks_buf_byte(b, 0); /* to the second key, valid authorization */
    sks_buf_byte(b, OP_POST_DELETE);
    sks_buf_byte(b, 2);
    sks_buf_byte(b, 0);
    seed_close(b);
}

static const struct {
    const char *name;
    void (*build)(sks_buf *b);
} SEEDS[] = {
    { "template", seed_template },
    { "imports", seed_imports },
    { "policies", seed_policies },
    { "post", seed_post },
    { "kmk", seed_kmk },
};
#define N_SEEDS (sizeof(SEEDS) / sizeof(SEEDS[0]))

/* ------------------------------------------------------------------ stores */

/* In memory (tmpfs) where there is one: the store syncs every commit (synchronous=FULL), and
 * a copy per input on a disk would make the fuzzer wait for the disk. */
static char template_dir[64], work_dir[64];

static void make_dirs(void)
{
    struct stat st;
    const char *base = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) && access("/dev/shm", W_OK) == 0
                           ? "/dev/shm"
                           : "/tmp";

    snprintf(template_dir, sizeof(template_dir), "%s/sks-fuzz-provisioning-template-XXXXXX", base);
    snprintf(work_dir, sizeof(work_dir), "%s/sks-fuzz-provisioning-XXXXXX", base);
    if (mkdtemp(template_dir) == NULL || mkdtemp(work_dir) == NULL)
        die("mkdtemp", strerror(errno));
}

static void open_store(const char *dir)
{
    char path[256], err[512];
    sks_store_location loc = { path, NULL };
    sks_test_hooks hooks = { NULL, NULL, NULL, hook_generated_key };

    snprintf(path, sizeof(path), "%s/store.db", dir);
    if ((dev = sks_device_open(&loc, err, sizeof(err))) == NULL)
        die("opening the store", err);
    sks_device_set_test_hooks(dev, &hooks);
}

static void close_store(void)
{
    if (dev != NULL)
        sks_device_close(dev);
    dev = NULL;
}

/* The working store: a fresh copy of the template. */
static void reset_store(void)
{
    close_store();
    fuzz_store_remove(work_dir);
    fuzz_store_copy(template_dir, work_dir);
    open_store(work_dir);
}

static void cleanup(void)
{
    close_store();
    fuzz_store_remove(work_dir);
    fuzz_store_remove(template_dir);
    rmdir(work_dir);
    rmdir(template_dir);
}

/* Provisions the template store through the harness's own issuer (the template seed), and
 * keeps its keys as the post operations' targets. */
static void make_template(void)
{
    char path[256], err[512];
    sks_store_location loc = { path, NULL };
    sks_device_info info;
    sks_buf seed;
    fuzz_in in;
    session s;
    unsigned ran = 0, accepted;
    size_t i;

    snprintf(path, sizeof(path), "%s/store.db", template_dir);
    if (!sks_store_create(&loc, NULL, NULL, err, sizeof(err)))
        die("creating the template store", err);
    open_store(template_dir);
    if (!sks_client_get_device_info(&transport, &info, NULL) || info.certificates.count == 0)
        die("getDeviceInfo", "no device certificate");
    sks_buf_put(&device_cert, info.certificates.items[0].data, info.certificates.items[0].len);
    sks_device_info_free(&info);
    sks_buf_init(&seed);
    SEEDS[0].build(&seed);
    in.p = seed.data;
    in.n = seed.len;
    memset(&s, 0, sizeof(s));
    accepted = run_input(&in, &s, &ran);
    if (accepted != ran)
        die("the template session", "an operation was refused (the harness's issuer is out of step)");
    for (i = 0; i < s.n_keys; i++) {
        targets[i] = s.keys[i];
        sks_buf_init(&targets[i].spki);
        sks_buf_init(&targets[i].ee);
        sks_buf_put(&targets[i].spki, s.keys[i].spki.data, s.keys[i].spki.len);
        sks_buf_put(&targets[i].ee, s.keys[i].ee.data, s.keys[i].ee.len);
    }
    n_targets = s.n_keys;
    template_session = s.handle;
    session_clear(&s);
    sks_buf_free(&seed);
    close_store();
}

/* Every seed but the template must run through with every operation accepted on a copy of
 * the template (so a change that breaks the harness's issuer shows at once). */
static void check_seeds(void)
{
    size_t i;

    for (i = 1; i < N_SEEDS; i++) {
        sks_buf seed;
        fuzz_in in;
        session s;
        unsigned ran = 0;

        sks_buf_init(&seed);
        SEEDS[i].build(&seed);
        in.p = seed.data;
        in.n = seed.len;
        memset(&s, 0, sizeof(s));
        reset_store();
        if (run_input(&in, &s, &ran) != ran || ran == 0)
            die("seed refused", SEEDS[i].name);
        session_clear(&s);
        sks_buf_free(&seed);
    }
}

static void write_seeds(const char *dir)
{
    size_t i;

    mkdir(dir, 0755);
    for (i = 0; i < N_SEEDS; i++) {
        char path[4200];
        sks_buf seed;
        FILE *f;

        sks_buf_init(&seed);
        SEEDS[i].build(&seed);
        snprintf(path, sizeof(path), "%s/%s", dir, SEEDS[i].name);
        if ((f = fopen(path, "wb")) == NULL || fwrite(seed.data, 1, seed.len, f) != seed.len || fclose(f) != 0)
            die(path, strerror(errno));
        sks_buf_free(&seed);
    }
}

static void make_issuer_keys(void)
{
    kmk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    kmk2 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    issuer_ephemeral = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    ca_key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    if (kmk == NULL || kmk2 == NULL || issuer_ephemeral == NULL || ca_key == NULL)
        die("issuer keys", "cannot be made");
    ca_cert = make_cert(ca_key, 1, 1);
    sks_buf_init(&ca_der);
    sks_buf_init(&kmk_spki);
    sks_buf_init(&kmk2_spki);
    sks_buf_init(&issuer_ephemeral_spki);
    sks_buf_init(&device_cert);
    der_of_cert(ca_cert, &ca_der);
    der_of_pubkey(kmk, &kmk_spki);
    der_of_pubkey(kmk2, &kmk2_spki);
    der_of_pubkey(issuer_ephemeral, &issuer_ephemeral_spki);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *seeds = getenv("SKS_FUZZ_WRITE_SEEDS");

    (void)argc;
    (void)argv;
    if (seeds != NULL && *seeds != '\0') {
        write_seeds(seeds);
        exit(0);
    }
    make_dirs();
    atexit(cleanup);
    make_issuer_keys();
    make_template();
    check_seeds();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_in in = { data, size };
    session s;

    memset(&s, 0, sizeof(s));
    reset_store();
    run_input(&in, &s, NULL);
    session_clear(&s);
    return 0;
}
