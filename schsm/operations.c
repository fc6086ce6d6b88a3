/*
 * Signatures, decryption and key agreement with the card's keys (docs/smartcard-hsm.md,
 * "Operations"). The host builds what the card does not: DigestInfo and PKCS#1 padding for
 * RSA signatures, PSS encoding for non-default PSS parameters, and the removal of PKCS#1 v1.5
 * or OAEP padding after the card's raw RSA decryption. Every check that needs no key (the
 * algorithm, the key's type, lengths, parameters) happens before the PIN, so a refused
 * request costs no PIN try.
 */
/* OpenSSL 3.0 has no non-deprecated API for PSS encoding or OAEP decoding of a raw block. */
#define OPENSSL_SUPPRESS_DEPRECATED
#include "internal.h"
#include "rsa/pkcs1_implicit.h"

#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#define P "https://webpki.github.io/sks/algorithm#"
#define XMLDSIG_MORE "http://www.w3.org/2001/04/xmldsig-more#"

/* SIGN / DECIPHER algorithm bytes of the card */
#define CARD_RSA_RAW 0x20
#define CARD_RSA_PSS 0x40
#define CARD_ECDSA 0x70
#define CARD_RSA_DECRYPT_RAW 0x21
#define CARD_ECDH 0x80

typedef enum { OP_SIGN, OP_DECRYPT, OP_AGREE } op_class;
typedef enum { PAD_NONE, PAD_PKCS1, PAD_PSS, PAD_OAEP } pad_kind;

typedef struct {
    const char *uri;
    op_class cls;
    schsm_key_type key;
    const char *md;  /* hash (signatures), OAEP digest */
    size_t hash_len; /* signHashedData: required data length; 0 = any hash */
    pad_kind pad;
    int oaep_params; /* rsa.oaep: digests and label in "parameters" */
} algorithm;

static const algorithm ALGORITHMS[] = {
    { XMLDSIG_MORE "ecdsa-sha256", OP_SIGN, SCHSM_KEY_EC, "SHA256", 32, PAD_NONE, 0 },
    { XMLDSIG_MORE "ecdsa-sha384", OP_SIGN, SCHSM_KEY_EC, "SHA384", 48, PAD_NONE, 0 },
    { XMLDSIG_MORE "ecdsa-sha512", OP_SIGN, SCHSM_KEY_EC, "SHA512", 64, PAD_NONE, 0 },
    { P "ecdsa.none", OP_SIGN, SCHSM_KEY_EC, NULL, 0, PAD_NONE, 0 },
    { XMLDSIG_MORE "rsa-sha256", OP_SIGN, SCHSM_KEY_RSA, "SHA256", 32, PAD_PKCS1, 0 },
    { XMLDSIG_MORE "rsa-sha384", OP_SIGN, SCHSM_KEY_RSA, "SHA384", 48, PAD_PKCS1, 0 },
    { XMLDSIG_MORE "rsa-sha512", OP_SIGN, SCHSM_KEY_RSA, "SHA512", 64, PAD_PKCS1, 0 },
    { P "rsa.pkcs1.none", OP_SIGN, SCHSM_KEY_RSA, NULL, 0, PAD_PKCS1, 0 },
    { P "rsa.pss.sha256", OP_SIGN, SCHSM_KEY_RSA, "SHA256", 32, PAD_PSS, 0 },
    { P "rsa.pss.sha384", OP_SIGN, SCHSM_KEY_RSA, "SHA384", 48, PAD_PSS, 0 },
    { P "rsa.pss.sha512", OP_SIGN, SCHSM_KEY_RSA, "SHA512", 64, PAD_PSS, 0 },
    { P "rsa.es.pkcs1_5", OP_DECRYPT, SCHSM_KEY_RSA, NULL, 0, PAD_PKCS1, 0 },
    { P "rsa.oaep.sha1", OP_DECRYPT, SCHSM_KEY_RSA, "SHA1", 0, PAD_OAEP, 0 },
    { P "rsa.oaep.sha256", OP_DECRYPT, SCHSM_KEY_RSA, "SHA256", 0, PAD_OAEP, 0 },
    { P "rsa.oaep", OP_DECRYPT, SCHSM_KEY_RSA, NULL, 0, PAD_OAEP, 1 },
    { P "ecdh.raw", OP_AGREE, SCHSM_KEY_EC, NULL, 0, PAD_NONE, 0 },
};

