/*
 * The PC/SC link (transport/pcsc_link.h, docs/pcsc.md): pcsc-lite below, a card protocol
 * (a pcsc_app) above. One call is one exchange inside an exclusive transaction.
 *
 * pcsc-lite's SCardTransmit has no timeout and SCardCancel does not reach it, so every call
 * runs in the link's worker thread (one per link, kept for the link's life: a thread per call
 * cost more than the card's work) and the caller waits for it: each PC/SC operation (connect,
 * begin transaction, transmit) must finish within the timeout. When one does not, the caller
 * returns an error and leaves the worker with its own pcsc-lite context, which it releases
 * once pcsc-lite returns, and ends; the next call starts a new worker and opens a fresh
 * context.
 *
 * Recovery. A card reset (another application reset it: SCARD_W_RESET_CARD) that is reported
 * before the card answered any APDU of the call (pcscd reports it before it sends anything)
 * is recovered from at once: SCardReconnect, the protocol forgets its selection and PIN state
 * and SELECTs again, and the request is sent once more; the card cannot have carried out any
 * of it. A reset reported later, and every other PC/SC error (card removed, reader gone,
 * pcscd gone), drops the connection and reports it, naming the reader; the next call connects
 * again (reader choice, SELECT). A request whose reply was lost is not sent again: it may
 * have been carried out.
 *
 * Fork: pcscd, like sksd, judges a client by who connected, and a card connection in the
 * middle of a transaction belongs to one process. A forked child must not talk over its
 * parent's: a pthread_atfork child handler drops every link without a word to pcscd
 * (releasing would write on the parent's socket), and puts /dev/null in place of the
 * descriptors that pcsc-lite holds to pcscd, so nothing in the child can write to them. The
 * parent's worker threads do not exist in the child: it forgets them too, and its next call
 * starts a worker and establishes a context of its own.
 */
#include "pcsc_link.h"
#include "transport.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <PCSC/reader.h>
#include <PCSC/winscard.h>
#include <openssl/crypto.h>

#define DEFAULT_TIMEOUT_SECONDS 60.0
#define READER_NAME_MAX 256
#define MAX_APPS 4
#define SW_MORE 0x6100      /* 61xx: xx more bytes (00: 256 or more) */
#define SW_WRONG_LE 0x6C00  /* 6Cxx: send the command again with Le = xx */
#define INS_GET_RESPONSE 0xC0

/* One pcsc-lite context with the card connection made in it, and the application found. */
typedef struct {
    SCARDCONTEXT ctx;
    int has_ctx;
    SCARDHANDLE card;
    int has_card;
    DWORD protocol;
    char reader[READER_NAME_MAX];
    size_t reader_max; /* the reader's extended-length limit; 0: short APDUs only */
    const pcsc_app *app;
    void *app_state;
    uint8_t rapdu[PCSC_EXTENDED_MAX + 2];
    size_t rapdu_used; /* how much of rapdu holds card answers: wiped after each exchange */
} pcsc_conn;

struct pcsc_link {
    char want[READER_NAME_MAX]; /* a reader name or part of one; "" = the first with a card we know */
    double timeout;             /* seconds, for every PC/SC operation */
    const pcsc_app *apps[MAX_APPS];
    size_t napps;
    pcsc_conn *conn;            /* NULL: connect on the next call */
    char found[READER_NAME_MAX + 64]; /* the card last connected, for pcsc_link_describe */
    struct pcsc_worker *worker; /* NULL: start one on the next call */
    pthread_t worker_thread;
    struct pcsc_link *next;     /* in the list of open links (fork) */
};

/* One call, carried out by a worker thread. Whoever is last to let go of it frees it. */
typedef struct pcsc_card {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct timespec deadline; /* of the PC/SC operation in progress */
    double timeout;
    char doing[READER_NAME_MAX + 96]; /* that operation, for a timeout message */
    int finished, abandoned;
    pcsc_conn *conn;
    char want[READER_NAME_MAX];
    const pcsc_app *apps[MAX_APPS];
    size_t napps;
    int connect_only; /* no request: connect and SELECT */
    int closing;      /* no request: SELECT again on the open connection, then let go */
    uint8_t *req;
    size_t n;
    sks_buf reply;
    int ok;
    int lost;     /* the connection is gone: drop it */
    int reset;    /* ... because the card was reset */
    int answered; /* the card answered an APDU of this call */
    char err[1024];
} pcsc_job;

/* The thread that carries out a link's jobs. The link hands it one job at a time. */
typedef struct pcsc_worker {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pcsc_job *job; /* handed over, not yet taken */
    int quit;      /* the link closes: end the thread */
} pcsc_worker;

