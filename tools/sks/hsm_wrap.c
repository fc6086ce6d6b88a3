/*
 * sks hsm wrap: on the host, no card. Wraps a private key under the DKEK of a SmartCard-HSM,
 * made from its DKEK share files, into the file `sc-hsm-tool --wrap-key` writes, so that
 * `sc-hsm-tool --unwrap-key` (or sks) imports it into any card holding that DKEK
 * (docs/smartcard-hsm-keymgmt.md).
 */
#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "../../schsm/keymgmt_formats.h"
#include "../../schsm/mgmt.h"

static const char WRAP_USAGE[] =
    "usage: sks hsm wrap --dkek-share FILE [--dkek-share FILE]... --key KEY.pem [--cert CERT.pem]\n"
    "                    [--label NAME] [--algorithms HEX] [--passwords FILE | --pwd-shares FILE]\n"
    "                    --out FILE\n"
    "  On the host, no card: wraps a private key under the DKEK that the share files make (the\n"
    "  XOR of the shares) and writes it as `sc-hsm-tool --wrap-key` does, for\n"
    "  `sc-hsm-tool --unwrap-key` on any SmartCard-HSM holding that DKEK. Prints the DKEK's key\n"
    "  check value (KCV), which such a card reports too.\n"
    "  --dkek-share FILE   a DKEK share file (sc-hsm-tool --create-dkek-share); once per share\n"
    "  --key KEY.pem       the private key, PEM: EC on P-256, P-384, P-521, brainpoolP256r1,\n"
    "                      brainpoolP320r1, brainpoolP384r1, brainpoolP512r1; RSA 2048 to 4096 bits\n"
    "  --cert CERT.pem     its certificate (of this key), stored beside the key in the file\n"
    "  --label NAME        the key's label: the file then holds a key description (PrKD) as the\n"
    "                      card keeps one, so that OpenSC shows the key after sc-hsm-tool\n"
    "                      --unwrap-key (default with --cert: the certificate's common name;\n"
    "                      without --cert and --label: the key blob alone)\n"
    "  --algorithms HEX    the key's allowed algorithms on the card (e.g. 70: ECDSA only; default:\n"
    "                      none stored, every algorithm of its type)\n"
    "  --passwords FILE    the shares' passwords, one line each in the order of --dkek-share;\n"
    "                      \"-\" reads standard input. Without it each password is asked on the\n"
    "                      terminal, without echo.\n"
    "  --pwd-shares FILE   the password is n-of-m split (sc-hsm-tool --pwd-shares-threshold):\n"
    "                      FILE holds the custodians' shares as sc-hsm-tool prints them (the\n"
    "                      \"Prime\", \"Share ID\" and \"Share value\" lines), blocks separated by\n"
    "                      blank lines; \"-\" reads standard input. Applies to every share file.\n"
    "  --out FILE          the wrap file to write (refused if it exists)\n"
    "  Opening a share takes several seconds (10,000,000 hash rounds, as sc-hsm-tool).\n";

typedef struct {
    cli_list shares;
    const char *key, *cert, *label, *algorithms, *passwords, *pwd_shares, *out;
} wrap_args;

/* The password of share i: the next line of the passwords file, else asked on the terminal. */
static int share_password(FILE *pwfile, const char *share, char *buf, size_t size)
{
    char prompt[512];
    if (pwfile) {
        if (!fgets(buf, (int)size, pwfile)) {
            cli_error("hsm wrap: --passwords: no line for %s", share);
            return 0;
        }
        buf[strcspn(buf, "\r\n")] = 0;
        return 1;
    }
    snprintf(prompt, sizeof prompt, "sks hsm wrap: password of %s: ", share);
    if (!cli_ask_secret(prompt, 0, buf, size)) {
        cli_error("hsm wrap: no password for %s (no terminal: give --passwords FILE)", share);
        return 0;
    }
    return 1;
}

