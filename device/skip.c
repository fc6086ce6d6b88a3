/*
 * SKIP, secure key packages (docs/skip.md): the two project-extension methods of the device.
 *
 * skipRequest opens a provisioning session whose issuer is the device itself
 * (issuerUri "urn:sks:skip"): it holds a fresh factory key and the PKCS#10 request signed
 * with it. No session key is ever agreed, so no MAC can be made for it and the session.1
 * methods cannot touch it; only skipImport and abortProvisioningSession can. The trust
 * anchors the request is made for are stored with it (table skip_requests).
 *
 * skipImport takes the whole CMS package. Before anything is decrypted the device itself
 * verifies it against the request's stored anchors: every certificate's chain, the signer
 * (found by key identifier, with the package-signer purpose), the signature over the
 * containers, the factory certificate (certifies this request's key, factory purpose), the
 * curves. Only a package that passed all that is unwrapped, so the decryption answers no
 * question about ciphertext an attacker chose. Every unwrap or key check failure then gives
 * one status and one message and counts against the request; the third withdraws it
 * (SKIP_MAX_FAILED_UNWRAPS). In the one transaction the dispatcher opens, a package that
 * unwraps is stored whole: keys, the factory key's certificate, the session's close. The AES
 * key and the clear private keys never leave this file's stack and heap, and are wiped
 * before it returns.
 */
#include "internal.h"
#include "../cms/key_der.h"
#include "../cms/skip_common.h"
#include "../cms/skip_package.h"

#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
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

/*
 * The factory key's endorsed algorithms: ECDSA signatures only (sorted, as createKeyEntry
 * requires of a list). The factory key identifies the device to the issuer, which needs it to
 * sign, never to agree a key: ECDH between it and a package's (public) ephemeral key gives
 * that package's AES key, and with it every imported private key in clear (docs/skip.md).
 * skipImport derives that key inside the device, without the User API, so it is not limited.
 */
static const char *const FACTORY_ALGORITHMS[] = {
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512",
    SKS_ALG_PREFIX "ecdsa.none",
};

/* An endorsed list in its stored form (the wire encoding: ushort count, then each URI as an
 * array): the factory's, or empty (= any algorithm the key material allows) for device keys. */
static void encode_endorsed(int factory, sks_buf *out)
{
    size_t i, n = factory ? sizeof(FACTORY_ALGORITHMS) / sizeof(FACTORY_ALGORITHMS[0]) : 0;

    sks_buf_ushort(out, (uint16_t)n);
    for (i = 0; i < n; i++)
        sks_buf_array(out, FACTORY_ALGORITHMS[i], strlen(FACTORY_ALGORITHMS[i]));
}

/* One key entry of a SKIP session: no PIN, never exportable, universal. A factory key has no
 * certificate path yet (path and ee_hash NULL) and is endorsed for signatures only; device
 * keys come with their paths and may do what their key material allows. */
/* store_step_done for a statement from store_cached: the statements run once per imported
 * key (insert, certificate lookup, name) are prepared once per device, not per key (SQLite's
 * parser was a tenth of an import's instructions). */
static int step_done_cached(sks_device *dev, sks_call *call, sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);

    store_release(dev, st);
    if (rc != SQLITE_DONE) {
        sks_fail(call, SKS_ERROR_STORAGE, "storage error: %s", sqlite3_errmsg(dev->db));
        return 0;
    }
    return 1;
}

