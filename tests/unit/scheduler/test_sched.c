/* The scheduler's decisions with an injected clock and a sink that records what would go
 * on each stream. Streams are named by string literals (the peer's id), so a test reads
 * "what did stream pc receive last". */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/pieces.h"
#include "scheduler/provenance.h"
#include "scheduler/sched.h"

#define T1  "1111111111111111111111111111111111111111111111111111111111111111"
#define T2  "2222222222222222222222222222222222222222222222222222222222222222"
#define MIB (1ll << 20)

enum { EV_CANDIDATES, EV_BTS, EV_META, EV_TRIGGER, EV_GONE, EV_HOST_GONE, EV_FAILED, EV_CHANGED };

struct ev {
    int kind;
    const char *stream;
    char parents[8][64];
    size_t nparents;
    bool seed_triggered;
    bool parent_is_seed[8];
    char reason[256];
    int64_t cl;
    uint32_t pl, total;
    size_t ndigests;
    uint32_t first_digest;
    uint64_t trigger_id;
    char host_id[64];
    char url[128];
    size_t nheaders;
    char content_type[64];
};

static struct ev evs[512];
static size_t nevs;
static uint64_t clock_ms;

static uint64_t test_now(void *arg)
{
    return clock_ms;
}

static struct ev *ev_new(int kind, void *stream)
{
    assert_true(nevs < sizeof(evs) / sizeof(evs[0]));
    struct ev *e = &evs[nevs++];
    memset(e, 0, sizeof(*e));
    e->kind = kind;
    e->stream = stream;
    return e;
}

static void ev_meta(struct ev *e, const struct dmf_scheduler_meta *m)
{
    e->cl = m->content_length;
    e->pl = m->piece_length;
    e->total = m->total_pieces;
    e->ndigests = m->ndigests;
    e->first_digest = m->ndigests ? m->digests[0].number : UINT32_MAX;
    snprintf(e->content_type, sizeof(e->content_type), "%s",
             m->content_type ? m->content_type : "");
}

static void on_candidates(void *arg, void *stream, const struct dmf_scheduler_parent *parents,
                          size_t n, bool seed_triggered, const struct dmf_scheduler_meta *meta)
{
    struct ev *e = ev_new(EV_CANDIDATES, stream);
    assert_true(n > 0 && n <= 8);
    for (size_t i = 0; i < n; i++) {
        snprintf(e->parents[i], sizeof(e->parents[i]), "%s", parents[i].peer_id);
        e->parent_is_seed[i] = parents[i].is_seed;
        assert_string_equal(parents[i].ip, "10.0.0.1");
        assert_int_equal(parents[i].piece_port, 65002);
    }
    e->nparents = n;
    e->seed_triggered = seed_triggered;
    ev_meta(e, meta);
}

static void on_back_to_source(void *arg, void *stream, const char *reason)
{
    struct ev *e = ev_new(EV_BTS, stream);
    snprintf(e->reason, sizeof(e->reason), "%s", reason);
}

static void on_task_meta(void *arg, void *stream, const struct dmf_scheduler_meta *meta)
{
    ev_meta(ev_new(EV_META, stream), meta);
}

static void on_trigger_seed(void *arg, const struct dmf_scheduler_seed_trigger *t)
{
    struct ev *e = ev_new(EV_TRIGGER, NULL);
    e->trigger_id = t->trigger_id;
    snprintf(e->host_id, sizeof(e->host_id), "%s", t->host_id);
    snprintf(e->url, sizeof(e->url), "%s", t->url);
    e->nheaders = t->nheaders;
    assert_string_equal(t->task_id, T1);
    assert_int_equal(t->rpc_port, 65000);
}

static void on_peer_gone(void *arg, void *stream, const char *reason)
{
    struct ev *e = ev_new(EV_GONE, stream);
    snprintf(e->reason, sizeof(e->reason), "%s", reason);
}

static void on_task_failed(void *arg, void *stream, const char *reason, uint32_t origin_status)
{
    struct ev *e = ev_new(EV_FAILED, stream);
    snprintf(e->reason, sizeof(e->reason), "%s", reason);
    e->total = origin_status;
}

static void on_task_changed(void *arg, void *stream, const char *reason)
{
    struct ev *e = ev_new(EV_CHANGED, stream);
    snprintf(e->reason, sizeof(e->reason), "%s", reason);
}

static void on_host_gone(void *arg, const char *host_id)
{
    struct ev *e = ev_new(EV_HOST_GONE, NULL);
    snprintf(e->host_id, sizeof(e->host_id), "%s", host_id);
}

static bool triggers_allowed = true; /* what the sink's may_trigger answers */
static int sized_calls;              /* trigger_sized calls, and the latest's arguments */
static int64_t sized_bytes;
static char sized_for[64];
static char last_trigger_requester[64];

static bool on_may_trigger(void *arg, const char *requester, const char *seed)
{
    snprintf(last_trigger_requester, sizeof(last_trigger_requester), "%s", requester);
    return triggers_allowed;
}

static void on_trigger_sized(void *arg, const char *requester, int64_t bytes)
{
    sized_calls++;
    sized_bytes = bytes;
    snprintf(sized_for, sizeof(sized_for), "%s", requester);
}

static const struct dmf_scheduler_sink sink = {
    .may_trigger = on_may_trigger,
    .trigger_sized = on_trigger_sized,
    .candidates = on_candidates,
    .back_to_source = on_back_to_source,
    .task_meta = on_task_meta,
    .trigger_seed = on_trigger_seed,
    .peer_gone = on_peer_gone,
    .host_gone = on_host_gone,
    .task_failed = on_task_failed,
    .task_changed = on_task_changed,
};

static dmf_scheduler_t *new_sched_cfg(struct dmf_scheduler_config cfg)
{
    nevs = 0;
    clock_ms = 1000000;
    triggers_allowed = true;
    sized_calls = 0;
    cfg.now = test_now;
    cfg.check_indexes = true; /* every pick is checked against the full scan */
    return dmf_scheduler_new(&cfg, &sink, NULL);
}

static dmf_scheduler_t *new_sched(uint32_t limit)
{
    return new_sched_cfg((struct dmf_scheduler_config){.candidate_limit = limit});
}

static void host_full(dmf_scheduler_t *s, const char *id, int type, const char *idc,
                      const char *loc, uint64_t cap, uint64_t rate, uint32_t active)
{
    char err[256];
    struct dmf_scheduler_host_info h = {
        .id = id,
        .hostname = id,
        .ip = "10.0.0.1",
        .piece_port = 65002,
        .rpc_port = 65000,
        .type = type,
        .idc = idc,
        .location = loc,
        .upload_capacity = cap,
        .upload_rate = rate,
        .active_uploads = active,
    };
    int rc = dmf_scheduler_announce_host(s, &h, err, sizeof(err));
    if (rc != 0)
        fail_msg("announce %s: %s", id, err);
}

static void host(dmf_scheduler_t *s, const char *id)
{
    host_full(s, id, DMF_SCHED_HOST_NORMAL, "", "", 100, 0, 0);
}

/* A scheduler (4 candidates) that knows hosts a, b and c. */
static dmf_scheduler_t *new_sched_abc(void)
{
    dmf_scheduler_t *s = new_sched(4);
    host(s, "a");
    host(s, "b");
    host(s, "c");
    return s;
}

static const struct dmf_scheduler_header headers[] = {
    {"Authorization", "Bearer secret"},
    {"X-Trace", "1"},
};

static struct dmf_scheduler_register reg_req(const char *task, const char *host_id,
                                             const char *peer_id)
{
    return (struct dmf_scheduler_register){
        .task_id = task,
        .peer_id = peer_id,
        .host_id = host_id,
        .url = "https://example.com/blob",
        .headers = headers,
        .nheaders = 2,
    };
}

/* Registers peer `peer_id` (also its stream's name) of task on host_id. */
static dmf_scheduler_peer_t *reg(dmf_scheduler_t *s, const char *task, const char *host_id,
                                 const char *peer_id)
{
    char err[256];
    dmf_scheduler_peer_t *p = NULL;
    struct dmf_scheduler_register r = reg_req(task, host_id, peer_id);
    int rc = dmf_scheduler_register(s, &r, (void *)peer_id, &p, err, sizeof(err));
    if (rc != 0)
        fail_msg("register %s: %s", peer_id, err);
    assert_non_null(p);
    return p;
}

/* Reports the task's layout (10 MiB in pieces of 1 MiB) and pieces [from, to). */
static void progress(dmf_scheduler_t *s, dmf_scheduler_peer_t *p, uint32_t from, uint32_t to)
{
    char err[256];
    uint32_t pieces[64];
    for (uint32_t i = from; i < to; i++)
        pieces[i - from] = i;
    struct dmf_scheduler_progress pr = {
        .pieces = pieces,
        .npieces = to - from,
        .content_length = 10 * MIB,
        .piece_length = 1 * MIB,
    };
    int rc = dmf_scheduler_progress(s, p, &pr, err, sizeof(err));
    if (rc != 0)
        fail_msg("progress: %s", err);
}

static void finish(dmf_scheduler_t *s, dmf_scheduler_peer_t *p)
{
    char err[256];
    progress(s, p, 0, 0);
    assert_int_equal(dmf_scheduler_finished(s, p, 10 * MIB, 10, err, sizeof(err)), 0);
}

/* A peer that holds the whole task. */
static dmf_scheduler_peer_t *holder(dmf_scheduler_t *s, const char *host_id, const char *peer_id)
{
    dmf_scheduler_peer_t *p = reg(s, T1, host_id, peer_id);
    finish(s, p);
    return p;
}

static const struct ev *last_for(const char *stream)
{
    for (size_t i = nevs; i-- > 0;)
        if (evs[i].stream && strcmp(evs[i].stream, stream) == 0)
            return &evs[i];
    return NULL;
}

static const struct ev *last_kind(int kind)
{
    for (size_t i = nevs; i-- > 0;)
        if (evs[i].kind == kind)
            return &evs[i];
    return NULL;
}

static size_t count_kind(int kind)
{
    size_t n = 0;
    for (size_t i = 0; i < nevs; i++)
        n += evs[i].kind == kind;
    return n;
}

static bool has_parent(const struct ev *e, const char *peer_id)
{
    for (size_t i = 0; i < e->nparents; i++)
        if (strcmp(e->parents[i], peer_id) == 0)
            return true;
    return false;
}

/* A parent failure report that must be accepted. */
static void report(dmf_scheduler_t *s, dmf_scheduler_peer_t *p, const char *parent,
                   const char *parent_host, int reason)
{
    char err[256];
    assert_int_equal(
        dmf_scheduler_parent_failure(s, p, parent, parent_host, reason, err, sizeof(err)), 0);
}

static void unreachable(dmf_scheduler_t *s, dmf_scheduler_peer_t *p, const char *parent,
                        const char *parent_host)
{
    report(s, p, parent, parent_host, DMF_PARENT_UNREACHABLE);
}

static void assert_candidates(const char *stream, size_t n, const char *const *want)
{
    const struct ev *e = last_for(stream);
    assert_non_null(e);
    assert_int_equal(e->kind, EV_CANDIDATES);
    assert_int_equal(e->nparents, n);
    for (size_t i = 0; i < n; i++)
        if (want[i])
            assert_string_equal(e->parents[i], want[i]);
}

