/*
 * The provider's SKIP decoders (cms/skip_decoder.c), registered in provider/provider.c.
 */
#ifndef SKS_SKIP_DECODER_H
#define SKS_SKIP_DECODER_H

#include <stddef.h>

#include <openssl/core_dispatch.h>

struct sks_provctx;

/* "DER" from input DER: a SKIP package in, each imported key out as an "sks-key" reference
 * blob (never a key reference, which only the sks keymgmt could interpret). */
extern const OSSL_DISPATCH sks_skip_decoder_functions[];
/* "EC" and "ED25519" from input DER, structure "sks-key": the blob in, the sks key out. */
extern const OSSL_DISPATCH sks_skip_key_decoder_functions[];

/* Defined in provider/provider.c: the provider configuration's `skip-trust = PATH` (the PEM
 * trust anchors for SKIP packages) into out; 0 if it is not configured. */
int sks_provider_skip_trust(struct sks_provctx *ctx, char *out, size_t n);

#endif
