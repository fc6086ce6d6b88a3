/*
 * Key management for sks keys: EC, RSA, RSA-PSS and Ed25519.
 *
 * A key is a device handle plus its public half, cached in the default provider at load,
 * so get_params, match and public export never touch the device. What TLS needs:
 *  - has(PUBLIC) is true for a device private key;
 *  - match compares public values, so a certificate held by the default provider matches;
 *  - export refuses private material (else OpenSSL would sign with a public-only copy in
 *    another provider) and exports EC keys with a named group;
 *  - import accepts public keys, so peer keys and certificates can be compared and used
 *    as ECDH peers.
 */
#include "../provider/provider.h"

#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/params.h>

static OSSL_FUNC_keymgmt_new_fn ec_new, rsa_new, rsapss_new, ed25519_new;
static OSSL_FUNC_keymgmt_free_fn km_free;
static OSSL_FUNC_keymgmt_load_fn km_load;
static OSSL_FUNC_keymgmt_has_fn km_has;
static OSSL_FUNC_keymgmt_validate_fn km_validate;
static OSSL_FUNC_keymgmt_match_fn km_match;
static OSSL_FUNC_keymgmt_get_params_fn km_get_params;
static OSSL_FUNC_keymgmt_gettable_params_fn ec_gettable_params, rsa_gettable_params, ed25519_gettable_params;
static OSSL_FUNC_keymgmt_import_fn ec_import, rsa_import, rsapss_import, ed25519_import;
static OSSL_FUNC_keymgmt_import_types_fn ec_import_types, rsa_import_types, ed25519_import_types;
static OSSL_FUNC_keymgmt_export_fn km_export;
static OSSL_FUNC_keymgmt_export_types_fn ec_import_types_x, rsa_import_types_x, ed25519_import_types_x;
static OSSL_FUNC_keymgmt_query_operation_name_fn ec_query_operation_name, rsa_query_operation_name,
    ed25519_query_operation_name;
static OSSL_FUNC_keymgmt_dup_fn km_dup;
static OSSL_FUNC_keymgmt_set_params_fn ec_set_params;
static OSSL_FUNC_keymgmt_settable_params_fn ec_settable_params;

static void *ec_new(void *provctx)
{
    return sks_key_new(provctx, SKS_KIND_EC);
}

static void *rsa_new(void *provctx)
{
    return sks_key_new(provctx, SKS_KIND_RSA);
}

static void *rsapss_new(void *provctx)
{
    return sks_key_new(provctx, SKS_KIND_RSA_PSS);
}

static void *ed25519_new(void *provctx)
{
    return sks_key_new(provctx, SKS_KIND_ED25519);
}

static void km_free(void *keydata)
{
    sks_key_free(keydata);
}

/* The store hands over a reference to its key object; the key gains a reference. */
static void *km_load(const void *reference, size_t reference_sz)
{
    sks_key *k;

    if (reference == NULL || reference_sz != sizeof(k))
        return NULL;
    k = *(sks_key *const *)reference;
    if (k == NULL || !sks_key_up_ref(k))
        return NULL;
    return k;
}

static int km_has(const void *keydata, int selection)
{
    const sks_key *k = keydata;

    if (k == NULL)
        return 0;
    if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0 && k->handle == 0)
        return 0;
    if ((selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) != 0 && (k->pub == NULL || k->params_only))
        return 0;
    if ((selection & OSSL_KEYMGMT_SELECT_ALL_PARAMETERS) != 0 && k->pub == NULL)
        return 0;
    return 1;
}

static int km_validate(const void *keydata, int selection, int checktype)
{
    (void)checktype;
    return km_has(keydata, selection);
}

static int km_match(const void *a, const void *b, int selection)
{
    const sks_key *ka = a, *kb = b;

    if (ka == NULL || kb == NULL || ka->pub == NULL || kb->pub == NULL)
        return 0;
    /* A parameters-only copy matches on its domain parameters alone. */
    if ((selection & OSSL_KEYMGMT_SELECT_KEYPAIR) == 0)
        return EVP_PKEY_parameters_eq(ka->pub, kb->pub) == 1;
    if (ka->params_only || kb->params_only)
        return 0;
    return EVP_PKEY_eq(ka->pub, kb->pub) == 1;
}

