/*
 * The wrapped-key blob of the SmartCard-HSM's WRAP KEY / UNWRAP KEY (docs/smartcard-hsm-keymgmt.md):
 *
 *   KCV 8 ‖ type 1 ‖ default algorithm OID, allowed algorithms, access conditions, key OID
 *   (each 2-byte length + bytes) ‖ AES-256-CBC(Kenc, IV 0, 8 random ‖ key size 2 ‖ components
 *   (2-byte length + big-endian value each) ‖ 80 00.. padding) ‖ AES-CMAC(Kmac, all before)
 *
 * with Kenc = SHA-256(DKEK ‖ 00000001), Kmac = SHA-256(DKEK ‖ 00000002). A host that knows
 * the DKEK can thus move keys in and out of every card that holds the same DKEK.
 */
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/rand.h>

#include "keymgmt_formats.h"
#include "keymgmt_util.h"

static const uint8_t oid_ta_rsa_sha256[] = {0x04, 0x00, 0x7F, 0x00, 0x07, 0x02, 0x02, 0x02, 0x01, 0x02};
static const uint8_t oid_ta_ecdsa_sha256[] = {0x04, 0x00, 0x7F, 0x00, 0x07, 0x02, 0x02, 0x02, 0x02, 0x03};

#define PLAIN_MAX 2304 /* RSA 4096 (d, n, e) or CRT 2048, EC P-521: all well below */
#define MIN_BLOB (8 + 1 + 4 * 2 + 16 + 16)

/* ---- keys and MAC ------------------------------------------------------------------------ */

static int derive(const uint8_t dkek[SCHSM_DKEK_LEN], uint8_t counter, uint8_t out[32])
{
    uint8_t in[SCHSM_DKEK_LEN + 4] = {0};
    unsigned n = 0;
    memcpy(in, dkek, SCHSM_DKEK_LEN);
    in[SCHSM_DKEK_LEN + 3] = counter;
    int ok = EVP_Digest(in, sizeof in, out, &n, EVP_sha256(), NULL);
    OPENSSL_cleanse(in, sizeof in);
    return ok;
}

static int cmac(const uint8_t key[32], const uint8_t *data, size_t n, uint8_t mac[16])
{
    EVP_MAC *m = EVP_MAC_fetch(NULL, "CMAC", NULL);
    EVP_MAC_CTX *ctx = m ? EVP_MAC_CTX_new(m) : NULL;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_CIPHER, "AES-256-CBC", 0),
                           OSSL_PARAM_construct_end()};
    size_t len = 0;
    int ok = ctx && EVP_MAC_init(ctx, key, 32, params) && EVP_MAC_update(ctx, data, n) &&
             EVP_MAC_final(ctx, mac, &len, 16) && len == 16;
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(m);
    return ok;
}

/* AES-256-CBC with a zero IV and no padding (the plaintext carries its own). */
static int cbc_nopad(int encrypt, const uint8_t key[32], const uint8_t *in, size_t n, uint8_t *out)
{
    static const uint8_t iv[16];
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int l1 = 0, l2 = 0;
    int ok = ctx && EVP_CipherInit_ex(ctx, EVP_aes_256_cbc(), NULL, key, iv, encrypt) &&
             EVP_CIPHER_CTX_set_padding(ctx, 0) && EVP_CipherUpdate(ctx, out, &l1, in, (int)n) &&
             EVP_CipherFinal_ex(ctx, out + l1, &l2) && (size_t)(l1 + l2) == n;
    EVP_CIPHER_CTX_free(ctx);
    return ok;
}

/* ---- building the plaintext -------------------------------------------------------------- */

typedef struct {
    uint8_t b[PLAIN_MAX];
    size_t n;
    int overflow;
} plainbuf;

static void put_u16(plainbuf *p, size_t v)
{
    if (p->n + 2 > sizeof p->b || v > 0xffff) {
        p->overflow = 1;
        return;
    }
    p->b[p->n++] = (uint8_t)(v >> 8);
    p->b[p->n++] = (uint8_t)v;
}

static void put_component(plainbuf *p, const uint8_t *v, size_t len)
{
    put_u16(p, len);
    if (p->overflow || p->n + len > sizeof p->b) {
        p->overflow = 1;
        return;
    }
    memcpy(p->b + p->n, v, len);
    p->n += len;
}

