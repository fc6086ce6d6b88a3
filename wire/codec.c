#include "codec.h"

#include <string.h>

#include <openssl/crypto.h>

void sks_buf_init(sks_buf *b)
{
    memset(b, 0, sizeof(*b));
}

void sks_buf_free(sks_buf *b)
{
    if (b->data != NULL)
        OPENSSL_clear_free(b->data, b->cap);
    sks_buf_init(b);
}

void sks_buf_reset(sks_buf *b)
{
    if (b->data != NULL)
        OPENSSL_cleanse(b->data, b->len);
    b->len = 0;
    b->failed = 0;
}

static int buf_reserve(sks_buf *b, size_t extra)
{
    size_t need, cap;
    uint8_t *p;

    if (b->failed)
        return 0;
    if (extra > SIZE_MAX - b->len) {
        b->failed = 1;
        return 0;
    }
    need = b->len + extra;
    if (need <= b->cap)
        return 1;
    cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    /* Not realloc: the old block may hold secrets and must be wiped, not abandoned. */
    p = OPENSSL_malloc(cap);
    if (p == NULL) {
        b->failed = 1;
        return 0;
    }
    if (b->data != NULL) {
        memcpy(p, b->data, b->len);
        OPENSSL_clear_free(b->data, b->cap);
    }
    b->data = p;
    b->cap = cap;
    return 1;
}

