/*
 * The sks OpenSSL 3 provider: shared types. Each operation lives in its own folder
 * (keymgmt/, signature/, exchange/, asymcipher/, store/), as in OpenSSL's own
 * providers/implementations/.
 */
#ifndef SKS_PROVIDER_H
#define SKS_PROVIDER_H

#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

#include <openssl/core.h>
#include <openssl/core_dispatch.h>
#include <openssl/evp.h>

#include "../client/sks_client.h"
#include "../transport/transport.h"

/* The status type used inside the provider; converted to 1/0 at every OpenSSL boundary. */
typedef enum { SKS_P_OK = 0, SKS_P_FAIL = 1 } sks_pstatus;

/* Reason codes for ERR_raise (the provider's own library code). */
enum {
    SKS_R_DEVICE = 1,       /* the device answered an error (message attached) */
    SKS_R_UNREACHABLE,      /* the device could not be reached */
    SKS_R_BAD_URI,          /* a malformed sks: URI */
    SKS_R_NOT_FOUND,        /* no object matched */
    SKS_R_PIN,              /* wrong PIN */
    SKS_R_LOCKED,           /* key locked */
    SKS_R_NOT_ENDORSED,     /* the key is not endorsed for the operation */
    SKS_R_UNSUPPORTED,      /* parameters the device cannot do */
    SKS_R_PUBLIC_ONLY,      /* a public key has no private operations */
    SKS_R_INTERNAL,
    SKS_R_PIN_NEEDED        /* a PIN-protected key was loaded without any PIN */
};

typedef struct sks_provctx {
    const OSSL_CORE_HANDLE *core;
    OSSL_LIB_CTX *libctx;    /* child library context: public-key work goes to "default" */
    char *device;            /* device specification (transport/transport.h), or NULL */
    char *store_path;        /* embedded store (NULL: as the sks tool finds it) */
    char *master_key_path;
    char *pin;               /* PIN from the configuration, if any */
    pthread_mutex_t lock;    /* serialises device calls on the shared transport */
    sks_transport *transport;
    sks_client_buffers bufs; /* reused by every operation's User API call (under lock) */
    pid_t transport_pid;     /* a forked child reopens its own connection: */
    unsigned long transport_epoch; /* the fork epoch it was opened in (provider.c) */
    /* Which handle a friendly name was last found at, so that loading a key by name (curl
     * does it on every connection) costs one lookup instead of a scan of the store. Only a
     * hint: the key's attributes are read again and the name compared. */
    pthread_mutex_t names_lock;
    struct {
        char *name;
        uint32_t handle;
    } names[64];
    unsigned names_next;
    /* Digests for hashing before signing, fetched once: EVP_MD_fetch on every signature cost
     * about 3% of a P-256 signature (bench/). Indexed as sks_md_fetch's table. */
    pthread_mutex_t md_lock;
    EVP_MD *md[5];
    /* Public halves of keys loaded through the store, by their exact SubjectPublicKeyInfo:
     * d2i_PUBKEY sets up OpenSSL 3.0's decoder chain, about 40% of a key load (bench/). The
     * same bytes always decode to the same key, so a hit is exact; the EVP_PKEY is shared
     * read-only (up-ref), as sks keys already share it when duplicated. */
    pthread_mutex_t pubs_lock;
    struct {
        uint8_t *spki;
        size_t len;
        EVP_PKEY *pkey;
    } pubs[16];
    unsigned pubs_next;
} sks_provctx;

/* The public key of a DER SubjectPublicKeyInfo, decoded in the provider's library context
 * (or found decoded before); the caller owns a reference. NULL if it does not decode. */
EVP_PKEY *sks_public_key(sks_provctx *ctx, const uint8_t *spki, size_t len);

/* SHA1, SHA224, SHA256, SHA384 or SHA512 (canonical names) from the default provider, fetched
 * once per provider context; the caller owns a reference (EVP_MD_free). Other names are
 * fetched every time. */
EVP_MD *sks_md_fetch(sks_provctx *ctx, const char *name);