/* A BIGNUM as a minimal-length component; NULL counts as a failure. */
static void put_bn(plainbuf *p, const BIGNUM *bn)
{
    uint8_t tmp[1024];
    int len = bn ? BN_num_bytes(bn) : -1;
    if (len < 0 || (size_t)len > sizeof tmp) {
        p->overflow = 1;
        return;
    }
    BN_bn2bin(bn, tmp);
    put_component(p, tmp, (size_t)len);
    OPENSSL_cleanse(tmp, (size_t)len);
}

static BIGNUM *get_bn(EVP_PKEY *k, const char *name)
{
    BIGNUM *b = NULL;
    return EVP_PKEY_get_bn_param(k, name, &b) ? b : NULL;
}

/* RSA: type 6 (dp, dq, p, qinv, q, n, e) up to 2048 bits, type 5 (d, n, e) above, as CardContact's
 * own key manager does (the card takes CRT keys only up to 2048 bits). */
static int plain_rsa(EVP_PKEY *k, plainbuf *p, uint8_t *type, char *err, size_t errlen)
{
    int bits = EVP_PKEY_get_bits(k);
    if (bits < 2048 || bits > 4096)
        return schsm_km_fail(err, errlen, "RSA key of %d bits: the SmartCard-HSM takes 2048 to 4096", bits);
    BIGNUM *n = get_bn(k, OSSL_PKEY_PARAM_RSA_N), *e = get_bn(k, OSSL_PKEY_PARAM_RSA_E);
    BIGNUM *d = get_bn(k, OSSL_PKEY_PARAM_RSA_D), *f1 = get_bn(k, OSSL_PKEY_PARAM_RSA_FACTOR1);
    BIGNUM *f2 = get_bn(k, OSSL_PKEY_PARAM_RSA_FACTOR2), *dp = get_bn(k, OSSL_PKEY_PARAM_RSA_EXPONENT1);
    BIGNUM *dq = get_bn(k, OSSL_PKEY_PARAM_RSA_EXPONENT2), *qinv = get_bn(k, OSSL_PKEY_PARAM_RSA_COEFFICIENT1);
    int ok = 0;
    if (!n || !e || !d) {
        schsm_km_fail(err, errlen, "the RSA key has no private part");
        goto done;
    }
    put_u16(p, (size_t)BN_num_bytes(n) * 8);
    if (bits <= 2048) {
        if (!f1 || !f2 || !dp || !dq || !qinv) {
            schsm_km_fail(err, errlen, "the RSA key has no CRT components");
            goto done;
        }
        *type = SCHSM_KEY_RSA_CRT;
        put_bn(p, dp);
        put_bn(p, dq);
        put_bn(p, f1);
        put_bn(p, qinv);
        put_bn(p, f2);
    } else {
        *type = SCHSM_KEY_RSA;
        put_bn(p, d);
    }
    put_bn(p, n);
    put_bn(p, e);
    ok = !p->overflow;
    if (!ok)
        schsm_km_fail(err, errlen, "RSA key too large to wrap");
done:
    BN_free(n);
    BN_free(e);
    BN_clear_free(d);
    BN_clear_free(f1);
    BN_clear_free(f2);
    BN_clear_free(dp);
    BN_clear_free(dq);
    BN_clear_free(qinv);
    return ok;
}

