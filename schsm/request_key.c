/*
 * The public key in a key's CV request (CEkid after key generation), for keys the card holds
 * no X.509 certificate of. Apart from objects.c because the CV certificate parser
 * (keymgmt_formats.h) names its key types like the driver does.
 */
#include <openssl/err.h>

#include "keymgmt_formats.h"

EVP_PKEY *schsm_cv_request_public_key(const uint8_t *p, size_t n, int *is_rsa);

EVP_PKEY *schsm_cv_request_public_key(const uint8_t *p, size_t n, int *is_rsa)
{
    const uint8_t *q = p, *end = p + n;
    schsm_kmtlv req;
    schsm_cvc cv;
    EVP_PKEY *pub = NULL;
    char why[160];

    /* 67 { 7F21 {...}, ... }: the 7F21 leads; its domain parameters name the curve */
    if (p == NULL || n == 0 || !schsm_kmtlv_next(&q, end, &req) || req.tag != 0x67
        || !schsm_cvc_parse(req.value, req.len, &cv, NULL, why, sizeof(why))
        || !schsm_cvc_public_key(&cv, NULL, &pub, why, sizeof(why))) {
        ERR_clear_error();
        return NULL;
    }
    *is_rsa = cv.rsa_n.p != NULL;
    return pub;
}
