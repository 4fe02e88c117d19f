/* The piece server: evhttp on the daemon's loop thread. Pieces go out with sendfile from
 * a dup of the task's data file; /have streams are chunked responses kept open per
 * watcher. The wire format is described in docs/internals/PIECE-PROTOCOL.md. */
#include "daemon/piece_server.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/evx.h"
#include "common/header_deadline.h"
#include "common/fdlimit.h"
#include "common/log.h"
#include "common/throttle.h"
#include "common/metrics.h"
#include "common/piece_token.h"
#include "common/taskid.h"
#include "common/tls.h"
#include "common/util.h"
#include "daemon/piece_target.h"

#define MAX_HEADERS_SIZE  8192
#define IO_TIMEOUT_SEC    60
#define HEADER_TIMEOUT_MS 10000 /* accept to the first request head */
#define WATCHER_BUCKETS   256
#define WATCHER_INPUT_MAX 16384 /* bytes a watcher may send us before we stop reading */
#define LISTEN_BACKLOG    511
#define HAVE_LINE_MAX     32   /* "have 4294967295\n" and "done 4294967295\n" fit */
#define QUEUE_MAX         1024 /* piece requests waiting for a slot; more get 503 */
#define AGING_MS          20   /* waiting this long counts as one permille less progress */
#define CHILDREN_PER_SLOT 4    /* /have watchers per upload slot, at most (upload_slots()) */
#define SLOTS_MAX         64
#define DENIED_LOG_MS     10000 /* refused piece fetches are logged at most this often */

static DMF_METRIC_COUNTER(m_upload_bytes, "damselfly_upload_bytes_total", NULL,
                          "Bytes of pieces sent to other peers by the piece server.");
static DMF_METRIC_GAUGE(m_uploads_active, "damselfly_uploads_active", NULL,
                        "Piece uploads in progress.");
static DMF_METRIC_GAUGE(m_uploads_queued, "damselfly_uploads_queued", NULL,
                        "Piece requests waiting for an upload slot.");
static DMF_METRIC_GAUGE(m_have_watchers, "damselfly_have_watchers", NULL,
                        "Open /have streams (children watching a task).");
#define DENIED_HELP "Piece and /have requests refused for want of a valid piece-fetch token."
static DMF_METRIC_COUNTER(m_denied_missing, "damselfly_piece_auth_denied_total",
                          "reason=\"missing\"", DENIED_HELP);
static DMF_METRIC_COUNTER(m_denied_malformed, "damselfly_piece_auth_denied_total",
                          "reason=\"malformed\"", DENIED_HELP);
static DMF_METRIC_COUNTER(m_denied_expired, "damselfly_piece_auth_denied_total",
                          "reason=\"expired\"", DENIED_HELP);
static DMF_METRIC_COUNTER(m_denied_forged, "damselfly_piece_auth_denied_total", "reason=\"forged\"",
                          DENIED_HELP);

/* One piece request, from its arrival until the last byte of the reply has left (SENT)
 * or the connection has dropped first (ABORTED). While every upload slot is taken it
 * waits (QUEUED); the next to go is the one whose child has the least of the task, aged
 * by its wait, so that the children behind catch up and all finish together. */
enum upload_state { UPLOAD_QUEUED, UPLOAD_SENDING, UPLOAD_SENT, UPLOAD_ABORTED };
static const char *const upload_state_names[] = {"queued", "sending", "sent", "aborted"};

struct upload {
    dmf_piece_server_t *ps;
    struct upload *next;        /* in ps->queue while QUEUED, in ps->sending while SENDING */
    struct evhttp_request *req; /* while QUEUED (evhttp owns it) */
    struct evhttp_connection *evcon;
    enum upload_state state;
    uint32_t n;
    uint32_t size;
    uint32_t progress; /* the child's share of the task, in permille (X-Dmf-Progress) */
    uint64_t queued_ms;
    char task_id[DMF_TASK_ID_LEN + 1];
};

/* One open GET /have/<id> response. STREAMING until the task completes (DONE), goes away
 * (GONE), the child disconnects (CLOSED) or the server stops (STOPPED). */
enum watcher_state {
    WATCHER_STREAMING,
    WATCHER_DONE,
    WATCHER_GONE,
    WATCHER_CLOSED,
    WATCHER_STOPPED
};
static const char *const watcher_state_names[] = {"streaming", "done", "gone", "closed", "stopped"};

struct watcher {
    dmf_piece_server_t *ps;
    struct watcher *next, *prev; /* in ps->watchers[bucket of task_id] */
    struct evhttp_request *req;
    struct evhttp_connection *evcon;
    enum watcher_state state;
    char task_id[DMF_TASK_ID_LEN + 1];
};

