/*
 * Outside input of sks-issuer, parsed with bounds: the HTTP body of an enrolment (a PKCS#10
 * request in base64 as EST sends it, RFC 7030 section 4.2.1) and the Authorization header.
 * Also what fuzz/fuzz_issuer_request.c exercises, down to the request's checks.
 */
#ifndef SKS_ISSUER_REQUEST_H
#define SKS_ISSUER_REQUEST_H

#include <stddef.h>

#include <openssl/x509.h>

/* Largest HTTP body the service reads. */
#define ISSUER_MAX_BODY (64 * 1024)
/* Longest enrolment token. */
#define ISSUER_MAX_TOKEN 128

/* base64 (line breaks and spaces allowed) of one DER PKCS#10 with nothing after it; the
 * request's own signature is not checked here. NULL with a message. */
X509_REQ *issuer_parse_pkcs10(const char *body, size_t n, char *err, size_t errlen);

/* What the service checks of a parsed request before its state is touched: the key is EC on
 * a SKIP curve (checked first: no signature is verified with any other kind of key), the
 * request's signature verifies with it (proof of possession), and its SKIP session id (the
 * enrolment's factory key id) goes into factory. 0 with a message. */
int issuer_check_request(X509_REQ *req, char factory[33], char *err, size_t errlen);

/* Longest device name, in bytes of UTF-8. */
#define ISSUER_MAX_DEVICE 64

/* A device name goes into certificate subjects and log lines ("device=\"NAME\""): 1 to
 * ISSUER_MAX_DEVICE bytes of UTF-8 without control characters (C0, DEL, C1), '"' or '\\', so
 * that it can neither end its field nor start another line. */
int issuer_device_name_ok(const char *name);

/* "Bearer TOKEN" into token (NUL-terminated; [A-Za-z0-9_-], 16 to ISSUER_MAX_TOKEN chars). */
int issuer_parse_bearer(const char *header, char token[ISSUER_MAX_TOKEN + 1]);

#endif
