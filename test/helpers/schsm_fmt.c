/*
 * A command-line front to the SmartCard-HSM key-management formats (schsm/keymgmt_formats.h) for
 * test/python/test_schsm_formats.py, which checks them against independent implementations
 * (openssl enc, python3-cryptography). Test-only: it writes private keys unencrypted.
 *
 *   schsm_fmt wrap DKEKHEX KEY.pem OUT [ALGHEX]
 *   schsm_fmt unwrap DKEKHEX BLOB OUT.pem            prints "type T algorithms HEX"
 *   schsm_fmt share-encrypt ITER PASSWORD SHAREHEX OUT   (ITER 0 = sc-hsm-tool's count)
 *   schsm_fmt share-decrypt ITER PASSWORD FILE       prints the share in hex
 *   schsm_fmt pwd-split T M                          prints "password HEX", then the shares
 *   schsm_fmt pwd-combine < shares                   shares separated by blank lines
 *   schsm_fmt chain DEVAUT [ROOT...]                 exit 0 verified, 2 unknown root, 1 invalid
 *   schsm_fmt request REQ DEVAUT [ROOT...]           chain, then the request's outer and inner signatures
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/pem.h>

#include "schsm/keymgmt_formats.h"

static uint8_t *read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(1);
    }
    uint8_t *buf = malloc(1 << 20);
    *n = fread(buf, 1, 1 << 20, f);
    fclose(f);
    return buf;
}

static void write_file(const char *path, const uint8_t *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(b, 1, n, f) != n || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

static size_t from_hex(const char *h, uint8_t *out, size_t max)
{
    size_t n = strlen(h) / 2;
    if (n > max || strlen(h) % 2) {
        fprintf(stderr, "bad hex\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++)
        sscanf(h + 2 * i, "%2hhx", &out[i]);
    return n;
}

static void print_hex(const uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        printf("%02x", b[i]);
    printf("\n");
}

static int die(const char *err)
{
    fprintf(stderr, "%s\n", err);
    return 1;
}

static void progress(void *arg, int finished)
{
    (void)arg;
    fprintf(stderr, finished ? "derived\n" : "deriving the key from the password...\n");
}

static int cmd_wrap(int argc, char **argv)
{
    uint8_t dkek[32], alg[16], *blob = NULL;
    size_t n = 0, nalg = argc > 5 ? from_hex(argv[5], alg, sizeof alg) : 0;
    char err[256] = "";
    from_hex(argv[2], dkek, 32);
    FILE *f = fopen(argv[3], "r");
    EVP_PKEY *k = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
    if (f)
        fclose(f);
    if (!k)
        return die("cannot read the key");
    if (!schsm_wrap_key(dkek, k, alg, nalg, &blob, &n, err, sizeof err))
        return die(err);
    write_file(argv[4], blob, n);
    OPENSSL_free(blob);
    EVP_PKEY_free(k);
    return 0;
}

static int cmd_unwrap(char **argv)
{
    uint8_t dkek[32];
    size_t n;
    char err[256] = "";
    schsm_unwrapped u;
    from_hex(argv[2], dkek, 32);
    uint8_t *blob = read_file(argv[3], &n);
    if (!schsm_unwrap_key(dkek, blob, n, &u, err, sizeof err))
        return die(err);
    printf("type %d algorithms ", u.type);
    print_hex(u.algorithms, u.nalgorithms);
    FILE *f = fopen(argv[4], "w");
    if (u.pkey)
        PEM_write_PrivateKey(f, u.pkey, NULL, NULL, 0, NULL, NULL);
    else
        for (size_t i = 0; i < u.aeslen; i++)
            fprintf(f, "%02x", u.aes[i]);
    fclose(f);
    schsm_unwrapped_clear(&u);
    free(blob);
    return 0;
}

static int cmd_share(int encrypt, char **argv)
{
    unsigned long iter = strtoul(argv[2], NULL, 10);
    const uint8_t *pw = (const uint8_t *)argv[3];
    uint8_t share[32], file[SCHSM_SHARE_FILE_LEN];
    char err[256] = "";
    if (encrypt) {
        from_hex(argv[4], share, 32);
        if (!schsm_share_encrypt(share, pw, strlen(argv[3]), NULL, iter, progress, NULL, file, err, sizeof err))
            return die(err);
        write_file(argv[5], file, sizeof file);
        return 0;
    }
    size_t n;
    uint8_t *in = read_file(argv[4], &n);
    if (!schsm_share_decrypt(in, n, pw, strlen(argv[3]), iter, progress, NULL, share, err, sizeof err))
        return die(err);
    print_hex(share, 32);
    free(in);
    return 0;
}

static int cmd_pwd_split(char **argv)
{
    uint8_t pwd[8];
    unsigned t = (unsigned)atoi(argv[2]), m = (unsigned)atoi(argv[3]);
    schsm_pwd_share *sh = calloc(m ? m : 1, sizeof *sh);
    char err[256] = "", text[SCHSM_PWD_SHARE_TEXT_LEN];
    if (!schsm_pwd_random(pwd, err, sizeof err) || !schsm_pwd_split(pwd, t, m, sh, err, sizeof err))
        return die(err);
    printf("password ");
    print_hex(pwd, 8);
    for (unsigned i = 0; i < m; i++) {
        schsm_pwd_share_format(&sh[i], text, sizeof text);
        printf("\n%s", text);
    }
    free(sh);
    return 0;
}

static int cmd_pwd_combine(void)
{
    static char in[65536];
    size_t n = fread(in, 1, sizeof in - 1, stdin), count = 0;
    in[n] = 0;
    schsm_pwd_share sh[SCHSM_PWD_MAX_SHARES];
    char err[256] = "";
    for (char *block = in; block && *block && count < SCHSM_PWD_MAX_SHARES;) {
        char *next = strstr(block, "\n\n");
        if (next)
            *next = 0, next += 2;
        if (strspn(block, " \n") != strlen(block) && !schsm_pwd_share_parse(block, &sh[count++], err, sizeof err))
            return die(err);
        block = next;
    }
    uint8_t pwd[8];
    if (!schsm_pwd_combine(sh, count, pwd, err, sizeof err))
        return die(err);
    print_hex(pwd, 8);
    return 0;
}

/* roots: files named on the command line (the name is the file's CHR), else the built-in ones */
static const schsm_root *load_roots(int argc, char **argv, int first, size_t *n)
{
    if (argc <= first)
        return schsm_builtin_roots(n);
    schsm_root *r = calloc((size_t)(argc - first), sizeof *r);
    for (int i = first; i < argc; i++) {
        schsm_cvc c;
        char err[256];
        r[i - first].cert = read_file(argv[i], &r[i - first].len);
        if (!schsm_cvc_parse(r[i - first].cert, r[i - first].len, &c, NULL, err, sizeof err)) {
            fprintf(stderr, "%s: %s\n", argv[i], err);
            exit(1);
        }
        r[i - first].name = strdup(c.chr);
    }
    *n = (size_t)(argc - first);
    return r;
}

