/*
 * Entry point of the sks provider: configuration, the algorithms it offers, errors, and
 * the connection to the device (opened on first use, reopened in a forked child).
 *
 * Configuration (openssl.cnf, in the provider's section), all optional:
 *   sks-device = SPEC       file:PATH, unix:PATH (sksd) or pcsc:[READER]
 *   sks-store = PATH        the embedded store, same as sks-device = file:PATH
 *   (neither: $SKS_DEVICE, else $SKS_STORE, else the sks tool's default store)
 *   sks-master-key = PATH   its master key (else $SKS_MASTER_KEY, else PATH.key)
 *   pin = VALUE             PIN used for keys when the URI gives none
 *   skip-trust = PATH       PEM trust anchors for SKIP packages (docs/skip.md); without it
 *                           the SKIP decoder refuses every package
 */
#include "provider.h"
#include "../cms/skip_decoder.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/params.h>
#include <openssl/provider.h>
#include <openssl/x509.h>

static OSSL_FUNC_core_get_params_fn *core_get_params;
static OSSL_FUNC_core_new_error_fn *core_new_error;
static OSSL_FUNC_core_set_error_debug_fn *core_set_error_debug;
static OSSL_FUNC_core_vset_error_fn *core_vset_error;

static OSSL_FUNC_provider_teardown_fn sks_teardown;
static OSSL_FUNC_provider_gettable_params_fn sks_gettable_params;
static OSSL_FUNC_provider_get_params_fn sks_get_params;
static OSSL_FUNC_provider_query_operation_fn sks_query_operation;
static OSSL_FUNC_provider_get_reason_strings_fn sks_reason_strings;

#define PROPS "provider=sks"

static const OSSL_ALGORITHM KEYMGMT[] = {
    { "EC:id-ecPublicKey:1.2.840.10045.2.1", PROPS, sks_ec_keymgmt_functions, "sks EC keys" },
    { "RSA:rsaEncryption:1.2.840.113549.1.1.1", PROPS, sks_rsa_keymgmt_functions, "sks RSA keys" },
    { "RSA-PSS:RSASSA-PSS:1.2.840.113549.1.1.10", PROPS, sks_rsapss_keymgmt_functions, "sks RSA-PSS keys" },
    { "ED25519:1.3.101.112", PROPS, sks_ed25519_keymgmt_functions, "sks Ed25519 keys" },
    { NULL, NULL, NULL, NULL }
};

static const OSSL_ALGORITHM SIGNATURE[] = {
    { "ECDSA", PROPS, sks_ecdsa_signature_functions, "ECDSA with sks keys" },
    { "RSA:rsaEncryption:1.2.840.113549.1.1.1", PROPS, sks_rsa_signature_functions, "RSA signatures with sks keys" },
    { "ED25519:1.3.101.112", PROPS, sks_ed25519_signature_functions, "Ed25519 with sks keys" },
    { NULL, NULL, NULL, NULL }
};

static const OSSL_ALGORITHM KEYEXCH[] = {
    { "ECDH", PROPS, sks_ecdh_keyexch_functions, "ECDH with sks keys" },
    { NULL, NULL, NULL, NULL }
};

static const OSSL_ALGORITHM ASYM_CIPHER[] = {
    { "RSA:rsaEncryption:1.2.840.113549.1.1.1", PROPS, sks_rsa_asym_cipher_functions, "RSA decryption with sks keys" },
    { NULL, NULL, NULL, NULL }
};

/* SKIP packages (cms/skip_decoder.c): the package decoder sits among the DER-to-DER
 * decoders; the key decoders turn what it hands on into sks keys. */
static const OSSL_ALGORITHM DECODER[] = {
    { "DER", PROPS ",input=der", sks_skip_decoder_functions, "SKIP package, imported into the sks device" },
    { "DER", PROPS ",input=pem", sks_skip_decoder_functions, "SKIP package (PEM), imported into the sks device" },
    { "EC", PROPS ",input=der,structure=sks-key", sks_skip_key_decoder_functions, "sks EC key from a SKIP package" },
    { "ED25519", PROPS ",input=der,structure=sks-key", sks_skip_key_decoder_functions,
      "sks Ed25519 key from a SKIP package" },
    { NULL, NULL, NULL, NULL }
};

