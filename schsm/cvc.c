/*
 * Card-verifiable certificates of the SmartCard-HSM (docs/smartcard-hsm-keymgmt.md):
 *
 *   7F21 { 7F4E { 5F29 CPI, 42 CAR, 7F49 public key, 5F20 CHR, [7F4C CHAT], [5F25], [5F24],
 *                 [65 extensions] },
 *          5F37 signature r ‖ s }
 *   67 { 7F21 .., 42 outer CAR, 5F37 outer signature over 7F21 ‖ 42 }   (key-generation answer)
 *
 * The signature covers the encoded 7F4E TLV. DICA and device certificates carry only the OID and
 * the point of their EC key: the curve is inherited from the issuer. The structures are walked
 * at fixed depths (at most 67 > 7F21 > 7F4E > 7F49 > element) with the bounded TLV reader.
 */
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>

#include "keymgmt_formats.h"
#include "keymgmt_util.h"

/* id-TA (0.4.0.127.0.7.2.2.2) then 1 = RSA, 2 = ECDSA, then the hash variant */
static const uint8_t oid_ta[] = {0x04, 0x00, 0x7F, 0x00, 0x07, 0x02, 0x02, 0x02};

/* ---- parsing ----------------------------------------------------------------------------- */

static int set_ref(char out[SCHSM_CVC_REF_MAX + 1], const schsm_kmtlv *t)
{
    if (t->len == 0 || t->len > SCHSM_CVC_REF_MAX)
        return 0;
    for (size_t i = 0; i < t->len; i++)
        if (t->value[i] < 0x20 || t->value[i] > 0x7e)
            return 0;
    memcpy(out, t->value, t->len);
    out[t->len] = 0;
    return 1;
}

static int set_date(char out[7], const schsm_kmtlv *t)
{
    if (t->len != 6)
        return 0;
    for (int i = 0; i < 6; i++) {
        if (t->value[i] > 9)
            return 0;
        out[i] = (char)('0' + t->value[i]);
    }
    out[6] = 0;
    return 1;
}

static void set_bytes(schsm_bytes *b, const schsm_kmtlv *t)
{
    b->p = t->value;
    b->n = t->len;
}

/* Takes each element once: a repeated one makes the certificate ambiguous. */
static int once(unsigned *seen, unsigned bit)
{
    if (*seen & bit)
        return 0;
    *seen |= bit;
    return 1;
}

static int parse_public_key(const schsm_kmtlv *pk, schsm_cvc *c, char *err, size_t errlen)
{
    const uint8_t *p = pk->value, *end = pk->value + pk->len;
    schsm_kmtlv t;
    unsigned seen = 0;
    int is_rsa = -1;
    while (p < end) {
        if (!schsm_kmtlv_next(&p, end, &t))
            return schsm_km_fail(err, errlen, "CV certificate: public key template malformed");
        unsigned bit = t.tag == 0x06 ? 1u : (t.tag >= 0x81 && t.tag <= 0x87) ? 1u << (t.tag - 0x80) : 0;
        if (!bit || !once(&seen, bit))
            return schsm_km_fail(err, errlen, "CV certificate: tag %X unexpected or repeated in the public key", t.tag);
        if (t.tag == 0x06) {
            if (t.len != sizeof oid_ta + 2 || memcmp(t.value, oid_ta, sizeof oid_ta) != 0 ||
                (t.value[8] != 1 && t.value[8] != 2))
                return schsm_km_fail(err, errlen, "CV certificate: public key algorithm is not id-TA RSA or ECDSA");
            set_bytes(&c->key_oid, &t);
            is_rsa = t.value[8] == 1;
            continue;
        }
        if (is_rsa < 0)
            return schsm_km_fail(err, errlen, "CV certificate: public key OID must come first");
        schsm_bytes *slot = NULL;
        if (is_rsa)
            slot = t.tag == 0x81 ? &c->rsa_n : t.tag == 0x82 ? &c->rsa_e : NULL;
        else
            switch (t.tag) {
            case 0x81: slot = &c->p; break;
            case 0x82: slot = &c->a; break;
            case 0x83: slot = &c->b; break;
            case 0x84: slot = &c->g; break;
            case 0x85: slot = &c->n; break;
            case 0x86: slot = &c->q; break;
            case 0x87: slot = &c->h; break;
            }
        if (!slot)
            return schsm_km_fail(err, errlen, "CV certificate: unexpected tag %X in the public key", t.tag);
        set_bytes(slot, &t);
    }
    if (is_rsa < 0 || (is_rsa && (!c->rsa_n.p || !c->rsa_e.p)) || (!is_rsa && !c->q.p))
        return schsm_km_fail(err, errlen, "CV certificate: public key incomplete");
    return 1;
}

