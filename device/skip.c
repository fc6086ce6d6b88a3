/*
 * SKIP, secure key packages (docs/skip.md): the two project-extension methods of the device.
 *
 * skipRequest opens a provisioning session whose issuer is the device itself
 * (issuerUri "urn:sks:skip"): it holds a fresh factory key and the PKCS#10 request signed
 * with it. No session key is ever agreed, so no MAC can be made for it and the session.1
 * methods cannot touch it; only skipImport and abortProvisioningSession can.
 *
 * skipImport takes what the CMS layer outside the device extracted from a verified package
 * and, in the one transaction the dispatcher opens, derives the AES key from the factory
 * private key, unwraps every private key, checks it against its container's public key and
 * its certificate, stores the keys, certifies the factory key and closes the session. Any
 * failure rolls the whole call back and leaves the session open, so that a corrected
 * package can still be imported. The AES key and the clear private keys never leave this
 * file's stack and heap, and are wiped before it returns.
 */
#include "internal.h"
#include "../cms/skip_common.h"

#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/objects.h>
#include <openssl/x509.h>

#define FACTORY_ID "factory"
#define PROTECT_NEVER 3   /* exportProtection: the private keys never leave the device */
#define APP_UNIVERSAL 3
#define BACKUP_IMPORTED 1 /* keyBackup bit: the key was made outside the device */
#define MAX_FRIENDLY_CHARS 100

/* ------------------------------------------------------------------ shared helpers */

/* The key generation URI (docs/algorithms.md) for a SKIP key: EC on a supported curve, or
 * Ed25519. NULL for anything else (RSA, other curves). */
static const char *skip_key_algorithm(EVP_PKEY *key)
{
    char curve[64];
    const sks_algorithm *a;

    if (EVP_PKEY_get_base_id(key) == EVP_PKEY_ED25519)
        return SKS_ALG_PREFIX "ed25519";
    if (ec_curve_name(key, curve, sizeof(curve)) == NULL || (a = alg_for_curve(curve)) == NULL)
        return NULL;
    return a->uri;
}

static X509 *parse_certificate(sks_span der)
{
    const unsigned char *q = der.p;
    X509 *x;

    if (der.n == 0 || der.n > SKS_CRYPTO_DATA_SIZE)
        return NULL;
    x = d2i_X509(NULL, &q, (long)der.n);
    if (x != NULL && q != der.p + der.n) { /* trailing bytes */
        X509_free(x);
        return NULL;
    }
    return x;
}

/* 1 if the certificate certifies this key (a certificate with an unreadable key does not). */
static int certifies(X509 *cert, EVP_PKEY *key)
{
    EVP_PKEY *pub = cert != NULL ? X509_get0_pubkey(cert) : NULL;

    return pub != NULL && public_keys_equal(pub, key);
}

/* The certificate's CN as UTF-8, cut to at most 100 characters (the friendlyName limit)
 * and never inside a character; empty if it has none. */
static void common_name(X509 *x, char *out, size_t n)
{
    X509_NAME *name = X509_get_subject_name(x);
    int i = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
    unsigned char *utf8 = NULL;
    int len = i < 0 ? -1 : ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i)));
    size_t o = 0, chars = 0;

    for (i = 0; i < len && chars < MAX_FRIENDLY_CHARS; i++) {
        int clen = 1;

        while (i + clen < len && (utf8[i + clen] & 0xC0) == 0x80)
            clen++;
        if (o + (size_t)clen + 1 > n)
            break;
        memcpy(out + o, utf8 + i, (size_t)clen);
        o += (size_t)clen;
        chars++;
        i += clen - 1;
    }
    out[o] = '\0';
    OPENSSL_free(utf8);
}

/* ------------------------------------------------------------------ skipRequest */

/* Digest of the PKCS#10 signature, matched to the curve's strength. */
static const EVP_MD *request_digest(EVP_PKEY *key)
{
    int bits = EVP_PKEY_get_bits(key);

    return bits > 384 ? EVP_sha512() : bits > 256 ? EVP_sha384() : EVP_sha256();
}

