/* sks pin change|unlock|set: the PIN operations of the key management API. */
#include "cli.h"

#include <stdio.h>
#include <string.h>

static const char USAGE[] =
    "usage: sks pin change (--name N | --handle H) --old PIN --new PIN\n"
    "       sks pin unlock (--name N | --handle H) --puk PUK\n"
    "       sks pin set    (--name N | --handle H) --puk PUK --new PIN\n"
    "  change: replaces the PIN, given the current one (changePin)\n"
    "  unlock: clears the wrong-PIN count of a locked key with the PUK (unlockKey)\n"
    "  set:    sets a new PIN with the PUK, e.g. when the PIN is forgotten (setPin)\n";

typedef struct {
    const char *name, *handle, *old_pin, *new_pin, *puk;
} pin_args;

/* Which secrets each subcommand needs, so a missing one is named before the device is asked. */
static int check_args(const char *sub, const pin_args *a)
{
    const char *missing = NULL, *extra = NULL;

    if (strcmp(sub, "change") == 0) {
        missing = !a->old_pin ? "--old" : !a->new_pin ? "--new" : NULL;
        extra = a->puk ? "--puk" : NULL;
    } else if (strcmp(sub, "unlock") == 0) {
        missing = !a->puk ? "--puk" : NULL;
        extra = a->old_pin ? "--old" : a->new_pin ? "--new" : NULL;
    } else {
        missing = !a->puk ? "--puk" : !a->new_pin ? "--new" : NULL;
        extra = a->old_pin ? "--old" : NULL;
    }
    if (missing != NULL)
        cli_error("pin %s: %s is required (see sks pin --help)", sub, missing);
    else if (extra != NULL)
        cli_error("pin %s: %s does not apply (see sks pin --help)", sub, extra);
    else if ((a->name == NULL) == (a->handle == NULL))
        cli_error("pin %s: give the key with exactly one of --name or --handle", sub);
    else
        return 1;
    return 0;
}

static int run(sks_transport *t, const char *sub, const pin_args *a)
{
    char cmd[32];
    sks_client_error e;
    uint32_t handle;
    int ok;

    snprintf(cmd, sizeof(cmd), "pin %s", sub);
    if (!cli_find_key(t, cmd, a->name, a->handle, &handle))
        return 0;
    if (strcmp(sub, "change") == 0)
        ok = sks_client_change_pin(t, handle, cli_span(a->old_pin), cli_span(a->new_pin), &e);
    else if (strcmp(sub, "unlock") == 0)
        ok = sks_client_unlock_key(t, handle, cli_span(a->puk), &e);
    else
        ok = sks_client_set_pin(t, handle, cli_span(a->puk), cli_span(a->new_pin), &e);
    if (!ok)
        cli_client_error(cmd, &e);
    else
        printf("%s: done for key %u\n", cmd, handle);
    return ok;
}

int cmd_pin(cli_store *store, int argc, char **argv)
{
    int rc;
    pin_args a;
    const cli_opt opts[] = {
        { "--name", OPT_VALUE, &a.name }, { "--handle", OPT_VALUE, &a.handle }, { "--old", OPT_VALUE, &a.old_pin },
        { "--new", OPT_VALUE, &a.new_pin }, { "--puk", OPT_VALUE, &a.puk },
    };
    const char *sub = argc > 1 ? argv[1] : "";
    sks_transport *t;
    int ok;

    memset(&a, 0, sizeof(a));
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
        fputs(USAGE, stdout);
        return CLI_EXIT_OK;
    }
    if (strcmp(sub, "change") != 0 && strcmp(sub, "unlock") != 0 && strcmp(sub, "set") != 0) {
        if (argc > 1)
            cli_error("pin: unknown subcommand '%s' (choose change, unlock or set; see sks pin --help)", sub);
        else
            cli_error("pin: give a subcommand: change, unlock or set (see sks pin --help)");
        return CLI_EXIT_USAGE;
    }
    if ((rc = cli_parse_command("pin", argc, argv, 2, opts, sizeof(opts) / sizeof(opts[0]), USAGE)) != CLI_CONTINUE)
        return rc;
    if (!check_args(sub, &a))
        return CLI_EXIT_USAGE;
    if ((t = cli_open(store, "pin")) == NULL)
        return CLI_EXIT_FAIL;
    ok = run(t, sub, &a);
    t->close(t);
    return ok ? CLI_EXIT_OK : CLI_EXIT_FAIL;
}