static uint32_t stat_state(dmf_scheduler_t *s, const char *task, const char *peer_id,
                           uint32_t *finished)
{
    struct dmf_scheduler_task_stat st;
    char err[256];
    uint32_t state = UINT32_MAX;
    if (dmf_scheduler_stat_task(s, task, &st, err, sizeof(err)) != 0)
        return state;
    for (size_t i = 0; i < st.npeers; i++) {
        if (strcmp(st.peers[i].peer_id, peer_id) == 0) {
            state = st.peers[i].state;
            if (finished)
                *finished = st.peers[i].finished_pieces;
        }
    }
    dmf_scheduler_task_stat_free(&st);
    return state;
}

/* ------------------------------------------------------------ ranking */

static void test_rank_by_free_upload_capacity(void **state)
{
    dmf_scheduler_t *s = new_sched(4);
    host_full(s, "a", DMF_SCHED_HOST_NORMAL, "", "", 100, 90, 0); /* busy */
    host_full(s, "b", DMF_SCHED_HOST_NORMAL, "", "", 100, 10, 0); /* mostly free */
    host_full(s, "c", DMF_SCHED_HOST_NORMAL, "", "", 100, 10, 3); /* free, 3 uploads */
    host(s, "x");
    holder(s, "a", "pa");
    holder(s, "b", "pb");
    holder(s, "c", "pc");
    reg(s, T1, "x", "px");
    assert_candidates("px", 3, (const char *[]){"pb", "pc", "pa"});
    dmf_scheduler_free(s);
}

static void test_rank_by_progress(void **state)
{
    dmf_scheduler_t *s = new_sched(4);
    host(s, "a");
    host(s, "b");
    host(s, "c");
    host(s, "d");
    dmf_scheduler_peer_t *pa = reg(s, T1, "a", "pa");
    assert_int_equal(last_for("pa")->kind, EV_BTS);
    progress(s, pa, 0, 8);
    dmf_scheduler_peer_t *pb = reg(s, T1, "b", "pb");
    assert_candidates("pb", 1, (const char *[]){"pa"});
    progress(s, pb, 0, 3);
    reg(s, T1, "c", "pc");
    assert_candidates("pc", 2, (const char *[]){"pa", "pb"});
    /* pb overtakes pa: 10 of 10 pieces against 8. pc (no piece yet) comes last. */
    progress(s, pb, 3, 10);
    reg(s, T1, "d", "pd");
    assert_candidates("pd", 3, (const char *[]){"pb", "pa", "pc"});
    dmf_scheduler_free(s);
}

static void test_rank_by_locality(void **state)
{
    dmf_scheduler_t *s = new_sched(4);
    host_full(s, "a", DMF_SCHED_HOST_NORMAL, "bj", "cn|bj|r1", 100, 0, 0);
    host_full(s, "b", DMF_SCHED_HOST_NORMAL, "hz", "cn|hz|r2", 100, 0, 0);
    host_full(s, "d", DMF_SCHED_HOST_NORMAL, "", "cn|hz|r1", 100, 0, 0);
    host_full(s, "e", DMF_SCHED_HOST_NORMAL, "sh", "us", 100, 0, 0);
    host_full(s, "x", DMF_SCHED_HOST_NORMAL, "hz", "cn|hz|r1", 100, 0, 0);
    holder(s, "e", "pe");
    holder(s, "a", "pa");
    holder(s, "d", "pd");
    holder(s, "b", "pb");
    reg(s, T1, "x", "px");
    /* Same idc and 2 of 3 location levels; no idc but the whole location; one level. */
    assert_candidates("px", 4, (const char *[]){"pb", "pd", "pa", "pe"});
    dmf_scheduler_free(s);
}

static void test_rank_by_health(void **state)
{
    dmf_scheduler_t *s = new_sched(4);
    host(s, "a");
    host(s, "b");
    host(s, "x");
    host(s, "y");
    host(s, "z");
    holder(s, "a", "pa");
    holder(s, "b", "pb");
    dmf_scheduler_peer_t *px = reg(s, T1, "x", "px");
    assert_candidates("px", 2, (const char *[]){"pa", "pb"}); /* equal: by peer id */
    report(s, px, "pa", "a", DMF_PARENT_UNREACHABLE);
    reg(s, T1, "y", "py");
    const struct ev *e = last_for("py");
    assert_int_equal(e->kind, EV_CANDIDATES);
    assert_string_equal(e->parents[0], "pb");
    assert_string_equal(e->parents[1], "pa");
    /* The report is forgotten after the window. */
    clock_ms += 61000;
    reg(s, T1, "z", "pz");
    e = last_for("pz");
    assert_string_equal(e->parents[0], "pa");
    assert_string_equal(e->parents[1], "pb");
    dmf_scheduler_free(s);
}

static void test_candidate_limit(void **state)
{
    static const char *const hosts[] = {"h1", "h2", "h3", "h4", "h5", "h6"};
    static const char *const peers[] = {"p1", "p2", "p3", "p4", "p5", "p6"};
    for (uint32_t limit = 2; limit <= 4; limit += 2) {
        dmf_scheduler_t *s = new_sched(limit);
        for (int i = 0; i < 6; i++) {
            host(s, hosts[i]);
            holder(s, hosts[i], peers[i]);
        }
        host(s, "x");
        reg(s, T1, "x", "px");
        const struct ev *e = last_for("px");
        assert_int_equal(e->kind, EV_CANDIDATES);
        assert_int_equal(e->nparents, limit);
        dmf_scheduler_free(s);
    }
}

/* ------------------------------------------------------------ graph */

static void test_no_cycles(void **state)
{
    dmf_scheduler_t *s = new_sched(4);
    host(s, "h1");
    host(s, "h2");
    host(s, "h3");
    reg(s, T1, "h1", "p1"); /* nobody has it, no seed: origin */
    assert_int_equal(last_for("p1")->kind, EV_BTS);
    dmf_scheduler_peer_t *p2 = reg(s, T1, "h2", "p2");
    assert_candidates("p2", 1, (const char *[]){"p1"});
    reg(s, T1, "h3", "p3");
    assert_candidates("p3", 2, (const char *[]){NULL, NULL});
    assert_true(has_parent(last_for("p3"), "p2"));
    /* p2 loses p1. p3 is running and is the only other peer, but p2 is p3's parent:
     * offering p3 to p2 would make a cycle, so p2 goes to the origin instead. */
    report(s, p2, "p1", "h1", DMF_PARENT_UNREACHABLE);
    const struct ev *e = last_for("p2");
    assert_int_equal(e->kind, EV_BTS);
    assert_int_equal(dmf_scheduler_peer_state(p2), DMF_PEER_BACK_TO_SOURCE);
    dmf_scheduler_free(s);
}

/* A chain p3 -> p2 -> p1 -> p0: when p1 loses p0, neither its child p2 nor its grandchild
 * p3 may be offered to it. */
static void test_no_cycles_through_grandchildren(void **state)
{
    dmf_scheduler_t *s = new_sched(1);
    host(s, "h0");
    host(s, "h1");
    host(s, "h2");
    host(s, "h3");
    holder(s, "h0", "p0");
    dmf_scheduler_peer_t *p1 = reg(s, T1, "h1", "p1");
    assert_candidates("p1", 1, (const char *[]){"p0"});
    dmf_scheduler_peer_t *p2 = reg(s, T1, "h2", "p2");
    unreachable(s, p2, "p0", "h0");
    assert_candidates("p2", 1, (const char *[]){"p1"});
    dmf_scheduler_peer_t *p3 = reg(s, T1, "h3", "p3");
    unreachable(s, p3, "p0", "h0");
    assert_candidates("p3", 1, (const char *[]){"p1"});
    unreachable(s, p3, "p1", "h1");
    assert_candidates("p3", 1, (const char *[]){"p2"});

    unreachable(s, p1, "p0", "h0");
    const struct ev *e = last_for("p1");
    assert_int_equal(e->kind, EV_BTS);
    dmf_scheduler_free(s);
}

/* Mesh: a peer that registers later is offered to earlier ones, and two peers may be each
 * other's parents (each piece still travels one way), where the DAG rule forbids it. */
static void test_mesh_offers_new_peers_to_earlier_ones(void **state)
{
    dmf_scheduler_t *s =
        new_sched_cfg((struct dmf_scheduler_config){.candidate_limit = 4, .mesh = true});
    host(s, "h0");
    host(s, "h1");
    host(s, "h2");
    holder(s, "h0", "p0");
    dmf_scheduler_peer_t *p1 = reg(s, T1, "h1", "p1");
    assert_candidates("p1", 1, (const char *[]){"p0"});
    reg(s, T1, "h2", "p2");
    /* p2 gets both; p1, which registered first, is now offered p2. */
    assert_candidates("p2", 2, (const char *[]){NULL, NULL});
    assert_true(has_parent(last_for("p2"), "p1"));
    assert_candidates("p1", 1, (const char *[]){"p2"});
    /* p1 loses p0: p2 (its child too) stays its parent; no back-to-source. */
    report(s, p1, "p0", "h0", DMF_PARENT_UNREACHABLE);
    assert_int_not_equal(last_for("p1")->kind, EV_BTS);
    dmf_scheduler_free(s);
}

/* Mesh: a peer that finishes is offered to peers still downloading, beyond the limit. */
static void test_mesh_offers_a_finished_peer_to_running_ones(void **state)
{
    char err[256];
    dmf_scheduler_t *s =
        new_sched_cfg((struct dmf_scheduler_config){.candidate_limit = 1, .mesh = true});
    host(s, "h0");
    host(s, "h1");
    host(s, "h2");
    holder(s, "h0", "p0");
    reg(s, T1, "h1", "p1");
    assert_candidates("p1", 1, (const char *[]){"p0"});
    dmf_scheduler_peer_t *p2 = reg(s, T1, "h2", "p2");
    assert_candidates("p2", 1, (const char *[]){"p0"});
    assert_int_equal(dmf_scheduler_finished(s, p2, 10 * MIB, 10, err, sizeof(err)), 0);
    assert_candidates("p1", 1, (const char *[]){"p2"});
    dmf_scheduler_free(s);
}

/* The same sequence under the DAG rule: p1 is never offered its child p2. */
static void test_dag_never_offers_a_descendant(void **state)
{
    dmf_scheduler_t *s = new_sched(4);
    host(s, "h0");
    host(s, "h1");
    host(s, "h2");
    holder(s, "h0", "p0");
    reg(s, T1, "h1", "p1");
    assert_candidates("p1", 1, (const char *[]){"p0"});
    reg(s, T1, "h2", "p2");
    assert_true(has_parent(last_for("p2"), "p1"));
    assert_candidates("p1", 1, (const char *[]){"p0"}); /* nothing new was pushed to p1 */
    dmf_scheduler_free(s);
}

/* ------------------------------------------------------------ seeds and the origin */

static void test_back_to_source_without_seed(void **state)
{
    dmf_scheduler_t *s = new_sched(4);
    host(s, "a");
    dmf_scheduler_peer_t *pa = reg(s, T1, "a", "pa");
    const struct ev *e = last_for("pa");
    assert_int_equal(e->kind, EV_BTS);
    assert_string_equal(e->reason, "no seed peer and no peer holds the task");
    assert_int_equal(dmf_scheduler_peer_state(pa), DMF_PEER_BACK_TO_SOURCE);
    assert_int_equal(count_kind(EV_TRIGGER), 0);
    dmf_scheduler_free(s);
}

