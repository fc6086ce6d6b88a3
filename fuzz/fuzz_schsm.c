/*
 * libFuzzer target for the SmartCard-HSM driver (schsm/): a fuzzed card. Every command APDU
 * the driver sends is answered from the input, so the driver's parsers of card output (FCP,
 * ENUMERATE, PrKD and CD descriptions, certificates, signatures, decryption and ECDH results,
 * status words) see whatever a broken or hostile card could send. The requests come through
 * the typed client (client/sks_client.h), as the provider sends them: getDeviceInfo,
 * enumerateKeys, getKeyAttributes, getKeyProtectionInfo, signatures (ECDSA, RSA PKCS#1, PSS),
 * decryption (PKCS#1, OAEP), keyAgreement, then the key management methods the driver serves
 * (changePin, unlockKey with the SO-PIN, deleteKey last, as it drops the key list).
 *
 * Input: one byte of options (bit 0: extended length; bits 1-7: the key handle asked for),
 * then the card's answers, each: 2-byte big-endian length (at most 9000), the data, 2 bytes of
 * status word. When the input runs out the link fails, as if the card were pulled.
 * The driver must never read outside what it was given (ASan) and every reply must be a
 * well-formed SKS reply (the client decodes it or reports it malformed, never crashes).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../client/sks_client.h"
#include "../schsm/schsm.h"

typedef struct {
    const uint8_t *p;
    size_t n;
    schsm_card *card;
    schsm_io io;
} fuzz_card;

static int card_answer(schsm_io *io, const uint8_t *apdu, size_t n, sks_buf *resp, unsigned *sw, char *err,
                       size_t errlen)
{
    fuzz_card *f = io->ctx;
    size_t len;

    (void)apdu;
    /* the driver's APDUs are well formed: header and a length that fits */
    if (n < 4 || n > 4 + 3 + 1024 + 2)
        abort();
    sks_buf_reset(resp);
    if (f->n < 2) {
        strncpy(err, "fuzzed card pulled", errlen - 1);
        err[errlen - 1] = '\0';
        return 0;
    }
    len = ((size_t)f->p[0] << 8 | f->p[1]) % 9001;
    f->p += 2;
    f->n -= 2;
    if (len > f->n)
        len = f->n;
    sks_buf_put(resp, f->p, len);
    f->p += len;
    f->n -= len;
    if (f->n < 2) {
        *sw = 0x9000;
        f->n = 0;
    } else {
        *sw = (unsigned)f->p[0] << 8 | f->p[1];
        f->p += 2;
        f->n -= 2;
    }
    return 1;
}

static int fuzz_call(sks_transport *t, const uint8_t *req, size_t n, sks_buf *reply, char *err, size_t errlen);

typedef struct {
    sks_transport t;
    fuzz_card *card;
} fuzz_transport;

static int fuzz_call(sks_transport *t, const uint8_t *req, size_t n, sks_buf *reply, char *err, size_t errlen)
{
    fuzz_card *f = ((fuzz_transport *)t)->card;
    int ok = schsm_card_call(f->card, &f->io, req, n, reply, err, errlen);

    /* an answer is a status byte, then for errors one string of at most 2000 bytes */
    if (ok && (reply->failed || reply->len == 0 || reply->data[0] > 0x0D))
        abort();
    if (ok && reply->data[0] != 0
        && (reply->len < 3 || (size_t)(reply->data[1] << 8 | reply->data[2]) != reply->len - 3
            || reply->len - 3 > 2000))
        abort();
    return ok;
}

/* A P-256 public key (SubjectPublicKeyInfo) for keyAgreement: the curve's generator. */
static const uint8_t PEER_SPKI[] = {
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48,
    0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00, 0x04, 0x6b, 0x17, 0xd1, 0xf2, 0xe1, 0x2c, 0x42, 0x47, 0xf8,
    0xbc, 0xe6, 0xe5, 0x63, 0xa4, 0x40, 0xf2, 0x77, 0x03, 0x7d, 0x81, 0x2d, 0xeb, 0x33, 0xa0, 0xf4, 0xa1, 0x39,
    0x45, 0xd8, 0x98, 0xc2, 0x96, 0x4f, 0xe3, 0x42, 0xe2, 0xfe, 0x1a, 0x7f, 0x9b, 0x8e, 0xe7, 0xeb, 0x4a, 0x7c,
    0x0f, 0x9e, 0x16, 0x2b, 0xce, 0x33, 0x57, 0x6b, 0x31, 0x5e, 0xce, 0xcb, 0xb6, 0x40, 0x68, 0x37, 0xbf, 0x51,
    0xf5,
};

#define ALG "https://webpki.github.io/sks/algorithm#"
#define XMLDSIG_MORE "http://www.w3.org/2001/04/xmldsig-more#"