const char *const *schsm_algorithms(size_t *count)
{
    static const char *uris[sizeof(ALGORITHMS) / sizeof(ALGORITHMS[0])];
    size_t i;

    for (i = 0; i < sizeof(ALGORITHMS) / sizeof(ALGORITHMS[0]); i++)
        uris[i] = ALGORITHMS[i].uri;
    *count = i;
    return uris;
}

static const char *class_text(op_class cls)
{
    return cls == OP_SIGN ? "a signature" : cls == OP_DECRYPT ? "an asymmetric decryption" : "a key agreement";
}

static const char *method_of(op_class cls)
{
    return cls == OP_SIGN ? "signHashedData" : cls == OP_DECRYPT ? "asymmetricKeyDecrypt" : "keyAgreement";
}

/* The algorithm of the request if it is of class cls and fits key k. */
static int pick_algorithm(schsm_ctx *c, const schsm_key *k, const schsm_op *op, op_class cls, const algorithm **out)
{
    size_t i;

    *out = NULL;
    for (i = 0; i < sizeof(ALGORITHMS) / sizeof(ALGORITHMS[0]); i++)
        if (ALGORITHMS[i].cls == cls && sks_span_eq_str(op->algorithm, ALGORITHMS[i].uri))
            *out = &ALGORITHMS[i];
    if (*out == NULL)
        return schsm_fail(c, SKS_ERROR_ALGORITHM, "%s: \"%.*s\" is not %s algorithm of the SmartCard-HSM driver",
                          method_of(cls), (int)op->algorithm.n, op->algorithm.p, class_text(cls));
    if (k->type != (*out)->key)
        return schsm_fail(c, SKS_ERROR_ALGORITHM, "%s: \"%s\" does not fit the type of key #%u", method_of(cls),
                          (*out)->uri, k->kid);
    if (!(*out)->oaep_params && (*out)->pad != PAD_PSS && op->parameters.n != 0)
        return schsm_fail(c, SKS_ERROR_OPTION, "%s: \"parameters\" must be empty for this algorithm", method_of(cls));
    return SKS_OK;
}

/* The digest a parameters string names: the SHA family, spelled as docs/algorithms.md has it. */
static const EVP_MD *digest_named(sks_span name)
{
    static const char *const NAMES[] = { "SHA1", "SHA224", "SHA256", "SHA384", "SHA512" };
    size_t i;

    for (i = 0; i < sizeof(NAMES) / sizeof(NAMES[0]); i++)
        if (sks_span_eq_str(name, NAMES[i]))
            return EVP_get_digestbyname(NAMES[i]);
    return NULL;
}

/* A raw RSA result from the card as exactly k bytes (left-padded: a card may drop zeros). */
static int fixed_length(schsm_ctx *c, const char *what, sks_buf *resp, size_t k, uint8_t *out)
{
    if (resp->len == 0 || resp->len > k)
        return schsm_fail(c, SKS_ERROR_EXTERNAL, "%s: the card answered %zu bytes for a %zu-byte key", what, resp->len, k);
    memset(out, 0, k - resp->len);
    memcpy(out + k - resp->len, resp->data, resp->len);
    return SKS_OK;
}

/* Runs one key command with the PIN verified and checks its status word. */
static int key_command(schsm_ctx *c, const schsm_op *op, const char *what, uint8_t ins, uint8_t kid, uint8_t alg,
                       const uint8_t *data, size_t n, sks_buf *resp)
{
    unsigned sw = 0;
    int rc = schsm_with_pin(c, op->authorization, 0x80, ins, kid, alg, data, n, resp, &sw);

    if (rc != SKS_OK)
        return rc;
    if (sw == SW_OK)
        return SKS_OK;
    if (sw == SW_SECURITY)
        return schsm_fail(c, SKS_ERROR_AUTHORIZATION, "%s: the card in %s refused key #%u after a fresh PIN verification"
                          " (%04X %s)", what, c->io->reader ? c->io->reader : "?", kid, sw, schsm_sw_text(sw));
    if (sw == SW_NOT_FOUND || sw == SW_REF_NOT_FOUND)
        c->card->cached = 0; /* the key went away: read the card again next time */
    return schsm_fail(c, schsm_sw_status(sw), "%s: the card refused key #%u: %04X %s", what, kid, sw,
                      schsm_sw_text(sw));
}

/* ---- signatures ---- */

