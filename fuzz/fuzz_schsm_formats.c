/*
 * libFuzzer target for the SmartCard-HSM key-management parsers (schsm/keymgmt_formats.h),
 * which read what cards and files from outside hand us. The first byte picks the parser:
 *
 *   0  CV certificate / authenticated request: parse, public key (own or the built-in root's
 *      curve), inner and outer signature checks with that key
 *   1  EF.C_DevAut chain against the built-in roots and against the input's own first certificate
 *   2  sc-hsm-tool wrap file
 *   3  wrapped-key blob: the input is  type ‖ 4 header fields (2-byte lengths) ‖ plaintext;
 *      the harness encrypts the plaintext and MACs the blob under a fixed DKEK, so the key
 *      decoders behind the KCV and CMAC checks see fuzzer-chosen bytes
 *   4  DKEK share file (iteration count 1)
 *   5  n-of-m share texts (blocks separated by blank lines), then their combination
 *
 * Nothing may crash, leak or read out of bounds, whatever the bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "../schsm/keymgmt_formats.h"

static const uint8_t dkek[SCHSM_DKEK_LEN] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                                             17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};

static void fuzz_cvc(const uint8_t *d, size_t n)
{
    schsm_cvc c, root;
    size_t used, nroots;
    char err[256];
    if (!schsm_cvc_parse(d, n, &c, &used, err, sizeof err))
        return;
    const schsm_root *roots = schsm_builtin_roots(&nroots);
    if (!schsm_cvc_parse(roots[0].cert, roots[0].len, &root, NULL, err, sizeof err))
        abort(); /* the built-in root must always parse */
    EVP_PKEY *k = NULL;
    if (schsm_cvc_public_key(&c, &root, &k, err, sizeof err)) {
        schsm_cvc_verify(&c, k, &c.key_oid, err, sizeof err);
        schsm_cvc_verify_outer(&c, k, &c.key_oid, err, sizeof err);
        schsm_cvc_verify_generated(&c, k, &c, err, sizeof err);
    }
    EVP_PKEY_free(k);
}

static void fuzz_chain(const uint8_t *d, size_t n)
{
    size_t nroots, used;
    char err[256], chr[SCHSM_CVC_REF_MAX + 1];
    EVP_PKEY *k = NULL;
    const schsm_root *roots = schsm_builtin_roots(&nroots);
    schsm_cvc_verify_chain(d, n, roots, nroots, &k, chr, err, sizeof err);
    EVP_PKEY_free(k);
    /* an unknown root: the device key as the chain claims it */
    schsm_cvc dev;
    k = NULL;
    schsm_cvc_device_key_unverified(d, n, &dev, &k, err, sizeof err);
    EVP_PKEY_free(k);
    /* the input's first certificate as a root of its own: reaches the DICA and device checks */
    schsm_cvc first;
    if (schsm_cvc_parse(d, n, &first, &used, err, sizeof err)) {
        schsm_root own = {first.chr, d, used};
        k = NULL;
        if (used < n)
            schsm_cvc_verify_chain(d + used, n - used, &own, 1, &k, chr, err, sizeof err);
        EVP_PKEY_free(k);
    }
}

static void fuzz_wrap_file(const uint8_t *d, size_t n)
{
    const uint8_t *b, *p, *c;
    size_t bl, pl, cl;
    char err[256];
    schsm_wrap_file_parse(d, n, &b, &bl, &p, &pl, &c, &cl, err, sizeof err);
}

static void derive(uint8_t counter, uint8_t out[32])
{
    uint8_t in[SCHSM_DKEK_LEN + 4] = {0};
    unsigned len;
    memcpy(in, dkek, SCHSM_DKEK_LEN);
    in[SCHSM_DKEK_LEN + 3] = counter;
    EVP_Digest(in, sizeof in, out, &len, EVP_sha256(), NULL);
}

