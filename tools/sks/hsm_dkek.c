/*
 * sks hsm dkek create-share | import | status, sks hsm backup and sks hsm restore: a
 * SmartCard-HSM's DKEK made of share files as sc-hsm-tool writes them, and keys wrapped under it
 * into sc-hsm-tool's --wrap-key file and back (docs/smartcard-hsm-keymgmt.md).
 */
#include "cli.h"
#include "files.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "../../schsm/keymgmt_formats.h"
#include "../../schsm/mgmt_dkek.h"

#define MAX_WRAP_FILE 65536
#define MAX_SHARES_TEXT 65536

static const char DKEK_USAGE[] =
    "usage: sks hsm dkek create-share FILE [--password-file FILE | --threshold T --shares M]\n"
    "       sks hsm dkek import FILE [--password-file FILE | --pwd-shares FILE] [--pin-file FILE]\n"
    "       sks hsm dkek status [--dkek-share FILE]... [--password-file FILE | --pwd-shares FILE]\n"
    "                           [--pin-file FILE]\n"
    "  On a SmartCard-HSM (--device pcsc:[READER]) initialised with sks hsm init --dkek-shares N.\n"
    "  The DKEK (the key that wraps keys for backup) is the XOR of N shares; each share lives in a\n"
    "  64-byte file encrypted under a password, as sc-hsm-tool --create-dkek-share writes it.\n"
    "  create-share: a new share file FILE (refused if it exists); share and salt come from the\n"
    "  card's random generator (GET CHALLENGE), like sc-hsm-tool.\n"
    "  import: the share in FILE goes to the card; prints the shares still missing and, once all\n"
    "  are in, the DKEK's key check value (KCV).\n"
    "  status: shares total and missing and the KCV; with --dkek-share the KCV is also computed\n"
    "  from those files (all of the card's shares) and must agree with the card's.\n"
    "  --password-file FILE  the share password: the first line of FILE, \"-\" standard input;\n"
    "                        without it the password is asked on the terminal without echo\n"
    "                        (--password PW also works, but shows it to ps). For status, one\n"
    "                        password for every --dkek-share.\n"
    "  --threshold T --shares M  create-share: a random password split into M shares of which\n"
    "                        any T recover it (2 <= T <= M <= 255), as sc-hsm-tool\n"
    "                        --pwd-shares-threshold; the shares are printed for the custodians\n"
    "  --pwd-shares FILE     the password is n-of-m split: FILE holds T custodians' shares\n"
    "                        (\"Prime\", \"Share ID\", \"Share value\" lines, blocks separated by\n"
    "                        blank lines, as create-share and sc-hsm-tool print them); \"-\" stdin\n"
    "  --dkek-share FILE     status: a share file to compute the KCV from (repeatable)\n"
    "  --pin-file FILE       the user PIN, for cards that report the KCV only after VERIFY\n"
    "  Opening or creating a share takes several seconds (10,000,000 hash rounds).\n";

#define RESTORED_CERT_DAYS 365 /* default validity of the certificate the card signs for a restored key */

static const char BACKUP_USAGE[] =
    "usage: sks hsm backup --name NAME --out FILE [--pin-file FILE]\n"
    "       sks hsm restore FILE [--name NAME] [--subject DN] [--days N] [--pin-file FILE]\n"
    "  On a SmartCard-HSM (--device pcsc:[READER]) with a complete DKEK (sks hsm dkek).\n"
    "  backup: the key NAME wrapped under the card's DKEK (WRAP KEY), with its PKCS#15\n"
    "  description and its certificate, into FILE as sc-hsm-tool --wrap-key writes it (refused\n"
    "  if FILE exists). Prints the DKEK's key check value (KCV).\n"
    "  restore: a key of such a file (from sks hsm backup, sc-hsm-tool --wrap-key or\n"
    "  sks hsm wrap) into a free key reference of a card with the same DKEK (UNWRAP KEY), its\n"
    "  description and certificate written back. A file whose KCV differs from the card's is\n"
    "  refused before anything is sent.\n"
    "  --name NAME           backup: the key; restore: a new name (default: the file's label)\n"
    "  --subject DN          restore of a key backed up with its CV request (no certificate):\n"
    "                        the subject of the certificate the card signs for it (default CN=NAME)\n"
    "  --days N              ... and its validity in days (1..36500, default 365)\n"
    "  --out FILE            the wrap file to write\n"
    "  --pin-file FILE       the user PIN (first line; \"-\" stdin); asked on the terminal if not\n"
    "                        given (--pin PIN also works, but shows it to ps)\n";

