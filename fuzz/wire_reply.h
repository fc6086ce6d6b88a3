/* What both wire fuzz targets demand of every reply the dispatcher gives. */
#ifndef SKS_FUZZ_WIRE_REPLY_H
#define SKS_FUZZ_WIRE_REPLY_H

#include <stdlib.h>

#include "../device/sks_device.h"

/* A reply is always well formed: a status byte, and after an error exactly one string. */
static inline void fuzz_check_reply(const sks_buf *reply)
{
    sks_reader r;

    if (reply->failed || reply->len == 0)
        abort();
    if (reply->data[0] != 0) {
        sks_reader_init(&r, reply->data + 1, reply->len - 1);
        sks_get_string(&r, "message");
        sks_reader_expect_end(&r);
        if (!sks_reader_ok(&r))
            abort();
    }
}

#endif
