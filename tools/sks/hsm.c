/*
 * sks on a SmartCard-HSM (--device pcsc:[READER] reaching one): `hsm init`, `hsm status`,
 * and the card's side of `generate` and `info` (the hsm* methods of docs/wire-format.md).
 */
#include "cli.h"

#include <stdio.h>
#include <string.h>

#include <openssl/x509.h>

#define DEFAULT_PIN_RETRIES 3
#define OPTION_SO_RESETS_PIN 0x0001 /* lets `sks pin unlock --so-pin` reset the user PIN */

static const char USAGE[] =
    "usage: sks hsm init [--so-pin-file FILE] [--pin-file FILE] [--pin-retries N]\n"
    "                    [--dkek-shares N] [--key-domains K] [--force]\n"
    "       sks hsm status\n"
    "  On a SmartCard-HSM (--device pcsc:[READER]).\n"
    "  init: initialises the card with a user PIN (6..16 characters) and an SO-PIN (16\n"
    "  hexadecimal digits). A card that is initialised already is refused unless --force is\n"
    "  given; then the card itself checks the SO-PIN before it wipes every key.\n"
    "  --so-pin-file, --pin-file FILE: the first line of FILE; \"-\" is the next line of standard\n"
    "  input. A secret not given is asked on the terminal, without echo (a new one twice).\n"
    "  --so-pin SO and --pin PIN also work, but show the secret to ps.\n"
    "  --pin-retries N       wrong user PINs before the PIN blocks (1..10, default 3)\n"
    "  --dkek-shares N       key backup with a DKEK of N shares (0..255; default: no DKEK)\n"
    "  --key-domains K       key domains to prepare (1..255; default none)\n"
    "  --force               wipe an initialised card (needs its SO-PIN)\n"
    "  status: kind, firmware, PIN state and tries left.\n"
    "       sks hsm wrap ...  (on the host, no card: see sks hsm wrap --help)\n"
    "       sks hsm dkek create-share|import|status ...  (see sks hsm dkek --help)\n"
    "       sks hsm backup ..., sks hsm restore ...  (see sks hsm backup --help)\n"
    "       sks hsm attest [--root FILE]... [--out FILE] [--chain FILE]\n"
    "  attest: verifies the card's device certificate chain and which keys it generated\n"
    "  (see sks hsm attest --help).\n"
    "       sks hsm domain status|create|join ...  key domains (see sks hsm domain --help)\n"
    "       sks hsm kdm issue ...  a key domain membership, by the group signer (no card)\n"
    "       sks hsm xkek request|derive ...  agree on an XKEK domain's KEK (see sks hsm xkek --help)\n";

int cli_maybe_hsm(const cli_store *store)
{
    return strncmp(store->device, "pcsc:", 5) == 0;
}

int cli_hsm_status(sks_transport *t, sks_hsm_status *st)
{
    sks_client_error e;

    return sks_client_hsm_status(t, st, &e);
}

static const char *pin_state_name(uint8_t state)
{
    switch (state) {
    case SKS_HSM_PIN_NOT_INITIALIZED:
        return "not initialised";
    case SKS_HSM_PIN_SET:
        return "set";
    case SKS_HSM_PIN_VERIFIED:
        return "verified";
    case SKS_HSM_PIN_BLOCKED:
        return "blocked";
    default:
        return "transport PIN (change it first)";
    }
}

void cli_hsm_print_status(const sks_hsm_status *st)
{
    printf("kind:        %s\n", st->kind);
    printf("firmware:    %u.%u\n", st->firmware_major, st->firmware_minor);
    if (st->pin_state == SKS_HSM_PIN_NOT_INITIALIZED) {
        printf("user PIN:    not initialised (sks hsm init)\n");
        return;
    }
    printf("user PIN:    %s", pin_state_name(st->pin_state));
    if (st->pin_tries != SKS_HSM_TRIES_UNKNOWN)
        printf(", %u tries left", st->pin_tries);
    printf("\n");
    if (st->so_pin_tries != SKS_HSM_TRIES_UNKNOWN)
        printf("SO-PIN:      %u tries left\n", st->so_pin_tries);
    printf("options:     0x%04x%s\n", st->options,
           (st->options & OPTION_SO_RESETS_PIN) ? " (the SO-PIN may reset the user PIN)" : "");
}

