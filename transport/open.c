/* Device selection: one specification string names the transport and its target. */
#include "transport.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int sks_default_device(char *out, size_t n)
{
    const char *env;

    if ((env = getenv("SKS_DEVICE")) != NULL && *env)
        return snprintf(out, n, "%s", env) < (int)n;
    if ((env = getenv("SKS_STORE")) != NULL && *env)
        return snprintf(out, n, "file:%s", env) < (int)n;
    if ((env = getenv("XDG_DATA_HOME")) != NULL && *env)
        return snprintf(out, n, "file:%s/sks/store.db", env) < (int)n;
    if ((env = getenv("HOME")) != NULL && *env)
        return snprintf(out, n, "file:%s/.local/share/sks/store.db", env) < (int)n;
    return 0;
}

sks_transport *sks_transport_open(const char *spec, const char *master_key_path, char *err, size_t errlen)
{
    sks_store_location loc;

    if (strncmp(spec, "unix:", 5) == 0)
        return sks_transport_open_unix(spec + 5, err, errlen);
    if (strncmp(spec, "pcsc:", 5) == 0) {
#ifdef SKS_WITH_PCSC
        return sks_transport_open_pcsc(spec + 5, err, errlen);
#else
        snprintf(err, errlen, "this build has no PC/SC support (device %s)", spec);
        return NULL;
#endif
    }
    if (strncmp(spec, "file:", 5) == 0)
        spec += 5;
    else if (strchr(spec, ':') != NULL && spec[0] != '/' && spec[0] != '.') {
        snprintf(err, errlen, "unknown device \"%s\": use file:PATH, unix:PATH or pcsc:[READER]", spec);
        return NULL;
    }
    if (master_key_path == NULL && (master_key_path = getenv("SKS_MASTER_KEY")) != NULL && *master_key_path == '\0')
        master_key_path = NULL;
    loc.db_path = spec;
    loc.master_key_path = master_key_path;
    return sks_transport_open_local(&loc, err, errlen);
}
