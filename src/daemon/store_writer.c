/* The store's writer thread: a bounded queue of piece rows, committed in batches. */
#include "daemon/store_writer.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/util.h"

DMF_METRIC_GAUGE(dmf_m_store_queue_depth, "damselfly_store_queue_rows", NULL,
                 "Verified pieces waiting for the store's writer to record them.");
DMF_METRIC_COUNTER(dmf_m_store_rows_committed, "damselfly_store_rows_total", "result=\"committed\"",
                   "Piece rows handed to the store's writer, by result.");
DMF_METRIC_COUNTER(dmf_m_store_rows_full, "damselfly_store_rows_total", "result=\"queue_full\"",
                   "Piece rows handed to the store's writer, by result.");
DMF_METRIC_COUNTER(dmf_m_store_rows_failed, "damselfly_store_rows_total", "result=\"failed\"",
                   "Piece rows handed to the store's writer, by result.");
DMF_METRIC_COUNTER(dmf_m_store_batches, "damselfly_store_batches_total", NULL,
                   "Transactions the store's writer committed.");

void dmf_store_writer_metrics_register(void)
{
    dmf_metric_register(&dmf_m_store_queue_depth);
    dmf_metric_register(&dmf_m_store_rows_committed);
    dmf_metric_register(&dmf_m_store_rows_full);
    dmf_metric_register(&dmf_m_store_rows_failed);
    dmf_metric_register(&dmf_m_store_batches);
}

struct dmf_store_writer {
    struct dmf_store_writer_config cfg;
    dmf_store_commit_cb commit;
    void *ctx;

    pthread_mutex_t lock;
    pthread_cond_t wake;  /* rows, a flush or stopping: for the writer */
    pthread_cond_t moved; /* a batch finished (room, flushed): for the loop */
    pthread_t thread;

    struct dmf_piece_row *ring; /* capacity rows; queued ones from head, count of them */
    size_t head, count;
    uint64_t *queued_ms;         /* per ring slot: when it was queued */
    struct dmf_piece_row *batch; /* the rows being committed (max_batch) */
    size_t nbatch;
    uint64_t pushed, finished; /* rows ever queued, and ever committed or failed */
    uint64_t flush_to;         /* commit at once until finished reaches this */
    bool stopping;
};

bool dmf_store_batch_due(const struct dmf_store_writer_config *cfg, size_t queued, uint64_t age_ms,
                         bool flush)
{
    if (queued == 0)
        return false;
    return flush || queued >= cfg->max_batch || age_ms >= cfg->max_delay_ms;
}

