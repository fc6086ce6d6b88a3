/*
 * Inside the SmartCard-HSM driver (docs/smartcard-hsm.md): the card session, the key cache,
 * APDUs and the status words, shared by the driver's files.
 */
#ifndef SKS_SCHSM_INTERNAL_H
#define SKS_SCHSM_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "../device/sks_device.h"
#include "schsm.h"

/* Bounds on what the card may hand us: a file we read (certificates, descriptions), the
 * ENUMERATE answer, one response APDU. Anything larger is refused as malformed. */
#define SCHSM_MAX_FILE 8192
#define SCHSM_MAX_LIST 1024
#define SCHSM_MAX_RESPONSE 8192
/* The largest RSA modulus the card has (4096 bits) in bytes; the largest EC field (P-521). */
#define SCHSM_MAX_RSA_BYTES 512
#define SCHSM_MAX_FIELD_BYTES 66
/* PIN lengths the card takes (user PIN); the SO-PIN is 8 bytes written as 16 hex digits. */
#define SCHSM_PIN_MIN 6
#define SCHSM_PIN_MAX 16
#define SCHSM_SO_PIN_LEN 8

/* Status words (ISO 7816-4 and the card's own, docs/smartcard-hsm.md). */
#define SW_OK 0x9000
#define SW_EOF 0x6282
#define SW_SECURITY 0x6982
#define SW_PIN_BLOCKED 0x6983
#define SW_DATA_INVALID 0x6984
#define SW_CONDITIONS 0x6985
#define SW_NOT_FOUND 0x6A82
#define SW_REF_NOT_FOUND 0x6A88
#define SW_IS_TRIES_LEFT(sw) (((sw) & 0xFFF0) == 0x63C0)

/* Functions of the driver return SKS_OK, an sks_status with the message written by
 * schsm_fail, or this when the link failed (the caller then drops the connection). */
#define SCHSM_LINK_FAILED (-1)

typedef enum { SCHSM_KEY_UNKNOWN, SCHSM_KEY_RSA, SCHSM_KEY_EC } schsm_key_type;

/* One key on the card, as described by its files (cached per card session). */
typedef struct {
    uint8_t kid;             /* key reference = low byte of CCkid, 1..255 */
    schsm_key_type type;     /* from the PrKD, else from the public key */
    unsigned bits;           /* RSA modulus or EC field size in bits (PrKD), 0 if unknown */
    char label[128];         /* PrKD label (CommonObjectAttributes), "" if none */
    uint8_t id[64];          /* PrKD iD (CKA_ID) */
    size_t id_len;
    int has_prkd;
    uint8_t *cert;           /* X.509 DER from CEkid (or a CAnn with the same iD), or NULL */
    size_t cert_len;
    EVP_PKEY *pub;           /* the certificate's public key, or NULL */
    size_t field_bytes;      /* EC: the curve's field size in bytes, from pub (0: unknown) */
    /* The public key in the CV request from key generation (CEkid starting 67), if that is
     * what CEkid holds: the EC point (04||X||Y) or the RSA modulus. */
    uint8_t request_key[SCHSM_MAX_RSA_BYTES + 1];
    size_t request_key_len;
    /* RSA PKCS#1 v1.5 decryption: a secret only this key can produce (operations.c). */
    uint8_t implicit_secret[32];
    int has_implicit_secret;
} schsm_key;

struct schsm_card {
    int selected;              /* the application is selected in this card session */
    uint8_t fcp_type, fw_major, fw_minor; /* from FCP tag 85 */
    uint16_t options;          /* the option word set at INITIALIZE (fw >= 2.0) */
    int have_version;
    /* The PIN this session verified, only as HMAC-SHA256(salt, PIN): never the PIN itself. */
    int pin_verified;
    uint8_t pin_salt[32];
    uint8_t pin_check[32];
    unsigned max_tries_seen;   /* the most tries-left the card reported (getKeyProtectionInfo) */
    /* The status words the card last gave for the user PIN's and the SO-PIN's state in this
     * card session (a status query's, or a VERIFY's): asked again only once forgotten (user
     * PIN: SELECT, a PIN change or unblock; SO-PIN: unblock, a new card session), so that a
     * key load costs no APDU. */
    int pin_sw_known, so_sw_known;
    unsigned pin_sw, so_sw;
    /* The key cache: ENUMERATE, PrKDs and certificates, read once per card session. */
    int cached;
    schsm_key *keys;
    size_t nkeys;
};

/* One call of schsm_card_call: where APDUs go and where errors are written. */
typedef struct {
    schsm_card *card;
    schsm_io *io;
    char *err; /* link failure text (the caller's buffer) */
    size_t errlen;
    char message[512]; /* the reply's error message */
} schsm_ctx;