static void test_seed_triggered_when_nobody_has_the_task(void **state)
{
    dmf_scheduler_t *s = new_sched(4);
    host_full(s, "seed", DMF_SCHED_HOST_SEED, "", "", 100, 0, 0);
    host(s, "a");
    host(s, "b");
    reg(s, T1, "a", "pa");
    const struct ev *e = last_for("pa");
    assert_int_equal(e->kind, EV_CANDIDATES);
    assert_int_equal(e->nparents, 1);
    assert_true(e->seed_triggered);
    assert_true(e->parent_is_seed[0]);
    const struct ev *t = last_kind(EV_TRIGGER);
    assert_non_null(t);
    assert_string_equal(t->host_id, "seed");
    assert_string_equal(t->url, "https://example.com/blob");
    assert_int_equal(t->nheaders, 2);
    assert_int_equal(stat_state(s, T1, e->parents[0], NULL), DMF_PEER_PENDING);

    /* The next peer gets the seed and pa, and no second trigger. */
    reg(s, T1, "b", "pb");
    e = last_for("pb");
    assert_int_equal(e->kind, EV_CANDIDATES);
    assert_int_equal(e->nparents, 2);
    assert_true(e->seed_triggered);
    assert_int_equal(count_kind(EV_TRIGGER), 1);

    /* The seed's own stream takes the placeholder over and goes to the origin. */
    reg(s, T1, "seed", "seed-peer");
    e = last_for("seed-peer");
    assert_int_equal(e->kind, EV_BTS);
    assert_string_equal(e->reason, "seed peer fetches from the origin");
    assert_int_equal(stat_state(s, T1, "seed-peer", NULL), DMF_PEER_BACK_TO_SOURCE);
    struct dmf_scheduler_counts c;
    dmf_scheduler_counts(s, &c);
    assert_int_equal(c.peers, 3);
    /* The trigger's call ending well changes nothing for a seed with its own stream. */
    dmf_scheduler_seed_result(s, T1, "seed", t->trigger_id, true, NULL);
    assert_int_equal(stat_state(s, T1, "seed-peer", NULL), DMF_PEER_BACK_TO_SOURCE);
    dmf_scheduler_free(s);
}

static void test_seed_trigger_failure_reschedules_children(void **state)
{
    dmf_scheduler_t *s = new_sched(4);
    host_full(s, "seed", DMF_SCHED_HOST_SEED, "", "", 100, 0, 0);
    host(s, "a");
    host(s, "b");
    reg(s, T1, "a", "pa");
    const struct ev *t = last_kind(EV_TRIGGER);
    assert_non_null(t);
    uint64_t id = t->trigger_id;
    /* A stale result (another trigger id) is ignored. */
    dmf_scheduler_seed_result(s, T1, "seed", id + 7, false, "boom");
    assert_int_equal(last_for("pa")->kind, EV_CANDIDATES);
    dmf_scheduler_seed_result(s, T1, "seed", id, false, "connection refused");
    const struct ev *e = last_for("pa");
    assert_int_equal(e->kind, EV_BTS);
    assert_int_equal(stat_state(s, T1, "seed-seed", NULL), UINT32_MAX);
    /* The task asks no seed again: the next peer gets pa (fetching from the origin). */
    reg(s, T1, "b", "pb");
    assert_candidates("pb", 1, (const char *[]){"pa"});
    assert_int_equal(count_kind(EV_TRIGGER), 1);
    dmf_scheduler_free(s);
}

static void test_seed_success_without_stream_marks_placeholder_succeeded(void **state)
{
    dmf_scheduler_t *s = new_sched(4);
    host_full(s, "seed", DMF_SCHED_HOST_SEED, "", "", 100, 0, 0);
    host(s, "a");
    reg(s, T1, "a", "pa");
    const struct ev *t = last_kind(EV_TRIGGER);
    const char *ph = last_for("pa")->parents[0];
    dmf_scheduler_seed_result(s, T1, "seed", t->trigger_id, true, NULL);
    assert_int_equal(stat_state(s, T1, ph, NULL), DMF_PEER_SUCCEEDED);
    dmf_scheduler_free(s);
}

/* A seed that holds the task is offered only to peers that would have fewer than two
 * normal parents: its upload goes to those that have nobody else. */
static void test_seed_is_parent_of_last_resort(void **state)
{
    dmf_scheduler_t *s = new_sched(4);
    host_full(s, "seed", DMF_SCHED_HOST_SEED, "", "", 1000, 0, 0);
    host(s, "a");
    host(s, "b");
    host(s, "c");
    host(s, "x");
    host(s, "y");
    holder(s, "seed", "ps");
    holder(s, "a", "pa");
    reg(s, T1, "x", "px");
    assert_candidates("px", 2, (const char *[]){"pa", "ps"});
    assert_true(last_for("px")->parent_is_seed[1]);
    holder(s, "b", "pb");
    holder(s, "c", "pc");
    reg(s, T1, "y", "py");
    const struct ev *e = last_for("py");
    assert_int_equal(e->kind, EV_CANDIDATES);
    assert_int_equal(e->nparents, 4); /* pa, pb, pc and px (running) */
    assert_false(has_parent(e, "ps"));
    dmf_scheduler_free(s);
}

/* ------------------------------------------------------------ failures and departures */

static void test_bad_parent_excluded_after_threshold(void **state)
{
    dmf_scheduler_t *s = new_sched(4);
    host(s, "a");
    host(s, "b");
    host(s, "c1");
    host(s, "c2");
    host(s, "c3");
    holder(s, "a", "pa");
    holder(s, "b", "pb");
    dmf_scheduler_peer_t *c1 = reg(s, T1, "c1", "q1");
    assert_true(has_parent(last_for("q1"), "pa"));
    report(s, c1, "pa", "a", DMF_PARENT_BAD_PIECE);
    /* The same reporter again does not count twice. */
    report(s, c1, "pa", "a", DMF_PARENT_BAD_PIECE);
    dmf_scheduler_peer_t *c2 = reg(s, T1, "c2", "q2");
    assert_true(has_parent(last_for("q2"), "pa")); /* one report: still offered */
    report(s, c2, "pa", "a", DMF_PARENT_BAD_PIECE);
    reg(s, T1, "c3", "q3");
    const struct ev *e = last_for("q3");
    assert_int_equal(e->kind, EV_CANDIDATES);
    assert_false(has_parent(e, "pa"));
    assert_true(has_parent(e, "pb"));
    dmf_scheduler_free(s);
}

/* One reporter cannot exclude a host alone by flushing its list of reported hosts with
 * made-up ones, or by registering again; reports wear off. */
static void test_bad_reports_one_per_reporting_host_and_forgotten(void **state)
{
    dmf_scheduler_t *s = new_sched(4);
    host(s, "a");
    host(s, "b");
    host(s, "c1");
    host(s, "c3");
    holder(s, "a", "pa");
    holder(s, "b", "pb");
    dmf_scheduler_peer_t *c1 = reg(s, T1, "c1", "q1");
    report(s, c1, "pa", "a", DMF_PARENT_BAD_PIECE);
    char fake[32];
    for (int i = 0; i < 40; i++) {
        snprintf(fake, sizeof(fake), "fake%d", i);
        report(s, c1, "", fake, DMF_PARENT_BAD_PIECE);
    }
    report(s, c1, "pa", "a", DMF_PARENT_BAD_PIECE);
    c1 = reg(s, T1, "c1", "q1b"); /* the same host, registered again */
    report(s, c1, "pa", "a", DMF_PARENT_BAD_PIECE);
    reg(s, T1, "c3", "q3");
    assert_true(has_parent(last_for("q3"), "pa")); /* still one reporting host */
    /* A second host makes two: excluded; ten minutes later it is forgiven. */
    dmf_scheduler_peer_t *c3 = reg(s, T1, "c3", "q3b");
    report(s, c3, "pa", "a", DMF_PARENT_BAD_PIECE);
    host(s, "c4");
    reg(s, T1, "c4", "q4");
    assert_false(has_parent(last_for("q4"), "pa"));
    clock_ms += DMF_SCHED_BAD_FORGET_MS;
    host(s, "a"); /* its next announce */
    host(s, "c5");
    reg(s, T1, "c5", "q5");
    assert_true(has_parent(last_for("q5"), "pa"));
    dmf_scheduler_free(s);
}

static void test_parent_failure_pushes_new_candidates_without_that_parent(void **state)
{
    char err[256];
    dmf_scheduler_t *s = new_sched(2);
    host(s, "a");
    host(s, "b");
    host(s, "c");
    host(s, "x");
    holder(s, "a", "pa");
    holder(s, "b", "pb");
    dmf_scheduler_peer_t *px = reg(s, T1, "x", "px");
    assert_candidates("px", 2, (const char *[]){"pa", "pb"});
    holder(s, "c", "pc");
    size_t before = nevs;
    report(s, px, "pa", "a", DMF_PARENT_UNREACHABLE);
    assert_true(nevs > before);
    /* Pushed candidates add to the parents in use: pc replaces pa, pb stays in use. */
    assert_candidates("px", 1, (const char *[]){"pc"});
    /* An unknown reason is refused. */
    assert_int_equal(dmf_scheduler_parent_failure(s, px, "pb", "b", 9, err, sizeof(err)), -EINVAL);
    dmf_scheduler_free(s);
}

static void test_host_expiry_removes_peers_and_reschedules_children(void **state)
{
    dmf_scheduler_t *s = new_sched(4);
    host(s, "a");
    host(s, "c");
    holder(s, "a", "pa");
    reg(s, T1, "c", "pc");
    assert_candidates("pc", 1, (const char *[]){"pa"});
    clock_ms += 9000;
    host(s, "c"); /* c keeps announcing, a does not */
    assert_int_equal(dmf_scheduler_expire_hosts(s), 0);
    clock_ms += 2000;
    assert_int_equal(dmf_scheduler_expire_hosts(s), 1);
    const struct ev *g = last_for("pa");
    assert_int_equal(g->kind, EV_GONE);
    assert_non_null(strstr(g->reason, "expired"));
    assert_string_equal(last_kind(EV_HOST_GONE)->host_id, "a");
    const struct ev *e = last_for("pc");
    assert_int_equal(e->kind, EV_BTS);
    struct dmf_scheduler_counts c;
    dmf_scheduler_counts(s, &c);
    assert_int_equal(c.hosts, 1);
    assert_int_equal(c.peers, 1);
    assert_int_equal(stat_state(s, T1, "pa", NULL), UINT32_MAX);
    /* A register from the expired host is refused until it announces again. */
    char err[256];
    dmf_scheduler_peer_t *p;
    struct dmf_scheduler_register r = reg_req(T1, "a", "pa2");
    assert_int_equal(dmf_scheduler_register(s, &r, "pa2", &p, err, sizeof(err)), -ESRCH);
    clock_ms += 20000;
    assert_int_equal(dmf_scheduler_expire_hosts(s), 1);
    dmf_scheduler_counts(s, &c);
    assert_int_equal(c.hosts, 0);
    assert_int_equal(c.tasks, 0);
    assert_int_equal(c.peers, 0);
    dmf_scheduler_free(s);
}

static void test_succeeded_peer_stays_candidate_after_stream_closes(void **state)
{
    dmf_scheduler_t *s = new_sched(4);
    host(s, "a");
    host(s, "b");
    host(s, "c");
    dmf_scheduler_peer_t *pa = holder(s, "a", "pa");
    dmf_scheduler_stream_closed(s, pa);
    assert_int_equal(stat_state(s, T1, "pa", NULL), DMF_PEER_SUCCEEDED);
    dmf_scheduler_peer_t *pb = reg(s, T1, "b", "pb");
    assert_candidates("pb", 1, (const char *[]){"pa"});
    /* A peer that did not finish is gone with its stream. */
    dmf_scheduler_stream_closed(s, pb);
    assert_int_equal(stat_state(s, T1, "pb", NULL), UINT32_MAX);
    reg(s, T1, "c", "pc");
    assert_candidates("pc", 1, (const char *[]){"pa"});
    dmf_scheduler_free(s);
}