/* dkek = XOR of every share, each decrypted with its password. */
static int load_dkek(const wrap_args *a, uint8_t dkek[SCHSM_DKEK_LEN])
{
    FILE *pwfile = NULL;
    char pw[CLI_SECRET_MAX] = "";
    uint8_t share[SCHSM_DKEK_LEN];
    int ok = 1;

    if (a->passwords && !(pwfile = strcmp(a->passwords, "-") == 0 ? stdin : fopen(a->passwords, "r"))) {
        cli_error("hsm wrap: cannot open %s: %s", a->passwords, strerror(errno));
        return 0;
    }
    uint8_t split_pwd[SCHSM_PWD_LEN];
    if (a->pwd_shares && !cli_hsm_password_from_shares("hsm wrap", a->pwd_shares, split_pwd))
        return 0;
    memset(dkek, 0, SCHSM_DKEK_LEN);
    for (size_t i = 0; ok && i < a->shares.count; i++) {
        const char *path = a->shares.items[i];
        /* an n-of-m password is 8 raw bytes (zeros included), a typed one is a string */
        const uint8_t *pwbytes = a->pwd_shares ? split_pwd : (const uint8_t *)pw;
        ok = (a->pwd_shares || share_password(pwfile, path, pw, sizeof pw)) &&
             cli_hsm_open_share("hsm wrap", path, pwbytes, a->pwd_shares ? SCHSM_PWD_LEN : strlen(pw), share);
        if (ok)
            schsm_dkek_add_share(dkek, share);
        OPENSSL_cleanse(pw, sizeof pw);
        OPENSSL_cleanse(share, sizeof share);
    }
    if (pwfile && pwfile != stdin)
        fclose(pwfile);
    OPENSSL_cleanse(split_pwd, sizeof split_pwd);
    return ok;
}

static EVP_PKEY *load_key(const char *path)
{
    FILE *f = fopen(path, "r");
    EVP_PKEY *k = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
    if (f)
        fclose(f);
    if (!k)
        cli_error("hsm wrap: %s: not a PEM private key", path);
    return k;
}

/* The certificate of key (*x: the caller's to free), or 1 with none when no path is given. */
static int load_cert(const char *path, EVP_PKEY *key, X509 **x)
{
    *x = NULL;
    if (!path)
        return 1;
    FILE *f = fopen(path, "r");
    *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
    if (f)
        fclose(f);
    if (!*x) {
        cli_error("hsm wrap: %s: not a PEM certificate", path);
        return 0;
    }
    if (X509_check_private_key(*x, key) != 1) {
        cli_error("hsm wrap: %s: the certificate is not of the key given with --key", path);
        return 0;
    }
    return 1;
}

/* The label of the key description: --label, else the certificate's common name. */
static int prkd_label(const char *given, X509 *x, char *out, size_t size)
{
    if (given) {
        if (strlen(given) == 0 || strlen(given) >= size) {
            cli_error("hsm wrap: --label: 1 to %zu characters", size - 1);
            return 0;
        }
        snprintf(out, size, "%s", given);
        return 1;
    }
    if (X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, out, (int)size) > 0)
        return 1;
    cli_error("hsm wrap: the certificate has no common name: give --label");
    return 0;
}

/* The PKCS#15 private key description the card keeps beside a key (C4<kid>) and sc-hsm-tool's
 * file carries between the blob and the certificate: sc-hsm-tool reads the file by position, so
 * a certificate can only come after one. Its key reference is 0: the card's is not known here,
 * and OpenSC and sks hsm restore take the one the key is unwrapped into. */
static int build_prkd(EVP_PKEY *key, const char *label, sks_buf *out)
{
    schsm_keyspec ks = {0};
    uint8_t id[20];
    ks.is_rsa = EVP_PKEY_is_a(key, "RSA");
    if (!schsm_key_id(key, id) ||
        !schsm_prkd_encode(&ks, label, strlen(label), id, sizeof id, 0, schsm_key_bits(key), out) || out->failed) {
        cli_error("hsm wrap: cannot describe the key (PrKD)");
        return 0;
    }
    return 1;
}

/* The PrKD (empty without --cert and --label) and the certificate as DER, for the file. */
static int describe_key(const wrap_args *a, EVP_PKEY *key, sks_buf *prkd, uint8_t **cert, int *certlen)
{
    char label[65];
    X509 *x = NULL;
    int ok = load_cert(a->cert, key, &x);
    *cert = NULL, *certlen = 0;
    if (ok && x && (*certlen = i2d_X509(x, cert)) <= 0) {
        cli_error("hsm wrap: %s: cannot encode the certificate", a->cert);
        ok = 0;
    }
    if (ok && (x || a->label))
        ok = prkd_label(a->label, x, label, sizeof label) && build_prkd(key, label, prkd);
    X509_free(x);
    return ok;
}

