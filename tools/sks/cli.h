/* Shared by the `sks` tool's command files. */
#ifndef SKS_CLI_H
#define SKS_CLI_H

#include <openssl/x509.h>

#include "../../client/sks_client.h"
#include "../../transport/transport.h"
#include "issuer.h"

typedef struct {
    char device[4200];       /* device specification: file:PATH, unix:PATH or pcsc:[READER] */
    int is_file;             /* the embedded store: init and serve need one */
    sks_store_location loc;
    /* The embedded store's path; for other devices, the base name the local issuer CA
     * lives beside (~/.local/share/sks/device). */
    char db_path[4096];
    char master_path[4096];
} cli_store;

/*
 * Resolves the device: --device SPEC, else --store PATH (file:PATH), else $SKS_DEVICE,
 * else $SKS_STORE, else the per-user default store. The master key of an embedded store is
 * --master-key, else $SKS_MASTER_KEY, else PATH.key.
 */
int cli_store_resolve(cli_store *s, const char *device_opt, const char *store_opt, const char *master_opt);

/* Creates the directories above path (0700). */
int cli_mkdir_parents(const char *path);

/* Loads OpenSSL's default provider and the sks provider (once), for the commands that reach a
 * key through an sks: URI; they are unloaded at exit. 0 if one cannot be loaded. */
int cli_load_providers(void);

/* Prints "sks: <message>" to stderr. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

typedef struct {
    const char *name;
    const char *summary;
    /* argv[0] is the command name. Returns the process exit code. */
    int (*run)(cli_store *store, int argc, char **argv);
} cli_command;

/* Exit codes: 0 success, 1 the operation failed, 2 the command line is wrong. */
enum { CLI_EXIT_OK = 0, CLI_EXIT_FAIL = 1, CLI_EXIT_USAGE = 2 };

int cmd_init(cli_store *store, int argc, char **argv);
int cmd_info(cli_store *store, int argc, char **argv);
int cmd_serve(cli_store *store, int argc, char **argv);
int cmd_list(cli_store *store, int argc, char **argv);
int cmd_generate(cli_store *store, int argc, char **argv);
int cmd_import(cli_store *store, int argc, char **argv);
int cmd_delete(cli_store *store, int argc, char **argv);
int cmd_export(cli_store *store, int argc, char **argv);
int cmd_pin(cli_store *store, int argc, char **argv);
int cmd_cert(cli_store *store, int argc, char **argv);
int cmd_skip(cli_store *store, int argc, char **argv);
int cmd_hsm(cli_store *store, int argc, char **argv);

/* ---- hsm.c: SmartCard-HSM devices ---- */

/* 1 if the device is a SmartCard-HSM (it answers hsmStatus), with its state. Only a pcsc:
 * device can be one (cli_maybe_hsm). */
int cli_maybe_hsm(const cli_store *store);
int cli_hsm_status(sks_transport *t, sks_hsm_status *st);
void cli_hsm_print_status(const sks_hsm_status *st);
/* generate on a SmartCard-HSM: a key labelled name, with a self-signed certificate when a
 * subject is given; pin: the card's user PIN (asked if NULL). Returns the exit code. */
int cli_hsm_generate(sks_transport *t, const char *name, const char *uri, const char *subject, int days,
                     const char *pin);

/* ---- hsm_wrap.c: host-side SmartCard-HSM key wrapping (no card) ---- */

/* sks hsm wrap: argv[0] is "wrap". Returns the exit code. */
int cli_hsm_wrap(int argc, char **argv);

/* ---- hsm_dkek.c: DKEK shares, backup and restore on the card ---- */

/* sks hsm dkek ... (argv[0] "hsm", argv[1] "dkek"), sks hsm backup, sks hsm restore. */
int cli_hsm_dkek(cli_store *store, int argc, char **argv);
int cli_hsm_backup(cli_store *store, int argc, char **argv);
int cli_hsm_restore(cli_store *store, int argc, char **argv);
/* DKEK share files, for hsm dkek and hsm wrap: the 8-byte share password recombined from the
 * custodians' printed n-of-m shares in path ("-": standard input); a share file read and
 * decrypted with pw (a line on standard error says the derivation takes seconds). 0 after
 * printing "<cmd>: ..." on failure. */
