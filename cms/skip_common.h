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
/* Most trust anchors one request stores (skipRequest). */
#define SKIP_MAX_ANCHORS 16
/* Packages that verify but do not decrypt to their keys a request survives: the third one
 * withdraws it (docs/skip.md, "Failed unwraps"). */
#define SKIP_MAX_FAILED_UNWRAPS 3
/*
 * The extended key usage a package signer's (ephemeral key's) certificate must carry:
 * id-kp-sksSkipPackageSigner. The project owns no OID arc, so this is a private OID under
 * the UUID arc 2.25 (ITU-T X.667: an OID anyone may form from a random UUID without
 * registration), from UUID 10dd1b2b-59c9-49ae-811c-a32b09956c50. docs/skip.md says so.
 */
#define SKIP_SIGNER_EKU_OID "2.25.22415696597952645496466575977082088528"

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
