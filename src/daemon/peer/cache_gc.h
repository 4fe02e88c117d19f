/* The cache's lifecycle, applied (evict.h decides): a pass looks at every stored task's
 * bytes and last use, asks the engine which tasks are in memory and in use, and evicts
 * what the decision picks: a task in memory leaves the scheduler and is freed (the engine
 * does it, through the env), then its rows and data file go. Passes run every
 * --gc-interval, shortly after a download finishes, on demand (`damselfly cache gc`) and
 * when a write finds the disk full. A pass removes at most DMF_CACHE_GC_PASS_MAX tasks on
 * the loop and leaves the rest to the next pass (on the next loop turn), so the loop is
 * never held for long. Counts only damselfly's own task data: the store's pieces, never
 * other files in the data dir. Runs on the loop thread. */
#ifndef DMF_CACHE_GC_H
#define DMF_CACHE_GC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/metrics.h"
#include "daemon/store.h"

struct dmf_daemon;
struct dmf_cache_gc;

#define DMF_CACHE_GC_PASS_MAX 64

/* How the engine's tasks in memory are seen and let go (engine.c). */
struct dmf_cache_gc_env {
    struct dmf_daemon *d;
    /* True when task id is in memory, with *in_use (evict.h), *accessed_ms and *phase
     * ("pending", "running", "succeeded", "failed"; static) filled. */
    bool (*loaded)(void *arg, const char *id, bool *in_use, int64_t *accessed_ms,
                   const char **phase);
    /* Lets go of a task in memory that is not in use: it leaves the scheduler and is
     * freed. */
    void (*unload)(void *arg, const char *id);
    void *arg;
};

/* One task as `damselfly cache ls` shows it. */
struct dmf_cache_row {
    struct dmf_store_usage u; /* u.url owned */
    int64_t accessed_ms;
    const char *state; /* "succeeded", "running", "partial", ... (static) */
    bool in_use;
};

/* What a pass did. */
struct dmf_cache_gc_report {
    size_t evicted, expired; /* tasks evicted, of which for the TTL */
    uint64_t freed;          /* bytes of task data they held */
    size_t in_use;           /* tasks kept because they were in use */
    size_t tasks;            /* tasks left */
    uint64_t bytes;          /* bytes of task data left */
    bool more;               /* the pass stopped at DMF_CACHE_GC_PASS_MAX: another follows */
};

extern struct dmf_metric dmf_m_cache_bytes, dmf_m_cache_tasks, dmf_m_evictions_space,
    dmf_m_evictions_expired, dmf_m_evictions_failed, dmf_m_evictions_removed;

/* Makes the collector and arms its timer; env is copied. */
struct dmf_cache_gc *dmf_cache_gc_new(const struct dmf_cache_gc_env *env);
void dmf_cache_gc_free(struct dmf_cache_gc *gc);
/* Runs a pass now; need is the bytes to free besides the limits (a full disk), 0 for
 * none. Fills *r (may be NULL). Returns 0 or -EIO. */
int dmf_cache_gc_run(struct dmf_cache_gc *gc, uint64_t need, struct dmf_cache_gc_report *r);
/* A download finished: a pass runs within a second (several finishes share one). */
void dmf_cache_gc_soon(struct dmf_cache_gc *gc);
/* Removes the tasks named by what: a task id, or the URL tasks were stored for (every
 * task of that URL). *freed gets their bytes, *n how many. Returns 0, -ENOENT (none),
 * -EBUSY (one is in use: nothing is removed) or -EIO. */
int dmf_cache_gc_remove(struct dmf_cache_gc *gc, const char *what, size_t *n, uint64_t *freed);
/* Every stored task, least recently used first (free with dmf_cache_rows_free). */
int dmf_cache_gc_list(struct dmf_cache_gc *gc, struct dmf_cache_row **rows, size_t *n);
void dmf_cache_rows_free(struct dmf_cache_row *rows, size_t n);

#endif
