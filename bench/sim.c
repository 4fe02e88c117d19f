/* dmf-sim: a swarm of N hosts downloading one file, simulated, with the REAL scheduler core
 * (src/scheduler/sched.c, driven through sched.h with an injected clock and a decision sink)
 * and the REAL piece selection of the daemon (src/daemon/peer/dispatch.c over a
 * piece_book.c book, rate.c for the endgame's patience), over a fluid network model:
 *
 *  - every host has an uplink and a downlink cap (bytes/s of goodput); every piece transfer
 *    in progress is a flow through its parent's uplink and its child's downlink, and the
 *    flows share each link max-min fairly (progressive filling), recomputed every time
 *    step of dt seconds;
 *  - a parent serves at most upload_slots(host) pieces at once (the piece server's rule:
 *    --upload-slots, at least one per 4 children watching), the others wait in its queue
 *    and start least-progress-first, with aging (20 ms = 1 permille);
 *  - a child asks its parents for pieces as dispatch.c plans (rarest first, the seed last,
 *    --parent-concurrency per parent, pacing, endgame duplicates), learns what a parent
 *    holds at once (the /have stream) and reports progress to the scheduler in batches of
 *    32 pieces or after 30 ms (announce.c), and announces its host every 2 s with its
 *    upload rate and active uploads (what the scheduler ranks parents by);
 *  - the seed is one host with its own uplink, behind which the origin sits (as in
 *    bench/cluster: the seed peer runs on the origin host, so "origin egress" counts what
 *    leaves that uplink); the scheduler triggers it and it fetches from the origin with 4
 *    range requests in flight; a host sent back to the source does the same.
 *
 *  - a request older than its deadline is taken back every 100 ms (parent.c's late tick);
 *  - optionally (--cpu-cores), one machine's CPU as a link every flow crosses, as when
 *    bench/cluster runs the whole swarm on one machine.
 *
 * Not modelled: TCP (slow start, RTT, tbf's FIFO unfairness), disk, failures and churn.
 * Deterministic for a given --seed. See bench/README.md.
 *
 * Prints the completion curve against the fluid bound T* = max(F/u_s, F/d, N*F/(u_s+N*u))
 * (bench/cluster's t_star, rates as goodput), the origin egress in copies and its own CPU
 * time; the last line ("sim: key=value ...") is for scripts (bench/sim-validate, CTest). */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/pieces.h"
#include "common/util.h"
#include "daemon/peer/dispatch.h"
#include "daemon/peer/piece_book.h"
#include "daemon/peer/rate.h"
#include "scheduler/sched.h"

#define GOODPUT_DEFAULT   (1448.0 / 1514.0) /* TCP payload per tbf byte, as bench/cluster */
#define ANNOUNCE_MS       2000              /* the daemon's host announce interval */
#define REPORT_BATCH      32                /* announce.c: pieces per progress message */
#define REPORT_DELAY_MS   30                /* announce.c: how long a piece waits for company */
#define SOURCE_INFLIGHT   4                 /* --source-concurrency default */
#define AGING_MS          20                /* piece_server.c */
#define CHILDREN_PER_SLOT 4                 /* piece_server.c */
#define SLOTS_MAX         64                /* piece_server.c */
#define ARRAY_LEN(a)      (sizeof(a) / sizeof((a)[0]))
#define LATE_TICK_S       0.1 /* parent.c LATE_TICK_MS */
#define SEED_REPEAT_S     3.0 /* DMF_SEED_REPEAT_MS */
#define LAYERS_MAX        16
#define ORIGIN            0 /* node index of the origin */
#define SEED              1 /* node index of the seed host */

struct opts {
    int n;
    double size_mib;
    int layers;
    double origin_up, host_up, host_down; /* Mbit/s of link rate */
    double origin_fetch;                  /* Mbit/s origin -> seed (local: fast) */
    double goodput;
    double dt_ms;
    double arrival_s; /* hosts register uniformly over [0, arrival_s] */
    uint32_t piece_kib;
    int parent_concurrency, upload_slots, candidate_limit;
    bool dag;
    uint64_t seed;
    double max_sim_s;
    double cpu_cores, cpu_ns_per_byte;
    double seed_repeat_s; /* DMF_SEED_REPEAT_MS, or --seed-repeat-ms */
    bool quiet, verbose;
};

enum flow_state { FLOW_FREE, FLOW_QUEUED, FLOW_ACTIVE };

struct flow {
    int state;
    int src_node, dst_peer, par; /* par: index into the child's parents, -1 from the origin */
    uint32_t piece;
    double left, size;
    double t_req;      /* when it was asked */
    uint32_t permille; /* the child's progress when it asked (X-Dmf-Progress) */
    double rate;       /* this step's share */
    int qnext;         /* the free list */
    int hpos;          /* where it sits in its parent's upload queue */
};

struct par {
    int peer;
    int inflight;
    struct dmf_rate rate;
    dmf_bitmap_t deferred; /* pieces refused (503) or taken back late: not asked for a second */
    int strikes;           /* requests in a row that missed their deadline */
    double undefer_at;     /* 0: no timer */
};

struct peer {
    int node, task;
    struct dmf_piece_book book;
    dmf_scheduler_peer_t *sp;
    struct par *pars;
    int npars, cappars;
    int *children; /* peers that have this one as a parent */
    int nchildren, capchildren;
    int *flights; /* flows this peer asked for and that still run */
    int nflights, capflights;
    bool registered, source, finished, dirty;
    double undefer_at; /* the earliest of its parents' */
    double late_at;    /* the next late tick (parent.c: every 100 ms while requests run) */
    /* A seed's ledger (piece_server.c): pieces served at least once, and when last. */
    dmf_bitmap_t served;
    double *served_at;
    uint32_t pending[REPORT_BATCH];
    int npending;
    bool pending_digests;
    double pending_since;
    char peer_id[48];
};

struct node {
    double up, down;  /* bytes/s */
    int watchers;     /* children watching (/have streams) */
    int active_up;    /* uploads sending */
    int *q, nq, capq; /* waiting uploads (flow indices), a heap */
    double up_bytes, up_bytes_window;
    double next_announce;
    double arrive, done;
    int tasks_left;
    int peer[LAYERS_MAX];
    char id[32], ip[32];
};

struct sim {
    struct opts o;
    double t;          /* seconds */
    double file_bytes; /* F */
    int64_t task_len[LAYERS_MAX];
    uint32_t piece_len;
    char task_id[LAYERS_MAX][65];
    struct node *nodes;
    int nnodes;
    struct peer *peers;
    int npeers;
    struct flow *flows;
    int nflows, capflows, freelist;
    int *active;
    int nactive, capactive;
    dmf_scheduler_t *sched;
    uint64_t rng;
    /* seed triggers the sink asked for, run after the scheduler call returns */
    struct {
        int task;
        uint64_t trigger_id;
    } triggers[LAYERS_MAX * 4];
    int ntriggers;
    uint64_t trigger_id[LAYERS_MAX];
    int hosts_done;
    double *done_times;
    long n_candidates, n_back_to_source, n_gone, n_failed, n_dups, n_cancels, n_refused, n_late;
    double sched_cpu;
    double origin_to_hosts; /* bytes hosts sent back to the source fetched */
    int *arrivals;          /* hosts (node indices) in order of arrival */
    double cpu_rate;        /* bytes/s the shared CPU can move (--cpu-cores); 0: unlimited */
    int next_arrival;
    double next_report, last_report_t, last_report_up, last_report_seed; /* -v */
};

