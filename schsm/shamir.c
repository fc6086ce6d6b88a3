/*
 * n-of-m share passwords, interchangeable with OpenSC's sc-hsm-tool (docs/smartcard-hsm-keymgmt.md):
 * the password of a DKEK share file is 8 random bytes (top bit clear), split with Shamir's
 * scheme over a random 64-bit prime p: f(x) = password + c1·x + ... + c(t-1)·x^(t-1) mod p,
 * share i = (i, f(i)). Custodians receive p, i (decimal) and f(i) (hex with colons).
 *
 * Two traps of sc-hsm-tool are avoided: it reads the share ID back as hex although it prints it
 * in decimal (IDs >= 10 break), and it loses the leading zero byte of a password that starts
 * with 00. Here IDs are read in decimal and the password is always 8 bytes.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "keymgmt_formats.h"
#include "keymgmt_util.h"

static uint64_t u64_from_bn(const BIGNUM *b)
{
    uint8_t buf[8] = {0};
    BN_bn2binpad(b, buf, 8);
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | buf[i];
    OPENSSL_cleanse(buf, sizeof buf);
    return v;
}

static int bn_set_u64(BIGNUM *b, uint64_t v)
{
    uint8_t buf[8];
    for (int i = 7; i >= 0; i--, v >>= 8)
        buf[i] = (uint8_t)v;
    int ok = BN_bin2bn(buf, 8, b) != NULL;
    OPENSSL_cleanse(buf, sizeof buf);
    return ok;
}

/*
 * 8 random bytes made into a password sc-hsm-tool can rebuild: below 2^63 (so below any 64-bit
 * prime) and without a leading zero byte, which its BN_bn2bin drops (one split in 128 then could
 * not be opened with sc-hsm-tool). A zero first byte is drawn again from the host's generator.
 */
int schsm_pwd_shape(uint8_t password[SCHSM_PWD_LEN], char *err, size_t errlen)
{
    password[0] &= 0x7f;
    while (password[0] == 0) {
        if (RAND_priv_bytes(password, 1) != 1)
            return schsm_km_fail(err, errlen, "no random bytes for the share password");
        password[0] &= 0x7f;
    }
    return 1;
}

int schsm_pwd_random(uint8_t password[SCHSM_PWD_LEN], char *err, size_t errlen)
{
    if (RAND_priv_bytes(password, SCHSM_PWD_LEN) != 1)
        return schsm_km_fail(err, errlen, "no random bytes for the share password");
    return schsm_pwd_shape(password, err, errlen);
}

/* y = f(x) mod p by Horner's rule; coef[0] is the secret. */
static int poly_eval(BIGNUM *const *coef, unsigned t, const BIGNUM *x, const BIGNUM *p, BIGNUM *y, BN_CTX *ctx)
{
    if (!BN_copy(y, coef[t - 1]))
        return 0;
    for (unsigned k = t - 1; k-- > 0;)
        if (!BN_mod_mul(y, y, x, p, ctx) || !BN_mod_add(y, y, coef[k], p, ctx))
            return 0;
    return 1;
}

int schsm_pwd_split(const uint8_t password[SCHSM_PWD_LEN], unsigned threshold, unsigned total,
                    schsm_pwd_share *shares, char *err, size_t errlen)
{
    if (threshold < 2 || threshold > total || total > SCHSM_PWD_MAX_SHARES)
        return schsm_km_fail(err, errlen, "n-of-m: need 2 <= threshold <= shares <= %d (got %u of %u)",
                          SCHSM_PWD_MAX_SHARES, threshold, total);
    BN_CTX *ctx = BN_CTX_secure_new();
    BIGNUM *p = BN_new(), *x = BN_new(), *y = BN_secure_new();
    BIGNUM **coef = calloc(threshold, sizeof *coef);
    int ok = 0;
    if (!ctx || !p || !x || !y || !coef)
        goto done;
    for (unsigned k = 0; k < threshold; k++)
        if (!(coef[k] = BN_secure_new()))
            goto done;
    if (!BN_bin2bn(password, SCHSM_PWD_LEN, coef[0]))
        goto done;
    /* The prime must exceed the secret; a 64-bit prime from OpenSSL has its top two bits set,
     * so this loops only for a caller's password with the top bit set. */
    do {
        if (!BN_generate_prime_ex(p, 64, 0, NULL, NULL, NULL))
            goto done;
    } while (BN_cmp(p, coef[0]) <= 0);
    for (unsigned k = 1; k < threshold; k++)
        if (!BN_priv_rand_range(coef[k], p))
            goto done;
    for (unsigned i = 1; i <= total; i++) {
        if (!BN_set_word(x, i) || !poly_eval(coef, threshold, x, p, y, ctx))
            goto done;
        shares[i - 1].prime = u64_from_bn(p);
        shares[i - 1].id = i;
        shares[i - 1].value = u64_from_bn(y);
    }
    ok = 1;
done:
    if (!ok)
        schsm_km_fail(err, errlen, "n-of-m: splitting the password failed");
    for (unsigned k = 0; coef && k < threshold; k++)
        BN_clear_free(coef[k]);
    free(coef);
    BN_free(p);
    BN_free(x);
    BN_clear_free(y);
    BN_CTX_free(ctx);
    return ok;
}

