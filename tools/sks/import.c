/*
 * sks import: an existing private key and its certificate (PEM files or PKCS#12) moved into
 * the store through a provisioning session: createKeyEntry of the key's algorithm,
 * setCertificatePath [certificate, chain...], importPrivateKey (encrypted under the session
 * key), close.
 */
#include "cli.h"
#include "files.h"

#include <stdio.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>

#define ALG(x) "https://webpki.github.io/sks/algorithm#" x

static const char USAGE[] =
    "usage: sks import --name N (--key PEM --cert PEM [--chain PEM] | --pkcs12 FILE) [options]\n"
    "  Moves a private key and its certificate into the store.\n\n"
    "  --key PEM             the private key (PEM; PKCS#8 or traditional)\n"
    "  --cert PEM            its certificate (further certificates in the file join the chain)\n"
    "  --chain PEM           the issuing certificates, nearest first\n"
    "  --pkcs12 FILE         key, certificate and chain from a PKCS#12 file instead\n"
    "  --passin-file FILE    password of the PKCS#12 file or of an encrypted --key: the first\n"
    "                        line of FILE (\"-\": standard input); asked on the terminal when\n"
    "                        needed and not given (--passin PASS shows it to ps)\n";

typedef struct {
    cli_key_opts k;
    const char *key_path, *cert_path, *chain_path, *p12_path, *passin;
    EVP_PKEY *key;
    STACK_OF(X509) *path; /* end-entity first */
    char uri[96];
    char alg_name[64];
    uint8_t exponent[8]; /* RSA keyParameters when the exponent is not 65537 */
    issuer_key_spec spec;
} import_args;

/* ------------------------------------------------------------------ the key's algorithm */

static int rsa_algorithm(import_args *a)
{
    BIGNUM *e = NULL;
    int bits = EVP_PKEY_get_bits(a->key), n, ok = 0;

    snprintf(a->alg_name, sizeof(a->alg_name), "RSA-%d", bits);
    if (bits != 1024 && bits != 2048 && bits != 3072 && bits != 4096) {
        cli_error("import: %s keys are not supported (RSA-1024, RSA-2048, RSA-3072 or RSA-4096)", a->alg_name);
        return 0;
    }
    if (EVP_PKEY_get_bn_param(a->key, OSSL_PKEY_PARAM_RSA_E, &e) != 1 || (n = BN_num_bytes(e)) < 1 || n > 8) {
        cli_error("import: the RSA public exponent is unreadable or longer than 8 bytes");
        goto done;
    }
    if (BN_is_word(e, 65537)) {
        snprintf(a->uri, sizeof(a->uri), ALG("rsa%d"), bits);
    } else {
        /* Other exponents travel in keyParameters of the rsaNNNN.exp algorithms. */
        snprintf(a->uri, sizeof(a->uri), ALG("rsa%d.exp"), bits);
        BN_bn2bin(e, a->exponent);
        a->spec.key_parameters.p = a->exponent;
        a->spec.key_parameters.n = (size_t)n;
    }
    ok = 1;
done:
    BN_free(e);
    return ok;
}

static int ec_algorithm(import_args *a)
{
    static const struct {
        const char *group, *uri;
    } CURVES[] = {
        { "prime256v1", ALG("ec.nist.p256") },
        { "secp384r1", ALG("ec.nist.p384") },
        { "secp521r1", ALG("ec.nist.p521") },
        { "brainpoolP256r1", ALG("ec.brainpool.p256r1") },
        { "brainpoolP320r1", ALG("ec.brainpool.p320r1") },
        { "brainpoolP384r1", ALG("ec.brainpool.p384r1") },
        { "brainpoolP512r1", ALG("ec.brainpool.p512r1") },
    };
    char group[64] = "";
    size_t len = 0, i;

    EVP_PKEY_get_utf8_string_param(a->key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), &len);
    for (i = 0; i < sizeof(CURVES) / sizeof(CURVES[0]); i++)
        if (strcmp(group, CURVES[i].group) == 0) {
            snprintf(a->uri, sizeof(a->uri), "%s", CURVES[i].uri);
            return 1;
        }
    cli_error("import: EC keys on curve '%s' are not supported (P-256, P-384, P-521, brainpoolP256r1, "
              "brainpoolP320r1, brainpoolP384r1, brainpoolP512r1)",
              group[0] ? group : "explicit parameters");
    return 0;
}

/* The createKeyEntry keyAlgorithm that makes a key of the same kind as the one imported. */
static int key_algorithm(import_args *a)
{
    cli_algorithm_name(a->key, a->alg_name, sizeof(a->alg_name));
    switch (EVP_PKEY_get_base_id(a->key)) {
    case EVP_PKEY_RSA:
        return rsa_algorithm(a);
    case EVP_PKEY_EC:
        return ec_algorithm(a);
    case EVP_PKEY_ED25519:
        snprintf(a->uri, sizeof(a->uri), ALG("ed25519"));
        return 1;
    default:
        cli_error("import: %s keys are not supported (RSA, EC or Ed25519)", a->alg_name);
        return 0;
    }
}

/* ------------------------------------------------------------------ input files */

static int append_certs(import_args *a, STACK_OF(X509) *more)
{
    X509 *x;

    while ((x = sk_X509_shift(more)) != NULL)
        if (!sk_X509_push(a->path, x)) {
            X509_free(x);
            return 0;
        }
    return 1;
}

