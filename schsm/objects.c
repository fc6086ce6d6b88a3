/*
 * The card's key objects: ENUMERATE OBJECTS lists the file ids; CCkid is a key, C4kid its
 * PKCS#15 description (PrKD, written by OpenSC), CEkid its certificate (X.509, or the CV
 * request from key generation), CAnn + C8nn a certificate OpenSC stored apart with its CD
 * entry. All of it is read once per card session and cached (docs/smartcard-hsm.md).
 */
#include "internal.h"

#include <string.h>

#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ec.h>
#include <openssl/core_names.h>
#include <openssl/objects.h>
#include <openssl/x509.h>

#define PREFIX_KEY 0xCC
#define PREFIX_PRKD 0xC4
#define PREFIX_EE_CERT 0xCE
#define PREFIX_CA_CERT 0xCA
#define PREFIX_CD 0xC8

/* ---- PKCS#15 descriptions ---- */

/* A label as the wire's UTF-8 string: bytes that are not printable ASCII become '?' unless
 * the whole label is valid UTF-8 (then only control characters are replaced). */
static void copy_label(char *out, size_t cap, const uint8_t *p, size_t n)
{
    int utf8;
    size_t i;

    if (n >= cap)
        n = cap - 1;
    utf8 = sks_utf8_valid(p, n);
    for (i = 0; i < n; i++)
        out[i] = (char)(p[i] < 0x20 || p[i] == 0x7F || (!utf8 && p[i] >= 0x80) ? '?' : p[i]);
    out[n] = '\0';
    if (!sks_utf8_valid((const uint8_t *)out, n)) /* cut inside a multi-byte character */
        for (i = 0; i < n; i++)
            if ((uint8_t)out[i] >= 0x80)
                out[i] = '?';
}

/* A small non-negative DER INTEGER (a size in bits). */
static int small_uint(const schsm_tlv *t, unsigned *v)
{
    size_t i;

    if (t->tag != 0x02 || t->len == 0 || t->len > 3 || (t->v[0] & 0x80))
        return 0;
    for (*v = 0, i = 0; i < t->len; i++)
        *v = (*v << 8) | t->v[i];
    return 1;
}

int schsm_prkd_decode(const uint8_t *p, size_t n, schsm_key *k)
{
    const uint8_t *end, *q, *qend;
    schsm_tlv outer, common, keyattrs, sub, inner, t;

    if (p == NULL || n == 0)
        return 0;
    end = p + n;
    if (!schsm_tlv_next(&p, end, &outer))
        return 0;
    if (outer.tag == 0x30)
        k->type = SCHSM_KEY_RSA;
    else if (outer.tag == 0xA0)
        k->type = SCHSM_KEY_EC;
    else
        return 0; /* AES (A8) and the rest are not keys this driver uses */
    q = outer.v;
    qend = outer.v + outer.len;
    /* CommonObjectAttributes: the label is optional */
    if (!schsm_tlv_next(&q, qend, &common) || common.tag != 0x30)
        return 0;
    k->label[0] = '\0';
    if (schsm_tlv_find(common.v, common.v + common.len, 0x0C, &t))
        copy_label(k->label, sizeof(k->label), t.v, t.len);
    /* CommonKeyAttributes: iD first */
    if (!schsm_tlv_next(&q, qend, &keyattrs) || keyattrs.tag != 0x30
        || !schsm_tlv_find(keyattrs.v, keyattrs.v + keyattrs.len, 0x04, &t) || t.len > sizeof(k->id))
        return 0;
    memcpy(k->id, t.v, t.len);
    k->id_len = t.len;
    /* optional CommonPrivateKeyAttributes [0], then the type attributes [1] */
    k->bits = 0;
    if (schsm_tlv_find(q, qend, 0xA1, &sub) && schsm_tlv_next(&sub.v, sub.v + sub.len, &inner)
        && inner.tag == 0x30) {
        /* SEQUENCE { path/value, size INTEGER, ... }: the first INTEGER is the size */
        if (schsm_tlv_find(inner.v, inner.v + inner.len, 0x02, &t) && !small_uint(&t, &k->bits))
            k->bits = 0;
    }
    if (k->bits > 8192)
        k->bits = 0;
    k->has_prkd = 1;
    return 1;
}

