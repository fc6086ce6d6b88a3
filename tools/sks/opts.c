/* Command-line option parsing shared by the commands: one table per command. */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/ui.h>

/* ---- secrets: kept here so that every one is wiped at exit ---- */

#define SECRETS_MAX 16
static char *secrets[SECRETS_MAX];
static size_t nsecrets;

static void wipe_secrets(void)
{
    size_t i;

    for (i = 0; i < nsecrets; i++) {
        OPENSSL_cleanse(secrets[i], strlen(secrets[i]));
        free(secrets[i]);
        secrets[i] = NULL;
    }
    nsecrets = 0;
}

/* Copies a secret into the wiped-at-exit list; NULL if the list is full or no memory. */
static const char *keep_secret(const char *value)
{
    size_t n = strlen(value);
    char *copy;

    if (nsecrets == SECRETS_MAX || (copy = malloc(n + 1)) == NULL)
        return NULL;
    memcpy(copy, value, n + 1);
    if (nsecrets == 0)
        atexit(wipe_secrets);
    secrets[nsecrets++] = copy;
    return copy;
}

/* Reads one line from fd a byte at a time, so nothing after it is consumed (the next "-"
 * option reads the next line of stdin). 1: a line (maybe the last, without a newline);
 * 0: too long; -1: read error or nothing at all. */
static int read_line(int fd, char *buf, size_t size, size_t *len)
{
    size_t n = 0;
    ssize_t r;
    char c;

    while ((r = read(fd, &c, 1)) == 1 && c != '\n') {
        if (n + 1 >= size)
            return 0;
        buf[n++] = c;
    }
    if (r < 0 || (r == 0 && n == 0))
        return -1;
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    buf[n] = '\0';
    *len = n;
    return 1;
}

static int is_secret(cli_opt_kind kind)
{
    return kind == OPT_SECRET || kind == OPT_NEW_SECRET;
}

/* --NAME-file -, with a terminal on stdin: asked without echo (twice for a new secret). */
static const char *ask_for_option(const char *cmd, const cli_opt *o)
{
    char buf[CLI_SECRET_MAX], prompt[160];
    const char *kept = NULL;

    snprintf(prompt, sizeof(prompt), "sks %s: %s: ", cmd, o->name + 2);
    if (!cli_ask_secret(prompt, o->kind == OPT_NEW_SECRET, buf, sizeof(buf)) || buf[0] == '\0')
        cli_error("%s: no %s given", cmd, o->name + 2);
    else if ((kept = keep_secret(buf)) == NULL)
        cli_error("%s: out of memory", cmd);
    OPENSSL_cleanse(buf, sizeof(buf));
    return kept;
}

/* --NAME-file PATH: the first line of PATH ("-": the next line of stdin, or the terminal). */
static const char *read_secret_file(const char *cmd, const cli_opt *o, const char *path)
{
    char buf[CLI_SECRET_MAX];
    const char *kept = NULL, *opt = o->name;
    int fd = strcmp(path, "-") == 0 ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC);
    int got;
    size_t len = 0;

    if (fd == STDIN_FILENO && isatty(fd))
        return ask_for_option(cmd, o);
    if (fd < 0) {
        cli_error("%s: %s-file: cannot open %s: %s", cmd, opt, path, strerror(errno));
        return NULL;
    }
    got = read_line(fd, buf, sizeof(buf), &len);
    if (fd != STDIN_FILENO)
        close(fd);
    if (got == 0)
        cli_error("%s: %s-file: the first line of %s is longer than %d bytes", cmd, opt, path, CLI_SECRET_MAX - 1);
    else if (got < 0 || len == 0)
        cli_error("%s: %s-file: %s has no %s on its first line", cmd, opt, strcmp(path, "-") == 0 ? "standard input" : path,
                  opt + 2);
    else if ((kept = keep_secret(buf)) == NULL)
        cli_error("%s: out of memory", cmd);
    OPENSSL_cleanse(buf, sizeof(buf));
    return kept;
}

