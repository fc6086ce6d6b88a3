/*
 * sks: the command-line tool for a Secure Key Store.
 *
 *   sks [--store PATH] [--master-key PATH] COMMAND [ARGS]
 *
 * The device is --device SPEC (file:PATH, unix:SOCKET for sksd, pcsc:[READER]), else
 * --store PATH, else $SKS_DEVICE, else $SKS_STORE, else $XDG_DATA_HOME/sks/store.db
 * (~/.local/share/sks/store.db). A store's master key is --master-key, else $SKS_MASTER_KEY,
 * else the store path with ".key" appended.
 */
#include "cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/provider.h>

static const cli_command COMMANDS[] = {
    { "init", "create a new store with its master key and device identity", cmd_init },
    { "info", "show the device: vendor, API level, certificate, algorithms", cmd_info },
    { "serve", "serve the device over --stdio with length-prefixed frames", cmd_serve },
    { "list", "list the provisioned keys (--json for a machine-readable array)", cmd_list },
    { "generate", "create a key pair in the store, certified by the local issuer CA", cmd_generate },
    { "import", "import a private key with its certificate (PEM or PKCS#12)", cmd_import },
    { "export", "write an exportable private key as PKCS#8 PEM", cmd_export },
    { "cert", "write a key's certificate (--chain: its whole path) as PEM", cmd_cert },
    { "delete", "delete a key", cmd_delete },
    { "pin", "change, unlock or reset (with the PUK) a key's PIN", cmd_pin },
    { "hsm", "SmartCard-HSM cards: initialise (init), show their state (status); wrap a key under a DKEK on the host (wrap)", cmd_hsm },
    { "skip", "secure key packages: request (factory key + PKCS#10), import, issue", cmd_skip },
};

