/*
 * sksd: serves a store on a Unix socket with the SKS wire format in length-prefixed frames,
 * so keys live outside the applications that use them (nginx workers after fork and
 * privilege drop, for instance).
 *
 *   sksd --store PATH --socket PATH [--master-key PATH] [--mode 0660] [--group NAME]
 *        [--allow-uid UID|NAME]... [--allow-gid GID|NAME]... [--admin-uid ..]... [--admin-gid ..]...
 *
 * One thread per client, each with its own connection to the store: every call is one
 * SQLite transaction, so a client that disconnects mid-call leaves nothing half done, and
 * SIGTERM lets calls in progress finish before the daemon exits.
 *
 * Access: the socket's owner/group/mode, then SO_PEERCRED. root and the allow-lists may
 * connect. Administrators (root and --admin-*) may call every method; other clients get
 * the User API and read-only queries, unless no --admin-* is given (then all allowed
 * clients may provision).
 */
#include <errno.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "../common/daemon_log.h"
#include "../../device/sks_device.h"
#include "../../transport/transport.h"

#define MAX_IDS 32

typedef struct {
    sks_store_location loc;
    const char *socket_path;
    mode_t mode;
    gid_t group;
    int has_group;
    uid_t allow_uid[MAX_IDS], admin_uid[MAX_IDS];
    gid_t allow_gid[MAX_IDS], admin_gid[MAX_IDS];
    int n_allow_uid, n_allow_gid, n_admin_uid, n_admin_gid;
} config;

typedef struct {
    const config *cfg;
    int fd;
    struct ucred peer;
    int allowed; /* 0: every request is answered with a refusal */
} client;

static volatile sig_atomic_t stopping;
static pthread_mutex_t count_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t count_cond = PTHREAD_COND_INITIALIZER;
static int active_clients;


static int in_list(const unsigned *list, int n, unsigned v)
{
    int i;

    for (i = 0; i < n; i++)
        if (list[i] == v)
            return 1;
    return 0;
}

/* Is the peer (or one of its groups: primary gid only, as SO_PEERCRED reports) listed? */
static int peer_in(const struct ucred *p, const uid_t *uids, int nu, const gid_t *gids, int ng)
{
    return in_list(uids, nu, p->uid) || in_list(gids, ng, p->gid);
}

static int peer_allowed(const config *c, const struct ucred *p)
{
    if (p->uid == 0 || p->uid == getuid())
        return 1;
    if (c->n_allow_uid == 0 && c->n_allow_gid == 0)
        return 1; /* no allow-list: the socket's permissions decide */
    return peer_in(p, c->allow_uid, c->n_allow_uid, c->allow_gid, c->n_allow_gid);
}

static int peer_admin(const config *c, const struct ucred *p)
{
    if (p->uid == 0 || p->uid == getuid())
        return 1;
    if (c->n_admin_uid == 0 && c->n_admin_gid == 0)
        return 1;
    return peer_in(p, c->admin_uid, c->n_admin_uid, c->admin_gid, c->n_admin_gid);
}

/* Methods anyone allowed may call: the User API and read-only queries. The project
 * extensions from 200 on (skipRequest, skipImport) provision keys: administrators only. */
static int method_is_open(uint8_t id)
{
    return (id >= 100 && id < 200) || id == 1 || id == 4 || id == 70 || id == 71 || id == 72 || id == 73;
}

static void refuse(sks_buf *reply, const char *what)
{
    size_t n = strlen(what);

    sks_buf_reset(reply);
    sks_buf_byte(reply, 0x02); /* ERROR_NOT_ALLOWED */
    sks_buf_array(reply, what, n);
}