static sks_status make_pkcs10(sks_call *call, EVP_PKEY *key, const X509_NAME *subject, sks_buf *out)
{
    X509_REQ *req = X509_REQ_new();
    unsigned char *der = NULL;
    int len = -1;

    if (req != NULL && X509_REQ_set_version(req, 0) == 1 && X509_REQ_set_subject_name(req, subject) == 1
        && X509_REQ_set_pubkey(req, key) == 1 && X509_REQ_sign(req, key, request_digest(key)) > 0)
        len = i2d_X509_REQ(req, &der);
    X509_REQ_free(req);
    if (len <= 0)
        return sks_fail(call, SKS_ERROR_CRYPTO, "skipRequest: cannot sign the PKCS#10 request");
    sks_buf_put(out, der, (size_t)len);
    OPENSSL_free(der);
    return SKS_OK;
}

/* The session: open, issuer and algorithm "urn:sks:skip", a sealed random session key that
 * nobody knows (so no MAC can ever verify), sessionKeyLimit 0. */
static sks_status insert_skip_session(sks_device *dev, sks_call *call, const char *client_session_id,
                                      uint32_t *handle)
{
    uint8_t unused_key[32];
    sks_buf sealed;
    sqlite3_stmt *st;
    sks_status rc = SKS_ERROR_STORAGE;

    sks_buf_init(&sealed);
    if (!random_bytes(unused_key, sizeof(unused_key)) || !seal_new_row(dev, "sessions", "session_key", unused_key, 32, &sealed)) {
        rc = sks_fail(call, SKS_ERROR_INTERNAL, "skipRequest: cannot make the session");
        goto done;
    }
    st = store_prepare(dev, call,
                       "INSERT INTO sessions (open, session_key, algorithm, privacy, client_session_id,"
                       " server_session_id, issuer_uri, kmk, client_time, lifetime, key_limit, mac_counter)"
                       " VALUES (1, ?1, ?2, 0, ?3, 'skip', ?2, x'', ?4, 0, 0, 0)");
    if (st == NULL)
        goto done;
    sqlite3_bind_blob(st, 1, sealed.data, (int)sealed.len, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, SKIP_ISSUER_URI, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, client_session_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)(uint32_t)time(NULL));
    if (store_step_done(dev, call, st)) {
        *handle = (uint32_t)sqlite3_last_insert_rowid(dev->db);
        rc = SKS_OK;
    }
done:
    OPENSSL_cleanse(unused_key, sizeof(unused_key));
    sks_buf_free(&sealed);
    return rc;
}

/* One key entry of a SKIP session: no PIN, never exportable, universal. A factory key has no
 * certificate path yet (path and ee_hash NULL); device keys come with theirs. */
static sks_status insert_skip_key(sks_device *dev, sks_call *call, uint32_t session, const char *id,
                                  const char *name, const char *alg_uri, const sks_buf *spki, const sks_buf *sealed,
                                  const sks_buf *path, const uint8_t *ee_hash, int key_backup, uint32_t *handle)
{
    sqlite3_stmt *st = store_prepare(
        dev, call,
        "INSERT INTO keys (session, id, pin_policy, pin, device_pin, pin_caching, biometric,"
        " export_protection, delete_protection, app_usage, friendly_name, key_algorithm,"
        " key_parameters, endorsed, public_key, private_key, certificates, ee_sha256, key_backup, mac)"
        " VALUES (?1, ?2, 0, 0, 0, 0, 0, ?3, 0, ?4, ?5, ?6, x'', x'0000', ?7, ?8, ?9, ?10, ?11, x'')");

    if (st == NULL)
        return SKS_ERROR_STORAGE;
    sqlite3_bind_int64(st, 1, session);
    sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, PROTECT_NEVER);
    sqlite3_bind_int(st, 4, APP_UNIVERSAL);
    sqlite3_bind_text(st, 5, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, alg_uri, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 7, spki->data, (int)spki->len, SQLITE_STATIC);
    sqlite3_bind_blob(st, 8, sealed->data, (int)sealed->len, SQLITE_STATIC);
    if (path != NULL) {
        sqlite3_bind_blob(st, 9, path->data, (int)path->len, SQLITE_STATIC);
        sqlite3_bind_blob(st, 10, ee_hash, 32, SQLITE_STATIC);
    } else {
        sqlite3_bind_null(st, 9);
        sqlite3_bind_null(st, 10);
    }
    sqlite3_bind_int(st, 11, key_backup);
    if (!store_step_done(dev, call, st))
        return SKS_ERROR_STORAGE;
    if (handle != NULL)
        *handle = (uint32_t)sqlite3_last_insert_rowid(dev->db);
    return SKS_OK;
}

