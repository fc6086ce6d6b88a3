/*
 * The issuer's side of an SKS provisioning session (session.1 / key.1), emulated in the tool.
 * Layouts follow the specification and test/data/kat/README.md: every field of a
 * MAC or attestation input is length-prefixed exactly as on the wire, so the helpers below
 * build those inputs with the same sks_buf writer the client uses for requests.
 */
#include "issuer.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/encoder.h>
#include <openssl/rand.h>

#define SESSION_ALGORITHM "https://webpki.github.io/sks/algorithm#session.1"
#define KEY_ENTRY_ALGORITHM "https://webpki.github.io/sks/algorithm#key.1"
#define ISSUER_URI "urn:x-sks:tool:local-issuer"
#define EPHEMERAL_CURVE "P-256"
/* Seconds; the session only lives for one command. */
#define SESSION_LIFETIME 600
/* Enough for several keys with PIN, PUK and import (about a dozen uses per key). */
#define SESSION_KEY_LIMIT 200

static int fail(issuer_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(issuer_session *s, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(s->error, sizeof(s->error), fmt, ap);
    va_end(ap);
    return 0;
}

/* A device error, prefixed with the method unless the device's message already names it. */
static int fail_call(issuer_session *s, const char *method, const sks_client_error *e)
{
    size_t n = strlen(method);

    if (strncmp(e->message, method, n) == 0 && e->message[n] == ':')
        return fail(s, "%s (%s)", e->message, sks_client_status_name(e->status));
    return fail(s, "%s: %s (%s)", method, e->message, sks_client_status_name(e->status));
}

static sks_span span_of(const sks_buf *b)
{
    sks_span sp = { b->data, b->len };
    return sp;
}

/* ------------------------------------------------------------------ primitives */

static int hmac_sha256(const uint8_t *key, size_t keylen, const uint8_t *data, size_t n, uint8_t out[32])
{
    size_t len = 0;

    return EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, keylen, data, n, out, 32, &len) != NULL && len == 32;
}

/* The MAC of a provisioning call: the method name and the sequence counter are part of the
 * HMAC key, so every MAC is bound to its method and position in the session. */
static int session_mac(issuer_session *s, const char *method, const sks_buf *data, uint8_t out[32])
{
    sks_buf key;
    int ok;

    if (data->failed)
        return fail(s, "%s: out of memory", method);
    if (s->mac_counter > 0xFFFF)
        return fail(s, "%s: the MAC sequence counter is exhausted", method);
    sks_buf_init(&key);
    sks_buf_put(&key, s->session_key, sizeof(s->session_key));
    sks_buf_put(&key, method, strlen(method));
    sks_buf_ushort(&key, (uint16_t)s->mac_counter);
    ok = !key.failed && hmac_sha256(key.data, key.len, data->data, data->len, out);
    sks_buf_free(&key);
    s->mac_counter++;
    return ok ? 1 : fail(s, "%s: HMAC failed", method);
}

/* key.1 and close attestations: the same construction under the name "DeviceAttestation". */
static int check_attestation(issuer_session *s, const char *what, const sks_buf *data, const uint8_t att[32])
{
    uint8_t expect[32];

    if (!session_mac(s, "DeviceAttestation", data, expect))
        return 0;
    if (CRYPTO_memcmp(expect, att, 32) != 0)
        return fail(s, "%s: the device's attestation does not match (session key or counter out of step)", what);
    return 1;
}

