/* A task's trust in its cached pieces, applied; see task_cache.h and cache_check.h. */
#include "daemon/peer/task_cache.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "daemon/peer/task.h"
#include "daemon/store.h"

static bool running(const struct dmf_task *t)
{
    return dmf_task_state_running(t->state);
}

void dmf_task_cache_free(struct dmf_task *t)
{
    dmf_cache_free(&t->cache);
}

void dmf_task_cache_mark(struct dmf_task *t)
{
    struct stat st;
    int fd = dmf_data_file_fd(&t->file);
    if (fd < 0 || fstat(fd, &st) != 0) {
        t->cache.marked = false;
        return;
    }
    t->cache.mark = dmf_cache_mark_of(&st);
    t->cache.marked = true;
}

/* Forgets held piece n (it failed, or is not in the file any more). */
static void drop_piece(struct dmf_task *t, uint32_t n)
{
    /* Nothing refetches a task nobody downloads: its children's /have streams end, so that
     * they take the rest elsewhere (the next local request fetches it again here). */
    if (!running(t) && t->d->pieces)
        dmf_piece_server_notify_gone(t->d->pieces, t->id);
    dmf_store_piece_drop(t->d->store, t->id, n);
    dmf_book_drop(&t->book, n);
    dmf_bitmap_clear(&t->cache.verified, n);
    dmf_metric_add(&dmf_m_cache_failures, 1);
}

static void drop_held(struct dmf_task *t)
{
    for (uint32_t n = 0; n < t->book.have.nbits; n++)
        if (dmf_bitmap_get(&t->book.have, n))
            drop_piece(t, n);
}

/* The data file is shared with a user's hard link (or gone): stop using it. Every piece
 * is dropped, and the task gets a fresh, empty data file. */
static void detach(struct dmf_task *t, const char *why)
{
    dmf_warn("task %s: %s: its data file is left alone and every piece fetched again", t->id, why);
    drop_held(t);
    if (t->d->pieces)
        dmf_piece_server_notify_gone(t->d->pieces, t->id); /* children stop counting on it */
    int fd = dmf_data_file_fd(&t->file);
    if (fd >= 0)
        dmf_store_detach_data(t->d->store, t->id, fd);
    dmf_data_file_forget(&t->file);
    t->cache.marked = false;
    if (dmf_task_ensure_data(t) != 0)
        dmf_warn("task %s: cannot open a fresh data file", t->id);
}

void dmf_task_cache_detach(struct dmf_task *t, const char *why)
{
    detach(t, why);
}

/* Some pieces were dropped from the data file fd: a hard-linked one is not written again. */
static void after_drops(struct dmf_task *t)
{
    struct stat st;
    int fd = dmf_data_file_fd(&t->file);
    if (!running(t) && fd >= 0 && fstat(fd, &st) == 0 && dmf_cache_must_detach(st.st_nlink))
        detach(t, "cached data altered in a file with another hard link (a user's output)");
}

void dmf_task_cache_opened(struct dmf_task *t, int64_t found)
{
    const struct dmf_piece_book *b = &t->book;
    if (b->have.count == 0)
        return;
    uint32_t dropped = 0;
    for (uint32_t n = 0; n < b->have.nbits; n++) {
        if (!dmf_bitmap_get(&b->have, n))
            continue;
        if (found >= 0 &&
            dmf_cache_piece_within(b->content_length, b->piece_length, n, (uint64_t)found))
            continue;
        drop_piece(t, n);
        dropped++;
    }
    if (dropped)
        dmf_warn("task %s: data file %s: %u cached piece(s) dropped, to be fetched again", t->id,
                 found < 0 ? "missing" : "shorter than its pieces", dropped);
}

