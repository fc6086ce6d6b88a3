/* The store's files for the fuzz targets that work on a copy of a template store
 * (fuzz_wire_provisioned, fuzz_provisioning): a fresh copy per input that changed it, so
 * every input finds the same store and replays the same way. */
#ifndef SKS_FUZZ_STORE_FILES_H
#define SKS_FUZZ_STORE_FILES_H

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A fuzz target cannot go on without its store: say why and stop. */
static inline void fuzz_store_die(const char *path)
{
    fprintf(stderr, "fuzz: %s: %s\n", path, strerror(errno));
    abort();
}

static inline void fuzz_store_copy_file(const char *from_dir, const char *to_dir, const char *name)
{
    char from[4200], to[4200], buf[65536];
    ssize_t n;
    int in, out;

    snprintf(from, sizeof(from), "%s/%s", from_dir, name);
    snprintf(to, sizeof(to), "%s/%s", to_dir, name);
    if ((in = open(from, O_RDONLY | O_CLOEXEC)) < 0)
        fuzz_store_die(from);
    if ((out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0)
        fuzz_store_die(to);
    while ((n = read(in, buf, sizeof(buf))) > 0)
        if (write(out, buf, (size_t)n) != n)
            fuzz_store_die(to);
    if (n < 0)
        fuzz_store_die(from);
    close(in);
    close(out);
}

/* dir/store.db and its master key file, from the template directory. */
static inline void fuzz_store_copy(const char *from_dir, const char *to_dir)
{
    fuzz_store_copy_file(from_dir, to_dir, "store.db");
    fuzz_store_copy_file(from_dir, to_dir, "store.db.key");
}

/* Every file of dir/store.db: the database, SQLite's companions, the change counter, the key. */
static inline void fuzz_store_remove(const char *dir)
{
    static const char *const SUFFIXES[] = { "", "-wal", "-shm", "-journal", ".gen", ".key" };
    char path[4200];
    size_t i;

    for (i = 0; i < sizeof(SUFFIXES) / sizeof(SUFFIXES[0]); i++) {
        snprintf(path, sizeof(path), "%s/store.db%s", dir, SUFFIXES[i]);
        unlink(path);
    }
}

#endif
