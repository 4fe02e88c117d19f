/* Parents of a task; see parent.h. */
#include "daemon/peer/parent.h"

#include <errno.h>
#include <limits.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/http_client.h"
#include "common/log.h"
#include "common/util.h"
#include "daemon/piece_server.h"
#include "daemon/peer/announce.h"
#include "daemon/peer/task.h"

#define MAX_SLOTS     16
#define HAVE_RETRIES  50 /* a parent that does not know the task yet: retry this often */
#define HAVE_RETRY_MS 200
#define HAVE_LINE_MAX 64
#define SEED_SLOTS    1 /* piece requests in flight to a seed: its upload is shared */
/* Pacing: a child may be this far ahead of the other downloaders among its parents
 * (in pieces: npieces / DIVISOR, at least MIN) before it keeps one request per parent. */
#define PACE_LEAD_DIVISOR 64
#define PACE_LEAD_MIN     4
#define MIN_IN_FLIGHT     4 /* requests to the (non-seed) parents together, at least */

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
    uint8_t *buf;
    size_t len, want;
};

struct dmf_parent {
    struct dmf_task *t;
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
    struct slot slots[MAX_SLOTS];
    int inflight;
};

static void have_connect(struct dmf_parent *p);

static void parent_set_state(struct dmf_parent *p, enum parent_state s)
{
    if (p->state == s)
        return;
    dmf_info("task %s peer %s: parent %s (%s%s): %s -> %s", p->t->id, p->t->peer_id, p->peer_id,
             p->host_id, p->is_seed ? ", seed" : "", parent_state_names[p->state],
             parent_state_names[s]);
    p->state = s;
}

static bool usable(const struct dmf_parent *p)
{
    return p->state == PARENT_CONNECTING || p->state == PARENT_ACTIVE;
}

int dmf_parents_usable(const struct dmf_task *t)
{
    int n = 0;
    for (const struct dmf_parent *p = t->parents; p; p = p->next)
        n += usable(p);
    return n;
}

static void cancel_slots(struct dmf_parent *p)
{
    for (int i = 0; i < MAX_SLOTS; i++) {
        struct slot *s = &p->slots[i];
        if (s->req) {
            dmf_http_cancel(s->req);
            s->req = NULL;
            dmf_bitmap_clear(&p->t->inflight, s->n);
        }
        free(s->buf);
        s->buf = NULL;
    }
    p->inflight = 0;
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
    dmf_sched_report_parent_failure(p->t, p->peer_id, p->host_id, bad_piece, piece);
    dmf_task_kick(p->t);
}

/* ---------------------------------------------------------------- /have stream */

static int have_on_headers(void *arg, dmf_http_req_t *req, long status)
{
    struct dmf_parent *p = arg;
    if (status == 404)
        return -ENOENT;
    if (status != 200)
        return -EPROTO;
    parent_set_state(p, PARENT_ACTIVE);
    p->have_retries = 0;
    return 0;
}

static int have_line(struct dmf_parent *p, const char *line)
{
    struct dmf_task *t = p->t;
    unsigned long n;
    char *end;
    if (strncmp(line, "have ", 5) == 0) {
        errno = 0;
        n = strtoul(line + 5, &end, 10);
        if (errno || *end || end == line + 5 || n >= DMF_PIECES_MAX ||
            (t->content_length >= 0 && n >= t->total_pieces))
            return -EPROTO;
        dmf_bitmap_set(&p->has, (uint32_t)n);
        return 0;
    }
    if (strncmp(line, "done ", 5) == 0) {
        p->complete = true;
        return 0;
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
        p->linelen = 0;
        if (have_line(p, p->line) != 0)
            return -EPROTO;
    }
    dmf_task_kick(p->t);
    return 0;
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
    dmf_warn("task %s peer %s: parent %s at %s: %s", p->t->id, p->t->peer_id, p->peer_id,
             p->base_url,
             err == 0         ? "stopped the task"
             : err == -ENOENT ? "never had the task"
                              : reason);
    parent_drop(p, PARENT_FAILED, false, 0);
}