/* Builds KCV ‖ header ‖ AES-CBC(plaintext, zero-padded) ‖ CMAC from the fuzzer's header and plaintext. */
static void fuzz_blob(const uint8_t *d, size_t n)
{
    size_t hdr = 1;
    for (int f = 0; f < 4; f++) {
        if (n < hdr + 2)
            return;
        hdr += 2 + ((size_t)d[hdr] << 8 | d[hdr + 1]);
        if (hdr > n)
            return;
    }
    size_t plain = n - hdr, padded = (plain + 15) / 16 * 16;
    if (padded == 0 || padded > 4096)
        return;
    size_t total = 8 + hdr + padded + 16;
    uint8_t *blob = calloc(1, total), kenc[32], kmac[32], zero_iv[16] = {0};
    schsm_dkek_kcv(dkek, blob);
    memcpy(blob + 8, d, hdr);
    memcpy(blob + 8 + hdr, d + hdr, plain);
    derive(1, kenc);
    derive(2, kmac);
    EVP_CIPHER_CTX *cx = EVP_CIPHER_CTX_new();
    int l1 = 0, l2 = 0;
    EVP_EncryptInit_ex(cx, EVP_aes_256_cbc(), NULL, kenc, zero_iv);
    EVP_CIPHER_CTX_set_padding(cx, 0);
    EVP_EncryptUpdate(cx, blob + 8 + hdr, &l1, blob + 8 + hdr, (int)padded);
    EVP_EncryptFinal_ex(cx, blob + 8 + hdr + l1, &l2);
    EVP_CIPHER_CTX_free(cx);
    EVP_MAC *m = EVP_MAC_fetch(NULL, "CMAC", NULL);
    EVP_MAC_CTX *mc = EVP_MAC_CTX_new(m);
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_CIPHER, "AES-256-CBC", 0),
                           OSSL_PARAM_construct_end()};
    size_t maclen = 0;
    EVP_MAC_init(mc, kmac, 32, params);
    EVP_MAC_update(mc, blob, total - 16);
    EVP_MAC_final(mc, blob + total - 16, &maclen, 16);
    EVP_MAC_CTX_free(mc);
    EVP_MAC_free(m);

    schsm_unwrapped u;
    char err[256];
    if (schsm_unwrap_key(dkek, blob, total, &u, err, sizeof err))
        schsm_unwrapped_clear(&u);
    /* and the raw input as a blob (fails at the KCV unless the fuzzer found it) */
    if (schsm_unwrap_key(dkek, d, n, &u, err, sizeof err))
        schsm_unwrapped_clear(&u);
    free(blob);
}

static void fuzz_share(const uint8_t *d, size_t n)
{
    uint8_t share[SCHSM_DKEK_LEN];
    char err[256];
    schsm_share_decrypt(d, n, (const uint8_t *)"pw", 2, 1, NULL, NULL, share, err, sizeof err);
}

static void fuzz_pwd(const uint8_t *d, size_t n)
{
    char *text = malloc(n + 1);
    memcpy(text, d, n);
    text[n] = 0;
    schsm_pwd_share s[3];
    size_t count = 0;
    char err[256];
    for (char *block = text; block && count < 3;) {
        char *next = strstr(block, "\n\n");
        if (next)
            *next = 0, next += 2;
        if (schsm_pwd_share_parse(block, &s[count], err, sizeof err))
            count++;
        block = next;
    }
    uint8_t pwd[SCHSM_PWD_LEN];
    schsm_pwd_combine(s, count, pwd, err, sizeof err);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const uint8_t *d = data + 1;
    size_t n = size - 1;
    switch (data[0] % 6) {
    case 0: fuzz_cvc(d, n); break;
    case 1: fuzz_chain(d, n); break;
    case 2: fuzz_wrap_file(d, n); break;
    case 3: fuzz_blob(d, n); break;
    case 4: fuzz_share(d, n); break;
    case 5: fuzz_pwd(d, n); break;
    }
    return 0;
}
