/*
 * DKEK share files as OpenSC's sc-hsm-tool writes them (docs/smartcard-hsm-keymgmt.md):
 * "Salted__" ‖ salt ‖ AES-256-CBC (PKCS#7 padding) of the 32-byte share, key and IV from
 * EVP_BytesToKey(aes-256-cbc, md5, salt, password, 10,000,000). This is `openssl enc`'s old
 * layout with a huge iteration count, which is what makes a stolen file slow to attack.
 */
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "keymgmt_formats.h"
#include "keymgmt_util.h"

static const char share_magic[8] = {'S', 'a', 'l', 't', 'e', 'd', '_', '_'};

/* key ‖ iv from the password, announcing the slow part to the caller. */
static int derive_key_iv(const uint8_t salt[8], const uint8_t *password, size_t pwlen, unsigned long iterations,
                         schsm_progress_fn *progress, void *arg, uint8_t key[32], uint8_t iv[16], char *err,
                         size_t errlen)
{
    if (iterations == 0)
        iterations = SCHSM_SHARE_ITERATIONS;
    if (iterations > 0x7fffffffUL || pwlen > 0x7fffffff)
        return schsm_km_fail(err, errlen, "share file: iteration count or password too large");
    if (progress)
        progress(arg, 0);
    int n = EVP_BytesToKey(EVP_aes_256_cbc(), EVP_md5(), salt, password, (int)pwlen, (int)iterations, key, iv);
    if (progress)
        progress(arg, 1);
    if (n != 32)
        return schsm_km_fail(err, errlen, "share file: password key derivation failed");
    return 1;
}

/* One AES-256-CBC pass with PKCS#7 padding; *outlen gets the length written. */
static int cbc_pkcs7(int encrypt, const uint8_t key[32], const uint8_t iv[16], const uint8_t *in, size_t inlen,
                     uint8_t *out, int *outlen)
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int n1 = 0, n2 = 0;
    int ok = ctx && EVP_CipherInit_ex(ctx, EVP_aes_256_cbc(), NULL, key, iv, encrypt) &&
             EVP_CipherUpdate(ctx, out, &n1, in, (int)inlen) && EVP_CipherFinal_ex(ctx, out + n1, &n2);
    EVP_CIPHER_CTX_free(ctx);
    *outlen = n1 + n2;
    return ok;
}

int schsm_share_encrypt(const uint8_t share[SCHSM_DKEK_LEN], const uint8_t *password, size_t pwlen,
                        const uint8_t *salt, unsigned long iterations, schsm_progress_fn *progress, void *arg,
                        uint8_t out[SCHSM_SHARE_FILE_LEN], char *err, size_t errlen)
{
    uint8_t key[32], iv[16];
    int n = 0, ok = 0;

    memcpy(out, share_magic, 8);
    if (salt)
        memcpy(out + 8, salt, 8);
    else if (RAND_bytes(out + 8, 8) != 1)
        return schsm_km_fail(err, errlen, "share file: no random salt");
    if (!derive_key_iv(out + 8, password, pwlen, iterations, progress, arg, key, iv, err, errlen))
        goto done;
    /* 32 bytes of share + a full block of padding = 48 bytes after the 16-byte header. */
    if (!cbc_pkcs7(1, key, iv, share, SCHSM_DKEK_LEN, out + 16, &n) || n != 48) {
        schsm_km_fail(err, errlen, "share file: encryption failed");
        goto done;
    }
    ok = 1;
done:
    OPENSSL_cleanse(key, sizeof key);
    OPENSSL_cleanse(iv, sizeof iv);
    return ok;
}

int schsm_share_decrypt(const uint8_t *file, size_t n, const uint8_t *password, size_t pwlen,
                        unsigned long iterations, schsm_progress_fn *progress, void *arg,
                        uint8_t share[SCHSM_DKEK_LEN], char *err, size_t errlen)
{
    uint8_t key[32], iv[16], plain[64];
    int len = 0, ok = 0;

    if (n < 16 || memcmp(file, share_magic, 8) != 0)
        return schsm_km_fail(err, errlen, "not a DKEK share file (no \"Salted__\" header)");
    if (n != SCHSM_SHARE_FILE_LEN)
        return schsm_km_fail(err, errlen, "not a DKEK share file: %zu bytes, a share file has %d%s", n,
                          SCHSM_SHARE_FILE_LEN, n < SCHSM_SHARE_FILE_LEN ? " (truncated?)" : "");
    if (!derive_key_iv(file + 8, password, pwlen, iterations, progress, arg, key, iv, err, errlen))
        goto done;
    /* A wrong password gives garbage whose last block almost never carries valid PKCS#7
     * padding for exactly 32 bytes of share: that is the only password check the format has. */
    if (!cbc_pkcs7(0, key, iv, file + 16, SCHSM_SHARE_FILE_LEN - 16, plain, &len) || len != SCHSM_DKEK_LEN) {
        schsm_km_fail(err, errlen, "wrong password or not a share file");
        goto done;
    }
    memcpy(share, plain, SCHSM_DKEK_LEN);
    ok = 1;
done:
    OPENSSL_cleanse(key, sizeof key);
    OPENSSL_cleanse(iv, sizeof iv);
    OPENSSL_cleanse(plain, sizeof plain);
    return ok;
}

void schsm_dkek_add_share(uint8_t dkek[SCHSM_DKEK_LEN], const uint8_t share[SCHSM_DKEK_LEN])
{
    for (size_t i = 0; i < SCHSM_DKEK_LEN; i++)
        dkek[i] ^= share[i];
}

int schsm_dkek_kcv(const uint8_t dkek[SCHSM_DKEK_LEN], uint8_t kcv[SCHSM_KCV_LEN])
{
    uint8_t md[32];
    unsigned mdlen = 0;
    if (!EVP_Digest(dkek, SCHSM_DKEK_LEN, md, &mdlen, EVP_sha256(), NULL))
        return 0;
    memcpy(kcv, md, SCHSM_KCV_LEN);
    OPENSSL_cleanse(md, sizeof md);
    return 1;
}
