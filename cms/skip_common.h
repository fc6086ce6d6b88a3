/*
 * SKIP (secure key packages, docs/skip.md): the two rules both sides of the protocol must
 * apply identically, kept here once. The device (device/skip.c) derives the AES key with the
 * factory private key; the issuer (tools/sks/skip_issue.c) with the ephemeral private key.
 */
#ifndef SKS_SKIP_COMMON_H
#define SKS_SKIP_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

/* The issuerUri (and sessionKeyAlgorithm) of the provisioning session a SKIP request opens. */
#define SKIP_ISSUER_URI "urn:sks:skip"
/* Most device keys one package may carry. */
#define SKIP_MAX_KEYS 32
/* Longest certificate path stored with one key (end-entity first). */
#define SKIP_MAX_PATH 16

/*
 * The package's AES key: ECDH between own_private and peer_public (same curve), Z = the x
 * coordinate at full field length, key = the rightmost aes_bits/8 bytes of Z (PKCS#11
 * CKM_ECDH1_DERIVE with CKD_NULL truncates by dropping leading bytes). aes_bits is 128 or
 * 256. Returns 1 and fills key[0 .. aes_bits/8); 0 on any failure (key is then wiped).
 */
int skip_derive_aes_key(EVP_PKEY *own_private, EVP_PKEY *peer_public, int aes_bits, uint8_t key[32]);

/*
 * The clientSessionId of the provisioning session that holds a factory key: the first 32
 * characters of base64url(SHA-256(SubjectPublicKeyInfo)), the SPKI with the point
 * uncompressed. It lets the importer find the pending request a package answers from the
 * factory certificate alone. Returns 1 and a NUL-terminated id; 0 for non-EC keys.
 */
int skip_session_id(EVP_PKEY *factory_public, char out[33]);

#endif