/* Raises an error on the provider's error stack. */
void sks_raise(sks_provctx *ctx, int reason, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/*
 * The device connection, for calls of the typed client (client/sks_client.h), the only code
 * that knows a method's bytes. sks_conn_acquire locks the provider's connection, opening it
 * first (again in a forked child), and returns its transport; NULL, with the error raised, if
 * the device cannot be opened. Every acquire is paired with one sks_conn_release; no other
 * acquire in between (the lock is not recursive). While it is held, ctx->bufs may be passed
 * to the client's allocation-free calls.
 */
sks_transport *sks_conn_acquire(sks_provctx *ctx);
void sks_conn_release(sks_provctx *ctx);

/* Raises a failed client call: wrong PIN and not-endorsed get their own reasons, an
 * unreachable device SKS_R_UNREACHABLE, the rest SKS_R_DEVICE; device messages are prefixed
 * with `method`. */
void sks_raise_client(sks_provctx *ctx, const char *method, const sks_client_error *e);

/* The kinds of key the provider handles. */
typedef enum { SKS_KIND_EC, SKS_KIND_RSA, SKS_KIND_RSA_PSS, SKS_KIND_ED25519 } sks_key_kind;

/*
 * A key as the provider sees it: a reference to a device key (handle), and its public half
 * cached at load time in the default provider, so that get_params and match never touch
 * the device. handle == 0: a plain public key (imported, e.g. a peer's).
 */
typedef struct sks_key {
    sks_provctx *ctx;
    int refs;
    pthread_mutex_t ref_lock;
    sks_key_kind kind;
    uint32_t handle;
    EVP_PKEY *pub;           /* public half; with params_only, EC domain parameters alone */
    int params_only;         /* a parameters-only copy (keymgmt dup): no public key yet */
    char *pin;               /* PIN for this key, wiped on free */
    char **endorsed;         /* endorsed algorithm URIs (NULL-terminated), empty = any */
    char *name;              /* friendlyName */
    uint8_t *spki;           /* EC public keys imported from parameters (ECDH peers): their
                              * SubjectPublicKeyInfo, made at import, as keyAgreement takes it */
    size_t spki_len;
} sks_key;

sks_key *sks_key_new(sks_provctx *ctx, sks_key_kind kind);
int sks_key_up_ref(sks_key *k);
void sks_key_free(sks_key *k);
/* 1 if the key is endorsed for the algorithm URI (or has no endorsement list). */
int sks_key_endorses(const sks_key *k, const char *uri);
const char *sks_kind_name(sks_key_kind kind);
/* SubjectPublicKeyInfo DER of an EC point (as encoded, e.g. uncompressed) on the named curve
 * `group` (OpenSSL's name), written into out; 0 if the curve has no OID or out is too small. */
int sks_ec_spki(const char *group, const uint8_t *point, size_t plen, uint8_t *out, size_t size, size_t *len);

/* Operation dispatch tables, defined in their folders. */
extern const OSSL_DISPATCH sks_ec_keymgmt_functions[];
extern const OSSL_DISPATCH sks_rsa_keymgmt_functions[];
extern const OSSL_DISPATCH sks_rsapss_keymgmt_functions[];
extern const OSSL_DISPATCH sks_ed25519_keymgmt_functions[];
extern const OSSL_DISPATCH sks_ecdsa_signature_functions[];
extern const OSSL_DISPATCH sks_rsa_signature_functions[];
extern const OSSL_DISPATCH sks_ed25519_signature_functions[];
extern const OSSL_DISPATCH sks_ecdh_keyexch_functions[];
extern const OSSL_DISPATCH sks_rsa_asym_cipher_functions[];
extern const OSSL_DISPATCH sks_store_functions[];

#define SKS_ALG_URI(frag) "https://webpki.github.io/sks/algorithm#" frag
#define SKS_XMLDSIG_MORE(frag) "http://www.w3.org/2001/04/xmldsig-more#" frag

/* The User API calls of the operation implementations (provider/device_ops.c), with the key's
 * handle and PIN, through the client's allocation-free calls: the result goes into out[size],
 * its length into *out_len; a result that does not fit is an error. `params` is the method's
 * parameters byte string (empty: NULL, 0). */
sks_pstatus sks_op_sign(sks_key *k, const char *alg_uri, const uint8_t *params, size_t params_len,
                        const uint8_t *data, size_t n, uint8_t *out, size_t size, size_t *out_len);
sks_pstatus sks_op_decrypt(sks_key *k, const char *alg_uri, const uint8_t *params, size_t params_len,
                           const uint8_t *in, size_t n, uint8_t *out, size_t size, size_t *out_len);
sks_pstatus sks_op_agree(sks_key *k, const uint8_t *peer_spki, size_t n, uint8_t *out, size_t size,
                         size_t *out_len);

#endif
