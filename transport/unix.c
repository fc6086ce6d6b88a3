/*
 * The socket transport: the wire format in length-prefixed frames to sksd. A call on a
 * broken connection reconnects once (sksd may have restarted); a call whose reply was lost
 * is not resent, since it may have been carried out, unless the kernel says sksd never
 * read it (below).
 *
 * Fork: sksd judges a connection by who connect()ed (SO_PEERCRED), so a descriptor carries
 * its opener's rights to whoever holds it. A forked child (an nginx worker that drops from
 * root to nobody) must therefore never keep its parent's connection: a pthread_atfork child
 * handler closes every connection of this transport in the child before fork() returns, so
 * no code in the child, ours or anyone's, can write to it; the child's next call connects
 * afresh, with the child's own credentials.
 */
#include "transport.h"
#include "channel.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/crypto.h>

typedef struct unix_transport {
    sks_transport base;
    char path[108];
    int fd;
    sks_chan chan;    /* the shared-memory channel sksd offered on this connection, if any */
    sks_buf refusal;  /* sksd's refusal at accept, the answer to the next call */
    int refused;
    int plain;        /* the peer closed on the empty frame: frames only, never ask again */
    struct unix_transport *next; /* in the list of open transports */
} unix_transport;

/* Every open transport, so that a forked child can let go of their connections. The lock
 * is held across fork (prepare/parent/child), and whenever a descriptor is made or closed,
 * so a child never inherits a socket that its list does not show. */
static pthread_mutex_t open_lock = PTHREAD_MUTEX_INITIALIZER;
static unix_transport *open_list;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void before_fork(void)
{
    pthread_mutex_lock(&open_lock);
}

static void parent_after_fork(void)
{
    pthread_mutex_unlock(&open_lock);
}

/* In the child, before fork() returns: close (never write to) the parent's connections. */
static void child_after_fork(void)
{
    unix_transport *u;

    for (u = open_list; u != NULL; u = u->next) {
        if (u->fd >= 0) {
            close(u->fd);
            u->fd = -1;
        }
        u->chan.map = NULL; /* mapped MADV_DONTFORK: the child never had it */
        u->refused = 0;
    }
    pthread_mutex_init(&open_lock, NULL);
}

static void register_atfork(void)
{
    pthread_atfork(before_fork, parent_after_fork, child_after_fork);
}

/* Closed under the lock: a fork between close() and forgetting the number would make the
 * child close whatever descriptor reused it, and one after forgetting but before close()
 * would leave the child a connection its list does not show. */
static void drop_connection(unix_transport *u)
{
    pthread_mutex_lock(&open_lock);
    if (u->fd >= 0)
        close(u->fd);
    u->fd = -1;
    sks_chan_close_client(&u->chan);
    u->refused = 0;
    pthread_mutex_unlock(&open_lock);
}

/* Asks sksd for the shared-memory channel (transport/channel.h). An sksd that does not offer
 * it (older, or --no-shared-memory) answers the empty request with an error: the calls then
 * go through the socket. A refusal at accept (not allowed, too many connections) is kept as
 * the answer to the next call, as when it was read in place of that call's reply. */
static int connect_socket(unix_transport *u, char *err, size_t errlen);

static int negotiate_channel(unix_transport *u, char *err, size_t errlen)
{
    struct pollfd pfd = { u->fd, POLLIN, 0 };
    int r = 0;

    sks_buf_reset(&u->refusal);
    /* The wait for sksd's answer runs without the lock (a slow sksd must not hold up fork()
     * elsewhere); taking the descriptor and mapping it runs under it, so a child never
     * inherits either (the mapping is MADV_DONTFORK from then on). */
    sks_chan_ask(u->fd); /* if sksd refused us and closed, its answer is still to be read */
    while (r == 0 && poll(&pfd, 1, -1) < 0)
        if (errno != EINTR)
            r = -1;
    if (r == 0) {
        pthread_mutex_lock(&open_lock);
        r = sks_chan_take_offer(&u->chan, u->fd, &u->refusal);
        pthread_mutex_unlock(&open_lock);
    }
    if (r == 1)
        return 1;
    if (r == 0) {
        u->refused = u->refusal.len > 0 && !u->refusal.failed
                     && (u->refusal.data[0] == SKS_ERROR_NOT_ALLOWED || u->refusal.data[0] == SKS_ERROR_NOT_AVAILABLE);
        return 1;
    }
    /* A peer that speaks frames but not this (a proxy, a test double) may close on an empty
     * request: connect again and stay on frames. */
    drop_connection(u);
    u->plain = 1;
    return connect_socket(u, err, errlen);
}

