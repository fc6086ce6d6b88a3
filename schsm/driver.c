/*
 * The SmartCard-HSM driver's front: one SKS wire request in (docs/wire-format.md), the
 * card's APDUs, one reply out. The methods a SmartCard-HSM can answer are here; the others
 * (provisioning, extensions, HMAC, symmetric keys, export, firmware) answer
 * ERROR_NOT_AVAILABLE naming the method.
 */
#include "internal.h"
#include "manage.h"

#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>

#define API_LEVEL 100
#define DEVICE_TYPE 0x08 /* LOCATION_EXTERNAL (a card in a reader) | TYPE_HSM */
#define APP_UNIVERSAL 3
#define PIN_FORMAT_STRING 2
#define PUK_FORMAT_ALPHANUMERIC 1
#define GROUPING_SHARED 1
#define PROTECT_PIN 1
#define PROTECT_NEVER 3
#define PROT_PIN_PROTECTED 0x01
#define PROT_PUK_PROTECTED 0x02
#define PROT_PIN_BLOCKED 0x04
#define PROT_PUK_BLOCKED 0x08
#define SO_PIN_TRIES 15
#define DEFAULT_PIN_TRIES 3 /* the user PIN's retry limit unless set otherwise at initialisation */
#define RRC_OPTION 0x0001 /* INITIALIZE option: the SO-PIN may reset the user PIN's counter */

typedef int (*handler)(schsm_ctx *c, sks_reader *in, sks_buf *out);

static int reader_error(schsm_ctx *c, const char *method, const sks_reader *in)
{
    return schsm_fail(c, SKS_ERROR_OPTION, "%s: \"%s\" %s", method, in->field ? in->field : "?",
                      in->error ? in->error : "is malformed");
}

/* Selected and described (once per card session). */
static int ready(schsm_ctx *c)
{
    int rc;

    if (!c->card->selected && (rc = schsm_select(c)) != SKS_OK)
        return rc;
    return schsm_load_keys(c);
}

static int key_named(schsm_ctx *c, const char *method, uint32_t handle, schsm_key **k)
{
    int rc;

    if ((rc = ready(c)) != SKS_OK)
        return rc;
    if ((*k = schsm_find_key(c->card, handle)) == NULL)
        return schsm_fail(c, SKS_ERROR_NO_KEY, "%s: no key #%u on the SmartCard-HSM in %s", method, handle,
                          c->io->reader ? c->io->reader : "?");
    return SKS_OK;
}

static int get_device_info(schsm_ctx *c, sks_reader *in, sks_buf *out)
{
    const char *const *algs;
    char desc[300];
    size_t n, i;
    int rc;

    sks_reader_expect_end(in);
    if (!sks_reader_ok(in))
        return reader_error(c, "getDeviceInfo", in);
    if (!c->card->selected && (rc = schsm_select(c)) != SKS_OK)
        return rc;
    if (c->card->have_version)
        snprintf(desc, sizeof(desc), "SmartCard-HSM, firmware %u.%u%s, in reader %s", c->card->fw_major,
                 c->card->fw_minor, c->card->fcp_type == 0xFF ? " (pico-hsm)" : "", c->io->reader ? c->io->reader : "?");
    else
        snprintf(desc, sizeof(desc), "SmartCard-HSM, firmware version not reported, in reader %s",
                 c->io->reader ? c->io->reader : "?");
    algs = schsm_algorithms(&n);
    sks_buf_ushort(out, API_LEVEL);
    sks_buf_byte(out, DEVICE_TYPE);
    sks_buf_string(out, "");
    sks_buf_string(out, "SmartCard-HSM");
    sks_buf_string(out, desc);
    sks_buf_ushort(out, 0); /* the card's device certificate is a CV certificate, not X.509 */
    sks_buf_ushort(out, (uint16_t)n);
    for (i = 0; i < n; i++)
        sks_buf_string(out, algs[i]);
    sks_buf_uint(out, SCHSM_MAX_RSA_BYTES);
    sks_buf_uint(out, 0);
    sks_buf_bool(out, 1); /* one user PIN guards every key */
    sks_buf_bool(out, 0);
    return SKS_OK;
}

