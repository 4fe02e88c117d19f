/* The store's writer thread: a bounded queue of piece rows, committed in batches. */
#include "daemon/store_writer.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/util.h"

#define ROWS_HELP "Piece rows handed to the store's writer, by result."

DMF_METRIC_GAUGE(dmf_m_store_queue_depth, "damselfly_store_queue_rows", NULL,
                 "Verified pieces waiting for the store's writer to record them.");
DMF_METRIC_COUNTER(dmf_m_store_rows_committed, "damselfly_store_rows_total", "result=\"committed\"",
                   ROWS_HELP);
DMF_METRIC_COUNTER(dmf_m_store_rows_full, "damselfly_store_rows_total", "result=\"queue_full\"",
                   ROWS_HELP);
DMF_METRIC_COUNTER(dmf_m_store_rows_failed, "damselfly_store_rows_total", "result=\"failed\"",
                   ROWS_HELP);
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
    uint64_t last_commit_ms;     /* when the last batch ended (0: never) */
    struct dmf_piece_row *batch; /* the rows being committed (max_batch) */
    size_t nbatch;
    bool attempting;           /* the commit callback has the batch now (it may not change) */
    bool retrying;             /* the batch failed and waits to be tried again */
    bool retry_now;            /* room was made: end the pause */
    uint64_t pushed, finished; /* rows ever queued, and ever committed, failed or forgotten */
    uint64_t flush_to;         /* commit at once until finished reaches this */
    bool stopping;
};

bool dmf_store_batch_due(const struct dmf_store_writer_config *cfg, size_t queued,
                         uint64_t since_commit_ms, bool flush)
{
    if (queued == 0)
        return false;
    return flush || queued >= cfg->max_batch || since_commit_ms >= cfg->max_delay_ms;
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

/* Commits the batch (unlocked), retrying a failed one after a pause that doubles; the
 * lock is held on entry and on return. Rows forgotten meanwhile leave the batch between
 * tries (dmf_store_writer_forget). Returns the rows recorded. */
static size_t commit_batch(dmf_store_writer_t *w)
{
    uint32_t pause = w->cfg.retry_ms;
    for (uint32_t attempt = 0;; attempt++) {
        size_t k = w->nbatch;
        if (k == 0)
            return 0;
        w->attempting = true;
        pthread_mutex_unlock(&w->lock);
        int got = w->commit(w->ctx, w->batch, k);
        pthread_mutex_lock(&w->lock);
        w->attempting = false;
        pthread_cond_broadcast(&w->moved);
        if (got >= 0) {
            dmf_metric_add(&dmf_m_store_batches, 1);
            return DMF_MIN((size_t)got, k);
        }
        if (attempt >= w->cfg.retries) {
            dmf_warn("store: a batch of %zu piece rows was not recorded (%s, %u tries); those "
                     "pieces are fetched again after a restart",
                     k, dmf_strerror(got), attempt + 1);
            return 0;
        }
        /* A full disk may get room (the loop evicts for the data writes): try again. A
         * flush does not wait for this batch meanwhile: its caller may be the one that
         * makes the room. */
        w->retrying = true;
        pthread_cond_broadcast(&w->moved);
        struct timespec until = deadline_in(pause);
        while (!w->retry_now && pthread_cond_timedwait(&w->wake, &w->lock, &until) != ETIMEDOUT)
            ;
        w->retrying = false;
        w->retry_now = false;
        pause *= 2;
    }
}

static void *writer_main(void *arg)
{
    dmf_store_writer_t *w = arg;
    pthread_mutex_lock(&w->lock);
    for (;;) {
        uint64_t now = dmf_now_ms();
        uint64_t since = now - w->last_commit_ms;
        bool flush = w->stopping || w->flush_to > w->finished;
        if (!dmf_store_batch_due(&w->cfg, w->count, since, flush)) {
            if (w->count == 0 && w->stopping)
                break;
            if (w->count == 0) {
                pthread_cond_wait(&w->wake, &w->lock);
            } else {
                struct timespec until = deadline_in(w->cfg.max_delay_ms - since);
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

        size_t recorded = commit_batch(w);

        k = w->nbatch; /* less the rows forgotten meanwhile (counted by forget) */
        w->last_commit_ms = dmf_now_ms();
        dmf_metric_add(&dmf_m_store_rows_committed, (int64_t)recorded);
        dmf_metric_add(&dmf_m_store_rows_failed, (int64_t)(k - recorded));
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
    if (w->cfg.retry_ms == 0)
        w->cfg.retry_ms = defaults.retry_ms;
    if (w->cfg.max_batch > w->cfg.capacity)
        w->cfg.max_batch = w->cfg.capacity; /* a full queue is a due batch */
    w->commit = commit;
    w->ctx = ctx;
    w->ring = dmf_xcalloc(w->cfg.capacity, sizeof(*w->ring));
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
    w->count++;
    w->pushed++;
    dmf_metric_add(&dmf_m_store_queue_depth, 1);
    /* The writer sleeps with an empty queue, or until the next batch is due; it looks
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
        while (w->finished < target && !w->retrying)
            pthread_cond_wait(&w->moved, &w->lock);
    }
    pthread_mutex_unlock(&w->lock);
}

static bool row_matches(const struct dmf_piece_row *r, const char *id, bool all, uint32_t n)
{
    return strcmp(r->id, id) == 0 && (all || r->n == n);
}

void dmf_store_writer_forget(dmf_store_writer_t *w, const char *id, bool all, uint32_t n)
{
    pthread_mutex_lock(&w->lock);
    /* Queued rows: out of the ring, keeping the order of the others. */
    size_t kept = 0, cap = w->cfg.capacity;
    for (size_t i = 0; i < w->count; i++) {
        struct dmf_piece_row *r = &w->ring[(w->head + i) % cap];
        if (!row_matches(r, id, all, n))
            w->ring[(w->head + kept++) % cap] = *r;
    }
    size_t gone = w->count - kept;
    w->count = kept;
    /* The batch: a try in progress may record them (before the caller's delete or drop,
     * which then removes them); between tries they leave it. */
    bool in_batch;
    for (;;) {
        in_batch = false;
        for (size_t i = 0; i < w->nbatch && !in_batch; i++)
            in_batch = row_matches(&w->batch[i], id, all, n);
        if (!in_batch || !w->attempting)
            break;
        pthread_cond_wait(&w->moved, &w->lock);
    }
    if (in_batch) {
        size_t k = 0;
        for (size_t i = 0; i < w->nbatch; i++)
            if (!row_matches(&w->batch[i], id, all, n))
                w->batch[k++] = w->batch[i];
        gone += w->nbatch - k;
        w->nbatch = k;
    }
    w->finished += gone;
    dmf_metric_add(&dmf_m_store_queue_depth, -(int64_t)gone);
    if (gone > 0)
        pthread_cond_broadcast(&w->moved);
    pthread_mutex_unlock(&w->lock);
}

void dmf_store_writer_retry_now(dmf_store_writer_t *w)
{
    pthread_mutex_lock(&w->lock);
    if (w->retrying) {
        w->retry_now = true;
        pthread_cond_signal(&w->wake);
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
    free(w->batch);
    free(w);
}
