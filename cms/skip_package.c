/*
 * SKIP package decoding and verification (skip_package.h). The CMS SignedData and X.509 go
 * through OpenSSL; KeyPairContainers, the project's own ASN.1, through libtasn1 with the
 * module cms/skip.asn compiled at build time (skip_asn1_tab.c), so no file is needed at run
 * time and the provider module carries the definitions with it.
 */
#include "skip_package.h"
#include "skip_common.h"
#include "key_der.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <libtasn1.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

extern const asn1_static_node skip_asn1_tab[];

#define OID_AES128_CBC "2.16.840.1.101.3.4.1.2"
#define OID_AES256_CBC "2.16.840.1.101.3.4.1.42"
/* Large enough for a package with SKIP_MAX_KEYS keys and their chains. */
#define SKIP_MAX_PACKAGE (4u * 1024 * 1024)

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    ERR_clear_error();
    return 0;
}

/* ------------------------------------------------------------------ key types */

static const char *const CURVES[] = {
    "brainpoolP256r1", "brainpoolP320r1", "brainpoolP384r1", "brainpoolP512r1",
    "prime256v1",      "secp384r1",       "secp521r1",
};

const char *skip_curve_of(EVP_PKEY *key, char *buf, size_t n)
{
    size_t len = 0;

    buf[0] = '\0';
    if (key == NULL || EVP_PKEY_get_base_id(key) != EVP_PKEY_EC
        || EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, buf, n, &len) != 1)
        buf[0] = '\0';
    return buf;
}

int skip_key_supported(EVP_PKEY *key, int allow_ed25519)
{
    char curve[64];
    size_t i;

    if (key == NULL)
        return 0;
    if (EVP_PKEY_get_base_id(key) == EVP_PKEY_ED25519)
        return allow_ed25519;
    skip_curve_of(key, curve, sizeof(curve));
    for (i = 0; i < sizeof(CURVES) / sizeof(CURVES[0]); i++)
        if (strcmp(curve, CURVES[i]) == 0)
            return 1;
    return 0;
}

/* ------------------------------------------------------------------ KeyPairContainers */

/* The byte range of a named element of the decoded structure, inside der. */
static int element_span(asn1_node el, const uint8_t *der, size_t n, const char *name, const uint8_t **p,
                        size_t *len)
{
    int start = 0, end = 0;

    if (asn1_der_decoding_startEnd(el, der, (int)n, name, &start, &end) != ASN1_SUCCESS || start < 0 || end < start
        || (size_t)end >= n)
        return 0;
    *p = der + start;
    *len = (size_t)(end - start) + 1;
    return 1;
}

/* The cipher of encryptedPrivate: aes128-CBC or aes256-CBC with a 16-byte IV. */
static int container_cipher(asn1_node el, size_t i, int *bits, char *err, size_t errlen)
{
    char name[96], oid[128];
    uint8_t param[64];
    int len = sizeof(oid);

    snprintf(name, sizeof(name), "?%zu.encryptedPrivate.encryptionAlgorithm.algorithm", i);
    if (asn1_read_value(el, name, oid, &len) != ASN1_SUCCESS)
        return fail(err, errlen, "container %zu: unreadable cipher algorithm", i);
    if (strcmp(oid, OID_AES256_CBC) == 0)
        *bits = 256;
    else if (strcmp(oid, OID_AES128_CBC) == 0)
        *bits = 128;
    else
        return fail(err, errlen, "container %zu: unsupported cipher %s (aes256-CBC or aes128-CBC only)", i, oid);
    snprintf(name, sizeof(name), "?%zu.encryptedPrivate.encryptionAlgorithm.parameters", i);
    len = sizeof(param);
    /* The ANY parameter comes back as its DER: an OCTET STRING of 16 bytes is 04 10 + IV. */
    if (asn1_read_value(el, name, param, &len) != ASN1_SUCCESS || len != 18 || param[0] != 0x04 || param[1] != 16)
        return fail(err, errlen, "container %zu: the cipher parameter must be a 16-byte IV (OCTET STRING)", i);
    return 1;
}

/* The SubjectPublicKeyInfo DER of each certificate, encoded once (NULL entries where it
 * cannot be), for finding the certificate that carries a given key by its bytes. */
