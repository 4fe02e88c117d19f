/* Tasks: state machine, layout, piece commit, subscribers. See task.h. */
#include "daemon/peer/task.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/workq.h"
#include "common/util.h"
#include "daemon/peer/parent.h"
#include "daemon/peer/announce.h"
#include "daemon/peer/source.h"

DMF_METRIC_COUNTER(dmf_m_bytes_origin, "damselfly_download_bytes_total", "source=\"origin\"",
                   "Bytes of verified pieces received, by where they came from.");
DMF_METRIC_COUNTER(dmf_m_bytes_seed, "damselfly_download_bytes_total", "source=\"seed\"",
                   "Bytes of verified pieces received, by where they came from.");
DMF_METRIC_COUNTER(dmf_m_bytes_peer, "damselfly_download_bytes_total", "source=\"peer\"",
                   "Bytes of verified pieces received, by where they came from.");
DMF_METRIC_COUNTER(dmf_m_bytes_local, "damselfly_download_bytes_total", "source=\"local\"",
                   "Bytes of verified pieces received, by where they came from.");
DMF_METRIC_COUNTER(dmf_m_verify_failures, "damselfly_piece_verify_failures_total", NULL,
                   "Pieces from parents whose bytes did not match their digest.");
DMF_METRIC_COUNTER(dmf_m_tasks_succeeded, "damselfly_tasks_total", "result=\"succeeded\"",
                   "Downloads finished, by result.");
DMF_METRIC_COUNTER(dmf_m_tasks_failed, "damselfly_tasks_total", "result=\"failed\"",
                   "Downloads finished, by result.");

static const char *const state_names[] = {
    [DMF_TASK_IDLE] = "IDLE",
    [DMF_TASK_REGISTERING] = "REGISTERING",
    [DMF_TASK_P2P] = "P2P",
    [DMF_TASK_BACK_TO_SOURCE] = "BACK_TO_SOURCE",
    [DMF_TASK_VERIFYING] = "VERIFYING",
    [DMF_TASK_SUCCEEDED] = "SUCCEEDED",
    [DMF_TASK_FAILED] = "FAILED",
};

const char *dmf_task_state_name(enum dmf_task_state s)
{
    return state_names[s];
}

static void on_kick(evutil_socket_t fd, short what, void *arg);
static void on_stall(evutil_socket_t fd, short what, void *arg);

void dmf_task_set_state(struct dmf_task *t, enum dmf_task_state s)
{
    if (t->state == s)
        return;
    dmf_info("task %s peer %s: %s -> %s", t->id, t->peer_id, state_names[t->state], state_names[s]);
    t->state = s;
}

static bool running(const struct dmf_task *t)
{
    return t->state == DMF_TASK_REGISTERING || t->state == DMF_TASK_P2P ||
           t->state == DMF_TASK_BACK_TO_SOURCE || t->state == DMF_TASK_VERIFYING;
}

bool dmf_task_complete(const struct dmf_task *t)
{
    return t->content_length >= 0 && t->piece_length > 0 && t->have.count == t->total_pieces &&
           t->state != DMF_TASK_VERIFYING;
}

uint64_t dmf_task_completed_length(const struct dmf_task *t)
{
    if (t->piece_length == 0)
        return 0;
    uint64_t n = (uint64_t)t->have.count * t->piece_length;
    if (t->content_length >= 0 && t->total_pieces > 0 &&
        dmf_bitmap_get(&t->have, t->total_pieces - 1))
        n -= t->piece_length -
             dmf_piece_size(t->content_length, t->piece_length, t->total_pieces - 1);
    return n;
}

