/* Length-prefixed frames on a byte stream: used by `sks serve --stdio` and sksd. */
#include "transport.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/*
 * Waiting for a frame costs what the kernel charges for putting a thread to sleep and waking
 * it, twice per call through sksd, so the common path makes as few system calls as it can:
 * one blocking recv() for the header (sksd's idle timeout is the socket's SO_RCVTIMEO, so no
 * poll() comes first) and one non-blocking recv() for the body, which the sender wrote in the
 * same system call. poll() is only used when a frame arrives in pieces.
 *
 * No thread polls (spins) for the other side's answer: on a machine whose cores are all busy,
 * or with more clients than cores, the spinning took the CPU time the other side needed to
 * answer: three times slower than blocking at once, and falling as clients were added
 * (bench/RESULTS.md, issue 13).
 */
static long now_ns(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long)t.tv_sec * 1000000000L + t.tv_nsec;
}

/* Waits until fd is readable or timeout_ms (-1: no limit) passes; 1 readable, 0 timed out. */
static int wait_readable(int fd, long timeout_ms)
{
    struct pollfd pfd = { fd, POLLIN, 0 };
    int r;

    do
        r = poll(&pfd, 1, timeout_ms > INT_MAX ? INT_MAX : (int)timeout_ms);
    while (r < 0 && errno == EINTR);
    return r != 0;
}

/* The first read of a frame, the one that waits for the other side: at most timeout_ms (-1:
 * no limit; a timeout returns -1 with errno ETIMEDOUT). by_rcvtimeo: the socket's
 * SO_RCVTIMEO already bounds a blocking read by timeout_ms. */
static ssize_t read_first(int fd, uint8_t *p, size_t n, long timeout_ms, int by_rcvtimeo)
{
    ssize_t r;

    if (timeout_ms < 0 || by_rcvtimeo) {
        r = recv(fd, p, n, 0);
        if (r < 0 && errno == ENOTSOCK)
            r = read(fd, p, n); /* a pipe (serve --stdio) */
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            errno = ETIMEDOUT; /* SO_RCVTIMEO ran out */
        return r;
    }
    if (!wait_readable(fd, timeout_ms)) {
        errno = ETIMEDOUT;
        return -1;
    }
    return read(fd, p, n);
}

/* Milliseconds left until deadline_ns (CLOCK_MONOTONIC); -1 if there is no deadline. */
static long left_ms(long deadline_ns)
{
    long left;

    if (deadline_ns == 0)
        return -1;
    left = (deadline_ns - now_ns()) / 1000000L;
    return left > 0 ? left : 0;
}

/* Reads what has arrived, without waiting; -1 with EAGAIN if nothing has. */
static ssize_t read_arrived(int fd, uint8_t *p, size_t n)
{
    ssize_t r = recv(fd, p, n, MSG_DONTWAIT);

    if (r < 0 && errno == ENOTSOCK) { /* a pipe: poll, then read */
        struct pollfd pfd = { fd, POLLIN, 0 };
        if (poll(&pfd, 1, 0) == 0) {
            errno = EAGAIN;
            return -1;
        }
        r = read(fd, p, n);
    }
    return r;
}

/* Reads the rest of a frame, n bytes, each piece before deadline_ns (0: none). A timeout
 * returns -1 with errno ETIMEDOUT; 0: the stream ended before any byte. */
static int read_full(int fd, uint8_t *p, size_t n, long deadline_ns)
{
    size_t got = 0;

    while (got < n) {
        ssize_t r = read_arrived(fd, p + got, n - got);
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!wait_readable(fd, left_ms(deadline_ns))) {
                errno = ETIMEDOUT;
                return -1;
            }
            continue;
        }
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

/* Writes all of iov[0..n): a frame goes out in one system call, header and body together,
 * so the reader wakes to a whole frame. passed_fd (>= 0) rides with the first bytes. */
static int write_all(int fd, struct iovec *iov, int n, int passed_fd)
{
    struct msghdr mh;
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } ctl;

    while (n > 0) {
        ssize_t w;
        memset(&mh, 0, sizeof(mh));
        mh.msg_iov = iov;
        mh.msg_iovlen = (size_t)n;
        if (passed_fd >= 0) {
            struct cmsghdr *cm;
            memset(&ctl, 0, sizeof(ctl));
            mh.msg_control = ctl.buf;
            mh.msg_controllen = sizeof(ctl.buf);
            cm = CMSG_FIRSTHDR(&mh);
            cm->cmsg_level = SOL_SOCKET;
            cm->cmsg_type = SCM_RIGHTS;
            cm->cmsg_len = CMSG_LEN(sizeof(int));
            memcpy(CMSG_DATA(cm), &passed_fd, sizeof(int));
        }
        /* On a socket whose peer is gone, report EPIPE instead of raising SIGPIPE in the
         * application that loaded us; pipes (serve --stdio) fall back to writev(). */
        w = sendmsg(fd, &mh, MSG_NOSIGNAL);
        if (w < 0 && errno == ENOTSOCK)
            w = writev(fd, iov, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return 0;
        }
        passed_fd = -1; /* sent with the first bytes */
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return 1;
}