/* The factory key entry: not exportable, no PIN, any algorithm its key type allows. It stays
 * invisible to the User API until skipImport closes the session. */
static sks_status insert_factory_key(sks_device *dev, sks_call *call, uint32_t session, const char *alg_uri,
                                     EVP_PKEY *key, const sks_buf *spki)
{
    sks_buf pkcs8, sealed;
    sks_status rc;

    sks_buf_init(&pkcs8);
    sks_buf_init(&sealed);
    if (!pkcs8_der(key, &pkcs8) || !seal_new_row(dev, "keys", "private_key", pkcs8.data, pkcs8.len, &sealed)) {
        rc = sks_fail(call, SKS_ERROR_INTERNAL, "skipRequest: cannot seal the factory key");
        goto done;
    }
    rc = insert_skip_key(dev, call, session, FACTORY_ID, "skip-factory", alg_uri, spki, &sealed, NULL, NULL, 0, NULL);
done:
    sks_buf_free(&pkcs8);
    sks_buf_free(&sealed);
    return rc;
}

static X509_NAME *parse_subject(sks_span der)
{
    const unsigned char *q = der.p;
    X509_NAME *name = der.n > 0 ? d2i_X509_NAME(NULL, &q, (long)der.n) : NULL;

    if (name != NULL && q != der.p + der.n) {
        X509_NAME_free(name);
        return NULL;
    }
    return name;
}

SKS_HANDLER(h_skip_request)
{
    sks_span alg_uri = sks_get_uri(in, "curveAlgorithm");
    sks_span subject_der = sks_get_array(in, "subjectDER");
    const sks_algorithm *alg;
    X509_NAME *subject = NULL;
    EVP_PKEY *key = NULL;
    sks_buf spki, pkcs10;
    char csid[33];
    uint32_t handle = 0;
    sks_status rc;

    sks_reader_expect_end(in);
    if ((rc = reader_status(call, "skipRequest", in)) != SKS_OK)
        return rc;
    sks_buf_init(&spki);
    sks_buf_init(&pkcs10);
    alg = alg_find_n((const char *)alg_uri.p, alg_uri.n);
    if (alg == NULL || alg->cls != ALG_KEY_GEN || alg->key != KEYTYPE_EC) {
        rc = sks_fail(call, SKS_ERROR_ALGORITHM, "skipRequest: \"%.*s\" is not an EC key algorithm of this device",
                      (int)alg_uri.n, alg_uri.p);
        goto done;
    }
    if ((subject = parse_subject(subject_der)) == NULL) {
        rc = sks_fail(call, SKS_ERROR_OPTION, "skipRequest: \"subjectDER\" is not a DER X.509 Name");
        goto done;
    }
    if (dev->hooks.generated_key != NULL)
        key = dev->hooks.generated_key(dev->hooks.ctx, FACTORY_ID);
    if (key == NULL)
        key = ec_generate(alg->curve);
    if (key == NULL || !spki_der(key, &spki) || !skip_session_id(key, csid)) {
        rc = sks_fail(call, SKS_ERROR_CRYPTO, "skipRequest: factory key generation failed");
        goto done;
    }
    if ((rc = make_pkcs10(call, key, subject, &pkcs10)) != SKS_OK
        || (rc = insert_skip_session(dev, call, csid, &handle)) != SKS_OK
        || (rc = insert_factory_key(dev, call, handle, alg->uri, key, &spki)) != SKS_OK)
        goto done;
    sks_buf_uint(out, handle);
    sks_buf_array(out, pkcs10.data, pkcs10.len);
done:
    X509_NAME_free(subject);
    EVP_PKEY_free(key);
    sks_buf_free(&spki);
    sks_buf_free(&pkcs10);
    return rc;
}

