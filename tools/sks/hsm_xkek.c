/*
 * sks hsm xkek request|derive: the two cards of an XKEK key domain agree on its KEK
 * (docs/smartcard-hsm-keymgmt.md, "Key domains"). request makes the card's ECDH key in the
 * domain (algorithm list 84) and writes its CV request followed by the card's device chain;
 * derive verifies the peer's file on the host — chain up to a known root, in date; the
 * request's outer signature by that device key; its inner signature by its own key — and only
 * then lets the card derive the KEK from it (DECIPHER 84).
 */
#include "cli.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/pem.h>
#include <openssl/x509.h>

#include "files.h"
#include "schsm/keymgmt_formats.h"

#define XKEK_CURVE_URI "https://webpki.github.io/sks/algorithm#ec.brainpool.p256r1"
#define MIGRATABLE_KEY_URI "https://webpki.github.io/sks/algorithm#ec.nist.p256"
#define ALG_ECDSA 0x70
#define ALG_WRAP 0x92
#define ALG_DERIVE_XKEK 0x84
#define MAX_FILE 8192
#define DEFAULT_DAYS 365

static const char USAGE[] =
    "usage: sks hsm xkek request --domain D --out FILE [--name LABEL] [--pin-file FILE]\n"
    "       sks hsm xkek derive --key HANDLE [--root FILE]... [--pin-file FILE] PEER-FILE\n"
    "  On a SmartCard-HSM that joined XKEK key domain D (sks hsm domain join).\n"
    "  request: makes the card's brainpoolP256r1 exchange key in domain D (it may only derive\n"
    "           the XKEK) and writes its CV request followed by the card's device chain to FILE\n"
    "           (new file) for the peer card; prints the key's handle.\n"
    "  derive:  verifies the peer's FILE (device chain up to a known root and in date, the\n"
    "           request's signature by that device and by its own key), then the card derives\n"
    "           the domain's KEK with its key HANDLE; prints the key domains (compare the KCVs).\n"
    "       sks hsm xkek generate --domain D --name LABEL [--pin-file FILE]\n"
    "       sks hsm xkek wrap --key HANDLE --out FILE [--pin-file FILE]\n"
    "       sks hsm xkek unwrap --name LABEL [--subject DN] [--days N] [--pin-file FILE] FILE\n"
    "  generate: a P-256 signing key in domain D that may be wrapped; prints its handle and\n"
    "           public key (PEM).\n"
    "  wrap:    the key encrypted under its domain's KEK, with its CV request, as an\n"
    "           sc-hsm-tool wrap file (new FILE).\n"
    "  unwrap:  a wrap file from the other card of the domain; the card checks the key signs for\n"
    "           the request's public key before it is described. The key gets the file's X.509\n"
    "           certificate if it carries one for that key, else one the card signs for it (so\n"
    "           the provider and OpenSC can use it). Prints the new handle and the certificate.\n"
    "  --name LABEL     the key's label (request: default xkek-D)\n"
    "  --subject DN     unwrap: the card signs a certificate with this subject (default CN=LABEL)\n"
    "  --days N         unwrap: that certificate's validity in days (default 365)\n"
    "  --root FILE      also trust this CV root for the peer's chain (built in: the SmartCard-HSM roots)\n"
    "  --pin-file FILE  the card's user PIN\n";

