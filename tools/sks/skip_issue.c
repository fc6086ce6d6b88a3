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
#include "skip_build.h"
#include "../../cms/skip_common.h"
#include "../../cms/skip_package.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/store.h>
#include <openssl/ui.h>

#define CMD "skip issue"
#define DEFAULT_DAYS 365

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

EVP_PKEY *skip_load_sks_key(const cli_store *store, const char *cmd, const char *uri)
{
    char shown[256];
    OSSL_STORE_CTX *s;
    EVP_PKEY *key = NULL;

    if (secure_getenv("SKS_DEVICE") == NULL && secure_getenv("SKS_STORE") == NULL)
        setenv("SKS_STORE", store->db_path, 1);
    if (store->master_path[0] != '\0' && secure_getenv("SKS_MASTER_KEY") == NULL)
        setenv("SKS_MASTER_KEY", store->master_path, 1);
    if (!cli_load_providers()) {
        cli_error("%s: cannot load the sks provider for %s (install it, or set OPENSSL_MODULES to the directory"
                  " holding sks.so)", cmd, printable_key_name(uri, shown, sizeof(shown)));
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
        cli_error("%s: no private key at %s", cmd, printable_key_name(uri, shown, sizeof(shown)));
        ERR_print_errors_fp(stderr);
    }
    return key;
}

static int load_ca(issue_state *st, const cli_store *store, const issue_args *a)
{
    char err[512], shown[256];
    STACK_OF(X509) *certs;

    st->ca.key = strncmp(a->ca_key, "sks:", 4) == 0 ? skip_load_sks_key(store, CMD, a->ca_key)
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

/* ------------------------------------------------------------------ the package */

/* The package (skip_build.c), written to a new file. */
static int write_package(issue_state *st, const issue_args *a)
{
    skip_build_key keys[SKIP_MAX_KEYS];
    char labels[SKIP_MAX_KEYS][64], err[512];
    skip_build_params p;
    unsigned char *der = NULL;
    size_t i, len = 0;
    int ok;

    memset(&p, 0, sizeof(p));
    for (i = 0; i < a->key_types.count; i++) {
        snprintf(labels[i], sizeof(labels[i]), "key %zu %s", i + 1, a->types[i]->name);
        keys[i].group = a->types[i]->group;
        keys[i].label = labels[i];
        keys[i].archive = 0;
    }
    p.req = st->req;
    p.ca = &st->ca;
    p.ca_chain = st->ca_chain;
    p.keys = keys;
    p.nkeys = a->key_types.count;
    p.aes_bits = a->aes_bits;
    p.days = a->ndays;
    if (!skip_build_package(&p, &der, &len, err, sizeof(err))) {
        cli_error(CMD ": %s", err);
        ERR_print_errors_fp(stderr);
        return 0;
    }
    ok = files_write_new(a->out, der, len, err, sizeof(err));
    if (!ok)
        cli_error(CMD ": %s", err);
    else
        printf("%s: SKIP package with %zu key%s for \"%s\" (aes%d)\n", a->out, p.nkeys, p.nkeys == 1 ? "" : "s",
               X509_NAME_oneline(X509_REQ_get_subject_name(st->req), err, sizeof(err)), a->aes_bits);
    OPENSSL_free(der);
    return ok;
}

static void state_free(issue_state *st)
{
    X509_REQ_free(st->req);
    issuer_ca_free(&st->ca);
    sk_X509_pop_free(st->ca_chain, X509_free);
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
    ok = load_request(&st, a.request) && load_ca(&st, store, &a) && write_package(&st, &a);
    state_free(&st);
    return ok ? CLI_EXIT_OK : CLI_EXIT_FAIL;
}
