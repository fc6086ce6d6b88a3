/*
 * The one bounded BER-TLV reader of schsm/ (keymgmt_tlv.c), for the card's answers and the
 * files of its key management: tags of 1-2 bytes (3 where asked), definite lengths of up to 3
 * bytes, nothing read past end. Apart from keymgmt_formats.h so the driver (internal.h) can
 * use it too.
 */
#ifndef SKS_SCHSM_BER_TLV_H
#define SKS_SCHSM_BER_TLV_H

#include <stddef.h>
#include <stdint.h>

typedef struct schsm_kmtlv {
    unsigned tag;         /* e.g. 0x30, 0x7F21, 0x5F37 */
    const uint8_t *value; /* points into the input */
    size_t len;
    const uint8_t *tlv; /* the whole encoding, tag first */
    size_t tlvlen;
} schsm_kmtlv;

/* Reads one TLV at *p (before end) and advances *p past it (tags of at most 2 bytes). 0 if it
 * is malformed or runs past end; then *p and *t are unchanged. */
int schsm_kmtlv_next(const uint8_t **p, const uint8_t *end, schsm_kmtlv *t);
/* The same with tags of up to max_tag_bytes bytes. */
int schsm_kmtlv_read(const uint8_t **p, const uint8_t *end, unsigned max_tag_bytes, schsm_kmtlv *t);

#endif
