/*
 * The shared-memory channel between a client and sksd (channel.h; issue 13).
 *
 * Why: on this project's measurements a call through a socket costs two sleeps and two
 * wake-ups (11-14 us of CPU per side on a virtual machine), more than the P-256 signature it
 * carries (about 22 us). When both sides are running, the page carries a call with no system
 * call at all; when one side sleeps, it is woken once, as through the socket.
 *
 * The control page (first 4 KiB; request slot and reply slot follow):
 *   req_seq        client: the number of the request it posted (any change = a new request)
 *   req_len        client: its length in the request slot, or VIA_SOCKET (a frame follows)
 *   server_asleep  sksd sets it before sleeping on the socket; a client that exchanges it
 *                  back to 0 owes sksd exactly one byte on the socket (the doorbell)
 *   rep_word       sksd: the number of the request answered, | CLOSED once sksd lets go;
 *                  the client sleeps on it (futex)
 *   rep_len        sksd: the reply's length in the reply slot, or VIA_SOCKET
 *   client_asleep  the client sets it before its futex wait; sksd wakes it if it finds it set
 *   taken_seq      sksd: the last request it copied out (a closed channel whose request was
 *                  not taken may be sent again)
 *   client_cpu, server_cpu   the CPU each side last ran on (a hint, nothing more): spinning
 *                  for a thread that waits for the spinner's own CPU only delays it
 *
 * Spinning: each side spins for the other only within a budget that adapts (sks_spin), and
 * stops at once if it finds it was preempted while spinning, if the other side last ran on this
 * CPU, or (the client) if sksd has not taken the request within TAKE_NS: on a machine whose
 * cores are busy, spinning takes the time the other side needs, and keeps a CPU from going idle
 * and taking over the thread that waits for one (bench/RESULTS.md, issue 13, round 3).
 * Spinning never calls sched_yield(): on a core shared with a busy process that hands the core
 * over for a whole time slice.
 */
#include "channel.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <poll.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define VIA_SOCKET 0xFFFFFFFFu
#define CLOSED 0x80000000u
#define SEQ_MASK 0x7FFFFFFFu

/* Spin budgets: a client waits for sksd's work (a P-256 signature is about 25 us through the
 * page), sksd for the client's next request (the application's own work between calls). */
#define CLIENT_SPIN_MAX_NS 100000L
#define SERVER_SPIN_MAX_NS 60000L
/* A client stops spinning if sksd has not taken its request within this time. */
#define TAKE_NS 20000L
/* A gap this long between two looks at the clock while spinning: the spinner was preempted. */
#define PREEMPTED_NS 40000L
/* With the budget at zero, every this many calls spin once more with half the most. */
#define PROBE_EVERY 16u
/* How long a client sleeps before it asks the socket whether sksd is still there. */
#define CLIENT_CHECK_NS 1000000000L

typedef struct {
    _Atomic uint32_t req_seq;
    _Atomic uint32_t req_len;
    _Atomic uint32_t server_asleep;
    _Atomic uint32_t client_cpu;
    uint8_t pad0[64 - 16];
    _Atomic uint32_t rep_word;
    _Atomic uint32_t rep_len;
    _Atomic uint32_t client_asleep;
    _Atomic uint32_t taken_seq;
    _Atomic uint32_t server_cpu;
} chan_ctl;

_Static_assert(sizeof(chan_ctl) <= 4096, "control page");

static chan_ctl *ctl_of(const sks_chan *c)
{
    return (chan_ctl *)(void *)c->map;
}

static unsigned char *request_slot(const sks_chan *c)
{
    return c->map + 4096;
}

static unsigned char *reply_slot(const sks_chan *c)
{
    return c->map + 4096 + SKS_CHAN_SLOT;
}