struct dmf_piece_server {
    struct event_base *base;
    struct evhttp *http;
    struct dmf_listener_guard *guard; /* accept errors pause, not spin (fdlimit.h) */
    struct timeval io_timeout;        /* idle connection; a reader or sender that stalls */
    dmf_header_deadline_t *deadline;  /* accept to the first request head (header_deadline.h) */
    uint16_t port;
    dmf_piece_lookup_cb lookup;
    void *lookup_arg;
    struct watcher *watchers[WATCHER_BUCKETS];
    uint32_t nwatchers;
    uint32_t active_uploads;
    uint32_t upload_slots;
    struct upload *queue;   /* QUEUED uploads, oldest first */
    struct upload *sending; /* SENDING uploads (at most SLOTS_MAX) */
    uint32_t nqueued;
    bool stopping;
    uint64_t uploaded_bytes;
    struct dmf_throttle *throttle; /* the upload limit, or NULL */
    SSL_CTX *tls;                  /* new connections speak TLS with it (a reference), or NULL */
    struct dmf_cluster_key *key;   /* piece-fetch tokens are checked with it, or NULL */
    uint64_t denied_logged_ms;     /* when refusals were last logged */
    uint64_t denied_pending;       /* refusals since then */
};

/* ---- replies ---- */

/* A short text/plain answer. Unlike evhttp_send_error it keeps the connection open: a 404
 * is routine on the data plane and must not cost a reconnect. */
static void reply_text(struct evhttp_request *req, int code, const char *reason, const char *text)
{
    struct evbuffer *b = dmf_xevbuffer_new();
    evbuffer_add_printf(b, "%s\n", text);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; charset=utf-8");
    evhttp_send_reply(req, code, reason, b);
    evbuffer_free(b);
}

static const char *peer_of(struct evhttp_request *req, char *buf, size_t len)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    char *addr = NULL;
    uint16_t port = 0;
    if (evcon != NULL)
        evhttp_connection_get_peer(evcon, &addr, &port);
    snprintf(buf, len, "%s:%u", addr ? addr : "?", port);
    return buf;
}

/* The TLS session of a connection, or NULL for plain HTTP. */
static SSL *connection_ssl(struct evhttp_connection *evcon)
{
    struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
    return bev ? bufferevent_openssl_get_ssl(bev) : NULL;
}

static bool connection_is_tls(struct evhttp_connection *evcon)
{
    return connection_ssl(evcon) != NULL;
}

/* Pieces of the task when its layout is known; otherwise what it holds. */
static uint32_t task_total(const struct dmf_piece_view *v)
{
    if (v->content_length == 0)
        return 0;
    if (v->content_length > 0 && v->piece_length > 0)
        return dmf_piece_count(v->content_length, v->piece_length);
    return v->have ? v->have->count : 0;
}

/* ---- GET /pieces/<id>/<n> ---- */

static void upload_set_state(struct upload *u, enum upload_state to)
{
    dmf_debug("piece server: upload of piece %u (%u bytes) of task %s: %s -> %s", u->n, u->size,
              u->task_id, upload_state_names[u->state], upload_state_names[to]);
    u->state = to;
}

static void upload_next(dmf_piece_server_t *ps);

static void queue_remove(dmf_piece_server_t *ps, struct upload *u)
{
    for (struct upload **pp = &ps->queue; *pp; pp = &(*pp)->next)
        if (*pp == u) {
            *pp = u->next;
            ps->nqueued--;
            dmf_metric_add(&m_uploads_queued, -1);
            return;
        }
}

/* Ends an upload (SENT or ABORTED): updates the load counters, frees u and gives its
 * slot to the next queued request. */
static void upload_finish(struct upload *u, enum upload_state to)
{
    dmf_piece_server_t *ps = u->ps;
    if (u->state == UPLOAD_QUEUED) {
        queue_remove(ps, u);
        upload_set_state(u, to);
        free(u);
        return;
    }
    upload_set_state(u, to);
    for (struct upload **pp = &ps->sending; *pp; pp = &(*pp)->next)
        if (*pp == u) {
            *pp = u->next;
            break;
        }
    ps->active_uploads--;
    dmf_metric_add(&m_uploads_active, -1);
    if (to == UPLOAD_SENT) {
        ps->uploaded_bytes += u->size;
        dmf_metric_add(&m_upload_bytes, u->size);
    }
    free(u);
    upload_next(ps);
}

/* The last byte of the reply was written to the socket. */
static void upload_on_complete(struct evhttp_request *req, void *arg)
{
    struct upload *u = arg;
    evhttp_connection_set_closecb(u->evcon, NULL, NULL);
    upload_finish(u, UPLOAD_SENT);
}

/* The connection dropped before the reply was written (evhttp frees the request). */
static void upload_on_close(struct evhttp_connection *evcon, void *arg)
{
    struct upload *u = arg;
    evhttp_connection_set_closecb(evcon, NULL, NULL);
    upload_finish(u, UPLOAD_ABORTED);
}