/* The descriptor is made and published in u->fd under the lock, so a fork at any moment
 * finds it in the list; connect() itself runs without the lock, so a slow sksd never holds
 * up fork() in the application's other threads. */
static int connect_socket(unix_transport *u, char *err, size_t errlen)
{
    struct sockaddr_un sa;
    int fd;

    pthread_mutex_lock(&open_lock);
    fd = u->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    pthread_mutex_unlock(&open_lock);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return 0;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, u->path, strlen(u->path));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
        return u->plain ? 1 : negotiate_channel(u, err, errlen);
    snprintf(err, errlen, "cannot connect to sksd at %s: %s", u->path, strerror(errno));
    drop_connection(u);
    return 0;
}

/* After a failed send: sksd may have answered and closed before the request went out
 * (a refusal at accept, sksd --help "refused peers"). Its answer is still queued here. */
static int read_early_answer(unix_transport *u, sks_buf *reply)
{
    struct pollfd pfd = { u->fd, POLLIN, 0 };

    return poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLIN) && sks_frame_read(u->fd, reply) == 1 && reply->len > 0;
}

static int unix_call(sks_transport *t, const uint8_t *req, size_t n, sks_buf *reply, char *err, size_t errlen)
{
    unix_transport *u = (unix_transport *)t;
    int attempt, r;

    for (attempt = 0; attempt < 3; attempt++) {
        if (u->fd < 0 && !connect_socket(u, err, errlen))
            return 0;
        if (u->refused) {
            sks_buf_reset(reply);
            sks_buf_put(reply, u->refusal.data, u->refusal.len);
            drop_connection(u);
            return !reply->failed;
        }
        if (u->chan.map != NULL) {
            r = sks_chan_call(&u->chan, u->fd, req, n, reply);
            if (r == 1)
                return 1;
            drop_connection(u);
            if (r == 0)
                continue; /* sksd let go (idle timeout, restart) before it took the request */
            snprintf(err, errlen, "sksd at %s closed the connection during the call", u->path);
            return 0;
        }
        /* A write to a socket sksd closed must fail with EPIPE, not kill the application. */
        if (!sks_frame_write(u->fd, req, n)) {
            int answered = read_early_answer(u, reply);
            drop_connection(u);
            if (answered)
                return 1;
            continue; /* the request never arrived: safe to send again */
        }
        errno = 0;
        r = sks_frame_read(u->fd, reply);
        if (r == 1 && reply->len > 0)
            return 1;
        /* ECONNRESET: sksd closed the connection with our request unread in its queue
         * (an idle timeout that crossed our send), so it was never carried out. */
        if (r < 0 && errno == ECONNRESET) {
            drop_connection(u);
            continue;
        }
        drop_connection(u);
        snprintf(err, errlen, "sksd at %s closed the connection during the call", u->path);
        return 0;
    }
    snprintf(err, errlen, "cannot send to sksd at %s: %s", u->path, strerror(errno));
    return 0;
}

static void unix_close(sks_transport *t)
{
    unix_transport *u = (unix_transport *)t;
    unix_transport **p;

    /* Leaves the list and closes in one step, for the same reason as drop_connection. */
    pthread_mutex_lock(&open_lock);
    for (p = &open_list; *p != NULL && *p != u; p = &(*p)->next)
        ;
    if (*p == u)
        *p = u->next;
    if (u->fd >= 0)
        close(u->fd);
    u->fd = -1;
    sks_chan_close_client(&u->chan);
    pthread_mutex_unlock(&open_lock);
    sks_buf_free(&u->refusal);
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
    sks_buf_init(&u->refusal);
    u->base.call = unix_call;
    u->base.close = unix_close;
    pthread_once(&atfork_once, register_atfork);
    pthread_mutex_lock(&open_lock);
    u->next = open_list;
    open_list = u;
    pthread_mutex_unlock(&open_lock);
    /* Connect now, so a wrong path is reported where it was configured. */
    if (!connect_socket(u, err, errlen)) {
        unix_close(&u->base);
        return NULL;
    }
    return &u->base;
}