/* Encrypted data (spec 6.1): IV || AES-256-CBC-PKCS#7 under HMAC(sessionKey, "EncryptionKey"). */
static int encrypt_data(issuer_session *s, const char *what, sks_span clear, sks_buf *out)
{
    uint8_t ek[32], iv[16];
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int len1 = 0, len2 = 0, ok = 0;
    size_t start;

    if (c == NULL || clear.n > (size_t)INT32_MAX - 16)
        goto done;
    if (!hmac_sha256(s->session_key, 32, (const uint8_t *)"EncryptionKey", 13, ek) || RAND_bytes(iv, 16) != 1)
        goto done;
    sks_buf_put(out, iv, 16);
    start = out->len;
    sks_buf_put(out, clear.p, clear.n);
    sks_buf_put(out, iv, 16); /* room for the padding block; overwritten */
    if (out->failed)
        goto done;
    if (EVP_EncryptInit_ex2(c, EVP_aes_256_cbc(), ek, iv, NULL) != 1
        || EVP_EncryptUpdate(c, out->data + start, &len1, clear.p, (int)clear.n) != 1
        || EVP_EncryptFinal_ex(c, out->data + start + len1, &len2) != 1)
        goto done;
    out->len = start + (size_t)len1 + (size_t)len2;
    ok = 1;
done:
    OPENSSL_cleanse(ek, sizeof(ek));
    EVP_CIPHER_CTX_free(c);
    return ok ? 1 : fail(s, "cannot encrypt the %s", what);
}

static int spki_der(EVP_PKEY *k, sks_buf *out)
{
    unsigned char *der = NULL;
    int len = i2d_PUBKEY(k, &der);

    if (len <= 0)
        return 0;
    sks_buf_put(out, der, (size_t)len);
    OPENSSL_free(der);
    return !out->failed;
}

static int cert_der(X509 *x, sks_buf *out)
{
    unsigned char *der = NULL;
    int len = i2d_X509(x, &der);

    if (len <= 0)
        return 0;
    sks_buf_put(out, der, (size_t)len);
    OPENSSL_free(der);
    return !out->failed;
}