void dmf_task_cache_refresh(struct dmf_task *t)
{
    struct stat st;
    if (running(t))
        return;
    /* A data file closed while idle (data_file.h) is opened again here: its mark is
     * compared as for one that stayed open, so a change in between is seen. */
    int fd = dmf_task_data_fd(t);
    if (fd < 0 || fstat(fd, &st) != 0)
        return;
    struct dmf_file_mark now = dmf_cache_mark_of(&st);
    if (!t->cache.marked) {
        t->cache.mark = now;
        t->cache.marked = true;
        return;
    }
    switch (dmf_cache_compare(&t->cache.mark, &now)) {
    case DMF_CACHE_SAME:
        return;
    case DMF_CACHE_GONE:
        detach(t, "data file removed from the data dir");
        return;
    case DMF_CACHE_CHANGED:
        break;
    }
    dmf_info("task %s: data file changed since the daemon wrote it: its pieces are verified "
             "again before use",
             t->id);
    dmf_bitmap_free(&t->cache.verified);
    dmf_bitmap_init(&t->cache.verified);
    t->cache.mark = now;
    uint32_t dropped = 0;
    const struct dmf_piece_book *b = &t->book;
    for (uint32_t n = 0; n < b->have.nbits; n++) {
        if (dmf_bitmap_get(&b->have, n) &&
            !dmf_cache_piece_within(b->content_length, b->piece_length, n, (uint64_t)st.st_size)) {
            drop_piece(t, n);
            dropped++;
        }
    }
    if (dropped) {
        dmf_warn("task %s: data file truncated: %u cached piece(s) dropped", t->id, dropped);
        after_drops(t);
    }
}

bool dmf_task_cache_needs_check(const struct dmf_task *t)
{
    const dmf_bitmap_t *have = &t->book.have;
    for (uint32_t n = 0; n < have->nbits; n++)
        if (dmf_bitmap_get(have, n) && !dmf_bitmap_get(&t->cache.verified, n))
            return true;
    return false;
}

bool dmf_task_cache_verify_piece(struct dmf_task *t, uint32_t n)
{
    dmf_task_cache_refresh(t);
    if (!dmf_bitmap_get(&t->book.have, n))
        return false;
    if (dmf_bitmap_get(&t->cache.verified, n))
        return true;
    const uint8_t *want = dmf_book_digest(&t->book, n);
    int fd = dmf_task_data_fd(t);
    int e = !want ? -ENOENT
            : fd < 0
                ? fd
                : dmf_cache_hash_piece(fd, t->book.content_length, t->book.piece_length, n, want);
    if (e == 0) {
        dmf_bitmap_set(&t->cache.verified, n);
        dmf_metric_add(&dmf_m_cache_verified, 1);
        return true;
    }
    dmf_warn("task %s: cached piece %u fails verification (%s): dropped", t->id, n,
             dmf_strerror(e));
    drop_piece(t, n);
    after_drops(t);
    return false;
}

size_t dmf_task_cache_apply_scan(struct dmf_task *t, const struct dmf_cache_scan *s)
{
    const struct dmf_piece_book *b = &t->book;
    size_t bad = 0, checked = 0;
    for (uint32_t n = 0; n < b->have.nbits; n++) {
        if (!dmf_bitmap_get(&b->have, n))
            continue;
        const uint8_t *want = dmf_book_digest(b, n);
        bool ok = want && s->pieces &&
                  dmf_cache_piece_within(b->content_length, b->piece_length, n, s->readable) &&
                  memcmp(s->pieces[n], want, DMF_SHA256_LEN) == 0;
        if (ok) {
            if (!dmf_bitmap_get(&t->cache.verified, n)) {
                dmf_bitmap_set(&t->cache.verified, n);
                dmf_metric_add(&dmf_m_cache_verified, 1);
                dmf_task_note_verified(t, n);
                checked++;
            }
            continue;
        }
        drop_piece(t, n);
        bad++;
    }
    if (bad) {
        dmf_warn("task %s: %zu cached piece(s) fail verification: dropped, to be fetched again",
                 t->id, bad);
        struct stat st;
        int fd = dmf_data_file_fd(&t->file);
        if (fd >= 0 && fstat(fd, &st) == 0 && dmf_cache_must_detach(st.st_nlink))
            detach(t, "cached data altered in a file with another hard link (a user's output)");
    } else if (checked) {
        dmf_info("task %s: %zu cached piece(s) verified", t->id, checked);
    }
    return bad;
}

int dmf_task_open_read(struct dmf_task *t)
{
    int dfd = dmf_task_data_fd(t);
    if (dfd < 0)
        return dfd;
    /* Through /proc: a read-only open of the very inode the task writes, whatever its
     * path has become. */
    char proc[64];
    snprintf(proc, sizeof(proc), "/proc/self/fd/%d", dfd);
    int fd = open(proc, O_RDONLY | O_CLOEXEC);
    return fd >= 0 ? fd : -errno;
}
