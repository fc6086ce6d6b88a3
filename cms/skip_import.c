/* From a verified package to keys in the device (skip_import.h). */
#include "skip_import.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return 0;
}

/* ------------------------------------------------------------------ the pending request */

/* A certificate of the package that could be the factory's: neither the signer's nor one
 * that carries a container's key. */
static int factory_candidate(const skip_package *p, X509 *x)
{
    size_t i;

    if (x == p->signer)
        return 0;
    for (i = 0; i < p->nkeys; i++)
        if (p->keys[i].cert == x)
            return 0;
    return 1;
}

/* Is `session` an open SKIP session whose factory key one of the package's certificates
 * certifies? Session ids are derived from the factory key (skip_session_id). */
static X509 *match_session(const skip_package *p, const sks_session_info *s)
{
    char id[33];
    int i;

    if (strcmp(s->issuer_uri, SKIP_ISSUER_URI) != 0)
        return NULL;
    for (i = 0; i < sk_X509_num(p->certs); i++) {
        X509 *x = sk_X509_value(p->certs, i);
        EVP_PKEY *pub = X509_get0_pubkey(x);
        if (factory_candidate(p, x) && pub != NULL && skip_session_id(pub, id) && strcmp(id, s->client_session_id) == 0)
            return x;
    }
    return NULL;
}

/* The open SKIP session the package answers; *handle = 0 if there is none. */
static int find_pending(sks_transport *t, const skip_package *p, uint32_t *handle, X509 **factory, char *err,
                        size_t errlen)
{
    sks_session_info s;
    sks_client_error e;
    uint32_t after = 0;

    *handle = 0;
    *factory = NULL;
    for (;;) {
        if (!sks_client_enumerate_provisioning_sessions(t, after, 1, &s, &e))
            return fail(err, errlen, "%s", e.message);
        after = s.provisioning_handle;
        if (after != 0 && (*factory = match_session(p, &s)) != NULL)
            *handle = after;
        sks_session_info_free(&s);
        if (after == 0 || *handle != 0)
            return 1;
    }
}

/* ------------------------------------------------------------------ already imported? */

/* Compares the end-entity certificate of every key in the store with the package's; fills
 * handles[] for the containers found and returns how many were. -1 on device failure. */
static int find_existing(sks_transport *t, const skip_package *p, uint32_t *handles, char *err, size_t errlen)
{
    sks_client_error e;
    uint32_t key = 0;
    int found = 0;
    size_t i;

    memset(handles, 0, p->nkeys * sizeof(*handles));
    for (;;) {
        sks_key_attributes a;
        if (!sks_client_enumerate_keys(t, key, &key, NULL, &e)
            || (key != 0 && !sks_client_get_key_attributes(t, key, &a, &e))) {
            fail(err, errlen, "%s", e.message);
            return -1;
        }
        if (key == 0)
            return found;
        for (i = 0; i < p->nkeys && a.certificates.count > 0; i++) {
            unsigned char *der = NULL;
            int len = i2d_X509(p->keys[i].cert, &der);
            const sks_bytes *ee = &a.certificates.items[0];
            if (handles[i] == 0 && len > 0 && ee->len == (size_t)len && memcmp(ee->data, der, ee->len) == 0) {
                handles[i] = key;
                found++;
            }
            OPENSSL_free(der);
        }
        sks_key_attributes_free(&a);
    }
}

/* 1 (with res filled) if every key of the package is in the store; err is left alone. */
static int report_already_imported(sks_transport *t, const skip_package *p, skip_import_result *res)
{
    char scratch[256];
    uint32_t handles[SKIP_MAX_KEYS];

    if (find_existing(t, p, handles, scratch, sizeof(scratch)) != (int)p->nkeys)
        return 0;
    memcpy(res->handles, handles, p->nkeys * sizeof(handles[0]));
    res->count = p->nkeys;
    res->already = 1;
    res->session = 0;
    return 1;
}

static int report_not_pending(sks_transport *t, const skip_package *p, skip_import_result *res, char *err,
                              size_t errlen)
{
    int found = find_existing(t, p, res->handles, err, errlen);

    if (found < 0)
        return 0;
    if ((size_t)found == p->nkeys) {
        res->already = 1;
        res->count = p->nkeys;
        return 1;
    }
    if (found > 0)
        return fail(err, errlen, "%d of the package's %zu keys are in the store already, the others are not: refusing"
                    " a partial import", found, p->nkeys);
    return fail(err, errlen, "the package is for another factory key: no pending SKIP request of this device holds"
                " the key any of its certificates certifies");
}

/* ------------------------------------------------------------------ skipImport */

/* The ephemeral key must be on the factory key's curve (ECDH needs one group), and the
 * factory certificate must have its purpose. The device checks both again itself; here they
 * give an early, clear error. */
static int check_factory(const skip_package *p, X509 *factory, char *err, size_t errlen)
{
    char fc[64], ec[64];

    if (!skip_factory_purpose(factory, err, errlen))
        return 0;
    skip_curve_of(X509_get0_pubkey(factory), fc, sizeof(fc));
    skip_curve_of(X509_get0_pubkey(p->signer), ec, sizeof(ec));
    if (fc[0] == '\0' || strcmp(fc, ec) != 0)
        return fail(err, errlen, "the ephemeral key is on %s but the factory key on %s: they must share the curve",
                    ec[0] ? ec : "no SKIP curve", fc[0] ? fc : "no SKIP curve");
    return 1;
}

/* The whole package goes to the device, which verifies it against the anchors stored with
 * the request before it decrypts anything. The device must name exactly one key per
 * container: the callers index the package's containers with these handles. 1 imported,
 * 0 refused by the device, -1 a reply that does not fit the package. */
static int send_import(sks_transport *t, const skip_package *p, uint32_t session, skip_import_result *res, char *err,
                       size_t errlen)
{
    sks_span der = { p->der, p->der_len };
    sks_client_error e;

    if (!sks_client_skip_import(t, session, der, res->handles, SKIP_MAX_KEYS, &res->count, &e))
        return fail(err, errlen, "%s", e.message);
    if (res->count != p->nkeys) {
        fail(err, errlen, "the device answered skipImport with %zu key handles for %zu containers", res->count,
             p->nkeys);
        res->count = 0;
        return -1;
    }
    res->session = session;
    return 1;
}

int skip_import(sks_transport *t, const skip_package *p, skip_import_result *res, char *err, size_t errlen)
{
    uint32_t session = 0;
    X509 *factory = NULL;
    int sent;

    memset(res, 0, sizeof(*res));
    if (!find_pending(t, p, &session, &factory, err, errlen))
        return 0;
    if (session == 0)
        return report_not_pending(t, p, res, err, errlen);
    if (!check_factory(p, factory, err, errlen))
        return 0;
    if ((sent = send_import(t, p, session, res, err, errlen)) != 0)
        return sent > 0;
    /* Another process may have imported the same package between the lookup and the call
     * (its skipImport closed the session first): then the keys are there, all of them. */
    return report_already_imported(t, p, res);
}