static int chain(const uint8_t *devaut, size_t n, const schsm_root *roots, size_t nroots, EVP_PKEY **key)
{
    char err[256] = "", chr[SCHSM_CVC_REF_MAX + 1] = "";
    schsm_chain_status st = schsm_cvc_verify_chain(devaut, n, roots, nroots, key, chr, err, sizeof err);
    if (st == SCHSM_CHAIN_VERIFIED)
        printf("verified %s\n", chr);
    else
        printf("%s: %s\n", st == SCHSM_CHAIN_UNKNOWN_ROOT ? "unknown-root" : "invalid", err);
    return st == SCHSM_CHAIN_VERIFIED ? 0 : st == SCHSM_CHAIN_UNKNOWN_ROOT ? 2 : 1;
}

static int cmd_request(int argc, char **argv)
{
    size_t n, rn, nroots;
    uint8_t *req = read_file(argv[2], &rn), *devaut = read_file(argv[3], &n);
    const schsm_root *roots = load_roots(argc, argv, 4, &nroots);
    EVP_PKEY *device = NULL, *self = NULL;
    int rc = chain(devaut, n, roots, nroots, &device);
    if (rc)
        return rc;
    schsm_cvc r, dev;
    char err[256] = "";
    if (!schsm_cvc_parse(req, rn, &r, NULL, err, sizeof err) || !schsm_cvc_parse(devaut, n, &dev, NULL, err, sizeof err))
        return die(err);
    if (!schsm_cvc_verify_outer(&r, device, &dev.key_oid, err, sizeof err))
        return die(err);
    if (!schsm_cvc_public_key(&r, NULL, &self, err, sizeof err) || !schsm_cvc_verify(&r, self, &r.key_oid, err, sizeof err))
        return die(err);
    printf("request %s: outer signature by %s and inner signature verified\n", r.chr, r.outer_car);
    EVP_PKEY_free(device);
    EVP_PKEY_free(self);
    return 0;
}

int main(int argc, char **argv)
{
    const char *c = argc > 1 ? argv[1] : "";
    if (!strcmp(c, "wrap") && argc >= 5)
        return cmd_wrap(argc, argv);
    if (!strcmp(c, "unwrap") && argc == 5)
        return cmd_unwrap(argv);
    if (!strcmp(c, "share-encrypt") && argc == 6)
        return cmd_share(1, argv);
    if (!strcmp(c, "share-decrypt") && argc == 5)
        return cmd_share(0, argv);
    if (!strcmp(c, "pwd-split") && argc == 4)
        return cmd_pwd_split(argv);
    if (!strcmp(c, "pwd-combine") && argc == 2)
        return cmd_pwd_combine();
    if (!strcmp(c, "chain") && argc >= 3) {
        size_t n, nroots;
        uint8_t *devaut = read_file(argv[2], &n);
        const schsm_root *roots = load_roots(argc, argv, 3, &nroots);
        return chain(devaut, n, roots, nroots, NULL);
    }
    if (!strcmp(c, "request") && argc >= 4)
        return cmd_request(argc, argv);
    fprintf(stderr, "usage: see the comment at the top of test/helpers/schsm_fmt.c\n");
    return 64;
}
