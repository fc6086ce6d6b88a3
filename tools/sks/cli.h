/* Shared by the `sks` tool's command files. */
#ifndef SKS_CLI_H
#define SKS_CLI_H

#include "../../transport/transport.h"

typedef struct {
    sks_store_location loc;
    char db_path[4096];
    char master_path[4096];
} cli_store;

/* Resolves --store/--master-key, then SKS_STORE/SKS_MASTER_KEY, then the per-user default. */
int cli_store_resolve(cli_store *s, const char *store_opt, const char *master_opt);

/* Prints "sks: <message>" to stderr. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

typedef struct {
    const char *name;
    const char *summary;
    /* argv[0] is the command name. Returns the process exit code. */
    int (*run)(cli_store *store, int argc, char **argv);
} cli_command;

int cmd_init(cli_store *store, int argc, char **argv);
int cmd_info(cli_store *store, int argc, char **argv);
int cmd_serve(cli_store *store, int argc, char **argv);

#endif