static int random_id(char out[33])
{
    static const char ALPHABET[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    uint8_t r[32];
    int i;

    if (RAND_bytes(r, sizeof(r)) != 1)
        return 0;
    for (i = 0; i < 32; i++)
        out[i] = ALPHABET[r[i] & 63];
    out[32] = '\0';
    return 1;
}

/* ------------------------------------------------------------------ session attestation */

/* ECDSA attestations are raw r||s (each half the field size); OpenSSL verifies DER. */
static int ecdsa_raw_to_der(const sks_bytes *raw, sks_buf *der)
{
    ECDSA_SIG *sig = ECDSA_SIG_new();
    BIGNUM *r = NULL, *sv = NULL;
    unsigned char *p = NULL;
    size_t half = raw->len / 2;
    int len, ok = 0;

    if (sig == NULL || raw->len == 0 || raw->len % 2 != 0)
        goto done;
    r = BN_bin2bn(raw->data, (int)half, NULL);
    sv = BN_bin2bn(raw->data + half, (int)half, NULL);
    if (r == NULL || sv == NULL || ECDSA_SIG_set0(sig, r, sv) != 1)
        goto done;
    r = sv = NULL; /* owned by sig now */
    if ((len = i2d_ECDSA_SIG(sig, &p)) <= 0)
        goto done;
    sks_buf_put(der, p, (size_t)len);
    ok = !der->failed;
done:
    BN_free(r);
    BN_free(sv);
    ECDSA_SIG_free(sig);
    OPENSSL_free(p);
    return ok;
}

/* SHA-256 signature by the device key: PKCS#1 v1.5 for RSA, ECDSA r||s for EC. */
static int verify_device_signature(EVP_PKEY *device_key, const sks_buf *data, const sks_bytes *sig)
{
    EVP_MD_CTX *mc = EVP_MD_CTX_new();
    sks_buf der;
    int ok = 0;

    sks_buf_init(&der);
    if (mc == NULL || EVP_DigestVerifyInit_ex(mc, NULL, "SHA256", NULL, NULL, device_key, NULL) != 1)
        goto done;
    if (EVP_PKEY_get_base_id(device_key) == EVP_PKEY_EC) {
        if ((size_t)(EVP_PKEY_get_bits(device_key) + 7) / 8 * 2 != sig->len || !ecdsa_raw_to_der(sig, &der))
            goto done;
        ok = EVP_DigestVerify(mc, der.data, der.len, data->data, data->len) == 1;
    } else if (EVP_PKEY_get_base_id(device_key) == EVP_PKEY_RSA) {
        ok = EVP_DigestVerify(mc, sig->data, sig->len, data->data, data->len) == 1;
    }
done:
    sks_buf_free(&der);
    EVP_MD_CTX_free(mc);
    return ok;
}

/* The device ID (its certificate DER) and its public key, from getDeviceInfo. */
static EVP_PKEY *load_device_identity(issuer_session *s)
{
    sks_device_info info;
    sks_client_error e;
    EVP_PKEY *pub = NULL;
    X509 *x = NULL;
    const unsigned char *q;

    if (!sks_client_get_device_info(s->t, &info, &e)) {
        fail_call(s, "getDeviceInfo", &e);
        return NULL;
    }
    if (info.certificates.count == 0) {
        fail(s, "getDeviceInfo: the device has no certificate to verify its attestation with");
        goto done;
    }
    q = info.certificates.items[0].data;
    x = d2i_X509(NULL, &q, (long)info.certificates.items[0].len);
    if (x == NULL || (pub = X509_get_pubkey(x)) == NULL) {
        fail(s, "getDeviceInfo: the device certificate cannot be parsed");
        goto done;
    }
    sks_buf_put(&s->device_id, info.certificates.items[0].data, info.certificates.items[0].len);
done:
    X509_free(x);
    sks_device_info_free(&info);
    return pub;
}

/* sessionKey = HMAC-SHA256(Z, str(clientSessionId) || str(serverSessionId) || str(issuerUri)
 * || arr(DeviceID)); `kdf` receives the KDF input (the attestation starts with it). */
static int derive_session_key(issuer_session *s, EVP_PKEY *eph, const sks_bytes *client_eph, sks_buf *kdf)
{
    const unsigned char *q = client_eph->data;
    EVP_PKEY *peer = d2i_PUBKEY(NULL, &q, (long)client_eph->len);
    EVP_PKEY_CTX *c = peer ? EVP_PKEY_CTX_new_from_pkey(NULL, eph, NULL) : NULL;
    uint8_t z[66];
    size_t zlen = sizeof(z);
    int ok = 0;

    if (c == NULL || EVP_PKEY_derive_init(c) != 1 || EVP_PKEY_derive_set_peer(c, peer) != 1
        || EVP_PKEY_derive(c, z, &zlen) != 1) {
        fail(s, "createProvisioningSession: ECDH with the device's clientEphemeralKey failed");
        goto done;
    }
    sks_buf_string(kdf, s->client_session_id);
    sks_buf_string(kdf, s->server_session_id);
    sks_buf_string(kdf, s->issuer_uri);
    sks_buf_array(kdf, s->device_id.data, s->device_id.len);
    ok = !kdf->failed && hmac_sha256(z, zlen, kdf->data, kdf->len, s->session_key);
    if (!ok)
        fail(s, "createProvisioningSession: session key derivation failed");
done:
    OPENSSL_cleanse(z, sizeof(z));
    EVP_PKEY_CTX_free(c);
    EVP_PKEY_free(peer);
    return ok;
}

static int verify_session_attestation(issuer_session *s, EVP_PKEY *device_key, const sks_session_request *rq,
                                      const sks_session_reply *rp, const sks_buf *kdf)
{
    sks_buf in;
    int ok;

    sks_buf_init(&in);
    sks_buf_put(&in, kdf->data, kdf->len);
    sks_buf_string(&in, rq->session_key_algorithm);
    sks_buf_bool(&in, rq->privacy_enabled);
    sks_buf_array(&in, rq->server_ephemeral_key.p, rq->server_ephemeral_key.n);
    sks_buf_array(&in, rp->client_ephemeral_key.data, rp->client_ephemeral_key.len);
    sks_buf_array(&in, rq->key_management_key.p, rq->key_management_key.n);
    sks_buf_uint(&in, rq->client_time);
    sks_buf_ushort(&in, rq->session_life_time);
    sks_buf_ushort(&in, rq->session_key_limit);
    sks_buf_array(&in, rq->server_certificate.p, rq->server_certificate.n);
    ok = !in.failed && verify_device_signature(device_key, &in, &rp->attestation);
    sks_buf_free(&in);
    return ok ? 1
              : fail(s, "createProvisioningSession: the device's session attestation does not verify with its "
                        "certificate");
}

int issuer_open(issuer_session *s, sks_transport *t, X509 *server_cert)
{
    sks_session_request rq;
    sks_session_reply rp;
    sks_client_error e;
    EVP_PKEY *device_key = NULL, *eph = NULL;
    sks_buf eph_spki, cert, kdf;
    int ok = 0;

    memset(s, 0, sizeof(*s));
    memset(&rp, 0, sizeof(rp));
    s->t = t;
    s->issuer_uri = ISSUER_URI;
    sks_buf_init(&s->device_id);
    sks_buf_init(&eph_spki);
    sks_buf_init(&cert);
    sks_buf_init(&kdf);
    if ((device_key = load_device_identity(s)) == NULL)
        goto done;
    eph = EVP_PKEY_Q_keygen(NULL, NULL, "EC", EPHEMERAL_CURVE);
    if (eph == NULL || !spki_der(eph, &eph_spki) || !random_id(s->server_session_id)
        || (server_cert != NULL && !cert_der(server_cert, &cert))) {
        fail(s, "cannot create the issuer's ephemeral key and session id");
        goto done;
    }
    memset(&rq, 0, sizeof(rq));
    rq.session_key_algorithm = SESSION_ALGORITHM;
    rq.server_session_id = s->server_session_id;
    rq.server_ephemeral_key = span_of(&eph_spki);
    rq.issuer_uri = s->issuer_uri;
    rq.client_time = (uint32_t)time(NULL);
    rq.session_life_time = SESSION_LIFETIME;
    rq.session_key_limit = SESSION_KEY_LIMIT;
    rq.server_certificate = span_of(&cert);
    if (!sks_client_create_provisioning_session(t, &rq, &rp, &e)) {
        fail_call(s, "createProvisioningSession", &e);
        goto done;
    }
    s->handle = rp.provisioning_handle;
    memcpy(s->client_session_id, rp.client_session_id, sizeof(s->client_session_id));
    ok = derive_session_key(s, eph, &rp.client_ephemeral_key, &kdf)
         && verify_session_attestation(s, device_key, &rq, &rp, &kdf);
done:
    EVP_PKEY_free(device_key);
    EVP_PKEY_free(eph); /* the ephemeral private key is gone once the session key exists */
    sks_session_reply_free(&rp);
    sks_buf_free(&eph_spki);
    sks_buf_free(&cert);
    sks_buf_free(&kdf);
    return ok;
}

/* ------------------------------------------------------------------ policies and keys */

static int create_puk_policy(issuer_session *s, const issuer_pin_spec *pin, const char *id, uint32_t *handle)
{
    sks_puk_policy_args a;
    sks_client_error e;
    sks_buf enc, data;
    uint8_t mac[32];
    int ok = 0;

    sks_buf_init(&enc);
    sks_buf_init(&data);
    if (!encrypt_data(s, "PUK", pin->puk, &enc))
        goto done;
    memset(&a, 0, sizeof(a));
    a.provisioning_handle = s->handle;
    a.id = id;
    a.encrypted_puk = span_of(&enc);
    a.format = SKS_PIN_FORMAT_STRING;
    a.retry_limit = pin->puk_retries;
    sks_buf_string(&data, a.id);
    sks_buf_array(&data, enc.data, enc.len);
    sks_buf_byte(&data, a.format);
    sks_buf_ushort(&data, a.retry_limit);
    if (!session_mac(s, "createPUKPolicy", &data, mac))
        goto done;
    a.mac.p = mac;
    a.mac.n = sizeof(mac);
    ok = sks_client_create_puk_policy(s->t, &a, handle, &e) || fail_call(s, "createPukPolicy", &e);
done:
    sks_buf_free(&enc);
    sks_buf_free(&data);
    return ok;
}

/* The tool's PIN policy: issuer-set string PIN of 4-64 characters, changeable by the user,
 * no grouping or pattern restrictions. */
static int create_pin_policy(issuer_session *s, const issuer_pin_spec *pin, const char *id, const char *puk_id,
                             uint32_t puk_handle, uint32_t *handle)
{
    sks_pin_policy_args a;
    sks_client_error e;
    sks_buf data;
    uint8_t mac[32];
    int ok = 0;

    memset(&a, 0, sizeof(a));
    a.provisioning_handle = s->handle;
    a.id = id;
    a.puk_policy_handle = puk_handle;
    a.user_defined = 0;
    a.user_modifiable = 1;
    a.format = SKS_PIN_FORMAT_STRING;
    a.retry_limit = pin->pin_retries;
    a.grouping = SKS_GROUPING_NONE;
    a.pattern_restrictions = 0;
    a.min_length = 4;
    a.max_length = 64;
    a.input_method = SKS_INPUT_ANY;
    sks_buf_init(&data);
    sks_buf_string(&data, a.id);
    sks_buf_string(&data, puk_id);
    sks_buf_bool(&data, a.user_defined);
    sks_buf_bool(&data, a.user_modifiable);
    sks_buf_byte(&data, a.format);
    sks_buf_ushort(&data, a.retry_limit);
    sks_buf_byte(&data, a.grouping);
    sks_buf_byte(&data, a.pattern_restrictions);
    sks_buf_ushort(&data, a.min_length);
    sks_buf_ushort(&data, a.max_length);
    sks_buf_byte(&data, a.input_method);
    if (session_mac(s, "createPINPolicy", &data, mac)) {
        a.mac.p = mac;
        a.mac.n = sizeof(mac);
        ok = sks_client_create_pin_policy(s->t, &a, handle, &e) || fail_call(s, "createPinPolicy", &e);
    }
    sks_buf_free(&data);
    return ok;
}

/* createKeyEntry MAC data, in the order of the specification. */
static void key_entry_mac_data(const sks_key_entry_args *a, const char *pin_policy_id, sks_buf *data)
{
    size_t i;

    sks_buf_string(data, a->id);
    sks_buf_string(data, a->key_entry_algorithm);
    sks_buf_array(data, a->server_seed.p, a->server_seed.n);
    sks_buf_string(data, pin_policy_id);
    sks_buf_array(data, a->pin_value.p, a->pin_value.n); /* the encrypted PIN, or "" */
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

static int create_key_entry(issuer_session *s, const issuer_key_spec *spec, const char *pin_policy_id,
                            uint32_t pin_policy, issuer_key *key)
{
    sks_key_entry_args a;
    sks_key_entry_reply rp;
    sks_client_error e;
    sks_buf enc_pin, data, att_in;
    uint8_t mac[32];
    int ok = 0;

    memset(&a, 0, sizeof(a));
    memset(&rp, 0, sizeof(rp));
    sks_buf_init(&enc_pin);
    sks_buf_init(&data);
    sks_buf_init(&att_in);
    if (pin_policy != 0 && !encrypt_data(s, "PIN", spec->pin.pin, &enc_pin))
        goto done;
    a.provisioning_handle = s->handle;
    a.id = key->id;
    a.key_entry_algorithm = KEY_ENTRY_ALGORITHM;
    a.pin_policy_handle = pin_policy;
    a.pin_value = span_of(&enc_pin);
    a.export_protection = spec->export_protection;
    a.delete_protection = spec->delete_protection;
    a.app_usage = spec->app_usage;
    a.friendly_name = spec->friendly_name;
    a.key_algorithm = spec->key_algorithm;
    a.key_parameters = spec->key_parameters;
    a.endorsed_algorithms = spec->endorsed;
    a.endorsed_count = spec->endorsed_count;
    key_entry_mac_data(&a, pin_policy_id, &data);
    if (!session_mac(s, "createKeyEntry", &data, mac))
        goto done;
    a.mac.p = mac;
    a.mac.n = sizeof(mac);
    if (!sks_client_create_key_entry(s->t, &a, &rp, &e)) {
        fail_call(s, "createKeyEntry", &e);
        goto done;
    }
    /* key.1: the device attests arr(publicKey) || arr(mac). */
    sks_buf_array(&att_in, rp.public_key.data, rp.public_key.len);
    sks_buf_array(&att_in, mac, sizeof(mac));
    if (!check_attestation(s, "createKeyEntry", &att_in, rp.attestation))
        goto done;
    key->handle = rp.key_handle;
    key->public_key = rp.public_key;
    rp.public_key.data = NULL; /* moved into key */
    rp.public_key.len = 0;
    ok = 1;
done:
    sks_key_entry_reply_free(&rp);
    sks_buf_free(&enc_pin);
    sks_buf_free(&data);
    sks_buf_free(&att_in);
    return ok;
}

int issuer_create_key(issuer_session *s, const issuer_key_spec *spec, issuer_key *key)
{
    unsigned serial = ++s->objects;
    char puk_id[33] = "", pin_id[33] = "";
    uint32_t puk = 0, pin = 0;

    memset(key, 0, sizeof(*key));
    sks_buf_init(&key->ee);
    snprintf(key->id, sizeof(key->id), "Key.%u", serial);
    if (spec->pin.pin.n == 0 && spec->pin.puk.n != 0)
        return fail(s, "a PUK needs a PIN");
    if (spec->pin.puk.n != 0) {
        snprintf(puk_id, sizeof(puk_id), "PUK.%u", serial);
        if (!create_puk_policy(s, &spec->pin, puk_id, &puk))
            return 0;
    }
    if (spec->pin.pin.n != 0) {
        snprintf(pin_id, sizeof(pin_id), "PIN.%u", serial);
        if (!create_pin_policy(s, &spec->pin, pin_id, puk_id, puk, &pin))
            return 0;
    }
    return create_key_entry(s, spec, pin_id, pin, key);
}

int issuer_set_certificates(issuer_session *s, issuer_key *key, X509 *const *certs, size_t count)
{
    sks_client_error e;
    sks_buf der[ISSUER_MAX_PATH], data;
    sks_span spans[ISSUER_MAX_PATH];
    uint8_t mac[32];
    size_t i;
    int ok = 0;

    if (count == 0 || count > ISSUER_MAX_PATH)
        return fail(s, "setCertificatePath: the path must hold 1-%d certificates, got %zu", ISSUER_MAX_PATH, count);
    sks_buf_init(&data);
    for (i = 0; i < count; i++)
        sks_buf_init(&der[i]);
    /* MAC data: arr(generated public key) || str(id) || arr(each certificate). */
    sks_buf_array(&data, key->public_key.data, key->public_key.len);
    sks_buf_string(&data, key->id);
    for (i = 0; i < count; i++) {
        if (!cert_der(certs[i], &der[i]) || der[i].len > 0xFFFF) {
            fail(s, "setCertificatePath: certificate %zu cannot be encoded (or exceeds 65535 bytes)", i + 1);
            goto done;
        }
        spans[i] = span_of(&der[i]);
        sks_buf_array(&data, der[i].data, der[i].len);
    }
    if (!session_mac(s, "setCertificatePath", &data, mac))
        goto done;
    {
        sks_span m = { mac, sizeof(mac) };
        if (!sks_client_set_certificate_path(s->t, key->handle, spans, count, m, &e)) {
            fail_call(s, "setCertificatePath", &e);
            goto done;
        }
    }
    sks_buf_reset(&key->ee);
    sks_buf_put(&key->ee, der[0].data, der[0].len);
    ok = !key->ee.failed || fail(s, "out of memory");
done:
    for (i = 0; i < count; i++)
        sks_buf_free(&der[i]);
    sks_buf_free(&data);
    return ok;
}

/* PKCS#8 PrivateKeyInfo DER, into a buffer the caller wipes. */
static int pkcs8_der(EVP_PKEY *priv, sks_buf *out)
{
    OSSL_ENCODER_CTX *c = OSSL_ENCODER_CTX_new_for_pkey(priv, OSSL_KEYMGMT_SELECT_KEYPAIR, "DER", "PrivateKeyInfo",
                                                        NULL);
    unsigned char *der = NULL;
    size_t len = 0;
    int ok;

    ok = c != NULL && OSSL_ENCODER_to_data(c, &der, &len) == 1;
    if (ok)
        sks_buf_put(out, der, len);
    OPENSSL_clear_free(der, len);
    OSSL_ENCODER_CTX_free(c);
    return ok && !out->failed;
}

int issuer_import_private_key(issuer_session *s, const issuer_key *key, EVP_PKEY *priv)
{
    sks_client_error e;
    sks_buf clear, enc, data;
    uint8_t mac[32];
    int ok = 0;

    sks_buf_init(&clear);
    sks_buf_init(&enc);
    sks_buf_init(&data);
    if (key->ee.len == 0) {
        fail(s, "importPrivateKey: the key has no certificate path yet");
        goto done;
    }
    if (!pkcs8_der(priv, &clear)) {
        fail(s, "importPrivateKey: the private key cannot be encoded as PKCS#8");
        goto done;
    }
    if (!encrypt_data(s, "private key", span_of(&clear), &enc))
        goto done;
    /* MAC data: arr(end-entity certificate) || arr(encryptedKey). */
    sks_buf_array(&data, key->ee.data, key->ee.len);
    sks_buf_array(&data, enc.data, enc.len);
    if (!session_mac(s, "importPrivateKey", &data, mac))
        goto done;
    {
        sks_span m = { mac, sizeof(mac) };
        ok = sks_client_import_private_key(s->t, key->handle, span_of(&enc), m, &e)
             || fail_call(s, "importPrivateKey", &e);
    }
done:
    sks_buf_free(&clear); /* wipes the clear PKCS#8 */
    sks_buf_free(&enc);
    sks_buf_free(&data);
    return ok;
}

int issuer_close(issuer_session *s)
{
    sks_client_error e;
    sks_buf data, att_in;
    uint8_t nonce[32], mac[32], att[32];
    int ok = 0;

    sks_buf_init(&data);
    sks_buf_init(&att_in);
    if (RAND_bytes(nonce, sizeof(nonce)) != 1) {
        fail(s, "closeProvisioningSession: no random nonce");
        goto done;
    }
    sks_buf_string(&data, s->client_session_id);
    sks_buf_string(&data, s->server_session_id);
    sks_buf_string(&data, s->issuer_uri);
    sks_buf_array(&data, nonce, sizeof(nonce));
    if (!session_mac(s, "closeProvisioningSession", &data, mac))
        goto done;
    {
        sks_span n = { nonce, sizeof(nonce) }, m = { mac, sizeof(mac) };
        if (!sks_client_close_provisioning_session(s->t, s->handle, n, m, att, &e)) {
            fail_call(s, "closeProvisioningSession", &e);
            goto done;
        }
    }
    /* The session is closed now even if the attestation is wrong: nothing left to abort. */
    s->handle = 0;
    sks_buf_array(&att_in, nonce, sizeof(nonce));
    ok = check_attestation(s, "closeProvisioningSession", &att_in, att);
done:
    sks_buf_free(&data);
    sks_buf_free(&att_in);
    return ok;
}

void issuer_end(issuer_session *s)
{
    if (s->handle != 0) {
        sks_client_error e;
        /* The device removes a session after most failed calls already; this covers the
         * failures found on the issuer's side (e.g. an attestation that does not verify). */
        (void)sks_client_abort_provisioning_session(s->t, s->handle, &e);
        s->handle = 0;
    }
    OPENSSL_cleanse(s->session_key, sizeof(s->session_key));
    sks_buf_free(&s->device_id);
}

void issuer_key_free(issuer_key *key)
{
    OPENSSL_free(key->public_key.data);
    key->public_key.data = NULL;
    key->public_key.len = 0;
    sks_buf_free(&key->ee);
}
