/* sks pin change|unlock|set: the PIN operations of the key management API. */
#include "cli.h"

#include <stdio.h>
#include <string.h>

static const char USAGE[] =
    "usage: sks pin change (--name N | --handle H) [--old-file FILE] [--new-file FILE]\n"
    "       sks pin unlock (--name N | --handle H) [--puk-file FILE]\n"
    "       sks pin set    (--name N | --handle H) [--puk-file FILE] [--new-file FILE]\n"
    "  change: replaces the PIN, given the current one (changePin)\n"
    "  unlock: clears the wrong-PIN count of a locked key with the PUK (unlockKey)\n"
    "  set:    sets a new PIN with the PUK, e.g. when the PIN is forgotten (setPin)\n"
    "  --old-file, --new-file, --puk-file FILE: the first line of FILE; \"-\" is the next line of\n"
    "  standard input. A PIN or PUK not given is asked on the terminal, without echo (a new PIN\n"
    "  twice). --old PIN, --new PIN and --puk PUK also work, but show the secret to ps.\n"
    "  On a SmartCard-HSM the user PIN is the card's (any of its keys names it) and the SO-PIN\n"
    "  takes the PUK's place for unlock: --so-pin-file FILE (or --so-pin SO).\n";

typedef struct {
    const char *name, *handle, *old_pin, *new_pin, *puk, *so_pin;
} pin_args;

/* Which secrets each subcommand takes, so a wrong one is named before the device is asked. */
static int check_args(const char *sub, const pin_args *a)
{
    const char *extra = NULL;

    if (a->puk != NULL && a->so_pin != NULL) {
        cli_error("pin %s: give --puk or --so-pin, not both", sub);
        return 0;
    }
    if (strcmp(sub, "change") == 0)
        extra = a->puk ? "--puk" : a->so_pin ? "--so-pin" : NULL;
    else if (strcmp(sub, "unlock") == 0)
        extra = a->old_pin ? "--old" : a->new_pin ? "--new" : NULL;
    else
        extra = a->old_pin ? "--old" : NULL;
    if (extra != NULL)
        cli_error("pin %s: %s does not apply (see sks pin --help)", sub, extra);
    else if ((a->name == NULL) == (a->handle == NULL))
        cli_error("pin %s: give the key with exactly one of --name or --handle", sub);
    else
        return 1;
    return 0;
}

/* The secrets the subcommand needs, from the command line or else the terminal. */
static int need_secrets(const char *sub, pin_args *a)
{
    char cmd[32];

    snprintf(cmd, sizeof(cmd), "pin %s", sub);
    if (strcmp(sub, "change") == 0)
        return cli_need_secret(cmd, "--old", "current PIN", 0, &a->old_pin)
               && cli_need_secret(cmd, "--new", "new PIN", 1, &a->new_pin);
    if (strcmp(sub, "unlock") == 0)
        return cli_need_secret(cmd, "--puk", "PUK", 0, &a->puk);
    return cli_need_secret(cmd, "--puk", "PUK", 0, &a->puk) && cli_need_secret(cmd, "--new", "new PIN", 1, &a->new_pin);
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
        { "--name", OPT_VALUE, &a.name }, { "--handle", OPT_VALUE, &a.handle }, { "--old", OPT_SECRET, &a.old_pin },
        { "--new", OPT_NEW_SECRET, &a.new_pin }, { "--puk", OPT_SECRET, &a.puk },
        { "--so-pin", OPT_SECRET, &a.so_pin },
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
    if (a.so_pin != NULL) /* a SmartCard-HSM's SO-PIN unlocks as a PUK does */
        a.puk = a.so_pin;
    if (!need_secrets(sub, &a))
        return CLI_EXIT_USAGE;
    if ((t = cli_open(store, "pin")) == NULL)
        return CLI_EXIT_FAIL;
    ok = run(t, sub, &a);
    t->close(t);
    return ok ? CLI_EXIT_OK : CLI_EXIT_FAIL;
}
