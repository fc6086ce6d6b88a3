/*
 * sks-issuer: SKIP over the network (docs/skip-issuer.md). A FastCGI application behind nginx
 * (TLS ends there) with an HTTP interface modelled on EST (RFC 7030):
 *
 *   POST /.well-known/est/skip/simpleenroll   base64 PKCS#10 of the factory key in
 *                                              (application/pkcs10), the SKIP package out
 *                                              (application/pkcs7-mime, base64)
 *   POST /.well-known/est/skip/confirm        the same request: the device has the keys, the
 *                                              service forgets the package
 *
 * The enrolling party is an enrolment token (Authorization: Bearer, made by `sks-issuer
 * add-token`, stored as its SHA-256) or a TLS client certificate nginx verified. A token is
 * bound to the first factory key that uses it: the same key gets the same package again
 * (a lost response), any other key is refused. Keys of profiles that ask for it are archived
 * (CMS EnvelopedData to the recovery certificates) in the same transaction that releases
 * the package, so no package leaves without its archive.
 */
#include "config.h"
#include "request.h"
#include "state.h"
#include "../sks/cli.h"
#include "../sks/files.h"
#include "../sks/issuer.h"
#include "../sks/skip_build.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <fcgiapp.h>
#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/provider.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/store.h>

#define ENROLL_PATH "/.well-known/est/skip/simpleenroll"
#define CONFIRM_PATH "/.well-known/est/skip/confirm"
#define MAX_CLIENT_CERT (16 * 1024)
#define TOKEN_BYTES 32
#define DEFAULT_TOKEN_HOURS 168

static const char USAGE[] =
    "usage: sks-issuer --config FILE [--socket PATH]\n"
    "       sks-issuer --config FILE add-token --profile NAME --device NAME [--hours N]\n"
    "  Serves SKIP enrolments as a FastCGI application: on the socket spawn-fcgi passes as\n"
    "  standard input, or on --socket PATH. add-token prints a new one-time enrolment token\n"
    "  for a device (valid N hours, default 168); the service keeps only its SHA-256.\n";

typedef struct {
    issuer_config cfg;
    issuer_ca ca;
    STACK_OF(X509) *ca_chain;
    STACK_OF(X509) *recovery[ISSUER_MAX_PROFILES];
    issuer_state st;
    int log_fd;
} service;

/* ------------------------------------------------------------------ what the tool sources need */