int cli_hsm_password_from_shares(const char *cmd, const char *path, uint8_t pwd[8]);
int cli_hsm_open_share(const char *cmd, const char *path, const uint8_t *pw, size_t pwlen, uint8_t share[32]);
/* ---- hsm_attest.c: sks hsm attest (device chain and key generation responses) ---- */
int cli_hsm_attest(cli_store *store, int argc, char **argv);
/* ---- hsm_xkek.c: sks hsm xkek request|derive ---- */
int cli_hsm_xkek(cli_store *store, int argc, char **argv);
/* ---- hsm_domain.c: sks hsm domain status|create|join, sks hsm kdm issue ---- */
int cli_hsm_domain(cli_store *store, int argc, char **argv);

/* ---- opts.c: option parsing ---- */

typedef enum {
    OPT_FLAG,  /* target: int *, set to 1 */
    OPT_VALUE, /* target: const char **; refused if given twice */
    OPT_LIST,  /* target: cli_list *; repeatable */
    OPT_SECRET,    /* a PIN, PUK or password: OPT_VALUE, and also "--NAME-file PATH" (see below) */
    OPT_NEW_SECRET /* OPT_SECRET being set: asked twice when read from a terminal */
} cli_opt_kind;

#define CLI_LIST_MAX 64

typedef struct {
    const char *items[CLI_LIST_MAX];
    size_t count;
} cli_list;

typedef struct {
    const char *name; /* with the dashes: "--name" */
    cli_opt_kind kind;
    void *target;
} cli_opt;

enum { CLI_PARSE_ERROR = 0, CLI_PARSE_OK = 1, CLI_PARSE_HELP = 2 };

/* Parses argv[first..]: "--opt value", "--opt=value", flags, --help/-h. Prints the error
 * (naming the command and the option) and returns CLI_PARSE_ERROR on a bad command line. */
int cli_parse(const char *cmd, int argc, char **argv, int first, const cli_opt *opts, size_t nopts);
/* cli_parse for a command's main: CLI_CONTINUE when the options are good; else the exit code
 * (after printing usage for --help). */
#define CLI_CONTINUE (-1)
int cli_parse_command(const char *cmd, int argc, char **argv, int first, const cli_opt *opts, size_t nopts,
                      const char *usage);
/*
 * Secrets. Every OPT_SECRET option --NAME also takes --NAME-file PATH: the first line of PATH,
 * without its line end; PATH "-" reads the next line of standard input (so several options can
 * take "-", in command-line order), or asks without echo when standard input is a terminal.
 * A secret read this way is wiped when the program exits.
 * The plain "--NAME VALUE" stays for scripts, but puts the secret where ps shows it.
 */
#define CLI_SECRET_MAX 1024

/* A secret the command needs: *slot if given, else asked on the terminal without echo
 * (verify: typed twice) when standard input is one; else an error naming the options. */
int cli_need_secret(const char *cmd, const char *opt, const char *what, int verify, const char **slot);
/* Asks for a secret on the terminal (no echo) into buf; 0 if there is no terminal or it fails. */
int cli_ask_secret(const char *prompt, int verify, char *buf, size_t size);

/* A command whose options all take a value ("--opt VALUE", "--opt=VALUE"; --help none) and
 * that takes one positional FILE among them, from argv[first] on: *path is it (NULL if not
 * given), removed from argv (*argc shrinks) so that cli_parse_command sees options only. 0 with
 * "<cmd>: unexpected argument ..." if there are two. */
int cli_take_file_argument(const char *cmd, int *argc, char **argv, int first, const char **path);

/* The key of a command is named by exactly one of --name or --handle. */
int cli_one_key(const char *cmd, const char *name, const char *handle);