/* The index after an optional positional FILE at argv[pos] (options follow it). */
static int after_file(int argc, char **argv, int pos)
{
    return argc > pos && argv[pos][0] != '-' ? pos + 1 : pos;
}

/* Parses "hsm dkek SUB FILE [options]" (what: how FILE is named in the message when it is
 * missing): CLI_CONTINUE when FILE is argv[3], else the exit code. */
static int parse_with_share_file(const char *cmd, int argc, char **argv, const cli_opt *opts, size_t nopts,
                                 const char *what)
{
    int rc = cli_parse_command(cmd, argc, argv, after_file(argc, argv, 3), opts, nopts, DKEK_USAGE);

    if (rc != CLI_CONTINUE)
        return rc;
    if (argc < 4 || argv[3][0] == '-') {
        cli_error("%s: give %s (see sks hsm dkek --help)", cmd, what);
        return CLI_EXIT_USAGE;
    }
    return CLI_CONTINUE;
}

static void hex_line(const uint8_t *p, size_t n, char *out)
{
    size_t i;

    for (i = 0; i < n; i++)
        snprintf(out + 2 * i, 3, "%02x", p[i]);
}

/* arg: "<cmd>: opening <file>" */
static void say_deriving(void *arg, int finished)
{
    if (!finished)
        fprintf(stderr, "sks %s (10,000,000 hash rounds, takes several seconds)...\n", (const char *)arg);
    else
        fprintf(stderr, "sks %.*s: done\n", (int)strcspn((const char *)arg, ":"), (const char *)arg);
}

/* The first n bytes of path (at most size); *got how many there were. */
static int read_small_file(const char *cmd, const char *path, uint8_t *buf, size_t size, size_t *got)
{
    char err[600];

    if (files_read_upto(path, buf, size, got, err, sizeof(err)))
        return 1;
    cli_error("%s: %s", cmd, err);
    return 0;
}

static int write_new_file(const char *cmd, const char *path, const uint8_t *b, size_t n)
{
    FILE *f = fopen(path, "wbx");
    int ok = f != NULL && fwrite(b, 1, n, f) == n;

    if (f != NULL && fclose(f) != 0)
        ok = 0;
    if (!ok)
        cli_error("%s: cannot write %s: %s", cmd, path, errno == EEXIST ? "it exists already" : strerror(errno));
    return ok;
}

int cli_hsm_password_from_shares(const char *cmd, const char *path, uint8_t pwd[SCHSM_PWD_LEN])
{
    static char text[MAX_SHARES_TEXT];
    static schsm_pwd_share shares[SCHSM_PWD_MAX_SHARES];
    size_t n = 0, count = 0;
    char err[256], *block, *next;
    int ok = 0;

    if (!read_small_file(cmd, path, (uint8_t *)text, sizeof(text) - 1, &n))
        return 0;
    text[n] = '\0';
    for (block = text; block != NULL && *block != '\0' && count < SCHSM_PWD_MAX_SHARES; block = next) {
        if ((next = strstr(block, "\n\n")) != NULL) {
            *next = '\0';
            next += 2;
        }
        if (block[strspn(block, " \t\r\n")] == '\0')
            continue;
        if (!schsm_pwd_share_parse(block, &shares[count], err, sizeof(err))) {
            cli_error("%s: --pwd-shares, share %zu: %s", cmd, count + 1, err);
            goto done;
        }
        count++;
    }
    if (count == 0)
        cli_error("%s: --pwd-shares: %s holds no share", cmd, path);
    else if (!schsm_pwd_combine(shares, count, pwd, err, sizeof(err)))
        cli_error("%s: --pwd-shares: %s", cmd, err);
    else
        ok = 1;
done:
    OPENSSL_cleanse(text, sizeof(text));
    OPENSSL_cleanse(shares, sizeof(shares));
    return ok;
}

