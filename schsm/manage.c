/*
 * The SmartCard-HSM key management methods (schsm/manage.h) and the card steps they share:
 * SELECT, VERIFY, ENUMERATE, UPDATE BINARY, DELETE FILE (docs/smartcard-hsm.md).
 */
#include "manage.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>

#include "mgmt.h"
#include "mgmt_dkek.h"

static const struct {
    uint8_t id;
    const char *name;
    int (*handler)(mg_call *m, sks_reader *in);
} METHODS[] = {
    { 210, "hsmGenerateKeyPair", mg_generate },
    { 211, "hsmInitialize", mg_initialize },
    { 212, "hsmStatus", mg_status },
    /* DKEK shares, backup and restore (schsm/mgmt_dkek.c) */
    { 213, "hsmDkekImportShare", mg_dkek_import_share },
    { 214, "hsmKeyDomainStatus", mg_key_domain_status },
    { 215, "hsmWrapKey", mg_wrap_key },
    { 216, "hsmUnwrapKey", mg_unwrap_key },
    { 217, "hsmGetChallenge", mg_get_challenge },
    { 220, "hsmDeviceCertificates", mg_device_certificates },
    { 221, "hsmKeyGenerationResponse", mg_key_generation_response },
    { 222, "hsmDomainStatus", mg_domain_status },
    { 223, "hsmKeyDomainCreate", mg_domain_create },
    { 224, "hsmKeyDomainJoin", mg_domain_join },
    { 225, "hsmGenerateDomainKey", mg_generate_domain_key },
    { 226, "hsmDeriveXkek", mg_derive_xkek },
    { 227, "hsmDomainWrapKey", mg_domain_wrap_key },
    { 228, "hsmDomainUnwrapKey", mg_domain_unwrap_key },
};

int schsm_manage_handles(uint8_t method_id)
{
    size_t i;

    for (i = 0; i < sizeof(METHODS) / sizeof(METHODS[0]); i++)
        if (METHODS[i].id == method_id)
            return 1;
    return 0;
}

int schsm_manage_call(schsm_io *io, const uint8_t *req, size_t n, sks_buf *reply, char *err, size_t errlen)
{
    mg_call m;
    sks_reader in;
    size_t i;
    int r = MG_STEP_ANSWERED;

    memset(&m, 0, sizeof(m));
    m.io = io;
    m.reply = reply;
    m.err = err;
    m.errlen = errlen;
    m.method = "request";
    sks_buf_init(&m.resp);
    sks_buf_reset(reply);
    for (i = 0; n > 0 && i < sizeof(METHODS) / sizeof(METHODS[0]); i++)
        if (METHODS[i].id == req[0]) {
            m.method = METHODS[i].name;
            sks_reader_init(&in, req + 1, n - 1);
            r = METHODS[i].handler(&m, &in);
            break;
        }
    if (i == sizeof(METHODS) / sizeof(METHODS[0]))
        mg_fail(&m, MG_ERROR_OPTION, "method %u is not a key management method", n > 0 ? req[0] : 0);
    sks_buf_free(&m.resp); /* may hold card answers about keys */
    if (r == MG_STEP_LINK)
        return 0;
    if (reply->failed) {
        sks_buf_reset(reply);
        reply->failed = 0;
        mg_fail(&m, MG_ERROR_INTERNAL, "out of memory");
    }
    return 1;
}

int mg_fail(mg_call *m, int status, const char *fmt, ...)
{
    char msg[1024];
    int off;
    va_list ap;

    off = snprintf(msg, sizeof(msg), "%s: ", m->method);
    va_start(ap, fmt);
    vsnprintf(msg + off, sizeof(msg) - (size_t)off, fmt, ap);
    va_end(ap);
    sks_buf_reset(m->reply);
    sks_buf_byte(m->reply, (uint8_t)status);
    sks_buf_string(m->reply, msg);
    return MG_STEP_ANSWERED;
}

int mg_apdu(mg_call *m, uint8_t cla, uint8_t ins, uint8_t p1, uint8_t p2, const uint8_t *data, size_t n, int le)
{
    m->sw = 0;
    sks_buf_reset(&m->resp);
    return schsm_apdu(m->io, cla, ins, p1, p2, data, n, le, &m->resp, &m->sw, m->err, m->errlen) ? MG_STEP_OK
                                                                                                   : MG_STEP_LINK;
}

