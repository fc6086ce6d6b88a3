/* The in-process transport: requests go straight to the dispatcher. */
#include "transport.h"

#include <openssl/crypto.h>

typedef struct {
    sks_transport base;
    sks_device *dev;
} local_transport;

static int local_call(sks_transport *t, const uint8_t *req, size_t n, sks_buf *reply, char *err, size_t errlen)
{
    local_transport *lt = (local_transport *)t;

    sks_device_dispatch(lt->dev, req, n, reply);
    if (reply->failed || reply->len == 0) {
        snprintf(err, errlen, "out of memory");
        return 0;
    }
    return 1;
}

static void local_close(sks_transport *t)
{
    local_transport *lt = (local_transport *)t;

    sks_device_close(lt->dev);
    OPENSSL_free(lt);
}

sks_transport *sks_transport_open_local(const sks_store_location *loc, char *err, size_t errlen)
{
    local_transport *lt = OPENSSL_zalloc(sizeof(*lt));

    if (lt == NULL)
        return NULL;
    lt->dev = sks_device_open(loc, err, errlen);
    if (lt->dev == NULL) {
        OPENSSL_free(lt);
        return NULL;
    }
    lt->base.call = local_call;
    lt->base.close = local_close;
    return &lt->base;
}

sks_device *sks_transport_local_device(sks_transport *t)
{
    return ((local_transport *)t)->dev;
}