/* ------------------------------------------------------------------ skipImport: arguments */

typedef struct {
    sks_span public_key;
    sks_span epki;
    sks_span certs[SKIP_MAX_PATH];
    uint16_t ncerts;
} import_container;

typedef struct {
    uint32_t handle;
    sks_span ephemeral;
    uint16_t aes_bits; /* a ushort on the wire: 256 does not fit in a byte */
    sks_span factory_cert;
    import_container c[SKIP_MAX_KEYS];
    uint16_t count;
} import_args;

static void reader_fail(sks_reader *in, const char *error, const char *field)
{
    if (sks_reader_ok(in)) {
        in->error = error;
        in->field = field;
    }
}

static void read_container(sks_reader *in, import_container *c)
{
    uint16_t i;

    c->public_key = sks_get_array(in, "publicKey");
    c->epki = sks_get_array(in, "encryptedPrivateKeyInfo");
    c->ncerts = sks_get_ushort(in, "certificatePath count");
    if (c->ncerts == 0 || c->ncerts > SKIP_MAX_PATH)
        reader_fail(in, "must hold 1-16 certificates", "certificatePath");
    for (i = 0; i < c->ncerts && i < SKIP_MAX_PATH && sks_reader_ok(in); i++)
        c->certs[i] = sks_get_array(in, "certificatePath");
}

static void read_import_args(sks_reader *in, import_args *a)
{
    uint16_t i;

    a->handle = sks_get_uint(in, "provisioningHandle");
    a->ephemeral = sks_get_array(in, "ephemeralPublicKey");
    a->aes_bits = sks_get_ushort(in, "aesKeyBits");
    a->factory_cert = sks_get_array(in, "factoryCertificate");
    a->count = sks_get_ushort(in, "container count");
    if (a->count == 0 || a->count > SKIP_MAX_KEYS)
        reader_fail(in, "must hold 1-32 containers", "containers");
    for (i = 0; i < a->count && i < SKIP_MAX_KEYS && sks_reader_ok(in); i++)
        read_container(in, &a->c[i]);
    sks_reader_expect_end(in);
}

/* ------------------------------------------------------------------ skipImport: checks */

/* The open SKIP session and its factory key. No abort on failure: the session must survive
 * a refused package. */
static sks_status load_skip_session(sks_device *dev, sks_call *call, uint32_t handle, key_entry *factory)
{
    prov_session s;
    sqlite3_stmt *st;
    uint32_t key = 0;
    sks_status rc = session_load(dev, call, handle, 1, &s);

    if (rc == SKS_OK && strcmp(s.issuer_uri, SKIP_ISSUER_URI) != 0)
        rc = sks_fail(call, SKS_ERROR_NOT_ALLOWED, "skipImport: provisioning session #%u is not a SKIP request",
                      handle);
    session_free(&s);
    if (rc != SKS_OK)
        return rc;
    st = store_prepare(dev, call, "SELECT handle FROM keys WHERE session = ? AND id = '" FACTORY_ID "'");
    if (st == NULL)
        return SKS_ERROR_STORAGE;
    sqlite3_bind_int64(st, 1, handle);
    if (sqlite3_step(st) == SQLITE_ROW)
        key = (uint32_t)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if (key == 0)
        return sks_fail(call, SKS_ERROR_NO_KEY, "skipImport: session #%u has no factory key", handle);
    return key_load(dev, call, key, factory);
}

