/* The cache's lifecycle, applied; see cache_gc.h and evict.h. */
#include "daemon/peer/cache_gc.h"

#include <errno.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

#include "common/evx.h"
#include "common/log.h"
#include "common/taskid.h"
#include "common/util.h"
#include "daemon/daemon.h"
#include "daemon/peer/evict.h"

DMF_METRIC_GAUGE(dmf_m_cache_bytes, "damselfly_cache_bytes", NULL,
                 "Bytes of task data in the cache (pieces held; not the database).");
DMF_METRIC_GAUGE(dmf_m_cache_tasks, "damselfly_cache_tasks", NULL, "Tasks in the cache.");
DMF_METRIC_COUNTER(dmf_m_evictions_space, "damselfly_cache_evictions_total", "reason=\"space\"",
                   "Tasks evicted from the cache, by reason.");
DMF_METRIC_COUNTER(dmf_m_evictions_expired, "damselfly_cache_evictions_total", "reason=\"expired\"",
                   "Tasks evicted from the cache, by reason.");
DMF_METRIC_COUNTER(dmf_m_evictions_failed, "damselfly_cache_evictions_total", "reason=\"failed\"",
                   "Tasks evicted from the cache, by reason.");
DMF_METRIC_COUNTER(dmf_m_evictions_removed, "damselfly_cache_evictions_total", "reason=\"removed\"",
                   "Tasks evicted from the cache, by reason.");

#define SOON_MS 1000 /* a pass after a finished download, at most this late */

struct dmf_cache_gc {
    struct dmf_cache_gc_env env;
    struct event *timer; /* the periodic pass, or the next one soon */
    uint64_t due_ms;     /* when it fires (dmf_now_ms) */
};

static void arm(struct dmf_cache_gc *gc, uint64_t ms)
{
    struct timeval tv = dmf_timeval_ms(ms);
    evtimer_add(gc->timer, &tv);
    gc->due_ms = dmf_now_ms() + ms;
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct dmf_cache_gc *gc = arg;
    struct dmf_cache_gc_report r;
    if (dmf_cache_gc_run(gc, 0, &r) == 0 && r.more)
        arm(gc, 0); /* the rest on the next loop turn */
    else
        arm(gc, gc->env.d->cfg.gc_interval);
}

struct dmf_cache_gc *dmf_cache_gc_new(const struct dmf_cache_gc_env *env)
{
    struct dmf_cache_gc *gc = dmf_xcalloc(1, sizeof(*gc));
    gc->env = *env;
    gc->timer = dmf_xevtimer_new(env->d->base, on_timer, gc);
    arm(gc, env->d->cfg.gc_interval);
    return gc;
}

void dmf_cache_gc_free(struct dmf_cache_gc *gc)
{
    if (gc == NULL)
        return;
    event_free(gc->timer);
    free(gc);
}

void dmf_cache_gc_soon(struct dmf_cache_gc *gc)
{
    /* Our own due time: evtimer_pending() gives the loop's clock, which is not the wall's. */
    if (evtimer_pending(gc->timer, NULL) && gc->due_ms <= dmf_now_ms() + SOON_MS)
        return;
    arm(gc, SOON_MS);
}

static const char *stored_state(const struct dmf_store_usage *u)
{
    if (u->complete)
        return "succeeded";
    return u->held_pieces > 0 ? "partial" : "empty";
}

/* Least recently used first; the store's order (by id) on ties. */
static int by_access(const void *a, const void *b)
{
    const struct dmf_cache_row *x = a, *y = b;
    if (x->accessed_ms != y->accessed_ms)
        return x->accessed_ms < y->accessed_ms ? -1 : 1;
    return strcmp(x->u.id, y->u.id);
}

int dmf_cache_gc_list(struct dmf_cache_gc *gc, struct dmf_cache_row **rows, size_t *nrows)
{
    struct dmf_store_usage *u;
    size_t n;
    int e = dmf_store_usage(gc->env.d->store, &u, &n);
    if (e != 0)
        return e;
    struct dmf_cache_row *r = dmf_xcalloc(n ? n : 1, sizeof(*r));
    uint64_t bytes = 0;
    for (size_t i = 0; i < n; i++) {
        r[i].u = u[i];
        r[i].accessed_ms = u[i].accessed * 1000;
        r[i].state = stored_state(&u[i]);
        int64_t mem_ms;
        const char *phase;
        if (gc->env.loaded(gc->env.arg, u[i].id, &r[i].in_use, &mem_ms, &phase)) {
            r[i].accessed_ms = DMF_MAX(r[i].accessed_ms, mem_ms);
            if (strcmp(phase, "pending") != 0)
                r[i].state = phase;
        }
        bytes += u[i].held_bytes;
    }
    free(u); /* the urls moved into r */
    qsort(r, n, sizeof(*r), by_access);
    dmf_metric_set(&dmf_m_cache_bytes, (int64_t)bytes);
    dmf_metric_set(&dmf_m_cache_tasks, (int64_t)n);
    *rows = r;
    *nrows = n;
    return 0;
}

void dmf_cache_rows_free(struct dmf_cache_row *rows, size_t n)
{
    for (size_t i = 0; rows && i < n; i++)
        free(rows[i].u.url);
    free(rows);
}