static long now_ns(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long)t.tv_sec * 1000000000L + t.tv_nsec;
}

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Non-private futex operations: the word is in memory shared between two processes. */
static void futex_wait(_Atomic uint32_t *w, uint32_t old, long timeout_ns)
{
    struct timespec ts = { timeout_ns / 1000000000L, timeout_ns % 1000000000L };

    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAIT, old, &ts, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *w)
{
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

static void spin_init(sks_spin *s, long max_ns)
{
    s->max_ns = max_ns;
    s->budget_ns = max_ns / 4;
    s->idle_calls = 0;
}

/* The budget for this wait: zero once spinning stopped paying, with a probe now and then. */
static long spin_budget(sks_spin *s)
{
    if (s->budget_ns > 0)
        return s->budget_ns;
    if (++s->idle_calls % PROBE_EVERY == 0)
        return s->max_ns / 2;
    return 0;
}

/* Spinning found the answer after waited_ns: allow about twice that next time. */
static void spin_paid(sks_spin *s, long waited_ns)
{
    long want = 2 * waited_ns + 2000;

    if (want > s->budget_ns)
        s->budget_ns = want < s->max_ns ? want : s->max_ns;
}

static void spin_failed(sks_spin *s, int preempted)
{
    s->budget_ns = preempted ? s->budget_ns / 4 : s->budget_ns / 2;
    if (s->budget_ns < 1000)
        s->budget_ns = 0;
}

/* This thread's CPU (glibc reads it from rseq, no system call); -1 if unknown. */
static uint32_t my_cpu(void)
{
    return (uint32_t)sched_getcpu();
}

/* Spins while *w == old, at most budget_ns, and not at all while the other side last ran on
 * this CPU (partner_cpu): then it can only answer once this thread stops. Returns the value
 * seen last (old if spinning gave up). A spin that was preempted (a gap in the clock, also
 * when the answer was there after it) counts against the budget: the cores are busy. */
static uint32_t spin_while(_Atomic uint32_t *w, uint32_t old, long budget_ns, sks_spin *s,
                           _Atomic uint32_t *partner_cpu, _Atomic uint32_t *taken, uint32_t seq)
{
    long start, last, t;
    unsigned i;
    uint32_t v, cpu;

    v = atomic_load_explicit(w, memory_order_acquire);
    if (v != old || budget_ns <= 0)
        return v;
    cpu = my_cpu();
    if (atomic_load_explicit(partner_cpu, memory_order_relaxed) == cpu)
        return v;
    start = last = now_ns();
    for (i = 1;; i++) {
        cpu_relax();
        v = atomic_load_explicit(w, memory_order_acquire);
        if (v != old) {
            t = now_ns();
            if (t - last > PREEMPTED_NS)
                spin_failed(s, 1);
            else
                spin_paid(s, t - start);
            return v;
        }
        if (i % 32 != 0)
            continue;
        t = now_ns();
        if (t - last > PREEMPTED_NS || atomic_load_explicit(partner_cpu, memory_order_relaxed) == cpu) {
            spin_failed(s, 1);
            return v;
        }
        /* The other side has not even taken the request: it is not running but waiting for
         * a CPU, and this spin keeps this one from going idle and taking it over. */
        if (taken != NULL && t - start > TAKE_NS && atomic_load(taken) != seq) {
            spin_failed(s, 0);
            return v;
        }
        if (t - start > budget_ns) {
            spin_failed(s, 0);
            return v;
        }
        last = t;
    }
}

/* ---------------------------------------------------------------- sksd's side */

int sks_chan_offer(sks_chan *c, int sock)
{
    static const uint8_t offer[] = "\0sks-shm1";
    int mfd = memfd_create("sksd-channel", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    int ok;

    memset(c, 0, sizeof(*c));
    if (mfd < 0)
        return 0;
    /* Sealed at its size: a client that could shrink it would make sksd's next access to the
     * page a SIGBUS, the end of every client's service. */
    if (ftruncate(mfd, SKS_CHAN_SIZE) != 0
        || fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
        close(mfd);
        return 0;
    }
    c->map = mmap(NULL, SKS_CHAN_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    if (c->map == MAP_FAILED) {
        c->map = NULL;
        close(mfd);
        return 0;
    }
    spin_init(&c->spin, SERVER_SPIN_MAX_NS);
    ok = sks_frame_write_fd(sock, offer, sizeof(offer) - 1, mfd);
    close(mfd);
    if (!ok) {
        munmap(c->map, SKS_CHAN_SIZE);
        c->map = NULL;
    }
    return ok;
}

/* Takes the one doorbell byte a client owes after it woke sksd, within the frame timeout. A
 * client that promised one and does not send it only stalls its own connection. */
static int take_doorbell(int sock, long timeout_ms)
{
    uint8_t b;
    struct pollfd pfd = { sock, POLLIN, 0 };
    ssize_t r;

    for (;;) {
        r = recv(sock, &b, 1, MSG_DONTWAIT);
        if (r == 1)
            return SKS_FRAME_OK;
        if (r == 0)
            return SKS_FRAME_END;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return SKS_FRAME_ERROR;
        if (poll(&pfd, 1, timeout_ms > INT_MAX ? INT_MAX : (int)timeout_ms) == 0)
            return SKS_FRAME_SLOW;
    }
}

/* Sleeps on the socket until the client rings or goes away, or the idle timeout passes. On
 * SKS_FRAME_OK a new request may have been posted (the caller looks). */
static int sleep_on_socket(chan_ctl *k, uint32_t seq, int sock, const sks_frame_limits *lim, long deadline_ns)
{
    struct pollfd pfd = { sock, POLLIN, 0 };
    long left;
    int r;

    atomic_store(&k->server_asleep, 1);
    /* Posted between the spin and the flag? Then the client may or may not have seen it. */
    if (atomic_load(&k->req_seq) != seq)
        return atomic_exchange(&k->server_asleep, 0) == 0 ? take_doorbell(sock, lim->frame_ms) : SKS_FRAME_OK;
    left = (deadline_ns - now_ns()) / 1000000L;
    if (left <= 0)
        return SKS_FRAME_IDLE;
    do
        r = poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int)left);
    while (r < 0 && errno == EINTR && !lim->stop_on_signal);
    if (r < 0)
        return SKS_FRAME_ERROR;
    if (atomic_exchange(&k->server_asleep, 0) == 0)
        return take_doorbell(sock, lim->frame_ms);
    if (r == 0)
        return atomic_load(&k->req_seq) != seq ? SKS_FRAME_OK : SKS_FRAME_IDLE;
    /* Woken by the socket with no doorbell owed: the client is gone, or broke the protocol. */
    {
        uint8_t b;
        return recv(sock, &b, 1, MSG_DONTWAIT | MSG_PEEK) == 0 ? SKS_FRAME_END : SKS_FRAME_ERROR;
    }
}

int sks_chan_read_request(sks_chan *c, int sock, sks_buf *out, const sks_frame_limits *lim)
{
    chan_ctl *k = ctl_of(c);
    long deadline = now_ns() + lim->idle_ms * 1000000L;
    uint32_t seq, len;
    int r;

    seq = spin_while(&k->req_seq, c->seq, spin_budget(&c->spin), &c->spin, &k->client_cpu, NULL, 0);
    while (seq == c->seq) {
        if ((r = sleep_on_socket(k, c->seq, sock, lim, deadline)) != SKS_FRAME_OK)
            return r;
        seq = atomic_load(&k->req_seq);
    }
    c->seq = seq; /* whatever the client wrote: it is only ever compared for a change */
    c->calls++;
    /* Read once: the client may change the page at any time, so the length is taken into a
     * local, bounded, and the request copied into private memory before anything parses it. */
    len = atomic_load_explicit(&k->req_len, memory_order_acquire);
    if (len == VIA_SOCKET) {
        sks_frame_limits now = *lim;
        now.idle_ms = lim->frame_ms; /* announced: the frame is due now */
        now.idle_by_rcvtimeo = 0;
        r = sks_frame_read_bounded(sock, out, &now);
        if (r == SKS_FRAME_IDLE || r == SKS_FRAME_END)
            r = r == SKS_FRAME_IDLE ? SKS_FRAME_SLOW : SKS_FRAME_ERROR;
    } else if (len > SKS_CHAN_SLOT || len > lim->max) {
        r = SKS_FRAME_TOO_LONG;
    } else {
        sks_buf_reset(out);
        sks_buf_put(out, "", 0);
        sks_buf_put(out, request_slot(c), len);
        r = out->failed ? SKS_FRAME_ERROR : SKS_FRAME_OK;
    }
    atomic_store_explicit(&k->server_cpu, my_cpu(), memory_order_relaxed);
    atomic_store(&k->taken_seq, seq);
    return r;
}

int sks_chan_write_reply(sks_chan *c, int sock, const uint8_t *p, size_t n)
{
    chan_ctl *k = ctl_of(c);
    int via_socket = n > SKS_CHAN_SLOT;

    if (!via_socket && n > 0)
        memcpy(reply_slot(c), p, n);
    atomic_store_explicit(&k->rep_len, via_socket ? VIA_SOCKET : (uint32_t)n, memory_order_relaxed);
    /* Published before a frame goes out: the client reads the socket only once it knows a
     * frame comes, so a large reply cannot fill the socket while nobody reads it. */
    atomic_store(&k->rep_word, c->seq & SEQ_MASK);
    if (atomic_exchange(&k->client_asleep, 0) != 0)
        futex_wake(&k->rep_word);
    return via_socket ? sks_frame_write(sock, p, n) : 1;
}

void sks_chan_close_server(sks_chan *c)
{
    chan_ctl *k;

    if (c->map == NULL)
        return;
    k = ctl_of(c);
    atomic_fetch_or(&k->rep_word, CLOSED);
    futex_wake(&k->rep_word);
    munmap(c->map, SKS_CHAN_SIZE);
    c->map = NULL;
}

/* ---------------------------------------------------------------- the client's side */

int sks_chan_ask(int sock)
{
    return sks_frame_write(sock, (const uint8_t *)"", 0);
}

int sks_chan_take_offer(sks_chan *c, int sock, sks_buf *reply)
{
    static const uint8_t offer[] = "\0sks-shm1";
    struct stat st;
    int mfd = -1, r;

    memset(c, 0, sizeof(*c));
    r = sks_frame_read_fd(sock, reply, &mfd);
    if (r != 1) {
        if (mfd >= 0)
            close(mfd);
        return -1;
    }
    if (mfd < 0 || reply->len != sizeof(offer) - 1 || memcmp(reply->data, offer, reply->len) != 0) {
        if (mfd >= 0)
            close(mfd);
        return 0;
    }
    if (fstat(mfd, &st) != 0 || st.st_size < (off_t)SKS_CHAN_SIZE) {
        close(mfd);
        return -1;
    }
    c->map = mmap(NULL, SKS_CHAN_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    close(mfd);
    if (c->map == MAP_FAILED) {
        c->map = NULL;
        return -1;
    }
    /* A forked child must not inherit it: the connection and its rights are the parent's. */
    madvise(c->map, SKS_CHAN_SIZE, MADV_DONTFORK);
    spin_init(&c->spin, CLIENT_SPIN_MAX_NS);
    return 1;
}

/* Is sksd's end of the socket gone? */
static int peer_gone(int sock)
{
    struct pollfd pfd = { sock, POLLRDHUP, 0 };

    return poll(&pfd, 1, 0) == 1 && (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

/* Waits for sksd's answer to request seq: its rep_word, or CLOSED. */
static uint32_t wait_reply(sks_chan *c, chan_ctl *k, int sock, uint32_t seq, int *gone)
{
    uint32_t w = atomic_load(&k->rep_word);

    if ((w & SEQ_MASK) != seq && !(w & CLOSED))
        w = spin_while(&k->rep_word, w, spin_budget(&c->spin), &c->spin, &k->server_cpu, &k->taken_seq, seq);
    while ((w & SEQ_MASK) != seq && !(w & CLOSED)) {
        atomic_store(&k->client_asleep, 1);
        if (atomic_load(&k->rep_word) == w) {
            futex_wait(&k->rep_word, w, CLIENT_CHECK_NS);
            if (atomic_load(&k->rep_word) == w && peer_gone(sock)) {
                *gone = 1;
                return w;
            }
        }
        atomic_store(&k->client_asleep, 0);
        w = atomic_load(&k->rep_word);
    }
    return w;
}

int sks_chan_call(sks_chan *c, int sock, const uint8_t *req, size_t n, sks_buf *reply)
{
    chan_ctl *k = ctl_of(c);
    int via_socket = n > SKS_CHAN_SLOT, gone = 0;
    uint32_t seq, w, len;

    if (atomic_load(&k->rep_word) & CLOSED)
        return 0;
    seq = c->seq = ((c->seq + 1) & SEQ_MASK) ? (c->seq + 1) & SEQ_MASK : 1;
    if (!via_socket && n > 0)
        memcpy(request_slot(c), req, n);
    atomic_store_explicit(&k->req_len, via_socket ? VIA_SOCKET : (uint32_t)n, memory_order_relaxed);
    atomic_store_explicit(&k->client_cpu, my_cpu(), memory_order_relaxed);
    atomic_store(&k->req_seq, seq);
    if (atomic_exchange(&k->server_asleep, 0) != 0) {
        uint8_t bell = 0;
        if (send(sock, &bell, 1, MSG_NOSIGNAL) != 1)
            return atomic_load(&k->taken_seq) == seq ? -1 : 0;
    }
    if (via_socket && !sks_frame_write(sock, req, n))
        return -1;
    w = wait_reply(c, k, sock, seq, &gone);
    if ((w & SEQ_MASK) != seq)
        return atomic_load(&k->taken_seq) == seq ? -1 : 0;
    c->calls++;
    len = atomic_load_explicit(&k->rep_len, memory_order_relaxed);
    if (len == VIA_SOCKET)
        return sks_frame_read(sock, reply) == 1 ? 1 : -1;
    if (len > SKS_CHAN_SLOT)
        return -1;
    sks_buf_reset(reply);
    sks_buf_put(reply, "", 0);
    sks_buf_put(reply, reply_slot(c), len);
    return reply->failed ? -1 : 1;
}

void sks_chan_close_client(sks_chan *c)
{
    if (c->map != NULL)
        munmap(c->map, SKS_CHAN_SIZE);
    c->map = NULL;
}