static sks_status insert_skip_key(sks_device *dev, sks_call *call, uint32_t session, const char *id,
                                  const char *name, const char *alg_uri, const sks_buf *spki, const sks_buf *sealed,
                                  const sks_buf *path, const uint8_t *ee_hash, int key_backup, uint32_t *handle)
{
    sks_buf endorsed;
    sqlite3_stmt *st = store_cached(
        dev, call,
        "INSERT INTO keys (session, id, pin_policy, pin, device_pin, pin_caching, biometric,"
        " export_protection, delete_protection, app_usage, friendly_name, key_algorithm,"
        " key_parameters, endorsed, public_key, private_key, certificates, ee_sha256, key_backup, mac)"
        " VALUES (?1, ?2, 0, 0, 0, 0, 0, ?3, 0, ?4, ?5, ?6, x'', ?12, ?7, ?8, ?9, ?10, ?11, x'')");
    int ok;

    if (st == NULL)
        return SKS_ERROR_STORAGE;
    sks_buf_init(&endorsed);
    encode_endorsed(strcmp(id, FACTORY_ID) == 0, &endorsed);
    if (endorsed.failed) {
        store_release(dev, st);
        return sks_fail(call, SKS_ERROR_INTERNAL, "out of memory");
    }
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
    sqlite3_bind_blob(st, 12, endorsed.data, (int)endorsed.len, SQLITE_STATIC);
    ok = step_done_cached(dev, call, st);
    sks_buf_free(&endorsed);
    if (!ok)
        return SKS_ERROR_STORAGE;
    if (handle != NULL)
        *handle = (uint32_t)sqlite3_last_insert_rowid(dev->db);
    return SKS_OK;
}

/* The factory key entry: not exportable, no PIN, ECDSA signatures only. It stays
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

static void reader_fail(sks_reader *in, const char *error, const char *field)
{
    if (sks_reader_ok(in)) {
        in->error = error;
        in->field = field;
    }
}

/* The trust anchors of a request, as received: list byte[] (1 to SKIP_MAX_ANCHORS). */
typedef struct {
    sks_span der[SKIP_MAX_ANCHORS];
    uint16_t count;
} anchor_list;

static void read_anchors(sks_reader *in, anchor_list *a)
{
    uint16_t i;

    a->count = sks_get_ushort(in, "trustAnchor count");
    if (sks_reader_ok(in) && (a->count == 0 || a->count > SKIP_MAX_ANCHORS))
        reader_fail(in, "must hold 1-16 certificates", "trustAnchor");
    for (i = 0; i < a->count && i < SKIP_MAX_ANCHORS && sks_reader_ok(in); i++)
        a->der[i] = sks_get_array(in, "trustAnchor");
}

/* A store of the anchors, or NULL with the call's error. */
static X509_STORE *anchor_store(sks_call *call, const char *method, const anchor_list *a)
{
    const uint8_t *der[SKIP_MAX_ANCHORS];
    size_t len[SKIP_MAX_ANCHORS];
    char err[300];
    X509_STORE *s;
    uint16_t i;

    for (i = 0; i < a->count; i++) {
        der[i] = a->der[i].p;
        len[i] = a->der[i].n;
    }
    if ((s = skip_anchors_from_der(der, len, a->count, err, sizeof(err))) == NULL)
        sks_fail(call, SKS_ERROR_OPTION, "%s: %s", method, err);
    return s;
}

/* The request's anchors (stored as list byte[], the wire form) and its failed-unwrap
 * counter, in the one table SKIP adds to the store. */
static sks_status insert_skip_request(sks_device *dev, sks_call *call, uint32_t session, const anchor_list *a)
{
    sks_buf blob;
    sqlite3_stmt *st;
    uint16_t i;
    sks_status rc = SKS_ERROR_STORAGE;

    sks_buf_init(&blob);
    sks_buf_ushort(&blob, a->count);
    for (i = 0; i < a->count; i++)
        sks_buf_array(&blob, a->der[i].p, a->der[i].n);
    st = blob.failed ? NULL
                     : store_prepare(dev, call, "INSERT OR REPLACE INTO skip_requests (session, anchors, failed_unwraps)"
                                                " VALUES (?1, ?2, 0)");
    if (st != NULL) {
        sqlite3_bind_int64(st, 1, session);
        sqlite3_bind_blob(st, 2, blob.data, (int)blob.len, SQLITE_STATIC);
        if (store_step_done(dev, call, st))
            rc = SKS_OK;
    }
    sks_buf_free(&blob);
    return rc;
}

