/*
 * sks_bench: how fast keys in the sks store are, measured in one run against the physical
 * limit (OpenSSL's default provider with the same key in a PEM file) and against what Debian
 * users pick today (libp11's engine over SoftHSM2). scripts/bench.sh prepares everything,
 * runs this program and writes bench/RESULTS.md; it is also usable by hand:
 *
 *   sks_bench --dir DIR [options]
 *
 * DIR, as scripts/bench.sh lays it out:
 *   keys/NAME.pem, keys/NAME.crt   NAME = p256, p384, rsa2048, ed25519 (made once by openssl)
 *   store.db (+ store.db.key)      an sks store holding the same keys under the same names
 *   sksd.sock                      sksd serving store.db                  (variant c)
 *   ca.key, ca.pem                 a CA for SKIP packages
 *   pkcs11.cnf                     openssl.cnf loading libp11's engine     (TLS with libp11)
 *
 * Variants, each doing the same operation with the same key material:
 *   (a) the default provider, key from the PEM file       (the reference for every ratio)
 *   (b) the sks provider, store in this process            SKS_DEVICE=file:DIR/store.db
 *   (c) the sks provider through sksd                      SKS_DEVICE=unix:DIR/sksd.sock
 *   (d) the sks provider through pcscd and sks-vcard       SKS_DEVICE=pcsc:READER
 *   (e) libp11's engine over a PKCS#11 module (SoftHSM2)   pkcs11:token=...;object=NAME
 * The provider reads SKS_DEVICE when it first reaches its device, so each provider variant
 * gets its own OSSL_LIB_CTX, with SKS_DEVICE set before its first key load.
 *
 * Every operation is a whole one, as an application does it: new context, init, parameters,
 * the operation, free. Before measuring, each variant's result is checked against the
 * default provider (signatures verify, ECDH secrets and OAEP plaintexts match).
 * Measurement: R rounds; in each round every operation runs one batch per variant, the
 * variants in a rotating order; batches are sized to about S seconds. Reported: the median
 * of the rounds' ops/s, and the median of the rounds' ratios to (a) (each ratio pairs
 * batches measured moments apart, so slow drifts of the machine cancel out). The ECDH peer is
 * a public key parsed once per variant, so the derive itself is measured.
 *
 * TLS: full TLS 1.3 handshakes (no resumption, no session tickets, X25519) of one client in
 * this process against `openssl s_server -www`, its P-256 key in the PEM file, as
 * sks:name=p256 with the store in the server's process, through sksd, and through libp11
 * (-engine pkcs11). The servers run side by side; batches rotate as above.
 *
 * nginx: the same handshakes against nginx (Debian's) with as many workers as cores and twice as
 * many client processes, the key in the PEM file, in the store, through sksd (see measure_nginx).
 *
 * SKIP: 1, 8 and 64 P-256 keys, each time on a fresh store; the request and the package by
 * `sks skip request` and `sks skip issue` (a package holds at most 32 keys: 64 keys are two
 * packages). The import is timed in this process (decode, verify to the CA, skipImport on the
 * embedded store: what `sks skip import` does, without starting a process) and as
 * `sks skip import` processes on a second store prepared the same way.
 *
 * Busy machine and many clients (issue 13): P-256 signing by one client alone, by one client
 * while as many other processes as cores spin, and by as many clients as cores and twice as
 * many at once (forks of this process, each warmed up, started together), throughput added,
 * for (a), (b) and (c), and with --ssh-agent for OpenSSH's ssh-agent holding the same key: an
 * outside program's price for a key in another process on this machine, beside sksd's.
 *
 * Options:
 *   --pcsc READER           enable (d) on pcsc:READER (pcscd found through PCSCLITE_CSOCK_NAME)
 *   --pkcs11 MODULE         enable (e) with this PKCS#11 module (SoftHSM2: SOFTHSM2_CONF)
 *   --pkcs11-token LABEL    token label (sks-bench)       --pkcs11-pin PIN  user PIN (1234)
 *   --pkcs11-engine PATH    libp11's engine (Debian's path by default)
 *   --ssh-agent SOCKET      the contention rows get a peer column: ssh-agent (OpenSSH) at
 *                           SOCKET holding keys/p256.pem (ssh-add), signing through its socket
 *   --sks-pin-file PATH     sks keys are loaded as sks:name=NAME?pin-source=file:PATH (a card
 *                           whose keys need the PIN: bench/vhsm_bench.py)
 *   --na X:REASON           variant X is not available, REASON goes into its column
 *   --rounds N (7)  --seconds S (0.2, per batch)  --only OP[,OP...]  --variants abcde
 *   --no-tls (the s_server and nginx rows)  --no-skip  --no-contention  --skip-trials N (5)  --markdown FILE  --modules DIR  --sks PATH
 *   --profile X:OP          only run OP on variant X for --seconds seconds, no table: for
 *                           perf record / valgrind --tool=callgrind (README, Benchmarks)
 *   --count N               with --profile: 50 warm-up operations (key caches filled), then
 *                           exactly N in one run_batch call; `valgrind --tool=callgrind
 *                           --toggle-collect=run_batch` then counts N operations' instructions
 * Operations (--only): p256-sign p384-sign rsa-pkcs1-sign rsa-pss-sign ed25519-sign
 * p256-ecdh rsa-oaep-decrypt key-load key-load-sha256 tls nginx skip contention. key-load loads the P-256 private
 * key again as each variant found it: PEM_read_bio_PrivateKey_ex, OSSL_STORE open + load + close
 * on sks:name=p256 (the device's getKeyAttributes and getKeyProtectionInfo),
 * ENGINE_load_private_key; key-load-sha256 the same with sks:sha256=<certificate fingerprint>,
 * which the device answers from its index of certificates (findKeysByCertificate; the other
 * variants load as in key-load).
 * These are the patterns of an outside harness too (issue 13): a fresh context per operation,
 * one-shot EVP_DigestSign, a fresh EVP_PKEY_CTX per derive, a whole OSSL_STORE load per key
 * load; it signed 64 bytes where this signs 130 (hashing 66 bytes more is the same work in
 * both variants).
 *
 * Nothing here is a pass/fail test: the exit status says only whether the benchmark ran.
 */
#define OPENSSL_SUPPRESS_DEPRECATED /* the ENGINE API, for libp11 (variant e) */

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/engine.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/provider.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/ssl.h>
#include <openssl/store.h>
#include <openssl/x509.h>

#include "../cms/skip_import.h"
#include "../cms/skip_package.h"
#include "agent_peer.h"

extern char **environ;

#ifndef SKS_BENCH_MODULES
#define SKS_BENCH_MODULES "."
#endif
#ifndef SKS_BENCH_TOOL
#define SKS_BENCH_TOOL "sks"
#endif
#define LIBP11_ENGINE "/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so"

#define MAX_ROUNDS 31
#define REASON 200

/* ------------------------------------------------------------------ small helpers */

/* snprintf that may cut its output short (table cells, messages, paths under DIR). */
static int fmt(char *out, size_t n, const char *f, ...) __attribute__((format(printf, 3, 4)));
static int fmt(char *out, size_t n, const char *f, ...)
{
    va_list ap;
    int r;

    va_start(ap, f);
    r = vsnprintf(out, n, f, ap);
    va_end(ap);
    return r;
}

static double now(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "sks_bench: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    ERR_print_errors_fp(stderr);
    exit(1);
}

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fflush(stderr);
}

