/* A task's parents; see parent.h. */
#include "daemon/peer/parent.h"

#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/evx.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/piece_token.h"
#include "common/piecemem.h"
#include "common/tls_identity.h"
#include "common/util.h"
#include "daemon/peer/have_line.h"
#include "daemon/peer/dispatch.h"
#include "daemon/peer/rate.h"
#include "daemon/piece_server.h"

#define HAVE_RETRIES  50 /* a parent that does not know the task yet: retry this often */
#define HAVE_RETRY_MS 200
#define HAVE_LINE_MAX 64
#define LATE_TICK_MS  100 /* how often requests in flight are held against their deadline */

DMF_METRIC_COUNTER(dmf_m_endgame_requests, "damselfly_endgame_requests_total", NULL,
                   "Piece requests duplicated to a second parent at the end of a download");
DMF_METRIC_COUNTER(dmf_m_endgame_cancels, "damselfly_endgame_cancels_total", NULL,
                   "Piece requests cancelled because the same piece came first from another "
                   "parent");

enum parent_state {
    PARENT_CONNECTING, /* /have requested, not answered yet */
    PARENT_ACTIVE,     /* /have stream open (or finished with "done") */
    PARENT_FAILED,     /* unreachable: no more requests */
    PARENT_EXCLUDED,   /* sent a bad piece: never used again for this task */
};

static const char *const parent_state_names[] = {"CONNECTING", "ACTIVE", "FAILED", "EXCLUDED"};

struct slot {
    struct dmf_parent *p;
    dmf_http_req_t *req; /* NULL when free */
    uint32_t n;
    struct dmf_piece_buf piece;
    uint64_t started_ms;
};

struct dmf_parent {
    struct dmf_parents *ps;
    struct dmf_parent *next;
    char *peer_id, *host_id;
    char base_url[128];
    bool is_seed;
    enum parent_state state;
    dmf_bitmap_t has;
    dmf_bitmap_t deferred; /* a seed said "served already": not asked again for 1 s */
    struct event *undefer;
    bool complete;
    dmf_http_req_t *have_req;
    char line[HAVE_LINE_MAX];
    size_t linelen;
    int have_retries;
    struct event *retry;
    struct slot slots[DMF_DISPATCH_SLOTS_MAX];
    int inflight;
    struct dmf_rate rate; /* of its completed piece requests */
    int strikes;          /* requests in a row that missed their deadline */
    uint64_t data_ms;     /* when it last sent us piece bytes */
    uint64_t asked_ms;    /* when it was first asked for a piece (0: never) */
    bool stall_reported;  /* dmf_parents_report_stalled told the scheduler */
};

struct dmf_parents {
    struct dmf_parents_env env;
    struct dmf_parent *list; /* newest first */
    size_t n;
    struct event *late; /* holds requests in flight against their deadline */
};

static void have_connect(struct dmf_parent *p);

static void changed(struct dmf_parents *ps)
{
    ps->env.sink->changed(ps->env.arg);
}

static void parent_set_state(struct dmf_parent *p, enum parent_state s)
{
    if (p->state == s)
        return;
    dmf_info("task %s peer %s: parent %s (%s%s): %s -> %s", p->ps->env.task_id, p->ps->env.peer_id,
             p->peer_id, p->host_id, p->is_seed ? ", seed" : "", parent_state_names[p->state],
             parent_state_names[s]);
    p->state = s;
}

static bool usable(const struct dmf_parent *p)
{
    return p->state == PARENT_CONNECTING || p->state == PARENT_ACTIVE;
}

static bool offers_wanted(const struct dmf_parent *p);

/* A parent whose /have stream ended without "done" (it stopped, or dropped cached pieces)
 * counts only while it lists a piece this task lacks. */
static bool may_help(const struct dmf_parent *p)
{
    return p->have_req != NULL || p->complete || evtimer_pending(p->retry, NULL) ||
           offers_wanted(p);
}

int dmf_parents_usable(const struct dmf_parents *ps)
{
    int n = 0;
    for (const struct dmf_parent *p = ps ? ps->list : NULL; p; p = p->next)
        n += usable(p) && may_help(p);
    return n;
}

