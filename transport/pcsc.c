/*
 * The PC/SC transport: the wire format in APDUs to an SKS card through pcsc-lite
 * (docs/pcsc.md). One request is one exchange inside an exclusive transaction: the request
 * in one extended-length APDU when it fits, else in a chain of parts; the reply in the
 * response data, with GET RESPONSE while the card says 61xx.
 *
 * pcsc-lite's SCardTransmit has no timeout and SCardCancel does not reach it, so every call
 * runs in a worker thread and the caller waits for it: each PC/SC operation (connect, begin
 * transaction, transmit) must finish within the timeout. When one does not, the caller
 * returns an error and leaves the worker with its own pcsc-lite context, which it releases
 * once pcsc-lite returns; the next call opens a fresh context.
 *
 * Any PC/SC error (card removed or reset, reader gone, pcscd gone) drops the connection
 * and reports it; the next call connects again and SELECTs the application again.
 *
 * Fork: pcscd, like sksd, judges a client by who connected, and a card connection in the
 * middle of a transaction belongs to one process. A forked child must not talk over its
 * parent's: a pthread_atfork child handler drops every link of this transport without a
 * word to pcscd (releasing would write on the parent's socket), and puts /dev/null in place
 * of the descriptors that pcsc-lite holds to pcscd, so nothing in the child can write to
 * them. The child's next call establishes a context of its own.
 */
#include "transport.h"
#include "pcsc_apdu.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
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
#define SHORT_MAX_COMMAND 255
#define SHORT_MAX_RESPONSE 256
#define EXTENDED_MAX 65536

static const uint8_t SKS_AID[SKS_AID_LEN] = { SKS_AID_BYTES };

/* One pcsc-lite context with the card connection made in it. */
typedef struct {
    SCARDCONTEXT ctx;
    int has_ctx;
    SCARDHANDLE card;
    int has_card;
    DWORD protocol;
    char reader[READER_NAME_MAX];
    size_t reader_max;   /* the reader's extended-length limit; 0: short APDUs only */
    int extended;        /* both reader and card take extended-length APDUs */
    size_t max_command;  /* command data per APDU */
    size_t max_response; /* Ne we ask for */
    uint8_t capdu[4 + 3 + 65535 + 2];
    uint8_t rapdu[EXTENDED_MAX + 2];
} pcsc_link;

typedef struct pcsc_transport {
    sks_transport base;
    char want[READER_NAME_MAX]; /* a reader name or part of one; "" = the first with an SKS card */
    double timeout;             /* seconds, for every PC/SC operation */
    pcsc_link *link;            /* NULL: connect on the next call */
    struct pcsc_transport *next; /* in the list of open transports (fork) */
} pcsc_transport;

/* One call, carried out by a worker thread. Whoever is last to let go of it frees it. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct timespec deadline; /* of the PC/SC operation in progress */
    double timeout;
    char doing[READER_NAME_MAX + 96]; /* that operation, for a timeout message */
    int finished, abandoned;
    pcsc_link *link;
    char want[READER_NAME_MAX];
    int connect_only; /* no request: connect and SELECT */
    uint8_t *req;
    size_t n;
    sks_buf reply;
    int ok, lost;
    char err[1024];
} pcsc_job;

typedef struct {
    const uint8_t *data;
    size_t len;
    unsigned sw;
} rapdu;

/* ---- errors ---- */