static struct dmf_task *task_new(struct dmf_daemon *d, const char *id)
{
    struct dmf_task *t = dmf_xcalloc(1, sizeof(*t));
    t->d = d;
    memcpy(t->id, id, DMF_TASK_ID_LEN);
    t->fd = -1;
    t->content_length = -1;
    dmf_bitmap_init(&t->have);
    dmf_bitmap_init(&t->inflight);
    dmf_bitmap_init(&t->digest_known);
    dmf_bitmap_init(&t->ledger.served);
    t->kick = event_new(d->base, -1, 0, on_kick, t);
    t->stall = evtimer_new(d->base, on_stall, t);
    snprintf(t->peer_id, sizeof(t->peer_id), "%s-%.12s-%06x", d->cfg.host_id, id,
             (unsigned)(random() & 0xffffff));
    t->next = d->tasks;
    d->tasks = t;
    return t;
}

static void ensure_digest_cap(struct dmf_task *t, uint32_t n)
{
    if (n < t->ndigests)
        return;
    uint32_t cap = t->ndigests ? t->ndigests : 64;
    while (cap <= n)
        cap *= 2;
    t->digests = dmf_xrealloc(t->digests, (size_t)cap * DMF_SHA256_LEN);
    memset(t->digests + t->ndigests, 0, (size_t)(cap - t->ndigests) * DMF_SHA256_LEN);
    t->ndigests = cap;
}

static void save(struct dmf_task *t)
{
    struct dmf_store_task st;
    memset(&st, 0, sizeof(st));
    memcpy(st.id, t->id, sizeof(st.id));
    st.url = t->url;
    st.content_length = t->content_length;
    st.piece_length = t->piece_length;
    st.total_pieces = t->total_pieces;
    st.complete = t->state == DMF_TASK_SUCCEEDED;
    memcpy(st.content_digest, t->content_digest, sizeof(st.content_digest));
    if (dmf_store_task_save(t->d->store, &st) != 0)
        dmf_warn("task %s: cannot save its metadata", t->id);
}

struct dmf_task *dmf_task_find(struct dmf_daemon *d, const char *id)
{
    for (struct dmf_task *t = d->tasks; t; t = t->next)
        if (strcmp(t->id, id) == 0)
            return t;
    if (!dmf_task_id_valid(id))
        return NULL;
    struct dmf_store_task *st;
    if (dmf_store_task_load(d->store, id, &st) != 0)
        return NULL;
    struct dmf_task *t = task_new(d, id);
    t->url = st->url ? dmf_xstrdup(st->url) : NULL;
    t->content_length = st->content_length;
    t->piece_length = st->piece_length;
    t->total_pieces = st->total_pieces;
    memcpy(t->content_digest, st->content_digest, sizeof(t->content_digest));
    for (uint32_t n = 0; n < st->have.nbits; n++) {
        if (!dmf_bitmap_get(&st->have, n) || n >= st->ndigests)
            continue;
        ensure_digest_cap(t, n);
        memcpy(t->digests[n], st->digests[n], DMF_SHA256_LEN);
        dmf_bitmap_set(&t->have, n);
        dmf_bitmap_set(&t->digest_known, n);
    }
    dmf_store_task_free(st);
    if (dmf_task_complete(t))
        t->state = DMF_TASK_SUCCEEDED;
    dmf_debug("task %s: loaded from the store with %u of %u pieces", t->id, t->have.count,
              t->total_pieces);
    return t;
}

struct dmf_task *dmf_task_open(struct dmf_daemon *d, const char *id,
                               const struct dmf_task_request *req)
{
    struct dmf_task *t = dmf_task_find(d, id);
    if (t == NULL)
        t = task_new(d, id);
    if (running(t))
        return t; /* the download in progress keeps the request that started it */
    free(t->url);
    t->url = dmf_xstrdup(req->url);
    dmf_strlist_free(&t->headers);
    for (size_t i = 0; req->headers && i < req->headers->n; i++)
        dmf_strlist_push(&t->headers, req->headers->v[i]);
    free(t->tag);
    t->tag = req->tag ? dmf_xstrdup(req->tag) : NULL;
    snprintf(t->expected_digest, sizeof(t->expected_digest), "%s", req->digest ? req->digest : "");
    dmf_strlist_free(&t->filter_query);
    for (size_t i = 0; req->filter_query && i < req->filter_query->n; i++)
        dmf_strlist_push(&t->filter_query, req->filter_query->v[i]);
    t->disable_back_to_source = req->disable_back_to_source;
    return t;
}