/* How a share file is opened: a typed password or the n-of-m one. */
typedef struct {
    const char *password, *pwd_shares;
    uint8_t split[SCHSM_PWD_LEN];
    int have_split;
} share_secret;

static int share_secret_ready(const char *cmd, share_secret *s)
{
    if (s->password != NULL && s->pwd_shares != NULL) {
        cli_error("%s: give --password-file or --pwd-shares, not both", cmd);
        return 0;
    }
    if (s->pwd_shares != NULL) {
        if (!cli_hsm_password_from_shares(cmd, s->pwd_shares, s->split))
            return 0;
        s->have_split = 1;
        return 1;
    }
    return cli_need_secret(cmd, "--password", "DKEK share password", 0, &s->password);
}

int cli_hsm_open_share(const char *cmd, const char *path, const uint8_t *pw, size_t pwlen, uint8_t share[SCHSM_DKEK_LEN])
{
    uint8_t file[SCHSM_SHARE_FILE_LEN + 1];
    char err[256], what[600];
    size_t n = 0;
    int ok;

    if (!read_small_file(cmd, path, file, sizeof(file), &n))
        return 0;
    snprintf(what, sizeof(what), "%s: opening %s", cmd, path);
    ok = schsm_share_decrypt(file, n, pw, pwlen, 0, say_deriving, what, share, err, sizeof(err));
    if (!ok)
        cli_error("%s: %s: %s", cmd, path, err);
    return ok;
}

static int open_share(const char *cmd, const char *path, const share_secret *s, uint8_t share[SCHSM_DKEK_LEN])
{
    /* an n-of-m password is 8 raw bytes (zeros included), a typed one a string */
    if (s->have_split)
        return cli_hsm_open_share(cmd, path, s->split, SCHSM_PWD_LEN, share);
    return cli_hsm_open_share(cmd, path, (const uint8_t *)s->password, strlen(s->password), share);
}

static void print_dkek_status(const sks_hsm_dkek_status *st)
{
    char kcv[17];

    hex_line(st->kcv, sizeof(st->kcv), kcv);
    printf("DKEK shares: %u\n", st->shares_total);
    printf("missing:     %u\n", st->shares_missing);
    if (st->shares_missing == 0)
        printf("KCV:         %s\n", kcv);
    else
        printf("KCV:         none yet (%u share(s) still missing)\n", st->shares_missing);
}

/* ---- create-share ---- */

/*
 * Random bytes for a new share: the card's (GET CHALLENGE, as sc-hsm-tool takes them) XOR the
 * host's. Either generator alone suffices, so a card whose generator is broken or rigged
 * (all zeros, say) does not make the DKEK share or its password guessable.
 */
static int share_random(sks_transport *t, const char *cmd, uint8_t *out, size_t n)
{
    uint8_t host[SCHSM_DKEK_LEN + 8 + SCHSM_PWD_LEN];
    sks_client_error e;
    size_t i;

    if (n > sizeof(host) || RAND_priv_bytes(host, (int)n) != 1) {
        cli_error("%s: no random bytes from the host", cmd);
        OPENSSL_cleanse(host, sizeof(host));
        return 0;
    }
    if (!sks_client_hsm_get_challenge(t, out, n, &e)) {
        cli_client_error(cmd, &e);
        OPENSSL_cleanse(host, sizeof(host));
        return 0;
    }
    for (i = 0; i < n; i++)
        out[i] ^= host[i];
    OPENSSL_cleanse(host, sizeof(host));
    return 1;
}

static int print_custodian_shares(const char *cmd, const uint8_t pwd[SCHSM_PWD_LEN], unsigned t, unsigned m)
{
    schsm_pwd_share *shares = OPENSSL_zalloc(sizeof(*shares) * m);
    char err[256], text[SCHSM_PWD_SHARE_TEXT_LEN];
    unsigned i;
    int ok = shares != NULL && schsm_pwd_split(pwd, t, m, shares, err, sizeof(err));

    if (!ok)
        cli_error("%s: %s", cmd, shares ? err : "out of memory");
    printf("The share's password is split into %u shares, any %u of which open it. Give each\n"
           "custodian one block (keep the blank lines between blocks when they are collected):\n\n",
           m, t);
    for (i = 0; ok && i < m; i++) {
        ok = schsm_pwd_share_format(&shares[i], text, sizeof(text));
        printf("%s\n", text);
        OPENSSL_cleanse(text, sizeof(text));
    }
    if (shares != NULL)
        OPENSSL_clear_free(shares, sizeof(*shares) * m);
    return ok;
}

