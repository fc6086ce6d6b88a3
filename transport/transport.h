/*
 * How a client reaches a device: one call = one request in the SKS byte stream and one
 * reply. The in-process transport hands the request straight to the dispatcher; the socket
 * and PC/SC transports (later) carry the same bytes.
 */
#ifndef SKS_TRANSPORT_H
#define SKS_TRANSPORT_H

#include "../device/sks_device.h"
#include "../wire/codec.h"

typedef struct sks_transport sks_transport;

struct sks_transport {
    /* Sends one request, fills reply (status byte first). 1 on success, 0 if the device
     * could not be reached (then err holds why). */
    int (*call)(sks_transport *t, const uint8_t *req, size_t n, sks_buf *reply, char *err, size_t errlen);
    void (*close)(sks_transport *t);
    /* What the transport reached, when there is more to say than the device specification:
     * "SKS card in reader \"...\"", "SmartCard-HSM in reader \"...\"" (pcsc:). NULL if not. */
    const char *(*describe)(sks_transport *t);
};

/* The embedded store, in this process. */
sks_transport *sks_transport_open_local(const sks_store_location *loc, char *err, size_t errlen);
/* The device behind a local transport (tests use it to install hooks). */
sks_device *sks_transport_local_device(sks_transport *t);

/* The sksd daemon on a Unix socket. */
sks_transport *sks_transport_open_unix(const char *socket_path, char *err, size_t errlen);

/* An SKS card or a SmartCard-HSM through pcsc-lite (docs/pcsc.md). reader: a reader name, or
 * part of one (a reader of exactly that name wins); "" = the first reader whose card has the
 * SKS or the SmartCard-HSM application. Connects and selects it before returning. Built with
 * -DSKS_WITH_PCSC. */
sks_transport *sks_transport_open_pcsc(const char *reader, char *err, size_t errlen);

/*
 * Opens the device a specification names:
 *   file:PATH      the embedded store PATH (master key: master_key_path, else PATH.key)
 *   unix:PATH      sksd listening on the Unix socket PATH
 *   pcsc:[READER]  an SKS card or a SmartCard-HSM through pcsc-lite (reader by name, or the first
 *                  with such a card)
 * A bare path is taken as file:PATH.
 */
sks_transport *sks_transport_open(const char *spec, const char *master_key_path, char *err, size_t errlen);

/*
 * The device to use when nothing more specific is configured: $SKS_DEVICE, else
 * file:$SKS_STORE, else file:DATA_DIR/store.db (sks_data_dir). Variables are read with
 * secure_getenv (ignored in set-user-ID/set-group-ID programs). Writes the specification into
 * out; 0 if none can be formed.
 */
int sks_default_device(char *out, size_t n);

/* The user's sks data directory: $XDG_DATA_HOME/sks, else HOME/.local/share/sks with HOME from
 * $HOME or, if unset, the password database (getpwuid). 0 if there is none: never /tmp. */
int sks_data_dir(char *out, size_t n);

/* Length-prefixed framing on a byte stream (4-byte big-endian length, at most 16 MiB). */
#define SKS_FRAME_MAX (16u * 1024 * 1024)
/* Reads one frame; 1 = frame read, 0 = clean end of stream, -1 = error. */
int sks_frame_read(int fd, sks_buf *out);

/* A server's reading (sksd): bounded in time and size. */
typedef struct {
    long idle_ms;  /* for the first byte of a frame */
    long frame_ms; /* for the rest of the frame, from its first byte */
    size_t max;    /* longest frame body */
    int stop_on_signal; /* a signal while waiting for a frame ends the wait (SKS_FRAME_ERROR) */
    int idle_by_rcvtimeo; /* the socket's SO_RCVTIMEO is idle_ms: wait in recv(), no poll() */
} sks_frame_limits;
#define SKS_FRAME_OK 1
#define SKS_FRAME_END 0
#define SKS_FRAME_ERROR (-1)
#define SKS_FRAME_IDLE (-2)     /* no frame began within idle_ms */
#define SKS_FRAME_SLOW (-3)     /* a frame began but was not complete within frame_ms */
#define SKS_FRAME_TOO_LONG (-4) /* its header announced more than max */
int sks_frame_read_bounded(int fd, sks_buf *out, const sks_frame_limits *lim);
int sks_frame_write(int fd, const uint8_t *p, size_t n);
/* The same, with a descriptor passed along (SCM_RIGHTS) on a Unix socket. */
int sks_frame_write_fd(int fd, const uint8_t *p, size_t n, int passed_fd);
/* sks_frame_read that also takes a descriptor passed with the frame (*passed_fd, else -1);
 * descriptors beyond the first are closed. */
int sks_frame_read_fd(int fd, sks_buf *out, int *passed_fd);

#endif
