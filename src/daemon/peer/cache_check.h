/* Whether a task's cached bytes may be trusted, as decisions separated from I/O.
 *
 * A task loaded from the store after a restart holds pieces that were verified in an
 * earlier session: they are trusted again only once hashed against their digest in this
 * one (the verified set). Without a restart, the data file's identity after the daemon's
 * own last write (its mark: inode, size, mtime and ctime, which no user can set) is
 * compared with the file before any piece is served or handed out; a change clears the
 * verified set (the pieces are hashed again before they are used), a shorter file drops
 * the pieces past its end, a file unlinked from the data dir drops them all. A data file
 * shared with a user's output by a hard link (st_nlink > 1) is never written again once
 * it is found altered: the task starts a fresh data file (detach). See
 * docs/internals/STORE.md ("Verifying the cache"). */
#ifndef DMF_CACHE_CHECK_H
#define DMF_CACHE_CHECK_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "common/digest.h"
#include "common/metrics.h"
#include "common/pieces.h"

/* What identifies a data file's contents without reading it. */
struct dmf_file_mark {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime, ctime;
    nlink_t nlink; /* not compared: 0 means unlinked, > 1 shared by a hard link */
};

/* The trust a task gives its cached pieces in this session. */
struct dmf_cache_state {
    dmf_bitmap_t verified; /* held pieces hashed against their digest in this session */
    bool marked;           /* mark is valid */
    struct dmf_file_mark mark;
};

/* Pieces hashed against their digest, and those that failed (the task drops them). */
extern struct dmf_metric dmf_m_cache_verified, dmf_m_cache_failures;

void dmf_cache_init(struct dmf_cache_state *c);
void dmf_cache_free(struct dmf_cache_state *c);
/* The mark of st. */
struct dmf_file_mark dmf_cache_mark_of(const struct stat *st);

/* What a look at the data file found (pure: dmf_cache_compare). */
enum dmf_cache_change {
    DMF_CACHE_SAME,    /* as the daemon left it */
    DMF_CACHE_CHANGED, /* written, touched, replaced or linked since: hash again */
    DMF_CACHE_GONE,    /* unlinked from the data dir: nothing of it counts */
};
enum dmf_cache_change dmf_cache_compare(const struct dmf_file_mark *was,
                                        const struct dmf_file_mark *now);
/* True when piece n (of the layout) lies wholly within a file of size bytes. */
bool dmf_cache_piece_within(int64_t content_length, uint32_t piece_length, uint32_t n,
                            uint64_t size);
/* After pieces were found bad (or past the end) in a file with nlink links: true when the
 * task must stop writing to it and start a fresh data file (a user's hard-linked output
 * shares the inode, and the daemon must not write into the user's file). */
bool dmf_cache_must_detach(nlink_t nlink);

/* Checks piece n's bytes at its offset in fd against digest: 0 when they match,
 * -EBADMSG when they do not, -errno when they cannot be read. Blocking (one piece). */
int dmf_cache_hash_piece(int fd, int64_t content_length, uint32_t piece_length, uint32_t n,
                         const uint8_t digest[DMF_SHA256_LEN]);

/* One pass over a whole data file (on a worker thread): the digest of every piece and of
 * the whole content, reading each byte once. */
struct dmf_cache_scan {
    int fd; /* owned by the caller */
    int64_t content_length;
    uint32_t piece_length;
    uint8_t (*pieces)[DMF_SHA256_LEN]; /* out: dmf_piece_count entries, malloc'd */
    uint8_t whole[DMF_SHA256_LEN];     /* out: valid when readable == content_length */
    uint64_t readable;                 /* out: bytes read from offset 0 before the file ended */
    int err; /* out: 0 or -errno (a read error, not a short file); -ECANCELED when stopped */
    /* When not NULL, read atomically before each chunk: nonzero stops the scan. */
    const int *cancel;
};
/* Runs the scan (blocking); s->pieces is allocated here and freed by dmf_cache_scan_free. */
void dmf_cache_scan_run(struct dmf_cache_scan *s);
void dmf_cache_scan_free(struct dmf_cache_scan *s);

#endif
