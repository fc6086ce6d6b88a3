/*
 * Every algorithm URI the device knows: the specification's, plus the project's additions
 * under the same prefix (brainpool P320r1/P384r1/P512r1, Ed25519, RSA-PSS, OAEP with
 * parameters); see docs/algorithms.md.
 */
#ifndef SKS_ALGORITHMS_H
#define SKS_ALGORITHMS_H

#include <stddef.h>

#define SKS_ALG_PREFIX "https://webpki.github.io/sks/algorithm#"

typedef enum {
    ALG_KEY_GEN,     /* createKeyEntry keyAlgorithm */
    ALG_SIGN,        /* signHashedData */
    ALG_DECRYPT,     /* asymmetricKeyDecrypt */
    ALG_AGREE,       /* keyAgreement */
    ALG_HMAC,        /* performHmac */
    ALG_SYM_ENCRYPT, /* symmetricKeyEncrypt */
    ALG_SPECIAL      /* session.1, key.1, none */
} alg_class;

typedef enum { KEYTYPE_NONE, KEYTYPE_RSA, KEYTYPE_EC, KEYTYPE_ED25519 } key_type;

typedef enum {
    SYM_NONE,
    SYM_CBC_INTERNAL_IV, /* xmlenc aesNNN-cbc: random IV prepended, PKCS#7 */
    SYM_CBC_PARAM_IV,    /* aes.cbc: IV in parameters, PKCS#7 */
    SYM_ECB_NOPAD        /* aes.ecb.nopad */
} sym_mode;

typedef struct {
    const char *uri;
    alg_class cls;
    key_type key;        /* the key type the algorithm needs (or generates) */
    int rsa_bits;        /* ALG_KEY_GEN RSA: modulus size */
    int rsa_exp_param;   /* ALG_KEY_GEN RSA: exponent given in keyParameters */
    const char *curve;   /* ALG_KEY_GEN EC: OpenSSL curve name */
    const char *md;      /* digest name (signatures, HMAC, OAEP), NULL if none */
    size_t hash_len;     /* signHashedData: required data length, 0 = no fixed length */
    int pss;             /* ALG_SIGN: RSA-PSS, salt = hash length */
    int pad;             /* ALG_DECRYPT: RSA padding (RSA_PKCS1_PADDING/OAEP) */
    int oaep_params;     /* ALG_DECRYPT: OAEP digest, MGF1 digest and label come in "parameters" */
    sym_mode sym;        /* ALG_SYM_ENCRYPT */
    size_t sym_key_len;  /* ALG_SYM_ENCRYPT: required AES key length, 0 = 16/24/32 */
} sks_algorithm;

const sks_algorithm *alg_find(const char *uri);
const sks_algorithm *alg_find_n(const char *uri, size_t n);
/* The whole table, for getDeviceInfo. */
const sks_algorithm *alg_table(size_t *count);
/* The key generation algorithm for an OpenSSL curve name (e.g. "prime256v1"). */
const sks_algorithm *alg_for_curve(const char *curve);

#endif