static int parse_algorithms(const char *hex, uint8_t *out, size_t *n)
{
    size_t len = hex ? strlen(hex) : 0;
    *n = 0;
    if (len % 2 || len / 2 > SCHSM_MAX_ALGORITHMS) {
        cli_error("hsm wrap: --algorithms: up to %d bytes in hex, e.g. 70 or 7092", SCHSM_MAX_ALGORITHMS);
        return 0;
    }
    for (size_t i = 0; i < len / 2; i++) {
        unsigned v;
        if (!isxdigit((unsigned char)hex[2 * i]) || !isxdigit((unsigned char)hex[2 * i + 1]) ||
            sscanf(hex + 2 * i, "%2x", &v) != 1) {
            cli_error("hsm wrap: --algorithms: '%s' is not hex", hex);
            return 0;
        }
        out[(*n)++] = (uint8_t)v;
    }
    return 1;
}

static int write_new_file(const char *path, const uint8_t *b, size_t n)
{
    FILE *f = fopen(path, "wbx");
    int ok = f && fwrite(b, 1, n, f) == n;
    if (f && fclose(f) != 0)
        ok = 0;
    if (!ok)
        cli_error("hsm wrap: cannot write %s: %s", path, strerror(errno));
    return ok;
}

int cli_hsm_wrap(int argc, char **argv)
{
    wrap_args a = {0};
    const cli_opt opts[] = {
        {"--dkek-share", OPT_LIST, &a.shares}, {"--key", OPT_VALUE, &a.key},
        {"--cert", OPT_VALUE, &a.cert},        {"--label", OPT_VALUE, &a.label},
        {"--algorithms", OPT_VALUE, &a.algorithms},
        {"--passwords", OPT_VALUE, &a.passwords}, {"--pwd-shares", OPT_VALUE, &a.pwd_shares},
        {"--out", OPT_VALUE, &a.out},
    };
    int r = cli_parse_command("hsm wrap", argc, argv, 1, opts, sizeof opts / sizeof opts[0], WRAP_USAGE);
    if (r != CLI_CONTINUE)
        return r;
    if (a.shares.count == 0 || !a.key || !a.out) {
        cli_error("hsm wrap: --dkek-share, --key and --out are required (see sks hsm wrap --help)");
        return 2;
    }
    uint8_t alg[SCHSM_MAX_ALGORITHMS], dkek[SCHSM_DKEK_LEN], kcv[SCHSM_KCV_LEN], *blob = NULL, *file = NULL, *cert = NULL;
    size_t nalg = 0, bloblen = 0, filelen = 0;
    int certlen = 0, rc = 1;
    char err[256] = "";
    EVP_PKEY *key = NULL;
    sks_buf prkd;
    sks_buf_init(&prkd);
    if (a.passwords && a.pwd_shares) {
        cli_error("hsm wrap: give --passwords or --pwd-shares, not both");
        return 2;
    }
    if (!parse_algorithms(a.algorithms, alg, &nalg))
        return 2;
    if (access(a.out, F_OK) == 0) {
        cli_error("hsm wrap: %s exists already", a.out);
        return 1;
    }
    if (!(key = load_key(a.key)) || !describe_key(&a, key, &prkd, &cert, &certlen) || !load_dkek(&a, dkek))
        goto done;
    if (!schsm_wrap_key(dkek, key, alg, nalg, &blob, &bloblen, err, sizeof err) ||
        !schsm_wrap_file_build(blob, bloblen, prkd.data, prkd.len, cert, (size_t)certlen, &file, &filelen, err,
                               sizeof err)) {
        cli_error("hsm wrap: %s", err);
        goto done;
    }
    if (!write_new_file(a.out, file, filelen))
        goto done;
    schsm_dkek_kcv(dkek, kcv);
    printf("wrote %s: %s key under the DKEK with KCV ", a.out, EVP_PKEY_is_a(key, "RSA") ? "RSA" : "EC");
    for (int i = 0; i < SCHSM_KCV_LEN; i++)
        printf("%02x", kcv[i]);
    printf("\n");
    rc = 0;
done:
    OPENSSL_cleanse(dkek, sizeof dkek);
    EVP_PKEY_free(key);
    OPENSSL_free(blob);
    OPENSSL_free(file);
    OPENSSL_free(cert);
    sks_buf_free(&prkd);
    return rc;
}