static const OSSL_ALGORITHM STORE[] = {
    { "sks", PROPS, sks_store_functions, "sks: URIs" },
    { NULL, NULL, NULL, NULL }
};

static const OSSL_ITEM REASONS[] = {
    { SKS_R_DEVICE, "sks device error" },
    { SKS_R_UNREACHABLE, "sks device unreachable" },
    { SKS_R_BAD_URI, "malformed sks: URI" },
    { SKS_R_NOT_FOUND, "no matching object in the sks store" },
    { SKS_R_PIN, "wrong PIN for the sks key" },
    { SKS_R_LOCKED, "the sks key is locked" },
    { SKS_R_NOT_ENDORSED, "the sks key is not endorsed for this operation" },
    { SKS_R_UNSUPPORTED, "operation or parameters not supported by the sks device" },
    { SKS_R_PUBLIC_ONLY, "a public key cannot do private operations" },
    { SKS_R_INTERNAL, "sks provider internal error" },
    { SKS_R_PIN_NEEDED, "the sks key needs a PIN" },
    { 0, NULL }
};

void sks_raise(sks_provctx *ctx, int reason, const char *fmt, ...)
{
    va_list ap;

    if (ctx == NULL || core_new_error == NULL)
        return;
    core_new_error(ctx->core);
    core_set_error_debug(ctx->core, OPENSSL_FILE, OPENSSL_LINE, "sks");
    va_start(ap, fmt);
    core_vset_error(ctx->core, (uint32_t)reason, fmt, ap);
    va_end(ap);
}

/*
 * Which process a connection belongs to, without a system call per operation: getpid() is
 * one (glibc stopped caching it), and on a virtual machine with speculative-execution
 * mitigations it costs about 1 us, a twentieth of a P-256 signature (bench/RESULTS.md). A
 * pthread_atfork child handler, registered once, bumps fork_epoch in every forked child
 * before fork() returns; a connection opened in an earlier epoch is the parent's. The socket
 * and PC/SC transports already rely on such handlers to let go of the parent's descriptors,
 * so this adds no new assumption. If the handler cannot be registered, getpid() decides.
 */
static unsigned long fork_epoch;
static int fork_epoch_ok;
static pthread_once_t fork_epoch_once = PTHREAD_ONCE_INIT;

static void fork_epoch_child(void)
{
    __atomic_add_fetch(&fork_epoch, 1, __ATOMIC_SEQ_CST);
}

static void fork_epoch_register(void)
{
    fork_epoch_ok = pthread_atfork(NULL, NULL, fork_epoch_child) == 0;
}

static void owner_mark(sks_provctx *ctx)
{
    ctx->transport_pid = getpid();
    ctx->transport_epoch = __atomic_load_n(&fork_epoch, __ATOMIC_SEQ_CST);
}

/* 1 if ctx->transport was opened by this process (not inherited across fork). */
static int owner_is_us(const sks_provctx *ctx)
{
    if (fork_epoch_ok)
        return ctx->transport_epoch == __atomic_load_n(&fork_epoch, __ATOMIC_SEQ_CST);
    return ctx->transport_pid == getpid();
}

/* Opens (or after fork, reopens) the device connection. Called with ctx->lock held. */
static sks_pstatus ensure_transport(sks_provctx *ctx)
{
    char err[512] = "", spec[4200];

    if (ctx->transport != NULL && owner_is_us(ctx))
        return SKS_P_OK;
    /* A forked child must not share the parent's connection: it opens its own, so that sksd
     * sees the child's credentials. The socket and PC/SC transports have already let go of
     * theirs in their pthread_atfork child handlers, before fork() returned (a pid check
     * here alone would leave the parent's descriptor, and its rights, open in the child);
     * an embedded store's SQLite handle is abandoned, not closed, so the parent's locks are
     * undisturbed. */
    ctx->transport = NULL;
    if (ctx->device != NULL)
        snprintf(spec, sizeof(spec), "%s", ctx->device);
    else if (ctx->store_path != NULL)
        snprintf(spec, sizeof(spec), "file:%s", ctx->store_path);
    else if (!sks_default_device(spec, sizeof(spec))) {
        sks_raise(ctx, SKS_R_UNREACHABLE, "no sks device configured (sks-device or sks-store in openssl.cnf,"
                  " or SKS_DEVICE / SKS_STORE)");
        return SKS_P_FAIL;
    }
    ctx->transport = sks_transport_open(spec, ctx->master_key_path, err, sizeof(err));
    if (ctx->transport == NULL) {
        sks_raise(ctx, SKS_R_UNREACHABLE, "cannot open the sks device %s: %s", spec, err);
        return SKS_P_FAIL;
    }
    owner_mark(ctx);
    return SKS_P_OK;
}