void sks_buf_put(sks_buf *b, const void *p, size_t n)
{
    if (n == 0 || !buf_reserve(b, n))
        return;
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

/* Room for n more bytes without growing: the small writes below then store their bytes
 * directly (through sks_buf_put they cost a call of memcpy each, and every request and reply
 * is mostly such writes). */
static int buf_has_room(const sks_buf *b, size_t n)
{
    return !b->failed && b->cap - b->len >= n;
}

void sks_buf_byte(sks_buf *b, uint8_t v)
{
    if (buf_has_room(b, 1))
        b->data[b->len++] = v;
    else
        sks_buf_put(b, &v, 1);
}

void sks_buf_bool(sks_buf *b, int v)
{
    sks_buf_byte(b, v ? 1 : 0);
}

void sks_buf_ushort(sks_buf *b, uint16_t v)
{
    uint8_t t[2] = { (uint8_t)(v >> 8), (uint8_t)v };

    if (buf_has_room(b, 2)) {
        b->data[b->len] = t[0];
        b->data[b->len + 1] = t[1];
        b->len += 2;
    } else {
        sks_buf_put(b, t, 2);
    }
}

void sks_buf_uint(sks_buf *b, uint32_t v)
{
    uint8_t t[4] = { (uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v };

    if (buf_has_room(b, 4)) {
        memcpy(b->data + b->len, t, 4); /* a constant size: one store */
        b->len += 4;
    } else {
        sks_buf_put(b, t, 4);
    }
}

void sks_buf_array(sks_buf *b, const void *p, size_t n)
{
    if (n > 0xFFFF) {
        b->failed = 1;
        return;
    }
    sks_buf_ushort(b, (uint16_t)n);
    sks_buf_put(b, p, n);
}

void sks_buf_string(sks_buf *b, const char *s)
{
    sks_buf_array(b, s, s ? strlen(s) : 0);
}

void sks_buf_blob(sks_buf *b, const void *p, size_t n)
{
    if (n > 0xFFFFFFFFu) {
        b->failed = 1;
        return;
    }
    sks_buf_uint(b, (uint32_t)n);
    sks_buf_put(b, p, n);
}

void sks_reader_init(sks_reader *r, const void *p, size_t n)
{
    memset(r, 0, sizeof(*r));
    r->p = p;
    r->n = n;
}

static void reader_fail(sks_reader *r, const char *error, const char *field)
{
    if (r->error == NULL) {
        r->error = error;
        r->field = field;
    }
}

static const uint8_t *take(sks_reader *r, size_t n, const char *field)
{
    const uint8_t *p;

    if (r->error != NULL)
        return NULL;
    if (n > r->n - r->off) {
        reader_fail(r, "message ends before the field", field);
        return NULL;
    }
    p = r->p + r->off;
    r->off += n;
    return p;
}

uint8_t sks_get_byte(sks_reader *r, const char *field)
{
    const uint8_t *p = take(r, 1, field);
    return p ? p[0] : 0;
}

int sks_get_bool(sks_reader *r, const char *field)
{
    uint8_t v = sks_get_byte(r, field);
    if (v > 1)
        reader_fail(r, "bool must be 0x00 or 0x01", field);
    return v == 1;
}

uint16_t sks_get_ushort(sks_reader *r, const char *field)
{
    const uint8_t *p = take(r, 2, field);
    return p ? (uint16_t)((p[0] << 8) | p[1]) : 0;
}

uint32_t sks_get_uint(sks_reader *r, const char *field)
{
    const uint8_t *p = take(r, 4, field);
    return p ? ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3] : 0;
}

sks_span sks_get_array(sks_reader *r, const char *field)
{
    sks_span s = { NULL, 0 };
    uint16_t n = sks_get_ushort(r, field);
    const uint8_t *p = take(r, n, field);

    if (p != NULL) {
        s.p = p;
        s.n = n;
    }
    return s;
}

sks_span sks_get_blob(sks_reader *r, const char *field)
{
    sks_span s = { NULL, 0 };
    uint32_t n = sks_get_uint(r, field);
    const uint8_t *p = take(r, n, field);

    if (p != NULL) {
        s.p = p;
        s.n = n;
    }
    return s;
}

sks_span sks_get_id(sks_reader *r, const char *field)
{
    sks_span s = sks_get_array(r, field);
    size_t i;

    if (r->error != NULL)
        return s;
    if (s.n < 1 || s.n > 32)
        reader_fail(r, "id must be 1-32 characters", field);
    for (i = 0; i < s.n && r->error == NULL; i++)
        if (s.p[i] < 0x21 || s.p[i] > 0x7E)
            reader_fail(r, "id must be printable ASCII (0x21-0x7E)", field);
    return s;
}

sks_span sks_get_uri(sks_reader *r, const char *field)
{
    sks_span s = sks_get_array(r, field);

    if (r->error != NULL)
        return s;
    if (s.n > 1000)
        reader_fail(r, "uri must not exceed 1000 bytes", field);
    else if (!sks_utf8_valid(s.p, s.n))
        reader_fail(r, "uri is not valid UTF-8", field);
    return s;
}

sks_span sks_get_string(sks_reader *r, const char *field)
{
    sks_span s = sks_get_array(r, field);

    if (r->error == NULL && !sks_utf8_valid(s.p, s.n))
        reader_fail(r, "string is not valid UTF-8", field);
    return s;
}

void sks_reader_expect_end(sks_reader *r)
{
    if (r->error == NULL && r->off != r->n)
        reader_fail(r, "unexpected bytes after the last argument", "end of message");
}

int sks_reader_ok(const sks_reader *r)
{
    return r->error == NULL;
}

int sks_utf8_valid(const uint8_t *p, size_t n)
{
    size_t i = 0;

    while (i < n) {
        uint8_t c;
        size_t k, more;
        uint32_t cp;
        uint64_t w;

        /* ASCII (URIs, names: every request has one) eight bytes at a time */
        if (n - i >= 8 && (memcpy(&w, p + i, 8), (w & UINT64_C(0x8080808080808080)) == 0)) {
            i += 8;
            continue;
        }
        c = p[i];
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            more = 1;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            more = 2;
            cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            more = 3;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (more > n - i - 1)
            return 0;
        for (k = 1; k <= more; k++) {
            if ((p[i + k] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (p[i + k] & 0x3F);
        }
        /* Reject overlong forms, surrogates and values past U+10FFFF. */
        if ((more == 1 && cp < 0x80) || (more == 2 && cp < 0x800) || (more == 3 && cp < 0x10000)
            || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
            return 0;
        i += more + 1;
    }
    return 1;
}

int sks_span_eq(sks_span a, sks_span b)
{
    return a.n == b.n && (a.n == 0 || memcmp(a.p, b.p, a.n) == 0);
}

int sks_span_eq_str(sks_span a, const char *s)
{
    size_t n = strlen(s);
    return a.n == n && (n == 0 || memcmp(a.p, s, n) == 0);
}

char *sks_span_strdup(sks_span s)
{
    char *out = OPENSSL_malloc(s.n + 1);

    if (out == NULL)
        return NULL;
    if (s.n)
        memcpy(out, s.p, s.n);
    out[s.n] = '\0';
    return out;
}

size_t sks_der_header(uint8_t *out, uint8_t tag, size_t len)
{
    out[0] = tag;
    if (len < 0x80) {
        out[1] = (uint8_t)len;
        return 2;
    }
    if (len < 0x100) {
        out[1] = 0x81;
        out[2] = (uint8_t)len;
        return 3;
    }
    out[1] = 0x82;
    out[2] = (uint8_t)(len >> 8);
    out[3] = (uint8_t)len;
    return 4;
}
