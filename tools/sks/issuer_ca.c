/*
 * The emulated issuer's certification authority. The issuer never holds a generated private
 * key, so it cannot self-sign an end-entity certificate; instead it keeps a small local CA
 * (by default next to the store) and certifies the public key the device returned.
 */
#include "issuer.h"
#include "cli.h"
#include "files.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#define CA_DAYS 3650
#define CA_CURVE "P-256"

/* ------------------------------------------------------------------ distinguished names */

/* Splits off the next component of a DN at `sep`, honouring backslash escapes; the
 * component is unescaped into out. Returns the position after the separator, or NULL at
 * the end. */
static const char *next_component(const char *p, char sep, char *out, size_t outlen, int *too_long)
{
    size_t n = 0;

    *too_long = 0;
    while (*p && *p != sep) {
        if (*p == '\\' && p[1] != '\0')
            p++;
        if (n + 1 < outlen)
            out[n++] = *p;
        else
            *too_long = 1;
        p++;
    }
    out[n] = '\0';
    return *p == sep ? p + 1 : NULL;
}

static char *trim(char *s)
{
    char *e;

    while (*s == ' ' || *s == '\t')
        s++;
    e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
        *--e = '\0';
    return s;
}

/* Adds "TYPE=VALUE" to the name at position `loc` (-1: append, 0: prepend). */
static int add_component(X509_NAME *name, char *comp, int loc, char *err, size_t errlen)
{
    char *eq = strchr(comp, '=');
    char *type, *value;

    if (eq == NULL) {
        snprintf(err, errlen, "subject component '%s' is not TYPE=VALUE", trim(comp));
        return 0;
    }
    *eq = '\0';
    type = trim(comp);
    value = trim(eq + 1);
    if (*type == '\0' || *value == '\0') {
        snprintf(err, errlen, "subject component '%s=%s' has an empty %s", type, value, *type ? "value" : "type");
        return 0;
    }
    if (OBJ_txt2nid(type) == NID_undef) {
        snprintf(err, errlen, "unknown attribute type '%s' in the subject (use e.g. CN, O, OU, C, L, ST)", type);
        return 0;
    }
    if (X509_NAME_add_entry_by_txt(name, type, MBSTRING_UTF8, (const unsigned char *)value, -1, loc, 0) != 1) {
        snprintf(err, errlen, "subject attribute %s='%s' is not acceptable (too long or wrong characters?)", type,
                 value);
        return 0;
    }
    return 1;
}

/*
 * "/O=Example/CN=alice" lists the RDNs in encoding order (OpenSSL's -subj form);
 * "CN=alice, O=Example" is an RFC 4514 string, most specific first, so its components are
 * prepended to get the same encoding.
 */
X509_NAME *issuer_parse_dn(const char *dn, char *err, size_t errlen)
{
    X509_NAME *name = X509_NAME_new();
    int slash = dn[0] == '/';
    const char *p = slash ? dn + 1 : dn;
    char comp[1024];
    int too_long;

    if (name == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    while (p != NULL) {
        p = next_component(p, slash ? '/' : ',', comp, sizeof(comp), &too_long);
        if (too_long) {
            snprintf(err, errlen, "a subject component is longer than %zu bytes", sizeof(comp) - 1);
            goto fail;
        }
        if (*trim(comp) == '\0' && p == NULL && X509_NAME_entry_count(name) > 0)
            break; /* a trailing separator */
        if (!add_component(name, comp, slash ? -1 : 0, err, errlen))
            goto fail;
    }
    return name;
fail:
    X509_NAME_free(name);
    return NULL;
}

/* ------------------------------------------------------------------ certificates */

static int add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509_EXTENSION *ext;
    int ok;

    X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
    ext = X509V3_EXT_nconf_nid(NULL, &ctx, nid, value);
    ok = ext != NULL && X509_add_ext(x, ext, -1) == 1;
    X509_EXTENSION_free(ext);
    return ok;
}

/* A random positive 159-bit serial: unique enough that no two certificates collide (the
 * device refuses a second key with the same end-entity certificate). */
