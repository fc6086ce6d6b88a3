/*
 * sks skip enroll | recover: SKIP over the network (docs/skip-issuer.md).
 *
 *   enroll   the device makes its factory key and request (as `sks skip request`), posts the
 *            request to an sks-issuer with libcurl, verifies and imports the package (as
 *            `sks skip import`) and confirms it. The request is kept in a state file until
 *            the issuer has the confirmation, so running it again after a lost answer sends
 *            the same request, gets the same package and imports nothing twice.
 *   recover  an operator holding a recovery key takes an archived private key out of the
 *            issuer's archive (CMS EnvelopedData) by its certificate's serial number.
 */
#include "skip.h"
#include "files.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <sqlite3.h>

#define ENROLL_PATH "/.well-known/est/skip/simpleenroll"
#define CONFIRM_PATH "/.well-known/est/skip/confirm"
#define MAX_ANSWER (1024 * 1024)
#define CMD_ENROLL "skip enroll"
#define CMD_RECOVER "skip recover"

static const char ENROLL_USAGE[] =
    "usage: sks skip enroll URL --trust ANCHORS.pem [--token T | --token-file F | --cert C --key K]\n"
    "                       [--curve C] [--subject DN] [--tls-ca FILE] [--state FILE]\n"
    "  Enrols the device with the sks-issuer at URL (https://host[:port]; the EST path\n"
    "  " ENROLL_PATH " is appended): a factory key on C (default P-256) and its request\n"
    "  (subject DN, default CN=sks device; the issuer sets the certificates' subjects), the\n"
    "  package verified against ANCHORS.pem and imported, then confirmed to the issuer.\n"
    "  --token T, --token-file F  the one-time enrolment token (F: its first line)\n"
    "  --cert C --key K           or a TLS client certificate (PEM) and its key (PEM file or sks: URI,\n"
    "                             through the sks ENGINE)\n"
    "  --tls-ca FILE              the only CA certificates that verify the server (default: the system's)\n"
    "  --state FILE               where the pending request is kept (default: STORE.skip-enroll.pem);\n"
    "                             running enroll again after a failure sends it again\n";

static const char RECOVER_USAGE[] =
    "usage: sks skip recover --archive DB --recovery-key KEY --serial N [--out FILE]\n"
    "  Decrypts the private key archived by sks-issuer for the certificate with serial N (hex,\n"
    "  as the issuer's log and `openssl x509 -serial` show it) with a recovery key (PEM file or\n"
    "  sks: URI) and writes it as PKCS#8 PEM to FILE (created 0600) or stdout.\n";

typedef struct {
    const char *trust, *token, *cert, *key, *curve, *subject, *tls_ca, *state;
    const char *url;
} enroll_args;

/* ------------------------------------------------------------------ the pending request */

static int pem_to_der_request(const sks_buf *pem, sks_buf *der)
{
    BIO *b = BIO_new_mem_buf(pem->data, (int)pem->len);
    X509_REQ *req = b ? PEM_read_bio_X509_REQ(b, NULL, NULL, NULL) : NULL;
    unsigned char *d = NULL;
    int len = req ? i2d_X509_REQ(req, &d) : -1;

    if (len > 0)
        sks_buf_put(der, d, (size_t)len);
    OPENSSL_free(d);
    X509_REQ_free(req);
    BIO_free(b);
    return len > 0 && !der->failed;
}

static int save_request(const char *state, const sks_bytes *pkcs10)
{
    const unsigned char *q = pkcs10->data;
    X509_REQ *req = d2i_X509_REQ(NULL, &q, (long)pkcs10->len);
    BIO *mem = BIO_new(BIO_s_mem());
    char *pem = NULL, err[512];
    long n = 0;
    int ok = req != NULL && mem != NULL && PEM_write_bio_X509_REQ(mem, req) == 1 && (n = BIO_get_mem_data(mem, &pem)) > 0
             && files_write_new(state, pem, (size_t)n, err, sizeof(err));

    if (!ok)
        cli_error(CMD_ENROLL ": cannot keep the request in %s", state);
    X509_REQ_free(req);
    BIO_free(mem);
    return ok;
}

/* The request in the state file, or a new one made in the device and kept there (then
 * *made is its session handle, else 0). */
