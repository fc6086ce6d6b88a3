/*
 * The STORE loader for sks: URIs (store/uri.h). It lists the device's keys once per open,
 * filters them by the URI, and yields for each key its private key (as a reference the
 * keymgmt loads), its public key, and its certificate chain, as the URI's type asks.
 *
 * The PIN of a PIN-protected key comes from the URI, else the provider configuration,
 * else the application's passphrase callback, asked once at load. A wrong PIN is never
 * retried here; a locked key is refused at load with a message that says so.
 */
#include "../provider/provider.h"
#include "uri.h"

#include <string.h>

#include <openssl/asn1t.h>
#include <openssl/core_names.h>
#include <openssl/core_object.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/params.h>
#include <openssl/store.h>
#include <openssl/x509.h>

static OSSL_FUNC_store_open_fn store_open;
static OSSL_FUNC_store_load_fn store_load;
static OSSL_FUNC_store_eof_fn store_eof;
static OSSL_FUNC_store_close_fn store_close;
static OSSL_FUNC_store_set_ctx_params_fn store_set_ctx_params;
static OSSL_FUNC_store_settable_ctx_params_fn store_settable_ctx_params;

/* One object to hand out. */
typedef struct {
    int type; /* OSSL_OBJECT_PKEY or OSSL_OBJECT_CERT */
    int is_private;
    uint32_t handle;
    sks_buf der; /* certificate DER, or SubjectPublicKeyInfo for public keys */
} pending_object;

typedef struct {
    sks_provctx *ctx;
    sks_uri uri;
    int expect;          /* OSSL_STORE_INFO_* hint from the application, 0 = any */
    int listed;
    pending_object *objects;
    size_t count, next;
    /* per-key data for private keys, filled while listing */
    struct key_info {
        uint32_t handle;
        char *name;
        char **endorsed;
        sks_buf spki;
    } *keys;
    size_t nkeys;
} store_ctx;

static void *store_open(void *provctx, const char *uri)
{
    store_ctx *s = OPENSSL_zalloc(sizeof(*s));
    char err[256] = "";

    if (s == NULL)
        return NULL;
    s->ctx = provctx;
    if (!sks_uri_parse(uri, &s->uri, err, sizeof(err))) {
        sks_raise(s->ctx, SKS_R_BAD_URI, "%s", err);
        OPENSSL_free(s);
        return NULL;
    }
    return s;
}

static int store_set_ctx_params(void *vctx, const OSSL_PARAM params[])
{
    store_ctx *s = vctx;
    const OSSL_PARAM *p;

    if (params == NULL)
        return 1;
    if ((p = OSSL_PARAM_locate_const(params, OSSL_STORE_PARAM_EXPECT)) != NULL && !OSSL_PARAM_get_int(p, &s->expect))
        return 0;
    return 1;
}

static const OSSL_PARAM *store_settable_ctx_params(void *provctx)
{
    static const OSSL_PARAM params[] = { OSSL_PARAM_int(OSSL_STORE_PARAM_EXPECT, NULL), OSSL_PARAM_END };
    (void)provctx;
    return params;
}

/* getKeyAttributes of one key; 0 with the error raised. */
static int key_attributes(sks_provctx *ctx, uint32_t handle, sks_key_attributes *a)
{
    sks_client_error e;
    sks_transport *t = sks_conn_acquire(ctx);
    int ok;

    memset(a, 0, sizeof(*a));
    if (t == NULL)
        return 0;
    ok = sks_client_get_key_attributes(t, handle, a, &e);
    sks_conn_release(ctx);
    if (!ok)
        sks_raise_client(ctx, "getKeyAttributes", &e);
    return ok;
}

/* enumerateKeys: the key after `after` into *next (0 at the end); 0 with the error raised. */
static int next_key(sks_provctx *ctx, uint32_t after, uint32_t *next)
{
    sks_client_error e;
    sks_transport *t = sks_conn_acquire(ctx);
    int ok;

    *next = 0;
    if (t == NULL)
        return 0;
    ok = sks_client_enumerate_keys(t, after, next, NULL, &e);
    sks_conn_release(ctx);
    if (!ok)
        sks_raise_client(ctx, "enumerateKeys", &e);
    return ok;
}