typedef struct {
    STACK_OF(X509) *certs; /* the package's, not owned */
    unsigned char **der;
    int *len;
    int n;
} cert_keys;

static void cert_keys_free(cert_keys *k)
{
    int j;

    for (j = 0; j < k->n; j++)
        OPENSSL_free(k->der[j]);
    OPENSSL_free(k->der);
    OPENSSL_free(k->len);
    memset(k, 0, sizeof(*k));
}

static int cert_keys_encode(STACK_OF(X509) *certs, cert_keys *k)
{
    int j, n = sk_X509_num(certs);

    memset(k, 0, sizeof(*k));
    if (n <= 0)
        return 1;
    k->der = OPENSSL_zalloc(sizeof(*k->der) * (size_t)n);
    k->len = OPENSSL_zalloc(sizeof(*k->len) * (size_t)n);
    if (k->der == NULL || k->len == NULL) {
        cert_keys_free(k);
        return 0;
    }
    k->certs = certs;
    k->n = n;
    for (j = 0; j < n; j++)
        k->len[j] = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(sk_X509_value(certs, j)), &k->der[j]);
    ERR_clear_error();
    return 1;
}

/* The key a certificate of the package already carries in exactly these SubjectPublicKeyInfo
 * bytes (OpenSSL decoded it with the certificate: X509_get0_pubkey), with a reference of the
 * caller's; NULL if none does. The same bytes are the same key, so the container's key need
 * not be decoded a second time (each decoding builds the curve's group anew: 16 of them were
 * 5% of an 8-key import, client and device). */
static EVP_PKEY *key_of_a_certificate(const cert_keys *k, const uint8_t *spki, size_t n)
{
    int j;

    for (j = 0; k != NULL && j < k->n; j++) {
        EVP_PKEY *pub;
        if (k->len[j] <= 0 || (size_t)k->len[j] != n || memcmp(k->der[j], spki, n) != 0)
            continue;
        if ((pub = X509_get0_pubkey(sk_X509_value(k->certs, j))) != NULL && EVP_PKEY_up_ref(pub) == 1)
            return pub;
    }
    ERR_clear_error();
    return NULL;
}

static int parse_one_container(asn1_node el, const uint8_t *der, size_t n, size_t i, const cert_keys *keys,
                               skip_container *c, char *err, size_t errlen)
{
    char name[64];

    snprintf(name, sizeof(name), "?%zu.public", i);
    if (!element_span(el, der, n, name, &c->spki, &c->spki_len))
        return fail(err, errlen, "container %zu: no public key", i);
    snprintf(name, sizeof(name), "?%zu.encryptedPrivate", i);
    if (!element_span(el, der, n, name, &c->epki, &c->epki_len))
        return fail(err, errlen, "container %zu: no encryptedPrivate", i);
    if (!container_cipher(el, i, &c->aes_bits, err, errlen))
        return 0;
    /* Plain EC and Ed25519 keys without OpenSSL's decoder chain (a third of a package's
     * parsing went there); anything else the long way, with the same result. */
    if ((c->public_key = key_of_a_certificate(keys, c->spki, c->spki_len)) == NULL)
        c->public_key = spki_parse(c->spki, c->spki_len);
    if (c->public_key == NULL)
        return fail(err, errlen, "container %zu: the public key is not a SubjectPublicKeyInfo OpenSSL can read", i);
    if (!skip_key_supported(c->public_key, 1)) {
        char curve[64];
        skip_curve_of(c->public_key, curve, sizeof(curve));
        return fail(err, errlen, "container %zu: unsupported key type %s (EC on a SKIP curve or Ed25519 only)", i,
                    curve[0] ? curve : OBJ_nid2sn(EVP_PKEY_get_base_id(c->public_key)));
    }
    return 1;
}

