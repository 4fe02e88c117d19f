/* Which cached tasks go, as a decision separated from I/O (cache_gc.c applies it).
 *
 * Given every task's bytes of task data, last access and whether it is in use, the limits
 * and the time: a task not used for the TTL goes; then, while the task data is over the
 * limit, the least recently used tasks go until it is back under it. A task in use (a
 * download running, a local client holding it, an upload in progress, a piece being
 * written) never goes, whatever the limits say. Without a limit (0) the data dir's
 * filesystem decides: above DMF_EVICT_HIGH_PCT % used, tasks go until DMF_EVICT_LOW_PCT %
 * would be used, counting only what this daemon's own tasks free. A write that failed for
 * want of space asks for `need` more bytes besides. A failed task that holds no piece goes
 * at once (its row and empty file are all that is left); one with pieces stays to resume
 * from for DMF_EVICT_FAILED_GRACE without use (or the TTL, if shorter), and goes before any
 * other when room is needed. Pure: no clock, no disk. */
#ifndef DMF_EVICT_H
#define DMF_EVICT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DMF_EVICT_HIGH_PCT     80
#define DMF_EVICT_LOW_PCT      70
#define DMF_EVICT_FAILED_GRACE (10 * 60 * 1000) /* ms a failed task's pieces wait for a retry */

struct dmf_evict_task {
    uint64_t bytes;   /* task data held */
    int64_t accessed; /* last use, ms (wall clock) */
    bool in_use;
    bool failed; /* its last download failed */
};

struct dmf_evict_policy {
    uint64_t limit;            /* bytes of task data; 0: by the filesystem */
    uint64_t fs_size, fs_free; /* of the data dir's filesystem, bytes (used when limit is 0) */
    uint64_t need;             /* bytes to free besides (a write found the disk full) */
    int64_t now;               /* ms, the clock of accessed */
    uint64_t ttl;              /* ms without use before a task goes; 0: no TTL */
};

enum dmf_evict_reason {
    DMF_EVICT_KEEP,
    DMF_EVICT_EXPIRED, /* unused for the TTL */
    DMF_EVICT_SPACE,   /* over the limit (or the filesystem's watermark, or a full disk) */
    DMF_EVICT_FAILED,  /* its download failed: no piece, or no retry within the grace */
};

const char *dmf_evict_reason_name(enum dmf_evict_reason r);

/* Room kept free besides what a download needs (SQLite's journal grows too). */
#define DMF_EVICT_ROOM_MARGIN (1u << 20)

/* A write found the disk full and wants `want` bytes, with fs_free free now: the bytes to
 * evict (0 when the space is there already, freed by another eviction meanwhile). */
uint64_t dmf_evict_room_needed(uint64_t want, uint64_t fs_free);

/* Bytes to free from total bytes of task data under policy p (the excess over the limit or
 * the low watermark, plus need). */
uint64_t dmf_evict_excess(uint64_t total, const struct dmf_evict_policy *p);

/* Decides for each of the n tasks: out[i] is its reason to go, or KEEP. Returns how many
 * go; *freed gets their bytes (may be NULL). The excess may stay above zero when the tasks
 * that could go are not enough (the rest are in use). */
size_t dmf_evict_plan(const struct dmf_evict_task *tasks, size_t n,
                      const struct dmf_evict_policy *p, enum dmf_evict_reason *out,
                      uint64_t *freed);

#endif