static void test_finished_peer_expires_after_peer_ttl(void **state)
{
    char err[256];
    dmf_scheduler_t *s = new_sched_cfg((struct dmf_scheduler_config){
        .candidate_limit = 4, .peer_ttl_ms = 5000, .peer_ttl_set = true});
    host(s, "a");
    host(s, "b");
    dmf_scheduler_peer_t *pa = holder(s, "a", "pa");
    dmf_scheduler_peer_t *pb = holder(s, "b", "pb");
    dmf_scheduler_stream_closed(s, pa);
    clock_ms += 3000;
    dmf_scheduler_stream_closed(s, pb);
    /* An attached finished peer never expires; a detached one 5 s after its stream. */
    clock_ms += 1999;
    assert_int_equal(dmf_scheduler_expire_peers(s), 0);
    clock_ms += 1;
    assert_int_equal(dmf_scheduler_expire_peers(s), 1);
    assert_int_equal(stat_state(s, T1, "pa", NULL), UINT32_MAX);
    assert_int_equal(stat_state(s, T1, "pb", NULL), DMF_PEER_SUCCEEDED);
    /* A new stream for pb takes it off the idle list. */
    pb = reg(s, T1, "b", "pb");
    clock_ms += 60000;
    assert_int_equal(dmf_scheduler_expire_peers(s), 0);
    dmf_scheduler_stream_closed(s, pb); /* not finished on this stream: removed */
    struct dmf_scheduler_task_stat st;
    assert_int_equal(dmf_scheduler_stat_task(s, T1, &st, err, sizeof(err)), -ENOENT);
    struct dmf_scheduler_counts c;
    dmf_scheduler_counts(s, &c);
    assert_int_equal(c.tasks, 0);
    assert_int_equal(c.peers, 0);
    dmf_scheduler_free(s);
}

static void test_tasks_per_host_limit(void **state)
{
    char err[256];
    dmf_scheduler_t *s =
        new_sched_cfg((struct dmf_scheduler_config){.candidate_limit = 4, .max_peers_per_host = 2});
    host(s, "a");
    host(s, "b");
    reg(s, T1, "a", "pa1");
    reg(s, T2, "a", "pa2");
    dmf_scheduler_peer_t *p = NULL;
    struct dmf_scheduler_register r =
        reg_req("3333333333333333333333333333333333333333333333333333333333333333", "a", "pa3");
    assert_int_equal(dmf_scheduler_register(s, &r, "pa3", &p, err, sizeof(err)), -ENOSPC);
    assert_non_null(strstr(err, "host a has too many tasks (2)"));
    /* Registering a task it has again, and another host, are fine. */
    reg(s, T1, "a", "pa1");
    reg(s, T1, "b", "pb");
    dmf_scheduler_free(s);
}

static void test_spent_trigger_budget_goes_to_the_origin(void **state)
{
    dmf_scheduler_t *s = new_sched(4);
    host_full(s, "seed", DMF_SCHED_HOST_SEED, "", "", 100, 0, 0);
    host(s, "a");
    triggers_allowed = false;
    reg(s, T1, "a", "pa");
    const struct ev *e = last_for("pa");
    assert_int_equal(e->kind, EV_BTS);
    assert_non_null(strstr(e->reason, "budget of seed triggers"));
    assert_int_equal(count_kind(EV_TRIGGER), 0);
    dmf_scheduler_free(s);
}

/* Every admitted trigger is settled once: with the task's size when the seed reports it, or
 * -1 when the seed's peer goes first (the admission's count of unsized triggers). */
static void test_trigger_is_charged_its_size_once(void **state)
{
    dmf_scheduler_t *s = new_sched(4);
    host_full(s, "seed", DMF_SCHED_HOST_SEED, "", "", 100, 0, 0);
    host(s, "a");
    reg(s, T1, "a", "pa");
    assert_int_equal(count_kind(EV_TRIGGER), 1);
    assert_int_equal(sized_calls, 0);
    dmf_scheduler_peer_t *sp = reg(s, T1, "seed", "seed-peer");
    progress(s, sp, 0, 2);
    assert_int_equal(sized_calls, 1);
    assert_int_equal(sized_bytes, 10 * MIB);
    assert_string_equal(sized_for, "a");
    progress(s, sp, 2, 4);
    finish(s, sp);
    assert_int_equal(sized_calls, 1);
    dmf_scheduler_free(s);

    s = new_sched(4);
    host_full(s, "seed", DMF_SCHED_HOST_SEED, "", "", 100, 0, 0);
    host(s, "a");
    reg(s, T1, "a", "pa");
    const struct ev *t = last_kind(EV_TRIGGER);
    dmf_scheduler_seed_result(s, T1, "seed", t->trigger_id, false, "connection refused");
    assert_int_equal(sized_calls, 1);
    assert_int_equal(sized_bytes, -1);
    dmf_scheduler_free(s);
}

static void test_failed_parent_reschedules_children(void **state)
{
    dmf_scheduler_t *s = new_sched_abc();
    dmf_scheduler_peer_t *pa = reg(s, T1, "a", "pa"); /* origin */
    reg(s, T1, "b", "pb");
    assert_candidates("pb", 1, (const char *[]){"pa"});
    holder(s, "c", "pc");
    dmf_scheduler_failed(s, pa, "origin said 500");
    assert_int_equal(stat_state(s, T1, "pa", NULL), UINT32_MAX);
    assert_candidates("pb", 1, (const char *[]){"pc"});
    dmf_scheduler_free(s);
}

/* A fetch that failed for good is told to the task's other peers and, within the
 * negative-cache time, to new registrants, who trigger nothing; afterwards it is tried
 * again. */
static void test_failed_for_good_is_remembered(void **state)
{
    dmf_scheduler_t *s = new_sched_abc();
    dmf_scheduler_peer_t *pa = reg(s, T1, "a", "pa"); /* origin */
    reg(s, T1, "b", "pb");
    dmf_scheduler_failed_for_good(s, pa, 404, "the origin answered HTTP 404");
    const struct ev *e = last_for("pb");
    assert_int_equal(e->kind, EV_FAILED);
    assert_int_equal(e->total, 404);
    assert_non_null(strstr(e->reason, "HTTP 404"));
    size_t bts = count_kind(EV_BTS), triggers = count_kind(EV_TRIGGER);
    clock_ms += 9000;
    reg(s, T1, "c", "pc");
    assert_int_equal(last_for("pc")->kind, EV_FAILED);
    assert_int_equal(count_kind(EV_BTS), bts);
    assert_int_equal(count_kind(EV_TRIGGER), triggers);
    clock_ms += 2000; /* past the 10 s default */
    reg(s, T1, "c", "pc2");
    assert_int_equal(last_for("pc2")->kind, EV_CANDIDATES);
    dmf_scheduler_free(s);
}

static dmf_scheduler_peer_t *reg_with(dmf_scheduler_t *s, struct dmf_scheduler_register r,
                                      const char *stream);

/* Reports validators (and pieces [0, 2) with digests of byte b) as a fetcher would. */
static void progress_version(dmf_scheduler_t *s, dmf_scheduler_peer_t *p, const char *etag,
                             uint8_t b)
{
    char err[256];
    uint32_t pieces[2] = {0, 1};
    struct dmf_scheduler_digest d[2] = {{.number = 0}, {.number = 1}};
    memset(d[0].sha256, b, sizeof(d[0].sha256));
    memset(d[1].sha256, b, sizeof(d[1].sha256));
    struct dmf_scheduler_progress pr = {
        .pieces = pieces,
        .npieces = 2,
        .digests = d,
        .ndigests = 2,
        .content_length = 10 * MIB,
        .piece_length = 1 * MIB,
        .etag = etag,
    };
    if (dmf_scheduler_progress(s, p, &pr, err, sizeof(err)) != 0)
        fail_msg("progress: %s", err);
}

/* A fetcher whose origin changed the content (same length) fails with content_changed: the
 * other peers of the old version go (the running one is told to drop what it has), and the
 * next registrant gets none of the old digests or validators. */
static void test_content_changed_forgets_the_version(void **state)
{
    dmf_scheduler_t *s = new_sched(4);
    host(s, "a");
    host(s, "b");
    host(s, "c");
    host(s, "d");
    dmf_scheduler_peer_t *pa = reg(s, T1, "a", "pa"); /* sent to the origin */
    progress_version(s, pa, "\"v1\"", 0x11);
    reg(s, T1, "b", "pb");
    assert_int_equal(last_for("pb")->ndigests, 2);
    dmf_scheduler_peer_t *pd = holder(s, "d", "pd"); /* an old-version holder */
    (void)pd;
    dmf_scheduler_content_changed(s, pa, "the content changed at the origin");
    assert_int_equal(count_kind(EV_CHANGED), 1);
    assert_non_null(last_for("pb"));
    assert_true(last_for("pb")->kind == EV_GONE || last_for("pb")->kind == EV_CHANGED);
    assert_int_equal(stat_state(s, T1, "pd", NULL), UINT32_MAX); /* the task is gone */
    reg(s, T1, "c", "pc");
    const struct ev *e = last_for("pc");
    assert_int_not_equal(e->kind, EV_CANDIDATES); /* nobody holds the new version */
    assert_int_equal(e->ndigests, 0);
    dmf_scheduler_free(s);
}

/* A registrant whose conditional request found another ETag than the task's: the old
 * version is forgotten before it registers; the same ETag changes nothing. */
static void test_register_with_new_validators_forgets_the_old(void **state)
{
    dmf_scheduler_t *s = new_sched(4);
    host(s, "a");
    host(s, "b");
    host(s, "c");
    dmf_scheduler_peer_t *pa = reg(s, T1, "a", "pa");
    progress_version(s, pa, "\"v1\"", 0x11);
    finish(s, pa);
    struct dmf_scheduler_register r = reg_req(T1, "b", "pb");
    r.etag = "\"v1\"";
    reg_with(s, r, "pb");
    assert_int_equal(last_for("pb")->kind, EV_CANDIDATES);
    assert_true(has_parent(last_for("pb"), "pa"));
    r = reg_req(T1, "c", "pc");
    r.etag = "\"v2\"";
    dmf_scheduler_peer_t *pc = reg_with(s, r, "pc");
    assert_int_equal(stat_state(s, T1, "pa", NULL), UINT32_MAX);
    assert_int_not_equal(last_for("pc")->kind, EV_CANDIDATES);
    assert_int_equal(last_for("pc")->ndigests, 0);
    assert_int_equal(count_kind(EV_CHANGED), 1); /* pb was still downloading */
    /* pc's claim is provisional until pc, sent to the origin, reports what it fetches:
     * then the new task is pinned to v2 and a holder of v1 cannot fill it. */
    progress_version(s, pc, "\"v2\"", 0x22);
    dmf_scheduler_peer_t *pd = reg(s, T1, "a", "pa2");
    char err[256];
    uint32_t p0 = 0;
    struct dmf_scheduler_progress old = {.pieces = &p0,
                                         .npieces = 1,
                                         .content_length = 10 * MIB,
                                         .piece_length = 1 * MIB,
                                         .etag = "\"v1\""};
    assert_int_equal(dmf_scheduler_progress(s, pd, &old, err, sizeof(err)), -ESTALE);
    assert_non_null(strstr(err, "another version"));
    dmf_scheduler_free(s);
}

