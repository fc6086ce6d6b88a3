/*
 * sks skip request|import|issue: secure key packages (docs/skip.md).
 *
 *   request  the device makes a factory key and a PKCS#10 request signed with it; the key
 *            waits in a pending provisioning session, with the trust anchors its answer
 *            must verify to, for the answer
 *   import   verifies a package (certificates to the trust anchors, signer by key
 *            identifier and purpose, signature) for an early clear error, then hands the
 *            whole package to the device, which verifies it again against the anchors of
 *            the request before it unwraps and stores all its keys in one transaction, or none
 *   issue    the issuer's side, for factories and tests (skip_issue.c)
 */
#include "skip.h"
#include "files.h"
#include "../../cms/skip_import.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>

#define ALG(x) "https://webpki.github.io/sks/algorithm#" x
#define MAX_FILE (4L * 1024 * 1024)

static const char USAGE[] =
    "usage: sks skip request --curve C --subject DN --trust ANCHORS.pem [--out FILE]\n"
    "       sks skip import --trust ANCHORS.pem PACKAGE\n"
    "       sks skip issue --request REQ --ca-key KEY --ca-cert CERT --key-type T [--key-type T]...\n"
    "                      [--aes 128|256] [--days N] [--ca-pass-file FILE] --out PACKAGE\n"
    "       sks skip enroll URL --trust ANCHORS.pem [--token T | --token-file F | --cert C --key K]\n"
    "                       [--curve C] [--subject DN] [--tls-ca FILE] [--state FILE]\n"
    "       sks skip recover --archive DB --recovery-key KEY --serial N [--out FILE]\n"
    "  request: a factory key on curve C (P-256, P-384, P-521, brainpoolP256r1, brainpoolP320r1,\n"
    "           brainpoolP384r1, brainpoolP512r1) is made in the store; its PKCS#10 request\n"
    "           (subject DN, \"CN=a, O=b\" or \"/O=b/CN=a\") goes to FILE as PEM, or to stdout; the\n"
    "           device keeps ANCHORS.pem (1-16 certificates): only a package verifying to them is opened\n"
    "  import:  a SKIP package (DER or PEM CMS) answering a pending request: every certificate must\n"
    "           verify to ANCHORS.pem; all keys are stored, or none. Importing it again changes nothing\n"
    "  issue:   answers a request with a package of new keys of the given types (the curves above and\n"
    "           Ed25519), certified by the CA (KEY may be an sks: URI), encrypted with AES-256 (or 128)\n"
    "  enroll:  request, fetch the package from an sks-issuer at URL and import it (see sks skip enroll --help)\n"
    "  recover: an archived private key from an sks-issuer archive (see sks skip recover --help)\n";

static const skip_key_type KEY_TYPES[] = {
    { "P-256", "prime256v1", "secp256r1", "prime256v1", ALG("ec.nist.p256") },
    { "P-384", "secp384r1", NULL, "secp384r1", ALG("ec.nist.p384") },
    { "P-521", "secp521r1", NULL, "secp521r1", ALG("ec.nist.p521") },
    { "brainpoolP256r1", NULL, NULL, "brainpoolP256r1", ALG("ec.brainpool.p256r1") },
    { "brainpoolP320r1", NULL, NULL, "brainpoolP320r1", ALG("ec.brainpool.p320r1") },
    { "brainpoolP384r1", NULL, NULL, "brainpoolP384r1", ALG("ec.brainpool.p384r1") },
    { "brainpoolP512r1", NULL, NULL, "brainpoolP512r1", ALG("ec.brainpool.p512r1") },
    { "Ed25519", NULL, NULL, NULL, ALG("ed25519") },
};

/* ------------------------------------------------------------------ shared helpers */

static int named(const char *name, const char *candidate)
{
    return candidate != NULL && strcasecmp(name, candidate) == 0;
}

