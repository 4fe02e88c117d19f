/* Tasks: the state machine applied, piece commit, subscribers. See task.h. */
#include "daemon/peer/task.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "common/evx.h"
#include "common/backoff.h"
#include "common/log.h"
#include "common/piecemem.h"
#include "common/url_secrets.h"
#include "common/util.h"
#include "common/workq.h"
#include "daemon/peer/announce.h"
#include "daemon/peer/cache_gc.h"
#include "daemon/peer/evict.h"
#include "daemon/peer/parent.h"
#include "daemon/peer/source.h"
#include "daemon/peer/task_cache.h"

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

static void on_kick(evutil_socket_t fd, short what, void *arg);
static void on_stall(evutil_socket_t fd, short what, void *arg);
static void on_release(evutil_socket_t fd, short what, void *arg);
static void on_reconnect(evutil_socket_t fd, short what, void *arg);
static void handle(struct dmf_task *t, enum dmf_task_event ev, const char *why);

/* The one place a task's state changes. */
static void task_set_state(struct dmf_task *t, enum dmf_task_state s)
{
    if (t->state == s)
        return;
    dmf_info("task %s peer %s: %s -> %s", t->id, t->peer_id, dmf_task_state_name(t->state),
             dmf_task_state_name(s));
    t->state = s;
}

static bool running(const struct dmf_task *t)
{
    return dmf_task_state_running(t->state);
}

static void kick(struct dmf_task *t)
{
    event_active(t->kick, 0, 0);
}

void dmf_task_kick(struct dmf_task *t)
{
    if (running(t))
        kick(t);
}

static void set_str(char **dst, const char *v)
{
    free(*dst);
    *dst = v && *v ? dmf_xstrdup(v) : NULL;
}

static void arm_ms(struct event *ev, uint64_t ms)
{
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(ev, &tv);
}

/* Every piece held and, if a content digest was asked for, checked. */
static bool complete(const struct dmf_task *t)
{
    return dmf_book_all_held(&t->book) && t->state != DMF_TASK_VERIFYING;
}

struct dmf_task *dmf_task_new(struct dmf_daemon *d, struct dmf_announce_client *announcer,
                              const char *id)
{
    struct dmf_task *t = dmf_xcalloc(1, sizeof(*t));
    t->d = d;
    t->announcer = announcer;
    memcpy(t->id, id, DMF_TASK_ID_LEN);
    dmf_data_file_init(&t->file, d->open_files);
    t->accessed_ms = t->accessed_saved_ms = dmf_wall_ms();
    dmf_book_init(&t->book);
    dmf_cache_init(&t->cache);
    dmf_bitmap_init(&t->ledger.served);
    t->kick = dmf_xevent_new(d->base, -1, 0, on_kick, t);
    t->stall = dmf_xevtimer_new(d->base, on_stall, t);
    t->reconnect = dmf_xevtimer_new(d->base, on_reconnect, t);
    t->release = dmf_xevtimer_new(d->base, on_release, t);
    snprintf(t->peer_id, sizeof(t->peer_id), "%s-%.12s-%06x", d->cfg.host_id, id,
             (unsigned)(random() & 0xffffff));
    return t;
}

static void save(struct dmf_task *t)
{
    struct dmf_store_task st;
    memset(&st, 0, sizeof(st));
    memcpy(st.id, t->id, sizeof(st.id));
    st.url = t->shown_url;
    st.content_length = t->book.content_length;
    st.piece_length = t->book.piece_length;
    st.total_pieces = t->book.total_pieces;
    st.complete = t->state == DMF_TASK_SUCCEEDED;
    memcpy(st.content_digest, t->content_digest, sizeof(st.content_digest));
    st.etag = t->etag;
    st.last_modified = t->last_modified;
    st.validated_at = t->validated_at;
    st.content_type = t->content_type;
    if (dmf_store_task_save(t->d->store, &st) != 0)
        dmf_warn("task %s: cannot save its metadata", t->id);
}

struct dmf_task *dmf_task_load(struct dmf_daemon *d, struct dmf_announce_client *announcer,
                               const char *id)
{
    struct dmf_store_task *st;
    if (dmf_store_task_load(d->store, id, &st) != 0)
        return NULL;
    struct dmf_task *t = dmf_task_new(d, announcer, id);
    /* Loading is no use of the task: its last use is the store's (eviction takes the
     * later of the two). */
    t->accessed_ms = t->accessed_saved_ms = 0;
    struct dmf_piece_book *b = &t->book;
    t->url = st->url ? dmf_xstrdup(st->url) : NULL;
    t->shown_url = st->url ? dmf_xstrdup(st->url) : NULL;
    /* The store's layout was checked when it was learnt; taken as it is. */
    b->content_length = st->content_length;
    b->piece_length = st->piece_length;
    b->total_pieces = st->total_pieces;
    memcpy(t->content_digest, st->content_digest, sizeof(t->content_digest));
    set_str(&t->etag, st->etag);
    set_str(&t->last_modified, st->last_modified);
    t->validated_at = st->validated_at;
    set_str(&t->content_type, st->content_type);
    for (uint32_t n = 0; n < st->have.nbits; n++)
        if (dmf_bitmap_get(&st->have, n) && n < st->ndigests)
            dmf_book_commit(b, n, st->digests[n]);
    dmf_store_task_free(st);
    if (complete(t))
        task_set_state(t, DMF_TASK_SUCCEEDED);
    dmf_debug("task %s: loaded from the store with %u of %u pieces", t->id, b->have.count,
              b->total_pieces);
    return t;
}

/* The task's flow in the host's throttle (made on first use, unlimited and normal). */
static struct dmf_flow *task_flow(struct dmf_task *t)
{
    if (t->flow == NULL)
        t->flow = dmf_flow_new(t->d->throttle, 0, DMF_PRIORITY_NORMAL);
    return t->flow;
}

/* Rank of a priority: background < normal < foreground. */
static int priority_rank(enum dmf_priority p)
{
    return p == DMF_PRIORITY_BACKGROUND ? 0 : p == DMF_PRIORITY_FOREGROUND ? 2 : 1;
}

void dmf_task_set_request(struct dmf_task *t, const struct dmf_task_request *req)
{
    struct dmf_flow *f = task_flow(t);
    if (running(t)) {
        /* The download in progress keeps the request that started it; a more urgent
         * request joining it raises its priority. */
        if (priority_rank(req->priority) > priority_rank(dmf_flow_priority(f))) {
            dmf_info("task %s: priority %s -> %s (a new request)", t->id,
                     dmf_priority_name(dmf_flow_priority(f)), dmf_priority_name(req->priority));
            dmf_flow_set(f, dmf_flow_rate(f), req->priority);
        }
        return;
    }
    if (req->rate_limit != dmf_flow_rate(f) || req->priority != dmf_flow_priority(f))
        dmf_info("task %s: limit %llu B/s (0 = none), priority %s", t->id,
                 (unsigned long long)req->rate_limit, dmf_priority_name(req->priority));
    dmf_flow_set(f, req->rate_limit, req->priority);
    free(t->url);
    t->url = dmf_xstrdup(req->url);
    struct dmf_strlist hide = {0};
    dmf_strlist_merge(&hide, req->filter_query);
    dmf_strlist_merge(&hide, &t->d->cfg.secret_query);
    free(t->shown_url);
    t->shown_url = dmf_url_redact(req->url, &hide);
    dmf_strlist_free(&hide);
    dmf_strlist_free(&t->headers);
    for (size_t i = 0; req->headers && i < req->headers->n; i++)
        dmf_strlist_push(&t->headers, req->headers->v[i]);
    free(t->tag);
    t->tag = req->tag ? dmf_xstrdup(req->tag) : NULL;
    free(t->application);
    t->application = req->application && req->application[0] ? dmf_xstrdup(req->application) : NULL;
    snprintf(t->expected_digest, sizeof(t->expected_digest), "%s", req->digest ? req->digest : "");
    dmf_strlist_free(&t->filter_query);
    for (size_t i = 0; req->filter_query && i < req->filter_query->n; i++)
        dmf_strlist_push(&t->filter_query, req->filter_query->v[i]);
    t->disable_back_to_source = req->disable_back_to_source;
    t->origin_policy = req->origin_policy;
}