sks_transport *sks_conn_acquire(sks_provctx *ctx)
{
    pthread_mutex_lock(&ctx->lock);
    if (ensure_transport(ctx) != SKS_P_OK) {
        pthread_mutex_unlock(&ctx->lock);
        return NULL;
    }
    return ctx->transport;
}

void sks_conn_release(sks_provctx *ctx)
{
    pthread_mutex_unlock(&ctx->lock);
}

void sks_raise_client(sks_provctx *ctx, const char *method, const sks_client_error *e)
{
    switch (e->status) {
    case SKS_CLIENT_ERROR_TRANSPORT:
        sks_raise(ctx, SKS_R_UNREACHABLE, "%s", e->message);
        break;
    case SKS_CLIENT_ERROR_REPLY:
    case SKS_CLIENT_ERROR_ARGUMENT:
    case SKS_CLIENT_ERROR_SPACE:
        sks_raise(ctx, SKS_R_DEVICE, "%s", e->message); /* the client's message names the method */
        break;
    default:
        sks_raise(ctx, e->status == SKS_ERROR_AUTHORIZATION ? SKS_R_PIN
                       : e->status == SKS_ERROR_ALGORITHM  ? SKS_R_NOT_ENDORSED
                                                           : SKS_R_DEVICE,
                  "%s: %s", method, e->message);
        break;
    }
}

EVP_MD *sks_md_fetch(sks_provctx *ctx, const char *name)
{
    static const char *const NAMES[] = { "SHA1", "SHA224", "SHA256", "SHA384", "SHA512" };
    EVP_MD *md = NULL;
    size_t i;

    for (i = 0; i < sizeof(NAMES) / sizeof(NAMES[0]); i++)
        if (strcmp(name, NAMES[i]) == 0)
            break;
    if (i == sizeof(NAMES) / sizeof(NAMES[0]))
        return EVP_MD_fetch(ctx->libctx, name, "provider=default");
    pthread_mutex_lock(&ctx->md_lock);
    if (ctx->md[i] == NULL)
        ctx->md[i] = EVP_MD_fetch(ctx->libctx, NAMES[i], "provider=default");
    if (ctx->md[i] != NULL && EVP_MD_up_ref(ctx->md[i]))
        md = ctx->md[i];
    pthread_mutex_unlock(&ctx->md_lock);
    return md;
}

EVP_PKEY *sks_public_key(sks_provctx *ctx, const uint8_t *spki, size_t len)
{
    const unsigned char *q = spki;
    EVP_PKEY *pkey = NULL;
    size_t i, n = sizeof(ctx->pubs) / sizeof(ctx->pubs[0]);
    uint8_t *copy;

    if (len == 0 || len > INT32_MAX)
        return NULL;
    pthread_mutex_lock(&ctx->pubs_lock);
    for (i = 0; i < n && pkey == NULL; i++)
        if (ctx->pubs[i].pkey != NULL && ctx->pubs[i].len == len && memcmp(ctx->pubs[i].spki, spki, len) == 0
            && EVP_PKEY_up_ref(ctx->pubs[i].pkey))
            pkey = ctx->pubs[i].pkey;
    pthread_mutex_unlock(&ctx->pubs_lock);
    if (pkey != NULL)
        return pkey;
    /* the whole input must be the key: trailing bytes would make two encodings one entry */
    pkey = d2i_PUBKEY_ex(NULL, &q, (long)len, ctx->libctx, "provider=default");
    if (pkey == NULL || q != spki + len) {
        EVP_PKEY_free(pkey);
        return NULL;
    }
    if ((copy = OPENSSL_memdup(spki, len)) == NULL || !EVP_PKEY_up_ref(pkey)) {
        OPENSSL_free(copy);
        return pkey; /* not remembered, still correct */
    }
    pthread_mutex_lock(&ctx->pubs_lock);
    i = ctx->pubs_next++ % n;
    OPENSSL_free(ctx->pubs[i].spki);
    EVP_PKEY_free(ctx->pubs[i].pkey);
    ctx->pubs[i].spki = copy;
    ctx->pubs[i].len = len;
    ctx->pubs[i].pkey = pkey;
    pthread_mutex_unlock(&ctx->pubs_lock);
    return pkey;
}

