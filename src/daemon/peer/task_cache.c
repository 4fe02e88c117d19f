/* A task's trust in its cached pieces, applied; see task_cache.h and cache_check.h. */
#include "daemon/peer/task_cache.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "common/log.h"
#include "common/util.h"

void dmf_task_cache_mark(const struct dmf_task_cache *c)
{
    struct stat st;
    int fd = dmf_data_file_fd(c->file);
    if (fd < 0 || fstat(fd, &st) != 0) {
        c->state->marked = false;
        return;
    }
    c->state->mark = dmf_cache_mark_of(&st);
    c->state->marked = true;
}

/* Forgets held piece n (it failed, or is not in the file any more). */
static void drop_piece(const struct dmf_task_cache *c, uint32_t n)
{
    /* Nothing refetches a task nobody downloads: its children's /have streams end, so that
     * they take the rest elsewhere (the next local request fetches it again here). */
    if (!c->running && c->pieces)
        dmf_piece_server_notify_gone(c->pieces, c->id);
    dmf_store_piece_drop(c->store, c->id, n);
    dmf_book_drop(c->book, n);
    dmf_bitmap_clear(&c->state->verified, n);
    dmf_metric_add(&dmf_m_cache_failures, 1);
}

static void drop_held(const struct dmf_task_cache *c)
{
    for (uint32_t n = 0; n < c->book->have.nbits; n++)
        if (dmf_bitmap_get(&c->book->have, n))
            drop_piece(c, n);
}

/* The data file is shared with a user's hard link (or gone): stop using it. Every piece
 * is dropped, and the task gets a fresh, empty data file. */
static void detach(const struct dmf_task_cache *c, const char *why)
{
    dmf_warn("task %s: %s: its data file is left alone and every piece fetched again", c->id, why);
    drop_held(c);
    if (c->pieces)
        dmf_piece_server_notify_gone(c->pieces, c->id); /* children stop counting on it */
    int fd = dmf_data_file_fd(c->file);
    if (fd >= 0)
        dmf_store_detach_data(c->store, c->id, fd);
    dmf_data_file_forget(c->file);
    c->state->marked = false;
    if (c->hooks->reopen(c->owner) != 0)
        dmf_warn("task %s: cannot open a fresh data file", c->id);
}

void dmf_task_cache_detach(const struct dmf_task_cache *c, const char *why)
{
    detach(c, why);
}

/* Some pieces were dropped from the data file fd: a hard-linked one is not written again. */
static void after_drops(const struct dmf_task_cache *c)
{
    struct stat st;
    int fd = dmf_data_file_fd(c->file);
    if (!c->running && fd >= 0 && fstat(fd, &st) == 0 && dmf_cache_must_detach(st.st_nlink))
        detach(c, "cached data altered in a file with another hard link (a user's output)");
}

void dmf_task_cache_opened(const struct dmf_task_cache *c, int64_t found)
{
    const struct dmf_piece_book *b = c->book;
    if (b->have.count == 0)
        return;
    uint32_t dropped = 0;
    for (uint32_t n = 0; n < b->have.nbits; n++) {
        if (!dmf_bitmap_get(&b->have, n))
            continue;
        if (found >= 0 &&
            dmf_cache_piece_within(b->content_length, b->piece_length, n, (uint64_t)found))
            continue;
        drop_piece(c, n);
        dropped++;
    }
    if (dropped)
        dmf_warn("task %s: data file %s: %u cached piece(s) dropped, to be fetched again", c->id,
                 found < 0 ? "missing" : "shorter than its pieces", dropped);
}

