/*
 * ECDH on a key of the User API cache with OpenSSL's EC_KEY functions, the level at which the
 * default provider's own ECDH runs (its derive calls ECDH_compute_key). The EVP route costs
 * the device a copy of the curve's group and an EVP_PKEY for every peer, and a comparison of
 * the two groups at set-peer time: together a twentieth of a whole P-256 ECDH (bench/).
 *
 * The checks are those of the EVP route (crypto.c: ecdh_peer_parse): the peer is a plain
 * SubjectPublicKeyInfo on the key's own curve, its point uncompressed at the curve's length
 * (so never the point at infinity), and EC_POINT_oct2point refuses coordinates outside the
 * field and points not on the curve. All supported curves have cofactor 1, so that is full
 * public-key validation (SP 800-56A 5.6.2.3.3).
 */
#define OPENSSL_SUPPRESS_DEPRECATED /* EC_KEY and ECDH_compute_key, still in OpenSSL 3 */

#include "internal.h"

#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/objects.h>

/* The key as an EC_KEY, made once per cached key (OpenSSL keeps it with the EVP_PKEY). */
static EC_KEY *kept_ec_key(key_contexts *keep, EVP_PKEY *priv)
{
    if (keep->ec == NULL && !keep->ec_unusable) {
        if (EVP_PKEY_get_base_id(priv) == EVP_PKEY_EC) {
            ERR_set_mark();
            keep->ec = EVP_PKEY_get1_EC_KEY(priv);
            ERR_pop_to_mark();
        }
        keep->ec_unusable = keep->ec == NULL;
    }
    return keep->ec;
}

int ecdh_z_direct(key_contexts *keep, EVP_PKEY *priv, const uint8_t *spki, size_t n, sks_buf *z)
{
    const EC_KEY *ec = kept_ec_key(keep, priv);
    const EC_GROUP *group = ec != NULL ? EC_KEY_get0_group(ec) : NULL;
    const uint8_t *point;
    const char *curve;
    size_t point_len, start = z->len;
    EC_POINT *peer = NULL;
    uint8_t tmp[132];
    int len, r = -1;

    if (group == NULL || !ec_spki_point(spki, n, &curve, &point, &point_len)
        || EC_GROUP_get_curve_name(group) != OBJ_sn2nid(curve))
        return -1;
    ERR_set_mark();
    if ((peer = EC_POINT_new(group)) != NULL && EC_POINT_oct2point(group, peer, point, point_len, NULL) == 1) {
        len = ECDH_compute_key(tmp, sizeof(tmp), peer, ec, NULL);
        r = 0;
        if (len > 0) {
            sks_buf_put(z, tmp, (size_t)len);
            r = !z->failed;
        }
        if (!r)
            z->len = start;
    }
    ERR_pop_to_mark(); /* a refused point goes the EVP route, which reports for itself */
    OPENSSL_cleanse(tmp, sizeof(tmp));
    EC_POINT_free(peer);
    return r;
}

void ecdh_direct_free(key_contexts *keep)
{
    EC_KEY_free(keep->ec); /* OpenSSL clears the private scalar */
    keep->ec = NULL;
    keep->ec_unusable = 0;
}