void cli_error(const char *fmt, ...)
{
    va_list ap;

    fputs("sks: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* The providers loaded by cli_load_providers, unloaded at exit. */
static OSSL_PROVIDER *loaded_default, *loaded_sks;

static void unload_providers(void)
{
    OSSL_PROVIDER_unload(loaded_sks);
    OSSL_PROVIDER_unload(loaded_default);
    loaded_sks = loaded_default = NULL;
}

int cli_load_providers(void)
{
    if (loaded_sks != NULL)
        return 1;
    if (loaded_default == NULL && (loaded_default = OSSL_PROVIDER_load(NULL, "default")) == NULL)
        return 0;
    if ((loaded_sks = OSSL_PROVIDER_load(NULL, "sks")) == NULL)
        return 0;
    /* Registered after OpenSSL's own clean-up handler (OpenSSL is initialised by now), so it
     * runs first: the provider is torn down (its connection closed, its caches freed) while
     * OpenSSL is still there. Left loaded, OPENSSL_cleanup does not tear down the sks
     * provider and everything it holds stays allocated (LeakSanitizer reports it). */
    if (atexit(unload_providers) != 0)
        return 0;
    return 1;
}

int cli_mkdir_parents(const char *path)
{
    char tmp[4096];
    char *p;

    snprintf(tmp, sizeof(tmp), "%s", path);
    p = strrchr(tmp, '/');
    if (p == NULL || p == tmp)
        return 1;
    *p = '\0';
    for (p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
                return 0;
            *p = '/';
        }
    }
    return mkdir(tmp, 0700) == 0 || errno == EEXIST;
}

int cli_store_resolve(cli_store *s, const char *device_opt, const char *store_opt, const char *master_opt)
{
    const char *env;

    memset(s, 0, sizeof(*s));
    if (device_opt != NULL)
        snprintf(s->device, sizeof(s->device), "%s", device_opt);
    else if (store_opt != NULL)
        snprintf(s->device, sizeof(s->device), "file:%s", store_opt);
    else if (!sks_default_device(s->device, sizeof(s->device))) {
        cli_error("no device: give --device SPEC or --store PATH, or set SKS_DEVICE or SKS_STORE");
        return 0;
    }
    if (strncmp(s->device, "file:", 5) == 0 || (strchr(s->device, ':') == NULL)) {
        const char *path = strncmp(s->device, "file:", 5) == 0 ? s->device + 5 : s->device;
        s->is_file = 1;
        if (strlen(path) >= sizeof(s->db_path)) {
            cli_error("store path too long: %s", path);
            return 0;
        }
        memcpy(s->db_path, path, strlen(path) + 1);
    } else {
        char dir[4096];
        /* beside the device: this user's files (issuer CA) for a device that is not a store */
        if (!sks_data_dir(dir, sizeof(dir))
            || snprintf(s->db_path, sizeof(s->db_path), "%s/device", dir) >= (int)sizeof(s->db_path)) {
            cli_error("no home directory for this user's sks files: set HOME or XDG_DATA_HOME");
            return 0;
        }
    }
    if (master_opt != NULL)
        snprintf(s->master_path, sizeof(s->master_path), "%s", master_opt);
    else if ((env = secure_getenv("SKS_MASTER_KEY")) != NULL && *env)
        snprintf(s->master_path, sizeof(s->master_path), "%s", env);
    s->loc.db_path = s->db_path;
    s->loc.master_key_path = s->master_path[0] ? s->master_path : NULL;
    return 1;
}

/* init and serve work on an embedded store only. */
static int require_file_device(const cli_store *store, const char *cmd)
{
    if (store->is_file)
        return 1;
    cli_error("%s: needs an embedded store (--store PATH), not the device %s", cmd, store->device);
    return 0;
}

int cmd_init(cli_store *store, int argc, char **argv)
{
    char err[512] = "";

    if (argc > 1 && strcmp(argv[1], "--help") == 0) {
        printf("usage: sks init\n  Creates the store %s, its master key, and the device key and certificate.\n",
               store->db_path);
        return 0;
    }
    if (argc > 1) {
        cli_error("init: unexpected argument '%s'", argv[1]);
        return 2;
    }
    if (!require_file_device(store, "init"))
        return 2;
    if (!cli_mkdir_parents(store->db_path)) {
        cli_error("init: cannot create the directory of %s: %s", store->db_path, strerror(errno));
        return 1;
    }
    if (!sks_store_create(&store->loc, NULL, NULL, err, sizeof(err))) {
        cli_error("init: %s", err);
        return 1;
    }
    printf("created store %s\n", store->db_path);
    return 0;
}

int cmd_serve(cli_store *store, int argc, char **argv)
{
    char err[512] = "";
    sks_device *dev;
    sks_buf req, reply;
    int r;

    if (argc != 2 || strcmp(argv[1], "--stdio") != 0) {
        if (argc > 1 && strcmp(argv[1], "--help") == 0) {
            printf("usage: sks serve --stdio\n  Serves the device on stdin/stdout; every request and reply is\n"
                   "  framed by a 4-byte big-endian length (docs/wire-format.md).\n");
            return 0;
        }
        cli_error("serve: only 'serve --stdio' is supported");
        return 2;
    }
    if (!require_file_device(store, "serve"))
        return 2;
    dev = sks_device_open(&store->loc, err, sizeof(err));
    if (dev == NULL) {
        cli_error("serve: %s", err);
        return 1;
    }
    sks_buf_init(&req);
    sks_buf_init(&reply);
    while ((r = sks_frame_read(0, &req)) == 1) {
        sks_device_dispatch(dev, req.data, req.len, &reply);
        if (reply.failed || !sks_frame_write(1, reply.data, reply.len)) {
            r = -1;
            break;
        }
    }
    sks_buf_free(&req);
    sks_buf_free(&reply);
    sks_device_close(dev);
    if (r < 0) {
        cli_error("serve: broken or oversized frame on standard input/output");
        return 1;
    }
    return 0;
}

static void usage(FILE *f)
{
    size_t i;

    fprintf(f, "usage: sks [--device SPEC | --store PATH] [--master-key PATH] COMMAND [ARGS]\n\ncommands:\n");
    for (i = 0; i < sizeof(COMMANDS) / sizeof(COMMANDS[0]); i++)
        fprintf(f, "  %-10s %s\n", COMMANDS[i].name, COMMANDS[i].summary);
    fprintf(f, "\nThe device is --device (file:PATH, unix:SOCKET for sksd, pcsc:[READER]), else --store PATH,\n"
               "else $SKS_DEVICE, else $SKS_STORE, else ~/.local/share/sks/store.db.\n"
               "Every command takes --help.\n");
}

int main(int argc, char **argv)
{
    const char *device_opt = NULL, *store_opt = NULL, *master_opt = NULL;
    cli_store store;
    int i;
    size_t c;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--device") == 0 && i + 1 < argc)
            device_opt = argv[++i];
        else if (strcmp(argv[i], "--store") == 0 && i + 1 < argc)
            store_opt = argv[++i];
        else if (strcmp(argv[i], "--master-key") == 0 && i + 1 < argc)
            master_opt = argv[++i];
        else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (argv[i][0] == '-') {
            cli_error("unknown option '%s' (see sks --help)", argv[i]);
            return 2;
        } else
            break;
    }
    if (i >= argc) {
        usage(stderr);
        return 2;
    }
    for (c = 0; c < sizeof(COMMANDS) / sizeof(COMMANDS[0]); c++) {
        if (strcmp(argv[i], COMMANDS[c].name) == 0) {
            if (!cli_store_resolve(&store, device_opt, store_opt, master_opt))
                return 2;
            return COMMANDS[c].run(&store, argc - i, argv + i);
        }
    }
    cli_error("unknown command '%s' (see sks --help)", argv[i]);
    return 2;
}
