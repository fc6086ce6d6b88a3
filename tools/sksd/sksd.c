/*
 * sksd: serves a store on a Unix socket with the SKS wire format in length-prefixed frames,
 * so keys live outside the applications that use them (nginx workers after fork and
 * privilege drop, for instance). Options: sksd --help, README "sksd".
 *
 * One thread per client, each with its own connection to the store (opened at the client's
 * first request): every call is one SQLite transaction, so a client that disconnects
 * mid-call leaves nothing half done, and SIGTERM lets calls in progress finish before the
 * daemon exits.
 *
 * Access: the socket's owner/group/mode, then SO_PEERCRED at accept. root and the
 * allow-lists may connect; everyone else gets one refusal and is disconnected.
 * Administrators (root, sksd's own user, and --admin-*) may call every method; other clients
 * get the User API and read-only queries, and only for the keys they own (device/owner.c).
 *
 * Bounds: clients in all and per uid (administrators still get in when the total is
 * reached, within their own per-uid cap), an idle timeout between requests, a deadline for
 * each frame once it has begun, for each reply to be taken, and a frame size limit (smaller
 * for non-administrators, whose largest call is a User API call).
 *
 * Why credentials are taken once: SO_PEERCRED tells who connect()ed, not who writes now, so
 * re-reading it per request would not catch a forked child using its parent's connection.
 * That is closed at the client: the transports let go of their connections in a forked
 * child before fork() returns (transport/unix.c), and the child connects as itself.
 */
#include <errno.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "../common/daemon_log.h"
#include "../../device/sks_device.h"
#include "../../transport/transport.h"
#include "../../transport/channel.h"

#define MAX_IDS 32
#define MAX_KEY_OWNERS 64

/* Defaults of the bounds (sksd --help). */
#define DEFAULT_MAX_CLIENTS 512
#define DEFAULT_MAX_CLIENTS_PER_UID 64
#define DEFAULT_IDLE_TIMEOUT 600  /* seconds between requests */
#define DEFAULT_FRAME_TIMEOUT 10  /* seconds for a frame, once begun, and for a reply */
/* The largest real request is an administrator's skipImport: up to 32 keys, each with its
 * public key, its encrypted private key and a certificate path of up to 16 certificates;
 * 32 x (0.5 KiB + 16 x 2 KiB) is about 1.1 MiB. importPrivateKey of RSA-4096 is 2.5 KiB. */
#define DEFAULT_MAX_FRAME (2u * 1024 * 1024)
/* A non-administrator's largest call: symmetricKeyEncrypt/performHmac with the device's
 * cryptoDataSize (64 KiB) of data, plus the handle, algorithm URI and parameters. */
#define USER_MAX_FRAME (64u * 1024 + 4096)
#define THREAD_STACK (512u * 1024)

typedef struct {
    const char *key; /* friendly name or #HANDLE */
    uid_t uid;
    uint32_t gid;    /* SKS_NO_GROUP: none */
} key_owner;

typedef struct {
    sks_store_location loc;
    const char *socket_path;
    mode_t mode;
    gid_t group;
    int has_group;
    uid_t allow_uid[MAX_IDS], admin_uid[MAX_IDS];
    gid_t allow_gid[MAX_IDS], admin_gid[MAX_IDS];
    int n_allow_uid, n_allow_gid, n_admin_uid, n_admin_gid;
    key_owner owners[MAX_KEY_OWNERS];
    int n_owners;
    long max_clients, max_per_uid, idle_timeout, frame_timeout, max_frame;
    int no_shared_memory; /* --no-shared-memory: answer every client through the socket */
} config;

typedef struct {
    const config *cfg;
    int fd;
    struct ucred peer;
    gid_t groups[SKS_CALLER_MAX_GROUPS]; /* supplementary groups at connect (SO_PEERGROUPS) */
    int ngroups;
    int admin;
} client;

static volatile sig_atomic_t stopping;
static pthread_mutex_t count_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t count_cond = PTHREAD_COND_INITIALIZER;
static int active_clients;
/* Clients per uid, under count_lock: at most max_clients + admin entries in use. */
typedef struct {
    uid_t uid;
    int n;
} uid_count;
static uid_count *uid_counts;
static int n_uid_counts, cap_uid_counts;


