/* The engine's façade for the daemon's other wings; see engine.h. */
#include "daemon/peer/engine.h"

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/util.h"
#include "daemon/peer/announce.h"
#include "daemon/peer/task.h"

void dmf_engine_start(struct dmf_daemon *d)
{
    if (d->cfg.scheduler) {
        d->sched = dmf_sched_client_new(d);
        dmf_sched_client_announce_sync(d->sched, 2000);
    }
}

void dmf_engine_stop(struct dmf_daemon *d)
{
    dmf_tasks_free_all(d);
    dmf_sched_client_free(d->sched);
    d->sched = NULL;
}

void dmf_engine_metrics_register(void)
{
    dmf_metric_register(&dmf_m_bytes_origin);
    dmf_metric_register(&dmf_m_bytes_seed);
    dmf_metric_register(&dmf_m_bytes_peer);
    dmf_metric_register(&dmf_m_bytes_local);
    dmf_metric_register(&dmf_m_verify_failures);
    dmf_metric_register(&dmf_m_tasks_succeeded);
    dmf_metric_register(&dmf_m_tasks_failed);
}

struct dmf_task *dmf_engine_find(struct dmf_daemon *d, const char *id)
{
    return dmf_task_find(d, id);
}

int dmf_engine_open(struct dmf_daemon *d, const char *id, const struct dmf_task_request *req,
                    struct dmf_task **out)
{
    struct dmf_task *t = dmf_task_open(d, id, req);
    int e = dmf_task_ensure_data(t);
    *out = e == 0 ? t : NULL;
    return e;
}

static enum dmf_task_phase phase(enum dmf_task_state s)
{
    switch (s) {
    case DMF_TASK_IDLE:
        return DMF_TASK_PHASE_PENDING;
    case DMF_TASK_SUCCEEDED:
        return DMF_TASK_PHASE_SUCCEEDED;
    case DMF_TASK_FAILED:
        return DMF_TASK_PHASE_FAILED;
    default:
        return DMF_TASK_PHASE_RUNNING;
    }
}

void dmf_task_info(const struct dmf_task *t, struct dmf_task_info *info)
{
    *info = (struct dmf_task_info){
        .id = t->id,
        .peer_id = t->peer_id,
        .url = t->url ? t->url : "",
        .data_path = t->data_path ? t->data_path : "",
        .content_digest = t->content_digest,
        .error = t->error,
        .phase = phase(t->state),
        .content_length = t->content_length,
        .piece_length = t->piece_length,
        .total_pieces = t->total_pieces,
        .held_pieces = t->have.count,
        .completed_length = dmf_task_completed_length(t),
        .bytes_from_origin = t->bytes_origin,
        .bytes_from_peers = t->bytes_seed + t->bytes_peer,
    };
}

bool dmf_task_cached(const struct dmf_task *t)
{
    return dmf_task_complete(t) && t->state != DMF_TASK_FAILED;
}

void dmf_task_serve_cached(struct dmf_task *t)
{
    if (t->state != DMF_TASK_SUCCEEDED)
        dmf_task_start(t); /* complete: marks it SUCCEEDED */
    t->bytes_origin = t->bytes_seed = t->bytes_peer = 0;
}

bool dmf_task_has_piece(const struct dmf_task *t, uint32_t n)
{
    return dmf_bitmap_get(&t->have, n);
}

size_t dmf_task_held_pieces(const struct dmf_task *t, uint32_t **out)
{
    uint32_t *held = dmf_xmalloc(((size_t)t->have.count + 1) * sizeof(*held));
    size_t n = 0;
    for (uint32_t i = 0; i < t->have.nbits && n < t->have.count; i++)
        if (dmf_bitmap_get(&t->have, i))
            held[n++] = i;
    *out = held;
    return n;
}

ssize_t dmf_task_read(const struct dmf_task *t, void *buf, size_t len, uint64_t off)
{
    if (t->fd < 0)
        return -1;
    return pread(t->fd, buf, len, (off_t)off);
}

int dmf_engine_piece_lookup(void *daemon, const char *task_id, struct dmf_piece_view *view)
{
    return dmf_task_piece_lookup(daemon, task_id, view);
}