static int set_random_serial(X509 *x)
{
    uint8_t r[20];
    BIGNUM *bn;
    int ok;

    if (RAND_bytes(r, sizeof(r)) != 1)
        return 0;
    r[0] &= 0x7F;
    r[0] |= 0x01; /* never zero, never negative */
    bn = BN_bin2bn(r, sizeof(r), NULL);
    ok = bn != NULL && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL;
    BN_free(bn);
    return ok;
}

/* Digest for a CA signature: none for EdDSA, else SHA-2 matched to the key's strength. */
static const EVP_MD *signing_md(EVP_PKEY *key)
{
    int type = EVP_PKEY_get_base_id(key);

    if (type == EVP_PKEY_ED25519 || type == EVP_PKEY_ED448)
        return NULL;
    if (type == EVP_PKEY_EC && EVP_PKEY_get_bits(key) > 384)
        return EVP_sha512();
    if (type == EVP_PKEY_EC && EVP_PKEY_get_bits(key) > 256)
        return EVP_sha384();
    return EVP_sha256();
}

/* Version 3, random serial, validity from now for `days`. */
static X509 *new_certificate(EVP_PKEY *pub, const X509_NAME *subject, const X509_NAME *issuer, int days)
{
    X509 *x = X509_new();

    if (x == NULL || X509_set_version(x, X509_VERSION_3) != 1 || !set_random_serial(x)
        || X509_set_subject_name(x, subject) != 1 || X509_set_issuer_name(x, issuer) != 1
        || X509_gmtime_adj(X509_getm_notBefore(x), 0) == NULL
        || X509_time_adj_ex(X509_getm_notAfter(x), days, 0, NULL) == NULL || X509_set_pubkey(x, pub) != 1) {
        X509_free(x);
        return NULL;
    }
    return x;
}

static const char *key_usage_for(EVP_PKEY *pub)
{
    switch (EVP_PKEY_get_base_id(pub)) {
    case EVP_PKEY_EC:
        return "critical,digitalSignature,keyAgreement";
    case EVP_PKEY_RSA:
        return "critical,digitalSignature,keyEncipherment";
    default: /* Ed25519 */
        return "critical,digitalSignature";
    }
}

X509 *issuer_ca_issue_name(const issuer_ca *ca, EVP_PKEY *pub, const X509_NAME *subject, int days)
{
    return issuer_ca_issue_name_eku(ca, pub, subject, days, NULL);
}

X509 *issuer_ca_issue_name_eku(const issuer_ca *ca, EVP_PKEY *pub, const X509_NAME *subject, int days,
                               const char *eku)
{
    X509 *x = new_certificate(pub, subject, X509_get_subject_name(ca->cert), days);

    if (x == NULL || !add_ext(x, ca->cert, NID_basic_constraints, "critical,CA:FALSE")
        || !add_ext(x, ca->cert, NID_key_usage, key_usage_for(pub))
        || (eku != NULL && !add_ext(x, ca->cert, NID_ext_key_usage, eku))
        || !add_ext(x, ca->cert, NID_subject_key_identifier, "hash")
        || !add_ext(x, ca->cert, NID_authority_key_identifier, "keyid:always")
        || X509_sign(x, ca->key, signing_md(ca->key)) <= 0) {
        X509_free(x);
        return NULL;
    }
    return x;
}

X509 *issuer_ca_issue(const issuer_ca *ca, EVP_PKEY *pub, const char *subject, int days, char *err, size_t errlen)
{
    X509_NAME *name = issuer_parse_dn(subject, err, errlen);
    X509 *x = NULL;

    if (name == NULL)
        return NULL;
    if ((x = issuer_ca_issue_name(ca, pub, name, days)) == NULL)
        snprintf(err, errlen, "cannot issue the certificate for '%s'", subject);
    X509_NAME_free(name);
    return x;
}

/* ------------------------------------------------------------------ the CA itself */