int dmf_task_ensure_data(struct dmf_task *t)
{
    if (t->fd >= 0)
        return 0;
    free(t->data_path);
    t->data_path = NULL;
    int fd = dmf_store_open_data(t->d->store, t->id, &t->data_path);
    if (fd < 0)
        return fd;
    t->fd = fd;
    return 0;
}

void dmf_task_start(struct dmf_task *t)
{
    if (running(t))
        return;
    if (dmf_task_complete(t)) {
        dmf_task_set_state(t, DMF_TASK_SUCCEEDED);
        dmf_task_kick(t);
        return;
    }
    free(t->error);
    t->error = NULL;
    t->bytes_origin = t->bytes_seed = t->bytes_peer = 0;
    t->started_ms = dmf_now_ms();
    int e = dmf_task_ensure_data(t);
    if (e < 0) {
        dmf_task_fail(t, "cannot open the task's data file: %s", dmf_strerror(e));
        return;
    }
    save(t);
    if (t->d->sched) {
        dmf_task_set_state(t, DMF_TASK_REGISTERING);
        dmf_sched_register(t);
    } else {
        dmf_task_back_to_source(t, "no scheduler configured");
    }
}

void dmf_task_subscribe(struct dmf_task *t, struct dmf_task_sub *sub)
{
    sub->next = t->subs;
    t->subs = sub;
}

void dmf_task_unsubscribe(struct dmf_task *t, struct dmf_task_sub *sub)
{
    for (struct dmf_task_sub **p = &t->subs; *p; p = &(*p)->next) {
        if (*p == sub) {
            *p = sub->next;
            return;
        }
    }
}

int dmf_task_set_layout(struct dmf_task *t, int64_t content_length, uint32_t piece_length)
{
    if (content_length == 0 && piece_length == 0)
        piece_length = DMF_PIECE_LENGTH_MIN;
    if (piece_length < DMF_PIECE_LENGTH_MIN || piece_length > DMF_PIECE_LENGTH_MAX)
        return -EINVAL;
    if (t->piece_length != 0 && t->piece_length != piece_length) {
        dmf_task_fail(t, "piece length changed from %u to %u", t->piece_length, piece_length);
        return -EINVAL;
    }
    if (content_length >= 0 && t->content_length >= 0 && content_length != t->content_length) {
        dmf_task_fail(t, "content length changed from %lld to %lld", (long long)t->content_length,
                      (long long)content_length);
        return -EINVAL;
    }
    bool changed =
        t->piece_length != piece_length || (content_length >= 0 && t->content_length < 0);
    t->piece_length = piece_length;
    if (content_length >= 0 && t->content_length < 0) {
        uint32_t total = dmf_piece_count(content_length, piece_length);
        if (dmf_piece_layout_check(content_length, piece_length, total) != 0 ||
            t->have.nbits > total + 0u || (t->have.count && dmf_bitmap_get(&t->have, total))) {
            dmf_task_fail(t, "invalid layout: %lld bytes in pieces of %u",
                          (long long)content_length, piece_length);
            return -EINVAL;
        }
        t->content_length = content_length;
        t->total_pieces = total;
        dmf_bitmap_resize(&t->have, total);
        dmf_bitmap_resize(&t->inflight, total);
        dmf_bitmap_resize(&t->digest_known, total);
        if (total)
            ensure_digest_cap(t, total - 1);
        if (t->fd >= 0 && ftruncate(t->fd, content_length) != 0)
            dmf_warn("task %s: cannot size the data file: %s", t->id, strerror(errno));
    }
    if (changed) {
        save(t);
        dmf_task_kick(t);
    }
    return 0;
}

static bool piece_in_range(const struct dmf_task *t, uint32_t n)
{
    if (n >= DMF_PIECES_MAX)
        return false;
    return t->content_length < 0 || n < t->total_pieces;
}