static int decode_containers(asn1_node *el, const uint8_t *der, size_t n, int *count, char *err, size_t errlen)
{
    asn1_node defs = NULL;
    char why[ASN1_MAX_ERROR_DESCRIPTION_SIZE] = "";
    int len = (int)n, rc, ok = 0;

    if (asn1_array2tree(skip_asn1_tab, &defs, why) != ASN1_SUCCESS)
        return fail(err, errlen, "internal error: the SKIP ASN.1 module does not load: %s", why);
    if (asn1_create_element(defs, "SKIP.KeyPairContainers", el) != ASN1_SUCCESS)
        fail(err, errlen, "internal error: no KeyPairContainers in the ASN.1 module");
    else if ((rc = asn1_der_decoding2(el, der, &len, ASN1_DECODE_FLAG_STRICT_DER, why)) != ASN1_SUCCESS)
        fail(err, errlen, "the package content is not KeyPairContainers DER: %s%s%s", asn1_strerror(rc),
             why[0] ? ": " : "", why);
    else if ((size_t)len != n)
        fail(err, errlen, "the package content has %zu bytes after KeyPairContainers", n - (size_t)len);
    else if (asn1_number_of_elements(*el, "", count) != ASN1_SUCCESS || *count < 1)
        fail(err, errlen, "the package holds no keys");
    else if (*count > SKIP_MAX_KEYS)
        fail(err, errlen, "the package holds %d keys; at most %d are supported", *count, SKIP_MAX_KEYS);
    else
        ok = 1;
    asn1_delete_structure(&defs);
    return ok;
}

static int containers_parse(const uint8_t *der, size_t n, const cert_keys *keys, skip_container **out, size_t *count,
                            char *err, size_t errlen)
{
    asn1_node el = NULL;
    skip_container *c = NULL;
    int num = 0, ok = 0;
    size_t i;

    *out = NULL;
    *count = 0;
    if (n == 0 || n > SKIP_MAX_PACKAGE)
        return fail(err, errlen, "the package content is empty or too large");
    if (!decode_containers(&el, der, n, &num, err, errlen))
        goto done;
    if ((c = OPENSSL_zalloc((size_t)num * sizeof(*c))) == NULL) {
        fail(err, errlen, "out of memory");
        goto done;
    }
    for (i = 0; i < (size_t)num; i++)
        if (!parse_one_container(el, der, n, i + 1, keys, &c[i], err, errlen))
            goto done;
    *out = c;
    *count = (size_t)num;
    c = NULL;
    ok = 1;
done:
    skip_containers_free(c, (size_t)num);
    asn1_delete_structure(&el);
    return ok;
}

int skip_containers_parse(const uint8_t *der, size_t n, skip_container **out, size_t *count, char *err,
                          size_t errlen)
{
    return containers_parse(der, n, NULL, out, count, err, errlen);
}

void skip_containers_free(skip_container *c, size_t count)
{
    size_t i;

    if (c == NULL)
        return;
    for (i = 0; i < count; i++) {
        EVP_PKEY_free(c[i].public_key);
        sk_X509_pop_free(c[i].path, X509_free);
    }
    OPENSSL_free(c);
}

/* ------------------------------------------------------------------ CMS */

static int is_pem(const uint8_t *in, size_t n)
{
    while (n > 0 && (*in == ' ' || *in == '\t' || *in == '\r' || *in == '\n')) {
        in++;
        n--;
    }
    return n >= 11 && memcmp(in, "-----BEGIN ", 11) == 0;
}

/* The DER of a package given as PEM (labels CMS or PKCS7) or DER. */
static int package_der(const uint8_t *in, size_t n, uint8_t **der, long *len, char *err, size_t errlen)
{
    BIO *b;
    char *name = NULL, *header = NULL;
    int ok;

    if (!is_pem(in, n)) {
        *der = OPENSSL_memdup(in, n);
        *len = (long)n;
        return *der != NULL || fail(err, errlen, "out of memory");
    }
    b = BIO_new_mem_buf(in, (int)n);
    ok = b != NULL && PEM_read_bio(b, &name, &header, der, len) == 1;
    BIO_free(b);
    if (ok && strcmp(name, "CMS") != 0 && strcmp(name, "PKCS7") != 0) {
        fail(err, errlen, "PEM block \"%s\" is not a SKIP package (CMS or PKCS7 expected)", name);
        OPENSSL_free(*der);
        *der = NULL;
        ok = 0;
    } else if (!ok) {
        fail(err, errlen, "the package is not valid PEM");
    }
    OPENSSL_free(name);
    OPENSSL_free(header);
    return ok;
}