static int make_ca(issuer_ca *ca, char *err, size_t errlen)
{
    char dn[96];
    uint8_t tag[4];
    X509_NAME *name;

    if (RAND_bytes(tag, sizeof(tag)) != 1)
        return 0;
    /* A tag tells the CAs of different stores apart. */
    snprintf(dn, sizeof(dn), "/O=sks/CN=sks local issuer CA %02x%02x%02x%02x", tag[0], tag[1], tag[2], tag[3]);
    name = issuer_parse_dn(dn, err, errlen);
    ca->key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", CA_CURVE);
    if (name == NULL || ca->key == NULL || (ca->cert = new_certificate(ca->key, name, name, CA_DAYS)) == NULL
        || !add_ext(ca->cert, ca->cert, NID_basic_constraints, "critical,CA:TRUE")
        || !add_ext(ca->cert, ca->cert, NID_key_usage, "critical,keyCertSign,cRLSign")
        || !add_ext(ca->cert, ca->cert, NID_subject_key_identifier, "hash")
        || X509_sign(ca->cert, ca->key, signing_md(ca->key)) <= 0) {
        X509_NAME_free(name);
        snprintf(err, errlen, "cannot create the issuer CA key and certificate");
        return 0;
    }
    X509_NAME_free(name);
    return 1;
}

/* Writes key and certificate to a fresh 0600 file, then links it into place, so a
 * concurrent reader never sees half a file and a concurrent creator loses cleanly. */
static int save_ca(const issuer_ca *ca, const char *path, int *exists, char *err, size_t errlen)
{
    char tmp[4300];
    BIO *b;
    int fd, ok;

    *exists = 0;
    snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
        return 0;
    }
    b = BIO_new_fd(fd, BIO_NOCLOSE);
    ok = b != NULL && PEM_write_bio_PrivateKey(b, ca->key, NULL, NULL, 0, NULL, NULL) == 1
         && PEM_write_bio_X509(b, ca->cert) == 1 && BIO_flush(b) == 1 && fsync(fd) == 0;
    BIO_free(b);
    close(fd);
    if (ok && link(tmp, path) != 0) {
        *exists = errno == EEXIST;
        if (!*exists)
            snprintf(err, errlen, "cannot create %s: %s", path, strerror(errno));
        ok = 0;
    } else if (!ok) {
        snprintf(err, errlen, "cannot write %s", tmp);
    }
    unlink(tmp);
    return ok;
}

static int load_pair(issuer_ca *ca, const char *key_path, const char *cert_path, const char *pass, char *err,
                     size_t errlen)
{
    STACK_OF(X509) *certs;

    if ((ca->key = files_read_key(key_path, pass, err, errlen)) == NULL
        || (certs = files_read_certs(cert_path, err, errlen)) == NULL)
        return 0;
    ca->cert = sk_X509_shift(certs); /* the first certificate is the CA's own */
    sk_X509_pop_free(certs, X509_free);
    if (X509_check_private_key(ca->cert, ca->key) != 1) {
        snprintf(err, errlen, "the CA key %s does not match the CA certificate %s", key_path, cert_path);
        return 0;
    }
    if (X509_check_ca(ca->cert) < 1) {
        snprintf(err, errlen, "%s is not a CA certificate (basicConstraints CA:TRUE / keyCertSign missing)",
                 cert_path);
        return 0;
    }
    return 1;
}

int issuer_ca_load(issuer_ca *ca, const char *store_path, const char *key_path, const char *cert_path,
                   const char *pass, char *err, size_t errlen)
{
    char path[4200];
    int exists = 0, ok;

    memset(ca, 0, sizeof(*ca));
    if ((key_path == NULL) != (cert_path == NULL)) {
        snprintf(err, errlen, "give both --ca-key and --ca-cert, or neither");
        return 0;
    }
    if (key_path != NULL)
        ok = load_pair(ca, key_path, cert_path, pass, err, errlen);
    else {
        snprintf(path, sizeof(path), "%s.issuer-ca.pem", store_path);
        if (access(path, F_OK) != 0 && !cli_mkdir_parents(path)) {
            snprintf(err, errlen, "cannot create the directory of %s", path);
            return 0;
        }
        if (access(path, F_OK) != 0) {
            ok = make_ca(ca, err, errlen) && save_ca(ca, path, &exists, err, errlen);
            if (ok || !exists)
                goto done;
            issuer_ca_free(ca); /* another process created it first: use theirs */
        }
        ok = load_pair(ca, path, path, NULL, err, errlen);
    }
done:
    if (!ok)
        issuer_ca_free(ca);
    return ok;
}

void issuer_ca_free(issuer_ca *ca)
{
    EVP_PKEY_free(ca->key);
    X509_free(ca->cert);
    ca->key = NULL;
    ca->cert = NULL;
}