static int enumerate_keys(schsm_ctx *c, sks_reader *in, sks_buf *out)
{
    uint32_t after = sks_get_uint(in, "keyHandle");
    size_t i;
    int rc;

    sks_reader_expect_end(in);
    if (!sks_reader_ok(in))
        return reader_error(c, "enumerateKeys", in);
    if ((rc = ready(c)) != SKS_OK)
        return rc;
    for (i = 0; i < c->card->nkeys; i++)
        if (c->card->keys[i].kid > after) {
            sks_buf_uint(out, c->card->keys[i].kid);
            sks_buf_uint(out, 0); /* not provisioned through SKS: no session */
            return SKS_OK;
        }
    sks_buf_uint(out, 0);
    return SKS_OK;
}

static int get_key_attributes(schsm_ctx *c, sks_reader *in, sks_buf *out)
{
    uint32_t handle = sks_get_uint(in, "keyHandle");
    schsm_key *k;
    int rc;

    sks_reader_expect_end(in);
    if (!sks_reader_ok(in))
        return reader_error(c, "getKeyAttributes", in);
    if ((rc = key_named(c, "getKeyAttributes", handle, &k)) != SKS_OK)
        return rc;
    sks_buf_ushort(out, 0); /* asymmetric */
    if (k->cert != NULL) {
        sks_buf_ushort(out, 1);
        sks_buf_array(out, k->cert, k->cert_len);
    } else {
        sks_buf_ushort(out, 0);
    }
    sks_buf_byte(out, APP_UNIVERSAL);
    sks_buf_string(out, k->label);
    sks_buf_ushort(out, 0); /* no endorsement list: the card decides what a key may do */
    sks_buf_ushort(out, 0); /* no extensions */
    return SKS_OK;
}

/* The SO-PIN's state (00 20 00 88): tries left, blocked; asked once per card session. */
static int so_pin_status(schsm_ctx *c, int *tries, int *blocked)
{
    sks_buf resp;
    unsigned sw;
    int rc;

    *tries = SO_PIN_TRIES;
    *blocked = 0;
    if (c->card->so_sw_known) {
        sw = c->card->so_sw;
    } else {
        sks_buf_init(&resp);
        rc = schsm_transmit(c, 0x00, 0x20, 0x00, 0x88, NULL, 0, -1, &resp, &sw);
        sks_buf_free(&resp);
        if (rc != SKS_OK)
            return rc;
        c->card->so_sw_known = SW_IS_TRIES_LEFT(sw) || sw == SW_PIN_BLOCKED;
        c->card->so_sw = sw;
    }
    if (SW_IS_TRIES_LEFT(sw))
        *tries = (int)(sw & 0x0F);
    else if (sw == SW_PIN_BLOCKED) {
        *blocked = 1;
        *tries = 0;
    }
    return SKS_OK;
}

