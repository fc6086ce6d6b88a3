/*
 * sks-vcard: a virtual SKS card. It connects to the vpcd virtual reader driver inside pcscd
 * (Debian package vsmartcard-vpcd) and answers its messages, so that PC/SC clients reach the
 * store through a real pcscd:
 *
 *   sks-vcard --store PATH [--master-key PATH] [--host 127.0.0.1] [--port 35963] [--short]
 *             [--allow-management]
 *
 * A test and development tool: PC/SC has no notion of who is calling, so every local process
 * that can reach pcscd talks to this card. Without --allow-management the card answers only
 * the User API and the read-only queries (the methods sksd opens to every client); everything
 * that provisions, deletes, exports or changes keys is answered ERROR_NOT_ALLOWED.
 *
 * The vpcd protocol: every message, both ways, is a 2-byte big-endian length and the bytes.
 * From vpcd, a 1-byte message is a control (0 power off, 1 power on, 2 reset, 4 send the
 * ATR); anything longer is a command APDU. The card answers the ATR request and every APDU
 * with one message. --short makes a card without extended-length APDUs (chaining and GET
 * RESPONSE only). When vpcd goes away (pcscd stopped) the card waits and connects again.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "../common/daemon_log.h"
#include "../../device/sks_device.h"
#include "../../transport/pcsc_apdu.h"
#include "apdu.h"

#define VPCD_OFF 0
#define VPCD_ON 1
#define VPCD_RESET 2
#define VPCD_ATR 4
/* vpcd frames carry at most 65535 bytes: that bounds a command APDU (header 4, Lc 3, Le 2)
 * and a response APDU (data and SW1 SW2). */
#define VPCD_MAX_MESSAGE 65535
#define CARD_MAX_COMMAND (VPCD_MAX_MESSAGE - 9)
#define CARD_MAX_RESPONSE (VPCD_MAX_MESSAGE - 2)

typedef struct {
    sks_store_location loc;
    const char *host;
    const char *port;
    int short_only;
    int allow_management; /* --allow-management: every method, as for an administrator */
} config;

/* What the card's dispatcher needs: the store, and whether management methods pass. */
typedef struct {
    sks_device *dev;
    int allow_management;
} card_target;

static volatile sig_atomic_t stopping;


static void on_signal(int sig)
{
    (void)sig;
    stopping = 1;
}

/*
 * The ATR: T=1, with the ISO 7816-4 card capabilities in the historical bytes (compact TLV
 * tag 7 length 3; third byte: 0x80 command chaining, 0x40 extended Lc and Le).
 */
static size_t make_atr(int short_only, uint8_t atr[16])
{
    static const uint8_t head[] = { 0x3B, 0x85, 0x80, 0x01 };
    uint8_t hist[] = { 0x80, 0x73, 0x00, 0x00, 0xC0 };
    size_t n = sizeof(head), i;
    uint8_t tck = 0;

    if (short_only)
        hist[4] = 0x80;
    memcpy(atr, head, sizeof(head));
    memcpy(atr + n, hist, sizeof(hist));
    n += sizeof(hist);
    for (i = 1; i < n; i++)
        tck ^= atr[i]; /* TCK: XOR of T0 .. the last historical byte */
    atr[n++] = tck;
    return n;
}

/*
 * vpcd in Debian 12 (vsmartcard 0.8) writes a message's length and its body with two send()s
 * on a socket without TCP_NODELAY: Nagle holds the body back until the length is ACKed, and a
 * delayed ACK takes 40 ms. So the card ACKs at once: TCP_QUICKACK, which Linux clears again
 * by itself, is set before every read.
 */
static void quick_ack(int fd)
{
    int one = 1;

    setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one));
}

static int read_full(int fd, uint8_t *p, size_t n)
{
    size_t got = 0;

    while (got < n) {
        ssize_t r;

        quick_ack(fd);
        r = read(fd, p + got, n - got);
        if (r == 0)
            return 0;
        if (r < 0) {
            if (errno == EINTR && !stopping)
                continue;
            return 0;
        }
        got += (size_t)r;
    }
    return 1;
}