/* Registers with the rejoin/stall flags of r's kind set by the caller; must be accepted. */
static dmf_scheduler_peer_t *reg_with(dmf_scheduler_t *s, struct dmf_scheduler_register r,
                                      const char *stream)
{
    char err[256];
    dmf_scheduler_peer_t *p = NULL;
    if (dmf_scheduler_register(s, &r, (void *)stream, &p, err, sizeof(err)) != 0)
        fail_msg("register %s: %s", stream, err);
    return p;
}

/* A peer whose parents bring nothing registers again as stalled: with nobody at the origin
 * it goes there; a second one, with the first at the origin, gets parents instead. */
static void test_stalled_register_goes_to_the_origin_once(void **state)
{
    dmf_scheduler_t *s = new_sched_abc();
    dmf_scheduler_peer_t *pa = reg(s, T1, "a", "pa");
    reg(s, T1, "b", "pb");
    reg(s, T1, "c", "pc");
    progress(s, pa, 0, 3);
    struct dmf_scheduler_register r = reg_req(T1, "b", "pb");
    r.stalled = true;
    dmf_scheduler_peer_t *p = reg_with(s, r, "pb");
    /* pa is at the origin (the first registrant was sent there): pb gets parents. */
    assert_int_equal(last_for("pb")->kind, EV_CANDIDATES);
    /* pa dies: the task's fetch goes to one of the others, the peer holding most. */
    progress(s, p, 0, 2);
    dmf_scheduler_stream_closed(s, pa);
    assert_int_equal(last_for("pb")->kind, EV_BTS);
    assert_int_not_equal(last_for("pc") ? last_for("pc")->kind : -1, EV_BTS);
    r = reg_req(T1, "c", "pc");
    r.stalled = true;
    reg_with(s, r, "pc");
    assert_int_equal(last_for("pc")->kind, EV_CANDIDATES);
    dmf_scheduler_free(s);
}

/* A host that holds a task joins a restarted scheduler: it is recorded without a parent,
 * a seed trigger or a back-to-source, keeps the request of a real registrant, and serves
 * the next registrant. */
static void test_holder_rejoins(void **state)
{
    dmf_scheduler_t *s = new_sched(4);
    host(s, "a");
    host(s, "b");
    host_full(s, "seed", DMF_SCHED_HOST_SEED, "", "", 100, 0, 0);
    struct dmf_scheduler_register r = reg_req(T1, "a", "pa");
    r.holds_task = true;
    size_t before = nevs;
    dmf_scheduler_peer_t *p = reg_with(s, r, "pa");
    assert_int_equal(nevs, before);
    finish(s, p);
    assert_int_equal(count_kind(EV_TRIGGER), 0);
    /* A newcomer gets the holder, and the seed: a rejoined holder's digests do not count
     * (it did not fetch on this scheduler's order), so without a seed fetching the
     * newcomer could take nothing from it. */
    reg(s, T1, "b", "pb");
    assert_candidates("pb", 2, (const char *[]){"pa", "seed-seed"});
    assert_true(last_for("pb")->seed_triggered);
    assert_int_equal(count_kind(EV_TRIGGER), 1);
    /* Once the seed is at it, the next one is not given another. */
    host(s, "c");
    reg(s, T1, "c", "pc");
    assert_int_equal(count_kind(EV_TRIGGER), 1);
    dmf_scheduler_free(s);
}

static void test_leave_peer_and_host(void **state)
{
    char err[256];
    dmf_scheduler_t *s = new_sched(4);
    host(s, "a");
    host(s, "b");
    host(s, "c");
    holder(s, "a", "pa");
    reg(s, T1, "b", "pb");
    assert_int_equal(dmf_scheduler_leave_peer(s, T1, "nobody", NULL, err, sizeof(err)), -ENOENT);
    assert_int_equal(dmf_scheduler_leave_peer(s, T2, "pa", NULL, err, sizeof(err)), -ENOENT);
    /* another host's authenticated caller cannot make it leave */
    assert_int_equal(dmf_scheduler_leave_peer(s, T1, "pa", "rogue", err, sizeof(err)), -EPERM);
    assert_int_equal(dmf_scheduler_leave_peer(s, T1, "pa", NULL, err, sizeof(err)), 0);
    assert_int_equal(last_for("pa")->kind, EV_GONE);
    assert_int_equal(last_for("pb")->kind, EV_BTS);
    holder(s, "c", "pc");
    assert_int_equal(dmf_scheduler_leave_host(s, "nohost", err, sizeof(err)), -ENOENT);
    assert_int_equal(dmf_scheduler_leave_host(s, "c", err, sizeof(err)), 0);
    struct dmf_scheduler_counts c;
    dmf_scheduler_counts(s, &c);
    assert_int_equal(c.hosts, 2);
    assert_int_equal(c.peers, 1);
    dmf_scheduler_free(s);
}

static void test_register_again_from_same_host_replaces_stream(void **state)
{
    char err[256];
    dmf_scheduler_t *s = new_sched(4);
    host(s, "a");
    host(s, "b");
    reg(s, T1, "a", "pa");
    dmf_scheduler_peer_t *p;
    struct dmf_scheduler_register r = reg_req(T1, "b", "pa");
    /* The same peer id from another host is refused. */
    assert_int_equal(dmf_scheduler_register(s, &r, "other", &p, err, sizeof(err)), -EEXIST);
    r = reg_req(T1, "a", "pa-again");
    assert_int_equal(dmf_scheduler_register(s, &r, "pa-again", &p, err, sizeof(err)), 0);
    assert_int_equal(last_for("pa")->kind, EV_GONE);
    assert_int_equal(last_for("pa-again")->kind, EV_BTS);
    struct dmf_scheduler_counts c;
    dmf_scheduler_counts(s, &c);
    assert_int_equal(c.peers, 1);
    dmf_scheduler_free(s);
}

/* ------------------------------------------------------------ progress and digests */

static struct dmf_scheduler_digest digest(uint32_t n, uint8_t fill)
{
    struct dmf_scheduler_digest d = {.number = n};
    memset(d.sha256, fill, sizeof(d.sha256));
    return d;
}

static void test_progress_digests_are_pushed(void **state)
{
    char err[256];
    dmf_scheduler_t *s = new_sched_abc();
    dmf_scheduler_peer_t *pa = reg(s, T1, "a", "pa");
    reg(s, T1, "b", "pb");
    const struct ev *e = last_for("pb");
    assert_int_equal(e->kind, EV_CANDIDATES);
    assert_int_equal(e->cl, -1);
    assert_int_equal(e->ndigests, 0);

    uint32_t pieces[] = {0, 1};
    struct dmf_scheduler_digest d1[] = {digest(0, 0xaa), digest(1, 0xbb)};
    struct dmf_scheduler_progress pr = {pieces, 2, d1, 2, 3 * MIB, 1 * MIB};
    assert_int_equal(dmf_scheduler_progress(s, pa, &pr, err, sizeof(err)), 0);
    e = last_for("pb");
    assert_int_equal(e->kind, EV_META);
    assert_int_equal(e->cl, 3 * MIB);
    assert_int_equal(e->pl, 1 * MIB);
    assert_int_equal(e->total, 3);
    assert_int_equal(e->ndigests, 2);
    assert_int_equal(last_for("pa")->kind, EV_BTS); /* the reporter hears nothing back */

    /* The same digest for piece 0 again changes nothing; piece 2 is new and pushed alone. */
    size_t before = count_kind(EV_META);
    uint32_t more[] = {2};
    struct dmf_scheduler_digest d2[] = {digest(0, 0xaa), digest(2, 0xdd)};
    struct dmf_scheduler_progress pr2 = {more, 1, d2, 2, -1, 0};
    assert_int_equal(dmf_scheduler_progress(s, pa, &pr2, err, sizeof(err)), 0);
    assert_int_equal(count_kind(EV_META), before + 1);
    e = last_for("pb");
    assert_int_equal(e->ndigests, 1);
    assert_int_equal(e->first_digest, 2);
    /* Nothing new: nothing pushed. */
    struct dmf_scheduler_progress pr3 = {more, 1, d2, 2, 3 * MIB, 0};
    assert_int_equal(dmf_scheduler_progress(s, pa, &pr3, err, sizeof(err)), 0);
    assert_int_equal(count_kind(EV_META), before + 1);

    uint32_t held = 0;
    assert_int_equal(stat_state(s, T1, "pa", &held), DMF_PEER_BACK_TO_SOURCE);
    assert_int_equal(held, 3);
    /* A newcomer gets every digest with its candidates. */
    reg(s, T1, "c", "pc");
    e = last_for("pc");
    assert_int_equal(e->kind, EV_CANDIDATES);
    assert_int_equal(e->ndigests, 3);
    assert_int_equal(e->total, 3);
    dmf_scheduler_free(s);
}

/* Reports digests d[0..n) (one byte pattern each) for pieces of a 3 MiB task. */
static void report_digests(dmf_scheduler_t *s, dmf_scheduler_peer_t *p,
                           const struct dmf_scheduler_digest *d, size_t n)
{
    char err[256];
    struct dmf_scheduler_progress pr = {NULL, 0, d, n, 3 * MIB, 1 * MIB};
    if (dmf_scheduler_progress(s, p, &pr, err, sizeof(err)) != 0)
        fail_msg("progress: %s", err);
}

/* A peer in P2P mode (it was given parents) reports digests of what it holds: they are
 * not the task's, nobody is told of them, a newcomer gets only the fetcher's. */
static void test_p2p_digests_do_not_count(void **state)
{
    dmf_scheduler_t *s = new_sched_abc();
    dmf_scheduler_peer_t *pa = reg(s, T1, "a", "pa"); /* sent to the origin */
    dmf_scheduler_peer_t *pb = reg(s, T1, "b", "pb"); /* P2P, pa's child */
    assert_int_equal(last_for("pb")->kind, EV_CANDIDATES);
    size_t metas = count_kind(EV_META);
    struct dmf_scheduler_digest rogue[] = {digest(0, 0x66), digest(1, 0x66), digest(2, 0x66)};
    report_digests(s, pb, rogue, 3);
    /* The layout is news to pa; digests are not. */
    assert_int_equal(last_for("pa")->kind, EV_META);
    assert_int_equal(last_for("pa")->ndigests, 0);
    assert_int_equal(count_kind(EV_META), metas + 1);
    struct dmf_scheduler_digest real[] = {digest(0, 0xaa)};
    report_digests(s, pa, real, 1);
    assert_int_equal(last_for("pb")->kind, EV_META);
    assert_int_equal(last_for("pb")->ndigests, 1);
    reg(s, T1, "c", "pc");
    assert_int_equal(last_for("pc")->ndigests, 1); /* pa's piece 0, none of pb's */
    dmf_scheduler_free(s);
}

/* A peer that registers saying it already fetches from the origin (a rejoin) was not sent
 * there by this scheduler: its digests do not count, and it is not the task's fetcher (a
 * stalled peer is sent to the origin instead of waiting on it). */
static void test_claimed_source_digests_do_not_count(void **state)
{
    dmf_scheduler_t *s = new_sched(4);
    host(s, "rogue");
    host(s, "b");
    struct dmf_scheduler_register r = reg_req(T1, "rogue", "pr");
    r.from_source = true;
    dmf_scheduler_peer_t *pr = reg_with(s, r, "pr");
    assert_int_equal(stat_state(s, T1, "pr", NULL), DMF_PEER_BACK_TO_SOURCE);
    struct dmf_scheduler_digest rogue[] = {digest(0, 0x66)};
    report_digests(s, pr, rogue, 1);
    reg(s, T1, "b", "pb");
    assert_int_equal(last_for("pb")->kind, EV_CANDIDATES);
    assert_int_equal(last_for("pb")->ndigests, 0);
    r = reg_req(T1, "b", "pb");
    r.stalled = true;
    reg_with(s, r, "pb");
    assert_int_equal(last_for("pb")->kind, EV_BTS);
    dmf_scheduler_free(s);
}