const skip_key_type *skip_find_key_type(const char *cmd, const char *opt, const char *name, int ec_only)
{
    size_t i;

    for (i = 0; i < sizeof(KEY_TYPES) / sizeof(KEY_TYPES[0]); i++) {
        const skip_key_type *k = &KEY_TYPES[i];
        if ((!ec_only || k->group != NULL) && (named(name, k->name) || named(name, k->alias) || named(name, k->alias2)))
            return k;
    }
    cli_error("%s: %s '%s' is not supported (P-256, P-384, P-521, brainpoolP256r1, brainpoolP320r1, brainpoolP384r1,"
              " brainpoolP512r1%s)", cmd, opt, name, ec_only ? "" : ", Ed25519");
    return NULL;
}

int skip_read_file(const char *path, sks_buf *out, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    uint8_t chunk[8192];
    size_t n;

    if (f == NULL) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return 0;
    }
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0 && out->len <= (size_t)MAX_FILE)
        sks_buf_put(out, chunk, n);
    fclose(f);
    if (out->failed || out->len > (size_t)MAX_FILE) {
        snprintf(err, errlen, "%s is larger than %ld bytes", path, MAX_FILE);
        return 0;
    }
    return 1;
}

static const cli_opt *option_named(const cli_opt *opts, size_t nopts, const char *arg)
{
    size_t i, len = strcspn(arg, "=");

    for (i = 0; i < nopts; i++)
        if (strlen(opts[i].name) == len && strncmp(opts[i].name, arg, len) == 0)
            return &opts[i];
    return NULL;
}

int skip_take_positional(const char *cmd, int *argc, char **argv, const cli_opt *opts, size_t nopts,
                         const char **positional)
{
    int i, out = 2;

    *positional = NULL;
    for (i = 2; i < *argc; i++) {
        const cli_opt *o = strncmp(argv[i], "--", 2) == 0 ? option_named(opts, nopts, argv[i]) : NULL;
        int takes_next = o != NULL && o->kind != OPT_FLAG && strchr(argv[i], '=') == NULL;

        if (strncmp(argv[i], "-", 1) == 0) {
            argv[out++] = argv[i];
            if (takes_next && i + 1 < *argc)
                argv[out++] = argv[++i];
        } else if (*positional == NULL) {
            *positional = argv[i];
        } else {
            cli_error("%s: unexpected argument '%s' (one package at a time)", cmd, argv[i]);
            return 0;
        }
    }
    *argc = out;
    return 1;
}

/* ------------------------------------------------------------------ request */

typedef struct {
    const char *curve, *subject, *out, *trust;
} request_args;

void skip_anchor_ders_free(skip_anchor_ders *a)
{
    size_t i;

    for (i = 0; i < a->count; i++)
        OPENSSL_free((void *)a->der[i].p);
    a->count = 0;
}