typedef struct {
    const uint8_t *data;
    size_t len;
    unsigned sw;
} rapdu;

/* ---- errors ---- */

static void job_verror(pcsc_job *j, const char *fmt, va_list ap)
{
    vsnprintf(j->err, sizeof(j->err), fmt, ap);
}

static void job_error(pcsc_job *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void job_error(pcsc_job *j, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    job_verror(j, fmt, ap);
    va_end(ap);
}

void pcsc_card_fail(pcsc_card *j, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    job_verror(j, fmt, ap);
    va_end(ap);
}

void pcsc_card_drop(pcsc_card *j, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    job_verror(j, fmt, ap);
    va_end(ap);
    j->lost = 1;
}

int pcsc_card_lost(const pcsc_card *j)
{
    return j->lost;
}

const char *pcsc_card_error(const pcsc_card *j)
{
    return j->err;
}

const char *pcsc_card_reader(const pcsc_card *j)
{
    return j->conn->reader;
}

size_t pcsc_card_reader_max(const pcsc_card *j)
{
    return j->conn->reader_max;
}

/* A PC/SC failure: the connection is dropped, so say what happened to card or reader. */
static int pcsc_failed(pcsc_job *j, LONG rv, const char *op)
{
    const char *r = j->conn->reader;

    j->lost = 1;
    switch (rv) {
    case SCARD_W_REMOVED_CARD:
    case SCARD_E_NO_SMARTCARD:
        if (strcmp(op, "SCardConnect") == 0)
            job_error(j, "no card in reader \"%s\"", r);
        else
            job_error(j, "card removed from reader \"%s\" (%s); the next call reconnects", r, op);
        break;
    case SCARD_W_RESET_CARD:
        j->reset = 1;
        job_error(j, "card reset: the card in reader \"%s\" was reset (%s); the next call reconnects and selects "
                  "the application again", r, op);
        break;
    case SCARD_W_UNPOWERED_CARD:
    case SCARD_W_UNRESPONSIVE_CARD:
    case SCARD_E_NOT_TRANSACTED: /* what a reader driver says when the card went away mid-APDU */
        job_error(j, "card removed or not answering in reader \"%s\" (%s: %s); the next call reconnects", r, op,
                  pcsc_stringify_error(rv));
        break;
    case SCARD_E_READER_UNAVAILABLE:
    case SCARD_E_UNKNOWN_READER:
        job_error(j, "reader \"%s\" is gone (%s); the next call looks for it again", r, op);
        break;
    case SCARD_E_NO_SERVICE:
    case SCARD_E_SERVICE_STOPPED:
    case SCARD_F_COMM_ERROR:
        job_error(j, "lost pcscd (%s on reader \"%s\": %s); the next call reconnects", op, r, pcsc_stringify_error(rv));
        break;
    default:
        job_error(j, "%s failed on reader \"%s\": %s (0x%08lX)", op, r, pcsc_stringify_error(rv), (unsigned long)rv);
    }
    return 0;
}

/* ---- the deadline: renewed before every PC/SC operation ---- */

static void deadline_after(struct timespec *ts, double seconds)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += (time_t)seconds;
    ts->tv_nsec += (long)((seconds - (double)(time_t)seconds) * 1e9);
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static void step(pcsc_job *j, const char *what, const char *reader)
{
    pthread_mutex_lock(&j->mu);
    deadline_after(&j->deadline, j->timeout);
    if (reader != NULL)
        snprintf(j->doing, sizeof(j->doing), "%s reader \"%s\"", what, reader);
    else
        snprintf(j->doing, sizeof(j->doing), "%s", what);
    pthread_mutex_unlock(&j->mu);
}

/* ---- APDUs ---- */

size_t pcsc_apdu_build(uint8_t *out, uint8_t cla, uint8_t ins, uint8_t p1, uint8_t p2, const uint8_t *data, size_t nc,
                       size_t ne, int extended)
{
    size_t p = 4;

    out[0] = cla;
    out[1] = ins;
    out[2] = p1;
    out[3] = p2;
    if (extended && (nc > 0 || ne > 0))
        out[p++] = 0;
    if (nc > 0) {
        if (extended)
            out[p++] = (uint8_t)(nc >> 8);
        out[p++] = (uint8_t)nc;
        memcpy(out + p, data, nc);
        p += nc;
    }
    if (ne > 0) {
        if (extended)
            out[p++] = (uint8_t)(ne >> 8); /* 65536 -> 00 00 */
        out[p++] = (uint8_t)ne;            /* 256 -> 00 */
    }
    return p;
}

static int transmit(pcsc_job *j, const uint8_t *apdu, size_t n, rapdu *r)
{
    pcsc_conn *c = j->conn;
    const SCARD_IO_REQUEST *pci = c->protocol == SCARD_PROTOCOL_T0 ? SCARD_PCI_T0 : SCARD_PCI_T1;
    DWORD len = sizeof(c->rapdu);
    LONG rv;

    step(j, "waiting for the card's answer in", c->reader);
    rv = SCardTransmit(c->card, pci, apdu, (DWORD)n, NULL, c->rapdu, &len);
    if (rv == SCARD_S_SUCCESS && len > c->rapdu_used)
        c->rapdu_used = len <= sizeof(c->rapdu) ? len : sizeof(c->rapdu);
    if (rv != SCARD_S_SUCCESS)
        return pcsc_failed(j, rv, "SCardTransmit");
    if (len < 2) {
        /* vpcd answers an APDU to a card that went away with nothing at all */
        j->lost = 1;
        job_error(j, "card removed or not answering in reader \"%s\" (no status word); the next call reconnects",
                  c->reader);
        return 0;
    }
    j->answered = 1;
    r->data = c->rapdu;
    r->len = len - 2;
    r->sw = ((unsigned)c->rapdu[len - 2] << 8) | c->rapdu[len - 1];
    return 1;
}

/* Where a short APDU keeps its Le byte; 0 if it is extended or has no Le. */
static size_t short_le_offset(const uint8_t *apdu, size_t n)
{
    if (n == 5)
        return 4; /* case 2 */
    if (n > 5 && apdu[4] != 0 && n == 6 + (size_t)apdu[4])
        return n - 1; /* case 4 */
    return 0;
}

/* 6Cxx: the card wants exactly xx as Le; the same short APDU once more with it. */
static int resend_with_le(pcsc_job *j, const uint8_t *apdu, size_t n, rapdu *r)
{
    uint8_t again[5 + 255 + 1];
    size_t at = short_le_offset(apdu, n);
    int ok;

    if (at == 0)
        return 1; /* nothing to correct: the protocol sees the 6Cxx */
    memcpy(again, apdu, n);
    again[at] = (uint8_t)(r->sw & 0xFF);
    ok = transmit(j, again, n, r);
    OPENSSL_cleanse(again, n); /* commands carry PINs */
    return ok;
}

/* Collects the response data: what came with the first answer, then GET RESPONSE while 61xx. */
static int read_response(pcsc_job *j, rapdu *r, int extended, sks_buf *out)
{
    pcsc_conn *c = j->conn;
    uint8_t apdu[8];
    size_t n, ne;

    for (;;) {
        if (out->len + r->len > SKS_FRAME_MAX) {
            job_error(j, "the card in reader \"%s\" sent a reply over %u bytes", c->reader, SKS_FRAME_MAX);
            return 0;
        }
        sks_buf_put(out, r->data, r->len);
        if ((r->sw & 0xFF00) != SW_MORE)
            break;
        if (extended)
            ne = c->reader_max < PCSC_EXTENDED_MAX ? c->reader_max : PCSC_EXTENDED_MAX;
        else
            ne = (r->sw & 0xFF) ? (r->sw & 0xFF) : PCSC_SHORT_MAX_RESPONSE;
        n = pcsc_apdu_build(apdu, 0x00, INS_GET_RESPONSE, 0, 0, NULL, 0, ne, extended);
        if (!transmit(j, apdu, n, r))
            return 0;
        /* a card announcing more without sending any would keep us here for ever */
        if (r->len == 0 && (r->sw & 0xFF00) == SW_MORE) {
            job_error(j, "the card in reader \"%s\" answered %04X to GET RESPONSE without sending data", c->reader,
                      r->sw);
            return 0;
        }
    }
    if (out->failed) {
        job_error(j, "out of memory reading the card's answer");
        return 0;
    }
    return 1;
}

/* The card's answers (decrypted blocks, shared secrets) are wiped from the connection's
 * buffer once they are in resp, so none outlives the exchange that read it. */
int pcsc_card_exchange(pcsc_card *j, const uint8_t *apdu, size_t n, int extended, sks_buf *resp, unsigned *sw)
{
    pcsc_conn *c = j->conn;
    rapdu r;
    int ok;

    sks_buf_reset(resp);
    ok = transmit(j, apdu, n, &r) && ((r.sw & 0xFF00) != SW_WRONG_LE || resend_with_le(j, apdu, n, &r))
         && read_response(j, &r, extended, resp);
    if (ok)
        *sw = r.sw;
    OPENSSL_cleanse(c->rapdu, c->rapdu_used);
    c->rapdu_used = 0;
    return ok;
}

/* ---- transactions ---- */

/* The whole multi-APDU exchange under an exclusive transaction, so that no other
 * application's APDUs land between our chained parts, GET RESPONSEs, or a VERIFY and the
 * command it allows. */
static int transaction(pcsc_job *j, int (*body)(pcsc_job *))
{
    pcsc_conn *c = j->conn;
    LONG rv;
    int ok;

    step(j, "waiting for exclusive access to the card in", c->reader);
    rv = SCardBeginTransaction(c->card);
    if (rv != SCARD_S_SUCCESS)
        return pcsc_failed(j, rv, "SCardBeginTransaction");
    ok = body(j);
    step(j, "ending the transaction with the card in", c->reader);
    rv = SCardEndTransaction(c->card, SCARD_LEAVE_CARD);
    if (ok && rv != SCARD_S_SUCCESS)
        return pcsc_failed(j, rv, "SCardEndTransaction");
    return ok;
}

static int call_app(pcsc_job *j)
{
    pcsc_conn *c = j->conn;

    sks_buf_reset(&j->reply);
    return c->app->call(j, c->app_state, j->req, j->n, &j->reply);
}

static int select_app(pcsc_job *j)
{
    return j->conn->app->select(j, j->conn->app_state);
}

/* Adds one problem (its message names the reader) to a list for the final error; what does
 * not fit is cut off. */
static void note_problem(char *all, size_t cap, const char *problem)
{
    size_t used = strlen(all), n = strlen(problem);

    if (used > 0 && used + 2 < cap) {
        memcpy(all + used, "; ", 2);
        used += 2;
    }
    if (n > cap - used - 1)
        n = cap - used - 1;
    memcpy(all + used, problem, n);
    all[used + n] = '\0';
}

/* Each application in turn, the first whose SELECT the card answers is the card's. */
static int find_app(pcsc_job *j)
{
    pcsc_conn *c = j->conn;
    char problems[sizeof(j->err)] = "";
    size_t i;

    for (i = 0; i < j->napps; i++) {
        const pcsc_app *app = j->apps[i];
        void *state = app->state_new();

        if (state == NULL) {
            job_error(j, "out of memory");
            return 0;
        }
        c->app = app;
        c->app_state = state;
        if (app->select(j, state))
            return 1;
        app->state_free(state);
        c->app = NULL;
        c->app_state = NULL;
        if (j->lost)
            return 0; /* the link failed: no other application will answer either */
        note_problem(problems, sizeof(problems), j->err);
    }
    memmove(j->err, problems, strlen(problems) + 1);
    return 0;
}

/* ---- connecting ---- */

static void conn_free(pcsc_conn *c)
{
    if (c == NULL)
        return;
    if (c->app != NULL)
        c->app->state_free(c->app_state);
    if (c->has_card)
        SCardDisconnect(c->card, SCARD_LEAVE_CARD);
    if (c->has_ctx)
        SCardReleaseContext(c->ctx);
    OPENSSL_clear_free(c, sizeof(*c));
}

/* The reader's limit for APDU data from PC/SC part 10 dwMaxAPDUDataSize (0: short APDUs
 * only); -1 if the reader does not say. */
static long reader_reported_max(pcsc_conn *c)
{
    uint8_t buf[256];
    DWORD got = 0, ioctl = 0, i;

    if (SCardControl(c->card, CM_IOCTL_GET_FEATURE_REQUEST, NULL, 0, buf, sizeof(buf), &got) != SCARD_S_SUCCESS)
        return -1;
    for (i = 0; i + 6 <= got; i += 6)
        if (buf[i] == FEATURE_GET_TLV_PROPERTIES && buf[i + 1] == 4)
            ioctl = ((DWORD)buf[i + 2] << 24) | ((DWORD)buf[i + 3] << 16) | ((DWORD)buf[i + 4] << 8) | buf[i + 5];
    if (ioctl == 0 || SCardControl(c->card, ioctl, NULL, 0, buf, sizeof(buf), &got) != SCARD_S_SUCCESS)
        return -1;
    for (i = 0; i + 2 <= got && i + 2 + buf[i + 1] <= got; i += 2 + buf[i + 1])
        if (buf[i] == PCSCv2_PART10_PROPERTY_dwMaxAPDUDataSize && buf[i + 1] == 4)
            return (long)buf[i + 2] | ((long)buf[i + 3] << 8) | ((long)buf[i + 4] << 16)
                   | ((long)buf[i + 5] << 24); /* TLV properties are little-endian */
    return -1;
}

/*
 * How much APDU data the reader carries. A reader that does not report it (vpcd in Debian 12,
 * many TPDU-level readers) is taken to carry whatever the card takes; $SKS_PCSC_APDU=short
 * forces short APDUs for a reader that neither says nor copes.
 */
static size_t reader_max_apdu_data(pcsc_conn *c)
{
    const char *force = getenv("SKS_PCSC_APDU");
    long max;

    if (force != NULL && strcmp(force, "short") == 0)
        return 0;
    max = reader_reported_max(c);
    return max < 0 ? PCSC_EXTENDED_MAX : (size_t)max;
}

/* Connects to the card in one reader and finds one of the applications on it. */
static int try_reader(pcsc_job *j, const char *reader)
{
    pcsc_conn *c = j->conn;
    LONG rv;

    snprintf(c->reader, sizeof(c->reader), "%s", reader);
    step(j, "connecting to the card in", reader);
    rv = SCardConnect(c->ctx, reader, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1, &c->card,
                      &c->protocol);
    if (rv != SCARD_S_SUCCESS)
        return pcsc_failed(j, rv, "SCardConnect");
    c->has_card = 1;
    step(j, "asking about APDU sizes:", reader);
    c->reader_max = reader_max_apdu_data(c);
    if (!transaction(j, find_app)) {
        SCardDisconnect(c->card, SCARD_LEAVE_CARD);
        c->has_card = 0;
        return 0;
    }
    j->lost = 0; /* earlier readers' failures do not concern this one */
    j->reset = 0;
    return 1;
}

/* The readers, as pcsc-lite's multi-string (names separated by NUL, an empty name last). */
static char *list_readers(pcsc_job *j)
{
    DWORD len = 0;
    char *names;
    LONG rv = SCardListReaders(j->conn->ctx, NULL, NULL, &len);

    if (rv == SCARD_S_SUCCESS && (names = OPENSSL_zalloc(len + 2)) != NULL) {
        rv = SCardListReaders(j->conn->ctx, NULL, names, &len);
        if (rv == SCARD_S_SUCCESS)
            return names;
        OPENSSL_free(names);
    }
    if (rv == SCARD_E_NO_READERS_AVAILABLE)
        job_error(j, "no PC/SC reader found (is pcscd running with a reader driver?)");
    else
        job_error(j, "cannot list the PC/SC readers: %s", pcsc_stringify_error(rv));
    return NULL;
}

/* A reader whose name is exactly the one asked for wins over names that only contain it. */
static int exact_match_exists(const char *names, const char *want)
{
    const char *p;

    for (p = names; *p; p += strlen(p) + 1)
        if (strcmp(p, want) == 0)
            return 1;
    return 0;
}

/* "the SKS card or the SmartCard-HSM application", for the error when no reader has one. */
static void app_names(const pcsc_job *j, char *out, size_t cap)
{
    size_t i, used = 0;

    out[0] = '\0';
    for (i = 0; i < j->napps && used < cap; i++)
        used += (size_t)snprintf(out + used, cap - used, "%s%s", i == 0 ? "" : " or ", j->apps[i]->name);
}

/* Tries the readers that match in order; the first whose card has one of the applications. */
static int choose_reader(pcsc_job *j, const char *names)
{
    char problems[sizeof(j->err)] = "", wanted[128];
    int exact = j->want[0] && exact_match_exists(names, j->want), tried = 0;
    const char *p;

    for (p = names; *p; p += strlen(p) + 1) {
        if (j->want[0] && (exact ? strcmp(p, j->want) != 0 : strstr(p, j->want) == NULL))
            continue;
        tried++;
        if (try_reader(j, p))
            return 1;
        note_problem(problems, sizeof(problems), j->err);
    }
    app_names(j, wanted, sizeof(wanted));
    if (!tried)
        job_error(j, "no PC/SC reader named like \"%s\"", j->want);
    else if (tried == 1)
        memmove(j->err, problems, strlen(problems) + 1);
    else
        job_error(j, "no reader with an %s: %s", wanted, problems);
    return 0;
}

static int conn_open(pcsc_job *j)
{
    pcsc_conn *c = OPENSSL_zalloc(sizeof(*c));
    char *names;
    LONG rv;
    int ok;

    if (c == NULL) {
        job_error(j, "out of memory");
        return 0;
    }
    j->conn = c;
    step(j, "connecting to pcscd", NULL);
    rv = SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &c->ctx);
    if (rv != SCARD_S_SUCCESS) {
        job_error(j, "cannot reach pcscd: %s", pcsc_stringify_error(rv));
        return 0;
    }
    c->has_ctx = 1;
    if ((names = list_readers(j)) == NULL)
        return 0;
    ok = choose_reader(j, names);
    OPENSSL_free(names);
    return ok;
}

