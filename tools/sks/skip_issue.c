/*
 * sks skip issue: the issuer's side of SKIP (docs/skip.md), for factories and tests.
 *
 * From a PKCS#10 request (the factory key) it makes, in this order: an ephemeral key on the
 * factory key's curve; the AES key (skip_derive_aes_key, the same rule the device applies);
 * the device keys, each as a KeyPairContainer with its PKCS#8 encrypted under AES-CBC-PAD;
 * certificates for the factory key, the ephemeral key and the device keys from the CA; and
 * the CMS SignedData over KeyPairContainers, signed with the ephemeral key and identified by
 * its subjectKeyIdentifier. The CA key may live in an sks store (an sks: URI), loaded
 * through the sks provider. Clear keys and the AES key are wiped before the tool exits.
 */
#include "skip.h"
#include "files.h"
#include "../../cms/skip_common.h"
#include "../../cms/skip_package.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/provider.h>
#include <openssl/rand.h>
#include <openssl/store.h>
#include <openssl/ui.h>

#define CMD "skip issue"
#define DEFAULT_DAYS 365
/* Keys the issuer makes stay with the default provider even when the sks provider is
 * loaded for an sks: CA key. */
#define DEFAULT_PROPQ "?provider=default"

typedef struct {
    const char *request, *ca_key, *ca_cert, *ca_pass, *aes, *days, *out;
    cli_list key_types;
    const skip_key_type *types[CLI_LIST_MAX];
    int aes_bits, ndays;
} issue_args;

typedef struct {
    X509_REQ *req;
    EVP_PKEY *factory; /* owned by req */
    issuer_ca ca;
    STACK_OF(X509) *ca_chain; /* certificates after the CA's own in --ca-cert */
    EVP_PKEY *ephemeral;
    X509 *ephemeral_cert, *factory_cert;
    X509 *key_certs[CLI_LIST_MAX];
    size_t nkeys;
    uint8_t aes[32];
    sks_buf containers; /* the KeyPairContainer elements, concatenated */
} issue_state;

static const char USAGE[] =
    "usage: sks skip issue --request REQ --ca-key KEY --ca-cert CERT --key-type T [--key-type T]...\n"
    "                      [--aes 128|256] [--days N] [--ca-pass-file FILE] --out PACKAGE\n"
    "  Answers a SKIP request (PKCS#10, PEM or DER) with a package of new keys (DER CMS).\n"
    "  --key-type T   P-256, P-384, P-521, brainpoolP256r1, brainpoolP320r1, brainpoolP384r1,\n"
    "                 brainpoolP512r1 or Ed25519; once per key\n"
    "  --ca-key KEY   the CA's private key: a PEM file, or an sks: URI (through the sks provider;\n"
    "                 the store is --store unless SKS_DEVICE/SKS_STORE say otherwise)\n"
    "  --ca-cert CERT the CA certificate (PEM), followed by the rest of its chain if any\n"
    "  --aes 128|256  the AES key size (default 256)\n"
    "  --days N       validity of the certificates (default 365)\n"
    "  --ca-pass-file FILE  pass phrase of an encrypted --ca-key PEM: first line of FILE (\"-\":\n"
    "                 standard input); asked on a terminal if needed (--ca-pass PASS shows it to ps)\n";

/* ------------------------------------------------------------------ inputs */

static int check_args(issue_args *a)
{
    unsigned long v;
    size_t i;

    if (a->request == NULL || a->ca_key == NULL || a->ca_cert == NULL || a->out == NULL || a->key_types.count == 0) {
        cli_error(CMD ": --request, --ca-key, --ca-cert, --key-type and --out are required (see sks skip --help)");
        return 0;
    }
    if (a->key_types.count > SKIP_MAX_KEYS) {
        cli_error(CMD ": at most %d keys per package", SKIP_MAX_KEYS);
        return 0;
    }
    for (i = 0; i < a->key_types.count; i++)
        if ((a->types[i] = skip_find_key_type(CMD, "--key-type", a->key_types.items[i], 0)) == NULL)
            return 0;
    a->aes_bits = 256;
    if (a->aes != NULL) {
        if (strcmp(a->aes, "128") != 0 && strcmp(a->aes, "256") != 0) {
            cli_error(CMD ": --aes must be 128 or 256, got '%s'", a->aes);
            return 0;
        }
        a->aes_bits = atoi(a->aes);
    }
    a->ndays = DEFAULT_DAYS;
    if (a->days != NULL) {
        if (!cli_parse_number(CMD, "--days", a->days, 1, 36500, &v))
            return 0;
        a->ndays = (int)v;
    }
    return 1;
}