static struct dmf_task_cache cache_of(struct dmf_task *t);

int dmf_task_ensure_data(struct dmf_task *t)
{
    if (dmf_data_file_fd(&t->file) >= 0)
        return 0;
    int64_t found;
    char *path;
    int fd = dmf_store_open_data_found(t->d->store, t->id, &path, &found);
    if (fd == -EMFILE || fd == -ENFILE) {
        /* Sockets took the descriptors the bound left: give back idle data files. */
        dmf_open_files_shed(t->d->open_files);
        fd = dmf_store_open_data_found(t->d->store, t->id, &path, &found);
    }
    if (fd < 0)
        return fd;
    dmf_data_file_set(&t->file, fd, path);
    struct dmf_task_cache c = cache_of(t);
    dmf_task_cache_opened(&c, found);
    return 0;
}

int dmf_task_data_fd(struct dmf_task *t)
{
    int e = dmf_task_ensure_data(t);
    return e < 0 ? e : t->file.fd;
}

int dmf_task_open_read(struct dmf_task *t)
{
    int dfd = dmf_task_data_fd(t);
    if (dfd < 0)
        return dfd;
    /* Through /proc: a read-only open of the very inode the task writes, whatever its
     * path has become. */
    char proc[64];
    snprintf(proc, sizeof(proc), "/proc/self/fd/%d", dfd);
    int fd = open(proc, O_RDONLY | O_CLOEXEC);
    return fd >= 0 ? fd : -errno;
}

/* ---------------------------------------------------------------- the cache's view */

static int cache_data_fd(void *owner)
{
    return dmf_task_data_fd(owner);
}

static int cache_reopen(void *owner)
{
    return dmf_task_ensure_data(owner);
}

static void cache_verified(void *owner, uint32_t n)
{
    dmf_task_note_verified(owner, n);
}

static const struct dmf_task_cache_hooks cache_hooks = {
    .data_fd = cache_data_fd,
    .reopen = cache_reopen,
    .verified = cache_verified,
};

/* The parts of t that task_cache.c works on, for one call. */
static struct dmf_task_cache cache_of(struct dmf_task *t)
{
    return (struct dmf_task_cache){
        .id = t->id,
        .state = &t->cache,
        .book = &t->book,
        .file = &t->file,
        .store = t->d->store,
        .pieces = t->d->pieces,
        .running = dmf_task_state_running(t->state),
        .hooks = &cache_hooks,
        .owner = t,
    };
}

#define TOUCH_SAVE_MS 10000 /* an access is written to the store at most this often */

/* The task was used now (a get, an upload, a finished download): eviction goes by it. */
static void touch(struct dmf_task *t)
{
    t->accessed_ms = dmf_wall_ms();
    if (t->accessed_ms - t->accessed_saved_ms >= TOUCH_SAVE_MS &&
        dmf_store_task_touch(t->d->store, t->id, t->accessed_ms / 1000) == 0)
        t->accessed_saved_ms = t->accessed_ms;
}

/* A child fetching a task asks for one piece after another: a piece asked for this
 * recently counts as an upload in progress, between the requests too. */
#define UPLOAD_HOLD_MS 5000

bool dmf_task_in_use(const struct dmf_task *t)
{
    bool uploading = (t->uploaded_ms > 0 && dmf_now_ms() - t->uploaded_ms < UPLOAD_HOLD_MS) ||
                     dmf_piece_server_uploading(t->d->pieces, t->id);
    return running(t) || t->users > 0 || t->subs != NULL || t->verify != NULL ||
           dmf_data_file_pinned(&t->file) || uploading;
}

void dmf_task_leave(struct dmf_task *t)
{
    if (t->d->pieces)
        dmf_piece_server_notify_gone(t->d->pieces, t->id);
    dmf_announce_leave_peer(t->announcer, t->id, t->peer_id);
}

void dmf_task_hold(struct dmf_task *t)
{
    t->users++;
    touch(t);
}

void dmf_task_put(struct dmf_task *t)
{
    if (t->users > 0)
        t->users--;
}

/* ---------------------------------------------------------------- layout and digests */

/* Learns the layout (from the scheduler or the origin). A layout that contradicts one
 * already known fails the task. Returns 0 or -EINVAL. */
static int set_layout(struct dmf_task *t, int64_t content_length, uint32_t piece_length)
{
    struct dmf_piece_book *b = &t->book;
    int64_t old_length = b->content_length;
    uint32_t old_piece = b->piece_length;
    char why[160];
    switch (dmf_book_set_layout(b, content_length, piece_length)) {
    case DMF_BOOK_LAYOUT_SAME:
        return 0;
    case DMF_BOOK_LAYOUT_CHANGED:
        if (old_length < 0 && b->content_length >= 0 && t->file.fd >= 0 &&
            ftruncate(t->file.fd, b->content_length) != 0)
            dmf_warn("task %s: cannot size the data file: %s", t->id, strerror(errno));
        save(t);
        kick(t);
        return 0;
    case DMF_BOOK_LAYOUT_BAD_LENGTH:
        return -EINVAL;
    case DMF_BOOK_LAYOUT_PIECE_CHANGED:
        snprintf(why, sizeof(why), "piece length changed from %u to %u", old_piece, piece_length);
        break;
    case DMF_BOOK_LAYOUT_CONTENT_CHANGED:
        snprintf(why, sizeof(why), "content length changed from %lld to %lld",
                 (long long)old_length, (long long)content_length);
        break;
    case DMF_BOOK_LAYOUT_INVALID:
        snprintf(why, sizeof(why), "invalid layout: %lld bytes in pieces of %u",
                 (long long)content_length, piece_length);
        break;
    }
    handle(t, DMF_TASK_EV_ERROR, why);
    return -EINVAL;
}

/* A piece digest from the scheduler (computed by whoever fetched it from the origin). */
static void set_digest(struct dmf_task *t, uint32_t n, const uint8_t digest[DMF_SHA256_LEN])
{
    int r = dmf_book_set_digest(&t->book, n, digest);
    if (r == -EEXIST)
        dmf_warn("task %s: piece %u: conflicting digest from the scheduler ignored", t->id, n);
    else if (r == 1)
        kick(t);
}