static const struct dmf_http_req_ops have_ops = {
    .on_headers = have_on_headers,
    .on_data = have_on_data,
    .on_done = have_on_done,
};

static void have_connect(struct dmf_parent *p)
{
    char url[256];
    snprintf(url, sizeof(url), "%s/have/%s", p->base_url, p->t->id);
    struct dmf_http_opts o = {.connect_timeout_ms = 3000, .low_speed_time_s = 24 * 3600};
    p->linelen = 0;
    p->have_req = dmf_http_get(p->t->d->http, url, &o, &have_ops, p);
}

/* ---------------------------------------------------------------- pieces */

static int piece_on_headers(void *arg, dmf_http_req_t *req, long status)
{
    return status == 200 ? 0 : status == 404 ? -ENOENT : status == 503 ? -EAGAIN : -EPROTO;
}

static void on_undefer(evutil_socket_t fd, short what, void *arg)
{
    struct dmf_parent *p = arg;
    dmf_bitmap_free(&p->deferred);
    dmf_bitmap_init(&p->deferred);
    dmf_task_kick(p->t);
}

static int piece_on_data(void *arg, dmf_http_req_t *req, const char *data, size_t len)
{
    struct slot *s = arg;
    if (len > s->want - s->len)
        return -EPROTO;
    memcpy(s->buf + s->len, data, len);
    s->len += len;
    return 0;
}

static void piece_on_done(void *arg, dmf_http_req_t *req, int err, const char *reason)
{
    struct slot *s = arg;
    struct dmf_parent *p = s->p;
    struct dmf_task *t = p->t;
    uint32_t n = s->n;
    s->req = NULL;
    p->inflight--;
    if (err != 0)
        dmf_bitmap_clear(&t->inflight, n);
    if (err == -EAGAIN) {
        /* A seed that already served this piece to someone: it will come from a peer;
         * ask the seed again only after a while. */
        dmf_bitmap_set(&p->deferred, n);
        if (!evtimer_pending(p->undefer, NULL)) {
            struct timeval tv = {1, 0};
            evtimer_add(p->undefer, &tv);
        }
        dmf_task_kick(t);
        return;
    }
    if (err == -ENOENT) {
        /* It no longer has the piece (or never had): ask someone else. */
        dmf_bitmap_clear(&p->has, n);
        dmf_task_kick(t);
        return;
    }
    if (err != 0) {
        dmf_warn("task %s peer %s: piece %u from parent %s failed: %s", t->id, t->peer_id, n,
                 p->peer_id, reason);
        parent_drop(p, PARENT_FAILED, false, n);
        return;
    }
    /* The task checks the bytes against the piece digest off the loop, and calls
     * dmf_parents_bad_piece() if they do not match. */
    uint8_t *buf = s->buf;
    s->buf = NULL;
    int e = dmf_task_piece_submit(t, n, buf, s->len, p->is_seed ? DMF_FROM_SEED : DMF_FROM_PEER,
                                  p->host_id);
    if (e == -EINVAL) /* a short piece */
        dmf_parents_bad_piece(t, p->host_id, n);
    dmf_task_kick(t);
}

void dmf_parents_bad_piece(struct dmf_task *t, const char *host_id, uint32_t n)
{
    for (struct dmf_parent *p = t->parents; p; p = p->next) {
        if (host_id == NULL || strcmp(p->host_id, host_id) != 0 || !usable(p))
            continue;
        dmf_warn("task %s peer %s: piece %u from parent %s (%s) does not match its digest; "
                 "excluding that parent",
                 t->id, t->peer_id, n, p->peer_id, p->host_id);
        parent_drop(p, PARENT_EXCLUDED, true, n);
        return;
    }
}

static const struct dmf_http_req_ops piece_ops = {
    .on_headers = piece_on_headers,
    .on_data = piece_on_data,
    .on_done = piece_on_done,
};

