/* Reading keys and certificates from files (PEM, PKCS#12) and writing secrets safely. */
#ifndef SKS_TOOL_FILES_H
#define SKS_TOOL_FILES_H

#include <stddef.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

/* The first PEM private key in path; pass decrypts it. With pass NULL an encrypted key's
 * pass phrase is asked on the terminal (no echo) if standard input is one. */
EVP_PKEY *files_read_key(const char *path, const char *pass, char *err, size_t errlen);

/* Every PEM certificate in path, in file order (at least one). */
STACK_OF(X509) *files_read_certs(const char *path, char *err, size_t errlen);

/* A PKCS#12 file: its private key, its certificate and the other certificates. pass may be
 * NULL (no password, else asked on the terminal as for files_read_key). */
int files_read_pkcs12(const char *path, const char *pass, EVP_PKEY **key, X509 **cert, STACK_OF(X509) **chain,
                      char *err, size_t errlen);

#include <stdint.h>

/* Up to size bytes of path ("-": standard input) into buf, *n how many there were; 0 with a
 * message if it cannot be opened or read. Files whose parser judges the length (share files). */
int files_read_upto(const char *path, uint8_t *buf, size_t size, size_t *n, char *err, size_t errlen);

/* The whole of path (a file, not "-") into buf: 0 with a message also if it is empty or holds
 * size bytes or more (buf is sized one byte above the largest file the command takes). */
int files_read_whole(const char *path, uint8_t *buf, size_t size, size_t *n, char *err, size_t errlen);

/* Creates path (refusing to overwrite) with mode 0600 and writes data; 0 with a message. */
int files_write_new(const char *path, const void *data, size_t n, char *err, size_t errlen);

#endif