static int xkek_request(cli_store *store, int argc, char **argv)
{
    const char *pin = NULL, *domain = NULL, *out = NULL, *name = NULL;
    const cli_opt opts[] = { { "--pin", OPT_SECRET, &pin },
                             { "--domain", OPT_VALUE, &domain },
                             { "--out", OPT_VALUE, &out },
                             { "--name", OPT_VALUE, &name } };
    const uint8_t algorithms[] = { ALG_DERIVE_XKEK };
    char label[32], err[256];
    unsigned long d;
    uint32_t handle;
    sks_bytes pub = { NULL, 0 }, req = { NULL, 0 }, chain = { NULL, 0 };
    sks_client_error e;
    sks_transport *t;
    sks_span algs = { algorithms, sizeof(algorithms) };
    sks_buf file;
    int rc;

    if ((rc = cli_parse_command("hsm xkek request", argc, argv, 3, opts, 4, USAGE)) != CLI_CONTINUE)
        return rc;
    if (domain == NULL || out == NULL) {
        cli_error("hsm xkek request: give --domain D and --out FILE");
        return CLI_EXIT_USAGE;
    }
    if (!cli_parse_number("hsm xkek request", "--domain", domain, 0, 254, &d)
        || !cli_check_card_label("hsm xkek request", name))
        return CLI_EXIT_USAGE;
    snprintf(label, sizeof(label), "xkek-%lu", d);
    if ((t = cli_open_with_pin(store, "hsm xkek request", &pin, &rc)) == NULL)
        return rc;
    rc = CLI_EXIT_FAIL;
    sks_buf_init(&file);
    if (!sks_client_hsm_device_certificates(t, &chain, &e)
        || !sks_client_hsm_generate_domain_key(t, cli_span(pin), name ? name : label, XKEK_CURVE_URI, (uint8_t)d,
                                               algs, &handle, &pub, &req, &e)) {
        cli_client_error("hsm xkek request", &e);
        goto done;
    }
    sks_buf_put(&file, req.data, req.len);
    sks_buf_put(&file, chain.data, chain.len);
    if (file.failed || !files_write_new(out, file.data, file.len, err, sizeof(err))) {
        cli_error("hsm xkek request: --out: %s", file.failed ? "out of memory" : err);
        goto done;
    }
    printf("handle:      %u\nwrote %s: the exchange key's request and this card's device chain\n", handle, out);
    rc = CLI_EXIT_OK;
done:
    OPENSSL_free(pub.data);
    OPENSSL_free(req.data);
    OPENSSL_free(chain.data);
    sks_buf_free(&file);
    t->close(t);
    return rc;
}

/* The peer's file: its request made by a device that verifies, signed by that device (outer)
 * and by the request's own key (inner). *req_len: the request's length at the start of file. */
static int verify_peer(const uint8_t *file, size_t n, const cli_list *roots, size_t *req_len)
{
    char err[512], chr[SCHSM_CVC_REF_MAX + 1];
    EVP_PKEY *device = NULL, *own = NULL;
    schsm_cvc req, dev;
    int ok = 0;

    if (!schsm_cvc_parse(file, n, &req, req_len, err, sizeof(err)) || !req.authenticated || *req_len >= n) {
        cli_error("hsm xkek derive: the peer's file is not a CV request followed by a device chain%s%s",
                  err[0] ? ": " : "", err);
        return 0;
    }
    if (!cli_hsm_verified_device("hsm xkek derive", file + *req_len, n - *req_len, roots, &device, chr))
        return 0;
    if (!schsm_cvc_parse(file + *req_len, n - *req_len, &dev, NULL, err, sizeof(err)))
        goto done;
    if (strcmp(req.outer_car, chr) != 0) {
        cli_error("hsm xkek derive: the request names device %s, but the chain is device %s", req.outer_car, chr);
        goto done;
    }
    if (!schsm_cvc_verify_outer(&req, device, &dev.key_oid, err, sizeof(err))) {
        cli_error("hsm xkek derive: the peer's request was not signed by its device: %s", err);
        goto done;
    }
    if (!schsm_cvc_public_key(&req, &req, &own, err, sizeof(err))
        || !schsm_cvc_verify(&req, own, &req.key_oid, err, sizeof(err))) {
        cli_error("hsm xkek derive: the peer's request does not verify with its own key: %s", err);
        goto done;
    }
    printf("peer:        device %s verified; its request %s verified\n", chr, req.chr);
    ok = 1;
done:
    EVP_PKEY_free(device);
    EVP_PKEY_free(own);
    return ok;
}

