/*
 * sks-issuer's configuration file (docs/skip-issuer.md): "key = value" lines, '#' comments,
 * and [profile NAME] sections. Bounded: at most 64 KiB, lines of 1 KiB, 16 profiles, 32 keys
 * per profile, 8 recovery certificates per profile.
 */
#ifndef SKS_ISSUER_CONFIG_H
#define SKS_ISSUER_CONFIG_H

#include <stddef.h>

#include "../../cms/skip_common.h"
#include "../sks/skip_build.h"

#define ISSUER_MAX_PROFILES 16
#define ISSUER_MAX_RECOVERY 8
#define ISSUER_MAX_CONFIG (64 * 1024)
#define ISSUER_PATH_MAX 512

enum { AUTH_TOKEN = 1, AUTH_CERT = 2 };

typedef struct {
    char name[64];
    char subject[256];                     /* base DN of every certificate; CN = device name */
    skip_build_key keys[SKIP_MAX_KEYS];
    char key_type[SKIP_MAX_KEYS][24];      /* the configured type name, for the log */
    char labels[SKIP_MAX_KEYS][64];
    size_t nkeys;
    int aes_bits;
    char recovery[ISSUER_MAX_RECOVERY][ISSUER_PATH_MAX];
    size_t nrecovery;
} issuer_profile;

typedef struct {
    char ca_key[ISSUER_PATH_MAX];
    char ca_cert[ISSUER_PATH_MAX];
    char database[ISSUER_PATH_MAX];
    char archive[ISSUER_PATH_MAX];
    char log[ISSUER_PATH_MAX];
    int auth;                              /* AUTH_TOKEN | AUTH_CERT */
    char cert_profile[64];                 /* the profile of TLS client certificate enrolments */
    unsigned rate_limit;                   /* requests per minute, per token and per source */
    long package_lifetime;                 /* seconds a package waits for its confirmation */
    int days;
    issuer_profile profiles[ISSUER_MAX_PROFILES];
    size_t nprofiles;
} issuer_config;

/* Parses text (not NUL-terminated, n bytes); 0 with "line N: ..." in err. */
int issuer_config_parse(const char *text, size_t n, issuer_config *c, char *err, size_t errlen);
/* Reads and parses a file. */
int issuer_config_load(const char *path, issuer_config *c, char *err, size_t errlen);

const issuer_profile *issuer_config_profile(const issuer_config *c, const char *name);

#endif