/* All public parameters come from the cached public key, answered by the default provider. */
static int km_get_params(void *keydata, OSSL_PARAM params[])
{
    sks_key *k = keydata;

    if (k == NULL || k->pub == NULL)
        return 0;
    return EVP_PKEY_get_params(k->pub, params);
}

static const OSSL_PARAM *ec_gettable_params(void *provctx)
{
    static const OSSL_PARAM params[] = {
        OSSL_PARAM_int(OSSL_PKEY_PARAM_BITS, NULL),
        OSSL_PARAM_int(OSSL_PKEY_PARAM_SECURITY_BITS, NULL),
        OSSL_PARAM_int(OSSL_PKEY_PARAM_MAX_SIZE, NULL),
        OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, NULL, 0),
        OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, NULL, 0),
        OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_DEFAULT_DIGEST, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_ENCODING, NULL, 0),
        OSSL_PARAM_BN(OSSL_PKEY_PARAM_EC_PUB_X, NULL, 0),
        OSSL_PARAM_BN(OSSL_PKEY_PARAM_EC_PUB_Y, NULL, 0),
        OSSL_PARAM_END
    };
    (void)provctx;
    return params;
}

static const OSSL_PARAM *rsa_gettable_params(void *provctx)
{
    static const OSSL_PARAM params[] = {
        OSSL_PARAM_int(OSSL_PKEY_PARAM_BITS, NULL),
        OSSL_PARAM_int(OSSL_PKEY_PARAM_SECURITY_BITS, NULL),
        OSSL_PARAM_int(OSSL_PKEY_PARAM_MAX_SIZE, NULL),
        OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_DEFAULT_DIGEST, NULL, 0),
        OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, NULL, 0),
        OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, NULL, 0),
        OSSL_PARAM_END
    };
    (void)provctx;
    return params;
}

static const OSSL_PARAM *ed25519_gettable_params(void *provctx)
{
    static const OSSL_PARAM params[] = {
        OSSL_PARAM_int(OSSL_PKEY_PARAM_BITS, NULL),
        OSSL_PARAM_int(OSSL_PKEY_PARAM_SECURITY_BITS, NULL),
        OSSL_PARAM_int(OSSL_PKEY_PARAM_MAX_SIZE, NULL),
        OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_MANDATORY_DIGEST, NULL, 0),
        OSSL_PARAM_END
    };
    (void)provctx;
    return params;
}

/* Keeps the SubjectPublicKeyInfo of an EC public key set from its curve and point: as an
 * ECDH peer, the key travels to the device in that form (exchange/ecdh_exch.c), and the
 * point is at hand only now (getting it back from the EVP_PKEY costs a field inversion). */
static void remember_spki(sks_key *k, const char *group, const OSSL_PARAM *point)
{
    uint8_t der[256];
    size_t n = 0;

    OPENSSL_free(k->spki);
    k->spki = NULL;
    k->spki_len = 0;
    if (group == NULL || point == NULL || point->data_type != OSSL_PARAM_OCTET_STRING
        || !sks_ec_spki(group, point->data, point->data_size, der, sizeof(der), &n))
        return;
    if ((k->spki = OPENSSL_memdup(der, n)) != NULL)
        k->spki_len = n;
}

/* Builds the cached public key from imported parameters, in the default provider. */
static int import_public(sks_key *k, const char *type, int selection, const OSSL_PARAM params[])
{
    EVP_PKEY_CTX *c;
    EVP_PKEY *pub = NULL;
    int ok;

    if ((selection & OSSL_KEYMGMT_SELECT_KEYPAIR) == 0)
        return 0;
    c = EVP_PKEY_CTX_new_from_name(k->ctx->libctx, type, "provider=default");
    ok = c != NULL && EVP_PKEY_fromdata_init(c) == 1
         && EVP_PKEY_fromdata(c, &pub, EVP_PKEY_PUBLIC_KEY, (OSSL_PARAM *)params) == 1;
    EVP_PKEY_CTX_free(c);
    if (!ok)
        return 0;
    EVP_PKEY_free(k->pub);
    k->pub = pub;
    if (k->kind == SKS_KIND_EC) {
        const OSSL_PARAM *g = OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_GROUP_NAME);
        remember_spki(k, g != NULL && g->data_type == OSSL_PARAM_UTF8_STRING ? g->data : NULL,
                      OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_PUB_KEY));
    }
    return 1;
}