static void job_error(pcsc_job *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void job_error(pcsc_job *j, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(j->err, sizeof(j->err), fmt, ap);
    va_end(ap);
}

/* A PC/SC failure: the connection is dropped, so say what happened to card or reader. */
static int pcsc_failed(pcsc_job *j, LONG rv, const char *op)
{
    const char *r = j->link->reader;

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
        job_error(j, "card reset: the card in reader \"%s\" was reset (%s); the next call reconnects and selects "
                  "the SKS application again", r, op);
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

static const char *sw_meaning(unsigned sw)
{
    switch (sw) {
    case SKS_SW_WRONG_LENGTH:
        return "wrong length";
    case SKS_SW_CHANNEL_UNSUPPORTED:
        return "logical channel not supported";
    case SKS_SW_SM_UNSUPPORTED:
        return "secure messaging not supported";
    case SKS_SW_CHAIN_UNSUPPORTED:
        return "command chaining not supported";
    case SKS_SW_NOT_SELECTED:
        return "conditions of use not satisfied: SKS application not selected, or no response pending";
    case SKS_SW_WRONG_DATA:
        return "wrong data";
    case SKS_SW_NOT_FOUND:
        return "no SKS application on the card";
    case SKS_SW_TOO_LARGE:
        return "request too large for the card";
    case SKS_SW_WRONG_P1P2:
        return "wrong P1/P2";
    case SKS_SW_INS_UNSUPPORTED:
        return "instruction not supported";
    case SKS_SW_CLA_UNSUPPORTED:
        return "class not supported";
    case SKS_SW_INTERNAL:
        return "the card could not form a reply";
    default:
        return (sw & 0xFF00) == 0x6C00 ? "wrong Le" : "unexpected status";
    }
}

static int sw_failed(pcsc_job *j, unsigned sw, const char *what)
{
    job_error(j, "the card in reader \"%s\" answered %04X (%s) to %s", j->link->reader, sw, sw_meaning(sw), what);
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

/* Encodes a command APDU: short or extended, data and Ne optional (Ne 256/65536 as 00/0000). */
static size_t build_apdu(uint8_t *out, uint8_t cla, uint8_t ins, const uint8_t *data, size_t nc, size_t ne,
                         int extended)
{
    size_t p = 4;

    out[0] = cla;
    out[1] = ins;
    out[2] = 0;
    out[3] = 0;
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
    pcsc_link *l = j->link;
    const SCARD_IO_REQUEST *pci = l->protocol == SCARD_PROTOCOL_T0 ? SCARD_PCI_T0 : SCARD_PCI_T1;
    DWORD len = sizeof(l->rapdu);
    LONG rv;

    step(j, "waiting for the card's answer in", l->reader);
    rv = SCardTransmit(l->card, pci, apdu, (DWORD)n, NULL, l->rapdu, &len);
    if (rv != SCARD_S_SUCCESS)
        return pcsc_failed(j, rv, "SCardTransmit");
    if (len < 2) {
        /* vpcd answers an APDU to a card that went away with nothing at all */
        j->lost = 1;
        job_error(j, "card removed or not answering in reader \"%s\" (no status word); the next call reconnects",
                  l->reader);
        return 0;
    }
    r->data = l->rapdu;
    r->len = len - 2;
    r->sw = ((unsigned)l->rapdu[len - 2] << 8) | l->rapdu[len - 1];
    return 1;
}

/* Collects the response data: what came with the first answer, then GET RESPONSE while 61xx. */
static int read_response(pcsc_job *j, rapdu *r, sks_buf *out, const char *what)
{
    pcsc_link *l = j->link;
    uint8_t apdu[8];
    size_t n, ne;

    sks_buf_reset(out);
    for (;;) {
        if (out->len + r->len > SKS_FRAME_MAX) {
            job_error(j, "the card in reader \"%s\" sent a reply over %u bytes", l->reader, SKS_FRAME_MAX);
            return 0;
        }
        sks_buf_put(out, r->data, r->len);
        if ((r->sw & 0xFF00) != SKS_SW_MORE)
            break;
        ne = l->extended ? l->max_response : ((r->sw & 0xFF) ? (r->sw & 0xFF) : 256);
        n = build_apdu(apdu, SKS_CLA_ISO, SKS_INS_GET_RESPONSE, NULL, 0, ne, l->extended);
        if (!transmit(j, apdu, n, r))
            return 0;
        /* a card announcing more without sending any would keep us here for ever */
        if (r->len == 0 && (r->sw & 0xFF00) == SKS_SW_MORE)
            return sw_failed(j, r->sw, "GET RESPONSE (no data, yet more announced)");
    }
    if (r->sw != SKS_SW_OK)
        return sw_failed(j, r->sw, what);
    if (out->failed) {
        job_error(j, "out of memory reading the reply");
        return 0;
    }
    return 1;
}

/* ---- SELECT ---- */

static size_t get_uint32(const uint8_t *p)
{
    return ((size_t)p[0] << 24) | ((size_t)p[1] << 16) | ((size_t)p[2] << 8) | p[3];
}

/* Sets the APDU sizes from what the reader and the card each allow. */
static void set_limits(pcsc_link *l, int card_extended, size_t card_cmd, size_t card_resp)
{
    size_t max = l->reader_max;

    l->extended = card_extended && max > SHORT_MAX_RESPONSE && card_cmd > SHORT_MAX_COMMAND
                  && card_resp > SHORT_MAX_RESPONSE;
    if (!l->extended) {
        l->max_command = SHORT_MAX_COMMAND;
        l->max_response = SHORT_MAX_RESPONSE;
        return;
    }
    l->max_command = card_cmd < max ? card_cmd : max;
    if (l->max_command > 65535)
        l->max_command = 65535;
    /* Ne may exceed what the card sends at once: it then says 61xx and we GET RESPONSE */
    l->max_response = max < EXTENDED_MAX ? max : EXTENDED_MAX;
}

/* Takes the card's limits from its SELECT answer (docs/pcsc.md). */
static int apply_select_info(pcsc_job *j, const sks_buf *info)
{
    const uint8_t *d = info->data;

    if (info->len < SKS_SELECT_RESPONSE_LEN || d[0] < SKS_SELECT_VERSION) {
        job_error(j, "the card in reader \"%s\" answered SELECT with %zu bytes, not an SKS application",
                  j->link->reader, info->len);
        return 0;
    }
    set_limits(j->link, (d[1] & SKS_SELECT_FLAG_EXTENDED) != 0, get_uint32(d + 2), get_uint32(d + 6));
    return 1;
}

/* SELECT is a short APDU: every reader and card takes it, and it says what else they take. */
static int select_application(pcsc_job *j)
{
    uint8_t apdu[16];
    size_t n;
    rapdu r;
    sks_buf info;
    int ok;

    apdu[0] = SKS_CLA_ISO;
    apdu[1] = SKS_INS_SELECT;
    apdu[2] = 0x04; /* by DF name */
    apdu[3] = 0x00; /* first occurrence, return data */
    apdu[4] = SKS_AID_LEN;
    memcpy(apdu + 5, SKS_AID, SKS_AID_LEN);
    apdu[5 + SKS_AID_LEN] = 0x00; /* Le 256 */
    n = 6 + SKS_AID_LEN;
    if (!transmit(j, apdu, n, &r))
        return 0;
    sks_buf_init(&info);
    set_limits(j->link, 0, 0, 0); /* until the card has said more: GET RESPONSE in short APDUs */
    ok = read_response(j, &r, &info, "SELECT of the SKS application") && apply_select_info(j, &info);
    sks_buf_free(&info);
    return ok;
}

/* ---- one request ---- */

/* Sends one part of the request: CALL with the chaining bit unless it is the last. */
static int send_part(pcsc_job *j, size_t off, size_t part, int last, rapdu *r)
{
    pcsc_link *l = j->link;
    static const uint8_t none;
    size_t n = build_apdu(l->capdu, (uint8_t)(SKS_CLA_PROPRIETARY | (last ? 0 : SKS_CLA_CHAIN)), SKS_INS_CALL,
                          part ? j->req + off : &none, part, last ? l->max_response : 0, l->extended);
    int ok = transmit(j, l->capdu, n, r);

    OPENSSL_cleanse(l->capdu, n); /* requests carry PINs */
    return ok;
}

/* Sends the request: one APDU if it fits, else a chain of parts as large as allowed. */
static int send_request(pcsc_job *j, rapdu *r)
{
    size_t off = 0;
    int reselected = 0;

    for (;;) {
        size_t chunk = j->link->max_command;
        size_t part = j->n - off < chunk ? j->n - off : chunk;
        int last = off + part == j->n;

        if (!send_part(j, off, part, last, r))
            return 0;
        /* Another application may have selected something else on a shared card: select
         * again once, before the first part has been taken. */
        if (off == 0 && r->sw == SKS_SW_NOT_SELECTED && !reselected) {
            reselected = 1;
            if (!select_application(j))
                return 0;
            continue;
        }
        if (last)
            return 1;
        if (r->sw != SKS_SW_OK)
            return sw_failed(j, r->sw, "a chained request part");
        off += part;
    }
}

static int exchange(pcsc_job *j)
{
    rapdu r;

    return send_request(j, &r) && read_response(j, &r, &j->reply, "the request");
}

/* The whole multi-APDU exchange under an exclusive transaction, so that no other
 * application's APDUs land between our chained parts or GET RESPONSEs. */
static int transaction(pcsc_job *j, int (*body)(pcsc_job *))
{
    pcsc_link *l = j->link;
    LONG rv;
    int ok;

    step(j, "waiting for exclusive access to the card in", l->reader);
    rv = SCardBeginTransaction(l->card);
    if (rv != SCARD_S_SUCCESS)
        return pcsc_failed(j, rv, "SCardBeginTransaction");
    ok = body(j);
    step(j, "ending the transaction with the card in", l->reader);
    rv = SCardEndTransaction(l->card, SCARD_LEAVE_CARD);
    if (ok && rv != SCARD_S_SUCCESS)
        return pcsc_failed(j, rv, "SCardEndTransaction");
    return ok;
}

/* ---- connecting ---- */

static void link_free(pcsc_link *l)
{
    if (l == NULL)
        return;
    if (l->has_card)
        SCardDisconnect(l->card, SCARD_LEAVE_CARD);
    if (l->has_ctx)
        SCardReleaseContext(l->ctx);
    OPENSSL_clear_free(l, sizeof(*l));
}

/* The reader's limit for APDU data from PC/SC part 10 dwMaxAPDUDataSize (0: short APDUs
 * only); -1 if the reader does not say. */
static long reader_reported_max(pcsc_link *l)
{
    uint8_t buf[256];
    DWORD got = 0, ioctl = 0, i;

    if (SCardControl(l->card, CM_IOCTL_GET_FEATURE_REQUEST, NULL, 0, buf, sizeof(buf), &got) != SCARD_S_SUCCESS)
        return -1;
    for (i = 0; i + 6 <= got; i += 6)
        if (buf[i] == FEATURE_GET_TLV_PROPERTIES && buf[i + 1] == 4)
            ioctl = ((DWORD)buf[i + 2] << 24) | ((DWORD)buf[i + 3] << 16) | ((DWORD)buf[i + 4] << 8) | buf[i + 5];
    if (ioctl == 0 || SCardControl(l->card, ioctl, NULL, 0, buf, sizeof(buf), &got) != SCARD_S_SUCCESS)
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
static size_t reader_max_apdu_data(pcsc_link *l)
{
    const char *force = getenv("SKS_PCSC_APDU");
    long max;

    if (force != NULL && strcmp(force, "short") == 0)
        return 0;
    max = reader_reported_max(l);
    return max < 0 ? EXTENDED_MAX : (size_t)max;
}

/* Connects to the card in one reader and selects the SKS application. */
static int try_reader(pcsc_job *j, const char *reader)
{
    pcsc_link *l = j->link;
    LONG rv;

    snprintf(l->reader, sizeof(l->reader), "%s", reader);
    step(j, "connecting to the card in", reader);
    rv = SCardConnect(l->ctx, reader, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1, &l->card,
                      &l->protocol);
    if (rv != SCARD_S_SUCCESS)
        return pcsc_failed(j, rv, "SCardConnect");
    l->has_card = 1;
    step(j, "asking about APDU sizes:", reader);
    l->reader_max = reader_max_apdu_data(l);
    if (!transaction(j, select_application)) {
        SCardDisconnect(l->card, SCARD_LEAVE_CARD);
        l->has_card = 0;
        return 0;
    }
    j->lost = 0; /* earlier readers' failures do not concern this one */
    return 1;
}

/* The readers, as pcsc-lite's multi-string (names separated by NUL, an empty name last). */
static char *list_readers(pcsc_job *j)
{
    DWORD len = 0;
    char *names;
    LONG rv = SCardListReaders(j->link->ctx, NULL, NULL, &len);

    if (rv == SCARD_S_SUCCESS && (names = OPENSSL_zalloc(len + 2)) != NULL) {
        rv = SCardListReaders(j->link->ctx, NULL, names, &len);
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

/* Adds one reader's problem (its message names the reader) to the list for the final error;
 * what does not fit is cut off. */
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

/* Tries the readers that match in order; the first whose card answers SELECT is used. */
static int choose_reader(pcsc_job *j, const char *names)
{
    char problems[sizeof(j->err)] = "";
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
    if (!tried)
        job_error(j, "no PC/SC reader named like \"%s\"", j->want);
    else if (tried == 1)
        memmove(j->err, problems, strlen(problems) + 1);
    else
        job_error(j, "no reader with an SKS card: %s", problems);
    return 0;
}

static int link_open(pcsc_job *j)
{
    pcsc_link *l = OPENSSL_zalloc(sizeof(*l));
    char *names;
    LONG rv;
    int ok;

    if (l == NULL) {
        job_error(j, "out of memory");
        return 0;
    }
    j->link = l;
    step(j, "connecting to pcscd", NULL);
    rv = SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &l->ctx);
    if (rv != SCARD_S_SUCCESS) {
        job_error(j, "cannot reach pcscd: %s", pcsc_stringify_error(rv));
        return 0;
    }
    l->has_ctx = 1;
    if ((names = list_readers(j)) == NULL)
        return 0;
    ok = choose_reader(j, names);
    OPENSSL_free(names);
    return ok;
}

/* ---- the worker thread and the caller's wait ---- */

static void job_free(pcsc_job *j)
{
    link_free(j->link);
    if (j->req != NULL)
        OPENSSL_clear_free(j->req, j->n);
    sks_buf_free(&j->reply);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    OPENSSL_free(j);
}

static void *worker(void *arg)
{
    pcsc_job *j = arg;
    int abandoned;

    if (j->link == NULL && !link_open(j))
        j->lost = 1;
    else if (j->connect_only || transaction(j, exchange))
        j->ok = 1;
    if (j->lost) {
        step(j, "closing the connection to", j->link ? j->link->reader : "");
        link_free(j->link); /* here, so a caller never waits on a pcscd that hangs */
        j->link = NULL;
    }
    pthread_mutex_lock(&j->mu);
    j->finished = 1;
    abandoned = j->abandoned;
    pthread_cond_signal(&j->cv);
    pthread_mutex_unlock(&j->mu);
    if (abandoned)
        job_free(j);
    return NULL;
}

static pcsc_job *job_new(pcsc_transport *p, const uint8_t *req, size_t n)
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
    j->timeout = p->timeout;
    memcpy(j->want, p->want, sizeof(j->want));
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

static int start_worker(pcsc_job *j)
{
    pthread_attr_t attr;
    pthread_t th;
    int rc;

    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    rc = pthread_create(&th, &attr, worker, j);
    pthread_attr_destroy(&attr);
    return rc == 0;
}

/* Hands the job and the connection to a worker and waits. 1 if the job ran to its end (its
 * outcome in j->ok, j->err copied to err); 0 if not, and then j is no longer the caller's. */
static int run_job(pcsc_transport *p, pcsc_job *j, char *err, size_t errlen)
{
    j->link = p->link; /* the worker has the connection while it works */
    p->link = NULL;
    pthread_mutex_lock(&j->mu);
    if (!start_worker(j)) {
        pthread_mutex_unlock(&j->mu);
        p->link = j->link;
        j->link = NULL;
        job_free(j);
        snprintf(err, errlen, "cannot start a thread: %s", strerror(errno));
        return 0;
    }
    if (!wait_for(j, err, errlen))
        return 0;
    p->link = j->link;
    j->link = NULL;
    if (!j->ok)
        snprintf(err, errlen, "%s", j->err);
    return 1;
}

/* ---- fork: the child lets go of the parent's connections ---- */

static pthread_mutex_t open_lock = PTHREAD_MUTEX_INITIALIZER;
static pcsc_transport *open_list;
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
    pcsc_transport *p;

    for (p = open_list; p != NULL; p = p->next)
        p->link = NULL; /* abandoned: the parent's, never to be used or released here */
    if (open_list != NULL)
        blank_pcscd_sockets();
    pthread_mutex_init(&open_lock, NULL);
}

static void register_atfork(void)
{
    pthread_atfork(before_fork, parent_after_fork, child_after_fork);
}

static void list_add(pcsc_transport *p)
{
    pthread_once(&atfork_once, register_atfork);
    pthread_mutex_lock(&open_lock);
    p->next = open_list;
    open_list = p;
    pthread_mutex_unlock(&open_lock);
}

static void list_remove(pcsc_transport *p)
{
    pcsc_transport **q;

    pthread_mutex_lock(&open_lock);
    for (q = &open_list; *q != NULL && *q != p; q = &(*q)->next)
        ;
    if (*q == p)
        *q = p->next;
    pthread_mutex_unlock(&open_lock);
}

static int pcsc_call(sks_transport *t, const uint8_t *req, size_t n, sks_buf *reply, char *err, size_t errlen)
{
    pcsc_job *j = job_new((pcsc_transport *)t, req, n);
    int ok;

    if (j == NULL) {
        snprintf(err, errlen, "out of memory");
        return 0;
    }
    if (!run_job((pcsc_transport *)t, j, err, errlen))
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

static void pcsc_close(sks_transport *t)
{
    pcsc_transport *p = (pcsc_transport *)t;

    list_remove(p);
    link_free(p->link);
    OPENSSL_free(p);
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

sks_transport *sks_transport_open_pcsc(const char *reader, char *err, size_t errlen)
{
    pcsc_transport *p;
    pcsc_job *j;
    int ok;

    if (strlen(reader) >= sizeof(p->want)) {
        snprintf(err, errlen, "reader name too long: %s", reader);
        return NULL;
    }
    if ((p = OPENSSL_zalloc(sizeof(*p))) == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    memcpy(p->want, reader, strlen(reader) + 1);
    p->timeout = configured_timeout();
    p->base.call = pcsc_call;
    p->base.close = pcsc_close;
    list_add(p);
    /* Connect and SELECT now, so that a wrong reader or a missing card is reported where the
     * device was configured. */
    if ((j = job_new(p, NULL, 0)) == NULL) {
        snprintf(err, errlen, "out of memory");
        pcsc_close(&p->base);
        return NULL;
    }
    j->connect_only = 1;
    ok = run_job(p, j, err, errlen);
    if (ok) {
        ok = j->ok;
        job_free(j);
    }
    if (!ok) {
        pcsc_close(&p->base);
        return NULL;
    }
    return &p->base;
}
