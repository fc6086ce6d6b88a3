/*
 * The benchmark's outside peer for "a key held by another process": OpenSSH's ssh-agent
 * (Debian's openssh-client), spoken to over its Unix socket with the agent protocol
 * (draft-miller-ssh-agent: REQUEST_IDENTITIES, SIGN_REQUEST). sks_bench signs with the same
 * P-256 key through it beside sksd, so the cost of the process boundary on the machine is
 * measured by a program this project did not write, in the same run.
 */
#ifndef SKS_BENCH_AGENT_PEER_H
#define SKS_BENCH_AGENT_PEER_H

#include <stddef.h>

#include <openssl/evp.h>

typedef struct {
    int fd;
    unsigned char blob[256]; /* the key's public blob as the agent lists it */
    size_t blob_len;
    unsigned char *buf;      /* request and reply buffer */
    size_t cap;
} agent_peer;

/* Connects to the agent at sock and finds the identity whose public key is key's (P-256).
 * 1 on success; 0 with the reason in why (n bytes). */
int agent_open(agent_peer *a, const char *sock, EVP_PKEY *key, char *why, size_t n);

/* One ECDSA P-256 signature (SHA-256) of msg by the agent. With check set, the signature is
 * verified with key by OpenSSL's default provider. 1 on success; 0 with the reason in why. */
int agent_sign(agent_peer *a, const unsigned char *msg, size_t len, EVP_PKEY *key, int check, char *why, size_t n);

void agent_close(agent_peer *a);

#endif
