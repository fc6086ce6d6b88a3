/*
 * ssh-agent as the benchmark's peer (agent_peer.h). Messages: uint32 length, byte type,
 * payload; strings are uint32 length + bytes. The agent's answers are bounded and parsed with
 * their lengths checked: it is an outside program.
 */
#include "agent_peer.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>

#define AGENT_FAILURE 5
#define AGENTC_REQUEST_IDENTITIES 11
#define AGENT_IDENTITIES_ANSWER 12
#define AGENTC_SIGN_REQUEST 13
#define AGENT_SIGN_RESPONSE 14
#define AGENT_MAX_MESSAGE (256 * 1024)

#define P256_TYPE "ecdsa-sha2-nistp256"

typedef struct {
    const unsigned char *p;
    size_t n;
    int ok;
} rd;

static int fail(char *why, size_t n, const char *f, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *why, size_t n, const char *f, ...)
{
    va_list ap;

    va_start(ap, f);
    vsnprintf(why, n, f, ap);
    va_end(ap);
    return 0;
}

static uint32_t rd_u32(rd *r)
{
    uint32_t v;

    if (!r->ok || r->n < 4) {
        r->ok = 0;
        return 0;
    }
    v = (uint32_t)r->p[0] << 24 | (uint32_t)r->p[1] << 16 | (uint32_t)r->p[2] << 8 | r->p[3];
    r->p += 4;
    r->n -= 4;
    return v;
}

/* A string: its bytes stay in the message (*out, *len). */
static void rd_str(rd *r, const unsigned char **out, size_t *len)
{
    uint32_t l = rd_u32(r);

    *out = NULL;
    *len = 0;
    if (!r->ok || l > r->n) {
        r->ok = 0;
        return;
    }
    *out = r->p;
    *len = l;
    r->p += l;
    r->n -= l;
}

static int str_is(const unsigned char *p, size_t n, const char *s)
{
    return p != NULL && n == strlen(s) && memcmp(p, s, n) == 0;
}

static void put_u32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static int grow(agent_peer *a, size_t want)
{
    unsigned char *b;

    if (want <= a->cap)
        return 1;
    if ((b = realloc(a->buf, want)) == NULL)
        return 0;
    a->buf = b;
    a->cap = want;
    return 1;
}

static int write_all(int fd, const unsigned char *p, size_t n)
{
    ssize_t w;

    while (n > 0) {
        w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return 0;
        p += w;
        n -= (size_t)w;
    }
    return 1;
}

static int read_all(int fd, unsigned char *p, size_t n)
{
    ssize_t r;

    while (n > 0) {
        r = read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return 0;
        p += r;
        n -= (size_t)r;
    }
    return 1;
}

/* Sends a->buf[0..len) (length prefix included) and reads the answer into a->buf; the answer's
 * body (type byte first) in *body. */
static int exchange(agent_peer *a, size_t len, rd *body, char *why, size_t n)
{
    unsigned char hdr[4];
    uint32_t l;

    if (!write_all(a->fd, a->buf, len))
        return fail(why, n, "ssh-agent: write: %s", strerror(errno));
    if (!read_all(a->fd, hdr, 4))
        return fail(why, n, "ssh-agent closed the connection");
    l = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
    if (l == 0 || l > AGENT_MAX_MESSAGE || !grow(a, l))
        return fail(why, n, "ssh-agent: answer of %u bytes", l);
    if (!read_all(a->fd, a->buf, l))
        return fail(why, n, "ssh-agent closed the connection");
    body->p = a->buf;
    body->n = l;
    body->ok = 1;
    return 1;
}

/* The uncompressed point of a P-256 key: what the agent's key blob carries as Q. */
static int p256_point(EVP_PKEY *key, unsigned char *q, size_t cap, size_t *len)
{
    return EVP_PKEY_is_a(key, "EC")
        && EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, q, cap, len) == 1;
}

/* Is this identity blob the P-256 key with point q? */
static int blob_is_key(const unsigned char *blob, size_t blen, const unsigned char *q, size_t qlen)
{
    rd r = { blob, blen, 1 };
    const unsigned char *type, *curve, *point;
    size_t tl, cl, pl;

    rd_str(&r, &type, &tl);
    rd_str(&r, &curve, &cl);
    rd_str(&r, &point, &pl);
    return r.ok && r.n == 0 && str_is(type, tl, P256_TYPE) && str_is(curve, cl, "nistp256") && pl == qlen
        && memcmp(point, q, qlen) == 0;
}

static int find_identity(agent_peer *a, EVP_PKEY *key, char *why, size_t n)
{
    unsigned char q[133];
    size_t qlen, blen, clen;
    const unsigned char *blob, *comment;
    uint32_t count, i;
    rd r;

    if (!p256_point(key, q, sizeof(q), &qlen))
        return fail(why, n, "the reference key is not an EC key");
    if (!grow(a, 5))
        return fail(why, n, "out of memory");
    put_u32(a->buf, 1);
    a->buf[4] = AGENTC_REQUEST_IDENTITIES;
    if (!exchange(a, 5, &r, why, n))
        return 0;
    if (r.p[0] != AGENT_IDENTITIES_ANSWER)
        return fail(why, n, "ssh-agent answered message %u to REQUEST_IDENTITIES", r.p[0]);
    r.p++;
    r.n--;
    count = rd_u32(&r);
    for (i = 0; r.ok && i < count; i++) {
        rd_str(&r, &blob, &blen);
        rd_str(&r, &comment, &clen);
        if (r.ok && blen <= sizeof(a->blob) && blob_is_key(blob, blen, q, qlen)) {
            memcpy(a->blob, blob, blen);
            a->blob_len = blen;
            return 1;
        }
    }
    return fail(why, n, r.ok ? "ssh-agent does not hold the P-256 key (ssh-add keys/p256.pem)"
                             : "ssh-agent: malformed IDENTITIES_ANSWER");
}

