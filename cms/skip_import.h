/*
 * Importing a verified SKIP package into a device (docs/skip.md): find the pending
 * skipRequest the package answers, hand the whole package to skipImport (the device verifies
 * it again against the request's anchors), or recognise a
 * package that is already in the store. Shared by `sks skip import` and the provider's
 * SKIP decoder, over any sks_transport.
 */
#ifndef SKS_SKIP_IMPORT_H
#define SKS_SKIP_IMPORT_H

#include "../client/sks_client.h"
#include "skip_common.h"
#include "skip_package.h"

typedef struct {
    size_t count;                      /* keys of the package, in container order */
    uint32_t handles[SKIP_MAX_KEYS];
    int already;                       /* 1: they were all in the store; nothing changed */
    uint32_t session;                  /* the request the package answered (0 if already) */
} skip_import_result;

/* p must have passed skip_package_verify. 1 on success (imported now or before); 0 with
 * a message in err. */
int skip_import(sks_transport *t, const skip_package *p, skip_import_result *res, char *err, size_t errlen);

#endif