/* Two answers from the origin for one piece (here the same fetcher twice): not "first
 * wins" — every peer still downloading fails, and so does a newcomer, for a while. */
static void test_conflict_between_fetchers_fails_the_task(void **state)
{
    dmf_scheduler_t *s = new_sched_abc();
    dmf_scheduler_peer_t *pa = reg(s, T1, "a", "pa");
    reg(s, T1, "b", "pb");
    struct dmf_scheduler_digest one[] = {digest(0, 0xaa)}, other[] = {digest(0, 0xcc)};
    report_digests(s, pa, one, 1);
    report_digests(s, pa, other, 1);
    assert_int_equal(last_for("pb")->kind, EV_FAILED);
    assert_non_null(strstr(last_for("pb")->reason, "conflicting piece digests"));
    assert_int_equal(last_for("pa")->kind, EV_FAILED);
    reg(s, T1, "c", "pc");
    assert_int_equal(last_for("pc")->kind, EV_FAILED);
    dmf_scheduler_free(s);
}

/* With the whole-content digest known, a conflict is logged and the content digest (which
 * every daemon checks) decides: nobody fails on the scheduler's word. */
static void test_conflict_with_content_digest_goes_on(void **state)
{
    dmf_scheduler_t *s = new_sched(4);
    host(s, "a");
    host(s, "b");
    struct dmf_scheduler_register r = reg_req(T1, "a", "pa");
    r.digest = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    dmf_scheduler_peer_t *pa = reg_with(s, r, "pa");
    r.host_id = "b";
    r.peer_id = "pb";
    reg_with(s, r, "pb");
    struct dmf_scheduler_digest one[] = {digest(0, 0xaa)}, other[] = {digest(0, 0xcc)};
    report_digests(s, pa, one, 1);
    report_digests(s, pa, other, 1);
    assert_int_equal(count_kind(EV_FAILED), 0);
    dmf_scheduler_free(s);
}

/* A fetcher reported first; a seed, fetching from the origin too, disagrees: the seed's
 * digest counts, the peer that was given the other fails, a newcomer gets the seed's. */
static void test_seed_digest_overrules_a_fetchers(void **state)
{
    dmf_scheduler_t *s = new_sched_abc();
    dmf_scheduler_peer_t *pa = reg(s, T1, "a", "pa"); /* no seed yet: pa to the origin */
    reg(s, T1, "b", "pb");
    struct dmf_scheduler_digest lie[] = {digest(0, 0x66)}, real[] = {digest(0, 0xaa)};
    report_digests(s, pa, lie, 1);
    assert_int_equal(last_for("pb")->ndigests, 1);
    host_full(s, "seed", DMF_SCHED_HOST_SEED, "", "", 100, 0, 0);
    dmf_scheduler_peer_t *ps = reg(s, T1, "seed", "ps");
    assert_int_equal(last_for("ps")->kind, EV_BTS);
    report_digests(s, ps, real, 1);
    assert_int_equal(last_for("pb")->kind, EV_FAILED);
    assert_non_null(strstr(last_for("pb")->reason, "overruled"));
    /* The seed's stands against the fetcher's now. */
    report_digests(s, pa, lie, 1);
    reg(s, T1, "c", "pc");
    assert_int_not_equal(last_for("pc")->kind, EV_FAILED);
    assert_int_equal(last_for("pc")->ndigests, 1);
    dmf_scheduler_free(s);
}

/* Two fetchers that are not seeds (sent to the origin while no seed had announced)
 * disagree once a seed is known: the seed is triggered (on its own budget), peers that
 * were given a fetcher's digests fail, a newcomer is given none until the seed reported,
 * then the seed's. */
static dmf_scheduler_t *conflict_with_seed(dmf_scheduler_peer_t **pa, dmf_scheduler_peer_t **pb,
                                           bool seed_budget)
{
    dmf_scheduler_t *s = new_sched(4);
    host(s, "a");
    host(s, "b");
    host(s, "c");
    host(s, "d");
    host(s, "x");
    *pa = reg(s, T1, "a", "pa");
    assert_int_equal(last_for("pa")->kind, EV_BTS);
    struct dmf_scheduler_digest one[] = {digest(0, 0x66), digest(1, 0x66), digest(2, 0x66)};
    report_digests(s, *pa, one, 3);
    char err[256];
    assert_int_equal(dmf_scheduler_finished(s, *pa, 3 * MIB, 3, err, sizeof(err)), 0);
    reg(s, T1, "d", "pd"); /* P2P, given pa's digests */
    assert_int_equal(last_for("pd")->ndigests, 3);
    struct dmf_scheduler_register r = reg_req(T1, "b", "pb");
    r.stalled = true;
    *pb = reg_with(s, r, "pb");
    assert_int_equal(last_for("pb")->kind, EV_BTS);
    host_full(s, "seed", DMF_SCHED_HOST_SEED, "", "", 100, 0, 0);
    size_t triggers = count_kind(EV_TRIGGER);
    struct dmf_scheduler_digest other[] = {digest(0, 0xcc), digest(1, 0xcc), digest(2, 0xcc)};
    triggers_allowed = seed_budget; /* the re-verification is charged to the seed itself */
    report_digests(s, *pb, other, 3);
    assert_string_equal(last_trigger_requester, "seed");
    assert_int_equal(count_kind(EV_TRIGGER), triggers + (seed_budget ? 1 : 0));
    if (seed_budget)
        assert_string_equal(last_kind(EV_TRIGGER)->host_id, "seed");
    triggers_allowed = true;
    return s;
}

static void test_conflict_is_reverified_by_a_seed(void **state)
{
    dmf_scheduler_peer_t *pa, *pb;
    dmf_scheduler_t *s = conflict_with_seed(&pa, &pb, true);
    assert_int_equal(last_for("pd")->kind, EV_FAILED);
    assert_non_null(strstr(last_for("pd")->reason, "re-verified"));
    assert_int_equal(last_for("pb")->kind, EV_BTS); /* a fetcher is not told to stop */
    reg(s, T1, "c", "pc");
    assert_int_equal(last_for("pc")->kind, EV_CANDIDATES);
    assert_int_equal(last_for("pc")->ndigests, 0); /* withheld */
    /* More of the same from the fetchers hands out nothing. */
    struct dmf_scheduler_digest again[] = {digest(0, 0x66)};
    report_digests(s, pa, again, 1);
    assert_int_equal(last_for("pc")->ndigests, 0);
    /* The seed takes its placeholder over and reports what the origin has. */
    dmf_scheduler_peer_t *ps = reg(s, T1, "seed", "ps");
    assert_int_equal(last_for("ps")->kind, EV_BTS);
    struct dmf_scheduler_digest real[] = {digest(0, 0xaa), digest(1, 0x66)};
    report_digests(s, ps, real, 2);
    assert_int_equal(last_for("pc")->kind, EV_META);
    assert_int_equal(last_for("pc")->ndigests, 2);
    struct dmf_scheduler_digest last[] = {digest(2, 0xaa)};
    report_digests(s, ps, last, 1);
    assert_int_equal(last_for("pc")->ndigests, 1);
    assert_int_equal(last_for("pc")->first_digest, 2);
    /* Verified: a newcomer gets the seed's three, a fetcher's lie changes nothing. */
    report_digests(s, pb, again, 1);
    reg(s, T1, "x", "px");
    assert_int_equal(last_for("px")->kind, EV_CANDIDATES);
    assert_int_equal(last_for("px")->ndigests, 3);
    assert_int_equal(count_kind(EV_FAILED), 1); /* pd alone */
    dmf_scheduler_free(s);
}

/* The seed re-verifying a conflicted task cannot fetch it: the task fails as it does
 * without a seed (every downloading peer told, newcomers too, for the negative ttl). */
static void test_conflict_fails_when_the_seed_cannot_reverify(void **state)
{
    dmf_scheduler_peer_t *pa, *pb;
    dmf_scheduler_t *s = conflict_with_seed(&pa, &pb, true);
    const struct ev *t = last_kind(EV_TRIGGER);
    size_t from = nevs;
    dmf_scheduler_seed_result(s, T1, "seed", t->trigger_id, false, "connection refused");
    bool told = false;
    for (size_t i = from; i < nevs; i++)
        told |= evs[i].kind == EV_FAILED && strcmp(evs[i].stream, "pb") == 0 &&
                strstr(evs[i].reason, "conflicting piece digests") != NULL;
    assert_true(told);
    reg(s, T1, "c", "pc");
    assert_int_equal(last_for("pc")->kind, EV_FAILED);
    dmf_scheduler_free(s);
}

/* The seed's own budget of triggers is spent (conflicts made it fetch too much): the
 * conflicted task fails as it does without a seed. */
static void test_conflict_fails_when_the_seeds_budget_is_spent(void **state)
{
    dmf_scheduler_peer_t *pa, *pb;
    dmf_scheduler_t *s = conflict_with_seed(&pa, &pb, false);
    assert_int_equal(last_for("pd")->kind, EV_FAILED);
    assert_non_null(strstr(last_for("pd")->reason, "the content changed, or a host lies"));
    reg(s, T1, "c", "pc");
    assert_int_equal(last_for("pc")->kind, EV_FAILED);
    dmf_scheduler_free(s);
}

/* A peer in P2P mode reports validators: they are not pinned, the fetcher's are, and the
 * P2P peer's other ones are then refused. Its word that the content changed only fails
 * itself. */
static void test_validators_only_from_digest_sources(void **state)
{
    dmf_scheduler_t *s = new_sched_abc();
    dmf_scheduler_peer_t *pa = reg(s, T1, "a", "pa"); /* sent to the origin */
    dmf_scheduler_peer_t *pb = reg(s, T1, "b", "pb"); /* P2P */
    progress_version(s, pb, "\"bogus\"", 0x66);
    progress_version(s, pa, "\"real\"", 0xaa); /* not -ESTALE */
    char err[256];
    uint32_t p0 = 0;
    struct dmf_scheduler_progress bogus = {.pieces = &p0,
                                           .npieces = 1,
                                           .content_length = 10 * MIB,
                                           .piece_length = 1 * MIB,
                                           .etag = "\"bogus\""};
    assert_int_equal(dmf_scheduler_progress(s, pb, &bogus, err, sizeof(err)), -ESTALE);
    dmf_scheduler_content_changed(s, pb, "the content changed at the origin");
    assert_int_equal(stat_state(s, T1, "pb", NULL), UINT32_MAX);
    assert_int_equal(stat_state(s, T1, "pa", NULL), DMF_PEER_BACK_TO_SOURCE);
    assert_int_equal(count_kind(EV_CHANGED), 0);
    dmf_scheduler_free(s);
}

/* The origin's Content-Type travels like the validators: from a digest source only, and
 * only printable and bounded. */