int agent_open(agent_peer *a, const char *sock, EVP_PKEY *key, char *why, size_t n)
{
    struct sockaddr_un sa;

    memset(a, 0, sizeof(*a));
    a->fd = -1;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    if (strlen(sock) >= sizeof(sa.sun_path))
        return fail(why, n, "ssh-agent socket path too long");
    memcpy(sa.sun_path, sock, strlen(sock));
    if ((a->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
        return fail(why, n, "socket: %s", strerror(errno));
    if (connect(a->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        fail(why, n, "cannot reach ssh-agent at %s: %s", sock, strerror(errno));
        agent_close(a);
        return 0;
    }
    if (!find_identity(a, key, why, n)) {
        agent_close(a);
        return 0;
    }
    return 1;
}

/* The agent's signature (string type, string (mpint r, mpint s)) as DER, for OpenSSL. */
static int signature_der(const unsigned char *sig, size_t slen, unsigned char **der, int *dlen)
{
    rd r = { sig, slen, 1 }, inner;
    const unsigned char *type, *blob, *rp, *sp;
    size_t tl, bl, rl, sl;
    ECDSA_SIG *es = NULL;
    BIGNUM *br = NULL, *bs = NULL;

    rd_str(&r, &type, &tl);
    rd_str(&r, &blob, &bl);
    if (!r.ok || r.n != 0 || !str_is(type, tl, P256_TYPE))
        return 0;
    inner.p = blob;
    inner.n = bl;
    inner.ok = 1;
    rd_str(&inner, &rp, &rl);
    rd_str(&inner, &sp, &sl);
    if (!inner.ok || inner.n != 0 || rl > 33 || sl > 33)
        return 0;
    br = BN_bin2bn(rp, (int)rl, NULL);
    bs = BN_bin2bn(sp, (int)sl, NULL);
    if (br == NULL || bs == NULL || (es = ECDSA_SIG_new()) == NULL || !ECDSA_SIG_set0(es, br, bs)) {
        BN_free(br);
        BN_free(bs);
        ECDSA_SIG_free(es);
        return 0;
    }
    *der = NULL;
    *dlen = i2d_ECDSA_SIG(es, der);
    ECDSA_SIG_free(es);
    return *dlen > 0;
}

static int verify(EVP_PKEY *key, const unsigned char *msg, size_t len, const unsigned char *sig, size_t slen)
{
    unsigned char *der = NULL;
    int dlen = 0, ok = 0;
    EVP_MD_CTX *md = EVP_MD_CTX_new();

    if (md != NULL && signature_der(sig, slen, &der, &dlen)
        && EVP_DigestVerifyInit_ex(md, NULL, "SHA256", NULL, "provider=default", key, NULL) == 1)
        ok = EVP_DigestVerify(md, der, (size_t)dlen, msg, len) == 1;
    OPENSSL_free(der);
    EVP_MD_CTX_free(md);
    return ok;
}

int agent_sign(agent_peer *a, const unsigned char *msg, size_t len, EVP_PKEY *key, int check, char *why, size_t n)
{
    size_t total = 4 + 1 + 4 + a->blob_len + 4 + len + 4, off = 0;
    const unsigned char *sig;
    size_t slen;
    rd r;

    if (len > AGENT_MAX_MESSAGE / 2 || !grow(a, total))
        return fail(why, n, "message too long");
    put_u32(a->buf, (uint32_t)(total - 4));
    off = 4;
    a->buf[off++] = AGENTC_SIGN_REQUEST;
    put_u32(a->buf + off, (uint32_t)a->blob_len);
    memcpy(a->buf + off + 4, a->blob, a->blob_len);
    off += 4 + a->blob_len;
    put_u32(a->buf + off, (uint32_t)len);
    memcpy(a->buf + off + 4, msg, len);
    off += 4 + len;
    put_u32(a->buf + off, 0); /* flags: none (ECDSA keys have no RSA hash choice) */
    if (!exchange(a, total, &r, why, n))
        return 0;
    if (r.p[0] == AGENT_FAILURE)
        return fail(why, n, "ssh-agent refused to sign");
    if (r.p[0] != AGENT_SIGN_RESPONSE)
        return fail(why, n, "ssh-agent answered message %u to SIGN_REQUEST", r.p[0]);
    r.p++;
    r.n--;
    rd_str(&r, &sig, &slen);
    if (!r.ok || r.n != 0)
        return fail(why, n, "ssh-agent: malformed SIGN_RESPONSE");
    if (check && !verify(key, msg, len, sig, slen))
        return fail(why, n, "ssh-agent's signature does not verify with the PEM key");
    return 1;
}

void agent_close(agent_peer *a)
{
    if (a->fd >= 0)
        close(a->fd);
    a->fd = -1;
    free(a->buf);
    a->buf = NULL;
    a->cap = 0;
}
