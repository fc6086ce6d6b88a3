/*
 * libFuzzer target for sksd's reader of the shared-memory channel (transport/channel.c): the
 * control page, the request slot and the socket beside it are all the client's to write, so
 * whatever they hold, sks_chan_read_request must stay within the page, never block past its
 * limits, and hand back at most the limit it was given.
 *
 * Input: 4 bytes req_seq, 4 bytes req_len (little-endian as the page holds them), 1 byte of
 * flags (bit 0: server_asleep is left at 0, as if a client took the doorbell; bit 1: the rest
 * is also written to the socket), then the request slot's bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../transport/channel.h"

static sks_chan chan;
static int sv[2] = { -1, -1 };

static void setup(void)
{
    sks_buf offer;
    int mfd = -1;

    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0 || !sks_chan_offer(&chan, sv[0]))
        abort();
    sks_buf_init(&offer);
    if (sks_frame_read_fd(sv[1], &offer, &mfd) != 1 || mfd < 0)
        abort();
    close(mfd);
    sks_buf_free(&offer);
}

static void drain(int fd)
{
    uint8_t sink[4096];

    while (recv(fd, sink, sizeof(sink), MSG_DONTWAIT) > 0)
        ;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sks_frame_limits lim = { 0, 0, 4096, 0, 0 };
    sks_buf req;
    size_t n;
    int r;

    if (chan.map == NULL)
        setup();
    if (size < 9)
        return 0;
    memcpy(chan.map, data, 8); /* req_seq, req_len */
    memset(chan.map + 8, data[8] & 1 ? 0 : 1, 1);
    n = size - 9 < SKS_CHAN_SLOT ? size - 9 : SKS_CHAN_SLOT;
    memcpy(chan.map + 4096, data + 9, n);
    if (data[8] & 2)
        (void)!send(sv[1], data + 9, size - 9 < 8192 ? size - 9 : 8192, MSG_DONTWAIT);
    chan.seq = 0;
    sks_buf_init(&req);
    r = sks_chan_read_request(&chan, sv[0], &req, &lim);
    if (r == SKS_FRAME_OK) {
        if (req.len > lim.max)
            abort();
        if (!sks_chan_write_reply(&chan, sv[0], req.data, req.len))
            abort();
    }
    sks_buf_free(&req);
    drain(sv[0]);
    drain(sv[1]);
    return 0;
}
