/*
 * RSAES-PKCS1-v1_5 decryption padding removal with implicit rejection
 * (draft-irtf-cfrg-rsa-guidance), shared by the software device (device/crypto.c) and the
 * SmartCard-HSM driver (schsm/operations.c), which differ only in where the key derivation key
 * comes from.
 */
#ifndef SKS_RSA_PKCS1_IMPLICIT_H
#define SKS_RSA_PKCS1_IMPLICIT_H

#include <stddef.h>
#include <stdint.h>

#include "wire/codec.h"

/*
 * Appends to out the message of em[0..k) (the raw RSA result, 00 || 02 || at least eight
 * non-zero bytes || 00 || message), or, when that padding is wrong, a synthetic message drawn
 * from kdk: a secret fixed per key and ciphertext, so a ciphertext always decrypts to the same
 * bytes and nobody without the key learns whether its padding was right (Bleichenbacher,
 * Marvin). No branch and no memory access depends on em's bytes, except the output length,
 * which the caller sees anyway. 0 if k is below 11 bytes or a step failed.
 */
int sks_pkcs1_unpad_implicit(const uint8_t kdk[32], const uint8_t *em, size_t k, sks_buf *out);

#endif