static int ec_import(void *keydata, int selection, const OSSL_PARAM params[])
{
    return import_public(keydata, "EC", selection, params);
}

static int rsa_import(void *keydata, int selection, const OSSL_PARAM params[])
{
    return import_public(keydata, "RSA", selection, params);
}

static int rsapss_import(void *keydata, int selection, const OSSL_PARAM params[])
{
    return import_public(keydata, "RSA-PSS", selection, params);
}

static int ed25519_import(void *keydata, int selection, const OSSL_PARAM params[])
{
    return import_public(keydata, "ED25519", selection, params);
}

static const OSSL_PARAM *ec_import_types(int selection)
{
    static const OSSL_PARAM params[] = {
        OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_ENCODING, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT, NULL, 0),
        OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, NULL, 0),
        OSSL_PARAM_END
    };
    (void)selection;
    return params;
}

static const OSSL_PARAM *rsa_import_types(int selection)
{
    static const OSSL_PARAM params[] = {
        OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, NULL, 0),
        OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, NULL, 0),
        OSSL_PARAM_END
    };
    (void)selection;
    return params;
}

static const OSSL_PARAM *ed25519_import_types(int selection)
{
    static const OSSL_PARAM params[] = {
        OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, NULL, 0),
        OSSL_PARAM_END
    };
    (void)selection;
    return params;
}

static const OSSL_PARAM *ec_import_types_x(int selection)
{
    return ec_import_types(selection);
}

static const OSSL_PARAM *rsa_import_types_x(int selection)
{
    return rsa_import_types(selection);
}

static const OSSL_PARAM *ed25519_import_types_x(int selection)
{
    return ed25519_import_types(selection);
}

/* Public export only; EC keys keep their named group (the cached key has one). */
static int km_export(void *keydata, int selection, OSSL_CALLBACK *cb, void *cbarg)
{
    sks_key *k = keydata;

    if (k == NULL || k->pub == NULL)
        return 0;
    if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0)
        return 0;
    return EVP_PKEY_export(k->pub, selection, cb, cbarg);
}

static const char *ec_query_operation_name(int operation_id)
{
    switch (operation_id) {
    case OSSL_OP_SIGNATURE:
        return "ECDSA";
    case OSSL_OP_KEYEXCH:
        return "ECDH";
    default:
        return NULL;
    }
}

static const char *rsa_query_operation_name(int operation_id)
{
    return operation_id == OSSL_OP_SIGNATURE || operation_id == OSSL_OP_ASYM_CIPHER ? "RSA" : NULL;
}

static const char *ed25519_query_operation_name(int operation_id)
{
    return operation_id == OSSL_OP_SIGNATURE ? "ED25519" : NULL;
}

/*
 * EC domain parameters alone (a named group), as a parameters-only key in the default
 * provider.
 */
static EVP_PKEY *ec_params_of(sks_provctx *ctx, EVP_PKEY *pub)
{
    char group[80];
    OSSL_PARAM params[2];
    EVP_PKEY_CTX *c;
    EVP_PKEY *out = NULL;

    if (!EVP_PKEY_get_utf8_string_param(pub, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), NULL))
        return NULL;
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, group, 0);
    params[1] = OSSL_PARAM_construct_end();
    c = EVP_PKEY_CTX_new_from_name(ctx->libctx, "EC", "provider=default");
    if (c == NULL || EVP_PKEY_fromdata_init(c) != 1 || EVP_PKEY_fromdata(c, &out, EVP_PKEY_KEY_PARAMETERS, params) != 1)
        out = NULL;
    EVP_PKEY_CTX_free(c);
    return out;
}