/* Parses a decimal number in [min, max]; prints "<cmd>: <opt> ..." on failure. */
int cli_parse_number(const char *cmd, const char *opt, const char *s, unsigned long min, unsigned long max,
                     unsigned long *out);

/* --subject (a DN as `sks issuer` takes it) appended to out as a DER Name; nothing for NULL.
 * 0 with "<cmd>: --subject: <why>" printed. */
int cli_subject_der(const char *cmd, const char *subject, sks_buf *out);

/* A byte span over a NUL-terminated string (NULL gives the empty span). */
sks_span cli_span(const char *s);

/* ---- keys.c: the store, key lookup and key descriptions ---- */

/* Opens the store's device; prints the error naming the store on failure. */
sks_transport *cli_open(const cli_store *store, const char *cmd);

/* The start of a card command: the user PIN (*pin if given, else asked on the terminal), then
 * the device. NULL with *rc CLI_EXIT_USAGE (no PIN) or CLI_EXIT_FAIL (no device). */
sks_transport *cli_open_with_pin(const cli_store *store, const char *cmd, const char **pin, int *rc);

/* The whole of a file a command reads (files_read_whole), "<cmd>: <why>" printed if not. */
int cli_read_whole(const char *cmd, const char *path, uint8_t *buf, size_t size, size_t *n);

/* Prints a device/client error: "<cmd>: <message> (<status name>)". */
void cli_client_error(const char *cmd, const sks_client_error *e);

/* Resolves exactly one of --name / --handle to a provisioned key's handle. */
int cli_find_key(sks_transport *t, const char *cmd, const char *name, const char *handle, uint32_t *out);

/* An empty authorization counts as a wrong PIN on the device, so a command that would send
 * none to a key whose export (for_export) or delete protection needs a PIN/PUK stops here. */
int cli_check_auth(sks_transport *t, const char *cmd, uint32_t handle, int for_export, const char **auth);

/* 1 (and prints which key) if a provisioned key already has this end-entity certificate,
 * or if the store cannot be read; the device refuses a second key with the same one. */
int cli_certificate_taken(sks_transport *t, const char *cmd, X509 *cert);

/* Sets *taken if a provisioned key already has this friendly name. */
int cli_name_taken(sks_transport *t, const char *cmd, const char *name, int *taken);

/* 1 if the device lists the algorithm URI (getDeviceInfo), so no session is spent on a key
 * it cannot make; otherwise prints "<cmd>: the device does not support <name> (<uri>)". */
int cli_device_supports(sks_transport *t, const char *cmd, const char *uri, const char *name);

/* Everything `list` shows about a key. */
typedef struct {
    uint32_t handle;
    sks_key_attributes attr;
    sks_key_protection_info prot;
    char algorithm[64];  /* P-256, RSA-2048, Ed25519, brainpoolP320r1, symmetric-256, ... */
    char sha256[96];     /* of the end-entity certificate, AB:CD:... as openssl prints it */
    char *subject;       /* RFC 2253, UTF-8; "" if there is no certificate */
} cli_key_info;

int cli_key_info_load(sks_transport *t, const char *cmd, uint32_t handle, cli_key_info *k);
void cli_key_info_free(cli_key_info *k);

/* "P-256", "RSA-2048", "Ed25519", "brainpoolP320r1", ... for a public key. */
void cli_algorithm_name(EVP_PKEY *pub, char *buf, size_t n);
/* SHA-256 of the DER certificate as uppercase hex pairs separated by colons. */
void cli_fingerprint(const uint8_t *der, size_t n, char out[96]);

const char *cli_app_usage_name(uint8_t app_usage);
int cli_app_usage_parse(const char *s, uint8_t *out);

/* ---- keyopts.c: the key options generate and import share ---- */

typedef struct {
    const char *name;
    const char *pin;
    const char *puk;
    const char *pin_retries;
    const char *puk_retries;
    const char *app_usage;
    const char *delete_protection;
    int exportable;
    cli_list endorse;
    const char *subject;
    const char *days;
    const char *ca_key;
    const char *ca_cert;
    const char *ca_pass;
} cli_key_opts;

