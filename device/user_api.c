/*
 * The User API (spec methods 100-104): sign, decrypt, key agreement, HMAC and symmetric
 * encryption with keys whose provisioning session is closed. The algorithm and the key's
 * endorsed algorithms are checked before the PIN, so a refused operation never consumes
 * a PIN attempt.
 */
#include "internal.h"

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <openssl/rsa.h>

#define ALG_NONE SKS_ALG_PREFIX "none"

/* The arguments every User API method starts with. */
typedef struct {
    uint32_t handle;
    sks_span algorithm;
    sks_span parameters;
    int biometric;
    sks_span authorization;
} user_args;

static int endorsed_allows(const sks_buf *endorsed, sks_span alg)
{
    sks_reader r;
    uint16_t n, i;

    sks_reader_init(&r, endorsed->data, endorsed->len);
    n = sks_get_ushort(&r, "count");
    if (n == 0)
        return 1; /* only constrained by the key material */
    for (i = 0; i < n; i++) {
        sks_span e = sks_get_array(&r, "uri");
        if (sks_reader_ok(&r) && sks_span_eq(e, alg))
            return 1;
    }
    return 0;
}

static const char *class_name(alg_class c)
{
    switch (c) {
    case ALG_SIGN:
        return "a signature";
    case ALG_DECRYPT:
        return "an asymmetric decryption";
    case ALG_AGREE:
        return "a key agreement";
    case ALG_HMAC:
        return "an HMAC";
    case ALG_SYM_ENCRYPT:
        return "a symmetric encryption";
    default:
        return "a usable";
    }
}

static key_type key_type_of(EVP_PKEY *k)
{
    switch (EVP_PKEY_get_base_id(k)) {
    case EVP_PKEY_RSA:
        return KEYTYPE_RSA;
    case EVP_PKEY_EC:
        return KEYTYPE_EC;
    case EVP_PKEY_ED25519:
        return KEYTYPE_ED25519;
    default:
        return KEYTYPE_NONE;
    }
}

/* Resolves the algorithm for a method class; Ed25519's one URI serves as a signature. */
static const sks_algorithm *algorithm_for(sks_span uri, alg_class cls)
{
    const sks_algorithm *a = alg_find_n((const char *)uri.p, uri.n);

    if (a != NULL && cls == ALG_SIGN && a->cls == ALG_KEY_GEN && a->key == KEYTYPE_ED25519)
        return a;
    return a != NULL && a->cls == cls ? a : NULL;
}

/* ---- the cache of keys without PIN protection ---- */

/* A key has one place in the cache (user_cache_put): one look. */
static user_cache_entry *user_cache_find(sks_device *dev, uint32_t handle, const store_gen *g)
{
    user_cache_entry *e = &dev->user_cache[handle % SKS_USER_CACHE];

    return e->pkey != NULL && e->handle == handle && gen_equal(&e->gen, g) ? e : NULL;
}

user_cache_entry *user_cache_current(sks_device *dev, uint32_t handle)
{
    store_gen g;

    return gen_current(dev, &g) ? user_cache_find(dev, handle, &g) : NULL;
}

void user_cache_clear(sks_device *dev)
{
    size_t i;

    for (i = 0; i < SKS_USER_CACHE; i++) {
        key_contexts_free(&dev->user_cache[i].ctx);
        EVP_PKEY_free(dev->user_cache[i].pkey);
        sks_buf_free(&dev->user_cache[i].endorsed);
        dev->user_cache[i].pkey = NULL;
    }
}

/* Remembers a provisioned key without PIN, biometric or symmetric material, as read when
 * the store's version was g. */
static void user_cache_put(sks_device *dev, const key_entry *k, EVP_PKEY *pkey, const store_gen *g)
{
    user_cache_entry *e = &dev->user_cache[k->handle % SKS_USER_CACHE];

    if (!g->valid || k->pin_policy != 0 || k->device_pin || k->biometric != 0 || k->symmetric_length != 0)
        return;
    key_contexts_free(&e->ctx);
    EVP_PKEY_free(e->pkey);
    sks_buf_free(&e->endorsed);
    e->pkey = EVP_PKEY_up_ref(pkey) ? pkey : NULL;
    e->type = key_type_of(pkey);
    e->approved = NULL;
    e->handle = k->handle;
    e->gen = *g;
    sks_buf_put(&e->endorsed, k->endorsed.data, k->endorsed.len);
    if (e->endorsed.failed) {
        EVP_PKEY_free(e->pkey);
        e->pkey = NULL;
    }
}