static int add_object(store_ctx *s, int type, int is_private, uint32_t handle, const uint8_t *der, size_t n)
{
    pending_object *o;

    o = OPENSSL_realloc(s->objects, (s->count + 1) * sizeof(*o));
    if (o == NULL)
        return 0;
    s->objects = o;
    o = &s->objects[s->count++];
    memset(o, 0, sizeof(*o));
    o->type = type;
    o->is_private = is_private;
    o->handle = handle;
    sks_buf_init(&o->der);
    sks_buf_put(&o->der, der, n);
    return !o->der.failed;
}

static int wants(const store_ctx *s, sks_uri_type t)
{
    if (s->uri.type != SKS_URI_ANY)
        return s->uri.type == t;
    switch (s->expect) {
    case OSSL_STORE_INFO_PKEY:
        return t == SKS_URI_PRIVATE;
    case OSSL_STORE_INFO_PUBKEY:
        return t == SKS_URI_PUBLIC;
    case OSSL_STORE_INFO_CERT:
        return t == SKS_URI_CERT;
    default:
        /* Listing everything: private keys and certificates (public keys only on request). */
        return t != SKS_URI_PUBLIC;
    }
}

static void name_hint_put(sks_provctx *ctx, const char *name, uint32_t handle);

/* Takes the endorsed algorithms out of the attributes, as a NULL-terminated array (NULL when
 * there are none); 0 if out of memory. */
static int take_endorsed(sks_key_attributes *a, char ***out)
{
    size_t i;

    *out = NULL;
    if (a->endorsed_algorithms.count == 0)
        return 1;
    if ((*out = OPENSSL_zalloc((a->endorsed_algorithms.count + 1) * sizeof(char *))) == NULL)
        return 0;
    for (i = 0; i < a->endorsed_algorithms.count; i++) {
        (*out)[i] = a->endorsed_algorithms.items[i];
        a->endorsed_algorithms.items[i] = NULL;
    }
    return 1;
}

/* The element `index` of a DER SEQUENCE, as parsed by OpenSSL's generic ASN1_ANY (bounded,
 * any tag): its whole encoding is copied into *out; 0 if there is none. */
static int sequence_item(const uint8_t *der, size_t n, int index, int *type, sks_buf *out)
{
    const unsigned char *q = der;
    ASN1_SEQUENCE_ANY *seq;
    const ASN1_TYPE *t;
    int ok = 0;

    if (n == 0 || n > INT32_MAX)
        return 0;
    seq = d2i_ASN1_SEQUENCE_ANY(NULL, &q, (long)n);
    if (seq != NULL && q == der + n && index < sk_ASN1_TYPE_num(seq)) {
        t = sk_ASN1_TYPE_value(seq, index);
        *type = t->type;
        /* SEQUENCE and non-universal (V_ASN1_OTHER) elements keep their whole encoding */
        if (t->type == V_ASN1_SEQUENCE || t->type == V_ASN1_OTHER) {
            sks_buf_put(out, t->value.asn1_string->data, (size_t)t->value.asn1_string->length);
            ok = !out->failed;
        } else {
            ok = 1;
        }
    }
    sk_ASN1_TYPE_pop_free(seq, ASN1_TYPE_free);
    return ok;
}

/* The SubjectPublicKeyInfo of a DER certificate (RFC 5280 4.1: the sixth field of
 * tbsCertificate after the optional [0] version), taken out without d2i_X509: in OpenSSL 3.0
 * that decodes the public key through a decoder chain, a third of a whole key load, only for
 * us to encode it again. The key itself is decoded once, when it is loaded (make_key). */
static int certificate_spki(const uint8_t *der, size_t n, sks_buf *spki)
{
    sks_buf tbs, first;
    int type = 0, ok;

    sks_buf_init(&tbs);
    sks_buf_init(&first);
    ok = sequence_item(der, n, 0, &type, &tbs) && type == V_ASN1_SEQUENCE
         && sequence_item(tbs.data, tbs.len, 0, &type, &first)
         && sequence_item(tbs.data, tbs.len, type == V_ASN1_OTHER ? 6 : 5, &type, spki) && type == V_ASN1_SEQUENCE;
    sks_buf_free(&tbs);
    sks_buf_free(&first);
    return ok;
}