void dmf_task_set_digest(struct dmf_task *t, uint32_t n, const uint8_t digest[DMF_SHA256_LEN])
{
    if (!piece_in_range(t, n))
        return;
    ensure_digest_cap(t, n);
    if (dmf_bitmap_get(&t->digest_known, n)) {
        if (memcmp(t->digests[n], digest, DMF_SHA256_LEN) != 0)
            dmf_warn("task %s: piece %u: conflicting digest from the scheduler ignored", t->id, n);
        return;
    }
    memcpy(t->digests[n], digest, DMF_SHA256_LEN);
    dmf_bitmap_set(&t->digest_known, n);
    dmf_task_kick(t);
}

static void push_fresh(struct dmf_task *t, uint32_t n)
{
    if (t->nfresh == t->fresh_cap) {
        t->fresh_cap = t->fresh_cap ? t->fresh_cap * 2 : 64;
        t->fresh = dmf_xrealloc(t->fresh, t->fresh_cap * sizeof(*t->fresh));
    }
    t->fresh[t->nfresh++] = n;
}

/* A piece being checked and written on a worker thread. */
struct piece_job {
    struct dmf_task *t;
    uint32_t n;
    uint8_t *buf;
    size_t len;
    enum dmf_piece_origin from;
    char *parent_host_id; /* who sent it (NULL from the origin) */
    int fd;
    uint64_t offset;
    bool have_expected;
    uint8_t expected[DMF_SHA256_LEN];
    uint8_t digest[DMF_SHA256_LEN];
    int err;
};

/* On a worker: hash, compare, write. Nothing of the task is touched here but its fd. */
static void piece_work(void *arg)
{
    struct piece_job *j = arg;
    dmf_sha256(j->buf, j->len, j->digest);
    if (j->have_expected && memcmp(j->digest, j->expected, DMF_SHA256_LEN) != 0) {
        j->err = -EBADMSG;
        return;
    }
    size_t off = 0;
    while (off < j->len) {
        ssize_t w = pwrite(j->fd, j->buf + off, j->len - off, (off_t)(j->offset + off));
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            j->err = w < 0 ? -errno : -EIO;
            return;
        }
        off += (size_t)w;
    }
}

static void piece_job_free(struct piece_job *j)
{
    free(j->buf);
    free(j->parent_host_id);
    free(j);
}

/* Back on the loop: record the piece, or deal with a bad one. */
static void piece_done(void *arg)
{
    struct piece_job *j = arg;
    struct dmf_task *t = j->t;
    uint32_t n = j->n;
    dmf_bitmap_clear(&t->inflight, n);
    if (!running(t) || t->error || dmf_bitmap_get(&t->have, n)) {
        dmf_task_kick(t);
        goto out;
    }
    if (j->err == -EBADMSG) {
        dmf_metric_add(&dmf_m_verify_failures, 1);
        if (j->from == DMF_FROM_ORIGIN)
            dmf_task_fail(t,
                          "piece %u from the origin differs from the one the cluster holds "
                          "(did the content change?)",
                          n);
        else
            dmf_parents_bad_piece(t, j->parent_host_id, n);
        dmf_task_kick(t);
        goto out;
    }
    int e = j->err ? j->err : dmf_store_piece_put(t->d->store, t->id, n, j->digest);
    if (e != 0) {
        dmf_task_fail(t, "cannot store piece %u: %s", n, dmf_strerror(e));
        goto out;
    }
    ensure_digest_cap(t, n);
    memcpy(t->digests[n], j->digest, DMF_SHA256_LEN);
    dmf_bitmap_set(&t->digest_known, n);
    dmf_bitmap_set(&t->have, n);
    int64_t len = (int64_t)j->len;
    switch (j->from) {
    case DMF_FROM_ORIGIN:
        t->bytes_origin += (uint64_t)len;
        dmf_metric_add(&dmf_m_bytes_origin, len);
        break;
    case DMF_FROM_SEED:
        t->bytes_seed += (uint64_t)len;
        dmf_metric_add(&dmf_m_bytes_seed, len);
        break;
    case DMF_FROM_PEER:
        t->bytes_peer += (uint64_t)len;
        dmf_metric_add(&dmf_m_bytes_peer, len);
        break;
    }
    dmf_piece_server_notify_piece(t->d->pieces, t->id, n);
    dmf_sched_report_piece(t, n, j->from == DMF_FROM_ORIGIN ? j->digest : NULL);
    push_fresh(t, n);
    dmf_task_kick(t);
out:
    piece_job_free(j);
}

