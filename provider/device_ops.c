/*
 * The three User API calls the provider's operations make. The key's PIN (from the URI,
 * the configuration or the application's passphrase callback at load) goes along; a
 * wrong PIN is reported, never retried.
 */
#include "provider.h"

#include <string.h>

#include <openssl/crypto.h>

static void user_api_prefix(sks_buf *req, uint8_t method, const sks_key *k, const char *alg, const uint8_t *params,
                            size_t params_len)
{
    const char *pin = k->pin != NULL ? k->pin : "";

    sks_buf_byte(req, method);
    sks_buf_uint(req, k->handle);
    sks_buf_string(req, alg);
    sks_buf_array(req, params, params_len);
    sks_buf_bool(req, 0);
    sks_buf_array(req, pin, strlen(pin));
}

/* Runs one User API call whose single output is a byte[]. */
static sks_pstatus user_api_call(sks_key *k, const char *method_name, sks_buf *req, sks_buf *result)
{
    sks_buf reply;
    sks_reader r;
    sks_span s;
    int status;
    sks_pstatus rc;

    if (k->handle == 0) {
        sks_raise(k->ctx, SKS_R_PUBLIC_ONLY, "%s: this is a public key, not a key in the sks store", method_name);
        return SKS_P_FAIL;
    }
    sks_buf_init(&reply);
    rc = sks_device_call(k->ctx, method_name, req, &reply, &r, &status);
    if (rc == SKS_P_OK) {
        s = sks_get_array(&r, "result");
        sks_reader_expect_end(&r);
        if (!sks_reader_ok(&r)) {
            sks_raise(k->ctx, SKS_R_DEVICE, "%s: malformed reply from the device", method_name);
            rc = SKS_P_FAIL;
        } else {
            sks_buf_put(result, s.p, s.n);
        }
    }
    sks_buf_free(&reply);
    return rc;
}

sks_pstatus sks_op_sign(sks_key *k, const char *alg_uri, const uint8_t *params, size_t params_len,
                        const uint8_t *data, size_t n, sks_buf *sig)
{
    sks_buf req;
    sks_pstatus rc;

    sks_buf_init(&req);
    user_api_prefix(&req, 100, k, alg_uri, params, params_len);
    sks_buf_array(&req, data, n);
    rc = user_api_call(k, "signHashedData", &req, sig);
    sks_buf_free(&req);
    return rc;
}

sks_pstatus sks_op_decrypt(sks_key *k, const char *alg_uri, const uint8_t *params, size_t params_len,
                           const uint8_t *in, size_t n, sks_buf *out)
{
    sks_buf req;
    sks_pstatus rc;

    sks_buf_init(&req);
    user_api_prefix(&req, 101, k, alg_uri, params, params_len);
    sks_buf_array(&req, in, n);
    rc = user_api_call(k, "asymmetricKeyDecrypt", &req, out);
    sks_buf_free(&req);
    return rc;
}

sks_pstatus sks_op_agree(sks_key *k, const uint8_t *peer_spki, size_t n, sks_buf *z)
{
    sks_buf req;
    sks_pstatus rc;

    sks_buf_init(&req);
    user_api_prefix(&req, 102, k, SKS_ALG_URI("ecdh.raw"), NULL, 0);
    sks_buf_array(&req, peer_spki, n);
    rc = user_api_call(k, "keyAgreement", &req, z);
    sks_buf_free(&req);
    return rc;
}