static struct sim S;

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint32_t rng_next(void *arg)
{
    uint64_t *x = arg;
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return (uint32_t)(*x >> 16);
}

static double rng_unit(void)
{
    return (double)rng_next(&S.rng) / 4294967296.0;
}

static uint64_t sim_now_ms(void *arg)
{
    (void)arg;
    return 1000000 + (uint64_t)(S.t * 1000.0);
}

static void fake_digest(int task, uint32_t n, uint8_t out[DMF_SHA256_LEN])
{
    uint64_t x = 0x9e3779b97f4a7c15ull * (uint64_t)(task + 1) + n;
    for (int i = 0; i < DMF_SHA256_LEN; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out[i] = (uint8_t)x;
    }
}

/* ---- scheduler calls, timed ---- */

#define SCHED_CALL(expr)                                                                           \
    do {                                                                                           \
        double c0_ = cpu_now();                                                                    \
        expr;                                                                                      \
        S.sched_cpu += cpu_now() - c0_;                                                            \
    } while (0)

static int node_of_host(const char *host_id)
{
    if (strcmp(host_id, "seed") == 0)
        return SEED;
    if (host_id[0] == 'h')
        return 1 + atoi(host_id + 1);
    return -1;
}

static void push_int(int **v, int *n, int *cap, int x)
{
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 8;
        *v = dmf_xrealloc(*v, (size_t)*cap * sizeof(**v));
    }
    (*v)[(*n)++] = x;
}

static void remove_int(int *v, int *n, int x)
{
    for (int i = 0; i < *n; i++)
        if (v[i] == x) {
            v[i] = v[--*n];
            return;
        }
}

static void apply_meta(struct peer *p, const struct dmf_scheduler_meta *m)
{
    if (m == NULL)
        return;
    if (m->content_length >= 0 && m->piece_length)
        dmf_book_set_layout(&p->book, m->content_length, m->piece_length);
    for (size_t i = 0; i < m->ndigests; i++)
        dmf_book_set_digest(&p->book, m->digests[i].number, m->digests[i].sha256);
    p->dirty = true;
}

static void on_candidates(void *arg, void *stream, const struct dmf_scheduler_parent *parents,
                          size_t n, bool seed_triggered, const struct dmf_scheduler_meta *meta)
{
    (void)arg, (void)seed_triggered;
    struct peer *p = stream;
    S.n_candidates++;
    for (size_t i = 0; i < n; i++) {
        int nd = node_of_host(parents[i].host_id);
        if (nd < 0 || nd >= S.nnodes)
            continue;
        int q = S.nodes[nd].peer[p->task];
        bool known = false;
        for (int k = 0; k < p->npars; k++)
            known |= p->pars[k].peer == q;
        if (known || q == (int)(p - S.peers))
            continue;
        if (p->npars == p->cappars) {
            p->cappars = p->cappars ? p->cappars * 2 : 16;
            p->pars = dmf_xrealloc(p->pars, (size_t)p->cappars * sizeof(*p->pars));
        }
        p->pars[p->npars] = (struct par){.peer = q};
        dmf_bitmap_init(&p->pars[p->npars].deferred);
        p->npars++;
        struct peer *pp = &S.peers[q];
        push_int(&pp->children, &pp->nchildren, &pp->capchildren, (int)(p - S.peers));
        S.nodes[nd].watchers++;
    }
    apply_meta(p, meta);
}

static void on_back_to_source(void *arg, void *stream, const char *reason)
{
    (void)arg, (void)reason;
    struct peer *p = stream;
    S.n_back_to_source++;
    p->source = true;
    p->dirty = true;
}

static void on_task_meta(void *arg, void *stream, const struct dmf_scheduler_meta *meta)
{
    (void)arg;
    apply_meta(stream, meta);
}

static void on_trigger_seed(void *arg, const struct dmf_scheduler_seed_trigger *t)
{
    (void)arg;
    for (int k = 0; k < S.o.layers; k++)
        if (strcmp(t->task_id, S.task_id[k]) == 0 && S.ntriggers < (int)ARRAY_LEN(S.triggers)) {
            S.triggers[S.ntriggers].task = k;
            S.triggers[S.ntriggers].trigger_id = t->trigger_id;
            S.ntriggers++;
        }
}

static void on_peer_gone(void *arg, void *stream, const char *reason)
{
    (void)arg;
    struct peer *p = stream;
    S.n_gone++;
    if (!S.o.quiet)
        fprintf(stderr, "sim: peer %s: stream ended by the scheduler: %s\n", p->peer_id, reason);
}

static void on_task_failed(void *arg, void *stream, const char *reason, uint32_t status)
{
    (void)arg, (void)status;
    struct peer *p = stream;
    S.n_failed++;
    fprintf(stderr, "sim: peer %s: task failed: %s\n", p->peer_id, reason);
}

static const struct dmf_scheduler_sink sink = {
    .candidates = on_candidates,
    .back_to_source = on_back_to_source,
    .task_meta = on_task_meta,
    .trigger_seed = on_trigger_seed,
    .peer_gone = on_peer_gone,
    .task_failed = on_task_failed,
};

/* ---- hosts and peers as the daemon drives them ---- */

static void announce_node(int nd)
{
    struct node *h = &S.nodes[nd];
    struct dmf_scheduler_host_info hi = {
        .id = h->id,
        .hostname = h->id,
        .ip = h->ip,
        .piece_port = 65002,
        .rpc_port = 65004,
        .type = nd == SEED ? DMF_SCHED_HOST_SEED : DMF_SCHED_HOST_NORMAL,
        .idc = "",
        .location = "",
        .upload_capacity = (uint64_t)h->up,
        .upload_rate = (uint64_t)(h->up_bytes_window * 1000.0 / ANNOUNCE_MS),
        .active_uploads = (uint32_t)h->active_up,
    };
    char err[256];
    int rc;
    SCHED_CALL(rc = dmf_scheduler_announce_host(S.sched, &hi, err, sizeof(err)));
    if (rc != 0) {
        fprintf(stderr, "sim: announce %s: %s\n", h->id, err);
        exit(1);
    }
    h->up_bytes_window = 0;
    h->next_announce = S.t + ANNOUNCE_MS / 1000.0;
}

static void register_peer(struct peer *p, const char *peer_id)
{
    char url[128];
    snprintf(url, sizeof(url), "http://198.18.0.1/file-%d", p->task);
    snprintf(p->peer_id, sizeof(p->peer_id), "%s", peer_id);
    struct dmf_scheduler_register r = {
        .task_id = S.task_id[p->task],
        .peer_id = p->peer_id,
        .host_id = S.nodes[p->node].id,
        .url = url,
        .tag = "",
        .digest = "",
        .etag = "",
        .last_modified = "",
    };
    char err[256];
    int rc;
    p->registered = true;
    SCHED_CALL(rc = dmf_scheduler_register(S.sched, &r, p, &p->sp, err, sizeof(err)));
    if (rc != 0) {
        fprintf(stderr, "sim: register %s: %s\n", p->peer_id, err);
        exit(1);
    }
}