static int get_key_protection_info(schsm_ctx *c, sks_reader *in, sks_buf *out)
{
    uint32_t handle = sks_get_uint(in, "keyHandle");
    int tries, blocked, verified, so_tries, so_blocked, rrc, rc;
    unsigned limit, errors;
    uint8_t status = PROT_PIN_PROTECTED;
    schsm_key *k;

    sks_reader_expect_end(in);
    if (!sks_reader_ok(in))
        return reader_error(c, "getKeyProtectionInfo", in);
    /* the key must exist; its protection is the card's one PIN */
    if ((rc = key_named(c, "getKeyProtectionInfo", handle, &k)) != SKS_OK
        || (rc = schsm_pin_status(c, &tries, &blocked, &verified)) != SKS_OK)
        return rc;
    rrc = c->card->have_version && c->card->fw_major >= 2 && (c->card->options & RRC_OPTION);
    if (rrc && (rc = so_pin_status(c, &so_tries, &so_blocked)) != SKS_OK)
        return rc;
    /* The card reports tries left, not its limit: the limit is the most it reported, at least
     * the card's default; limit - errors is then always the tries left. */
    limit = c->card->max_tries_seen > DEFAULT_PIN_TRIES ? c->card->max_tries_seen : DEFAULT_PIN_TRIES;
    errors = blocked ? limit : tries >= 0 && (unsigned)tries < limit ? limit - (unsigned)tries : 0;
    if (blocked)
        status |= PROT_PIN_BLOCKED;
    if (rrc)
        status |= PROT_PUK_PROTECTED | (so_blocked ? PROT_PUK_BLOCKED : 0);
    sks_buf_byte(out, status);
    sks_buf_byte(out, rrc ? PUK_FORMAT_ALPHANUMERIC : 0);
    sks_buf_ushort(out, rrc ? SO_PIN_TRIES : 0);
    sks_buf_ushort(out, rrc ? (uint16_t)(SO_PIN_TRIES - so_tries) : 0);
    sks_buf_bool(out, 1);               /* userDefined */
    sks_buf_bool(out, 1);               /* userModifiable: changePin */
    sks_buf_byte(out, PIN_FORMAT_STRING);
    sks_buf_ushort(out, (uint16_t)limit);
    sks_buf_byte(out, GROUPING_SHARED); /* one PIN for every key */
    sks_buf_byte(out, 0);
    sks_buf_ushort(out, SCHSM_PIN_MIN);
    sks_buf_ushort(out, SCHSM_PIN_MAX);
    sks_buf_byte(out, 0);
    sks_buf_ushort(out, (uint16_t)errors);
    sks_buf_bool(out, 1);               /* the verification is kept for the card session */
    sks_buf_byte(out, 0);
    sks_buf_byte(out, PROTECT_NEVER);   /* no export through SKS */
    sks_buf_byte(out, PROTECT_PIN);
    sks_buf_byte(out, 0);
    return SKS_OK;
}

/* The arguments every User API method starts with. */
static void read_user_args(sks_reader *in, uint32_t *handle, schsm_op *op, int *biometric)
{
    *handle = sks_get_uint(in, "keyHandle");
    op->algorithm = sks_get_uri(in, "algorithm");
    op->parameters = sks_get_array(in, "parameters");
    *biometric = sks_get_bool(in, "biometricAuth");
    op->authorization = sks_get_array(in, "authorization");
}

typedef int (*operation)(schsm_ctx *c, schsm_key *k, const schsm_op *op, sks_buf *out);

static int user_call(schsm_ctx *c, sks_reader *in, sks_buf *out, const char *method, const char *data_field,
                     operation run)
{
    uint32_t handle;
    schsm_op op;
    schsm_key *k;
    sks_buf result;
    int biometric, rc;

    memset(&op, 0, sizeof(op));
    read_user_args(in, &handle, &op, &biometric);
    op.data = sks_get_array(in, data_field);
    sks_reader_expect_end(in);
    if (!sks_reader_ok(in))
        return reader_error(c, method, in);
    if ((rc = key_named(c, method, handle, &k)) != SKS_OK)
        return rc;
    if (biometric) /* as the software device answers a key without biometric protection */
        return schsm_fail(c, SKS_ERROR_AUTHORIZATION, "key #%u has no biometric protection", handle);
    sks_buf_init(&result);
    rc = run(c, k, &op, &result);
    if (rc == SKS_OK)
        sks_buf_array(out, result.data, result.len);
    sks_buf_free(&result); /* wipes: a decrypted message or a shared secret */
    return rc;
}

static int sign_hashed_data(schsm_ctx *c, sks_reader *in, sks_buf *out)
{
    return user_call(c, in, out, "signHashedData", "data", schsm_sign);
}

static int asymmetric_key_decrypt(schsm_ctx *c, sks_reader *in, sks_buf *out)
{
    return user_call(c, in, out, "asymmetricKeyDecrypt", "data", schsm_decrypt);
}

static int key_agreement(schsm_ctx *c, sks_reader *in, sks_buf *out)
{
    return user_call(c, in, out, "keyAgreement", "publicKey", schsm_agree);
}

/* DELETE FILE of one of the key's files; a file that is not there is fine. */
static int delete_file(schsm_ctx *c, sks_span pin, uint8_t prefix, uint8_t kid, int required)
{
    uint8_t fid[2] = { prefix, kid };
    sks_buf resp;
    unsigned sw = 0;
    int rc;

    sks_buf_init(&resp);
    rc = schsm_pin_ensure(c, pin);
    if (rc == SKS_OK)
        rc = schsm_transmit(c, 0x00, 0xE4, 0x02, 0x00, fid, 2, -1, &resp, &sw);
    sks_buf_free(&resp);
    if (rc != SKS_OK || sw == SW_OK || (!required && (sw == SW_NOT_FOUND || sw == SW_REF_NOT_FOUND)))
        return rc;
    return schsm_fail(c, schsm_sw_status(sw), "deleteKey: the card did not delete file %02X%02X: %04X %s", prefix, kid,
                      sw, schsm_sw_text(sw));
}