/* After a reset: the same card in the same reader, its application selected again. */
static int conn_reconnect(pcsc_job *j)
{
    pcsc_conn *c = j->conn;
    LONG rv;

    j->lost = 0;
    j->reset = 0;
    step(j, "reconnecting to the card in", c->reader);
    rv = SCardReconnect(c->card, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1, SCARD_LEAVE_CARD,
                        &c->protocol);
    if (rv != SCARD_S_SUCCESS)
        return pcsc_failed(j, rv, "SCardReconnect");
    c->app->forget(c->app_state);
    if (!transaction(j, select_app)) {
        j->lost = 1; /* the card no longer answers as it did: start afresh next time */
        return 0;
    }
    return 1;
}

/* One request; a reset that came before the card answered anything of it is recovered from
 * here, and the request sent once more. */
static int call_recovering(pcsc_job *j)
{
    j->answered = 0;
    if (transaction(j, call_app))
        return 1;
    if (!j->reset || j->answered)
        return 0;
    if (!conn_reconnect(j))
        return 0;
    j->answered = 0;
    return transaction(j, call_app);
}

/* ---- the worker thread and the caller's wait ---- */

static void job_free(pcsc_job *j)
{
    conn_free(j->conn);
    if (j->req != NULL)
        OPENSSL_clear_free(j->req, j->n);
    sks_buf_free(&j->reply); /* wiped: replies carry decrypted data */
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    OPENSSL_free(j);
}