typedef struct {
    const char *password, *threshold, *shares;
} create_args;

static int split_numbers(const char *cmd, const create_args *a, unsigned *t, unsigned *m)
{
    unsigned long v;

    *t = *m = 0;
    if (a->threshold == NULL && a->shares == NULL)
        return 1;
    if (a->threshold == NULL || a->shares == NULL || a->password != NULL) {
        cli_error("%s: --threshold and --shares go together, without --password", cmd);
        return 0;
    }
    if (!cli_parse_number(cmd, "--shares", a->shares, 2, SCHSM_PWD_MAX_SHARES, &v))
        return 0;
    *m = (unsigned)v;
    if (!cli_parse_number(cmd, "--threshold", a->threshold, 2, *m, &v))
        return 0;
    *t = (unsigned)v;
    return 1;
}

static int dkek_create_share(cli_store *store, int argc, char **argv)
{
    static const char CMD[] = "hsm dkek create-share";
    create_args a = { 0 };
    const cli_opt opts[] = {
        { "--password", OPT_NEW_SECRET, &a.password },
        { "--threshold", OPT_VALUE, &a.threshold },
        { "--shares", OPT_VALUE, &a.shares },
    };
    uint8_t random[SCHSM_DKEK_LEN + 8 + SCHSM_PWD_LEN], file[SCHSM_SHARE_FILE_LEN];
    const uint8_t *share = random, *salt = random + SCHSM_DKEK_LEN;
    uint8_t *pwd = random + SCHSM_DKEK_LEN + 8;
    unsigned t = 0, m = 0;
    char err[256];
    sks_transport *tr;
    int rc;

    if ((rc = parse_with_share_file(CMD, argc, argv, opts, sizeof(opts) / sizeof(opts[0]), "the share file to write")) != CLI_CONTINUE)
        return rc;
    if (!split_numbers(CMD, &a, &t, &m)
        || (m == 0 && !cli_need_secret(CMD, "--password", "new DKEK share password", 1, &a.password)))
        return CLI_EXIT_USAGE;
    if (access(argv[3], F_OK) == 0) {
        cli_error("%s: %s exists already", CMD, argv[3]);
        return CLI_EXIT_FAIL;
    }
    if ((tr = cli_open(store, CMD)) == NULL)
        return CLI_EXIT_FAIL;
    rc = CLI_EXIT_FAIL;
    if (!share_random(tr, CMD, random, sizeof(random)))
        goto done;
    if (m > 0 && !schsm_pwd_shape(pwd, err, sizeof(err))) {
        cli_error("%s: %s", CMD, err);
        goto done;
    }
    if (!schsm_share_encrypt(share, m ? pwd : (const uint8_t *)a.password, m ? SCHSM_PWD_LEN : strlen(a.password),
                             salt, 0, say_deriving, "hsm dkek create-share: encrypting the share", file, err, sizeof(err))) {
        cli_error("%s: %s", CMD, err);
        goto done;
    }
    if (!write_new_file(CMD, argv[3], file, sizeof(file)))
        goto done;
    printf("wrote the DKEK share %s\n", argv[3]);
    if (m > 0 && !print_custodian_shares(CMD, pwd, t, m)) {
        unlink(argv[3]); /* no one could open it */
        goto done;
    }
    rc = CLI_EXIT_OK;
done:
    OPENSSL_cleanse(random, sizeof(random));
    OPENSSL_cleanse(file, sizeof(file));
    tr->close(tr);
    return rc;
}

/* ---- import, status ---- */

