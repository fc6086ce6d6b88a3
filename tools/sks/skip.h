/* Shared by the `sks skip` subcommands (skip.c: request, import; skip_issue.c: issue). */
#ifndef SKS_TOOL_SKIP_H
#define SKS_TOOL_SKIP_H

#include "cli.h"
#include "../../cms/skip_import.h"

/* A SKIP key type by its command-line name. */
typedef struct {
    const char *name;  /* P-256, ..., brainpoolP512r1, Ed25519 */
    const char *alias; /* other accepted names (NULL: none) */
    const char *alias2;
    const char *group; /* OpenSSL's group name; NULL for Ed25519 */
    const char *uri;   /* the device's key generation algorithm */
} skip_key_type;

/* Looks up a key type; with ec_only, Ed25519 is refused. Prints the error naming `opt`. */
const skip_key_type *skip_find_key_type(const char *cmd, const char *opt, const char *name, int ec_only);

/* Reads a whole file (at most 4 MiB); 0 with a message. */
int skip_read_file(const char *path, sks_buf *out, char *err, size_t errlen);

/* Splits "... PACKAGE ..." from the options: the one argument that is neither an option nor
 * the value of a value option. argv is left with the options alone. */
int skip_take_positional(const char *cmd, int *argc, char **argv, const cli_opt *opts, size_t nopts,
                         const char **positional);

int skip_cmd_issue(cli_store *store, int argc, char **argv);
int skip_cmd_enroll(cli_store *store, int argc, char **argv);  /* skip_enroll.c */
int skip_cmd_recover(cli_store *store, int argc, char **argv); /* skip_enroll.c */

/* The trust anchors a request stores, as DER (skip.c). */
typedef struct {
    sks_span der[SKIP_MAX_ANCHORS];
    size_t count;
} skip_anchor_ders;

int skip_read_anchors(const char *path, skip_anchor_ders *a);
void skip_anchor_ders_free(skip_anchor_ders *a);
void skip_print_result(sks_transport *t, const char *path, const skip_import_result *r);
/* A private key through the sks provider (skip_issue.c), for an sks: URI. */
EVP_PKEY *skip_load_sks_key(const cli_store *store, const char *cmd, const char *uri);

#endif