/* Carries out one job; 1 if the caller gave up waiting for it (it is then the worker's). */
static int job_run(pcsc_job *j)
{
    int abandoned;

    if (j->closing)
        j->ok = transaction(j, select_app);
    else if (j->conn == NULL && !conn_open(j))
        j->lost = 1;
    else if (j->connect_only || call_recovering(j))
        j->ok = 1;
    if (j->lost) {
        step(j, "closing the connection to", j->conn ? j->conn->reader : "");
        conn_free(j->conn); /* here, so a caller never waits on a pcscd that hangs */
        j->conn = NULL;
    }
    pthread_mutex_lock(&j->mu);
    j->finished = 1;
    abandoned = j->abandoned;
    pthread_cond_signal(&j->cv);
    pthread_mutex_unlock(&j->mu);
    return abandoned;
}

static void worker_free(pcsc_worker *w)
{
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    OPENSSL_free(w);
}

/* The link's worker: takes the jobs handed to it one at a time, until the link closes. After
 * a job its caller gave up on, the link has a new worker: this one frees the job and itself. */
static void *worker_main(void *arg)
{
    pcsc_worker *w = arg;
    pcsc_job *j;

    for (;;) {
        pthread_mutex_lock(&w->mu);
        while (w->job == NULL && !w->quit)
            pthread_cond_wait(&w->cv, &w->mu);
        j = w->job;
        w->job = NULL;
        pthread_mutex_unlock(&w->mu);
        if (j == NULL)
            return NULL; /* the link closes and joins this thread */
        if (job_run(j)) {
            job_free(j);
            worker_free(w);
            return NULL;
        }
    }
}

