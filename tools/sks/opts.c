/* Command-line option parsing shared by the commands: one table per command. */
#include "cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const cli_opt *find_opt(const cli_opt *opts, size_t nopts, const char *name, size_t len)
{
    size_t i;

    for (i = 0; i < nopts; i++)
        if (strlen(opts[i].name) == len && strncmp(opts[i].name, name, len) == 0)
            return &opts[i];
    return NULL;
}

/* Stores one option's value; 0 (with a message) if it cannot be taken. */
static int take_value(const char *cmd, const cli_opt *o, const char *value)
{
    const char **slot;
    cli_list *list;

    switch (o->kind) {
    case OPT_VALUE:
        slot = o->target;
        if (*slot != NULL) {
            cli_error("%s: %s given twice", cmd, o->name);
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

        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0)
            return CLI_PARSE_HELP;
        if (strncmp(arg, "--", 2) != 0) {
            cli_error("%s: unexpected argument '%s' (see sks %s --help)", cmd, arg, cmd);
            return CLI_PARSE_ERROR;
        }
        if ((o = find_opt(opts, nopts, arg, len)) == NULL) {
            cli_error("%s: unknown option '%.*s' (see sks %s --help)", cmd, (int)len, arg, cmd);
            return CLI_PARSE_ERROR;
        }
        if (o->kind == OPT_FLAG && eq != NULL) {
            cli_error("%s: %s takes no value", cmd, o->name);
            return CLI_PARSE_ERROR;
        }
        if (o->kind != OPT_FLAG && eq == NULL && i + 1 >= argc) {
            cli_error("%s: %s needs a value", cmd, o->name);
            return CLI_PARSE_ERROR;
        }
        if (!take_value(cmd, o, o->kind == OPT_FLAG ? NULL : eq ? eq + 1 : argv[++i]))
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

int cli_one_key(const char *cmd, const char *name, const char *handle)
{
    if ((name == NULL) != (handle == NULL))
        return 1;
    cli_error("%s: give the key with exactly one of --name or --handle", cmd);
    return 0;
}
