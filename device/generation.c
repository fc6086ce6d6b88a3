/*
 * The store's change counter, shared by every process that opens the store: an 8-byte file
 * beside the database ("<db>.gen"), mapped into memory. Writers (who hold SQLite's write
 * lock, so there is one at a time) make it odd before they change anything and even again
 * after commit or rollback, like a sequence lock. A reader that filled a cache when the
 * counter was even may use that cache for as long as the counter still has that value: no
 * change can have happened since. If a writer dies while the counter is odd, caches stay
 * unused until the next write ends, which is slower but never wrong.
 */
#include "internal.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

void gen_open(sks_device *dev, const char *db_path)
{
    char path[4200];
    struct stat st;
    void *p;
    int fd;

    dev->gen = NULL;
    if (stat(db_path, &st) != 0 || snprintf(path, sizeof(path), "%s.gen", db_path) >= (int)sizeof(path))
        return;
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, st.st_mode & 0666);
    if (fd < 0)
        return; /* no counter: every call takes the full path */
    /* Like SQLite with its -wal and -shm files: root must not leave a file the store's owner
     * cannot open. */
    if (geteuid() == 0 && fchown(fd, st.st_uid, st.st_gid) != 0) {
        close(fd);
        return;
    }
    if (fstat(fd, &st) != 0 || (st.st_size < 8 && ftruncate(fd, 8) != 0)) {
        close(fd);
        return;
    }
    p = mmap(NULL, 8, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p != MAP_FAILED)
        dev->gen = p;
}

void gen_close(sks_device *dev)
{
    if (dev->gen != NULL)
        munmap((void *)dev->gen, 8);
    dev->gen = NULL;
}

uint64_t gen_current(const sks_device *dev)
{
    return dev->gen != NULL ? __atomic_load_n(dev->gen, __ATOMIC_ACQUIRE) : 1;
}

int gen_is_stable(uint64_t g)
{
    return (g & 1) == 0;
}

void gen_write_begin(sks_device *dev)
{
    if (dev->gen != NULL)
        __atomic_store_n(dev->gen, (__atomic_load_n(dev->gen, __ATOMIC_ACQUIRE) + 2) | 1, __ATOMIC_SEQ_CST);
}

void gen_write_end(sks_device *dev)
{
    uint64_t g;

    if (dev->gen == NULL)
        return;
    g = __atomic_load_n(dev->gen, __ATOMIC_ACQUIRE);
    __atomic_store_n(dev->gen, (g | 1) + 1, __ATOMIC_SEQ_CST);
}
