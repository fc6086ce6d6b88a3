/*
 * SKIP packages through OpenSSL's decoders and OSSL_STORE (docs/skip.md).
 *
 * Two decoders, because one cannot serve both ways OpenSSL reaches a decoder safely:
 *
 *  1. "DER" from DER (sks_skip_decoder_functions): recognises a CMS SignedData, verifies it
 *     as a SKIP package against the trust anchors of the provider's `skip-trust`, imports it
 *     into the device (or finds it imported already) and hands on each imported key as a
 *     small "sks-key" blob: a per-process random token and the key handle. It sits among the
 *     DER-to-DER decoders, so both OSSL_DECODER_CTX_new_for_pkey (input "DER" or "PEM") and
 *     the file: OSSL_STORE loader reach it. It must never pass an object *reference*: the
 *     file: loader would give it to its own provider's keymgmt, which would take our key
 *     object for one of its own.
 *  2. "EC"/"ED25519" from DER with structure "sks-key" (sks_skip_key_decoder_functions):
 *     turns a blob from this process into a reference to an sks key, which
 *     OSSL_DECODER hands to the sks keymgmt of this same provider. The token makes sure
 *     that only blobs decoder 1 made in this process ever name a device key.
 *
 * One decode yields one key: decoder 1 offers the package's keys in order until the
 * caller takes one (OSSL_DECODER with a key type takes the first of that type; the file:
 * loader takes one object per file). All keys are in the store after the first load and
 * reachable by sks: URIs; loading the package again imports nothing and yields the same keys.
 */
#include "../provider/provider.h"
#include "skip_decoder.h"
#include "skip_import.h"

#include <string.h>

#include <openssl/core_names.h>
#include <openssl/core_object.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/params.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#define BLOB_TOKEN 16
#define BLOB_LEN (BLOB_TOKEN + 4)
#define MAX_PACKAGE (4u * 1024 * 1024)

static OSSL_FUNC_decoder_newctx_fn dec_newctx;
static OSSL_FUNC_decoder_freectx_fn dec_freectx;
static OSSL_FUNC_decoder_decode_fn package_decode, key_decode;
static OSSL_FUNC_decoder_export_object_fn no_export;

/* ------------------------------------------------------------------ the blob token */

static CRYPTO_ONCE token_once = CRYPTO_ONCE_STATIC_INIT;
static uint8_t token[BLOB_TOKEN];
static int token_ok;

static void make_token(void)
{
    token_ok = RAND_bytes(token, sizeof(token)) == 1;
}

static int have_token(void)
{
    return CRYPTO_THREAD_run_once(&token_once, make_token) && token_ok;
}

/* ------------------------------------------------------------------ shared */

static void *dec_newctx(void *provctx)
{
    return provctx; /* the decoders keep no state of their own */
}

static void dec_freectx(void *vctx)
{
    (void)vctx;
}

static int no_export(void *vctx, const void *reference, size_t reference_sz, OSSL_CALLBACK *export_cb,
                     void *export_cbarg)
{
    /* sks private keys never leave the device, not even to another provider's keymgmt. */
    (void)vctx;
    (void)reference;
    (void)reference_sz;
    (void)export_cb;
    (void)export_cbarg;
    return 0;
}

/* Reads the whole input, at most max bytes; 0 if it is longer or unreadable. */
static int read_all(sks_provctx *ctx, OSSL_CORE_BIO *cin, size_t max, sks_buf *out)
{
    BIO *b = BIO_new_from_core_bio(ctx->libctx, cin);
    uint8_t chunk[4096];
    size_t got = 0;
    int ok = b != NULL;

    while (ok && BIO_read_ex(b, chunk, sizeof(chunk), &got) == 1 && got > 0) {
        sks_buf_put(out, chunk, got);
        ok = !out->failed && out->len <= max;
    }
    BIO_free(b);
    return ok && out->len > 0;
}

/* DER ContentInfo whose contentType is id-signedData (1.2.840.113549.1.7.2). */
static int is_signed_data(const uint8_t *p, size_t n)
{
    static const uint8_t OID[] = { 0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x07, 0x02 };
    size_t off = 2;

    if (n < 2 + sizeof(OID) || p[0] != 0x30)
        return 0;
    if (p[1] & 0x80)
        off += p[1] & 0x7F;
    return n >= off + sizeof(OID) && memcmp(p + off, OID, sizeof(OID)) == 0;
}

static int starts_with(const sks_buf *b, const char *prefix)
{
    size_t n = strlen(prefix);

    return b->len > n && memcmp(b->data, prefix, n) == 0;
}

/* A PEM package (label CMS or PKCS7) becomes its DER in place; anything else is left as
 * it is. OpenSSL's own PEM-to-DER decoder would hand the DER on typed "CMS", which no
 * decoder chain continues, so packages in PEM are read here. */