static void push_fresh(struct dmf_task *t, uint32_t n)
{
    if (t->nfresh == t->fresh_cap) {
        t->fresh_cap = t->fresh_cap ? t->fresh_cap * 2 : 64;
        t->fresh = dmf_xrealloc(t->fresh, t->fresh_cap * sizeof(*t->fresh));
    }
    t->fresh[t->nfresh++] = n;
}

void dmf_task_note_verified(struct dmf_task *t, uint32_t n)
{
    push_fresh(t, n);
}

/* ---------------------------------------------------------------- piece commit */

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
    bool retried; /* the disk was full once: room was made and the piece tried again */
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
    dmf_piecemem_free(j->buf);
    free(j->parent_host_id);
    free(j);
}

static void count_bytes(struct dmf_task *t, enum dmf_piece_origin from, int64_t len)
{
    switch (from) {
    case DMF_FROM_ORIGIN:
        t->bytes.origin += (uint64_t)len;
        dmf_metric_add(&dmf_m_bytes_origin, len);
        break;
    case DMF_FROM_SEED:
        t->bytes.seed += (uint64_t)len;
        dmf_metric_add(&dmf_m_bytes_seed, len);
        break;
    case DMF_FROM_PEER:
        t->bytes.peer += (uint64_t)len;
        dmf_metric_add(&dmf_m_bytes_peer, len);
        break;
    }
}

static bool no_space(int e)
{
    return e == -ENOSPC || e == -EDQUOT;
}

/* A write of this task found the disk full: evicts what the cache can spare (never a task
 * in use, this one included) for at least len bytes and what the download still needs.
 * True when something was freed (the write is worth one more try). */
static bool make_room(struct dmf_task *t, size_t len)
{
    if (t->d->cache_gc == NULL)
        return false;
    uint64_t left = t->book.content_length >= 0
                        ? (uint64_t)t->book.content_length - dmf_book_held_bytes(&t->book)
                        : 0;
    struct statvfs v;
    uint64_t avail = statvfs(t->d->cfg.data_dir, &v) == 0 ? (uint64_t)v.f_bavail * v.f_frsize : 0;
    uint64_t need = dmf_evict_room_needed(DMF_MAX((uint64_t)len, left), avail);
    if (need == 0) {
        dmf_info("task %s: disk full, but room was made since: trying the piece again", t->id);
        return true;
    }
    struct dmf_cache_gc_report r;
    if (dmf_cache_gc_run(t->d->cache_gc, need, &r) != 0)
        return false;
    dmf_info("task %s: disk full: evicted %zu task(s), %llu bytes; trying the piece again", t->id,
             r.evicted, (unsigned long long)r.freed);
    return r.freed > 0;
}

/* Back on the loop: record the piece, or deal with a bad one. The claim ends here. */
static void piece_done(void *arg)
{
    struct piece_job *j = arg;
    struct dmf_task *t = j->t;
    uint32_t n = j->n;
    char why[160];
    if (no_space(j->err) && !j->retried && running(t) && !t->error && make_room(t, j->len)) {
        /* Still claimed and pinned: the same bytes go to the same place once more. */
        j->retried = true;
        j->err = 0;
        dmf_workq_submit(t->d->workq, piece_work, piece_done, j);
        return;
    }
    dmf_book_release(&t->book, n);
    dmf_data_file_unpin(&t->file);
    if (!running(t) || t->error || dmf_bitmap_get(&t->book.have, n)) {
        if (t->state == DMF_TASK_FAILED && t->release_on_failure)
            arm_ms(t->release, 2000); /* a late write of the failed download */
        kick(t);
        goto out;
    }
    if (j->err == -EBADMSG) {
        dmf_metric_add(&dmf_m_verify_failures, 1);
        if (j->from == DMF_FROM_ORIGIN) {
            snprintf(why, sizeof(why),
                     "piece %u from the origin differs from the one the cluster holds "
                     "(did the content change?)",
                     n);
            handle(t, DMF_TASK_EV_ERROR, why);
        } else {
            dmf_parents_bad_piece(t->parents, j->parent_host_id, n);
        }
        kick(t);
        goto out;
    }
    int e = j->err;
    /* The bytes are written: the piece's row may follow. The store's writer commits it with
     * its batch; when its queue stays full the piece is simply not recorded (it is valid
     * and served now, and fetched again after a restart: the store knows fewer pieces,
     * never more). */
    if (e == 0 && dmf_store_piece_put(t->d->store, t->id, n, j->digest) == -EAGAIN)
        dmf_debug("task %s: piece %u not recorded: the store's queue is full", t->id, n);
    if (e != 0) {
        if (t->error == NULL)
            t->release_on_failure = e == -ENOSPC || e == -EDQUOT || e == -EIO;
        snprintf(why, sizeof(why), "cannot store piece %u: %s", n, dmf_strerror(e));
        handle(t, DMF_TASK_EV_ERROR, why);
        goto out;
    }
    dmf_book_commit(&t->book, n, j->digest);
    dmf_watchdog_progress(&t->watchdog, dmf_now_ms(), j->len);
    dmf_bitmap_set(&t->cache.verified, n);
    count_bytes(t, j->from, (int64_t)j->len);
    dmf_piece_server_notify_piece(t->d->pieces, t->id, n);
    dmf_announce_report_piece(t->announce, n, j->from == DMF_FROM_ORIGIN ? j->digest : NULL);
    push_fresh(t, n);
    kick(t);
out:
    piece_job_free(j);
}

static bool workers_busy(const struct dmf_task *t)
{
    return dmf_workq_pending(t->d->workq) >= DMF_PIECE_JOBS_MAX;
}

/* Piece n's bytes arrived; buf (malloc'd) is taken over. They are hashed and written on a
 * worker thread, then recorded, announced to children, the scheduler and subscribers.
 * From a parent they must match the known digest, else the piece is dropped and that
 * parent excluded; from the origin the digest is computed there and becomes the
 * reference. n stays claimed until then. Returns 0 when the piece was queued (or already
 * held), or a negative code (buf freed). */
static int piece_submit(struct dmf_task *t, uint32_t n, uint8_t *buf, size_t len,
                        enum dmf_piece_origin from, const char *parent_host_id)
{
    const struct dmf_piece_book *b = &t->book;
    int e = 0;
    if (!running(t) || t->error)
        e = -ECANCELED;
    else if (!dmf_book_in_range(b, n) || b->piece_length == 0)
        e = -EINVAL;
    else if (len != dmf_book_piece_size(b, n))
        e = -EINVAL;
    else if (from != DMF_FROM_ORIGIN && dmf_book_digest(b, n) == NULL)
        e = -EINVAL; /* nothing to check it against: it should not have been asked for */
    else
        e = dmf_task_ensure_data(t);
    if (e != 0 || dmf_bitmap_get(&b->have, n)) {
        dmf_book_release(&t->book, n);
        dmf_piecemem_free(buf);
        return e;
    }
    struct piece_job *j = dmf_xcalloc(1, sizeof(*j));
    j->t = t;
    j->n = n;
    j->buf = buf;
    j->len = len;
    j->from = from;
    j->parent_host_id = parent_host_id ? dmf_xstrdup(parent_host_id) : NULL;
    j->fd = t->file.fd; /* open: dmf_task_ensure_data above; pinned until piece_done */
    dmf_data_file_pin(&t->file);
    j->offset = dmf_piece_offset(b->piece_length, n);
    const uint8_t *want = dmf_book_digest(b, n);
    if (want) {
        j->have_expected = true;
        memcpy(j->expected, want, DMF_SHA256_LEN);
    }
    dmf_book_claim(&t->book, n); /* a streamed piece was not claimed before */
    dmf_workq_submit(t->d->workq, piece_work, piece_done, j);
    return 0;
}