int schsm_cd_id(const uint8_t *p, size_t n, uint8_t *id, size_t idcap, size_t *idlen)
{
    const uint8_t *q, *qend;
    schsm_tlv outer, common, certattrs, t;

    if (p == NULL || n == 0 || !schsm_tlv_next(&p, p + n, &outer) || outer.tag != 0x30)
        return 0;
    q = outer.v;
    qend = outer.v + outer.len;
    if (!schsm_tlv_next(&q, qend, &common) || common.tag != 0x30 || !schsm_tlv_next(&q, qend, &certattrs)
        || certattrs.tag != 0x30 || !schsm_tlv_find(certattrs.v, certattrs.v + certattrs.len, 0x04, &t)
        || t.len > idcap)
        return 0;
    memcpy(id, t.v, t.len);
    *idlen = t.len;
    return 1;
}

int schsm_request_key(const uint8_t *p, size_t n, uint8_t *out, size_t cap, size_t *len)
{
    schsm_tlv req, cert, body, pub, t;
    int ec;

    if (p == NULL || n == 0 || !schsm_tlv_next(&p, p + n, &req) || req.tag != 0x67
        || !schsm_tlv_find(req.v, req.v + req.len, 0x7F21, &cert)
        || !schsm_tlv_find(cert.v, cert.v + cert.len, 0x7F4E, &body)
        || !schsm_tlv_find(body.v, body.v + body.len, 0x7F49, &pub))
        return 0;
    ec = schsm_tlv_find(pub.v, pub.v + pub.len, 0x86, &t);
    if (!ec && !schsm_tlv_find(pub.v, pub.v + pub.len, 0x81, &t))
        return 0;
    while (!ec && t.len > 0 && t.v[0] == 0) { /* the modulus without leading zeros */
        t.v++;
        t.len--;
    }
    if (t.len == 0 || t.len > cap)
        return 0;
    memcpy(out, t.v, t.len);
    *len = t.len;
    return 1;
}

/* ---- reading files ---- */

int schsm_read_file(schsm_ctx *c, uint16_t fid, sks_buf *out, unsigned *sw)
{
    /* Le per chunk: a short answer (fewer bytes than asked) or 6282 marks the end. */
    int chunk = c->io->extended ? 1024 : 256;
    sks_buf resp;
    uint8_t off[4];
    int rc;

    sks_buf_reset(out);
    sks_buf_init(&resp);
    for (;;) {
        off[0] = 0x54;
        off[1] = 0x02;
        off[2] = (uint8_t)(out->len >> 8);
        off[3] = (uint8_t)out->len;
        rc = schsm_transmit(c, 0x00, 0xB1, (uint8_t)(fid >> 8), (uint8_t)fid, off, sizeof(off), chunk == 256 ? 0 : chunk,
                            &resp, sw);
        if (rc != SKS_OK)
            break;
        if (*sw != SW_OK && *sw != SW_EOF) {
            /* past the end after a whole number of chunks: the file ended there */
            if (out->len > 0 && (*sw == 0x6B00 || *sw == 0x6A86 || *sw == 0x6700))
                *sw = SW_OK;
            else
                sks_buf_reset(out);
            break;
        }
        if (out->len + resp.len > SCHSM_MAX_FILE) {
            rc = schsm_fail(c, SKS_ERROR_EXTERNAL, "file %04X on the card is larger than %d bytes", fid, SCHSM_MAX_FILE);
            break;
        }
        sks_buf_put(out, resp.data, resp.len);
        if (*sw == SW_EOF || resp.len < (size_t)chunk) {
            *sw = SW_OK;
            break;
        }
    }
    sks_buf_free(&resp);
    if (rc == SKS_OK && out->failed)
        rc = schsm_fail(c, SKS_ERROR_INTERNAL, "out of memory reading file %04X", fid);
    return rc;
}