static int parse_body(const schsm_kmtlv *body, schsm_cvc *c, char *err, size_t errlen)
{
    const uint8_t *p = body->value, *end = body->value + body->len;
    schsm_kmtlv t;
    unsigned seen = 0;
    while (p < end) {
        if (!schsm_kmtlv_next(&p, end, &t))
            return schsm_km_fail(err, errlen, "CV certificate: body malformed");
        int ok = 1;
        switch (t.tag) {
        case 0x5F29:
            ok = once(&seen, 1) && t.len == 1;
            c->cpi = ok ? t.value[0] : 0;
            break;
        case 0x42:
            ok = once(&seen, 2) && set_ref(c->car, &t);
            break;
        case 0x7F49:
            if (!once(&seen, 4))
                ok = 0;
            else if (!parse_public_key(&t, c, err, errlen))
                return 0;
            break;
        case 0x5F20:
            ok = once(&seen, 8) && set_ref(c->chr, &t);
            break;
        case 0x7F4C: {
            const uint8_t *q = t.value, *qend = t.value + t.len;
            schsm_kmtlv oid, bits;
            ok = once(&seen, 16) && schsm_kmtlv_next(&q, qend, &oid) && oid.tag == 0x06 &&
                 schsm_kmtlv_next(&q, qend, &bits) && bits.tag == 0x53 && q == qend;
            if (ok)
                set_bytes(&c->chat_oid, &oid), set_bytes(&c->chat, &bits);
            break;
        }
        case 0x5F25:
            ok = once(&seen, 32) && set_date(c->effective, &t);
            break;
        case 0x5F24:
            ok = once(&seen, 64) && set_date(c->expiry, &t);
            break;
        case 0x65: /* certificate extensions (key domain UID, ...): kept in body, not decoded here */
            ok = once(&seen, 128);
            break;
        default:
            ok = 0;
        }
        if (!ok)
            return schsm_km_fail(err, errlen, "CV certificate: element %X malformed or repeated", t.tag);
    }
    if (!(seen & 1) || !(seen & 4) || !(seen & 8))
        return schsm_km_fail(err, errlen, "CV certificate: CPI, public key or CHR missing");
    return 1;
}

/* 7F21 { 7F4E, 5F37 } */
static int parse_cert(const schsm_kmtlv *cert, schsm_cvc *c, char *err, size_t errlen)
{
    const uint8_t *p = cert->value, *end = cert->value + cert->len;
    schsm_kmtlv body, sig;
    if (!schsm_kmtlv_next(&p, end, &body) || body.tag != 0x7F4E || !schsm_kmtlv_next(&p, end, &sig) ||
        sig.tag != 0x5F37 || p != end)
        return schsm_km_fail(err, errlen, "CV certificate: not 7F21 { 7F4E body, 5F37 signature }");
    c->cert.p = cert->tlv, c->cert.n = cert->tlvlen;
    c->body.p = body.tlv, c->body.n = body.tlvlen;
    set_bytes(&c->signature, &sig);
    return parse_body(&body, c, err, errlen);
}

