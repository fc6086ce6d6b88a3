/*
 * sks generate: a key pair made inside the device, in a provisioning session run by the
 * tool's emulated issuer, certified by the issuer's local CA.
 */
#include "cli.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#define ALG(x) "https://webpki.github.io/sks/algorithm#" x
#define DEFAULT_DAYS 365

static const struct {
    const char *name;
    const char *alias; /* OpenSSL's curve name, accepted too */
    const char *uri;
} ALGORITHMS[] = {
    { "P-256", "prime256v1", ALG("ec.nist.p256") },
    { "P-384", "secp384r1", ALG("ec.nist.p384") },
    { "P-521", "secp521r1", ALG("ec.nist.p521") },
    { "brainpoolP256r1", NULL, ALG("ec.brainpool.p256r1") },
    { "brainpoolP320r1", NULL, ALG("ec.brainpool.p320r1") },
    { "brainpoolP384r1", NULL, ALG("ec.brainpool.p384r1") },
    { "brainpoolP512r1", NULL, ALG("ec.brainpool.p512r1") },
    { "RSA-2048", NULL, ALG("rsa2048") },
    { "RSA-3072", NULL, ALG("rsa3072") },
    { "RSA-4096", NULL, ALG("rsa4096") },
    { "Ed25519", NULL, ALG("ed25519") },
};

static const char USAGE[] =
    "usage: sks generate --name N --algorithm ALG [options]\n"
    "  Creates a key pair inside the store and certifies it with the local issuer CA.\n\n"
    "  --algorithm ALG       P-256, P-384, P-521, brainpoolP256r1, brainpoolP320r1,\n"
    "                        brainpoolP384r1, brainpoolP512r1, RSA-2048, RSA-3072, RSA-4096, Ed25519\n"
    "  --subject DN          certificate subject, \"CN=a, O=b\" or \"/O=b/CN=a\" (default CN=<name>)\n"
    "  --days N              certificate validity (default 365)\n"
    "  --ca-key PEM --ca-cert PEM  issue with this CA (default: <store>.issuer-ca.pem, made on\n"
    "                        first use)\n"
    "  --ca-pass-file FILE   pass phrase of an encrypted --ca-key: first line of FILE (\"-\":\n"
    "                        standard input); asked on a terminal if needed (--ca-pass PASS\n"
    "                        shows it to ps)\n"
    "  On a SmartCard-HSM (--device pcsc:[READER]) the card makes the key, labelled N, and only\n"
    "  --name, --algorithm (not Ed25519), --subject, --days and --pin/--pin-file (the card's user\n"
    "  PIN) apply: with --subject the card signs a self-signed certificate for the key.\n";

typedef struct {
    cli_key_opts k;
    const char *algorithm;
    const char *uri;
    char subject[1024];
    int days;
    issuer_key_spec spec;
} gen_args;

static const char *algorithm_uri(const char *name)
{
    size_t i;

    for (i = 0; i < sizeof(ALGORITHMS) / sizeof(ALGORITHMS[0]); i++)
        if (strcasecmp(name, ALGORITHMS[i].name) == 0
            || (ALGORITHMS[i].alias != NULL && strcasecmp(name, ALGORITHMS[i].alias) == 0))
            return ALGORITHMS[i].uri;
    return NULL;
}

/* "CN=<name>" with the characters a comma-form DN treats specially escaped. */
static int default_subject(const char *name, char *out, size_t n)
{
    size_t o = 0;

    o += (size_t)snprintf(out, n, "CN=");
    for (; *name && o + 2 < n; name++) {
        if (*name == ',' || *name == '\\')
            out[o++] = '\\';
        out[o++] = *name;
    }
    out[o] = '\0';
    return *name == '\0';
}

static int check_args(gen_args *g)
{
    unsigned long days = DEFAULT_DAYS;
    char err[512];
    X509_NAME *dn;

    if (g->algorithm == NULL) {
        cli_error("generate: --algorithm is required (see sks generate --help)");
        return 0;
    }
    if ((g->uri = algorithm_uri(g->algorithm)) == NULL) {
        cli_error("generate: unknown algorithm '%s' (choose P-256, P-384, P-521, brainpoolP256r1, brainpoolP320r1, "
                  "brainpoolP384r1, brainpoolP512r1, RSA-2048, RSA-3072, RSA-4096 or Ed25519)",
                  g->algorithm);
        return 0;
    }
    if ((g->k.ca_key == NULL) != (g->k.ca_cert == NULL)) {
        cli_error("generate: give both --ca-key and --ca-cert, or neither");
        return 0;
    }
    if (g->k.days != NULL && !cli_parse_number("generate", "--days", g->k.days, 1, 36500, &days))
        return 0;
    g->days = (int)days;
    if (g->k.name == NULL || *g->k.name == '\0') {
        cli_error("generate: --name is required (the key's friendly name)");
        return 0;
    }
    if (g->k.subject != NULL)
        snprintf(g->subject, sizeof(g->subject), "%s", g->k.subject);
    else if (!default_subject(g->k.name, g->subject, sizeof(g->subject))) {
        cli_error("generate: --name is too long for a subject; give --subject");
        return 0;
    }
    if ((dn = issuer_parse_dn(g->subject, err, sizeof(err))) == NULL) {
        cli_error("generate: --subject: %s", err);
        return 0;
    }
    X509_NAME_free(dn);
    if (!cli_key_spec("generate", &g->k, &g->spec))
        return 0;
    g->spec.key_algorithm = g->uri;
    return 1;
}