static int xkek_derive(cli_store *store, int argc, char **argv)
{
    static uint8_t file[MAX_FILE];
    static sks_hsm_domain domains[SKS_HSM_MAX_DOMAINS];
    const char *pin = NULL, *key = NULL, *path = NULL;
    cli_list roots;
    const cli_opt opts[] = { { "--pin", OPT_SECRET, &pin }, { "--key", OPT_VALUE, &key }, { "--root", OPT_LIST, &roots } };
    unsigned long handle;
    size_t n, req_len, count, i;
    sks_client_error e;
    sks_transport *t;
    sks_span peer;
    int rc;

    memset(&roots, 0, sizeof(roots));
    if (!cli_take_file_argument("hsm xkek derive", &argc, argv, 3, &path))
        return CLI_EXIT_USAGE;
    if ((rc = cli_parse_command("hsm xkek derive", argc, argv, 3, opts, 3, USAGE)) != CLI_CONTINUE)
        return rc;
    if (key == NULL || path == NULL) {
        cli_error("hsm xkek derive: give --key HANDLE and the peer's file");
        return CLI_EXIT_USAGE;
    }
    if (!cli_parse_number("hsm xkek derive", "--key", key, 1, 255, &handle))
        return CLI_EXIT_USAGE;
    if (!cli_read_whole("hsm xkek derive", path, file, sizeof(file), &n) || !verify_peer(file, n, &roots, &req_len))
        return CLI_EXIT_FAIL;
    if ((t = cli_open_with_pin(store, "hsm xkek derive", &pin, &rc)) == NULL)
        return rc;
    peer.p = file;
    peer.n = req_len;
    rc = CLI_EXIT_FAIL;
    if (!sks_client_hsm_derive_xkek(t, cli_span(pin), (uint32_t)handle, peer, &e)
        || !sks_client_hsm_domain_status(t, cli_span(pin), domains, SKS_HSM_MAX_DOMAINS, &count, &e)) {
        cli_client_error("hsm xkek derive", &e);
    } else {
        for (i = 0; i < count; i++) {
            size_t k;
            if (domains[i].shares_total != 0xFF)
                continue;
            printf("domain %u:    XKEK, KCV ", domains[i].domain);
            for (k = 0; k < sizeof(domains[i].kcv); k++)
                printf("%02x", domains[i].kcv[k]);
            printf("\n");
        }
        rc = CLI_EXIT_OK;
    }
    t->close(t);
    return rc;
}

static int xkek_generate(cli_store *store, int argc, char **argv)
{
    const char *pin = NULL, *domain = NULL, *name = NULL;
    const cli_opt opts[] = { { "--pin", OPT_SECRET, &pin }, { "--domain", OPT_VALUE, &domain },
                             { "--name", OPT_VALUE, &name } };
    const uint8_t algorithms[] = { ALG_ECDSA, ALG_WRAP };
    sks_span algs = { algorithms, sizeof(algorithms) };
    sks_bytes pub = { NULL, 0 }, req = { NULL, 0 };
    sks_client_error e;
    sks_transport *t;
    unsigned long d;
    uint32_t handle;
    const unsigned char *q;
    EVP_PKEY *pkey;
    int rc;

    if ((rc = cli_parse_command("hsm xkek generate", argc, argv, 3, opts, 3, USAGE)) != CLI_CONTINUE)
        return rc;
    if (domain == NULL || name == NULL) {
        cli_error("hsm xkek generate: give --domain D and --name LABEL");
        return CLI_EXIT_USAGE;
    }
    if (!cli_parse_number("hsm xkek generate", "--domain", domain, 0, 254, &d)
        || !cli_check_card_label("hsm xkek generate", name))
        return CLI_EXIT_USAGE;
    if ((t = cli_open_with_pin(store, "hsm xkek generate", &pin, &rc)) == NULL)
        return rc;
    rc = CLI_EXIT_FAIL;
    if (!sks_client_hsm_generate_domain_key(t, cli_span(pin), name, MIGRATABLE_KEY_URI, (uint8_t)d, algs, &handle,
                                            &pub, &req, &e)) {
        cli_client_error("hsm xkek generate", &e);
    } else {
        q = pub.data;
        printf("handle:      %u\n", handle);
        if ((pkey = d2i_PUBKEY(NULL, &q, (long)pub.len)) != NULL) {
            BIO *b = BIO_new_fp(stdout, BIO_NOCLOSE);
            PEM_write_bio_PUBKEY(b, pkey);
            BIO_free(b);
            EVP_PKEY_free(pkey);
            rc = CLI_EXIT_OK;
        }
    }
    OPENSSL_free(pub.data);
    OPENSSL_free(req.data);
    t->close(t);
    return rc;
}