static int pending_request(cli_store *store, const enroll_args *a, sks_buf *der, uint32_t *made)
{
    const skip_key_type *type = skip_find_key_type(CMD_ENROLL, "--curve", a->curve, 1);
    skip_anchor_ders anchors;
    sks_transport *t = NULL;
    sks_client_error e;
    sks_bytes pkcs10 = { NULL, 0 };
    sks_buf subject, pem;
    uint32_t handle = 0;
    char err[512];
    int ok;

    if (access(a->state, F_OK) == 0) {
        sks_buf_init(&pem);
        ok = skip_read_file(a->state, &pem, err, sizeof(err)) && pem_to_der_request(&pem, der);
        sks_buf_free(&pem);
        if (!ok)
            cli_error(CMD_ENROLL ": %s holds no PKCS#10 request (remove it to start over)", a->state);
        else
            fprintf(stderr, "skip enroll: sending the pending request of %s again\n", a->state);
        return ok;
    }
    if (type == NULL)
        return 0;
    sks_buf_init(&subject);
    if (!cli_subject_der(CMD_ENROLL, a->subject, &subject) || !skip_read_anchors(a->trust, &anchors)) {
        sks_buf_free(&subject);
        return 0;
    }
    ok = (t = cli_open(store, CMD_ENROLL)) != NULL;
    if (ok && !sks_client_skip_request(t, type->uri, (sks_span){ subject.data, subject.len }, anchors.der,
                                       anchors.count, &handle, &pkcs10, &e)) {
        cli_client_error(CMD_ENROLL, &e);
        ok = 0;
    } else if (ok && !save_request(a->state, &pkcs10)) {
        sks_client_abort_provisioning_session(t, handle, &e); /* nobody could answer it */
        ok = 0;
    } else if (ok) {
        sks_buf_put(der, pkcs10.data, pkcs10.len);
        *made = handle;
    }
    if (t != NULL)
        t->close(t);
    OPENSSL_clear_free(pkcs10.data, pkcs10.len);
    skip_anchor_ders_free(&anchors);
    sks_buf_free(&subject);
    return ok && !der->failed;
}

/* ------------------------------------------------------------------ HTTP */

static size_t collect(char *data, size_t size, size_t n, void *arg)
{
    sks_buf *b = arg;

    if (b->len + size * n > MAX_ANSWER)
        return 0; /* curl stops: the answer is too large */
    sks_buf_put(b, data, size * n);
    return b->failed ? 0 : size * n;
}

static void endpoint(const char *url, const char *path, char *out, size_t n)
{
    size_t len = strlen(url);

    while (len > 0 && url[len - 1] == '/')
        len--;
    snprintf(out, n, "%.*s%s", (int)len, url, path);
}

/* POSTs the request (base64, as EST does) to path; the HTTP status, the answer in `answer`. */
static long post(const enroll_args *a, const char *path, const sks_buf *request, sks_buf *answer)
{
    char url[2048], auth[CLI_SECRET_MAX + 32], errbuf[CURL_ERROR_SIZE] = "";
    struct curl_slist *headers = NULL;
    unsigned char *b64 = OPENSSL_malloc(request->len / 3 * 4 + 8);
    CURL *c = curl_easy_init();
    long status = 0;
    CURLcode rc = CURLE_FAILED_INIT;

    endpoint(a->url, path, url, sizeof(url));
    headers = curl_slist_append(headers, "Content-Type: application/pkcs10");
    headers = curl_slist_append(headers, "Content-Transfer-Encoding: base64");
    if (a->token != NULL) {
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", a->token);
        headers = curl_slist_append(headers, auth);
        OPENSSL_cleanse(auth, sizeof(auth));
    }
    if (c != NULL && b64 != NULL && headers != NULL) {
        int n = EVP_EncodeBlock(b64, request->data, (int)request->len);
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, (char *)b64);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)n);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, answer);
        curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
        curl_easy_setopt(c, CURLOPT_TIMEOUT, 300L);
        /* The token (or the client certificate's proof) only over TLS with a verified server;
         * no redirect is followed. */
        curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https");
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
        if (a->tls_ca != NULL) {
            /* --tls-ca alone verifies the server: without clearing CAPATH, libcurl would also
             * trust every CA of its built-in directory (Debian: /etc/ssl/certs). */
            curl_easy_setopt(c, CURLOPT_CAINFO, a->tls_ca);
            curl_easy_setopt(c, CURLOPT_CAPATH, NULL);
        }
        if (a->cert != NULL) {
            curl_easy_setopt(c, CURLOPT_SSLCERT, a->cert);
            if (strncmp(a->key, "sks:", 4) == 0) {
                curl_easy_setopt(c, CURLOPT_SSLENGINE, "sks");
                curl_easy_setopt(c, CURLOPT_SSLKEYTYPE, "ENG");
            }
            curl_easy_setopt(c, CURLOPT_SSLKEY, a->key);
        }
        rc = curl_easy_perform(c);
        if (rc == CURLE_OK)
            curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        else
            cli_error(CMD_ENROLL ": %s: %s", url, errbuf[0] ? errbuf : curl_easy_strerror(rc));
    }
    curl_slist_free_all(headers);
    curl_easy_cleanup(c);
    OPENSSL_free(b64);
    return status;
}