static const uint8_t DI_SHA256[] = { 0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                                     0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20 };
static const uint8_t DI_SHA384[] = { 0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                                     0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30 };
static const uint8_t DI_SHA512[] = { 0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                                     0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40 };

/* EMSA-PKCS1-v1_5 (type 01) of T = [DigestInfo prefix] || data into em[k]. */
static int pkcs1_type1(const algorithm *a, const schsm_op *op, size_t k, uint8_t *em)
{
    const uint8_t *prefix = NULL;
    size_t plen = 0, tlen;

    if (a->hash_len == 32) {
        prefix = DI_SHA256;
        plen = sizeof(DI_SHA256);
    } else if (a->hash_len == 48) {
        prefix = DI_SHA384;
        plen = sizeof(DI_SHA384);
    } else if (a->hash_len == 64) {
        prefix = DI_SHA512;
        plen = sizeof(DI_SHA512);
    }
    tlen = plen + op->data.n;
    if (k < 11 || tlen > k - 11)
        return 0;
    em[0] = 0x00;
    em[1] = 0x01;
    memset(em + 2, 0xFF, k - tlen - 3);
    em[k - tlen - 1] = 0x00;
    if (plen)
        memcpy(em + k - tlen, prefix, plen);
    memcpy(em + k - op->data.n, op->data.p, op->data.n);
    return 1;
}

/* RSA-PSS parameters (docs/algorithms.md): empty, or ushort saltLength [string mgf1Digest]. */
static int pss_parameters(sks_span p, const EVP_MD *md, int *saltlen, const EVP_MD **mgf1)
{
    sks_reader r;

    *saltlen = EVP_MD_get_size(md);
    *mgf1 = md;
    if (p.n == 0)
        return 1;
    sks_reader_init(&r, p.p, p.n);
    *saltlen = sks_get_ushort(&r, "saltLength");
    if (sks_reader_ok(&r) && r.off < r.n) {
        sks_span name = sks_get_string(&r, "mgf1Digest");
        if (!sks_reader_ok(&r) || (*mgf1 = digest_named(name)) == NULL || sks_span_eq_str(name, "SHA224"))
            return 0;
    }
    sks_reader_expect_end(&r);
    return sks_reader_ok(&r);
}

/* DER ECDSA-Sig-Value from the card -> r || s, each fb bytes (the wire's form). */
static int ecdsa_der_to_raw(const uint8_t *der, size_t n, size_t fb, sks_buf *out)
{
    const uint8_t *p = der, *end, *q, *qend;
    uint8_t raw[2 * SCHSM_MAX_FIELD_BYTES];
    schsm_tlv seq, t;
    int i;

    if (der == NULL || n == 0)
        return 0;
    end = der + n;
    if (fb == 0 || fb > SCHSM_MAX_FIELD_BYTES || !schsm_tlv_next(&p, end, &seq) || seq.tag != 0x30 || p != end)
        return 0;
    q = seq.v;
    qend = seq.v + seq.len;
    for (i = 0; i < 2; i++) {
        const uint8_t *v;
        size_t len;
        if (!schsm_tlv_next(&q, qend, &t) || t.tag != 0x02 || t.len == 0 || (t.v[0] & 0x80))
            return 0;
        for (v = t.v, len = t.len; len > 0 && *v == 0; v++, len--)
            ;
        if (len > fb)
            return 0;
        memset(raw + i * fb, 0, fb - len);
        memcpy(raw + i * fb + fb - len, v, len);
    }
    if (q != qend)
        return 0;
    sks_buf_put(out, raw, 2 * fb);
    return 1;
}

static int sign_ecdsa(schsm_ctx *c, schsm_key *k, const algorithm *a, const schsm_op *op, sks_buf *out)
{
    size_t fb = schsm_key_bytes(k);
    sks_buf resp;
    int rc;

    if (a->hash_len == 0 && (op->data.n == 0 || op->data.n > 64))
        return schsm_fail(c, SKS_ERROR_OPTION, "signHashedData: \"data\" must be a hash of 1-64 bytes, got %zu",
                          op->data.n);
    if (fb == 0)
        return schsm_fail(c, SKS_ERROR_NOT_AVAILABLE, "signHashedData: the curve of key #%u is unknown (no certificate,"
                          " no size in its description)", k->kid);
    sks_buf_init(&resp);
    rc = key_command(c, op, "signHashedData", 0x68, k->kid, CARD_ECDSA, op->data.p, op->data.n, &resp);
    if (rc == SKS_OK && !ecdsa_der_to_raw(resp.data, resp.len, fb, out))
        rc = schsm_fail(c, SKS_ERROR_EXTERNAL, "signHashedData: the card's ECDSA signature is not DER for key #%u",
                        k->kid);
    sks_buf_free(&resp);
    return rc;
}