/* ---------------------------------------------------------------- what the parts report */

static int on_piece(void *arg, uint32_t n, uint8_t *buf, size_t len, enum dmf_piece_origin from,
                    const char *host_id)
{
    return piece_submit(arg, n, buf, len, from, host_id);
}

static void on_changed(void *arg)
{
    kick(arg);
}

static bool on_busy(void *arg)
{
    return workers_busy(arg);
}

static void on_parent_failed(void *arg, const char *peer_id, const char *host_id, bool bad_piece,
                             uint32_t piece)
{
    struct dmf_task *t = arg;
    dmf_announce_report_parent_failure(t->announce, peer_id, host_id, bad_piece, piece);
}

static const struct dmf_parents_sink parents_sink = {
    .piece = on_piece,
    .parent_failed = on_parent_failed,
    .changed = on_changed,
    .busy = on_busy,
};

static int on_source_layout(void *arg, int64_t content_length, uint32_t piece_length)
{
    return set_layout(arg, content_length, piece_length);
}

/* Pins a validator of the task's content; another value than the pinned one means the
 * origin changed the content under this task. Returns false then. */
static bool pin_validator(char **pinned, const char *v)
{
    if (v == NULL || *v == '\0')
        return true;
    if (*pinned == NULL) {
        *pinned = dmf_xstrdup(v);
        return true;
    }
    return strcmp(*pinned, v) == 0;
}

static void on_source_validators(void *arg, const char *etag, const char *last_modified,
                                 const char *content_type)
{
    struct dmf_task *t = arg;
    if (content_type && strlen(content_type) <= DMF_VALIDATOR_MAX)
        set_str(&t->content_type, content_type);
    set_str(&t->source_etag, etag);
    set_str(&t->source_last_modified, last_modified);
    (void)pin_validator(&t->etag, etag); /* source.c checked them against the pinned ones */
    (void)pin_validator(&t->last_modified, last_modified);
}

static void on_source_failed(void *arg, const struct dmf_source_failure *f)
{
    struct dmf_task *t = arg;
    if (t->error == NULL) {
        t->failed_for_good = f->for_good;
        t->origin_status =
            f->http_status > 0 && f->http_status < 1000 ? (uint32_t)f->http_status : 0;
        t->drop_on_failure = f->content_changed || f->not_shared;
        t->not_shared = f->not_shared;
    }
    handle(t, DMF_TASK_EV_ERROR, f->reason);
}

static const struct dmf_source_sink source_sink = {
    .piece = on_piece,
    .layout = on_source_layout,
    .validators = on_source_validators,
    .failed = on_source_failed,
    .changed = on_changed,
    .busy = on_busy,
};

/* The candidates and meta an event carries to handle() (borrowed). */
struct sched_news {
    const struct dmf_parent_info *parents;
    size_t nparents;
    bool seed_triggered;
    const struct dmf_announce_meta *meta;
};

static void apply_meta(struct dmf_task *t, const struct dmf_announce_meta *m)
{
    if (m->has_layout && set_layout(t, m->content_length, m->piece_length) != 0) {
        char why[160];
        snprintf(why, sizeof(why),
                 "the scheduler sent an invalid layout (%lld bytes, pieces of %u)",
                 (long long)m->content_length, m->piece_length);
        handle(t, DMF_TASK_EV_ERROR, why);
        return;
    }
    if (!pin_validator(&t->etag, m->etag) || !pin_validator(&t->last_modified, m->last_modified)) {
        if (t->error == NULL)
            t->drop_on_failure = true;
        handle(t, DMF_TASK_EV_ERROR,
               "the content changed at the origin during the download (the cluster has "
               "another version than this host)");
        return;
    }
    /* A host that fetches nothing from the origin learns its Content-Type from the
     * scheduler (a digest source's), to serve the content with it. */
    if (t->content_type == NULL && m->content_type && *m->content_type)
        set_str(&t->content_type, m->content_type);
    for (size_t i = 0; i < m->ndigests; i++)
        set_digest(t, m->digests[i].number, m->digests[i].sha256);
}

static void handle_news(struct dmf_task *t, enum dmf_task_event ev, const struct sched_news *news);

static void on_candidates(void *arg, const struct dmf_parent_info *parents, size_t n,
                          bool seed_triggered, const struct dmf_announce_meta *meta)
{
    ((struct dmf_task *)arg)->reconnects = 0; /* the scheduler answers again */
    struct sched_news news = {parents, n, seed_triggered, meta};
    handle_news(arg, DMF_TASK_EV_CANDIDATES, &news);
}

/* A new piece-fetch token (with parents, or alone: a renewal before the last one expires). */
static void on_piece_token(void *arg, const char *token)
{
    struct dmf_task *t = arg;
    if (strlen(token) > DMF_PIECE_TOKEN_MAX)
        return; /* not one of ours: keep the one we have */
    snprintf(t->piece_token, sizeof(t->piece_token), "%s", token);
}

static void on_meta(void *arg, const struct dmf_announce_meta *meta)
{
    ((struct dmf_task *)arg)->reconnects = 0; /* the scheduler answers again */
    struct sched_news news = {.meta = meta};
    handle_news(arg, DMF_TASK_EV_META, &news);
}

static void on_sched_failed(void *arg, const char *reason, uint32_t origin_status,
                            bool content_changed)
{
    struct dmf_task *t = arg;
    if (content_changed && t->error == NULL)
        t->drop_on_failure = true; /* another version: nothing held may be kept */
    char why[600];
    snprintf(why, sizeof(why), "the scheduler says: %.500s", reason);
    handle(arg, DMF_TASK_EV_ERROR, why);
}

static void on_back_to_source(void *arg, const char *reason)
{
    ((struct dmf_task *)arg)->reconnects = 0; /* the scheduler answers again */
    char why[300];
    snprintf(why, sizeof(why), "the scheduler says: %.256s", reason);
    handle(arg, DMF_TASK_EV_SCHED_BACK_TO_SOURCE, why);
}

static void on_lost(void *arg, const char *details)
{
    struct dmf_task *t = arg;
    t->announce = NULL; /* freed by announce.c after this call */
    char why[300];
    if (t->state == DMF_TASK_REGISTERING)
        snprintf(why, sizeof(why), "scheduler at %s unreachable (%.200s)", t->d->cfg.scheduler,
                 details[0] ? details : "no answer");
    else
        snprintf(why, sizeof(why), "%.200s", details[0] ? details : "stream closed");
    handle(t, DMF_TASK_EV_SCHED_LOST, why);
}

static const struct dmf_announce_sink announce_sink = {
    .candidates = on_candidates,
    .piece_token = on_piece_token,
    .meta = on_meta,
    .back_to_source = on_back_to_source,
    .failed = on_sched_failed,
    .lost = on_lost,
};

/* ---------------------------------------------------------------- applying a step */

/* The transfers stop (the task finished, failed or goes back to the source): parents that
 * stalled are reported first (dmf_parents_report_stalled). */
