/*
 * The software SKS: the embedded default device.
 *
 * Everything a client can do goes through sks_device_dispatch(), which takes one request in
 * the SKS byte stream (docs/wire-format.md) and writes one reply. The other functions here
 * create, open and close a store; they are not reachable over the wire.
 */
#ifndef SKS_DEVICE_H
#define SKS_DEVICE_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "../wire/codec.h"

typedef struct sks_device sks_device;

/* Status codes of the specification (section 7.3). */
typedef enum {
    SKS_OK = 0x00,
    SKS_ERROR_AUTHORIZATION = 0x01,
    SKS_ERROR_NOT_ALLOWED = 0x02,
    SKS_ERROR_STORAGE = 0x03,
    SKS_ERROR_MAC = 0x04,
    SKS_ERROR_CRYPTO = 0x05,
    SKS_ERROR_NO_SESSION = 0x06,
    SKS_ERROR_NO_KEY = 0x07,
    SKS_ERROR_ALGORITHM = 0x08,
    SKS_ERROR_OPTION = 0x09,
    SKS_ERROR_INTERNAL = 0x0A,
    SKS_ERROR_EXTERNAL = 0x0B,
    SKS_ERROR_USER_ABORT = 0x0C,
    SKS_ERROR_NOT_AVAILABLE = 0x0D
} sks_status;

/* Where the store lives. master_key_path may be NULL: then "<db_path>.key". */
typedef struct {
    const char *db_path;
    const char *master_key_path;
} sks_store_location;

/*
 * Creates a new store: the database file, a fresh 256-bit master key (0600 file, refused if
 * it exists), and the device identity. device_key/device_cert may be NULL, then a P-256 key
 * and a self-signed certificate are made; otherwise they are used as given (tests replaying
 * the reference transcript supply the reference device key). Returns 1 on success; on failure
 * writes a message to err.
 */
int sks_store_create(const sks_store_location *loc, EVP_PKEY *device_key, X509 *device_cert,
                     char *err, size_t errlen);

/* Opens an existing store. NULL on failure, with a message in err. */
sks_device *sks_device_open(const sks_store_location *loc, char *err, size_t errlen);
void sks_device_close(sks_device *dev);

/* Handles one request; the reply always has at least the status byte (unless out of memory,
 * when reply->failed is set). Safe to call from several processes on one store. */
void sks_device_dispatch(sks_device *dev, const uint8_t *req, size_t reqlen, sks_buf *reply);

/* 1 if method `id` is open to callers who are not administrators: the User API and the
 * read-only queries about keys. Transports that tell callers apart (sksd, sks-vcard without
 * --allow-management) refuse every other method to them. */
int sks_method_open_to_users(uint8_t id);

/*
 * Test seam: lets a test supply what the device would otherwise draw at random, so that the
 * reference transcript can be replayed byte for byte. Each callback may return NULL/0 to fall
 * back to the normal random behaviour. Not reachable over any transport.
 */
typedef struct {
    void *ctx;
    /* The client ephemeral key for createProvisioningSession (on the server key's curve). */
    EVP_PKEY *(*ephemeral_key)(void *ctx);
    /* The clientSessionId; copy into out (<= 32 chars + NUL). Return 1 if supplied. */
    int (*client_session_id)(void *ctx, char out[33]);
    /* The key pair createKeyEntry generates for the key with this id. */
    EVP_PKEY *(*generated_key)(void *ctx, const char *id);
} sks_test_hooks;

void sks_device_set_test_hooks(sks_device *dev, const sks_test_hooks *hooks);

/*
 * Key owners, for a device that several users share through sksd (device/owner.c). A key
 * belongs to a uid and optionally a group: the uid whose call created it, or whoever an
 * administrator gives it to (sks_device_set_key_owner). Keys without an owner record
 * (created in-process, or before owners existed) belong to root alone.
 *
 * Once a caller is set, the device serves a key's User API, attributes, protection info,
 * extensions and enumeration only to its owner, members of its group and administrators;
 * to anyone else the key does not exist. Without a caller (in-process use: whoever can open
 * the store file has every key anyway) every key is served.
 */
#define SKS_CALLER_MAX_GROUPS 64
#define SKS_NO_GROUP 0xFFFFFFFFu
typedef struct {
    uint32_t uid;
    uint32_t gids[SKS_CALLER_MAX_GROUPS]; /* primary group first */
    int ngids;
    int admin; /* administrators see and use every key */
} sks_caller;

/* Sets the caller of every later call on dev. 0 on failure (message in err). */
int sks_device_set_caller(sks_device *dev, const sks_caller *caller, char *err, size_t errlen);
/* Gives the key `key` (a friendly name, or #HANDLE) to uid and gid (SKS_NO_GROUP: no group).
 * Not reachable over the wire: sksd --key-owner calls it for the administrator. */
int sks_device_set_key_owner(sks_device *dev, const char *key, uint32_t uid, uint32_t gid, char *err, size_t errlen);

#endif