/* The shares belong together: one prime, distinct ids, values below the prime. */
static int check_shares(const schsm_pwd_share *s, size_t n, char *err, size_t errlen)
{
    if (n < 2 || n > SCHSM_PWD_MAX_SHARES)
        return schsm_km_fail(err, errlen, "n-of-m: need at least 2 shares (got %zu)", n);
    for (size_t i = 0; i < n; i++) {
        if (s[i].prime != s[0].prime)
            return schsm_km_fail(err, errlen, "n-of-m: share %u has another prime than share %u: not from one split",
                              s[i].id, s[0].id);
        if (s[i].id == 0 || s[i].value >= s[i].prime)
            return schsm_km_fail(err, errlen, "n-of-m: share %u is not a valid share", s[i].id);
        for (size_t j = 0; j < i; j++)
            if (s[j].id == s[i].id)
                return schsm_km_fail(err, errlen, "n-of-m: share ID %u given twice", s[i].id);
    }
    return 1;
}

int schsm_pwd_combine(const schsm_pwd_share *shares, size_t n, uint8_t password[SCHSM_PWD_LEN], char *err,
                      size_t errlen)
{
    if (!check_shares(shares, n, err, errlen))
        return 0;
    BN_CTX *ctx = BN_CTX_secure_new();
    BIGNUM *p = BN_new(), *num = BN_new(), *den = BN_new(), *t = BN_new();
    BIGNUM *xi = BN_new(), *xj = BN_new(), *yi = BN_secure_new(), *s = BN_secure_new();
    int ok = 0;
    if (!ctx || !p || !num || !den || !t || !xi || !xj || !yi || !s || !bn_set_u64(p, shares[0].prime))
        goto done;
    BN_zero(s);
    /* Lagrange at 0: s = sum_i y_i · prod_{j != i} x_j / (x_j - x_i) mod p. */
    for (size_t i = 0; i < n; i++) {
        if (!BN_one(num) || !BN_one(den) || !BN_set_word(xi, shares[i].id))
            goto done;
        for (size_t j = 0; j < n; j++) {
            if (j == i)
                continue;
            if (!BN_set_word(xj, shares[j].id) || !BN_mod_mul(num, num, xj, p, ctx) || !BN_mod_sub(t, xj, xi, p, ctx) ||
                !BN_mod_mul(den, den, t, p, ctx))
                goto done;
        }
        if (!BN_mod_inverse(den, den, p, ctx) || !bn_set_u64(yi, shares[i].value) ||
            !BN_mod_mul(t, num, den, p, ctx) || !BN_mod_mul(t, t, yi, p, ctx) || !BN_mod_add(s, s, t, p, ctx))
            goto done;
    }
    ok = BN_bn2binpad(s, password, SCHSM_PWD_LEN) == SCHSM_PWD_LEN;
done:
    if (!ok)
        schsm_km_fail(err, errlen, "n-of-m: combining the shares failed (is the prime really prime?)");
    BN_free(p);
    BN_free(num);
    BN_free(den);
    BN_clear_free(t);
    BN_free(xi);
    BN_free(xj);
    BN_clear_free(yi);
    BN_clear_free(s);
    BN_CTX_free(ctx);
    return ok;
}