static void *serve_client(void *arg)
{
    client *cl = arg;
    char err[512] = "";
    sks_device *dev = cl->allowed ? sks_device_open(&cl->cfg->loc, err, sizeof(err)) : NULL;
    int admin = peer_admin(cl->cfg, &cl->peer);
    sks_buf req, reply;

    sks_buf_init(&req);
    sks_buf_init(&reply);
    if (cl->allowed && dev == NULL)
        daemon_log("cannot open the store for uid %u: %s", (unsigned)cl->peer.uid, err);
    while ((dev != NULL || !cl->allowed) && !stopping && sks_frame_read(cl->fd, &req) == 1) {
        if (!cl->allowed) {
            /* Answered in the protocol, so the client can say why it was turned away. */
            refuse(&reply, "sksd: this user is not allowed to use the key store");
        } else if (req.len > 0 && !admin && !method_is_open(req.data[0])) {
            char msg[160];
            snprintf(msg, sizeof(msg), "sksd: method %u is restricted to administrators (uid %u is not one)",
                     req.data[0], (unsigned)cl->peer.uid);
            daemon_log("refused method %u from uid %u gid %u pid %d", req.data[0], (unsigned)cl->peer.uid,
                   (unsigned)cl->peer.gid, (int)cl->peer.pid);
            refuse(&reply, msg);
        } else {
            sks_device_dispatch(dev, req.data, req.len, &reply);
        }
        /* The call is complete (committed or rolled back) before the reply is written: a
         * client that has gone away loses only the reply. */
        if (!sks_frame_write(cl->fd, reply.data, reply.len))
            break;
    }
    sks_buf_free(&req);
    sks_buf_free(&reply);
    sks_device_close(dev);
    close(cl->fd);
    free(cl);
    pthread_mutex_lock(&count_lock);
    active_clients--;
    pthread_cond_broadcast(&count_cond);
    pthread_mutex_unlock(&count_lock);
    return NULL;
}

static void on_signal(int sig)
{
    (void)sig;
    stopping = 1;
}

static int listen_socket(const config *c)
{
    struct sockaddr_un sa;
    int fd;
    mode_t old;

    if (strlen(c->socket_path) >= sizeof(sa.sun_path)) {
        daemon_log("socket path too long: %s", c->socket_path);
        return -1;
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, c->socket_path, strlen(c->socket_path));
    unlink(c->socket_path);
    old = umask(0177); /* never briefly world-accessible */
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        umask(old);
        daemon_log("cannot bind %s: %s", c->socket_path, strerror(errno));
        close(fd);
        return -1;
    }
    umask(old);
    if ((c->has_group && chown(c->socket_path, (uid_t)-1, c->group) != 0) || chmod(c->socket_path, c->mode) != 0
        || listen(fd, 64) != 0) {
        daemon_log("cannot set up %s: %s", c->socket_path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static int parse_uid(const char *s, uid_t *out)
{
    struct passwd *pw;
    char *end;
    unsigned long v = strtoul(s, &end, 10);

    if (*s && *end == '\0') {
        *out = (uid_t)v;
        return 1;
    }
    if ((pw = getpwnam(s)) == NULL)
        return 0;
    *out = pw->pw_uid;
    return 1;
}

static int parse_gid(const char *s, gid_t *out)
{
    struct group *gr;
    char *end;
    unsigned long v = strtoul(s, &end, 10);

    if (*s && *end == '\0') {
        *out = (gid_t)v;
        return 1;
    }
    if ((gr = getgrnam(s)) == NULL)
        return 0;
    *out = gr->gr_gid;
    return 1;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: sksd --store PATH --socket PATH [--master-key PATH] [--mode OCTAL] [--group NAME]\n"
               "            [--allow-uid UID]... [--allow-gid GID]... [--admin-uid UID]... [--admin-gid GID]...\n"
               "Serves the store on a Unix socket (4-byte big-endian length frames, docs/wire-format.md).\n"
               "Runs in the foreground; stops cleanly on SIGTERM/SIGINT.\n");
}

static int parse_args(int argc, char **argv, config *c)
{
    int i;

    memset(c, 0, sizeof(*c));
    c->mode = 0660;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int ok = 1;

        if (strcmp(a, "--help") == 0) {
            usage(stdout);
            exit(0);
        }
        if (strcmp(a, "--foreground") == 0)
            continue;
        if (v == NULL) {
            fprintf(stderr, "sksd: %s needs a value\n", a);
            return 0;
        }
        i++;
        if (strcmp(a, "--store") == 0)
            c->loc.db_path = v;
        else if (strcmp(a, "--master-key") == 0)
            c->loc.master_key_path = v;
        else if (strcmp(a, "--socket") == 0)
            c->socket_path = v;
        else if (strcmp(a, "--mode") == 0)
            c->mode = (mode_t)strtoul(v, NULL, 8);
        else if (strcmp(a, "--group") == 0)
            ok = c->has_group = parse_gid(v, &c->group);
        else if (strcmp(a, "--allow-uid") == 0)
            ok = c->n_allow_uid < MAX_IDS && parse_uid(v, &c->allow_uid[c->n_allow_uid++]);
        else if (strcmp(a, "--allow-gid") == 0)
            ok = c->n_allow_gid < MAX_IDS && parse_gid(v, &c->allow_gid[c->n_allow_gid++]);
        else if (strcmp(a, "--admin-uid") == 0)
            ok = c->n_admin_uid < MAX_IDS && parse_uid(v, &c->admin_uid[c->n_admin_uid++]);
        else if (strcmp(a, "--admin-gid") == 0)
            ok = c->n_admin_gid < MAX_IDS && parse_gid(v, &c->admin_gid[c->n_admin_gid++]);
        else {
            fprintf(stderr, "sksd: unknown option %s (see sksd --help)\n", a);
            return 0;
        }
        if (!ok) {
            fprintf(stderr, "sksd: %s: unknown user or group, or too many: %s\n", a, v);
            return 0;
        }
    }
    if (c->loc.db_path == NULL || c->socket_path == NULL) {
        usage(stderr);
        return 0;
    }
    return 1;
}