/* The first line of OpenSSL's error queue, shortened to a table cell; the queue is emptied. */
static void openssl_reason(char *out, size_t n, const char *what)
{
    char buf[256] = "";
    unsigned long e = ERR_peek_last_error();
    char *p;

    if (e != 0)
        ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    /* "error:0A000086:SSL routines::certificate verify failed" -> the text after "::" */
    p = strstr(buf, "::");
    fmt(out, n, "%s%s%s", what, buf[0] ? ": " : "", p ? p + 2 : buf);
    for (p = out; *p; p++)
        if (*p == '|')
            *p = '/'; /* keep Markdown cells intact */
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static double median(const double *v, int n)
{
    double t[MAX_ROUNDS * 4];

    if (n <= 0)
        return 0;
    memcpy(t, v, sizeof(double) * (size_t)n);
    qsort(t, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2;
}

/* Runs argv (with extra "NAME=VALUE" environment entries), output to log (or /dev/null);
 * returns the exit status (-1: could not run) and its wall time in *secs. */
static int run_cmd(char *const argv[], char *const extra_env[], const char *log, double *secs)
{
    posix_spawn_file_actions_t fa;
    char **env;
    size_t n = 0, k = 0, i;
    pid_t pid;
    int st = -1;
    double t0;

    while (environ[n] != NULL)
        n++;
    while (extra_env != NULL && extra_env[k] != NULL)
        k++;
    env = calloc(n + k + 1, sizeof(char *));
    if (env == NULL)
        return -1;
    for (i = 0; i < k; i++)
        env[i] = extra_env[i];
    for (i = 0; i < n; i++)
        env[k + i] = environ[i]; /* the first of duplicate names wins in getenv */
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, log ? log : "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0600);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    t0 = now();
    if (posix_spawnp(&pid, argv[0], &fa, NULL, argv, env) == 0 && waitpid(pid, &st, 0) == pid)
        st = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    else
        st = -1;
    if (secs != NULL)
        *secs = now() - t0;
    posix_spawn_file_actions_destroy(&fa);
    free(env);
    return st;
}

static pid_t spawn_bg(char *const argv[], char *const extra_env[], const char *log)
{
    posix_spawn_file_actions_t fa;
    char **env;
    size_t n = 0, k = 0, i;
    pid_t pid = -1;

    while (environ[n] != NULL)
        n++;
    while (extra_env != NULL && extra_env[k] != NULL)
        k++;
    env = calloc(n + k + 1, sizeof(char *));
    if (env == NULL)
        return -1;
    for (i = 0; i < k; i++)
        env[i] = extra_env[i];
    for (i = 0; i < n; i++)
        env[k + i] = environ[i];
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0600);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    if (posix_spawnp(&pid, argv[0], &fa, NULL, argv, env) != 0)
        pid = -1;
    posix_spawn_file_actions_destroy(&fa);
    free(env);
    return pid;
}

static int read_file(const char *path, unsigned char **data, size_t *len)
{
    FILE *f = fopen(path, "rb");
    long n;

    *data = NULL;
    if (f == NULL)
        return 0;
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0
        || (*data = malloc((size_t)n + 1)) == NULL || fread(*data, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        free(*data);
        *data = NULL;
        return 0;
    }
    fclose(f);
    *len = (size_t)n;
    return 1;
}

/* ------------------------------------------------------------------ configuration */

enum { K_P256, K_P384, K_RSA, K_ED25519, NKEYS };
static const char *const KEY_NAMES[NKEYS] = { "p256", "p384", "rsa2048", "ed25519" };

enum { V_A, V_B, V_C, V_D, V_E, NVARIANTS };
static const char *const VARIANT_TITLES[NVARIANTS] = {
    "(a) default provider, PEM file", "(b) sks in-process", "(c) sks via sksd", "(d) sks via PC/SC card",
    "(e) libp11 + SoftHSM2",
};

enum { OP_P256, OP_P384, OP_RSA_PKCS1, OP_RSA_PSS, OP_ED25519, OP_ECDH, OP_OAEP, OP_LOAD, OP_LOAD_SHA256, NOPS };
static const struct {
    const char *id, *title;
    int key;
} OPS[NOPS] = {
    { "p256-sign", "ECDSA P-256 sign (SHA-256)", K_P256 },
    { "p384-sign", "ECDSA P-384 sign (SHA-384)", K_P384 },
    { "rsa-pkcs1-sign", "RSA-2048 PKCS#1 v1.5 sign (SHA-256)", K_RSA },
    { "rsa-pss-sign", "RSA-2048 PSS sign (SHA-256)", K_RSA },
    { "ed25519-sign", "Ed25519 sign", K_ED25519 },
    { "p256-ecdh", "ECDH P-256 derive", K_P256 },
    { "rsa-oaep-decrypt", "RSA-2048 OAEP decrypt (SHA-256)", K_RSA },
    { "key-load", "P-256 private key load (PEM file / sks:name= / pkcs11: URI)", K_P256 },
    { "key-load-sha256", "P-256 private key load (PEM file / sks:sha256= / pkcs11: URI)", K_P256 },
};

static struct {
    const char *profile;
    const char *dir, *pcsc, *pkcs11, *pkcs11_token, *pkcs11_pin, *pkcs11_engine, *modules, *tool, *markdown;
    const char *sks_pin_file, *ssh_agent;
    char na[NVARIANTS][REASON];
    int rounds, skip_trials, no_tls, no_skip, want_variant[NVARIANTS];
    long count; /* --count: --profile runs exactly this many operations, after a warm-up */
    int want_op[NOPS], want_tls, want_nginx, want_skip, want_cont, no_cont;
    double seconds;
} cfg;

static void path_in(char *out, size_t n, const char *a, const char *b)
{
    if (fmt(out, n, "%s/%s", a, b) >= (int)n)
        die("path too long: %s/%s", a, b);
}

static void usage(void)
{
    fputs("usage: sks_bench --dir DIR [--pcsc READER] [--pkcs11 MODULE] [--pkcs11-token LABEL] [--pkcs11-pin PIN]\n"
          "                 [--na X:REASON] [--rounds N] [--seconds S] [--only OP[,OP]] [--variants abcde]\n"
          "                 [--no-tls] [--no-skip] [--no-contention] [--skip-trials N] [--markdown FILE] [--modules DIR] [--sks PATH]\n"
          "                 [--sks-pin-file PATH] [--ssh-agent SOCKET]\n"
          "       sks_bench --dir DIR [...] --profile X:OP [--seconds S | --count N]   (one variant, one operation:\n"
          "                 profilers; --count: N operations in one run_batch after 50 outside it, for\n"
          "                 valgrind --tool=callgrind --toggle-collect=run_batch)\n"
          "operations: p256-sign p384-sign rsa-pkcs1-sign rsa-pss-sign ed25519-sign p256-ecdh rsa-oaep-decrypt\n"
          "            key-load key-load-sha256 tls nginx skip contention\n",
          stderr);
    exit(2);
}

static void parse_args(int argc, char **argv)
{
    int i, j;
    const char *only = NULL, *variants = "abcde";

    cfg.rounds = 7;
    cfg.seconds = 0.2;
    cfg.skip_trials = 5;
    cfg.pkcs11_token = "sks-bench";
    cfg.pkcs11_pin = "1234";
    cfg.pkcs11_engine = LIBP11_ENGINE;
    cfg.modules = getenv("OPENSSL_MODULES") ? getenv("OPENSSL_MODULES") : SKS_BENCH_MODULES;
    cfg.tool = SKS_BENCH_TOOL;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int takes = 1;
        if (strcmp(a, "--no-tls") == 0)
            cfg.no_tls = 1, takes = 0;
        else if (strcmp(a, "--no-skip") == 0)
            cfg.no_skip = 1, takes = 0;
        else if (strcmp(a, "--no-contention") == 0)
            cfg.no_cont = 1, takes = 0;
        else if (v == NULL)
            usage();
        else if (strcmp(a, "--dir") == 0)
            cfg.dir = v;
        else if (strcmp(a, "--pcsc") == 0)
            cfg.pcsc = v;
        else if (strcmp(a, "--pkcs11") == 0)
            cfg.pkcs11 = v;
        else if (strcmp(a, "--pkcs11-token") == 0)
            cfg.pkcs11_token = v;
        else if (strcmp(a, "--pkcs11-pin") == 0)
            cfg.pkcs11_pin = v;
        else if (strcmp(a, "--pkcs11-engine") == 0)
            cfg.pkcs11_engine = v;
        else if (strcmp(a, "--sks-pin-file") == 0)
            cfg.sks_pin_file = v;
        else if (strcmp(a, "--ssh-agent") == 0)
            cfg.ssh_agent = v;
        else if (strcmp(a, "--modules") == 0)
            cfg.modules = v;
        else if (strcmp(a, "--sks") == 0)
            cfg.tool = v;
        else if (strcmp(a, "--markdown") == 0)
            cfg.markdown = v;
        else if (strcmp(a, "--rounds") == 0)
            cfg.rounds = atoi(v);
        else if (strcmp(a, "--seconds") == 0)
            cfg.seconds = atof(v);
        else if (strcmp(a, "--skip-trials") == 0)
            cfg.skip_trials = atoi(v);
        else if (strcmp(a, "--only") == 0)
            only = v;
        else if (strcmp(a, "--profile") == 0)
            cfg.profile = v;
        else if (strcmp(a, "--count") == 0)
            cfg.count = atol(v);
        else if (strcmp(a, "--variants") == 0)
            variants = v;
        else if (strcmp(a, "--na") == 0) {
            if (v[0] < 'a' || v[0] >= 'a' + NVARIANTS || v[1] != ':')
                usage();
            fmt(cfg.na[v[0] - 'a'], REASON, "%s", v + 2);
        } else
            usage();
        i += takes;
    }
    if (cfg.dir == NULL || cfg.rounds < 1 || cfg.rounds > MAX_ROUNDS || cfg.seconds <= 0 || cfg.skip_trials < 1
        || cfg.skip_trials > MAX_ROUNDS)
        usage();
    for (j = 0; j < NVARIANTS; j++)
        cfg.want_variant[j] = strchr(variants, 'a' + j) != NULL;
    cfg.want_variant[V_A] = 1; /* the reference of every ratio */
    for (j = 0; j < NOPS; j++)
        cfg.want_op[j] = only == NULL;
    cfg.want_tls = only == NULL && !cfg.no_tls;
    cfg.want_nginx = only == NULL && !cfg.no_tls;
    cfg.want_skip = only == NULL && !cfg.no_skip;
    cfg.want_cont = only == NULL && !cfg.no_cont;
    if (only != NULL) {
        char *list = strdup(only), *save = NULL, *tok;
        for (tok = strtok_r(list, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
            int found = 0;
            for (j = 0; j < NOPS; j++)
                if (strcmp(tok, OPS[j].id) == 0)
                    cfg.want_op[j] = found = 1;
            if (strcmp(tok, "tls") == 0)
                cfg.want_tls = found = !cfg.no_tls;
            if (strcmp(tok, "nginx") == 0)
                cfg.want_nginx = found = !cfg.no_tls;
            if (strcmp(tok, "skip") == 0)
                cfg.want_skip = found = !cfg.no_skip;
            if (strcmp(tok, "contention") == 0)
                cfg.want_cont = found = !cfg.no_cont;
            if (!found && strcmp(tok, "tls") != 0 && strcmp(tok, "nginx") != 0 && strcmp(tok, "skip") != 0 && strcmp(tok, "contention") != 0)
                usage();
        }
        free(list);
    }
}

/* ------------------------------------------------------------------ variants and keys */

typedef struct {
    int available;
    char why[REASON];          /* why not available */
    OSSL_LIB_CTX *lib;         /* NULL: the default library context (engine keys) */
    ENGINE *engine;
    EVP_PKEY *key[NKEYS];
    char key_why[NKEYS][REASON];
    EVP_PKEY *peer;            /* the ECDH peer's public key, parsed in lib */
    char source[NKEYS][4096];  /* where each key is loaded from: PEM path, sks: or pkcs11: URI */
    char p256_sha256[128];     /* sks:sha256= of the P-256 certificate (sks variants) */
    char device[4200];         /* SKS_DEVICE of an sks variant: a forked child reads it again */
} variant;

static variant V[NVARIANTS];

static EVP_PKEY *load_pem_key(OSSL_LIB_CTX *lib, const char *path)
{
    BIO *b = BIO_new_file(path, "r");
    EVP_PKEY *k = b ? PEM_read_bio_PrivateKey_ex(b, NULL, NULL, NULL, lib, NULL) : NULL;

    BIO_free(b);
    return k;
}

static EVP_PKEY *load_store_key(OSSL_LIB_CTX *lib, const char *uri)
{
    OSSL_STORE_CTX *s = OSSL_STORE_open_ex(uri, lib, NULL, NULL, NULL, NULL, NULL, NULL);
    EVP_PKEY *key = NULL;

    while (s != NULL && key == NULL && !OSSL_STORE_eof(s)) {
        OSSL_STORE_INFO *i = OSSL_STORE_load(s);
        if (i != NULL && OSSL_STORE_INFO_get_type(i) == OSSL_STORE_INFO_PKEY)
            key = OSSL_STORE_INFO_get1_PKEY(i);
        OSSL_STORE_INFO_free(i);
        if (i == NULL)
            break;
    }
    OSSL_STORE_close(s);
    return key;
}

static void setup_pem(variant *v)
{
    char path[4096], name[64];
    int k;

    v->lib = OSSL_LIB_CTX_new();
    if (v->lib == NULL || OSSL_PROVIDER_load(v->lib, "default") == NULL)
        die("cannot load the default provider");
    for (k = 0; k < NKEYS; k++) {
        fmt(name, sizeof(name), "keys/%s.pem", KEY_NAMES[k]);
        path_in(path, sizeof(path), cfg.dir, name);
        fmt(v->source[k], sizeof(v->source[k]), "%s", path);
        if ((v->key[k] = load_pem_key(v->lib, path)) == NULL)
            die("cannot read %s (made by scripts/bench.sh)", path);
    }
    v->available = 1;
}

/* sks:sha256=HEX of keys/p256.crt, the certificate the store holds for p256 (scripts/bench.sh
 * imports it): the URI form that names a key by its certificate's fingerprint. */
static void p256_sha256_uri(char *out, size_t n)
{
    char path[4096];
    unsigned char md[32];
    BIO *b;
    X509 *x;
    unsigned int len = 0, i;
    size_t o;

    path_in(path, sizeof(path), cfg.dir, "keys/p256.crt");
    b = BIO_new_file(path, "r");
    x = b != NULL ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    if (x == NULL || X509_digest(x, EVP_sha256(), md, &len) != 1 || len != 32)
        die("cannot read the certificate %s", path);
    X509_free(x);
    o = (size_t)fmt(out, n, "sks:sha256=");
    for (i = 0; i < len && o + 2 < n; i++, o += 2)
        fmt(out + o, n - o, "%02x", md[i]);
}

/* A provider variant: its own library context with default and sks, on `device`. */
static void setup_sks(variant *v, const char *device, double patience)
{
    char uri[4200];
    int k, loaded = 0;
    double deadline = now() + patience;

    /* Read by the provider instance of this context when it first reaches the device. */
    fmt(v->device, sizeof(v->device), "%s", device);
    setenv("SKS_DEVICE", device, 1);
    v->lib = OSSL_LIB_CTX_new();
    if (v->lib == NULL || !OSSL_PROVIDER_set_default_search_path(v->lib, cfg.modules)
        || OSSL_PROVIDER_load(v->lib, "default") == NULL || OSSL_PROVIDER_load(v->lib, "sks") == NULL) {
        openssl_reason(v->why, sizeof(v->why), "cannot load the sks provider");
        return;
    }
    for (k = 0; k < NKEYS; k++) {
        if (cfg.sks_pin_file != NULL)
            fmt(uri, sizeof(uri), "sks:name=%s?pin-source=file:%s", KEY_NAMES[k], cfg.sks_pin_file);
        else
            fmt(uri, sizeof(uri), "sks:name=%s", KEY_NAMES[k]);
        fmt(v->source[k], sizeof(v->source[k]), "%s", uri);
        /* A card may still be on its way into the reader: retry the first key a while. */
        while ((v->key[k] = load_store_key(v->lib, uri)) == NULL && !loaded && now() < deadline) {
            ERR_clear_error();
            usleep(200000);
        }
        if (v->key[k] == NULL)
            openssl_reason(v->key_why[k], REASON, "cannot load the key");
        else
            loaded++;
    }
    unsetenv("SKS_DEVICE");
    p256_sha256_uri(v->p256_sha256, sizeof(v->p256_sha256));
    if (!loaded)
        fmt(v->why, sizeof(v->why), "%s", v->key_why[0]);
    v->available = loaded > 0;
}

static void setup_engine(variant *v)
{
    char uri[256];
    int k, loaded = 0;

    ENGINE_load_dynamic();
    v->engine = ENGINE_by_id("dynamic");
    if (v->engine == NULL || !ENGINE_ctrl_cmd_string(v->engine, "SO_PATH", cfg.pkcs11_engine, 0)
        || !ENGINE_ctrl_cmd_string(v->engine, "ID", "pkcs11", 0)
        || !ENGINE_ctrl_cmd_string(v->engine, "LIST_ADD", "1", 0)
        || !ENGINE_ctrl_cmd_string(v->engine, "LOAD", NULL, 0)
        || !ENGINE_ctrl_cmd_string(v->engine, "MODULE_PATH", cfg.pkcs11, 0)
        || !ENGINE_ctrl_cmd_string(v->engine, "PIN", cfg.pkcs11_pin, 0) || !ENGINE_init(v->engine)) {
        openssl_reason(v->why, sizeof(v->why), "cannot load libp11's engine");
        return;
    }
    for (k = 0; k < NKEYS; k++) {
        fmt(uri, sizeof(uri), "pkcs11:token=%s;object=%s;type=private", cfg.pkcs11_token, KEY_NAMES[k]);
        fmt(v->source[k], sizeof(v->source[k]), "%s", uri);
        v->key[k] = ENGINE_load_private_key(v->engine, uri, NULL, NULL);
        if (v->key[k] == NULL) {
            ERR_clear_error();
            if (k == K_ED25519)
                fmt(v->key_why[k], REASON, "libp11 0.4 has no EdDSA");
            else
                fmt(v->key_why[k], REASON, "libp11 cannot load the %s key from the token", KEY_NAMES[k]);
        } else {
            loaded++;
        }
    }
    v->lib = NULL;
    v->available = loaded > 0;
    if (!loaded)
        fmt(v->why, sizeof(v->why), "no key could be loaded through libp11");
}

/* ------------------------------------------------------------------ the operations */

static unsigned char MSG[130];      /* about what TLS 1.3 signs in CertificateVerify */
static unsigned char SECRET[32];    /* OAEP plaintext */
static unsigned char OAEP_CT[256];  /* its ciphertext under the RSA key */
static size_t OAEP_CT_LEN;
static unsigned char PEER_DER[128]; /* ECDH peer public key (SubjectPublicKeyInfo) */
static size_t PEER_DER_LEN;
static unsigned char ECDH_Z[64];    /* the expected shared secret */
static size_t ECDH_Z_LEN;

static int digest_sign(OSSL_LIB_CTX *lib, EVP_PKEY *key, const char *md, int pad, unsigned char *sig, size_t *siglen)
{
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pc = NULL;
    int ok = m != NULL && EVP_DigestSignInit_ex(m, &pc, md, lib, NULL, key, NULL) == 1
             && (pad == 0
                 || (EVP_PKEY_CTX_set_rsa_padding(pc, pad) == 1
                     && (pad != RSA_PKCS1_PSS_PADDING
                         || EVP_PKEY_CTX_set_rsa_pss_saltlen(pc, RSA_PSS_SALTLEN_DIGEST) == 1)))
             && EVP_DigestSign(m, sig, siglen, MSG, sizeof(MSG)) == 1;

    EVP_MD_CTX_free(m);
    return ok;
}

/* Loads `key` again from where the variant found it (as a server loading its key per
 * connection or per worker does); *outlen = 0, no output to check but the key's size. */
static int load_again(const variant *v, EVP_PKEY *key, int by_sha256, size_t *outlen)
{
    int k = key == v->key[K_P256] ? K_P256 : key == v->key[K_RSA] ? K_RSA : key == v->key[K_P384] ? K_P384 : K_ED25519;
    EVP_PKEY *again;
    int ok;

    if (v->engine != NULL)
        again = ENGINE_load_private_key(v->engine, v->source[k], NULL, NULL);
    else if (strncmp(v->source[k], "sks:", 4) == 0)
        again = load_store_key(v->lib, by_sha256 && k == K_P256 ? v->p256_sha256 : v->source[k]);
    else
        again = load_pem_key(v->lib, v->source[k]);
    ok = again != NULL && EVP_PKEY_get_bits(again) == EVP_PKEY_get_bits(key);
    EVP_PKEY_free(again);
    *outlen = 0;
    return ok;
}

/* One whole operation of kind op with key; its output in out. */
static int run_op(int op, const variant *v, EVP_PKEY *key, unsigned char *out, size_t *outlen)
{
    EVP_PKEY_CTX *c = NULL;
    int ok = 0;

    switch (op) {
    case OP_P256:
        return digest_sign(v->lib, key, "SHA256", 0, out, outlen);
    case OP_P384:
        return digest_sign(v->lib, key, "SHA384", 0, out, outlen);
    case OP_RSA_PKCS1:
        return digest_sign(v->lib, key, "SHA256", RSA_PKCS1_PADDING, out, outlen);
    case OP_RSA_PSS:
        return digest_sign(v->lib, key, "SHA256", RSA_PKCS1_PSS_PADDING, out, outlen);
    case OP_ED25519:
        return digest_sign(v->lib, key, NULL, 0, out, outlen);
    case OP_ECDH:
        c = EVP_PKEY_CTX_new_from_pkey(v->lib, key, NULL);
        ok = c != NULL && EVP_PKEY_derive_init(c) == 1 && EVP_PKEY_derive_set_peer(c, v->peer) == 1
             && EVP_PKEY_derive(c, out, outlen) == 1;
        break;
    case OP_OAEP:
        c = EVP_PKEY_CTX_new_from_pkey(v->lib, key, NULL);
        ok = c != NULL && EVP_PKEY_decrypt_init(c) == 1 && EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_OAEP_PADDING) == 1
             && EVP_PKEY_CTX_set_rsa_oaep_md(c, EVP_sha256()) == 1 && EVP_PKEY_CTX_set_rsa_mgf1_md(c, EVP_sha256()) == 1
             && EVP_PKEY_decrypt(c, out, outlen, OAEP_CT, OAEP_CT_LEN) == 1;
        break;
    case OP_LOAD:
    case OP_LOAD_SHA256:
        return load_again(v, key, op == OP_LOAD_SHA256, outlen);
    }
    EVP_PKEY_CTX_free(c);
    return ok;
}

