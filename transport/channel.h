/*
 * The shared-memory channel between a client and sksd (issue 13): after accept, a client may
 * ask for it with an empty frame; sksd answers with a sealed memfd (SCM_RIGHTS) that both map.
 * A call then writes the request into the page, and sksd writes the reply there: no system
 * call while both sides are running, a futex (client) or a byte on the socket (sksd) when one
 * sleeps. Requests and replies that do not fit a slot go through the socket as frames, and the
 * socket still tells either side when the other is gone. README.md, "sksd".
 *
 * The page is written by both processes, so sksd treats everything the client can write as
 * hostile: the request is copied out once into private memory before anything reads it, its
 * length is read once and bounded, the sequence number is only compared for a change.
 */
#ifndef SKS_CHANNEL_H
#define SKS_CHANNEL_H

#include <stddef.h>
#include <stdint.h>

#include "transport.h"

#define SKS_CHAN_SLOT (64u * 1024)                      /* largest request or reply in the page */
#define SKS_CHAN_SIZE (4096u + 2 * SKS_CHAN_SLOT)       /* control page, request slot, reply slot */

/* A spin budget that adapts: grows when a spin found the answer, halves when it did not, and
 * falls to a quarter when the spinning thread was preempted (the cores are busy). */
typedef struct {
    long budget_ns, max_ns;
    unsigned idle_calls; /* calls since the budget fell to zero: now and then it is tried again */
} sks_spin;

typedef struct {
    unsigned char *map; /* SKS_CHAN_SIZE bytes, shared with the other process */
    uint32_t seq;       /* client: the last request posted; sksd: the last request taken */
    sks_spin spin;
    unsigned long calls;
} sks_chan;

/* sksd: creates the memory (sealed against resizing), maps it, and sends the client the
 * offer frame with the descriptor. 1 on success; the channel is then in use. */
int sks_chan_offer(sks_chan *c, int sock);

/* sksd: waits for the next request (spinning briefly, then asleep on the socket) and copies
 * it into out. Same results as sks_frame_read_bounded (SKS_FRAME_*). */
int sks_chan_read_request(sks_chan *c, int sock, sks_buf *out, const sks_frame_limits *lim);
/* sksd: answers the request last read. 1 on success. */
int sks_chan_write_reply(sks_chan *c, int sock, const uint8_t *p, size_t n);
/* sksd: marks the channel closed (a client waiting is woken) and unmaps it. */
void sks_chan_close_server(sks_chan *c);

/* Client: sends the empty frame that asks for the channel. 1 on success. */
int sks_chan_ask(int sock);
/* Client: reads sksd's answer (wait for the socket to be readable first). 1: channel mapped
 * in c (MADV_DONTFORK); 0: sksd answered without one (reply holds its answer: an older
 * sksd's error, or a refusal at accept); -1: the connection failed. The descriptor and the
 * mapping exist only inside this call and c: call it with fork() held off, so no child can
 * inherit either. */
int sks_chan_take_offer(sks_chan *c, int sock, sks_buf *reply);
/* Client: one call. 1: reply filled; 0: sksd closed the channel without taking the request
 * (safe to send again on a new connection); -1: the connection broke during the call. */
int sks_chan_call(sks_chan *c, int sock, const uint8_t *req, size_t n, sks_buf *reply);
/* Client: unmaps the channel. */
void sks_chan_close_client(sks_chan *c);

#endif