static int xkek_wrap(cli_store *store, int argc, char **argv)
{
    const char *pin = NULL, *key = NULL, *out = NULL;
    const cli_opt opts[] = { { "--pin", OPT_SECRET, &pin }, { "--key", OPT_VALUE, &key }, { "--out", OPT_VALUE, &out } };
    sks_bytes blob = { NULL, 0 }, req = { NULL, 0 };
    sks_client_error e;
    sks_transport *t;
    unsigned long handle;
    uint8_t *file = NULL;
    size_t flen = 0;
    char err[256];
    int rc;

    if ((rc = cli_parse_command("hsm xkek wrap", argc, argv, 3, opts, 3, USAGE)) != CLI_CONTINUE)
        return rc;
    if (key == NULL || out == NULL) {
        cli_error("hsm xkek wrap: give --key HANDLE and --out FILE");
        return CLI_EXIT_USAGE;
    }
    if (!cli_parse_number("hsm xkek wrap", "--key", key, 1, 255, &handle))
        return CLI_EXIT_USAGE;
    if ((t = cli_open_with_pin(store, "hsm xkek wrap", &pin, &rc)) == NULL)
        return rc;
    rc = CLI_EXIT_FAIL;
    if (!sks_client_hsm_domain_wrap_key(t, cli_span(pin), (uint32_t)handle, &blob, &e)
        || !sks_client_hsm_key_generation_response(t, (uint32_t)handle, &req, &e))
        cli_client_error("hsm xkek wrap", &e);
    else if (req.len == 0)
        cli_error("hsm xkek wrap: the card keeps no CV request for key %lu, so its public key cannot travel", handle);
    else if (!schsm_wrap_file_build(blob.data, blob.len, NULL, 0, req.data, req.len, &file, &flen, err, sizeof(err))
             || !files_write_new(out, file, flen, err, sizeof(err)))
        cli_error("hsm xkek wrap: %s", err);
    else {
        printf("wrote %s: key %lu wrapped under its domain's KEK (KCV ", out, handle);
        for (size_t i = 0; i < 8 && i < blob.len; i++)
            printf("%02x", blob.data[i]);
        printf(")\n");
        rc = CLI_EXIT_OK;
    }
    OPENSSL_free(file);
    OPENSSL_free(blob.data);
    OPENSSL_free(req.data);
    t->close(t);
    return rc;
}

/* The public key of a DER X.509 certificate with nothing after it, or NULL. */
static EVP_PKEY *x509_key(const uint8_t *der, size_t n)
{
    const unsigned char *q = der;
    X509 *x = der != NULL && n > 0 && der[0] == 0x30 ? d2i_X509(NULL, &q, (long)n) : NULL;
    EVP_PKEY *pub = x != NULL && q == der + n ? X509_get_pubkey(x) : NULL;

    X509_free(x);
    return pub;
}

/* The public key of an authenticated CV request, or NULL. */
static EVP_PKEY *request_key(const uint8_t *req, size_t n)
{
    char err[256];
    EVP_PKEY *pub = NULL;
    schsm_cvc c;

    if (req == NULL || n == 0 || req[0] != 0x67 || !schsm_cvc_parse(req, n, &c, NULL, err, sizeof(err))
        || !schsm_cvc_public_key(&c, &c, &pub, err, sizeof(err)))
        return NULL;
    return pub;
}

/* What a wrap file says about its key: the CV request (sks hsm xkek wrap) and an X.509
 * certificate (sc-hsm-tool and sks hsm backup put it third), each where the file's fields
 * hold one. A certificate not for the request's key is dropped: the card then signs one. */
static int unwrap_parts(const char *path, const uint8_t *file, size_t n, sks_span *blob, sks_span *req, sks_span *cert)
{
    const uint8_t *b, *second, *third;
    size_t blen, slen, tlen;
    EVP_PKEY *rk, *ck;
    char err[256] = "";

    if (!schsm_wrap_file_parse(file, n, &b, &blen, &second, &slen, &third, &tlen, err, sizeof(err))) {
        cli_error("hsm xkek unwrap: %s: %s", path, err);
        return 0;
    }
    blob->p = b;
    blob->n = blen;
    memset(req, 0, sizeof(*req));
    memset(cert, 0, sizeof(*cert));
    /* the file's fields go by position: written without a PrKD, the request is the second TLV */
    if (third != NULL && third[0] == 0x67) {
        req->p = third;
        req->n = tlen;
    } else if (second != NULL && second[0] == 0x67) {
        req->p = second;
        req->n = slen;
    }
    if ((ck = x509_key(third, tlen)) != NULL) {
        cert->p = third;
        cert->n = tlen;
    }
    rk = request_key(req->p, req->n);
    if (ck != NULL && rk != NULL && EVP_PKEY_eq(rk, ck) != 1) {
        fprintf(stderr, "sks: hsm xkek unwrap: %s: its certificate is not for the key's CV request; the card signs "
                "a new one\n", path);
        memset(cert, 0, sizeof(*cert));
    }
    EVP_PKEY_free(rk);
    EVP_PKEY_free(ck);
    if (req->n == 0 && cert->n == 0) {
        cli_error("hsm xkek unwrap: %s: no CV request nor certificate of the key in the wrap file (sks hsm xkek wrap "
                  "writes the request)", path);
        return 0;
    }
    return 1;
}