static int in_list(const unsigned *list, int n, unsigned v)
{
    int i;

    for (i = 0; i < n; i++)
        if (list[i] == v)
            return 1;
    return 0;
}

/* Is the peer, its primary group or one of its supplementary groups listed? */
static int peer_in(const client *cl, const uid_t *uids, int nu, const gid_t *gids, int ng)
{
    int i;

    if (in_list(uids, nu, cl->peer.uid) || in_list(gids, ng, cl->peer.gid))
        return 1;
    for (i = 0; i < cl->ngroups; i++)
        if (in_list(gids, ng, cl->groups[i]))
            return 1;
    return 0;
}

static int peer_allowed(const config *c, const client *cl)
{
    if (cl->peer.uid == 0 || cl->peer.uid == getuid())
        return 1;
    if (c->n_allow_uid == 0 && c->n_allow_gid == 0)
        return 1; /* no allow-list: the socket's permissions decide */
    return peer_in(cl, c->allow_uid, c->n_allow_uid, c->allow_gid, c->n_allow_gid);
}

/* root, sksd's own user, and whoever --admin-uid/--admin-gid name: nobody else by default. */
static int peer_admin(const config *c, const client *cl)
{
    if (cl->peer.uid == 0 || cl->peer.uid == getuid())
        return 1;
    return peer_in(cl, c->admin_uid, c->n_admin_uid, c->admin_gid, c->n_admin_gid);
}

static void refuse(sks_buf *reply, uint8_t status, const char *what)
{
    size_t n = strlen(what);

    sks_buf_reset(reply);
    sks_buf_byte(reply, status);
    sks_buf_array(reply, what, n);
}

/* Answers a peer that is turned away at accept with one frame, without waiting for its
 * request, and disconnects it: a refused peer holds no thread. The client reads the
 * refusal even if its request went out after the close (transport/unix.c). */
static void refuse_and_close(int fd, uint8_t status, const char *what)
{
    sks_buf reply;
    struct timeval tv = { 1, 0 };

    sks_buf_init(&reply);
    refuse(&reply, status, what);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (!reply.failed)
        sks_frame_write(fd, reply.data, reply.len);
    sks_buf_free(&reply);
    close(fd);
}

/* Counts a new client of uid; 0 if that would pass a cap. Administrators are not held to
 * the total (so root can still manage a daemon that others fill), only to the per-uid cap. */
static int admit(const config *c, uid_t uid, int admin)
{
    int i, ok = 0;

    pthread_mutex_lock(&count_lock);
    for (i = 0; i < n_uid_counts && uid_counts[i].uid != uid; i++)
        ;
    if ((i < n_uid_counts && uid_counts[i].n >= c->max_per_uid) || (!admin && active_clients >= c->max_clients))
        goto out;
    if (i == n_uid_counts) {
        if (n_uid_counts == cap_uid_counts) {
            int cap = cap_uid_counts ? 2 * cap_uid_counts : 16;
            uid_count *grown = realloc(uid_counts, (size_t)cap * sizeof(*grown));
            if (grown == NULL)
                goto out;
            uid_counts = grown;
            cap_uid_counts = cap;
        }
        uid_counts[n_uid_counts].uid = uid;
        uid_counts[n_uid_counts++].n = 0;
    }
    uid_counts[i].n++;
    active_clients++;
    ok = 1;
out:
    pthread_mutex_unlock(&count_lock);
    return ok;
}

static void release(uid_t uid)
{
    int i;

    pthread_mutex_lock(&count_lock);
    for (i = 0; i < n_uid_counts && uid_counts[i].uid != uid; i++)
        ;
    if (i < n_uid_counts && --uid_counts[i].n == 0)
        uid_counts[i] = uid_counts[--n_uid_counts];
    active_clients--;
    pthread_cond_broadcast(&count_cond);
    pthread_mutex_unlock(&count_lock);
}

/* The store for this client, opened at its first request, with the client as the caller
 * whose keys it may use. */