int dmf_task_piece_submit(struct dmf_task *t, uint32_t n, uint8_t *buf, size_t len,
                          enum dmf_piece_origin from, const char *parent_host_id)
{
    int e = 0;
    if (!running(t) || t->error)
        e = -ECANCELED;
    else if (!piece_in_range(t, n) || t->piece_length == 0)
        e = -EINVAL;
    else if (len != (t->content_length >= 0 ? dmf_piece_size(t->content_length, t->piece_length, n)
                                            : t->piece_length))
        e = -EINVAL;
    else if (from != DMF_FROM_ORIGIN && !dmf_bitmap_get(&t->digest_known, n))
        e = -EINVAL; /* nothing to check it against: it should not have been asked for */
    else
        e = dmf_task_ensure_data(t);
    if (e != 0 || dmf_bitmap_get(&t->have, n)) {
        dmf_bitmap_clear(&t->inflight, n);
        free(buf);
        return e;
    }
    struct piece_job *j = dmf_xcalloc(1, sizeof(*j));
    j->t = t;
    j->n = n;
    j->buf = buf;
    j->len = len;
    j->from = from;
    j->parent_host_id = parent_host_id ? dmf_xstrdup(parent_host_id) : NULL;
    j->fd = t->fd;
    j->offset = dmf_piece_offset(t->piece_length, n);
    if (dmf_bitmap_get(&t->digest_known, n)) {
        j->have_expected = true;
        memcpy(j->expected, t->digests[n], DMF_SHA256_LEN);
    }
    dmf_bitmap_set(&t->inflight, n);
    dmf_workq_submit(t->d->workq, piece_work, piece_done, j);
    return 0;
}

bool dmf_task_workers_busy(const struct dmf_task *t)
{
    return dmf_workq_pending(t->d->workq) >= DMF_PIECE_JOBS_MAX;
}

void dmf_task_kick(struct dmf_task *t)
{
    event_active(t->kick, 0, 0);
}

static void stop_transfers(struct dmf_task *t)
{
    dmf_parents_free_all(t);
    dmf_source_free(t);
    evtimer_del(t->stall);
    dmf_bitmap_free(&t->inflight);
    dmf_bitmap_init(&t->inflight);
}

static void tell_subscribers(struct dmf_task *t, bool end)
{
    struct dmf_task_sub *subs = t->subs;
    if (end)
        t->subs = NULL;
    for (struct dmf_task_sub *s = subs, *next; s; s = next) {
        next = s->next;
        s->on_update(s->arg, t, t->fresh, t->nfresh, end);
    }
    t->nfresh = 0;
}

static void finish(struct dmf_task *t, bool ok)
{
    stop_transfers(t);
    uint64_t ms = dmf_now_ms() - t->started_ms;
    if (ok) {
        dmf_task_set_state(t, DMF_TASK_SUCCEEDED);
        save(t);
        dmf_metric_add(&dmf_m_tasks_succeeded, 1);
        dmf_piece_server_notify_done(t->d->pieces, t->id);
        dmf_info("task %s peer %s: %lld bytes in %llu ms (origin %llu, seed %llu, peers %llu)",
                 t->id, t->peer_id, (long long)t->content_length, (unsigned long long)ms,
                 (unsigned long long)t->bytes_origin, (unsigned long long)t->bytes_seed,
                 (unsigned long long)t->bytes_peer);
    } else {
        dmf_task_set_state(t, DMF_TASK_FAILED);
        dmf_metric_add(&dmf_m_tasks_failed, 1);
        dmf_piece_server_notify_gone(t->d->pieces, t->id);
        dmf_warn("task %s peer %s: failed: %s", t->id, t->peer_id, t->error);
    }
    dmf_sched_finish(t, ok, t->error);
    tell_subscribers(t, true);
}