/* EC: a, b, p, n, G, d, Q of one of the card's curves. */
static int plain_ec(EVP_PKEY *k, plainbuf *p, char *err, size_t errlen)
{
    char curve[64] = "";
    EC_GROUP *g = NULL;
    BIGNUM *bp = BN_new(), *ba = BN_new(), *bb = BN_new(), *d = NULL, *x = NULL, *y = NULL;
    uint8_t point[1 + 2 * 66];
    int ok = 0;
    if (!EVP_PKEY_get_utf8_string_param(k, OSSL_PKEY_PARAM_GROUP_NAME, curve, sizeof curve, NULL)) {
        schsm_km_fail(err, errlen, "EC key without a named curve");
        goto done;
    }
    g = EC_GROUP_new_by_curve_name(OBJ_txt2nid(curve));
    if (!g || !bp || !ba || !bb || !EC_GROUP_get_curve(g, bp, ba, bb, NULL)) {
        schsm_km_fail(err, errlen, "EC curve %s unknown", curve);
        goto done;
    }
    uint8_t pbytes[66];
    int plen = BN_num_bytes(bp);
    if (plen > 66 || BN_bn2bin(bp, pbytes) != plen || !schsm_curve_by_prime(pbytes, (size_t)plen)) {
        schsm_km_fail(err, errlen, "EC curve %s is not one the SmartCard-HSM supports", curve);
        goto done;
    }
    d = get_bn(k, OSSL_PKEY_PARAM_PRIV_KEY);
    x = get_bn(k, OSSL_PKEY_PARAM_EC_PUB_X);
    y = get_bn(k, OSSL_PKEY_PARAM_EC_PUB_Y);
    if (!d || !x || !y) {
        schsm_km_fail(err, errlen, "the EC key has no private part");
        goto done;
    }
    put_u16(p, (size_t)plen * 8);
    put_bn(p, ba);
    put_bn(p, bb);
    put_bn(p, bp);
    put_bn(p, EC_GROUP_get0_order(g));
    size_t glen = EC_POINT_point2oct(g, EC_GROUP_get0_generator(g), POINT_CONVERSION_UNCOMPRESSED, point,
                                     sizeof point, NULL);
    put_component(p, point, glen);
    put_bn(p, d);
    point[0] = 0x04;
    if (glen != 1 + 2 * (size_t)plen || BN_bn2binpad(x, point + 1, plen) != plen ||
        BN_bn2binpad(y, point + 1 + plen, plen) != plen) {
        schsm_km_fail(err, errlen, "EC public point does not fit the curve");
        goto done;
    }
    put_component(p, point, glen);
    ok = !p->overflow;
    if (!ok)
        schsm_km_fail(err, errlen, "EC key too large to wrap");
done:
    EC_GROUP_free(g);
    BN_free(bp);
    BN_free(ba);
    BN_free(bb);
    BN_clear_free(d);
    BN_free(x);
    BN_free(y);
    return ok;
}

/* ---- building the blob ------------------------------------------------------------------- */

static uint8_t *put_field(uint8_t *o, const uint8_t *v, size_t n)
{
    *o++ = (uint8_t)(n >> 8);
    *o++ = (uint8_t)n;
    if (n)
        memcpy(o, v, n);
    return o + n;
}

int schsm_wrap_key(const uint8_t dkek[SCHSM_DKEK_LEN], EVP_PKEY *key, const uint8_t *algorithms, size_t nalg,
                   uint8_t **blob, size_t *bloblen, char *err, size_t errlen)
{
    plainbuf *p = OPENSSL_secure_zalloc(sizeof *p);
    uint8_t kenc[32], kmac[32], type = 0;
    uint8_t *out = NULL;
    const uint8_t *oid;
    size_t oidlen;
    int ok = 0;

    *blob = NULL;
    if (err && errlen)
        err[0] = 0; /* read back below to tell a named failure from an unnamed one */
    if (!p)
        return schsm_km_fail(err, errlen, "out of memory");
    if (nalg > SCHSM_MAX_ALGORITHMS) {
        schsm_km_fail(err, errlen, "at most %d allowed algorithms", SCHSM_MAX_ALGORITHMS);
        goto done;
    }
    if (RAND_bytes(p->b, 8) != 1)
        goto done;
    p->n = 8;
    if (EVP_PKEY_is_a(key, "RSA")) {
        if (!plain_rsa(key, p, &type, err, errlen))
            goto done;
        oid = oid_ta_rsa_sha256, oidlen = sizeof oid_ta_rsa_sha256;
    } else if (EVP_PKEY_is_a(key, "EC")) {
        if (!plain_ec(key, p, err, errlen))
            goto done;
        type = SCHSM_KEY_EC, oid = oid_ta_ecdsa_sha256, oidlen = sizeof oid_ta_ecdsa_sha256;
    } else {
        schsm_km_fail(err, errlen, "only RSA and EC keys can be wrapped for the SmartCard-HSM");
        goto done;
    }
    /* ISO 9797-1 padding method 2 to whole AES blocks: always at least the 80. */
    if (p->n + 16 > sizeof p->b) {
        schsm_km_fail(err, errlen, "key too large to wrap");
        goto done;
    }
    p->b[p->n++] = 0x80;
    while (p->n % 16)
        p->b[p->n++] = 0;

    size_t header = 8 + 1 + 2 + oidlen + 2 + nalg + 2 + 2;
    size_t total = header + p->n + 16;
    out = OPENSSL_malloc(total);
    if (!out || !derive(dkek, 1, kenc) || !derive(dkek, 2, kmac) || !schsm_dkek_kcv(dkek, out))
        goto done;
    uint8_t *o = out + 8;
    *o++ = type;
    o = put_field(o, oid, oidlen);
    o = put_field(o, algorithms, nalg);
    o = put_field(o, NULL, 0); /* access conditions */
    o = put_field(o, NULL, 0); /* key OID */
    if (!cbc_nopad(1, kenc, p->b, p->n, o) || !cmac(kmac, out, header + p->n, out + header + p->n))
        goto done;
    *blob = out, *bloblen = total, out = NULL;
    ok = 1;
done:
    if (!ok && err && errlen && !*err)
        schsm_km_fail(err, errlen, "wrapping the key failed");
    OPENSSL_free(out);
    OPENSSL_secure_clear_free(p, sizeof *p);
    OPENSSL_cleanse(kenc, sizeof kenc);
    OPENSSL_cleanse(kmac, sizeof kmac);
    return ok;
}