/* Looks the task up; on failure answers the request (404 or 503) and returns -1. */
static int lookup_or_reply(dmf_piece_server_t *ps, struct evhttp_request *req, const char *id,
                           struct dmf_piece_view *v)
{
    memset(v, 0, sizeof(*v));
    v->fd = -1;
    v->content_length = -1;
    int r = ps->lookup(ps->lookup_arg, id, v);
    if (r == -ENOENT) {
        reply_text(req, 404, "Not Found", "task not held here");
        return -1;
    }
    if (r != 0) {
        dmf_error("piece server: looking up task %s: %s", id, dmf_strerror(r));
        reply_text(req, 503, "Service Unavailable", "task lookup failed");
        return -1;
    }
    return 0;
}

/* See struct dmf_seed_ledger. Records the upload when it is allowed. */
static bool seed_refuses(struct dmf_seed_ledger *l, const dmf_bitmap_t *have, uint32_t n)
{
    uint64_t now = dmf_now_ms();
    if (dmf_bitmap_get(&l->served, n) &&
        (l->served.count < have->count ||
         (n < l->nlast && now - l->last_ms[n] < DMF_SEED_REPEAT_MS)))
        return true;
    if (n >= l->nlast) {
        uint32_t cap = l->nlast ? l->nlast : 64;
        while (cap <= n)
            cap *= 2;
        l->last_ms = dmf_xrealloc(l->last_ms, cap * sizeof(*l->last_ms));
        memset(l->last_ms + l->nlast, 0, (cap - l->nlast) * sizeof(*l->last_ms));
        l->nlast = cap;
    }
    l->last_ms[n] = now;
    dmf_bitmap_set(&l->served, n);
    return false;
}

void dmf_seed_ledger_free(struct dmf_seed_ledger *l)
{
    dmf_bitmap_free(&l->served);
    free(l->last_ms);
    l->last_ms = NULL;
    l->nlast = 0;
}

/* The child's share of the task in permille, from its X-Dmf-Progress header; a request
 * without one (or with a bad one) queues as if its child were done. */
static uint32_t request_progress(struct evhttp_request *req)
{
    const char *v = evhttp_find_header(evhttp_request_get_input_headers(req), DMF_PROGRESS_HEADER);
    uint32_t p;
    if (v == NULL || dmf_parse_index(v, &p) != 0 || p > 1000)
        return 1000;
    return p;
}

/* Answers piece n of task id: 404 unless it is held, 503 from a seed that sent it
 * recently, else the bytes (sendfile). Returns true when an upload started. */
static bool send_piece(dmf_piece_server_t *ps, struct evhttp_request *req, const char *id,
                       uint32_t n)
{
    char peer[80];
    struct dmf_piece_view v;
    if (lookup_or_reply(ps, req, id, &v) != 0)
        return false;
    if (v.piece_length == 0 || (v.content_length >= 0 && n >= task_total(&v)) || v.have == NULL ||
        !dmf_bitmap_get(v.have, n)) {
        reply_text(req, 404, "Not Found", "piece not held here");
        return false;
    }

    if (v.verify && !v.verify(v.verify_arg, n)) {
        reply_text(req, 404, "Not Found", "piece not held here (it failed verification)");
        return false;
    }
    if (v.ledger && seed_refuses(v.ledger, v.have, n)) {
        struct evkeyvalq *h = evhttp_request_get_output_headers(req);
        evhttp_add_header(h, "Retry-After", "1");
        reply_text(req, 503, "Service Unavailable",
                   "seed: piece sent recently, fetch it from a peer");
        return false;
    }
    /* With the length unknown (streamed origin) every held piece is a full one. */
    uint32_t size = v.content_length >= 0 ? dmf_piece_size(v.content_length, v.piece_length, n)
                                          : v.piece_length;
    uint64_t offset = dmf_piece_offset(v.piece_length, n);
    struct stat sb;
    if (fstat(v.fd, &sb) != 0 || (uint64_t)sb.st_size < offset + size) {
        dmf_error("piece server: data file of task %s is shorter than piece %u (%llu+%u)", id, n,
                  (unsigned long long)offset, size);
        reply_text(req, 500, "Internal Server Error", "piece data missing");
        return false;
    }
    /* Our own descriptor, closed by libevent when the segment is released: the daemon may
     * close or replace its fd while the piece is still being sent. */
    int fd = fcntl(v.fd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0) {
        dmf_error("piece server: dup of the data file of task %s: %s", id, strerror(errno));
        reply_text(req, 503, "Service Unavailable", "out of file descriptors");
        return false;
    }
    struct evbuffer_file_segment *seg =
        evbuffer_file_segment_new(fd, (ev_off_t)offset, size, EVBUF_FS_CLOSE_ON_FREE);
    if (seg == NULL) {
        close(fd);
        dmf_error("piece server: cannot map piece %u of task %s", n, id);
        reply_text(req, 500, "Internal Server Error", "cannot read piece");
        return false;
    }
    /* Without DRAINS_TO_FD libevent maps the file into memory instead of keeping a
     * sendfile chain; the chain then moves as is into the socket's output buffer. Over TLS
     * the bytes must pass through OpenSSL, which reads them from memory: no sendfile. */
    struct evbuffer *body = dmf_xevbuffer_new();
    if (!connection_is_tls(evhttp_request_get_connection(req)))
        evbuffer_set_flags(body, EVBUFFER_FLAG_DRAINS_TO_FD);
    int added = evbuffer_add_file_segment(body, seg, 0, size);
    evbuffer_file_segment_free(seg); /* body holds its own reference */
    if (added != 0) {
        evbuffer_free(body);
        reply_text(req, 500, "Internal Server Error", "cannot read piece");
        return false;
    }

    struct upload *u = dmf_xcalloc(1, sizeof(*u));
    u->ps = ps;
    u->evcon = evhttp_request_get_connection(req);
    u->state = UPLOAD_SENDING;
    u->n = n;
    u->size = size;
    memcpy(u->task_id, id, sizeof(u->task_id));
    u->next = ps->sending;
    ps->sending = u;
    ps->active_uploads++;
    dmf_metric_add(&m_uploads_active, 1);
    dmf_debug("piece server: piece %u of task %s to %s: %u bytes", n, id,
              peer_of(req, peer, sizeof(peer)), size);

    char len[16];
    snprintf(len, sizeof(len), "%u", size);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", "application/octet-stream");
    evhttp_add_header(h, "Content-Length", len);
    evhttp_request_set_on_complete_cb(req, upload_on_complete, u);
    evhttp_connection_set_closecb(u->evcon, upload_on_close, u);
    dmf_throttle_add_upload(ps->throttle, evhttp_connection_get_bufferevent(u->evcon));
    evhttp_send_reply(req, 200, "OK", body);
    evbuffer_free(body);
    return true;
}