static void stop_transfers(struct dmf_task *t)
{
    dmf_parents_report_stalled(t->parents);
    dmf_parents_free(t->parents);
    t->parents = NULL;
    dmf_source_free(t->source);
    t->source = NULL;
    evtimer_del(t->stall);
    evtimer_del(t->reconnect);
    dmf_book_release_all(&t->book);
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

static void drop_pieces(struct dmf_task *t);

static void truncate_data(struct dmf_task *t)
{
    int fd = dmf_task_data_fd(t);
    if (fd >= 0 && ftruncate(fd, 0) != 0)
        dmf_warn("task %s: cannot truncate its data file: %s", t->id, strerror(errno));
}

static void on_release(evutil_socket_t fd, short what, void *arg)
{
    struct dmf_task *t = arg;
    if (t->state == DMF_TASK_FAILED)
        truncate_data(t);
}

/* The disk filled up under this download: its pieces go at once, their blocks shortly
 * after (a watcher may still be copying the last pieces it was told of), so that the next
 * download on this host (and this one, tried again) has the space back. */
static void release_space(struct dmf_task *t)
{
    dmf_warn("task %s: releasing its %u pieces (%lld bytes) after a storage failure", t->id,
             t->book.have.count, (long long)dmf_book_held_bytes(&t->book));
    drop_pieces(t);
    arm_ms(t->release, 2000);
}

void dmf_task_release_now(struct dmf_task *t)
{
    if (evtimer_pending(t->release, NULL)) {
        evtimer_del(t->release);
        if (t->state == DMF_TASK_FAILED)
            truncate_data(t);
    }
}

static void finish(struct dmf_task *t)
{
    bool ok = t->state == DMF_TASK_SUCCEEDED;
    stop_transfers(t);
    /* The file as the daemon's writes left it. A check of the cache alone (no piece came)
     * keeps the mark taken before it hashed: a change during the hash stays visible. */
    if (t->bytes.origin + t->bytes.seed + t->bytes.peer > 0 || !t->cache.marked) {
        struct dmf_task_cache c = cache_of(t);
        dmf_task_cache_mark(&c);
    }
    uint64_t ms = dmf_now_ms() - t->started_ms;
    if (ok) {
        if (t->bytes.origin + t->bytes.seed + t->bytes.peer > 0)
            t->validated_at = (int64_t)time(NULL); /* just fetched: the current version */
        save(t);
        t->accessed_ms = t->accessed_saved_ms = dmf_wall_ms();
        dmf_metric_add(&dmf_m_tasks_succeeded, 1);
        dmf_piece_server_notify_done(t->d->pieces, t->id);
        dmf_info("task %s peer %s: %lld bytes in %llu ms (origin %llu, seed %llu, peers %llu)",
                 t->id, t->peer_id, (long long)t->book.content_length, (unsigned long long)ms,
                 (unsigned long long)t->bytes.origin, (unsigned long long)t->bytes.seed,
                 (unsigned long long)t->bytes.peer);
    } else {
        dmf_metric_add(&dmf_m_tasks_failed, 1);
        if (t->release_on_failure)
            release_space(t);
        if (t->drop_on_failure) {
            /* The next try starts over, layout and digests included: two versions never
             * mix. */
            drop_pieces(t);
            dmf_book_free(&t->book);
            dmf_book_init(&t->book);
            set_str(&t->etag, NULL);
            set_str(&t->last_modified, NULL);
            save(t);
        }
        dmf_piece_server_notify_gone(t->d->pieces, t->id);
        dmf_warn("task %s peer %s: failed: %s", t->id, t->peer_id, t->error);
    }
    dmf_announce_finish(t->announce, ok, t->error, t->failed_for_good, t->origin_status,
                        !ok && t->drop_on_failure && !t->not_shared);
    t->announce = NULL;
    tell_subscribers(t, true);
    if (t->d->cache_gc)
        dmf_cache_gc_soon(t->d->cache_gc); /* over the limit now? a failed task's leftovers */
}

static void start_verify(struct dmf_task *t);

static void drop_pieces(struct dmf_task *t)
{
    /* The pieces are consistent with each other but not with the digest asked for: drop
     * them so that nobody is served this content under this task. */
    for (uint32_t n = 0; n < t->book.total_pieces; n++)
        dmf_store_piece_drop(t->d->store, t->id, n);
    dmf_book_drop_all(&t->book);
}

static void set_error(struct dmf_task *t, const char *why)
{
    free(t->error);
    t->error = dmf_xstrdup(why ? why : "failed");
}

/* Opens an AnnouncePeer stream for this task; holds: every piece is held (the stream is
 * finished at once and left to the client). */
static struct dmf_announce_peer *open_stream(struct dmf_task *t, bool holds, bool stalled)
{
    struct dmf_announce_peer_env env = {
        .task_id = t->id,
        .peer_id = t->peer_id,
        .book = &t->book,
        .bytes = &t->bytes,
        /* A holder speaks for the version of its pieces; a download for what its own fetch
         * from the origin saw (if any). */
        .etag = holds ? &t->etag : &t->source_etag,
        .last_modified = holds ? &t->last_modified : &t->source_last_modified,
        .content_type = &t->content_type,
        .sink = &announce_sink,
        .arg = t,
    };
    struct dmf_announce_register reg = {
        .url = t->url,
        .headers = &t->headers,
        .tag = t->tag,
        .application = t->application,
        .digest = t->expected_digest,
        .filter_query = &t->filter_query,
        .disable_back_to_source = t->disable_back_to_source,
        .holds_task = holds,
        .from_source = !holds && t->state == DMF_TASK_BACK_TO_SOURCE,
        .stalled = stalled,
        .etag = t->version_news ? t->etag : NULL,
        .last_modified = t->version_news ? t->last_modified : NULL,
    };
    t->version_news = false; /* told once: a later register is of the version it pinned */
    return dmf_announce_open(t->announcer, &env, &reg);
}

static void register_peer(struct dmf_task *t, bool stalled)
{
    dmf_announce_peer_free(t->announce);
    t->announce = open_stream(t, false, stalled);
    /* Queued behind the register (the old stream's queue goes with it). */
    dmf_parents_report_stalled(t->parents);
}

/* Tells the scheduler this host holds the whole task (layout and digests included). */
static void announce_held(struct dmf_task *t)
{
    if (t->announcer == NULL || t->url == NULL || !complete(t))
        return;
    dmf_debug("task %s: telling the scheduler this host holds it", t->id);
    t->held_announced = true;
    dmf_announce_finish(open_stream(t, true, false), true, NULL, false, 0, false);
}

void dmf_task_rejoin(struct dmf_task *t)
{
    if (t->announcer == NULL)
        return;
    if (running(t)) {
        if (t->announce == NULL && evtimer_pending(t->reconnect, NULL)) {
            evtimer_del(t->reconnect);
            t->reconnects = 0;
            handle(t, DMF_TASK_EV_RECONNECT, NULL);
        }
        return;
    }
    t->held_announced = false;
    if (t->state == DMF_TASK_IDLE || t->state == DMF_TASK_SUCCEEDED)
        announce_held(t);
}

static void start_source(struct dmf_task *t, const char *why)
{
    dmf_info("task %s peer %s: back to source: %s", t->id, t->peer_id, why);
    dmf_parents_report_stalled(t->parents);
    dmf_parents_free(t->parents);
    t->parents = NULL;
    dmf_source_free(t->source);
    struct dmf_source_env env = {
        .base = t->d->base,
        .http = t->d->http,
        .book = &t->book,
        .task_id = t->id,
        .url = t->url,
        .headers = &t->headers,
        .origin_policy = t->origin_policy,
        .concurrency = (int)t->d->cfg.source_concurrency,
        .flow = task_flow(t),
        .etag = &t->etag,
        .last_modified = &t->last_modified,
        .immutable = t->expected_digest[0] != '\0',
        .sink = &source_sink,
        .arg = t,
    };
    t->source = dmf_source_start(&env);
}

static void add_parents(struct dmf_task *t, const struct sched_news *news, bool first)
{
    if (t->parents == NULL) {
        struct dmf_parents_env env = {
            .base = t->d->base,
            .http = t->d->http,
            .book = &t->book,
            .task_id = t->id,
            .peer_id = t->peer_id,
            .parent_concurrency = (int)t->d->cfg.parent_concurrency,
            .flow = task_flow(t),
            .sink = &parents_sink,
            .arg = t,
            .tls = t->d->peer_tls,
            .piece_token = t->piece_token,
            .self_host_id = t->d->cfg.host_id,
        };
        t->parents = dmf_parents_new(&env);
    }
    for (size_t i = 0; i < news->nparents; i++)
        dmf_parents_add(t->parents, &news->parents[i]);
    if (first)
        dmf_info("task %s peer %s: scheduler offers %zu parent(s)%s", t->id, t->peer_id,
                 news->nparents, news->seed_triggered ? " (a seed is fetching it)" : "");
}

static void dispatch_parents(struct dmf_task *t)
{
    dmf_parents_dispatch(t->parents);
}

/* ---------------------------------------------------------------- the watchdog */

#define WATCHDOG_MIN_MS  4000 /* the shortest stall deadline, whatever the rate */
#define WATCHDOG_TICK_MS 500  /* how often a running task looks at its watchdog */

/* How long this task may go without a verified piece, in its current state. */
static uint64_t stall_deadline(const struct dmf_task *t)
{
    const struct dmf_daemon_config *cfg = &t->d->cfg;
    if (t->state == DMF_TASK_BACK_TO_SOURCE)
        return cfg->progress_timeout; /* the origin is the last resort: only the bound */
    uint64_t ms = dmf_watchdog_deadline(&t->watchdog, t->book.piece_length, WATCHDOG_MIN_MS,
                                        cfg->progress_timeout);
    /* A bandwidth limit slows pieces on purpose: that is no stall. */
    uint64_t lim = t->flow ? dmf_flow_rate(t->flow) : 0,
             host = dmf_throttle_get(t->d->throttle, DMF_LIMIT_DOWNLOAD);
    if (host && (lim == 0 || host < lim))
        lim = host;
    if (lim) {
        uint64_t floor = DMF_WATCHDOG_MARGIN * (uint64_t)t->book.piece_length * 1000 / lim;
        ms = floor > ms ? floor : ms;
    }
    if (t->state == DMF_TASK_P2P && dmf_parents_usable(t->parents) == 0 &&
        cfg->parent_stall_timeout < ms)
        ms = cfg->parent_stall_timeout;
    return ms;
}

/* A running task always has the watchdog's timer armed (VERIFYING is bounded by the
 * content's size and needs none). */
static void watch(struct dmf_task *t)
{
    if (!running(t) || t->state == DMF_TASK_VERIFYING || evtimer_pending(t->stall, NULL))
        return;
    arm_ms(t->stall, WATCHDOG_TICK_MS);
}

/* The stream to the scheduler was lost: reopen it after a capped, jittered backoff. */
static void reconnect_later(struct dmf_task *t, const char *why)
{
    if (t->reconnects == 0)
        dmf_warn("task %s peer %s: lost the scheduler (%s); going on with %s, reconnecting", t->id,
                 t->peer_id, why, t->state == DMF_TASK_P2P ? "current parents" : "the origin");
    uint64_t ms = dmf_backoff_ms(t->reconnects, 250, 5000, (uint32_t)random());
    t->reconnects++;
    if (!evtimer_pending(t->reconnect, NULL))
        arm_ms(t->reconnect, ms);
}

static struct dmf_task_facts facts(const struct dmf_task *t)
{
    return (struct dmf_task_facts){
        .all_held = dmf_book_all_held(&t->book),
        .has_scheduler = t->announcer != NULL,
        .back_to_source_disabled = t->disable_back_to_source,
        .expect_digest = t->expected_digest[0] != '\0',
        .needs_check = dmf_task_cache_needs_check(&t->cache, &t->book),
        .has_error = t->error != NULL,
        .usable_parents = dmf_parents_usable(t->parents),
        .announced = t->announce != NULL,
        .stalls = t->watchdog.stalls,
    };
}

/* Decides (task_fsm.c) and applies: the one way a task reacts to anything. why is the
 * reason the event carries (an error, the way to the origin), news what the scheduler
 * sent. */
static void apply(struct dmf_task *t, enum dmf_task_event ev, const char *why,
                  const struct sched_news *news)
{
    struct dmf_task_facts f = facts(t);
    enum dmf_task_state from = t->state;
    struct dmf_task_step s = dmf_task_next(from, ev, &f);
    if (s.actions == 0 && s.to == from)
        return;
    dmf_debug("task %s: %s in %s", t->id, dmf_task_event_name(ev), dmf_task_state_name(from));
    if (s.actions & DMF_TASK_DO_RECORD_ERROR)
        set_error(t, why);
    if (s.actions & DMF_TASK_DO_FAIL_NO_SOURCE) {
        char buf[512];
        snprintf(buf, sizeof(buf), "%s, and back-to-source is disabled (--no-back-to-source)", why);
        if (t->error == NULL)
            set_error(t, buf);
    }
    task_set_state(t, s.to);
    if (!dmf_task_state_running(from) || from == DMF_TASK_VERIFYING) {
        if (running(t) && t->state != DMF_TASK_VERIFYING) {
            /* A download starts (from the cache's check, too): the watchdog from now. */
            dmf_watchdog_start(&t->watchdog, dmf_now_ms());
            t->reconnects = 0;
        }
    }
    if (s.actions & DMF_TASK_DO_WARN_LOST)
        reconnect_later(t, why);
    if (s.actions & DMF_TASK_DO_REGISTER)
        register_peer(t, false);
    if (s.actions & DMF_TASK_DO_RESCHEDULE) {
        dmf_info("task %s peer %s: %s; asking the scheduler for new parents", t->id, t->peer_id,
                 why);
        register_peer(t, true);
    }
    if (s.actions & DMF_TASK_DO_START_SOURCE)
        start_source(t, why);
    if ((s.actions & DMF_TASK_DO_APPLY_META) && news && news->meta)
        apply_meta(t, news->meta);
    if ((s.actions & DMF_TASK_DO_ADD_PARENTS) && news)
        add_parents(t, news, from == DMF_TASK_REGISTERING);
    if (s.actions & DMF_TASK_DO_DISPATCH_PARENTS)
        dispatch_parents(t);
    if (s.actions & DMF_TASK_DO_DISPATCH_SOURCE)
        dmf_source_dispatch(t->source);
    if (s.actions & DMF_TASK_DO_VERIFY)
        start_verify(t);
    if (s.actions & DMF_TASK_DO_DROP_PIECES)
        drop_pieces(t);
    if (s.actions & DMF_TASK_DO_FINISH)
        finish(t);
    if (s.actions & DMF_TASK_DO_TELL) {
        if (t->state == DMF_TASK_SUCCEEDED || t->state == DMF_TASK_FAILED)
            tell_subscribers(t, true);
        else if (t->nfresh || t->subs)
            tell_subscribers(t, false);
    }
    if (s.actions & DMF_TASK_DO_KICK)
        kick(t);
    watch(t);
}

static void handle(struct dmf_task *t, enum dmf_task_event ev, const char *why)
{
    apply(t, ev, why, NULL);
}

static void handle_news(struct dmf_task *t, enum dmf_task_event ev, const struct sched_news *news)
{
    apply(t, ev, NULL, news);
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    handle(arg, DMF_TASK_EV_KICK, NULL);
}

static void on_stall(evutil_socket_t fd, short what, void *arg)
{
    struct dmf_task *t = arg;
    if (!running(t) || t->state == DMF_TASK_VERIFYING)
        return;
    uint64_t now = dmf_now_ms(), deadline = stall_deadline(t);
    uint64_t left = dmf_watchdog_left(&t->watchdog, now, deadline);
    if (left > 0) {
        arm_ms(t->stall, left < WATCHDOG_TICK_MS ? left : WATCHDOG_TICK_MS);
        return;
    }
    int stalls = dmf_watchdog_stalled(&t->watchdog, now);
    char why[200];
    if (t->state == DMF_TASK_REGISTERING)
        snprintf(why, sizeof(why), "the scheduler did not answer within %llu ms",
                 (unsigned long long)deadline);
    else if (t->state == DMF_TASK_P2P && dmf_parents_usable(t->parents) == 0)
        snprintf(why, sizeof(why), "no parent left to fetch from");
    else
        snprintf(why, sizeof(why), "no new piece for %llu ms%s (%u of %u pieces held)",
                 (unsigned long long)deadline,
                 t->state == DMF_TASK_BACK_TO_SOURCE ? " from the origin" : "", t->book.have.count,
                 t->book.total_pieces);
    dmf_info("task %s peer %s: stalled (%d in a row) in %s: %s", t->id, t->peer_id, stalls,
             dmf_task_state_name(t->state), why);
    handle(t, DMF_TASK_EV_STALLED, why);
    watch(t);
}

static void on_reconnect(evutil_socket_t fd, short what, void *arg)
{
    handle(arg, DMF_TASK_EV_RECONNECT, NULL);
}

/* ---------------------------------------------------------------- whole-content digest */

/* Once every piece is held, and before a cached task is handed out when its pieces are
 * not all verified in this session or a content digest was asked for: one pass over the
 * data file hashes every piece (against the digests in the book) and the whole content
 * (against the digest asked for). Hashing gigabytes takes a while, so it runs as a long
 * job of the worker pool (at most nthreads - 1 at once, the others wait their turn: see
 * workq.h) and the result comes back to the loop. A task freed meanwhile, or a daemon
 * shutting down, cancels it: the scan stops at its next chunk and its answer is dropped. */
struct verify_job {
    struct dmf_task *t; /* NULL once the task let go of the job (freed) */
    struct dmf_cache_scan scan;
    int cancel; /* read by the scan with __atomic loads */
};

static void verify_work(void *arg)
{
    struct verify_job *job = arg;
    dmf_cache_scan_run(&job->scan);
}

static void verify_job_free(struct verify_job *job)
{
    close(job->scan.fd);
    dmf_cache_scan_free(&job->scan);
    free(job);
}

/* Stops the task's verification, if any: its done() only frees it. */
static void verify_cancel(struct dmf_task *t)
{
    struct verify_job *job = t->verify;
    if (job == NULL)
        return;
    __atomic_store_n(&job->cancel, 1, __ATOMIC_RELAXED);
    job->t = NULL;
    t->verify = NULL;
}

void dmf_task_cancel_long_work(struct dmf_task *t)
{
    verify_cancel(t);
}

static void on_verified(void *arg)
{
    struct verify_job *job = arg;
    struct dmf_task *t = job->t;
    uint8_t want[DMF_SHA256_LEN];
    char err[128];
    if (t == NULL) { /* cancelled */
        verify_job_free(job);
        return;
    }
    t->verify = NULL;
    if (t->state != DMF_TASK_VERIFYING) {
        verify_job_free(job);
        return;
    }
    int e = job->scan.err;
    /* Pieces may also have been dropped while the scan ran (a child's request found one
     * bad): then too they are fetched again. */
    struct dmf_task_cache c = cache_of(t);
    if (e == 0 && (dmf_task_cache_apply_scan(&c, &job->scan) > 0 || !dmf_book_all_held(&t->book))) {
        verify_job_free(job);
        /* The bad pieces are dropped: fetch them again, as a download. */
        free(t->error);
        t->error = NULL;
        t->started_ms = dmf_now_ms();
        if (dmf_task_ensure_data(t) == 0)
            save(t);
        handle(t, DMF_TASK_EV_CHECK_DROPPED, "cached pieces failed verification");
        return;
    }
    bool expect = t->expected_digest[0] != '\0';
    if (e == 0 && expect &&
        (dmf_digest_parse(t->expected_digest, want, err, sizeof(err)) != 0 ||
         memcmp(want, job->scan.whole, DMF_SHA256_LEN) != 0))
        e = -EBADMSG;
    char gots[DMF_DIGEST_STR_LEN + 1];
    dmf_digest_format(job->scan.whole, gots);
    verify_job_free(job);
    if (e != 0) {
        t->failed_for_good = e == -EBADMSG; /* the content is what it is, for anyone */
        char *why = e == -EBADMSG ? dmf_xasprintf("content digest mismatch: expected %s, got %s",
                                                  t->expected_digest, gots)
                                  : dmf_xasprintf("cannot read the content to verify it: %s",
                                                  dmf_strerror(e));
        set_error(t, why);
        free(why);
        handle(t, DMF_TASK_EV_VERIFY_FAILED, NULL);
        return;
    }
    /* The content matched: whatever a part reported while it was hashed is moot. */
    free(t->error);
    t->error = NULL;
    if (expect)
        memcpy(t->content_digest, t->expected_digest, sizeof(t->content_digest));
    handle(t, DMF_TASK_EV_VERIFIED, NULL);
}

static void start_verify(struct dmf_task *t)
{
    if (t->d->stopping)
        return; /* a piece landing during shutdown: the task is freed next */
    struct verify_job *job = dmf_xcalloc(1, sizeof(*job));
    job->t = t;
    int fd = dmf_task_data_fd(t);
    job->scan.fd = fd >= 0 ? fcntl(fd, F_DUPFD_CLOEXEC, 0) : -1;
    job->scan.content_length = t->book.content_length;
    job->scan.piece_length = t->book.piece_length;
    job->scan.cancel = &job->cancel;
    if (job->scan.fd < 0) {
        free(job);
        set_error(t, "cannot start verifying the content");
        handle(t, DMF_TASK_EV_VERIFY_FAILED, NULL);
        return;
    }
    t->verify = job;
    dmf_workq_submit_long(t->d->workq, verify_work, on_verified, job);
}

/* ---------------------------------------------------------------- what other wings may do
 * (task_view.h) */

void dmf_task_start(struct dmf_task *t)
{
    if (running(t))
        return;
    if (evtimer_pending(t->release, NULL)) {
        evtimer_del(t->release);
        truncate_data(t); /* nothing of the failed download is handed out any more */
    }
    if (dmf_book_all_held(&t->book)) {
        t->bytes = (struct dmf_transfer_bytes){0}; /* the cache answers, maybe once checked */
    } else {
        free(t->error);
        t->error = NULL;
        t->failed_for_good = t->drop_on_failure = t->release_on_failure = false;
        t->not_shared = false;
        t->origin_status = 0;
        t->bytes = (struct dmf_transfer_bytes){0};
        t->started_ms = dmf_now_ms();
        dmf_watchdog_start(&t->watchdog, t->started_ms);
        t->reconnects = 0;
        int e = dmf_task_ensure_data(t);
        if (e < 0) {
            char why[160];
            snprintf(why, sizeof(why), "cannot open the task's data file: %s", dmf_strerror(e));
            set_error(t, why);
            task_set_state(t, DMF_TASK_FAILED);
            finish(t);
            return;
        }
        save(t);
    }
    handle(t, DMF_TASK_EV_START, "no scheduler configured");
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
        .url = t->shown_url ? t->shown_url : "",
        .data_path = t->file.path ? t->file.path : "",
        .data_gen = t->file.gen,
        .content_digest = t->content_digest,
        .error = t->error,
        .not_shared = t->not_shared,
        .etag = t->etag ? t->etag : "",
        .last_modified = t->last_modified ? t->last_modified : "",
        .content_type = t->content_type ? t->content_type : "",
        .phase = phase(t->state),
        .content_length = t->book.content_length,
        .piece_length = t->book.piece_length,
        .total_pieces = t->book.total_pieces,
        .held_pieces = t->book.have.count,
        .completed_length = dmf_book_held_bytes(&t->book),
        .bytes_from_origin = t->bytes.origin,
        .bytes_from_peers = t->bytes.seed + t->bytes.peer,
    };
}

