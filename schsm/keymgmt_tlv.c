/*
 * BER-TLV reading for everything schsm/ reads from the card or from files (CV certificates, wrap
 * files, PKCS#15 descriptions, the FCP, management answers): the one reader. Bounded: tags of at
 * most 2 (or, for the driver's PKCS#15 reading, 3) bytes, definite lengths of at most 3 bytes, nothing read past end. Callers walk fixed
 * structures level by level, so there is no recursion and the nesting depth is that of the
 * structure they expect.
 */
#include "keymgmt_formats.h"

int schsm_kmtlv_read(const uint8_t **p, const uint8_t *end, unsigned max_tag_bytes, schsm_kmtlv *t)
{
    const uint8_t *s = *p, *c = *p;
    unsigned tag, i;
    size_t len;

    if (c == NULL || c >= end)
        return 0;
    tag = *c++;
    if ((tag & 0x1f) == 0x1f) { /* multi-byte tag: bit 8 of each further byte says one more follows */
        for (i = 1;; i++) {
            if (i >= max_tag_bytes || c >= end)
                return 0;
            tag = tag << 8 | *c;
            if ((*c++ & 0x80) == 0)
                break;
        }
    }
    if (c >= end)
        return 0;
    len = *c++;
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
    /* written only when the whole TLV is inside: callers never see half a TLV */
    t->tag = tag;
    t->value = c;
    t->len = len;
    t->tlv = s;
    t->tlvlen = (size_t)(c - s) + len;
    *p = c + len;
    return 1;
}

int schsm_kmtlv_next(const uint8_t **p, const uint8_t *end, schsm_kmtlv *t)
{
    /* two-byte tags, e.g. 7F21, 5F37; the card's structures have no three-byte ones */
    return schsm_kmtlv_read(p, end, 2, t);
}
