/* Length-prefixed frames on a byte stream: used by `sks serve --stdio` and sksd. */
#include "transport.h"

#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

static int read_full(int fd, uint8_t *p, size_t n)
{
    size_t got = 0;

    while (got < n) {
        ssize_t r = read(fd, p + got, n - got);
        if (r == 0)
            return got == 0 ? 0 : -1;
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        got += (size_t)r;
    }
    return 1;
}

static int write_full(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        /* On a socket whose peer is gone, report EPIPE instead of raising SIGPIPE in the
         * application that loaded us; pipes (serve --stdio) fall back to write(). */
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == ENOTSOCK)
            w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return 0;
        }
        p += w;
        n -= (size_t)w;
    }
    return 1;
}

int sks_frame_read(int fd, sks_buf *out)
{
    uint8_t hdr[4];
    uint32_t n;
    int r = read_full(fd, hdr, 4);

    if (r <= 0)
        return r;
    n = ((uint32_t)hdr[0] << 24) | ((uint32_t)hdr[1] << 16) | ((uint32_t)hdr[2] << 8) | hdr[3];
    if (n > SKS_FRAME_MAX)
        return -1;
    sks_buf_reset(out);
    sks_buf_put(out, "", 0);
    if (n > 0) {
        /* grow then fill */
        size_t start = out->len;
        uint8_t chunk[4096];
        size_t left = n;
        while (left > 0) {
            size_t k = left < sizeof(chunk) ? left : sizeof(chunk);
            if (read_full(fd, chunk, k) != 1)
                return -1;
            sks_buf_put(out, chunk, k);
            left -= k;
        }
        (void)start;
    }
    return out->failed ? -1 : 1;
}

int sks_frame_write(int fd, const uint8_t *p, size_t n)
{
    uint8_t hdr[4] = { (uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n };

    return n <= SKS_FRAME_MAX && write_full(fd, hdr, 4) && write_full(fd, p, n);
}
