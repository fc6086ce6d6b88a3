/*
 * sks-issuer's configuration (config.h). Every value is copied into fixed-size fields; a
 * value that does not fit, an unknown key or a bad number refuses the whole file.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define LINE_MAX_LEN 1024

typedef struct {
    const char *name, *group;
} key_type;

static const key_type KEY_TYPES[] = {
    { "P-256", "prime256v1" },
    { "P-384", "secp384r1" },
    { "P-521", "secp521r1" },
    { "brainpoolP256r1", "brainpoolP256r1" },
    { "brainpoolP320r1", "brainpoolP320r1" },
    { "brainpoolP384r1", "brainpoolP384r1" },
    { "brainpoolP512r1", "brainpoolP512r1" },
    { "Ed25519", NULL },
};

static char *trim(char *s)
{
    char *e;

    while (isspace((unsigned char)*s))
        s++;
    e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

static int copy(char *dst, size_t size, const char *v, char *err, size_t errlen)
{
    if (strlen(v) >= size) {
        snprintf(err, errlen, "value longer than %zu characters", size - 1);
        return 0;
    }
    strcpy(dst, v);
    return 1;
}

static int number(const char *v, long min, long max, long *out, char *err, size_t errlen)
{
    char *end;
    long n;

    errno = 0;
    n = strtol(v, &end, 10);
    if (errno != 0 || end == v || *end != '\0' || n < min || n > max) {
        snprintf(err, errlen, "'%s' is not a number from %ld to %ld", v, min, max);
        return 0;
    }
    *out = n;
    return 1;
}

static int parse_auth(const char *v, issuer_config *c, char *err, size_t errlen)
{
    char buf[64], *tok, *save = NULL;

    if (!copy(buf, sizeof(buf), v, err, errlen))
        return 0;
    c->auth = 0;
    for (tok = strtok_r(buf, " ,", &save); tok != NULL; tok = strtok_r(NULL, " ,", &save)) {
        if (strcmp(tok, "token") == 0)
            c->auth |= AUTH_TOKEN;
        else if (strcmp(tok, "cert") == 0)
            c->auth |= AUTH_CERT;
        else {
            snprintf(err, errlen, "auth '%s': choose token, cert or both", tok);
            return 0;
        }
    }
    if (c->auth == 0)
        snprintf(err, errlen, "auth: choose token, cert or both");
    return c->auth != 0;
}

/* "key = TYPE LABEL [archive]" */
static int parse_key(const char *v, issuer_profile *p, char *err, size_t errlen)
{
    char buf[LINE_MAX_LEN], *type, *label, *flag, *save = NULL;
    size_t i, k = p->nkeys;

    if (k >= SKIP_MAX_KEYS) {
        snprintf(err, errlen, "more than %d keys in profile %s", SKIP_MAX_KEYS, p->name);
        return 0;
    }
    if (!copy(buf, sizeof(buf), v, err, errlen))
        return 0;
    type = strtok_r(buf, " \t", &save);
    label = strtok_r(NULL, " \t", &save);
    flag = strtok_r(NULL, " \t", &save);
    if (type == NULL || label == NULL || strtok_r(NULL, " \t", &save) != NULL
        || (flag != NULL && strcmp(flag, "archive") != 0)) {
        snprintf(err, errlen, "key: write 'key = TYPE LABEL' or 'key = TYPE LABEL archive'");
        return 0;
    }
    for (i = 0; i < sizeof(KEY_TYPES) / sizeof(KEY_TYPES[0]); i++)
        if (strcasecmp(type, KEY_TYPES[i].name) == 0)
            break;
    if (i == sizeof(KEY_TYPES) / sizeof(KEY_TYPES[0])) {
        snprintf(err, errlen, "key type '%s' is not a SKIP key type (P-256, P-384, P-521, brainpoolP256r1,"
                 " brainpoolP320r1, brainpoolP384r1, brainpoolP512r1, Ed25519)", type);
        return 0;
    }
    if (!copy(p->labels[k], sizeof(p->labels[k]), label, err, errlen))
        return 0;
    strcpy(p->key_type[k], KEY_TYPES[i].name);
    p->keys[k].group = KEY_TYPES[i].group;
    p->keys[k].label = p->labels[k];
    p->keys[k].archive = flag != NULL;
    p->nkeys++;
    return 1;
}