/* ---- parsing the blob -------------------------------------------------------------------- */

int schsm_blob_kcv(const uint8_t *blob, size_t n, uint8_t kcv[SCHSM_KCV_LEN], char *err, size_t errlen)
{
    if (n < MIN_BLOB)
        return schsm_km_fail(err, errlen, "not a wrapped key: %zu bytes is too short", n);
    memcpy(kcv, blob, SCHSM_KCV_LEN);
    return 1;
}

/* One 2-byte-length field of the header at *o, bounded by end. */
static int get_field(const uint8_t **o, const uint8_t *end, const uint8_t **v, size_t *len)
{
    if (end - *o < 2)
        return 0;
    size_t n = (size_t)(*o)[0] << 8 | (*o)[1];
    if ((size_t)(end - *o - 2) < n)
        return 0;
    *v = *o + 2;
    *len = n;
    *o += 2 + n;
    return 1;
}

/* Component reader over the decrypted plaintext. */
typedef struct {
    const uint8_t *p, *end;
    int bad;
} reader;

static const uint8_t *take(reader *r, size_t *len)
{
    const uint8_t *v = NULL;
    if (r->bad || !get_field(&r->p, r->end, &v, len)) {
        r->bad = 1;
        *len = 0;
        return NULL;
    }
    return v;
}

static BIGNUM *take_bn(reader *r)
{
    size_t n;
    const uint8_t *v = take(r, &n);
    BIGNUM *b = v && n ? BN_secure_new() : NULL;
    if (b && !BN_bin2bn(v, (int)n, b)) {
        BN_clear_free(b);
        b = NULL;
    }
    if (!b)
        r->bad = 1;
    return b;
}

/* After the last component: nothing, or 80 00.. */
static int padding_ok(const reader *r)
{
    const uint8_t *q = r->p;
    if (q == r->end)
        return 1;
    if (*q++ != 0x80)
        return 0;
    while (q < r->end)
        if (*q++)
            return 0;
    return 1;
}

static int fromdata(const char *alg, OSSL_PARAM_BLD *bld, EVP_PKEY **out)
{
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, alg, NULL);
    int ok = params && ctx && EVP_PKEY_fromdata_init(ctx) > 0 &&
             EVP_PKEY_fromdata(ctx, out, EVP_PKEY_KEYPAIR, params) > 0;
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params); /* the secure part (secret BNs) is cleared by OpenSSL */
    return ok;
}

/* The pair belongs together (EC: Q = d·G; RSA: n = p·q and the exponents agree). */
static int pairwise_ok(EVP_PKEY *k)
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, k, NULL);
    int ok = ctx && EVP_PKEY_pairwise_check(ctx) > 0;
    EVP_PKEY_CTX_free(ctx);
    return ok;
}

