#include "algorithms.h"

#include <string.h>

#include <openssl/rsa.h>

#define P SKS_ALG_PREFIX
#define XMLDSIG_MORE "http://www.w3.org/2001/04/xmldsig-more#"
#define XMLENC "http://www.w3.org/2001/04/xmlenc#"

static const sks_algorithm ALGORITHMS[] = {
    /* Special algorithms */
    { .uri = P "session.1", .cls = ALG_SPECIAL },
    { .uri = P "key.1", .cls = ALG_SPECIAL },
    { .uri = P "none", .cls = ALG_SPECIAL },

    /* Asymmetric key generation */
    { .uri = P "rsa1024", .cls = ALG_KEY_GEN, .key = KEYTYPE_RSA, .rsa_bits = 1024 },
    { .uri = P "rsa2048", .cls = ALG_KEY_GEN, .key = KEYTYPE_RSA, .rsa_bits = 2048 },
    { .uri = P "rsa3072", .cls = ALG_KEY_GEN, .key = KEYTYPE_RSA, .rsa_bits = 3072 },
    { .uri = P "rsa4096", .cls = ALG_KEY_GEN, .key = KEYTYPE_RSA, .rsa_bits = 4096 },
    { .uri = P "rsa1024.exp", .cls = ALG_KEY_GEN, .key = KEYTYPE_RSA, .rsa_bits = 1024, .rsa_exp_param = 1 },
    { .uri = P "rsa2048.exp", .cls = ALG_KEY_GEN, .key = KEYTYPE_RSA, .rsa_bits = 2048, .rsa_exp_param = 1 },
    { .uri = P "rsa3072.exp", .cls = ALG_KEY_GEN, .key = KEYTYPE_RSA, .rsa_bits = 3072, .rsa_exp_param = 1 },
    { .uri = P "rsa4096.exp", .cls = ALG_KEY_GEN, .key = KEYTYPE_RSA, .rsa_bits = 4096, .rsa_exp_param = 1 },
    { .uri = P "ec.nist.p256", .cls = ALG_KEY_GEN, .key = KEYTYPE_EC, .curve = "prime256v1" },
    { .uri = P "ec.nist.p384", .cls = ALG_KEY_GEN, .key = KEYTYPE_EC, .curve = "secp384r1" },
    { .uri = P "ec.nist.p521", .cls = ALG_KEY_GEN, .key = KEYTYPE_EC, .curve = "secp521r1" },
    { .uri = P "ec.brainpool.p256r1", .cls = ALG_KEY_GEN, .key = KEYTYPE_EC, .curve = "brainpoolP256r1" },
    { .uri = P "ec.brainpool.p320r1", .cls = ALG_KEY_GEN, .key = KEYTYPE_EC, .curve = "brainpoolP320r1" },
    { .uri = P "ec.brainpool.p384r1", .cls = ALG_KEY_GEN, .key = KEYTYPE_EC, .curve = "brainpoolP384r1" },
    { .uri = P "ec.brainpool.p512r1", .cls = ALG_KEY_GEN, .key = KEYTYPE_EC, .curve = "brainpoolP512r1" },
    /* Ed25519: one URI names both the key algorithm and the signature algorithm. */
    { .uri = P "ed25519", .cls = ALG_KEY_GEN, .key = KEYTYPE_ED25519 },

    /* Asymmetric signatures: data is the hash (or, for Ed25519, the message) */
    { .uri = XMLDSIG_MORE "rsa-sha256", .cls = ALG_SIGN, .key = KEYTYPE_RSA, .md = "SHA256", .hash_len = 32 },
    { .uri = XMLDSIG_MORE "rsa-sha384", .cls = ALG_SIGN, .key = KEYTYPE_RSA, .md = "SHA384", .hash_len = 48 },
    { .uri = XMLDSIG_MORE "rsa-sha512", .cls = ALG_SIGN, .key = KEYTYPE_RSA, .md = "SHA512", .hash_len = 64 },
    { .uri = XMLDSIG_MORE "ecdsa-sha256", .cls = ALG_SIGN, .key = KEYTYPE_EC, .md = "SHA256", .hash_len = 32 },
    { .uri = XMLDSIG_MORE "ecdsa-sha384", .cls = ALG_SIGN, .key = KEYTYPE_EC, .md = "SHA384", .hash_len = 48 },
    { .uri = XMLDSIG_MORE "ecdsa-sha512", .cls = ALG_SIGN, .key = KEYTYPE_EC, .md = "SHA512", .hash_len = 64 },
    { .uri = P "rsa.pkcs1.none", .cls = ALG_SIGN, .key = KEYTYPE_RSA },
    { .uri = P "ecdsa.none", .cls = ALG_SIGN, .key = KEYTYPE_EC },
    { .uri = P "rsa.pss.sha256", .cls = ALG_SIGN, .key = KEYTYPE_RSA, .md = "SHA256", .hash_len = 32, .pss = 1 },
    { .uri = P "rsa.pss.sha384", .cls = ALG_SIGN, .key = KEYTYPE_RSA, .md = "SHA384", .hash_len = 48, .pss = 1 },
    { .uri = P "rsa.pss.sha512", .cls = ALG_SIGN, .key = KEYTYPE_RSA, .md = "SHA512", .hash_len = 64, .pss = 1 },

    /* Asymmetric decryption */
    { .uri = P "rsa.es.pkcs1_5", .cls = ALG_DECRYPT, .key = KEYTYPE_RSA, .pad = RSA_PKCS1_PADDING },
    { .uri = P "rsa.oaep.sha1", .cls = ALG_DECRYPT, .key = KEYTYPE_RSA, .pad = RSA_PKCS1_OAEP_PADDING, .md = "SHA1" },
    { .uri = P "rsa.oaep.sha256", .cls = ALG_DECRYPT, .key = KEYTYPE_RSA, .pad = RSA_PKCS1_OAEP_PADDING, .md = "SHA256" },
    /* Project addition: OAEP digest, MGF1 digest and label in "parameters" (docs/algorithms.md) */
    { .uri = P "rsa.oaep", .cls = ALG_DECRYPT, .key = KEYTYPE_RSA, .pad = RSA_PKCS1_OAEP_PADDING, .oaep_params = 1 },

    /* Key agreement */
    { .uri = P "ecdh.raw", .cls = ALG_AGREE, .key = KEYTYPE_EC },

    /* HMAC */
    { .uri = "http://www.w3.org/2000/09/xmldsig#hmac-sha1", .cls = ALG_HMAC, .md = "SHA1" },
    { .uri = XMLDSIG_MORE "hmac-sha256", .cls = ALG_HMAC, .md = "SHA256" },
    { .uri = XMLDSIG_MORE "hmac-sha384", .cls = ALG_HMAC, .md = "SHA384" },
    { .uri = XMLDSIG_MORE "hmac-sha512", .cls = ALG_HMAC, .md = "SHA512" },

    /* Symmetric encryption */
    { .uri = XMLENC "aes128-cbc", .cls = ALG_SYM_ENCRYPT, .sym = SYM_CBC_INTERNAL_IV, .sym_key_len = 16 },
    { .uri = XMLENC "aes192-cbc", .cls = ALG_SYM_ENCRYPT, .sym = SYM_CBC_INTERNAL_IV, .sym_key_len = 24 },
    { .uri = XMLENC "aes256-cbc", .cls = ALG_SYM_ENCRYPT, .sym = SYM_CBC_INTERNAL_IV, .sym_key_len = 32 },
    { .uri = P "aes.cbc", .cls = ALG_SYM_ENCRYPT, .sym = SYM_CBC_PARAM_IV },
    { .uri = P "aes.ecb.nopad", .cls = ALG_SYM_ENCRYPT, .sym = SYM_ECB_NOPAD },
};