bool dmf_task_cached(struct dmf_task *t)
{
    /* Not while a download runs: between its last piece and the next KICK pass every piece
     * is held but the content digest asked for is not checked yet. Not either when a piece
     * is not verified in this session or a content digest is asked for: dmf_task_start
     * checks them first (VERIFYING). */
    struct dmf_task_cache c = cache_of(t);
    dmf_task_cache_refresh(&c);
    return complete(t) && (t->state == DMF_TASK_IDLE || t->state == DMF_TASK_SUCCEEDED) &&
           t->expected_digest[0] == '\0' && !dmf_task_cache_needs_check(&t->cache, &t->book);
}

void dmf_task_serve_cached(struct dmf_task *t)
{
    if (t->state != DMF_TASK_SUCCEEDED)
        dmf_task_start(t); /* complete: marks it SUCCEEDED */
    t->bytes = (struct dmf_transfer_bytes){0};
    touch(t);
    if (t->d->cfg.seed || !t->held_announced)
        announce_held(t);
}

bool dmf_task_has_piece(const struct dmf_task *t, uint32_t n)
{
    return dmf_bitmap_get(&t->book.have, n) && dmf_bitmap_get(&t->cache.verified, n);
}

size_t dmf_task_held_pieces(const struct dmf_task *t, uint32_t **out)
{
    const dmf_bitmap_t *have = &t->book.have;
    uint32_t *held = dmf_xmalloc(((size_t)have->count + 1) * sizeof(*held));
    size_t n = 0;
    for (uint32_t i = 0; i < have->nbits && n < have->count; i++)
        if (dmf_bitmap_get(have, i) && dmf_bitmap_get(&t->cache.verified, i))
            held[n++] = i;
    *out = held;
    return n;
}