int schsm_cvc_parse(const uint8_t *buf, size_t n, schsm_cvc *c, size_t *used, char *err, size_t errlen)
{
    const uint8_t *p = buf;
    schsm_kmtlv t;
    memset(c, 0, sizeof *c);
    if (!schsm_kmtlv_next(&p, buf + n, &t) || (t.tag != 0x7F21 && t.tag != 0x67))
        return schsm_km_fail(err, errlen, "not a CV certificate or request (7F21 / 67 expected)");
    if (used)
        *used = t.tlvlen;
    if (t.tag == 0x7F21)
        return parse_cert(&t, c, err, errlen);

    const uint8_t *q = t.value, *end = t.value + t.len;
    schsm_kmtlv cert, car, sig;
    if (!schsm_kmtlv_next(&q, end, &cert) || cert.tag != 0x7F21 || !schsm_kmtlv_next(&q, end, &car) ||
        car.tag != 0x42 || !schsm_kmtlv_next(&q, end, &sig) || sig.tag != 0x5F37 || q != end)
        return schsm_km_fail(err, errlen, "CV request: not 67 { 7F21, 42 outer CAR, 5F37 outer signature }");
    if (!parse_cert(&cert, c, err, errlen))
        return 0;
    c->authenticated = 1;
    if (!set_ref(c->outer_car, &car))
        return schsm_km_fail(err, errlen, "CV request: outer CAR malformed");
    c->outer_signed.p = cert.tlv;
    c->outer_signed.n = cert.tlvlen + car.tlvlen;
    set_bytes(&c->outer_signature, &sig);
    return 1;
}

/* ---- public keys ------------------------------------------------------------------------- */

static int same_bn(const schsm_bytes *v, const BIGNUM *want)
{
    BIGNUM *b = BN_bin2bn(v->p, (int)v->n, NULL);
    int same = b && BN_cmp(b, want) == 0;
    BN_free(b);
    return same;
}

/* The named curve of explicit parameters d: found by the prime, the others must agree. */
static const char *curve_of(const schsm_cvc *d)
{
    const char *name = d->p.p ? schsm_curve_by_prime(d->p.p, d->p.n) : NULL;
    if (!name)
        return NULL;
    EC_GROUP *g = EC_GROUP_new_by_curve_name(OBJ_txt2nid(name));
    BIGNUM *a = BN_new(), *b = BN_new();
    int ok = g && a && b && EC_GROUP_get_curve(g, NULL, a, b, NULL) && (!d->a.p || same_bn(&d->a, a)) &&
             (!d->b.p || same_bn(&d->b, b)) && (!d->n.p || same_bn(&d->n, EC_GROUP_get0_order(g)));
    if (ok && d->g.p) {
        uint8_t gen[1 + 2 * 66];
        size_t glen = EC_POINT_point2oct(g, EC_GROUP_get0_generator(g), POINT_CONVERSION_UNCOMPRESSED, gen,
                                         sizeof gen, NULL);
        ok = glen == d->g.n && memcmp(gen, d->g.p, glen) == 0;
    }
    EC_GROUP_free(g);
    BN_free(a);
    BN_free(b);
    return ok ? name : NULL;
}

static int from_params(const char *alg, OSSL_PARAM_BLD *bld, EVP_PKEY **out)
{
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, alg, NULL);
    int ok = params && ctx && EVP_PKEY_fromdata_init(ctx) > 0 &&
             EVP_PKEY_fromdata(ctx, out, EVP_PKEY_PUBLIC_KEY, params) > 0;
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    return ok;
}

