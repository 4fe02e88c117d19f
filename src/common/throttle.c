/* Host-wide bandwidth limits on the event loop; see throttle.h. The decisions (how many
 * tokens, who goes next) are bucket.c's; this file keeps the queue of waiting transfers,
 * the timer that serves it, and the metrics. */
#include "common/throttle.h"

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdlib.h>
#include <time.h>

#include "common/log.h"
#include "common/metrics.h"
#include "common/util.h"

/* The longest the queue waits without a look (a limit raised elsewhere is seen by then). */
#define SERVE_MAX_NS (250ull * 1000 * 1000)
/* The libevent group's refill tick for uploads. */
#define UPLOAD_TICK_MS 10

DMF_METRIC_GAUGE(m_limit_download, "damselfly_bandwidth_limit_bytes", "limit=\"download\"",
                 "Host bandwidth limit in bytes per second (0 = unlimited).");
DMF_METRIC_GAUGE(m_limit_origin, "damselfly_bandwidth_limit_bytes", "limit=\"origin\"",
                 "Host bandwidth limit in bytes per second (0 = unlimited).");
DMF_METRIC_GAUGE(m_limit_upload, "damselfly_bandwidth_limit_bytes", "limit=\"upload\"",
                 "Host bandwidth limit in bytes per second (0 = unlimited).");
DMF_METRIC_COUNTER(m_throttled_download, "damselfly_throttled_bytes_total", "limit=\"download\"",
                   "Bytes that waited for a bandwidth limit's tokens before moving.");
DMF_METRIC_COUNTER(m_throttled_origin, "damselfly_throttled_bytes_total", "limit=\"origin\"",
                   "Bytes that waited for a bandwidth limit's tokens before moving.");
DMF_METRIC_COUNTER(m_throttled_task, "damselfly_throttled_bytes_total", "limit=\"task\"",
                   "Bytes that waited for a bandwidth limit's tokens before moving.");
DMF_METRIC_COUNTER(m_throttle_wait_ms, "damselfly_throttle_wait_ms_total", NULL,
                   "Milliseconds download transfers spent waiting for tokens, summed.");
DMF_METRIC_GAUGE(m_upload_limited, "damselfly_upload_limited_bytes", NULL,
                 "Bytes uploaded through the upload limit since it was first set.");

struct dmf_flow {
    dmf_throttle_t *t;
    int refs;
    struct dmf_bucket bucket; /* rate 0: no limit of its own */
    struct dmf_share share;
    enum dmf_priority prio;
    unsigned waiting; /* its transfers in the queue */
    unsigned pending; /* ... and let go by the queue, their bytes not yet moved */
};

struct dmf_throttle {
    struct event_base *base;
    struct dmf_bucket host[DMF_LIMIT_KINDS]; /* upload's is informative (the group limits) */
    struct dmf_throttle_wait *head, *tail;   /* waiting transfers, oldest first */
    struct event *serve;                     /* timer: serves the queue */
    uint64_t serve_at;                       /* when it fires (now_ns), while pending */
    uint64_t vnow;                           /* virtual time of the last flow served */
    struct dmf_throttle_wait *pending;       /* let go, their bytes not yet moved */
    struct bufferevent_rate_limit_group *upload_group; /* made when first limited */
    struct ev_token_bucket_cfg *upload_cfg;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * DMF_NS_PER_S + (uint64_t)ts.tv_nsec;
}

static struct dmf_metric *limit_metric(enum dmf_limit_kind k)
{
    return k == DMF_LIMIT_DOWNLOAD ? &m_limit_download
           : k == DMF_LIMIT_ORIGIN ? &m_limit_origin
                                   : &m_limit_upload;
}

const char *dmf_limit_name(enum dmf_limit_kind kind)
{
    return kind == DMF_LIMIT_DOWNLOAD ? "download" : kind == DMF_LIMIT_ORIGIN ? "origin" : "upload";
}

/* The buckets a waiting transfer charges, the flow's last (NULL ends the list). */
static unsigned buckets_of(dmf_throttle_t *t, const struct dmf_throttle_wait *w,
                           struct dmf_bucket **out)
{
    unsigned n = 0;
    for (int k = 0; k < DMF_LIMIT_UPLOAD; k++)
        if (w->charge & (1u << k))
            out[n++] = &t->host[k];
    if (w->flow)
        out[n++] = &w->flow->bucket;
    return n;
}

static bool eligible(dmf_throttle_t *t, const struct dmf_throttle_wait *w, uint64_t now)
{
    struct dmf_bucket *b[DMF_LIMIT_KINDS + 1];
    unsigned n = buckets_of(t, w, b);
    for (unsigned i = 0; i < n; i++)
        if (!dmf_bucket_ready(b[i], now))
            return false;
    return true;
}