static int dkek_import(cli_store *store, int argc, char **argv)
{
    static const char CMD[] = "hsm dkek import";
    share_secret s = { 0 };
    const char *pin = NULL;
    const cli_opt opts[] = {
        { "--password", OPT_SECRET, &s.password },
        { "--pwd-shares", OPT_VALUE, &s.pwd_shares },
        { "--pin", OPT_SECRET, &pin },
    };
    uint8_t share[SCHSM_DKEK_LEN];
    sks_hsm_dkek_status st;
    sks_client_error e;
    sks_span sp = { share, sizeof(share) };
    sks_transport *t;
    int rc;

    if ((rc = parse_with_share_file(CMD, argc, argv, opts, sizeof(opts) / sizeof(opts[0]), "the share file")) != CLI_CONTINUE)
        return rc;
    if (!share_secret_ready(CMD, &s))
        return CLI_EXIT_USAGE;
    if ((t = cli_open(store, CMD)) == NULL)
        return CLI_EXIT_FAIL;
    rc = CLI_EXIT_FAIL;
    /* the card is asked first, so a card without DKEK costs no derivation */
    if (!sks_client_hsm_key_domain_status(t, cli_span(pin), 0, &st, &e)) {
        cli_client_error(CMD, &e);
    } else if (st.shares_missing == 0) {
        cli_error("%s: every DKEK share of the card is imported already (KCV above: sks hsm dkek status)", CMD);
    } else if (open_share(CMD, argv[3], &s, share)) {
        if (sks_client_hsm_dkek_import_share(t, cli_span(pin), 0, sp, &st, &e)) {
            printf("imported the DKEK share %s\n", argv[3]);
            print_dkek_status(&st);
            rc = CLI_EXIT_OK;
        } else {
            cli_client_error(CMD, &e);
        }
    }
    OPENSSL_cleanse(share, sizeof(share));
    OPENSSL_cleanse(&s, sizeof(s));
    t->close(t);
    return rc;
}

/* The KCV of the XOR of the share files; 0 after printing why. */
static int host_kcv(const char *cmd, const cli_list *files, share_secret *s, uint8_t kcv[SCHSM_KCV_LEN])
{
    uint8_t dkek[SCHSM_DKEK_LEN], share[SCHSM_DKEK_LEN];
    size_t i;
    int ok = share_secret_ready(cmd, s);

    memset(dkek, 0, sizeof(dkek));
    for (i = 0; ok && i < files->count; i++) {
        ok = open_share(cmd, files->items[i], s, share);
        schsm_dkek_add_share(dkek, share);
        OPENSSL_cleanse(share, sizeof(share));
    }
    ok = ok && schsm_dkek_kcv(dkek, kcv);
    OPENSSL_cleanse(dkek, sizeof(dkek));
    return ok;
}

static int dkek_status(cli_store *store, int argc, char **argv)
{
    static const char CMD[] = "hsm dkek status";
    share_secret s = { 0 };
    cli_list files = { { 0 }, 0 };
    const char *pin = NULL;
    const cli_opt opts[] = {
        { "--dkek-share", OPT_LIST, &files },
        { "--password", OPT_SECRET, &s.password },
        { "--pwd-shares", OPT_VALUE, &s.pwd_shares },
        { "--pin", OPT_SECRET, &pin },
    };
    uint8_t kcv[SCHSM_KCV_LEN];
    char card_hex[17], host_hex[17];
    sks_hsm_dkek_status st;
    sks_client_error e;
    sks_transport *t;
    int rc;

    if ((rc = cli_parse_command(CMD, argc, argv, 3, opts, sizeof(opts) / sizeof(opts[0]), DKEK_USAGE))
        != CLI_CONTINUE)
        return rc;
    if ((t = cli_open(store, CMD)) == NULL)
        return CLI_EXIT_FAIL;
    rc = CLI_EXIT_FAIL;
    if (!sks_client_hsm_key_domain_status(t, cli_span(pin), 0, &st, &e)) {
        cli_client_error(CMD, &e);
        goto done;
    }
    printf("device:      %s\n", store->device);
    print_dkek_status(&st);
    rc = CLI_EXIT_OK;
    if (files.count == 0)
        goto done;
    rc = CLI_EXIT_FAIL;
    if (!host_kcv(CMD, &files, &s, kcv))
        goto done;
    hex_line(kcv, sizeof(kcv), host_hex);
    hex_line(st.kcv, sizeof(st.kcv), card_hex);
    printf("KCV of the %zu share file(s): %s\n", files.count, host_hex);
    if (st.shares_missing > 0)
        cli_error("%s: the card still misses %u share(s): its KCV cannot be compared yet", CMD, st.shares_missing);
    else if (CRYPTO_memcmp(kcv, st.kcv, sizeof(kcv)) != 0)
        cli_error("%s: the share files make the KCV %s, the card's DKEK has %s: not the same DKEK", CMD, host_hex,
                  card_hex);
    else {
        printf("the card's DKEK is the one of the share files\n");
        rc = CLI_EXIT_OK;
    }
done:
    OPENSSL_cleanse(&s, sizeof(s));
    t->close(t);
    return rc;
}