static int unwrap_rsa(reader *r, int type, unsigned size, EVP_PKEY **out, char *err, size_t errlen)
{
    BIGNUM *c[7] = {0}; /* type 5: d, n, e; type 6: dp, dq, p, qinv, q, n, e */
    int count = type == SCHSM_KEY_RSA ? 3 : 7, ok = 0;
    BIGNUM *d = NULL, *t1 = NULL, *t2 = NULL, *lcm = NULL;
    BN_CTX *bctx = BN_CTX_secure_new();
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    for (int i = 0; i < count; i++)
        c[i] = take_bn(r);
    BIGNUM *n = c[count - 2], *e = c[count - 1];
    if (r->bad || !bctx || !bld) {
        schsm_km_fail(err, errlen, "wrapped RSA key: components malformed");
        goto done;
    }
    if (size < 1024 || size > 4096 || (unsigned)BN_num_bits(n) > size || (unsigned)BN_num_bits(n) + 8 <= size) {
        schsm_km_fail(err, errlen, "wrapped RSA key: size %u bits does not fit its modulus", size);
        goto done;
    }
    if (type == SCHSM_KEY_RSA) {
        d = BN_dup(c[0]);
    } else {
        /* d = e^-1 mod lcm(p-1, q-1), for OpenSSL's full private key */
        BIGNUM *p = c[2], *q = c[4];
        d = BN_secure_new(), t1 = BN_secure_new(), t2 = BN_secure_new(), lcm = BN_secure_new();
        if (!d || !t1 || !t2 || !lcm || !BN_sub(t1, p, BN_value_one()) || !BN_sub(t2, q, BN_value_one()) ||
            !BN_mul(lcm, t1, t2, bctx) || !BN_gcd(t1, t1, t2, bctx) || !BN_div(lcm, NULL, lcm, t1, bctx) ||
            !BN_mod_inverse(d, e, lcm, bctx)) {
            schsm_km_fail(err, errlen, "wrapped RSA key: CRT components are inconsistent");
            goto done;
        }
    }
    if (!d || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e) || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_D, d))
        goto done;
    if (type == SCHSM_KEY_RSA_CRT &&
        (!OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_FACTOR1, c[2]) ||
         !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_FACTOR2, c[4]) ||
         !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_EXPONENT1, c[0]) ||
         !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_EXPONENT2, c[1]) ||
         !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_COEFFICIENT1, c[3])))
        goto done;
    if (!fromdata("RSA", bld, out)) {
        schsm_km_fail(err, errlen, "wrapped RSA key: OpenSSL does not take it");
        goto done;
    }
    /* Type 5 has no factors to check against; type 6 must multiply out. */
    if (type == SCHSM_KEY_RSA_CRT && !pairwise_ok(*out)) {
        EVP_PKEY_free(*out);
        *out = NULL;
        schsm_km_fail(err, errlen, "wrapped RSA key: p·q is not n");
        goto done;
    }
    ok = 1;
done:
    if (!ok && err && errlen && !*err)
        schsm_km_fail(err, errlen, "wrapped RSA key: cannot be rebuilt");
    for (int i = 0; i < 7; i++)
        BN_clear_free(c[i]);
    BN_clear_free(d);
    BN_clear_free(t1);
    BN_clear_free(t2);
    BN_clear_free(lcm);
    BN_CTX_free(bctx);
    OSSL_PARAM_BLD_free(bld);
    return ok;
}

/* Component v equals the curve's value (leading zeros ignored). */
static int same_value(const uint8_t *v, size_t n, const BIGNUM *want)
{
    BIGNUM *b = BN_bin2bn(v, (int)n, NULL);
    int same = b && BN_cmp(b, want) == 0;
    BN_free(b);
    return same;
}