static uint64_t wait_of(dmf_throttle_t *t, const struct dmf_throttle_wait *w, uint64_t now)
{
    struct dmf_bucket *b[DMF_LIMIT_KINDS + 1];
    unsigned n = buckets_of(t, w, b);
    uint64_t most = 0;
    for (unsigned i = 0; i < n; i++) {
        uint64_t ns = dmf_bucket_wait_ns(b[i], now);
        most = ns > most ? ns : most;
    }
    return most;
}

static void charge(dmf_throttle_t *t, struct dmf_throttle_wait *w, size_t len, uint64_t now)
{
    struct dmf_bucket *b[DMF_LIMIT_KINDS + 1];
    unsigned n = buckets_of(t, w, b);
    for (unsigned i = 0; i < n; i++)
        dmf_bucket_charge(b[i], len, now);
    if (w->flow)
        dmf_share_charge(&w->flow->share, len);
}

static void unlink_wait(dmf_throttle_t *t, struct dmf_throttle_wait *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        t->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        t->tail = w->prev;
    w->prev = w->next = NULL;
    w->queued = false;
    if (w->flow)
        w->flow->waiting--;
}

static uint64_t vtime_of(const struct dmf_throttle_wait *w)
{
    return w->flow ? w->flow->share.vtime : 0;
}

/* Counts what held a transfer back, once it is let go. */
static void note_throttled(dmf_throttle_t *t, const struct dmf_throttle_wait *w, uint64_t now)
{
    if ((w->charge & DMF_CHARGE_DOWNLOAD) && t->host[DMF_LIMIT_DOWNLOAD].rate)
        dmf_metric_add(&m_throttled_download, (int64_t)w->len);
    if ((w->charge & DMF_CHARGE_ORIGIN) && t->host[DMF_LIMIT_ORIGIN].rate)
        dmf_metric_add(&m_throttled_origin, (int64_t)w->len);
    if (w->flow && w->flow->bucket.rate)
        dmf_metric_add(&m_throttled_task, (int64_t)w->len);
    dmf_metric_add(&m_throttle_wait_ms, (int64_t)((now - w->since_ns) / 1000000));
}

/* True when o belongs to another task that is behind w's in virtual time and takes from
 * a limited host bucket w takes from too (tasks that share no scarce bucket never wait for
 * each other). */
static bool share_limited(dmf_throttle_t *t, const struct dmf_throttle_wait *o,
                          const struct dmf_throttle_wait *w)
{
    unsigned limited = 0;
    for (int k = 0; k < DMF_LIMIT_UPLOAD; k++)
        if (t->host[k].rate)
            limited |= 1u << k;
    return (o->charge & w->charge & limited) != 0;
}

static bool behind(dmf_throttle_t *t, const struct dmf_throttle_wait *o,
                   const struct dmf_throttle_wait *w)
{
    return o->flow && o->flow != w->flow && share_limited(t, o, w) &&
           o->flow->share.vtime < w->flow->share.vtime;
}

/* Whether it is w's task's turn: no other task that could move bytes now (let go and not
 * yet moved, or waiting with tokens in every bucket it needs; one held back by its own or
 * the origin limit does not count) is behind it. Without this, a pass that finds tokens
 * for several chunks would give them to the task with the most connections waiting.
 * Without a task (the proxy's pass-through) a transfer always may go. */
static bool fair_turn(dmf_throttle_t *t, const struct dmf_throttle_wait *w, uint64_t now)
{
    if (w->flow == NULL)
        return true;
    for (struct dmf_throttle_wait *o = t->pending; o; o = o->next)
        if (behind(t, o, w))
            return false;
    for (struct dmf_throttle_wait *o = t->head; o; o = o->next)
        if (behind(t, o, w) && eligible(t, o, now))
            return false;
    return true;
}

/* Marks a waiter let go (its task stays backlogged until its bytes move) or done. */
static void set_pending(dmf_throttle_t *t, struct dmf_throttle_wait *w, bool on)
{
    if (w->pending == on)
        return;
    w->pending = on;
    if (w->flow)
        w->flow->pending += on ? 1 : -1;
    if (on) {
        w->prev = NULL;
        w->next = t->pending;
        if (t->pending)
            t->pending->prev = w;
        t->pending = w;
        return;
    }
    if (w->prev)
        w->prev->next = w->next;
    else
        t->pending = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->prev = w->next = NULL;
}