int cli_hsm_generate(sks_transport *t, const char *name, const char *uri, const char *subject, int days,
                     const char *pin)
{
    sks_buf der;
    int ok;
    X509 *cert = NULL;
    sks_bytes pub, certificate;
    sks_client_error e;
    sks_span subject_der;
    uint32_t handle;
    const unsigned char *q;

    sks_buf_init(&der);
    if (!cli_check_card_label("generate", name) || !cli_subject_der("generate", subject, &der)) {
        sks_buf_free(&der);
        return CLI_EXIT_USAGE;
    }
    if (!cli_check_new_name(t, "generate", name)
        || !cli_need_secret("generate", "--pin", "the card's user PIN", 0, &pin)) {
        sks_buf_free(&der);
        return CLI_EXIT_FAIL;
    }
    subject_der.p = der.data;
    subject_der.n = der.len;
    ok = sks_client_hsm_generate_key_pair(t, cli_span(pin), name, uri, subject_der, (uint32_t)days, &handle, &pub,
                                          &certificate, &e);
    sks_buf_free(&der);
    if (!ok) {
        cli_client_error("generate", &e);
        return CLI_EXIT_FAIL;
    }
    q = certificate.data;
    if (certificate.len > 0 && (cert = d2i_X509(NULL, &q, (long)certificate.len)) != NULL)
        cli_print_new_key(handle, name, cert);
    else
        printf("handle: %u\nname:   %s\ncertificate: none (give --subject for one)\n", handle, name);
    X509_free(cert);
    OPENSSL_free(pub.data);
    OPENSSL_free(certificate.data);
    return CLI_EXIT_OK;
}

typedef struct {
    const char *so_pin, *pin, *retries, *dkek_shares, *key_domains;
    int force;
} init_args;

static int init_numbers(const init_args *a, sks_hsm_init_args *o)
{
    unsigned long v;

    memset(o, 0, sizeof(*o));
    o->options = OPTION_SO_RESETS_PIN;
    o->retry_limit = DEFAULT_PIN_RETRIES;
    o->dkek_shares = SKS_HSM_NO_DKEK;
    o->force = a->force;
    if (a->retries != NULL) {
        if (!cli_parse_number("hsm init", "--pin-retries", a->retries, 1, 10, &v))
            return 0;
        o->retry_limit = (uint8_t)v;
    }
    if (a->dkek_shares != NULL) {
        if (!cli_parse_number("hsm init", "--dkek-shares", a->dkek_shares, 0, 255, &v))
            return 0;
        o->dkek_shares = (uint16_t)v;
    }
    if (a->key_domains != NULL) {
        if (!cli_parse_number("hsm init", "--key-domains", a->key_domains, 1, 255, &v))
            return 0;
        o->key_domains = (uint8_t)v;
    }
    return 1;
}

/* The SO-PIN's form is checked here too, so a typo costs no try on the card. */
static int so_pin_well_formed(const char *so)
{
    size_t i;

    if (strlen(so) != 16)
        return 0;
    for (i = 0; i < 16; i++)
        if (!((so[i] >= '0' && so[i] <= '9') || (so[i] >= 'a' && so[i] <= 'f') || (so[i] >= 'A' && so[i] <= 'F')))
            return 0;
    return 1;
}