static int pem_to_der(sks_buf *in)
{
    BIO *b;
    char *name = NULL, *header = NULL;
    unsigned char *der = NULL;
    long len = 0;
    int ok;

    if (!starts_with(in, "-----BEGIN CMS-----") && !starts_with(in, "-----BEGIN PKCS7-----"))
        return 1;
    b = BIO_new_mem_buf(in->data, (int)in->len);
    ok = b != NULL && PEM_read_bio(b, &name, &header, &der, &len) == 1 && len > 0;
    BIO_free(b);
    if (ok) {
        sks_buf_reset(in);
        sks_buf_put(in, der, (size_t)len);
    }
    OPENSSL_free(name);
    OPENSSL_free(header);
    OPENSSL_free(der);
    ERR_clear_error();
    return ok && !in->failed;
}

/* ------------------------------------------------------------------ decoder 1: packages */

/* Verifies and imports; res receives the package's keys. Errors are raised. */
static int import_package(sks_provctx *ctx, const sks_buf *der, skip_package **pkg, skip_import_result *res)
{
    char trust[4096], err[2400] = "";
    X509_STORE *anchors = NULL;
    sks_transport *t;
    int ok = 0;

    if (!sks_provider_skip_trust(ctx, trust, sizeof(trust))) {
        sks_raise(ctx, SKS_R_UNSUPPORTED, "SKIP package refused: no trust anchors (set skip-trust = PEM-FILE in the"
                  " sks provider's configuration)");
        return 0;
    }
    if ((anchors = skip_anchors_load(trust, err, sizeof(err))) == NULL
        || !skip_package_parse(der->data, der->len, pkg, err, sizeof(err))
        || !skip_package_verify(*pkg, anchors, err, sizeof(err))) {
        sks_raise(ctx, SKS_R_DEVICE, "SKIP package refused: %s", err);
        X509_STORE_free(anchors);
        return 0;
    }
    X509_STORE_free(anchors);
    /* The import's calls (find the pending request, skipImport) through the typed client on
     * the provider's connection, held for the whole import. */
    if ((t = sks_conn_acquire(ctx)) == NULL)
        return 0;
    ok = skip_import(t, *pkg, res, err, sizeof(err));
    sks_conn_release(ctx);
    if (!ok)
        sks_raise(ctx, SKS_R_DEVICE, "SKIP package refused: %s", err);
    return ok;
}

/* Offers one imported key as an "sks-key" blob; 1 if the caller took it. */
static int offer_key(uint32_t handle, EVP_PKEY *pub, OSSL_CALLBACK *data_cb, void *data_cbarg)
{
    uint8_t blob[BLOB_LEN];
    int type = OSSL_OBJECT_PKEY;
    char *kind = EVP_PKEY_get_base_id(pub) == EVP_PKEY_ED25519 ? "ED25519" : "EC";
    OSSL_PARAM params[5];

    memcpy(blob, token, BLOB_TOKEN);
    blob[BLOB_TOKEN] = (uint8_t)(handle >> 24);
    blob[BLOB_TOKEN + 1] = (uint8_t)(handle >> 16);
    blob[BLOB_TOKEN + 2] = (uint8_t)(handle >> 8);
    blob[BLOB_TOKEN + 3] = (uint8_t)handle;
    params[0] = OSSL_PARAM_construct_int(OSSL_OBJECT_PARAM_TYPE, &type);
    params[1] = OSSL_PARAM_construct_utf8_string(OSSL_OBJECT_PARAM_DATA_TYPE, kind, 0);
    params[2] = OSSL_PARAM_construct_utf8_string(OSSL_OBJECT_PARAM_DATA_STRUCTURE, "sks-key", 0);
    params[3] = OSSL_PARAM_construct_octet_string(OSSL_OBJECT_PARAM_DATA, blob, sizeof(blob));
    params[4] = OSSL_PARAM_construct_end();
    return data_cb(params, data_cbarg);
}

static int package_decode(void *vctx, OSSL_CORE_BIO *cin, int selection, OSSL_CALLBACK *data_cb, void *data_cbarg,
                          OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg)
{
    sks_provctx *ctx = vctx;
    skip_package *pkg = NULL;
    skip_import_result res;
    sks_buf der;
    size_t i;
    int ok = 1, taken = 0;

    (void)selection;
    (void)pw_cb;
    (void)pw_cbarg;
    sks_buf_init(&der);
    /* Anything but a CMS SignedData is not ours: say nothing, let the other decoders try. */
    if (!read_all(ctx, cin, MAX_PACKAGE, &der) || !pem_to_der(&der) || !is_signed_data(der.data, der.len))
        goto done;
    if (!have_token() || !import_package(ctx, &der, &pkg, &res)) {
        ok = 0;
        goto done;
    }
    /* The handles index the package's containers: never trust the device's count. */
    if (res.count != pkg->nkeys) {
        sks_raise(ctx, SKS_R_DEVICE, "SKIP package refused: the device named %zu keys for %zu containers", res.count,
                  pkg->nkeys);
        ok = 0;
        goto done;
    }
    for (i = 0; i < res.count && !taken; i++) {
        ERR_set_mark(); /* a key the caller does not want (another type) is no error */
        taken = offer_key(res.handles[i], pkg->keys[i].public_key, data_cb, data_cbarg);
        ERR_pop_to_mark();
    }
done:
    skip_package_free(pkg);
    sks_buf_free(&der);
    return ok;
}