/* Makes the serve timer fire in ns from now, unless it fires sooner already. */
static void arm(dmf_throttle_t *t, uint64_t now, uint64_t ns)
{
    if (evtimer_pending(t->serve, NULL) && t->serve_at <= now + ns)
        return;
    t->serve_at = now + ns;
    struct timeval tv = {(time_t)(ns / DMF_NS_PER_S), (suseconds_t)((ns % DMF_NS_PER_S) / 1000)};
    evtimer_add(t->serve, &tv);
}

/* Grants tokens to the eligible waiters, lowest virtual time first, while there are
 * tokens; then sets the timer for the first one that can go. */
static void serve(dmf_throttle_t *t)
{
    uint64_t now = now_ns();
    for (;;) {
        struct dmf_throttle_wait *best = NULL;
        for (struct dmf_throttle_wait *w = t->head; w; w = w->next) {
            if (!eligible(t, w, now) || !fair_turn(t, w, now))
                continue;
            if (best == NULL) {
                best = w;
            } else {
                uint64_t v[2] = {vtime_of(best), vtime_of(w)};
                if (dmf_share_pick(v, 2) == 1)
                    best = w;
            }
        }
        if (best == NULL)
            break;
        unlink_wait(t, best);
        t->vnow = vtime_of(best);
        charge(t, best, best->len, now);
        best->granted = true;
        set_pending(t, best, true);
        note_throttled(t, best, now);
        best->wake(best->arg);
    }
    if (t->head == NULL)
        return;
    /* The next pass: when the first waiter's buckets allow it. One that could go but
     * whose turn it is not waits for the task ahead to move its bytes (take() calls us). */
    uint64_t soonest = SERVE_MAX_NS;
    for (struct dmf_throttle_wait *w = t->head; w; w = w->next) {
        uint64_t ns = wait_of(t, w, now);
        if (ns > 0)
            soonest = ns < soonest ? ns : soonest;
    }
    evtimer_del(t->serve);
    arm(t, now, soonest);
}

static void on_serve(evutil_socket_t fd, short what, void *arg)
{
    serve(arg);
}

dmf_throttle_t *dmf_throttle_new(struct event_base *base)
{
    dmf_throttle_t *t = dmf_xcalloc(1, sizeof(*t));
    t->base = base;
    t->serve = evtimer_new(base, on_serve, t);
    uint64_t now = now_ns();
    for (int k = 0; k < DMF_LIMIT_KINDS; k++)
        dmf_bucket_init(&t->host[k], 0, 0, now);
    struct dmf_metric *ms[] = {&m_limit_download,     &m_limit_origin,     &m_limit_upload,
                               &m_throttled_download, &m_throttled_origin, &m_throttled_task,
                               &m_throttle_wait_ms,   &m_upload_limited};
    for (size_t i = 0; i < DMF_ARRAY_SIZE(ms); i++)
        dmf_metric_register(ms[i]);
    for (int k = 0; k < DMF_LIMIT_KINDS; k++)
        dmf_metric_set(limit_metric(k), 0);
    return t;
}

void dmf_throttle_free(dmf_throttle_t *t)
{
    if (t == NULL)
        return;
    while (t->head)
        unlink_wait(t, t->head);
    while (t->pending)
        set_pending(t, t->pending, false);
    event_free(t->serve);
    if (t->upload_group)
        bufferevent_rate_limit_group_free(t->upload_group);
    if (t->upload_cfg)
        ev_token_bucket_cfg_free(t->upload_cfg);
    free(t);
}

/* The upload group's configuration for rate (0: as good as unlimited). */
static struct ev_token_bucket_cfg *upload_cfg(uint64_t rate)
{
    struct timeval tick = {0, UPLOAD_TICK_MS * 1000};
    size_t max = (size_t)EV_RATE_LIMIT_MAX;
    size_t per_tick = rate ? (size_t)(rate * UPLOAD_TICK_MS / 1000) : max;
    if (per_tick < 1)
        per_tick = 1;
    size_t burst = rate ? (size_t)dmf_bucket_default_burst(rate) : max;
    if (burst < per_tick)
        burst = per_tick;
    return ev_token_bucket_cfg_new(max, max, per_tick, burst, &tick);
}

static void set_upload(dmf_throttle_t *t, uint64_t rate)
{
    if (rate == 0 && t->upload_group == NULL)
        return;
    struct ev_token_bucket_cfg *cfg = upload_cfg(rate);
    if (cfg == NULL) {
        dmf_error("throttle: cannot configure an upload limit of %llu B/s",
                  (unsigned long long)rate);
        return;
    }
    if (t->upload_group == NULL)
        t->upload_group = bufferevent_rate_limit_group_new(t->base, cfg);
    else
        bufferevent_rate_limit_group_set_cfg(t->upload_group, cfg);
    if (t->upload_cfg)
        ev_token_bucket_cfg_free(t->upload_cfg);
    t->upload_cfg = cfg; /* the group keeps a pointer to it */
}

