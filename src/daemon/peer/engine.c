/* The engine's façade for the daemon's other wings; see engine.h. The engine owns the
 * tasks in memory and the scheduler's client; a task never reaches back into it. */
#include "daemon/peer/engine.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/piecemem.h"
#include "common/taskid.h"
#include "common/util.h"
#include "daemon/peer/announce.h"
#include "daemon/peer/cache_gc.h"
#include "daemon/peer/data_file.h"
#include "daemon/peer/parent.h"
#include "daemon/peer/revalidate.h"
#include "daemon/peer/task.h"
#include "daemon/peer/task_cache.h"

struct dmf_engine {
    struct dmf_task *tasks;                /* every task in memory (a list) */
    struct dmf_announce_client *announcer; /* NULL without --scheduler */
    bool closing; /* dmf_engine_stop has begun: no task is loaded or made any more */
};

static void link_task(struct dmf_engine *e, struct dmf_task *t);

#define REJOIN_MAX 4096 /* held tasks told to a restarted scheduler at most (the newest) */

/* The scheduler (re)joined: every task in memory, and every task the store holds, tells
 * it again what this host has (task.c decides what that means per task). */
static void on_rejoin(void *arg)
{
    struct dmf_daemon *d = arg;
    struct dmf_engine *e = d->engine;
    struct dmf_strlist ids = {0};
    if (dmf_store_task_list(d->store, &ids) == 0) {
        for (size_t i = ids.n > REJOIN_MAX ? ids.n - REJOIN_MAX : 0; i < ids.n; i++)
            (void)dmf_engine_find(d, ids.v[i]); /* loads it, when not in memory yet */
    }
    dmf_strlist_free(&ids);
    for (struct dmf_task *t = e->tasks; t; t = t->next)
        dmf_task_rejoin(t);
}

static struct dmf_task *find_loaded(struct dmf_engine *e, const char *id)
{
    for (struct dmf_task *t = e->tasks; t; t = t->next)
        if (strcmp(t->id, id) == 0)
            return t;
    return NULL;
}

static const char *phase_name(enum dmf_task_phase p)
{
    static const char *const names[] = {"pending", "running", "succeeded", "failed"};
    return p <= DMF_TASK_PHASE_FAILED ? names[p] : "?";
}

static bool gc_loaded(void *arg, const char *id, bool *in_use, int64_t *accessed_ms,
                      const char **phase)
{
    struct dmf_daemon *d = arg;
    struct dmf_task *t = find_loaded(d->engine, id);
    if (t == NULL)
        return false;
    struct dmf_task_info info;
    dmf_task_info(t, &info);
    *in_use = dmf_task_in_use(t);
    *accessed_ms = t->accessed_ms;
    *phase = phase_name(info.phase);
    return true;
}

static void gc_unload(void *arg, const char *id)
{
    struct dmf_daemon *d = arg;
    struct dmf_engine *e = d->engine;
    for (struct dmf_task **pp = &e->tasks; *pp; pp = &(*pp)->next) {
        struct dmf_task *t = *pp;
        if (strcmp(t->id, id) != 0)
            continue;
        *pp = t->next;
        dmf_task_leave(t);
        dmf_task_free(t, "evicted from the cache");
        return;
    }
}

/* Piece memory was freed after a transfer was refused for want of it: every task looks
 * again (the one refused may not be the one whose piece was written). */
static void on_piece_memory(void *arg)
{
    struct dmf_daemon *d = arg;
    for (struct dmf_task *t = d->engine ? d->engine->tasks : NULL; t; t = t->next)
        dmf_task_kick(t);
}

void dmf_engine_new(struct dmf_daemon *d)
{
    struct dmf_engine *e = dmf_xcalloc(1, sizeof(*e));
    d->engine = e;
    dmf_piecemem_set_wake(on_piece_memory, d);
    if (d->cfg.scheduler)
        e->announcer = dmf_announce_client_new(d, on_rejoin, d);
    struct dmf_cache_gc_env env = {.d = d, .loaded = gc_loaded, .unload = gc_unload, .arg = d};
    d->cache_gc = dmf_cache_gc_new(&env);
}

struct dmf_cache_gc *dmf_engine_cache(struct dmf_daemon *d)
{
    return d->cache_gc;
}

bool dmf_engine_start(struct dmf_daemon *d, dmf_engine_done_cb ready, void *arg)
{
    if (d->engine->announcer == NULL)
        return false;
    dmf_announce_client_join(d->engine->announcer, 2000, ready, arg);
    return true;
}

void dmf_engine_set_scheduler(struct dmf_daemon *d, const char *addr)
{
    if (d->cfg.scheduler && strcmp(d->cfg.scheduler, addr) == 0)
        return;
    free(d->cfg.scheduler);
    d->cfg.scheduler = dmf_xstrdup(addr);
    if (d->engine->announcer) {
        dmf_announce_client_retarget(d->engine->announcer);
    } else {
        d->engine->announcer = dmf_announce_client_new(d, on_rejoin, d);
        dmf_announce_client_join(d->engine->announcer, 2000, NULL, NULL);
    }
}