/* Checks one result of a variant with the default provider and the PEM key. */
static int result_ok(int op, const unsigned char *out, size_t len)
{
    const variant *a = &V[V_A];
    EVP_PKEY *key = a->key[OPS[op].key];
    EVP_MD_CTX *m;
    EVP_PKEY_CTX *pc = NULL;
    const char *md = op == OP_P384 ? "SHA384" : op == OP_ED25519 ? NULL : "SHA256";
    int ok;

    if (op == OP_ECDH)
        return len == ECDH_Z_LEN && memcmp(out, ECDH_Z, len) == 0;
    if (op == OP_OAEP)
        return len == sizeof(SECRET) && memcmp(out, SECRET, len) == 0;
    if (op == OP_LOAD || op == OP_LOAD_SHA256)
        return 1; /* load_again compared the key's size */
    m = EVP_MD_CTX_new();
    ok = m != NULL && EVP_DigestVerifyInit_ex(m, &pc, md, a->lib, NULL, key, NULL) == 1
         && (op != OP_RSA_PSS
             || (EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PSS_PADDING) == 1
                 && EVP_PKEY_CTX_set_rsa_pss_saltlen(pc, RSA_PSS_SALTLEN_DIGEST) == 1))
         && EVP_DigestVerify(m, out, len, MSG, sizeof(MSG)) == 1;
    EVP_MD_CTX_free(m);
    return ok;
}

static void prepare_inputs(void)
{
    variant *a = &V[V_A];
    EVP_PKEY *peer = NULL;
    EVP_PKEY_CTX *c;
    unsigned char *p = PEER_DER;
    int n;

    if (RAND_bytes(MSG, sizeof(MSG)) != 1 || RAND_bytes(SECRET, sizeof(SECRET)) != 1)
        die("no random bytes");
    /* OAEP ciphertext with the public half */
    c = EVP_PKEY_CTX_new_from_pkey(a->lib, a->key[K_RSA], NULL);
    OAEP_CT_LEN = sizeof(OAEP_CT);
    if (c == NULL || EVP_PKEY_encrypt_init(c) != 1 || EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_OAEP_PADDING) != 1
        || EVP_PKEY_CTX_set_rsa_oaep_md(c, EVP_sha256()) != 1 || EVP_PKEY_CTX_set_rsa_mgf1_md(c, EVP_sha256()) != 1
        || EVP_PKEY_encrypt(c, OAEP_CT, &OAEP_CT_LEN, SECRET, sizeof(SECRET)) != 1)
        die("cannot make the OAEP ciphertext");
    EVP_PKEY_CTX_free(c);
    /* the ECDH peer, and the secret the PEM key derives with it */
    peer = EVP_PKEY_Q_keygen(a->lib, NULL, "EC", "P-256");
    if (peer == NULL || (n = i2d_PUBKEY(peer, NULL)) <= 0 || (size_t)n > sizeof(PEER_DER) || i2d_PUBKEY(peer, &p) != n)
        die("cannot make the ECDH peer");
    PEER_DER_LEN = (size_t)n;
    EVP_PKEY_free(peer);
}

static void make_peer(variant *v)
{
    const unsigned char *p = PEER_DER;

    v->peer = d2i_PUBKEY_ex(NULL, &p, (long)PEER_DER_LEN, v->lib, NULL);
    if (v->peer == NULL)
        die("cannot parse the ECDH peer key");
}

/* ------------------------------------------------------------------ measuring the operations */

typedef struct {
    int ok;              /* measured */
    char why[REASON];    /* else why not */
    long batch;          /* operations per batch */
    int n;               /* rounds measured */
    double rate[MAX_ROUNDS];
} cell;

static cell CELLS[NOPS][NVARIANTS];

/* Runs n operations; the time they took, or -1 on a failure (reason in why). */
static double run_batch(int op, const variant *v, long n, char *why)
{
    unsigned char out[1024];
    EVP_PKEY *key = v->key[OPS[op].key];
    double t0 = now();
    long i;

    for (i = 0; i < n; i++) {
        size_t len = sizeof(out);
        if (!run_op(op, v, key, out, &len)) {
            openssl_reason(why, REASON, "failed while measuring");
            return -1;
        }
    }
    return now() - t0;
}

/* Checks the variant's result once, then sizes its batch to about cfg.seconds. */
static void calibrate(int op, int vi)
{
    const variant *v = &V[vi];
    cell *c = &CELLS[op][vi];
    unsigned char out[1024];
    size_t len = sizeof(out);
    double t, per_op;
    long n = 1;

    if (!cfg.want_variant[vi]) {
        fmt(c->why, REASON, "not run");
        return;
    }
    if (!v->available) {
        fmt(c->why, REASON, "n/a (%s)", v->why);
        return;
    }
    if (v->key[OPS[op].key] == NULL) {
        fmt(c->why, REASON, "n/a (%s)", v->key_why[OPS[op].key]);
        return;
    }
    if (!run_op(op, v, v->key[OPS[op].key], out, &len)) {
        char r[REASON];
        openssl_reason(r, sizeof(r), "fails");
        fmt(c->why, REASON, "n/a (%s)", r);
        return;
    }
    if (!result_ok(op, out, len)) {
        fmt(c->why, REASON, "wrong result (does not verify with the default provider)");
        return;
    }
    /* warm up, then grow the batch until it takes a measurable time */
    for (;;) {
        if ((t = run_batch(op, v, n, c->why)) < 0)
            return;
        if (t >= 0.03 || n >= 1L << 24)
            break;
        n *= 4;
    }
    per_op = t / (double)n;
    c->batch = (long)(cfg.seconds / per_op);
    if (c->batch < 1)
        c->batch = 1;
    c->ok = 1;
}

static void measure_ops(void)
{
    int op, vi, r, i, any = 0;

    for (op = 0; op < NOPS; op++) {
        if (!cfg.want_op[op])
            continue;
        any = 1;
        for (vi = 0; vi < NVARIANTS; vi++)
            calibrate(op, vi);
    }
    if (!any)
        return;
    for (r = 0; r < cfg.rounds; r++) {
        note("\rround %d/%d ", r + 1, cfg.rounds);
        for (op = 0; op < NOPS; op++) {
            if (!cfg.want_op[op])
                continue;
            for (i = 0; i < NVARIANTS; i++) {
                cell *c;
                double t;
                vi = (i + r) % NVARIANTS; /* a rotating order: no variant always goes first */
                c = &CELLS[op][vi];
                if (!c->ok)
                    continue;
                if ((t = run_batch(op, &V[vi], c->batch, c->why)) < 0) {
                    c->ok = 0;
                    continue;
                }
                c->rate[c->n++] = (double)c->batch / t;
            }
        }
    }
    note("\n");
}

