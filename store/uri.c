#include "uri.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decodes [p, p+n) into a new string; NULL if malformed or containing NUL. */
static char *pct_decode(const char *p, size_t n)
{
    char *out = OPENSSL_malloc(n + 1);
    size_t i, o = 0;

    if (out == NULL)
        return NULL;
    for (i = 0; i < n; i++) {
        if (p[i] == '%') {
            int hi, lo;
            /* "%" must be followed by two hex digits, and never encode NUL */
            hi = i + 1 < n ? hexval((unsigned char)p[i + 1]) : -1;
            lo = i + 2 < n ? hexval((unsigned char)p[i + 2]) : -1;
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
                OPENSSL_free(out);
                return NULL;
            }
            out[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            out[o++] = p[i];
        }
    }
    out[o] = '\0';
    return out;
}

static int set_err(char *err, size_t errlen, const char *msg, const char *what, size_t n)
{
    snprintf(err, errlen, "malformed sks: URI: %s \"%.*s\"", msg, (int)(n > 60 ? 60 : n), what);
    return 0;
}

static int parse_sha256(const char *v, uint8_t out[32])
{
    size_t o = 0;

    while (*v != '\0') {
        int hi, lo;
        if (*v == ':') {
            v++;
            continue;
        }
        hi = hexval((unsigned char)v[0]);
        lo = v[1] ? hexval((unsigned char)v[1]) : -1;
        if (hi < 0 || lo < 0 || o == 32)
            return 0;
        out[o++] = (uint8_t)(hi * 16 + lo);
        v += 2;
    }
    return o == 32;
}

static int read_pin_file(const char *path, char **pin, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    char buf[256];
    size_t n;

    if (f == NULL) {
        /* The path is a query value: not repeated, like every query value (uri.h). */
        snprintf(err, errlen, "sks: URI pin-source: cannot read the PIN file: %s", strerror(errno));
        return 0;
    }
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
    *pin = OPENSSL_strdup(buf);
    OPENSSL_cleanse(buf, sizeof(buf));
    return *pin != NULL;
}

/* Splits "key=value" and percent-decodes the value. 1: *klen and *v (OPENSSL_malloc) set;
 * 0: empty element, nothing to do; -1: malformed, err set. Query values may be PINs
 * (hide_value): the message names at most the key, never a value, and an element without
 * '=' (perhaps a bare PIN) not at all. */
static int split_pair(const char *p, size_t n, const char *what, int hide_value, size_t *klen, char **v, char *err,
                      size_t errlen)
{
    const char *eq = memchr(p, '=', n);
    char msg[48];

    if (n == 0)
        return 0;
    if (eq == NULL && hide_value) {
        snprintf(err, errlen, "malformed sks: URI: %s element without '=' (its text is not shown: it may be a PIN)",
                 what);
        return -1;
    }
    if (eq == NULL) {
        snprintf(msg, sizeof(msg), "%s without '=':", what);
        set_err(err, errlen, msg, p, n);
        return -1;
    }
    *klen = (size_t)(eq - p);
    *v = pct_decode(eq + 1, n - *klen - 1);
    if (*v == NULL) {
        set_err(err, errlen, "bad percent-encoding in", p, hide_value ? *klen : n);
        return -1;
    }
    return 1;
}

static int parse_attr(sks_uri *u, const char *p, size_t n, char *err, size_t errlen)
{
    size_t klen = 0;
    char *v = NULL;
    int ok = 1, split = split_pair(p, n, "attribute", 0, &klen, &v, err, errlen);

    if (split <= 0)
        return split == 0;
    if (klen == 4 && memcmp(p, "name", 4) == 0) {
        if (u->name != NULL || *v == '\0')
            ok = set_err(err, errlen, "repeated or empty", p, n);
        else {
            u->name = v;
            v = NULL;
        }
    } else if (klen == 6 && memcmp(p, "handle", 6) == 0) {
        char *end;
        unsigned long h;
        errno = 0;
        h = strtoul(v, &end, 10);
        if (*v == '\0' || *end != '\0' || errno != 0 || h == 0 || h > 0xFFFFFFFFul || !isdigit((unsigned char)*v)
            || u->has_handle)
            ok = set_err(err, errlen, "handle must be a positive decimal number:", p, n);
        u->handle = (uint32_t)h;
        u->has_handle = 1;
    } else if (klen == 6 && memcmp(p, "sha256", 6) == 0) {
        if (u->has_sha256 || !parse_sha256(v, u->sha256))
            ok = set_err(err, errlen, "sha256 must be 32 bytes of hex:", p, n);
        u->has_sha256 = 1;
    } else if (klen == 4 && memcmp(p, "type", 4) == 0) {
        if (strcmp(v, "private") == 0)
            u->type = SKS_URI_PRIVATE;
        else if (strcmp(v, "public") == 0)
            u->type = SKS_URI_PUBLIC;
        else if (strcmp(v, "cert") == 0)
            u->type = SKS_URI_CERT;
        else
            ok = set_err(err, errlen, "type must be private, public or cert:", p, n);
    } else {
        ok = set_err(err, errlen, "unknown attribute", p, klen);
    }
    OPENSSL_free(v);
    return ok;
}

static int parse_query(sks_uri *u, const char *p, size_t n, char *err, size_t errlen)
{
    size_t klen = 0;
    char *v = NULL;
    int ok = 1, split = split_pair(p, n, "query", 1, &klen, &v, err, errlen);

    if (split <= 0)
        return split == 0;
    if (u->pin != NULL)
        ok = set_err(err, errlen, "more than one PIN in", p, klen);
    else if (klen == 9 && memcmp(p, "pin-value", 9) == 0) {
        u->pin = v;
        v = NULL;
    } else if (klen == 10 && memcmp(p, "pin-source", 10) == 0) {
        if (strncmp(v, "file:", 5) != 0 || v[5] == '\0')
            ok = set_err(err, errlen, "pin-source must be file:PATH in", p, klen);
        else
            ok = read_pin_file(v + 5, &u->pin, err, errlen);
    } else {
        ok = set_err(err, errlen, "unknown query attribute", p, klen);
    }
    if (v != NULL)
        OPENSSL_clear_free(v, strlen(v));
    return ok;
}

int sks_uri_parse(const char *uri, sks_uri *u, char *err, size_t errlen)
{
    const char *p, *q, *end;

    memset(u, 0, sizeof(*u));
    if (uri == NULL || strncmp(uri, "sks:", 4) != 0)
        return set_err(err, errlen, "must start with", "sks:", 4);
    p = uri + 4;
    q = strchr(p, '?');
    end = q ? q : p + strlen(p);
    while (p < end) {
        const char *semi = memchr(p, ';', (size_t)(end - p));
        const char *stop = semi ? semi : end;
        if (!parse_attr(u, p, (size_t)(stop - p), err, errlen))
            goto fail;
        p = semi ? semi + 1 : end;
    }
    if (q != NULL) {
        p = q + 1;
        end = p + strlen(p);
        while (p < end) {
            const char *amp = memchr(p, '&', (size_t)(end - p));
            const char *stop = amp ? amp : end;
            if (!parse_query(u, p, (size_t)(stop - p), err, errlen))
                goto fail;
            p = amp ? amp + 1 : end;
        }
    }
    return 1;
fail:
    sks_uri_clear(u);
    return 0;
}

void sks_uri_clear(sks_uri *u)
{
    OPENSSL_free(u->name);
    if (u->pin != NULL)
        OPENSSL_clear_free(u->pin, strlen(u->pin));
    memset(u, 0, sizeof(*u));
}