/* The package must answer this session's request: its factory certificate certifies the
 * factory key, and its ephemeral key is on the factory key's curve. */
static sks_status check_factory_and_ephemeral(sks_call *call, EVP_PKEY *factory, const import_args *a,
                                              EVP_PKEY **ephemeral)
{
    X509 *cert = parse_certificate(a->factory_cert);
    char fcurve[64], ecurve[64];
    int same_key = certifies(cert, factory);

    X509_free(cert);
    if (cert == NULL)
        return sks_fail(call, SKS_ERROR_OPTION, "skipImport: \"factoryCertificate\" is not DER X.509");
    if (!same_key)
        return sks_fail(call, SKS_ERROR_NOT_ALLOWED,
                        "skipImport: the package is for another factory key (its factory certificate does not"
                        " certify the key of session #%u)", a->handle);
    *ephemeral = spki_parse(a->ephemeral.p, a->ephemeral.n);
    if (*ephemeral == NULL || ec_curve_name(*ephemeral, ecurve, sizeof(ecurve)) == NULL)
        return sks_fail(call, SKS_ERROR_ALGORITHM, "skipImport: \"ephemeralPublicKey\" is not an EC public key");
    if (ec_curve_name(factory, fcurve, sizeof(fcurve)) == NULL || strcmp(fcurve, ecurve) != 0)
        return sks_fail(call, SKS_ERROR_ALGORITHM,
                        "skipImport: the ephemeral key is on %s, the factory key on %s: they must share the curve",
                        ecurve, fcurve);
    if (a->aes_bits != 128 && a->aes_bits != 256)
        return sks_fail(call, SKS_ERROR_ALGORITHM, "skipImport: \"aesKeyBits\" must be 128 or 256, got %u",
                        a->aes_bits);
    return SKS_OK;
}

/* EncryptedPrivateKeyInfo { aes256-CBC | aes128-CBC with OCTET STRING iv, encryptedData }:
 * the cipher must match the derived key's size. */
static sks_status parse_epki(sks_call *call, unsigned idx, sks_span der, int aes_bits, uint8_t iv[16],
                             X509_SIG **sig)
{
    const unsigned char *q = der.p;
    const X509_ALGOR *alg;
    const ASN1_OCTET_STRING *ct;
    const ASN1_OBJECT *oid;
    const void *pval;
    int ptype, nid;

    *sig = der.n > 0 ? d2i_X509_SIG(NULL, &q, (long)der.n) : NULL;
    if (*sig == NULL || q != der.p + der.n)
        return sks_fail(call, SKS_ERROR_OPTION, "skipImport: container %u: encryptedPrivateKeyInfo is not DER", idx);
    X509_SIG_get0(*sig, &alg, &ct);
    X509_ALGOR_get0(&oid, &ptype, &pval, alg);
    nid = OBJ_obj2nid(oid);
    if (nid != (aes_bits == 256 ? NID_aes_256_cbc : NID_aes_128_cbc))
        return sks_fail(call, SKS_ERROR_ALGORITHM,
                        "skipImport: container %u: the cipher must be aes%d-CBC (the package's AES key size)", idx,
                        aes_bits);
    if (ptype != V_ASN1_OCTET_STRING || ASN1_STRING_length(pval) != 16)
        return sks_fail(call, SKS_ERROR_OPTION, "skipImport: container %u: the cipher parameter must be a 16-byte IV",
                        idx);
    memcpy(iv, ASN1_STRING_get0_data(pval), 16);
    if (ASN1_STRING_length(ct) < 16 || ASN1_STRING_length(ct) % 16 != 0)
        return sks_fail(call, SKS_ERROR_CRYPTO, "skipImport: container %u: the ciphertext is not whole AES blocks",
                        idx);
    return SKS_OK;
}

/* Decrypts one container's private key (AES-CBC-PAD) into a key object; the clear PKCS#8
 * lives only in a buffer wiped here. */