void dmf_throttle_set(dmf_throttle_t *t, enum dmf_limit_kind kind, uint64_t rate)
{
    dmf_bucket_set(&t->host[kind], rate, 0, now_ns());
    dmf_metric_set(limit_metric(kind), (int64_t)rate);
    if (kind == DMF_LIMIT_UPLOAD)
        set_upload(t, rate);
    else
        serve(t);
}

uint64_t dmf_throttle_get(const dmf_throttle_t *t, enum dmf_limit_kind kind)
{
    return t->host[kind].rate;
}

struct dmf_flow *dmf_flow_new(dmf_throttle_t *t, uint64_t rate, enum dmf_priority prio)
{
    struct dmf_flow *f = dmf_xcalloc(1, sizeof(*f));
    f->t = t;
    f->refs = 1;
    f->prio = prio;
    f->share.weight = dmf_priority_weight(prio);
    f->share.vtime = t->vnow;
    dmf_bucket_init(&f->bucket, rate, 0, now_ns());
    return f;
}

struct dmf_flow *dmf_flow_ref(struct dmf_flow *f)
{
    if (f)
        f->refs++;
    return f;
}

void dmf_flow_unref(struct dmf_flow *f)
{
    if (f == NULL || --f->refs > 0)
        return;
    free(f);
}

void dmf_flow_set(struct dmf_flow *f, uint64_t rate, enum dmf_priority prio)
{
    f->prio = prio;
    f->share.weight = dmf_priority_weight(prio);
    if (rate != f->bucket.rate) {
        dmf_bucket_set(&f->bucket, rate, 0, now_ns());
        serve(f->t);
    }
}

uint64_t dmf_flow_rate(const struct dmf_flow *f)
{
    return f->bucket.rate;
}

enum dmf_priority dmf_flow_priority(const struct dmf_flow *f)
{
    return f->prio;
}

int dmf_throttle_take(dmf_throttle_t *t, struct dmf_throttle_wait *w, size_t len)
{
    uint64_t now = now_ns();
    if (w->granted) {
        /* Tokens for w->len were taken when it was let go: charge only what is more. */
        w->granted = false;
        if (len > w->len)
            charge(t, w, len - w->len, now);
        w->len = 0;
        if (w->pending) {
            set_pending(t, w, false);
            if (t->head)
                arm(t, now, 0); /* whoever waited for this task's turn to pass */
        }
        return 0;
    }
    if (w->queued)
        return 1;
    if (w->flow && w->flow->waiting == 0 && w->flow->pending == 0)
        dmf_share_join(&w->flow->share, t->vnow); /* back from idle: no credit */
    /* No waiter that could go now, sharing a limit with it, is ahead of it. */
    bool first = true;
    for (struct dmf_throttle_wait *o = t->head; o && first; o = o->next)
        first = !(share_limited(t, o, w) && eligible(t, o, now) && fair_turn(t, o, now));
    if (first && eligible(t, w, now) && fair_turn(t, w, now)) {
        charge(t, w, len, now);
        return 0;
    }
    w->len = len;
    w->since_ns = now;
    w->queued = true;
    w->prev = t->tail;
    w->next = NULL;
    if (t->tail)
        t->tail->next = w;
    else
        t->head = w;
    t->tail = w;
    if (w->flow)
        w->flow->waiting++;
    /* Served when its own buckets allow (or at once when others could go now). */
    uint64_t ns = first ? wait_of(t, w, now) : 0;
    if (ns > 0 || !first)
        arm(t, now, ns);
    return 1;
}

void dmf_throttle_unused(struct dmf_throttle_wait *w, size_t len)
{
    w->granted = true;
    w->len = len;
}

void dmf_throttle_cancel(dmf_throttle_t *t, struct dmf_throttle_wait *w)
{
    if (w->queued)
        unlink_wait(t, w);
    w->granted = false;
    if (w->pending) {
        set_pending(t, w, false);
        if (t->head)
            arm(t, now_ns(), 0);
    }
}

void dmf_throttle_add_upload(dmf_throttle_t *t, struct bufferevent *bev)
{
    if (t == NULL || t->upload_group == NULL || bev == NULL)
        return;
    bufferevent_add_to_rate_limit_group(bev, t->upload_group);
    ev_uint64_t rd = 0, wr = 0;
    bufferevent_rate_limit_group_get_totals(t->upload_group, &rd, &wr);
    dmf_metric_set(&m_upload_limited, (int64_t)wr);
}
