/* PKCS#1 v1.5 implicit rejection (rsa/pkcs1_implicit.h). */
#include "pkcs1_implicit.h"

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

/* Constant-time helpers: all-ones or all-zero masks, no branch on secret data. */
static unsigned ct_is_zero(unsigned a)
{
    return 0u - ((~a & (a - 1)) >> (sizeof(unsigned) * 8 - 1));
}

static unsigned ct_eq(unsigned a, unsigned b)
{
    return ct_is_zero(a ^ b);
}

/* a < b for a, b < 2^31 */
static unsigned ct_lt(unsigned a, unsigned b)
{
    return 0u - ((a - b) >> (sizeof(unsigned) * 8 - 1));
}

static unsigned ct_select(unsigned mask, unsigned a, unsigned b)
{
    return (mask & a) | (~mask & b);
}

/*
 * The pseudo-random function of the implicit rejection in draft-irtf-cfrg-rsa-guidance:
 * HMAC-SHA256(kdk, I || label || L) for I = 0, 1, ... (two bytes, big-endian), L the output
 * length in bits (two bytes), concatenated and cut to n bytes.
 */
static int implicit_prf(const uint8_t kdk[32], const char *label, uint8_t *out, size_t n)
{
    uint8_t block[32], in[2 + 16 + 2];
    size_t lablen = strlen(label), pos;
    unsigned int len;
    uint16_t i;

    if (lablen > 16 || n * 8 > 0xFFFF)
        return 0;
    memcpy(in + 2, label, lablen);
    in[2 + lablen] = (uint8_t)((n * 8) >> 8);
    in[3 + lablen] = (uint8_t)(n * 8);
    for (i = 0, pos = 0; pos < n; i++, pos += 32) {
        in[0] = (uint8_t)(i >> 8);
        in[1] = (uint8_t)i;
        if (HMAC(EVP_sha256(), kdk, 32, in, 4 + lablen, block, &len) == NULL || len != 32)
            return 0;
        memcpy(out + pos, block, n - pos < 32 ? n - pos : 32);
    }
    OPENSSL_cleanse(block, sizeof(block));
    return 1;
}

/* The length of the synthetic message: the last of 128 PRF-drawn candidates, masked to the
 * bits of k - 10, that is below k - 10 (a possible PKCS#1 v1.5 message length). */
static int implicit_length(const uint8_t kdk[32], size_t k, unsigned *synthetic_len)
{
    uint8_t cand[256];
    unsigned max_sep_offset = (unsigned)k - 10, mask = max_sep_offset, len = 0, c;
    size_t i;

    if (!implicit_prf(kdk, "length", cand, sizeof(cand)))
        return 0;
    mask |= mask >> 1;
    mask |= mask >> 2;
    mask |= mask >> 4;
    mask |= mask >> 8;
    for (i = 0; i < sizeof(cand); i += 2) {
        c = (((unsigned)cand[i] << 8) | cand[i + 1]) & mask;
        len = ct_select(ct_lt(c, max_sep_offset), c, len);
    }
    OPENSSL_cleanse(cand, sizeof(cand));
    *synthetic_len = len;
    return 1;
}

int sks_pkcs1_unpad_implicit(const uint8_t kdk[32], const uint8_t *em, size_t k, sks_buf *out)
{
    uint8_t *synth = k >= 11 ? OPENSSL_malloc(k) : NULL, *res = k >= 11 ? OPENSSL_malloc(k) : NULL;
    unsigned good, looking, zero_at = 0, synth_len = 0, msg_at, b;
    size_t i;
    int ok = 0;

    if (synth == NULL || res == NULL)
        goto done;
    if (!implicit_length(kdk, k, &synth_len) || !implicit_prf(kdk, "message", synth, k))
        goto done;
    /* 00 || 02 || at least eight non-zero bytes || 00 || message, checked without branches */
    good = ct_is_zero(em[0]) & ct_eq(em[1], 2);
    looking = ~0u;
    for (i = 2; i < k; i++) {
        b = ct_is_zero(em[i]);
        zero_at = ct_select(looking & b, (unsigned)i, zero_at);
        looking &= ~b;
    }
    good &= ~looking & ~ct_lt(zero_at, 2 + 8);
    msg_at = ct_select(good, zero_at + 1, (unsigned)(k - synth_len));
    /* Both candidates end at byte k: copy every byte of both, keep one. */
    for (i = 0; i < k; i++)
        res[i] = (uint8_t)ct_select(good, em[i], synth[i]);
    /* The output length (public in any case) is the only secret-dependent memory access,
     * as in every implementation: the caller sees that length. */
    sks_buf_put(out, res + msg_at, k - msg_at);
    ok = !out->failed;
done:
    OPENSSL_clear_free(synth, k);
    OPENSSL_clear_free(res, k);
    return ok;
}