/* CPU time of this process (all threads), in seconds. */
static double cpu_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* --profile X:OP: one operation on one variant, in a loop, for a profiler. */
static int profile_one(void)
{
    int op, vi = cfg.profile[0] - 'a';
    long n = 0;
    double t0, t, c0, c;
    char why[REASON];

    for (op = 0; op < NOPS; op++)
        if (strcmp(cfg.profile + 2, OPS[op].id) == 0)
            break;
    if (vi < 0 || vi >= NVARIANTS || cfg.profile[1] != ':' || op == NOPS)
        usage();
    if (!V[vi].available || V[vi].key[OPS[op].key] == NULL)
        die("variant %c is not available: %s", cfg.profile[0], V[vi].why);
    if (cfg.count > 0) {
        unsigned char out[1024];
        for (n = 0; n < 50; n++) { /* outside run_batch: not counted by --toggle-collect=run_batch */
            size_t len = sizeof(out);
            if (!run_op(op, &V[vi], V[vi].key[OPS[op].key], out, &len))
                die("%s fails", OPS[op].id);
        }
        t0 = now();
        if (run_batch(op, &V[vi], cfg.count, why) < 0)
            die("%s", why);
        t = now() - t0;
        printf("%s, variant %c: %ld operations in %.2f s, %.0f/s\n", OPS[op].id, cfg.profile[0], cfg.count, t,
               (double)cfg.count / t);
        return 0;
    }
    c0 = cpu_now();
    t0 = now();
    do {
        if (run_batch(op, &V[vi], 100, why) < 0)
            die("%s", why);
        n += 100;
    } while ((t = now() - t0) < cfg.seconds);
    /* per CPU-second too: on a shared machine, less noisy than the wall clock */
    c = cpu_now() - c0;
    printf("%s, variant %c: %ld operations in %.2f s, %.0f/s, %.0f per CPU-second\n", OPS[op].id, cfg.profile[0], n, t,
           (double)n / t, c > 0 ? (double)n / c : 0.0);
    return 0;
}

/* ------------------------------------------------------------------ TLS handshakes */

enum { T_FILE, T_SKS, T_SKSD, T_LIBP11, NTLS };
static const char *const TLS_TITLES[NTLS] = { "key in a PEM file", "sks in-process", "sks via sksd",
                                              "libp11 + SoftHSM2" };

typedef struct {
    int ok;
    char why[REASON];
    pid_t pid;
    int port;
    long batch;
    int n;
    double rate[MAX_ROUNDS];
} tls_server;

static tls_server TLS[NTLS];
static SSL_CTX *tls_client;

static int free_port(void)
{
    struct sockaddr_in a;
    socklen_t len = sizeof(a);
    int s = socket(AF_INET, SOCK_STREAM, 0), port = -1;

    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (s >= 0 && bind(s, (struct sockaddr *)&a, sizeof(a)) == 0 && getsockname(s, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (s >= 0)
        close(s);
    return port;
}

/* One full TLS 1.3 handshake (no session to resume), then a clean close. */
static int handshake(int port)
{
    struct sockaddr_in a;
    struct linger lg = { 1, 0 };
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1, ok = 0;
    SSL *ssl = NULL;
    char buf[256];

    if (s < 0)
        return 0;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(s, (struct sockaddr *)&a, sizeof(a)) != 0 || (ssl = SSL_new(tls_client)) == NULL
        || SSL_set_fd(ssl, s) != 1 || SSL_connect(ssl) != 1)
        goto done;
    ok = 1;
    /* close_notify, then wait for the server to close: the next handshake finds it idle */
    SSL_shutdown(ssl);
    while (recv(s, buf, sizeof(buf), 0) > 0)
        ;
done:
    SSL_free(ssl);
    setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)); /* no TIME_WAIT pile-up */
    close(s);
    return ok;
}

static void start_server(int t)
{
    tls_server *sv = &TLS[t];
    char cert[4096], key[4096], log[4096], accept_arg[32], device[4200], modules[4200], conf[4200], cnf[4096];
    char *argv[32], *env[8];
    int a = 0, e = 0;
    double deadline;

    path_in(cert, sizeof(cert), cfg.dir, "keys/p256.crt");
    fmt(log, sizeof(log), "%s/s_server.%d.log", cfg.dir, t);
    if ((sv->port = free_port()) < 0) {
        fmt(sv->why, REASON, "n/a (no free port)");
        return;
    }
    fmt(accept_arg, sizeof(accept_arg), "127.0.0.1:%d", sv->port);
    argv[a++] = "openssl";
    argv[a++] = "s_server";
    argv[a++] = "-accept";
    argv[a++] = accept_arg;
    argv[a++] = "-cert";
    argv[a++] = cert;
    argv[a++] = "-tls1_3";
    argv[a++] = "-num_tickets";
    argv[a++] = "0";
    argv[a++] = "-www";
    argv[a++] = "-quiet";
    argv[a++] = "-key";
    fmt(modules, sizeof(modules), "OPENSSL_MODULES=%s", cfg.modules);
    switch (t) {
    case T_FILE:
        path_in(key, sizeof(key), cfg.dir, "keys/p256.pem");
        argv[a++] = key;
        break;
    case T_SKS:
    case T_SKSD:
        argv[a++] = "sks:name=p256";
        argv[a++] = "-provider";
        argv[a++] = "default";
        argv[a++] = "-provider";
        argv[a++] = "sks";
        if (t == T_SKS)
            fmt(device, sizeof(device), "SKS_DEVICE=file:%s/store.db", cfg.dir);
        else
            fmt(device, sizeof(device), "SKS_DEVICE=unix:%s/sksd.sock", cfg.dir);
        env[e++] = device;
        env[e++] = modules;
        break;
    case T_LIBP11:
        fmt(key, sizeof(key), "pkcs11:token=%s;object=p256;type=private;pin-value=%s", cfg.pkcs11_token,
                 cfg.pkcs11_pin);
        argv[a++] = key;
        argv[a++] = "-keyform";
        argv[a++] = "engine";
        argv[a++] = "-engine";
        argv[a++] = "pkcs11";
        path_in(cnf, sizeof(cnf), cfg.dir, "pkcs11.cnf");
        fmt(conf, sizeof(conf), "OPENSSL_CONF=%s", cnf);
        env[e++] = conf;
        break;
    }
    argv[a] = NULL;
    env[e] = NULL;
    sv->pid = spawn_bg(argv, env, log);
    if (sv->pid < 0) {
        fmt(sv->why, REASON, "n/a (cannot start openssl s_server)");
        return;
    }
    deadline = now() + 10;
    while (!handshake(sv->port)) {
        int st;
        ERR_clear_error();
        if (waitpid(sv->pid, &st, WNOHANG) == sv->pid || now() > deadline) {
            fmt(sv->why, REASON, "n/a (s_server did not come up: see %s)", log);
            if (now() > deadline)
                kill(sv->pid, SIGTERM);
            sv->pid = -1;
            return;
        }
        usleep(50000);
    }
    sv->ok = 1;
}

static double tls_batch(tls_server *sv, long n)
{
    double t0 = now();
    long i;

    for (i = 0; i < n; i++)
        if (!handshake(sv->port)) {
            openssl_reason(sv->why, REASON, "handshake failed");
            return -1;
        }
    return now() - t0;
}

static void measure_tls(void)
{
    int t, r, i;
    char path[4096];
    struct stat st;

    tls_client = SSL_CTX_new(TLS_client_method());
    if (tls_client == NULL || !SSL_CTX_set_min_proto_version(tls_client, TLS1_3_VERSION))
        die("cannot make the TLS client");
    SSL_CTX_set_verify(tls_client, SSL_VERIFY_NONE, NULL); /* CertificateVerify is still checked */
    SSL_CTX_set_session_cache_mode(tls_client, SSL_SESS_CACHE_OFF);
    for (t = 0; t < NTLS; t++) {
        static const int VARIANT_OF[NTLS] = { V_A, V_B, V_C, V_E };
        if (!cfg.want_variant[VARIANT_OF[t]]) {
            fmt(TLS[t].why, REASON, "not run");
            continue;
        }
        if (t == T_SKSD) {
            path_in(path, sizeof(path), cfg.dir, "sksd.sock");
            if (cfg.na[V_C][0] || stat(path, &st) != 0) {
                fmt(TLS[t].why, REASON, "n/a (%s)", cfg.na[V_C][0] ? cfg.na[V_C] : "no sksd");
                continue;
            }
        }
        if (t == T_LIBP11 && (cfg.pkcs11 == NULL || !V[V_E].available || V[V_E].key[K_P256] == NULL)) {
            fmt(TLS[t].why, REASON, "n/a (%s)", cfg.na[V_E][0] ? cfg.na[V_E] : "libp11 variant not available");
            continue;
        }
        start_server(t);
    }
    for (t = 0; t < NTLS; t++) {
        double d;
        long n = 4;
        if (!TLS[t].ok)
            continue;
        while ((d = tls_batch(&TLS[t], n)) >= 0 && d < 0.05)
            n *= 2;
        if (d < 0) {
            TLS[t].ok = 0;
            continue;
        }
        TLS[t].batch = (long)(cfg.seconds * 1.5 * (double)n / d) + 1;
    }
    for (r = 0; r < cfg.rounds; r++) {
        note("\rTLS round %d/%d ", r + 1, cfg.rounds);
        for (i = 0; i < NTLS; i++) {
            tls_server *sv = &TLS[(i + r) % NTLS];
            double d;
            if (!sv->ok)
                continue;
            if ((d = tls_batch(sv, sv->batch)) < 0) {
                sv->ok = 0;
                continue;
            }
            sv->rate[sv->n++] = (double)sv->batch / d;
        }
    }
    note("\n");
    for (t = 0; t < NTLS; t++)
        if (TLS[t].pid > 0) {
            kill(TLS[t].pid, SIGTERM);
            waitpid(TLS[t].pid, NULL, 0);
        }
    SSL_CTX_free(tls_client);
}

/* ------------------------------------------------------------------ TLS handshakes with nginx */

/*
 * nginx 1.22 (Debian's), started here on 127.0.0.1 with as many workers as cores, its P-256
 * key in the PEM file, as engine:sks:sks:name=p256 with the store in the workers' processes
 * (OPENSSL_CONF: the sks provider and engine, sks-store), and the same through sksd
 * (sks-device = unix:). nginx 1.22 takes a key from a file or an ENGINE only, hence the engine,
 * which hands the key to the provider. The load: twice as many client processes as cores (forks
 * of this process), each making full TLS 1.3 handshakes (no tickets, no session cache, X25519)
 * back to back, so the workers always find a connection waiting. The clients share the cores
 * with the server, so their CPU per handshake is reported beside the server's (nginx workers,
 * plus sksd for the sksd variant when DIR/sksd.pid names it). Variants rotate per round.
 */
static void fmt_rate(char *out, size_t n, double r);
static double ratio(const double *x, int nx, const double *a, int na);

enum { N_FILE, N_SKS, N_SKSD, NNGX };
static const char *const NGX_TITLES[NNGX] = { "key in a PEM file", "sks in-process", "sks via sksd" };

typedef struct {
    int ok;
    char why[REASON];
    pid_t pid;
    int port, n;
    double rate[MAX_ROUNDS];
    double srv_cpu[MAX_ROUNDS], cli_cpu[MAX_ROUNDS]; /* µs of CPU per handshake */
    double switches[MAX_ROUNDS];                     /* context switches per handshake, whole machine */
    double sksd_cpu[MAX_ROUNDS];                     /* µs of sksd's CPU per handshake (in srv_cpu) */
} ngx_server;

static ngx_server NGX[NNGX];
static int ngx_clients;

#define NGINX "/usr/sbin/nginx"