/* The cache entry for this call's key: the one the dispatcher found for this very call
 * (dev->user_hit), else looked up now; NULL if the key is not cached as of now. */
static user_cache_entry *user_cache_for_call(sks_device *dev, uint32_t handle)
{
    user_cache_entry *e = dev->user_hit;

    return e != NULL && e->handle == handle ? e : user_cache_current(dev, handle);
}

static sks_status check_algorithm(sks_call *call, const char *method, alg_class cls, const user_args *a,
                                  const sks_buf *endorsed, uint32_t symmetric_length, const sks_algorithm **alg);
static sks_status check_parameters(sks_call *call, const char *method, alg_class cls, const user_args *a,
                                   const sks_algorithm *alg);

/* 1 if the call names the algorithm that last passed the algorithm checks on this entry
 * for this class (the URI compared byte for byte with the table's). */
static int approved_before(const user_cache_entry *e, alg_class cls, sks_span uri)
{
    return e->approved != NULL && e->approved_cls == cls && uri.n == e->approved_len
        && memcmp(uri.p, e->approved->uri, uri.n) == 0;
}

/* The checks of prepare() for a cached key: it is provisioned, asymmetric and has no PIN.
 * The same checks in the same order as for a key read from the store; those that depend only
 * on the algorithm and the key are remembered per entry (approved_before). */
static sks_status check_cached(sks_call *call, const char *method, alg_class cls, const user_args *a,
                               user_cache_entry *e, const sks_algorithm **alg)
{
    sks_status rc;

    if (approved_before(e, cls, a->algorithm)) {
        *alg = e->approved;
        if ((rc = check_parameters(call, method, cls, a, *alg)) != SKS_OK)
            return rc;
    } else {
        if ((rc = check_algorithm(call, method, cls, a, &e->endorsed, 0, alg)) != SKS_OK)
            return rc;
        if (e->type != (*alg)->key)
            return sks_fail(call, SKS_ERROR_ALGORITHM, "%s: \"%.*s\" does not fit the type of key #%u", method,
                            (int)a->algorithm.n, a->algorithm.p, a->handle);
        e->approved = *alg;
        e->approved_cls = cls;
        e->approved_len = a->algorithm.n;
    }
    /* No PIN: an authorization or biometric claim is an error, exactly as pin_verify says. */
    if (a->biometric)
        return sks_fail(call, SKS_ERROR_AUTHORIZATION, "key #%u has no biometric protection", a->handle);
    if (a->authorization.n != 0)
        return sks_fail(call, SKS_ERROR_AUTHORIZATION, "key #%u is not PIN protected: authorization must be empty",
                        a->handle);
    return SKS_OK;
}

/*
 * Everything a User API call checks before touching key material: the key exists and is
 * provisioned, the algorithm is of the method's class and endorsed, the key is of the right
 * kind, and then the PIN. On success *pkey holds the private key (asymmetric methods) or
 * sym holds the secret key (symmetric methods). *hit (if not NULL) is the cache entry the
 * key came from, else NULL.
 */
static sks_status prepare(sks_device *dev, sks_call *call, const char *method, alg_class cls, const user_args *a,
                          key_entry *k, const sks_algorithm **alg, EVP_PKEY **pkey, sks_buf *sym,
                          user_cache_entry **hit)
{
    int symmetric_method = cls == ALG_HMAC || cls == ALG_SYM_ENCRYPT;
    user_cache_entry *e = NULL;
    store_gen g;
    sks_status rc;

    *pkey = NULL;
    if (hit != NULL)
        *hit = NULL;
    memset(k, 0, sizeof(*k));
    if (!symmetric_method && (e = user_cache_for_call(dev, a->handle)) != NULL && EVP_PKEY_up_ref(e->pkey)) {
        k->handle = a->handle;
        *pkey = e->pkey;
        if (hit != NULL)
            *hit = e;
        return check_cached(call, method, cls, a, e, alg);
    }
    gen_current(dev, &g); /* before the first query of this transaction: the data read is at least as new */
    if ((rc = key_load_usable(dev, call, a->handle, k)) != SKS_OK)
        return rc;
    if ((rc = check_algorithm(call, method, cls, a, &k->endorsed, k->symmetric_length, alg)) != SKS_OK)
        return rc;
    if (symmetric_method) {
        if ((rc = pin_verify(dev, call, k, a->biometric, a->authorization)) != SKS_OK)
            return rc;
        return key_symmetric(dev, call, k, sym);
    }
    if ((*pkey = key_private(dev, call, k)) == NULL)
        return SKS_ERROR_INTERNAL;
    if (key_type_of(*pkey) != (*alg)->key)
        return sks_fail(call, SKS_ERROR_ALGORITHM, "%s: \"%.*s\" does not fit the type of key #%u", method,
                        (int)a->algorithm.n, a->algorithm.p, a->handle);
    rc = pin_verify(dev, call, k, a->biometric, a->authorization);
    if (rc == SKS_OK)
        user_cache_put(dev, k, *pkey, &g);
    return rc;
}