int schsm_cvc_public_key(const schsm_cvc *c, const schsm_cvc *domain, EVP_PKEY **out, char *err, size_t errlen)
{
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    BIGNUM *n = NULL, *e = NULL;
    int ok = 0;
    *out = NULL;
    if (!bld)
        return schsm_km_fail(err, errlen, "out of memory");
    if (c->rsa_n.p) {
        n = BN_bin2bn(c->rsa_n.p, (int)c->rsa_n.n, NULL);
        e = BN_bin2bn(c->rsa_e.p, (int)c->rsa_e.n, NULL);
        ok = n && e && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) &&
             OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e) && from_params("RSA", bld, out);
        if (!ok)
            schsm_km_fail(err, errlen, "CV certificate %s: RSA key unusable", c->chr);
    } else {
        const schsm_cvc *d = c->p.p ? c : domain;
        const char *curve = d ? curve_of(d) : NULL;
        if (!curve)
            schsm_km_fail(err, errlen, "CV certificate %s: %s", c->chr,
                       d ? "EC domain parameters of an unsupported curve" : "EC key without domain parameters");
        else if (!(ok = OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, curve, 0) &&
                        OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, c->q.p, c->q.n) &&
                        from_params("EC", bld, out)))
            schsm_km_fail(err, errlen, "CV certificate %s: public point not on %s", c->chr, curve);
    }
    BN_free(n);
    BN_free(e);
    OSSL_PARAM_BLD_free(bld);
    return ok;
}

/* ---- signatures -------------------------------------------------------------------------- */

/*
 * SHA-1 is refused in every CV signature. The SmartCard-HSM scheme signs with SHA-256 throughout:
 * both scheme roots, their DICA and device certificates carry id-TA-ECDSA-SHA-256, and the card
 * makes its outer signature with the device key's algorithm; the driver generates keys with the
 * SHA-256 OIDs. A SHA-1 OID in a chain or on a response is therefore never a real card's, and
 * SHA-1's chosen-prefix collisions would let a forger reuse a signature on other bytes.
 */
static int is_sha1(const schsm_bytes *oid)
{
    if (!oid || !oid->p || oid->n != sizeof oid_ta + 2 || memcmp(oid->p, oid_ta, sizeof oid_ta) != 0)
        return 0;
    /* id-TA-ECDSA-SHA-1 (2.1), id-TA-RSA-v1-5-SHA-1 (1.1), id-TA-RSA-PSS-SHA-1 (1.3) */
    return oid->p[8] == 2 ? oid->p[9] == 1 : oid->p[9] == 1 || oid->p[9] == 3;
}

static const EVP_MD *hash_of(const schsm_bytes *oid, int *is_ec)
{
    if (!oid || !oid->p || oid->n != sizeof oid_ta + 2 || memcmp(oid->p, oid_ta, sizeof oid_ta) != 0 ||
        is_sha1(oid))
        return NULL;
    *is_ec = oid->p[8] == 2;
    unsigned v = oid->p[9];
    if (*is_ec) {
        const EVP_MD *ec[] = {NULL, NULL, EVP_sha224(), EVP_sha256(), EVP_sha384(), EVP_sha512()};
        return v < 6 ? ec[v] : NULL;
    }
    /* id-TA-RSA-v1-5-SHA-256 / -SHA-512 (PSS variants not used by the card's CAs) */
    return v == 2 ? EVP_sha256() : v == 5 ? EVP_sha512() : NULL;
}

/* ECDSA r ‖ s (each half of the value) as the DER SEQUENCE OpenSSL verifies. */
static int raw_to_der(const schsm_bytes *sig, uint8_t **der, int *derlen)
{
    if (sig->n == 0 || sig->n % 2 || sig->n > 2 * 66)
        return 0;
    ECDSA_SIG *s = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig->p, (int)sig->n / 2, NULL), *ss = BN_bin2bn(sig->p + sig->n / 2, (int)sig->n / 2, NULL);
    if (!s || !r || !ss || !ECDSA_SIG_set0(s, r, ss)) {
        BN_free(r);
        BN_free(ss);
        ECDSA_SIG_free(s);
        return 0;
    }
    *der = NULL;
    *derlen = i2d_ECDSA_SIG(s, der);
    ECDSA_SIG_free(s);
    return *derlen > 0;
}

