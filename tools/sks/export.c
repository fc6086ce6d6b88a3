/*
 * sks export: a private key out of the store as PKCS#8 PEM (exportKey). The device decides
 * whether the key may leave it (exportProtection) and marks it as exported.
 */
#include "cli.h"
#include "files.h"

#include <stdio.h>
#include <string.h>

#include <openssl/pem.h>

static const char USAGE[] =
    "usage: sks export (--name N | --handle H) [--auth-file FILE] [--out FILE]\n"
    "  Writes the private key as unencrypted PKCS#8 PEM to FILE (created with mode 0600, never\n"
    "  overwritten) or to standard output. If export asks for the PIN or PUK, --auth-file gives it\n"
    "  (first line; \"-\": standard input), else it is asked on the terminal without echo.\n"
    "  --auth PIN works too, but shows the PIN to ps.\n";

/* PKCS#8 DER -> PEM text in a memory BIO. */
static BIO *to_pem(const sks_buf *der)
{
    BIO *b = BIO_new(BIO_s_secmem());

    if (b != NULL && PEM_write_bio(b, "PRIVATE KEY", "", der->data, (long)der->len) <= 0) {
        BIO_free(b);
        b = NULL;
    }
    return b;
}

static int write_out(const char *out, const sks_buf *der)
{
    char err[4200];
    char *pem = NULL;
    long n;
    BIO *b = to_pem(der);
    int ok = 0;

    if (b == NULL || (n = BIO_get_mem_data(b, &pem)) <= 0) {
        cli_error("export: cannot encode the key as PEM");
    } else if (out == NULL) {
        ok = fwrite(pem, 1, (size_t)n, stdout) == (size_t)n && fflush(stdout) == 0;
        if (!ok)
            cli_error("export: cannot write to standard output");
    } else if (!(ok = files_write_new(out, pem, (size_t)n, err, sizeof(err)))) {
        cli_error("export: %s", err);
    }
    BIO_free(b); /* a secure-heap BIO: its memory is wiped on free */
    return ok;
}

static int export_key(sks_transport *t, uint32_t handle, const char *auth, const char *out)
{
    sks_key_attributes a;
    sks_client_error e;
    sks_buf der;
    int ok = 0;

    if (!sks_client_get_key_attributes(t, handle, &a, &e)) {
        cli_client_error("export", &e);
        return 0;
    }
    if (a.symmetric_key_length > 0) {
        cli_error("export: key %u is a symmetric key; export writes private keys (PKCS#8) only", handle);
        sks_key_attributes_free(&a);
        return 0;
    }
    sks_key_attributes_free(&a);
    sks_buf_init(&der);
    if (!sks_client_export_key(t, handle, cli_span(auth), &der, &e))
        cli_client_error("export", &e);
    else
        ok = write_out(out, &der);
    sks_buf_free(&der); /* wipes the key */
    return ok;
}

int cmd_export(cli_store *store, int argc, char **argv)
{
    const char *name = NULL, *handle_opt = NULL, *auth = NULL, *out = NULL;
    const cli_opt opts[] = {
        { "--name", OPT_VALUE, &name },
        { "--handle", OPT_VALUE, &handle_opt },
        { "--auth", OPT_SECRET, &auth },
        { "--out", OPT_VALUE, &out },
    };
    sks_transport *t;
    int rc;
    uint32_t handle = 0;
    int ok = 0;

    if ((rc = cli_parse_command("export", argc, argv, 1, opts, sizeof(opts) / sizeof(opts[0]), USAGE)) != CLI_CONTINUE)
        return rc;
    if (!cli_one_key("export", name, handle_opt))
        return CLI_EXIT_USAGE;
    if ((t = cli_open(store, "export")) == NULL)
        return CLI_EXIT_FAIL;
    ok = cli_find_key(t, "export", name, handle_opt, &handle) && cli_check_auth(t, "export", handle, 1, &auth)
         && export_key(t, handle, auth, out);
    t->close(t);
    return ok ? CLI_EXIT_OK : CLI_EXIT_FAIL;
}