/* Reads getKeyAttributes and queues the key's objects if it matches the URI. */
static int consider_key(store_ctx *s, uint32_t handle)
{
    sks_key_attributes a;
    const sks_bytes *certs;
    size_t i, ncert;
    uint8_t fp[32];
    int ok = 1;
    sks_buf spki;

    sks_buf_init(&spki);
    if (!key_attributes(s->ctx, handle, &a))
        return 0;
    certs = a.certificates.items;
    ncert = a.certificates.count;
    if (a.symmetric_key_length > 0 || ncert == 0)
        goto done; /* symmetric keys and uncertified entries are not OpenSSL objects */
    if (s->uri.has_handle && s->uri.handle != handle)
        goto done;
    if (s->uri.name != NULL && strcmp(a.friendly_name != NULL ? a.friendly_name : "", s->uri.name) != 0)
        goto done;
    if (s->uri.has_sha256) {
        if (EVP_Digest(certs[0].data, certs[0].len, fp, NULL, EVP_sha256(), NULL) != 1
            || memcmp(fp, s->uri.sha256, 32) != 0)
            goto done;
    }
    if (!certificate_spki(certs[0].data, certs[0].len, &spki))
        goto done;
    if (wants(s, SKS_URI_PRIVATE) || wants(s, SKS_URI_PUBLIC)) {
        struct key_info *ki = OPENSSL_realloc(s->keys, (s->nkeys + 1) * sizeof(*ki));
        if (ki == NULL) {
            ok = 0;
            goto done;
        }
        s->keys = ki;
        ki = &s->keys[s->nkeys++];
        memset(ki, 0, sizeof(*ki));
        ki->handle = handle;
        ki->name = a.friendly_name;
        a.friendly_name = NULL;
        sks_buf_init(&ki->spki);
        sks_buf_put(&ki->spki, spki.data, spki.len);
        ok = take_endorsed(&a, &ki->endorsed) && !ki->spki.failed;
    }
    if (ok && wants(s, SKS_URI_PRIVATE))
        ok = add_object(s, OSSL_OBJECT_PKEY, 1, handle, NULL, 0);
    if (ok && wants(s, SKS_URI_PUBLIC))
        ok = add_object(s, OSSL_OBJECT_PKEY, 0, handle, spki.data, spki.len);
    for (i = 0; ok && i < ncert && wants(s, SKS_URI_CERT); i++)
        ok = add_object(s, OSSL_OBJECT_CERT, 0, handle, certs[i].data, certs[i].len);
done:
    sks_buf_free(&spki);
    sks_key_attributes_free(&a);
    return ok;
}

static uint32_t name_hint_get(sks_provctx *ctx, const char *name)
{
    uint32_t handle = 0;
    size_t i;

    pthread_mutex_lock(&ctx->names_lock);
    for (i = 0; i < sizeof(ctx->names) / sizeof(ctx->names[0]) && handle == 0; i++)
        if (ctx->names[i].name != NULL && strcmp(ctx->names[i].name, name) == 0)
            handle = ctx->names[i].handle;
    pthread_mutex_unlock(&ctx->names_lock);
    return handle;
}

static void name_hint_put(sks_provctx *ctx, const char *name, uint32_t handle)
{
    size_t i, n = sizeof(ctx->names) / sizeof(ctx->names[0]);

    pthread_mutex_lock(&ctx->names_lock);
    for (i = 0; i < n && (ctx->names[i].name == NULL || strcmp(ctx->names[i].name, name) != 0); i++)
        ;
    if (i == n) {
        i = ctx->names_next++ % n;
        OPENSSL_free(ctx->names[i].name);
        ctx->names[i].name = OPENSSL_strdup(name);
    }
    ctx->names[i].handle = handle;
    pthread_mutex_unlock(&ctx->names_lock);
}

