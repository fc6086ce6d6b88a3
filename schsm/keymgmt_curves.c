/*
 * The elliptic curves of SmartCard-HSM keys, recognised by their prime: the card's structures
 * (wrapped-key blobs, CV certificates) carry explicit domain parameters, and pico-hsm leaves the
 * coefficient a out of its blobs, so the prime is what identifies the curve.
 */
#include <string.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/obj_mac.h>

#include "keymgmt_formats.h"

static const struct {
    int nid;
    const char *name;
} known_curves[] = {
    {NID_X9_62_prime256v1, "prime256v1"}, {NID_secp384r1, "secp384r1"},
    {NID_secp521r1, "secp521r1"},         {NID_brainpoolP256r1, "brainpoolP256r1"},
    {NID_brainpoolP320r1, "brainpoolP320r1"}, {NID_brainpoolP384r1, "brainpoolP384r1"},
    {NID_brainpoolP512r1, "brainpoolP512r1"},
    /* pico-hsm's emulator signs its device certificate with secp256k1 */
    {NID_secp256k1, "secp256k1"},
};

const char *schsm_curve_by_prime(const uint8_t *p, size_t plen)
{
    while (plen > 0 && *p == 0)
        p++, plen--;
    const char *found = NULL;
    for (size_t i = 0; i < sizeof known_curves / sizeof known_curves[0] && !found; i++) {
        EC_GROUP *g = EC_GROUP_new_by_curve_name(known_curves[i].nid);
        BIGNUM *q = BN_new();
        uint8_t buf[66];
        if (g && q && EC_GROUP_get_curve(g, q, NULL, NULL, NULL) && (size_t)BN_num_bytes(q) == plen &&
            plen <= sizeof buf && BN_bn2bin(q, buf) == (int)plen && memcmp(buf, p, plen) == 0)
            found = known_curves[i].name;
        BN_free(q);
        EC_GROUP_free(g);
    }
    return found;
}

const char *schsm_curve_of_point(const uint8_t *q, size_t n)
{
    const char *found = NULL;
    int matches = 0;

    ERR_set_mark(); /* a point off a curve is the expected answer for all but one */
    for (size_t i = 0; i < sizeof known_curves / sizeof known_curves[0]; i++) {
        EC_GROUP *g = EC_GROUP_new_by_curve_name(known_curves[i].nid);
        EC_POINT *pt = g ? EC_POINT_new(g) : NULL;
        /* oct2point checks that the point lies on the curve */
        if (pt && EC_POINT_oct2point(g, pt, q, n, NULL) == 1 && !EC_POINT_is_at_infinity(g, pt)) {
            found = known_curves[i].name;
            matches++;
        }
        EC_POINT_free(pt);
        EC_GROUP_free(g);
    }
    ERR_pop_to_mark();
    return matches == 1 ? found : NULL;
}