/* The request in flight for piece n other than except (the endgame's other copy), or NULL. */
static struct slot *other_request(struct dmf_parents *ps, uint32_t n, const struct slot *except)
{
    for (struct dmf_parent *p = ps->list; p; p = p->next)
        for (int i = 0; i < DMF_DISPATCH_SLOTS_MAX; i++) {
            struct slot *s = &p->slots[i];
            if (s->req != NULL && s != except && s->n == n)
                return s;
        }
    return NULL;
}

/* A request for piece n has ended without bytes (s->req already NULL): the claim goes back
 * to the pool unless the endgame's other copy of the request still runs, which keeps it. */
static void release_claim(struct dmf_parents *ps, const struct slot *s)
{
    if (other_request(ps, s->n, s) == NULL)
        dmf_book_release(ps->env.book, s->n);
}

static void cancel_slots(struct dmf_parent *p)
{
    for (int i = 0; i < DMF_DISPATCH_SLOTS_MAX; i++) {
        struct slot *s = &p->slots[i];
        if (s->req) {
            dmf_http_cancel(s->req);
            s->req = NULL;
            release_claim(p->ps, s);
        }
        dmf_piece_buf_free(&s->piece);
    }
    p->inflight = 0;
}

/* Piece n arrived through winner: the other copy of its request loses and is cancelled. Its
 * parent's rate learns what it managed in that time (the claim stays with the piece). */
static void cancel_loser(struct dmf_parents *ps, const struct slot *winner)
{
    struct slot *s = other_request(ps, winner->n, winner);
    if (s == NULL)
        return;
    uint64_t now = dmf_now_ms();
    dmf_http_cancel(s->req);
    s->req = NULL;
    s->p->inflight--;
    dmf_rate_add(&s->p->rate, s->piece.len, now > s->started_ms ? now - s->started_ms : 0);
    dmf_metric_add(&dmf_m_endgame_cancels, 1);
    dmf_info("task %s peer %s: piece %u came first from parent %s; cancelled its request to %s "
             "(%zu bytes in %llu ms)",
             ps->env.task_id, ps->env.peer_id, winner->n, winner->p->peer_id, s->p->peer_id,
             s->piece.len, (unsigned long long)(now - s->started_ms));
    dmf_piece_buf_free(&s->piece);
}

/* A parent stops being used: its requests go back to the pool. */
static void parent_drop(struct dmf_parent *p, enum parent_state s, bool bad_piece, uint32_t piece)
{
    if (!usable(p))
        return;
    parent_set_state(p, s);
    cancel_slots(p);
    dmf_http_cancel(p->have_req);
    p->have_req = NULL;
    evtimer_del(p->retry);
    p->ps->env.sink->parent_failed(p->ps->env.arg, p->peer_id, p->host_id, bad_piece, piece);
    changed(p->ps);
}

/* ---------------------------------------------------------------- /have stream */

/* What a failed request to a parent tells the log: a 403 (on_headers' -EPERM) is the
 * parent refusing our piece-fetch token; the http client's reason otherwise. */
static const char *failure_reason(int err, const char *reason)
{
    return err == -EPERM ? "refused our piece-fetch token (403)" : reason;
}

static int have_on_headers(void *arg, dmf_http_req_t *req, long status)
{
    struct dmf_parent *p = arg;
    if (status == 404)
        return -ENOENT;
    if (status == 403)
        return -EPERM;
    if (status != 200)
        return -EPROTO;
    parent_set_state(p, PARENT_ACTIVE);
    p->have_retries = 0;
    return 0;
}

static int have_line(struct dmf_parent *p, const char *line, size_t len)
{
    const struct dmf_piece_book *book = p->ps->env.book;
    uint32_t limit = book->content_length >= 0 ? book->total_pieces : DMF_PIECES_MAX, n;
    switch (dmf_have_line_parse(line, len, limit, &n)) {
    case DMF_HAVE_PIECE:
        dmf_bitmap_set(&p->has, n);
        return 0;
    case DMF_HAVE_DONE:
        p->complete = true;
        return 0;
    case DMF_HAVE_BAD:
        break;
    }
    return -EPROTO;
}

static int have_on_data(void *arg, dmf_http_req_t *req, const char *data, size_t len)
{
    struct dmf_parent *p = arg;
    for (size_t i = 0; i < len; i++) {
        if (data[i] != '\n') {
            if (p->linelen + 1 >= sizeof(p->line))
                return -EPROTO;
            p->line[p->linelen++] = data[i];
            continue;
        }
        p->line[p->linelen] = '\0';
        size_t linelen = p->linelen;
        p->linelen = 0;
        if (have_line(p, p->line, linelen) != 0)
            return -EPROTO;
    }
    changed(p->ps);
    return 0;
}