static void test_content_type_only_from_digest_sources(void **state)
{
    dmf_scheduler_t *s = new_sched_abc();
    host(s, "x");
    dmf_scheduler_peer_t *pa = reg(s, T1, "a", "pa"); /* sent to the origin */
    dmf_scheduler_peer_t *pb = reg(s, T1, "b", "pb"); /* P2P */
    char err[256];
    uint32_t p0 = 0;
    struct dmf_scheduler_progress pr = {.pieces = &p0,
                                        .npieces = 1,
                                        .content_length = 10 * MIB,
                                        .piece_length = 1 * MIB,
                                        .content_type = "text/html"};
    assert_int_equal(dmf_scheduler_progress(s, pb, &pr, err, sizeof(err)), 0);
    reg(s, T1, "c", "pc");
    assert_string_equal(last_for("pc")->content_type, "");
    pr.content_type = "text/plain\r\nX: y";
    assert_int_equal(dmf_scheduler_progress(s, pa, &pr, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "content_type"));
    pr.content_type = "application/x-real";
    assert_int_equal(dmf_scheduler_progress(s, pa, &pr, err, sizeof(err)), 0);
    assert_string_equal(last_for("pc")->content_type, "application/x-real");
    pr.content_type = "text/other";
    assert_int_equal(dmf_scheduler_progress(s, pa, &pr, err, sizeof(err)), 0);
    reg(s, T1, "x", "px");
    assert_string_equal(last_for("px")->content_type, "application/x-real"); /* the first */
    dmf_scheduler_free(s);
}

/* A registrant's validators are provisional: a seed's (a digest source's) replace them,
 * and peers that report the provisional ones are not refused before that. */
static void test_registrant_validators_are_provisional(void **state)
{
    dmf_scheduler_t *s = new_sched(4);
    host(s, "rogue");
    host_full(s, "seed", DMF_SCHED_HOST_SEED, "", "", 100, 0, 0);
    struct dmf_scheduler_register r = reg_req(T1, "rogue", "pr");
    r.etag = "\"bogus\"";
    dmf_scheduler_peer_t *pr = reg_with(s, r, "pr");
    assert_int_equal(last_for("pr")->kind, EV_CANDIDATES); /* a seed triggered: P2P */
    progress_version(s, pr, "\"other\"", 0x66);            /* not refused, not pinned */
    dmf_scheduler_peer_t *ps = reg(s, T1, "seed", "ps");
    progress_version(s, ps, "\"real\"", 0xaa);
    char err[256];
    uint32_t p0 = 0;
    struct dmf_scheduler_progress bogus = {.pieces = &p0,
                                           .npieces = 1,
                                           .content_length = 10 * MIB,
                                           .piece_length = 1 * MIB,
                                           .etag = "\"bogus\""};
    assert_int_equal(dmf_scheduler_progress(s, pr, &bogus, err, sizeof(err)), -ESTALE);
    dmf_scheduler_free(s);
}

/* A host could spend its budget on purpose to be sent to the origin: while a seed could
 * fetch the task, such a peer's digests do not count, and a peer that stalls on it gets
 * the seed (on its own budget) instead of going to the origin itself. */
static void test_spent_budget_does_not_make_a_digest_source(void **state)
{
    dmf_scheduler_t *s = new_sched(4);
    host_full(s, "seed", DMF_SCHED_HOST_SEED, "", "", 100, 0, 0);
    host(s, "rogue");
    host(s, "b");
    triggers_allowed = false;
    dmf_scheduler_peer_t *pr = reg(s, T1, "rogue", "pr");
    assert_int_equal(last_for("pr")->kind, EV_BTS);
    triggers_allowed = true;
    struct dmf_scheduler_digest lie[] = {digest(0, 0x66), digest(1, 0x66), digest(2, 0x66)};
    report_digests(s, pr, lie, 3);
    reg(s, T1, "b", "pb");
    assert_int_equal(last_for("pb")->kind, EV_CANDIDATES);
    assert_int_equal(last_for("pb")->ndigests, 0);
    struct dmf_scheduler_register r = reg_req(T1, "b", "pb");
    r.stalled = true;
    reg_with(s, r, "pb");
    assert_int_equal(last_for("pb")->kind, EV_CANDIDATES);
    assert_true(last_for("pb")->seed_triggered);
    assert_string_equal(last_kind(EV_TRIGGER)->host_id, "seed");
    dmf_scheduler_free(s);
}

/* A peer that reports the seed away (a parent failure naming it) is sent to the origin,
 * but while the seed fetches (or could), its digests do not count. */
static void test_reporting_the_seed_away_does_not_make_a_digest_source(void **state)
{
    dmf_scheduler_t *s = new_sched(4);
    host_full(s, "seed", DMF_SCHED_HOST_SEED, "", "", 100, 0, 0);
    host(s, "rogue");
    host(s, "b");
    dmf_scheduler_peer_t *pr = reg(s, T1, "rogue", "pr");
    assert_true(last_for("pr")->seed_triggered);
    char err[256];
    assert_int_equal(dmf_scheduler_parent_failure(s, pr, "seed-seed", "seed",
                                                  DMF_PARENT_UNREACHABLE, err, sizeof(err)),
                     0);
    assert_int_equal(last_for("pr")->kind, EV_BTS);
    struct dmf_scheduler_digest lie[] = {digest(0, 0x66)};
    report_digests(s, pr, lie, 1);
    reg(s, T1, "b", "pb");
    assert_int_equal(last_for("pb")->kind, EV_CANDIDATES);
    assert_int_equal(last_for("pb")->ndigests, 0);
    dmf_scheduler_free(s);
}

/* --digest-sources seeds: a peer sent to the origin reports, nobody hears of it. */
static void test_digest_sources_seeds(void **state)
{
    dmf_scheduler_t *s = new_sched_cfg((struct dmf_scheduler_config){
        .candidate_limit = 4, .digest_sources = DMF_DIGEST_SOURCES_SEEDS});
    host(s, "a");
    host(s, "b");
    host(s, "c");
    dmf_scheduler_peer_t *pa = reg(s, T1, "a", "pa");
    assert_int_equal(last_for("pa")->kind, EV_BTS);
    struct dmf_scheduler_digest real[] = {digest(0, 0xaa)};
    report_digests(s, pa, real, 1);
    reg(s, T1, "b", "pb");
    assert_int_equal(last_for("pb")->ndigests, 0);
    host_full(s, "seed", DMF_SCHED_HOST_SEED, "", "", 100, 0, 0);
    dmf_scheduler_peer_t *ps = reg(s, T1, "seed", "ps");
    report_digests(s, ps, real, 1);
    assert_int_equal(last_for("pb")->kind, EV_META);
    assert_int_equal(last_for("pb")->ndigests, 1);
    dmf_scheduler_free(s);
}

/* A stalled register with nobody at the origin, while a seed could fetch: the seed is
 * triggered (and given as the parent) rather than the stalled peer made the task's digest
 * source. */
static void test_stalled_register_prefers_a_seed(void **state)
{
    dmf_scheduler_t *s = new_sched(4);
    host(s, "rogue");
    host_full(s, "seed", DMF_SCHED_HOST_SEED, "", "", 100, 0, 0);
    struct dmf_scheduler_register r = reg_req(T1, "rogue", "pr");
    r.stalled = true;
    reg_with(s, r, "pr");
    const struct ev *e = last_for("pr");
    assert_int_equal(e->kind, EV_CANDIDATES);
    assert_true(e->seed_triggered);
    assert_true(e->parent_is_seed[0]);
    assert_int_equal(count_kind(EV_TRIGGER), 1);
    dmf_scheduler_free(s);
}

static void test_progress_rejects_bad_layouts(void **state)
{
    char err[256];
    dmf_scheduler_t *s = new_sched(4);
    host(s, "a");
    dmf_scheduler_peer_t *pa = reg(s, T1, "a", "pa");
    struct dmf_scheduler_progress bad_pl = {.content_length = 3 * MIB, .piece_length = 12345};
    assert_int_equal(dmf_scheduler_progress(s, pa, &bad_pl, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "piece_length"));
    struct dmf_scheduler_progress no_pl = {.content_length = 3 * MIB};
    assert_int_equal(dmf_scheduler_progress(s, pa, &no_pl, err, sizeof(err)), -EINVAL);
    struct dmf_scheduler_progress neg = {.content_length = -5};
    assert_int_equal(dmf_scheduler_progress(s, pa, &neg, err, sizeof(err)), -EINVAL);
    /* Too many pieces for the largest piece length... */
    struct dmf_scheduler_progress huge = {.content_length = (int64_t)DMF_PIECES_MAX * MIB + 1,
                                          .piece_length = 1 * MIB};
    assert_int_equal(dmf_scheduler_progress(s, pa, &huge, err, sizeof(err)), -EINVAL);
    /* ...a piece past the end... */
    uint32_t past[] = {3};
    struct dmf_scheduler_progress out = {past, 1, NULL, 0, 3 * MIB, 1 * MIB};
    assert_int_equal(dmf_scheduler_progress(s, pa, &out, err, sizeof(err)), -EINVAL);
    /* ...and nothing was recorded by the refused messages. */
    struct dmf_scheduler_task_stat st;
    assert_int_equal(dmf_scheduler_stat_task(s, T1, &st, err, sizeof(err)), 0);
    assert_int_equal(st.meta.content_length, -1);
    assert_int_equal(st.meta.piece_length, 0);
    dmf_scheduler_task_stat_free(&st);
    /* A good layout, then a conflicting one. */
    struct dmf_scheduler_progress good = {.content_length = 3 * MIB, .piece_length = 1 * MIB};
    assert_int_equal(dmf_scheduler_progress(s, pa, &good, err, sizeof(err)), 0);
    struct dmf_scheduler_progress other = {.content_length = 4 * MIB};
    assert_int_equal(dmf_scheduler_progress(s, pa, &other, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "conflicts"));
    assert_int_equal(dmf_scheduler_finished(s, pa, 3 * MIB, 4, err, sizeof(err)), -EINVAL);
    assert_int_equal(dmf_scheduler_finished(s, pa, 3 * MIB, 3, err, sizeof(err)), 0);
    uint32_t held = 0;
    assert_int_equal(stat_state(s, T1, "pa", &held), DMF_PEER_SUCCEEDED);
    assert_int_equal(held, 3);
    dmf_scheduler_free(s);
}

/* ------------------------------------------------------------ input bounds */

static void test_register_from_unannounced_host(void **state)
{
    char err[256];
    dmf_scheduler_t *s = new_sched(4);
    dmf_scheduler_peer_t *p;
    struct dmf_scheduler_register r = reg_req(T1, "ghost", "p");
    assert_int_equal(dmf_scheduler_register(s, &r, "p", &p, err, sizeof(err)), -ESRCH);
    assert_string_equal(err, "host ghost has not announced");
    dmf_scheduler_free(s);
}

