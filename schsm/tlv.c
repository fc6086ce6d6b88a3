/*
 * The driver's view of the one bounded BER-TLV reader (schsm_kmtlv_read, keymgmt_tlv.c) for
 * what the card returns (FCP, PKCS#15 descriptions, CV requests): tags of up to 3 bytes; every
 * length is checked against the end of the buffer it came in; nothing is read past it.
 */
#include "ber_tlv.h"
#include "internal.h"

int schsm_tlv_next(const uint8_t **pp, const uint8_t *end, schsm_tlv *t)
{
    schsm_kmtlv k;

    if (!schsm_kmtlv_read(pp, end, 3, &k))
        return 0;
    t->tag = k.tag;
    t->v = k.value;
    t->len = k.len;
    return 1;
}

int schsm_tlv_find(const uint8_t *p, const uint8_t *end, unsigned tag, schsm_tlv *t)
{
    schsm_tlv cur;

    /* t is written only when found: a malformed sibling leaves nothing half-read behind */
    while (p < end && schsm_tlv_next(&p, end, &cur))
        if (cur.tag == tag) {
            *t = cur;
            return 1;
        }
    return 0;
}