/* True when p lists a piece this task does not hold yet. */
static bool offers_wanted(const struct dmf_parent *p)
{
    const dmf_bitmap_t *held = &p->ps->env.book->have;
    for (uint32_t n = 0; n < p->has.nbits; n++)
        if (dmf_bitmap_get(&p->has, n) && !dmf_bitmap_get(held, n))
            return true;
    return false;
}

static void on_have_retry(evutil_socket_t fd, short what, void *arg)
{
    have_connect(arg);
}

static void have_on_done(void *arg, dmf_http_req_t *req, int err, const char *reason)
{
    struct dmf_parent *p = arg;
    p->have_req = NULL;
    if (!usable(p))
        return;
    if (err == -ENOENT && ++p->have_retries <= HAVE_RETRIES) {
        /* The parent does not know the task yet (a seed just being triggered). */
        struct timeval tv = {0, HAVE_RETRY_MS * 1000};
        evtimer_add(p->retry, &tv);
        return;
    }
    if (err == 0 && p->complete)
        return; /* it holds everything: nothing more to learn */
    if (err == 0 && offers_wanted(p))
        return; /* it stopped (or dropped pieces) but has some we lack: take them first */
    dmf_warn("task %s peer %s: parent %s at %s: %s", p->ps->env.task_id, p->ps->env.peer_id,
             p->peer_id, p->base_url,
             err == 0         ? "stopped the task"
             : err == -ENOENT ? "never had the task"
                              : failure_reason(err, reason));
    parent_drop(p, PARENT_FAILED, false, 0);
}

static const struct dmf_http_req_ops have_ops = {
    .on_headers = have_on_headers,
    .on_data = have_on_data,
    .on_done = have_on_done,
};

/* The authorisation lines of a request to a parent (piece-fetch token and host ID) into
 * lines[*n...]; bufs holds them (two of DMF_AUTH_LINE_MAX). */
#define DMF_AUTH_LINE_MAX (DMF_PIECE_TOKEN_MAX + 64 + DMF_TLS_ID_MAX)
static void add_auth_lines(const struct dmf_parents *ps, char (*bufs)[DMF_AUTH_LINE_MAX],
                           char **lines, size_t *n)
{
    const char *token = ps->env.piece_token;
    if (token == NULL || token[0] == '\0')
        return;
    snprintf(bufs[0], DMF_AUTH_LINE_MAX, DMF_PIECE_TOKEN_HEADER ": %s", token);
    lines[(*n)++] = bufs[0];
    if (ps->env.self_host_id != NULL) {
        snprintf(bufs[1], DMF_AUTH_LINE_MAX, DMF_HOST_ID_HEADER ": %s", ps->env.self_host_id);
        lines[(*n)++] = bufs[1];
    }
}

static void have_connect(struct dmf_parent *p)
{
    char url[256];
    snprintf(url, sizeof(url), "%s/have/%s", p->base_url, p->ps->env.task_id);
    char auth[2][DMF_AUTH_LINE_MAX];
    char *lines[2];
    struct dmf_strlist headers = {.v = lines, .n = 0};
    add_auth_lines(p->ps, auth, lines, &headers.n);
    struct dmf_http_opts o = {.headers = &headers,
                              .connect_timeout_ms = 3000,
                              .low_speed_time_s = 24 * 3600,
                              .peer_host_id = p->ps->env.tls ? p->host_id : NULL};
    p->linelen = 0;
    p->have_req = dmf_http_get(p->ps->env.http, url, &o, &have_ops, p);
    explicit_bzero(auth, sizeof(auth));
}

/* ---------------------------------------------------------------- pieces */

static int piece_on_headers(void *arg, dmf_http_req_t *req, long status)
{
    return status == 200   ? 0
           : status == 404 ? -ENOENT
           : status == 503 ? -EAGAIN
           : status == 403 ? -EPERM
                           : -EPROTO;
}

static void on_undefer(evutil_socket_t fd, short what, void *arg)
{
    struct dmf_parent *p = arg;
    dmf_bitmap_free(&p->deferred);
    dmf_bitmap_init(&p->deferred);
    changed(p->ps);
}