static pcsc_job *job_new(pcsc_link *l, const uint8_t *req, size_t n)
{
    pcsc_job *j = OPENSSL_zalloc(sizeof(*j));
    pthread_condattr_t ca;

    if (j == NULL)
        return NULL;
    /* A copy: after a timeout the caller's buffer is gone while the worker may still send it. */
    if (n > 0 && (j->req = OPENSSL_memdup(req, n)) == NULL) {
        OPENSSL_free(j);
        return NULL;
    }
    j->n = n;
    j->timeout = l->timeout;
    memcpy(j->want, l->want, sizeof(j->want));
    memcpy(j->apps, l->apps, sizeof(j->apps));
    j->napps = l->napps;
    sks_buf_init(&j->reply);
    pthread_mutex_init(&j->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* deadlines must not jump with the wall clock */
    pthread_cond_init(&j->cv, &ca);
    pthread_condattr_destroy(&ca);
    deadline_after(&j->deadline, j->timeout);
    return j;
}

static int deadline_passed(const struct timespec *d)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > d->tv_sec || (now.tv_sec == d->tv_sec && now.tv_nsec >= d->tv_nsec);
}

/* Waits for the worker; 0 if the operation in progress outlived its deadline (the job is
 * then the worker's to free). Called with j->mu held; returns with it released. */
