/*
 * Bounded BER-TLV reading for what the card returns (FCP, PKCS#15 descriptions): every
 * length is checked against the end of the buffer it came in; nothing is read past it.
 */
#include "internal.h"

int schsm_tlv_next(const uint8_t **pp, const uint8_t *end, schsm_tlv *t)
{
    const uint8_t *p = *pp;
    unsigned tag;
    size_t len, i, nlen;

    if (p == NULL || p >= end)
        return 0;
    tag = *p++;
    if ((tag & 0x1F) == 0x1F) { /* multi-byte tag: at most two more bytes */
        for (i = 0; i < 2; i++) {
            if (p >= end)
                return 0;
            tag = (tag << 8) | *p;
            if ((*p++ & 0x80) == 0)
                break;
        }
        if (i == 2)
            return 0;
    }
    if (p >= end)
        return 0;
    len = *p++;
    if (len & 0x80) {
        nlen = len & 0x7F;
        if (nlen == 0 || nlen > 3 || (size_t)(end - p) < nlen)
            return 0;
        for (len = 0, i = 0; i < nlen; i++)
            len = (len << 8) | *p++;
    }
    if (len > (size_t)(end - p))
        return 0;
    /* written only when the whole TLV is inside: callers never see half a TLV */
    t->tag = tag;
    t->v = p;
    t->len = len;
    *pp = p + len;
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