bool dmf_task_data_is(struct dmf_task *t, const struct stat *st)
{
    struct stat now;
    int fd = dmf_task_data_fd(t); /* reopened when the bound on open files closed it */
    return fd >= 0 && fstat(fd, &now) == 0 && now.st_dev == st->st_dev && now.st_ino == st->st_ino;
}

/* Called by the piece server before it sends piece n to a child (only then). */
static bool piece_view_verify(void *arg, uint32_t n)
{
    struct dmf_task *t = arg;
    touch(t); /* an upload to a peer is a use of the task */
    t->uploaded_ms = dmf_now_ms();
    struct dmf_task_cache c = cache_of(t);
    return dmf_task_cache_verify_piece(&c, n);
}

void dmf_task_piece_view(struct dmf_task *t, struct dmf_piece_view *view)
{

    view->fd = dmf_task_data_fd(t);
    view->content_length = t->book.content_length;
    view->piece_length = t->book.piece_length;
    view->have = &t->book.have;
    view->complete = t->state == DMF_TASK_SUCCEEDED && complete(t);
    view->downloading = running(t);
    view->ledger = t->d->cfg.seed ? &t->ledger : NULL;
    view->verify = piece_view_verify;
    view->verify_arg = t;
}

void dmf_task_still_current(struct dmf_task *t)
{
    if (running(t) || !dmf_book_all_held(&t->book))
        return;
    t->validated_at = (int64_t)time(NULL);
    save(t);
}