/* One SignerInfo, identified by subjectKeyIdentifier (the ephemeral certificate is issued
 * after the signature, so issuerAndSerialNumber cannot be used). */
static int take_signer_id(skip_package *p, char *err, size_t errlen)
{
    STACK_OF(CMS_SignerInfo) *sis = CMS_get0_SignerInfos(p->cms);
    ASN1_OCTET_STRING *keyid = NULL;
    X509_NAME *issuer = NULL;
    ASN1_INTEGER *serial = NULL;

    if (sk_CMS_SignerInfo_num(sis) != 1)
        return fail(err, errlen, "the package must have exactly one signer, it has %d", sk_CMS_SignerInfo_num(sis));
    if (CMS_SignerInfo_get0_signer_id(sk_CMS_SignerInfo_value(sis, 0), &keyid, &issuer, &serial) != 1
        || keyid == NULL)
        return fail(err, errlen, "the package's signer must be identified by subjectKeyIdentifier");
    p->keyid = keyid;
    return 1;
}

static int take_content(skip_package *p, char *err, size_t errlen)
{
    ASN1_OCTET_STRING **content = CMS_get0_content(p->cms);

    if (content == NULL || *content == NULL)
        return fail(err, errlen, "the package has no encapsulated content (detached signature?)");
    p->content_len = (size_t)ASN1_STRING_length(*content);
    p->content = OPENSSL_memdup(ASN1_STRING_get0_data(*content), p->content_len);
    if (p->content == NULL)
        return fail(err, errlen, "the package content is empty");
    return 1;
}

/* Every container must use the same cipher: there is one AES key per package. */
static int take_containers(skip_package *p, char *err, size_t errlen)
{
    cert_keys keys;
    size_t i;
    int ok;

    if (!cert_keys_encode(p->certs, &keys))
        return fail(err, errlen, "out of memory");
    ok = containers_parse(p->content, p->content_len, &keys, &p->keys, &p->nkeys, err, errlen);
    cert_keys_free(&keys);
    if (!ok)
        return 0;
    p->aes_bits = p->keys[0].aes_bits;
    for (i = 1; i < p->nkeys; i++)
        if (p->keys[i].aes_bits != p->aes_bits)
            return fail(err, errlen, "container %zu uses aes%d-CBC, container 1 aes%d-CBC: one package, one key",
                        i + 1, p->keys[i].aes_bits, p->aes_bits);
    return 1;
}

int skip_package_parse(const uint8_t *in, size_t n, skip_package **out, char *err, size_t errlen)
{
    skip_package *p = OPENSSL_zalloc(sizeof(*p));
    uint8_t *der = NULL;
    const unsigned char *q;
    long len = 0;
    int ok = 0;

    *out = NULL;
    if (p == NULL)
        return fail(err, errlen, "out of memory");
    if (n == 0 || n > SKIP_MAX_PACKAGE) {
        fail(err, errlen, "the package is empty or larger than %u bytes", SKIP_MAX_PACKAGE);
        goto done;
    }
    if (!package_der(in, n, &der, &len, err, errlen))
        goto done;
    q = der;
    p->cms = d2i_CMS_ContentInfo(NULL, &q, len);
    if (p->cms == NULL || q != der + len) {
        fail(err, errlen, p->cms == NULL ? "the package is not a DER CMS ContentInfo (truncated or garbage?)"
                                         : "the package has bytes after its CMS ContentInfo");
        goto done;
    }
    if (OBJ_obj2nid(CMS_get0_type(p->cms)) != NID_pkcs7_signed) {
        fail(err, errlen, "the package is CMS but not SignedData");
        goto done;
    }
    p->certs = CMS_get1_certs(p->cms);
    if (p->certs == NULL || sk_X509_num(p->certs) == 0) {
        fail(err, errlen, "the package carries no certificates");
        goto done;
    }
    ok = take_signer_id(p, err, errlen) && take_content(p, err, errlen) && take_containers(p, err, errlen);
    p->der = der;
    p->der_len = (size_t)len;
    der = NULL;
done:
    OPENSSL_free(der);
    if (ok)
        *out = p;
    else
        skip_package_free(p);
    ERR_clear_error();
    return ok;
}