int main(int argc, char **argv)
{
    config cfg;
    struct sigaction sa;
    char err[512] = "";
    sks_device *probe;
    int lfd;

    daemon_log_name("sksd");

    if (!parse_args(argc, argv, &cfg))
        return 2;
    /* Refuse to start on a store that cannot be opened: better now than per client. */
    probe = sks_device_open(&cfg.loc, err, sizeof(err));
    if (probe == NULL) {
        fprintf(stderr, "sksd: %s\n", err);
        return 1;
    }
    sks_device_close(probe);
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal; /* no SA_RESTART: poll() returns on SIGTERM */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    if ((lfd = listen_socket(&cfg)) < 0)
        return 1;
    daemon_log("serving %s on %s", cfg.loc.db_path, cfg.socket_path);
    while (!stopping) {
        struct pollfd pfd = { lfd, POLLIN, 0 };
        client *cl;
        socklen_t len = sizeof(struct ucred);
        pthread_t th;
        pthread_attr_t attr;
        int fd;

        if (poll(&pfd, 1, 1000) <= 0)
            continue;
        fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        cl = calloc(1, sizeof(*cl));
        if (cl == NULL || getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cl->peer, &len) != 0) {
            free(cl);
            close(fd);
            continue;
        }
        cl->allowed = peer_allowed(&cfg, &cl->peer);
        if (!cl->allowed)
            daemon_log("refused connection from uid %u gid %u pid %d: not in the allow-list", (unsigned)cl->peer.uid,
                   (unsigned)cl->peer.gid, (int)cl->peer.pid);
        cl->cfg = &cfg;
        cl->fd = fd;
        pthread_mutex_lock(&count_lock);
        active_clients++;
        pthread_mutex_unlock(&count_lock);
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&th, &attr, serve_client, cl) != 0) {
            close(fd);
            free(cl);
            pthread_mutex_lock(&count_lock);
            active_clients--;
            pthread_mutex_unlock(&count_lock);
        }
        pthread_attr_destroy(&attr);
    }
    close(lfd);
    unlink(cfg.socket_path);
    /* Let calls in progress finish: each client thread stops after its current call. */
    pthread_mutex_lock(&count_lock);
    while (active_clients > 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&count_cond, &count_lock, &ts);
        if (active_clients > 0)
            break; /* idle clients block in read; their state is committed, so go */
    }
    pthread_mutex_unlock(&count_lock);
    daemon_log("stopped");
    return 0;
}