static int hsm_init(cli_store *store, int argc, char **argv)
{
    init_args a;
    const cli_opt opts[] = {
        { "--so-pin", OPT_SECRET, &a.so_pin },         { "--pin", OPT_NEW_SECRET, &a.pin },
        { "--pin-retries", OPT_VALUE, &a.retries },    { "--dkek-shares", OPT_VALUE, &a.dkek_shares },
        { "--key-domains", OPT_VALUE, &a.key_domains }, { "--force", OPT_FLAG, &a.force },
    };
    sks_hsm_init_args o;
    sks_client_error e;
    sks_transport *t;
    int rc;

    memset(&a, 0, sizeof(a));
    if ((rc = cli_parse_command("hsm init", argc, argv, 2, opts, sizeof(opts) / sizeof(opts[0]), USAGE))
        != CLI_CONTINUE)
        return rc;
    if (!init_numbers(&a, &o)
        || !cli_need_secret("hsm init", "--so-pin", "SO-PIN (16 hexadecimal digits)", !a.force, &a.so_pin)
        || !cli_need_secret("hsm init", "--pin", "new user PIN", 1, &a.pin))
        return CLI_EXIT_USAGE;
    if (!so_pin_well_formed(a.so_pin)) {
        cli_error("hsm init: the SO-PIN must be 16 hexadecimal digits");
        return CLI_EXIT_USAGE;
    }
    if (strlen(a.pin) < 6 || strlen(a.pin) > 16) {
        cli_error("hsm init: the user PIN must be 6..16 characters");
        return CLI_EXIT_USAGE;
    }
    if ((t = cli_open(store, "hsm init")) == NULL)
        return CLI_EXIT_FAIL;
    if (sks_client_hsm_initialize(t, cli_span(a.so_pin), cli_span(a.pin), &o, &e)) {
        printf("initialised the SmartCard-HSM in %s\n", store->device);
        rc = CLI_EXIT_OK;
    } else {
        cli_client_error("hsm init", &e);
        rc = CLI_EXIT_FAIL;
    }
    t->close(t);
    return rc;
}

static int hsm_status(cli_store *store, int argc, char **argv)
{
    sks_hsm_status st;
    sks_client_error e;
    sks_transport *t;
    int rc;

    if ((rc = cli_parse_command("hsm status", argc, argv, 2, NULL, 0, USAGE)) != CLI_CONTINUE)
        return rc;
    if ((t = cli_open(store, "hsm status")) == NULL)
        return CLI_EXIT_FAIL;
    if (sks_client_hsm_status(t, &st, &e)) {
        printf("device:      %s\n", store->device);
        cli_hsm_print_status(&st);
        rc = CLI_EXIT_OK;
    } else {
        cli_client_error("hsm status", &e);
        rc = CLI_EXIT_FAIL;
    }
    t->close(t);
    return rc;
}

int cmd_hsm(cli_store *store, int argc, char **argv)
{
    const char *sub = argc > 1 ? argv[1] : "";

    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
        fputs(USAGE, stdout);
        return CLI_EXIT_OK;
    }
    if (strcmp(sub, "init") == 0)
        return hsm_init(store, argc, argv);
    if (strcmp(sub, "status") == 0)
        return hsm_status(store, argc, argv);
    if (strcmp(sub, "wrap") == 0)
        return cli_hsm_wrap(argc - 1, argv + 1);
    if (strcmp(sub, "dkek") == 0)
        return cli_hsm_dkek(store, argc, argv);
    if (strcmp(sub, "backup") == 0)
        return cli_hsm_backup(store, argc, argv);
    if (strcmp(sub, "restore") == 0)
        return cli_hsm_restore(store, argc, argv);
    if (strcmp(sub, "attest") == 0)
        return cli_hsm_attest(store, argc, argv);
    if (strcmp(sub, "domain") == 0 || strcmp(sub, "kdm") == 0)
        return cli_hsm_domain(store, argc, argv);
    if (strcmp(sub, "xkek") == 0)
        return cli_hsm_xkek(store, argc, argv);
    cli_error("hsm: give a subcommand: init, status, wrap, dkek, backup, restore, attest, domain, kdm or xkek"
              " (see sks hsm --help)");
    return CLI_EXIT_USAGE;
}