static int wait_for(pcsc_job *j, char *err, size_t errlen)
{
    while (!j->finished) {
        if (deadline_passed(&j->deadline)) {
            j->abandoned = 1;
            snprintf(err, errlen, "timed out after %g s %s; the next call reconnects", j->timeout, j->doing);
            pthread_mutex_unlock(&j->mu);
            return 0;
        }
        pthread_cond_timedwait(&j->cv, &j->mu, &j->deadline);
    }
    pthread_mutex_unlock(&j->mu);
    return 1;
}

/* The link's worker thread, started on the link's first call and after a timeout. It blocks
 * every signal: it lives as long as the link, and a signal meant for the application (nginx's
 * master waits for its signals in sigsuspend) must not be handled on it. */
static int start_worker(pcsc_link *l)
{
    pcsc_worker *w = OPENSSL_zalloc(sizeof(*w));
    sigset_t all, before;
    int rc;

    if (w == NULL) {
        errno = ENOMEM;
        return 0;
    }
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &before); /* the new thread inherits the mask */
    rc = pthread_create(&l->worker_thread, NULL, worker_main, w);
    pthread_sigmask(SIG_SETMASK, &before, NULL);
    if (rc != 0) {
        worker_free(w);
        errno = rc;
        return 0;
    }
    l->worker = w;
    return 1;
}