static int piece_on_data(void *arg, dmf_http_req_t *req, const char *data, size_t len)
{
    struct slot *s = arg;
    s->p->data_ms = dmf_now_ms();
    return dmf_piece_buf_append(&s->piece, data, len);
}

static void piece_on_done(void *arg, dmf_http_req_t *req, int err, const char *reason)
{
    struct slot *s = arg;
    struct dmf_parent *p = s->p;
    struct dmf_parents *ps = p->ps;
    uint32_t n = s->n;
    s->req = NULL;
    p->inflight--;
    if (err != 0) {
        /* The buffer goes back too (as for every request ended without its piece): memory
         * held by idle slots would keep every transfer waiting for --memory-limit with
         * nothing in flight to free any. */
        release_claim(ps, s);
        dmf_piece_buf_free(&s->piece);
    }
    if (err == -EAGAIN) {
        /* A seed that already served this piece to someone: it will come from a peer;
         * ask the seed again only after a while. */
        dmf_bitmap_set(&p->deferred, n);
        if (!evtimer_pending(p->undefer, NULL)) {
            struct timeval tv = {1, 0};
            evtimer_add(p->undefer, &tv);
        }
        changed(ps);
        return;
    }
    if (err == -ENOENT) {
        /* It no longer has the piece (or never had): ask someone else. */
        dmf_bitmap_clear(&p->has, n);
        if (p->have_req == NULL && !offers_wanted(p)) {
            /* Its /have stream is over and it holds nothing we lack (it dropped cached
             * pieces): it cannot help, and keeping it would hold off the stall timeout. */
            dmf_warn("task %s peer %s: parent %s no longer holds the pieces we lack",
                     ps->env.task_id, ps->env.peer_id, p->peer_id);
            parent_drop(p, PARENT_FAILED, false, 0);
            return;
        }
        changed(ps);
        return;
    }
    if (err != 0) {
        dmf_warn("task %s peer %s: piece %u from parent %s failed: %s", ps->env.task_id,
                 ps->env.peer_id, n, p->peer_id, failure_reason(err, reason));
        parent_drop(p, PARENT_FAILED, false, n);
        return;
    }
    uint64_t now = dmf_now_ms();
    dmf_rate_add(&p->rate, s->piece.len, now > s->started_ms ? now - s->started_ms : 0);
    p->strikes = 0;
    cancel_loser(ps, s);
    /* The task checks the bytes against the piece digest off the loop (the claim stays
     * with the piece until then), and calls dmf_parents_bad_piece() if they do not match. */
    size_t got = s->piece.len;
    int e = ps->env.sink->piece(ps->env.arg, n, dmf_piece_buf_take(&s->piece), got,
                                p->is_seed ? DMF_FROM_SEED : DMF_FROM_PEER, p->host_id);
    if (e == -EINVAL) /* a short piece */
        dmf_parents_bad_piece(ps, p->host_id, n);
    changed(ps);
}

void dmf_parents_bad_piece(struct dmf_parents *ps, const char *host_id, uint32_t n)
{
    for (struct dmf_parent *p = ps ? ps->list : NULL; p; p = p->next) {
        if (host_id == NULL || strcmp(p->host_id, host_id) != 0 || !usable(p))
            continue;
        dmf_warn("task %s peer %s: piece %u from parent %s (%s) does not match its digest; "
                 "excluding that parent",
                 ps->env.task_id, ps->env.peer_id, n, p->peer_id, p->host_id);
        parent_drop(p, PARENT_EXCLUDED, true, n);
        return;
    }
}

static const struct dmf_http_req_ops piece_ops = {
    .on_headers = piece_on_headers,
    .on_data = piece_on_data,
    .on_done = piece_on_done,
};

/* Asks p for piece n. The first request for a piece takes its claim; the endgame's second
 * copy (duplicate) shares the claim of the request already running. */