int cli_hsm_dkek(cli_store *store, int argc, char **argv)
{
    const char *sub = argc > 2 ? argv[2] : "";

    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
        fputs(DKEK_USAGE, stdout);
        return CLI_EXIT_OK;
    }
    if (strcmp(sub, "create-share") == 0)
        return dkek_create_share(store, argc, argv);
    if (strcmp(sub, "import") == 0)
        return dkek_import(store, argc, argv);
    if (strcmp(sub, "status") == 0)
        return dkek_status(store, argc, argv);
    cli_error("hsm dkek: give create-share, import or status (see sks hsm dkek --help)");
    return CLI_EXIT_USAGE;
}

/* ---- backup, restore ---- */

int cli_hsm_backup(cli_store *store, int argc, char **argv)
{
    static const char CMD[] = "hsm backup";
    const char *name = NULL, *out = NULL, *pin = NULL;
    const cli_opt opts[] = {
        { "--name", OPT_VALUE, &name },
        { "--out", OPT_VALUE, &out },
        { "--pin", OPT_SECRET, &pin },
    };
    sks_bytes blob = { 0 }, prkd = { 0 }, cert = { 0 };
    uint8_t *file = NULL;
    size_t filelen = 0;
    char err[256], kcv[17];
    sks_client_error e;
    sks_transport *t;
    uint32_t handle;
    int rc;

    if ((rc = cli_parse_command(CMD, argc, argv, 2, opts, sizeof(opts) / sizeof(opts[0]), BACKUP_USAGE))
        != CLI_CONTINUE)
        return rc;
    if (name == NULL || out == NULL) {
        cli_error("%s: --name and --out are required (see sks hsm backup --help)", CMD);
        return CLI_EXIT_USAGE;
    }
    if (access(out, F_OK) == 0) {
        cli_error("%s: %s exists already", CMD, out);
        return CLI_EXIT_FAIL;
    }
    if (!cli_need_secret(CMD, "--pin", "the card's user PIN", 0, &pin) || (t = cli_open(store, CMD)) == NULL)
        return CLI_EXIT_FAIL;
    rc = CLI_EXIT_FAIL;
    if (!cli_find_key(t, CMD, name, NULL, &handle))
        goto done;
    if (!sks_client_hsm_wrap_key(t, cli_span(pin), handle, &blob, &prkd, &cert, &e)) {
        cli_client_error(CMD, &e);
        goto done;
    }
    if (!schsm_wrap_file_build(blob.data, blob.len, prkd.data, prkd.len, cert.data, cert.len, &file, &filelen, err,
                               sizeof(err))) {
        cli_error("%s: %s", CMD, err);
        goto done;
    }
    if (!write_new_file(CMD, out, file, filelen))
        goto done;
    hex_line(blob.data, SCHSM_KCV_LEN, kcv);
    printf("wrote %s: key '%s' (#%u) wrapped under the DKEK with KCV %s\n", out, name, handle, kcv);
    rc = CLI_EXIT_OK;
done:
    OPENSSL_free(blob.data);
    OPENSSL_free(prkd.data);
    OPENSSL_free(cert.data);
    OPENSSL_free(file);
    t->close(t);
    return rc;
}

/* 1 if p[0..n) is exactly one DER X.509 certificate. */
static int is_x509(const uint8_t *p, size_t n)
{
    const unsigned char *q = p;
    X509 *x = p != NULL ? d2i_X509(NULL, &q, (long)n) : NULL;
    int ok = x != NULL && q == p + n;

    X509_free(x);
    return ok;
}

