/*
 * The socket transport: the wire format in length-prefixed frames to sksd. A call on a
 * broken connection reconnects once (sksd may have restarted); a call whose reply was lost
 * is not resent, since it may have been carried out.
 */
#include "transport.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/crypto.h>

typedef struct {
    sks_transport base;
    char path[108];
    int fd;
} unix_transport;

static int connect_socket(unix_transport *u, char *err, size_t errlen)
{
    struct sockaddr_un sa;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return 0;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, u->path, strlen(u->path));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        snprintf(err, errlen, "cannot connect to sksd at %s: %s", u->path, strerror(errno));
        close(fd);
        return 0;
    }
    u->fd = fd;
    return 1;
}

static int unix_call(sks_transport *t, const uint8_t *req, size_t n, sks_buf *reply, char *err, size_t errlen)
{
    unix_transport *u = (unix_transport *)t;
    int attempt, r;

    for (attempt = 0; attempt < 2; attempt++) {
        if (u->fd < 0 && !connect_socket(u, err, errlen))
            return 0;
        /* A write to a socket sksd closed must fail with EPIPE, not kill the application. */
        if (!sks_frame_write(u->fd, req, n)) {
            close(u->fd);
            u->fd = -1;
            continue; /* the request never arrived: safe to send again */
        }
        r = sks_frame_read(u->fd, reply);
        if (r == 1 && reply->len > 0)
            return 1;
        close(u->fd);
        u->fd = -1;
        snprintf(err, errlen, "sksd at %s closed the connection during the call", u->path);
        return 0;
    }
    snprintf(err, errlen, "cannot send to sksd at %s: %s", u->path, strerror(errno));
    return 0;
}

static void unix_close(sks_transport *t)
{
    unix_transport *u = (unix_transport *)t;

    if (u->fd >= 0)
        close(u->fd);
    OPENSSL_free(u);
}

sks_transport *sks_transport_open_unix(const char *socket_path, char *err, size_t errlen)
{
    unix_transport *u;

    if (strlen(socket_path) >= sizeof(u->path)) {
        snprintf(err, errlen, "socket path too long: %s", socket_path);
        return NULL;
    }
    u = OPENSSL_zalloc(sizeof(*u));
    if (u == NULL)
        return NULL;
    memcpy(u->path, socket_path, strlen(socket_path) + 1);
    u->fd = -1;
    u->base.call = unix_call;
    u->base.close = unix_close;
    /* Connect now, so a wrong path is reported where it was configured. */
    if (!connect_socket(u, err, errlen)) {
        OPENSSL_free(u);
        return NULL;
    }
    return &u->base;
}