static void piece_request(struct dmf_parent *p, uint32_t n, bool duplicate)
{
    struct dmf_parents *ps = p->ps;
    const struct dmf_piece_book *book = ps->env.book;
    struct slot *s = NULL;
    for (int i = 0; i < DMF_DISPATCH_SLOTS_MAX && s == NULL; i++)
        if (p->slots[i].req == NULL)
            s = &p->slots[i];
    if (s == NULL || !dmf_piecemem_may_start(dmf_book_piece_size(book, n)))
        return; /* no slot, or no memory (the task is kicked when some is freed) */
    if (duplicate) {
        const struct slot *first = other_request(ps, n, NULL);
        if (first == NULL || first->p == p)
            return;
        dmf_metric_add(&dmf_m_endgame_requests, 1);
        dmf_info("task %s peer %s: endgame: piece %u also asked of parent %s (the request to %s "
                 "is %llu ms old)",
                 ps->env.task_id, ps->env.peer_id, n, p->peer_id, first->p->peer_id,
                 (unsigned long long)(dmf_now_ms() - first->started_ms));
    } else if (!dmf_book_claim(ps->env.book, n)) {
        return;
    }
    s->p = p;
    s->n = n;
    dmf_piece_buf_start(&s->piece, dmf_book_piece_size(book, n));
    char url[256];
    snprintf(url, sizeof(url), "%s/pieces/%s/%u", p->base_url, ps->env.task_id, n);
    /* How far along we are, so that a busy parent serves those behind first. */
    char progress[48];
    char auth[2][DMF_AUTH_LINE_MAX];
    char *lines[3];
    struct dmf_strlist headers = {.v = lines, .n = 0};
    if (book->content_length >= 0 && book->total_pieces > 0) {
        snprintf(progress, sizeof(progress), DMF_PROGRESS_HEADER ": %u",
                 (unsigned)((uint64_t)book->have.count * 1000 / book->total_pieces));
        lines[headers.n++] = progress;
    }
    add_auth_lines(ps, auth, lines, &headers.n);
    struct dmf_http_opts o = {.headers = &headers,
                              .connect_timeout_ms = 3000,
                              .low_speed_time_s = 10,
                              .charge = DMF_CHARGE_DOWNLOAD,
                              .flow = ps->env.flow,
                              .peer_host_id = ps->env.tls ? p->host_id : NULL};
    p->inflight++;
    s->started_ms = dmf_now_ms();
    if (p->asked_ms == 0)
        p->asked_ms = s->started_ms;
    s->req = dmf_http_get(ps->env.http, url, &o, &piece_ops, s);
    explicit_bzero(auth, sizeof(auth));
    if (!evtimer_pending(ps->late, NULL)) {
        struct timeval tv = {0, LATE_TICK_MS * 1000};
        evtimer_add(ps->late, &tv);
    }
}

/* The yardstick of every deadline: the median rate among the parents that completed a
 * request (the lower one of an even count), so that one parent that never queues does not
 * make every other look late. NULL when none has. */
static const struct dmf_rate *typical_rate(const struct dmf_parents *ps)
{
    const struct dmf_rate *r[64];
    size_t n = 0;
    for (const struct dmf_parent *p = ps->list; p && n < 64; p = p->next)
        if (p->rate.samples)
            r[n++] = &p->rate;
    if (n == 0)
        return NULL;
    for (size_t a = 1; a < n; a++) /* insertion sort: a few parents */
        for (size_t b = a; b > 0 && r[b - 1]->bytes_per_ms > r[b]->bytes_per_ms; b--) {
            const struct dmf_rate *x = r[b];
            r[b] = r[b - 1];
            r[b - 1] = x;
        }
    return r[(n - 1) / 2];
}

/* A request past its deadline goes back to the pool (and that piece is not asked of this
 * parent again for a while); a peer late DMF_RATE_STRIKES times in a row that sent nothing
 * all that time (stalled, not just busy) is dropped and reported to the scheduler, which
 * lowers its score (a seed only loses the requests: its queue is long by design). Returns
 * how many requests were taken back. */
