/* sks cert: a key's certificate (or whole certificate path) as PEM. */
#include "cli.h"

#include <stdio.h>

#include <openssl/pem.h>

static const char USAGE[] =
    "usage: sks cert (--name N | --handle H) [--chain] [--out FILE]\n"
    "  Writes the key's end-entity certificate as PEM; --chain adds the rest of its path.\n";

static int write_path(const sks_key_attributes *a, int chain, const char *out, uint32_t handle)
{
    BIO *b = out ? BIO_new_file(out, "w") : BIO_new_fp(stdout, BIO_NOCLOSE);
    size_t i, n = chain ? a->certificates.count : 1;
    int ok = b != NULL;

    if (a->certificates.count == 0) {
        cli_error("cert: key %u has no certificate", handle);
        BIO_free(b);
        return 0;
    }
    for (i = 0; ok && i < n; i++) {
        const unsigned char *q = a->certificates.items[i].data;
        X509 *x = d2i_X509(NULL, &q, (long)a->certificates.items[i].len);
        ok = x != NULL && PEM_write_bio_X509(b, x) == 1;
        X509_free(x);
    }
    ok = ok && BIO_flush(b) == 1;
    if (!ok)
        cli_error("cert: cannot write %s", out ? out : "to standard output");
    BIO_free(b);
    return ok;
}

int cmd_cert(cli_store *store, int argc, char **argv)
{
    const char *name = NULL, *handle_opt = NULL, *out = NULL;
    int chain = 0, ok = 0;
    const cli_opt opts[] = {
        { "--name", OPT_VALUE, &name },
        { "--handle", OPT_VALUE, &handle_opt },
        { "--chain", OPT_FLAG, &chain },
        { "--out", OPT_VALUE, &out },
    };
    sks_key_attributes a;
    sks_client_error e;
    sks_transport *t;
    int rc;
    uint32_t handle = 0;

    if ((rc = cli_parse_command("cert", argc, argv, 1, opts, sizeof(opts) / sizeof(opts[0]), USAGE)) != CLI_CONTINUE)
        return rc;
    if (!cli_one_key("cert", name, handle_opt))
        return CLI_EXIT_USAGE;
    if ((t = cli_open(store, "cert")) == NULL)
        return CLI_EXIT_FAIL;
    if (cli_find_key(t, "cert", name, handle_opt, &handle)) {
        if (!sks_client_get_key_attributes(t, handle, &a, &e))
            cli_client_error("cert", &e);
        else
            ok = write_path(&a, chain, out, handle);
        sks_key_attributes_free(&a);
    }
    t->close(t);
    return ok ? CLI_EXIT_OK : CLI_EXIT_FAIL;
}
