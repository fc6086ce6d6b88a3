/*
 * The SKIP package builder (skip_build.h), for `sks skip issue` and sks-issuer.
 */
#include "skip_build.h"
#include "../../client/sks_client.h"
#include "../../cms/skip_common.h"
#include "../../cms/skip_package.h"

#include <stdio.h>
#include <string.h>

#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/rand.h>

/* Keys the issuer makes stay with the default provider even when the sks provider is
 * loaded for an sks: CA key. */
#define DEFAULT_PROPQ "?provider=default"

typedef struct {
    const skip_build_params *p;
    EVP_PKEY *factory; /* owned by the request */
    EVP_PKEY *ephemeral;
    X509 *ephemeral_cert, *factory_cert;
    X509 *key_certs[SKIP_MAX_KEYS];
    size_t nkeys;
    uint8_t aes[32];
    sks_buf containers; /* the KeyPairContainer elements, concatenated */
} build_state;

/* ------------------------------------------------------------------ keys and containers */

static EVP_PKEY *generate(const char *group)
{
    return group != NULL ? EVP_PKEY_Q_keygen(NULL, DEFAULT_PROPQ, "EC", group)
                         : EVP_PKEY_Q_keygen(NULL, DEFAULT_PROPQ, "ED25519");
}

static void der_header(sks_buf *b, uint8_t tag, size_t len)
{
    uint8_t be[sizeof(size_t)];
    size_t n = 0;

    sks_buf_byte(b, tag);
    if (len < 0x80) {
        sks_buf_byte(b, (uint8_t)len);
        return;
    }
    for (; len > 0; len >>= 8)
        be[n++] = (uint8_t)len;
    sks_buf_byte(b, (uint8_t)(0x80 | n));
    while (n > 0)
        sks_buf_byte(b, be[--n]);
}

/* AES-CBC-PAD over the key's PKCS#8 under the package key. */
static int encrypt_pkcs8(const build_state *st, EVP_PKEY *key, const uint8_t iv[16], sks_buf *out)
{
    int aes_bits = st->p->aes_bits;
    PKCS8_PRIV_KEY_INFO *p8 = EVP_PKEY2PKCS8(key);
    EVP_CIPHER *cipher = EVP_CIPHER_fetch(NULL, aes_bits == 256 ? "AES-256-CBC" : "AES-128-CBC", DEFAULT_PROPQ);
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    unsigned char *clear = NULL;
    int len = p8 ? i2d_PKCS8_PRIV_KEY_INFO(p8, &clear) : -1, n1 = 0, n2 = 0, ok = 0;

    PKCS8_PRIV_KEY_INFO_free(p8);
    if (len > 0 && cipher != NULL && c != NULL) {
        uint8_t *ct = OPENSSL_malloc((size_t)len + 16);
        ok = ct != NULL && EVP_EncryptInit_ex2(c, cipher, st->aes, iv, NULL) == 1
             && EVP_EncryptUpdate(c, ct, &n1, clear, len) == 1 && EVP_EncryptFinal_ex(c, ct + n1, &n2) == 1;
        if (ok)
            sks_buf_put(out, ct, (size_t)(n1 + n2));
        OPENSSL_free(ct);
    }
    if (clear != NULL)
        OPENSSL_clear_free(clear, (size_t)len);
    EVP_CIPHER_CTX_free(c);
    EVP_CIPHER_free(cipher);
    return ok && !out->failed;
}

/* EncryptedPrivateKeyInfo { aesNNN-CBC with the IV, the ciphertext }. */
static int encrypted_private_key(const build_state *st, EVP_PKEY *key, sks_buf *out)
{
    int aes_bits = st->p->aes_bits;
    X509_SIG *sig = X509_SIG_new();
    X509_ALGOR *alg = NULL;
    ASN1_OCTET_STRING *data = NULL, *ivs = ASN1_OCTET_STRING_new();
    unsigned char *der = NULL;
    uint8_t iv[16];
    sks_buf ct;
    int len = -1;

    sks_buf_init(&ct);
    if (sig != NULL && ivs != NULL && RAND_bytes(iv, sizeof(iv)) == 1 && ASN1_OCTET_STRING_set(ivs, iv, 16) == 1
        && encrypt_pkcs8(st, key, iv, &ct)) {
        X509_SIG_getm(sig, &alg, &data);
        if (X509_ALGOR_set0(alg, OBJ_nid2obj(aes_bits == 256 ? NID_aes_256_cbc : NID_aes_128_cbc),
                            V_ASN1_OCTET_STRING, ivs) == 1) {
            ivs = NULL;
            if (ASN1_OCTET_STRING_set(data, ct.data, (int)ct.len) == 1)
                len = i2d_X509_SIG(sig, &der);
        }
    }
    if (len > 0)
        sks_buf_put(out, der, (size_t)len);
    OPENSSL_free(der);
    ASN1_OCTET_STRING_free(ivs);
    X509_SIG_free(sig);
    sks_buf_free(&ct);
    return len > 0 && !out->failed;
}