/* The request, PEM or DER, with a valid self-signature by a key on a SKIP curve. */
static int load_request(issue_state *st, const char *path)
{
    char err[512];
    sks_buf data;
    BIO *b;
    const unsigned char *q;

    sks_buf_init(&data);
    if (!skip_read_file(path, &data, err, sizeof(err))) {
        cli_error(CMD ": %s", err);
        sks_buf_free(&data);
        return 0;
    }
    b = BIO_new_mem_buf(data.data, (int)data.len);
    st->req = b ? PEM_read_bio_X509_REQ(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    if (st->req == NULL && (q = data.data) != NULL)
        st->req = d2i_X509_REQ(NULL, &q, (long)data.len);
    sks_buf_free(&data);
    ERR_clear_error();
    if (st->req == NULL || (st->factory = X509_REQ_get0_pubkey(st->req)) == NULL) {
        cli_error(CMD ": %s is not a PKCS#10 request (PEM or DER)", path);
        return 0;
    }
    if (X509_REQ_verify(st->req, st->factory) != 1) {
        cli_error(CMD ": the signature of the request in %s does not verify with its own key", path);
        return 0;
    }
    if (!skip_key_supported(st->factory, 0)) {
        cli_error(CMD ": the request's key is not EC on a SKIP curve");
        return 0;
    }
    return 1;
}

/* An sks: URI through the sks provider, in the store this tool was pointed at. */
/* The URI as messages may show it: its query can hold a PIN (pin-value=), so it is cut off. */
static const char *printable_key_name(const char *uri, char *buf, size_t n)
{
    size_t len = strcspn(uri, "?");

    snprintf(buf, n, "%.*s%s", (int)len, uri, uri[len] != '\0' ? "?..." : "");
    return buf;
}

static EVP_PKEY *load_sks_key(const cli_store *store, const char *uri)
{
    char shown[256];
    OSSL_STORE_CTX *s;
    EVP_PKEY *key = NULL;

    if (secure_getenv("SKS_DEVICE") == NULL && secure_getenv("SKS_STORE") == NULL)
        setenv("SKS_STORE", store->db_path, 1);
    if (store->master_path[0] != '\0' && secure_getenv("SKS_MASTER_KEY") == NULL)
        setenv("SKS_MASTER_KEY", store->master_path, 1);
    if (OSSL_PROVIDER_load(NULL, "default") == NULL || OSSL_PROVIDER_load(NULL, "sks") == NULL) {
        cli_error(CMD ": cannot load the sks provider for %s (install it, or set OPENSSL_MODULES to the directory"
                  " holding sks.so)", printable_key_name(uri, shown, sizeof(shown)));
        return NULL;
    }
    /* A PIN the URI does not give is asked on the terminal (OpenSSL's console UI). */
    if ((s = OSSL_STORE_open(uri, UI_OpenSSL(), NULL, NULL, NULL)) != NULL
        && OSSL_STORE_expect(s, OSSL_STORE_INFO_PKEY) == 1)
        while (key == NULL && !OSSL_STORE_eof(s)) {
            OSSL_STORE_INFO *info = OSSL_STORE_load(s);
            if (info != NULL && OSSL_STORE_INFO_get_type(info) == OSSL_STORE_INFO_PKEY)
                key = OSSL_STORE_INFO_get1_PKEY(info);
            OSSL_STORE_INFO_free(info);
            if (info == NULL)
                break;
        }
    OSSL_STORE_close(s);
    if (key == NULL) {
        cli_error(CMD ": no private key at %s", printable_key_name(uri, shown, sizeof(shown)));
        ERR_print_errors_fp(stderr);
    }
    return key;
}

static int load_ca(issue_state *st, const cli_store *store, const issue_args *a)
{
    char err[512], shown[256];
    STACK_OF(X509) *certs;

    st->ca.key = strncmp(a->ca_key, "sks:", 4) == 0 ? load_sks_key(store, a->ca_key)
                                                     : files_read_key(a->ca_key, a->ca_pass, err, sizeof(err));
    if (st->ca.key == NULL) {
        if (strncmp(a->ca_key, "sks:", 4) != 0)
            cli_error(CMD ": --ca-key: %s", err);
        return 0;
    }
    if ((certs = files_read_certs(a->ca_cert, err, sizeof(err))) == NULL) {
        cli_error(CMD ": --ca-cert: %s", err);
        return 0;
    }
    st->ca.cert = sk_X509_shift(certs);
    st->ca_chain = certs;
    if (EVP_PKEY_eq(X509_get0_pubkey(st->ca.cert), st->ca.key) != 1 || X509_check_ca(st->ca.cert) < 1) {
        cli_error(CMD ": %s is not a CA certificate for the key %s", a->ca_cert,
                  printable_key_name(a->ca_key, shown, sizeof(shown)));
        ERR_clear_error();
        return 0;
    }
    return 1;
}

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
static int encrypt_pkcs8(const issue_state *st, int aes_bits, EVP_PKEY *key, const uint8_t iv[16], sks_buf *out)
{
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
static int encrypted_private_key(const issue_state *st, int aes_bits, EVP_PKEY *key, sks_buf *out)
{
    X509_SIG *sig = X509_SIG_new();
    X509_ALGOR *alg = NULL;
    ASN1_OCTET_STRING *data = NULL, *ivs = ASN1_OCTET_STRING_new();
    unsigned char *der = NULL;
    uint8_t iv[16];
    sks_buf ct;
    int len = -1;

    sks_buf_init(&ct);
    if (sig != NULL && ivs != NULL && RAND_bytes(iv, sizeof(iv)) == 1 && ASN1_OCTET_STRING_set(ivs, iv, 16) == 1
        && encrypt_pkcs8(st, aes_bits, key, iv, &ct)) {
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
static int add_container(issue_state *st, int aes_bits, EVP_PKEY *key)
{
    unsigned char *spki = NULL;
    int spki_len = i2d_PUBKEY(key, &spki);
    sks_buf epki;
    int ok;

    sks_buf_init(&epki);
    ok = spki_len > 0 && encrypted_private_key(st, aes_bits, key, &epki);
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
static X509 *issue_for(const issue_state *st, EVP_PKEY *pub, const char *label, int days, const char *eku)
{
    X509_NAME *name = derived_subject(st->req, label);
    X509 *x = name ? issuer_ca_issue_name_eku(&st->ca, pub, name, days, eku) : NULL;

    X509_NAME_free(name);
    return x;
}

/* The device keys: generated, wrapped, certified; the clear keys are freed at once. */
static int make_keys(issue_state *st, const issue_args *a)
{
    size_t i;

    for (i = 0; i < a->key_types.count; i++) {
        EVP_PKEY *key = generate(a->types[i]->group);
        char label[64];
        int ok;

        snprintf(label, sizeof(label), "key %zu %s", i + 1, a->types[i]->name);
        ok = key != NULL && add_container(st, a->aes_bits, key)
             && (st->key_certs[i] = issue_for(st, key, label, a->ndays, NULL)) != NULL;
        EVP_PKEY_free(key);
        if (!ok) {
            cli_error(CMD ": cannot make key %zu (%s)", i + 1, a->types[i]->name);
            return 0;
        }
        st->nkeys++;
    }
    return 1;
}

static int make_ephemeral(issue_state *st, const issue_args *a)
{
    char curve[64];

    skip_curve_of(st->factory, curve, sizeof(curve));
    st->ephemeral = EVP_PKEY_Q_keygen(NULL, DEFAULT_PROPQ, "EC", curve);
    if (st->ephemeral == NULL || !skip_derive_aes_key(st->ephemeral, st->factory, a->aes_bits, st->aes)) {
        cli_error(CMD ": cannot make the ephemeral key on %s or agree the AES key", curve);
        return 0;
    }
    /* keyUsage digitalSignature (issuer_ca) and the SKIP package-signer EKU: the device only
     * opens a package whose signer carries both (docs/skip.md). */
    if ((st->ephemeral_cert = issue_for(st, st->ephemeral, "SKIP ephemeral key", a->ndays,
                                        "critical," SKIP_SIGNER_EKU_OID)) == NULL
        || (st->factory_cert = issuer_ca_issue_name(&st->ca, st->factory, X509_REQ_get_subject_name(st->req),
                                                    a->ndays)) == NULL) {
        cli_error(CMD ": the CA cannot certify the ephemeral and factory keys");
        ERR_print_errors_fp(stderr);
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

static int add_certificates(CMS_ContentInfo *cms, const issue_state *st)
{
    size_t i;
    int j, ok = CMS_add1_cert(cms, st->factory_cert) == 1 && CMS_add1_cert(cms, st->ephemeral_cert) == 1;

    for (i = 0; ok && i < st->nkeys; i++)
        ok = CMS_add1_cert(cms, st->key_certs[i]) == 1;
    ok = ok && CMS_add1_cert(cms, st->ca.cert) == 1;
    for (j = 0; ok && j < sk_X509_num(st->ca_chain); j++)
        ok = CMS_add1_cert(cms, sk_X509_value(st->ca_chain, j)) == 1;
    return ok;
}

/* SignedData over KeyPairContainers (eContentType id-data), one SignerInfo: the ephemeral
 * key, identified by subjectKeyIdentifier; then every certificate. */
static int write_package(issue_state *st, int aes_bits, const char *out)
{
    unsigned int flags = CMS_BINARY | CMS_PARTIAL | CMS_USE_KEYID | CMS_NOCERTS | CMS_NOSMIMECAP;
    CMS_ContentInfo *cms = CMS_sign(NULL, NULL, NULL, NULL, flags);
    sks_buf content;
    BIO *in = NULL;
    unsigned char *der = NULL;
    char err[512];
    int len = -1, ok;

    sks_buf_init(&content);
    der_header(&content, 0x30, st->containers.len);
    sks_buf_put(&content, st->containers.data, st->containers.len);
    if (cms != NULL && !content.failed && (in = BIO_new_mem_buf(content.data, (int)content.len)) != NULL
        && CMS_add1_signer(cms, st->ephemeral_cert, st->ephemeral, package_digest(st->ephemeral), flags) != NULL
        && add_certificates(cms, st) && CMS_final(cms, in, NULL, CMS_BINARY) == 1)
        len = i2d_CMS_ContentInfo(cms, &der);
    BIO_free(in);
    CMS_ContentInfo_free(cms);
    sks_buf_free(&content);
    if (len <= 0) {
        cli_error(CMD ": cannot make the CMS SignedData");
        ERR_print_errors_fp(stderr);
        return 0;
    }
    ok = files_write_new(out, der, (size_t)len, err, sizeof(err));
    if (!ok)
        cli_error(CMD ": %s", err);
    else
        printf("%s: SKIP package with %zu key%s for \"%s\" (aes%d)\n", out, st->nkeys, st->nkeys == 1 ? "" : "s",
               X509_NAME_oneline(X509_REQ_get_subject_name(st->req), err, sizeof(err)), aes_bits);
    OPENSSL_free(der);
    return ok;
}

static void state_free(issue_state *st)
{
    size_t i;

    OPENSSL_cleanse(st->aes, sizeof(st->aes));
    X509_REQ_free(st->req);
    issuer_ca_free(&st->ca);
    sk_X509_pop_free(st->ca_chain, X509_free);
    EVP_PKEY_free(st->ephemeral);
    X509_free(st->ephemeral_cert);
    X509_free(st->factory_cert);
    for (i = 0; i < st->nkeys; i++)
        X509_free(st->key_certs[i]);
    sks_buf_free(&st->containers);
}

int skip_cmd_issue(cli_store *store, int argc, char **argv)
{
    int rc;
    issue_args a;
    issue_state st;
    const cli_opt opts[] = {
        { "--request", OPT_VALUE, &a.request }, { "--ca-key", OPT_VALUE, &a.ca_key },
        { "--ca-cert", OPT_VALUE, &a.ca_cert }, { "--ca-pass", OPT_SECRET, &a.ca_pass },
        { "--key-type", OPT_LIST, &a.key_types }, { "--aes", OPT_VALUE, &a.aes },
        { "--days", OPT_VALUE, &a.days },        { "--out", OPT_VALUE, &a.out },
    };
    int ok;

    memset(&a, 0, sizeof(a));
    memset(&st, 0, sizeof(st));
    if ((rc = cli_parse_command(CMD, argc, argv, 2, opts, sizeof(opts) / sizeof(opts[0]), USAGE)) != CLI_CONTINUE)
        return rc;
    if (!check_args(&a))
        return CLI_EXIT_USAGE;
    sks_buf_init(&st.containers);
    ok = load_request(&st, a.request) && load_ca(&st, store, &a) && make_ephemeral(&st, &a) && make_keys(&st, &a)
         && write_package(&st, a.aes_bits, a.out);
    state_free(&st);
    return ok ? CLI_EXIT_OK : CLI_EXIT_FAIL;
}