static int unwrap_ec(reader *r, unsigned size, EVP_PKEY **out, char *err, size_t errlen)
{
    size_t alen, blen, plen, nlen, glen, dlen, qlen;
    const uint8_t *a = take(r, &alen), *b = take(r, &blen), *p = take(r, &plen), *n = take(r, &nlen);
    const uint8_t *g = take(r, &glen), *d = take(r, &dlen), *q = take(r, &qlen);
    EC_GROUP *grp = NULL;
    BIGNUM *gp = BN_new(), *ga = BN_new(), *gb = BN_new(), *bd = NULL;
    uint8_t gen[1 + 2 * 66];
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    int ok = 0;
    const char *curve = r->bad ? NULL : schsm_curve_by_prime(p, plen);
    if (r->bad || !gp || !ga || !gb || !bld) {
        schsm_km_fail(err, errlen, "wrapped EC key: components malformed");
        goto done;
    }
    if (!curve || !(grp = EC_GROUP_new_by_curve_name(OBJ_txt2nid(curve))) ||
        !EC_GROUP_get_curve(grp, gp, ga, gb, NULL)) {
        schsm_km_fail(err, errlen, "wrapped EC key: curve not supported");
        goto done;
    }
    /* pico-hsm leaves a (and may leave b) empty; present ones must match the curve. */
    size_t genlen = EC_POINT_point2oct(grp, EC_GROUP_get0_generator(grp), POINT_CONVERSION_UNCOMPRESSED, gen,
                                       sizeof gen, NULL);
    if ((alen && !same_value(a, alen, ga)) || (blen && !same_value(b, blen, gb)) ||
        !same_value(n, nlen, EC_GROUP_get0_order(grp)) || glen != genlen || memcmp(g, gen, glen) != 0 ||
        size != (unsigned)BN_num_bytes(gp) * 8) {
        schsm_km_fail(err, errlen, "wrapped EC key: domain parameters do not match %s", curve);
        goto done;
    }
    if (dlen == 0 || dlen > 66 || !(bd = BN_bin2bn(d, (int)dlen, BN_secure_new())) || qlen != genlen || q[0] != 4) {
        schsm_km_fail(err, errlen, "wrapped EC key: private value or public point malformed");
        goto done;
    }
    if (!OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, curve, 0) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, bd) ||
        !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, q, qlen) || !fromdata("EC", bld, out)) {
        schsm_km_fail(err, errlen, "wrapped EC key: OpenSSL does not take it");
        goto done;
    }
    if (!pairwise_ok(*out)) {
        EVP_PKEY_free(*out);
        *out = NULL;
        schsm_km_fail(err, errlen, "wrapped EC key: public point is not d·G");
        goto done;
    }
    ok = 1;
done:
    EC_GROUP_free(grp);
    BN_free(gp);
    BN_free(ga);
    BN_free(gb);
    BN_clear_free(bd);
    OSSL_PARAM_BLD_free(bld);
    return ok;
}

static int unwrap_aes(reader *r, unsigned size, schsm_unwrapped *out, char *err, size_t errlen)
{
    if ((size != 16 && size != 24 && size != 32) || (size_t)(r->end - r->p) < size)
        return schsm_km_fail(err, errlen, "wrapped AES key: size %u bytes not supported", size);
    memcpy(out->aes, r->p, size);
    out->aeslen = size;
    r->p += size;
    return 1;
}

/* Header fields after the KCV: type, OIDs, lists. *o ends at the ciphertext. */
static int parse_header(const uint8_t *blob, size_t n, schsm_unwrapped *out, const uint8_t **cipher, char *err,
                        size_t errlen)
{
    const uint8_t *o = blob + 9, *end = blob + n - 16, *oid, *alg, *acl, *koid;
    size_t oidlen, alglen, acllen, koidlen;
    out->type = blob[8];
    if (!get_field(&o, end, &oid, &oidlen) || !get_field(&o, end, &alg, &alglen) ||
        !get_field(&o, end, &acl, &acllen) || !get_field(&o, end, &koid, &koidlen))
        return schsm_km_fail(err, errlen, "wrapped key: header fields run past the end");
    switch (out->type) {
    case SCHSM_KEY_RSA:
    case SCHSM_KEY_RSA_CRT:
        if (oidlen != sizeof oid_ta_rsa_sha256 || memcmp(oid, oid_ta_rsa_sha256, oidlen - 1) != 0)
            return schsm_km_fail(err, errlen, "wrapped key: RSA key with a non-RSA algorithm");
        break;
    case SCHSM_KEY_EC:
        if (oidlen != sizeof oid_ta_ecdsa_sha256 || memcmp(oid, oid_ta_ecdsa_sha256, oidlen - 1) != 0)
            return schsm_km_fail(err, errlen, "wrapped key: EC key with a non-ECDSA algorithm");
        break;
    case SCHSM_KEY_AES: /* the card's firmware 3.0-3.2 wrote this OID wrongly: not checked */
        break;
    default:
        return schsm_km_fail(err, errlen, "wrapped key: unknown key type %d", out->type);
    }
    if (alglen > SCHSM_MAX_ALGORITHMS)
        return schsm_km_fail(err, errlen, "wrapped key: %zu allowed algorithms (at most %d)", alglen,
                          SCHSM_MAX_ALGORITHMS);
    memcpy(out->algorithms, alg, alglen);
    out->nalgorithms = alglen;
    if (o == end || (end - o) % 16)
        return schsm_km_fail(err, errlen, "wrapped key: encrypted part is not whole AES blocks");
    *cipher = o;
    return 1;
}

