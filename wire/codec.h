/*
 * The SKS byte stream (specification section 7.1): one encoder and one decoder for every
 * transport, for MAC inputs and for attestation inputs.
 */
#ifndef SKS_WIRE_CODEC_H
#define SKS_WIRE_CODEC_H

#include <stddef.h>
#include <stdint.h>

/* A growable output buffer. On allocation failure it records `failed` and ignores further
 * writes, so encoders can write a whole message and check once at the end. */
typedef struct {
    uint8_t *data;
    size_t len;
    size_t cap;
    int failed;
} sks_buf;

void sks_buf_init(sks_buf *b);
/* Wipes the contents (they may be secret) and frees the storage. */
void sks_buf_free(sks_buf *b);
void sks_buf_reset(sks_buf *b);
void sks_buf_put(sks_buf *b, const void *p, size_t n);
void sks_buf_byte(sks_buf *b, uint8_t v);
void sks_buf_bool(sks_buf *b, int v);
void sks_buf_ushort(sks_buf *b, uint16_t v);
void sks_buf_uint(sks_buf *b, uint32_t v);
/* byte[]: ushort length then the bytes; fails the buffer if n > 0xFFFF. */
void sks_buf_array(sks_buf *b, const void *p, size_t n);
void sks_buf_string(sks_buf *b, const char *s);
/* blob: uint length then the bytes. */
void sks_buf_blob(sks_buf *b, const void *p, size_t n);

/* A view of a byte range; never owns memory. */
typedef struct {
    const uint8_t *p;
    size_t n;
} sks_span;

/* A cursor over an input message. The first error is kept (with the name of the field that
 * caused it) and every later read returns zeros, so decoders read all fields then check once. */
typedef struct {
    const uint8_t *p;
    size_t n;
    size_t off;
    const char *error; /* static text: what was wrong */
    const char *field; /* name of the field being read when it went wrong */
} sks_reader;

void sks_reader_init(sks_reader *r, const void *p, size_t n);
uint8_t sks_get_byte(sks_reader *r, const char *field);
int sks_get_bool(sks_reader *r, const char *field);
uint16_t sks_get_ushort(sks_reader *r, const char *field);
uint32_t sks_get_uint(sks_reader *r, const char *field);
sks_span sks_get_array(sks_reader *r, const char *field);
sks_span sks_get_blob(sks_reader *r, const char *field);
/* id: 1-32 printable ASCII characters. */
sks_span sks_get_id(sks_reader *r, const char *field);
/* uri: valid UTF-8, at most 1000 bytes. */
sks_span sks_get_uri(sks_reader *r, const char *field);
/* string: valid UTF-8. */
sks_span sks_get_string(sks_reader *r, const char *field);
/* Marks the reader failed unless every byte was consumed. */
void sks_reader_expect_end(sks_reader *r);
int sks_reader_ok(const sks_reader *r);

int sks_utf8_valid(const uint8_t *p, size_t n);
int sks_span_eq(sks_span a, sks_span b);
int sks_span_eq_str(sks_span a, const char *s);
/* Copies a span into a fresh NUL-terminated string (OPENSSL_malloc); NULL on failure. */
char *sks_span_strdup(sks_span s);

/* A DER tag and length (len < 65536) into out[4]; returns the header's size, 2 to 4. For the
 * few DER structures written by hand on hot paths (device/crypto.c, provider/key.c). */
size_t sks_der_header(uint8_t *out, uint8_t tag, size_t len);

#endif
