/*
 * libFuzzer target for the dispatcher on a provisioned store: every input is one request in
 * the SKS byte stream, dispatched to a device whose store holds keys of every type, PIN and
 * PUK policies, exportable and non-exportable keys and a pending SKIP request (built by
 * fuzz/make_template.py into $SKS_FUZZ_TEMPLATE). So the User API, PIN/PUK, export, delete
 * and skipImport handlers are reached with handles that exist, not only the decoders.
 *
 * The working store is a copy of the template, copied again after every input that changed
 * it (a deleted key, a counted wrong PIN, a terminated session...) and every RESET_EVERY
 * inputs, so keys and PINs are never used up and an input found here replays the same way.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../device/internal.h"
#include "store_files.h"
#include "wire_reply.h"

#define RESET_EVERY 4096

static sks_device *dev;
static const char *template_dir;
static char work_dir[] = "/tmp/sks-fuzz-provisioned-XXXXXX";
static int changes_after_open;
static unsigned inputs_since_reset;

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_wire_provisioned: %s: %s\n", what, detail);
    abort();
}

static void reset_store(void)
{
    char path[4200], err[512];
    sks_store_location loc = { path, NULL };

    if (dev != NULL)
        sks_device_close(dev);
    fuzz_store_remove(work_dir);
    fuzz_store_copy(template_dir, work_dir);
    snprintf(path, sizeof(path), "%s/store.db", work_dir);
    if ((dev = sks_device_open(&loc, err, sizeof(err))) == NULL)
        die("opening the copy of the template", err);
    changes_after_open = sqlite3_total_changes(dev->db);
    inputs_since_reset = 0;
}

static void cleanup(void)
{
    if (dev != NULL)
        sks_device_close(dev);
    dev = NULL;
    fuzz_store_remove(work_dir);
    rmdir(work_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    template_dir = getenv("SKS_FUZZ_TEMPLATE");
    if (template_dir == NULL || *template_dir == '\0') {
        fprintf(stderr, "fuzz_wire_provisioned: set SKS_FUZZ_TEMPLATE to a directory made by "
                        "fuzz/make_template.py (scripts/fuzz.sh does)\n");
        exit(2);
    }
    if (mkdtemp(work_dir) == NULL)
        die("mkdtemp", strerror(errno));
    atexit(cleanup);
    reset_store();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sks_buf reply;

    sks_buf_init(&reply);
    sks_device_dispatch(dev, data, size, &reply);
    fuzz_check_reply(&reply);
    sks_buf_free(&reply);
    /* total_changes counts rows written, even by a transaction later rolled back: an
     * over-estimate, which only costs a copy. */
    if (sqlite3_total_changes(dev->db) != changes_after_open || ++inputs_since_reset >= RESET_EVERY)
        reset_store();
    return 0;
}