int schsm_unwrap_key(const uint8_t dkek[SCHSM_DKEK_LEN], const uint8_t *blob, size_t n, schsm_unwrapped *out,
                     char *err, size_t errlen)
{
    uint8_t kcv[SCHSM_KCV_LEN], kenc[32], kmac[32], mac[16];
    uint8_t *plain = NULL;
    size_t plainlen = 0;
    const uint8_t *cipher = NULL;
    int ok = 0;

    memset(out, 0, sizeof *out);
    if (err && errlen)
        err[0] = 0; /* read back by the key decoders */
    if (n < MIN_BLOB)
        return schsm_km_fail(err, errlen, "not a wrapped key: %zu bytes is too short", n);
    if (!schsm_dkek_kcv(dkek, kcv))
        return schsm_km_fail(err, errlen, "cannot compute the DKEK's KCV");
    if (memcmp(kcv, blob, SCHSM_KCV_LEN) != 0) {
        char want[17], have[17];
        schsm_km_hex(blob, 8, want);
        schsm_km_hex(kcv, 8, have);
        return schsm_km_fail(err, errlen, "the key is wrapped under the DKEK with KCV %s, this DKEK has KCV %s", want,
                          have);
    }
    if (!derive(dkek, 1, kenc) || !derive(dkek, 2, kmac) || !cmac(kmac, blob, n - 16, mac)) {
        schsm_km_fail(err, errlen, "cannot derive the blob keys");
        goto done;
    }
    if (CRYPTO_memcmp(mac, blob + n - 16, 16) != 0) {
        schsm_km_fail(err, errlen, "wrapped key: CMAC does not verify (blob altered or damaged)");
        goto done;
    }
    if (!parse_header(blob, n, out, &cipher, err, errlen))
        goto done;
    plainlen = (size_t)(blob + n - 16 - cipher);
    if (plainlen > PLAIN_MAX) {
        schsm_km_fail(err, errlen, "wrapped key: %zu bytes of key data is more than any card key", plainlen);
        goto done;
    }
    if (!(plain = OPENSSL_secure_malloc(plainlen)) || !cbc_nopad(0, kenc, cipher, plainlen, plain)) {
        schsm_km_fail(err, errlen, "wrapped key: decryption failed");
        goto done;
    }
    reader r = {plain + 8, plain + plainlen, 0};
    if (plainlen < 10) {
        schsm_km_fail(err, errlen, "wrapped key: no key size");
        goto done;
    }
    unsigned size = (unsigned)plain[8] << 8 | plain[9];
    r.p = plain + 10;
    if (out->type == SCHSM_KEY_EC)
        ok = unwrap_ec(&r, size, &out->pkey, err, errlen);
    else if (out->type == SCHSM_KEY_AES)
        ok = unwrap_aes(&r, size, out, err, errlen);
    else
        ok = unwrap_rsa(&r, out->type, size, &out->pkey, err, errlen);
    if (ok && !padding_ok(&r)) {
        ok = schsm_km_fail(err, errlen, "wrapped key: bytes after the key are not 80 00.. padding");
        schsm_unwrapped_clear(out);
    }
done:
    OPENSSL_secure_clear_free(plain, plainlen);
    OPENSSL_cleanse(kenc, sizeof kenc);
    OPENSSL_cleanse(kmac, sizeof kmac);
    if (!ok)
        schsm_unwrapped_clear(out);
    return ok;
}

void schsm_unwrapped_clear(schsm_unwrapped *u)
{
    EVP_PKEY_free(u->pkey);
    OPENSSL_cleanse(u, sizeof *u);
}

/* ---- sc-hsm-tool's wrap file ------------------------------------------------------------- */