/* Uploads at once: --upload-slots, and at least one per CHILDREN_PER_SLOT children
 * watching. With w children on s slots a child gets a piece every w/s piece times; much
 * longer, and its connection idles past TCP's retransmission timeout, which restarts the
 * next reply from slow start (tcp_slow_start_after_idle): at N=16 that cost 0.15 s. */
static uint32_t upload_slots(const dmf_piece_server_t *ps)
{
    uint32_t by_children = (ps->nwatchers + CHILDREN_PER_SLOT - 1) / CHILDREN_PER_SLOT;
    return DMF_MIN(DMF_MAX(ps->upload_slots, by_children), SLOTS_MAX);
}

/* Starts queued uploads while slots are free. */
static void upload_next(dmf_piece_server_t *ps)
{
    while (!ps->stopping && ps->queue != NULL && ps->active_uploads < upload_slots(ps)) {
        uint64_t now = dmf_now_ms();
        struct upload *best = NULL;
        int64_t best_score = INT64_MAX;
        for (struct upload *u = ps->queue; u; u = u->next) {
            int64_t score = (int64_t)u->progress - (int64_t)((now - u->queued_ms) / AGING_MS);
            if (score < best_score) {
                best = u;
                best_score = score;
            }
        }
        queue_remove(ps, best);
        evhttp_connection_set_closecb(best->evcon, NULL, NULL);
        upload_set_state(best, UPLOAD_SENDING);
        struct evhttp_request *req = best->req;
        char id[DMF_TASK_ID_LEN + 1];
        uint32_t n = best->n;
        memcpy(id, best->task_id, sizeof(id));
        free(best);
        send_piece(ps, req, id, n);
    }
}

static void serve_piece(dmf_piece_server_t *ps, struct evhttp_request *req, const char *id,
                        uint32_t n)
{
    if (ps->active_uploads < upload_slots(ps)) {
        send_piece(ps, req, id, n);
        return;
    }
    if (ps->nqueued >= QUEUE_MAX) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "1");
        reply_text(req, 503, "Service Unavailable", "too many piece requests waiting");
        return;
    }
    /* Wait for a slot. Whether the piece is still here is checked when it starts. */
    struct upload *u = dmf_xcalloc(1, sizeof(*u));
    u->ps = ps;
    u->req = req;
    u->evcon = evhttp_request_get_connection(req);
    u->state = UPLOAD_QUEUED;
    u->n = n;
    u->progress = request_progress(req);
    u->queued_ms = dmf_now_ms();
    snprintf(u->task_id, sizeof(u->task_id), "%s", id);
    struct upload **tail = &ps->queue;
    while (*tail)
        tail = &(*tail)->next;
    *tail = u;
    ps->nqueued++;
    dmf_metric_add(&m_uploads_queued, 1);
    evhttp_connection_set_closecb(u->evcon, upload_on_close, u);
}

/* ---- GET /have/<id> ---- */

static unsigned bucket_of(const char *task_id)
{
    /* Task ids are hex SHA-256: their first two digits are already uniform. */
    unsigned hi = (unsigned)(task_id[0] <= '9' ? task_id[0] - '0' : task_id[0] - 'a' + 10);
    unsigned lo = (unsigned)(task_id[1] <= '9' ? task_id[1] - '0' : task_id[1] - 'a' + 10);
    return (hi << 4 | lo) % WATCHER_BUCKETS;
}