/* Evicts one task: out of memory (leaving the scheduler), then its rows and file. */
static int evict(struct dmf_cache_gc *gc, const struct dmf_cache_row *r, const char *why)
{
    bool in_use;
    int64_t ms;
    const char *phase;
    if (gc->env.loaded(gc->env.arg, r->u.id, &in_use, &ms, &phase)) {
        if (in_use)
            return -EBUSY;
        gc->env.unload(gc->env.arg, r->u.id);
    }
    int e = dmf_store_task_delete(gc->env.d->store, r->u.id);
    if (e != 0 && e != -ENOENT) {
        dmf_warn("cache: cannot evict task %s: %s", r->u.id, dmf_strerror(e));
        return e;
    }
    dmf_info("cache: evicted task %s (%s, %llu bytes, unused for %lld s)", r->u.id, why,
             (unsigned long long)r->u.held_bytes,
             (long long)((dmf_wall_ms() - r->accessed_ms) / 1000));
    return 0;
}

int dmf_cache_gc_run(struct dmf_cache_gc *gc, uint64_t need, struct dmf_cache_gc_report *rep)
{
    const struct dmf_daemon_config *cfg = &gc->env.d->cfg;
    struct dmf_cache_gc_report r = {0};
    struct dmf_cache_row *rows;
    size_t n;
    int e = dmf_cache_gc_list(gc, &rows, &n);
    if (e != 0)
        return e;
    /* The lower of --cache-limit and the cluster's (0 is none). */
    uint64_t limit = cfg->cache_limit, cluster = gc->env.d->cache_limit_manager;
    if (cluster != 0 && (limit == 0 || cluster < limit))
        limit = cluster;
    struct dmf_evict_policy p = {
        .limit = limit, .need = need, .now = dmf_wall_ms(), .ttl = cfg->task_ttl};
    struct statvfs v;
    if (p.limit == 0 && statvfs(cfg->data_dir, &v) == 0) {
        p.fs_size = (uint64_t)v.f_blocks * v.f_frsize;
        p.fs_free = (uint64_t)v.f_bavail * v.f_frsize;
    }
    struct dmf_evict_task *tasks = dmf_xcalloc(n ? n : 1, sizeof(*tasks));
    enum dmf_evict_reason *out = dmf_xcalloc(n ? n : 1, sizeof(*out));
    for (size_t i = 0; i < n; i++) {
        tasks[i] = (struct dmf_evict_task){rows[i].u.held_bytes, rows[i].accessed_ms,
                                           rows[i].in_use, strcmp(rows[i].state, "failed") == 0};
        r.bytes += rows[i].u.held_bytes;
        r.in_use += rows[i].in_use;
    }
    r.tasks = n;
    size_t picked = dmf_evict_plan(tasks, n, &p, out, NULL);
    for (size_t i = 0; i < n && picked > 0; i++) {
        if (out[i] == DMF_EVICT_KEEP)
            continue;
        if (r.evicted == DMF_CACHE_GC_PASS_MAX) {
            r.more = true;
            break;
        }
        if (evict(gc, &rows[i], dmf_evict_reason_name(out[i])) != 0)
            continue;
        r.evicted++;
        r.freed += rows[i].u.held_bytes;
        r.tasks--;
        r.bytes -= rows[i].u.held_bytes;
        if (out[i] == DMF_EVICT_EXPIRED) {
            r.expired++;
            dmf_metric_add(&dmf_m_evictions_expired, 1);
        } else if (out[i] == DMF_EVICT_FAILED) {
            dmf_metric_add(&dmf_m_evictions_failed, 1);
        } else {
            dmf_metric_add(&dmf_m_evictions_space, 1);
        }
    }
    if (r.evicted > 0 || need > 0)
        dmf_info("cache: %zu task(s) evicted (%zu expired), %llu bytes freed; %zu task(s), %llu "
                 "bytes left%s",
                 r.evicted, r.expired, (unsigned long long)r.freed, r.tasks,
                 (unsigned long long)r.bytes, need ? " (the disk was full)" : "");
    dmf_metric_set(&dmf_m_cache_bytes, (int64_t)r.bytes);
    dmf_metric_set(&dmf_m_cache_tasks, (int64_t)r.tasks);
    free(tasks);
    free(out);
    dmf_cache_rows_free(rows, n);
    if (rep)
        *rep = r;
    return 0;
}

/* True when row r is named by what: its id, or its URL as given or normalised. */
static bool names(const struct dmf_cache_row *r, const char *what, const char *norm)
{
    if (strcmp(r->u.id, what) == 0)
        return true;
    return r->u.url != NULL &&
           (strcmp(r->u.url, what) == 0 || (norm != NULL && strcmp(r->u.url, norm) == 0));
}

int dmf_cache_gc_remove(struct dmf_cache_gc *gc, const char *what, size_t *nremoved,
                        uint64_t *freed)
{
    *nremoved = 0;
    *freed = 0;
    char *norm = NULL, err[128];
    if (!dmf_task_id_valid(what) && dmf_url_normalize(what, NULL, &norm, err, sizeof(err)) != 0)
        norm = NULL;
    struct dmf_cache_row *rows;
    size_t n;
    int e = dmf_cache_gc_list(gc, &rows, &n);
    if (e != 0)
        goto out;
    size_t matched = 0;
    e = 0;
    for (size_t i = 0; i < n; i++) {
        if (!names(&rows[i], what, norm))
            continue;
        matched++;
        if (rows[i].in_use)
            e = -EBUSY; /* all or nothing */
    }
    if (matched == 0)
        e = -ENOENT;
    for (size_t i = 0; e == 0 && i < n; i++) {
        if (!names(&rows[i], what, norm))
            continue;
        int r = evict(gc, &rows[i], "removed by the operator");
        if (r != 0) {
            e = r;
            break;
        }
        (*nremoved)++;
        *freed += rows[i].u.held_bytes;
        dmf_metric_add(&dmf_m_evictions_removed, 1);
    }
    dmf_cache_rows_free(rows, n);
out:
    free(norm);
    return e;
}