static void flush_progress(struct peer *p)
{
    if (p->npending == 0 || p->sp == NULL)
        return;
    struct dmf_scheduler_digest d[REPORT_BATCH];
    size_t nd = 0;
    if (p->pending_digests)
        for (int i = 0; i < p->npending; i++) {
            d[nd].number = p->pending[i];
            fake_digest(p->task, p->pending[i], d[nd].sha256);
            nd++;
        }
    struct dmf_scheduler_progress pr = {
        .pieces = p->pending,
        .npieces = (size_t)p->npending,
        .digests = d,
        .ndigests = nd,
        .content_length = p->book.content_length,
        .piece_length = p->book.piece_length,
    };
    char err[256];
    int rc;
    SCHED_CALL(rc = dmf_scheduler_progress(S.sched, p->sp, &pr, err, sizeof(err)));
    if (rc != 0)
        fprintf(stderr, "sim: progress %s: %s\n", p->peer_id, err);
    p->npending = 0;
}

static void report_piece(struct peer *p, uint32_t n)
{
    if (p->npending == REPORT_BATCH)
        flush_progress(p);
    if (p->npending == 0)
        p->pending_since = S.t;
    p->pending[p->npending++] = n;
    p->pending_digests = p->source;
    if (p->npending == REPORT_BATCH)
        flush_progress(p);
}

/* Seeds the scheduler asked for: the seed host registers the task and is sent to the source. */
static void run_triggers(void)
{
    while (S.ntriggers > 0) {
        int k = S.triggers[--S.ntriggers].task;
        S.trigger_id[k] = S.triggers[S.ntriggers].trigger_id;
        struct peer *sp = &S.peers[S.nodes[SEED].peer[k]];
        if (sp->registered)
            continue;
        char id[48];
        snprintf(id, sizeof(id), "seed-peer-%d", k);
        register_peer(sp, id);
    }
}

/* ---- flows ---- */

static int flow_new(void)
{
    if (S.freelist >= 0) {
        int f = S.freelist;
        S.freelist = S.flows[f].qnext;
        return f;
    }
    if (S.nflows == S.capflows) {
        S.capflows = S.capflows ? S.capflows * 2 : 1024;
        S.flows = dmf_xrealloc(S.flows, (size_t)S.capflows * sizeof(*S.flows));
    }
    return S.nflows++;
}

static void flow_free(int f)
{
    S.flows[f].state = FLOW_FREE;
    S.flows[f].qnext = S.freelist;
    S.freelist = f;
}

static uint32_t node_slots(const struct node *h, int nd)
{
    if (nd == ORIGIN)
        return UINT32_MAX;
    uint32_t by_children = (uint32_t)(h->watchers + CHILDREN_PER_SLOT - 1) / CHILDREN_PER_SLOT;
    return DMF_MIN(DMF_MAX((uint32_t)S.o.upload_slots, by_children), SLOTS_MAX);
}

static void activate(int f)
{
    S.flows[f].state = FLOW_ACTIVE;
    S.nodes[S.flows[f].src_node].active_up++;
    if (S.nactive == S.capactive) {
        S.capactive = S.capactive ? S.capactive * 2 : 1024;
        S.active = dmf_xrealloc(S.active, (size_t)S.capactive * sizeof(*S.active));
    }
    S.active[S.nactive++] = f;
}

/* The seed's rule (piece_server.c seed_refuses): a piece it served already is sent again
 * only once every piece it holds was served, and not within DMF_SEED_REPEAT_MS. */
static bool seed_refuses(struct peer *sp, uint32_t n)
{
    if (sp->served_at == NULL) {
        dmf_bitmap_init(&sp->served);
        sp->served_at = dmf_xcalloc(sp->book.total_pieces + 1u, sizeof(double));
    }
    if (dmf_bitmap_get(&sp->served, n) &&
        (sp->served.count < sp->book.have.count || S.t - sp->served_at[n] < S.o.seed_repeat_s))
        return true;
    sp->served_at[n] = S.t;
    dmf_bitmap_set(&sp->served, n);
    return false;
}

static void defer(struct peer *c, struct par *par, uint32_t n)
{
    dmf_bitmap_set(&par->deferred, n);
    if (par->undefer_at == 0) {
        par->undefer_at = S.t + 1.0;
        if (c->undefer_at == 0 || par->undefer_at < c->undefer_at)
            c->undefer_at = par->undefer_at;
    }
}

/* A 503 from the seed: the child defers the piece for that parent (1 s) and plans again. */
static void refuse(int f)
{
    struct flow *fl = &S.flows[f];
    struct peer *c = &S.peers[fl->dst_peer];
    struct par *par = &c->pars[fl->par];
    par->inflight--;
    remove_int(c->flights, &c->nflights, f);
    dmf_book_release(&c->book, fl->piece);
    defer(c, par, fl->piece);
    S.n_refused++;
    c->dirty = true;
    flow_free(f);
}

/* Flow f reaches its parent's piece server with a slot free: it is sent, or refused. */
static void start_upload(int f)
{
    struct flow *fl = &S.flows[f];
    if (fl->src_node == SEED) {
        struct peer *sp = &S.peers[S.nodes[SEED].peer[S.peers[fl->dst_peer].task]];
        if (seed_refuses(sp, fl->piece)) {
            refuse(f);
            return;
        }
    }
    activate(f);
}

static void undefer(struct peer *p)
{
    p->undefer_at = 0;
    for (int k = 0; k < p->npars; k++) {
        struct par *par = &p->pars[k];
        if (par->undefer_at == 0)
            continue;
        if (par->undefer_at <= S.t) {
            dmf_bitmap_free(&par->deferred);
            dmf_bitmap_init(&par->deferred);
            par->undefer_at = 0;
            p->dirty = true;
        } else if (p->undefer_at == 0 || par->undefer_at < p->undefer_at) {
            p->undefer_at = par->undefer_at;
        }
    }
}

/* A node's upload queue is a min-heap of waiting flows. The piece server starts the one
 * with the lowest permille - waited/AGING_MS; the waiting time grows alike for all, so the
 * order is the static key permille + t_req/AGING_MS (ms). */
static double qkey(int f)
{
    return (double)S.flows[f].permille + S.flows[f].t_req * 1000.0 / AGING_MS;
}

static void qset(struct node *h, int i, int f)
{
    h->q[i] = f;
    S.flows[f].hpos = i;
}