static sks_device *open_for(const client *cl)
{
    char err[512] = "";
    sks_caller who;
    sks_device *dev = sks_device_open(&cl->cfg->loc, err, sizeof(err));
    int i;

    memset(&who, 0, sizeof(who));
    who.uid = cl->peer.uid;
    who.gids[who.ngids++] = cl->peer.gid;
    for (i = 0; i < cl->ngroups && who.ngids < SKS_CALLER_MAX_GROUPS; i++)
        who.gids[who.ngids++] = cl->groups[i];
    who.admin = cl->admin;
    if (dev != NULL && !sks_device_set_caller(dev, &who, err, sizeof(err))) {
        sks_device_close(dev);
        dev = NULL;
    }
    if (dev == NULL)
        daemon_log("cannot open the store for uid %u: %s", (unsigned)cl->peer.uid, err);
    return dev;
}

static void log_end(const client *cl, int r)
{
    if (r == SKS_FRAME_IDLE)
        daemon_log("closed idle connection of uid %u pid %d", (unsigned)cl->peer.uid, (int)cl->peer.pid);
    else if (r == SKS_FRAME_SLOW)
        daemon_log("closed connection of uid %u pid %d: frame not complete within %ld s", (unsigned)cl->peer.uid,
                   (int)cl->peer.pid, cl->cfg->frame_timeout);
    else if (r == SKS_FRAME_TOO_LONG)
        daemon_log("closed connection of uid %u pid %d: frame longer than its limit", (unsigned)cl->peer.uid,
                   (int)cl->peer.pid);
}

/*
 * A client thread is woken by every request. As a SCHED_BATCH thread it does not preempt the
 * client that woke it: the client goes on into its wait for the reply, and only then does this
 * thread run (the wake-up is a synchronous one, usually on the same core). Its share of the
 * CPU is the same; only the moment of switching changes. On the busy 2-core machine of
 * bench/RESULTS.md (issue 13) this did better in most paired runs; the evidence is noisy.
 * Best effort: if the policy cannot be set, the thread serves as it is.
 */
static void run_as_batch(void)
{
    struct sched_param sp;

    memset(&sp, 0, sizeof(sp));
    pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp);
}

/* The next request, from the shared page once the client has the channel, else a frame. */
static int read_request(const client *cl, sks_chan *ch, sks_buf *req, const sks_frame_limits *lim)
{
    return ch->map != NULL ? sks_chan_read_request(ch, cl->fd, req, lim) : sks_frame_read_bounded(cl->fd, req, lim);
}

static int write_reply(const client *cl, sks_chan *ch, const sks_buf *reply)
{
    return ch->map != NULL ? sks_chan_write_reply(ch, cl->fd, reply->data, reply->len)
                           : sks_frame_write(cl->fd, reply->data, reply->len);
}

/* A client's first frame, if empty, asks for the shared-memory channel (transport/channel.h).
 * 1 if it is now in use. Otherwise (--no-shared-memory, no memory) the empty request is
 * answered as any other, with an error, and the client stays on the socket. */
static int offer_channel(const client *cl, sks_chan *ch)
{
    if (cl->cfg->no_shared_memory)
        return 0;
    if (sks_chan_offer(ch, cl->fd))
        return 1;
    daemon_log("cannot set up shared memory for uid %u pid %d: %s", (unsigned)cl->peer.uid, (int)cl->peer.pid,
               strerror(errno));
    return 0;
}

