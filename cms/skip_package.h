/*
 * SKIP packages (docs/skip.md): decoding the CMS SignedData, the KeyPairContainers in it
 * (libtasn1, module cms/skip.asn), and verifying certificates, their purposes and the
 * signature against trust anchors. The device runs this itself on the whole package, against
 * the anchors stored with the request, before it decrypts anything (device/skip.c); the host
 * runs it first for early, clear errors.
 *
 * Every function returns 1/0; on 0 `err` holds an English sentence naming what is wrong.
 */
#ifndef SKS_SKIP_PACKAGE_H
#define SKS_SKIP_PACKAGE_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/cms.h>
#include <openssl/x509.h>

typedef struct {
    const uint8_t *spki;  /* SubjectPublicKeyInfo DER, inside the package's content */
    size_t spki_len;
    const uint8_t *epki;  /* EncryptedPrivateKeyInfo DER, inside the package's content */
    size_t epki_len;
    int aes_bits;         /* 128 or 256, from the cipher OID */
    EVP_PKEY *public_key; /* the parsed SPKI */
    X509 *cert;           /* after verify: its certificate (owned by the package) */
    STACK_OF(X509) *path; /* after verify: the verified chain, end-entity first */
} skip_container;

typedef struct {
    uint8_t *der;                  /* the ContentInfo DER as received (PEM decoded) */
    size_t der_len;
    CMS_ContentInfo *cms;
    STACK_OF(X509) *certs;         /* every certificate the package carries */
    uint8_t *content;              /* the eContent: KeyPairContainers DER */
    size_t content_len;
    skip_container *keys;
    size_t nkeys;
    int aes_bits;                  /* shared by all containers */
    const ASN1_OCTET_STRING *keyid; /* the SignerInfo's subjectKeyIdentifier */
    X509 *signer;                  /* after verify: the ephemeral key's certificate */
} skip_package;

/* Decodes a package, DER or PEM ("CMS" or "PKCS7"), down to its containers; checks the
 * structure (one SignerInfo identified by key identifier, an encapsulated content that is
 * KeyPairContainers, supported ciphers and key types) but not trust or signature. */
int skip_package_parse(const uint8_t *in, size_t n, skip_package **out, char *err, size_t errlen);
void skip_package_free(skip_package *p);

/* Decodes KeyPairContainers DER (strict DER, nothing after it). The containers point into
 * `der`, which must outlive them; free them with skip_containers_free. */
int skip_containers_parse(const uint8_t *der, size_t n, skip_container **out, size_t *count, char *err,
                          size_t errlen);
void skip_containers_free(skip_container *c, size_t count);

/* Trust anchors: every certificate of a PEM file (at least one). */
X509_STORE *skip_anchors_load(const char *path, char *err, size_t errlen);

/* Trust anchors from DER certificates (what a request stores in the device); NULL with a
 * message if one is not DER X.509 or there are none. */
X509_STORE *skip_anchors_from_der(const uint8_t *const *der, const size_t *len, size_t n, char *err,
                                  size_t errlen);

/* Verifies every certificate of the package to the anchors, finds the signer by its subject
 * key identifier, checks it may sign packages (skip_signer_purpose), verifies the
 * signature, and gives each container its certificate and verified path. */
int skip_package_verify(skip_package *p, X509_STORE *anchors, char *err, size_t errlen);

/* The purpose of a package signer's certificate: an end entity (no cA), keyUsage present
 * with digitalSignature, extendedKeyUsage present with SKIP_SIGNER_EKU_OID. */
int skip_signer_purpose(X509 *x, char *err, size_t errlen);

/* The purpose of a factory certificate: an end entity (no cA) that is not also a package
 * signer (no SKIP_SIGNER_EKU_OID), so neither certificate can stand in for the other. */
int skip_factory_purpose(X509 *x, char *err, size_t errlen);

/* After verify: the certificate of the package that certifies the factory key `pub` and
 * is neither the signer's nor a container's; NULL if there is none. */
X509 *skip_package_factory_cert(const skip_package *p, EVP_PKEY *pub);

/* 1 for the key types SKIP allows: EC on brainpoolP256r1/P320r1/P384r1/P512r1,
 * secp256r1/384r1/521r1, and (if allow_ed25519) Ed25519. */
int skip_key_supported(EVP_PKEY *key, int allow_ed25519);

/* The OpenSSL group name of an EC key into buf, or "" for other keys. */
const char *skip_curve_of(EVP_PKEY *key, char *buf, size_t n);

#endif