/*
 * A copy of what the selection asks for. With the private key it shares the device
 * reference (and PIN) and the cached public key. Without it, the copy is NOT a device key:
 * EVP_PKEY_copy_parameters() into a blank EVP_PKEY dups with the parameters selection,
 * and CMS (ECDH recipients: ecdh_cms_set_peerkey) then sets the originator's public point
 * on that copy and uses it as the ECDH peer. Carrying the handle and our own public key
 * along made CMS agree with ourselves instead of the originator.
 */
static void *km_dup(const void *keydata, int selection)
{
    const sks_key *src = keydata;
    sks_key *k;
    size_t n = 0, i;

    if (src == NULL || (k = sks_key_new(src->ctx, src->kind)) == NULL)
        return NULL;
    if (src->params_only
        || (selection & (OSSL_KEYMGMT_SELECT_PRIVATE_KEY | OSSL_KEYMGMT_SELECT_PUBLIC_KEY)) == 0) {
        k->params_only = 1;
        /* RSA and Ed25519 have no domain parameters: nothing to copy. */
        if (src->kind == SKS_KIND_EC && src->pub != NULL
            && (selection & OSSL_KEYMGMT_SELECT_ALL_PARAMETERS) != 0
            && (k->pub = ec_params_of(src->ctx, src->pub)) == NULL) {
            sks_key_free(k);
            return NULL;
        }
        return k;
    }
    /* The cached public half is needed by a device key's operations too. */
    if (src->pub != NULL && EVP_PKEY_up_ref(src->pub))
        k->pub = src->pub;
    if (src->spki != NULL && (k->spki = OPENSSL_memdup(src->spki, src->spki_len)) != NULL)
        k->spki_len = src->spki_len;
    if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) == 0)
        return k; /* a public key: no device reference */
    k->handle = src->handle;
    if (src->pin != NULL)
        k->pin = OPENSSL_strdup(src->pin);
    if (src->name != NULL)
        k->name = OPENSSL_strdup(src->name);
    while (src->endorsed != NULL && src->endorsed[n] != NULL)
        n++;
    if (n > 0 && (k->endorsed = OPENSSL_zalloc((n + 1) * sizeof(char *))) != NULL)
        for (i = 0; i < n; i++)
            k->endorsed[i] = OPENSSL_strdup(src->endorsed[i]);
    return k;
}

/*
 * Sets the public point of an EC key that is not in the store (a parameters-only copy or a
 * public key), as EVP_PKEY_set1_encoded_public_key() does. Without set_params, OpenSSL
 * reports success and leaves the key unchanged. A device key's public half is fixed.
 */
static int ec_set_params(void *keydata, const OSSL_PARAM params[])
{
    sks_key *k = keydata;
    const OSSL_PARAM *p = OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY);
    char group[80];
    OSSL_PARAM from[3];
    EVP_PKEY_CTX *c;
    EVP_PKEY *pub = NULL;
    int ok;

    if (p == NULL)
        return 1;
    if (k == NULL || k->pub == NULL || p->data_type != OSSL_PARAM_OCTET_STRING)
        return 0;
    if (k->handle != 0) {
        sks_raise(k->ctx, SKS_R_UNSUPPORTED, "the public key of sks key \"%s\" cannot be replaced",
                  k->name ? k->name : "?");
        return 0;
    }
    if (!EVP_PKEY_get_utf8_string_param(k->pub, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), NULL))
        return 0;
    from[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, group, 0);
    from[1] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, p->data, p->data_size);
    from[2] = OSSL_PARAM_construct_end();
    c = EVP_PKEY_CTX_new_from_name(k->ctx->libctx, "EC", "provider=default");
    ok = c != NULL && EVP_PKEY_fromdata_init(c) == 1 && EVP_PKEY_fromdata(c, &pub, EVP_PKEY_PUBLIC_KEY, from) == 1;
    EVP_PKEY_CTX_free(c);
    if (!ok)
        return 0;
    EVP_PKEY_free(k->pub);
    k->pub = pub;
    k->params_only = 0;
    remember_spki(k, group, p);
    return 1;
}