/* utime + stime of a process, seconds; 0 if it is gone. */
static double proc_cpu(pid_t pid)
{
    char path[64], buf[1024], *p;
    unsigned long long ut = 0, st = 0;
    FILE *f;
    int i;

    fmt(path, sizeof(path), "/proc/%d/stat", (int)pid);
    if ((f = fopen(path, "r")) == NULL)
        return 0;
    p = fgets(buf, sizeof(buf), f);
    fclose(f);
    if (p == NULL || (p = strrchr(buf, ')')) == NULL)
        return 0;
    /* after "(comm)": state is field 3; utime and stime are fields 14 and 15 */
    for (i = 3; i <= 13 && p != NULL; i++)
        p = strchr(p + 1, ' ');
    if (p == NULL || sscanf(p, " %llu %llu", &ut, &st) != 2)
        return 0;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* Context switches of the whole machine so far (/proc/stat ctxt); 0 if unknown. */
static unsigned long long machine_switches(void)
{
    char line[256];
    unsigned long long v = 0;
    FILE *f = fopen("/proc/stat", "r");

    while (f != NULL && fgets(line, sizeof(line), f) != NULL)
        if (sscanf(line, "ctxt %llu", &v) == 1)
            break;
    if (f != NULL)
        fclose(f);
    return v;
}

/* CPU of nginx: its master and workers (the master's children). */
static double ngx_cpu(const ngx_server *sv)
{
    char path[64], buf[4096];
    double sum = proc_cpu(sv->pid);
    FILE *f;
    char *tok, *save = NULL;

    fmt(path, sizeof(path), "/proc/%d/task/%d/children", (int)sv->pid, (int)sv->pid);
    if ((f = fopen(path, "r")) != NULL) {
        if (fgets(buf, sizeof(buf), f) != NULL)
            for (tok = strtok_r(buf, " \n", &save); tok != NULL; tok = strtok_r(NULL, " \n", &save))
                sum += proc_cpu((pid_t)atoi(tok));
        fclose(f);
    }
    return sum;
}

static int write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    int ok = f != NULL && fputs(text, f) >= 0;

    if (f != NULL && fclose(f) != 0)
        ok = 0;
    return ok;
}

static void start_nginx(int t, int workers)
{
    ngx_server *sv = &NGX[t];
    char d[4096], conf[4096], cnf[4096], log[4096], text[16384], key[4200], cert[4096], envc[4200], err[4200];
    char *argv[12], *env[2] = { NULL, NULL };
    double deadline;

    fmt(d, sizeof(d), "%s/nginx-%d", cfg.dir, t);
    if (mkdir(d, 0700) != 0 && errno != EEXIST) {
        fmt(sv->why, REASON, "n/a (cannot make %s)", d);
        return;
    }
    if ((sv->port = free_port()) < 0) {
        fmt(sv->why, REASON, "n/a (no free port)");
        return;
    }
    path_in(cert, sizeof(cert), cfg.dir, "keys/p256.crt");
    if (t == N_FILE) {
        path_in(key, sizeof(key), cfg.dir, "keys/p256.pem");
    } else {
        /* what openssl.cnf.d/sks-provider.cnf and sks-engine.cnf say, with this build's paths */
        char device[4200];
        if (t == N_SKS)
            fmt(device, sizeof(device), "sks-store = %s/store.db", cfg.dir);
        else
            fmt(device, sizeof(device), "sks-device = unix:%s/sksd.sock", cfg.dir);
        fmt(text, sizeof(text),
            "openssl_conf = openssl_init\n[openssl_init]\nproviders = provider_section\nengines = engine_section\n"
            "[provider_section]\ndefault = default_section\nsks = sks_section\n[default_section]\nactivate = 1\n"
            "[sks_section]\nactivate = 1\nmodule = %s/sks.so\n%s\n"
            "[engine_section]\nsks = sks_engine_section\n[sks_engine_section]\ndynamic_path = %s/engines/sks.so\n"
            "engine_id = sks\ninit = 1\n",
            cfg.modules, device, cfg.modules);
        fmt(cnf, sizeof(cnf), "%s/openssl.cnf", d);
        if (!write_text(cnf, text)) {
            fmt(sv->why, REASON, "n/a (cannot write %s)", cnf);
            return;
        }
        fmt(envc, sizeof(envc), "OPENSSL_CONF=%s", cnf);
        env[0] = envc;
        fmt(key, sizeof(key), "engine:sks:sks:name=p256");
    }
    fmt(text, sizeof(text),
        "daemon off;\nmaster_process on;\nworker_processes %d;\n%s\npid %s/nginx.pid;\nerror_log %s/error.log warn;\n"
        "events { worker_connections 1024; }\n"
        "http {\n  client_body_temp_path %s/tmp-body;\n  proxy_temp_path %s/tmp-proxy;\n"
        "  fastcgi_temp_path %s/tmp-fastcgi;\n  uwsgi_temp_path %s/tmp-uwsgi;\n  scgi_temp_path %s/tmp-scgi;\n"
        "  access_log off;\n  server {\n    listen 127.0.0.1:%d ssl;\n    ssl_certificate %s;\n"
        "    ssl_certificate_key %s;\n    ssl_protocols TLSv1.3;\n    ssl_ecdh_curve X25519;\n"
        "    ssl_session_cache off;\n    ssl_session_tickets off;\n    location / { return 200 \"ok\\n\"; }\n  }\n}\n",
        workers, geteuid() == 0 ? "user root;" : "", d, d, d, d, d, d, d, sv->port, cert, key);
    fmt(conf, sizeof(conf), "%s/nginx.conf", d);
    fmt(log, sizeof(log), "%s/nginx.out", d);
    fmt(err, sizeof(err), "%s/error.log", d);
    if (!write_text(conf, text)) {
        fmt(sv->why, REASON, "n/a (cannot write %s)", conf);
        return;
    }
    argv[0] = NGINX;
    argv[1] = "-p";
    argv[2] = d;
    argv[3] = "-c";
    argv[4] = conf;
    argv[5] = "-e";
    argv[6] = err;
    argv[7] = NULL;
    if ((sv->pid = spawn_bg(argv, env, log)) < 0) {
        fmt(sv->why, REASON, "n/a (cannot start nginx)");
        return;
    }
    deadline = now() + 10;
    while (!handshake(sv->port)) {
        int st;
        ERR_clear_error();
        if (waitpid(sv->pid, &st, WNOHANG) == sv->pid || now() > deadline) {
            fmt(sv->why, REASON, "n/a (nginx did not come up: see %s)", err);
            if (now() > deadline)
                kill(sv->pid, SIGTERM);
            sv->pid = -1;
            return;
        }
        usleep(50000);
    }
    sv->ok = 1;
}

typedef struct {
    long n;
    double secs, cpu;
} ngx_result;

/* One client process: ready, wait for go, handshakes for secs, result to out. */
static void ngx_client(int port, int ready, int go, int out, double secs)
{
    ngx_result res = { 0, 0, 0 };
    char c = 1;
    double t0, c0;

    if (!handshake(port) || write(ready, &c, 1) != 1)
        _exit(1);
    close(ready);
    if (read(go, &c, 1) < 0)
        _exit(1);
    t0 = now();
    c0 = cpu_now();
    do {
        if (!handshake(port))
            _exit(1);
        res.n++;
    } while ((res.secs = now() - t0) < secs);
    res.cpu = cpu_now() - c0;
    _exit(write(out, &res, sizeof(res)) == (ssize_t)sizeof(res) ? 0 : 1);
}

/* One batch on sv: handshakes/s of all clients together, CPU per handshake; 0 on failure. */
static int ngx_batch(ngx_server *sv, double secs, pid_t sksd)
{
    int ready[2], go[2], out[2], i, started = 0, failed = 0;
    pid_t pids[256];
    ngx_result r;
    long total = 0;
    double longest = 0, cli = 0, s0, s1, d0, d1;
    unsigned long long x0, x1;
    char c;

    if (pipe(ready) != 0 || pipe(go) != 0 || pipe(out) != 0)
        die("pipe: %s", strerror(errno));
    for (i = 0; i < ngx_clients; i++) {
        if ((pids[i] = fork()) == 0) {
            close(ready[0]);
            close(go[1]);
            close(out[0]);
            ngx_client(sv->port, ready[1], go[0], out[1], secs);
        }
        if (pids[i] < 0)
            failed = 1;
        else
            started++;
    }
    close(ready[1]);
    close(go[0]);
    close(out[1]);
    for (i = 0; i < started; i++)
        if (read(ready[0], &c, 1) != 1)
            failed = 1;
    d0 = sksd > 0 ? proc_cpu(sksd) : 0;
    s0 = ngx_cpu(sv) + d0; /* the server side: nginx, and sksd when it serves the key */
    x0 = machine_switches();
    close(go[1]);
    for (i = 0; i < started; i++) {
        if (read(out[0], &r, sizeof(r)) != (ssize_t)sizeof(r)) {
            failed = 1;
            continue;
        }
        total += r.n;
        cli += r.cpu;
        if (r.secs > longest)
            longest = r.secs;
    }
    d1 = sksd > 0 ? proc_cpu(sksd) : 0;
    s1 = ngx_cpu(sv) + d1;
    x1 = machine_switches();
    for (i = 0; i < ngx_clients; i++) {
        int st;
        if (pids[i] > 0 && (waitpid(pids[i], &st, 0) != pids[i] || !WIFEXITED(st) || WEXITSTATUS(st) != 0))
            failed = 1;
    }
    close(ready[0]);
    close(out[0]);
    if (failed || total == 0 || longest <= 0)
        return 0;
    sv->rate[sv->n] = (double)total / longest;
    sv->srv_cpu[sv->n] = (s1 - s0) * 1e6 / (double)total;
    sv->cli_cpu[sv->n] = cli * 1e6 / (double)total;
    sv->switches[sv->n] = (double)(x1 - x0) / (double)total;
    sv->sksd_cpu[sv->n] = (d1 - d0) * 1e6 / (double)total;
    sv->n++;
    return 1;
}

static void measure_nginx(void)
{
    int cores = (int)sysconf(_SC_NPROCESSORS_ONLN), t, r, i;
    double secs = cfg.seconds < 0.3 ? 0.3 : cfg.seconds;
    char path[4096];
    pid_t sksd = -1;
    struct stat st;
    FILE *f;

    if (cores < 1)
        cores = 1;
    ngx_clients = 2 * cores > 256 ? 256 : 2 * cores;
    tls_client = SSL_CTX_new(TLS_client_method());
    if (tls_client == NULL || !SSL_CTX_set_min_proto_version(tls_client, TLS1_3_VERSION)
        || !SSL_CTX_set1_groups_list(tls_client, "X25519"))
        die("cannot make the TLS client");
    SSL_CTX_set_verify(tls_client, SSL_VERIFY_NONE, NULL); /* CertificateVerify is still checked */
    SSL_CTX_set_session_cache_mode(tls_client, SSL_SESS_CACHE_OFF);
    path_in(path, sizeof(path), cfg.dir, "sksd.pid");
    if ((f = fopen(path, "r")) != NULL) {
        int p;
        if (fscanf(f, "%d", &p) == 1)
            sksd = (pid_t)p;
        fclose(f);
    }
    for (t = 0; t < NNGX; t++) {
        static const int VARIANT_OF[NNGX] = { V_A, V_B, V_C };
        if (!cfg.want_variant[VARIANT_OF[t]]) {
            fmt(NGX[t].why, REASON, "not run");
            continue;
        }
        if (access(NGINX, X_OK) != 0) {
            fmt(NGX[t].why, REASON, "n/a (no %s: apt-get install nginx-light)", NGINX);
            continue;
        }
        if (t == N_SKSD) {
            path_in(path, sizeof(path), cfg.dir, "sksd.sock");
            if (cfg.na[V_C][0] || stat(path, &st) != 0) {
                fmt(NGX[t].why, REASON, "n/a (%s)", cfg.na[V_C][0] ? cfg.na[V_C] : "no sksd");
                continue;
            }
        }
        start_nginx(t, cores);
    }
    for (r = 0; r < cfg.rounds; r++) {
        note("\rnginx round %d/%d ", r + 1, cfg.rounds);
        for (i = 0; i < NNGX; i++) {
            ngx_server *sv = &NGX[(i + r) % NNGX];
            if (sv->ok && !ngx_batch(sv, secs, (sv - NGX) == N_SKSD ? sksd : -1)) {
                sv->ok = 0;
                fmt(sv->why, REASON, "failed while measuring");
            }
        }
    }
    note("\n");
    for (t = 0; t < NNGX; t++)
        if (NGX[t].pid > 0) {
            kill(NGX[t].pid, SIGQUIT); /* graceful: the workers finish and exit */
            waitpid(NGX[t].pid, NULL, 0);
        }
    SSL_CTX_free(tls_client);
    tls_client = NULL;
}