/* The certificates of a PEM file as DER, for the device to keep with the request. */
int skip_read_anchors(const char *path, skip_anchor_ders *a)
{
    BIO *b = BIO_new_file(path, "r");
    X509 *x;
    int ok = b != NULL;

    memset(a, 0, sizeof(*a));
    while (ok && (x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
        unsigned char *der = NULL;
        int len = a->count < SKIP_MAX_ANCHORS ? i2d_X509(x, &der) : -1;
        X509_free(x);
        if ((ok = len > 0)) {
            a->der[a->count].p = der;
            a->der[a->count++].n = (size_t)len;
        }
    }
    BIO_free(b);
    ERR_clear_error(); /* the read loop ends on "no start line" */
    if (ok && a->count > 0)
        return 1;
    if (b == NULL)
        cli_error("skip request: --trust: cannot open %s", path);
    else if (a->count == SKIP_MAX_ANCHORS)
        cli_error("skip request: --trust: %s holds more than %d certificates", path, SKIP_MAX_ANCHORS);
    else
        cli_error("skip request: --trust: %s holds no PEM certificate", path);
    skip_anchor_ders_free(a);
    return 0;
}

/* The request as PEM, to the file or to stdout. */
static int write_request(const request_args *a, const sks_bytes *pkcs10)
{
    const unsigned char *q = pkcs10->data;
    X509_REQ *req = d2i_X509_REQ(NULL, &q, (long)pkcs10->len);
    BIO *mem = BIO_new(BIO_s_mem());
    char *pem = NULL, err[512];
    long n = 0;
    int ok = req != NULL && mem != NULL && PEM_write_bio_X509_REQ(mem, req) == 1
             && (n = BIO_get_mem_data(mem, &pem)) > 0;

    if (ok && a->out != NULL)
        ok = files_write_new(a->out, pem, (size_t)n, err, sizeof(err)) || (cli_error("skip request: %s", err), 0);
    else if (ok)
        ok = fwrite(pem, 1, (size_t)n, stdout) == (size_t)n;
    else
        cli_error("skip request: the device returned an unreadable PKCS#10 request");
    X509_REQ_free(req);
    BIO_free(mem);
    return ok;
}

static int run_request(sks_transport *t, const request_args *a, const skip_key_type *type, const sks_buf *subject,
                       const skip_anchor_ders *anchors)
{
    sks_span der = { subject->data, subject->len };
    sks_client_error e;
    sks_bytes pkcs10;
    uint32_t handle;
    int ok;

    if (!sks_client_skip_request(t, type->uri, der, anchors->der, anchors->count, &handle, &pkcs10, &e)) {
        cli_client_error("skip request", &e);
        return 0;
    }
    ok = write_request(a, &pkcs10);
    if (!ok)
        sks_client_abort_provisioning_session(t, handle, &e); /* nobody could answer it */
    else
        fprintf(a->out ? stdout : stderr, "skip request #%u: factory key on %s%s%s\n", handle, type->name,
                a->out ? ", request written to " : "", a->out ? a->out : "");
    OPENSSL_clear_free(pkcs10.data, pkcs10.len);
    return ok;
}

static int cmd_request(cli_store *store, int argc, char **argv)
{
    int rc;
    request_args a;
    const cli_opt opts[] = {
        { "--curve", OPT_VALUE, &a.curve }, { "--subject", OPT_VALUE, &a.subject }, { "--out", OPT_VALUE, &a.out },
        { "--trust", OPT_VALUE, &a.trust },
    };
    const skip_key_type *type;
    sks_transport *t = NULL;
    sks_buf subject;
    skip_anchor_ders anchors;
    int ok;

    memset(&a, 0, sizeof(a));
    rc = cli_parse_command("skip request", argc, argv, 2, opts, sizeof(opts) / sizeof(opts[0]), USAGE);
    if (rc != CLI_CONTINUE)
        return rc;
    if (a.curve == NULL || a.subject == NULL || a.trust == NULL) {
        cli_error("skip request: --curve, --subject and --trust are required (see sks skip --help)");
        return CLI_EXIT_USAGE;
    }
    sks_buf_init(&subject);
    if ((type = skip_find_key_type("skip request", "--curve", a.curve, 1)) == NULL
        || !cli_subject_der("skip request", a.subject, &subject)) {
        sks_buf_free(&subject);
        return CLI_EXIT_USAGE;
    }
    if (a.out != NULL && access(a.out, F_OK) == 0) {
        cli_error("skip request: %s already exists (refusing to overwrite it)", a.out);
        sks_buf_free(&subject);
        return CLI_EXIT_FAIL;
    }
    if (!skip_read_anchors(a.trust, &anchors)) {
        sks_buf_free(&subject);
        return CLI_EXIT_FAIL;
    }
    ok = (t = cli_open(store, "skip request")) != NULL && run_request(t, &a, type, &subject, &anchors);
    if (t != NULL)
        t->close(t);
    skip_anchor_ders_free(&anchors);
    sks_buf_free(&subject);
    return ok ? CLI_EXIT_OK : CLI_EXIT_FAIL;
}

/* ------------------------------------------------------------------ import */

/* Decodes and verifies the package before the store is touched. */
static skip_package *load_package(const char *path, const char *trust)
{
    char err[2400] = "";
    skip_package *p = NULL;
    X509_STORE *anchors = NULL;
    sks_buf data;
    int ok;

    sks_buf_init(&data);
    ok = skip_read_file(path, &data, err, sizeof(err)) && (anchors = skip_anchors_load(trust, err, sizeof(err))) != NULL
         && skip_package_parse(data.data, data.len, &p, err, sizeof(err))
         && skip_package_verify(p, anchors, err, sizeof(err));
    if (!ok) {
        cli_error("skip import: %s: %s", path, err);
        skip_package_free(p);
        p = NULL;
    }
    X509_STORE_free(anchors);
    sks_buf_free(&data);
    return p;
}

static void print_key(sks_transport *t, uint32_t handle)
{
    cli_key_info k;

    if (!cli_key_info_load(t, "skip import", handle, &k))
        return;
    printf("  key %u  %-24s  %-16s  %s\n", handle, k.attr.friendly_name, k.algorithm, k.sha256);
    cli_key_info_free(&k);
}

void skip_print_result(sks_transport *t, const char *path, const skip_import_result *r)
{
    size_t i;

    if (r->already)
        printf("%s: already imported, nothing changed\n", path);
    else
        printf("%s: imported %zu key%s (SKIP request #%u answered; its factory key now has its certificate)\n", path,
               r->count, r->count == 1 ? "" : "s", r->session);
    for (i = 0; i < r->count; i++)
        print_key(t, r->handles[i]);
}

static int cmd_import_package(cli_store *store, int argc, char **argv)
{
    int rc;
    const char *trust = NULL, *path = NULL;
    const cli_opt opts[] = { { "--trust", OPT_VALUE, &trust } };
    char err[2400] = "";
    skip_import_result res;
    skip_package *p;
    sks_transport *t;
    int ok;

    if (!skip_take_positional("skip import", &argc, argv, opts, 1, &path))
        return CLI_EXIT_USAGE;
    if ((rc = cli_parse_command("skip import", argc, argv, 2, opts, 1, USAGE)) != CLI_CONTINUE)
        return rc;
    if (trust == NULL || path == NULL) {
        cli_error("skip import: give --trust ANCHORS.pem and the PACKAGE (see sks skip --help)");
        return CLI_EXIT_USAGE;
    }
    if ((p = load_package(path, trust)) == NULL)
        return CLI_EXIT_FAIL;
    if ((t = cli_open(store, "skip import")) == NULL) {
        skip_package_free(p);
        return CLI_EXIT_FAIL;
    }
    ok = skip_import(t, p, &res, err, sizeof(err));
    if (ok)
        skip_print_result(t, path, &res);
    else
        cli_error("skip import: %s: %s", path, err);
    t->close(t);
    skip_package_free(p);
    return ok ? CLI_EXIT_OK : CLI_EXIT_FAIL;
}

/* ------------------------------------------------------------------ sks skip */

int cmd_skip(cli_store *store, int argc, char **argv)
{
    const char *sub = argc > 1 ? argv[1] : "";

    if (strcmp(sub, "request") == 0)
        return cmd_request(store, argc, argv);
    if (strcmp(sub, "import") == 0)
        return cmd_import_package(store, argc, argv);
    if (strcmp(sub, "issue") == 0)
        return skip_cmd_issue(store, argc, argv);
    if (strcmp(sub, "enroll") == 0)
        return skip_cmd_enroll(store, argc, argv);
    if (strcmp(sub, "recover") == 0)
        return skip_cmd_recover(store, argc, argv);
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
        fputs(USAGE, stdout);
        return CLI_EXIT_OK;
    }
    if (argc > 1)
        cli_error("skip: unknown subcommand '%s' (choose request, import, issue, enroll or recover; see sks skip --help)", sub);
    else
        cli_error("skip: give a subcommand: request, import, issue, enroll or recover (see sks skip --help)");
    return CLI_EXIT_USAGE;
}
