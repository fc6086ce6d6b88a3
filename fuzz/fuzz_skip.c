/*
 * libFuzzer target for the SKIP package decoder (cms/skip_package.c): every input is taken
 * as a package (DER or PEM CMS SignedData with KeyPairContainers, decoded by libtasn1) and,
 * if it decodes, verified against a fixed trust anchor and each certificate's signer and
 * factory purposes checked; and, on its own, as a bare
 * KeyPairContainers. Nothing may crash, leak or read out of bounds, whatever the bytes.
 */
#include <stdint.h>
#include <stdlib.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "../cms/skip_package.h"

static X509_STORE *anchors;

/* A self-signed P-256 anchor: no input can chain to it, so verification runs its checks
 * and fails in the certificate layer, as it does for packages from a stranger. */
static X509_STORE *make_anchors(void)
{
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();
    X509_STORE *store = X509_STORE_new();

    if (key == NULL || x == NULL || name == NULL || store == NULL
        || X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"fuzz anchor", -1, -1, 0) != 1
        || X509_set_subject_name(x, name) != 1 || X509_set_issuer_name(x, name) != 1 || X509_set_pubkey(x, key) != 1
        || X509_gmtime_adj(X509_getm_notBefore(x), 0) == NULL || X509_gmtime_adj(X509_getm_notAfter(x), 3600) == NULL
        || X509_sign(x, key, EVP_sha256()) <= 0 || X509_STORE_add_cert(store, x) != 1)
        abort();
    EVP_PKEY_free(key);
    X509_NAME_free(name);
    X509_free(x);
    return store;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[2400];
    skip_package *p = NULL;
    skip_container *c = NULL;
    size_t n = 0;

    if (anchors == NULL)
        anchors = make_anchors();
    if (skip_package_parse(data, size, &p, err, sizeof(err))) {
        int i;
        (void)skip_package_verify(p, anchors, err, sizeof(err));
        /* No input chains to the anchor, so the purpose checks are reached directly. */
        for (i = 0; i < sk_X509_num(p->certs); i++) {
            (void)skip_signer_purpose(sk_X509_value(p->certs, i), err, sizeof(err));
            (void)skip_factory_purpose(sk_X509_value(p->certs, i), err, sizeof(err));
        }
        skip_package_free(p);
    }
    if (skip_containers_parse(data, size, &c, &n, err, sizeof(err)))
        skip_containers_free(c, n);
    return 0;
}