/* PSS-encodes the hash on the host for SIGN 20 (non-default salt length or MGF1 digest). */
static int pss_encode(schsm_key *k, const EVP_MD *md, const EVP_MD *mgf1, int saltlen, const schsm_op *op, size_t kb,
                      uint8_t *em)
{
    const RSA *rsa = k->pub != NULL ? EVP_PKEY_get0_RSA(k->pub) : NULL;
    int ok;

    if (rsa == NULL || (size_t)RSA_size(rsa) != kb)
        return 0;
    ok = RSA_padding_add_PKCS1_PSS_mgf1((RSA *)rsa, em, op->data.p, md, mgf1, saltlen) == 1;
    ERR_clear_error();
    return ok;
}

/*
 * The card's RSA signature checked with the key's public key before anyone sees it: a card
 * with a fault in one CRT half gives a signature s with gcd(s^e - m, n) = a prime factor of n
 * (Boneh-DeMillo-Lipton), so one faulty signature handed out gives the private key away.
 * sent: the block given to SIGN 20, or NULL for the card's own PSS over the hash.
 */
static int rsa_signature_verifies(const schsm_key *k, const algorithm *a, const schsm_op *op, const uint8_t *sent,
                                  const uint8_t *sig, size_t kb)
{
    const RSA *rsa = k->pub != NULL ? EVP_PKEY_get0_RSA(k->pub) : NULL;
    uint8_t em[SCHSM_MAX_RSA_BYTES];
    const EVP_MD *md;
    int ok;

    if (rsa == NULL)
        return 1; /* no public key known (a key described by its PrKD only): nothing to check with */
    ok = (size_t)RSA_size(rsa) == kb && RSA_public_decrypt((int)kb, sig, em, (RSA *)rsa, RSA_NO_PADDING) == (int)kb;
    if (ok && sent != NULL)
        ok = CRYPTO_memcmp(em, sent, kb) == 0;
    else if (ok)
        ok = (md = EVP_get_digestbyname(a->md)) != NULL
             && RSA_verify_PKCS1_PSS_mgf1((RSA *)rsa, op->data.p, md, md, em, (int)a->hash_len) == 1;
    OPENSSL_cleanse(em, sizeof(em));
    ERR_clear_error();
    return ok;
}

static int sign_rsa(schsm_ctx *c, schsm_key *k, const algorithm *a, const schsm_op *op, sks_buf *out)
{
    size_t kb = schsm_key_bytes(k);
    uint8_t em[SCHSM_MAX_RSA_BYTES], sig[SCHSM_MAX_RSA_BYTES];
    uint8_t card_alg = CARD_RSA_RAW;
    const uint8_t *send = em;
    size_t send_len = kb;
    sks_buf resp;
    int rc;

    if (kb < 64 || kb > SCHSM_MAX_RSA_BYTES)
        return schsm_fail(c, SKS_ERROR_NOT_AVAILABLE, "signHashedData: the modulus size of key #%u is unknown", k->kid);
    if (a->pad == PAD_PSS) {
        const EVP_MD *md = EVP_get_digestbyname(a->md), *mgf1 = NULL;
        int saltlen;
        if (md == NULL || !pss_parameters(op->parameters, md, &saltlen, &mgf1))
            return schsm_fail(c, SKS_ERROR_OPTION, "signHashedData: RSA-PSS \"parameters\" must be empty or ushort"
                              " saltLength followed by an optional MGF1 digest name (SHA1, SHA256, SHA384, SHA512)");
        if ((size_t)saltlen == a->hash_len && mgf1 == md) {
            /* the card's own PSS: salt = hash length, MGF1 with the hash */
            card_alg = CARD_RSA_PSS;
            send = op->data.p;
            send_len = op->data.n;
        } else if (!pss_encode(k, md, mgf1, saltlen, op, kb, em)) {
            return schsm_fail(c, SKS_ERROR_OPTION, "signHashedData: RSA-PSS with salt length %d does not fit key #%u"
                              " (or its public key is unknown)", saltlen, k->kid);
        }
    } else if (a->hash_len == 0 && op->data.n == 0) {
        return schsm_fail(c, SKS_ERROR_OPTION, "signHashedData: \"data\" is empty");
    } else if (!pkcs1_type1(a, op, kb, em)) {
        return schsm_fail(c, SKS_ERROR_OPTION, "signHashedData: %zu bytes of \"data\" do not fit the %zu-byte key #%u",
                          op->data.n, kb, k->kid);
    }
    sks_buf_init(&resp);
    rc = key_command(c, op, "signHashedData", 0x68, k->kid, card_alg, send, send_len, &resp);
    if (rc == SKS_OK && (rc = fixed_length(c, "signHashedData", &resp, kb, sig)) == SKS_OK
        && !rsa_signature_verifies(k, a, op, card_alg == CARD_RSA_RAW ? em : NULL, sig, kb))
        rc = schsm_fail(c, SKS_ERROR_EXTERNAL, "signHashedData: the card's signature with key #%u does not verify"
                        " (a faulty card); it was not handed out", k->kid);
    if (rc == SKS_OK)
        sks_buf_put(out, sig, kb);
    OPENSSL_cleanse(em, sizeof(em));
    sks_buf_free(&resp);
    return rc;
}