/* The digest a parameters string names: one of the SHA family the project supports for
 * OAEP and MGF1 (docs/algorithms.md), spelled exactly so; NULL for anything else. */
static const EVP_MD *oaep_digest_named(sks_span name)
{
    static const char *const NAMES[] = { "SHA1", "SHA224", "SHA256", "SHA384", "SHA512" };
    size_t i;

    for (i = 0; i < sizeof(NAMES) / sizeof(NAMES[0]); i++)
        if (sks_span_eq_str(name, NAMES[i]))
            return EVP_get_digestbyname(NAMES[i]);
    return NULL;
}

/* rsa.oaep parameters (a project extension, docs/algorithms.md): string oaepDigest, string
 * mgf1Digest, byte[] label, nothing after. 1 if well formed; *out (if given) then points
 * into p. */
static int oaep_parameters(sks_span p, oaep_params *out)
{
    sks_reader r;
    sks_span md, mgf1, label;
    oaep_params o;

    sks_reader_init(&r, p.p, p.n);
    md = sks_get_string(&r, "oaepDigest");
    mgf1 = sks_get_string(&r, "mgf1Digest");
    label = sks_get_array(&r, "label");
    sks_reader_expect_end(&r);
    if (!sks_reader_ok(&r))
        return 0;
    o.md = oaep_digest_named(md);
    o.mgf1 = oaep_digest_named(mgf1);
    o.label = label.p;
    o.label_len = label.n;
    if (o.md == NULL || o.mgf1 == NULL)
        return 0;
    if (out != NULL)
        *out = o;
    return 1;
}

/* The algorithm is of the method's class, endorsed for the key, fits its kind (symmetric or
 * not), and gets parameters only where it takes them. */
static sks_status check_algorithm(sks_call *call, const char *method, alg_class cls, const user_args *a,
                                  const sks_buf *endorsed, uint32_t symmetric_length, const sks_algorithm **alg)
{
    int symmetric_method = cls == ALG_HMAC || cls == ALG_SYM_ENCRYPT;

    if ((*alg = algorithm_for(a->algorithm, cls)) == NULL)
        return sks_fail(call, SKS_ERROR_ALGORITHM, "%s: \"%.*s\" is not %s algorithm", method, (int)a->algorithm.n,
                        a->algorithm.p, class_name(cls));
    if (!endorsed_allows(endorsed, a->algorithm))
        return sks_fail(call, SKS_ERROR_ALGORITHM, "%s: key #%u is not endorsed for \"%.*s\"", method, a->handle,
                        (int)a->algorithm.n, a->algorithm.p);
    if (symmetric_method != (symmetric_length > 0))
        return sks_fail(call, SKS_ERROR_ALGORITHM, "%s: key #%u is %s key", method, a->handle,
                        symmetric_length > 0 ? "a symmetric" : "an asymmetric");
    return check_parameters(call, method, cls, a, *alg);
}