void dmf_task_fail(struct dmf_task *t, const char *fmt, ...)
{
    /* Deferred to the next loop pass: callers are often inside a transfer's callback,
     * and failing tears the transfers down. The first reason wins. */
    if (!running(t) || t->error != NULL)
        return;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    t->error = dmf_xstrdup(buf);
    dmf_task_kick(t);
}

/* The whole-content digest: the pieces are each verified already; this checks that they
 * add up to what the user (or the OCI digest) promised. Hashing gigabytes takes a while,
 * so it runs on a thread of its own and the result comes back to the loop. */
struct verify_job {
    struct dmf_task *t;
    int fd;
    uint64_t len;
    uint8_t got[DMF_SHA256_LEN];
    int err;
    pthread_t thread;
    struct event *done;
};

static void *verify_main(void *arg)
{
    struct verify_job *job = arg;
    job->err = dmf_sha256_fd(job->fd, 0, job->len, job->got);
    event_active(job->done, 0, 0);
    return NULL;
}

static void verify_job_free(struct verify_job *job)
{
    pthread_join(job->thread, NULL);
    close(job->fd);
    event_free(job->done);
    free(job);
}

static void on_verified(evutil_socket_t fd, short what, void *arg)
{
    struct verify_job *job = arg;
    struct dmf_task *t = job->t;
    uint8_t want[DMF_SHA256_LEN];
    char err[128];
    t->verify = NULL;
    int e = job->err;
    if (e == 0 && dmf_digest_parse(t->expected_digest, want, err, sizeof(err)) == 0 &&
        memcmp(want, job->got, DMF_SHA256_LEN) != 0)
        e = -EBADMSG;
    char gots[DMF_DIGEST_STR_LEN + 1];
    dmf_digest_format(job->got, gots);
    verify_job_free(job);
    if (t->state != DMF_TASK_VERIFYING)
        return;
    if (e != 0) {
        /* The pieces are consistent with each other but not with the digest asked for:
         * drop them so that nobody is served this content under this task. */
        for (uint32_t n = 0; n < t->total_pieces; n++)
            dmf_store_piece_drop(t->d->store, t->id, n);
        dmf_bitmap_free(&t->have);
        dmf_bitmap_init(&t->have);
        dmf_bitmap_resize(&t->have, t->total_pieces);
        free(t->error);
        t->error = e == -EBADMSG
                       ? dmf_xasprintf("content digest mismatch: expected %s, got %s",
                                       t->expected_digest, gots)
                       : dmf_xasprintf("cannot read the content to verify it: %s", dmf_strerror(e));
        finish(t, false);
        return;
    }
    memcpy(t->content_digest, t->expected_digest, sizeof(t->content_digest));
    finish(t, true);
}