static void *serve_client(void *arg)
{
    client *cl = arg;
    sks_device *dev = NULL;
    sks_frame_limits lim;
    sks_chan ch;
    sks_buf req, reply;
    int r = SKS_FRAME_END, first = 1;

    lim.idle_ms = cl->cfg->idle_timeout * 1000;
    lim.frame_ms = cl->cfg->frame_timeout * 1000;
    lim.max = cl->admin ? (size_t)cl->cfg->max_frame : USER_MAX_FRAME;
    lim.stop_on_signal = 0; /* SIGTERM goes to the main thread; clients finish their call */
    lim.idle_by_rcvtimeo = 1; /* take_client set SO_RCVTIMEO */
    run_as_batch();
    memset(&ch, 0, sizeof(ch));
    sks_buf_init(&req);
    sks_buf_init(&reply);
    while (!stopping && (r = read_request(cl, &ch, &req, &lim)) == SKS_FRAME_OK) {
        if (first && req.len == 0 && offer_channel(cl, &ch)) {
            first = 0;
            continue;
        }
        first = 0;
        if (dev == NULL && (dev = open_for(cl)) == NULL)
            break;
        if (req.len > 0 && !cl->admin && !sks_method_open_to_users(req.data[0])) {
            char msg[160];
            snprintf(msg, sizeof(msg), "sksd: method %u is restricted to administrators (uid %u is not one)",
                     req.data[0], (unsigned)cl->peer.uid);
            daemon_log("refused method %u from uid %u gid %u pid %d", req.data[0], (unsigned)cl->peer.uid,
                       (unsigned)cl->peer.gid, (int)cl->peer.pid);
            refuse(&reply, 0x02 /* ERROR_NOT_ALLOWED */, msg);
        } else {
            sks_device_dispatch(dev, req.data, req.len, &reply);
        }
        /* The call is complete (committed or rolled back) before the reply is written: a
         * client that has gone away loses only the reply. A client that does not take its
         * reply within the frame timeout is disconnected (SO_SNDTIMEO). */
        if (!write_reply(cl, &ch, &reply))
            break;
    }
    log_end(cl, r);
    if (r == SKS_FRAME_TOO_LONG) {
        /* Said in the protocol, so the client reports why instead of retrying. */
        char msg[120];
        snprintf(msg, sizeof(msg), "sksd: request longer than the limit of %zu bytes", lim.max);
        refuse(&reply, 0x09 /* ERROR_OPTION */, msg);
        write_reply(cl, &ch, &reply);
    }
    sks_chan_close_server(&ch);
    sks_buf_free(&req);
    sks_buf_free(&reply);
    sks_device_close(dev);
    close(cl->fd);
    release(cl->peer.uid);
    free(cl);
    return NULL;
}

static void on_signal(int sig)
{
    (void)sig;
    stopping = 1;
}

/*
 * The socket appears at its path only once it is complete: bound under a temporary name with
 * its mode (through the umask) and group (through the effective gid) already right, listening,
 * and then renamed into place. So no client ever finds a socket that refuses it or has the
 * wrong mode, and sksd (root) never calls chmod or chown on a path: in a directory that
 * others can write, a symlink swapped in after bind() would have given them any file.
 */
