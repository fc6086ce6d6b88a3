/*
 * libFuzzer target for SmartCard-HSM key management (schsm/manage.c): a fuzzed card answers
 * every APDU of hsmGenerateKeyPair, hsmInitialize, hsmStatus, hsmDeviceCertificates and
 * hsmKeyGenerationResponse, so the parsers of card answers (FCP, ENUMERATE, the CV request of
 * key generation, SIGN, chunked READ BINARY) see anything.
 *
 * Input: one byte choosing the request (byte % 3: generate, initialize, status; bit 5: extended
 * length; generate: bits 2-3 the algorithm, bit 7 a subject; initialize: bit 6 force; status:
 * bit 7 hsmDeviceCertificates instead, else bit 6 hsmKeyGenerationResponse, else bit 4
 * hsmKeyDomainStatus), then
 * the card's answers, each as a 2-byte big-endian length, the data and a 2-byte status word.
 * When the input runs out the link fails. Every reply must be a status byte and, on errors,
 * a message.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/x509.h>

#include "../schsm/manage.h"

#define URI(x) "https://webpki.github.io/sks/algorithm#" x

typedef struct {
    const uint8_t *p;
    size_t n;
} card_script;

static int scripted_transmit(schsm_io *io, const uint8_t *apdu, size_t n, sks_buf *resp, unsigned *sw, char *err,
                             size_t errlen)
{
    card_script *s = io->ctx;
    size_t len;

    (void)apdu;
    (void)n;
    (void)err;
    (void)errlen;
    if (s->n < 2)
        return 0;
    len = (size_t)s->p[0] << 8 | s->p[1];
    if (len + 4 > s->n)
        return 0;
    sks_buf_reset(resp);
    sks_buf_put(resp, s->p + 2, len);
    *sw = (unsigned)s->p[2 + len] << 8 | s->p[3 + len];
    s->p += len + 4;
    s->n -= len + 4;
    return 1;
}

/* 212, or one of the DKEK methods 213-217 (schsm/mgmt_dkek.c) by which. */
static void add_dkek_request(unsigned which, sks_buf *req)
{
    /* a PrKD as OpenSC writes it, and a blob header naming an EC key (its KCV is what the
     * fuzzed card's status answer must match for UNWRAP KEY to be sent) */
    static const uint8_t PRKD[] = { 0xA0, 0x15, 0x30, 0x05, 0x0C, 0x03, 'k', 'e', 'y', 0x30, 0x08, 0x04,
                                    0x01, 0x01, 0x03, 0x01, 0x00, 0x02, 0x01, 0x03, 0xA1, 0x02, 0x30, 0x00 };
    uint8_t blob[64], share[32];

    memset(blob, 0, sizeof(blob));
    blob[8] = 12;
    memset(share, 0x5A, sizeof(share));
    switch (which) {
    case 1:
        sks_buf_byte(req, 213);
        sks_buf_array(req, "648219", 6);
        sks_buf_byte(req, 0);
        sks_buf_array(req, share, sizeof(share));
        break;
    case 2:
        sks_buf_byte(req, 214);
        sks_buf_array(req, "", 0);
        sks_buf_byte(req, 0);
        break;
    case 3:
        sks_buf_byte(req, 215);
        sks_buf_array(req, "648219", 6);
        sks_buf_uint(req, 3);
        break;
    case 4:
        sks_buf_byte(req, 216);
        sks_buf_array(req, "648219", 6);
        sks_buf_array(req, blob, sizeof(blob));
        sks_buf_array(req, PRKD, sizeof(PRKD));
        sks_buf_array(req, "", 0);
        sks_buf_string(req, "");
        sks_buf_array(req, "", 0); /* subjectDER: CN=<label> */
        sks_buf_uint(req, 365);
        break;
    case 5:
        sks_buf_byte(req, 217);
        sks_buf_ushort(req, 40);
        break;
    default:
        sks_buf_byte(req, 212);
        break;
    }
}

static void build_request(uint8_t choice, sks_buf *req)
{
    static const char *const URIS[] = { URI("ec.nist.p256"), URI("ec.nist.p521"), URI("ec.brainpool.p320r1"),
                                        URI("rsa2048") };
    X509_NAME *name;
    unsigned char *der = NULL;
    int len;

    switch (choice % 3) {
    case 0:
        sks_buf_byte(req, 210);
        sks_buf_array(req, "648219", 6);
        sks_buf_string(req, "key");
        sks_buf_string(req, URIS[(choice >> 2) % 4]);
        name = X509_NAME_new();
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"fuzz", -1, -1, 0);
        len = (choice & 0x80) ? i2d_X509_NAME(name, &der) : 0;
        sks_buf_array(req, der, len > 0 ? (size_t)len : 0);
        sks_buf_uint(req, 30);
        OPENSSL_free(der);
        X509_NAME_free(name);
        break;
    case 1:
        sks_buf_byte(req, 211);
        sks_buf_array(req, "3537363231383830", 16);
        sks_buf_array(req, "648219", 6);
        sks_buf_ushort(req, 1);
        sks_buf_byte(req, 3);
        sks_buf_ushort(req, (choice & 0x80) ? 2 : 0xFFFF);
        sks_buf_byte(req, 0);
        sks_buf_bool(req, (choice & 0x40) != 0);
        break;
    default:
        /* 220/221 read files in chunks: the card's lengths and status words drive the loop */
        if (choice & 0x80) {
            sks_buf_byte(req, 220);
        } else if (choice & 0x40) {
            sks_buf_byte(req, 221);
            sks_buf_uint(req, 1);
        } else if (choice & 0x10) {
            sks_buf_byte(req, 222); /* MANAGE KEY DOMAIN status of every domain */
            sks_buf_array(req, NULL, 0);
        } else {
            add_dkek_request((choice >> 2) & 7, req);
        }
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    card_script script;
    schsm_io io;
    sks_buf req, reply;
    char err[256];

    if (size < 1)
        return 0;
    script.p = data + 1;
    script.n = size - 1;
    memset(&io, 0, sizeof(io));
    io.transmit = scripted_transmit;
    io.extended = (data[0] & 0x20) != 0;
    io.max_command_data = io.extended ? 1223 : 255;
    io.reader = "fuzz";
    io.ctx = &script;
    sks_buf_init(&req);
    sks_buf_init(&reply);
    build_request(data[0], &req);
    if (schsm_manage_call(&io, req.data, req.len, &reply, err, sizeof(err)) && (reply.len == 0 || reply.failed))
        abort();
    sks_buf_free(&req);
    sks_buf_free(&reply);
    return 0;
}
