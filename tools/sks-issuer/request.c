/*
 * Bounded parsers for what reaches sks-issuer over HTTP (request.h).
 */
#include "request.h"
#include "../../cms/skip_common.h"
#include "../../cms/skip_package.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include <openssl/asn1.h>
#include <openssl/err.h>
#include <openssl/evp.h>

X509_REQ *issuer_parse_pkcs10(const char *body, size_t n, char *err, size_t errlen)
{
    unsigned char *b64, *der = NULL;
    const unsigned char *q;
    size_t i, len = 0;
    int dlen, pad = 0;
    X509_REQ *req = NULL;

    if (n == 0 || n > ISSUER_MAX_BODY) {
        snprintf(err, errlen, "the body must hold a base64 PKCS#10 request of at most %d bytes", ISSUER_MAX_BODY);
        return NULL;
    }
    if ((b64 = OPENSSL_malloc(n + 1)) == NULL)
        return NULL;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)body[i];
        if (isspace(c))
            continue;
        if (!isalnum(c) && c != '+' && c != '/' && c != '=')
            break;
        b64[len++] = c;
    }
    if (i == n && len > 0 && len % 4 == 0) {
        pad = (b64[len - 1] == '=') + (b64[len - 2] == '=');
        der = OPENSSL_malloc(len / 4 * 3);
        dlen = der ? EVP_DecodeBlock(der, b64, (int)len) : -1;
        if (dlen > pad) {
            q = der;
            req = d2i_X509_REQ(NULL, &q, dlen - pad);
            if (req != NULL && q != der + dlen - pad) {
                X509_REQ_free(req);
                req = NULL;
            }
        }
    }
    OPENSSL_free(b64);
    OPENSSL_free(der);
    ERR_clear_error();
    if (req == NULL)
        snprintf(err, errlen, "the body is not a base64 DER PKCS#10 request");
    return req;
}

int issuer_check_request(X509_REQ *req, char factory[33], char *err, size_t errlen)
{
    EVP_PKEY *key = X509_REQ_get0_pubkey(req);
    int ok;

    factory[0] = '\0';
    if (key == NULL) {
        snprintf(err, errlen, "the request has no readable public key");
        ok = 0;
    } else if (!skip_key_supported(key, 0)) {
        snprintf(err, errlen, "the request's key is not EC on a SKIP curve");
        ok = 0;
    } else if (X509_REQ_verify(req, key) != 1) {
        snprintf(err, errlen, "the signature of the request does not verify with its own key");
        ok = 0;
    } else if (!skip_session_id(key, factory)) {
        snprintf(err, errlen, "the request's key has no SKIP session id");
        ok = 0;
    } else
        ok = 1;
    ERR_clear_error();
    return ok;
}

/* Characters that break or disguise a log line without being control characters: the
 * Unicode line and paragraph separators and the bidirectional overrides and isolates. */
static int disguises_a_line(unsigned long c)
{
    return c == 0x2028 || c == 0x2029 || (c >= 0x202A && c <= 0x202E) || (c >= 0x2066 && c <= 0x2069)
        || c == 0x200E || c == 0x200F || c == 0x061C;
}

int issuer_device_name_ok(const char *name)
{
    const unsigned char *p = (const unsigned char *)name;
    int left = (int)strnlen(name, ISSUER_MAX_DEVICE + 1);

    if (left == 0 || left > ISSUER_MAX_DEVICE)
        return 0;
    while (left > 0) {
        unsigned long c;
        int n = UTF8_getc(p, left, &c);
        if (n <= 0 || c < 0x20 || (c >= 0x7f && c < 0xa0) || c == '"' || c == '\\' || disguises_a_line(c))
            return 0;
        p += n;
        left -= n;
    }
    return 1;
}

int issuer_parse_bearer(const char *header, char token[ISSUER_MAX_TOKEN + 1])
{
    size_t i;

    if (header == NULL || strncmp(header, "Bearer ", 7) != 0)
        return 0;
    header += 7;
    for (i = 0; header[i] != '\0'; i++) {
        if (i >= ISSUER_MAX_TOKEN || !(isalnum((unsigned char)header[i]) || header[i] == '-' || header[i] == '_'))
            return 0;
        token[i] = header[i];
    }
    token[i] = '\0';
    return i >= 16;
}