/* Tag + definite length of n (short form up to 127, else 81/82/83). */
static size_t put_tl(uint8_t *o, unsigned tag, size_t n)
{
    size_t i = 0;
    o[i++] = (uint8_t)tag;
    if (n < 0x80) {
        o[i++] = (uint8_t)n;
    } else if (n <= 0xff) {
        o[i++] = 0x81, o[i++] = (uint8_t)n;
    } else if (n <= 0xffff) {
        o[i++] = 0x82, o[i++] = (uint8_t)(n >> 8), o[i++] = (uint8_t)n;
    } else {
        o[i++] = 0x83, o[i++] = (uint8_t)(n >> 16), o[i++] = (uint8_t)(n >> 8), o[i++] = (uint8_t)n;
    }
    return i;
}

/* The bytes form exactly one TLV. */
static int one_tlv(const uint8_t *v, size_t n)
{
    const uint8_t *p = v;
    schsm_kmtlv t;
    return schsm_kmtlv_next(&p, v + n, &t) && p == v + n;
}

int schsm_wrap_file_build(const uint8_t *blob, size_t bloblen, const uint8_t *prkd, size_t prkdlen,
                          const uint8_t *cert, size_t certlen, uint8_t **out, size_t *outlen, char *err,
                          size_t errlen)
{
    *out = NULL;
    if (bloblen < MIN_BLOB || bloblen > 0xffff)
        return schsm_km_fail(err, errlen, "wrap file: blob of %zu bytes", bloblen);
    if ((prkdlen && !one_tlv(prkd, prkdlen)) || (certlen && !one_tlv(cert, certlen)))
        return schsm_km_fail(err, errlen, "wrap file: the PrKD and the certificate must each be one TLV");
    if (prkdlen + certlen > 0xffff)
        return schsm_km_fail(err, errlen, "wrap file: PrKD and certificate too large");
    uint8_t hdr[5];
    size_t inner = put_tl(hdr, 0x04, bloblen) + bloblen + prkdlen + certlen;
    size_t total = put_tl(hdr, 0x30, inner) + inner;
    uint8_t *o = OPENSSL_malloc(total);
    if (!o)
        return schsm_km_fail(err, errlen, "out of memory");
    size_t i = put_tl(o, 0x30, inner);
    i += put_tl(o + i, 0x04, bloblen);
    memcpy(o + i, blob, bloblen), i += bloblen;
    if (prkdlen)
        memcpy(o + i, prkd, prkdlen), i += prkdlen;
    if (certlen)
        memcpy(o + i, cert, certlen), i += certlen;
    *out = o, *outlen = i;
    return 1;
}

int schsm_wrap_file_parse(const uint8_t *file, size_t n, const uint8_t **blob, size_t *bloblen,
                          const uint8_t **prkd, size_t *prkdlen, const uint8_t **cert, size_t *certlen, char *err,
                          size_t errlen)
{
    const uint8_t *p = file;
    schsm_kmtlv outer, t;
    *prkd = *cert = NULL;
    *prkdlen = *certlen = 0;
    if (!schsm_kmtlv_next(&p, file + n, &outer) || outer.tag != 0x30)
        return schsm_km_fail(err, errlen, "not a wrapped-key file (no outer SEQUENCE)");
    if (p != file + n)
        return schsm_km_fail(err, errlen, "wrapped-key file: %zu bytes after the SEQUENCE", (size_t)(file + n - p));
    p = outer.value;
    const uint8_t *end = outer.value + outer.len;
    if (!schsm_kmtlv_next(&p, end, &t) || t.tag != 0x04 || t.len < MIN_BLOB)
        return schsm_km_fail(err, errlen, "wrapped-key file: no key blob (OCTET STRING) first");
    *blob = t.value, *bloblen = t.len;
    if (p < end) {
        if (!schsm_kmtlv_next(&p, end, &t))
            return schsm_km_fail(err, errlen, "wrapped-key file: private key description malformed");
        *prkd = t.tlv, *prkdlen = t.tlvlen;
    }
    if (p < end) {
        if (!schsm_kmtlv_next(&p, end, &t))
            return schsm_km_fail(err, errlen, "wrapped-key file: certificate malformed");
        *cert = t.tlv, *certlen = t.tlvlen;
    }
    if (p != end)
        return schsm_km_fail(err, errlen, "wrapped-key file: more than blob, PrKD and certificate");
    return 1;
}