static int verify_sig(const schsm_bytes *data, const schsm_bytes *sig, EVP_PKEY *key, const schsm_bytes *oid)
{
    int is_ec = 0, ok = 0;
    const EVP_MD *md = hash_of(oid, &is_ec);
    uint8_t *der = NULL;
    int derlen = 0;
    if (!md || !data->p || !sig->p || is_ec != EVP_PKEY_is_a(key, "EC"))
        return 0;
    if (is_ec && !raw_to_der(sig, &der, &derlen))
        return 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    ok = ctx && EVP_DigestVerifyInit_ex(ctx, NULL, EVP_MD_get0_name(md), NULL, NULL, key, NULL) == 1 &&
         EVP_DigestVerify(ctx, is_ec ? der : sig->p, is_ec ? (size_t)derlen : sig->n, data->p, data->n) == 1;
    EVP_MD_CTX_free(ctx);
    OPENSSL_free(der);
    return ok;
}

int schsm_cvc_verify(const schsm_cvc *c, EVP_PKEY *issuer, const schsm_bytes *issuer_oid, char *err,
                     size_t errlen)
{
    const char *by = c->car[0] ? c->car : "its issuer";

    if (is_sha1(issuer_oid))
        return schsm_km_fail(err, errlen, "CV certificate %s: signed by %s with SHA-1, which is refused", c->chr, by);
    if (!verify_sig(&c->body, &c->signature, issuer, issuer_oid))
        return schsm_km_fail(err, errlen, "CV certificate %s: signature by %s does not verify", c->chr, by);
    return 1;
}

int schsm_cvc_verify_outer(const schsm_cvc *req, EVP_PKEY *device, const schsm_bytes *device_oid, char *err,
                           size_t errlen)
{
    if (!req->authenticated)
        return schsm_km_fail(err, errlen, "CV request %s has no outer signature", req->chr);
    if (is_sha1(device_oid))
        return schsm_km_fail(err, errlen, "CV request %s: outer signature by %s with SHA-1, which is refused",
                             req->chr, req->outer_car);
    if (!verify_sig(&req->outer_signed, &req->outer_signature, device, device_oid))
        return schsm_km_fail(err, errlen, "CV request %s: outer signature by %s does not verify", req->chr,
                          req->outer_car);
    return 1;
}

int schsm_cvc_verify_generated(const schsm_cvc *req, EVP_PKEY *device, const schsm_cvc *dev, char *err,
                               size_t errlen)
{
    if (!req->authenticated)
        return schsm_km_fail(err, errlen, "CV request %s has no outer signature", req->chr);
    /* a response signed for another device (outer CAR) proves nothing about this card, even
     * if the signature verifies with this card's key (pico-hsm emulators share one) */
    if (strcmp(req->outer_car, dev->chr) != 0) {
        schsm_km_fail(err, errlen, "CV request %s: outer CAR %s is not this card's device certificate %s", req->chr,
                      req->outer_car, dev->chr);
        return SCHSM_GEN_OTHER_DEVICE;
    }
    return schsm_cvc_verify_outer(req, device, &dev->key_oid, err, errlen) ? SCHSM_GEN_VERIFIED : SCHSM_GEN_INVALID;
}

/* ---- the device chain -------------------------------------------------------------------- */

static const schsm_root *find_root(const schsm_root *roots, size_t n, const char *car)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(roots[i].name, car) == 0)
            return &roots[i];
    return NULL;
}

/* Verifies c with the key of issuer (curve from domain when issuer has none). */
static int verify_by(const schsm_cvc *c, const schsm_cvc *issuer, const schsm_cvc *domain, char *err,
                     size_t errlen)
{
    EVP_PKEY *k = NULL;
    int ok = schsm_cvc_public_key(issuer, domain, &k, err, errlen) &&
             schsm_cvc_verify(c, k, &issuer->key_oid, err, errlen);
    EVP_PKEY_free(k);
    return ok;
}