/* Minimal-length big-endian bytes of v, colon-separated lower-case hex ("00" for zero). */
static void hex_colon(uint64_t v, char *out)
{
    uint8_t b[8];
    int first = 0;
    for (int i = 7; i >= 0; i--, v >>= 8)
        b[i] = (uint8_t)v;
    while (first < 7 && b[first] == 0)
        first++;
    char *o = out;
    for (int i = first; i < 8; i++) {
        char h[3];
        schsm_km_hex(&b[i], 1, h);
        if (i > first)
            *o++ = ':';
        *o++ = h[0];
        *o++ = h[1];
    }
    *o = 0;
    OPENSSL_cleanse(b, sizeof b);
}

int schsm_pwd_share_format(const schsm_pwd_share *s, char *out, size_t outlen)
{
    char prime[24], value[24];
    hex_colon(s->prime, prime);
    hex_colon(s->value, value);
    int n = snprintf(out, outlen, "Prime       : %s\nShare ID    : %u\nShare value : %s\n", prime, s->id, value);
    OPENSSL_cleanse(value, sizeof value);
    return n > 0 && (size_t)n < outlen;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

int schsm_pwd_parse_hex(const char *text, uint64_t *v, char *err, size_t errlen)
{
    uint64_t acc = 0;
    int digits = 0, run = 0; /* run: digits since the last separator, whole bytes only */
    for (const char *c = text; *c && *c != '\n' && *c != '\r'; c++) {
        if (*c == ':' || *c == ' ' || *c == '\t') {
            if (run % 2)
                return schsm_km_fail(err, errlen, "hex value: odd number of digits before a separator");
            run = 0;
            continue;
        }
        int h = hexval((unsigned char)*c);
        if (h < 0)
            return schsm_km_fail(err, errlen, "hex value: '%c' is not a hex digit", *c);
        if (++digits > 16)
            return schsm_km_fail(err, errlen, "hex value longer than 8 bytes");
        run++;
        acc = acc << 4 | (uint64_t)h;
    }
    if (digits == 0 || run % 2)
        return schsm_km_fail(err, errlen, "hex value: %s", digits ? "odd number of digits" : "empty");
    *v = acc;
    return 1;
}

static int parse_id(const char *text, unsigned *id, char *err, size_t errlen)
{
    while (*text == ' ' || *text == '\t')
        text++;
    unsigned long v = 0;
    int digits = 0;
    for (; *text >= '0' && *text <= '9'; text++) {
        v = v * 10 + (unsigned long)(*text - '0');
        if (++digits > 3)
            break;
    }
    while (*text == ' ' || *text == '\t' || *text == '\r')
        text++;
    if (digits == 0 || (*text && *text != '\n') || v == 0 || v > SCHSM_PWD_MAX_SHARES)
        return schsm_km_fail(err, errlen, "share ID: a decimal number 1..%d expected", SCHSM_PWD_MAX_SHARES);
    *id = (unsigned)v;
    return 1;
}

/* The text after "<label> :" on the line that starts with label, or NULL. */
static const char *field(const char *text, const char *label)
{
    size_t n = strlen(label);
    for (const char *line = text; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        const char *l = line;
        while (*l == ' ' || *l == '\t')
            l++;
        if (strncasecmp(l, label, n) != 0)
            continue;
        l += n;
        while (*l == ' ' || *l == '\t')
            l++;
        if (*l != ':')
            continue;
        l++;
        while (*l == ' ' || *l == '\t')
            l++;
        return l;
    }
    return NULL;
}

int schsm_pwd_share_parse(const char *text, schsm_pwd_share *s, char *err, size_t errlen)
{
    const char *prime = field(text, "Prime"), *id = field(text, "Share ID"), *value = field(text, "Share value");
    if (!prime || !id || !value)
        return schsm_km_fail(err, errlen, "share text: needs the lines \"Prime :\", \"Share ID :\" and \"Share value :\"");
    char e[96];
    if (!schsm_pwd_parse_hex(prime, &s->prime, e, sizeof e))
        return schsm_km_fail(err, errlen, "prime: %s", e);
    if (!parse_id(id, &s->id, err, errlen))
        return 0;
    if (!schsm_pwd_parse_hex(value, &s->value, e, sizeof e))
        return schsm_km_fail(err, errlen, "share value: %s", e);
    return 1;
}