static void verify_content(struct dmf_task *t)
{
    uint8_t want[DMF_SHA256_LEN];
    char err[128];
    dmf_task_set_state(t, DMF_TASK_VERIFYING);
    if (dmf_digest_parse(t->expected_digest, want, err, sizeof(err)) != 0) {
        t->error = dmf_xstrdup(err);
        finish(t, false);
        return;
    }
    struct verify_job *job = dmf_xcalloc(1, sizeof(*job));
    job->t = t;
    job->fd = dup(t->fd);
    job->len = (uint64_t)t->content_length;
    job->done = event_new(t->d->base, -1, 0, on_verified, job);
    if (job->fd < 0 || pthread_create(&job->thread, NULL, verify_main, job) != 0) {
        if (job->fd >= 0)
            close(job->fd);
        event_free(job->done);
        free(job);
        t->error = dmf_xstrdup("cannot start verifying the content");
        finish(t, false);
        return;
    }
    t->verify = job;
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    struct dmf_task *t = arg;
    if (running(t) && t->error && t->state != DMF_TASK_VERIFYING) {
        finish(t, false);
        return;
    }
    if (t->state == DMF_TASK_P2P) {
        dmf_parents_dispatch(t);
        if (dmf_parents_usable(t) == 0) {
            if (!evtimer_pending(t->stall, NULL)) {
                uint64_t ms = t->d->cfg.parent_stall_timeout;
                struct timeval tv = {.tv_sec = (time_t)(ms / 1000),
                                     .tv_usec = (suseconds_t)(ms % 1000) * 1000};
                evtimer_add(t->stall, &tv);
            }
        } else {
            evtimer_del(t->stall);
        }
    } else if (t->state == DMF_TASK_BACK_TO_SOURCE) {
        dmf_source_dispatch(t);
    }
    bool done = t->content_length >= 0 && t->piece_length > 0 && t->have.count == t->total_pieces;
    if (done && (t->state == DMF_TASK_P2P || t->state == DMF_TASK_BACK_TO_SOURCE ||
                 t->state == DMF_TASK_REGISTERING)) {
        if (t->expected_digest[0])
            verify_content(t);
        else
            finish(t, true);
        return;
    }
    if (t->state == DMF_TASK_SUCCEEDED || t->state == DMF_TASK_FAILED)
        tell_subscribers(t, true);
    else if (t->nfresh || t->subs)
        tell_subscribers(t, false);
}

static void on_stall(evutil_socket_t fd, short what, void *arg)
{
    struct dmf_task *t = arg;
    if (t->state == DMF_TASK_P2P && dmf_parents_usable(t) == 0)
        dmf_task_back_to_source(t, "no parent left to fetch from");
}

void dmf_task_back_to_source(struct dmf_task *t, const char *why)
{
    if (t->disable_back_to_source) {
        if (t->state == DMF_TASK_IDLE)
            dmf_task_set_state(t, DMF_TASK_REGISTERING);
        dmf_task_fail(t, "%s, and back-to-source is disabled (--no-back-to-source)", why);
        return;
    }
    dmf_info("task %s peer %s: back to source: %s", t->id, t->peer_id, why);
    dmf_parents_free_all(t);
    evtimer_del(t->stall);
    dmf_task_set_state(t, DMF_TASK_BACK_TO_SOURCE);
    dmf_source_start(t);
}

static void task_free(struct dmf_task *t)
{
    if (t->verify) {
        /* Let the hash finish (bounded by the content's size), then drop its answer. */
        struct verify_job *job = t->verify;
        t->verify = NULL;
        verify_job_free(job);
    }
    stop_transfers(t);
    dmf_sched_peer_free(t);
    event_free(t->kick);
    event_free(t->stall);
    if (t->fd >= 0)
        close(t->fd);
    free(t->data_path);
    free(t->url);
    free(t->tag);
    free(t->error);
    free(t->fresh);
    free(t->digests);
    dmf_strlist_free(&t->headers);
    dmf_strlist_free(&t->filter_query);
    dmf_bitmap_free(&t->have);
    dmf_bitmap_free(&t->inflight);
    dmf_bitmap_free(&t->digest_known);
    dmf_seed_ledger_free(&t->ledger);
    free(t);
}

void dmf_tasks_free_all(struct dmf_daemon *d)
{
    while (d->tasks) {
        struct dmf_task *t = d->tasks;
        d->tasks = t->next;
        if (t->subs) {
            free(t->error);
            t->error = dmf_xstrdup("the daemon is shutting down");
            tell_subscribers(t, true);
        }
        task_free(t);
    }
}

int dmf_task_piece_lookup(void *daemon, const char *task_id, struct dmf_piece_view *view)
{
    struct dmf_daemon *d = daemon;
    struct dmf_task *t = dmf_task_find(d, task_id);
    if (t == NULL || dmf_task_ensure_data(t) != 0)
        return -ENOENT;
    view->fd = t->fd;
    view->content_length = t->content_length;
    view->piece_length = t->piece_length;
    view->have = &t->have;
    view->complete = t->state == DMF_TASK_SUCCEEDED && dmf_task_complete(t);
    view->ledger = d->cfg.seed ? &t->ledger : NULL;
    return 0;
}