/* ------------------------------------------------------------------ decoder 2: keys */

static sks_key_kind kind_of(EVP_PKEY *pub)
{
    return EVP_PKEY_is_a(pub, "ED25519") ? SKS_KIND_ED25519 : SKS_KIND_EC;
}

/* The provider key for a device key: its public half from the certificate, in the default
 * provider, as the sks: STORE loader makes it. SKIP keys have no PIN and no endorsement
 * list. */
static sks_key *load_key(sks_provctx *ctx, uint32_t handle)
{
    sks_transport *t;
    sks_key_attributes a;
    sks_client_error e;
    const unsigned char *q;
    X509 *ee = NULL;
    EVP_PKEY *pub = NULL;
    unsigned char *spki = NULL;
    int len = 0, ok;
    sks_key *k = NULL;

    if ((t = sks_conn_acquire(ctx)) == NULL)
        return NULL;
    ok = sks_client_get_key_attributes(t, handle, &a, &e);
    sks_conn_release(ctx);
    if (!ok) {
        sks_raise(ctx, SKS_R_DEVICE, "SKIP key #%u: %s", handle, e.message);
        return NULL;
    }
    if (a.certificates.count > 0) {
        q = a.certificates.items[0].data;
        ee = d2i_X509(NULL, &q, (long)a.certificates.items[0].len);
    }
    if (ee != NULL && (len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(ee), &spki)) > 0) {
        q = spki;
        pub = d2i_PUBKEY_ex(NULL, &q, len, ctx->libctx, "provider=default");
    }
    if (pub != NULL && (k = sks_key_new(ctx, kind_of(pub))) != NULL) {
        k->handle = handle;
        k->pub = pub;
        k->name = OPENSSL_strdup(a.friendly_name);
        pub = NULL;
    } else {
        sks_raise(ctx, SKS_R_INTERNAL, "SKIP key #%u: its certificate cannot be read", handle);
    }
    EVP_PKEY_free(pub);
    OPENSSL_free(spki);
    X509_free(ee);
    sks_key_attributes_free(&a);
    return k;
}

static int key_decode(void *vctx, OSSL_CORE_BIO *cin, int selection, OSSL_CALLBACK *data_cb, void *data_cbarg,
                      OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg)
{
    sks_provctx *ctx = vctx;
    OSSL_PARAM params[4];
    int type = OSSL_OBJECT_PKEY, ok;
    uint32_t handle;
    sks_buf blob;
    sks_key *k;

    (void)selection;
    (void)pw_cb;
    (void)pw_cbarg;
    sks_buf_init(&blob);
    if (!read_all(ctx, cin, BLOB_LEN, &blob) || blob.len != BLOB_LEN || !have_token()
        || CRYPTO_memcmp(blob.data, token, BLOB_TOKEN) != 0) {
        sks_buf_free(&blob);
        return 1; /* not a blob of ours */
    }
    handle = (uint32_t)blob.data[BLOB_TOKEN] << 24 | (uint32_t)blob.data[BLOB_TOKEN + 1] << 16
             | (uint32_t)blob.data[BLOB_TOKEN + 2] << 8 | blob.data[BLOB_TOKEN + 3];
    sks_buf_free(&blob);
    if ((k = load_key(ctx, handle)) == NULL)
        return 0;
    params[0] = OSSL_PARAM_construct_int(OSSL_OBJECT_PARAM_TYPE, &type);
    params[1] = OSSL_PARAM_construct_utf8_string(OSSL_OBJECT_PARAM_DATA_TYPE, (char *)sks_kind_name(k->kind), 0);
    params[2] = OSSL_PARAM_construct_octet_string(OSSL_OBJECT_PARAM_REFERENCE, &k, sizeof(k));
    params[3] = OSSL_PARAM_construct_end();
    ok = data_cb(params, data_cbarg);
    sks_key_free(k);
    return ok;
}

const OSSL_DISPATCH sks_skip_decoder_functions[] = {
    { OSSL_FUNC_DECODER_NEWCTX, (void (*)(void))dec_newctx },
    { OSSL_FUNC_DECODER_FREECTX, (void (*)(void))dec_freectx },
    { OSSL_FUNC_DECODER_DECODE, (void (*)(void))package_decode },
    { OSSL_FUNC_DECODER_EXPORT_OBJECT, (void (*)(void))no_export },
    { 0, NULL }
};

const OSSL_DISPATCH sks_skip_key_decoder_functions[] = {
    { OSSL_FUNC_DECODER_NEWCTX, (void (*)(void))dec_newctx },
    { OSSL_FUNC_DECODER_FREECTX, (void (*)(void))dec_freectx },
    { OSSL_FUNC_DECODER_DECODE, (void (*)(void))key_decode },
    { OSSL_FUNC_DECODER_EXPORT_OBJECT, (void (*)(void))no_export },
    { 0, NULL }
};
