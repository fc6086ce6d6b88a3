/*
 * libFuzzer target for the wire decoder and the dispatcher behind it: every input is one
 * request in the SKS byte stream, dispatched to a real device on a real store. The reply
 * must always be well formed: a status byte, and after an error exactly one string.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../device/sks_device.h"
#include "wire_reply.h"

static sks_device *dev;

static void open_device(void)
{
    char dir[] = "/tmp/sks-fuzz-XXXXXX";
    char path[256], err[512];
    sks_store_location loc = { path, NULL };

    if (mkdtemp(dir) == NULL)
        abort();
    snprintf(path, sizeof(path), "%s/fuzz.db", dir);
    if (!sks_store_create(&loc, NULL, NULL, err, sizeof(err)) || (dev = sks_device_open(&loc, err, sizeof(err))) == NULL) {
        fprintf(stderr, "fuzz: %s\n", err);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sks_buf reply;

    if (dev == NULL)
        open_device();
    sks_buf_init(&reply);
    sks_device_dispatch(dev, data, size, &reply);
    fuzz_check_reply(&reply);
    sks_buf_free(&reply);
    return 0;
}