static sks_status unwrap_private_key(sks_call *call, unsigned idx, const uint8_t *aes_key, int aes_bits, sks_span epki,
                                     EVP_PKEY **priv)
{
    X509_SIG *sig = NULL;
    const X509_ALGOR *alg;
    const ASN1_OCTET_STRING *ct;
    uint8_t iv[16];
    sks_buf clear;
    sks_status rc;

    *priv = NULL;
    sks_buf_init(&clear);
    if ((rc = parse_epki(call, idx, epki, aes_bits, iv, &sig)) != SKS_OK)
        goto done;
    X509_SIG_get0(sig, &alg, &ct);
    if (!aes_cbc(0, 1, aes_key, (size_t)aes_bits / 8, iv, ASN1_STRING_get0_data(ct), (size_t)ASN1_STRING_length(ct),
                 &clear)) {
        rc = sks_fail(call, SKS_ERROR_CRYPTO,
                      "skipImport: container %u cannot be decrypted (bad padding: tampered ciphertext or another key)",
                      idx);
        goto done;
    }
    if ((*priv = pkcs8_parse(clear.data, clear.len)) == NULL) {
        rc = sks_fail(call, SKS_ERROR_CRYPTO,
                      "skipImport: container %u does not decrypt to a PKCS#8 private key (tampered ciphertext?)", idx);
        goto done;
    }
    if (skip_key_algorithm(*priv) == NULL)
        rc = sks_fail(call, SKS_ERROR_ALGORITHM,
                      "skipImport: container %u holds an unsupported key (EC on a supported curve or Ed25519 only)",
                      idx);
done:
    X509_SIG_free(sig);
    sks_buf_free(&clear);
    return rc;
}

/* A path certificate the first container already carried (the CA chain repeats in every
 * container) was already found to be DER X.509. */
static int seen_before(const import_container *first, const import_container *c, uint16_t i)
{
    return first != NULL && first != c && i < first->ncerts && sks_span_eq(first->certs[i], c->certs[i]);
}

/* private == container public == certificate public; every path element is DER X.509. The
 * end-entity certificate's CN goes to cn (the key's friendly name), so it is parsed once. */
static sks_status check_container(sks_call *call, unsigned idx, EVP_PKEY *priv, const import_container *c,
                                  const import_container *first, char *cn, size_t cnlen)
{
    EVP_PKEY *pub = spki_parse(c->public_key.p, c->public_key.n);
    X509 *ee = parse_certificate(c->certs[0]);
    int pub_ok = pub != NULL && public_keys_equal(priv, pub);
    int cert_ok = certifies(ee, priv);
    uint16_t i;

    cn[0] = '\0';
    if (ee != NULL)
        common_name(ee, cn, cnlen);
    EVP_PKEY_free(pub);
    X509_free(ee);
    if (!pub_ok)
        return sks_fail(call, SKS_ERROR_CRYPTO,
                        "skipImport: container %u: the private key does not match its public key", idx);
    if (!cert_ok)
        return sks_fail(call, SKS_ERROR_CRYPTO,
                        "skipImport: container %u: the private key does not match its certificate", idx);
    for (i = 1; i < c->ncerts; i++) {
        X509 *x = seen_before(first, c, i) ? NULL : parse_certificate(c->certs[i]);
        int ok = x != NULL || seen_before(first, c, i);
        X509_free(x);
        if (!ok)
            return sks_fail(call, SKS_ERROR_OPTION, "skipImport: container %u: certificate %u of its path is not DER"
                            " X.509", idx, i);
    }
    return SKS_OK;
}

/* The device keeps one key per end-entity certificate (as closeProvisioningSession does). */
static sks_status check_certificate_unused(sks_device *dev, sks_call *call, const uint8_t ee_hash[32], const char *what)
{
    sqlite3_stmt *st = store_prepare(dev, call, "SELECT handle FROM keys WHERE ee_sha256 = ?");
    sks_status rc = SKS_OK;

    if (st == NULL)
        return SKS_ERROR_STORAGE;
    sqlite3_bind_blob(st, 1, ee_hash, 32, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW)
        rc = sks_fail(call, SKS_ERROR_NOT_ALLOWED, "skipImport: the certificate of %s already belongs to key #%u",
                      what, (uint32_t)sqlite3_column_int64(st, 0));
    sqlite3_finalize(st);
    return rc;
}