void dmf_task_cache_refresh(const struct dmf_task_cache *c)
{
    struct stat st;
    if (c->running)
        return;
    /* A data file closed while idle (data_file.h) is opened again here: its mark is
     * compared as for one that stayed open, so a change in between is seen. */
    int fd = c->hooks->data_fd(c->owner);
    if (fd < 0 || fstat(fd, &st) != 0)
        return;
    struct dmf_file_mark now = dmf_cache_mark_of(&st);
    if (!c->state->marked) {
        c->state->mark = now;
        c->state->marked = true;
        return;
    }
    switch (dmf_cache_compare(&c->state->mark, &now)) {
    case DMF_CACHE_SAME:
        return;
    case DMF_CACHE_GONE:
        detach(c, "data file removed from the data dir");
        return;
    case DMF_CACHE_CHANGED:
        break;
    }
    dmf_info("task %s: data file changed since the daemon wrote it: its pieces are verified "
             "again before use",
             c->id);
    dmf_bitmap_free(&c->state->verified);
    dmf_bitmap_init(&c->state->verified);
    c->state->mark = now;
    uint32_t dropped = 0;
    const struct dmf_piece_book *b = c->book;
    for (uint32_t n = 0; n < b->have.nbits; n++) {
        if (dmf_bitmap_get(&b->have, n) &&
            !dmf_cache_piece_within(b->content_length, b->piece_length, n, (uint64_t)st.st_size)) {
            drop_piece(c, n);
            dropped++;
        }
    }
    if (dropped) {
        dmf_warn("task %s: data file truncated: %u cached piece(s) dropped", c->id, dropped);
        after_drops(c);
    }
}

bool dmf_task_cache_needs_check(const struct dmf_cache_state *state,
                                const struct dmf_piece_book *book)
{
    const dmf_bitmap_t *have = &book->have;
    for (uint32_t n = 0; n < have->nbits; n++)
        if (dmf_bitmap_get(have, n) && !dmf_bitmap_get(&state->verified, n))
            return true;
    return false;
}

bool dmf_task_cache_verify_piece(const struct dmf_task_cache *c, uint32_t n)
{
    dmf_task_cache_refresh(c);
    if (!dmf_bitmap_get(&c->book->have, n))
        return false;
    if (dmf_bitmap_get(&c->state->verified, n))
        return true;
    const uint8_t *want = dmf_book_digest(c->book, n);
    int fd = c->hooks->data_fd(c->owner);
    int e = !want ? -ENOENT
            : fd < 0
                ? fd
                : dmf_cache_hash_piece(fd, c->book->content_length, c->book->piece_length, n, want);
    if (e == 0) {
        dmf_bitmap_set(&c->state->verified, n);
        dmf_metric_add(&dmf_m_cache_verified, 1);
        return true;
    }
    dmf_warn("task %s: cached piece %u fails verification (%s): dropped", c->id, n,
             dmf_strerror(e));
    drop_piece(c, n);
    after_drops(c);
    return false;
}

size_t dmf_task_cache_apply_scan(const struct dmf_task_cache *c, const struct dmf_cache_scan *s)
{
    const struct dmf_piece_book *b = c->book;
    size_t bad = 0, checked = 0;
    for (uint32_t n = 0; n < b->have.nbits; n++) {
        if (!dmf_bitmap_get(&b->have, n))
            continue;
        const uint8_t *want = dmf_book_digest(b, n);
        bool ok = want && s->pieces &&
                  dmf_cache_piece_within(b->content_length, b->piece_length, n, s->readable) &&
                  memcmp(s->pieces[n], want, DMF_SHA256_LEN) == 0;
        if (ok) {
            if (!dmf_bitmap_get(&c->state->verified, n)) {
                dmf_bitmap_set(&c->state->verified, n);
                dmf_metric_add(&dmf_m_cache_verified, 1);
                c->hooks->verified(c->owner, n);
                checked++;
            }
            continue;
        }
        drop_piece(c, n);
        bad++;
    }
    if (bad) {
        dmf_warn("task %s: %zu cached piece(s) fail verification: dropped, to be fetched again",
                 c->id, bad);
        struct stat st;
        int fd = dmf_data_file_fd(c->file);
        if (fd >= 0 && fstat(fd, &st) == 0 && dmf_cache_must_detach(st.st_nlink))
            detach(c, "cached data altered in a file with another hard link (a user's output)");
    } else if (checked) {
        dmf_info("task %s: %zu cached piece(s) verified", c->id, checked);
    }
    return bad;
}