static void piece_request(struct dmf_parent *p, uint32_t n)
{
    struct dmf_task *t = p->t;
    struct slot *s = NULL;
    for (int i = 0; i < MAX_SLOTS && s == NULL; i++)
        if (p->slots[i].req == NULL)
            s = &p->slots[i];
    if (s == NULL)
        return;
    s->p = p;
    s->n = n;
    s->len = 0;
    s->want = t->content_length >= 0 ? dmf_piece_size(t->content_length, t->piece_length, n)
                                     : t->piece_length;
    s->buf = dmf_xrealloc(s->buf, s->want ? s->want : 1);
    char url[256];
    snprintf(url, sizeof(url), "%s/pieces/%s/%u", p->base_url, t->id, n);
    /* How far along we are, so that a busy parent serves those behind first. */
    char progress[48];
    char *lines[] = {progress};
    struct dmf_strlist headers = {.v = lines, .n = 0};
    if (t->content_length >= 0 && t->total_pieces > 0) {
        snprintf(progress, sizeof(progress), DMF_PROGRESS_HEADER ": %u",
                 (unsigned)((uint64_t)t->have.count * 1000 / t->total_pieces));
        headers.n = 1;
    }
    struct dmf_http_opts o = {
        .headers = &headers, .connect_timeout_ms = 3000, .low_speed_time_s = 10};
    dmf_bitmap_set(&t->inflight, n);
    p->inflight++;
    s->req = dmf_http_get(t->d->http, url, &o, &piece_ops, s);
}

/* Pieces worth asking p for, in bits 8*i .. 8*i+7: p holds them, we neither hold nor
 * fetch them, their digests are known and p has not deferred them. */
static uint8_t wanted_byte(const struct dmf_task *t, const struct dmf_parent *p, uint32_t i)
{
    return dmf_bitmap_byte(&p->has, i) & (uint8_t)~dmf_bitmap_byte(&p->deferred, i) &
           (uint8_t)~dmf_bitmap_byte(&t->have, i) & (uint8_t)~dmf_bitmap_byte(&t->inflight, i) &
           dmf_bitmap_byte(&t->digest_known, i);
}

/* Rarest-first: among the pieces worth asking p for, one that the fewest of our parents
 * hold, chosen at random among those (reservoir sampling), so that children of the same
 * parent do not all ask for the same pieces in the same order. A seed is asked only for
 * pieces no other parent holds: the peers pass on what the seed sent once, which keeps
 * the origin's uplink to about one copy of the file. */
static bool pick(const struct dmf_task *t, const struct dmf_parent *p, const uint16_t *count,
                 uint32_t npieces, uint32_t *out)
{
    uint32_t best = UINT32_MAX, ties = 0;
    uint16_t best_count = UINT16_MAX;
    for (uint32_t i = 0; i * 8 < npieces; i++) {
        for (unsigned want = wanted_byte(t, p, i); want != 0; want &= want - 1) {
            uint32_t n = i * 8 + (uint32_t)__builtin_ctz(want);
            if (n >= npieces)
                break;
            if (p->is_seed && count[n] > 1)
                continue;
            if (count[n] < best_count) {
                best = n;
                best_count = count[n];
                ties = 1;
            } else if (count[n] == best_count && (uint32_t)random() % ++ties == 0) {
                best = n;
            }
        }
    }
    if (best == UINT32_MAX)
        return false;
    *out = best;
    return true;
}

/* How many requests a child may have in flight to its non-seed parents: per_parent to
 * each, total over all of them, in_flight now. A child that is ahead of the other
 * downloaders among its parents keeps one per parent and at most half its parents busy,
 * so that the uplinks they share go to those behind: everyone finishes at about the same
 * time, and every uplink has someone to serve until the end
 * (docs/internals/PIECE-PROTOCOL.md, "Pacing"). */
struct request_budget {
    int per_parent, total, in_flight;
};