static void report_nginx(FILE *out, double *in_proc, double *via_sksd)
{
    int i, cores = ngx_clients / 2;
    char buf[64];

    fprintf(out, "| TLS 1.3 full handshakes/s, nginx (P-256 server key, X25519, %d worker%s, %d client processes on the "
                 "same machine) |", cores, cores == 1 ? "" : "s", ngx_clients);
    for (i = 0; i < NNGX; i++)
        fprintf(out, " %s |", NGX_TITLES[i]);
    fprintf(out, "\n|---|");
    for (i = 0; i < NNGX; i++)
        fprintf(out, "--:|");
    fprintf(out, "\n| handshakes/s |");
    for (i = 0; i < NNGX; i++) {
        const ngx_server *sv = &NGX[i];
        if (sv->n == 0) {
            fprintf(out, " %s |", sv->why[0] ? sv->why : "n/a");
            continue;
        }
        fmt_rate(buf, sizeof(buf), median(sv->rate, sv->n));
        if (i == N_FILE || NGX[N_FILE].n == 0) {
            fprintf(out, " %s |", buf);
        } else {
            double q = ratio(sv->rate, sv->n, NGX[N_FILE].rate, NGX[N_FILE].n);
            fprintf(out, " %s (%.2f×) |", buf, q);
            *(i == N_SKS ? in_proc : via_sksd) = q;
        }
    }
    fprintf(out, "\n| server CPU per handshake (nginx%s), µs |", NGX[N_SKSD].n ? "; sksd's included in its column" : "");
    for (i = 0; i < NNGX; i++)
        fprintf(out, NGX[i].n ? " %.0f |" : " |", median(NGX[i].srv_cpu, NGX[i].n));
    if (NGX[N_SKSD].n > 0 && median(NGX[N_SKSD].sksd_cpu, NGX[N_SKSD].n) > 0) {
        fprintf(out, "\n| of which sksd (its signature, the wake-ups and switches it pays), µs |");
        for (i = 0; i < NNGX; i++)
            fprintf(out, i == N_SKSD ? " %.0f |" : " |", median(NGX[i].sksd_cpu, NGX[i].n));
    }
    fprintf(out, "\n| client CPU per handshake (all client processes), µs |");
    for (i = 0; i < NNGX; i++)
        fprintf(out, NGX[i].n ? " %.0f |" : " |", median(NGX[i].cli_cpu, NGX[i].n));
    fprintf(out, "\n| context switches per handshake, whole machine (`/proc/stat`) |");
    for (i = 0; i < NNGX; i++)
        fprintf(out, NGX[i].n ? " %.1f |" : " |", median(NGX[i].switches, NGX[i].n));
    fprintf(out, "\n\n");
}

/* ------------------------------------------------------------------ SKIP import */

#define SKIP_SIZES 3
static const int SKIP_KEYS[SKIP_SIZES] = { 1, 8, 64 };
#define SKIP_PER_PACKAGE 32 /* docs/skip.md: a package holds 1 to 32 keys */

typedef struct {
    int ok;
    char why[REASON];
    int packages;
    int n;
    double prep[MAX_ROUNDS];   /* request + issue, all packages (ms) */
    double inproc[MAX_ROUNDS]; /* parse + verify + import, in this process (ms) */
    double cli[MAX_ROUNDS];    /* `sks skip import`, every package (ms) */
} skip_row;

static skip_row SKIP[SKIP_SIZES];

/* A fresh store with `keys` keys issued for it in packages of at most 32; the packages'
 * paths go to pkg[]. Returns the number of packages (0 on failure) and the time taken by
 * `sks skip request` and `sks skip issue` in *prep_ms. */
static int skip_prepare(const char *base, int keys, char pkg[][4096], double *prep_ms, char *why)
{
    char store[4096], req[4096], subject[64], ca_key[4096], ca_pem[4096], log[4096];
    char *argv[16 + 2 * SKIP_PER_PACKAGE];
    int p, packages = (keys + SKIP_PER_PACKAGE - 1) / SKIP_PER_PACKAGE, i, a;
    double secs;

    fmt(store, sizeof(store), "%s/store.db", base);
    fmt(log, sizeof(log), "%s/log", base);
    path_in(ca_key, sizeof(ca_key), cfg.dir, "ca.key");
    path_in(ca_pem, sizeof(ca_pem), cfg.dir, "ca.pem");
    if (mkdir(base, 0700) != 0 && errno != EEXIST)
        return 0;
    {
        char *init[] = { (char *)cfg.tool, "--store", store, "init", NULL };
        if (run_cmd(init, NULL, log, NULL) != 0) {
            fmt(why, REASON, "n/a (sks init failed: see %s)", log);
            return 0;
        }
    }
    *prep_ms = 0;
    for (p = 0; p < packages; p++) {
        int n = keys - p * SKIP_PER_PACKAGE < SKIP_PER_PACKAGE ? keys - p * SKIP_PER_PACKAGE : SKIP_PER_PACKAGE;
        fmt(req, sizeof(req), "%s/request%d.pem", base, p);
        fmt(pkg[p], 4096, "%s/package%d.der", base, p);
        fmt(subject, sizeof(subject), "CN=bench device %d", p);
        a = 0;
        argv[a++] = (char *)cfg.tool;
        argv[a++] = "--store";
        argv[a++] = store;
        argv[a++] = "skip";
        argv[a++] = "request";
        argv[a++] = "--curve";
        argv[a++] = "P-256";
        argv[a++] = "--subject";
        argv[a++] = subject;
        argv[a++] = "--trust"; /* the device keeps the anchors its package must verify to */
        argv[a++] = ca_pem;
        argv[a++] = "--out";
        argv[a++] = req;
        argv[a] = NULL;
        if (run_cmd(argv, NULL, log, &secs) != 0) {
            fmt(why, REASON, "n/a (sks skip request failed: see %s)", log);
            return 0;
        }
        *prep_ms += secs * 1e3;
        a = 0;
        argv[a++] = (char *)cfg.tool;
        argv[a++] = "skip";
        argv[a++] = "issue";
        argv[a++] = "--request";
        argv[a++] = req;
        argv[a++] = "--ca-key";
        argv[a++] = ca_key;
        argv[a++] = "--ca-cert";
        argv[a++] = ca_pem;
        argv[a++] = "--out";
        argv[a++] = pkg[p];
        for (i = 0; i < n; i++) {
            argv[a++] = "--key-type";
            argv[a++] = "P-256";
        }
        argv[a] = NULL;
        if (run_cmd(argv, NULL, log, &secs) != 0) {
            fmt(why, REASON, "n/a (sks skip issue failed: see %s)", log);
            return 0;
        }
        *prep_ms += secs * 1e3;
    }
    return packages;
}

/* What `sks skip import` does, timed in this process: decode, verify to the anchors, import. */
static int skip_import_inproc(const char *base, char pkg[][4096], int packages, double *ms, char *why)
{
    char spec[4200], err[2400] = "", ca_pem[4096];
    sks_transport *t;
    X509_STORE *anchors;
    unsigned char *data[8];
    size_t len[8];
    int p, ok = 1;
    double t0;

    fmt(spec, sizeof(spec), "file:%s/store.db", base);
    path_in(ca_pem, sizeof(ca_pem), cfg.dir, "ca.pem");
    if ((t = sks_transport_open(spec, NULL, err, sizeof(err))) == NULL
        || (anchors = skip_anchors_load(ca_pem, err, sizeof(err))) == NULL) {
        fmt(why, REASON, "n/a (%.150s)", err);
        if (t != NULL)
            t->close(t);
        return 0;
    }
    for (p = 0; p < packages; p++)
        if (!read_file(pkg[p], &data[p], &len[p]))
            die("cannot read %s", pkg[p]);
    t0 = now();
    for (p = 0; p < packages && ok; p++) {
        skip_package *pk = NULL;
        skip_import_result res;
        ok = skip_package_parse(data[p], len[p], &pk, err, sizeof(err))
             && skip_package_verify(pk, anchors, err, sizeof(err)) && skip_import(t, pk, &res, err, sizeof(err))
             && !res.already;
        skip_package_free(pk);
    }
    *ms = (now() - t0) * 1e3;
    if (!ok)
        fmt(why, REASON, "n/a (import failed: %.150s)", err);
    for (p = 0; p < packages; p++)
        free(data[p]);
    X509_STORE_free(anchors);
    t->close(t);
    return ok;
}

static void measure_skip(void)
{
    char base[4096], pkg[8][4096], log[4096];
    int s, trial;

    fmt(base, sizeof(base), "%s/skip", cfg.dir);
    mkdir(base, 0700);
    for (s = 0; s < SKIP_SIZES; s++)
        SKIP[s].ok = 1;
    for (trial = 0; trial < cfg.skip_trials; trial++) {
        note("\rSKIP trial %d/%d ", trial + 1, cfg.skip_trials);
        for (s = 0; s < SKIP_SIZES; s++) {
            skip_row *row = &SKIP[s];
            double prep1 = 0, prep2 = 0, ms = 0, cli = 0, secs;
            int p;
            if (!row->ok)
                continue;
            /* in this process */
            fmt(base, sizeof(base), "%s/skip/%d-%d-a", cfg.dir, SKIP_KEYS[s], trial);
            row->packages = skip_prepare(base, SKIP_KEYS[s], pkg, &prep1, row->why);
            if (row->packages == 0 || !skip_import_inproc(base, pkg, row->packages, &ms, row->why)) {
                row->ok = 0;
                continue;
            }
            /* the same through the tool: a process, its start and its output included */
            fmt(base, sizeof(base), "%s/skip/%d-%d-b", cfg.dir, SKIP_KEYS[s], trial);
            if (skip_prepare(base, SKIP_KEYS[s], pkg, &prep2, row->why) == 0) {
                row->ok = 0;
                continue;
            }
            fmt(log, sizeof(log), "%s/log", base);
            for (p = 0; p < row->packages; p++) {
                char store[4096], trust[4096];
                char *argv[] = { (char *)cfg.tool, "--store", store, "skip", "import", "--trust", trust, pkg[p], NULL };
                fmt(store, sizeof(store), "%s/store.db", base);
                path_in(trust, sizeof(trust), cfg.dir, "ca.pem");
                if (run_cmd(argv, NULL, log, &secs) != 0) {
                    fmt(row->why, REASON, "n/a (sks skip import failed: see %s)", log);
                    row->ok = 0;
                    break;
                }
                cli += secs * 1e3;
            }
            if (!row->ok)
                continue;
            row->prep[row->n] = (prep1 + prep2) / 2;
            row->inproc[row->n] = ms;
            row->cli[row->n] = cli;
            row->n++;
        }
    }
    note("\n");
}

/* ------------------------------------------------------------------ busy machine, many clients */

/*
 * P-256 signing when the process does not have the machine to itself (issue 13):
 *   busy     one signing client while nproc other processes each keep a core busy
 *   clients  nproc, then 2 x nproc signing processes at once, their throughput added up
 * Each client is a fork of this process with the variant's keys (an sks provider connection
 * is a parent's, so the child's first call reconnects to sksd as itself, as an nginx worker's
 * does). Variants interleave per round, in a rotating order, as in the main table.
 */
static void fmt_rate(char *out, size_t n, double r);
static double ratio(const double *x, int nx, const double *a, int na);

#define CONT_ROWS 4
enum { C_ONE, C_BUSY, C_CORES, C_TWICE };
typedef struct {
    int clients, hogs;
    int n[NVARIANTS];
    double rate[NVARIANTS][MAX_ROUNDS]; /* signatures per second, all clients together */
    char why[NVARIANTS][REASON];
    int agent_n;                        /* the ssh-agent peer (--ssh-agent) */
    double agent_rate[MAX_ROUNDS];
    char agent_why[REASON];
    int pipe_n;                         /* the machine's floor: perf bench sched pipe */
    double pipe_rate[MAX_ROUNDS];       /* round trips per second, all pairs together */
} cont_row;
static cont_row CONT[CONT_ROWS];

/* A process that keeps one core busy until killed. */
static pid_t start_hog(void)
{
    pid_t pid = fork();

    if (pid == 0) {
        volatile unsigned long x = 0;
        for (;;)
            x++;
    }
    return pid;
}

/* 16 signatures through the ssh-agent peer (the first ever checked with the PEM key); -1 on
 * failure, as run_batch. */
static double agent_batch(agent_peer *a, char *why)
{
    static int checked;
    int i;

    for (i = 0; i < 16; i++) {
        if (!agent_sign(a, MSG, sizeof(MSG), V[V_A].key[K_P256], !checked, why, REASON))
            return -1;
        checked = 1;
    }
    return 0;
}

/* 16 signatures by variant v, or by the agent when v is NULL; -1 on failure. */
static double client_batch(const variant *v, agent_peer *agent, char *why)
{
    return v != NULL ? run_batch(OP_P256, v, 16, why) : agent_batch(agent, why);
}