int schsm_sign(schsm_ctx *c, schsm_key *k, const schsm_op *op, sks_buf *out)
{
    const algorithm *a;
    int rc;

    if ((rc = pick_algorithm(c, k, op, OP_SIGN, &a)) != SKS_OK)
        return rc;
    if (a->hash_len != 0 && op->data.n != a->hash_len)
        return schsm_fail(c, SKS_ERROR_OPTION, "signHashedData: \"data\" must be a %zu-byte hash for \"%s\", got %zu bytes",
                          a->hash_len, a->uri, op->data.n);
    return a->key == SCHSM_KEY_EC ? sign_ecdsa(c, k, a, op, out) : sign_rsa(c, k, a, op, out);
}

/* ---- decryption ---- */

/*
 * The key's secret for implicit rejection. The software device derives it from the private
 * exponent, which never leaves the card; instead the card decrypts one fixed block, derived
 * from the modulus, once per card session: that result is fixed for the key and secret (it
 * is the block raised to the private exponent), so the synthetic message for a ciphertext is
 * the same every time, in every process.
 */
static int implicit_secret(schsm_ctx *c, schsm_key *k, const schsm_op *op, size_t kb)
{
    static const char LABEL[] = "sks schsm implicit rejection key";
    uint8_t block[SCHSM_MAX_RSA_BYTES], raw[SCHSM_MAX_RSA_BYTES], h[32];
    size_t pos;
    uint32_t counter;
    sks_buf resp;
    int rc;

    if (k->has_implicit_secret)
        return SKS_OK;
    /* block = 00 || SHA-256(label || counter)... : below the modulus by its leading zero */
    block[0] = 0;
    for (pos = 1, counter = 0; pos < kb; counter++, pos += 32) {
        EVP_MD_CTX *m = EVP_MD_CTX_new();
        uint8_t cb[4] = { (uint8_t)(counter >> 24), (uint8_t)(counter >> 16), (uint8_t)(counter >> 8), (uint8_t)counter };
        unsigned int hl = 0;
        int ok = m != NULL && EVP_DigestInit_ex(m, EVP_sha256(), NULL) == 1
                 && EVP_DigestUpdate(m, LABEL, sizeof(LABEL) - 1) == 1 && EVP_DigestUpdate(m, cb, 4) == 1
                 && EVP_DigestFinal_ex(m, h, &hl) == 1;
        EVP_MD_CTX_free(m);
        if (!ok)
            return schsm_fail(c, SKS_ERROR_INTERNAL, "asymmetricKeyDecrypt: SHA-256 failed");
        memcpy(block + pos, h, kb - pos < 32 ? kb - pos : 32);
    }
    sks_buf_init(&resp);
    rc = key_command(c, op, "asymmetricKeyDecrypt", 0x62, k->kid, CARD_RSA_DECRYPT_RAW, block, kb, &resp);
    if (rc == SKS_OK && (rc = fixed_length(c, "asymmetricKeyDecrypt", &resp, kb, raw)) == SKS_OK) {
        unsigned int hl = 0;
        if (EVP_Digest(raw, kb, k->implicit_secret, &hl, EVP_sha256(), NULL) != 1)
            rc = schsm_fail(c, SKS_ERROR_INTERNAL, "asymmetricKeyDecrypt: SHA-256 failed");
        else
            k->has_implicit_secret = 1;
    }
    OPENSSL_cleanse(raw, sizeof(raw));
    sks_buf_free(&resp);
    return rc;
}

