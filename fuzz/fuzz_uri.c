/*
 * libFuzzer target for the sks: URI parser (store/uri.c). Parsing must never crash, and a
 * URI it accepts must hold values consistent with what it says it parsed.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../store/uri.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *uri = malloc(size + 1), err[256];
    sks_uri u;

    if (uri == NULL)
        return 0;
    memcpy(uri, data, size);
    uri[size] = '\0';
    if (sks_uri_parse(uri, &u, err, sizeof(err))) {
        if (strncmp(uri, "sks:", 4) != 0 || (u.has_handle && u.handle == 0) || u.type > SKS_URI_CERT
            || (u.name != NULL && u.name[0] == '\0'))
            abort();
        sks_uri_clear(&u);
    } else if (err[0] == '\0') {
        abort(); /* every refusal says why */
    }
    free(uri);
    return 0;
}