SKS_HANDLER(h_skip_request)
{
    sks_span alg_uri = sks_get_uri(in, "curveAlgorithm");
    sks_span subject_der = sks_get_array(in, "subjectDER");
    anchor_list anchors;
    X509_STORE *anchor_check = NULL;
    const sks_algorithm *alg;
    X509_NAME *subject = NULL;
    EVP_PKEY *key = NULL;
    sks_buf spki, pkcs10;
    char csid[33];
    uint32_t handle = 0;
    sks_status rc;

    read_anchors(in, &anchors);
    sks_reader_expect_end(in);
    if ((rc = reader_status(call, "skipRequest", in)) != SKS_OK)
        return rc;
    if ((anchor_check = anchor_store(call, "skipRequest", &anchors)) == NULL)
        return SKS_ERROR_OPTION;
    X509_STORE_free(anchor_check);
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
        || (rc = insert_skip_request(dev, call, handle, &anchors)) != SKS_OK
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


/* ------------------------------------------------------------------ skipImport: the request */

/* The open SKIP session and its factory key. No abort on failure: a package that does not
 * verify must not cost the request anything. */
static sks_status load_skip_session(sks_device *dev, sks_call *call, uint32_t handle, key_entry *factory)
{
    prov_session s;
    sqlite3_stmt *st;
    uint32_t key = 0;
    sks_status rc = session_load(dev, call, handle, 1, &s);

    /* Both, as only skipRequest sets them: an ordinary session's issuerUri is the issuer's word
     * (and stores from before the URI was reserved may hold one that claims to be SKIP). */
    if (rc == SKS_OK && (strcmp(s.issuer_uri, SKIP_ISSUER_URI) != 0 || strcmp(s.algorithm, SKIP_ISSUER_URI) != 0))
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

/* The anchors stored at skipRequest and how many verified packages failed to unwrap. */
static sks_status load_request_trust(sks_device *dev, sks_call *call, uint32_t handle, X509_STORE **anchors,
                                     int *failed)
{
    sqlite3_stmt *st = store_prepare(dev, call, "SELECT anchors, failed_unwraps FROM skip_requests WHERE session = ?");
    anchor_list list;
    sks_reader r;
    sks_status rc = SKS_OK;

    *anchors = NULL;
    if (st == NULL)
        return SKS_ERROR_STORAGE;
    /* The anchors decide which packages are opened, the count how many more may fail. */
    if ((rc = row_verify(dev, call, "skip_requests", handle)) != SKS_OK) {
        sqlite3_finalize(st);
        return rc;
    }
    sqlite3_bind_int64(st, 1, handle);
    if (sqlite3_step(st) != SQLITE_ROW) {
        rc = sks_fail(call, SKS_ERROR_NOT_ALLOWED, "skipImport: request #%u has no stored trust anchors (made by an"
                      " older version): withdraw it and make a new request", handle);
    } else {
        sks_reader_init(&r, sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0));
        read_anchors(&r, &list);
        *failed = sqlite3_column_int(st, 1);
        if (!sks_reader_ok(&r) || (*anchors = anchor_store(call, "skipImport", &list)) == NULL)
            rc = sks_fail(call, SKS_ERROR_INTERNAL, "skipImport: the stored anchors of request #%u are unreadable",
                          handle);
    }
    sqlite3_finalize(st);
    return rc;
}

/* ------------------------------------------------------------------ skipImport: verification */

/* Everything that needs no secret, against this request's anchors: the package, its
 * certificates, signer, signature; the factory certificate certifies this request's key and
 * has the factory purpose; the ephemeral key shares its curve. *factory_cert is owned by p. */
static sks_status verify_package(sks_call *call, sks_span der, X509_STORE *anchors, EVP_PKEY *factory,
                                 skip_package **p, X509 **factory_cert)
{
    char err[2400], fcurve[64], ecurve[64];

    *factory_cert = NULL;
    if (!skip_package_parse(der.p, der.n, p, err, sizeof(err)))
        return sks_fail(call, SKS_ERROR_OPTION, "skipImport: %s", err);
    if (!skip_package_verify(*p, anchors, err, sizeof(err)))
        return sks_fail(call, SKS_ERROR_NOT_ALLOWED, "skipImport: %s", err);
    if ((*factory_cert = skip_package_factory_cert(*p, factory)) == NULL)
        return sks_fail(call, SKS_ERROR_NOT_ALLOWED, "skipImport: the package is for another factory key (none of its"
                        " certificates certifies the key of this request)");
    if (!skip_factory_purpose(*factory_cert, err, sizeof(err)))
        return sks_fail(call, SKS_ERROR_NOT_ALLOWED, "skipImport: %s", err);
    skip_curve_of(factory, fcurve, sizeof(fcurve));
    skip_curve_of(X509_get0_pubkey((*p)->signer), ecurve, sizeof(ecurve));
    if (fcurve[0] == '\0' || strcmp(fcurve, ecurve) != 0)
        return sks_fail(call, SKS_ERROR_ALGORITHM,
                        "skipImport: the ephemeral key is on %s, the factory key on %s: they must share the curve",
                        ecurve, fcurve);
    return SKS_OK;
}

static int cert_sha256(X509 *x, uint8_t out[32])
{
    unsigned char *der = NULL;
    int len = i2d_X509(x, &der), ok = len > 0 && sha256(der, (size_t)len, out);

    OPENSSL_free(der);
    return ok;
}

/* The device keeps one key per end-entity certificate (as closeProvisioningSession does). */
static sks_status check_certificate_unused(sks_device *dev, sks_call *call, X509 *cert, const char *what)
{
    sqlite3_stmt *st;
    uint8_t ee_hash[32];
    sks_status rc = SKS_OK;

    if (!cert_sha256(cert, ee_hash))
        return sks_fail(call, SKS_ERROR_INTERNAL, "skipImport: cannot hash the certificate of %s", what);
    if ((st = store_cached(dev, call, "SELECT handle FROM keys WHERE ee_sha256 = ?")) == NULL)
        return SKS_ERROR_STORAGE;
    sqlite3_bind_blob(st, 1, ee_hash, 32, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW)
        rc = sks_fail(call, SKS_ERROR_NOT_ALLOWED, "skipImport: the certificate of %s already belongs to key #%u",
                      what, (uint32_t)sqlite3_column_int64(st, 0));
    store_release(dev, st);
    return rc;
}

/* Public, so checked before anything is decrypted: no certificate of the package is taken. */
static sks_status check_certificates_unused(sks_device *dev, sks_call *call, const skip_package *p,
                                            X509 *factory_cert)
{
    char what[32];
    sks_status rc = check_certificate_unused(dev, call, factory_cert, "the factory key");
    size_t i;

    for (i = 0; i < p->nkeys && rc == SKS_OK; i++) {
        snprintf(what, sizeof(what), "container %zu", i + 1);
        rc = check_certificate_unused(dev, call, p->keys[i].cert, what);
    }
    return rc;
}

/* ------------------------------------------------------------------ skipImport: unwrapping */

/* EncryptedPrivateKeyInfo { aes256-CBC | aes128-CBC with OCTET STRING iv, encryptedData }
 * with the cipher matching the package's key size; the IV into iv. */
static X509_SIG *parse_epki(const uint8_t *der, size_t n, int aes_bits, uint8_t iv[16])
{
    const unsigned char *q = der;
    X509_SIG *sig = n > 0 ? d2i_X509_SIG(NULL, &q, (long)n) : NULL;
    const X509_ALGOR *alg;
    const ASN1_OCTET_STRING *ct;
    const ASN1_OBJECT *oid;
    const void *pval;
    int ptype;

    if (sig == NULL || q != der + n)
        goto bad;
    X509_SIG_get0(sig, &alg, &ct);
    X509_ALGOR_get0(&oid, &ptype, &pval, alg);
    if (OBJ_obj2nid(oid) != (aes_bits == 256 ? NID_aes_256_cbc : NID_aes_128_cbc) || ptype != V_ASN1_OCTET_STRING
        || ASN1_STRING_length(pval) != 16 || ASN1_STRING_length(ct) < 16 || ASN1_STRING_length(ct) % 16 != 0)
        goto bad;
    memcpy(iv, ASN1_STRING_get0_data(pval), 16);
    return sig;
bad:
    X509_SIG_free(sig);
    return NULL;
}

/* One container's private key (AES-CBC-PAD, PKCS#8), matching its container's public key
 * and of a SKIP key type; NULL otherwise. Deliberately no reason: every way this fails must
 * look the same to the caller. The clear PKCS#8 lives only in a buffer wiped here. */
static EVP_PKEY *unwrap_private_key(const uint8_t *aes_key, int aes_bits, const skip_container *c)
{
    uint8_t iv[16];
    X509_SIG *sig = parse_epki(c->epki, c->epki_len, aes_bits, iv);
    const X509_ALGOR *alg;
    const ASN1_OCTET_STRING *ct;
    EVP_PKEY *priv = NULL;
    sks_buf clear;

    sks_buf_init(&clear);
    if (sig != NULL) {
        X509_SIG_get0(sig, &alg, &ct);
        if (aes_cbc(0, 1, aes_key, (size_t)aes_bits / 8, iv, ASN1_STRING_get0_data(ct),
                    (size_t)ASN1_STRING_length(ct), &clear))
            priv = pkcs8_parse(clear.data, clear.len);
    }
    if (priv != NULL
        && (skip_key_algorithm(priv) == NULL || !public_keys_equal(priv, c->public_key) || !certifies(c->cert, priv))) {
        EVP_PKEY_free(priv);
        priv = NULL;
    }
    X509_SIG_free(sig);
    sks_buf_free(&clear);
    ERR_clear_error();
    return priv;
}

/* Every container's private key into privs[], or 0 (and none) if any fails. */
static int unwrap_all(EVP_PKEY *factory, const skip_package *p, EVP_PKEY **privs)
{
    uint8_t aes_key[32];
    size_t i;
    int ok = skip_derive_aes_key(factory, X509_get0_pubkey(p->signer), p->aes_bits, aes_key);

    if (!ok)
        return 0;
    /* Every container is tried even after one failed, so the time taken says little about
     * which one did. */
    for (i = 0; i < p->nkeys; i++)
        ok &= (privs[i] = unwrap_private_key(aes_key, p->aes_bits, &p->keys[i])) != NULL;
    OPENSSL_cleanse(aes_key, sizeof(aes_key));
    for (i = 0; i < p->nkeys && !ok; i++) {
        EVP_PKEY_free(privs[i]);
        privs[i] = NULL;
    }
    return ok;
}

/* A verified package that does not unwrap: one status and one message whatever went wrong,
 * and one more failure against the request, which the third withdraws. The dispatcher
 * commits this (call->commit_on_error), so the count sticks; nothing else was written. */
static sks_status count_failed_unwrap(sks_device *dev, sks_call *call, uint32_t handle, int failed_before)
{
    int failed = failed_before + 1;

    if (failed >= SKIP_MAX_FAILED_UNWRAPS) {
        if (session_delete_all(dev, call, handle) != SKS_OK)
            return SKS_ERROR_STORAGE;
    } else if (!store_run(dev, call, "UPDATE skip_requests SET failed_unwraps = ?2 WHERE session = ?1", handle,
                          failed)) {
        return SKS_ERROR_STORAGE;
    }
    call->commit_on_error = 1;
    if (failed >= SKIP_MAX_FAILED_UNWRAPS)
        return sks_fail(call, SKS_ERROR_CRYPTO, "skipImport: the package does not unwrap to its keys with the factory"
                        " key of request #%u; that was verified package %d of %d that did not, so the request is"
                        " withdrawn", handle, failed, SKIP_MAX_FAILED_UNWRAPS);
    return sks_fail(call, SKS_ERROR_CRYPTO, "skipImport: the package does not unwrap to its keys with the factory key"
                    " of request #%u (verified package %d of %d allowed that did not)", handle, failed,
                    SKIP_MAX_FAILED_UNWRAPS);
}

/* ------------------------------------------------------------------ skipImport: storing */

/* A certificate path in the stored form: the wire encoding of list byte[]. */
static void encode_path(STACK_OF(X509) *certs, sks_buf *out)
{
    int i;

    sks_buf_ushort(out, (uint16_t)sk_X509_num(certs));
    for (i = 0; i < sk_X509_num(certs); i++) {
        unsigned char *der = NULL;
        int len = i2d_X509(sk_X509_value(certs, i), &der);
        if (len <= 0)
            out->failed = 1;
        else
            sks_buf_array(out, der, (size_t)len);
        OPENSSL_free(der);
    }
}

/* Names a key after its certificate's CN, else "<prefix>-<handle>". */
static sks_status name_key(sks_device *dev, sks_call *call, uint32_t handle, X509 *cert, const char *prefix)
{
    char cn[4 * MAX_FRIENDLY_CHARS + 1];
    sqlite3_stmt *st;

    common_name(cert, cn, sizeof(cn));
    if (cn[0] == '\0' || !sks_utf8_valid((const uint8_t *)cn, strlen(cn)))
        snprintf(cn, sizeof(cn), "%s-%u", prefix, handle);
    st = store_cached(dev, call, "UPDATE keys SET friendly_name = ? WHERE handle = ?");
    if (st == NULL)
        return SKS_ERROR_STORAGE;
    sqlite3_bind_text(st, 1, cn, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, handle);
    return step_done_cached(dev, call, st) ? SKS_OK : SKS_ERROR_STORAGE;
}

/* The public key to store, as spki_der writes it. A container's SubjectPublicKeyInfo in the
 * plain form (named curve and uncompressed point, or Ed25519) is already those bytes:
 * unwrap_private_key checked that it is priv's public key, and the plain form has one
 * encoding per key. */
static int container_spki(EVP_PKEY *priv, const skip_container *c, sks_buf *out)
{
    const uint8_t *key;
    size_t key_len;
    int curve;

    if (!spki_split(c->spki, c->spki_len, &curve, &key, &key_len))
        return spki_der(priv, out);
    sks_buf_put(out, c->spki, c->spki_len);
    return !out->failed;
}

/* Seals an unwrapped private key and stores it with its verified certificate path. */
static sks_status store_device_key(sks_device *dev, sks_call *call, uint32_t session, unsigned idx, EVP_PKEY *priv,
                                   const skip_container *c, uint32_t *handle)
{
    sks_buf spki, pkcs8, sealed, path;
    uint8_t ee_hash[32];
    char what[32], id[16];
    sks_status rc = SKS_ERROR_INTERNAL;

    snprintf(id, sizeof(id), "key%u", idx);
    snprintf(what, sizeof(what), "container %u", idx);
    sks_buf_init(&spki);
    sks_buf_init(&pkcs8);
    sks_buf_init(&sealed);
    sks_buf_init(&path);
    encode_path(c->path, &path);
    if (!cert_sha256(c->cert, ee_hash) || !container_spki(priv, c, &spki) || !pkcs8_der(priv, &pkcs8)
        || !seal_new_row(dev, "keys", "private_key", pkcs8.data, pkcs8.len, &sealed) || path.failed) {
        rc = sks_fail(call, SKS_ERROR_INTERNAL, "skipImport: cannot seal the key of container %u", idx);
        goto done;
    }
    /* Again here: two containers of one package may carry the same certificate. */
    if ((rc = check_certificate_unused(dev, call, c->cert, what)) != SKS_OK
        || (rc = insert_skip_key(dev, call, session, id, "", skip_key_algorithm(priv), &spki, &sealed, &path,
                                 ee_hash, BACKUP_IMPORTED, handle)) != SKS_OK)
        goto done;
    rc = name_key(dev, call, *handle, c->cert, "skip");
done:
    sks_buf_free(&spki);
    sks_buf_free(&pkcs8);
    sks_buf_free(&sealed);
    sks_buf_free(&path);
    return rc;
}

/* The factory key gets its certificate (a path of one) and becomes a usable key. */
static sks_status certify_factory_key(sks_device *dev, sks_call *call, uint32_t handle, X509 *cert)
{
    STACK_OF(X509) *one = sk_X509_new_null();
    sks_buf path;
    uint8_t ee_hash[32];
    sqlite3_stmt *st;
    sks_status rc;

    sks_buf_init(&path);
    if (one == NULL || sk_X509_push(one, cert) <= 0 || (encode_path(one, &path), path.failed)
        || !cert_sha256(cert, ee_hash)) {
        rc = sks_fail(call, SKS_ERROR_INTERNAL, "skipImport: out of memory");
        goto done;
    }
    st = store_prepare(dev, call, "UPDATE keys SET certificates = ?, ee_sha256 = ? WHERE handle = ?");
    if (st == NULL) {
        rc = SKS_ERROR_STORAGE;
        goto done;
    }
    sqlite3_bind_blob(st, 1, path.data, (int)path.len, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, ee_hash, 32, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, handle);
    rc = store_step_done(dev, call, st) ? name_key(dev, call, handle, cert, "skip-factory") : SKS_ERROR_STORAGE;
done:
    sk_X509_free(one);
    sks_buf_free(&path);
    return rc;
}

/* Stores every unwrapped key, certifies the factory key, closes the request. */
static sks_status store_package(sks_device *dev, sks_call *call, uint32_t handle, const key_entry *factory,
                                const skip_package *p, X509 *factory_cert, EVP_PKEY **privs, uint32_t *handles)
{
    sks_status rc = SKS_OK;
    size_t i;

    for (i = 0; i < p->nkeys && rc == SKS_OK; i++)
        rc = store_device_key(dev, call, factory->session, (unsigned)i + 1u, privs[i], &p->keys[i], &handles[i]);
    if (rc == SKS_OK)
        rc = certify_factory_key(dev, call, factory->handle, factory_cert);
    if (rc == SKS_OK && (!store_run(dev, call, "UPDATE sessions SET open = 0 WHERE handle = ?1", handle, 0)
                         || !store_run(dev, call, "DELETE FROM skip_requests WHERE session = ?1", handle, 0)))
        rc = SKS_ERROR_STORAGE;
    return rc;
}

SKS_HANDLER(h_skip_import)
{
    uint32_t handle = sks_get_uint(in, "provisioningHandle");
    sks_span package = sks_get_blob(in, "package");
    key_entry factory;
    X509_STORE *anchors = NULL;
    skip_package *p = NULL;
    X509 *factory_cert = NULL;
    EVP_PKEY *factory_pub = NULL, *factory_priv = NULL, *privs[SKIP_MAX_KEYS] = { NULL };
    uint32_t handles[SKIP_MAX_KEYS];
    int failed = 0;
    size_t i;
    sks_status rc;

    memset(&factory, 0, sizeof(factory));
    sks_reader_expect_end(in);
    if ((rc = reader_status(call, "skipImport", in)) != SKS_OK)
        return rc;
    if ((rc = load_skip_session(dev, call, handle, &factory)) != SKS_OK
        || (rc = load_request_trust(dev, call, handle, &anchors, &failed)) != SKS_OK)
        goto done;
    if ((factory_pub = spki_parse(factory.public_key.data, factory.public_key.len)) == NULL) {
        rc = sks_fail(call, SKS_ERROR_INTERNAL, "skipImport: the factory key of request #%u is unreadable", handle);
        goto done;
    }
    if ((rc = verify_package(call, package, anchors, factory_pub, &p, &factory_cert)) != SKS_OK
        || (rc = check_certificates_unused(dev, call, p, factory_cert)) != SKS_OK)
        goto done;
    /* From here on the package is authentic: only now is anything decrypted. */
    if ((factory_priv = key_private(dev, call, &factory)) == NULL) {
        rc = SKS_ERROR_INTERNAL;
        goto done;
    }
    if (!unwrap_all(factory_priv, p, privs)) {
        rc = count_failed_unwrap(dev, call, handle, failed);
        goto done;
    }
    if ((rc = store_package(dev, call, handle, &factory, p, factory_cert, privs, handles)) != SKS_OK)
        goto done;
    sks_buf_ushort(out, (uint16_t)p->nkeys);
    for (i = 0; i < p->nkeys; i++)
        sks_buf_uint(out, handles[i]);
done:
    for (i = 0; i < SKIP_MAX_KEYS; i++)
        EVP_PKEY_free(privs[i]);
    EVP_PKEY_free(factory_priv);
    EVP_PKEY_free(factory_pub);
    skip_package_free(p);
    X509_STORE_free(anchors);
    key_free(&factory);
    return rc;
}