schsm_chain_status schsm_cvc_verify_chain(const uint8_t *devaut, size_t n, const schsm_root *roots, size_t nroots,
                                          EVP_PKEY **device_key, char device_chr[SCHSM_CVC_REF_MAX + 1],
                                          char *err, size_t errlen)
{
    schsm_cvc dev, dica, root;
    size_t used = 0, used2 = 0;
    if (device_key)
        *device_key = NULL;
    if (err && errlen)
        err[0] = 0;
    if (!schsm_cvc_parse(devaut, n, &dev, &used, err, errlen) || dev.authenticated)
        return dev.authenticated ? (schsm_km_fail(err, errlen, "device certificate: a request, not a certificate"),
                                    SCHSM_CHAIN_INVALID)
                                 : SCHSM_CHAIN_INVALID;
    if (used == n) {
        /* One certificate (pico-hsm): self-signed at best, never one of the roots. */
        if (strcmp(dev.car, dev.chr) == 0 && dev.p.p && !verify_by(&dev, &dev, NULL, err, errlen))
            return SCHSM_CHAIN_INVALID;
        schsm_km_fail(err, errlen, "device certificate %s is not issued under a known root (CAR %s)", dev.chr,
                   dev.car);
        return SCHSM_CHAIN_UNKNOWN_ROOT;
    }
    if (!schsm_cvc_parse(devaut + used, n - used, &dica, &used2, err, errlen) || dica.authenticated ||
        used + used2 != n) {
        if (err && errlen && !*err)
            schsm_km_fail(err, errlen, "EF.C_DevAut: not device certificate ‖ DICA certificate");
        return SCHSM_CHAIN_INVALID;
    }
    if (strcmp(dev.car, dica.chr) != 0) {
        schsm_km_fail(err, errlen, "device certificate %s names CA %s, but the next certificate is %s", dev.chr, dev.car,
                   dica.chr);
        return SCHSM_CHAIN_INVALID;
    }
    const schsm_root *r = find_root(roots, nroots, dica.car);
    if (!r) {
        schsm_km_fail(err, errlen, "device issuer %s is certified by %s, which is not a known root", dica.chr, dica.car);
        return SCHSM_CHAIN_UNKNOWN_ROOT;
    }
    if (!schsm_cvc_parse(r->cert, r->len, &root, NULL, err, errlen) || strcmp(root.chr, r->name) != 0 ||
        !verify_by(&root, &root, NULL, err, errlen))
        return SCHSM_CHAIN_INVALID;
    const schsm_cvc *dica_domain = dica.p.p ? &dica : &root;
    if (!verify_by(&dica, &root, NULL, err, errlen) || !verify_by(&dev, &dica, &root, err, errlen))
        return SCHSM_CHAIN_INVALID;
    if (device_key && !schsm_cvc_public_key(&dev, dev.p.p ? &dev : dica_domain, device_key, err, errlen))
        return SCHSM_CHAIN_INVALID;
    if (device_chr)
        memcpy(device_chr, dev.chr, sizeof dev.chr);
    return SCHSM_CHAIN_VERIFIED;
}

/* An EC public key on the named curve. */
static int ec_key_on(const char *curve, const schsm_bytes *q, EVP_PKEY **out)
{
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    int ok = bld && OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, curve, 0) &&
             OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, q->p, q->n) && from_params("EC", bld, out);
    OSSL_PARAM_BLD_free(bld);
    return ok;
}

int schsm_cvc_device_key_unverified(const uint8_t *devaut, size_t n, schsm_cvc *dev, EVP_PKEY **key, char *err,
                                    size_t errlen)
{
    schsm_cvc dica;
    size_t used = 0;
    const char *curve;

    *key = NULL;
    if (!schsm_cvc_parse(devaut, n, dev, &used, err, errlen))
        return 0;
    if (dev->authenticated)
        return schsm_km_fail(err, errlen, "device certificate: a request, not a certificate");
    if (dev->rsa_n.p || dev->p.p)
        return schsm_cvc_public_key(dev, NULL, key, err, errlen);
    if (used < n && schsm_cvc_parse(devaut + used, n - used, &dica, NULL, NULL, 0) && dica.p.p)
        return schsm_cvc_public_key(dev, &dica, key, err, errlen);
    if ((curve = schsm_curve_of_point(dev->q.p, dev->q.n)) == NULL || !ec_key_on(curve, &dev->q, key))
        return schsm_km_fail(err, errlen, "device certificate %s: its key's curve is not known without the root",
                             dev->chr);
    return 1;
}