/* ------------------------------------------------------------------ skipImport: storing */

/* A certificate path in the stored form: the wire encoding of list byte[]. */
static void encode_path(const sks_span *certs, uint16_t n, sks_buf *out)
{
    uint16_t i;

    sks_buf_ushort(out, n);
    for (i = 0; i < n; i++)
        sks_buf_array(out, certs[i].p, certs[i].n);
}

/* Names a key after its certificate's CN, else "<prefix>-<handle>". */
static sks_status name_key(sks_device *dev, sks_call *call, uint32_t handle, const char *cn, const char *prefix)
{
    char name[4 * MAX_FRIENDLY_CHARS + 1];
    sqlite3_stmt *st;

    snprintf(name, sizeof(name), "%s", cn);
    if (name[0] == '\0' || !sks_utf8_valid((const uint8_t *)name, strlen(name)))
        snprintf(name, sizeof(name), "%s-%u", prefix, handle);
    st = store_prepare(dev, call, "UPDATE keys SET friendly_name = ? WHERE handle = ?");
    if (st == NULL)
        return SKS_ERROR_STORAGE;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, handle);
    return store_step_done(dev, call, st) ? SKS_OK : SKS_ERROR_STORAGE;
}

/* Seals a checked private key and stores it with its certificate path. */
static sks_status store_device_key(sks_device *dev, sks_call *call, uint32_t session, unsigned idx, EVP_PKEY *priv,
                                   const import_container *c, const char *cn, uint32_t *handle)
{
    sks_buf spki, pkcs8, sealed, path;
    uint8_t ee_hash[32];
    char what[32], id[16];
    sks_status rc = SKS_ERROR_INTERNAL;

    snprintf(id, sizeof(id), "key%u", idx);
    sks_buf_init(&spki);
    sks_buf_init(&pkcs8);
    sks_buf_init(&sealed);
    sks_buf_init(&path);
    snprintf(what, sizeof(what), "container %u", idx);
    encode_path(c->certs, c->ncerts, &path);
    if (!sha256(c->certs[0].p, c->certs[0].n, ee_hash) || !spki_der(priv, &spki) || !pkcs8_der(priv, &pkcs8)
        || !seal_new_row(dev, "keys", "private_key", pkcs8.data, pkcs8.len, &sealed) || path.failed) {
        rc = sks_fail(call, SKS_ERROR_INTERNAL, "skipImport: cannot seal the key of container %u", idx);
        goto done;
    }
    if ((rc = check_certificate_unused(dev, call, ee_hash, what)) != SKS_OK
        || (rc = insert_skip_key(dev, call, session, id, "", skip_key_algorithm(priv), &spki, &sealed, &path,
                                 ee_hash, BACKUP_IMPORTED, handle)) != SKS_OK)
        goto done;
    rc = name_key(dev, call, *handle, cn, "skip");
done:
    sks_buf_free(&spki);
    sks_buf_free(&pkcs8);
    sks_buf_free(&sealed);
    sks_buf_free(&path);
    return rc;
}