/* A name= URI first tries the handle a scan chose for the name: one getKeyAttributes
 * instead of a scan. A key deleted since falls back to the scan. Handles only grow
 * (AUTOINCREMENT), so a key provisioned later under the same name has a higher handle than
 * the one remembered and the hint and a scan choose the same key. (The one exception: a key
 * whose provisioning session was still open during the scan, so not listed, and which got its
 * lower handle before the remembered key did.) */
static int try_name_hint(store_ctx *s)
{
    uint32_t handle;
    size_t before = s->count;

    if (s->uri.name == NULL || s->uri.has_sha256 || (handle = name_hint_get(s->ctx, s->uri.name)) == 0)
        return 0;
    ERR_set_mark();
    if (consider_key(s, handle) && s->count > before) {
        ERR_clear_last_mark();
        return 1;
    }
    ERR_pop_to_mark(); /* the hint was stale: its errors are not the caller's */
    return 0;
}

static void free_key_info(struct key_info *ki)
{
    size_t j;

    OPENSSL_free(ki->name);
    sks_buf_free(&ki->spki);
    for (j = 0; ki->endorsed != NULL && ki->endorsed[j] != NULL; j++)
        OPENSSL_free(ki->endorsed[j]);
    OPENSSL_free(ki->endorsed);
}

/*
 * Friendly names need not be unique on the device. A name= URI selects ONE key, the same on
 * every load: the one with the lowest handle (the oldest) among those that match. So a key
 * provisioned later under a name already in use never takes the place of the first one.
 */
static void keep_lowest_handle(store_ctx *s)
{
    uint32_t lowest = 0;
    size_t i, kept = 0;

    for (i = 0; i < s->count; i++)
        if (lowest == 0 || s->objects[i].handle < lowest)
            lowest = s->objects[i].handle;
    for (i = 0; i < s->count; i++) {
        if (s->objects[i].handle == lowest)
            s->objects[kept++] = s->objects[i];
        else
            sks_buf_free(&s->objects[i].der);
    }
    s->count = kept;
    for (i = 0, kept = 0; i < s->nkeys; i++) {
        if (s->keys[i].handle == lowest)
            s->keys[kept++] = s->keys[i];
        else
            free_key_info(&s->keys[i]);
    }
    s->nkeys = kept;
    if (lowest != 0)
        name_hint_put(s->ctx, s->uri.name, lowest);
}

/* The keys the device names for the URI's certificate hash (findKeysByCertificate), each
 * then read and checked like a key of a scan (consider_key: its certificate is hashed again).
 * 1 listed, 0 failed (raised), -1 the device does not have the method: scan instead. */
static int list_by_certificate(store_ctx *s)
{
    uint32_t handles[256];
    size_t i, n = 0;
    sks_client_error e;
    sks_transport *t = sks_conn_acquire(s->ctx);
    int ok;

    if (t == NULL)
        return 0;
    ok = sks_client_find_keys_by_certificate(t, s->uri.sha256, handles, sizeof(handles) / sizeof(handles[0]), &n, &e);
    sks_conn_release(s->ctx);
    /* an older sksd (which refuses a method it does not know to non-administrators as not
     * allowed), a card: it does not know the method; the scan's methods are open to users */
    if (!ok && (e.status == SKS_ERROR_OPTION || e.status == SKS_ERROR_NOT_AVAILABLE
                || e.status == SKS_ERROR_NOT_ALLOWED))
        return -1;
    if (!ok) {
        sks_raise_client(s->ctx, "findKeysByCertificate", &e);
        return 0;
    }
    for (i = 0; i < n; i++)
        if (!consider_key(s, handles[i]))
            return 0;
    return 1;
}

/* Every key in turn: enumerateKeys, then the attributes of each. */
static int scan_keys(store_ctx *s)
{
    uint32_t handle = 0;

    for (;;) {
        if (!next_key(s->ctx, handle, &handle))
            return 0;
        if (handle == 0)
            return 1;
        if (!consider_key(s, handle))
            return 0;
    }
}