/* The parameters fit the algorithm: none where it takes none, well-formed OAEP ones. */
static sks_status check_parameters(sks_call *call, const char *method, alg_class cls, const user_args *a,
                                   const sks_algorithm *alg)
{
    if (!(cls == ALG_SYM_ENCRYPT && alg->sym == SYM_CBC_PARAM_IV) && !alg->pss && !alg->oaep_params
        && a->parameters.n != 0)
        return sks_fail(call, SKS_ERROR_OPTION, "%s: \"parameters\" must be empty for this algorithm", method);
    /* Checked here, before the PIN: a malformed request costs no PIN try. */
    if (alg->oaep_params && !oaep_parameters(a->parameters, NULL))
        return sks_fail(call, SKS_ERROR_OPTION, "%s: rsa.oaep \"parameters\" must be string oaepDigest, string"
                        " mgf1Digest (each SHA1, SHA224, SHA256, SHA384 or SHA512) and byte[] label", method);
    return SKS_OK;
}

static void read_user_args(sks_reader *in, user_args *a, int with_mode, int *mode)
{
    a->handle = sks_get_uint(in, "keyHandle");
    a->algorithm = sks_get_uri(in, "algorithm");
    if (with_mode)
        *mode = sks_get_bool(in, "mode");
    a->parameters = sks_get_array(in, "parameters");
    a->biometric = sks_get_bool(in, "biometricAuth");
    a->authorization = sks_get_array(in, "authorization");
}

/* RSA-PSS parameters (a project extension, docs/algorithms.md): empty = salt length equal
 * to the hash length and MGF1 with the signature's hash; else ushort saltLength, optionally
 * followed by string mgf1Digest. */
static int pss_parameters(sks_span p, int *saltlen, const EVP_MD **mgf1)
{
    sks_reader r;
    sks_span name;
    char buf[16];

    *saltlen = -1;
    *mgf1 = NULL;
    if (p.n == 0)
        return 1;
    sks_reader_init(&r, p.p, p.n);
    *saltlen = sks_get_ushort(&r, "saltLength");
    if (r.off < r.n) {
        name = sks_get_string(&r, "mgf1Digest");
        if (!sks_reader_ok(&r) || name.n == 0 || name.n >= sizeof(buf))
            return 0;
        memcpy(buf, name.p, name.n);
        buf[name.n] = '\0';
        if (strcmp(buf, "SHA1") != 0 && strcmp(buf, "SHA256") != 0 && strcmp(buf, "SHA384") != 0
            && strcmp(buf, "SHA512") != 0)
            return 0;
        *mgf1 = EVP_get_digestbyname(buf);
    }
    sks_reader_expect_end(&r);
    return sks_reader_ok(&r);
}

SKS_HANDLER(h_sign_hashed_data)
{
    int saltlen = -1;
    const EVP_MD *mgf1 = NULL;
    user_args a;
    sks_span data;
    key_entry k;
    const sks_algorithm *alg = NULL;
    EVP_PKEY *pkey = NULL;
    user_cache_entry *hit = NULL;
    uint8_t sig[SKS_MAX_SIGNATURE]; /* no allocation per signature */
    size_t siglen = sizeof(sig);
    sks_status rc;

    read_user_args(in, &a, 0, NULL);
    data = sks_get_array(in, "data");
    sks_reader_expect_end(in);
    if ((rc = reader_status(call, "signHashedData", in)) != SKS_OK)
        return rc;
    if ((rc = prepare(dev, call, "signHashedData", ALG_SIGN, &a, &k, &alg, &pkey, NULL, &hit)) != SKS_OK)
        goto done;
    if (alg->hash_len != 0 && data.n != alg->hash_len) {
        rc = sks_fail(call, SKS_ERROR_OPTION, "signHashedData: \"data\" must be a %zu-byte hash for \"%s\", got %zu bytes",
                      alg->hash_len, alg->uri, data.n);
        goto done;
    }
    if (alg->hash_len == 0 && alg->key != KEYTYPE_ED25519 && (data.n == 0 || data.n > 64 * 8)) {
        rc = sks_fail(call, SKS_ERROR_OPTION, "signHashedData: \"data\" length %zu is outside the key's limits", data.n);
        goto done;
    }
    if (alg->pss && !pss_parameters(a.parameters, &saltlen, &mgf1)) {
        rc = sks_fail(call, SKS_ERROR_OPTION, "signHashedData: RSA-PSS \"parameters\" must be empty or ushort"
                      " saltLength followed by an optional MGF1 digest name (SHA1, SHA256, SHA384, SHA512)");
        goto done;
    }
    /* a cached key keeps its signing contexts between calls; only RSA needs the digest named
     * (ECDSA and Ed25519 sign what they are given), and looking it up costs on every call */
    if (!sign_hash_to(hit != NULL ? &hit->ctx : NULL, pkey,
                      alg->md != NULL && alg->key == KEYTYPE_RSA ? EVP_get_digestbyname(alg->md) : NULL, alg->pss,
                      saltlen, mgf1, data.p, data.n, sig, &siglen)) {
        rc = sks_fail(call, SKS_ERROR_CRYPTO, "signHashedData: signing with key #%u failed (data too long for the key?)",
                      a.handle);
        goto done;
    }
    sks_buf_array(out, sig, siglen);
    OPENSSL_cleanse(sig, siglen);
done:
    EVP_PKEY_free(pkey);
    key_free(&k);
    return rc;
}