/* One frame, one write(): with TCP_NODELAY, a length written apart from its body would go out
 * as its own segment and the body would wait for the ACK (tens of milliseconds per APDU). */
static int send_frame(int fd, const uint8_t *p, size_t n)
{
    uint8_t frame[2 + VPCD_MAX_MESSAGE];
    size_t off = 0;

    if (n > VPCD_MAX_MESSAGE)
        return 0;
    frame[0] = (uint8_t)(n >> 8);
    frame[1] = (uint8_t)n;
    memcpy(frame + 2, p, n);
    n += 2;
    while (off < n) {
        ssize_t w = send(fd, frame + off, n - off, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR && !stopping)
                continue;
            OPENSSL_cleanse(frame, n);
            return 0;
        }
        off += (size_t)w;
    }
    OPENSSL_cleanse(frame, n); /* a reply can hold decrypted data or an exported key */
    return 1;
}

static int connect_vpcd(const config *cfg)
{
    struct addrinfo hints, *res = NULL, *ai;
    int fd = -1, one = 1;

    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(cfg->host, cfg->port, &hints, &res) != 0)
        return -1;
    for (ai = res; ai != NULL && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    /* Every APDU is a small request waiting for a small answer: never hold one back. */
    if (fd >= 0 && setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0) {
        daemon_log("cannot set TCP_NODELAY: %s", strerror(errno));
        close(fd);
        fd = -1;
    }
    return fd;
}

static void refuse_management(uint8_t id, sks_buf *reply)
{
    char msg[160];

    snprintf(msg, sizeof(msg), "sks-vcard: method %u is a management method; start the card with --allow-management",
             id);
    daemon_log("refused management method %u (the card runs without --allow-management)", id);
    sks_buf_reset(reply);
    sks_buf_byte(reply, SKS_ERROR_NOT_ALLOWED);
    sks_buf_array(reply, msg, strlen(msg));
}

static void dispatch_to_device(void *ctx, const uint8_t *req, size_t n, sks_buf *reply)
{
    const card_target *target = ctx;

    if (n > 0 && !target->allow_management && !sks_method_open_to_users(req[0]))
        refuse_management(req[0], reply);
    else
        sks_device_dispatch(target->dev, req, n, reply);
}

/* Answers one message from vpcd. 0 when the connection must end. */
static int serve_message(int fd, sks_card *card, const config *cfg, const uint8_t *msg, size_t n, sks_buf *out)
{
    uint8_t atr[16];

    if (n == 1) {
        switch (msg[0]) {
        case VPCD_ATR:
            return send_frame(fd, atr, make_atr(cfg->short_only, atr));
        case VPCD_OFF:
        case VPCD_ON:
        case VPCD_RESET:
            sks_card_reset(card);
            return 1;
        default:
            daemon_log("unknown vpcd control message %u", msg[0]);
            return 1;
        }
    }
    sks_card_command(card, msg, n, out);
    return !out->failed && send_frame(fd, out->data, out->len);
}

/* Serves one vpcd connection until it ends or the card is stopped. */
static void serve(int fd, sks_card *card, const config *cfg)
{
    static uint8_t msg[VPCD_MAX_MESSAGE];
    uint8_t hdr[2];
    sks_buf out;

    sks_buf_init(&out);
    while (!stopping && read_full(fd, hdr, 2)) {
        size_t n = ((size_t)hdr[0] << 8) | hdr[1];
        int ok = n != 0 && read_full(fd, msg, n) && serve_message(fd, card, cfg, msg, n, &out);

        /* A command APDU can carry a PIN, a response APDU a decrypted secret: neither stays
         * in memory once handled (the card's own request and reply buffers wipe themselves). */
        OPENSSL_cleanse(msg, n);
        sks_buf_reset(&out);
        if (!ok)
            break;
    }
    sks_buf_free(&out);
    sks_card_reset(card);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: sks-vcard --store PATH [--master-key PATH] [--host HOST] [--port PORT] [--short]\n"
               "                 [--allow-management]\n"
               "A virtual SKS card in the vpcd reader of pcscd (default 127.0.0.1 port 35963).\n"
               "A TEST AND DEVELOPMENT TOOL, not a security boundary: PC/SC does not say who is\n"
               "calling, so every local process that reaches pcscd can use the card's keys.\n"
               "--allow-management: also accept provisioning, skipRequest/skipImport, deleteKey,\n"
               "  exportKey, PIN changes and the other management methods from any PC/SC client\n"
               "  (without it they are answered ERROR_NOT_ALLOWED).\n"
               "--short: no extended-length APDUs (requests chained, replies read with GET RESPONSE).\n"
               "Runs in the foreground; stops on SIGTERM/SIGINT.\n");
}

