/* Key and certificate files. Messages name the file and what was wrong with it. */
#include "files.h"
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>

typedef struct {
    const char *pass; /* NULL: ask on the terminal if there is one */
    const char *path;
} pass_source;

/* Supplies the pass phrase to OpenSSL: the one given, else asked on the terminal (no echo);
 * without either an encrypted key fails. */
static int pass_cb(char *buf, int size, int rwflag, void *u)
{
    const pass_source *src = u;
    const char *pass = src->pass;
    char prompt[300];
    size_t n;

    (void)rwflag;
    if (pass == NULL) {
        snprintf(prompt, sizeof(prompt), "pass phrase of %s: ", src->path);
        return size > 0 && cli_ask_secret(prompt, 0, buf, (size_t)size) ? (int)strlen(buf) : -1;
    }
    n = strlen(pass);
    if (n > (size_t)size)
        return -1;
    memcpy(buf, pass, n);
    return (int)n;
}

static BIO *open_file(const char *path, char *err, size_t errlen)
{
    BIO *b = BIO_new_file(path, "rb");

    if (b == NULL)
        snprintf(err, errlen, "cannot open %s: %s", path, errno ? strerror(errno) : "error");
    return b;
}

EVP_PKEY *files_read_key(const char *path, const char *pass, char *err, size_t errlen)
{
    BIO *b = open_file(path, err, errlen);
    pass_source src = { pass, path };
    EVP_PKEY *k = b ? PEM_read_bio_PrivateKey(b, NULL, pass_cb, &src) : NULL;

    if (b != NULL && k == NULL)
        snprintf(err, errlen, "%s holds no readable PEM private key%s", path,
                 pass ? " (or the pass phrase is wrong)" : " (if it is encrypted, give --passin)");
    BIO_free(b);
    ERR_clear_error();
    return k;
}

STACK_OF(X509) *files_read_certs(const char *path, char *err, size_t errlen)
{
    BIO *b = open_file(path, err, errlen);
    STACK_OF(X509) *certs = b ? sk_X509_new_null() : NULL;
    X509 *x;

    while (certs != NULL && (x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL)
        if (!sk_X509_push(certs, x)) {
            X509_free(x);
            break;
        }
    if (b != NULL && (certs == NULL || sk_X509_num(certs) == 0)) {
        snprintf(err, errlen, "%s holds no PEM certificate", path);
        sk_X509_pop_free(certs, X509_free);
        certs = NULL;
    }
    BIO_free(b);
    ERR_clear_error(); /* the loop ends on "no start line" */
    return certs;
}

int files_read_pkcs12(const char *path, const char *pass, EVP_PKEY **key, X509 **cert, STACK_OF(X509) **chain,
                      char *err, size_t errlen)
{
    BIO *b = open_file(path, err, errlen);
    PKCS12 *p12 = b ? d2i_PKCS12_bio(b, NULL) : NULL;
    char asked[CLI_SECRET_MAX], prompt[300];
    int ok = 0;

    *key = NULL;
    *cert = NULL;
    *chain = NULL;
    if (b == NULL)
        return 0;
    snprintf(prompt, sizeof(prompt), "password of %s: ", path);
    /* No password given, and neither none nor the empty one opens it: ask on the terminal. */
    if (p12 != NULL && pass == NULL && PKCS12_mac_present(p12) && PKCS12_verify_mac(p12, NULL, 0) != 1
        && PKCS12_verify_mac(p12, "", 0) != 1 && cli_ask_secret(prompt, 0, asked, sizeof(asked)))
        pass = asked;
    if (p12 == NULL)
        snprintf(err, errlen, "%s is not a PKCS#12 file", path);
    else if (PKCS12_mac_present(p12) && PKCS12_verify_mac(p12, pass, -1) != 1
             && (pass != NULL || PKCS12_verify_mac(p12, "", 0) != 1))
        snprintf(err, errlen, "%s: wrong password (give the right one with --passin)", path);
    else if (PKCS12_parse(p12, pass, key, cert, chain) != 1)
        snprintf(err, errlen, "%s cannot be decrypted (wrong --passin, or an algorithm OpenSSL 3 only has in its "
                 "legacy provider)", path);
    else if (*key == NULL || *cert == NULL)
        snprintf(err, errlen, "%s must hold a private key and its certificate", path);
    else
        ok = 1;
    if (!ok) {
        EVP_PKEY_free(*key);
        X509_free(*cert);
        sk_X509_pop_free(*chain, X509_free);
        *key = NULL;
        *cert = NULL;
        *chain = NULL;
    }
    OPENSSL_cleanse(asked, sizeof(asked));
    PKCS12_free(p12);
    BIO_free(b);
    ERR_clear_error();
    return ok;
}

static int read_stream(FILE *f, const char *path, uint8_t *buf, size_t size, size_t *n, char *err, size_t errlen)
{
    *n = fread(buf, 1, size, f);
    if (ferror(f)) {
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        return 0;
    }
    return 1;
}

int files_read_upto(const char *path, uint8_t *buf, size_t size, size_t *n, char *err, size_t errlen)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    int ok;

    *n = 0;
    if (f == NULL) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return 0;
    }
    ok = read_stream(f, path, buf, size, n, err, errlen);
    if (f != stdin)
        fclose(f);
    return ok;
}

int files_read_whole(const char *path, uint8_t *buf, size_t size, size_t *n, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    int ok;

    *n = 0;
    if (f == NULL) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return 0;
    }
    ok = read_stream(f, path, buf, size, n, err, errlen);
    fclose(f);
    if (ok && (*n == size || *n == 0)) {
        snprintf(err, errlen, "%s is empty or larger than %zu bytes", path, size - 1);
        ok = 0;
    }
    return ok;
}

int files_write_new(const char *path, const void *data, size_t n, char *err, size_t errlen)
{
    const unsigned char *p = data;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);

    if (fd < 0) {
        if (errno == EEXIST)
            snprintf(err, errlen, "%s already exists (refusing to overwrite it)", path);
        else
            snprintf(err, errlen, "cannot create %s: %s", path, strerror(errno));
        return 0;
    }
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
            close(fd);
            unlink(path);
            return 0;
        }
        p += w;
        n -= (size_t)w;
    }
    if (close(fd) != 0) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
        unlink(path);
        return 0;
    }
    return 1;
}
