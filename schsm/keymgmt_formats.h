/*
 * SmartCard-HSM key management, the host-side formats (docs/smartcard-hsm-keymgmt.md):
 * DKEK share files and n-of-m share passwords as OpenSC's sc-hsm-tool writes them, the
 * wrapped-key blob of WRAP KEY / UNWRAP KEY and sc-hsm-tool's --wrap-key file, and the card
 * verifiable (CV) certificates of the device chain and of key-generation responses.
 *
 * None of this talks to a card. Every function returns 1 on success and 0 on failure; on
 * failure err (errlen bytes, may be NULL) holds a sentence for the user. Secrets handed in are
 * not kept; secrets handed out are the caller's to wipe (OPENSSL_cleanse).
 */
#ifndef SKS_SCHSM_KEYMGMT_FORMATS_H
#define SKS_SCHSM_KEYMGMT_FORMATS_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "ber_tlv.h"

/* ---------------------------------------------------------------------------------------- */
/* DKEK shares and the DKEK                                                                 */

#define SCHSM_DKEK_LEN 32
#define SCHSM_KCV_LEN 8
#define SCHSM_SHARE_FILE_LEN 64              /* "Salted__" ‖ salt 8 ‖ 48 bytes of ciphertext */
#define SCHSM_SHARE_ITERATIONS 10000000UL    /* sc-hsm-tool's EVP_BytesToKey count */

/* Called with finished = 0 just before the slow password derivation (several seconds at the
 * default count) and with finished = 1 after it. */
typedef void schsm_progress_fn(void *arg, int finished);

/* Encrypts a 32-byte share into a share file (out, 64 bytes). salt: 8 bytes, or NULL for
 * random ones. iterations: 0 means SCHSM_SHARE_ITERATIONS (anything else is for tests). */
int schsm_share_encrypt(const uint8_t share[SCHSM_DKEK_LEN], const uint8_t *password, size_t pwlen,
                        const uint8_t *salt, unsigned long iterations, schsm_progress_fn *progress, void *arg,
                        uint8_t out[SCHSM_SHARE_FILE_LEN], char *err, size_t errlen);

/* Decrypts a share file of n bytes into share. */
int schsm_share_decrypt(const uint8_t *file, size_t n, const uint8_t *password, size_t pwlen,
                        unsigned long iterations, schsm_progress_fn *progress, void *arg,
                        uint8_t share[SCHSM_DKEK_LEN], char *err, size_t errlen);

/* dkek ^= share: the card's DKEK is the XOR of all its shares (start from zeros). */
void schsm_dkek_add_share(uint8_t dkek[SCHSM_DKEK_LEN], const uint8_t share[SCHSM_DKEK_LEN]);

/* The key check value the card reports for a DKEK: SHA-256(DKEK)[0..7]. */
int schsm_dkek_kcv(const uint8_t dkek[SCHSM_DKEK_LEN], uint8_t kcv[SCHSM_KCV_LEN]);

/* ---------------------------------------------------------------------------------------- */
/* n-of-m share passwords (Shamir's scheme over a 64-bit prime, as sc-hsm-tool)             */

#define SCHSM_PWD_LEN 8
#define SCHSM_PWD_MAX_SHARES 255

typedef struct schsm_pwd_share {
    uint64_t prime; /* public, the same in every share of one split */
    unsigned id;    /* x = 1..m */
    uint64_t value; /* f(x) mod prime: secret */
} schsm_pwd_share;

/* Makes 8 random bytes a password sc-hsm-tool can rebuild from its shares: top bit cleared (below
 * any 64-bit prime), first byte not zero (sc-hsm-tool drops a leading zero byte). */
int schsm_pwd_shape(uint8_t password[SCHSM_PWD_LEN], char *err, size_t errlen);

/* 8 random bytes from the host, shaped by schsm_pwd_shape. */
int schsm_pwd_random(uint8_t password[SCHSM_PWD_LEN], char *err, size_t errlen);

/* Splits password into total shares of which any threshold recover it (2 <= threshold <=
 * total <= 255). shares: total entries. */
int schsm_pwd_split(const uint8_t password[SCHSM_PWD_LEN], unsigned threshold, unsigned total,
                    schsm_pwd_share *shares, char *err, size_t errlen);

/* Recovers the password from n shares (n >= the threshold of the split; more are fine, too few
 * give a wrong password that the share file's decryption then rejects). The result is always
 * 8 bytes, left-padded with zeros. */
int schsm_pwd_combine(const schsm_pwd_share *shares, size_t n, uint8_t password[SCHSM_PWD_LEN], char *err,
                      size_t errlen);

/* The three lines a custodian receives, as sc-hsm-tool prints them:
 *   "Prime       : xx:xx:..\nShare ID    : <decimal>\nShare value : xx:..\n"
 * (hex lower case, colon-separated, minimal length). out: at least SCHSM_PWD_SHARE_TEXT_LEN. */