/* Reads the body of n bytes into out, in pieces as they come, so memory follows what the
 * peer actually sent. */
static int read_body(int fd, sks_buf *out, uint32_t n, long deadline_ns)
{
    uint8_t chunk[4096];
    size_t left = n;

    sks_buf_reset(out);
    sks_buf_put(out, "", 0);
    while (left > 0) {
        size_t k = left < sizeof(chunk) ? left : sizeof(chunk);
        if (read_full(fd, chunk, k, deadline_ns) != 1)
            return -1;
        sks_buf_put(out, chunk, k);
        left -= k;
    }
    return out->failed ? -1 : 1;
}

static uint32_t header_length(const uint8_t hdr[4])
{
    return ((uint32_t)hdr[0] << 24) | ((uint32_t)hdr[1] << 16) | ((uint32_t)hdr[2] << 8) | hdr[3];
}

int sks_frame_read(int fd, sks_buf *out)
{
    uint8_t hdr[4];
    uint32_t n;
    ssize_t got;

    do
        got = read_first(fd, hdr, 4, -1, 0);
    while (got < 0 && errno == EINTR);
    if (got <= 0)
        return got == 0 ? 0 : -1;
    if (got < 4 && read_full(fd, hdr + got, 4 - (size_t)got, 0) != 1)
        return -1;
    n = header_length(hdr);
    if (n > SKS_FRAME_MAX)
        return -1;
    return read_body(fd, out, n, 0);
}

int sks_frame_read_bounded(int fd, sks_buf *out, const sks_frame_limits *lim)
{
    uint8_t hdr[4];
    uint32_t n;
    long deadline;
    ssize_t got;

    /* The first byte may take up to the idle timeout; the rest of the header and the body
     * must follow within the frame timeout of it. */
    do
        got = read_first(fd, hdr, 4, lim->idle_ms, lim->idle_by_rcvtimeo);
    while (got < 0 && errno == EINTR && !lim->stop_on_signal);
    if (got <= 0)
        return got == 0 ? SKS_FRAME_END : errno == ETIMEDOUT ? SKS_FRAME_IDLE : SKS_FRAME_ERROR;
    deadline = now_ns() + lim->frame_ms * 1000000L;
    if (got < 4 && read_full(fd, hdr + got, 4 - (size_t)got, deadline) != 1)
        return errno == ETIMEDOUT ? SKS_FRAME_SLOW : SKS_FRAME_ERROR;
    n = header_length(hdr);
    if (n > lim->max || n > SKS_FRAME_MAX)
        return SKS_FRAME_TOO_LONG;
    if (read_body(fd, out, n, deadline) != 1)
        return errno == ETIMEDOUT ? SKS_FRAME_SLOW : SKS_FRAME_ERROR;
    return SKS_FRAME_OK;
}

int sks_frame_write(int fd, const uint8_t *p, size_t n)
{
    uint8_t hdr[4] = { (uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n };
    struct iovec iov[2] = { { hdr, 4 }, { (void *)p, n } };

    return n <= SKS_FRAME_MAX && write_all(fd, iov, n > 0 ? 2 : 1, -1);
}

int sks_frame_write_fd(int fd, const uint8_t *p, size_t n, int passed_fd)
{
    uint8_t hdr[4] = { (uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n };
    struct iovec iov[2] = { { hdr, 4 }, { (void *)p, n } };

    return n <= SKS_FRAME_MAX && write_all(fd, iov, n > 0 ? 2 : 1, passed_fd);
}

/* Takes the first descriptor of an SCM_RIGHTS message (closing any others). */
static void take_passed_fd(struct msghdr *mh, int *passed_fd)
{
    struct cmsghdr *cm;

    for (cm = CMSG_FIRSTHDR(mh); cm != NULL; cm = CMSG_NXTHDR(mh, cm)) {
        size_t i, k;
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
            continue;
        k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (i = 0; i < k; i++) {
            int f;
            memcpy(&f, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
            if (*passed_fd < 0)
                *passed_fd = f;
            else
                close(f);
        }
    }
}

int sks_frame_read_fd(int fd, sks_buf *out, int *passed_fd)
{
    uint8_t hdr[4];
    struct iovec iov = { hdr, 4 };
    struct msghdr mh;
    union {
        char buf[CMSG_SPACE(4 * sizeof(int))];
        struct cmsghdr align;
    } ctl;
    uint32_t n;
    ssize_t got;

    *passed_fd = -1;
    memset(&mh, 0, sizeof(mh));
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = ctl.buf;
    mh.msg_controllen = sizeof(ctl.buf);
    do
        got = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
    while (got < 0 && errno == EINTR);
    if (got > 0)
        take_passed_fd(&mh, passed_fd);
    if (got <= 0)
        return got == 0 ? 0 : -1;
    if (got < 4 && read_full(fd, hdr + got, 4 - (size_t)got, 0) != 1)
        return -1;
    n = header_length(hdr);
    if (n > SKS_FRAME_MAX)
        return -1;
    return read_body(fd, out, n, 0);
}