void skip_package_free(skip_package *p)
{
    if (p == NULL)
        return;
    skip_containers_free(p->keys, p->nkeys);
    OPENSSL_free(p->content);
    OPENSSL_free(p->der);
    sk_X509_pop_free(p->certs, X509_free);
    CMS_ContentInfo_free(p->cms);
    OPENSSL_free(p);
}

/* ------------------------------------------------------------------ verification */

X509_STORE *skip_anchors_load(const char *path, char *err, size_t errlen)
{
    X509_STORE *store = X509_STORE_new();
    BIO *b = BIO_new_file(path, "r");
    X509 *x;
    int n = 0;

    if (b == NULL) {
        X509_STORE_free(store);
        fail(err, errlen, "cannot open the trust anchors %s", path);
        return NULL;
    }
    while (store != NULL && (x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
        n += X509_STORE_add_cert(store, x) == 1;
        X509_free(x);
    }
    BIO_free(b);
    if (n == 0) {
        X509_STORE_free(store);
        fail(err, errlen, "%s holds no PEM certificate to trust", path);
        return NULL;
    }
    ERR_clear_error(); /* the read loop ends on "no start line" */
    return store;
}

X509_STORE *skip_anchors_from_der(const uint8_t *const *der, const size_t *len, size_t n, char *err,
                                  size_t errlen)
{
    X509_STORE *store = n > 0 ? X509_STORE_new() : NULL;
    size_t i;

    if (store == NULL) {
        fail(err, errlen, n == 0 ? "no trust anchors" : "out of memory");
        return NULL;
    }
    for (i = 0; i < n; i++) {
        const unsigned char *q = der[i];
        X509 *x = len[i] > 0 ? d2i_X509(NULL, &q, (long)len[i]) : NULL;
        int ok = x != NULL && q == der[i] + len[i] && X509_STORE_add_cert(store, x) == 1;
        X509_free(x);
        if (!ok) {
            X509_STORE_free(store);
            fail(err, errlen, "trust anchor %zu is not a DER X.509 certificate", i + 1);
            return NULL;
        }
    }
    return store;
}

static void describe(X509 *x, char *buf, size_t n)
{
    if (x == NULL || X509_NAME_oneline(X509_get_subject_name(x), buf, (int)n) == NULL)
        snprintf(buf, n, "(unnamed)");
}

/* The verified chain of one certificate: the package's certificates may serve as
 * intermediates, only the anchors are trusted. */
static STACK_OF(X509) *verify_chain(X509_STORE *anchors, STACK_OF(X509) *pool, X509 *cert, char *err, size_t errlen)
{
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    STACK_OF(X509) *chain = NULL;
    char who[256], at[256];
    int e;

    if (ctx == NULL || X509_STORE_CTX_init(ctx, anchors, cert, pool) != 1) {
        fail(err, errlen, "out of memory");
    } else if (X509_verify_cert(ctx) == 1) {
        chain = X509_STORE_CTX_get1_chain(ctx);
    } else {
        e = X509_STORE_CTX_get_error(ctx);
        describe(cert, who, sizeof(who));
        describe(X509_STORE_CTX_get_current_cert(ctx), at, sizeof(at));
        fail(err, errlen, "certificate %s does not verify to the trust anchors: %s (at %s)", who,
             X509_verify_cert_error_string(e), at);
    }
    X509_STORE_CTX_free(ctx);
    return chain;
}

static X509 *find_by_keyid(STACK_OF(X509) *certs, const ASN1_OCTET_STRING *keyid)
{
    int i;

    for (i = 0; i < sk_X509_num(certs); i++) {
        const ASN1_OCTET_STRING *ski = X509_get0_subject_key_id(sk_X509_value(certs, i));
        if (ski != NULL && ASN1_OCTET_STRING_cmp(ski, keyid) == 0)
            return sk_X509_value(certs, i);
    }
    return NULL;
}

/* basicConstraints cA (X509_check_ca alone misses a cA certificate whose keyUsage lacks
 * keyCertSign), or anything else OpenSSL takes for a CA. */
static int is_ca(X509 *x)
{
    return (X509_get_extension_flags(x) & EXFLAG_CA) || X509_check_ca(x) != 0;
}

/* 1 if the certificate's extendedKeyUsage lists the SKIP package-signer purpose (and only
 * that OID counts: anyExtendedKeyUsage does not). */
static int has_signer_eku(X509 *x)
{
    EXTENDED_KEY_USAGE *eku = X509_get_ext_d2i(x, NID_ext_key_usage, NULL, NULL);
    ASN1_OBJECT *want = OBJ_txt2obj(SKIP_SIGNER_EKU_OID, 1);
    int i, found = 0;

    for (i = 0; eku != NULL && want != NULL && i < sk_ASN1_OBJECT_num(eku) && !found; i++)
        found = OBJ_cmp(sk_ASN1_OBJECT_value(eku, i), want) == 0;
    EXTENDED_KEY_USAGE_free(eku);
    ASN1_OBJECT_free(want);
    return found;
}

int skip_signer_purpose(X509 *x, char *err, size_t errlen)
{
    char who[256];
    uint32_t flags = X509_get_extension_flags(x);

    describe(x, who, sizeof(who));
    if (flags & EXFLAG_INVALID)
        return fail(err, errlen, "the signer's certificate %s has malformed extensions", who);
    if (is_ca(x))
        return fail(err, errlen, "the signer's certificate %s is a CA certificate, not a package signer", who);
    if (!(flags & EXFLAG_KUSAGE) || !(X509_get_key_usage(x) & KU_DIGITAL_SIGNATURE))
        return fail(err, errlen, "the signer's certificate %s does not allow digitalSignature (keyUsage)", who);
    if (!has_signer_eku(x))
        return fail(err, errlen, "the signer's certificate %s lacks the SKIP package-signer extended key usage %s",
                    who, SKIP_SIGNER_EKU_OID);
    return 1;
}

int skip_factory_purpose(X509 *x, char *err, size_t errlen)
{
    char who[256];

    describe(x, who, sizeof(who));
    if (X509_get_extension_flags(x) & EXFLAG_INVALID)
        return fail(err, errlen, "the factory certificate %s has malformed extensions", who);
    if (is_ca(x))
        return fail(err, errlen, "the factory certificate %s is a CA certificate", who);
    if (has_signer_eku(x))
        return fail(err, errlen, "the factory certificate %s carries the package-signer extended key usage", who);
    return 1;
}

X509 *skip_package_factory_cert(const skip_package *p, EVP_PKEY *pub)
{
    int i;
    size_t k;

    for (i = 0; i < sk_X509_num(p->certs); i++) {
        X509 *x = sk_X509_value(p->certs, i);
        EVP_PKEY *xp = X509_get0_pubkey(x);
        int container = 0;
        for (k = 0; k < p->nkeys; k++)
            container |= p->keys[k].cert == x;
        if (x != p->signer && !container && xp != NULL && EVP_PKEY_eq(xp, pub) == 1)
            return x;
    }
    return NULL;
}

/* The signature (and the content digest in the signed attributes) with the signer found by
 * key identifier; its chain was verified with all the others. */
static int verify_signature(skip_package *p, char *err, size_t errlen)
{
    STACK_OF(X509) *signer = sk_X509_new_null();
    unsigned int flags = CMS_NOINTERN | CMS_NO_SIGNER_CERT_VERIFY | CMS_BINARY;
    int ok = signer != NULL && sk_X509_push(signer, p->signer) > 0
             && CMS_verify(p->cms, signer, NULL, NULL, NULL, flags) == 1;

    sk_X509_free(signer);
    if (!ok)
        return fail(err, errlen, "the package signature does not verify with the ephemeral key's certificate");
    return 1;
}

/* A certificate's SubjectPublicKeyInfo, encoded once for comparing with every container. */
typedef struct {
    unsigned char *der;
    int len, plain; /* plain: in the form key_der.c parses from its parts */
} cert_spki;

/* Whether certificate j carries the same public key as container c. Two keys in the plain
 * form (key_der.c: named curve, uncompressed point; Ed25519) are equal exactly when their
 * encodings are, so those are compared as bytes; any other encoding is compared as keys by
 * OpenSSL (EVP_PKEY_eq), as before. The answer is the same either way; the byte comparison
 * saves an EVP_PKEY_eq per certificate and container (32 x 34 of them in a full package). */
static int same_key(X509 *x, const cert_spki *s, const skip_container *c, int container_plain)
{
    EVP_PKEY *pub;

    if (container_plain && s->plain)
        return (size_t)s->len == c->spki_len && memcmp(s->der, c->spki, c->spki_len) == 0;
    pub = X509_get0_pubkey(x);
    return pub != NULL && EVP_PKEY_eq(pub, c->public_key) == 1;
}

static cert_spki *encode_spkis(STACK_OF(X509) *certs)
{
    int j, n = sk_X509_num(certs), curve;
    cert_spki *s = OPENSSL_zalloc(sizeof(*s) * (size_t)(n > 0 ? n : 1));
    const uint8_t *key;
    size_t key_len;

    for (j = 0; s != NULL && j < n; j++) {
        s[j].len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(sk_X509_value(certs, j)), &s[j].der);
        s[j].plain = s[j].len > 0 && spki_split(s[j].der, (size_t)s[j].len, &curve, &key, &key_len);
    }
    return s;
}