/* ---- the key cache ---- */

void schsm_drop_keys(schsm_card *card)
{
    size_t i;

    for (i = 0; i < card->nkeys; i++) {
        OPENSSL_free(card->keys[i].cert);
        EVP_PKEY_free(card->keys[i].pub);
        OPENSSL_cleanse(card->keys[i].implicit_secret, sizeof(card->keys[i].implicit_secret));
    }
    OPENSSL_free(card->keys);
    card->keys = NULL;
    card->nkeys = 0;
    card->cached = 0;
}

schsm_key *schsm_find_key(schsm_card *card, uint32_t handle)
{
    size_t i;

    for (i = 0; i < card->nkeys; i++)
        if (card->keys[i].kid == handle)
            return &card->keys[i];
    return NULL;
}

static size_t ec_field_bytes_of(EVP_PKEY *pub)
{
    char name[64];
    EC_GROUP *g;
    size_t bytes = 0;
    int nid;

    if (!EVP_PKEY_get_utf8_string_param(pub, OSSL_PKEY_PARAM_GROUP_NAME, name, sizeof(name), NULL)
        || (nid = OBJ_sn2nid(name)) == NID_undef || (g = EC_GROUP_new_by_curve_name(nid)) == NULL)
        return 0;
    bytes = ((size_t)EC_GROUP_get_degree(g) + 7) / 8;
    EC_GROUP_free(g);
    return bytes;
}

size_t schsm_key_field_bytes(const schsm_key *k)
{
    return k->field_bytes != 0 ? k->field_bytes : (k->bits + 7) / 8;
}

size_t schsm_key_bytes(const schsm_key *k)
{
    if (k->pub != NULL && k->type == SCHSM_KEY_RSA)
        return (size_t)EVP_PKEY_get_size(k->pub);
    if (k->type == SCHSM_KEY_EC)
        return schsm_key_field_bytes(k);
    return (k->bits + 7) / 8;
}

/* The certificate's key is the one in the key's CV request (when there is one to compare). */
static int matches_request(const schsm_key *k, EVP_PKEY *pub)
{
    uint8_t buf[SCHSM_MAX_RSA_BYTES + 1];
    size_t len = 0;
    BIGNUM *n = NULL;
    int ok = 0;

    if (k->request_key_len == 0)
        return 1;
    if (EVP_PKEY_get_base_id(pub) == EVP_PKEY_EC) {
        EVP_PKEY_set_utf8_string_param(pub, OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT, "uncompressed");
        ok = EVP_PKEY_get_octet_string_param(pub, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, buf, sizeof(buf), &len) == 1;
    } else if (EVP_PKEY_get_bn_param(pub, OSSL_PKEY_PARAM_RSA_N, &n) == 1 && BN_num_bytes(n) <= (int)sizeof(buf)) {
        len = (size_t)BN_bn2bin(n, buf);
        ok = 1;
    }
    BN_free(n);
    ERR_clear_error();
    return ok && len == k->request_key_len && memcmp(buf, k->request_key, len) == 0;
}

/* Takes an X.509 certificate for k if it is one and fits k's type (and key, if the key's
 * CV request shows it); 1 if taken. */
