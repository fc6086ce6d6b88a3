/* sks list: every provisioned key, as text or as a JSON array with stable field names. */
#include "cli.h"

#include <stdio.h>
#include <string.h>

static const char USAGE[] =
    "usage: sks list [--json] [--root FILE]...\n"
    "  Lists every provisioned key: handle, friendly name, algorithm, certificate subject and\n"
    "  SHA-256 fingerprint, application usage, PIN state and endorsed algorithms; on a\n"
    "  SmartCard-HSM also whether the card proves it generated the key (\"attested\": yes,\n"
    "  unattested, no or INVALID, as sks hsm attest judges it; absent on other devices).\n\n"
    "  --json       one JSON array; each key is an object with the fields handle, name,\n"
    "               algorithm, subject, sha256, app_usage, pin_protected, pin_blocked,\n"
    "               symmetric, endorsed, and on a SmartCard-HSM attested\n"
    "  --root FILE  also trust this CV root certificate for \"attested\" (as sks hsm attest)\n";

/* What list says about a key's origin on a SmartCard-HSM (a == NULL: nothing). */
typedef struct {
    const cli_attestation *a;
    cli_attest_verdict verdict;
    char why[600];
} key_origin;

/* A JSON string: quotes, backslashes and control characters escaped, UTF-8 kept. */
static void json_string(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

static const char *json_bool(int v)
{
    return v ? "true" : "false";
}

static void print_json(const cli_key_info *k, const key_origin *o, int first)
{
    size_t i;

    printf("%s\n  {\"handle\": %u, \"name\": ", first ? "" : ",", k->handle);
    json_string(k->attr.friendly_name);
    printf(", \"algorithm\": ");
    json_string(k->algorithm);
    printf(", \"subject\": ");
    json_string(k->subject);
    printf(", \"sha256\": ");
    json_string(k->sha256);
    printf(", \"app_usage\": ");
    json_string(cli_app_usage_name(k->attr.app_usage));
    printf(", \"pin_protected\": %s, \"pin_blocked\": %s, \"symmetric\": %s, \"endorsed\": [",
           json_bool(k->prot.protection_status & SKS_PROTSTAT_PIN_PROTECTED),
           json_bool(k->prot.protection_status & SKS_PROTSTAT_PIN_BLOCKED),
           json_bool(k->attr.symmetric_key_length > 0));
    for (i = 0; i < k->attr.endorsed_algorithms.count; i++) {
        printf(i ? ", " : "");
        json_string(k->attr.endorsed_algorithms.items[i]);
    }
    printf("]");
    if (o->a != NULL) {
        printf(", \"attested\": ");
        json_string(cli_attest_word(o->verdict));
    }
    printf("}");
}

static void print_pin_state(const sks_key_protection_info *p)
{
    uint8_t st = p->protection_status;

    if (!(st & SKS_PROTSTAT_PIN_PROTECTED)) {
        printf("  PIN:       none\n");
        return;
    }
    printf("  PIN:       %s, %u of %u wrong attempts%s\n", st & SKS_PROTSTAT_PIN_BLOCKED ? "BLOCKED" : "protected",
           p->pin_error_count, p->retry_limit, st & SKS_PROTSTAT_PUK_PROTECTED ? "" : ", no PUK");
    if (st & SKS_PROTSTAT_PUK_PROTECTED)
        printf("  PUK:       %s\n", st & SKS_PROTSTAT_PUK_BLOCKED ? "BLOCKED" : "available");
}

static void print_text(const cli_key_info *k, const key_origin *o)
{
    size_t i;

    printf("key %u: %s\n", k->handle, k->attr.friendly_name);
    printf("  algorithm: %s\n", k->algorithm);
    printf("  subject:   %s\n", k->subject);
    printf("  sha256:    %s\n", k->sha256);
    if (o->a != NULL && o->verdict == CLI_ATTEST_INVALID)
        printf("  attested:  INVALID (%s)\n", o->why);
    else if (o->a != NULL)
        printf("  attested:  %s\n", cli_attest_word(o->verdict));
    printf("  app usage: %s\n", cli_app_usage_name(k->attr.app_usage));
    print_pin_state(&k->prot);
    printf("  export:    %s\n", k->prot.export_protection == SKS_PROTECT_NONE  ? "allowed"
                                : k->prot.export_protection == SKS_PROTECT_PIN ? "with the PIN"
                                : k->prot.export_protection == SKS_PROTECT_PUK ? "with the PUK"
                                                                               : "never");
    if (k->attr.endorsed_algorithms.count == 0)
        printf("  endorsed:  any algorithm the key material allows\n");
    for (i = 0; i < k->attr.endorsed_algorithms.count; i++)
        printf("  %s %s\n", i == 0 ? "endorsed: " : "          ", k->attr.endorsed_algorithms.items[i]);
}

static int list_keys(sks_transport *t, int json, const cli_attestation *a)
{
    sks_client_error e;
    uint32_t handle = 0;
    int count = 0;

    if (json)
        printf("[");
    for (;;) {
        cli_key_info k;
        key_origin o = { a, CLI_ATTEST_NONE, "" };

        if (!sks_client_enumerate_keys(t, handle, &handle, NULL, &e)) {
            cli_client_error("list", &e);
            return CLI_EXIT_FAIL;
        }
        if (handle == 0)
            break;
        if (a != NULL && !cli_attestation_key(t, "list", a, handle, &o.verdict, o.why, sizeof(o.why)))
            return CLI_EXIT_FAIL;
        if (!cli_key_info_load(t, "list", handle, &k))
            return CLI_EXIT_FAIL;
        if (json)
            print_json(&k, &o, count == 0);
        else
            print_text(&k, &o);
        count++;
        cli_key_info_free(&k);
    }
    if (json)
        printf(count ? "\n]\n" : "]\n");
    else if (count == 0)
        printf("no keys\n");
    return CLI_EXIT_OK;
}

/* The device chain, read and judged once per list; NULL (no "attested") on a device that
 * cannot attest. 0 after a link error. */
static int open_attestation(sks_transport *t, const cli_store *store, const cli_list *roots, cli_attestation **a)
{
    char why[2200];

    *a = NULL;
    if (!cli_maybe_hsm(store)) {
        if (roots->count > 0)
            cli_error("list: --root ignored: only a SmartCard-HSM (pcsc:) attests its keys");
        return 1;
    }
    return cli_attestation_open(t, "list", roots, a, why, sizeof(why));
}

int cmd_list(cli_store *store, int argc, char **argv)
{
    int json = 0, rc;
    cli_list roots;
    const cli_opt opts[] = { { "--json", OPT_FLAG, &json }, { "--root", OPT_LIST, &roots } };
    cli_attestation *a = NULL;
    sks_transport *t;

    memset(&roots, 0, sizeof(roots));
    if ((rc = cli_parse_command("list", argc, argv, 1, opts, 2, USAGE)) != CLI_CONTINUE)
        return rc;
    if ((t = cli_open(store, "list")) == NULL)
        return CLI_EXIT_FAIL;
    rc = open_attestation(t, store, &roots, &a) ? list_keys(t, json, a) : CLI_EXIT_FAIL;
    cli_attestation_free(a);
    t->close(t);
    return rc;
}