static void sign(sks_transport *t, sks_user_args *a, const char *uri, const uint8_t *params, size_t plen, size_t n)
{
    static const uint8_t hash[64] = { 1, 2, 3 };
    sks_span d = { hash, n };
    sks_client_error e;
    sks_buf out;

    a->algorithm = uri;
    a->parameters.p = params;
    a->parameters.n = plen;
    sks_buf_init(&out);
    sks_client_sign_hashed_data(t, a, d, &out, &e);
    sks_buf_free(&out);
}

/* PIN change (VERIFY status, CHANGE REFERENCE DATA), PIN unblock (RESET RETRY COUNTER with the
 * SO-PIN), key deletion (DELETE FILE of the key and its descriptions): without them the
 * driver's answers to these APDUs were never fuzzed. */
static void manage_calls(sks_transport *t, uint32_t handle, sks_span pin)
{
    static const char SO_PIN[] = "3537363231383039";
    sks_span new_pin = { (const uint8_t *)"123456", 6 }, so = { (const uint8_t *)SO_PIN, 16 };
    sks_client_error e;

    sks_client_change_pin(t, handle, pin, new_pin, &e);
    sks_client_unlock_key(t, handle, so, &e);
    sks_client_delete_key(t, handle, pin, &e);
}

static void user_calls(sks_transport *t, uint32_t handle)
{
    static const uint8_t oaep[] = { 0, 6, 'S', 'H', 'A', '2', '5', '6', 0, 4, 'S', 'H', 'A', '1', 0, 0 };
    static const uint8_t pss[] = { 0, 20 };
    uint8_t block[512];
    sks_user_args a;
    sks_client_error e;
    sks_buf out;

    memset(block, 0x11, sizeof(block));
    memset(&a, 0, sizeof(a));
    a.key_handle = handle;
    a.authorization.p = (const uint8_t *)"648219";
    a.authorization.n = 6;
    sks_buf_init(&out);
    sign(t, &a, XMLDSIG_MORE "ecdsa-sha256", NULL, 0, 32);
    sign(t, &a, ALG "ecdsa.none", NULL, 0, 20);
    sign(t, &a, XMLDSIG_MORE "rsa-sha256", NULL, 0, 32);
    sign(t, &a, ALG "rsa.pss.sha256", NULL, 0, 32);
    sign(t, &a, ALG "rsa.pss.sha256", pss, sizeof(pss), 32);
    a.parameters.p = NULL;
    a.parameters.n = 0;
    {
        static const size_t sizes[] = { 256, 384, 512 };
        size_t i;
        for (i = 0; i < 3; i++) {
            sks_span d = { block, sizes[i] };
            block[0] = 0;
            a.algorithm = ALG "rsa.es.pkcs1_5";
            sks_buf_reset(&out);
            sks_client_asymmetric_key_decrypt(t, &a, d, &out, &e);
        }
        sks_span d = { block, 256 };
        a.algorithm = ALG "rsa.oaep";
        a.parameters.p = oaep;
        a.parameters.n = sizeof(oaep);
        sks_buf_reset(&out);
        sks_client_asymmetric_key_decrypt(t, &a, d, &out, &e);
    }
    {
        sks_span peer = { PEER_SPKI, sizeof(PEER_SPKI) };
        a.algorithm = ALG "ecdh.raw";
        a.parameters.p = NULL;
        a.parameters.n = 0;
        sks_buf_reset(&out);
        sks_client_key_agreement(t, &a, peer, &out, &e);
    }
    sks_buf_free(&out);
    manage_calls(t, handle, a.authorization);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_card f;
    fuzz_transport ft;
    sks_device_info info;
    sks_key_attributes attrs;
    sks_key_protection_info prot;
    sks_client_error e;
    uint32_t next = 0, handle;
    int i;

    if (size < 1)
        return 0;
    memset(&f, 0, sizeof(f));
    f.p = data + 1;
    f.n = size - 1;
    f.card = schsm_card_new();
    f.io.transmit = card_answer;
    f.io.extended = data[0] & 1;
    f.io.max_command_data = f.io.extended ? 1223 : 255;
    f.io.reader = "fuzz reader";
    f.io.ctx = &f;
    handle = data[0] >> 1;
    memset(&ft, 0, sizeof(ft));
    ft.t.call = fuzz_call;
    ft.card = &f;
    if (f.card == NULL)
        return 0;
    if (sks_client_get_device_info(&ft.t, &info, &e))
        sks_device_info_free(&info);
    for (i = 0; i < 4 && sks_client_enumerate_keys(&ft.t, next, &next, NULL, &e) && next != 0; i++) {
        if (sks_client_get_key_attributes(&ft.t, next, &attrs, &e))
            sks_key_attributes_free(&attrs);
    }
    if (sks_client_get_key_protection_info(&ft.t, handle, &prot, &e))
        (void)prot;
    user_calls(&ft.t, handle);
    /* the same requests after the card session was forgotten (a reset) */
    schsm_card_forget(f.card);
    user_calls(&ft.t, handle);
    schsm_card_free(f.card);
    return 0;
}