int cli_ask_secret(const char *prompt, int verify, char *buf, size_t size)
{
    if (!isatty(STDIN_FILENO))
        return 0;
    /* OpenSSL's UI: reads /dev/tty with echo off, and asks twice when verify is set. */
    if (UI_UTIL_read_pw_string(buf, (int)size, prompt, verify) != 0) {
        OPENSSL_cleanse(buf, size);
        return 0;
    }
    return 1;
}

int cli_need_secret(const char *cmd, const char *opt, const char *what, int verify, const char **slot)
{
    char buf[CLI_SECRET_MAX], prompt[160];

    if (*slot != NULL)
        return 1;
    if (!isatty(STDIN_FILENO)) {
        cli_error("%s: %s-file FILE (or %s) is required: the %s (see sks %s --help)", cmd, opt, opt, what, cmd);
        return 0;
    }
    snprintf(prompt, sizeof(prompt), "sks %s: %s: ", cmd, what);
    if (!cli_ask_secret(prompt, verify, buf, sizeof(buf)) || buf[0] == '\0') {
        OPENSSL_cleanse(buf, sizeof(buf));
        cli_error("%s: no %s given", cmd, what);
        return 0;
    }
    *slot = keep_secret(buf);
    OPENSSL_cleanse(buf, sizeof(buf));
    if (*slot == NULL)
        cli_error("%s: out of memory", cmd);
    return *slot != NULL;
}

/* The option named name[0..len), or the OPT_SECRET option whose "-file" form it is (*file set). */
static const cli_opt *find_opt(const cli_opt *opts, size_t nopts, const char *name, size_t len, int *file)
{
    static const char SUFFIX[] = "-file";
    size_t i, base = len > sizeof(SUFFIX) - 1 ? len - (sizeof(SUFFIX) - 1) : 0;

    *file = 0;
    for (i = 0; i < nopts; i++)
        if (strlen(opts[i].name) == len && strncmp(opts[i].name, name, len) == 0)
            return &opts[i];
    if (base == 0 || strncmp(name + base, SUFFIX, sizeof(SUFFIX) - 1) != 0)
        return NULL;
    for (i = 0; i < nopts; i++)
        if (is_secret(opts[i].kind) && strlen(opts[i].name) == base && strncmp(opts[i].name, name, base) == 0) {
            *file = 1;
            return &opts[i];
        }
    return NULL;
}

/* Stores one option's value; 0 (with a message) if it cannot be taken. */
static int take_value(const char *cmd, const cli_opt *o, const char *value)
{
    const char **slot;
    cli_list *list;

    switch (o->kind) {
    case OPT_VALUE:
    case OPT_SECRET:
    case OPT_NEW_SECRET:
        slot = o->target;
        if (*slot != NULL) {
            cli_error("%s: %s given twice%s", cmd, o->name, is_secret(o->kind) ? " (with or without -file)" : "");
            return 0;
        }
        *slot = value;
        return 1;
    case OPT_LIST:
        list = o->target;
        if (list->count == CLI_LIST_MAX) {
            cli_error("%s: %s given more than %d times", cmd, o->name, CLI_LIST_MAX);
            return 0;
        }
        list->items[list->count++] = value;
        return 1;
    default:
        *(int *)o->target = 1;
        return 1;
    }
}

