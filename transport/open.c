/* Device selection: one specification string names the transport and its target. */
#include "transport.h"

#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The user's home: $HOME, else the password database's entry for this user; never a shared
 * directory such as /tmp, where anybody could have planted the store. */
static int home_dir(char *out, size_t n)
{
    const char *env = secure_getenv("HOME");
    struct passwd pw, *found = NULL;
    char buf[4096];

    if (env != NULL && *env)
        return snprintf(out, n, "%s", env) < (int)n;
    if (getpwuid_r(geteuid(), &pw, buf, sizeof(buf), &found) != 0 || found == NULL || pw.pw_dir == NULL
        || pw.pw_dir[0] != '/')
        return 0;
    return snprintf(out, n, "%s", pw.pw_dir) < (int)n;
}

int sks_data_dir(char *out, size_t n)
{
    const char *env = secure_getenv("XDG_DATA_HOME");
    char home[4096];

    if (env != NULL && *env)
        return snprintf(out, n, "%s/sks", env) < (int)n;
    if (!home_dir(home, sizeof(home)))
        return 0;
    return snprintf(out, n, "%s/.local/share/sks", home) < (int)n;
}

int sks_default_device(char *out, size_t n)
{
    const char *env;
    char dir[4096];

    /* secure_getenv: a set-user-ID or set-group-ID program that loads the provider must not
     * open a store, device or master key its caller names. */
    if ((env = secure_getenv("SKS_DEVICE")) != NULL && *env)
        return snprintf(out, n, "%s", env) < (int)n;
    if ((env = secure_getenv("SKS_STORE")) != NULL && *env)
        return snprintf(out, n, "file:%s", env) < (int)n;
    if (!sks_data_dir(dir, sizeof(dir)))
        return 0;
    return snprintf(out, n, "file:%s/store.db", dir) < (int)n;
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
    if (master_key_path == NULL && (master_key_path = secure_getenv("SKS_MASTER_KEY")) != NULL
        && *master_key_path == '\0')
        master_key_path = NULL;
    loc.db_path = spec;
    loc.master_key_path = master_key_path;
    return sks_transport_open_local(&loc, err, errlen);
}