/* The answer's base64 (line breaks allowed) to DER. */
static int decode_answer(const sks_buf *answer, sks_buf *der)
{
    unsigned char *clean = OPENSSL_malloc(answer->len + 1), *out = NULL;
    size_t i, n = 0;
    int len = -1, pad;

    for (i = 0; clean != NULL && i < answer->len; i++)
        if (!isspace(answer->data[i]))
            clean[n++] = answer->data[i];
    if (clean != NULL && n >= 4 && n % 4 == 0 && (out = OPENSSL_malloc(n / 4 * 3)) != NULL) {
        pad = (clean[n - 1] == '=') + (clean[n - 2] == '=');
        len = EVP_DecodeBlock(out, clean, (int)n);
        if (len > pad)
            sks_buf_put(der, out, (size_t)(len - pad));
    }
    OPENSSL_free(clean);
    OPENSSL_free(out);
    return len > 0 && der->len > 0 && !der->failed;
}

static void print_refusal(long status, const sks_buf *answer)
{
    int n = (int)(answer->len > 400 ? 400 : answer->len);

    while (n > 0 && isspace(answer->data[n - 1]))
        n--;
    cli_error(CMD_ENROLL ": the issuer refused the request (HTTP %ld): %.*s", status, n, (const char *)answer->data);
}

/* ------------------------------------------------------------------ the package */

static int import_answer(cli_store *store, const enroll_args *a, const sks_buf *der)
{
    char err[2400] = "";
    X509_STORE *anchors = skip_anchors_load(a->trust, err, sizeof(err));
    skip_package *p = NULL;
    skip_import_result res;
    sks_transport *t = NULL;
    int ok = anchors != NULL && skip_package_parse(der->data, der->len, &p, err, sizeof(err))
             && skip_package_verify(p, anchors, err, sizeof(err));

    if (!ok)
        cli_error(CMD_ENROLL ": the package from %s is refused: %s", a->url, err);
    else if ((t = cli_open(store, CMD_ENROLL)) == NULL)
        ok = 0;
    else if (!(ok = skip_import(t, p, &res, err, sizeof(err))))
        cli_error(CMD_ENROLL ": %s", err);
    else
        skip_print_result(t, a->url, &res);
    if (t != NULL)
        t->close(t);
    skip_package_free(p);
    X509_STORE_free(anchors);
    return ok;
}

/* The issuer refused a request this run made, for good (4xx but 429): nobody will answer
 * it, so the device withdraws it rather than keep a factory key waiting. */
static void withdraw(cli_store *store, const enroll_args *a, uint32_t handle)
{
    sks_transport *t = cli_open(store, CMD_ENROLL);
    sks_client_error e;

    if (t != NULL) {
        sks_client_abort_provisioning_session(t, handle, &e);
        t->close(t);
    }
    unlink(a->state);
}

static int enroll(cli_store *store, const enroll_args *a)
{
    sks_buf request, answer, der;
    uint32_t made = 0;
    long status;
    int ok = 0;

    sks_buf_init(&request);
    sks_buf_init(&answer);
    sks_buf_init(&der);
    if (!pending_request(store, a, &request, &made))
        goto done;
    status = post(a, ENROLL_PATH, &request, &answer);
    if (status != 200) {
        if (status != 0)
            print_refusal(status, &answer);
        if (made != 0 && status >= 400 && status < 500 && status != 429)
            withdraw(store, a, made);
        goto done;
    }
    if (!decode_answer(&answer, &der)) {
        cli_error(CMD_ENROLL ": the answer from %s is not a base64 package", a->url);
        goto done;
    }
    if (!import_answer(store, a, &der))
        goto done;
    sks_buf_free(&answer);
    sks_buf_init(&answer);
    status = post(a, CONFIRM_PATH, &request, &answer);
    if (status != 200) {
        if (status != 0)
            print_refusal(status, &answer);
        cli_error(CMD_ENROLL ": the keys are in the store but the issuer has no confirmation; run enroll again");
        goto done;
    }
    unlink(a->state);
    printf("%s: enrolment confirmed\n", a->url);
    ok = 1;
done:
    sks_buf_free(&request);
    sks_buf_free(&answer);
    sks_buf_free(&der);
    return ok;
}