static const OSSL_PARAM *sks_gettable_params(void *provctx)
{
    static const OSSL_PARAM params[] = {
        OSSL_PARAM_DEFN(OSSL_PROV_PARAM_NAME, OSSL_PARAM_UTF8_PTR, NULL, 0),
        OSSL_PARAM_DEFN(OSSL_PROV_PARAM_VERSION, OSSL_PARAM_UTF8_PTR, NULL, 0),
        OSSL_PARAM_DEFN(OSSL_PROV_PARAM_BUILDINFO, OSSL_PARAM_UTF8_PTR, NULL, 0),
        OSSL_PARAM_DEFN(OSSL_PROV_PARAM_STATUS, OSSL_PARAM_INTEGER, NULL, 0),
        OSSL_PARAM_END
    };
    (void)provctx;
    return params;
}

static int sks_get_params(void *provctx, OSSL_PARAM params[])
{
    OSSL_PARAM *p;

    (void)provctx;
    if ((p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_NAME)) != NULL && !OSSL_PARAM_set_utf8_ptr(p, "sks"))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_VERSION)) != NULL && !OSSL_PARAM_set_utf8_ptr(p, "0.1.0"))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_BUILDINFO)) != NULL
        && !OSSL_PARAM_set_utf8_ptr(p, "sks provider for the Secure Key Store"))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_STATUS)) != NULL && !OSSL_PARAM_set_int(p, 1))
        return 0;
    return 1;
}

static const OSSL_ALGORITHM *sks_query_operation(void *provctx, int operation_id, int *no_cache)
{
    (void)provctx;
    *no_cache = 0;
    switch (operation_id) {
    case OSSL_OP_KEYMGMT:
        return KEYMGMT;
    case OSSL_OP_SIGNATURE:
        return SIGNATURE;
    case OSSL_OP_KEYEXCH:
        return KEYEXCH;
    case OSSL_OP_ASYM_CIPHER:
        return ASYM_CIPHER;
    case OSSL_OP_STORE:
        return STORE;
    case OSSL_OP_DECODER:
        return DECODER;
    default:
        return NULL;
    }
}

static const OSSL_ITEM *sks_reason_strings(void *provctx)
{
    (void)provctx;
    return REASONS;
}

static void sks_teardown(void *provctx)
{
    sks_provctx *ctx = provctx;

    if (ctx == NULL)
        return;
    if (ctx->transport != NULL && owner_is_us(ctx))
        ctx->transport->close(ctx->transport);
    sks_client_buffers_free(&ctx->bufs);
    for (size_t i = 0; i < sizeof(ctx->md) / sizeof(ctx->md[0]); i++)
        EVP_MD_free(ctx->md[i]);
    for (size_t i = 0; i < sizeof(ctx->pubs) / sizeof(ctx->pubs[0]); i++) { /* before their library context */
        OPENSSL_free(ctx->pubs[i].spki);
        EVP_PKEY_free(ctx->pubs[i].pkey);
    }
    pthread_mutex_destroy(&ctx->pubs_lock);
    OSSL_LIB_CTX_free(ctx->libctx);
    OPENSSL_free(ctx->device);
    OPENSSL_free(ctx->store_path);
    OPENSSL_free(ctx->master_key_path);
    if (ctx->pin != NULL)
        OPENSSL_clear_free(ctx->pin, strlen(ctx->pin));
    for (size_t i = 0; i < sizeof(ctx->names) / sizeof(ctx->names[0]); i++)
        OPENSSL_free(ctx->names[i].name);
    pthread_mutex_destroy(&ctx->names_lock);
    pthread_mutex_destroy(&ctx->md_lock);
    pthread_mutex_destroy(&ctx->lock);
    OPENSSL_free(ctx);
}

