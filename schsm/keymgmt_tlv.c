/*
 * BER-TLV reading for the card's structures (CV certificates, wrap files). Bounded: tags of at
 * most 2 bytes, definite lengths of at most 3 bytes, nothing read past end. Callers walk fixed
 * structures level by level, so there is no recursion and the nesting depth is that of the
 * structure they expect.
 */
#include "keymgmt_formats.h"

int schsm_kmtlv_next(const uint8_t **p, const uint8_t *end, schsm_kmtlv *t)
{
    const uint8_t *s = *p, *c = *p;
    if (c >= end)
        return 0;
    unsigned tag = *c++;
    if ((tag & 0x1f) == 0x1f) { /* two-byte tag, e.g. 7F21, 5F37; no three-byte ones */
        if (c >= end || (*c & 0x80))
            return 0;
        tag = tag << 8 | *c++;
    }
    if (c >= end)
        return 0;
    size_t len = *c++;
    if (len & 0x80) {
        size_t nbytes = len & 0x7f;
        if (nbytes == 0 || nbytes > 3 || (size_t)(end - c) < nbytes)
            return 0;
        len = 0;
        while (nbytes--)
            len = len << 8 | *c++;
    }
    if ((size_t)(end - c) < len)
        return 0;
    t->tag = tag;
    t->value = c;
    t->len = len;
    t->tlv = s;
    t->tlvlen = (size_t)(c - s) + len;
    *p = c + len;
    return 1;
}
