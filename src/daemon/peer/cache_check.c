/* Decisions on a task's cached bytes, and the hashing they need; see cache_check.h. */
#include "daemon/peer/cache_check.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util.h"

DMF_METRIC_COUNTER(dmf_m_cache_verified, "damselfly_cache_pieces_verified_total", NULL,
                   "Cached pieces hashed against their digest before they were used (after a "
                   "restart, or after the data file changed).");
DMF_METRIC_COUNTER(dmf_m_cache_failures, "damselfly_cache_verify_failures_total", NULL,
                   "Cached pieces that no longer matched their digest, or were missing from "
                   "the data file, and were dropped to be fetched again.");

#define SCAN_CHUNK (1u << 20)

void dmf_cache_init(struct dmf_cache_state *c)
{
    memset(c, 0, sizeof(*c));
    dmf_bitmap_init(&c->verified);
}

void dmf_cache_free(struct dmf_cache_state *c)
{
    dmf_bitmap_free(&c->verified);
}

struct dmf_file_mark dmf_cache_mark_of(const struct stat *st)
{
    return (struct dmf_file_mark){
        .dev = st->st_dev,
        .ino = st->st_ino,
        .size = st->st_size,
        .mtime = st->st_mtim,
        .ctime = st->st_ctim,
        .nlink = st->st_nlink,
    };
}

static bool ts_equal(struct timespec a, struct timespec b)
{
    return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

enum dmf_cache_change dmf_cache_compare(const struct dmf_file_mark *was,
                                        const struct dmf_file_mark *now)
{
    if (now->nlink == 0)
        return DMF_CACHE_GONE;
    if (was->dev != now->dev || was->ino != now->ino || was->size != now->size ||
        !ts_equal(was->mtime, now->mtime) || !ts_equal(was->ctime, now->ctime))
        return DMF_CACHE_CHANGED;
    return DMF_CACHE_SAME;
}

bool dmf_cache_piece_within(int64_t content_length, uint32_t piece_length, uint32_t n,
                            uint64_t size)
{
    if (piece_length == 0)
        return false;
    uint64_t len =
        content_length >= 0 ? dmf_piece_size(content_length, piece_length, n) : piece_length;
    return dmf_piece_offset(piece_length, n) + len <= size;
}

bool dmf_cache_must_detach(nlink_t nlink)
{
    return nlink > 1;
}

int dmf_cache_hash_piece(int fd, int64_t content_length, uint32_t piece_length, uint32_t n,
                         const uint8_t digest[DMF_SHA256_LEN])
{
    uint64_t len =
        content_length >= 0 ? dmf_piece_size(content_length, piece_length, n) : piece_length;
    uint8_t got[DMF_SHA256_LEN];
    int e = dmf_sha256_fd(fd, dmf_piece_offset(piece_length, n), len, got);
    if (e != 0)
        return e;
    return memcmp(got, digest, DMF_SHA256_LEN) == 0 ? 0 : -EBADMSG;
}

void dmf_cache_scan_run(struct dmf_cache_scan *s)
{
    uint32_t total = dmf_piece_count(s->content_length, s->piece_length);
    s->pieces = dmf_xcalloc(total ? total : 1, DMF_SHA256_LEN);
    dmf_sha256_ctx_t *whole = dmf_sha256_new(), *piece = dmf_sha256_new();
    uint8_t *buf = dmf_xmalloc(SCAN_CHUNK);
    uint64_t off = 0;
    bool eof = false;
    for (uint32_t n = 0; n < total && s->err == 0 && !eof; n++) {
        uint64_t end = off + dmf_piece_size(s->content_length, s->piece_length, n);
        while (off < end) {
            if (s->cancel != NULL && __atomic_load_n(s->cancel, __ATOMIC_RELAXED) != 0) {
                s->err = -ECANCELED;
                break;
            }
            ssize_t r = pread(s->fd, buf, (size_t)DMF_MIN(end - off, SCAN_CHUNK), (off_t)off);
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0)
                s->err = -errno;
            if (r <= 0) {
                eof = true;
                break;
            }
            dmf_sha256_update(whole, buf, (size_t)r);
            dmf_sha256_update(piece, buf, (size_t)r);
            off += (uint64_t)r;
        }
        dmf_sha256_final(piece, s->pieces[n]);
    }
    s->readable = off;
    dmf_sha256_final(whole, s->whole);
    dmf_sha256_free(whole);
    dmf_sha256_free(piece);
    free(buf);
}

void dmf_cache_scan_free(struct dmf_cache_scan *s)
{
    free(s->pieces);
    s->pieces = NULL;
}