static int parse_args(int argc, char **argv, config *c)
{
    int i;

    memset(c, 0, sizeof(*c));
    c->host = "127.0.0.1";
    c->port = "35963";
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

        if (strcmp(a, "--help") == 0) {
            usage(stdout);
            exit(0);
        }
        if (strcmp(a, "--short") == 0) {
            c->short_only = 1;
            continue;
        }
        if (strcmp(a, "--allow-management") == 0) {
            c->allow_management = 1;
            continue;
        }
        if (v == NULL) {
            fprintf(stderr, "sks-vcard: %s needs a value\n", a);
            return 0;
        }
        i++;
        if (strcmp(a, "--store") == 0)
            c->loc.db_path = v;
        else if (strcmp(a, "--master-key") == 0)
            c->loc.master_key_path = v;
        else if (strcmp(a, "--host") == 0)
            c->host = v;
        else if (strcmp(a, "--port") == 0)
            c->port = v;
        else {
            fprintf(stderr, "sks-vcard: unknown option %s (see sks-vcard --help)\n", a);
            return 0;
        }
    }
    if (c->loc.db_path == NULL) {
        usage(stderr);
        return 0;
    }
    return 1;
}

static void card_limits(const config *cfg, sks_card_limits *lim)
{
    lim->extended = !cfg->short_only;
    lim->max_command = cfg->short_only ? 255 : CARD_MAX_COMMAND;
    lim->max_response = cfg->short_only ? 256 : CARD_MAX_RESPONSE;
}

/* Inserts the card into the reader, again and again: vpcd may not listen yet, or restart. */
static void run(sks_device *dev, const config *cfg)
{
    sks_card card;
    sks_card_limits lim;
    card_target target = { dev, cfg->allow_management };
    int announced = 0;

    card_limits(cfg, &lim);
    sks_card_init(&card, &lim, dispatch_to_device, &target);
    while (!stopping) {
        int fd = connect_vpcd(cfg);
        if (fd < 0) {
            if (!announced++)
                daemon_log("waiting for vpcd at %s port %s", cfg->host, cfg->port);
            usleep(200 * 1000);
            continue;
        }
        daemon_log("inserted into vpcd at %s port %s%s%s", cfg->host, cfg->port, cfg->short_only ? " (short APDUs)" : "",
                   cfg->allow_management ? " (management methods allowed)" : "");
        serve(fd, &card, cfg);
        close(fd);
        announced = 0;
        if (!stopping)
            daemon_log("vpcd closed the connection");
    }
    sks_card_free(&card);
}

int main(int argc, char **argv)
{
    config cfg;
    struct sigaction sa;
    char err[512] = "";
    sks_device *dev;

    daemon_log_name("sks-vcard");

    if (!parse_args(argc, argv, &cfg))
        return 2;
    dev = sks_device_open(&cfg.loc, err, sizeof(err));
    if (dev == NULL) {
        fprintf(stderr, "sks-vcard: %s\n", err);
        return 1;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal; /* no SA_RESTART: a blocked read returns on SIGTERM */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    run(dev, &cfg);
    sks_device_close(dev);
    daemon_log("stopped");
    return 0;
}