static void hand_over(pcsc_worker *w, pcsc_job *j)
{
    pthread_mutex_lock(&w->mu);
    w->job = j;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* The worker is stuck in a job its caller gave up on: it frees itself when pcsc-lite
 * returns, and the next call starts another. */
static void abandon_worker(pcsc_link *l)
{
    pthread_detach(l->worker_thread);
    l->worker = NULL;
}

/* Ends an idle worker (the link closes). */
static void stop_worker(pcsc_link *l)
{
    pcsc_worker *w = l->worker;

    if (w == NULL)
        return;
    pthread_mutex_lock(&w->mu);
    w->quit = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(l->worker_thread, NULL);
    worker_free(w);
    l->worker = NULL;
}

/* Takes the connection back from a job that ran to its end, and remembers what it reached. */
static void take_back(pcsc_link *l, pcsc_job *j)
{
    l->conn = j->conn;
    j->conn = NULL;
    if (l->conn != NULL && l->conn->app != NULL)
        snprintf(l->found, sizeof(l->found), "%s in reader \"%s\"", l->conn->app->name, l->conn->reader);
}

/* Hands the job and the connection to a worker and waits. 1 if the job ran to its end (its
 * outcome in j->ok, j->err copied to err); 0 if not, and then j is no longer the caller's. */
static int run_job(pcsc_link *l, pcsc_job *j, char *err, size_t errlen)
{
    if (l->worker == NULL && !start_worker(l)) {
        job_free(j);
        snprintf(err, errlen, "cannot start a thread: %s", strerror(errno));
        return 0;
    }
    j->conn = l->conn; /* the worker has the connection while it works */
    l->conn = NULL;
    pthread_mutex_lock(&j->mu);
    hand_over(l->worker, j);
    if (!wait_for(j, err, errlen)) {
        abandon_worker(l);
        return 0;
    }
    take_back(l, j);
    if (!j->ok)
        snprintf(err, errlen, "%s", j->err);
    return 1;
}

/* ---- fork: the child lets go of the parent's connections ---- */

static pthread_mutex_t open_lock = PTHREAD_MUTEX_INITIALIZER;
static pcsc_link *open_list;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/* pcscd's socket, as pcsc-lite finds it. */
static const char *pcscd_socket_path(void)
{
    const char *p = secure_getenv("PCSCLITE_CSOCK_NAME");

    return p != NULL && *p ? p : "/run/pcscd/pcscd.comm";
}

/* Puts /dev/null in place of every descriptor connected to pcscd's socket. */
static void blank_pcscd_sockets(void)
{
    const char *path = pcscd_socket_path();
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;

    while (null >= 0 && d != NULL && (e = readdir(d)) != NULL) {
        struct sockaddr_un sa;
        socklen_t len = sizeof(sa);
        int fd = atoi(e->d_name);
        if (e->d_name[0] == '.' || fd == dirfd(d) || fd == null)
            continue;
        memset(&sa, 0, sizeof(sa));
        if (getpeername(fd, (struct sockaddr *)&sa, &len) == 0 && sa.sun_family == AF_UNIX
            && strncmp(sa.sun_path, path, sizeof(sa.sun_path)) == 0)
            dup3(null, fd, O_CLOEXEC);
    }
    if (d != NULL)
        closedir(d);
    if (null >= 0)
        close(null);
}

static void before_fork(void)
{
    pthread_mutex_lock(&open_lock);
}

static void parent_after_fork(void)
{
    pthread_mutex_unlock(&open_lock);
}

static void child_after_fork(void)
{
    pcsc_link *l;

    for (l = open_list; l != NULL; l = l->next) {
        l->conn = NULL;   /* abandoned: the parent's, never to be used or released here */
        l->worker = NULL; /* its thread is the parent's: the child's next call starts its own */
    }
    if (open_list != NULL)
        blank_pcscd_sockets();
    pthread_mutex_init(&open_lock, NULL);
}

static void register_atfork(void)
{
    pthread_atfork(before_fork, parent_after_fork, child_after_fork);
}

static void list_add(pcsc_link *l)
{
    pthread_once(&atfork_once, register_atfork);
    pthread_mutex_lock(&open_lock);
    l->next = open_list;
    open_list = l;
    pthread_mutex_unlock(&open_lock);
}

static void list_remove(pcsc_link *l)
{
    pcsc_link **q;

    pthread_mutex_lock(&open_lock);
    for (q = &open_list; *q != NULL && *q != l; q = &(*q)->next)
        ;
    if (*q == l)
        *q = l->next;
    pthread_mutex_unlock(&open_lock);
}

/* ---- the link's interface ---- */

int pcsc_link_call(pcsc_link *l, const uint8_t *req, size_t n, sks_buf *reply, char *err, size_t errlen)
{
    pcsc_job *j = job_new(l, req, n);
    int ok;

    if (j == NULL) {
        snprintf(err, errlen, "out of memory");
        return 0;
    }
    if (!run_job(l, j, err, errlen))
        return 0;
    ok = j->ok;
    if (ok) {
        sks_buf_reset(reply);
        sks_buf_put(reply, j->reply.data, j->reply.len);
        if (reply->failed) {
            snprintf(err, errlen, "out of memory");
            ok = 0;
        }
    }
    job_free(j);
    return ok;
}

const char *pcsc_link_describe(pcsc_link *l)
{
    return l->found;
}

/*
 * A card's PIN verification belongs to the card, not to a connection: left as it is, the next
 * process to reach the card (any local user pcscd serves) would use our verified PIN without
 * knowing it. Selecting the application again ends it; bounded by the timeout like any call.
 */
static void end_verification(pcsc_link *l)
{
    pcsc_job *j;
    char err[256];

    if (l->conn == NULL || l->conn->app == NULL || (j = job_new(l, NULL, 0)) == NULL)
        return;
    j->closing = 1;
    if (run_job(l, j, err, sizeof(err)))
        job_free(j);
}

void pcsc_link_close(pcsc_link *l)
{
    list_remove(l);
    end_verification(l); /* through the worker, so before it stops */
    stop_worker(l);
    conn_free(l->conn);
    OPENSSL_free(l);
}

/* $SKS_PCSC_TIMEOUT: seconds for each PC/SC operation (default 60, for slow key generation). */
static double configured_timeout(void)
{
    const char *s = getenv("SKS_PCSC_TIMEOUT");
    char *end;
    double v;

    if (s == NULL || *s == '\0')
        return DEFAULT_TIMEOUT_SECONDS;
    v = strtod(s, &end);
    return (*end == '\0' && v > 0 && v < 1e6) ? v : DEFAULT_TIMEOUT_SECONDS;
}

pcsc_link *pcsc_link_open(const char *reader, const pcsc_app *const *apps, size_t napps, char *err, size_t errlen)
{
    pcsc_link *l;
    pcsc_job *j;
    int ok;

    if (strlen(reader) >= sizeof(l->want)) {
        snprintf(err, errlen, "reader name too long: %s", reader);
        return NULL;
    }
    if (napps == 0 || napps > MAX_APPS || (l = OPENSSL_zalloc(sizeof(*l))) == NULL) {
        snprintf(err, errlen, napps == 0 || napps > MAX_APPS ? "no card application to look for" : "out of memory");
        return NULL;
    }
    memcpy(l->want, reader, strlen(reader) + 1);
    memcpy(l->apps, apps, napps * sizeof(*apps));
    l->napps = napps;
    l->timeout = configured_timeout();
    list_add(l);
    /* Connect and SELECT now, so that a wrong reader or a missing card is reported where the
     * device was configured. */
    if ((j = job_new(l, NULL, 0)) == NULL) {
        snprintf(err, errlen, "out of memory");
        pcsc_link_close(l);
        return NULL;
    }
    j->connect_only = 1;
    ok = run_job(l, j, err, errlen);
    if (ok) {
        ok = j->ok;
        job_free(j);
    }
    if (!ok) {
        pcsc_link_close(l);
        return NULL;
    }
    return l;
}
