/*
 * The store's version, as SQLite itself keeps it: the header of the WAL index (the -shm
 * file beside the database, https://www.sqlite.org/walformat.html), which every SQLite
 * connection of every process rewrites as the last step of each commit, under the WAL write
 * lock. Its change counter, last committed frame and WAL salts together name one committed
 * state of the database: frames are only appended within one WAL generation (salts), and a
 * new generation gets new salts. So a cache filled when the version was V may be used for
 * as long as the version is still V.
 *
 * Why this instead of a counter file of our own (the former "<db>.gen"): a separate file is
 * only bumped by writers that know about it and can write it (a group member whose umask made
 * it unwritable, the sqlite3 shell), it must be created and chowned in a directory its owner
 * controls (a symlink there made root chown any file), and its bump is a second,
 * non-atomic step after the commit. The WAL index has none of these problems: SQLite opens it
 * with O_NOFOLLOW, no commit can skip it, and it changes with the commit itself. Reading it
 * costs a 96-byte copy, as cheap as the old counter (an SQL query such as PRAGMA data_version
 * would start a read transaction, ~6 us, a quarter of a P-256 signature).
 *
 * We reach the header through SQLite's public VFS interface (xShmMap of the main database
 * file, region 0, which SQLite has mapped since the first read in WAL mode). If that is not
 * available, or the header is not of the format version we know, nothing is cached: every
 * call takes the full path, slower but never wrong.
 */
#include "internal.h"

#include <string.h>

#define WAL_INDEX_FORMAT 3007000u /* iVersion of the WAL index since SQLite 3.7.0 */
#define WAL_HDR_WORDS 12          /* one copy of the header: 48 bytes */

/* 1 if the connection is in WAL mode: only then does SQLite hold the WAL index mapped
 * (asking for it otherwise would make SQLite open a -shm file the pager does not use). */
static int in_wal_mode(sqlite3 *db)
{
    sqlite3_stmt *st = NULL;
    int wal = 0;

    if (sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        wal = sqlite3_stricmp((const char *)sqlite3_column_text(st, 0), "wal") == 0;
    sqlite3_finalize(st);
    return wal;
}

void gen_open(sks_device *dev)
{
    sqlite3_file *f = NULL;
    void volatile *region = NULL;

    dev->wal_index = NULL;
    if (!in_wal_mode(dev->db) || sqlite3_file_control(dev->db, "main", SQLITE_FCNTL_FILE_POINTER, &f) != SQLITE_OK
        || f == NULL || f->pMethods == NULL || f->pMethods->iVersion < 2 || f->pMethods->xShmMap == NULL)
        return;
    /* bExtend = 0: only an existing mapping, never a new file */
    if (f->pMethods->xShmMap(f, 0, 32768, 0, &region) != SQLITE_OK || region == NULL)
        return;
    dev->wal_index = (const volatile uint32_t *)region;
}

void gen_close(sks_device *dev)
{
    dev->wal_index = NULL; /* SQLite unmaps it when the connection closes */
}

/* The words of one copy of the header this reads (walformat.html, "The WAL-Index Header"):
 * iVersion, iChange, isInit (the first byte of word 3), mxFrame, aSalt[0], aSalt[1]. */
static const int HDR_USED[] = { 0, 2, 3, 4, 8, 9 };
#define HDR_USED_N (sizeof(HDR_USED) / sizeof(HDR_USED[0]))

int gen_current(const sks_device *dev, store_gen *g)
{
    const volatile uint32_t *h = dev->wal_index;
    uint32_t first[HDR_USED_N];
    size_t i;

    memset(g, 0, sizeof(*g));
    if (h == NULL)
        return 0;
    /* A writer stores the second copy, then the first: a word equal in both copies is that
     * word of one whole header (SQLite's own readers compare the copies the same way; only the
     * words used here need to be, and comparing just them is a tenth of a User API call's
     * overhead less). */
    for (i = 0; i < HDR_USED_N; i++)
        first[i] = h[HDR_USED[i]];
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    for (i = 0; i < HDR_USED_N; i++)
        if (h[WAL_HDR_WORDS + HDR_USED[i]] != first[i])
            return 0;
    if (first[0] != WAL_INDEX_FORMAT || ((const uint8_t *)&first[2])[0] == 0 /* isInit */)
        return 0;
    g->change = first[1];
    g->frames = first[3];
    g->salt[0] = first[4];
    g->salt[1] = first[5];
    g->valid = 1;
    return 1;
}

int gen_equal(const store_gen *a, const store_gen *b)
{
    return a->valid && b->valid && a->change == b->change && a->frames == b->frames && a->salt[0] == b->salt[0]
        && a->salt[1] == b->salt[1];
}