/*
 * Removes PKCS#1 v1.5 type-2 padding from em[k] with implicit rejection (rsa/pkcs1_implicit.h):
 * the key derivation key is HMAC-SHA256(the key's secret, ciphertext).
 */
static int pkcs1_unpad_implicit(const uint8_t secret[32], const uint8_t *ct, const uint8_t *em, size_t k, sks_buf *out)
{
    uint8_t kdk[32];
    unsigned int len = 0;
    int ok;

    ok = HMAC(EVP_sha256(), secret, 32, ct, k, kdk, &len) != NULL && len == 32
         && sks_pkcs1_unpad_implicit(kdk, em, k, out);
    OPENSSL_cleanse(kdk, sizeof(kdk));
    return ok;
}

/* rsa.oaep parameters: string oaepDigest, string mgf1Digest, byte[] label, nothing after. */
static int oaep_parameters(sks_span p, const EVP_MD **md, const EVP_MD **mgf1, sks_span *label)
{
    sks_reader r;
    sks_span a, b;

    sks_reader_init(&r, p.p, p.n);
    a = sks_get_string(&r, "oaepDigest");
    b = sks_get_string(&r, "mgf1Digest");
    *label = sks_get_array(&r, "label");
    sks_reader_expect_end(&r);
    return sks_reader_ok(&r) && (*md = digest_named(a)) != NULL && (*mgf1 = digest_named(b)) != NULL;
}

/* A ciphertext not below the modulus is a public fact: refused without asking the card. */
static int below_modulus(const schsm_key *k, const uint8_t *ct, size_t n)
{
    BIGNUM *mod = NULL, *v;
    int below;

    if (k->pub == NULL)
        return 1; /* the card checks it */
    if (EVP_PKEY_get_bn_param(k->pub, OSSL_PKEY_PARAM_RSA_N, &mod) != 1)
        return 0;
    v = BN_bin2bn(ct, (int)n, NULL);
    below = v != NULL && BN_cmp(v, mod) < 0;
    BN_free(v);
    BN_free(mod);
    return below;
}

int schsm_decrypt(schsm_ctx *c, schsm_key *k, const schsm_op *op, sks_buf *out)
{
    size_t kb = schsm_key_bytes(k);
    const algorithm *a;
    const EVP_MD *md = NULL, *mgf1 = NULL;
    sks_span label = { NULL, 0 };
    uint8_t em[SCHSM_MAX_RSA_BYTES], msg[SCHSM_MAX_RSA_BYTES];
    sks_buf resp;
    int rc, len;

    if ((rc = pick_algorithm(c, k, op, OP_DECRYPT, &a)) != SKS_OK)
        return rc;
    if (a->oaep_params && !oaep_parameters(op->parameters, &md, &mgf1, &label))
        return schsm_fail(c, SKS_ERROR_OPTION, "asymmetricKeyDecrypt: rsa.oaep \"parameters\" must be string oaepDigest,"
                          " string mgf1Digest (each SHA1, SHA224, SHA256, SHA384 or SHA512) and byte[] label");
    if (a->pad == PAD_OAEP && !a->oaep_params)
        md = mgf1 = EVP_get_digestbyname(a->md);
    if (kb < 64 || kb > SCHSM_MAX_RSA_BYTES)
        return schsm_fail(c, SKS_ERROR_NOT_AVAILABLE, "asymmetricKeyDecrypt: the modulus size of key #%u is unknown",
                          k->kid);
    /* One answer for every failure, public or not, as the software device gives. */
    if (op->data.n != kb || !below_modulus(k, op->data.p, op->data.n))
        return schsm_fail(c, SKS_ERROR_CRYPTO, "asymmetricKeyDecrypt: decryption with key #%u failed", k->kid);
    if (a->pad == PAD_PKCS1 && (rc = implicit_secret(c, k, op, kb)) != SKS_OK)
        return rc;
    sks_buf_init(&resp);
    rc = key_command(c, op, "asymmetricKeyDecrypt", 0x62, k->kid, CARD_RSA_DECRYPT_RAW, op->data.p, op->data.n, &resp);
    if (rc == SKS_OK)
        rc = fixed_length(c, "asymmetricKeyDecrypt", &resp, kb, em);
    sks_buf_free(&resp);
    if (rc != SKS_OK)
        return rc;
    if (a->pad == PAD_PKCS1) {
        if (!pkcs1_unpad_implicit(k->implicit_secret, op->data.p, em, kb, out))
            rc = schsm_fail(c, SKS_ERROR_INTERNAL, "asymmetricKeyDecrypt: out of memory");
    } else {
        len = RSA_padding_check_PKCS1_OAEP_mgf1(msg, (int)kb, em, (int)kb, (int)kb, label.p, (int)label.n, md, mgf1);
        ERR_clear_error(); /* nothing in the queue may tell the failures apart */
        if (len < 0)
            rc = schsm_fail(c, SKS_ERROR_CRYPTO, "asymmetricKeyDecrypt: decryption with key #%u failed", k->kid);
        else
            sks_buf_put(out, msg, (size_t)len);
    }
    OPENSSL_cleanse(em, sizeof(em));
    OPENSSL_cleanse(msg, sizeof(msg));
    return rc;
}