static void qsift(struct node *h, int i)
{
    int f = h->q[i];
    double k = qkey(f);
    while (i > 0 && qkey(h->q[(i - 1) / 2]) > k) {
        qset(h, i, h->q[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    for (;;) {
        int c = 2 * i + 1;
        if (c >= h->nq)
            break;
        if (c + 1 < h->nq && qkey(h->q[c + 1]) < qkey(h->q[c]))
            c++;
        if (qkey(h->q[c]) >= k)
            break;
        qset(h, i, h->q[c]);
        i = c;
    }
    qset(h, i, f);
}

static void qpush(struct node *h, int f)
{
    if (h->nq == h->capq) {
        h->capq = h->capq ? h->capq * 2 : 16;
        h->q = dmf_xrealloc(h->q, (size_t)h->capq * sizeof(*h->q));
    }
    qset(h, h->nq++, f);
    qsift(h, h->nq - 1);
}

static void qremove(struct node *h, int f)
{
    int i = S.flows[f].hpos, last = h->q[--h->nq];
    if (i < h->nq) {
        qset(h, i, last);
        qsift(h, i);
    }
}

/* Starts queued uploads of node nd while it has free slots (least progress first, aged). */
static void upload_next(int nd)
{
    struct node *h = &S.nodes[nd];
    while (h->nq > 0 && (uint32_t)h->active_up < node_slots(h, nd)) {
        int best = h->q[0];
        qremove(h, best);
        start_upload(best);
    }
}

static void request(struct peer *c, int par, int src_node, uint32_t n)
{
    int f = flow_new();
    struct flow *fl = &S.flows[f];
    uint32_t total = c->book.total_pieces;
    *fl = (struct flow){
        .state = FLOW_QUEUED,
        .src_node = src_node,
        .dst_peer = (int)(c - S.peers),
        .par = par,
        .piece = n,
        .size = dmf_book_piece_size(&c->book, n),
        .t_req = S.t,
        .permille = total ? (uint32_t)((uint64_t)c->book.have.count * 1000 / total) : 0,
    };
    fl->left = fl->size;
    if (par >= 0)
        c->pars[par].inflight++;
    push_int(&c->flights, &c->nflights, &c->capflights, f);
    struct node *h = &S.nodes[src_node];
    if ((uint32_t)h->active_up < node_slots(h, src_node)) {
        start_upload(f);
    } else {
        qpush(h, f);
    }
}

/* Ends flow f (done or cancelled): frees its parent's slot or queue place. */
static void flow_end(int f)
{
    struct flow *fl = &S.flows[f];
    struct peer *c = &S.peers[fl->dst_peer];
    struct node *h = &S.nodes[fl->src_node];
    if (fl->par >= 0)
        c->pars[fl->par].inflight--;
    remove_int(c->flights, &c->nflights, f);
    if (fl->state == FLOW_QUEUED) {
        qremove(h, f);
    } else {
        h->active_up--; /* S.active is compacted by the caller */
    }
    int src = fl->src_node;
    flow_free(f);
    upload_next(src);
}

static const struct dmf_rate *typical_rate(const struct peer *p)
{
    const struct dmf_rate *r[64];
    int n = 0;
    for (int k = 0; k < p->npars && n < 64; k++)
        if (p->pars[k].rate.samples)
            r[n++] = &p->pars[k].rate;
    if (n == 0)
        return NULL;
    for (int a = 1; a < n; a++)
        for (int b = a; b > 0 && r[b - 1]->bytes_per_ms > r[b]->bytes_per_ms; b--) {
            const struct dmf_rate *x = r[b];
            r[b] = r[b - 1];
            r[b - 1] = x;
        }
    return r[(n - 1) / 2];
}

/* The source (origin range requests, lowest pieces first). */
static void dispatch_source(struct peer *p)
{
    if (p->book.content_length < 0) {
        int64_t len = S.task_len[p->task];
        dmf_book_set_layout(&p->book, len, S.piece_len);
    }
    int inflight = 0;
    for (int i = 0; i < p->nflights; i++)
        inflight += S.flows[p->flights[i]].par < 0;
    for (uint32_t n = 0; n < p->book.total_pieces && inflight < SOURCE_INFLIGHT; n++)
        if (dmf_book_claim(&p->book, n)) {
            request(p, -1, ORIGIN, n);
            inflight++;
        }
}

/* A cheap look before dispatch.c: would any parent take one more request? */
static bool has_room(const struct peer *p, struct dmf_dispatch_parent *view)
{
    struct dmf_dispatch_in in = {.book = &p->book,
                                 .parents = view,
                                 .nparents = (size_t)p->npars,
                                 .parent_concurrency = S.o.parent_concurrency};
    struct dmf_dispatch_budget b = dmf_dispatch_budget(&in, p->book.total_pieces);
    for (int k = 0; k < p->npars; k++) {
        if (view[k].is_seed ? view[k].inflight < DMF_DISPATCH_SEED_SLOTS
                            : view[k].inflight < b.per_parent && b.in_flight < b.total)
            return true;
    }
    return false;
}

static void dispatch(struct peer *p)
{
    p->dirty = false;
    if (p->finished || !p->registered)
        return;
    if (p->source) {
        dispatch_source(p);
        return;
    }
    if (p->book.piece_length == 0 || p->npars == 0)
        return;
    struct dmf_dispatch_parent view[DMF_SCHED_CANDIDATES_MAX * 4];
    int np = DMF_MIN(p->npars, (int)ARRAY_LEN(view));
    for (int k = 0; k < np; k++) {
        struct peer *q = &S.peers[p->pars[k].peer];
        view[k] = (struct dmf_dispatch_parent){
            .has = &q->book.have,
            .deferred = &p->pars[k].deferred,
            .usable = true,
            .active = true,
            /* A parent late twice in a row is asked, like a seed, only for what no other
             * parent has (parent.c). */
            .is_seed = q->node == SEED || p->pars[k].strikes >= 2,
            .complete = dmf_book_all_held(&q->book),
            .inflight = p->pars[k].inflight,
        };
    }
    bool endgame = dmf_dispatch_in_endgame(&p->book);
    if (!endgame && !has_room(p, view))
        return;
    struct dmf_dispatch_in in = {
        .book = &p->book,
        .parents = view,
        .nparents = (size_t)np,
        .parent_concurrency = S.o.parent_concurrency,
        .random = rng_next,
        .random_arg = &S.rng,
    };
    struct dmf_dispatch_req reqs[ARRAY_LEN(view) * DMF_DISPATCH_SLOTS_MAX];
    size_t max = (size_t)np * DMF_DISPATCH_SLOTS_MAX;
    size_t nreq = endgame ? 0 : dmf_dispatch_plan(&in, reqs, max);
    for (size_t i = 0; i < nreq; i++) {
        int k = (int)reqs[i].parent;
        if (dmf_book_claim(&p->book, reqs[i].piece))
            request(p, k, S.peers[p->pars[k].peer].node, reqs[i].piece);
    }
    if (nreq == 0 && endgame) {
        struct dmf_dispatch_flight fl[ARRAY_LEN(reqs)];
        size_t nf = 0;
        for (int i = 0; i < p->nflights && nf < ARRAY_LEN(fl); i++) {
            struct flow *f = &S.flows[p->flights[i]];
            if (f->par < 0)
                continue;
            fl[nf++] =
                (struct dmf_dispatch_flight){.parent = (size_t)f->par,
                                             .piece = f->piece,
                                             .age_ms = (uint64_t)((S.t - f->t_req) * 1000.0)};
        }
        uint64_t min_age = dmf_rate_endgame_ms(typical_rate(p), p->book.piece_length);
        size_t ndup = dmf_dispatch_endgame(&in, fl, nf, min_age, reqs, max);
        for (size_t i = 0; i < ndup; i++) {
            int k = (int)reqs[i].parent;
            request(p, k, S.peers[p->pars[k].peer].node, reqs[i].piece);
            S.n_dups++;
        }
        p->dirty = nf > 0; /* the daemon looks again every late tick in the endgame */
    }
}

static void peer_finished(struct peer *p, double when)
{
    p->finished = true;
    /* Its /have streams close: its parents count one watcher less (upload slots). */
    for (int k = 0; k < p->npars; k++)
        S.nodes[S.peers[p->pars[k].peer].node].watchers--;
    flush_progress(p);
    char err[256];
    int rc;
    SCHED_CALL(rc = dmf_scheduler_finished(S.sched, p->sp, p->book.content_length,
                                           p->book.total_pieces, err, sizeof(err)));
    if (rc != 0)
        fprintf(stderr, "sim: finished %s: %s\n", p->peer_id, err);
    if (p->node == SEED) {
        SCHED_CALL(dmf_scheduler_seed_result(S.sched, S.task_id[p->task], "seed",
                                             S.trigger_id[p->task], true, NULL));
        return;
    }
    struct node *h = &S.nodes[p->node];
    if (--h->tasks_left == 0) {
        h->done = when;
        S.done_times[S.hosts_done++] = when - h->arrive;
    }
}

/* Flow f delivered its piece at time `when`. */
static void flow_done(int f, double when)
{
    struct flow fl = S.flows[f];
    struct peer *c = &S.peers[fl.dst_peer];
    if (fl.par >= 0) {
        dmf_rate_add(&c->pars[fl.par].rate, (uint64_t)fl.size,
                     (uint64_t)((when - fl.t_req) * 1000.0));
        c->pars[fl.par].strikes = 0;
    }
    flow_end(f);
    if (dmf_bitmap_get(&c->book.have, fl.piece))
        return; /* an endgame duplicate came second */
    /* The other copy of an endgame duplicate is cancelled. */
    for (int i = 0; i < c->nflights; i++) {
        int g = c->flights[i];
        if (S.flows[g].piece == fl.piece) {
            S.n_cancels++;
            flow_end(g);
            i = -1;
        }
    }
    uint8_t d[DMF_SHA256_LEN];
    fake_digest(c->task, fl.piece, d);
    dmf_book_release(&c->book, fl.piece);
    dmf_book_commit(&c->book, fl.piece, d);
    report_piece(c, fl.piece);
    c->dirty = true;
    for (int i = 0; i < c->nchildren; i++)
        S.peers[c->children[i]].dirty = true;
    if (dmf_book_all_held(&c->book))
        peer_finished(c, when);
}

/* ---- max-min fair shares (progressive filling) ---- */

struct heap_ent {
    double key;
    int link;
    int ver;
};

struct mm {
    double *cap;
    int *cnt, *ver, *start, *fill, *list;
    struct heap_ent *heap;
    int nheap, capheap;
    char *frozen;
    int caplist;
};

static struct mm M;

static void heap_push(double key, int link, int ver)
{
    if (M.nheap == M.capheap) {
        M.capheap = M.capheap ? M.capheap * 2 : 1024;
        M.heap = dmf_xrealloc(M.heap, (size_t)M.capheap * sizeof(*M.heap));
    }
    int i = M.nheap++;
    while (i > 0 && M.heap[(i - 1) / 2].key > key) {
        M.heap[i] = M.heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    M.heap[i] = (struct heap_ent){key, link, ver};
}

static struct heap_ent heap_pop(void)
{
    struct heap_ent top = M.heap[0], last = M.heap[--M.nheap];
    int i = 0;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= M.nheap)
            break;
        if (c + 1 < M.nheap && M.heap[c + 1].key < M.heap[c].key)
            c++;
        if (M.heap[c].key >= last.key)
            break;
        M.heap[i] = M.heap[c];
        i = c;
    }
    if (M.nheap > 0)
        M.heap[i] = last;
    return top;
}

static int up_link(int nd)
{
    return 2 * nd;
}

static int down_link(int nd)
{
    return 2 * nd + 1;
}

/* The links flow f crosses: its parent's uplink, its child's downlink and, with
 * --cpu-cores, the machine's CPU (link 2 * nnodes) that every byte of every transfer costs. */
static int flow_links(const struct flow *f, int out[3])
{
    out[0] = up_link(f->src_node);
    out[1] = down_link(S.peers[f->dst_peer].node);
    if (S.cpu_rate > 0) {
        out[2] = 2 * S.nnodes;
        return 3;
    }
    return 2;
}

static void maxmin(void)
{
    int nl = 2 * S.nnodes + 1;
    if (M.cap == NULL) {
        M.cap = dmf_xcalloc((size_t)nl, sizeof(*M.cap));
        M.cnt = dmf_xcalloc((size_t)nl, sizeof(*M.cnt));
        M.ver = dmf_xcalloc((size_t)nl, sizeof(*M.ver));
        M.start = dmf_xcalloc((size_t)nl + 1, sizeof(*M.start));
        M.fill = dmf_xcalloc((size_t)nl, sizeof(*M.fill));
    }
    if (M.caplist < 3 * S.nactive) {
        M.caplist = 3 * S.capactive;
        M.list = dmf_xrealloc(M.list, (size_t)M.caplist * sizeof(*M.list));
        M.frozen = dmf_xrealloc(M.frozen, (size_t)S.capactive);
    }
    memset(M.cnt, 0, (size_t)nl * sizeof(*M.cnt));
    int ls[3];
    for (int i = 0; i < S.nactive; i++)
        for (int k = 0, n = flow_links(&S.flows[S.active[i]], ls); k < n; k++)
            M.cnt[ls[k]]++;
    M.start[0] = 0;
    for (int l = 0; l < nl; l++) {
        M.start[l + 1] = M.start[l] + M.cnt[l];
        M.fill[l] = M.start[l];
        M.cap[l] = l == nl - 1 ? S.cpu_rate : l & 1 ? S.nodes[l / 2].down : S.nodes[l / 2].up;
    }
    for (int i = 0; i < S.nactive; i++)
        for (int k = 0, n = flow_links(&S.flows[S.active[i]], ls); k < n; k++)
            M.list[M.fill[ls[k]]++] = i;
    if (S.nactive > 0)
        memset(M.frozen, 0, (size_t)(unsigned)S.nactive);
    M.nheap = 0;
    for (int l = 0; l < nl; l++)
        if (M.cnt[l] > 0)
            heap_push(M.cap[l] / M.cnt[l], l, M.ver[l]);
    while (M.nheap > 0) {
        struct heap_ent e = heap_pop();
        int l = e.link;
        if (e.ver != M.ver[l] || M.cnt[l] == 0)
            continue;
        double share = DMF_MAX(M.cap[l], 0.0) / M.cnt[l];
        for (int j = M.start[l]; j < M.start[l + 1]; j++) {
            int i = M.list[j];
            if (M.frozen[i])
                continue;
            M.frozen[i] = 1;
            struct flow *f = &S.flows[S.active[i]];
            f->rate = share;
            for (int k = 0, n = flow_links(f, ls); k < n; k++) {
                int o = ls[k];
                if (o == l)
                    continue;
                M.cap[o] -= share;
                M.cnt[o]--;
                M.ver[o]++;
                if (M.cnt[o] > 0)
                    heap_push(DMF_MAX(M.cap[o], 0.0) / M.cnt[o], o, M.ver[o]);
            }
        }
        M.cnt[l] = 0;
        M.ver[l]++;
    }
}

/* ---- the run ---- */

/* parent.c's late tick: a request older than its deadline (6 pieces' time at the typical
 * rate of the peer's parents, 0.5..30 s, 5 s before any was measured) is cancelled, its
 * piece deferred for that parent, and the parent gets a strike. (A parent late 3 times in a
 * row and silent all that time would be dropped: no parent is silent here.) */
static void late_tick(struct peer *p)
{
    p->late_at = S.t + LATE_TICK_S;
    if (p->nflights == 0 || p->source)
        return;
    double deadline = dmf_rate_deadline_ms(typical_rate(p), p->book.piece_length) / 1000.0;
    int *late = dmf_xmalloc((size_t)p->nflights * sizeof(*late));
    int nlate = 0;
    for (int i = 0; i < p->nflights; i++) {
        const struct flow *f = &S.flows[p->flights[i]];
        if (f->par >= 0 && S.t - f->t_req >= deadline)
            late[nlate++] = p->flights[i];
    }
    for (int i = 0; i < nlate; i++) {
        struct flow *f = &S.flows[late[i]];
        struct par *par = &p->pars[f->par];
        uint32_t n = f->piece;
        bool dup = false;
        for (int j = 0; j < p->nflights; j++)
            dup |= p->flights[j] != late[i] && S.flows[p->flights[j]].piece == n;
        flow_end(late[i]);
        if (!dup)
            dmf_book_release(&p->book, n);
        defer(p, par, n);
        par->strikes++;
        S.n_late++;
        p->dirty = true;
    }
    free(late);
}

/* -v: what the last simulated second looked like. */
static void report_second(void)
{
    double up = 0, cap = 0;
    int sending = 0, queued = 0, idle = 0, running = 0;
    for (int nd = SEED + 1; nd < S.nnodes; nd++) {
        up += S.nodes[nd].up_bytes;
        cap += S.nodes[nd].up;
        sending += S.nodes[nd].active_up;
        queued += S.nodes[nd].nq;
    }
    for (int i = 0; i < S.npeers; i++) {
        const struct peer *p = &S.peers[i];
        if (p->node == SEED || !p->registered || p->finished)
            continue;
        running++;
        idle += p->nflights == 0;
    }
    double span = S.t - S.last_report_t;
    printf("t %6.1f s  done %6d  swarm uplink %3.0f%%  seed uplink %3.0f%%  uploads %6d sending "
           "%6d queued  downloading %6d (%d with nothing asked)\n",
           S.t, S.hosts_done, 100 * (up - S.last_report_up) / (cap * span),
           100 * (S.nodes[SEED].up_bytes - S.last_report_seed) / (S.nodes[SEED].up * span), sending,
           queued, running, idle);
    S.last_report_up = up;
    S.last_report_seed = S.nodes[SEED].up_bytes;
    S.last_report_t = S.t;
    S.next_report = S.t + 1.0;
}

static void step(double dt)
{
    /* Announces, arrivals, progress batches due. */
    for (int nd = SEED; nd < S.nnodes; nd++)
        if (S.t >= S.nodes[nd].next_announce)
            announce_node(nd);
    while (S.next_arrival < S.o.n && S.nodes[S.arrivals[S.next_arrival]].arrive <= S.t) {
        struct node *h = &S.nodes[S.arrivals[S.next_arrival++]];
        for (int k = 0; k < S.o.layers; k++) {
            char id[48];
            snprintf(id, sizeof(id), "%s-task%d", h->id, k);
            register_peer(&S.peers[h->peer[k]], id);
            run_triggers();
        }
    }
    for (int i = 0; i < S.npeers; i++) {
        struct peer *p = &S.peers[i];
        if (p->npending > 0 && S.t - p->pending_since >= REPORT_DELAY_MS / 1000.0)
            flush_progress(p);
        if (p->undefer_at != 0 && p->undefer_at <= S.t)
            undefer(p);
        if (S.t >= p->late_at)
            late_tick(p);
    }
    run_triggers();
    for (int i = 0; i < S.npeers; i++)
        if (S.peers[i].dirty)
            dispatch(&S.peers[i]);
    maxmin();
    /* Move the bytes; flows that finish inside the step end at their exact time. */
    int nact = S.nactive;
    int *done = dmf_xmalloc((size_t)(nact ? nact : 1) * sizeof(*done));
    double *when = dmf_xmalloc((size_t)(nact ? nact : 1) * sizeof(*when));
    int ndone = 0;
    for (int i = 0; i < nact; i++) {
        int f = S.active[i];
        struct flow *fl = &S.flows[f];
        double moved = fl->rate * dt;
        if (moved >= fl->left) {
            moved = fl->left;
            when[ndone] = S.t + (fl->rate > 0 ? fl->left / fl->rate : dt);
            done[ndone++] = f;
        }
        fl->left -= moved;
        if (fl->src_node == ORIGIN && S.peers[fl->dst_peer].node != SEED)
            S.origin_to_hosts += moved;
        if (fl->src_node != ORIGIN) {
            S.nodes[fl->src_node].up_bytes += moved;
            S.nodes[fl->src_node].up_bytes_window += moved;
        }
    }
    for (int i = 0; i < ndone; i++)
        if (S.flows[done[i]].state == FLOW_ACTIVE)
            flow_done(done[i], when[i]);
    free(done);
    free(when);
    /* Compact the active list: ended flows are FREE (no flow is created while bytes move, so
     * no index is reused before this); queued ones that started were appended. */
    int w = 0;
    for (int i = 0; i < S.nactive; i++)
        if (S.flows[S.active[i]].state == FLOW_ACTIVE)
            S.active[w++] = S.active[i];
    S.nactive = w;
    S.t += dt;
    if (S.o.verbose && S.t >= S.next_report)
        report_second();
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(const double *v, int n, double q)
{
    if (n == 0)
        return NAN;
    int i = (int)ceil(q * n) - 1;
    return v[DMF_MAX(0, DMF_MIN(n - 1, i))];
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: dmf-sim [options]\n"
            "  -n N                  hosts (default 16)\n"
            "  --size-mib F          file size in MiB (default 64)\n"
            "  --layers L            the file as L tasks of F/L each, fetched at once (default 1)\n"
            "  --origin-up R         seed/origin uplink, Mbit/s of link rate (default 100)\n"
            "  --host-up R           host uplink, Mbit/s (default 50)\n"
            "  --host-down R         host downlink, Mbit/s (default 100)\n"
            "  --origin-fetch R      origin -> seed, Mbit/s (default 10000: the same host)\n"
            "  --goodput G           payload per link byte (default 1448/1514, as bench/cluster)\n"
            "  --dt-ms T             time step (default: a 16th of a piece at the host uplink,\n"
            "                        within 0.2..20 ms)\n"
            "  --arrival-s S         hosts register uniformly over [0, S] (default 0: at once)\n"
            "  --piece-kib K         piece length (default: the daemon's, ~1024 pieces a task)\n"
            "  --parent-concurrency N  (daemon default 2)\n"
            "  --upload-slots N      (daemon default 2)\n"
            "  --candidate-limit N   (scheduler default 16)\n"
            "  --dag                 the scheduler's DAG parent graph instead of the mesh\n"
            "  --seed S              random seed (default 1)\n"
            "  --max-sim-s T         give up after T simulated seconds (default 3600)\n"
            "  --cpu-cores C --cpu-ns-per-byte X\n"
            "                        one machine's CPU shared by the whole swarm (as in\n"
            "                        bench/cluster): every byte moved costs X ns of one of\n"
            "                        C cores (default: unlimited, each host its own CPU)\n"
            "  --seed-repeat-ms T    a seed sends a piece again only T ms after it last did\n"
            "                        (and once every piece went out once; default 3000, the\n"
            "                        piece server's DMF_SEED_REPEAT_MS)\n"
            "  -q                    no per-event warnings\n"
            "  -v                    a line per simulated second: hosts done, uplink use,\n"
            "                        uploads sending and queued, peers with nothing to ask\n");
}

static int parse(int argc, char **argv, struct opts *o)
{
    *o = (struct opts){.n = 16,
                       .size_mib = 64,
                       .layers = 1,
                       .origin_up = 100,
                       .host_up = 50,
                       .host_down = 100,
                       .origin_fetch = 10000,
                       .goodput = GOODPUT_DEFAULT,
                       .parent_concurrency = 2,
                       .upload_slots = 2,
                       .candidate_limit = DMF_SCHED_CANDIDATES_DEFAULT,
                       .seed = 1,
                       .seed_repeat_s = SEED_REPEAT_S,
                       .max_sim_s = 3600};
    enum {
        O_SIZE = 256,
        O_LAYERS,
        O_OUP,
        O_HUP,
        O_HDOWN,
        O_OFETCH,
        O_GOODPUT,
        O_DT,
        O_ARR,
        O_PIECE,
        O_PC,
        O_US,
        O_CL,
        O_DAG,
        O_SEED,
        O_MAX,
        O_CORES,
        O_NSB,
        O_REPEAT
    };
    static const struct option lo[] = {
        {"size-mib", 1, 0, O_SIZE},
        {"layers", 1, 0, O_LAYERS},
        {"origin-up", 1, 0, O_OUP},
        {"host-up", 1, 0, O_HUP},
        {"host-down", 1, 0, O_HDOWN},
        {"origin-fetch", 1, 0, O_OFETCH},
        {"goodput", 1, 0, O_GOODPUT},
        {"dt-ms", 1, 0, O_DT},
        {"arrival-s", 1, 0, O_ARR},
        {"piece-kib", 1, 0, O_PIECE},
        {"parent-concurrency", 1, 0, O_PC},
        {"upload-slots", 1, 0, O_US},
        {"candidate-limit", 1, 0, O_CL},
        {"dag", 0, 0, O_DAG},
        {"seed", 1, 0, O_SEED},
        {"max-sim-s", 1, 0, O_MAX},
        {"cpu-cores", 1, 0, O_CORES},
        {"cpu-ns-per-byte", 1, 0, O_NSB},
        {"seed-repeat-ms", 1, 0, O_REPEAT},
        {"help", 0, 0, 'h'},
        {0, 0, 0, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "n:qvh", lo, NULL)) != -1) {
        switch (c) {
        case 'n':
            o->n = atoi(optarg);
            break;
        case 'q':
            o->quiet = true;
            break;
        case O_SIZE:
            o->size_mib = atof(optarg);
            break;
        case O_LAYERS:
            o->layers = atoi(optarg);
            break;
        case O_OUP:
            o->origin_up = atof(optarg);
            break;
        case O_HUP:
            o->host_up = atof(optarg);
            break;
        case O_HDOWN:
            o->host_down = atof(optarg);
            break;
        case O_OFETCH:
            o->origin_fetch = atof(optarg);
            break;
        case O_GOODPUT:
            o->goodput = atof(optarg);
            break;
        case O_DT:
            o->dt_ms = atof(optarg);
            break;
        case O_ARR:
            o->arrival_s = atof(optarg);
            break;
        case O_PIECE:
            o->piece_kib = (uint32_t)atoi(optarg);
            break;
        case O_PC:
            o->parent_concurrency = atoi(optarg);
            break;
        case O_US:
            o->upload_slots = atoi(optarg);
            break;
        case O_CL:
            o->candidate_limit = atoi(optarg);
            break;
        case O_DAG:
            o->dag = true;
            break;
        case O_SEED:
            o->seed = strtoull(optarg, NULL, 10);
            break;
        case O_MAX:
            o->max_sim_s = atof(optarg);
            break;
        case 'v':
            o->verbose = true;
            break;
        case O_REPEAT:
            o->seed_repeat_s = atof(optarg) / 1000.0;
            break;
        case O_CORES:
            o->cpu_cores = atof(optarg);
            break;
        case O_NSB:
            o->cpu_ns_per_byte = atof(optarg);
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return -EINVAL;
        }
    }
    const char *bad = NULL;
    if (optind < argc)
        bad = "unexpected argument";
    else if (o->n < 1 || o->n > 1000000)
        bad = "-n must be in 1..1000000";
    else if (o->layers < 1 || o->layers > LAYERS_MAX)
        bad = "--layers must be in 1..16";
    else if (!(o->size_mib > 0) || !(o->origin_up > 0) || !(o->host_up > 0) ||
             !(o->host_down > 0) || !(o->origin_fetch > 0))
        bad = "sizes and rates must be positive";
    else if (!(o->goodput > 0 && o->goodput <= 1))
        bad = "--goodput must be in (0, 1]";
    else if (o->cpu_cores < 0 || o->cpu_ns_per_byte < 0 ||
             (o->cpu_cores > 0) != (o->cpu_ns_per_byte > 0))
        bad = "--cpu-cores and --cpu-ns-per-byte go together, both positive";
    else if (o->dt_ms < 0 || o->arrival_s < 0 || !(o->max_sim_s > 0) || o->seed_repeat_s < 0)
        bad = "--dt-ms, --arrival-s, --max-sim-s and --seed-repeat-ms must not be negative";
    else if (o->piece_kib && ((uint64_t)o->piece_kib << 10 < DMF_PIECE_LENGTH_MIN ||
                              (uint64_t)o->piece_kib << 10 > DMF_PIECE_LENGTH_MAX))
        bad = "--piece-kib must be in 256..16384";
    else if (o->parent_concurrency < 1 || o->parent_concurrency > 16 || o->upload_slots < 1 ||
             o->upload_slots > 256 || o->candidate_limit < 1 ||
             o->candidate_limit > DMF_SCHED_CANDIDATES_MAX)
        bad = "--parent-concurrency 1..16, --upload-slots 1..256, --candidate-limit 1..32";
    if (bad) {
        fprintf(stderr, "dmf-sim: %s\n", bad);
        return -EINVAL;
    }
    return 0;
}

static int cmp_arrival(const void *a, const void *b)
{
    double x = S.nodes[*(const int *)a].arrive, y = S.nodes[*(const int *)b].arrive;
    return x < y ? -1 : x > y;
}

static double mbit(double r)
{
    return r * 1e6 / 8.0 * S.o.goodput;
}

int main(int argc, char **argv)
{
    if (parse(argc, argv, &S.o) != 0)
        return 2;
    dmf_log_set_level("error");
    if (S.o.verbose)
        setvbuf(stdout, NULL, _IOLBF, 0); /* -v: each line as it comes, also into a file */
    double cpu0 = cpu_now();
    struct opts *o = &S.o;
    S.rng = o->seed * 0x9e3779b97f4a7c15ull + 1;
    S.freelist = -1;
    S.file_bytes = o->size_mib * 1048576.0;
    int64_t per = (int64_t)(S.file_bytes / o->layers);
    for (int k = 0; k < o->layers; k++) {
        S.task_len[k] = k == o->layers - 1 ? (int64_t)S.file_bytes - per * (o->layers - 1) : per;
        snprintf(S.task_id[k], sizeof(S.task_id[k]), "%064x", 0x5e11u + (unsigned)k);
    }
    S.piece_len = o->piece_kib ? o->piece_kib << 10 : dmf_piece_length_for(S.task_len[0]);

    struct dmf_scheduler_config cfg = {
        .candidate_limit = (uint32_t)o->candidate_limit,
        .mesh = !o->dag,
        .now = sim_now_ms,
    };
    S.sched = dmf_scheduler_new(&cfg, &sink, NULL);
    if (o->cpu_cores > 0)
        S.cpu_rate = o->cpu_cores * 1e9 / o->cpu_ns_per_byte;

    S.nnodes = o->n + 2;
    S.nodes = dmf_xcalloc((size_t)S.nnodes, sizeof(*S.nodes));
    S.npeers = (o->n + 1) * o->layers;
    S.peers = dmf_xcalloc((size_t)S.npeers, sizeof(*S.peers));
    S.done_times = dmf_xcalloc((size_t)o->n, sizeof(*S.done_times));
    double fetch = mbit(o->origin_fetch);
    S.nodes[ORIGIN] = (struct node){.up = fetch, .down = fetch};
    snprintf(S.nodes[ORIGIN].id, sizeof(S.nodes[ORIGIN].id), "origin");
    for (int nd = SEED; nd < S.nnodes; nd++) {
        struct node *h = &S.nodes[nd];
        *h = (struct node){.tasks_left = o->layers};
        if (nd == SEED) {
            h->up = mbit(o->origin_up);
            h->down = fetch;
            snprintf(h->id, sizeof(h->id), "seed");
        } else {
            h->up = mbit(o->host_up);
            h->down = mbit(o->host_down);
            snprintf(h->id, sizeof(h->id), "h%d", nd - 1);
            h->arrive = o->arrival_s > 0 ? rng_unit() * o->arrival_s : 0;
        }
        snprintf(h->ip, sizeof(h->ip), "10.%d.%d.%d", (nd >> 16) & 255, (nd >> 8) & 255, nd & 255);
        /* The daemons are up (and announced) before the downloads start, staggered. */
        h->next_announce = 0;
        for (int k = 0; k < o->layers; k++) {
            int pi = (nd - 1) * o->layers + k;
            h->peer[k] = pi;
            S.peers[pi].node = nd;
            S.peers[pi].task = k;
            dmf_book_init(&S.peers[pi].book);
        }
    }
    for (int nd = SEED; nd < S.nnodes; nd++) {
        announce_node(nd);
        S.nodes[nd].next_announce = (ANNOUNCE_MS / 1000.0) * (nd % 97) / 97.0;
    }
    /* Hosts register in order of arrival; all at once (bench/cluster launches every get
     * together) in a shuffled order, so that host 1 is not always first. */
    S.arrivals = dmf_xcalloc((size_t)o->n, sizeof(*S.arrivals));
    for (int i = 0; i < o->n; i++)
        S.arrivals[i] = SEED + 1 + i;
    for (int i = o->n - 1; i > 0; i--) {
        int j = (int)(rng_next(&S.rng) % (uint32_t)(i + 1)), x = S.arrivals[i];
        S.arrivals[i] = S.arrivals[j];
        S.arrivals[j] = x;
    }
    if (o->arrival_s > 0)
        qsort(S.arrivals, (size_t)o->n, sizeof(*S.arrivals), cmp_arrival);

    double host_piece_s = S.piece_len / DMF_MIN(mbit(o->host_up), mbit(o->host_down));
    double dt = o->dt_ms > 0 ? o->dt_ms / 1000.0 : host_piece_s / 16.0;
    if (o->dt_ms == 0)
        dt = DMF_MIN(DMF_MAX(dt, 0.0002), 0.020);
    while (S.hosts_done < o->n && S.t < o->max_sim_s)
        step(dt);

    double cpu = cpu_now() - cpu0;
    qsort(S.done_times, (size_t)S.hosts_done, sizeof(double), cmp_double);
    double F = S.file_bytes, N = o->n;
    double us = mbit(o->origin_up), u = mbit(o->host_up), d = mbit(o->host_down);
    double t1 = F / us, t2 = F / d, t3 = N * F / (us + N * u);
    double tstar = DMF_MAX(t1, DMF_MAX(t2, t3));
    const char *which = tstar == t3   ? "swarm upload N*F/(u_s+N*u)"
                        : tstar == t2 ? "host download F/d"
                                      : "origin upload F/u_s";
    double egress = (S.nodes[SEED].up_bytes + S.origin_to_hosts) / F;
    int ndone = S.hosts_done;
    double p50 = pct(S.done_times, ndone, 0.5), p90 = pct(S.done_times, ndone, 0.9),
           p99 = pct(S.done_times, ndone, 0.99), p999 = pct(S.done_times, ndone, 0.999),
           last = ndone ? S.done_times[ndone - 1] : NAN, first = ndone ? S.done_times[0] : NAN;
    printf("damselfly simulator: N=%d, file %.0f MiB in %d task(s) of %u KiB pieces, origin up "
           "%g Mbit/s, hosts up %g / down %g Mbit/s, %s, candidate limit %d, dt %.2f ms, seed "
           "%llu\n",
           o->n, o->size_mib, o->layers, S.piece_len >> 10, o->origin_up, o->host_up, o->host_down,
           o->dag ? "dag" : "mesh", o->candidate_limit, dt * 1000.0, (unsigned long long)o->seed);
    printf("T* = %.2f s (%s; rates as goodput, %.4f of the link rates)\n", tstar, which,
           o->goodput);
    if (S.cpu_rate > 0)
        printf("shared CPU: %g cores at %g ns per byte moved = %.1f MB/s for the whole swarm\n",
               o->cpu_cores, o->cpu_ns_per_byte, S.cpu_rate / 1e6);
    printf("hosts done %d/%d: first %.2f s, p50 %.2f, p90 %.2f, p99 %.2f, p99.9 %.2f, last "
           "%.2f s\n",
           ndone, o->n, first, p50, p90, p99, p999, last);
    printf("x T*:  first %.3f, p50 %.3f, p90 %.3f, p99 %.3f, p99.9 %.3f, last %.3f\n",
           first / tstar, p50 / tstar, p90 / tstar, p99 / tstar, p999 / tstar, last / tstar);
    printf("origin egress %.2f copies; endgame duplicates %ld (cancelled %ld); late requests "
           "taken back %ld; seed 503s %ld; back to source %ld; candidate sets %ld\n",
           egress, S.n_dups, S.n_cancels, S.n_late, S.n_refused, S.n_back_to_source,
           S.n_candidates);
    printf("simulator CPU %.2f s (scheduler core %.2f s) for %.2f simulated s\n", cpu, S.sched_cpu,
           S.t);
    printf("sim: n=%d done=%d tstar=%.4f first=%.4f p50=%.4f p90=%.4f p99=%.4f p999=%.4f "
           "last=%.4f egress=%.4f cpu=%.3f sched_cpu=%.3f failed=%ld gone=%ld\n",
           o->n, ndone, tstar, first, p50, p90, p99, p999, last, egress, cpu, S.sched_cpu,
           S.n_failed, S.n_gone);
    dmf_scheduler_free(S.sched);
    return ndone == o->n ? 0 : 1;
}