/* The request of the key management methods: keyHandle, authorization and, for changePin,
 * one more array (extra_field); *k is the key the handle names. */
static int read_key_request(schsm_ctx *c, sks_reader *in, const char *method, const char *extra_field,
                            sks_span *auth, sks_span *extra, schsm_key **k)
{
    uint32_t handle = sks_get_uint(in, "keyHandle");

    *auth = sks_get_array(in, "authorization");
    if (extra_field != NULL)
        *extra = sks_get_array(in, extra_field);
    sks_reader_expect_end(in);
    if (!sks_reader_ok(in))
        return reader_error(c, method, in);
    return key_named(c, method, handle, k);
}

static int delete_key(schsm_ctx *c, sks_reader *in, sks_buf *out)
{
    sks_span auth;
    schsm_key *k;
    int rc;

    (void)out;
    if ((rc = read_key_request(c, in, "deleteKey", NULL, &auth, NULL, &k)) != SKS_OK)
        return rc;
    /* the key first: once it is gone its descriptions describe nothing */
    rc = delete_file(c, auth, 0xCC, k->kid, 1);
    if (rc == SKS_OK)
        rc = delete_file(c, auth, 0xC4, k->kid, 0);
    if (rc == SKS_OK)
        rc = delete_file(c, auth, 0xCE, k->kid, 0);
    c->card->cached = 0; /* read the card again */
    schsm_drop_keys(c->card);
    return rc;
}

static int change_pin(schsm_ctx *c, sks_reader *in, sks_buf *out)
{
    sks_span auth, pin;
    schsm_key *k;
    int rc;

    (void)out;
    if ((rc = read_key_request(c, in, "changePin", "newPin", &auth, &pin, &k)) != SKS_OK)
        return rc;
    return schsm_change_pin(c, auth, pin);
}

static int unlock_key(schsm_ctx *c, sks_reader *in, sks_buf *out)
{
    sks_span auth;
    schsm_key *k;
    int rc;

    (void)out;
    if ((rc = read_key_request(c, in, "unlockKey", NULL, &auth, NULL, &k)) != SKS_OK)
        return rc;
    return schsm_unblock_pin(c, auth);
}

static const struct {
    uint8_t id;
    const char *name;
    handler run; /* NULL: not on a SmartCard-HSM */
} METHODS[] = {
    { 1, "getDeviceInfo", get_device_info },
    { 2, "createProvisioningSession", NULL },
    { 3, "closeProvisioningSession", NULL },
    { 4, "enumerateProvisioningSessions", NULL },
    { 5, "abortProvisioningSession", NULL },
    { 7, "updateKeyManagementKey", NULL },
    { 8, "createPukPolicy", NULL },
    { 9, "createPinPolicy", NULL },
    { 10, "createKeyEntry", NULL },
    { 11, "getKeyHandle", NULL },
    { 12, "setCertificatePath", NULL },
    { 13, "importSymmetricKey", NULL },
    { 14, "importPrivateKey", NULL },
    { 15, "addExtension", NULL },
    { 50, "postDeleteKey", NULL },
    { 51, "postUnlockKey", NULL },
    { 52, "postUpdateKey", NULL },
    { 53, "postCloneKeyProtection", NULL },
    { 70, "enumerateKeys", enumerate_keys },
    { 71, "getKeyAttributes", get_key_attributes },
    { 72, "getKeyProtectionInfo", get_key_protection_info },
    { 73, "getExtension", NULL },
    { 74, "setProperty", NULL },
    { 80, "deleteKey", delete_key },
    { 81, "exportKey", NULL },
    { 82, "unlockKey", unlock_key },
    { 83, "changePin", change_pin },
    { 84, "setPin", NULL },
    { 90, "updateFirmware", NULL },
    { 100, "signHashedData", sign_hashed_data },
    { 101, "asymmetricKeyDecrypt", asymmetric_key_decrypt },
    { 102, "keyAgreement", key_agreement },
    { 103, "performHmac", NULL },
    { 104, "symmetricKeyEncrypt", NULL },
    { 200, "skipRequest", NULL },
    { 201, "skipImport", NULL },
};