/* One client: warms up (its own connection to sksd, the store or the agent, its key cache),
 * says so on ready, waits for the start (go closes), signs for secs, writes its rate to out.
 * v NULL: the ssh-agent peer. */
static void cont_client(const variant *v, int ready, int go, int out, double secs)
{
    char c = 1, why[REASON];
    double t0, t, rate;
    long n = 0;
    agent_peer agent;

    /* The provider reopens its device in a forked child, from SKS_DEVICE again. */
    if (v != NULL && v->device[0])
        setenv("SKS_DEVICE", v->device, 1);
    if (v == NULL && !agent_open(&agent, cfg.ssh_agent, V[V_A].key[K_P256], why, sizeof(why))) {
        note("client %d: %s\n", (int)getpid(), why);
        _exit(1);
    }
    if (client_batch(v, &agent, why) < 0 || write(ready, &c, 1) != 1) {
        note("client %d: %s\n", (int)getpid(), why);
        _exit(1);
    }
    close(ready); /* so the parent sees the end if a client dies before it is ready */
    if (read(go, &c, 1) < 0)
        _exit(1);
    t0 = now();
    do {
        if (client_batch(v, &agent, why) < 0) {
            note("client %d: %s\n", (int)getpid(), why);
            _exit(1);
        }
        n += 16;
    } while ((t = now() - t0) < secs);
    rate = (double)n / t;
    _exit(write(out, &rate, sizeof(rate)) == (ssize_t)sizeof(rate) ? 0 : 1);
}

/*
 * The machine's own price of a process boundary: `perf bench sched pipe` (Linux's perf, not
 * this project's) ping-pongs a word between two processes through pipes, with no work between:
 * each round trip is two context switches and four system calls. pairs of them at once, about
 * secs long; round trips per second of all pairs added, or -1 (no perf: linux-perf).
 */
#define PERF "/usr/bin/perf"

/* The "N ops/sec" line of a perf bench output file; 0 if there is none. */
static double pipe_rate_of(const char *path)
{
    char line[256];
    double r = 0, v;
    FILE *f = fopen(path, "r");

    while (f != NULL && fgets(line, sizeof(line), f) != NULL)
        if (strstr(line, "ops/sec") != NULL && sscanf(line, " %lf", &v) == 1)
            r = v;
    if (f != NULL)
        fclose(f);
    return r;
}

/* DIR/perf-pipe-I.out, the output of pair i */
static void pipe_out(char *path, size_t n, int i)
{
    char name[64];

    fmt(name, sizeof(name), "perf-pipe-%d.out", i);
    path_in(path, n, cfg.dir, name);
}

static double pipe_pairs(int pairs, double secs)
{
    static double one = 0; /* round trips/s of one pair, to size the runs; -1: perf failed */
    char loops[32] = "20000", path[4096];
    char *argv[] = { PERF, "bench", "sched", "pipe", "-l", loops, NULL };
    pid_t pids[256];
    double sum = 0, r;
    int i, failed = 0;

    if (pairs > 256 || one < 0 || access(PERF, X_OK) != 0)
        return -1;
    if (one == 0) { /* calibrated once; a failure is not tried again */
        pipe_out(path, sizeof(path), 0);
        unlink(path);
        if (run_cmd(argv, NULL, path, NULL) != 0 || (one = pipe_rate_of(path)) <= 0) {
            one = -1;
            return -1;
        }
    }
    fmt(loops, sizeof(loops), "%ld", (long)(one * secs / pairs) + 1000);
    for (i = 0; i < pairs; i++) {
        pipe_out(path, sizeof(path), i);
        unlink(path);
        if ((pids[i] = spawn_bg(argv, NULL, path)) < 0)
            failed = 1;
    }
    for (i = 0; i < pairs; i++) {
        int st;
        if (pids[i] < 0 || waitpid(pids[i], &st, 0) != pids[i] || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            failed = 1;
            continue;
        }
        pipe_out(path, sizeof(path), i);
        if ((r = pipe_rate_of(path)) <= 0)
            failed = 1;
        sum += r;
    }
    return failed ? -1 : sum;
}

/* clients processes signing at once on variant v (NULL: the ssh-agent peer), for secs; their
 * rates added, -1 on failure. */
static double cont_run(const variant *v, int clients, double secs)
{
    int ready[2], go[2], res[2], i, started = 0, failed = 0;
    pid_t pids[256];
    double sum = 0, r;
    char c;

    if (clients > 256 || pipe(ready) != 0)
        return -1;
    if (pipe(go) != 0 || pipe(res) != 0)
        die("pipe: %s", strerror(errno));
    for (i = 0; i < clients; i++) {
        if ((pids[i] = fork()) == 0) {
            close(ready[0]);
            close(go[1]);
            close(res[0]);
            cont_client(v, ready[1], go[0], res[1], secs);
        }
        if (pids[i] < 0)
            failed = 1;
        else
            started++;
    }
    close(ready[1]);
    close(go[0]);
    close(res[1]);
    for (i = 0; i < started; i++) /* every client warmed up (or gone) */
        if (read(ready[0], &c, 1) != 1)
            failed = 1;
    close(go[1]); /* all start together */
    for (i = 0; i < started; i++) {
        if (read(res[0], &r, sizeof(r)) == (ssize_t)sizeof(r))
            sum += r;
        else
            failed = 1;
    }
    for (i = 0; i < clients; i++) {
        int st;
        if (pids[i] > 0 && (waitpid(pids[i], &st, 0) != pids[i] || !WIFEXITED(st) || WEXITSTATUS(st) != 0))
            failed = 1;
    }
    close(ready[0]);
    close(res[0]);
    return failed ? -1 : sum;
}

static void measure_contention(void)
{
    int cores = (int)sysconf(_SC_NPROCESSORS_ONLN), row, r, i, vi, h;
    double secs = cfg.seconds < 0.2 ? 0.2 : cfg.seconds;
    pid_t hogs[256];

    if (cores < 1)
        cores = 1;
    CONT[C_ONE].clients = 1;
    CONT[C_BUSY].clients = 1;
    CONT[C_BUSY].hogs = cores;
    CONT[C_CORES].clients = cores;
    CONT[C_TWICE].clients = 2 * cores;
    for (row = 0; row < CONT_ROWS; row++)
        for (vi = 0; vi < NVARIANTS; vi++)
            if (!cfg.want_variant[vi] || vi == V_D || vi == V_E)
                fmt(CONT[row].why[vi], REASON, "not run");
            else if (!V[vi].available || V[vi].key[K_P256] == NULL)
                fmt(CONT[row].why[vi], REASON, "n/a");
    for (row = 0; row < CONT_ROWS; row++)
        if (cfg.ssh_agent == NULL)
            fmt(CONT[row].agent_why, REASON, "not run");
    for (r = 0; r < cfg.rounds; r++) {
        note("\rbusy machine and many clients: round %d/%d ", r + 1, cfg.rounds);
        for (row = 0; row < CONT_ROWS; row++) {
            cont_row *c = &CONT[row];
            for (h = 0; h < c->hogs && h < 256; h++)
                hogs[h] = start_hog();
            /* the variants, the ssh-agent peer (slot NVARIANTS) and the machine's floor (slot
             * NVARIANTS + 1: as many pipe pairs as clients), in a rotating order */
            for (i = 0; i <= NVARIANTS + 1; i++) {
                double rate;
                vi = (i + r) % (NVARIANTS + 2);
                if (vi == NVARIANTS + 1) {
                    if ((rate = pipe_pairs(c->clients, secs)) > 0)
                        c->pipe_rate[c->pipe_n++] = rate;
                    continue;
                }
                if (vi == NVARIANTS) {
                    if (c->agent_why[0])
                        continue;
                    if ((rate = cont_run(NULL, c->clients, secs)) < 0)
                        fmt(c->agent_why, REASON, "failed while measuring");
                    else
                        c->agent_rate[c->agent_n++] = rate;
                    continue;
                }
                if (c->why[vi][0])
                    continue;
                if ((rate = cont_run(&V[vi], c->clients, secs)) < 0) {
                    fmt(c->why[vi], REASON, "failed while measuring");
                    continue;
                }
                c->rate[vi][c->n[vi]++] = rate;
            }
            for (h = 0; h < c->hogs && h < 256; h++)
                if (hogs[h] > 0) {
                    kill(hogs[h], SIGKILL);
                    waitpid(hogs[h], NULL, 0);
                }
        }
    }
    note("\n");
}

static void report_agent_cell(FILE *out, const cont_row *c)
{
    char buf[64];

    if (c->agent_n == 0) {
        fprintf(out, " %s |", c->agent_why[0] ? c->agent_why : "n/a");
        return;
    }
    fmt_rate(buf, sizeof(buf), median(c->agent_rate, c->agent_n));
    if (c->n[V_A] == 0)
        fprintf(out, " %s |", buf);
    else
        fprintf(out, " %s (%.2f×) |", buf, ratio(c->agent_rate, c->agent_n, c->rate[V_A], c->n[V_A]));
}

/* Throughput from as many clients as cores to twice as many, for sksd and for the peer: the
 * price of more processes than cores taking turns at a key in another process. */
static void report_scaling(FILE *out)
{
    const cont_row *k = &CONT[C_CORES], *t = &CONT[C_TWICE];

    if (k->n[V_C] == 0 || t->n[V_C] == 0)
        return;
    fprintf(out, "From %d to %d clients, all clients' signatures/s: sksd %.2f×", k->clients, t->clients,
            median(t->rate[V_C], t->n[V_C]) / median(k->rate[V_C], k->n[V_C]));
    if (k->agent_n > 0 && t->agent_n > 0)
        fprintf(out, ", ssh-agent %.2f×", median(t->agent_rate, t->agent_n) / median(k->agent_rate, k->agent_n));
    if (k->pipe_n > 0 && t->pipe_n > 0)
        fprintf(out, ", bare process pairs (`perf bench sched pipe`) %.2f×",
                median(t->pipe_rate, t->pipe_n) / median(k->pipe_rate, k->pipe_n));
    if (k->n[V_A] > 0 && t->n[V_A] > 0)
        fprintf(out, " (the key in each process: %.2f×)", median(t->rate[V_A], t->n[V_A]) / median(k->rate[V_A], k->n[V_A]));
    fprintf(out, ".\n\n");
}

static void report_contention(FILE *out, double *busy_sksd, double *worst_scaling)
{
    int row, vi;
    char buf[64];

    fprintf(out, "| ECDSA P-256 sign, signatures/s of all clients together |");
    for (vi = 0; vi <= V_C; vi++)
        if (cfg.want_variant[vi])
            fprintf(out, " %s |", VARIANT_TITLES[vi]);
    if (cfg.ssh_agent != NULL)
        fprintf(out, " peer: ssh-agent (OpenSSH), the same key in another process |");
    fprintf(out, " floor: `perf bench sched pipe`, as many process pairs as clients, round trips/s (no crypto) |");
    fprintf(out, "\n|---|");
    for (vi = 0; vi <= V_C; vi++)
        if (cfg.want_variant[vi])
            fprintf(out, "--:|");
    if (cfg.ssh_agent != NULL)
        fprintf(out, "--:|");
    fprintf(out, "--:|\n");
    for (row = 0; row < CONT_ROWS; row++) {
        const cont_row *c = &CONT[row];
        if (row == C_ONE)
            fprintf(out, "| 1 client, nothing else running |");
        else if (row == C_BUSY)
            fprintf(out, "| 1 client, %d other processes keeping the cores busy |", c->hogs);
        else
            fprintf(out, "| %d clients at once (%s) |", c->clients, row == C_CORES ? "as many as cores" : "twice the cores");
        for (vi = 0; vi <= V_C; vi++) {
            if (!cfg.want_variant[vi])
                continue;
            if (c->n[vi] == 0) {
                fprintf(out, " %s |", c->why[vi][0] ? c->why[vi] : "n/a");
                continue;
            }
            fmt_rate(buf, sizeof(buf), median(c->rate[vi], c->n[vi]));
            if (vi == V_A || c->n[V_A] == 0) {
                fprintf(out, " %s |", buf);
            } else {
                double q = ratio(c->rate[vi], c->n[vi], c->rate[V_A], c->n[V_A]);
                fprintf(out, " %s (%.2f×) |", buf, q);
                if (vi == V_C && row == C_BUSY)
                    *busy_sksd = q;
            }
        }
        if (cfg.ssh_agent != NULL)
            report_agent_cell(out, c);
        if (c->pipe_n > 0) {
            fmt_rate(buf, sizeof(buf), median(c->pipe_rate, c->pipe_n));
            fprintf(out, " %s |", buf);
        } else {
            fprintf(out, " n/a (no %s: linux-perf) |", PERF);
        }
        fprintf(out, "\n");
    }
    fprintf(out, "\n");
    report_scaling(out);
    /* sksd's throughput must not fall as clients are added */
    if (CONT[C_CORES].n[V_C] > 0 && CONT[C_TWICE].n[V_C] > 0 && CELLS[OP_P256][V_C].n > 0) {
        double one = median(CELLS[OP_P256][V_C].rate, CELLS[OP_P256][V_C].n);
        double cores = median(CONT[C_CORES].rate[V_C], CONT[C_CORES].n[V_C]);
        double twice = median(CONT[C_TWICE].rate[V_C], CONT[C_TWICE].n[V_C]);
        *worst_scaling = (cores < one ? cores / one : 1.0);
        if (twice / cores < *worst_scaling)
            *worst_scaling = twice / cores;
    }
}