SKS_HANDLER(h_asymmetric_key_decrypt)
{
    user_args a;
    sks_span data;
    key_entry k;
    const sks_algorithm *alg = NULL;
    EVP_PKEY *pkey = NULL;
    oaep_params oaep = { NULL, NULL, NULL, 0 };
    sks_buf plain;
    sks_status rc;

    read_user_args(in, &a, 0, NULL);
    data = sks_get_array(in, "data");
    sks_reader_expect_end(in);
    if ((rc = reader_status(call, "asymmetricKeyDecrypt", in)) != SKS_OK)
        return rc;
    sks_buf_init(&plain);
    if ((rc = prepare(dev, call, "asymmetricKeyDecrypt", ALG_DECRYPT, &a, &k, &alg, &pkey, NULL, NULL)) != SKS_OK)
        goto done;
    if (alg->oaep_params) {
        (void)oaep_parameters(a.parameters, &oaep); /* checked well formed before the PIN */
    } else if (alg->md != NULL) {
        oaep.md = oaep.mgf1 = EVP_get_digestbyname(alg->md);
    }
    /* One answer for every failure (crypto.c: rsa_decrypt): no padding oracle. */
    if (!rsa_decrypt(pkey, alg->pad, &oaep, data.p, data.n, &plain)) {
        rc = sks_fail(call, SKS_ERROR_CRYPTO, "asymmetricKeyDecrypt: decryption with key #%u failed", a.handle);
        goto done;
    }
    sks_buf_array(out, plain.data, plain.len);
done:
    sks_buf_free(&plain); /* wipes */
    EVP_PKEY_free(pkey);
    key_free(&k);
    return rc;
}

SKS_HANDLER(h_key_agreement)
{
    user_args a;
    sks_span peer_der;
    key_entry k;
    const sks_algorithm *alg = NULL;
    EVP_PKEY *pkey = NULL, *peer = NULL;
    user_cache_entry *hit = NULL;
    int validated = 0, direct;
    sks_buf z;
    sks_status rc;

    read_user_args(in, &a, 0, NULL);
    peer_der = sks_get_array(in, "publicKey");
    sks_reader_expect_end(in);
    if ((rc = reader_status(call, "keyAgreement", in)) != SKS_OK)
        return rc;
    sks_buf_init(&z);
    if ((rc = prepare(dev, call, "keyAgreement", ALG_AGREE, &a, &k, &alg, &pkey, NULL, &hit)) != SKS_OK)
        goto done;
    if (hit != NULL && (direct = ecdh_z_direct(&hit->ctx, pkey, peer_der.p, peer_der.n, &z)) >= 0) {
        if (direct == 0)
            rc = sks_fail(call, SKS_ERROR_CRYPTO, "keyAgreement: ECDH failed");
        else
            sks_buf_array(out, z.data, z.len);
        goto done;
    }
    if ((peer = ecdh_peer_parse(pkey, peer_der.p, peer_der.n, &validated)) == NULL) {
        rc = sks_fail(call, SKS_ERROR_OPTION, "keyAgreement: \"publicKey\" must be an EC public key on the curve of key #%u",
                      a.handle);
        goto done;
    }
    if (!ecdh_z_reuse(hit != NULL ? &hit->ctx : NULL, pkey, peer, validated, &z)) {
        rc = sks_fail(call, SKS_ERROR_CRYPTO, "keyAgreement: ECDH failed (point not on the curve?)");
        goto done;
    }
    sks_buf_array(out, z.data, z.len);
done:
    sks_buf_free(&z);
    EVP_PKEY_free(peer);
    EVP_PKEY_free(pkey);
    key_free(&k);
    return rc;
}