static void watcher_set_state(struct watcher *w, enum watcher_state to)
{
    dmf_debug("piece server: /have watcher of task %s: %s -> %s", w->task_id,
              watcher_state_names[w->state], watcher_state_names[to]);
    w->state = to;
}

/* Ends a watcher: unlinks it, ends its response (or frees the request when the connection
 * is already gone) and frees w. */
static void watcher_end(struct watcher *w, enum watcher_state to)
{
    dmf_piece_server_t *ps = w->ps;
    watcher_set_state(w, to);
    if (w->prev != NULL)
        w->prev->next = w->next;
    else
        ps->watchers[bucket_of(w->task_id)] = w->next;
    if (w->next != NULL)
        w->next->prev = w->prev;
    ps->nwatchers--;
    dmf_metric_add(&m_have_watchers, -1);

    if (evhttp_request_get_connection(w->req) != NULL) {
        /* The connection lives on (keep-alive): give it back its normal limits. */
        struct bufferevent *bev = evhttp_connection_get_bufferevent(w->evcon);
        bufferevent_set_timeouts(bev, &ps->io_timeout, &ps->io_timeout);
        bufferevent_setwatermark(bev, EV_READ, 0, 0);
        evhttp_connection_set_closecb(w->evcon, NULL, NULL);
    }
    /* With the connection gone evhttp has detached the request and left it to us; this
     * frees it. Otherwise it sends the last chunk. */
    evhttp_send_reply_end(w->req);
    free(w);
}

static void watcher_on_close(struct evhttp_connection *evcon, void *arg)
{
    struct watcher *w = arg;
    evhttp_connection_set_closecb(evcon, NULL, NULL);
    watcher_end(w, WATCHER_CLOSED);
}

static void add_have_lines(struct evbuffer *b, const dmf_bitmap_t *have)
{
    if (have == NULL)
        return;
    for (uint32_t i = 0; i < have->nbits; i++)
        if (dmf_bitmap_get(have, i))
            evbuffer_add_printf(b, "have %u\n", i);
}

static void serve_have(dmf_piece_server_t *ps, struct evhttp_request *req, const char *id)
{
    char peer[80];
    struct dmf_piece_view v;
    if (lookup_or_reply(ps, req, id, &v) != 0)
        return;
    if (!v.complete && ps->nwatchers >= DMF_PIECE_SERVER_MAX_WATCHERS) {
        dmf_warn("piece server: %u /have watchers already; refusing %s for task %s", ps->nwatchers,
                 peer_of(req, peer, sizeof(peer)), id);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "5");
        reply_text(req, 503, "Service Unavailable", "too many /have watchers");
        return;
    }

    struct evbuffer *b = dmf_xevbuffer_new();
    add_have_lines(b, v.have);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; charset=utf-8");
    evhttp_send_reply_start(req, 200, "OK");
    if (v.complete) {
        evbuffer_add_printf(b, "done %u\n", task_total(&v));
        evhttp_send_reply_chunk(req, b);
        evhttp_send_reply_end(req);
        evbuffer_free(b);
        return;
    }
    if (!v.downloading) {
        /* Part of the task, and nothing coming (a failed download, dropped cached pieces):
         * what is held, then the end without "done". */
        evhttp_send_reply_chunk(req, b);
        evhttp_send_reply_end(req);
        evbuffer_free(b);
        return;
    }
    evhttp_send_reply_chunk(req, b);
    evbuffer_free(b);

    struct watcher *w = dmf_xcalloc(1, sizeof(*w));
    w->ps = ps;
    w->req = req;
    w->evcon = evhttp_request_get_connection(req);
    w->state = WATCHER_STREAMING;
    snprintf(w->task_id, sizeof(w->task_id), "%s", id);
    unsigned bk = bucket_of(id);
    w->next = ps->watchers[bk];
    if (w->next != NULL)
        w->next->prev = w;
    ps->watchers[bk] = w;
    ps->nwatchers++;
    dmf_metric_add(&m_have_watchers, 1);

    /* The stream may stay quiet for as long as the download takes: no read timeout (a
     * close is still seen), a write timeout for a child that stops reading, and a cap on
     * what the child may send us meanwhile. */
    struct bufferevent *bev = evhttp_connection_get_bufferevent(w->evcon);
    bufferevent_set_timeouts(bev, NULL, &ps->io_timeout);
    bufferevent_setwatermark(bev, EV_READ, 0, WATCHER_INPUT_MAX);
    evhttp_connection_set_closecb(w->evcon, watcher_on_close, w);
    dmf_debug("piece server: %s watches task %s (%u pieces held)", peer_of(req, peer, sizeof(peer)),
              id, v.have ? v.have->count : 0);
    upload_next(ps); /* one more child may mean one more upload slot */
}

/* ---- who asks, and may they (piece-fetch tokens) ---- */