static void free_spkis(cert_spki *s, int n)
{
    int j;

    for (j = 0; s != NULL && j < n; j++)
        OPENSSL_free(s[j].der);
    OPENSSL_free(s);
}

/* Each container's key must be certified by exactly the certificate that carries it. Every
 * certificate's chain was verified by skip_package_verify (chains[j] for certificate j, with
 * the same anchors and pool): the container takes its certificate's verified path from there
 * rather than running X509_verify_cert on the same input a second time. */
static int attach_certificates(skip_package *p, STACK_OF(X509) *const *chains, char *err, size_t errlen)
{
    int j, found, curve, n = sk_X509_num(p->certs), ok = 1;
    cert_spki *spkis = encode_spkis(p->certs);
    const uint8_t *key;
    size_t i, key_len;

    if (spkis == NULL)
        return fail(err, errlen, "out of memory");
    for (i = 0; i < p->nkeys && ok; i++) {
        skip_container *c = &p->keys[i];
        int plain = spki_split(c->spki, c->spki_len, &curve, &key, &key_len);
        for (j = 0, found = -1; j < n && found < 0; j++)
            if (same_key(sk_X509_value(p->certs, j), &spkis[j], c, plain))
                found = j;
        if (found < 0) {
            ok = fail(err, errlen, "container %zu: its key has no certificate in the package", i + 1);
            break;
        }
        c->cert = sk_X509_value(p->certs, found);
        if ((c->path = X509_chain_up_ref(chains[found])) == NULL)
            ok = fail(err, errlen, "out of memory");
        else if (sk_X509_num(c->path) > SKIP_MAX_PATH)
            ok = fail(err, errlen, "container %zu: its certificate path is longer than %d", i + 1, SKIP_MAX_PATH);
    }
    free_spkis(spkis, n);
    return ok;
}