int mg_select(mg_call *m)
{
    static const uint8_t AID[] = { SCHSM_AID_BYTES };

    if (mg_apdu(m, 0x00, 0xA4, 0x04, 0x00, AID, sizeof(AID), SCHSM_LE_SHORT) != MG_STEP_OK)
        return MG_STEP_LINK;
    if (m->sw != 0x9000)
        return mg_fail(m, MG_ERROR_EXTERNAL, "the card in %s has no SmartCard-HSM application (SELECT: SW %04X)",
                       m->io->reader, m->sw);
    return MG_STEP_OK;
}

int mg_verify_pin(mg_call *m, sks_span pin)
{
    if (pin.n == 0)
        return mg_fail(m, MG_ERROR_AUTHORIZATION, "the card's user PIN is needed");
    if (pin.n > 16)
        return mg_fail(m, MG_ERROR_AUTHORIZATION, "wrong user PIN (longer than 16 bytes; no try spent)");
    if (mg_apdu(m, 0x00, 0x20, 0x00, 0x81, pin.p, pin.n, SCHSM_LE_NONE) != MG_STEP_OK)
        return MG_STEP_LINK;
    if (m->sw == 0x9000)
        return MG_STEP_OK;
    if ((m->sw & 0xFFF0) == 0x63C0)
        return mg_fail(m, MG_ERROR_AUTHORIZATION, "wrong user PIN (%u tries left)", m->sw & 0x0F);
    if (m->sw == 0x6983)
        return mg_fail(m, MG_ERROR_AUTHORIZATION, "the user PIN is blocked (unblock it with the SO-PIN)");
    if (m->sw == 0x6A88)
        return mg_fail(m, MG_ERROR_NOT_ALLOWED, "the card is not initialised (sks hsm init)");
    if (m->sw == 0x6984)
        return mg_fail(m, MG_ERROR_NOT_ALLOWED, "the card still has its transport PIN: change it first");
    return mg_fail(m, MG_ERROR_EXTERNAL, "VERIFY: SW %04X", m->sw);
}

int mg_key_request_select(mg_call *m, sks_reader *in, uint32_t handle)
{
    sks_reader_expect_end(in);
    if (!sks_reader_ok(in))
        return mg_fail(m, MG_ERROR_OPTION, "malformed request");
    if (handle < 1 || handle > 255)
        return mg_fail(m, MG_ERROR_OPTION, "no key with handle %u on a SmartCard-HSM", handle);
    return mg_select(m);
}

int mg_key_request_begin(mg_call *m, sks_reader *in, sks_span pin, uint32_t handle)
{
    int r;

    if ((r = mg_key_request_select(m, in, handle)) != MG_STEP_OK)
        return r;
    return mg_verify_pin(m, pin);
}

int mg_write_file(mg_call *m, uint16_t fid, const uint8_t *data, size_t n)
{
    /* 54 02 <offset> 53 <length>: at most 8 bytes around each chunk */
    size_t limit = m->io->extended ? m->io->max_command_data : 255, chunk, off = 0;
    sks_buf cmd;
    uint8_t offset[2];
    int r = MG_STEP_OK;

    if (limit > 1223)
        limit = 1223; /* the smallest JCOP buffer OpenSC allows for */
    chunk = limit - 8;
    sks_buf_init(&cmd);
    do {
        size_t len = n - off < chunk ? n - off : chunk;
        sks_buf_reset(&cmd);
        offset[0] = (uint8_t)(off >> 8);
        offset[1] = (uint8_t)off;
        schsm_mgmt_tlv_put(&cmd, 0x54, offset, 2);
        schsm_mgmt_tlv_put(&cmd, 0x53, data + off, len);
        if (cmd.failed || off > 0xFFFF) {
            r = mg_fail(m, MG_ERROR_INTERNAL, "a file of %zu bytes cannot be written", n);
            break;
        }
        if (mg_apdu(m, 0x00, 0xD7, (uint8_t)(fid >> 8), (uint8_t)fid, cmd.data, cmd.len, SCHSM_LE_NONE)
            != MG_STEP_OK) {
            r = MG_STEP_LINK;
            break;
        }
        if (m->sw != 0x9000) {
            r = mg_fail(m, m->sw == 0x6A84 ? MG_ERROR_STORAGE : MG_ERROR_EXTERNAL,
                        "UPDATE BINARY of file %04X at offset %zu: SW %04X%s", fid, off, m->sw,
                        m->sw == 0x6A84 ? " (card full)" : "");
            break;
        }
        off += len;
    } while (off < n);
    sks_buf_free(&cmd);
    return r;
}