/* The requesting host's ID into host: over TLS the CN of the certificate the handshake
 * verified; without TLS the ID it claims in DMF_HOST_ID_HEADER (empty when absent or not a
 * valid host ID). Returns false when a TLS connection carries no usable identity. */
static bool requester_of(struct evhttp_request *req, char *host, size_t len)
{
    host[0] = '\0';
    SSL *ssl = connection_ssl(evhttp_request_get_connection(req));
    if (ssl != NULL) {
        struct dmf_tls_identity id;
        char why[160];
        if (dmf_tls_peer_identity(ssl, &id, why, sizeof(why)) != 0)
            return false;
        snprintf(host, len, "%s", id.host_id);
        return true;
    }
    const char *claimed =
        evhttp_find_header(evhttp_request_get_input_headers(req), DMF_HOST_ID_HEADER);
    if (claimed != NULL && dmf_tls_host_id_valid(claimed))
        snprintf(host, len, "%s", claimed);
    return true;
}

static void count_denied(enum dmf_piece_token_verdict v)
{
    struct dmf_metric *m = v == DMF_PIECE_TOKEN_MISSING     ? &m_denied_missing
                           : v == DMF_PIECE_TOKEN_MALFORMED ? &m_denied_malformed
                           : v == DMF_PIECE_TOKEN_EXPIRED   ? &m_denied_expired
                                                            : &m_denied_forged;
    dmf_metric_add(m, 1);
}

/* With a cluster key, may the requester fetch task_id's pieces? True, or false after a
 * 403 with the verdict as its reason. Refusals are counted, and logged at most once per
 * DENIED_LOG_MS (the token itself never is). */
static bool authorised(dmf_piece_server_t *ps, struct evhttp_request *req, const char *what,
                       const char *task_id)
{
    if (ps->key == NULL)
        return true;
    char host[DMF_TLS_ID_MAX + 1], peer[80];
    enum dmf_piece_token_verdict v = DMF_PIECE_TOKEN_FORGED;
    if (requester_of(req, host, sizeof(host))) {
        const char *token =
            evhttp_find_header(evhttp_request_get_input_headers(req), DMF_PIECE_TOKEN_HEADER);
        v = dmf_piece_token_verify(ps->key, token, task_id, host, (int64_t)time(NULL));
    }
    if (v == DMF_PIECE_TOKEN_OK)
        return true;
    count_denied(v);
    ps->denied_pending++;
    uint64_t now = dmf_now_ms();
    if (ps->denied_logged_ms == 0 || now - ps->denied_logged_ms >= DENIED_LOG_MS) {
        dmf_warn("piece server: refused %s of task %s to host %s at %s: %s piece-fetch token "
                 "(%llu refusals since the last report)",
                 what, task_id, host[0] ? host : "(unnamed)", peer_of(req, peer, sizeof(peer)),
                 dmf_piece_token_verdict_str(v), (unsigned long long)ps->denied_pending);
        ps->denied_logged_ms = now;
        ps->denied_pending = 0;
    }
    char text[64];
    snprintf(text, sizeof(text), "piece-fetch token %s", dmf_piece_token_verdict_str(v));
    reply_text(req, 403, "Forbidden", text);
    return false;
}

/* ---- routing ---- */

static void on_request(struct evhttp_request *req, void *arg)
{
    dmf_piece_server_t *ps = arg;
    dmf_header_deadline_got_request(ps->deadline, req);
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;

    if (evhttp_request_get_command(req) != EVHTTP_REQ_GET) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET");
        reply_text(req, 405, "Method Not Allowed", "only GET is served here");
        return;
    }
    if (path == NULL) {
        reply_text(req, 400, "Bad Request", "malformed request target");
        return;
    }
    struct dmf_piece_target t;
    dmf_piece_target_parse(path, &t);
    switch (t.kind) {
    case DMF_TARGET_METRICS:
        dmf_metrics_http_handler(req, NULL);
        break;
    case DMF_TARGET_PIECE:
        if (authorised(ps, req, "a piece", t.task_id))
            serve_piece(ps, req, t.task_id, t.piece);
        break;
    case DMF_TARGET_HAVE:
        if (authorised(ps, req, "/have", t.task_id))
            serve_have(ps, req, t.task_id);
        break;
    case DMF_TARGET_BAD_PIECE:
        reply_text(req, 400, "Bad Request", "expected /pieces/<64 hex task id>/<piece number>");
        break;
    case DMF_TARGET_BAD_HAVE:
        reply_text(req, 400, "Bad Request", "expected /have/<64 hex task id>");
        break;
    case DMF_TARGET_NOT_FOUND:
        reply_text(req, 404, "Not Found", "no such resource");
        break;
    }
}

/* ---- lifecycle ---- */

/* The bufferevent of each accepted connection (made through the header deadline, which
 * owns evhttp's hook): with TLS on, an OpenSSL one that completes the handshake (the
 * client's certificate required and verified: tls.c) before evhttp reads a byte; NULL
 * for a plain one. It closes its descriptor and frees its SSL when the last reference
 * goes (header_deadline.h). */
