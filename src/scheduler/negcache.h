/* The scheduler's negative cache: tasks whose fetch from the origin failed for good (a
 * 4xx, content that does not match its digest), remembered with the reason for a short
 * time, so that the next registrants are told at once instead of each asking the origin
 * (or a seed) again. Entries expire after the TTL, oldest first; at most `max` are kept
 * (the oldest goes first). Time is passed in: no clock of its own. */
#ifndef DMF_SCHED_NEGCACHE_H
#define DMF_SCHED_NEGCACHE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include "scheduler/strmap.h"

#define DMF_NEGCACHE_REASON_MAX 512

struct dmf_negcache_entry {
    char *task_id; /* owned; the map's key */
    char reason[DMF_NEGCACHE_REASON_MAX];
    uint32_t origin_status; /* the origin's HTTP status, 0 when it is not why */
    uint64_t expires;
    TAILQ_ENTRY(dmf_negcache_entry) link; /* oldest first = soonest to expire */
};

struct dmf_negcache {
    dmf_strmap_t map;
    TAILQ_HEAD(, dmf_negcache_entry) order;
    size_t n, max;
    uint64_t ttl_ms;
};

/* An empty cache; ttl_ms 0 keeps nothing. */
void dmf_negcache_init(struct dmf_negcache *nc, uint64_t ttl_ms, size_t max);
void dmf_negcache_free(struct dmf_negcache *nc);
/* Remembers that task_id failed (replacing an older entry), until now + ttl. */
void dmf_negcache_put(struct dmf_negcache *nc, const char *task_id, uint32_t origin_status,
                      const char *reason, uint64_t now);
/* The live entry of task_id, or NULL (expired entries are dropped on the way). Borrowed
 * until the next put or get. */
const struct dmf_negcache_entry *dmf_negcache_get(struct dmf_negcache *nc, const char *task_id,
                                                  uint64_t now);

#endif