static int take_back_late(struct dmf_parent *p, uint64_t now, uint64_t deadline)
{
    struct dmf_parents *ps = p->ps;
    int taken = 0;
    for (int i = 0; i < DMF_DISPATCH_SLOTS_MAX; i++) {
        struct slot *s = &p->slots[i];
        if (s->req == NULL || now - s->started_ms < deadline)
            continue;
        dmf_http_cancel(s->req);
        s->req = NULL;
        p->inflight--;
        taken++;
        release_claim(ps, s);
        dmf_piece_buf_free(&s->piece);
        dmf_bitmap_set(&p->deferred, s->n);
        if (!evtimer_pending(p->undefer, NULL)) {
            struct timeval tv = {1, 0};
            evtimer_add(p->undefer, &tv);
        }
        p->strikes++;
        dmf_warn("task %s peer %s: piece %u from parent %s took over %llu ms; asking another "
                 "(%d late in a row)",
                 ps->env.task_id, ps->env.peer_id, s->n, p->peer_id, (unsigned long long)deadline,
                 p->strikes);
        /* Late DMF_RATE_STRIKES times in a row and silent all that time: stalled. */
        if (p->strikes >= DMF_RATE_STRIKES && !p->is_seed && now - p->data_ms >= deadline) {
            parent_drop(p, PARENT_FAILED, false, s->n);
            return taken;
        }
    }
    return taken;
}

static void on_late_tick(evutil_socket_t fd, short what, void *arg)
{
    struct dmf_parents *ps = arg;
    const struct dmf_piece_book *book = ps->env.book;
    uint64_t now = dmf_now_ms();
    uint64_t deadline = dmf_rate_deadline_ms(typical_rate(ps), book->piece_length);
    bool endgame = dmf_dispatch_in_endgame(book);
    int taken = 0;
    bool any = false;
    for (struct dmf_parent *p = ps->list; p; p = p->next) {
        if (p->inflight == 0 || !usable(p))
            continue;
        taken += take_back_late(p, now, deadline);
        any |= p->inflight > 0;
    }
    if (any) {
        struct timeval tv = {0, LATE_TICK_MS * 1000};
        evtimer_add(ps->late, &tv);
    }
    /* In the endgame a request can turn late without any event: look again each tick. */
    if (taken || (any && endgame))
        changed(ps);
}

static uint32_t dispatch_random(void *arg)
{
    return (uint32_t)random();
}

/* Nothing left to plan: duplicates of the requests that take too long (dispatch.c). */
static void endgame(struct dmf_parents *ps, const struct dmf_dispatch_in *in,
                    struct dmf_parent **by_index, struct dmf_dispatch_req *reqs, size_t max)
{
    if (!dmf_dispatch_in_endgame(ps->env.book))
        return;
    struct dmf_dispatch_flight *flights = dmf_xcalloc(max, sizeof(*flights));
    size_t nf = 0;
    uint64_t now = dmf_now_ms();
    for (size_t k = 0; k < ps->n; k++)
        for (int i = 0; i < DMF_DISPATCH_SLOTS_MAX && nf < max; i++) {
            const struct slot *s = &by_index[k]->slots[i];
            if (s->req != NULL)
                flights[nf++] = (struct dmf_dispatch_flight){
                    .parent = k, .piece = s->n, .age_ms = now - s->started_ms};
        }
    uint64_t min_age = dmf_rate_endgame_ms(typical_rate(ps), ps->env.book->piece_length);
    size_t ndup = dmf_dispatch_endgame(in, flights, nf, min_age, reqs, max);
    for (size_t i = 0; i < ndup; i++)
        piece_request(by_index[reqs[i].parent], reqs[i].piece, true);
    free(flights);
}

void dmf_parents_dispatch(struct dmf_parents *ps)
{
    if (ps == NULL || ps->list == NULL || ps->env.book->piece_length == 0 ||
        ps->env.sink->busy(ps->env.arg))
        return;
    struct dmf_dispatch_parent *view = dmf_xcalloc(ps->n, sizeof(*view));
    struct dmf_parent **by_index = dmf_xcalloc(ps->n, sizeof(*by_index));
    size_t k = 0;
    for (struct dmf_parent *p = ps->list; p; p = p->next, k++) {
        by_index[k] = p;
        view[k] = (struct dmf_dispatch_parent){
            .has = &p->has,
            .deferred = &p->deferred,
            .usable = usable(p),
            .active = p->state == PARENT_ACTIVE,
            /* A parent late twice in a row is asked, like a seed, only for what no other
             * parent has (until it delivers a piece in time). */
            .is_seed = p->is_seed || p->strikes >= 2,
            .complete = p->complete,
            .inflight = p->inflight,
        };
    }
    struct dmf_dispatch_in in = {
        .book = ps->env.book,
        .parents = view,
        .nparents = ps->n,
        .parent_concurrency = ps->env.parent_concurrency,
        .random = dispatch_random,
    };
    size_t max = ps->n * DMF_DISPATCH_SLOTS_MAX;
    struct dmf_dispatch_req *reqs = dmf_xcalloc(max, sizeof(*reqs));
    size_t nreqs = dmf_dispatch_plan(&in, reqs, max);
    for (size_t i = 0; i < nreqs; i++)
        piece_request(by_index[reqs[i].parent], reqs[i].piece, false);
    if (nreqs == 0)
        endgame(ps, &in, by_index, reqs, max);
    free(reqs);
    free(by_index);
    free(view);
}