static int profile_setting(issuer_profile *p, const char *key, const char *v, char *err, size_t errlen)
{
    long n;

    if (strcmp(key, "key") == 0)
        return parse_key(v, p, err, errlen);
    if (strcmp(key, "subject") == 0)
        return copy(p->subject, sizeof(p->subject), v, err, errlen);
    if (strcmp(key, "aes") == 0) {
        if (!number(v, 128, 256, &n, err, errlen) || (n != 128 && n != 256)) {
            snprintf(err, errlen, "aes must be 128 or 256");
            return 0;
        }
        p->aes_bits = (int)n;
        return 1;
    }
    if (strcmp(key, "recovery-cert") == 0) {
        if (p->nrecovery >= ISSUER_MAX_RECOVERY) {
            snprintf(err, errlen, "more than %d recovery certificates", ISSUER_MAX_RECOVERY);
            return 0;
        }
        return copy(p->recovery[p->nrecovery++], ISSUER_PATH_MAX, v, err, errlen);
    }
    snprintf(err, errlen, "unknown profile setting '%s'", key);
    return 0;
}

static int global_setting(issuer_config *c, const char *key, const char *v, char *err, size_t errlen)
{
    long n;

    if (strcmp(key, "ca-key") == 0)
        return copy(c->ca_key, sizeof(c->ca_key), v, err, errlen);
    if (strcmp(key, "ca-cert") == 0)
        return copy(c->ca_cert, sizeof(c->ca_cert), v, err, errlen);
    if (strcmp(key, "database") == 0)
        return copy(c->database, sizeof(c->database), v, err, errlen);
    if (strcmp(key, "archive") == 0)
        return copy(c->archive, sizeof(c->archive), v, err, errlen);
    if (strcmp(key, "log") == 0)
        return copy(c->log, sizeof(c->log), v, err, errlen);
    if (strcmp(key, "auth") == 0)
        return parse_auth(v, c, err, errlen);
    if (strcmp(key, "cert-profile") == 0)
        return copy(c->cert_profile, sizeof(c->cert_profile), v, err, errlen);
    if (strcmp(key, "rate-limit") == 0) {
        if (!number(v, 1, 1000000, &n, err, errlen))
            return 0;
        c->rate_limit = (unsigned)n;
        return 1;
    }
    if (strcmp(key, "package-lifetime") == 0)
        return number(v, 60, 365L * 86400, &c->package_lifetime, err, errlen);
    if (strcmp(key, "days") == 0) {
        if (!number(v, 1, 36500, &n, err, errlen))
            return 0;
        c->days = (int)n;
        return 1;
    }
    snprintf(err, errlen, "unknown setting '%s'", key);
    return 0;
}

static int open_profile(issuer_config *c, const char *header, char *err, size_t errlen)
{
    char buf[LINE_MAX_LEN];
    issuer_profile *p;
    size_t len = strlen(header);

    if (len < 2 || header[len - 1] != ']' || strncmp(header, "[profile ", 9) != 0) {
        snprintf(err, errlen, "a section is written [profile NAME]");
        return 0;
    }
    if (c->nprofiles >= ISSUER_MAX_PROFILES) {
        snprintf(err, errlen, "more than %d profiles", ISSUER_MAX_PROFILES);
        return 0;
    }
    memcpy(buf, header + 9, len - 10);
    buf[len - 10] = '\0';
    p = &c->profiles[c->nprofiles];
    memset(p, 0, sizeof(*p));
    p->aes_bits = 256;
    if (*trim(buf) == '\0' || !copy(p->name, sizeof(p->name), trim(buf), err, errlen))
        return *err ? 0 : (snprintf(err, errlen, "a profile needs a name"), 0);
    if (issuer_config_profile(c, p->name) != NULL) {
        snprintf(err, errlen, "profile %s is defined twice", p->name);
        return 0;
    }
    c->nprofiles++;
    return 1;
}