static int load_pem(import_args *a, char *err, size_t errlen)
{
    STACK_OF(X509) *chain = NULL;
    int ok;

    if ((a->key = files_read_key(a->key_path, a->passin, err, errlen)) == NULL
        || (a->path = files_read_certs(a->cert_path, err, errlen)) == NULL)
        return 0;
    if (a->chain_path != NULL && (chain = files_read_certs(a->chain_path, err, errlen)) == NULL)
        return 0;
    ok = chain == NULL || append_certs(a, chain);
    sk_X509_pop_free(chain, X509_free);
    return ok || (snprintf(err, errlen, "out of memory"), 0);
}

static int load_pkcs12(import_args *a, char *err, size_t errlen)
{
    STACK_OF(X509) *chain = NULL, *extra = NULL;
    X509 *cert = NULL;
    int ok;

    if (!files_read_pkcs12(a->p12_path, a->passin, &a->key, &cert, &chain, err, errlen))
        return 0;
    if (a->chain_path != NULL && (extra = files_read_certs(a->chain_path, err, errlen)) == NULL) {
        X509_free(cert);
        sk_X509_pop_free(chain, X509_free);
        return 0;
    }
    ok = (a->path = sk_X509_new_null()) != NULL && sk_X509_push(a->path, cert);
    if (!ok)
        X509_free(cert);
    ok = ok && (chain == NULL || append_certs(a, chain)) && (extra == NULL || append_certs(a, extra));
    sk_X509_pop_free(chain, X509_free);
    sk_X509_pop_free(extra, X509_free);
    return ok || (snprintf(err, errlen, "out of memory"), 0);
}

static int load_inputs(import_args *a)
{
    char err[1024] = "";
    int pem = a->key_path != NULL || a->cert_path != NULL;

    if (pem == (a->p12_path != NULL) || (pem && (a->key_path == NULL || a->cert_path == NULL))) {
        cli_error("import: give either --key and --cert (PEM) or --pkcs12 (see sks import --help)");
        return 0;
    }
    if (!(pem ? load_pem(a, err, sizeof(err)) : load_pkcs12(a, err, sizeof(err)))) {
        cli_error("import: %s", err);
        return 0;
    }
    if (sk_X509_num(a->path) > ISSUER_MAX_PATH) {
        cli_error("import: the certificate path has %d certificates; at most %d are supported", sk_X509_num(a->path),
                  ISSUER_MAX_PATH);
        return 0;
    }
    /* Checked before any session starts: the device would only notice at close. */
    if (X509_check_private_key(sk_X509_value(a->path, 0), a->key) != 1) {
        ERR_clear_error();
        cli_error("import: the private key in %s does not match the certificate in %s", pem ? a->key_path : a->p12_path,
                  pem ? a->cert_path : a->p12_path);
        return 0;
    }
    return 1;
}

/* ------------------------------------------------------------------ the session */

static int run(sks_transport *t, import_args *a)
{
    issuer_session s;
    issuer_key key;
    X509 *certs[ISSUER_MAX_PATH];
    int i, n = sk_X509_num(a->path), ok = 0;

    memset(&key, 0, sizeof(key));
    if (!cli_check_new_name(t, "import", a->k.name) || !cli_device_supports(t, "import", a->uri, a->alg_name)
        || cli_certificate_taken(t, "import", sk_X509_value(a->path, 0)))
        return CLI_EXIT_FAIL;
    for (i = 0; i < n; i++)
        certs[i] = sk_X509_value(a->path, i);
    /* The device generates a throw-away key of the same kind; importPrivateKey replaces it. */
    ok = issuer_open(&s, t, NULL) && issuer_create_key(&s, &a->spec, &key)
         && issuer_set_certificates(&s, &key, certs, (size_t)n) && issuer_import_private_key(&s, &key, a->key)
         && issuer_close(&s);
    if (ok)
        cli_print_new_key(key.handle, a->k.name, certs[0]);
    else
        cli_error("import: %s", s.error);
    issuer_end(&s);
    issuer_key_free(&key);
    return ok ? CLI_EXIT_OK : CLI_EXIT_FAIL;
}

static int check_args(import_args *a)
{
    if (a->k.name == NULL || *a->k.name == '\0') {
        cli_error("import: --name is required (the key's friendly name)");
        return CLI_EXIT_USAGE;
    }
    if (!cli_key_spec("import", &a->k, &a->spec))
        return CLI_EXIT_USAGE;
    if (!load_inputs(a) || !key_algorithm(a))
        return CLI_EXIT_FAIL;
    a->spec.key_algorithm = a->uri;
    return CLI_EXIT_OK;
}

int cmd_import(cli_store *store, int argc, char **argv)
{
    import_args a;
    const cli_opt opts[] = {
        CLI_KEY_OPTS(a.k),
        { "--key", OPT_VALUE, &a.key_path },
        { "--cert", OPT_VALUE, &a.cert_path },
        { "--chain", OPT_VALUE, &a.chain_path },
        { "--pkcs12", OPT_VALUE, &a.p12_path },
        { "--passin", OPT_SECRET, &a.passin },
    };
    sks_transport *t = NULL;
    int rc;

    memset(&a, 0, sizeof(a));
    switch (cli_parse("import", argc, argv, 1, opts, sizeof(opts) / sizeof(opts[0]))) {
    case CLI_PARSE_HELP:
        printf("%s%s", USAGE, CLI_KEY_OPTS_HELP);
        return CLI_EXIT_OK;
    case CLI_PARSE_ERROR:
        return CLI_EXIT_USAGE;
    default:
        break;
    }
    rc = check_args(&a);
    if (rc == CLI_EXIT_OK)
        rc = (t = cli_open(store, "import")) != NULL ? run(t, &a) : CLI_EXIT_FAIL;
    if (t != NULL)
        t->close(t);
    EVP_PKEY_free(a.key);
    sk_X509_pop_free(a.path, X509_free);
    return rc;
}
