/*
 * sks-issuer's parsers of outside input (tools/sks-issuer/request.c, config.c): the HTTP body
 * of an enrolment (base64 PKCS#10) and every check the service makes of the request before
 * it touches its state (key type, signature, SKIP session id), the Authorization header (and
 * the same text as a device name), and
 * the configuration file. The first input byte chooses which one gets the rest. The seeds
 * (fuzz/corpus/issuer_request) hold signed requests on every SKIP curve, with compressed and
 * explicit-parameter keys, RSA and Ed25519 keys and a broken signature.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/x509.h>

#include "../tools/sks-issuer/config.h"
#include "../tools/sks-issuer/request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static issuer_config cfg;
    char err[600], token[ISSUER_MAX_TOKEN + 1], factory[33], *text;
    X509_REQ *req;

    if (size < 1)
        return 0;
    switch (data[0] % 3) {
    case 0:
        req = issuer_parse_pkcs10((const char *)data + 1, size - 1, err, sizeof(err));
        if (req != NULL)
            issuer_check_request(req, factory, err, sizeof(err));
        X509_REQ_free(req);
        break;
    case 1:
        if ((text = malloc(size)) == NULL)
            return 0;
        memcpy(text, data + 1, size - 1);
        text[size - 1] = '\0';
        issuer_parse_bearer(text, token);
        issuer_device_name_ok(text);
        free(text);
        break;
    default:
        issuer_config_parse((const char *)data + 1, size - 1, &cfg, err, sizeof(err));
        break;
    }
    return 0;
}