void dmf_engine_cancel_long_work(struct dmf_daemon *d)
{
    for (struct dmf_task *t = d->engine ? d->engine->tasks : NULL; t != NULL; t = t->next)
        dmf_task_cancel_long_work(t);
}

/* Frees every task (once); no task is loaded or made afterwards. */
static void close_tasks(struct dmf_daemon *d)
{
    struct dmf_engine *e = d->engine;
    if (e->closing)
        return;
    e->closing = true;
    dmf_cache_gc_free(d->cache_gc);
    d->cache_gc = NULL;
    dmf_piecemem_set_wake(NULL, NULL);
    while (e->tasks) {
        struct dmf_task *t = e->tasks;
        e->tasks = t->next;
        dmf_revalidations_abort(t, "the daemon is shutting down");
        dmf_task_free(t, "the daemon is shutting down");
    }
}

bool dmf_engine_stop(struct dmf_daemon *d, dmf_engine_done_cb left, void *arg)
{
    struct dmf_engine *e = d->engine;
    if (e == NULL)
        return false;
    close_tasks(d);
    if (e->announcer == NULL)
        return false;
    dmf_announce_client_leave(e->announcer, left, arg);
    return true;
}

void dmf_engine_free(struct dmf_daemon *d)
{
    struct dmf_engine *e = d->engine;
    if (e == NULL)
        return;
    close_tasks(d); /* a start that failed never stopped */
    dmf_announce_client_free(e->announcer);
    free(e);
    d->engine = NULL;
}

void dmf_engine_metrics_register(void)
{
    dmf_metric_register(&dmf_m_bytes_origin);
    dmf_metric_register(&dmf_m_bytes_seed);
    dmf_metric_register(&dmf_m_bytes_peer);
    dmf_metric_register(&dmf_m_bytes_local);
    dmf_metric_register(&dmf_m_verify_failures);
    dmf_metric_register(&dmf_m_cache_verified);
    dmf_metric_register(&dmf_m_endgame_requests);
    dmf_metric_register(&dmf_m_piecemem_bytes);
    dmf_metric_register(&dmf_m_piecemem_peak);
    dmf_metric_register(&dmf_m_piecemem_waits);
    dmf_metric_register(&dmf_m_endgame_cancels);
    dmf_metric_register(&dmf_m_cache_failures);
    dmf_metric_register(&dmf_m_tasks_succeeded);
    dmf_metric_register(&dmf_m_tasks_failed);
    dmf_metric_register(&dmf_m_reval_current);
    dmf_metric_register(&dmf_m_reval_new);
    dmf_metric_register(&dmf_m_reval_error);
    dmf_metric_register(&dmf_m_cache_bytes);
    dmf_metric_register(&dmf_m_cache_tasks);
    dmf_metric_register(&dmf_m_evictions_space);
    dmf_metric_register(&dmf_m_evictions_expired);
    dmf_metric_register(&dmf_m_evictions_failed);
    dmf_metric_register(&dmf_m_evictions_removed);
    dmf_metric_register(&dmf_m_data_files_open);
    dmf_metric_register(&dmf_m_data_files_max);
}

static void link_task(struct dmf_engine *e, struct dmf_task *t)
{
    t->next = e->tasks;
    e->tasks = t;
}

struct dmf_task *dmf_engine_find(struct dmf_daemon *d, const char *id)
{
    struct dmf_engine *e = d->engine;
    struct dmf_task *t = find_loaded(e, id);
    if (t)
        return t;
    if (e->closing || !dmf_task_id_valid(id))
        return NULL;
    t = dmf_task_load(d, e->announcer, id);
    if (t)
        link_task(e, t);
    return t;
}

int dmf_engine_open(struct dmf_daemon *d, const char *id, const struct dmf_task_request *req,
                    struct dmf_task **out)
{
    if (d->engine->closing)
        return -ESHUTDOWN;
    /* Space a download that failed on a full disk still holds goes back first. */
    for (struct dmf_task *u = d->engine->tasks; u; u = u->next)
        dmf_task_release_now(u);
    struct dmf_task *t = dmf_engine_find(d, id);
    if (t == NULL) {
        t = dmf_task_new(d, d->engine->announcer, id);
        link_task(d->engine, t);
    }
    dmf_task_set_request(t, req);
    int err = dmf_task_ensure_data(t);
    *out = err == 0 ? t : NULL;
    return err;
}

int dmf_engine_piece_lookup(void *daemon, const char *task_id, struct dmf_piece_view *view)
{
    struct dmf_daemon *d = daemon;
    struct dmf_task *t = dmf_engine_find(d, task_id);
    if (t == NULL || dmf_task_ensure_data(t) != 0)
        return -ENOENT;
    dmf_task_piece_view(t, view);
    return 0;
}