#define SCHSM_PWD_SHARE_TEXT_LEN 128
int schsm_pwd_share_format(const schsm_pwd_share *s, char *out, size_t outlen);

/* Reads a share from text holding the "Prime", "Share ID" and "Share value" lines (in any
 * order, other lines ignored). Hex values take colons or spaces between bytes; the share ID is
 * decimal, the base it is printed in. */
int schsm_pwd_share_parse(const char *text, schsm_pwd_share *s, char *err, size_t errlen);

/* One hex value as printed ("0a:1b:..", "0A1B..") of at most 8 bytes. */
int schsm_pwd_parse_hex(const char *text, uint64_t *v, char *err, size_t errlen);

/* ---------------------------------------------------------------------------------------- */
/* TLV reading: schsm/ber_tlv.h                                                              */

/* ---------------------------------------------------------------------------------------- */
/* Curves the card knows, by name                                                           */

/* The OpenSSL group name ("prime256v1", "brainpoolP256r1", ...) of the supported curve with
 * prime p (big-endian, leading zeros allowed), or NULL. */
const char *schsm_curve_by_prime(const uint8_t *p, size_t plen);

/* The one supported curve the encoded point q (04 ‖ x ‖ y) lies on, or NULL (none, or more
 * than one): for a CV certificate whose domain parameters sit with an issuer we do not have. */
const char *schsm_curve_of_point(const uint8_t *q, size_t n);

/* ---------------------------------------------------------------------------------------- */
/* The wrapped-key blob of WRAP KEY / UNWRAP KEY                                            */

enum {
    SCHSM_KEY_RSA = 5,     /* d, n, e */
    SCHSM_KEY_RSA_CRT = 6, /* dp, dq, p, qinv, q, n, e */
    SCHSM_KEY_EC = 12,     /* a, b, p, n, G, d, Q */
    SCHSM_KEY_AES = 15
};

#define SCHSM_MAX_ALGORITHMS 16

typedef struct schsm_unwrapped {
    int type; /* SCHSM_KEY_* */
    uint8_t algorithms[SCHSM_MAX_ALGORITHMS]; /* the key's allowed algorithms (tag 91) */
    size_t nalgorithms;
    EVP_PKEY *pkey;  /* RSA and EC: the private key (caller frees) */
    uint8_t aes[32]; /* AES: the key (caller wipes) */
    size_t aeslen;
} schsm_unwrapped;

/* Wraps an RSA key (2048-4096 bits: CRT form, type 6, up to 2048 bits; d, n, e, type 5, above,
 * as CardContact's key manager does) or an EC key (P-256/384/521, brainpoolP256/320/384/512r1,
 * secp256k1) under dkek. algorithms: the allowed-algorithm list to put in the blob (nalg <= 16,
 * 0 = none stored). *blob is the caller's to free. */
int schsm_wrap_key(const uint8_t dkek[SCHSM_DKEK_LEN], EVP_PKEY *key, const uint8_t *algorithms, size_t nalg,
                   uint8_t **blob, size_t *bloblen, char *err, size_t errlen);

/* The KCV a blob names (its first 8 bytes). */
int schsm_blob_kcv(const uint8_t *blob, size_t n, uint8_t kcv[SCHSM_KCV_LEN], char *err, size_t errlen);

/* Checks and decrypts a blob: KCV, CMAC, type and OID, then the key itself (EC: Q = d·G on a
 * supported curve; RSA: p·q = n). out is zeroed first; free with schsm_unwrapped_clear. */
int schsm_unwrap_key(const uint8_t dkek[SCHSM_DKEK_LEN], const uint8_t *blob, size_t n, schsm_unwrapped *out,
                     char *err, size_t errlen);
void schsm_unwrapped_clear(schsm_unwrapped *u);

/* sc-hsm-tool's --wrap-key file: 30 { 04 <blob>, [PrKD TLV], [certificate TLV] }. */
int schsm_wrap_file_build(const uint8_t *blob, size_t bloblen, const uint8_t *prkd, size_t prkdlen,
                          const uint8_t *cert, size_t certlen, uint8_t **out, size_t *outlen, char *err,
                          size_t errlen);
/* Pointers into file; *prkd / *cert are NULL (length 0) when absent. */
int schsm_wrap_file_parse(const uint8_t *file, size_t n, const uint8_t **blob, size_t *bloblen,
                          const uint8_t **prkd, size_t *prkdlen, const uint8_t **cert, size_t *certlen, char *err,
                          size_t errlen);

/* ---------------------------------------------------------------------------------------- */
/* CV certificates and authenticated CV requests                                            */

#define SCHSM_CVC_REF_MAX 16

typedef struct schsm_bytes {
    const uint8_t *p; /* into the parsed input; NULL if absent */
    size_t n;
} schsm_bytes;

