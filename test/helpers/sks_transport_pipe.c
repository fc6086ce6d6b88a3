/*
 * `sks serve --stdio` for any device: reads requests in 4-byte length frames on stdin and
 * carries each over the transport SPEC names (file:, unix:, pcsc:), writing the replies as
 * frames on stdout. The tests put the independent Python issuer in front of it, so whole
 * provisioning sessions run through a transport.
 *
 *   sks_transport_pipe SPEC
 *
 * A request the transport cannot carry is answered with ERROR_EXTERNAL and the transport's
 * message, so the issuer sees what went wrong and the pipe keeps serving.
 */
#include <stdio.h>
#include <string.h>

#include "../../transport/transport.h"

static void transport_failure(sks_buf *reply, const char *err)
{
    char msg[600];

    snprintf(msg, sizeof(msg), "transport: %s", err);
    sks_buf_reset(reply);
    sks_buf_byte(reply, SKS_ERROR_EXTERNAL);
    sks_buf_string(reply, msg);
}

int main(int argc, char **argv)
{
    char err[512] = "";
    sks_transport *t;
    sks_buf req, reply;
    int r;

    if (argc != 2) {
        fprintf(stderr, "usage: sks_transport_pipe SPEC\n");
        return 2;
    }
    if ((t = sks_transport_open(argv[1], NULL, err, sizeof(err))) == NULL) {
        fprintf(stderr, "sks_transport_pipe: %s\n", err);
        return 1;
    }
    sks_buf_init(&req);
    sks_buf_init(&reply);
    while ((r = sks_frame_read(0, &req)) == 1) {
        if (!t->call(t, req.data, req.len, &reply, err, sizeof(err)))
            transport_failure(&reply, err);
        if (reply.failed || !sks_frame_write(1, reply.data, reply.len))
            break;
    }
    sks_buf_free(&req);
    sks_buf_free(&reply);
    t->close(t);
    return r == 0 ? 0 : 1;
}
