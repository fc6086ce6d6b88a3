/*
 * sks: URIs.
 *
 *   sks:[ATTR[;ATTR]...][?QUERY]
 *   ATTR  = name=FRIENDLY-NAME | handle=N | sha256=HEX | type=private|public|cert
 *   QUERY = pin-value=PIN | pin-source=file:PATH   (joined by '&')
 *
 * Values are percent-decoded. "sks:" alone selects everything in the store. sha256 is the
 * SHA-256 fingerprint of the end-entity certificate (hex, colons allowed).
 *
 * Error messages may quote attributes but never a query element's value, nor a query
 * element without '=': either may be a PIN.
 */
#ifndef SKS_STORE_URI_H
#define SKS_STORE_URI_H

#include <stddef.h>
#include <stdint.h>

typedef enum { SKS_URI_ANY = 0, SKS_URI_PRIVATE, SKS_URI_PUBLIC, SKS_URI_CERT } sks_uri_type;

typedef struct {
    char *name;
    int has_handle;
    uint32_t handle;
    int has_sha256;
    uint8_t sha256[32];
    sks_uri_type type;
    char *pin;      /* pin-value, or read from pin-source */
} sks_uri;

/* Parses a URI; on failure returns 0 with a message naming what was wrong in err. */
int sks_uri_parse(const char *uri, sks_uri *out, char *err, size_t errlen);
void sks_uri_clear(sks_uri *u);

#endif