int cli_parse(const char *cmd, int argc, char **argv, int first, const cli_opt *opts, size_t nopts)
{
    int i;

    for (i = first; i < argc; i++) {
        const char *arg = argv[i], *eq = strchr(arg, '=');
        size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
        const cli_opt *o;
        const char *value;
        int file;

        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0)
            return CLI_PARSE_HELP;
        if (strncmp(arg, "--", 2) != 0) {
            cli_error("%s: unexpected argument '%s' (see sks %s --help)", cmd, arg, cmd);
            return CLI_PARSE_ERROR;
        }
        if ((o = find_opt(opts, nopts, arg, len, &file)) == NULL) {
            cli_error("%s: unknown option '%.*s' (see sks %s --help)", cmd, (int)len, arg, cmd);
            return CLI_PARSE_ERROR;
        }
        if (o->kind == OPT_FLAG && eq != NULL) {
            cli_error("%s: %s takes no value", cmd, o->name);
            return CLI_PARSE_ERROR;
        }
        if (o->kind != OPT_FLAG && eq == NULL && i + 1 >= argc) {
            cli_error("%s: %.*s needs a value", cmd, (int)len, arg);
            return CLI_PARSE_ERROR;
        }
        value = o->kind == OPT_FLAG ? NULL : eq ? eq + 1 : argv[++i];
        if (file && (value = read_secret_file(cmd, o, value)) == NULL)
            return CLI_PARSE_ERROR;
        if (!take_value(cmd, o, value))
            return CLI_PARSE_ERROR;
    }
    return CLI_PARSE_OK;
}

int cli_parse_number(const char *cmd, const char *opt, const char *s, unsigned long min, unsigned long max,
                     unsigned long *out)
{
    char *end = NULL;
    unsigned long v;

    errno = 0;
    v = strtoul(s, &end, 10);
    if (*s < '0' || *s > '9' || *end != '\0' || errno != 0 || v < min || v > max) {
        cli_error("%s: %s must be a number from %lu to %lu, got '%s'", cmd, opt, min, max, s);
        return 0;
    }
    *out = v;
    return 1;
}

int cli_subject_der(const char *cmd, const char *subject, sks_buf *out)
{
    char err[512];
    X509_NAME *dn;
    unsigned char *der = NULL;
    int len;

    if (subject == NULL)
        return 1;
    if ((dn = issuer_parse_dn(subject, err, sizeof(err))) == NULL) {
        cli_error("%s: --subject: %s", cmd, err);
        return 0;
    }
    len = i2d_X509_NAME(dn, &der);
    X509_NAME_free(dn);
    if (len <= 0) {
        cli_error("%s: --subject cannot be encoded", cmd);
        return 0;
    }
    sks_buf_put(out, der, (size_t)len);
    OPENSSL_free(der);
    if (out->failed)
        cli_error("%s: out of memory", cmd);
    return !out->failed;
}

sks_span cli_span(const char *s)
{
    sks_span sp = { (const uint8_t *)s, s ? strlen(s) : 0 };
    return sp;
}

int cli_parse_command(const char *cmd, int argc, char **argv, int first, const cli_opt *opts, size_t nopts,
                      const char *usage)
{
    switch (cli_parse(cmd, argc, argv, first, opts, nopts)) {
    case CLI_PARSE_HELP:
        fputs(usage, stdout);
        return CLI_EXIT_OK;
    case CLI_PARSE_ERROR:
        return CLI_EXIT_USAGE;
    default:
        return CLI_CONTINUE;
    }
}

int cli_take_file_argument(const char *cmd, int *argc, char **argv, int first, const char **path)
{
    int i, out = first;

    *path = NULL;
    for (i = first; i < *argc; i++) {
        if (strncmp(argv[i], "--", 2) == 0) {
            argv[out++] = argv[i];
            if (strchr(argv[i], '=') == NULL && strcmp(argv[i], "--help") != 0 && i + 1 < *argc)
                argv[out++] = argv[++i];
        } else if (*path == NULL) {
            *path = argv[i];
        } else {
            cli_error("%s: unexpected argument '%s' (one file)", cmd, argv[i]);
            return 0;
        }
    }
    *argc = out;
    return 1;
}

int cli_one_key(const char *cmd, const char *name, const char *handle)
{
    if ((name == NULL) != (handle == NULL))
        return 1;
    cli_error("%s: give the key with exactly one of --name or --handle", cmd);
    return 0;
}