static void free_chains(STACK_OF(X509) **chains, int n)
{
    int i;

    for (i = 0; chains != NULL && i < n; i++)
        sk_X509_pop_free(chains[i], X509_free);
    OPENSSL_free(chains);
}

int skip_package_verify(skip_package *p, X509_STORE *anchors, char *err, size_t errlen)
{
    int i, n = sk_X509_num(p->certs), ok = 0;
    STACK_OF(X509) **chains = n > 0 ? OPENSSL_zalloc(sizeof(*chains) * (size_t)n) : NULL;

    if (chains == NULL)
        return fail(err, errlen, n > 0 ? "out of memory" : "the package carries no certificates");
    for (i = 0; i < n; i++)
        if ((chains[i] = verify_chain(anchors, p->certs, sk_X509_value(p->certs, i), err, errlen)) == NULL)
            goto done;
    if ((p->signer = find_by_keyid(p->certs, p->keyid)) == NULL) {
        fail(err, errlen, "the signer's subjectKeyIdentifier matches no certificate in the package");
        goto done;
    }
    if (!skip_key_supported(X509_get0_pubkey(p->signer), 0)) {
        fail(err, errlen, "the ephemeral key is not EC on a SKIP curve");
        goto done;
    }
    ok = skip_signer_purpose(p->signer, err, errlen) && verify_signature(p, err, errlen)
         && attach_certificates(p, chains, err, errlen);
done:
    free_chains(chains, n);
    return ok;
}