/* An absolute CLOCK_MONOTONIC time ms from now, for pthread_cond_timedwait. */
static struct timespec deadline_in(uint64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

static void *writer_main(void *arg)
{
    dmf_store_writer_t *w = arg;
    pthread_mutex_lock(&w->lock);
    for (;;) {
        uint64_t now = dmf_now_ms();
        uint64_t age = w->count ? now - w->queued_ms[w->head] : 0;
        bool flush = w->stopping || w->flush_to > w->finished;
        if (!dmf_store_batch_due(&w->cfg, w->count, age, flush)) {
            if (w->count == 0 && w->stopping)
                break;
            if (w->count == 0) {
                pthread_cond_wait(&w->wake, &w->lock);
            } else {
                struct timespec until = deadline_in(w->cfg.max_delay_ms - age);
                pthread_cond_timedwait(&w->wake, &w->lock, &until);
            }
            continue;
        }
        /* Take the oldest rows, in queue order. */
        size_t k = DMF_MIN(w->count, w->cfg.max_batch);
        for (size_t i = 0; i < k; i++)
            w->batch[i] = w->ring[(w->head + i) % w->cfg.capacity];
        w->head = (w->head + k) % w->cfg.capacity;
        w->count -= k;
        w->nbatch = k;
        pthread_cond_broadcast(&w->moved); /* room in the queue */
        pthread_mutex_unlock(&w->lock);

        int got = w->commit(w->ctx, w->batch, k);

        pthread_mutex_lock(&w->lock);
        size_t recorded = got > 0 ? DMF_MIN((size_t)got, k) : 0;
        dmf_metric_add(&dmf_m_store_rows_committed, (int64_t)recorded);
        dmf_metric_add(&dmf_m_store_rows_failed, (int64_t)(k - recorded));
        if (got >= 0)
            dmf_metric_add(&dmf_m_store_batches, 1);
        else
            dmf_warn("store: a batch of %zu piece rows was not recorded (%s); those pieces are "
                     "fetched again after a restart",
                     k, dmf_strerror(got));
        dmf_metric_add(&dmf_m_store_queue_depth, -(int64_t)k);
        w->nbatch = 0;
        w->finished += k;
        pthread_cond_broadcast(&w->moved);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

dmf_store_writer_t *dmf_store_writer_new(const struct dmf_store_writer_config *cfg,
                                         dmf_store_commit_cb commit, void *ctx)
{
    const struct dmf_store_writer_config defaults = DMF_STORE_WRITER_DEFAULTS;
    dmf_store_writer_t *w = dmf_xcalloc(1, sizeof(*w));
    w->cfg = cfg ? *cfg : defaults;
    if (w->cfg.max_batch == 0)
        w->cfg.max_batch = defaults.max_batch;
    if (w->cfg.max_delay_ms == 0)
        w->cfg.max_delay_ms = defaults.max_delay_ms;
    if (w->cfg.capacity == 0)
        w->cfg.capacity = defaults.capacity;
    if (w->cfg.max_batch > w->cfg.capacity)
        w->cfg.max_batch = w->cfg.capacity; /* a full queue is a due batch */
    w->commit = commit;
    w->ctx = ctx;
    w->ring = dmf_xcalloc(w->cfg.capacity, sizeof(*w->ring));
    w->queued_ms = dmf_xcalloc(w->cfg.capacity, sizeof(*w->queued_ms));
    w->batch = dmf_xcalloc(w->cfg.max_batch, sizeof(*w->batch));
    pthread_mutex_init(&w->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->wake, &ca);
    pthread_cond_init(&w->moved, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&w->thread, NULL, writer_main, w) != 0) {
        dmf_error("store: cannot start the writer thread");
        abort();
    }
    return w;
}

int dmf_store_writer_put(dmf_store_writer_t *w, const struct dmf_piece_row *row)
{
    int ret = 0;
    pthread_mutex_lock(&w->lock);
    if (w->count == w->cfg.capacity && w->cfg.full_wait_ms > 0) {
        struct timespec until = deadline_in(w->cfg.full_wait_ms);
        pthread_cond_signal(&w->wake); /* a full queue is a batch due now */
        while (w->count == w->cfg.capacity &&
               pthread_cond_timedwait(&w->moved, &w->lock, &until) != ETIMEDOUT)
            ;
    }
    if (w->count == w->cfg.capacity) {
        dmf_metric_add(&dmf_m_store_rows_full, 1);
        ret = -EAGAIN;
        goto out;
    }
    size_t slot = (w->head + w->count) % w->cfg.capacity;
    w->ring[slot] = *row;
    w->queued_ms[slot] = dmf_now_ms();
    w->count++;
    w->pushed++;
    dmf_metric_add(&dmf_m_store_queue_depth, 1);
    /* The writer sleeps with an empty queue, or until its oldest row is due; it looks
     * again when the first row comes or a batch fills up. */
    if (w->count == 1 || w->count == w->cfg.max_batch)
        pthread_cond_signal(&w->wake);
out:
    pthread_mutex_unlock(&w->lock);
    return ret;
}

void dmf_store_writer_flush(dmf_store_writer_t *w)
{
    pthread_mutex_lock(&w->lock);
    uint64_t target = w->pushed;
    if (w->finished < target) {
        if (w->flush_to < target)
            w->flush_to = target;
        pthread_cond_signal(&w->wake);
        while (w->finished < target)
            pthread_cond_wait(&w->moved, &w->lock);
    }
    pthread_mutex_unlock(&w->lock);
}

bool dmf_store_writer_holds(dmf_store_writer_t *w, const char *id)
{
    bool found = false;
    pthread_mutex_lock(&w->lock);
    for (size_t i = 0; i < w->nbatch && !found; i++)
        found = strcmp(w->batch[i].id, id) == 0;
    for (size_t i = 0; i < w->count && !found; i++)
        found = strcmp(w->ring[(w->head + i) % w->cfg.capacity].id, id) == 0;
    pthread_mutex_unlock(&w->lock);
    return found;
}

size_t dmf_store_writer_depth(dmf_store_writer_t *w)
{
    pthread_mutex_lock(&w->lock);
    size_t n = (size_t)(w->pushed - w->finished);
    pthread_mutex_unlock(&w->lock);
    return n;
}

void dmf_store_writer_free(dmf_store_writer_t *w)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->lock);
    w->stopping = true; /* the writer commits what is queued before it ends */
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->wake);
    pthread_cond_destroy(&w->moved);
    free(w->ring);
    free(w->queued_ms);
    free(w->batch);
    free(w);
}