void cli_error(const char *fmt, ...)
{
    va_list ap;

    fputs("sks-issuer: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

int cli_mkdir_parents(const char *path)
{
    (void)path;
    return 0; /* the service never creates a default CA */
}

/* ------------------------------------------------------------------ OpenSSL's heap */

/* The service makes other devices' private keys. OpenSSL wipes its key objects, but not all
 * of its temporary copies: an archived key's clear PKCS#8 was found in a freed heap block
 * after its package was out (OpenSSL 3.0's encoder behind EVP_PKEY2PKCS8 writes the DER
 * through a buffer it frees without wiping). A freed block keeps its bytes until reused, so
 * a core dump or a later memory disclosure would show keys of packages long gone. Every
 * block OpenSSL frees or moves is therefore wiped first (test_skip_issuer.py scans the
 * processes' memory). */
static void *wiping_malloc(size_t n, const char *file, int line)
{
    (void)file;
    (void)line;
    return malloc(n);
}

static void wiping_free(void *p, const char *file, int line)
{
    (void)file;
    (void)line;
    if (p == NULL)
        return;
    OPENSSL_cleanse(p, malloc_usable_size(p));
    free(p);
}

static void *wiping_realloc(void *p, size_t n, const char *file, int line)
{
    size_t old;
    void *q;

    if (p == NULL)
        return wiping_malloc(n, file, line);
    if (n == 0) {
        wiping_free(p, file, line);
        return NULL;
    }
    old = malloc_usable_size(p);
    if ((q = malloc(n)) == NULL)
        return NULL;
    memcpy(q, p, old < n ? old : n);
    wiping_free(p, file, line);
    return q;
}

/* ------------------------------------------------------------------ the log */

/* One line per event, appended; never a key, token or PIN. */
static void log_event(const service *sv, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void log_event(const service *sv, const char *fmt, ...)
{
    char line[4096];
    time_t now = time(NULL);
    struct tm tm;
    size_t n;
    va_list ap;

    gmtime_r(&now, &tm);
    n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%SZ ", &tm);
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
    va_end(ap);
    n = strlen(line);
    line[n++] = '\n';
    if (write(sv->log_fd, line, n) < 0)
        perror("sks-issuer: log");
}

/* ------------------------------------------------------------------ start-up */

static EVP_PKEY *load_uri_key(const char *uri)
{
    OSSL_STORE_CTX *s;
    EVP_PKEY *key = NULL;

    if (OSSL_PROVIDER_load(NULL, "default") == NULL || OSSL_PROVIDER_load(NULL, "sks") == NULL) {
        cli_error("cannot load the sks provider for the CA key (install it, or set OPENSSL_MODULES)");
        return NULL;
    }
    if ((s = OSSL_STORE_open(uri, NULL, NULL, NULL, NULL)) != NULL && OSSL_STORE_expect(s, OSSL_STORE_INFO_PKEY) == 1)
        while (key == NULL && !OSSL_STORE_eof(s)) {
            OSSL_STORE_INFO *info = OSSL_STORE_load(s);
            if (info == NULL)
                break;
            if (OSSL_STORE_INFO_get_type(info) == OSSL_STORE_INFO_PKEY)
                key = OSSL_STORE_INFO_get1_PKEY(info);
            OSSL_STORE_INFO_free(info);
        }
    OSSL_STORE_close(s);
    return key;
}

static int load_ca(service *sv)
{
    const char *uri = sv->cfg.ca_key;
    char err[512] = "";
    STACK_OF(X509) *certs;

    sv->ca.key = strncmp(uri, "sks:", 4) == 0 ? load_uri_key(uri) : files_read_key(uri, NULL, err, sizeof(err));
    if (sv->ca.key == NULL) {
        cli_error("ca-key %.*s: no private key there %s", (int)strcspn(uri, "?"), uri, err);
        ERR_print_errors_fp(stderr);
        return 0;
    }
    if ((certs = files_read_certs(sv->cfg.ca_cert, err, sizeof(err))) == NULL) {
        cli_error("ca-cert: %s", err);
        return 0;
    }
    sv->ca.cert = sk_X509_shift(certs);
    sv->ca_chain = certs;
    if (EVP_PKEY_eq(X509_get0_pubkey(sv->ca.cert), sv->ca.key) != 1 || X509_check_ca(sv->ca.cert) < 1) {
        cli_error("%s is not a CA certificate for ca-key", sv->cfg.ca_cert);
        return 0;
    }
    return 1;
}

static int load_recovery(service *sv)
{
    size_t i, j;
    char err[512];

    for (i = 0; i < sv->cfg.nprofiles; i++) {
        const issuer_profile *p = &sv->cfg.profiles[i];
        sv->recovery[i] = sk_X509_new_null();
        for (j = 0; j < p->nrecovery; j++) {
            STACK_OF(X509) *certs = files_read_certs(p->recovery[j], err, sizeof(err));
            if (certs == NULL) {
                cli_error("profile %s: recovery-cert: %s", p->name, err);
                return 0;
            }
            while (sk_X509_num(certs) > 0)
                sk_X509_push(sv->recovery[i], sk_X509_shift(certs));
            sk_X509_free(certs);
        }
    }
    return 1;
}

static int open_log(service *sv)
{
    if (!sv->cfg.log[0]) {
        sv->log_fd = STDERR_FILENO;
        return 1;
    }
    sv->log_fd = open(sv->cfg.log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (sv->log_fd < 0)
        cli_error("log %s: %s", sv->cfg.log, strerror(errno));
    return sv->log_fd >= 0;
}

/* ------------------------------------------------------------------ HTTP answers */

static void answer_error(FCGX_Stream *out, int status, const char *reason, const char *msg)
{
    FCGX_FPrintF(out, "Status: %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nCache-Control: no-store\r\n\r\n%s\n",
                 status, reason, msg);
}

/* EST answers in base64 (RFC 7030 section 4.2.3), here with the whole SKIP package. */
static void answer_package(FCGX_Stream *out, const unsigned char *der, size_t len)
{
    unsigned char line[80];
    size_t i;

    FCGX_FPrintF(out, "Status: 200 OK\r\nContent-Type: application/pkcs7-mime; smime-type=server-generated-key\r\n"
                      "Content-Transfer-Encoding: base64\r\nCache-Control: no-store\r\n\r\n");
    for (i = 0; i < len; i += 48) {
        int n = EVP_EncodeBlock(line, der + i, (int)(len - i < 48 ? len - i : 48));
        FCGX_PutStr((const char *)line, n, out);
        FCGX_PutS("\r\n", out);
    }
}

/* ------------------------------------------------------------------ who is asking */

typedef struct {
    char who[80];      /* "token:<sha256 hex>" or "cert:<sha256 hex>" */
    char shown[32];    /* for the log: a prefix of the hash */
    char device[256];  /* certificate enrolments: the client certificate's CN */
    int by_cert;
} requester;

static void hex(const unsigned char *in, size_t n, char *out)
{
    size_t i;

    for (i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", in[i]);
}

static void token_who(const char *token, char who[80])
{
    unsigned char md[32];
    char h[65];

    EVP_Digest(token, strlen(token), md, NULL, EVP_sha256(), NULL);
    hex(md, 32, h);
    snprintf(who, 80, "token:%s", h);
}

/* nginx's $ssl_client_escaped_cert: the PEM, URL-encoded. */
static X509 *client_certificate(const char *escaped)
{
    char pem[MAX_CLIENT_CERT];
    size_t i = 0, n = 0;
    BIO *b;
    X509 *x;

    for (; escaped[i] != '\0' && n < sizeof(pem) - 1; n++) {
        unsigned int c;
        if (escaped[i] == '%' && sscanf(escaped + i + 1, "%2x", &c) == 1 && escaped[i + 1] && escaped[i + 2]) {
            pem[n] = (char)c;
            i += 3;
        } else
            pem[n] = escaped[i++];
    }
    if (escaped[i] != '\0')
        return NULL;
    b = BIO_new_mem_buf(pem, (int)n);
    x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    return x;
}

/* The client certificate's CN as UTF-8, if it is a usable device name. */
static int certificate_device(X509 *x, char *out, size_t n)
{
    X509_NAME *name = X509_get_subject_name(x);
    int i = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
    X509_NAME_ENTRY *cn = i >= 0 ? X509_NAME_get_entry(name, i) : NULL;
    unsigned char *utf8 = NULL;
    int len = cn != NULL ? ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(cn)) : -1;
    int ok = len > 0 && (size_t)len < n && memchr(utf8, 0, (size_t)len) == NULL
             && issuer_device_name_ok((const char *)utf8);

    if (ok)
        memcpy(out, utf8, (size_t)len + 1);
    OPENSSL_free(utf8);
    return ok;
}

/* 1: r says who asks; 0: no usable credential (401); -1: a credential that is refused
 * (403). *why says why. */
static int identify(const service *sv, FCGX_ParamArray env, requester *r, const char **why)
{
    char token[ISSUER_MAX_TOKEN + 1];
    const char *auth = FCGX_GetParam("HTTP_AUTHORIZATION", env);
    const char *verify = FCGX_GetParam("SSL_CLIENT_VERIFY", env);
    const char *cert = FCGX_GetParam("SSL_CLIENT_CERT", env);

    memset(r, 0, sizeof(*r));
    if ((sv->cfg.auth & AUTH_TOKEN) && auth != NULL) {
        if (!issuer_parse_bearer(auth, token)) {
            *why = "the Authorization header is not \"Bearer TOKEN\"";
            return 0;
        }
        token_who(token, r->who);
        OPENSSL_cleanse(token, sizeof(token));
    } else if ((sv->cfg.auth & AUTH_CERT) && verify != NULL && strcmp(verify, "SUCCESS") == 0 && cert != NULL) {
        X509 *x = client_certificate(cert);
        unsigned char md[32];
        unsigned int len = 0;
        char h[65];
        if (x == NULL || X509_digest(x, EVP_sha256(), md, &len) != 1) {
            X509_free(x);
            *why = "the client certificate nginx passed is unreadable";
            return 0;
        }
        if (!certificate_device(x, r->device, sizeof(r->device))) {
            X509_free(x);
            *why = "the client certificate's CN is not a usable device name (1 to 64 bytes of UTF-8, no control"
                   " character, quote or backslash)";
            return -1;
        }
        X509_free(x);
        hex(md, 32, h);
        snprintf(r->who, sizeof(r->who), "cert:%s", h);
        r->by_cert = 1;
    } else {
        *why = (sv->cfg.auth & AUTH_TOKEN) ? "an enrolment token (Authorization: Bearer) is required"
                                           : "a verified TLS client certificate is required";
        return 0;
    }
    snprintf(r->shown, sizeof(r->shown), "%.*s", (int)(strchr(r->who, ':') - r->who) + 13, r->who);
    return 1;
}

/* ------------------------------------------------------------------ archival */

typedef struct {
    service *sv;
    const issuer_profile *profile;
    STACK_OF(X509) *recovery;
    const char *device;
    long now;
    char keys[2048]; /* for the log: TYPE:serial[:archived],... */
} issue_ctx;

static int serial_hex(X509 *cert, char *out, size_t n)
{
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
    char *h = bn ? BN_bn2hex(bn) : NULL;
    int ok = h != NULL && strlen(h) < n;

    if (ok)
        strcpy(out, h);
    OPENSSL_free(h);
    BN_free(bn);
    return ok;
}

/* The PKCS#8 as CMS EnvelopedData (AES-256-CBC) to every recovery certificate: RSA ones by
 * RSAES-OAEP with SHA-256, EC ones by ECDH (OpenSSL's key agreement recipient info). */
static int envelope_key(EVP_PKEY *priv, STACK_OF(X509) *recipients, unsigned char **der, int *len)
{
    PKCS8_PRIV_KEY_INFO *p8 = EVP_PKEY2PKCS8(priv);
    unsigned char *clear = NULL;
    int clen = p8 ? i2d_PKCS8_PRIV_KEY_INFO(p8, &clear) : -1, i, ok;
    CMS_ContentInfo *cms = CMS_encrypt(NULL, NULL, EVP_aes_256_cbc(), CMS_BINARY | CMS_PARTIAL);
    BIO *in = clen > 0 ? BIO_new_mem_buf(clear, clen) : NULL;

    PKCS8_PRIV_KEY_INFO_free(p8);
    ok = cms != NULL && in != NULL && sk_X509_num(recipients) > 0;
    for (i = 0; ok && i < sk_X509_num(recipients); i++) {
        X509 *x = sk_X509_value(recipients, i);
        CMS_RecipientInfo *ri = CMS_add1_recipient_cert(cms, x, CMS_KEY_PARAM);
        if (ri != NULL && EVP_PKEY_is_a(X509_get0_pubkey(x), "RSA")) {
            EVP_PKEY_CTX *pctx = CMS_RecipientInfo_get0_pkey_ctx(ri);
            ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_OAEP_PADDING) > 0
                 && EVP_PKEY_CTX_set_rsa_oaep_md(pctx, EVP_sha256()) > 0;
        }
        ok = ok && ri != NULL;
    }
    ok = ok && CMS_final(cms, in, NULL, CMS_BINARY) == 1 && (*len = i2d_CMS_ContentInfo(cms, der)) > 0;
    BIO_free(in);
    CMS_ContentInfo_free(cms);
    if (clear != NULL)
        OPENSSL_clear_free(clear, (size_t)clen);
    return ok;
}

/* skip_build's hook: archive the key if its profile says so, inside the open transaction. */
static int archive_hook(void *arg, size_t index, const skip_build_key *spec, EVP_PKEY *priv, X509 *cert)
{
    issue_ctx *c = arg;
    char serial[128] = "?", item[200];
    unsigned char *env = NULL, *cder = NULL;
    int env_len = 0, cert_len = i2d_X509(cert, &cder), ok = serial_hex(cert, serial, sizeof(serial));

    if (ok && spec->archive) {
        ok = cert_len > 0 && envelope_key(priv, c->recovery, &env, &env_len)
             && state_archive(&c->sv->st, serial, c->device, c->profile->name, cder, (size_t)cert_len, env,
                              (size_t)env_len, c->now);
        if (!ok)
            log_event(c->sv, "archive-failed device=\"%s\" profile=%s key=%zu serial=%s: %s", c->device,
                      c->profile->name, index + 1, serial, sqlite3_errmsg(c->sv->st.db));
    }
    snprintf(item, sizeof(item), "%s%s:%s%s", index ? "," : "", c->profile->key_type[index], serial,
             spec->archive ? ":archived" : "");
    if (strlen(c->keys) + strlen(item) < sizeof(c->keys))
        strcat(c->keys, item);
    OPENSSL_free(env);
    OPENSSL_free(cder);
    return ok;
}

/* ------------------------------------------------------------------ enrolment */

/* The subject the profile gives: its base DN with CN = the device name. */
static int set_subject(X509_REQ *req, const issuer_profile *p, const char *device)
{
    char err[256];
    X509_NAME *name = p->subject[0] ? issuer_parse_dn(p->subject, err, sizeof(err)) : X509_NAME_new();
    int i, ok;

    if (name == NULL)
        return 0;
    while ((i = X509_NAME_get_index_by_NID(name, NID_commonName, -1)) >= 0)
        X509_NAME_ENTRY_free(X509_NAME_delete_entry(name, i));
    ok = X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_UTF8, (const unsigned char *)device, -1, -1, 0) == 1
         && X509_REQ_set_subject_name(req, name) == 1;
    X509_NAME_free(name);
    return ok;
}

static int profile_index(const service *sv, const issuer_profile *p)
{
    return (int)(p - sv->cfg.profiles);
}

/* Makes, archives and stores the package, all in the caller's transaction. */
static int issue(service *sv, const requester *r, const enrolment *e, X509_REQ *req, const char *factory,
                 unsigned char **der, size_t *len, issue_ctx *ctx, char *err, size_t errlen)
{
    const issuer_profile *p = issuer_config_profile(&sv->cfg, e->profile);
    skip_build_params bp;

    if (p == NULL) {
        snprintf(err, errlen, "the enrolment's profile %s is not configured", e->profile);
        return 0;
    }
    if (!set_subject(req, p, e->device)) {
        snprintf(err, errlen, "cannot form the subject of profile %s", p->name);
        return 0;
    }
    memset(ctx, 0, sizeof(*ctx));
    ctx->sv = sv;
    ctx->profile = p;
    ctx->recovery = sv->recovery[profile_index(sv, p)];
    ctx->device = e->device;
    ctx->now = (long)time(NULL);
    memset(&bp, 0, sizeof(bp));
    bp.req = req;
    bp.ca = &sv->ca;
    bp.ca_chain = sv->ca_chain;
    bp.keys = p->keys;
    bp.nkeys = p->nkeys;
    bp.aes_bits = p->aes_bits;
    bp.days = sv->cfg.days;
    bp.hook = archive_hook;
    bp.hook_arg = ctx;
    if (!skip_build_package(&bp, der, len, err, errlen))
        return 0;
    if (!state_store_package(&sv->st, r->who, factory, *der, *len, ctx->now)) {
        snprintf(err, errlen, "cannot store the package");
        return 0;
    }
    return 1;
}

typedef struct {
    int status;
    const char *reason;
    char msg[600];
} outcome;

static void refuse(outcome *o, int status, const char *reason, const char *msg)
{
    o->status = status;
    o->reason = reason;
    snprintf(o->msg, sizeof(o->msg), "%s", msg);
}

/* The enrolment's state decides: unknown, expired, used by another key, confirmed, or
 * (same key) the kept package; else a new one. Returns 1 with a package to send. */
static int enroll_locked(service *sv, const requester *r, X509_REQ *req, const char *factory, int confirm,
                         unsigned char **der, size_t *len, outcome *o, issue_ctx *ctx)
{
    long now = (long)time(NULL);
    enrolment e;
    int ok = 0;

    if (r->by_cert
        && !state_ensure_enrolment(&sv->st, r->who, sv->cfg.cert_profile, r->device, now + 3650L * 86400)) {
        refuse(o, 500, "Internal Server Error", "cannot record the enrolment");
        return 0;
    }
    if (!state_get(&sv->st, r->who, &e))
        refuse(o, 500, "Internal Server Error", "cannot read the enrolments");
    else if (!e.found)
        refuse(o, 403, "Forbidden", "unknown enrolment token");
    else if (e.factory[0] && strcmp(e.factory, factory) != 0)
        refuse(o, 403, "Forbidden", "this enrolment was used by another factory key (token already used)");
    else if (e.confirmed)
        refuse(o, 403, "Forbidden", confirm ? "already confirmed" : "this enrolment is complete (token already used)");
    else if (!e.factory[0] && e.expires < now)
        refuse(o, 403, "Forbidden", "the enrolment token expired");
    else if (e.factory[0] && e.issued + sv->cfg.package_lifetime < now)
        refuse(o, 410, "Gone", "the package expired unconfirmed; ask for a new enrolment");
    else if (confirm && !e.factory[0])
        refuse(o, 409, "Conflict", "nothing was issued to confirm");
    else if (confirm) {
        ok = state_confirm(&sv->st, r->who, now);
        if (!ok)
            refuse(o, 500, "Internal Server Error", "cannot record the confirmation");
        snprintf(ctx->keys, sizeof(ctx->keys), "-");
        snprintf(o->msg, sizeof(o->msg), "%s", e.device);
    } else if (e.factory[0] && e.package != NULL) {
        *der = e.package;
        *len = e.package_len;
        e.package = NULL;
        snprintf(o->msg, sizeof(o->msg), "again");
        snprintf(ctx->keys, sizeof(ctx->keys), "(kept package)");
        ok = 1;
    } else {
        char err[600] = "";
        ok = issue(sv, r, &e, req, factory, der, len, ctx, err, sizeof(err));
        if (!ok) {
            refuse(o, 500, "Internal Server Error", "the package was not released (issuance or archival failed)");
            log_event(sv, "issue-failed who=%s device=\"%s\" profile=%s: %s", r->shown, e.device, e.profile, err);
        } else
            snprintf(o->msg, sizeof(o->msg), "issued");
    }
    if (ok && !o->status)
        snprintf(ctx->keys + strlen(ctx->keys), sizeof(ctx->keys) - strlen(ctx->keys), " device=\"%s\" profile=%s",
                 e.device, e.profile);
    enrolment_free(&e);
    return ok;
}

static void read_body(FCGX_Request *rq, char *body, size_t *n, int *too_big)
{
    const char *cl = FCGX_GetParam("CONTENT_LENGTH", rq->envp);
    long want = cl ? strtol(cl, NULL, 10) : 0;
    int got;

    *n = 0;
    *too_big = want > ISSUER_MAX_BODY;
    if (want <= 0 || *too_big)
        return;
    got = FCGX_GetStr(body, (int)want, rq->in);
    *n = got > 0 ? (size_t)got : 0;
}

static void handle(service *sv, FCGX_Request *rq)
{
    static char body[ISSUER_MAX_BODY];
    const char *method = FCGX_GetParam("REQUEST_METHOD", rq->envp);
    const char *path = FCGX_GetParam("DOCUMENT_URI", rq->envp);
    const char *source = FCGX_GetParam("REMOTE_ADDR", rq->envp);
    const char *why = NULL;
    char err[300], source_who[80], factory[33] = "";
    unsigned char *der = NULL;
    size_t n = 0, len = 0;
    int too_big, confirm, ok;
    requester r;
    outcome o;
    issue_ctx ctx;
    X509_REQ *req = NULL;
    long now = (long)time(NULL);

    memset(&o, 0, sizeof(o));
    memset(&ctx, 0, sizeof(ctx));
    source = source ? source : "?";
    if (path == NULL)
        path = FCGX_GetParam("SCRIPT_NAME", rq->envp);
    confirm = path && strcmp(path, CONFIRM_PATH) == 0;
    if (path == NULL || (!confirm && strcmp(path, ENROLL_PATH) != 0)) {
        answer_error(rq->out, 404, "Not Found", "unknown path (POST " ENROLL_PATH " or " CONFIRM_PATH ")");
        return;
    }
    if (method == NULL || strcmp(method, "POST") != 0) {
        answer_error(rq->out, 405, "Method Not Allowed", "use POST");
        return;
    }
    snprintf(source_who, sizeof(source_who), "source:%s", source);
    if ((ok = identify(sv, rq->envp, &r, &why)) != 1) {
        log_event(sv, "refused source=%s: %s", source, why);
        if (ok < 0)
            answer_error(rq->out, 403, "Forbidden", why);
        else
            answer_error(rq->out, 401, "Unauthorized", why);
        return;
    }
    if (!state_rate_ok(&sv->st, source_who, sv->cfg.rate_limit, now)
        || !state_rate_ok(&sv->st, r.who, sv->cfg.rate_limit, now)) {
        log_event(sv, "refused who=%s source=%s: rate limit", r.shown, source);
        answer_error(rq->out, 429, "Too Many Requests", "too many requests; try again in a minute");
        return;
    }
    read_body(rq, body, &n, &too_big);
    if (too_big || (req = issuer_parse_pkcs10(body, n, err, sizeof(err))) == NULL
        || !issuer_check_request(req, factory, err, sizeof(err))) {
        if (too_big)
            snprintf(err, sizeof(err), "the body is larger than %d bytes", ISSUER_MAX_BODY);
        log_event(sv, "refused who=%s source=%s: %s", r.shown, source, err);
        answer_error(rq->out, 400, "Bad Request", err);
        X509_REQ_free(req);
        return;
    }
    if (!state_begin(&sv->st)) {
        answer_error(rq->out, 503, "Service Unavailable", "the database is busy; try again");
        X509_REQ_free(req);
        return;
    }
    ok = enroll_locked(sv, &r, req, factory, confirm, &der, &len, &o, &ctx);
    if (ok && !state_commit(&sv->st)) {
        ok = 0;
        refuse(&o, 500, "Internal Server Error", "the package was not released (the database refused it)");
        log_event(sv, "issue-failed who=%s: commit: %s", r.shown, sqlite3_errmsg(sv->st.db));
    }
    if (!ok) {
        state_rollback(&sv->st);
        log_event(sv, "refused who=%s source=%s factory=%s: %s", r.shown, source, factory, o.msg);
        answer_error(rq->out, o.status, o.reason, o.msg);
    } else if (confirm) {
        log_event(sv, "confirmed who=%s source=%s factory=%s device=\"%s\"", r.shown, source, factory, o.msg);
        FCGX_FPrintF(rq->out, "Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nconfirmed\n");
    } else {
        log_event(sv, "%s who=%s source=%s factory=%s keys=%s", o.msg, r.shown, source, factory, ctx.keys);
        answer_package(rq->out, der, len);
    }
    OPENSSL_free(der);
    X509_REQ_free(req);
}

/* ------------------------------------------------------------------ commands */

static int serve(service *sv, const char *socket_path)
{
    FCGX_Request rq;
    int fd = 0;

    if (FCGX_Init() != 0)
        return 0;
    if (socket_path != NULL && (fd = FCGX_OpenSocket(socket_path, 64)) < 0) {
        cli_error("cannot listen on %s", socket_path);
        return 0;
    }
    if (FCGX_InitRequest(&rq, fd, 0) != 0)
        return 0;
    log_event(sv, "start pid=%ld", (long)getpid());
    while (FCGX_Accept_r(&rq) >= 0) {
        handle(sv, &rq);
        ERR_clear_error();
        FCGX_Finish_r(&rq);
    }
    return 1;
}

static int add_token(service *sv, const char *profile, const char *device, long hours)
{
    unsigned char raw[TOKEN_BYTES];
    char token[2 * TOKEN_BYTES + 1], who[80];
    size_t i;
    int ok;

    if (issuer_config_profile(&sv->cfg, profile) == NULL) {
        cli_error("add-token: no profile %s in the configuration", profile);
        return 0;
    }
    if (!issuer_device_name_ok(device)) {
        cli_error("add-token: --device must be 1 to %d bytes of UTF-8 without control characters, quotes or"
                  " backslashes", ISSUER_MAX_DEVICE);
        return 0;
    }
    if (RAND_bytes(raw, sizeof(raw)) != 1)
        return 0;
    for (i = 0; i < sizeof(raw); i++) /* base64url would do; hex is what people copy safely */
        sprintf(token + 2 * i, "%02x", raw[i]);
    token_who(token, who);
    ok = state_add_enrolment(&sv->st, who, profile, device, (long)time(NULL) + hours * 3600);
    if (ok) {
        printf("%s\n", token);
        log_event(sv, "token-added who=%.18s device=\"%s\" profile=%s hours=%ld", who, device, profile, hours);
    } else
        cli_error("add-token: cannot store it: %s", sqlite3_errmsg(sv->st.db));
    OPENSSL_cleanse(raw, sizeof(raw));
    OPENSSL_cleanse(token, sizeof(token));
    return ok;
}

static const char *arg_value(int argc, char **argv, const char *name)
{
    int i;

    for (i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return argv[i + 1];
    return NULL;
}

static int has_arg(int argc, char **argv, const char *name)
{
    int i;

    for (i = 1; i < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return 1;
    return 0;
}

int main(int argc, char **argv)
{
    static service sv;
    const char *config = arg_value(argc, argv, "--config");
    char err[600];
    int adding = has_arg(argc, argv, "add-token"), ok;

    /* Before OpenSSL allocates anything. */
    if (!CRYPTO_set_mem_functions(wiping_malloc, wiping_realloc, wiping_free)) {
        cli_error("cannot make OpenSSL wipe the memory it frees");
        return 1;
    }
    if (has_arg(argc, argv, "--help") || has_arg(argc, argv, "-h")) {
        fputs(USAGE, stdout);
        return 0;
    }
    if (config == NULL) {
        fputs(USAGE, stderr);
        return 2;
    }
    if (!issuer_config_load(config, &sv.cfg, err, sizeof(err))) {
        cli_error("%s: %s", config, err);
        return 1;
    }
    umask(077);
    if (!open_log(&sv) || !state_open(&sv.st, &sv.cfg, err, sizeof(err))) {
        if (sv.st.db != NULL)
            cli_error("%s", err);
        return 1;
    }
    if (adding) {
        const char *profile = arg_value(argc, argv, "--profile"), *device = arg_value(argc, argv, "--device");
        const char *hours = arg_value(argc, argv, "--hours");
        long h = hours ? strtol(hours, NULL, 10) : DEFAULT_TOKEN_HOURS;
        if (profile == NULL || device == NULL || h <= 0 || h > 24L * 3650) {
            fputs(USAGE, stderr);
            return 2;
        }
        ok = add_token(&sv, profile, device, h);
    } else
        ok = load_ca(&sv) && load_recovery(&sv) && serve(&sv, arg_value(argc, argv, "--socket"));
    state_close(&sv.st);
    return ok ? 0 : 1;
}
