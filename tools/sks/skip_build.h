/*
 * Building a SKIP package (docs/skip.md), shared by `sks skip issue` (skip_issue.c) and the
 * network issuer sks-issuer (tools/sks-issuer): ephemeral key on the factory key's curve, the
 * AES key (skip_derive_aes_key), the device keys as KeyPairContainers, their certificates from
 * the CA, and the CMS SignedData signed by the ephemeral key.
 *
 * Before the package is signed, each device key's private half and certificate are handed to
 * an optional hook (sks-issuer archives encryption keys there): if the hook fails, no package
 * is made. Clear keys and the AES key are wiped before skip_build_package returns.
 */
#ifndef SKS_TOOL_SKIP_BUILD_H
#define SKS_TOOL_SKIP_BUILD_H

#include <stddef.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "issuer.h"

typedef struct {
    const char *group; /* OpenSSL group name, NULL for Ed25519 */
    const char *label; /* the certificate's CN is "<request CN> <label>" */
    int archive;       /* handed to the hook as is */
} skip_build_key;

/* Called once per device key, in container order, before anything is signed. 1: go on. */
typedef int (*skip_build_hook)(void *arg, size_t index, const skip_build_key *spec, EVP_PKEY *priv,
                               X509 *cert);

typedef struct {
    X509_REQ *req;                /* verified by the caller (sks-issuer: issuer_check_request) */
    const issuer_ca *ca;
    STACK_OF(X509) *ca_chain;     /* certificates above the CA's own, may be NULL */
    const skip_build_key *keys;
    size_t nkeys;                 /* 1 .. SKIP_MAX_KEYS */
    int aes_bits;                 /* 128 or 256 */
    int days;
    skip_build_hook hook;         /* may be NULL */
    void *hook_arg;
} skip_build_params;

/* The package's DER into *der (OPENSSL_free it), its length into *len. */
int skip_build_package(const skip_build_params *p, unsigned char **der, size_t *len, char *err, size_t errlen);

#endif