static void print_unwrapped(uint32_t handle, const char *name, const sks_bytes *cert, int carried)
{
    const unsigned char *q = cert->data;
    X509 *x = cert->len > 0 ? d2i_X509(NULL, &q, (long)cert->len) : NULL;
    char fp[96] = "";

    printf("handle:      %u\nname:        %s\n", handle, name);
    if (x != NULL) {
        cli_fingerprint(cert->data, cert->len, fp);
        printf("certificate: ");
        X509_NAME_print_ex_fp(stdout, X509_get_subject_name(x), 0, XN_FLAG_RFC2253);
        printf(" (%s)\nsha256:      %s\n", carried ? "from the wrap file" : "self-signed by the card", fp);
    }
    X509_free(x);
}

static int xkek_unwrap(cli_store *store, int argc, char **argv)
{
    static uint8_t file[MAX_FILE];
    const char *pin = NULL, *name = NULL, *path = NULL, *subject = NULL, *days = NULL;
    const cli_opt opts[] = { { "--pin", OPT_SECRET, &pin },
                             { "--name", OPT_VALUE, &name },
                             { "--subject", OPT_VALUE, &subject },
                             { "--days", OPT_VALUE, &days } };
    unsigned long ndays = DEFAULT_DAYS;
    sks_buf dn;
    size_t n;
    sks_bytes pub = { NULL, 0 }, cert = { NULL, 0 };
    sks_client_error e;
    sks_transport *t;
    uint32_t handle;
    sks_span blob, req, carried, dnspan;
    int rc;

    if (!cli_take_file_argument("hsm xkek unwrap", &argc, argv, 3, &path))
        return CLI_EXIT_USAGE;
    if ((rc = cli_parse_command("hsm xkek unwrap", argc, argv, 3, opts, 4, USAGE)) != CLI_CONTINUE)
        return rc;
    if (name == NULL || path == NULL) {
        cli_error("hsm xkek unwrap: give --name LABEL and the wrap file");
        return CLI_EXIT_USAGE;
    }
    if (!cli_check_card_label("hsm xkek unwrap", name))
        return CLI_EXIT_USAGE;
    sks_buf_init(&dn);
    if ((days != NULL && !cli_parse_number("hsm xkek unwrap", "--days", days, 1, 36500, &ndays))
        || !cli_subject_der("hsm xkek unwrap", subject, &dn)) {
        sks_buf_free(&dn);
        return CLI_EXIT_USAGE;
    }
    rc = CLI_EXIT_FAIL;
    if (!cli_read_whole("hsm xkek unwrap", path, file, sizeof(file), &n) || !unwrap_parts(path, file, n, &blob, &req, &carried))
        goto out;
    if ((t = cli_open_with_pin(store, "hsm xkek unwrap", &pin, &rc)) == NULL)
        goto out;
    rc = CLI_EXIT_FAIL;
    dnspan.p = dn.data;
    dnspan.n = dn.len;
    if (sks_client_hsm_domain_unwrap_key(t, cli_span(pin), name, blob, req, carried, dnspan, (uint32_t)ndays, &handle,
                                         &pub, &cert, &e)) {
        print_unwrapped(handle, name, &cert, carried.n > 0 && subject == NULL);
        rc = CLI_EXIT_OK;
    } else {
        cli_client_error("hsm xkek unwrap", &e);
    }
    OPENSSL_free(pub.data);
    OPENSSL_free(cert.data);
    t->close(t);
out:
    sks_buf_free(&dn);
    return rc;
}

int cli_hsm_xkek(cli_store *store, int argc, char **argv)
{
    const char *sub = argc > 2 ? argv[2] : "";

    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
        fputs(USAGE, stdout);
        return CLI_EXIT_OK;
    }
    if (strcmp(sub, "request") == 0)
        return xkek_request(store, argc, argv);
    if (strcmp(sub, "derive") == 0)
        return xkek_derive(store, argc, argv);
    if (strcmp(sub, "generate") == 0)
        return xkek_generate(store, argc, argv);
    if (strcmp(sub, "wrap") == 0)
        return xkek_wrap(store, argc, argv);
    if (strcmp(sub, "unwrap") == 0)
        return xkek_unwrap(store, argc, argv);
    cli_error("hsm xkek: give a subcommand: request, derive, generate, wrap or unwrap (see sks hsm xkek --help)");
    return CLI_EXIT_USAGE;
}
