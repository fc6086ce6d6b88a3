/* The key options generate and import share: name, PIN/PUK, usage, protections. */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "../../schsm/schsm.h"

#define PIN_MIN 4
#define PIN_MAX 64
#define DEFAULT_RETRIES 3

const char CLI_KEY_OPTS_HELP[] =
    "  --name N              friendly name of the new key (required, unique in the store)\n"
    "  --pin-file FILE       protect the key with a PIN (4-64 bytes, changeable with sks pin): the\n"
    "                        first line of FILE; \"-\": the next line of standard input, or asked\n"
    "                        twice without echo on a terminal (--pin PIN shows it to ps)\n"
    "  --puk-file FILE       also create a PUK that unlocks or resets the PIN (needs a PIN);\n"
    "                        FILE as for --pin-file (--puk PUK shows it to ps)\n"
    "  --pin-retries N       wrong PINs before the key locks (default 3)\n"
    "  --puk-retries N       wrong PUKs before the PUK locks (default 3; 0 = never, slowed down)\n"
    "  --app-usage U         signature, authentication, encryption or universal (default)\n"
    "  --exportable          allow sks export (with the PIN if the key has one); default: never\n"
    "  --delete-protection P none (default), pin or puk: what sks delete must give as --auth\n"
    "  --endorse URI         restrict the key to this algorithm URI (repeatable; default: any\n"
    "                        algorithm the key material allows)\n";

static size_t utf8_chars(const char *s)
{
    size_t n = 0;

    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80)
            n++;
    return n;
}

int cli_check_card_label(const char *cmd, const char *name)
{
    if (name != NULL && strlen(name) > SCHSM_MAX_LABEL) {
        cli_error("%s: --name must be at most %d bytes on a SmartCard-HSM (the card's key label)", cmd,
                  SCHSM_MAX_LABEL);
        return 0;
    }
    return 1;
}

int cli_check_new_name(sks_transport *t, const char *cmd, const char *name)
{
    int taken = 0;

    if (name == NULL || *name == '\0') {
        cli_error("%s: --name is required (the key's friendly name)", cmd);
        return 0;
    }
    if (!sks_utf8_valid((const uint8_t *)name, strlen(name)) || utf8_chars(name) > 100) {
        cli_error("%s: --name must be UTF-8 of at most 100 characters", cmd);
        return 0;
    }
    if (!cli_name_taken(t, cmd, name, &taken))
        return 0;
    if (taken) {
        cli_error("%s: a key named '%s' already exists (see sks list; delete it or choose another --name)", cmd,
                  name);
        return 0;
    }
    return 1;
}

static int by_strcmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The device wants endorsed URIs strictly ascending; sort and drop repeats. */
static void sort_unique(cli_list *l)
{
    size_t i, n = 0;

    qsort(l->items, l->count, sizeof(l->items[0]), by_strcmp);
    for (i = 0; i < l->count; i++)
        if (n == 0 || strcmp(l->items[n - 1], l->items[i]) != 0)
            l->items[n++] = l->items[i];
    l->count = n;
}

static int pin_options(const char *cmd, const cli_key_opts *o, issuer_pin_spec *pin)
{
    unsigned long v;

    memset(pin, 0, sizeof(*pin));
    pin->pin_retries = pin->puk_retries = DEFAULT_RETRIES;
    if (o->pin == NULL) {
        if (o->puk != NULL || o->pin_retries != NULL || o->puk_retries != NULL) {
            cli_error("%s: %s needs --pin", cmd, o->puk ? "--puk" : o->pin_retries ? "--pin-retries" : "--puk-retries");
            return 0;
        }
        return 1;
    }
    if (strlen(o->pin) < PIN_MIN || strlen(o->pin) > PIN_MAX) {
        cli_error("%s: --pin must be %d-%d bytes long", cmd, PIN_MIN, PIN_MAX);
        return 0;
    }
    if (o->puk != NULL && (*o->puk == '\0' || strlen(o->puk) > 128)) {
        cli_error("%s: --puk must be 1-128 bytes long", cmd);
        return 0;
    }
    if (o->puk == NULL && o->puk_retries != NULL) {
        cli_error("%s: --puk-retries needs --puk", cmd);
        return 0;
    }
    if (o->pin_retries != NULL) {
        if (!cli_parse_number(cmd, "--pin-retries", o->pin_retries, 1, 10000, &v))
            return 0;
        pin->pin_retries = (uint16_t)v;
    }
    if (o->puk_retries != NULL) {
        if (!cli_parse_number(cmd, "--puk-retries", o->puk_retries, 0, 10000, &v))
            return 0;
        pin->puk_retries = (uint16_t)v;
    }
    pin->pin = cli_span(o->pin);
    pin->puk = cli_span(o->puk);
    return 1;
}

/* Export: never unless --exportable, then behind the PIN if there is one. Delete: as asked. */
static int protections(const char *cmd, const cli_key_opts *o, issuer_key_spec *spec)
{
    const char *d = o->delete_protection ? o->delete_protection : "none";

    spec->export_protection = !o->exportable ? SKS_PROTECT_NEVER : o->pin ? SKS_PROTECT_PIN : SKS_PROTECT_NONE;
    if (strcmp(d, "none") == 0)
        spec->delete_protection = SKS_PROTECT_NONE;
    else if (strcmp(d, "pin") == 0 && o->pin != NULL)
        spec->delete_protection = SKS_PROTECT_PIN;
    else if (strcmp(d, "puk") == 0 && o->puk != NULL)
        spec->delete_protection = SKS_PROTECT_PUK;
    else {
        cli_error("%s: --delete-protection must be none, pin (needs --pin) or puk (needs --puk), got '%s'", cmd, d);
        return 0;
    }
    return 1;
}

int cli_key_spec(const char *cmd, cli_key_opts *o, issuer_key_spec *spec)
{
    memset(spec, 0, sizeof(*spec));
    spec->friendly_name = o->name;
    spec->app_usage = SKS_APP_UNIVERSAL;
    if (o->app_usage != NULL && !cli_app_usage_parse(o->app_usage, &spec->app_usage)) {
        cli_error("%s: --app-usage must be signature, authentication, encryption or universal, got '%s'", cmd,
                  o->app_usage);
        return 0;
    }
    if (!pin_options(cmd, o, &spec->pin) || !protections(cmd, o, spec))
        return 0;
    sort_unique(&o->endorse);
    spec->endorsed = o->endorse.items;
    spec->endorsed_count = o->endorse.count;
    return 1;
}

void cli_print_new_key(uint32_t handle, const char *name, X509 *ee)
{
    unsigned char *der = NULL;
    int len = i2d_X509(ee, &der);
    char fp[96] = "";

    if (len > 0)
        cli_fingerprint(der, (size_t)len, fp);
    OPENSSL_free(der);
    printf("handle: %u\nname:   %s\nsha256: %s\n", handle, name, fp);
}