static int parse_line(issuer_config *c, char *line, char *err, size_t errlen)
{
    char *eq, *key, *value;

    line = trim(line);
    if (*line == '\0' || *line == '#')
        return 1;
    if (*line == '[')
        return open_profile(c, line, err, errlen);
    if ((eq = strchr(line, '=')) == NULL) {
        snprintf(err, errlen, "expected 'key = value'");
        return 0;
    }
    *eq = '\0';
    key = trim(line);
    value = trim(eq + 1);
    if (c->nprofiles > 0)
        return profile_setting(&c->profiles[c->nprofiles - 1], key, value, err, errlen);
    return global_setting(c, key, value, err, errlen);
}

/* What the service cannot run without. */
static int check_complete(const issuer_config *c, char *err, size_t errlen)
{
    size_t i, k;

    if (!c->ca_key[0] || !c->ca_cert[0] || !c->database[0]) {
        snprintf(err, errlen, "ca-key, ca-cert and database are required");
        return 0;
    }
    if (c->nprofiles == 0) {
        snprintf(err, errlen, "no [profile NAME] section");
        return 0;
    }
    if ((c->auth & AUTH_CERT) && issuer_config_profile(c, c->cert_profile) == NULL) {
        snprintf(err, errlen, "auth cert needs cert-profile naming a profile");
        return 0;
    }
    for (i = 0; i < c->nprofiles; i++) {
        const issuer_profile *p = &c->profiles[i];
        if (p->nkeys == 0) {
            snprintf(err, errlen, "profile %s has no key", p->name);
            return 0;
        }
        for (k = 0; k < p->nkeys; k++)
            if (p->keys[k].archive && (p->nrecovery == 0 || !c->archive[0])) {
                snprintf(err, errlen, "profile %s archives keys: it needs recovery-cert, and archive must be set",
                         p->name);
                return 0;
            }
    }
    return 1;
}

int issuer_config_parse(const char *text, size_t n, issuer_config *c, char *err, size_t errlen)
{
    char line[LINE_MAX_LEN + 1], msg[400];
    size_t pos = 0, lineno = 0;

    memset(c, 0, sizeof(*c));
    c->auth = AUTH_TOKEN;
    c->rate_limit = 30;
    c->package_lifetime = 7L * 86400;
    c->days = 365;
    if (n > ISSUER_MAX_CONFIG) {
        snprintf(err, errlen, "the configuration is larger than %d bytes", ISSUER_MAX_CONFIG);
        return 0;
    }
    while (pos < n) {
        size_t len = 0;
        lineno++;
        while (pos < n && text[pos] != '\n') {
            if (len >= LINE_MAX_LEN || text[pos] == '\0') {
                snprintf(err, errlen, "line %zu: too long or holds a NUL byte", lineno);
                return 0;
            }
            line[len++] = text[pos++];
        }
        line[len] = '\0';
        pos++;
        msg[0] = '\0';
        if (!parse_line(c, line, msg, sizeof(msg))) {
            snprintf(err, errlen, "line %zu: %s", lineno, msg);
            return 0;
        }
    }
    return check_complete(c, err, errlen);
}

int issuer_config_load(const char *path, issuer_config *c, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    char *text;
    size_t n;
    int ok;

    if (f == NULL) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return 0;
    }
    text = malloc(ISSUER_MAX_CONFIG + 1);
    n = text ? fread(text, 1, ISSUER_MAX_CONFIG + 1, f) : 0;
    fclose(f);
    ok = text != NULL && issuer_config_parse(text, n, c, err, errlen);
    free(text);
    return ok;
}

const issuer_profile *issuer_config_profile(const issuer_config *c, const char *name)
{
    size_t i;

    for (i = 0; i < c->nprofiles; i++)
        if (strcmp(c->profiles[i].name, name) == 0)
            return &c->profiles[i];
    return NULL;
}