static int listen_socket(const config *c)
{
    struct sockaddr_un sa;
    char tmp[sizeof(sa.sun_path)];
    gid_t egid = getegid();
    mode_t old;
    int fd, ok;

    if (snprintf(tmp, sizeof(tmp), "%s.new", c->socket_path) >= (int)sizeof(tmp)) {
        daemon_log("socket path too long: %s", c->socket_path);
        return -1;
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, tmp, strlen(tmp));
    unlink(tmp); /* a stale one, or whatever was planted there: unlink never follows a link */
    old = umask(~c->mode & 0777);
    ok = (!c->has_group || setegid(c->group) == 0) && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    if (c->has_group && setegid(egid) != 0)
        ok = 0;
    umask(old);
    if (!ok || listen(fd, 64) != 0 || rename(tmp, c->socket_path) != 0) {
        daemon_log("cannot set up %s: %s", c->socket_path, strerror(errno));
        unlink(tmp);
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
    fprintf(f,
            "usage: sksd --store PATH --socket PATH [--master-key PATH] [--mode OCTAL] [--group NAME]\n"
            "            [--allow-uid UID]... [--allow-gid GID]... [--admin-uid UID]... [--admin-gid GID]...\n"
            "            [--key-owner KEY=USER[:GROUP]]... [--max-clients N] [--max-clients-per-uid N]\n"
            "            [--idle-timeout SECONDS] [--frame-timeout SECONDS] [--max-frame BYTES]\n"
            "            [--no-shared-memory]\n"
            "       sksd --store PATH [--master-key PATH] --key-owner KEY=USER[:GROUP]...   (set owners, exit)\n"
            "Serves the store on a Unix socket (4-byte big-endian length frames, docs/wire-format.md).\n"
            "Runs in the foreground; stops cleanly on SIGTERM/SIGINT.\n"
            "  --allow-uid/--allow-gid  who may connect (root and sksd's user always); none: the socket decides\n"
            "  --admin-uid/--admin-gid  who may provision, delete, export, skipImport and use every key;\n"
            "                           default: root and sksd's own user only\n"
            "  --key-owner KEY=USER[:GROUP]  gives a key (friendly name or #HANDLE) to USER (and GROUP):\n"
            "                           non-administrators use, list and see only keys they or their group own;\n"
            "                           keys belong to whoever created them through sksd, else to root\n"
            "  --max-clients N          connected clients in all (default %d; administrators may exceed it)\n"
            "  --max-clients-per-uid N  connected clients per uid (default %d)\n"
            "  --idle-timeout S         disconnect a client idle this long between requests (default %d)\n"
            "  --frame-timeout S        a request must arrive whole, and a reply be taken, within S (default %d)\n"
            "  --max-frame BYTES        largest administrator request (default %u; others: %u)\n"
            "  --no-shared-memory       serve every call through the socket; by default a client may ask\n"
            "                           for a shared-memory channel (calls without system calls)\n",
            DEFAULT_MAX_CLIENTS, DEFAULT_MAX_CLIENTS_PER_UID, DEFAULT_IDLE_TIMEOUT, DEFAULT_FRAME_TIMEOUT,
            DEFAULT_MAX_FRAME, USER_MAX_FRAME);
}

/* KEY=USER[:GROUP] */
static int parse_owner(char *v, key_owner *o)
{
    char *eq = strrchr(v, '=');
    char *colon;
    gid_t g;

    if (eq == NULL || eq == v)
        return 0;
    *eq = '\0';
    o->key = v;
    o->gid = SKS_NO_GROUP;
    if ((colon = strchr(eq + 1, ':')) != NULL) {
        *colon = '\0';
        if (!parse_gid(colon + 1, &g))
            return 0;
        o->gid = g;
    }
    return parse_uid(eq + 1, &o->uid);
}

static int parse_count(const char *v, long lo, long hi, long *out)
{
    char *end;
    long n = strtol(v, &end, 10);

    if (*v == '\0' || *end != '\0' || n < lo || n > hi)
        return 0;
    *out = n;
    return 1;
}

static int parse_args(int argc, char **argv, config *c)
{
    int i;

    memset(c, 0, sizeof(*c));
    c->mode = 0660;
    c->max_clients = DEFAULT_MAX_CLIENTS;
    c->max_per_uid = DEFAULT_MAX_CLIENTS_PER_UID;
    c->idle_timeout = DEFAULT_IDLE_TIMEOUT;
    c->frame_timeout = DEFAULT_FRAME_TIMEOUT;
    c->max_frame = DEFAULT_MAX_FRAME;
    for (i = 1; i < argc; i++) {
        char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int ok = 1;

        if (strcmp(a, "--help") == 0) {
            usage(stdout);
            exit(0);
        }
        if (strcmp(a, "--foreground") == 0)
            continue;
        if (strcmp(a, "--no-shared-memory") == 0) {
            c->no_shared_memory = 1;
            continue;
        }
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
        else if (strcmp(a, "--key-owner") == 0)
            ok = c->n_owners < MAX_KEY_OWNERS && parse_owner(v, &c->owners[c->n_owners++]);
        else if (strcmp(a, "--max-clients") == 0)
            ok = parse_count(v, 1, 100000, &c->max_clients);
        else if (strcmp(a, "--max-clients-per-uid") == 0)
            ok = parse_count(v, 1, 100000, &c->max_per_uid);
        else if (strcmp(a, "--idle-timeout") == 0)
            ok = parse_count(v, 1, 86400 * 365, &c->idle_timeout);
        else if (strcmp(a, "--frame-timeout") == 0)
            ok = parse_count(v, 1, 3600, &c->frame_timeout);
        else if (strcmp(a, "--max-frame") == 0)
            ok = parse_count(v, USER_MAX_FRAME, SKS_FRAME_MAX, &c->max_frame);
        else {
            fprintf(stderr, "sksd: unknown option %s (see sksd --help)\n", a);
            return 0;
        }
        if (!ok) {
            fprintf(stderr, "sksd: %s: bad value, unknown user or group, or too many: %s\n", a, v);
            return 0;
        }
    }
    if (c->loc.db_path == NULL || (c->socket_path == NULL && c->n_owners == 0)) {
        usage(stderr);
        return 0;
    }
    return 1;
}

/* --key-owner: records the owners in the store (an administrator's act: whoever runs sksd
 * on the store can read its master key). */
static int set_owners(const config *c, sks_device *dev)
{
    char err[512];
    int i;

    for (i = 0; i < c->n_owners; i++) {
        const key_owner *o = &c->owners[i];
        if (!sks_device_set_key_owner(dev, o->key, (uint32_t)o->uid, o->gid, err, sizeof(err))) {
            fprintf(stderr, "sksd: --key-owner %s: %s\n", o->key, err);
            return 0;
        }
        daemon_log("key %s belongs to uid %u%s", o->key, (unsigned)o->uid, o->gid == SKS_NO_GROUP ? "" : " and its group");
    }
    return 1;
}

/* The peer's credentials at connect, supplementary groups included. */
static int read_peer(client *cl)
{
    socklen_t len = sizeof(cl->peer);
    gid_t groups[SKS_CALLER_MAX_GROUPS];
    socklen_t glen = sizeof(groups);

    if (getsockopt(cl->fd, SOL_SOCKET, SO_PEERCRED, &cl->peer, &len) != 0)
        return 0;
    cl->ngroups = 0;
    if (getsockopt(cl->fd, SOL_SOCKET, SO_PEERGROUPS, groups, &glen) == 0) {
        cl->ngroups = (int)(glen / sizeof(gid_t));
        memcpy(cl->groups, groups, (size_t)cl->ngroups * sizeof(gid_t));
    }
    return 1;
}

/* Takes one connection: refused, over a cap, or served by a thread of its own. */
static void take_client(const config *cfg, int fd)
{
    client *cl = calloc(1, sizeof(*cl));
    pthread_attr_t attr;
    pthread_t th;
    struct timeval tv = { cfg->frame_timeout, 0 }, idle = { cfg->idle_timeout, 0 };
    char msg[160];
    int rc;

    if (cl == NULL) {
        close(fd);
        return;
    }
    cl->cfg = cfg;
    cl->fd = fd;
    if (!read_peer(cl)) {
        close(fd);
        free(cl);
        return;
    }
    if (!peer_allowed(cfg, cl)) {
        daemon_log("refused connection from uid %u gid %u pid %d: not in the allow-list", (unsigned)cl->peer.uid,
                   (unsigned)cl->peer.gid, (int)cl->peer.pid);
        refuse_and_close(fd, 0x02 /* ERROR_NOT_ALLOWED */, "sksd: this user is not allowed to use the key store");
        free(cl);
        return;
    }
    cl->admin = peer_admin(cfg, cl);
    if (!admit(cfg, cl->peer.uid, cl->admin)) {
        snprintf(msg, sizeof(msg), "sksd: too many connections (at most %ld per user, %ld in all)", cfg->max_per_uid,
                 cfg->max_clients);
        daemon_log("refused connection from uid %u pid %d: too many connections", (unsigned)cl->peer.uid,
                   (int)cl->peer.pid);
        refuse_and_close(fd, 0x0D /* ERROR_NOT_AVAILABLE */, msg);
        free(cl);
        return;
    }
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &idle, sizeof(idle));
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, THREAD_STACK);
    rc = pthread_create(&th, &attr, serve_client, cl);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        daemon_log("cannot start a thread for uid %u: %s", (unsigned)cl->peer.uid, strerror(rc));
        release(cl->peer.uid);
        refuse_and_close(fd, 0x0D /* ERROR_NOT_AVAILABLE */, "sksd: out of resources");
        free(cl);
    }
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
    if (!set_owners(&cfg, probe)) {
        sks_device_close(probe);
        return 1;
    }
    sks_device_close(probe);
    if (cfg.socket_path == NULL)
        return 0; /* only --key-owner */
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
        int fd;

        if (poll(&pfd, 1, 1000) <= 0)
            continue;
        fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0)
            take_client(&cfg, fd);
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
