/*
 * The three User API calls the provider's operations make, through the typed client's
 * allocation-free calls over the connection's reusable buffers (client/sks_client.h): a
 * signature or a key agreement allocates nothing here. The key's PIN (from the URI, the
 * configuration or the application's passphrase callback at load) goes along; a wrong PIN
 * is reported, never retried.
 */
#include "provider.h"

#include <string.h>

typedef int user_call_fn(sks_transport *t, sks_client_buffers *b, const sks_user_args *a, sks_span data,
                         uint8_t *out, size_t size, size_t *out_len, sks_client_error *err);

/* Runs one User API call for key k, its result into out[size]. */
static sks_pstatus user_call(sks_key *k, user_call_fn *fn, const char *method, const char *alg_uri, sks_span params,
                             sks_span data, uint8_t *out, size_t size, size_t *out_len)
{
    sks_user_args a;
    sks_client_error e;
    sks_transport *t;
    int ok;

    *out_len = 0;
    if (k->handle == 0) {
        sks_raise(k->ctx, SKS_R_PUBLIC_ONLY, "%s: this is a public key, not a key in the sks store", method);
        return SKS_P_FAIL;
    }
    a.key_handle = k->handle;
    a.algorithm = alg_uri;
    a.parameters = params;
    a.biometric_auth = 0;
    a.authorization.p = (const uint8_t *)(k->pin != NULL ? k->pin : "");
    a.authorization.n = k->pin != NULL ? strlen(k->pin) : 0;
    if ((t = sks_conn_acquire(k->ctx)) == NULL)
        return SKS_P_FAIL;
    ok = fn(t, &k->ctx->bufs, &a, data, out, size, out_len, &e);
    sks_conn_release(k->ctx);
    if (!ok) {
        sks_raise_client(k->ctx, method, &e);
        return SKS_P_FAIL;
    }
    return SKS_P_OK;
}

static sks_span span_of(const uint8_t *p, size_t n)
{
    sks_span s = { p, n };
    return s;
}

sks_pstatus sks_op_sign(sks_key *k, const char *alg_uri, const uint8_t *params, size_t params_len,
                        const uint8_t *data, size_t n, uint8_t *out, size_t size, size_t *out_len)
{
    return user_call(k, sks_client_sign_hashed_data_to, "signHashedData", alg_uri, span_of(params, params_len),
                     span_of(data, n), out, size, out_len);
}

sks_pstatus sks_op_decrypt(sks_key *k, const char *alg_uri, const uint8_t *params, size_t params_len,
                           const uint8_t *in, size_t n, uint8_t *out, size_t size, size_t *out_len)
{
    return user_call(k, sks_client_asymmetric_key_decrypt_to, "asymmetricKeyDecrypt", alg_uri,
                     span_of(params, params_len), span_of(in, n), out, size, out_len);
}

sks_pstatus sks_op_agree(sks_key *k, const uint8_t *peer_spki, size_t n, uint8_t *out, size_t size,
                         size_t *out_len)
{
    return user_call(k, sks_client_key_agreement_to, "keyAgreement", SKS_ALG_URI("ecdh.raw"), span_of(NULL, 0),
                     span_of(peer_spki, n), out, size, out_len);
}