/* The name the restored key will have: --name, else the file's label; refused if taken. */
static int restore_name(sks_transport *t, const char *cmd, const char *name, const uint8_t *prkd, size_t prkdlen,
                        char *out, size_t outlen)
{
    const uint8_t *label;
    size_t n;

    if (name != NULL) {
        snprintf(out, outlen, "%s", name);
    } else if (prkd != NULL && schsm_prkd_label(prkd, prkdlen, &label, &n) && n > 0 && n < outlen) {
        memcpy(out, label, n);
        out[n] = '\0';
    } else {
        cli_error("%s: the file names no label for the key: give --name", cmd);
        return 0;
    }
    return cli_check_card_label(cmd, out) && cli_check_new_name(t, cmd, out);
}

int cli_hsm_restore(cli_store *store, int argc, char **argv)
{
    static const char CMD[] = "hsm restore";
    const char *name = NULL, *pin = NULL, *subject = NULL, *days = NULL;
    const cli_opt opts[] = {
        { "--name", OPT_VALUE, &name },
        { "--pin", OPT_SECRET, &pin },
        { "--subject", OPT_VALUE, &subject },
        { "--days", OPT_VALUE, &days },
    };
    unsigned long ndays = RESTORED_CERT_DAYS;
    sks_buf dn;
    static uint8_t file[MAX_WRAP_FILE + 1];
    const uint8_t *blob, *prkd, *cert;
    size_t n = 0, bloblen, prkdlen, certlen;
    char err[256], label[256];
    sks_span sblob, sprkd, scert, sdn;
    sks_client_error e;
    sks_transport *t;
    uint32_t handle;
    int rc;

    if ((rc = cli_parse_command(CMD, argc, argv, after_file(argc, argv, 2), opts, sizeof(opts) / sizeof(opts[0]),
                                BACKUP_USAGE))
        != CLI_CONTINUE)
        return rc;
    if (argc < 3 || argv[2][0] == '-') {
        cli_error("%s: give the wrap file (see sks hsm restore --help)", CMD);
        return CLI_EXIT_USAGE;
    }
    if (!read_small_file(CMD, argv[2], file, sizeof(file), &n))
        return CLI_EXIT_FAIL;
    if (n > MAX_WRAP_FILE
        || !schsm_wrap_file_parse(file, n, &blob, &bloblen, &prkd, &prkdlen, &cert, &certlen, err, sizeof(err))) {
        cli_error("%s: %s: %s", CMD, argv[2], n > MAX_WRAP_FILE ? "larger than any wrap file" : err);
        return CLI_EXIT_FAIL;
    }
    /* a file with a certificate but no key description (sks hsm wrap --cert) has the
     * certificate in the description's place */
    if (cert == NULL && is_x509(prkd, prkdlen)) {
        cert = prkd, certlen = prkdlen;
        prkd = NULL, prkdlen = 0;
    }
    if ((subject != NULL || days != NULL) && (cert == NULL || certlen == 0 || cert[0] != 0x67)) {
        cli_error("%s: --subject and --days are for a key backed up with its CV request; %s carries %s", CMD,
                  argv[2], cert != NULL && certlen > 0 ? "the key's certificate, which is restored as it is"
                                                       : "no certificate");
        return CLI_EXIT_USAGE;
    }
    sks_buf_init(&dn);
    if ((days != NULL && !cli_parse_number(CMD, "--days", days, 1, 36500, &ndays))
        || !cli_subject_der(CMD, subject, &dn)) {
        sks_buf_free(&dn);
        return CLI_EXIT_USAGE;
    }
    if ((t = cli_open_with_pin(store, CMD, &pin, &rc)) == NULL) {
        sks_buf_free(&dn);
        return rc;
    }
    rc = CLI_EXIT_FAIL;
    if (restore_name(t, CMD, name, prkd, prkdlen, label, sizeof(label))) {
        sblob.p = blob, sblob.n = bloblen;
        sprkd.p = prkd, sprkd.n = prkdlen;
        scert.p = cert, scert.n = certlen;
        sdn.p = dn.data, sdn.n = dn.len;
        if (sks_client_hsm_unwrap_key(t, cli_span(pin), sblob, sprkd, scert, name ? name : "", sdn,
                                      (uint32_t)ndays, &handle, &e)) {
            printf("restored '%s' as key #%u\n", label, handle);
            rc = CLI_EXIT_OK;
        } else {
            cli_client_error(CMD, &e);
        }
    }
    sks_buf_free(&dn);
    t->close(t);
    return rc;
}