schsm_card *schsm_card_new(void)
{
    return OPENSSL_zalloc(sizeof(schsm_card));
}

void schsm_card_free(schsm_card *c)
{
    if (c == NULL)
        return;
    schsm_card_forget(c);
    OPENSSL_clear_free(c, sizeof(*c));
}

void schsm_card_forget(schsm_card *c)
{
    if (c == NULL)
        return;
    schsm_pin_forget(c);
    schsm_drop_keys(c);
    c->selected = 0;
    c->have_version = 0;
    c->max_tries_seen = 0;
    c->so_sw_known = 0;
}

void schsm_card_selected(schsm_card *c, const uint8_t *fcp, size_t n)
{
    schsm_card_forget(c); /* a SELECT ends any verification: a new card session */
    c->have_version = schsm_parse_fcp(fcp, n, &c->fcp_type, &c->fw_major, &c->fw_minor, &c->options);
    c->selected = 1;
}

static void write_error(sks_buf *reply, int status, const char *message)
{
    size_t n = strlen(message);

    sks_buf_reset(reply);
    sks_buf_byte(reply, (uint8_t)status);
    sks_buf_array(reply, message, n > 2000 ? 2000 : n);
}

int schsm_card_call(schsm_card *card, schsm_io *io, const uint8_t *req, size_t n, sks_buf *reply, char *err,
                    size_t errlen)
{
    schsm_ctx c;
    sks_reader in;
    sks_buf out;
    size_t i;
    int rc;

    if (n > 0 && schsm_manage_handles(req[0])) { /* hsm* key management: schsm/manage.c */
        int answered = schsm_manage_call(io, req, n, reply, err, errlen);
        schsm_card_forget(card); /* it SELECTed: PIN state and key list are stale */
        return answered;
    }
    memset(&c, 0, sizeof(c));
    c.card = card;
    c.io = io;
    c.err = err;
    c.errlen = errlen;
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    sks_buf_reset(reply);
    if (n == 0) {
        write_error(reply, SKS_ERROR_OPTION, "empty request: a request starts with the method id byte");
        return 1;
    }
    for (i = 0; i < sizeof(METHODS) / sizeof(METHODS[0]) && METHODS[i].id != req[0]; i++)
        ;
    if (i == sizeof(METHODS) / sizeof(METHODS[0])) {
        snprintf(c.message, sizeof(c.message), "unknown method id %u", req[0]);
        write_error(reply, SKS_ERROR_OPTION, c.message);
        return 1;
    }
    if (METHODS[i].run == NULL) {
        snprintf(c.message, sizeof(c.message), "%s is not available: not on a SmartCard-HSM", METHODS[i].name);
        write_error(reply, SKS_ERROR_NOT_AVAILABLE, c.message);
        return 1;
    }
    sks_buf_init(&out);
    sks_reader_init(&in, req + 1, n - 1);
    rc = METHODS[i].run(&c, &in, &out);
    if (rc == SCHSM_LINK_FAILED) {
        /* the card is gone or was reset: nothing of this session holds any more */
        schsm_card_forget(card);
        if (err != NULL && errlen > 0 && err[0] == '\0')
            snprintf(err, errlen, "%s: the link to the card failed", METHODS[i].name);
        sks_buf_free(&out);
        return 0;
    }
    if (rc == SKS_OK && out.failed)
        rc = schsm_fail(&c, SKS_ERROR_INTERNAL, "%s: out of memory", METHODS[i].name);
    if (rc == SKS_OK) {
        sks_buf_byte(reply, SKS_OK);
        sks_buf_put(reply, out.data, out.len);
    } else {
        write_error(reply, rc, c.message[0] ? c.message : "error");
    }
    sks_buf_free(&out);
    OPENSSL_cleanse(c.message, sizeof(c.message));
    return 1;
}