/* The cli_opt entries for the shared options (appended to each command's own). */
#define CLI_KEY_OPTS(o)                                                                                               \
    { "--name", OPT_VALUE, &(o).name }, { "--pin", OPT_NEW_SECRET, &(o).pin },                                       \
        { "--puk", OPT_NEW_SECRET, &(o).puk },                                                                      \
        { "--pin-retries", OPT_VALUE, &(o).pin_retries }, { "--puk-retries", OPT_VALUE, &(o).puk_retries },           \
        { "--app-usage", OPT_VALUE, &(o).app_usage }, { "--delete-protection", OPT_VALUE, &(o).delete_protection },   \
        { "--exportable", OPT_FLAG, &(o).exportable }, { "--endorse", OPT_LIST, &(o).endorse }

/* Help text for the shared options. */
extern const char CLI_KEY_OPTS_HELP[];

/* Validates the shared options and fills spec; spec points into o (the endorsed list is
 * sorted and de-duplicated in place). Prints the error and returns 0 if an option is wrong. */
int cli_key_spec(const char *cmd, cli_key_opts *o, issuer_key_spec *spec);

/* Refuses a name longer than a SmartCard-HSM key label may be (SCHSM_MAX_LABEL bytes), before
 * anything is sent to the card. NULL passes (the caller's default applies). */
int cli_check_card_label(const char *cmd, const char *name);

/* Refuses a missing, over-long or already used friendly name. */
int cli_check_new_name(sks_transport *t, const char *cmd, const char *name);

/* Prints what generate and import report: handle, name, certificate fingerprint. */
void cli_print_new_key(uint32_t handle, const char *name, X509 *ee);

/* ---- hsm_attest.c (needs cli_list) ---- */
/* 1 and the device key (and its CHR) if chain (device certificate ‖ DICA) verifies, in date, up
 * to a built-in root or one of root_files; else 0 with a message naming cmd. */
int cli_hsm_verified_device(const char *cmd, const uint8_t *chain, size_t n, const cli_list *root_files,
                            EVP_PKEY **device_key, char chr[17]);

/* What a SmartCard-HSM proves about its keys (sks hsm attest, info --verify, list): the device
 * chain is read and judged once, then each key's generation response against it. */
typedef struct cli_attestation cli_attestation;
typedef enum {
    CLI_ATTEST_YES,        /* chain to a known root, response signed by the device key */
    CLI_ATTEST_UNATTESTED, /* response signed by the device key, chain to an unknown root */
    CLI_ATTEST_NONE,       /* no generation response: imported, restored, unwrapped, certificate over it */
    CLI_ATTEST_OTHER_DEVICE, /* another device's response (outer CAR): no proof for this card */
    CLI_ATTEST_INVALID     /* the response or the chain does not verify */
} cli_attest_verdict;

/* Reads EF.C_DevAut (hsmDeviceCertificates) and judges it against the built-in roots and
 * root_files. 1 with *a set, or with *a NULL and why saying so when the device cannot attest
 * (it answers the method with an error status); 0 after printing an error naming cmd. */
int cli_attestation_open(sks_transport *t, const char *cmd, const cli_list *root_files, cli_attestation **a,
                         char *why, size_t whylen);
void cli_attestation_free(cli_attestation *a);
/* The verdict on the key handle (why: the reason, one line); 0 after printing a link error. */
int cli_attestation_key(sks_transport *t, const char *cmd, const cli_attestation *a, uint32_t handle,
                        cli_attest_verdict *v, char *why, size_t whylen);
/* "yes", "unattested", "no" (NONE, OTHER_DEVICE), "INVALID" (list's words). */
const char *cli_attest_word(cli_attest_verdict v);
/* Prints the chain and every key's verdict as sks hsm attest does; the exit code (1 when the
 * chain or a key's response is INVALID). */
int cli_attestation_report(sks_transport *t, const char *cmd, const cli_attestation *a);

#endif