void dmf_task_new_version(struct dmf_task *t, const char *etag, const char *last_modified)
{
    if (running(t))
        return; /* a download started meanwhile: it pins what it finds */
    dmf_info("task %s: the origin has another version (ETag %s): the cached one is dropped", t->id,
             etag && *etag ? etag : "none");
    struct dmf_task_cache c = cache_of(t);
    dmf_task_cache_detach(&c, "a new version at the origin");
    dmf_book_free(&t->book);
    dmf_book_init(&t->book);
    set_str(&t->etag, etag);
    set_str(&t->last_modified, last_modified);
    t->version_news = t->etag != NULL || t->last_modified != NULL;
    t->validated_at = 0;
    if (t->state == DMF_TASK_SUCCEEDED)
        task_set_state(t, DMF_TASK_IDLE);
    save(t);
}

void dmf_task_free(struct dmf_task *t, const char *why)
{
    if (t->subs) {
        set_error(t, why);
        tell_subscribers(t, true);
    }
    verify_cancel(t);             /* the pool frees the job once its scan stops */
    dmf_parents_free(t->parents); /* freed, not stopped: nothing is reported any more */
    t->parents = NULL;
    stop_transfers(t);
    dmf_announce_peer_free(t->announce);
    event_free(t->kick);
    event_free(t->stall);
    event_free(t->reconnect);
    event_free(t->release);
    dmf_data_file_free(&t->file);
    explicit_bzero(t->piece_token, sizeof(t->piece_token));
    free(t->url);
    free(t->shown_url);
    free(t->tag);
    free(t->application);
    free(t->error);
    free(t->etag);
    free(t->last_modified);
    free(t->source_etag);
    free(t->source_last_modified);
    free(t->content_type);
    free(t->fresh);
    dmf_strlist_free(&t->headers);
    dmf_strlist_free(&t->filter_query);
    dmf_book_free(&t->book);
    dmf_cache_free(&t->cache);
    dmf_seed_ledger_free(&t->ledger);
    dmf_flow_unref(t->flow); /* requests still being reaped hold their own reference */
    free(t);
}