static struct request_budget request_budget(const struct dmf_task *t, uint32_t npieces)
{
    struct request_budget b = {.per_parent = (int)t->d->cfg.parent_concurrency, .total = INT_MAX};
    uint64_t sum = 0;
    int downloaders = 0, peers = 0;
    for (const struct dmf_parent *p = t->parents; p; p = p->next) {
        if (p->is_seed)
            continue;
        b.in_flight += p->inflight;
        if (p->state != PARENT_ACTIVE)
            continue;
        peers++;
        if (!p->complete) {
            sum += p->has.count;
            downloaders++;
        }
    }
    /* With one or two parents, per-parent requests alone would leave a fast link idle
     * between pieces: keep MIN_IN_FLIGHT in flight over all of them. */
    if (peers > 0)
        b.per_parent = DMF_MAX(b.per_parent, (MIN_IN_FLIGHT + peers - 1) / peers);
    b.per_parent = DMF_MIN(b.per_parent, MAX_SLOTS);
    uint32_t lead_allowed = DMF_MAX(npieces / PACE_LEAD_DIVISOR, PACE_LEAD_MIN);
    if (downloaders > 0 && t->have.count > sum / (uint64_t)downloaders + lead_allowed) {
        b.per_parent = 1;
        b.total = DMF_MAX(2, peers / 2);
    }
    return b;
}

void dmf_parents_dispatch(struct dmf_task *t)
{
    if (t->piece_length == 0 || t->parents == NULL || dmf_task_workers_busy(t))
        return;
    uint32_t npieces = 0;
    for (struct dmf_parent *p = t->parents; p; p = p->next)
        if (usable(p))
            npieces = DMF_MAX(npieces, p->has.nbits);
    if (t->content_length >= 0)
        npieces = DMF_MIN(npieces, t->total_pieces);
    if (npieces == 0)
        return;
    /* How many usable parents hold each piece (a seed counts like any other: a piece held
     * by a seed and a peer counts 2, and pick() leaves the seed out for it). */
    uint16_t *count = dmf_xcalloc(npieces, sizeof(*count));
    for (struct dmf_parent *p = t->parents; p; p = p->next) {
        if (!usable(p))
            continue;
        for (uint32_t i = 0; i * 8 < npieces; i++)
            for (unsigned b = dmf_bitmap_byte(&p->has, i); b != 0; b &= b - 1) {
                uint32_t n = i * 8 + (uint32_t)__builtin_ctz(b);
                if (n < npieces && count[n] < UINT16_MAX)
                    count[n]++;
            }
    }
    struct request_budget budget = request_budget(t, npieces);
    bool progress = true;
    while (progress) {
        progress = false;
        for (struct dmf_parent *p = t->parents; p; p = p->next) {
            bool full = p->is_seed
                            ? p->inflight >= SEED_SLOTS
                            : p->inflight >= budget.per_parent || budget.in_flight >= budget.total;
            uint32_t n;
            if (p->state != PARENT_ACTIVE || full || !pick(t, p, count, npieces, &n))
                continue;
            piece_request(p, n);
            budget.in_flight += !p->is_seed;
            progress = true;
        }
    }
    free(count);
}

void dmf_parents_add(struct dmf_task *t, const struct dmf_parent_info *info)
{
    for (struct dmf_parent *p = t->parents; p; p = p->next) {
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
    p->t = t;
    p->peer_id = dmf_xstrdup(info->peer_id);
    p->host_id = dmf_xstrdup(info->host_id);
    p->is_seed = info->is_seed;
    if (strchr(info->ip, ':'))
        snprintf(p->base_url, sizeof(p->base_url), "http://[%s]:%u", info->ip, info->port);
    else
        snprintf(p->base_url, sizeof(p->base_url), "http://%s:%u", info->ip, info->port);
    dmf_bitmap_init(&p->has);
    dmf_bitmap_init(&p->deferred);
    p->retry = evtimer_new(t->d->base, on_have_retry, p);
    p->undefer = evtimer_new(t->d->base, on_undefer, p);
    p->state = PARENT_CONNECTING;
    p->next = t->parents;
    t->parents = p;
    dmf_info("task %s peer %s: parent %s (%s%s) at %s", t->id, t->peer_id, p->peer_id, p->host_id,
             p->is_seed ? ", seed" : "", p->base_url);
    have_connect(p);
    dmf_task_kick(t);
}

void dmf_parents_free_all(struct dmf_task *t)
{
    while (t->parents) {
        struct dmf_parent *p = t->parents;
        t->parents = p->next;
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
}