/* KeyPairContainer ::= SEQUENCE { public SubjectPublicKeyInfo, encryptedPrivate ... } */
static int add_container(build_state *st, EVP_PKEY *key)
{
    unsigned char *spki = NULL;
    int spki_len = i2d_PUBKEY(key, &spki);
    sks_buf epki;
    int ok;

    sks_buf_init(&epki);
    ok = spki_len > 0 && encrypted_private_key(st, key, &epki);
    if (ok) {
        der_header(&st->containers, 0x30, (size_t)spki_len + epki.len);
        sks_buf_put(&st->containers, spki, (size_t)spki_len);
        sks_buf_put(&st->containers, epki.data, epki.len);
    }
    OPENSSL_free(spki);
    sks_buf_free(&epki);
    return ok && !st->containers.failed;
}

/* ------------------------------------------------------------------ certificates */

/* The request's subject with its CN replaced by "<CN> <label>" (or "SKIP <label>"). */
static X509_NAME *derived_subject(const X509_REQ *req, const char *label)
{
    X509_NAME *name = X509_NAME_dup(X509_REQ_get_subject_name(req));
    char cn[256] = "SKIP", full[400];
    int i;

    if (name == NULL)
        return NULL;
    if ((i = X509_NAME_get_index_by_NID(name, NID_commonName, -1)) >= 0) {
        X509_NAME_get_text_by_NID(name, NID_commonName, cn, sizeof(cn));
        X509_NAME_ENTRY_free(X509_NAME_delete_entry(name, i));
    }
    snprintf(full, sizeof(full), "%s %s", cn, label);
    if (X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_UTF8, (unsigned char *)full, -1, -1, 0) != 1) {
        X509_NAME_free(name);
        return NULL;
    }
    return name;
}

/* eku: NULL, or the extendedKeyUsage value (the ephemeral key's: the package signer's). */
static X509 *issue_for(const build_state *st, EVP_PKEY *pub, const char *label, const char *eku)
{
    X509_NAME *name = derived_subject(st->p->req, label);
    X509 *x = name ? issuer_ca_issue_name_eku(st->p->ca, pub, name, st->p->days, eku) : NULL;

    X509_NAME_free(name);
    return x;
}

/* The device keys: generated, wrapped, certified, handed to the hook; the clear keys are
 * freed at once. */
static int make_keys(build_state *st, char *err, size_t errlen)
{
    const skip_build_params *p = st->p;
    size_t i;

    for (i = 0; i < p->nkeys; i++) {
        EVP_PKEY *key = generate(p->keys[i].group);
        int made = key != NULL && add_container(st, key)
                   && (st->key_certs[i] = issue_for(st, key, p->keys[i].label, NULL)) != NULL;
        int ok = made && (p->hook == NULL || p->hook(p->hook_arg, i, &p->keys[i], key, st->key_certs[i]));

        EVP_PKEY_free(key);
        if (made)
            st->nkeys++;
        if (!ok) {
            if (made)
                snprintf(err, errlen, "key %zu (%s): refused before the package was made", i + 1, p->keys[i].label);
            else
                snprintf(err, errlen, "cannot make key %zu (%s)", i + 1, p->keys[i].label);
            return 0;
        }
    }
    return 1;
}

