/* sks delete: removes a key (deleteKey); the device enforces its delete protection. */
#include "cli.h"

#include <stdio.h>

static const char USAGE[] =
    "usage: sks delete (--name N | --handle H) [--auth-file FILE]\n"
    "  Deletes a key. If the key's delete protection asks for its PIN or PUK, --auth-file gives\n"
    "  it (the first line of FILE; \"-\": the next line of standard input), else it is asked on\n"
    "  the terminal without echo. --auth PIN works too, but shows the PIN to ps.\n";

int cmd_delete(cli_store *store, int argc, char **argv)
{
    const char *name = NULL, *handle_opt = NULL, *auth = NULL;
    const cli_opt opts[] = {
        { "--name", OPT_VALUE, &name },
        { "--handle", OPT_VALUE, &handle_opt },
        { "--auth", OPT_SECRET, &auth },
    };
    sks_client_error e;
    sks_transport *t;
    uint32_t handle = 0;
    int rc = CLI_EXIT_FAIL;

    if ((rc = cli_parse_command("delete", argc, argv, 1, opts, sizeof(opts) / sizeof(opts[0]), USAGE)) != CLI_CONTINUE)
        return rc;
    if (!cli_one_key("delete", name, handle_opt))
        return CLI_EXIT_USAGE;
    if ((t = cli_open(store, "delete")) == NULL)
        return CLI_EXIT_FAIL;
    if (cli_find_key(t, "delete", name, handle_opt, &handle) && cli_check_auth(t, "delete", handle, 0, &auth)) {
        if (sks_client_delete_key(t, handle, cli_span(auth), &e)) {
            printf("deleted key %u%s%s\n", handle, name ? ": " : "", name ? name : "");
            rc = CLI_EXIT_OK;
        } else {
            cli_client_error("delete", &e);
        }
    }
    t->close(t);
    return rc;
}