/* createKeyEntry, then certify the returned public key and install [EE, CA]. */
static X509 *provision(issuer_session *s, const gen_args *g, const issuer_ca *ca, issuer_key *key)
{
    char err[512];
    const unsigned char *q;
    EVP_PKEY *pub;
    X509 *ee = NULL;

    if (!issuer_create_key(s, &g->spec, key))
        return NULL;
    q = key->public_key.data;
    pub = d2i_PUBKEY(NULL, &q, (long)key->public_key.len);
    if (pub == NULL) {
        snprintf(s->error, sizeof(s->error), "createKeyEntry: the device returned an unreadable public key");
        return NULL;
    }
    ee = issuer_ca_issue(ca, pub, g->subject, g->days, err, sizeof(err));
    EVP_PKEY_free(pub);
    if (ee == NULL) {
        snprintf(s->error, sizeof(s->error), "%s", err);
        return NULL;
    }
    {
        X509 *path[2] = { ee, ca->cert };
        if (!issuer_set_certificates(s, key, path, 2) || !issuer_close(s)) {
            X509_free(ee);
            return NULL;
        }
    }
    return ee;
}

/* On a SmartCard-HSM the card makes the key and, given --subject, certifies it itself: the
 * store's key options and issuer CA do not apply. */
static int run_on_card(sks_transport *t, gen_args *g)
{
    unsigned long days = DEFAULT_DAYS;
    const char *extra = g->k.puk ? "--puk" : g->k.pin_retries ? "--pin-retries" : g->k.puk_retries ? "--puk-retries"
                        : g->k.app_usage ? "--app-usage" : g->k.delete_protection ? "--delete-protection"
                        : g->k.exportable ? "--exportable" : g->k.endorse.count ? "--endorse"
                        : g->k.ca_key ? "--ca-key" : g->k.ca_cert ? "--ca-cert" : g->k.ca_pass ? "--ca-pass" : NULL;

    if (extra != NULL) {
        cli_error("generate: %s does not apply to a SmartCard-HSM", extra);
        return CLI_EXIT_USAGE;
    }
    if (g->algorithm == NULL || (g->uri = algorithm_uri(g->algorithm)) == NULL) {
        cli_error("generate: --algorithm is required: P-256, P-384, P-521, brainpoolP256r1, brainpoolP320r1, "
                  "brainpoolP384r1, brainpoolP512r1, RSA-2048, RSA-3072 or RSA-4096");
        return CLI_EXIT_USAGE;
    }
    if (g->k.name == NULL || *g->k.name == '\0') {
        cli_error("generate: --name is required (the key's label)");
        return CLI_EXIT_USAGE;
    }
    if (g->k.days != NULL && !cli_parse_number("generate", "--days", g->k.days, 1, 36500, &days))
        return CLI_EXIT_USAGE;
    return cli_hsm_generate(t, g->k.name, g->uri, g->k.subject, (int)days, g->k.pin);
}

static int run(sks_transport *t, const cli_store *store, gen_args *g)
{
    char err[1024] = "";
    issuer_ca ca;
    issuer_session s;
    issuer_key key;
    X509 *ee = NULL;

    memset(&key, 0, sizeof(key));
    if (!cli_check_new_name(t, "generate", g->k.name) || !cli_device_supports(t, "generate", g->uri, g->algorithm))
        return CLI_EXIT_FAIL;
    if (!issuer_ca_load(&ca, store->db_path, g->k.ca_key, g->k.ca_cert, g->k.ca_pass, err, sizeof(err))) {
        cli_error("generate: issuer CA: %s", err);
        return CLI_EXIT_FAIL;
    }
    if (issuer_open(&s, t, ca.cert))
        ee = provision(&s, g, &ca, &key);
    if (ee == NULL)
        cli_error("generate: %s", s.error);
    else
        cli_print_new_key(key.handle, g->k.name, ee);
    issuer_end(&s);
    issuer_key_free(&key);
    issuer_ca_free(&ca);
    X509_free(ee);
    return ee != NULL ? CLI_EXIT_OK : CLI_EXIT_FAIL;
}

int cmd_generate(cli_store *store, int argc, char **argv)
{
    gen_args g;
    const cli_opt opts[] = {
        CLI_KEY_OPTS(g.k),
        { "--algorithm", OPT_VALUE, &g.algorithm },
        { "--subject", OPT_VALUE, &g.k.subject },
        { "--days", OPT_VALUE, &g.k.days },
        { "--ca-key", OPT_VALUE, &g.k.ca_key },
        { "--ca-cert", OPT_VALUE, &g.k.ca_cert },
        { "--ca-pass", OPT_SECRET, &g.k.ca_pass },
    };
    sks_transport *t;
    int rc;

    memset(&g, 0, sizeof(g));
    switch (cli_parse("generate", argc, argv, 1, opts, sizeof(opts) / sizeof(opts[0]))) {
    case CLI_PARSE_HELP:
        printf("%s%s", USAGE, CLI_KEY_OPTS_HELP);
        return CLI_EXIT_OK;
    case CLI_PARSE_ERROR:
        return CLI_EXIT_USAGE;
    default:
        break;
    }
    if (cli_maybe_hsm(store)) {
        sks_hsm_status st;
        if ((t = cli_open(store, "generate")) == NULL)
            return CLI_EXIT_FAIL;
        if (cli_hsm_status(t, &st)) {
            rc = run_on_card(t, &g);
            t->close(t);
            return rc;
        }
        t->close(t);
    }
    if (!check_args(&g))
        return CLI_EXIT_USAGE;
    if ((t = cli_open(store, "generate")) == NULL)
        return CLI_EXIT_FAIL;
    rc = run(t, store, &g);
    t->close(t);
    return rc;
}