int skip_cmd_enroll(cli_store *store, int argc, char **argv)
{
    enroll_args a;
    char state[4200];
    const cli_opt opts[] = {
        { "--trust", OPT_VALUE, &a.trust },   { "--token", OPT_SECRET, &a.token },
        { "--cert", OPT_VALUE, &a.cert },     { "--key", OPT_VALUE, &a.key },
        { "--curve", OPT_VALUE, &a.curve },   { "--subject", OPT_VALUE, &a.subject },
        { "--tls-ca", OPT_VALUE, &a.tls_ca }, { "--state", OPT_VALUE, &a.state },
    };
    /* For finding URL among the options: --token-file takes a value too. */
    const char *unused = NULL;
    const cli_opt valued[] = {
        { "--trust", OPT_VALUE, &unused },  { "--token", OPT_VALUE, &unused },  { "--token-file", OPT_VALUE, &unused },
        { "--cert", OPT_VALUE, &unused },   { "--key", OPT_VALUE, &unused },    { "--curve", OPT_VALUE, &unused },
        { "--subject", OPT_VALUE, &unused }, { "--tls-ca", OPT_VALUE, &unused }, { "--state", OPT_VALUE, &unused },
    };
    size_t nopts = sizeof(opts) / sizeof(opts[0]);
    int rc, ok;

    memset(&a, 0, sizeof(a));
    if (!skip_take_positional(CMD_ENROLL, &argc, argv, valued, sizeof(valued) / sizeof(valued[0]), &a.url))
        return CLI_EXIT_USAGE;
    if ((rc = cli_parse_command(CMD_ENROLL, argc, argv, 2, opts, nopts, ENROLL_USAGE)) != CLI_CONTINUE)
        return rc;
    if (a.url == NULL || a.trust == NULL || (a.token == NULL && a.cert == NULL) || (a.cert != NULL) != (a.key != NULL)
        || (a.token != NULL && a.cert != NULL)) {
        cli_error(CMD_ENROLL ": give URL, --trust, and --token (or --token-file) or --cert with --key"
                  " (see sks skip enroll --help)");
        return CLI_EXIT_USAGE;
    }
    if (strncasecmp(a.url, "https://", 8) != 0) {
        cli_error(CMD_ENROLL ": %s: the URL must be https:// (the token or client certificate would travel"
                  " unprotected, and whoever reads it can enrol its own key as this device)", a.url);
        return CLI_EXIT_USAGE;
    }
    a.curve = a.curve ? a.curve : "P-256";
    a.subject = a.subject ? a.subject : "CN=sks device";
    if (a.state == NULL) {
        if (store->db_path[0] == '\0') {
            cli_error(CMD_ENROLL ": give --state FILE (the device has no store file to keep it next to)");
            return CLI_EXIT_USAGE;
        }
        snprintf(state, sizeof(state), "%s.skip-enroll.pem", store->db_path);
        a.state = state;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    ok = enroll(store, &a);
    curl_global_cleanup();
    return ok ? CLI_EXIT_OK : CLI_EXIT_FAIL;
}

/* ------------------------------------------------------------------ recover */

/* "0x1a2b" or "1A2B" as BN_bn2hex writes it: upper case, whole bytes. */
static int normalise_serial(const char *in, char *out, size_t n)
{
    size_t i, len;

    if (strncmp(in, "0x", 2) == 0 || strncmp(in, "0X", 2) == 0)
        in += 2;
    len = strlen(in);
    if (len == 0 || len + 2 > n)
        return 0;
    i = 0;
    if (len % 2)
        out[i++] = '0';
    for (; *in; in++) {
        if (!isxdigit((unsigned char)*in))
            return 0;
        out[i++] = (char)toupper((unsigned char)*in);
    }
    out[i] = '\0';
    return 1;
}

static int archive_lookup(const char *path, const char *serial, sks_buf *cert, sks_buf *envelope)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int rc = SQLITE_ERROR;

    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK
        && sqlite3_prepare_v2(db, "SELECT certificate, envelope FROM archived_keys WHERE serial = ?", -1, &st, NULL)
               == SQLITE_OK
        && sqlite3_bind_text(st, 1, serial, -1, SQLITE_STATIC) == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        sks_buf_put(cert, sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0));
        sks_buf_put(envelope, sqlite3_column_blob(st, 1), (size_t)sqlite3_column_bytes(st, 1));
    } else if (rc == SQLITE_DONE)
        cli_error(CMD_RECOVER ": no key with serial %s in the archive %s", serial, path);
    else
        cli_error(CMD_RECOVER ": cannot read the archive %s: %s", path, db ? sqlite3_errmsg(db) : "out of memory");
    sqlite3_finalize(st);
    sqlite3_close(db);
    return rc == SQLITE_ROW && cert->len > 0 && envelope->len > 0 && !cert->failed && !envelope->failed;
}