/* Lists the store once: the keys the URI can select, their attributes and objects. */
static int list_objects(store_ctx *s)
{
    int listed = -1;

    s->listed = 1;
    if (s->uri.has_handle)
        return consider_key(s, s->uri.handle); /* A handle selects one key: no scan. */
    if (try_name_hint(s))
        return 1;
    if (s->uri.has_sha256)
        listed = list_by_certificate(s);
    if (listed < 0)
        listed = scan_keys(s);
    if (!listed)
        return 0;
    if (s->uri.name != NULL)
        keep_lowest_handle(s);
    if (s->count == 0)
        sks_raise(s->ctx, SKS_R_NOT_FOUND, "no %s in the sks store matches the URI%s%s",
                  s->uri.type == SKS_URI_CERT ? "certificate" : "key", s->uri.name ? ": name=" : "",
                  s->uri.name ? s->uri.name : "");
    return 1;
}

static struct key_info *find_key_info(store_ctx *s, uint32_t handle)
{
    size_t i;

    for (i = 0; i < s->nkeys; i++)
        if (s->keys[i].handle == handle)
            return &s->keys[i];
    return NULL;
}

/* getKeyProtectionInfo: is the key PIN protected, and is it locked? */
static int protection_of(store_ctx *s, uint32_t handle, int *pin_protected, int *locked)
{
    sks_key_protection_info info;
    sks_client_error e;
    sks_transport *t = sks_conn_acquire(s->ctx);
    int ok;

    if (t == NULL)
        return 0;
    ok = sks_client_get_key_protection_info(t, handle, &info, &e);
    sks_conn_release(s->ctx);
    if (!ok) {
        sks_raise_client(s->ctx, "getKeyProtectionInfo", &e);
        return 0;
    }
    *pin_protected = (info.protection_status & SKS_PROTSTAT_PIN_PROTECTED) != 0;
    *locked = (info.protection_status & SKS_PROTSTAT_PIN_BLOCKED) != 0;
    return 1;
}

static char *ask_pin(const char *name, OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg)
{
    char buf[256], info[300];
    size_t len = 0;
    OSSL_PARAM params[2];
    char *pin = NULL;

    if (pw_cb == NULL)
        return NULL;
    snprintf(info, sizeof(info), "PIN for sks key \"%s\"", name ? name : "?");
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PASSPHRASE_PARAM_INFO, info, 0);
    params[1] = OSSL_PARAM_construct_end();
    if (pw_cb(buf, sizeof(buf) - 1, &len, params, pw_cbarg) && len < sizeof(buf)) {
        buf[len] = '\0';
        pin = OPENSSL_strdup(buf);
    }
    OPENSSL_cleanse(buf, sizeof(buf));
    return pin;
}

/* Builds the provider key object for a private key, with its PIN. */
static sks_key *make_key(store_ctx *s, struct key_info *ki, OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg)
{
    EVP_PKEY *pub = sks_public_key(s->ctx, ki->spki.data, ki->spki.len);
    int pin_protected = 0, locked = 0;
    sks_key_kind kind;
    sks_key *k;
    size_t i, n = 0;

    if (pub == NULL)
        return NULL;
    kind = EVP_PKEY_is_a(pub, "RSA-PSS") ? SKS_KIND_RSA_PSS
           : EVP_PKEY_is_a(pub, "RSA")   ? SKS_KIND_RSA
           : EVP_PKEY_is_a(pub, "ED25519") ? SKS_KIND_ED25519
                                           : SKS_KIND_EC;
    if (!protection_of(s, ki->handle, &pin_protected, &locked)) {
        EVP_PKEY_free(pub);
        return NULL;
    }
    if (locked) {
        sks_raise(s->ctx, SKS_R_LOCKED, "sks key \"%s\" is locked: too many wrong PINs (unlock it with its PUK)",
                  ki->name ? ki->name : "?");
        EVP_PKEY_free(pub);
        return NULL;
    }
    if ((k = sks_key_new(s->ctx, kind)) == NULL) {
        EVP_PKEY_free(pub);
        return NULL;
    }
    k->handle = ki->handle;
    k->pub = pub;
    k->name = ki->name ? OPENSSL_strdup(ki->name) : NULL;
    while (ki->endorsed != NULL && ki->endorsed[n] != NULL)
        n++;
    if (n > 0 && (k->endorsed = OPENSSL_zalloc((n + 1) * sizeof(char *))) != NULL)
        for (i = 0; i < n; i++)
            k->endorsed[i] = OPENSSL_strdup(ki->endorsed[i]);
    if (pin_protected) {
        if (s->uri.pin != NULL)
            k->pin = OPENSSL_strdup(s->uri.pin);
        else if (s->ctx->pin != NULL)
            k->pin = OPENSSL_strdup(s->ctx->pin);
        else
            k->pin = ask_pin(ki->name, pw_cb, pw_cbarg);
        if (k->pin == NULL) {
            /* No PIN at all is not a wrong PIN: its own reason, so the message says so. */
            sks_raise(s->ctx, SKS_R_PIN_NEEDED, "sks key \"%s\" needs a PIN: give ?pin-value= or ?pin-source=file: in the URI,"
                      " pin in the provider configuration, or a passphrase callback", ki->name ? ki->name : "?");
            sks_key_free(k);
            return NULL;
        }
    }
    return k;
}