static const OSSL_PARAM *ec_settable_params(void *provctx)
{
    static const OSSL_PARAM params[] = {
        OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, NULL, 0),
        OSSL_PARAM_END
    };
    (void)provctx;
    return params;
}

#define COMMON_FUNCTIONS(prefix)                                                                      \
    { OSSL_FUNC_KEYMGMT_NEW, (void (*)(void))prefix##_new },                                         \
    { OSSL_FUNC_KEYMGMT_FREE, (void (*)(void))km_free },                                             \
    { OSSL_FUNC_KEYMGMT_LOAD, (void (*)(void))km_load },                                             \
    { OSSL_FUNC_KEYMGMT_HAS, (void (*)(void))km_has },                                               \
    { OSSL_FUNC_KEYMGMT_VALIDATE, (void (*)(void))km_validate },                                     \
    { OSSL_FUNC_KEYMGMT_MATCH, (void (*)(void))km_match },                                           \
    { OSSL_FUNC_KEYMGMT_GET_PARAMS, (void (*)(void))km_get_params },                                 \
    { OSSL_FUNC_KEYMGMT_IMPORT, (void (*)(void))prefix##_import },                                   \
    { OSSL_FUNC_KEYMGMT_EXPORT, (void (*)(void))km_export },                                         \
    { OSSL_FUNC_KEYMGMT_DUP, (void (*)(void))km_dup }

const OSSL_DISPATCH sks_ec_keymgmt_functions[] = {
    COMMON_FUNCTIONS(ec),
    { OSSL_FUNC_KEYMGMT_GETTABLE_PARAMS, (void (*)(void))ec_gettable_params },
    { OSSL_FUNC_KEYMGMT_IMPORT_TYPES, (void (*)(void))ec_import_types },
    { OSSL_FUNC_KEYMGMT_EXPORT_TYPES, (void (*)(void))ec_import_types_x },
    { OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME, (void (*)(void))ec_query_operation_name },
    { OSSL_FUNC_KEYMGMT_SET_PARAMS, (void (*)(void))ec_set_params },
    { OSSL_FUNC_KEYMGMT_SETTABLE_PARAMS, (void (*)(void))ec_settable_params },
    { 0, NULL }
};

const OSSL_DISPATCH sks_rsa_keymgmt_functions[] = {
    COMMON_FUNCTIONS(rsa),
    { OSSL_FUNC_KEYMGMT_GETTABLE_PARAMS, (void (*)(void))rsa_gettable_params },
    { OSSL_FUNC_KEYMGMT_IMPORT_TYPES, (void (*)(void))rsa_import_types },
    { OSSL_FUNC_KEYMGMT_EXPORT_TYPES, (void (*)(void))rsa_import_types_x },
    { OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME, (void (*)(void))rsa_query_operation_name },
    { 0, NULL }
};

const OSSL_DISPATCH sks_rsapss_keymgmt_functions[] = {
    COMMON_FUNCTIONS(rsapss),
    { OSSL_FUNC_KEYMGMT_GETTABLE_PARAMS, (void (*)(void))rsa_gettable_params },
    { OSSL_FUNC_KEYMGMT_IMPORT_TYPES, (void (*)(void))rsa_import_types },
    { OSSL_FUNC_KEYMGMT_EXPORT_TYPES, (void (*)(void))rsa_import_types_x },
    { OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME, (void (*)(void))rsa_query_operation_name },
    { 0, NULL }
};

const OSSL_DISPATCH sks_ed25519_keymgmt_functions[] = {
    COMMON_FUNCTIONS(ed25519),
    { OSSL_FUNC_KEYMGMT_GETTABLE_PARAMS, (void (*)(void))ed25519_gettable_params },
    { OSSL_FUNC_KEYMGMT_IMPORT_TYPES, (void (*)(void))ed25519_import_types },
    { OSSL_FUNC_KEYMGMT_EXPORT_TYPES, (void (*)(void))ed25519_import_types_x },
    { OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME, (void (*)(void))ed25519_query_operation_name },
    { 0, NULL }
};