/* ---- key agreement ---- */

/* The peer's point, uncompressed (04 || X || Y), if the SubjectPublicKeyInfo is an EC key
 * on the curve of k. */
static size_t peer_point(const schsm_key *k, sks_span spki, uint8_t *out, size_t cap)
{
    const unsigned char *q = spki.p;
    EVP_PKEY *peer;
    char ours[64], theirs[64];
    size_t len = 0, fb = schsm_key_field_bytes(k);

    if (spki.n == 0 || (peer = d2i_PUBKEY(NULL, &q, (long)spki.n)) == NULL)
        return 0;
    if (q != spki.p + spki.n || EVP_PKEY_get_base_id(peer) != EVP_PKEY_EC
        || !EVP_PKEY_get_utf8_string_param(peer, OSSL_PKEY_PARAM_GROUP_NAME, theirs, sizeof(theirs), NULL))
        goto done;
    /* A point on another curve of the same field size (an invalid-curve attack on the card's
     * key) must not reach the card: a key whose curve is unknown takes no peer at all. */
    if (k->pub == NULL
        || !EVP_PKEY_get_utf8_string_param(k->pub, OSSL_PKEY_PARAM_GROUP_NAME, ours, sizeof(ours), NULL)
        || strcmp(ours, theirs) != 0)
        goto done;
    if (EVP_PKEY_set_utf8_string_param(peer, OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT, "uncompressed") != 1
        || EVP_PKEY_get_octet_string_param(peer, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, out, cap, &len) != 1
        || len != 1 + 2 * fb || out[0] != 0x04)
        len = 0;
done:
    EVP_PKEY_free(peer);
    ERR_clear_error();
    return len;
}

int schsm_agree(schsm_ctx *c, schsm_key *k, const schsm_op *op, sks_buf *out)
{
    uint8_t point[1 + 2 * SCHSM_MAX_FIELD_BYTES];
    size_t fb = schsm_key_field_bytes(k), n;
    const algorithm *a;
    sks_buf resp;
    int rc;

    if ((rc = pick_algorithm(c, k, op, OP_AGREE, &a)) != SKS_OK)
        return rc;
    if (fb == 0 || fb > SCHSM_MAX_FIELD_BYTES || (n = peer_point(k, op->data, point, sizeof(point))) == 0)
        return schsm_fail(c, SKS_ERROR_OPTION, "keyAgreement: \"publicKey\" must be an EC public key on the curve of key"
                          " #%u", k->kid);
    sks_buf_init(&resp);
    rc = key_command(c, op, "keyAgreement", 0x62, k->kid, CARD_ECDH, point, n, &resp);
    /* The card answers 04 || X (pico-hsm) or 04 || X || Y: the secret is X. */
    if (rc == SKS_OK && (resp.len < 1 + fb || resp.data[0] != 0x04))
        rc = schsm_fail(c, SKS_ERROR_EXTERNAL, "keyAgreement: the card's answer (%zu bytes) is not a point on the curve"
                        " of key #%u", resp.len, k->kid);
    if (rc == SKS_OK)
        sks_buf_put(out, resp.data + 1, fb);
    sks_buf_free(&resp);
    return rc;
}