static int store_load(void *vctx, OSSL_CALLBACK *object_cb, void *object_cbarg, OSSL_PASSPHRASE_CALLBACK *pw_cb,
                      void *pw_cbarg)
{
    store_ctx *s = vctx;
    pending_object *o;
    OSSL_PARAM params[5], *p = params;
    int object_type, ok;
    sks_key *k = NULL;

    if (!s->listed && !list_objects(s))
        return 0;
    if (s->next >= s->count)
        return 0;
    o = &s->objects[s->next++];
    object_type = o->type;
    *p++ = OSSL_PARAM_construct_int(OSSL_OBJECT_PARAM_TYPE, &object_type);
    if (o->type == OSSL_OBJECT_CERT) {
        *p++ = OSSL_PARAM_construct_octet_string(OSSL_OBJECT_PARAM_DATA, o->der.data, o->der.len);
    } else if (!o->is_private) {
        *p++ = OSSL_PARAM_construct_utf8_string(OSSL_OBJECT_PARAM_DATA_STRUCTURE, "SubjectPublicKeyInfo", 0);
        *p++ = OSSL_PARAM_construct_octet_string(OSSL_OBJECT_PARAM_DATA, o->der.data, o->der.len);
    } else {
        struct key_info *ki = find_key_info(s, o->handle);
        if (ki == NULL || (k = make_key(s, ki, pw_cb, pw_cbarg)) == NULL)
            return 0;
        *p++ = OSSL_PARAM_construct_utf8_string(OSSL_OBJECT_PARAM_DATA_TYPE, (char *)sks_kind_name(k->kind), 0);
        *p++ = OSSL_PARAM_construct_octet_string(OSSL_OBJECT_PARAM_REFERENCE, &k, sizeof(k));
    }
    *p = OSSL_PARAM_construct_end();
    ok = object_cb(params, object_cbarg);
    sks_key_free(k);
    return ok;
}

static int store_eof(void *vctx)
{
    store_ctx *s = vctx;

    return s->listed && s->next >= s->count;
}

static int store_close(void *vctx)
{
    store_ctx *s = vctx;
    size_t i;

    if (s == NULL)
        return 1;
    for (i = 0; i < s->count; i++)
        sks_buf_free(&s->objects[i].der);
    OPENSSL_free(s->objects);
    for (i = 0; i < s->nkeys; i++)
        free_key_info(&s->keys[i]);
    OPENSSL_free(s->keys);
    sks_uri_clear(&s->uri);
    OPENSSL_free(s);
    return 1;
}

const OSSL_DISPATCH sks_store_functions[] = {
    { OSSL_FUNC_STORE_OPEN, (void (*)(void))store_open },
    { OSSL_FUNC_STORE_SETTABLE_CTX_PARAMS, (void (*)(void))store_settable_ctx_params },
    { OSSL_FUNC_STORE_SET_CTX_PARAMS, (void (*)(void))store_set_ctx_params },
    { OSSL_FUNC_STORE_LOAD, (void (*)(void))store_load },
    { OSSL_FUNC_STORE_EOF, (void (*)(void))store_eof },
    { OSSL_FUNC_STORE_CLOSE, (void (*)(void))store_close },
    { 0, NULL }
};