static struct bufferevent *on_new_connection(struct event_base *base, void *arg)
{
    dmf_piece_server_t *ps = arg;
    if (ps->tls == NULL)
        return NULL;
    SSL *ssl = dmf_xcheck(SSL_new(ps->tls), "an SSL connection");
    struct bufferevent *bev =
        dmf_xcheck(bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                  BEV_OPT_CLOSE_ON_FREE),
                   "a TLS bufferevent");
    /* A child that closes without close_notify has still read its whole reply. */
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    return bev;
}

void dmf_piece_server_set_tls(dmf_piece_server_t *ps, SSL_CTX *ctx)
{
    if (ctx != NULL)
        SSL_CTX_up_ref(ctx);
    SSL_CTX_free(ps->tls); /* connections made with it keep their own reference */
    ps->tls = ctx;
}

bool dmf_piece_server_tls(const dmf_piece_server_t *ps)
{
    return ps->tls != NULL;
}

void dmf_piece_server_set_cluster_key(dmf_piece_server_t *ps, const struct dmf_cluster_key *key)
{
    if (ps->key != NULL) {
        dmf_cluster_key_clear(ps->key);
        free(ps->key);
        ps->key = NULL;
    }
    if (key == NULL)
        return;
    ps->key = dmf_xmalloc(sizeof(*ps->key));
    *ps->key = *key;
    struct dmf_metric *metrics[] = {&m_denied_missing, &m_denied_malformed, &m_denied_expired,
                                    &m_denied_forged};
    for (size_t i = 0; i < DMF_ARRAY_SIZE(metrics); i++)
        dmf_metric_register(metrics[i]);
}

/* Creates a listening socket on addr:port; returns the fd or -errno with err filled. */
static int listen_on(const char *addr, uint16_t port, char *err, size_t errlen)
{
    const char *host = addr != NULL && addr[0] != '\0' ? addr : NULL;
    const char *shown = host ? host : "*";
    const char *lb = host && strchr(host, ':') ? "[" : "", *rb = lb[0] ? "]" : "";
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    char portstr[8];
    int fd = -1, ret, one = 1;

    snprintf(portstr, sizeof(portstr), "%u", port);
    int rc = getaddrinfo(host, portstr, &hints, &ai);
    if (rc != 0) {
        snprintf(err, errlen, "cannot listen on %s%s%s:%u: %s", lb, shown, rb, port,
                 gai_strerror(rc));
        return -EINVAL;
    }
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, LISTEN_BACKLOG) != 0) {
        ret = -errno;
        snprintf(err, errlen, "cannot listen on %s%s%s:%u: %s", lb, shown, rb, port,
                 strerror(-ret));
        if (fd >= 0)
            close(fd);
        fd = ret;
    }
    freeaddrinfo(ai);
    return fd;
}

void dmf_piece_server_set_header_timeout(dmf_piece_server_t *ps, uint64_t ms)
{
    dmf_header_deadline_set_timeout(ps->deadline, ms);
}

void dmf_piece_server_set_timeout(dmf_piece_server_t *ps, uint64_t ms)
{
    ps->io_timeout = dmf_timeval_ms(ms);
    evhttp_set_timeout_tv(ps->http, &ps->io_timeout);
}

dmf_piece_server_t *dmf_piece_server_new(struct event_base *base, const char *addr, uint16_t port,
                                         dmf_piece_lookup_cb lookup, void *arg, char *err,
                                         size_t errlen)
{
    int fd = listen_on(addr, port, err, errlen);
    if (fd < 0)
        return NULL;

    dmf_piece_server_t *ps = dmf_xcalloc(1, sizeof(*ps));
    ps->upload_slots = DMF_PIECE_SERVER_UPLOAD_SLOTS;
    ps->base = base;
    ps->lookup = lookup;
    ps->lookup_arg = arg;
    ps->http = evhttp_new(base);
    if (ps->http == NULL) {
        snprintf(err, errlen, "cannot create the HTTP server");
        goto fail;
    }
    evhttp_set_max_headers_size(ps->http, MAX_HEADERS_SIZE);
    ps->deadline = dmf_header_deadline_new(base, ps->http, HEADER_TIMEOUT_MS, "piece server");
    evhttp_set_max_body_size(ps->http, 0); /* GET only: no request carries a body */
    dmf_piece_server_set_timeout(ps, IO_TIMEOUT_SEC * 1000);
    /* Let every method through to on_request so that it answers 405, not evhttp's 501. */
    evhttp_set_allowed_methods(ps->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                             EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                             EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
                                             EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
    evhttp_set_gencb(ps->http, on_request, ps);
    dmf_header_deadline_set_maker(ps->deadline, on_new_connection, ps);
    /* Read the port back before the listener owns the socket (port 0 binds any). */
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        ps->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                  : ((struct sockaddr_in *)&ss)->sin_port);
    struct evhttp_bound_socket *bound = evhttp_accept_socket_with_handle(ps->http, fd);
    if (bound == NULL) {
        snprintf(err, errlen, "cannot accept on the piece port");
        goto fail;
    }
    ps->guard = dmf_listener_guard_new(evhttp_bound_socket_get_listener(bound), "piece server");

    dmf_metric_register(&m_upload_bytes);
    dmf_metric_register(&m_uploads_active);
    dmf_metric_register(&m_have_watchers);
    dmf_info("piece server: listening on port %u", ps->port);
    return ps;
fail:
    if (fd >= 0)
        close(fd);
    if (ps->http != NULL)
        evhttp_free(ps->http);
    free(ps);
    return NULL;
}