static const OSSL_DISPATCH PROVIDER_FUNCTIONS[] = {
    { OSSL_FUNC_PROVIDER_TEARDOWN, (void (*)(void))sks_teardown },
    { OSSL_FUNC_PROVIDER_GETTABLE_PARAMS, (void (*)(void))sks_gettable_params },
    { OSSL_FUNC_PROVIDER_GET_PARAMS, (void (*)(void))sks_get_params },
    { OSSL_FUNC_PROVIDER_QUERY_OPERATION, (void (*)(void))sks_query_operation },
    { OSSL_FUNC_PROVIDER_GET_REASON_STRINGS, (void (*)(void))sks_reason_strings },
    { 0, NULL }
};

/* Read when a SKIP package is decoded, not at init, so no copy of it lives in the
 * context that other provider files share. */
int sks_provider_skip_trust(struct sks_provctx *ctx, char *out, size_t n)
{
    char *trust = NULL;
    OSSL_PARAM params[] = { OSSL_PARAM_utf8_ptr("skip-trust", &trust, 0), OSSL_PARAM_END };

    if (ctx == NULL || core_get_params == NULL || !core_get_params(ctx->core, params) || trust == NULL
        || *trust == '\0')
        return 0;
    return snprintf(out, n, "%s", trust) < (int)n;
}

/* Reads the provider's configuration values from openssl.cnf. */
static int read_config(sks_provctx *ctx)
{
    char *device = NULL, *store = NULL, *master = NULL, *pin = NULL;
    OSSL_PARAM params[] = {
        OSSL_PARAM_utf8_ptr("sks-device", &device, 0),
        OSSL_PARAM_utf8_ptr("sks-store", &store, 0),
        OSSL_PARAM_utf8_ptr("sks-master-key", &master, 0),
        OSSL_PARAM_utf8_ptr("pin", &pin, 0),
        OSSL_PARAM_END
    };

    if (!core_get_params(ctx->core, params))
        return 0;
    if (device != NULL && *device && (ctx->device = OPENSSL_strdup(device)) == NULL)
        return 0;
    if (store != NULL && *store && (ctx->store_path = OPENSSL_strdup(store)) == NULL)
        return 0;
    if (master != NULL && *master && (ctx->master_key_path = OPENSSL_strdup(master)) == NULL)
        return 0;
    if (pin != NULL && *pin && (ctx->pin = OPENSSL_strdup(pin)) == NULL)
        return 0;
    return 1;
}

int OSSL_provider_init(const OSSL_CORE_HANDLE *handle, const OSSL_DISPATCH *in, const OSSL_DISPATCH **out,
                       void **provctx)
{
    const OSSL_DISPATCH *orig = in;
    sks_provctx *ctx;

    for (; in->function_id != 0; in++) {
        switch (in->function_id) {
        case OSSL_FUNC_CORE_GET_PARAMS:
            core_get_params = OSSL_FUNC_core_get_params(in);
            break;
        case OSSL_FUNC_CORE_NEW_ERROR:
            core_new_error = OSSL_FUNC_core_new_error(in);
            break;
        case OSSL_FUNC_CORE_SET_ERROR_DEBUG:
            core_set_error_debug = OSSL_FUNC_core_set_error_debug(in);
            break;
        case OSSL_FUNC_CORE_VSET_ERROR:
            core_vset_error = OSSL_FUNC_core_vset_error(in);
            break;
        default:
            break;
        }
    }
    ctx = OPENSSL_zalloc(sizeof(*ctx));
    if (ctx == NULL)
        return 0;
    ctx->core = handle;
    pthread_once(&fork_epoch_once, fork_epoch_register); /* before any connection is opened */
    pthread_mutex_init(&ctx->lock, NULL);
    pthread_mutex_init(&ctx->names_lock, NULL);
    pthread_mutex_init(&ctx->md_lock, NULL);
    pthread_mutex_init(&ctx->pubs_lock, NULL);
    /* Public-key work (cached public halves, verification, hashing) runs in a child
     * library context that sees the application's providers, "default" among them. */
    ctx->libctx = OSSL_LIB_CTX_new_child(handle, orig);
    *provctx = ctx;
    *out = PROVIDER_FUNCTIONS;
    if (ctx->libctx == NULL || core_get_params == NULL || !read_config(ctx)) {
        sks_teardown(ctx);
        return 0;
    }
    return 1;
}