int mg_delete_file(mg_call *m, uint16_t fid)
{
    const uint8_t f[2] = { (uint8_t)(fid >> 8), (uint8_t)fid };

    if (mg_apdu(m, 0x00, 0xE4, 0x02, 0x00, f, 2, SCHSM_LE_NONE) != MG_STEP_OK)
        return MG_STEP_LINK;
    /* a file that is not there is deleted already */
    if (m->sw != 0x9000 && m->sw != 0x6A82)
        return mg_fail(m, MG_ERROR_EXTERNAL, "DELETE FILE %04X: SW %04X", fid, m->sw);
    return MG_STEP_OK;
}

/* The error reply kept (status, message) written again with note appended to its message, so
 * the user learns what became of the key; a reply not of that form is written back as it was. */
static void restore_refusal(mg_call *m, const sks_buf *keep, const char *note)
{
    char msg[1400];
    size_t n = keep->len >= 3 ? (size_t)keep->data[1] << 8 | keep->data[2] : 0;

    sks_buf_reset(m->reply);
    if (keep->len < 3 || 3 + n != keep->len || n >= sizeof(msg)) {
        sks_buf_put(m->reply, keep->data, keep->len);
        return;
    }
    snprintf(msg, sizeof(msg), "%.*s; %s", (int)n, (const char *)keep->data + 3, note);
    sks_buf_byte(m->reply, keep->data[0]);
    sks_buf_string(m->reply, msg);
}

/* A key just put into kid that is refused after all (it does not match its description, or its
 * description or certificate could not be written): its key object, PrKD and certificate file
 * are deleted (files not there are deleted already), keeping the refusal already written and
 * saying whether the key is gone or, when the card refuses a DELETE FILE, what is left of it. */
int mg_drop_new_key(mg_call *m, uint8_t kid, int r)
{
    static const uint16_t prefix[] = { 0xCE00, 0xC400, 0xCC00 };
    char note[128] = "";
    sks_buf keep;
    size_t i;
    int d;

    if (r == MG_STEP_LINK)
        return r;
    sks_buf_init(&keep);
    sks_buf_put(&keep, m->reply->data, m->reply->len);
    for (i = 0; i < sizeof(prefix) / sizeof(prefix[0]); i++) {
        if ((d = mg_delete_file(m, (uint16_t)(prefix[i] | kid))) == MG_STEP_LINK) {
            r = MG_STEP_LINK;
            break;
        }
        if (d != MG_STEP_OK && note[0] == '\0')
            snprintf(note, sizeof(note), "the new key %u is not wholly removed: DELETE FILE %04X answered SW %04X",
                     kid, prefix[i] | kid, m->sw);
    }
    if (r != MG_STEP_LINK && note[0] == '\0')
        snprintf(note, sizeof(note), "the new key %u was deleted again", kid);
    if (r != MG_STEP_LINK)
        restore_refusal(m, &keep, note);
    sks_buf_free(&keep);
    return r;
}

int mg_replace_certificate(mg_call *m, uint8_t kid, const uint8_t *cert, size_t n)
{
    int r;

    /* UPDATE BINARY writes at offsets: a longer file already there (the card's CV request)
     * would keep its tail, so the old file goes first */
    if ((r = mg_delete_file(m, (uint16_t)(0xCE00 | kid))) != MG_STEP_OK)
        return r;
    return mg_write_file(m, (uint16_t)(0xCE00 | kid), cert, n);
}

int mg_free_key_reference(mg_call *m, uint8_t *kid)
{
    uint8_t used[256];
    size_t i;

    if (mg_apdu(m, 0x80, 0x58, 0x00, 0x00, NULL, 0, SCHSM_LE_LINK) != MG_STEP_OK)
        return MG_STEP_LINK;
    if (m->sw != 0x9000 || m->resp.len % 2 != 0)
        return mg_fail(m, MG_ERROR_EXTERNAL, "ENUMERATE OBJECTS: SW %04X, %zu bytes", m->sw, m->resp.len);
    memset(used, 0, sizeof(used));
    used[0] = 1; /* the device authentication key */
    for (i = 0; i + 1 < m->resp.len; i += 2)
        if (m->resp.data[i] == 0xCC)
            used[m->resp.data[i + 1]] = 1;
    for (i = 1; i < 256; i++)
        if (!used[i]) {
            *kid = (uint8_t)i;
            return MG_STEP_OK;
        }
    return mg_fail(m, MG_ERROR_STORAGE, "the card holds 255 keys: no key reference is free");
}