/* ------------------------------------------------------------------ the report */

static void machine(char *out, size_t n)
{
    char line[512], cpu[256] = "unknown CPU";
    FILE *f = fopen("/proc/cpuinfo", "r");
    struct utsname u;

    while (f != NULL && fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, "model name", 10) == 0) {
            char *p = strchr(line, ':');
            if (p != NULL) {
                p += 1 + strspn(p + 1, " \t");
                p[strcspn(p, "\n")] = '\0';
                fmt(cpu, sizeof(cpu), "%s", p);
            }
            break;
        }
    if (f != NULL)
        fclose(f);
    uname(&u);
    fmt(out, n, "%ld CPU%s (nproc), %s; Linux %s %s; %s", sysconf(_SC_NPROCESSORS_ONLN),
             sysconf(_SC_NPROCESSORS_ONLN) == 1 ? "" : "s", cpu, u.release, u.machine,
             OpenSSL_version(OPENSSL_VERSION));
}

static void fmt_rate(char *out, size_t n, double r)
{
    if (r >= 100)
        fmt(out, n, "%.0f", r);
    else
        fmt(out, n, "%.1f", r);
}

/* Median over rounds of the per-round ratio to (a). */
static double ratio(const double *x, int nx, const double *a, int na)
{
    double q[MAX_ROUNDS];
    int i, n = nx < na ? nx : na;

    for (i = 0; i < n; i++)
        q[i] = x[i] / a[i];
    return median(q, n);
}

static void report(FILE *out)
{
    char m[1024], date[64], buf[64];
    time_t t = time(NULL);
    struct tm tm;
    int op, vi, s, i;
    double min_inproc = 1e9, p256_sksd = -1, tls_ratio = -1, tls_sksd = -1, ngx_b = -1, ngx_c = -1, skip8 = -1, busy_sksd = -1, scaling = -1;
    const char *min_op = NULL;
    int shown[NVARIANTS];

    machine(m, sizeof(m));
    strftime(date, sizeof(date), "%Y-%m-%d %H:%M UTC", gmtime_r(&t, &tm));
    fprintf(out, "Measured %s on %s.\n\n", date, m);
    fprintf(out, "Median of %d rounds, batches of about %.2g s, variants interleaved; operations per second, and in "
                 "parentheses the median of the per-round ratios to (a).\n\n",
            cfg.rounds, cfg.seconds);
    for (vi = 0; vi < NVARIANTS; vi++)
        shown[vi] = cfg.want_variant[vi];
    for (op = 0, i = 0; op < NOPS; op++)
        i |= cfg.want_op[op];
    if (i) {
        fprintf(out, "| operation |");
        for (vi = 0; vi < NVARIANTS; vi++)
            if (shown[vi])
                fprintf(out, " %s |", VARIANT_TITLES[vi]);
        fprintf(out, "\n|---|");
        for (vi = 0; vi < NVARIANTS; vi++)
            if (shown[vi])
                fprintf(out, "--:|");
        fprintf(out, "\n");
        for (op = 0; op < NOPS; op++) {
            const cell *a = &CELLS[op][V_A];
            if (!cfg.want_op[op])
                continue;
            fprintf(out, "| %s |", OPS[op].title);
            for (vi = 0; vi < NVARIANTS; vi++) {
                const cell *c = &CELLS[op][vi];
                if (!shown[vi])
                    continue;
                if (c->n == 0) {
                    fprintf(out, " %s |", c->why[0] ? c->why : "n/a");
                    continue;
                }
                fmt_rate(buf, sizeof(buf), median(c->rate, c->n));
                if (vi == V_A || a->n == 0) {
                    fprintf(out, " %s |", buf);
                } else {
                    double q = ratio(c->rate, c->n, a->rate, a->n);
                    fprintf(out, " %s (%.2f×) |", buf, q);
                    if (vi == V_B && op != OP_LOAD && op != OP_LOAD_SHA256 && q < min_inproc) { /* a load is no operation with the key */
                        min_inproc = q;
                        min_op = OPS[op].title;
                    }
                    if (vi == V_C && op == OP_P256)
                        p256_sksd = q;
                }
            }
            fprintf(out, "\n");
        }
        fprintf(out, "\n");
    }
    if (cfg.want_cont)
        report_contention(out, &busy_sksd, &scaling);
    if (cfg.want_tls) {
        fprintf(out, "| TLS 1.3 full handshakes/s (P-256 server key, X25519, `openssl s_server`, one client) |");
        for (i = 0; i < NTLS; i++)
            fprintf(out, " %s |", TLS_TITLES[i]);
        fprintf(out, "\n|---|");
        for (i = 0; i < NTLS; i++)
            fprintf(out, "--:|");
        fprintf(out, "\n| handshakes/s |");
        for (i = 0; i < NTLS; i++) {
            const tls_server *sv = &TLS[i];
            if (sv->n == 0) {
                fprintf(out, " %s |", sv->why[0] ? sv->why : "n/a");
                continue;
            }
            fmt_rate(buf, sizeof(buf), median(sv->rate, sv->n));
            if (i == T_FILE || TLS[T_FILE].n == 0) {
                fprintf(out, " %s |", buf);
            } else {
                double q = ratio(sv->rate, sv->n, TLS[T_FILE].rate, TLS[T_FILE].n);
                fprintf(out, " %s (%.2f×) |", buf, q);
                if (i == T_SKS)
                    tls_ratio = q;
                if (i == T_SKSD)
                    tls_sksd = q;
            }
        }
        fprintf(out, "\n\n");
    }
    if (cfg.want_nginx)
        report_nginx(out, &ngx_b, &ngx_c);
    if (cfg.want_skip) {
        fprintf(out, "| SKIP import (P-256 keys, fresh store each time, median of %d) | packages | request + issue "
                     "(tools) | import in-process (parse, verify, store) | `sks skip import` (process) |\n",
                cfg.skip_trials);
        fprintf(out, "|---|--:|--:|--:|--:|\n");
        for (s = 0; s < SKIP_SIZES; s++) {
            const skip_row *row = &SKIP[s];
            fprintf(out, "| %d key%s |", SKIP_KEYS[s], SKIP_KEYS[s] == 1 ? "" : "s");
            if (row->n == 0) {
                fprintf(out, " %s | | | |\n", row->why[0] ? row->why : "n/a");
                continue;
            }
            fprintf(out, " %d%s | %.1f ms | %.1f ms | %.1f ms |\n", row->packages,
                    row->packages > 1 ? " (at most 32 keys each)" : "", median(row->prep, row->n),
                    median(row->inproc, row->n), median(row->cli, row->n));
            if (SKIP_KEYS[s] == 8)
                skip8 = median(row->inproc, row->n);
        }
        fprintf(out, "\n");
    }
    fprintf(out, "Targets (informational; nothing here fails):\n\n");
    if (min_op != NULL)
        fprintf(out, "- sks in-process ≥ 0.9× the default provider on every operation with a key: %s (lowest %.2f×, %s)\n",
                min_inproc >= 0.9 ? "met" : "missed", min_inproc, min_op);
    if (p256_sksd >= 0)
        fprintf(out, "- sks through sksd ≥ 0.8× on P-256 sign: %s (%.2f×)\n", p256_sksd >= 0.8 ? "met" : "missed",
                p256_sksd);
    if (busy_sksd >= 0)
        fprintf(out, "- sks through sksd ≥ 0.5× on P-256 sign while other processes keep every core busy: %s (%.2f×)\n",
                busy_sksd >= 0.5 ? "met" : "missed", busy_sksd);
    if (scaling >= 0)
        fprintf(out, "- sksd's throughput never falls as clients are added (1 → cores → twice the cores): %s (worst step "
                     "%.2f×)\n", scaling >= 0.95 ? "met" : "missed", scaling);
    if (tls_ratio >= 0)
        fprintf(out, "- TLS handshakes (`s_server`) with the key in the store ≥ 0.97× a key in a file: %s (in-process "
                     "%.2f×, through sksd %s)\n", tls_ratio >= 0.97 && tls_sksd >= 0.97 ? "met" : "missed", tls_ratio,
                tls_sksd >= 0 ? (fmt(buf, sizeof(buf), "%.2f×", tls_sksd), buf) : "not run");
    if (ngx_b >= 0 || ngx_c >= 0)
        fprintf(out, "- TLS handshakes with nginx, key in the store ≥ 0.97× a key in a file: %s (in-process %.2f×, "
                     "through sksd %.2f×)\n", ngx_b >= 0.97 && ngx_c >= 0.97 ? "met" : "missed", ngx_b, ngx_c);
    if (skip8 >= 0)
        fprintf(out, "- 8-key SKIP import under 8 ms: %s (%.1f ms in-process)\n", skip8 < 8 ? "met" : "missed",
                skip8);
}

int main(int argc, char **argv)
{
    char spec[4200];
    int vi;

    signal(SIGPIPE, SIG_IGN);
    parse_args(argc, argv);
    setup_pem(&V[V_A]);
    prepare_inputs();
    for (vi = V_B; vi < NVARIANTS; vi++) {
        variant *v = &V[vi];
        if (!cfg.want_variant[vi])
            continue;
        if (cfg.na[vi][0]) {
            fmt(v->why, REASON, "%s", cfg.na[vi]);
            continue;
        }
        switch (vi) {
        case V_B:
            fmt(spec, sizeof(spec), "file:%s/store.db", cfg.dir);
            setup_sks(v, spec, 0);
            break;
        case V_C:
            fmt(spec, sizeof(spec), "unix:%s/sksd.sock", cfg.dir);
            setup_sks(v, spec, 0);
            break;
        case V_D:
            if (cfg.pcsc == NULL) {
                fmt(v->why, REASON, "no --pcsc READER given");
                continue;
            }
            fmt(spec, sizeof(spec), "pcsc:%s", cfg.pcsc);
            setup_sks(v, spec, 10);
            break;
        case V_E:
            if (cfg.pkcs11 == NULL) {
                fmt(v->why, REASON, "no --pkcs11 MODULE given");
                continue;
            }
            setup_engine(v);
            break;
        }
    }
    for (vi = 0; vi < NVARIANTS; vi++)
        if (V[vi].available)
            make_peer(&V[vi]);
    {
        /* the ECDH secret every variant must find */
        EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_pkey(V[V_A].lib, V[V_A].key[K_P256], NULL);
        ECDH_Z_LEN = sizeof(ECDH_Z);
        if (c == NULL || EVP_PKEY_derive_init(c) != 1 || EVP_PKEY_derive_set_peer(c, V[V_A].peer) != 1
            || EVP_PKEY_derive(c, ECDH_Z, &ECDH_Z_LEN) != 1)
            die("ECDH with the PEM key failed");
        EVP_PKEY_CTX_free(c);
    }
    if (cfg.profile != NULL)
        return profile_one();
    measure_ops();
    if (cfg.want_cont)
        measure_contention();
    if (cfg.want_tls)
        measure_tls();
    if (cfg.want_nginx)
        measure_nginx();
    if (cfg.want_skip)
        measure_skip();
    report(stdout);
    if (cfg.markdown != NULL) {
        FILE *f = fopen(cfg.markdown, "w");
        if (f == NULL)
            die("cannot write %s", cfg.markdown);
        report(f);
        fclose(f);
    }
    return 0;
}