static void test_bounds_on_network_input(void **state)
{
    char err[256];
    char long_id[DMF_SCHED_ID_MAX + 2];
    memset(long_id, 'x', sizeof(long_id) - 1);
    long_id[sizeof(long_id) - 1] = '\0';
    char *long_url = malloc(DMF_SCHED_URL_MAX + 32);
    strcpy(long_url, "https://example.com/");
    memset(long_url + 20, 'a', DMF_SCHED_URL_MAX);
    long_url[DMF_SCHED_URL_MAX + 20] = '\0';
    struct dmf_scheduler_header many[DMF_SCHED_HEADERS_MAX + 1];
    for (size_t i = 0; i < DMF_SCHED_HEADERS_MAX + 1; i++)
        many[i] = (struct dmf_scheduler_header){"X-A", "b"};
    struct dmf_scheduler_header crlf[] = {{"X-A", "b\r\nInjected: yes"}};

    dmf_scheduler_t *s = new_sched(4);
    host(s, "a");
    dmf_scheduler_peer_t *p;
    struct dmf_scheduler_register r;

    r = reg_req(T1, "a", long_id);
    assert_int_equal(dmf_scheduler_register(s, &r, "s", &p, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "peer_id is longer than 128 bytes"));
    r = reg_req("not-a-task-id", "a", "p");
    assert_int_equal(dmf_scheduler_register(s, &r, "s", &p, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "task_id"));
    r = reg_req(T1, "a", "p");
    r.url = long_url;
    assert_int_equal(dmf_scheduler_register(s, &r, "s", &p, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "url is longer"));
    assert_null(strstr(err, "example.com")); /* the URL is never echoed */
    r = reg_req(T1, "a", "p");
    r.headers = many;
    r.nheaders = DMF_SCHED_HEADERS_MAX + 1;
    assert_int_equal(dmf_scheduler_register(s, &r, "s", &p, err, sizeof(err)), -EINVAL);
    r.headers = crlf;
    r.nheaders = 1;
    assert_int_equal(dmf_scheduler_register(s, &r, "s", &p, err, sizeof(err)), -EINVAL);
    assert_null(strstr(err, "Injected"));
    r = reg_req(T1, "a", "p");
    r.digest = "md5:abc";
    assert_int_equal(dmf_scheduler_register(s, &r, "s", &p, err, sizeof(err)), -EINVAL);
    r = reg_req(T1, "a", "p");
    r.held_pieces = DMF_PIECES_MAX + 1;
    assert_int_equal(dmf_scheduler_register(s, &r, "s", &p, err, sizeof(err)), -EINVAL);

    struct dmf_scheduler_host_info h = {.id = "h", .ip = "not-an-ip", .piece_port = 1};
    assert_int_equal(dmf_scheduler_announce_host(s, &h, err, sizeof(err)), -EINVAL);
    h.ip = "::1";
    h.piece_port = 70000;
    assert_int_equal(dmf_scheduler_announce_host(s, &h, err, sizeof(err)), -EINVAL);
    h.piece_port = 1;
    h.type = DMF_SCHED_HOST_SEED; /* a seed without an rpc port cannot be triggered */
    assert_int_equal(dmf_scheduler_announce_host(s, &h, err, sizeof(err)), -EINVAL);
    h.type = 7;
    assert_int_equal(dmf_scheduler_announce_host(s, &h, err, sizeof(err)), -EINVAL);
    h.type = DMF_SCHED_HOST_NORMAL;
    h.id = long_id;
    assert_int_equal(dmf_scheduler_announce_host(s, &h, err, sizeof(err)), -EINVAL);
    h.id = "h h";
    assert_int_equal(dmf_scheduler_announce_host(s, &h, err, sizeof(err)), -EINVAL);
    h.id = "h";
    assert_int_equal(dmf_scheduler_announce_host(s, &h, err, sizeof(err)), 0);

    struct dmf_scheduler_counts c;
    dmf_scheduler_counts(s, &c);
    assert_int_equal(c.tasks, 0);
    assert_int_equal(c.peers, 0);
    assert_int_equal(
        dmf_scheduler_stat_task(s, "zz", &(struct dmf_scheduler_task_stat){0}, err, sizeof(err)),
        -EINVAL);
    struct dmf_scheduler_task_stat st;
    assert_int_equal(dmf_scheduler_stat_task(s, T2, &st, err, sizeof(err)), -ENOENT);
    free(long_url);
    dmf_scheduler_free(s);
}

static void test_tables_are_capped(void **state)
{
    char err[256];
    dmf_scheduler_t *s =
        new_sched_cfg((struct dmf_scheduler_config){.max_hosts = 2, .max_tasks = 1});
    host(s, "a");
    host(s, "b");
    struct dmf_scheduler_host_info h = {.id = "c", .ip = "10.0.0.3", .piece_port = 1};
    assert_int_equal(dmf_scheduler_announce_host(s, &h, err, sizeof(err)), -ENOSPC);
    assert_non_null(strstr(err, "too many hosts"));
    host(s, "a"); /* a known host may announce again */
    reg(s, T1, "a", "pa");
    dmf_scheduler_peer_t *p;
    struct dmf_scheduler_register r = reg_req(T2, "a", "pa2");
    assert_int_equal(dmf_scheduler_register(s, &r, "pa2", &p, err, sizeof(err)), -ENOSPC);
    assert_non_null(strstr(err, "too many tasks"));
    dmf_scheduler_free(s);
}

/* ------------------------------------------------------------ indexes */

static uint32_t rnd_state = 4242;

static uint32_t rnd(uint32_t n)
{
    rnd_state = rnd_state * 1103515245u + 12345u;
    return (rnd_state >> 8) % n;
}

/* Random registers, progress, finishes, closed streams, announces with new upload figures
 * and candidate limits on one task, under both graph rules: with check_indexes on, every
 * pick through the rank index is compared with the full scan and every offer walks lists
 * checked against the peers (a difference aborts). */
static void test_indexes_agree_with_scans_on_random_runs(void **state)
{
    static const char *const hids[] = {"h0",  "h1",  "h2",  "h3",  "h4",  "h5",  "h6",  "h7",
                                       "h8",  "h9",  "h10", "h11", "h12", "h13", "h14", "h15",
                                       "h16", "h17", "h18", "h19", "h20", "h21", "h22", "h23"};
    static const char *const pids[] = {"q0",  "q1",  "q2",  "q3",  "q4",  "q5",  "q6",  "q7",
                                       "q8",  "q9",  "q10", "q11", "q12", "q13", "q14", "q15",
                                       "q16", "q17", "q18", "q19", "q20", "q21", "q22", "q23"};
    static const char *const idcs[] = {"", "dc1", "dc2"};
    static const char *const locs[] = {"", "eu|fr", "eu|de", "eu|fr|par"};
    enum { N = 24 };
    char err[256];
    for (int run = 0; run < 40; run++) {
        dmf_scheduler_t *s = new_sched_cfg((struct dmf_scheduler_config){
            .candidate_limit = 2 + rnd(3), .mesh = run % 2 == 0, .peer_ttl_set = true});
        dmf_scheduler_peer_t *peers[N] = {0};
        for (int i = 0; i < N; i++)
            host_full(s, hids[i], DMF_SCHED_HOST_NORMAL, idcs[rnd(3)], locs[rnd(4)], 100, rnd(100),
                      rnd(3));
        for (int op = 0; op < 400; op++) {
            nevs = 0;
            clock_ms += rnd(50);
            int i = (int)rnd(N);
            dmf_scheduler_peer_t *p = peers[i];
            uint32_t what = rnd(10);
            if (p == NULL || what == 0) {
                peers[i] = reg(s, T1, hids[i], pids[i]);
            } else if (what <= 4) {
                uint32_t from = rnd(10);
                progress(s, p, from, from + rnd(10 - from + 1));
            } else if (what == 5) {
                assert_int_equal(dmf_scheduler_finished(s, p, 10 * MIB, 10, err, sizeof(err)), 0);
            } else if (what == 6) {
                dmf_scheduler_stream_closed(s, p);
                peers[i] = NULL; /* gone, or idle until it registers again */
            } else if (what == 7) {
                host_full(s, hids[i], DMF_SCHED_HOST_NORMAL, idcs[rnd(3)], locs[rnd(4)],
                          rnd(4) ? 100 : 0, rnd(120), rnd(3));
            } else if (what == 8) {
                dmf_scheduler_set_candidate_limit(s, 1 + rnd(4));
            } else {
                int j = (int)rnd(N);
                if (peers[j] != NULL && j != i)
                    dmf_scheduler_parent_failure(s, p, pids[j], hids[j], DMF_PARENT_UNREACHABLE,
                                                 err, sizeof(err));
            }
        }
        dmf_scheduler_free(s);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rank_by_free_upload_capacity),
        cmocka_unit_test(test_rank_by_progress),
        cmocka_unit_test(test_rank_by_locality),
        cmocka_unit_test(test_rank_by_health),
        cmocka_unit_test(test_candidate_limit),
        cmocka_unit_test(test_no_cycles),
        cmocka_unit_test(test_no_cycles_through_grandchildren),
        cmocka_unit_test(test_mesh_offers_new_peers_to_earlier_ones),
        cmocka_unit_test(test_dag_never_offers_a_descendant),
        cmocka_unit_test(test_mesh_offers_a_finished_peer_to_running_ones),
        cmocka_unit_test(test_indexes_agree_with_scans_on_random_runs),
        cmocka_unit_test(test_back_to_source_without_seed),
        cmocka_unit_test(test_seed_triggered_when_nobody_has_the_task),
        cmocka_unit_test(test_seed_trigger_failure_reschedules_children),
        cmocka_unit_test(test_seed_success_without_stream_marks_placeholder_succeeded),
        cmocka_unit_test(test_seed_is_parent_of_last_resort),
        cmocka_unit_test(test_bad_parent_excluded_after_threshold),
        cmocka_unit_test(test_bad_reports_one_per_reporting_host_and_forgotten),
        cmocka_unit_test(test_parent_failure_pushes_new_candidates_without_that_parent),
        cmocka_unit_test(test_host_expiry_removes_peers_and_reschedules_children),
        cmocka_unit_test(test_succeeded_peer_stays_candidate_after_stream_closes),
        cmocka_unit_test(test_finished_peer_expires_after_peer_ttl),
        cmocka_unit_test(test_tasks_per_host_limit),
        cmocka_unit_test(test_spent_trigger_budget_goes_to_the_origin),
        cmocka_unit_test(test_trigger_is_charged_its_size_once),
        cmocka_unit_test(test_spent_budget_does_not_make_a_digest_source),
        cmocka_unit_test(test_reporting_the_seed_away_does_not_make_a_digest_source),
        cmocka_unit_test(test_failed_parent_reschedules_children),
        cmocka_unit_test(test_failed_for_good_is_remembered),
        cmocka_unit_test(test_content_changed_forgets_the_version),
        cmocka_unit_test(test_register_with_new_validators_forgets_the_old),
        cmocka_unit_test(test_stalled_register_goes_to_the_origin_once),
        cmocka_unit_test(test_holder_rejoins),
        cmocka_unit_test(test_leave_peer_and_host),
        cmocka_unit_test(test_register_again_from_same_host_replaces_stream),
        cmocka_unit_test(test_progress_digests_are_pushed),
        cmocka_unit_test(test_p2p_digests_do_not_count),
        cmocka_unit_test(test_claimed_source_digests_do_not_count),
        cmocka_unit_test(test_conflict_between_fetchers_fails_the_task),
        cmocka_unit_test(test_conflict_with_content_digest_goes_on),
        cmocka_unit_test(test_conflict_is_reverified_by_a_seed),
        cmocka_unit_test(test_conflict_fails_when_the_seed_cannot_reverify),
        cmocka_unit_test(test_conflict_fails_when_the_seeds_budget_is_spent),
        cmocka_unit_test(test_validators_only_from_digest_sources),
        cmocka_unit_test(test_content_type_only_from_digest_sources),
        cmocka_unit_test(test_registrant_validators_are_provisional),
        cmocka_unit_test(test_seed_digest_overrules_a_fetchers),
        cmocka_unit_test(test_digest_sources_seeds),
        cmocka_unit_test(test_stalled_register_prefers_a_seed),
        cmocka_unit_test(test_progress_rejects_bad_layouts),
        cmocka_unit_test(test_register_from_unannounced_host),
        cmocka_unit_test(test_bounds_on_network_input),
        cmocka_unit_test(test_tables_are_capped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
