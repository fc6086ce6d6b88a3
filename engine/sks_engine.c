/*
 * The thin sks ENGINE, for programs that only speak ENGINE (nginx 1.22 "engine:sks:URI",
 * curl 7.88 "--engine sks --key-type ENG --cert-type ENG").
 *
 * It registers no RSA/EC methods and sets no defaults: its key loaders open the URI through
 * OSSL_STORE, which the sks provider serves, and hand back the provider's key. The engine
 * makes sure the "default" and "sks" providers are loaded in the default library context
 * ("default" first, so generic fetches keep going to it).
 */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include <openssl/engine.h>
#include <openssl/err.h>
#include <openssl/provider.h>
#include <openssl/store.h>
#include <openssl/ui.h>
#include <openssl/x509.h>

#define ENGINE_ID "sks"
#define ENGINE_NAME "sks: keys in a Secure Key Store, through the sks OpenSSL provider"
#define CMD_LOAD_CERT_CTRL ENGINE_CMD_BASE

#ifndef SKS_PROVIDER_MODULE
#define SKS_PROVIDER_MODULE "sks"
#endif

static const ENGINE_CMD_DEFN COMMANDS[] = {
    { CMD_LOAD_CERT_CTRL, "LOAD_CERT_CTRL", "Load a certificate from an sks: URI (curl --cert-type ENG)",
      ENGINE_CMD_FLAG_INTERNAL },
    { 0, NULL, NULL, 0 }
};

static OSSL_PROVIDER *default_provider, *sks_provider;

/* Run by OPENSSL_cleanup before it frees the library context: the providers the engine loaded
 * are let go, so that the sks provider is torn down. Not when the engine is destroyed: a
 * program may free an engine it loaded by path (the engine is then in no list) and go on
 * using the keys it loaded, and the default provider the engine loaded may be the only one
 * the process has (an explicit load turns OpenSSL's fallback off). */
static void unload_providers(void)
{
    OSSL_PROVIDER_unload(sks_provider);
    OSSL_PROVIDER_unload(default_provider);
    sks_provider = default_provider = NULL;
}

/* The handler must outlive the engine: a dynamic engine's module is unmapped when the engine
 * is freed, and OpenSSL pins a handler's module only when it is built without "nodelete"
 * (Debian's libcrypto is built with it), so the module pins itself. */
static int unload_at_cleanup(void)
{
    static int registered;
    Dl_info self;

    if (registered)
        return 1;
    if (dladdr((void *)unload_at_cleanup, &self) == 0 || self.dli_fname == NULL
        || dlopen(self.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE) == NULL || !OPENSSL_atexit(unload_providers))
        return 0;
    registered = 1;
    return 1;
}

/* Loads the providers once per process; the configuration may already have done it. */
static int ensure_providers(void)
{
    if (sks_provider != NULL)
        return 1;
    if (default_provider == NULL)
        default_provider = OSSL_PROVIDER_load(NULL, "default");
    sks_provider = OSSL_PROVIDER_load(NULL, "sks");
    if (sks_provider == NULL)
        sks_provider = OSSL_PROVIDER_load(NULL, SKS_PROVIDER_MODULE);
    if (sks_provider == NULL) {
        fprintf(stderr, "sks engine: the sks provider cannot be loaded (install it in OpenSSL's modules"
                        " directory or set OPENSSL_MODULES)\n");
        return 0;
    }
    return unload_at_cleanup();
}

static int engine_init(ENGINE *e)
{
    (void)e;
    return ensure_providers();
}

/* Not where the providers are let go: programs finish the engine as soon as a key is loaded
 * (openssl's -keyform engine) and go on using the key, which unloading would deactivate. */
static int engine_finish(ENGINE *e)
{
    (void)e;
    return 1;
}

/* Opens a URI and returns the first object of the wanted type. */
static void *load_first(const char *uri, int want, UI_METHOD *ui_method, void *ui_data)
{
    OSSL_STORE_CTX *s;
    void *out = NULL;

    if (uri == NULL || !ensure_providers())
        return NULL;
    s = OSSL_STORE_open(uri, ui_method, ui_data, NULL, NULL);
    if (s == NULL)
        return NULL;
    OSSL_STORE_expect(s, want);
    while (out == NULL && !OSSL_STORE_eof(s)) {
        OSSL_STORE_INFO *info = OSSL_STORE_load(s);
        if (info == NULL) {
            if (OSSL_STORE_error(s))
                break;
            continue;
        }
        switch (OSSL_STORE_INFO_get_type(info)) {
        case OSSL_STORE_INFO_PKEY:
            if (want == OSSL_STORE_INFO_PKEY || want == OSSL_STORE_INFO_PUBKEY)
                out = OSSL_STORE_INFO_get1_PKEY(info);
            break;
        case OSSL_STORE_INFO_PUBKEY:
            if (want == OSSL_STORE_INFO_PUBKEY)
                out = OSSL_STORE_INFO_get1_PUBKEY(info);
            break;
        case OSSL_STORE_INFO_CERT:
            if (want == OSSL_STORE_INFO_CERT)
                out = OSSL_STORE_INFO_get1_CERT(info);
            break;
        default:
            break;
        }
        OSSL_STORE_INFO_free(info);
    }
    OSSL_STORE_close(s);
    return out;
}

static EVP_PKEY *load_privkey(ENGINE *e, const char *key_id, UI_METHOD *ui_method, void *cb_data)
{
    (void)e;
    return load_first(key_id, OSSL_STORE_INFO_PKEY, ui_method, cb_data);
}

static EVP_PKEY *load_pubkey(ENGINE *e, const char *key_id, UI_METHOD *ui_method, void *cb_data)
{
    (void)e;
    return load_first(key_id, OSSL_STORE_INFO_PUBKEY, ui_method, cb_data);
}

/* curl's LOAD_CERT_CTRL passes { const char *cert_id; X509 *cert; }. */
struct load_cert_params {
    const char *cert_id;
    X509 *cert;
};

static int engine_ctrl(ENGINE *e, int cmd, long i, void *p, void (*f)(void))
{
    struct load_cert_params *params = p;

    (void)e;
    (void)i;
    (void)f;
    if (cmd != CMD_LOAD_CERT_CTRL || params == NULL)
        return 0;
    params->cert = load_first(params->cert_id, OSSL_STORE_INFO_CERT, NULL, NULL);
    return params->cert != NULL;
}

static int bind(ENGINE *e, const char *id)
{
    if (id != NULL && strcmp(id, ENGINE_ID) != 0)
        return 0;
    return ENGINE_set_id(e, ENGINE_ID) && ENGINE_set_name(e, ENGINE_NAME) && ENGINE_set_init_function(e, engine_init)
           && ENGINE_set_finish_function(e, engine_finish) && ENGINE_set_load_privkey_function(e, load_privkey)
           && ENGINE_set_load_pubkey_function(e, load_pubkey) && ENGINE_set_ctrl_function(e, engine_ctrl)
           && ENGINE_set_cmd_defns(e, COMMANDS);
}

IMPLEMENT_DYNAMIC_BIND_FN(bind)
IMPLEMENT_DYNAMIC_CHECK_FN()