static int take_certificate(schsm_key *k, const uint8_t *der, size_t n)
{
    const unsigned char *q = der;
    X509 *x;
    EVP_PKEY *pub;
    schsm_key_type type;

    if (der == NULL || n == 0 || der[0] != 0x30 || (x = d2i_X509(NULL, &q, (long)n)) == NULL)
        return 0;
    pub = X509_get_pubkey(x);
    X509_free(x);
    if (q != der + n || pub == NULL) {
        EVP_PKEY_free(pub);
        return 0;
    }
    type = EVP_PKEY_get_base_id(pub) == EVP_PKEY_RSA ? SCHSM_KEY_RSA
           : EVP_PKEY_get_base_id(pub) == EVP_PKEY_EC ? SCHSM_KEY_EC
                                                      : SCHSM_KEY_UNKNOWN;
    if (type == SCHSM_KEY_UNKNOWN || (k->type != SCHSM_KEY_UNKNOWN && k->type != type) || !matches_request(k, pub)
        || (k->cert = OPENSSL_memdup(der, n)) == NULL) {
        EVP_PKEY_free(pub);
        return 0;
    }
    k->cert_len = n;
    EVP_PKEY_free(k->pub); /* the CV request's key, which the certificate's matches */
    k->pub = pub;
    k->type = type;
    /* computed once: every signature and key agreement needs it */
    k->field_bytes = type == SCHSM_KEY_EC ? ec_field_bytes_of(pub) : 0;
    return 1;
}

static int listed(const sks_buf *list, uint8_t prefix, uint8_t low)
{
    size_t i;

    for (i = 0; i + 1 < list->len; i += 2)
        if (list->data[i] == prefix && list->data[i + 1] == low)
            return 1;
    return 0;
}

static int add_key(schsm_card *card, uint8_t kid)
{
    schsm_key *k;
    size_t i;

    if (schsm_find_key(card, kid) != NULL)
        return 1;
    if ((k = OPENSSL_realloc(card->keys, (card->nkeys + 1) * sizeof(*k))) == NULL)
        return 0;
    card->keys = k;
    /* kept sorted by key reference: enumerateKeys walks them in that order */
    for (i = card->nkeys; i > 0 && card->keys[i - 1].kid > kid; i--)
        card->keys[i] = card->keys[i - 1];
    memset(&card->keys[i], 0, sizeof(card->keys[i]));
    card->keys[i].kid = kid;
    card->nkeys++;
    return 1;
}

/* Reads a file that describes a key: 1 with its bytes; 0 if the card refused it or it is
 * malformed (the key is then described without it); SCHSM_LINK_FAILED. */
static int read_optional(schsm_ctx *c, uint8_t prefix, uint8_t low, sks_buf *out)
{
    unsigned sw = 0;
    int rc = schsm_read_file(c, (uint16_t)(prefix << 8 | low), out, &sw);

    if (rc == SCHSM_LINK_FAILED)
        return rc;
    return rc == SKS_OK && sw == SW_OK;
}

/* A certificate OpenSC stored as CAnn with a CD entry C8nn whose iD is a key's iD (what
 * `pkcs11-tool --write-object --type cert` does when no key had that iD at the time). */
static int match_ca_certificates(schsm_ctx *c, const sks_buf *list)
{
    schsm_card *card = c->card;
    uint8_t id[64];
    size_t i, j, idlen;
    sks_buf file;
    int rc = SKS_OK, need = 0, got;

    for (j = 0; j < card->nkeys; j++)
        need |= card->keys[j].cert == NULL && card->keys[j].id_len > 0;
    if (!need)
        return SKS_OK;
    sks_buf_init(&file);
    for (i = 0; i + 1 < list->len && rc == SKS_OK; i += 2) {
        uint8_t n = list->data[i + 1];
        if (list->data[i] != PREFIX_CD || !listed(list, PREFIX_CA_CERT, n))
            continue;
        if ((got = read_optional(c, PREFIX_CD, n, &file)) != 1) {
            rc = got == SCHSM_LINK_FAILED ? got : SKS_OK;
            continue;
        }
        if (!schsm_cd_id(file.data, file.len, id, sizeof(id), &idlen))
            continue;
        for (j = 0; j < card->nkeys; j++) {
            schsm_key *k = &card->keys[j];
            if (k->cert != NULL || k->id_len != idlen || memcmp(k->id, id, idlen) != 0)
                continue;
            if ((got = read_optional(c, PREFIX_CA_CERT, n, &file)) == 1)
                take_certificate(k, file.data, file.len);
            rc = got == SCHSM_LINK_FAILED ? got : SKS_OK;
            break;
        }
    }
    sks_buf_free(&file);
    return rc;
}

