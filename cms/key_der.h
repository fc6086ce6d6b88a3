/* Plain public-key DER, parsed without OpenSSL's decoder chain (cms/key_der.c). */
#ifndef SKS_KEY_DER_H
#define SKS_KEY_DER_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

/* The curves of the plain form; every one has cofactor 1. */
typedef struct {
    uint8_t oid[9];  /* the curve's OBJECT IDENTIFIER contents */
    size_t oid_len;
    const char *group;
    size_t field;    /* bytes per coordinate */
} spki_curve;
#define SPKI_NCURVES 7
extern const spki_curve SPKI_CURVES[SPKI_NCURVES];
extern const uint8_t OID_EC_PUBLIC_KEY[7];
extern const uint8_t OID_ED25519[3];

/* One DER element with the given tag at *p (minimal length encoding, at most 2 length
 * bytes): its contents in *v, *len; *p moves past it. */
int der_element(const uint8_t **p, const uint8_t *end, uint8_t tag, const uint8_t **v, size_t *len);

/* The parts of a SubjectPublicKeyInfo in the plain form: *curve = index in SPKI_CURVES, or -1
 * for Ed25519; the key bytes in *key, *key_len. 0 for anything else. */
int spki_split(const uint8_t *p, size_t n, int *curve, const uint8_t **key, size_t *key_len);

/* A SubjectPublicKeyInfo: the plain form from its parts (points off the curve refused), any
 * other through d2i_PUBKEY; exactly n bytes. NULL if OpenSSL cannot read it. The error queue
 * keeps only what the long way reported. */
EVP_PKEY *spki_parse(const uint8_t *p, size_t n);

#endif