/* The factory key gets its certificate (a path of one) and becomes a usable key. */
static sks_status certify_factory_key(sks_device *dev, sks_call *call, uint32_t handle, sks_span cert)
{
    char cn[4 * MAX_FRIENDLY_CHARS + 1] = "";
    X509 *x = parse_certificate(cert);
    sks_buf path;
    uint8_t ee_hash[32];
    sqlite3_stmt *st;
    sks_status rc;

    if (x != NULL)
        common_name(x, cn, sizeof(cn));
    X509_free(x);
    sks_buf_init(&path);
    encode_path(&cert, 1, &path);
    if (path.failed || !sha256(cert.p, cert.n, ee_hash)) {
        rc = sks_fail(call, SKS_ERROR_INTERNAL, "out of memory");
        goto done;
    }
    if ((rc = check_certificate_unused(dev, call, ee_hash, "the factory key")) != SKS_OK)
        goto done;
    st = store_prepare(dev, call, "UPDATE keys SET certificates = ?, ee_sha256 = ? WHERE handle = ?");
    if (st == NULL) {
        rc = SKS_ERROR_STORAGE;
        goto done;
    }
    sqlite3_bind_blob(st, 1, path.data, (int)path.len, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, ee_hash, 32, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, handle);
    rc = store_step_done(dev, call, st) ? name_key(dev, call, handle, cn, "skip-factory") : SKS_ERROR_STORAGE;
done:
    sks_buf_free(&path);
    return rc;
}

/* Unwraps, checks and stores every container; handles[] receives the new keys in order. */
static sks_status import_containers(sks_device *dev, sks_call *call, const import_args *a, const key_entry *factory,
                                    const uint8_t *aes_key, uint32_t *handles)
{
    sks_status rc = SKS_OK;
    uint16_t i;

    for (i = 0; i < a->count && rc == SKS_OK; i++) {
        char cn[4 * MAX_FRIENDLY_CHARS + 1];
        EVP_PKEY *priv = NULL;

        if ((rc = unwrap_private_key(call, i + 1u, aes_key, a->aes_bits, a->c[i].epki, &priv)) == SKS_OK
            && (rc = check_container(call, i + 1u, priv, &a->c[i], &a->c[0], cn, sizeof(cn))) == SKS_OK)
            rc = store_device_key(dev, call, factory->session, i + 1u, priv, &a->c[i], cn, &handles[i]);
        EVP_PKEY_free(priv);
    }
    return rc;
}

SKS_HANDLER(h_skip_import)
{
    import_args *a = OPENSSL_zalloc(sizeof(*a));
    key_entry factory;
    EVP_PKEY *factory_priv = NULL, *ephemeral = NULL;
    uint8_t aes_key[32];
    uint32_t handles[SKIP_MAX_KEYS];
    uint16_t i;
    sks_status rc;

    memset(&factory, 0, sizeof(factory));
    if (a == NULL)
        return sks_fail(call, SKS_ERROR_INTERNAL, "skipImport: out of memory");
    read_import_args(in, a);
    if ((rc = reader_status(call, "skipImport", in)) != SKS_OK)
        goto done;
    if ((rc = load_skip_session(dev, call, a->handle, &factory)) != SKS_OK)
        goto done;
    if ((factory_priv = key_private(dev, call, &factory)) == NULL) {
        rc = SKS_ERROR_INTERNAL;
        goto done;
    }
    if ((rc = check_factory_and_ephemeral(call, factory_priv, a, &ephemeral)) != SKS_OK)
        goto done;
    if (!skip_derive_aes_key(factory_priv, ephemeral, a->aes_bits, aes_key)) {
        rc = sks_fail(call, SKS_ERROR_CRYPTO, "skipImport: ECDH with the ephemeral key failed");
        goto done;
    }
    rc = import_containers(dev, call, a, &factory, aes_key, handles);
    OPENSSL_cleanse(aes_key, sizeof(aes_key));
    if (rc != SKS_OK || (rc = certify_factory_key(dev, call, factory.handle, a->factory_cert)) != SKS_OK)
        goto done;
    if (!store_run(dev, call, "UPDATE sessions SET open = 0 WHERE handle = ?1", a->handle, 0)) {
        rc = SKS_ERROR_STORAGE;
        goto done;
    }
    sks_buf_ushort(out, a->count);
    for (i = 0; i < a->count; i++)
        sks_buf_uint(out, handles[i]);
done:
    EVP_PKEY_free(factory_priv);
    EVP_PKEY_free(ephemeral);
    key_free(&factory);
    OPENSSL_clear_free(a, sizeof(*a));
    return rc;
}