/* The public key of the key's CV request (CEkid from key generation), with the curve its
 * domain parameters name: without it a key agreement could not check that the peer's point
 * is on the key's curve. Left unset if the request carries no key we can build. */
static void take_request_key(schsm_key *k, const uint8_t *p, size_t n)
{
    int is_rsa = 0;
    EVP_PKEY *pub = schsm_cv_request_public_key(p, n, &is_rsa);
    schsm_key_type type = is_rsa ? SCHSM_KEY_RSA : SCHSM_KEY_EC;

    if (pub == NULL)
        return;
    if (!matches_request(k, pub) || (k->type != SCHSM_KEY_UNKNOWN && k->type != type)) {
        EVP_PKEY_free(pub);
        return;
    }
    k->pub = pub;
    k->type = type;
    k->field_bytes = type == SCHSM_KEY_EC ? ec_field_bytes_of(pub) : 0;
}

static void forget_description(schsm_key *k)
{
    k->type = SCHSM_KEY_UNKNOWN;
    k->label[0] = '\0';
    k->id_len = 0;
    k->bits = 0;
    k->has_prkd = 0;
}

static int describe_key(schsm_ctx *c, const sks_buf *list, schsm_key *k)
{
    sks_buf file;
    int got = 0;

    sks_buf_init(&file);
    if (listed(list, PREFIX_PRKD, k->kid) && (got = read_optional(c, PREFIX_PRKD, k->kid, &file)) == 1
        && !schsm_prkd_decode(file.data, file.len, k))
        forget_description(k); /* not a description we understand: the key stays listed, unnamed */
    /* CEkid: X.509 (starts 30) is the key's certificate; a CV request (starts 67) is not */
    if (got != SCHSM_LINK_FAILED && listed(list, PREFIX_EE_CERT, k->kid)
        && (got = read_optional(c, PREFIX_EE_CERT, k->kid, &file)) == 1) {
        if (!schsm_request_key(file.data, file.len, k->request_key, sizeof(k->request_key), &k->request_key_len))
            take_certificate(k, file.data, file.len);
        else
            take_request_key(k, file.data, file.len);
    }
    sks_buf_free(&file);
    return got == SCHSM_LINK_FAILED ? got : SKS_OK;
}

int schsm_load_keys(schsm_ctx *c)
{
    schsm_card *card = c->card;
    sks_buf list;
    unsigned sw;
    size_t i;
    int rc;

    if (card->cached)
        return SKS_OK;
    schsm_drop_keys(card);
    sks_buf_init(&list);
    rc = schsm_transmit(c, 0x80, 0x58, 0x00, 0x00, NULL, 0, 0, &list, &sw);
    if (rc == SKS_OK && sw != SW_OK)
        rc = schsm_fail(c, SKS_ERROR_EXTERNAL, "ENUMERATE OBJECTS failed on the card in %s: %04X %s",
                        c->io->reader ? c->io->reader : "?", sw, schsm_sw_text(sw));
    if (rc == SKS_OK && (list.len % 2 != 0 || list.len > SCHSM_MAX_LIST))
        rc = schsm_fail(c, SKS_ERROR_EXTERNAL, "ENUMERATE OBJECTS answered %zu bytes: not a list of file ids", list.len);
    /* every key but key 0, the device authentication key */
    for (i = 0; rc == SKS_OK && i < list.len; i += 2)
        if (list.data[i] == PREFIX_KEY && list.data[i + 1] != 0 && !add_key(card, list.data[i + 1]))
            rc = schsm_fail(c, SKS_ERROR_INTERNAL, "out of memory listing the card's keys");
    for (i = 0; rc == SKS_OK && i < card->nkeys; i++)
        rc = describe_key(c, &list, &card->keys[i]);
    if (rc == SKS_OK)
        rc = match_ca_certificates(c, &list);
    if (rc == SKS_OK)
        card->cached = 1;
    else
        schsm_drop_keys(card);
    sks_buf_free(&list);
    return rc;
}