SKS_HANDLER(h_perform_hmac)
{
    user_args a;
    sks_span data;
    key_entry k;
    const sks_algorithm *alg = NULL;
    EVP_PKEY *unused = NULL;
    sks_buf key;
    uint8_t mac[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    sks_status rc;

    read_user_args(in, &a, 0, NULL);
    data = sks_get_blob(in, "data");
    sks_reader_expect_end(in);
    if ((rc = reader_status(call, "performHmac", in)) != SKS_OK)
        return rc;
    sks_buf_init(&key);
    if ((rc = prepare(dev, call, "performHmac", ALG_HMAC, &a, &k, &alg, &unused, &key, NULL)) != SKS_OK)
        goto done;
    if (data.n > SKS_CRYPTO_DATA_SIZE) {
        rc = sks_fail(call, SKS_ERROR_OPTION, "performHmac: \"data\" exceeds cryptoDataSize (%d)", SKS_CRYPTO_DATA_SIZE);
        goto done;
    }
    if (HMAC(EVP_get_digestbyname(alg->md), key.data, (int)key.len, data.n ? data.p : (const uint8_t *)"", data.n, mac,
             &len)
        == NULL) {
        rc = sks_fail(call, SKS_ERROR_CRYPTO, "performHmac failed");
        goto done;
    }
    sks_buf_array(out, mac, len);
done:
    sks_buf_free(&key);
    key_free(&k);
    return rc;
}

SKS_HANDLER(h_symmetric_key_encrypt)
{
    user_args a;
    int mode = 0;
    sks_span data;
    key_entry k;
    const sks_algorithm *alg = NULL;
    EVP_PKEY *unused = NULL;
    sks_buf key, res;
    uint8_t iv[16];
    int ok = 0;
    sks_status rc;

    read_user_args(in, &a, 1, &mode);
    data = sks_get_blob(in, "data");
    sks_reader_expect_end(in);
    if ((rc = reader_status(call, "symmetricKeyEncrypt", in)) != SKS_OK)
        return rc;
    sks_buf_init(&key);
    sks_buf_init(&res);
    if ((rc = prepare(dev, call, "symmetricKeyEncrypt", ALG_SYM_ENCRYPT, &a, &k, &alg, &unused, &key, NULL))
        != SKS_OK)
        goto done;
    if (alg->sym_key_len != 0 && key.len != alg->sym_key_len) {
        rc = sks_fail(call, SKS_ERROR_ALGORITHM, "symmetricKeyEncrypt: \"%s\" needs a %zu-byte key, key #%u has %zu",
                      alg->uri, alg->sym_key_len, a.handle, key.len);
        goto done;
    }
    if (data.n > SKS_CRYPTO_DATA_SIZE) {
        rc = sks_fail(call, SKS_ERROR_OPTION, "symmetricKeyEncrypt: \"data\" exceeds cryptoDataSize");
        goto done;
    }
    switch (alg->sym) {
    case SYM_CBC_INTERNAL_IV:
        if (mode) {
            ok = random_bytes(iv, 16);
            sks_buf_put(&res, iv, 16);
            ok = ok && aes_cbc(1, 1, key.data, key.len, iv, data.p, data.n, &res);
        } else {
            ok = data.n >= 32 && aes_cbc(0, 1, key.data, key.len, data.p, data.p + 16, data.n - 16, &res);
        }
        break;
    case SYM_CBC_PARAM_IV:
        if (a.parameters.n != 16) {
            rc = sks_fail(call, SKS_ERROR_OPTION, "symmetricKeyEncrypt: aes.cbc needs a 16-byte IV in \"parameters\"");
            goto done;
        }
        ok = aes_cbc(mode, 1, key.data, key.len, a.parameters.p, data.p, data.n, &res);
        break;
    case SYM_ECB_NOPAD:
        ok = aes_ecb_nopad(mode, key.data, key.len, data.p, data.n, &res);
        break;
    default:
        break;
    }
    if (!ok) {
        rc = sks_fail(call, SKS_ERROR_CRYPTO, "symmetricKeyEncrypt: %s failed (wrong length or padding?)",
                      mode ? "encryption" : "decryption");
        goto done;
    }
    sks_buf_blob(out, res.data, res.len);
done:
    sks_buf_free(&key);
    sks_buf_free(&res);
    key_free(&k);
    return rc;
}