uint16_t dmf_piece_server_port(const dmf_piece_server_t *ps)
{
    return ps->port;
}

void dmf_piece_server_notify_piece(dmf_piece_server_t *ps, const char *task_id, uint32_t n)
{
    if (ps == NULL || !dmf_task_id_valid(task_id))
        return;
    char line[HAVE_LINE_MAX];
    int len = snprintf(line, sizeof(line), "have %u\n", n);
    for (struct watcher *w = ps->watchers[bucket_of(task_id)]; w != NULL; w = w->next) {
        if (strcmp(w->task_id, task_id) != 0)
            continue;
        struct evbuffer *b = dmf_xevbuffer_new();
        evbuffer_add(b, line, (size_t)len);
        evhttp_send_reply_chunk(w->req, b);
        evbuffer_free(b);
    }
}

/* Ends every watcher of task_id; with done_line, sends it first. */
static void end_watchers(dmf_piece_server_t *ps, const char *task_id, const char *done_line,
                         enum watcher_state to)
{
    struct watcher *w = ps->watchers[bucket_of(task_id)], *next;
    for (; w != NULL; w = next) {
        next = w->next;
        if (strcmp(w->task_id, task_id) != 0)
            continue;
        if (done_line != NULL) {
            struct evbuffer *b = dmf_xevbuffer_new();
            evbuffer_add(b, done_line, strlen(done_line));
            evhttp_send_reply_chunk(w->req, b);
            evbuffer_free(b);
        }
        watcher_end(w, to);
    }
}

void dmf_piece_server_notify_done(dmf_piece_server_t *ps, const char *task_id)
{
    if (ps == NULL || !dmf_task_id_valid(task_id))
        return;
    struct dmf_piece_view v = {.fd = -1, .content_length = -1};
    if (ps->lookup(ps->lookup_arg, task_id, &v) != 0) {
        end_watchers(ps, task_id, NULL, WATCHER_GONE);
        return;
    }
    char line[HAVE_LINE_MAX];
    snprintf(line, sizeof(line), "done %u\n", task_total(&v));
    end_watchers(ps, task_id, line, WATCHER_DONE);
}

void dmf_piece_server_notify_gone(dmf_piece_server_t *ps, const char *task_id)
{
    if (ps == NULL || !dmf_task_id_valid(task_id))
        return;
    end_watchers(ps, task_id, NULL, WATCHER_GONE);
}

void dmf_piece_server_set_upload_slots(dmf_piece_server_t *ps, uint32_t slots)
{
    ps->upload_slots = slots ? slots : DMF_PIECE_SERVER_UPLOAD_SLOTS;
    upload_next(ps);
}

bool dmf_piece_server_uploading(const dmf_piece_server_t *ps, const char *task_id)
{
    for (const struct upload *u = ps ? ps->sending : NULL; u; u = u->next)
        if (strcmp(u->task_id, task_id) == 0)
            return true;
    return false;
}

uint32_t dmf_piece_server_active_uploads(const dmf_piece_server_t *ps)
{
    return ps->active_uploads;
}

void dmf_piece_server_set_throttle(dmf_piece_server_t *ps, struct dmf_throttle *t)
{
    ps->throttle = t;
}

uint64_t dmf_piece_server_uploaded_bytes(const dmf_piece_server_t *ps)
{
    return ps->uploaded_bytes;
}

uint32_t dmf_piece_server_queued(const dmf_piece_server_t *ps)
{
    return ps->nqueued;
}

uint32_t dmf_piece_server_watchers(const dmf_piece_server_t *ps)
{
    return ps->nwatchers;
}

void dmf_piece_server_free(dmf_piece_server_t *ps)
{
    if (ps == NULL)
        return;
    for (unsigned i = 0; i < WATCHER_BUCKETS; i++)
        while (ps->watchers[i] != NULL)
            watcher_end(ps->watchers[i], WATCHER_STOPPED);
    /* Frees the listener and every connection; uploads in flight and queued requests end
     * in upload_on_close. */
    ps->stopping = true;
    dmf_listener_guard_free(ps->guard);
    evhttp_free(ps->http);
    dmf_header_deadline_free(ps->deadline); /* after evhttp let go of its connections */
    SSL_CTX_free(ps->tls);
    dmf_piece_server_set_cluster_key(ps, NULL);
    free(ps);
}