typedef struct schsm_cvc {
    schsm_bytes cert;      /* the whole 7F21 TLV */
    schsm_bytes body;      /* the whole 7F4E TLV: what the inner signature covers */
    schsm_bytes signature; /* 5F37 value, r ‖ s */
    unsigned cpi;
    char car[SCHSM_CVC_REF_MAX + 1]; /* "" when absent (optional in requests) */
    char chr[SCHSM_CVC_REF_MAX + 1];
    schsm_bytes key_oid;                      /* 06 in 7F49 */
    schsm_bytes p, a, b, g, n, q, h;          /* EC: 81..87 (present ones only) */
    schsm_bytes rsa_n, rsa_e;                 /* RSA: 81, 82 */
    schsm_bytes chat_oid, chat;               /* 7F4C { 06, 53 } */
    char effective[7], expiry[7];             /* YYMMDD, "" when absent */
    /* authenticated request (67) only: */
    int authenticated;
    char outer_car[SCHSM_CVC_REF_MAX + 1];
    schsm_bytes outer_signed;    /* 7F21 TLV ‖ 42 TLV, contiguous in the request */
    schsm_bytes outer_signature; /* 5F37 value */
} schsm_cvc;

/* Parses one CV certificate (7F21) or authenticated request (67) at the start of buf; *used
 * (may be NULL) gets its encoded length, so concatenated certificates can be walked. */
int schsm_cvc_parse(const uint8_t *buf, size_t n, schsm_cvc *c, size_t *used, char *err, size_t errlen);

/* The public key of c as an EVP_PKEY. EC keys take their curve from c itself when it carries
 * the prime, else from domain (the issuer's certificate; NULL if c must carry it). */
int schsm_cvc_public_key(const schsm_cvc *c, const schsm_cvc *domain, EVP_PKEY **out, char *err, size_t errlen);

/* Verifies c's inner signature (over its 7F4E TLV) with the issuer key; the hash is the one
 * named by issuer_oid (id-TA-ECDSA-SHA-224/256/384/512, id-TA-RSA-v1-5-SHA-256/512). SHA-1
 * variants are refused here and in every other CV signature check (docs/smartcard-hsm-keymgmt.md,
 * "Attestation"). */
int schsm_cvc_verify(const schsm_cvc *c, EVP_PKEY *issuer, const schsm_bytes *issuer_oid, char *err,
                     size_t errlen);

/* Verifies an authenticated request's outer signature (over 7F21 ‖ 42) with the device key. */
int schsm_cvc_verify_outer(const schsm_cvc *req, EVP_PKEY *device, const schsm_bytes *device_oid, char *err,
                           size_t errlen);

/* A key generation response (authenticated request) as proof that the card with device
 * certificate dev (public key device) made the key. SCHSM_GEN_OTHER_DEVICE (err names both)
 * when its outer CAR is not dev's CHR: another device's response, no proof for this card even
 * if the signature verified (a key restored from another card's backup carries one); else
 * SCHSM_GEN_VERIFIED or SCHSM_GEN_INVALID (the outer signature fails or uses SHA-1). */
enum { SCHSM_GEN_INVALID = 0, SCHSM_GEN_VERIFIED = 1, SCHSM_GEN_OTHER_DEVICE = 2 };
int schsm_cvc_verify_generated(const schsm_cvc *req, EVP_PKEY *device, const schsm_cvc *dev, char *err,
                               size_t errlen);

typedef enum {
    SCHSM_CHAIN_VERIFIED = 1,     /* device → DICA → known root, every signature good */
    SCHSM_CHAIN_UNKNOWN_ROOT = 2, /* well-formed, but no root we know: unattested */
    SCHSM_CHAIN_INVALID = 0       /* malformed or a signature fails: err says which */
} schsm_chain_status;

typedef struct schsm_root {
    const char *name; /* CHR, e.g. "DESRCACC100001" */
    const uint8_t *cert;
    size_t len;
} schsm_root;

/* The roots built into the library (schsm/roots/): the production and the test SmartCard-HSM
 * scheme roots. */
const schsm_root *schsm_builtin_roots(size_t *n);

/* Verifies the content of EF.C_DevAut (device certificate ‖ DICA certificate) against roots.
 * On SCHSM_CHAIN_VERIFIED, *device_key (if not NULL) gets the device public key (caller
 * frees) and device_chr its CHR. */
schsm_chain_status schsm_cvc_verify_chain(const uint8_t *devaut, size_t n, const schsm_root *roots, size_t nroots,
                                          EVP_PKEY **device_key, char device_chr[SCHSM_CVC_REF_MAX + 1],
                                          char *err, size_t errlen);

/* The device certificate of EF.C_DevAut and its public key, WITHOUT verifying anything: for a
 * chain whose root is unknown, so that a key generation response can still be checked against
 * the key the card claims ("unattested"). An EC key's curve comes from the device certificate,
 * else the DICA certificate, else the one supported curve its point lies on. dev points into
 * devaut. */
int schsm_cvc_device_key_unverified(const uint8_t *devaut, size_t n, schsm_cvc *dev, EVP_PKEY **key, char *err,
                                    size_t errlen);

#endif