/* Writes the reply's error message and returns status (for `return schsm_fail(...)`). */
int schsm_fail(schsm_ctx *c, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---- apdu.c ---- */
/* Encodes one command APDU into out[cap] (short, or extended when `extended`); le < 0: no Le,
 * le == 0: the maximum; returns its length, 0 if it does not fit. */
size_t schsm_apdu_encode(uint8_t *out, size_t cap, uint8_t cla, uint8_t ins, uint8_t p1, uint8_t p2,
                         const uint8_t *data, size_t nc, int le, int extended);
/* Sends one command: SKS_OK with resp (at most SCHSM_MAX_RESPONSE bytes) and *sw. */
int schsm_transmit(schsm_ctx *c, uint8_t cla, uint8_t ins, uint8_t p1, uint8_t p2, const uint8_t *data, size_t nc,
                   int le, sks_buf *resp, unsigned *sw);
/* What a status word means, in English (for messages). */
const char *schsm_sw_text(unsigned sw);
/* The SKS status for an unexpected status word of an operation. */
int schsm_sw_status(unsigned sw);
/* SELECT the application and read the version from the FCP (tag 85). */
int schsm_select(schsm_ctx *c);
/* Parses the FCP of SELECT: tag 85's type, version and option word. 1 if found. */
int schsm_parse_fcp(const uint8_t *p, size_t n, uint8_t *type, uint8_t *major, uint8_t *minor, uint16_t *options);

/* ---- tlv.c: bounded BER-TLV reading ---- */
typedef struct {
    unsigned tag; /* up to 3 tag bytes, as read */
    const uint8_t *v;
    size_t len;
} schsm_tlv;
/* Reads the TLV at *p (before end); advances *p past it. 1 if well formed and inside. */
int schsm_tlv_next(const uint8_t **p, const uint8_t *end, schsm_tlv *t);
/* Finds the first TLV with `tag` among the siblings in [p, end). */
int schsm_tlv_find(const uint8_t *p, const uint8_t *end, unsigned tag, schsm_tlv *t);

/* ---- objects.c ---- */
/* Decodes a PrKD (OpenSC's PKCS#15 PrivateKeyObject) into k's type, size, label, iD. */
int schsm_prkd_decode(const uint8_t *p, size_t n, schsm_key *k);
/* The public key of a CV request (67 { 7F21 { 7F4E { ... 7F49 {...} } } }): the EC point
 * (tag 86) or the RSA modulus (tag 81 without 86). */
int schsm_request_key(const uint8_t *p, size_t n, uint8_t *out, size_t cap, size_t *len);
/* The public key of a CV request (67 { 7F21 ... }) whose key template carries the curve's
 * domain parameters (EC) or n and e (RSA); NULL if not (schsm/request_key.c). */
EVP_PKEY *schsm_cv_request_public_key(const uint8_t *p, size_t n, int *is_rsa);
/* Decodes a CD entry (PKCS#15 CertificateObject): its iD. */
int schsm_cd_id(const uint8_t *p, size_t n, uint8_t *id, size_t idcap, size_t *idlen);
/* Reads a whole EF by its file id: SKS_OK with *sw = 9000 and the bytes, or SKS_OK with the
 * card's refusal in *sw (out empty). */
int schsm_read_file(schsm_ctx *c, uint16_t fid, sks_buf *out, unsigned *sw);
/* Fills the key cache once per card session. */
int schsm_load_keys(schsm_ctx *c);
void schsm_drop_keys(schsm_card *card);
/* The key for an SKS handle (= key reference), or NULL. */
schsm_key *schsm_find_key(schsm_card *card, uint32_t handle);
/* Modulus (RSA) or field (EC) size in bytes, 0 if unknown. */
size_t schsm_key_bytes(const schsm_key *k);
/* EC: the curve's field size in bytes from the public key, else from the PrKD. */
size_t schsm_key_field_bytes(const schsm_key *k);

/* ---- pin.c ---- */
/* Makes sure the card holds a verification with this PIN (VERIFY only when needed). */
int schsm_pin_ensure(schsm_ctx *c, sks_span pin);
/* The user PIN status (00 20 00 81): tries left (or -1 when verified), blocked. */
int schsm_pin_status(schsm_ctx *c, int *tries_left, int *blocked, int *verified);
void schsm_pin_forget(schsm_card *card);
/* Runs op (one APDU) with the PIN verified; after 6982 (someone re-selected) re-selects,
 * re-verifies and retries once. */
int schsm_with_pin(schsm_ctx *c, sks_span pin, uint8_t cla, uint8_t ins, uint8_t p1, uint8_t p2,
                   const uint8_t *data, size_t nc, sks_buf *resp, unsigned *sw);
int schsm_change_pin(schsm_ctx *c, sks_span old_pin, sks_span new_pin);
int schsm_unblock_pin(schsm_ctx *c, sks_span so_pin_hex);

/* ---- operations.c ---- */
typedef struct {
    sks_span algorithm;
    sks_span parameters;
    sks_span authorization;
    sks_span data;
} schsm_op;
int schsm_sign(schsm_ctx *c, schsm_key *k, const schsm_op *op, sks_buf *out);
int schsm_decrypt(schsm_ctx *c, schsm_key *k, const schsm_op *op, sks_buf *out);
int schsm_agree(schsm_ctx *c, schsm_key *k, const schsm_op *op, sks_buf *out);
/* The algorithm URIs the driver answers (getDeviceInfo). */
const char *const *schsm_algorithms(size_t *count);

#endif