struct dmf_parents *dmf_parents_new(const struct dmf_parents_env *env)
{
    struct dmf_parents *ps = dmf_xcalloc(1, sizeof(*ps));
    ps->env = *env;
    ps->late = dmf_xevtimer_new(env->base, on_late_tick, ps);
    return ps;
}

void dmf_parents_add(struct dmf_parents *ps, const struct dmf_parent_info *info)
{
    for (struct dmf_parent *p = ps->list; p; p = p->next) {
        if (strcmp(p->host_id, info->host_id) != 0)
            continue;
        if (p->state == PARENT_FAILED) {
            /* Offered again: give it another chance. */
            parent_set_state(p, PARENT_CONNECTING);
            p->have_retries = 0;
            dmf_bitmap_free(&p->has);
            dmf_bitmap_init(&p->has);
            p->complete = false;
            have_connect(p);
        }
        return;
    }
    struct dmf_parent *p = dmf_xcalloc(1, sizeof(*p));
    p->ps = ps;
    p->peer_id = dmf_xstrdup(info->peer_id);
    p->host_id = dmf_xstrdup(info->host_id);
    p->is_seed = info->is_seed;
    const char *scheme = ps->env.tls ? "https" : "http";
    if (strchr(info->ip, ':'))
        snprintf(p->base_url, sizeof(p->base_url), "%s://[%s]:%u", scheme, info->ip, info->port);
    else
        snprintf(p->base_url, sizeof(p->base_url), "%s://%s:%u", scheme, info->ip, info->port);
    dmf_bitmap_init(&p->has);
    dmf_bitmap_init(&p->deferred);
    p->retry = dmf_xevtimer_new(ps->env.base, on_have_retry, p);
    p->undefer = dmf_xevtimer_new(ps->env.base, on_undefer, p);
    p->state = PARENT_CONNECTING;
    p->next = ps->list;
    ps->list = p;
    ps->n++;
    dmf_info("task %s peer %s: parent %s (%s%s) at %s", ps->env.task_id, ps->env.peer_id,
             p->peer_id, p->host_id, p->is_seed ? ", seed" : "", p->base_url);
    have_connect(p);
    changed(ps);
}

/* A parent asked this long before the end of the download that never sent a byte is
 * reported stalled (a parent asked just before the end is not: it had no time). */
#define STALLED_AFTER_MS 1000

void dmf_parents_report_stalled(struct dmf_parents *ps)
{
    if (ps == NULL)
        return;
    uint64_t now = dmf_now_ms();
    for (struct dmf_parent *p = ps->list; p; p = p->next) {
        if (!usable(p) || p->is_seed || p->data_ms != 0 || p->asked_ms == 0 ||
            now - p->asked_ms < STALLED_AFTER_MS || p->stall_reported)
            continue;
        p->stall_reported = true;
        dmf_warn("task %s peer %s: parent %s stalled (asked %llu ms ago, never sent a byte)",
                 ps->env.task_id, ps->env.peer_id, p->peer_id,
                 (unsigned long long)(now - p->asked_ms));
        ps->env.sink->parent_failed(ps->env.arg, p->peer_id, p->host_id, false, 0);
    }
}

void dmf_parents_free(struct dmf_parents *ps)
{
    if (ps == NULL)
        return;
    while (ps->list) {
        struct dmf_parent *p = ps->list;
        ps->list = p->next;
        cancel_slots(p);
        dmf_http_cancel(p->have_req);
        event_free(p->retry);
        event_free(p->undefer);
        dmf_bitmap_free(&p->has);
        dmf_bitmap_free(&p->deferred);
        free(p->peer_id);
        free(p->host_id);
        free(p);
    }
    event_free(ps->late);
    free(ps);
}