static int make_ephemeral(build_state *st, char *err, size_t errlen)
{
    char curve[64];

    skip_curve_of(st->factory, curve, sizeof(curve));
    st->ephemeral = EVP_PKEY_Q_keygen(NULL, DEFAULT_PROPQ, "EC", curve);
    if (st->ephemeral == NULL || !skip_derive_aes_key(st->ephemeral, st->factory, st->p->aes_bits, st->aes)) {
        snprintf(err, errlen, "cannot make the ephemeral key on %s or agree the AES key", curve);
        return 0;
    }
    /* keyUsage digitalSignature (issuer_ca) and the SKIP package-signer EKU: the device only
     * opens a package whose signer carries both (docs/skip.md). */
    if ((st->ephemeral_cert = issue_for(st, st->ephemeral, "SKIP ephemeral key", "critical," SKIP_SIGNER_EKU_OID))
            == NULL
        || (st->factory_cert = issuer_ca_issue_name(st->p->ca, st->factory, X509_REQ_get_subject_name(st->p->req),
                                                    st->p->days)) == NULL) {
        snprintf(err, errlen, "the CA cannot certify the ephemeral and factory keys");
        return 0;
    }
    return 1;
}

/* ------------------------------------------------------------------ the package */

static const EVP_MD *package_digest(EVP_PKEY *key)
{
    int bits = EVP_PKEY_get_bits(key);

    return bits > 384 ? EVP_sha512() : bits > 256 ? EVP_sha384() : EVP_sha256();
}

static int add_certificates(CMS_ContentInfo *cms, const build_state *st)
{
    size_t i;
    int j, ok = CMS_add1_cert(cms, st->factory_cert) == 1 && CMS_add1_cert(cms, st->ephemeral_cert) == 1;

    for (i = 0; ok && i < st->nkeys; i++)
        ok = CMS_add1_cert(cms, st->key_certs[i]) == 1;
    ok = ok && CMS_add1_cert(cms, st->p->ca->cert) == 1;
    for (j = 0; ok && j < sk_X509_num(st->p->ca_chain); j++)
        ok = CMS_add1_cert(cms, sk_X509_value(st->p->ca_chain, j)) == 1;
    return ok;
}

/* SignedData over KeyPairContainers (eContentType id-data), one SignerInfo: the ephemeral
 * key, identified by subjectKeyIdentifier; then every certificate. */
static int sign_package(build_state *st, unsigned char **der, size_t *len, char *err, size_t errlen)
{
    unsigned int flags = CMS_BINARY | CMS_PARTIAL | CMS_USE_KEYID | CMS_NOCERTS | CMS_NOSMIMECAP;
    CMS_ContentInfo *cms = CMS_sign(NULL, NULL, NULL, NULL, flags);
    sks_buf content;
    BIO *in = NULL;
    int n = -1;

    sks_buf_init(&content);
    der_header(&content, 0x30, st->containers.len);
    sks_buf_put(&content, st->containers.data, st->containers.len);
    if (cms != NULL && !content.failed && (in = BIO_new_mem_buf(content.data, (int)content.len)) != NULL
        && CMS_add1_signer(cms, st->ephemeral_cert, st->ephemeral, package_digest(st->ephemeral), flags) != NULL
        && add_certificates(cms, st) && CMS_final(cms, in, NULL, CMS_BINARY) == 1)
        n = i2d_CMS_ContentInfo(cms, der);
    BIO_free(in);
    CMS_ContentInfo_free(cms);
    sks_buf_free(&content);
    if (n <= 0) {
        snprintf(err, errlen, "cannot make the CMS SignedData");
        return 0;
    }
    *len = (size_t)n;
    return 1;
}

static void state_free(build_state *st)
{
    size_t i;

    OPENSSL_cleanse(st->aes, sizeof(st->aes));
    EVP_PKEY_free(st->ephemeral);
    X509_free(st->ephemeral_cert);
    X509_free(st->factory_cert);
    for (i = 0; i < st->nkeys; i++)
        X509_free(st->key_certs[i]);
    sks_buf_free(&st->containers);
}

int skip_build_package(const skip_build_params *p, unsigned char **der, size_t *len, char *err, size_t errlen)
{
    build_state st;
    int ok;

    *der = NULL;
    *len = 0;
    if (p->nkeys == 0 || p->nkeys > SKIP_MAX_KEYS || (p->aes_bits != 128 && p->aes_bits != 256)) {
        snprintf(err, errlen, "a package holds 1 to %d keys under AES-128 or AES-256", SKIP_MAX_KEYS);
        return 0;
    }
    memset(&st, 0, sizeof(st));
    st.p = p;
    st.factory = X509_REQ_get0_pubkey(p->req);
    sks_buf_init(&st.containers);
    ok = st.factory != NULL && make_ephemeral(&st, err, errlen) && make_keys(&st, err, errlen)
         && sign_package(&st, der, len, err, errlen);
    state_free(&st);
    return ok;
}