const sks_algorithm *alg_find_n(const char *uri, size_t n)
{
    size_t i;

    for (i = 0; i < sizeof(ALGORITHMS) / sizeof(ALGORITHMS[0]); i++)
        if (strlen(ALGORITHMS[i].uri) == n && memcmp(ALGORITHMS[i].uri, uri, n) == 0)
            return &ALGORITHMS[i];
    return NULL;
}

const sks_algorithm *alg_find(const char *uri)
{
    return uri ? alg_find_n(uri, strlen(uri)) : NULL;
}

/* Ed25519 appears twice in the device's algorithm list: as key generation and signature.
 * The table has it once, as ALG_KEY_GEN; callers asking for a signature algorithm use
 * alg_is_ed25519(). */
const sks_algorithm *alg_table(size_t *count)
{
    *count = sizeof(ALGORITHMS) / sizeof(ALGORITHMS[0]);
    return ALGORITHMS;
}

const sks_algorithm *alg_for_curve(const char *curve)
{
    size_t i;

    for (i = 0; i < sizeof(ALGORITHMS) / sizeof(ALGORITHMS[0]); i++)
        if (ALGORITHMS[i].curve != NULL && strcmp(ALGORITHMS[i].curve, curve) == 0)
            return &ALGORITHMS[i];
    return NULL;
}