/* CMS_decrypt into a memory BIO, then the PKCS#8; the clear bytes are wiped. */
static EVP_PKEY *open_envelope(const sks_buf *envelope, EVP_PKEY *recovery)
{
    const unsigned char *q = envelope->data;
    CMS_ContentInfo *cms = d2i_CMS_ContentInfo(NULL, &q, (long)envelope->len);
    BIO *out = BIO_new(BIO_s_secmem());
    EVP_PKEY *key = NULL;
    BUF_MEM *mem = NULL;

    if (cms != NULL && out != NULL && CMS_decrypt(cms, recovery, NULL, NULL, out, CMS_BINARY) == 1
        && BIO_get_mem_ptr(out, &mem) == 1) {
        q = (const unsigned char *)mem->data;
        key = d2i_AutoPrivateKey(NULL, &q, (long)mem->length);
    }
    BIO_free(out); /* a secure-memory BIO: cleared as it is freed */
    CMS_ContentInfo_free(cms);
    return key;
}

static int write_key(EVP_PKEY *key, const char *path)
{
    BIO *mem = BIO_new(BIO_s_secmem());
    char *pem = NULL, err[512];
    long n = 0;
    int ok = mem != NULL && PEM_write_bio_PKCS8PrivateKey(mem, key, NULL, NULL, 0, NULL, NULL) == 1
             && (n = BIO_get_mem_data(mem, &pem)) > 0;

    if (ok && path != NULL) {
        ok = files_write_new(path, pem, (size_t)n, err, sizeof(err));
        if (!ok)
            cli_error(CMD_RECOVER ": %s", err);
    } else if (ok)
        ok = fwrite(pem, 1, (size_t)n, stdout) == (size_t)n;
    BIO_free(mem);
    return ok;
}

int skip_cmd_recover(cli_store *store, int argc, char **argv)
{
    const char *archive = NULL, *rkey = NULL, *serial_in = NULL, *out = NULL;
    const cli_opt opts[] = {
        { "--archive", OPT_VALUE, &archive }, { "--recovery-key", OPT_VALUE, &rkey },
        { "--serial", OPT_VALUE, &serial_in }, { "--out", OPT_VALUE, &out },
    };
    char serial[130], err[512] = "";
    sks_buf cert, envelope;
    EVP_PKEY *recovery = NULL, *key = NULL;
    X509 *x = NULL;
    const unsigned char *q;
    int rc, ok = 0;

    rc = cli_parse_command(CMD_RECOVER, argc, argv, 2, opts, sizeof(opts) / sizeof(opts[0]), RECOVER_USAGE);
    if (rc != CLI_CONTINUE)
        return rc;
    if (archive == NULL || rkey == NULL || serial_in == NULL || !normalise_serial(serial_in, serial, sizeof(serial))) {
        cli_error(CMD_RECOVER ": give --archive, --recovery-key and --serial (hex) (see sks skip recover --help)");
        return CLI_EXIT_USAGE;
    }
    if (out != NULL && access(out, F_OK) == 0) {
        cli_error(CMD_RECOVER ": %s already exists (refusing to overwrite it)", out);
        return CLI_EXIT_FAIL;
    }
    sks_buf_init(&cert);
    sks_buf_init(&envelope);
    if (!archive_lookup(archive, serial, &cert, &envelope))
        goto done;
    recovery = strncmp(rkey, "sks:", 4) == 0 ? skip_load_sks_key(store, CMD_RECOVER, rkey)
                                              : files_read_key(rkey, NULL, err, sizeof(err));
    if (recovery == NULL) {
        if (err[0])
            cli_error(CMD_RECOVER ": --recovery-key: %s", err);
        goto done;
    }
    q = cert.data;
    x = d2i_X509(NULL, &q, (long)cert.len);
    if ((key = open_envelope(&envelope, recovery)) == NULL) {
        cli_error(CMD_RECOVER ": the recovery key cannot open the archived key %s", serial);
        goto done;
    }
    if (x == NULL || EVP_PKEY_eq(X509_get0_pubkey(x), key) != 1) {
        cli_error(CMD_RECOVER ": the archived key %s does not match its certificate", serial);
        goto done;
    }
    ok = write_key(key, out);
    if (ok && out != NULL)
        printf("%s: the private key of certificate %s\n", out, serial);
done:
    ERR_clear_error();
    EVP_PKEY_free(key);
    EVP_PKEY_free(recovery);
    X509_free(x);
    sks_buf_free(&cert);
    sks_buf_free(&envelope);
    return ok ? CLI_EXIT_OK : CLI_EXIT_FAIL;
}
