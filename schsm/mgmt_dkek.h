/*
 * DKEK shares, key backup and restore on a SmartCard-HSM (issue 11): the project extensions
 * hsmDkekImportShare (213), hsmKeyDomainStatus (214), hsmWrapKey (215), hsmUnwrapKey (216) and
 * hsmGetChallenge (217) of docs/wire-format.md, registered in schsm/manage.c's method table.
 */
#ifndef SKS_SCHSM_MGMT_DKEK_H
#define SKS_SCHSM_MGMT_DKEK_H

#include "mgmt.h"

int mg_dkek_import_share(mg_call *m, sks_reader *in);
int mg_key_domain_status(mg_call *m, sks_reader *in);
int mg_wrap_key(mg_call *m, sks_reader *in);
int mg_unwrap_key(mg_call *m, sks_reader *in);
int mg_get_challenge(mg_call *m, sks_reader *in);

/*
 * A PKCS#15 private key description (as OpenSC stores in C4<kid>) for another key reference:
 * the keyReference of its commonKeyAttributes becomes kid (added if absent) and, if label is not
 * NULL, the label of its commonObjectAttributes becomes label. Everything else is copied as it
 * is. Bounded parser of outside input (a wrap file): 0 if prkd is not such a structure.
 */
int schsm_prkd_rewrite(const uint8_t *prkd, size_t n, uint8_t kid, const uint8_t *label, size_t label_len,
                       sks_buf *out);

/* The label of a PrKD (commonObjectAttributes' UTF8String), 0 if it has none. */
int schsm_prkd_label(const uint8_t *prkd, size_t n, const uint8_t **label, size_t *label_len);

#endif
