/*
 * The forked-worker attack on sksd (test_sksd_security.py): a root process loads a key
 * through the sks provider (so it holds an administrator's connection to sksd), signs,
 * forks; the child drops to UID:GID, then writes raw exportKey and deleteKey frames for
 * HANDLE to every socket among its descriptors (/proc/self/fd), before and after signing
 * with the key through the provider on a connection of its own.
 *
 *   sks_fork_attack URI HANDLE UID GID    (providers: default and sks; OPENSSL_MODULES)
 *
 * Prints one line per attempt. Exit status: 0 every attempt refused or the descriptor
 * closed, and the child signed; 3 an attempt succeeded; 4 the child could not sign;
 * 1 setup failed.
 */
#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/provider.h>
#include <openssl/store.h>

#include "store_key.h"

static int sign(EVP_PKEY *key, const char *msg)
{
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    unsigned char sig[1024];
    size_t len = sizeof(sig);
    int ok = m != NULL && EVP_DigestSignInit(m, NULL, EVP_sha256(), NULL, key) == 1
             && EVP_DigestSign(m, sig, &len, (const unsigned char *)msg, strlen(msg)) == 1;

    EVP_MD_CTX_free(m);
    if (!ok)
        ERR_print_errors_fp(stdout);
    return ok;
}

/* One frame: method byte, uint handle, byte[] authorization (empty). */
static int send_call(int fd, uint8_t method, uint32_t handle)
{
    uint8_t f[4 + 1 + 4 + 2] = { 0, 0, 0, 7, method, (uint8_t)(handle >> 24), (uint8_t)(handle >> 16),
                                 (uint8_t)(handle >> 8), (uint8_t)handle, 0, 0 };

    return send(fd, f, sizeof(f), MSG_NOSIGNAL) == (ssize_t)sizeof(f);
}

/* The reply's status byte; -1 if the descriptor is closed or nothing came within 3 s. */
static int reply_status(int fd)
{
    uint8_t buf[5];
    size_t got = 0;

    while (got < sizeof(buf)) {
        struct pollfd p = { fd, POLLIN, 0 };
        ssize_t r;
        if (poll(&p, 1, 3000) != 1)
            return -1;
        r = recv(fd, buf + got, sizeof(buf) - got, 0);
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    /* Drain the rest of the reply, so the stream stays in step for the provider. */
    {
        uint32_t n = ((uint32_t)buf[0] << 24) | ((uint32_t)buf[1] << 16) | ((uint32_t)buf[2] << 8) | buf[3];
        uint8_t sink[4096];
        size_t left = n - 1;
        while (left > 0) {
            ssize_t r = recv(fd, sink, left < sizeof(sink) ? left : sizeof(sink), 0);
            if (r <= 0)
                break;
            left -= (size_t)r;
        }
    }
    return buf[4];
}

/* Tries exportKey (81) and deleteKey (80) on every socket; the number that succeeded. */
static int attack_every_socket(uint32_t handle, const char *when)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int wins = 0, sockets = 0;

    if (d == NULL)
        return 1;
    while ((e = readdir(d)) != NULL) {
        struct stat st;
        int fd = atoi(e->d_name);
        if (e->d_name[0] == '.' || fd == dirfd(d) || fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode))
            continue;
        sockets++;
        for (uint8_t method = 81; method >= 80; method--) {
            int status = send_call(fd, method, handle) ? reply_status(fd) : -1;
            printf("%s: fd %d method %u: %s (status %d)\n", when, fd, method,
                   status == 0 ? "SUCCEEDED" : status < 0 ? "closed" : "refused", status);
            wins += status == 0;
        }
    }
    closedir(d);
    printf("%s: %d sockets\n", when, sockets);
    return wins;
}

/* Is the shared-memory channel with sksd (transport/channel.c) mapped in this process? */
static int channel_mapped(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    int found = 0;

    if (f == NULL)
        return 0;
    while (fgets(line, sizeof(line), f) != NULL)
        found |= strstr(line, "sksd-channel") != NULL;
    fclose(f);
    return found;
}

/* The parent's channel must not be mapped in the child: a request posted there would run
 * with the parent's rights. 1 if it is. */
static int inherited_channel(void)
{
    if (!channel_mapped())
        return 0;
    printf("inherited: the parent's channel mapping SUCCEEDED\n");
    return 1;
}

static int child(EVP_PKEY *key, uint32_t handle, uid_t uid, gid_t gid)
{
    int wins;

    if (setgroups(0, NULL) != 0 || setgid(gid) != 0 || setuid(uid) != 0) {
        printf("cannot drop privileges: %s\n", strerror(errno));
        return 1;
    }
    wins = inherited_channel();
    wins += attack_every_socket(handle, "inherited");
    if (!sign(key, "signed by the child")) {
        printf("the child cannot sign\n");
        return 4;
    }
    printf("the child signed on its own connection\n");
    wins += attack_every_socket(handle, "own");
    return wins > 0 ? 3 : 0;
}

int main(int argc, char **argv)
{
    EVP_PKEY *key;
    pid_t pid;
    int status;

    if (argc != 5) {
        fprintf(stderr, "usage: sks_fork_attack URI HANDLE UID GID\n");
        return 1;
    }
    if (OSSL_PROVIDER_load(NULL, "default") == NULL || OSSL_PROVIDER_load(NULL, "sks") == NULL
        || (key = load_key(argv[1])) == NULL || !sign(key, "signed by root")) {
        ERR_print_errors_fp(stdout);
        printf("setup failed\n");
        return 1;
    }
    if (channel_mapped())
        printf("the parent has a shared-memory channel\n");
    fflush(NULL);
    pid = fork();
    if (pid < 0)
        return 1;
    if (pid == 0) {
        int rc = child(key, (uint32_t)strtoul(argv[2], NULL, 10), (uid_t)atoi(argv[3]), (gid_t)atoi(argv[4]));
        fflush(NULL);
        _exit(rc);
    }
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
        return 1;
    /* The parent's own connection still works. */
    if (!sign(key, "signed by root after the child")) {
        printf("the parent cannot sign after the child\n");
        return 1;
    }
    EVP_PKEY_free(key);
    return WEXITSTATUS(status);
}
