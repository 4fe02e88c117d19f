/* Candidate scoring and selection (src/scheduler/sched_rank.c), as pure functions over a
 * hand-built state: one task, its peers on their hosts, the seed list and the peer table,
 * with no scheduler around them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "scheduler/sched_rank.h"
#include "scheduler/sched_state.h"

#define T1 "1111111111111111111111111111111111111111111111111111111111111111"
#define T2 "2222222222222222222222222222222222222222222222222222222222222222"

#define NOW   1000000u
#define EPOCH 7u /* the mark of the peers a pick must skip */

/* One task and what ranking reads around it. */
static struct {
    struct dmf_sched_host hosts[16];
    size_t nhosts;
    struct dmf_sched_task task;
    dmf_scheduler_peer_t peers[24];
    size_t npeers;
    struct dmf_sched_edge edges[24];
    size_t nedges;
    struct dmf_sched_host_list seeds;
    dmf_strmap_t table;
    struct dmf_sched_view view;
} w;

/* A fresh world: task T1 of 10 pieces, DAG rule, threshold 2, host timeout 10 s. */
static void world(bool mesh)
{
    dmf_strmap_free(&w.table);
    dmf_rank_index_free(&w.task.rank);
    for (size_t i = 0; i < w.npeers; i++)
        dmf_bitmap_free(&w.peers[i].held);
    memset(&w, 0, sizeof(w));
    memcpy(w.task.id, T1, sizeof(w.task.id));
    w.task.content_length = 10 << 20;
    w.task.piece_length = 1 << 20;
    w.task.total_pieces = 10;
    TAILQ_INIT(&w.task.peers);
    LIST_INIT(&w.seeds);
    dmf_strmap_init(&w.table);
    w.view = (struct dmf_sched_view){
        .now = NOW,
        .mesh = mesh,
        .bad_parent_threshold = 2,
        .host_timeout_ms = 10000,
        .epoch = EPOCH,
        .seeds = &w.seeds,
        .peers = &w.table,
    };
}

/* A normal host with free upload, no uploads, no idc or location. */
static struct dmf_sched_host *host(const char *id)
{
    assert_true(w.nhosts < sizeof(w.hosts) / sizeof(w.hosts[0]));
    struct dmf_sched_host *h = &w.hosts[w.nhosts++];
    h->id = (char *)id;
    h->ip = (char *)"10.0.0.1";
    h->idc = (char *)"";
    h->location = (char *)"";
    h->piece_port = 65002;
    h->upload_capacity = 100;
    h->last_seen = NOW;
    h->type = DMF_SCHED_HOST_NORMAL;
    LIST_INIT(&h->peers);
    return h;
}

static struct dmf_sched_host *seed_host(const char *id)
{
    struct dmf_sched_host *h = host(id);
    h->type = DMF_SCHED_HOST_SEED;
    h->rpc_port = 65000;
    LIST_INSERT_HEAD(&w.seeds, h, seeds);
    return h;
}

/* A peer of the task on h, in the peer table, holding `held` of its 10 pieces. */
static dmf_scheduler_peer_t *peer(const char *peer_id, struct dmf_sched_host *h,
                                  enum dmf_scheduler_peer_state st, uint32_t held)
{
    assert_true(w.npeers < sizeof(w.peers) / sizeof(w.peers[0]));
    dmf_scheduler_peer_t *p = &w.peers[w.npeers++];
    snprintf(p->key, sizeof(p->key), "%s%s", w.task.id, h->id);
    p->peer_id = (char *)peer_id;
    p->task = &w.task;
    p->host = h;
    p->state = st;
    p->held_base = held;
    dmf_bitmap_init(&p->held);
    LIST_INIT(&p->parents);
    LIST_INIT(&p->children);
    TAILQ_INSERT_TAIL(&w.task.peers, p, in_task);
    w.task.npeers++;
    LIST_INSERT_HEAD(&h->peers, p, in_host);
    dmf_strmap_put(&w.table, p->key, p);
    return p;
}

/* The peer that asks for parents: PENDING, marked (it is not its own candidate). */
static dmf_scheduler_peer_t *child(const char *peer_id, struct dmf_sched_host *h)
{
    dmf_scheduler_peer_t *p = peer(peer_id, h, DMF_PEER_PENDING, 0);
    p->mark = EPOCH;
    return p;
}

/* child already uses parent (marked, as sched.c marks the parents in use). */
static void uses(dmf_scheduler_peer_t *c, dmf_scheduler_peer_t *parent)
{
    struct dmf_sched_edge *e = &w.edges[w.nedges++];
    e->child = c;
    e->parent = parent;
    LIST_INSERT_HEAD(&c->parents, e, in_child);
    LIST_INSERT_HEAD(&parent->children, e, in_parent);
    c->nparents++;
    parent->nchildren++;
    parent->mark = EPOCH;
}

static double score(const dmf_scheduler_peer_t *c, const dmf_scheduler_peer_t *candidate)
{
    return dmf_sched_score(&w.view, c, candidate);
}

/* The tests change peers by hand: the rank index is brought up to date before a pick. */
static void index_all(void)
{
    dmf_scheduler_peer_t *c;
    TAILQ_FOREACH(c, &w.task.peers, in_task)
    {
        dmf_rank_index_update(&w.task.rank, c, dmf_sched_rank_key(w.view.mesh, c));
    }
}

/* Picks for p (at most limit) and checks the peer ids, best first. */
static void assert_pick(dmf_scheduler_peer_t *p, size_t limit, size_t n, const char *const *want)
{
    struct dmf_sched_ranked best[DMF_SCHED_CANDIDATES_MAX], scan[DMF_SCHED_CANDIDATES_MAX];
    index_all();
    size_t got = dmf_sched_pick_candidates(&w.view, p, best, limit);
    size_t nscan = dmf_sched_pick_candidates_scan(&w.view, p, scan, limit);
    assert_int_equal(got, nscan);
    for (size_t i = 0; i < got; i++)
        assert_ptr_equal(best[i].peer, scan[i].peer);
    char list[512] = "";
    for (size_t i = 0; i < got; i++)
        snprintf(list + strlen(list), sizeof(list) - strlen(list), " %s", best[i].peer->peer_id);
    if (got != n)
        fail_msg("picked %zu (%s), want %zu", got, list, n);
    for (size_t i = 0; i < n; i++)
        if (strcmp(best[i].peer->peer_id, want[i]) != 0)
            fail_msg("pick %zu is %s (%s), want %s", i, best[i].peer->peer_id, list, want[i]);
    /* Best first (a seed, when added, goes after the others whatever its score). */
    for (size_t i = 1; i < got; i++)
        if (!dmf_sched_host_is_seed(best[i].peer->host))
            assert_true(best[i - 1].score >= best[i].score);
}

/* ------------------------------------------------------------ scoring */

static void test_more_loaded_ranks_lower(void **state)
{
    world(false);
    dmf_scheduler_peer_t *me = child("me", host("x"));
    struct dmf_sched_host *busy = host("busy"), *idle = host("idle"), *full = host("full");
    struct dmf_sched_host *many = host("many"), *unknown = host("unknown");
    busy->upload_rate = 90;
    idle->upload_rate = 10;
    full->upload_rate = 250; /* over capacity: no free upload, not negative */
    many->upload_rate = 10;
    many->active_uploads = 3;
    unknown->upload_capacity = 0; /* capacity not announced: counts as half free */
    dmf_scheduler_peer_t *pb = peer("pb", busy, DMF_PEER_SUCCEEDED, 0);
    dmf_scheduler_peer_t *pi = peer("pi", idle, DMF_PEER_SUCCEEDED, 0);
    dmf_scheduler_peer_t *pf = peer("pf", full, DMF_PEER_SUCCEEDED, 0);
    dmf_scheduler_peer_t *pm = peer("pm", many, DMF_PEER_SUCCEEDED, 0);
    dmf_scheduler_peer_t *pu = peer("pu", unknown, DMF_PEER_SUCCEEDED, 0);

    assert_true(score(me, pb) < score(me, pi));
    assert_true(score(me, pm) < score(me, pi));
    assert_true(score(me, pf) < score(me, pb));
    assert_true(score(me, pf) > 0.0);
    assert_true(score(me, pu) < score(me, pi) && score(me, pu) > score(me, pb));
    /* capacity 0.5*0.9+0.5, progress 1, locality 0, health 1. */
    assert_float_equal(score(me, pi), 0.3 * 0.95 + 0.3 + 0.2, 1e-12);
    assert_pick(me, 8, 5, (const char *[]){"pi", "pu", "pm", "pb", "pf"});
}

static void test_mesh_counts_children_given_as_load(void **state)
{
    world(true);
    dmf_scheduler_peer_t *me = child("me", host("x"));
    dmf_scheduler_peer_t *a = peer("a", host("ha"), DMF_PEER_SUCCEEDED, 0);
    dmf_scheduler_peer_t *b = peer("b", host("hb"), DMF_PEER_SUCCEEDED, 0);
    a->nchildren = 3;
    assert_true(score(me, a) < score(me, b));
    /* Under the DAG rule the children given do not count. */
    w.view.mesh = false;
    assert_float_equal(score(me, a), score(me, b), 0.0);
}

static void test_less_progressed_ranks_lower(void **state)
{
    world(false);
    dmf_scheduler_peer_t *me = child("me", host("x"));
    dmf_scheduler_peer_t *p2 = peer("p2", host("h2"), DMF_PEER_RUNNING, 2);
    dmf_scheduler_peer_t *p8 = peer("p8", host("h8"), DMF_PEER_RUNNING, 8);
    dmf_scheduler_peer_t *done = peer("done", host("hd"), DMF_PEER_SUCCEEDED, 0);
    dmf_scheduler_peer_t *bts = peer("bts", host("hb"), DMF_PEER_BACK_TO_SOURCE, 5);
    dmf_bitmap_set(&p2->held, 9); /* 2 at register + 1 reported */
    assert_true(score(me, p2) < score(me, bts));
    assert_true(score(me, bts) < score(me, p8));
    assert_true(score(me, p8) < score(me, done));
    /* progress weighs 0.3: 3 of 10 pieces against 8 of 10. */
    assert_float_equal(score(me, p8) - score(me, p2), 0.3 * 0.5, 1e-12);
    assert_pick(me, 3, 3, (const char *[]){"done", "p8", "bts"});

    /* Length unknown: progress saturates, more pieces still rank higher. */
    w.task.content_length = -1;
    w.task.total_pieces = 0;
    assert_true(score(me, p2) < score(me, p8));
    assert_true(score(me, p8) < score(me, done));
}

static void test_location_affinity(void **state)
{
    assert_float_equal(dmf_sched_location_affinity("eu|z1|r1", "eu|z1|r1"), 1.0, 0.0);
    assert_float_equal(dmf_sched_location_affinity("eu|z1|r1", "eu|z1|r2"), 2.0 / 3, 1e-12);
    assert_float_equal(dmf_sched_location_affinity("eu|z1", "eu|z1|r2"), 2.0 / 3, 1e-12);
    assert_float_equal(dmf_sched_location_affinity("eu|z1|r1", "eu|z2|r1"), 1.0 / 3, 1e-12);
    assert_float_equal(dmf_sched_location_affinity("eu|z1|r1", "us|z1|r1"), 0.0, 0.0);
    /* Whole elements only: "z1" is not a prefix of "z10". */
    assert_float_equal(dmf_sched_location_affinity("eu|z1", "eu|z10"), 0.5, 1e-12);
    assert_float_equal(dmf_sched_location_affinity("", ""), 0.0, 0.0);
    assert_float_equal(dmf_sched_location_affinity("eu", ""), 0.0, 0.0);
}

static void test_farther_ranks_lower(void **state)
{
    world(false);
    struct dmf_sched_host *x = host("x");
    x->idc = (char *)"idc1";
    x->location = (char *)"eu|z1|r1";
    dmf_scheduler_peer_t *me = child("me", x);
    struct dmf_sched_host *rack = host("rack"), *zone = host("zone"), *region = host("region");
    struct dmf_sched_host *far = host("far"), *same_idc = host("same-idc");
    rack->location = (char *)"eu|z1|r1";
    zone->location = (char *)"eu|z1|r2";
    region->location = (char *)"eu|z2|r1";
    far->location = (char *)"us|z1|r1";
    same_idc->location = (char *)"eu|z2|r9";
    same_idc->idc = (char *)"idc1";
    far->idc = (char *)"idc2";
    dmf_scheduler_peer_t *pr = peer("p-rack", rack, DMF_PEER_SUCCEEDED, 0);
    dmf_scheduler_peer_t *pz = peer("p-zone", zone, DMF_PEER_SUCCEEDED, 0);
    dmf_scheduler_peer_t *pg = peer("p-region", region, DMF_PEER_SUCCEEDED, 0);
    dmf_scheduler_peer_t *pf = peer("p-far", far, DMF_PEER_SUCCEEDED, 0);
    dmf_scheduler_peer_t *pi = peer("p-idc", same_idc, DMF_PEER_SUCCEEDED, 0);
    assert_true(score(me, pf) < score(me, pg));
    assert_true(score(me, pg) < score(me, pz));
    assert_true(score(me, pz) < score(me, pr));
    assert_true(score(me, pf) < score(me, pi));
    assert_pick(me, 5, 5, (const char *[]){"p-idc", "p-rack", "p-zone", "p-region", "p-far"});

    /* An empty idc matches nobody, not even another empty one. */
    x->idc = (char *)"";
    same_idc->idc = (char *)"";
    assert_float_equal(score(me, pi), score(me, pg), 0.0);
}

static void test_recently_unreachable_ranks_lower(void **state)
{
    world(false);
    dmf_scheduler_peer_t *me = child("me", host("x"));
    struct dmf_sched_host *flaky = host("flaky"), *old = host("old");
    dmf_scheduler_peer_t *pf = peer("pf", flaky, DMF_PEER_SUCCEEDED, 0);
    dmf_scheduler_peer_t *po = peer("po", old, DMF_PEER_SUCCEEDED, 0);
    dmf_scheduler_peer_t *pg = peer("pg", host("good"), DMF_PEER_SUCCEEDED, 0);
    flaky->unreachable[0] = (struct dmf_sched_unreachable){1, NOW - 1000};
    flaky->unreachable[1] = (struct dmf_sched_unreachable){2, NOW - 2000};
    /* just out of the window */
    old->unreachable[0] = (struct dmf_sched_unreachable){1, NOW - DMF_SCHED_UNREACHABLE_WIN};
    assert_true(score(me, pf) < score(me, pg));
    assert_float_equal(score(me, pg) - score(me, pf), 0.2 * (1 - 1.0 / 3), 1e-12);
    assert_float_equal(score(me, po), score(me, pg), 0.0);
    assert_pick(me, 3, 3, (const char *[]){"pg", "po", "pf"});
}

/* Two distinct recent reporters take a host out of every candidate set, one does not, and
 * a seed stays; the host is back once the reports are a minute old. */
static void test_stalling_host_is_not_offered(void **state)
{
    world(false);
    w.view.unreachable_threshold = 2;
    dmf_scheduler_peer_t *me = child("me", host("x"));
    struct dmf_sched_host *staller = host("staller"), *once = host("once");
    struct dmf_sched_host *seed = seed_host("seed");
    peer("ps", staller, DMF_PEER_SUCCEEDED, 0);
    peer("po", once, DMF_PEER_SUCCEEDED, 0);
    peer("pseed", seed, DMF_PEER_SUCCEEDED, 0);
    staller->unreachable[3] = (struct dmf_sched_unreachable){11, NOW - 5000};
    staller->unreachable[5] = (struct dmf_sched_unreachable){12, NOW - 100};
    once->unreachable[0] = (struct dmf_sched_unreachable){11, NOW - 100};
    seed->unreachable[0] = (struct dmf_sched_unreachable){11, NOW - 100};
    seed->unreachable[1] = (struct dmf_sched_unreachable){12, NOW - 100};
    assert_int_equal(dmf_sched_host_unreachable(staller, NOW), 2);
    assert_true(dmf_sched_host_stalling(staller, NOW, 2));
    assert_false(dmf_sched_host_stalling(once, NOW, 2));
    assert_false(dmf_sched_host_stalling(seed, NOW, 2));
    assert_pick(me, 4, 2, (const char *[]){"po", "pseed"});
    /* Threshold 0: never excluded for this, only ranked lower (and with two normal
     * parents the seed, a parent of last resort, is not needed). */
    w.view.unreachable_threshold = 0;
    assert_pick(me, 4, 2, (const char *[]){"po", "ps"});
    /* A minute after the older report, one reporter is left: offered again. */
    w.view.unreachable_threshold = 2;
    w.view.now = NOW - 5000 + DMF_SCHED_UNREACHABLE_WIN;
    assert_false(dmf_sched_host_stalling(staller, w.view.now, 2));
    assert_pick(me, 4, 2, (const char *[]){"po", "ps"});
}

/* ------------------------------------------------------------ selection */

static void test_limit_is_respected_best_first(void **state)
{
    world(false);
    dmf_scheduler_peer_t *me = child("me", host("x"));
    static const char *ids[] = {"p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8", "p9"};
    static const char *hids[] = {"h0", "h1", "h2", "h3", "h4", "h5", "h6", "h7", "h8", "h9"};
    /* Registered in an order unrelated to their progress. */
    static const uint32_t held[] = {3, 9, 1, 7, 5, 0, 8, 2, 6, 4};
    for (size_t i = 0; i < 10; i++)
        peer(ids[i], host(hids[i]), DMF_PEER_RUNNING, held[i]);
    assert_pick(me, 3, 3, (const char *[]){"p1", "p6", "p3"});
    assert_pick(me, 1, 1, (const char *[]){"p1"});
    assert_pick(me, 10, 10,
                (const char *[]){"p1", "p6", "p3", "p8", "p4", "p9", "p0", "p7", "p2", "p5"});
    struct dmf_sched_ranked best[DMF_SCHED_CANDIDATES_MAX];
    assert_int_equal(dmf_sched_pick_candidates(&w.view, me, best, 0), 0);
}

static void test_who_is_not_offered(void **state)
{
    world(false);
    dmf_scheduler_peer_t *me = child("me", host("x"));
    peer("ok", host("h-ok"), DMF_PEER_RUNNING, 1);
    peer("pending", host("h-pending"), DMF_PEER_PENDING, 5);
    peer("failed", host("h-failed"), DMF_PEER_FAILED, 5);
    dmf_scheduler_peer_t *ph = peer("placeholder", seed_host("s"), DMF_PEER_PENDING, 0);
    ph->placeholder = true; /* a triggered seed: offered though PENDING */
    peer("marked", host("h-marked"), DMF_PEER_SUCCEEDED, 0)->mark = EPOCH; /* a descendant */
    struct dmf_sched_host *bad = host("h-bad"), *leaving = host("h-leaving");
    bad->bad_reports = 2;
    leaving->leaving = true;
    peer("bad", bad, DMF_PEER_SUCCEEDED, 0);
    peer("leaving", leaving, DMF_PEER_SUCCEEDED, 0);
    peer("blocked", host("h-blocked"), DMF_PEER_SUCCEEDED, 0);
    me->blocked[me->nblocked++] = (char *)"h-blocked";
    assert_pick(me, 8, 2, (const char *[]){"ok", "placeholder"});

    /* One bad report under a threshold of 2 does not exclude. */
    bad->bad_reports = 1;
    assert_pick(me, 8, 2, (const char *[]){"bad", "ok"});
}

static void test_parents_in_use_are_not_offered_again(void **state)
{
    world(false);
    dmf_scheduler_peer_t *me = child("me", host("x"));
    dmf_scheduler_peer_t *a = peer("a", host("ha"), DMF_PEER_SUCCEEDED, 0);
    peer("b", host("hb"), DMF_PEER_RUNNING, 5);
    peer("c", host("hc"), DMF_PEER_RUNNING, 2);
    uses(me, a);
    assert_pick(me, 8, 2, (const char *[]){"b", "c"});
}

static void test_ties_break_by_peer_id_under_dag(void **state)
{
    /* Equal candidates registered in two different orders: the same pick. */
    static const char *orders[2][4] = {{"pd", "pb", "pa", "pc"}, {"pc", "pa", "pd", "pb"}};
    static const char *hids[] = {"h1", "h2", "h3", "h4"};
    for (size_t o = 0; o < 2; o++) {
        world(false);
        dmf_scheduler_peer_t *me = child("me", host("x"));
        for (size_t i = 0; i < 4; i++)
            peer(orders[o][i], host(hids[i]), DMF_PEER_SUCCEEDED, 0);
        assert_pick(me, 3, 3, (const char *[]){"pa", "pb", "pc"});
        assert_pick(me, 4, 4, (const char *[]){"pa", "pb", "pc", "pd"});
    }
}

/* The mesh order of four equal candidates for the child, as a string of their last letters. */
static void mesh_order(const char *child_id, const char *const *order, char out[5])
{
    static const char *hids[] = {"h1", "h2", "h3", "h4"};
    world(true);
    dmf_scheduler_peer_t *me = child(child_id, host("x"));
    for (size_t i = 0; i < 4; i++)
        peer(order[i], host(hids[i]), DMF_PEER_SUCCEEDED, 0);
    struct dmf_sched_ranked best[4];
    index_all();
    assert_int_equal(dmf_sched_pick_candidates(&w.view, me, best, 4), 4);
    for (size_t i = 0; i < 4; i++)
        out[i] = best[i].peer->peer_id[1];
    out[4] = '\0';
}

static void test_ties_break_by_hash_in_a_mesh(void **state)
{
    static const char *order1[] = {"pa", "pb", "pc", "pd"};
    static const char *order2[] = {"pd", "pc", "pb", "pa"};
    static const char *children[] = {"c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7"};
    char first[5], again[5], reversed[5];
    bool differ = false;
    for (size_t i = 0; i < 8; i++) {
        mesh_order(children[i], order1, again);
        mesh_order(children[i], order2, reversed);
        /* Deterministic: the same child gets the same order, whatever the registration
         * order. */
        assert_string_equal(again, reversed);
        if (i == 0)
            memcpy(first, again, sizeof(first));
        else
            differ |= strcmp(first, again) != 0;
    }
    /* Different children order equal candidates differently (spreading the load). */
    assert_true(differ);
    /* Pinned: a change of hash would move every mesh's parents. */
    mesh_order("c0", order1, again);
    assert_string_equal(again, "dcba");
}

static void test_seed_is_a_parent_of_last_resort_under_dag(void **state)
{
    world(false);
    dmf_scheduler_peer_t *me = child("me", host("x"));
    peer("seed-peer", seed_host("s"), DMF_PEER_SUCCEEDED, 0);
    assert_pick(me, 4, 1, (const char *[]){"seed-peer"});
    /* One normal parent: the seed is added, after it (whatever the scores). */
    dmf_scheduler_peer_t *a = peer("a", host("ha"), DMF_PEER_RUNNING, 1);
    assert_pick(me, 4, 2, (const char *[]){"a", "seed-peer"});
    /* No room left: no seed. */
    assert_pick(me, 1, 1, (const char *[]){"a"});
    /* Two normal parents (one in use, one new): no seed. */
    peer("b", host("hb"), DMF_PEER_RUNNING, 1);
    assert_pick(me, 4, 2, (const char *[]){"a", "b"});
    uses(me, a);
    assert_pick(me, 4, 1, (const char *[]){"b"});
}

static void test_seed_in_every_mesh_peer(void **state)
{
    world(true);
    dmf_scheduler_peer_t *me = child("me", host("x"));
    dmf_scheduler_peer_t *sp = peer("seed-peer", seed_host("s"), DMF_PEER_SUCCEEDED, 0);
    peer("a", host("ha"), DMF_PEER_SUCCEEDED, 0);
    peer("b", host("hb"), DMF_PEER_RUNNING, 5);
    peer("c", host("hc"), DMF_PEER_RUNNING, 1);
    assert_pick(me, 4, 4, (const char *[]){"a", "b", "c", "seed-peer"});
    /* Full: the seed takes the last slot. */
    assert_pick(me, 2, 2, (const char *[]){"a", "seed-peer"});
    assert_pick(me, 1, 1, (const char *[]){"seed-peer"});
    /* A peer that has the seed already gets no second one. */
    uses(me, sp);
    assert_pick(me, 2, 2, (const char *[]){"a", "b"});
}

/* ------------------------------------------------------------ seed choice */

static const char *pick_seed_id(dmf_scheduler_peer_t *p)
{
    struct dmf_sched_host *h = dmf_sched_pick_seed(&w.view, p);
    return h ? h->id : "(none)";
}

static void test_seed_by_rendezvous_is_stable(void **state)
{
    /* The weights are pinned: a task must go to the same seed across restarts and
     * versions, or every seed refetches from the origin. */
    assert_int_equal(dmf_sched_rendezvous(T1, "seed-a"), 0xea20c793e9e513dfull);
    assert_int_equal(dmf_sched_rendezvous(T1, "seed-c"), 0xea20c993e9e51745ull);
    assert_int_equal(dmf_sched_rendezvous(T2, "seed-b"), 0x011af6c535bb1cd2ull);

    static const char *orders[2][3] = {{"seed-a", "seed-b", "seed-c"},
                                       {"seed-c", "seed-a", "seed-b"}};
    for (size_t o = 0; o < 2; o++) {
        world(false);
        dmf_scheduler_peer_t *me = child("me", host("x"));
        for (size_t i = 0; i < 3; i++)
            seed_host(orders[o][i]);
        assert_string_equal(pick_seed_id(me), "seed-c");
        assert_string_equal(pick_seed_id(me), "seed-c");
    }
}

static void test_seed_choice_skips_unusable_seeds(void **state)
{
    world(false);
    dmf_scheduler_peer_t *me = child("me", host("x"));
    assert_string_equal(pick_seed_id(me), "(none)");
    seed_host("seed-a");
    struct dmf_sched_host *b = seed_host("seed-b"), *c = seed_host("seed-c");
    assert_string_equal(pick_seed_id(me), "seed-c");

    /* Holding a peer of the task already (it is asked as a parent, not triggered). */
    dmf_scheduler_peer_t *pc = peer("seed-peer", c, DMF_PEER_RUNNING, 0);
    assert_string_equal(pick_seed_id(me), "seed-b");
    dmf_strmap_del(&w.table, pc->key);
    assert_string_equal(pick_seed_id(me), "seed-c");

    /* Not announced within the host timeout. */
    c->last_seen = NOW - 10000;
    assert_string_equal(pick_seed_id(me), "seed-b");
    c->last_seen = NOW - 9999;
    assert_string_equal(pick_seed_id(me), "seed-c");

    /* Excluded, leaving, or blocked by this peer. */
    c->bad_reports = 2;
    assert_string_equal(pick_seed_id(me), "seed-b");
    b->leaving = true;
    assert_string_equal(pick_seed_id(me), "seed-a");
    me->blocked[me->nblocked++] = (char *)"seed-a";
    assert_string_equal(pick_seed_id(me), "(none)");

    /* A trigger failed for the task: no seed at all. */
    c->bad_reports = 0;
    assert_string_equal(pick_seed_id(me), "seed-c");
    w.task.seed_failed = true;
    assert_string_equal(pick_seed_id(me), "(none)");
}

static int teardown(void **state)
{
    world(false);
    dmf_strmap_free(&w.table);
    return 0;
}

/* ------------------------------------------------------------ the rank index */

static uint32_t rnd_state = 12345;

static uint32_t rnd(uint32_t n)
{
    rnd_state = rnd_state * 1103515245u + 12345u;
    return (rnd_state >> 8) % n;
}

static const char *const rnd_idcs[] = {"", "", "dc1", "dc2"};
static const char *const rnd_locations[] = {"", "eu|fr", "eu|fr|par", "eu|de", "us"};
static const char *const rnd_hids[] = {"h0", "h1", "h2",  "h3",  "h4",  "h5",  "h6",  "h7",
                                       "h8", "h9", "h10", "h11", "h12", "h13", "h14", "h15"};
static const char *const rnd_pids[] = {"p0",  "p1",  "p2",  "p3",  "p4",  "p5",  "p6",  "p7",
                                       "p8",  "p9",  "p10", "p11", "p12", "p13", "p14", "p15",
                                       "p16", "p17", "p18", "p19", "p20", "p21", "p22", "p23"};

/* Random figures for a host: upload, load, locality, health, exclusion. */
static void rnd_host(struct dmf_sched_host *h)
{
    h->upload_capacity = rnd(3) ? 100 : 0;
    h->upload_rate = rnd(120);
    h->active_uploads = rnd(4);
    h->idc = (char *)rnd_idcs[rnd(4)];
    h->location = (char *)rnd_locations[rnd(5)];
    h->bad_reports = rnd(8) == 0 ? 2 : 0;
    memset(h->unreachable, 0, sizeof(h->unreachable));
    for (uint32_t i = rnd(4) == 0 ? rnd(3) : 0; i > 0; i--)
        h->unreachable[i] = (struct dmf_sched_unreachable){i, NOW - 1000};
}

/* Random state, progress and load for a peer. Equal figures are frequent (few values), so
 * the tiebreaks are exercised too. */
static void rnd_peer(dmf_scheduler_peer_t *p)
{
    static const enum dmf_scheduler_peer_state states[] = {
        DMF_PEER_PENDING,        DMF_PEER_RUNNING,   DMF_PEER_RUNNING,
        DMF_PEER_BACK_TO_SOURCE, DMF_PEER_SUCCEEDED, DMF_PEER_FAILED};
    p->state = states[rnd(6)];
    p->placeholder = rnd(10) == 0;
    p->held_base = rnd(11);
    p->nchildren = rnd(4);
    p->mark = rnd(6) == 0 ? EPOCH : 0;
}

/* On random worlds, and after random changes each followed by an index update of the
 * peers changed (as sched.c does), the index's pick is the scan's, for every child and
 * limit. */
static void test_rank_index_picks_as_the_scan(void **state)
{
    for (int round = 0; round < 400; round++) {
        world(round % 2 == 0);
        w.view.unreachable_threshold = rnd(2) ? 2 : 0;
        size_t nh = 2 + rnd(15), np = 1 + rnd(24);
        for (size_t i = 0; i < nh; i++) {
            struct dmf_sched_host *h = rnd(6) == 0 ? seed_host(rnd_hids[i]) : host(rnd_hids[i]);
            rnd_host(h);
        }
        /* One peer per host and task, as the peer table wants: np peers on np of the hosts
         * at most. */
        np = np < nh ? np : nh;
        for (size_t i = 0; i < np; i++)
            rnd_peer(peer(rnd_pids[i], &w.hosts[i], DMF_PEER_PENDING, 0));
        for (size_t i = 0; i < np; i++)
            dmf_rank_index_update(&w.task.rank, &w.peers[i],
                                  dmf_sched_rank_key(w.view.mesh, &w.peers[i]));
        for (int change = 0; change < 6; change++) {
            for (size_t c = 0; c < np; c++) {
                dmf_scheduler_peer_t *me = &w.peers[c];
                uint64_t mark = me->mark;
                me->mark = EPOCH; /* a peer is not its own candidate */
                me->nblocked = 0;
                if (rnd(4) == 0)
                    me->blocked[me->nblocked++] = (char *)rnd_hids[rnd(nh)];
                for (size_t limit = 1; limit <= 8; limit++) {
                    struct dmf_sched_ranked a[DMF_SCHED_CANDIDATES_MAX],
                        b[DMF_SCHED_CANDIDATES_MAX];
                    size_t na = dmf_sched_pick_candidates(&w.view, me, a, limit);
                    size_t nb = dmf_sched_pick_candidates_scan(&w.view, me, b, limit);
                    assert_int_equal(na, nb);
                    for (size_t i = 0; i < na; i++)
                        assert_ptr_equal(a[i].peer, b[i].peer);
                }
                me->mark = mark;
                me->nblocked = 0;
            }
            /* Change a few peers and hosts; update the index for the peers concerned. */
            for (int k = rnd(4); k >= 0; k--) {
                dmf_scheduler_peer_t *q = &w.peers[rnd(np)];
                if (rnd(2))
                    rnd_peer(q);
                else
                    rnd_host(q->host);
                dmf_rank_index_update(&w.task.rank, q, dmf_sched_rank_key(w.view.mesh, q));
            }
        }
    }
}

/* The walk visits every peer in the index once, in descending key order, through
 * inserts, key changes and removals (more than its inline frontier holds). */
static void test_rank_walk_is_in_key_order(void **state)
{
    enum { N = 600 };
    static dmf_scheduler_peer_t ps[N];
    struct dmf_rank_index ix;
    dmf_rank_index_init(&ix);
    memset(ps, 0, sizeof(ps));
    for (int round = 0; round < 20; round++) {
        for (int k = 0; k < 400; k++) {
            dmf_scheduler_peer_t *q = &ps[rnd(N)];
            double key = rnd(5) == 0 ? -1.0 : (double)rnd(50) / 50.0;
            dmf_rank_index_update(&ix, q, key);
        }
        size_t in = 0;
        for (int i = 0; i < N; i++)
            in += ps[i].rank_at != 0;
        assert_int_equal(ix.n, in);
        struct dmf_rank_walk wk;
        dmf_rank_walk_begin(&wk, &ix);
        size_t seen = 0;
        double last = 2.0;
        dmf_scheduler_peer_t *q;
        while ((q = dmf_rank_walk_next(&wk)) != NULL) {
            assert_true(q->rank_at != 0);
            assert_true(q->rank_key <= last);
            last = q->rank_key;
            seen++;
        }
        dmf_rank_walk_end(&wk);
        assert_int_equal(seen, in);
    }
    dmf_rank_index_free(&ix);
}

/* A big task whose peers' figures take few values, so that scores tie in large groups:
 * the index's picks have the scan's scores (the peers may differ only among those that tie
 * exactly with the last pick), and it scores far fewer peers. */
static void test_rank_index_on_a_big_task_with_ties(void **state)
{
    enum { NP = 2000 };
    static struct dmf_sched_host hs[NP];
    static dmf_scheduler_peer_t ps[NP];
    static char ids[NP][16];
    struct dmf_sched_task t;
    memset(&t, 0, sizeof(t));
    memcpy(t.id, T1, sizeof(t.id));
    t.content_length = 10 << 20;
    t.piece_length = 1 << 20;
    t.total_pieces = 10;
    TAILQ_INIT(&t.peers);
    struct dmf_sched_host_list seeds;
    LIST_INIT(&seeds);
    dmf_strmap_t table;
    dmf_strmap_init(&table);
    memset(hs, 0, sizeof(hs));
    memset(ps, 0, sizeof(ps));
    for (int round = 0; round < 2; round++) {
        bool mesh = round == 0;
        struct dmf_sched_view v = {.now = NOW,
                                   .mesh = mesh,
                                   .bad_parent_threshold = 2,
                                   .host_timeout_ms = 10000,
                                   .epoch = EPOCH,
                                   .seeds = &seeds,
                                   .peers = &table};
        for (int i = 0; i < NP; i++) {
            snprintf(ids[i], sizeof(ids[i]), "p%d", i);
            struct dmf_sched_host *h = &hs[i];
            h->id = ids[i];
            h->idc = (char *)"";
            h->location = (char *)(i % 3 ? "" : "eu|fr");
            h->upload_capacity = 100;
            h->upload_rate = (uint64_t)(i % 7) * 10;
            LIST_INIT(&h->peers);
            dmf_scheduler_peer_t *p = &ps[i];
            snprintf(p->key, sizeof(p->key), "%.64s%.15s", t.id, h->id);
            p->peer_id = ids[i];
            p->task = &t;
            p->host = h;
            p->state = i % 5 ? DMF_PEER_RUNNING : DMF_PEER_SUCCEEDED;
            p->held_base = (uint32_t)(i % 3);
            p->nchildren = (uint32_t)(i % 4);
            dmf_bitmap_init(&p->held);
            LIST_INIT(&p->parents);
            LIST_INIT(&p->children);
            if (round == 0) {
                TAILQ_INSERT_TAIL(&t.peers, p, in_task);
                t.npeers++;
                dmf_strmap_put(&table, p->key, p);
            }
            dmf_rank_index_update(&t.rank, p, dmf_sched_rank_key(mesh, p));
        }
        for (int c = 0; c < NP; c += 97) {
            dmf_scheduler_peer_t *me = &ps[c];
            me->mark = EPOCH;
            for (size_t limit = 1; limit <= DMF_SCHED_CANDIDATES_MAX; limit *= 2) {
                struct dmf_sched_ranked a[DMF_SCHED_CANDIDATES_MAX], b[DMF_SCHED_CANDIDATES_MAX];
                size_t na = dmf_sched_pick_candidates(&v, me, a, limit);
                size_t nb = dmf_sched_pick_candidates_scan(&v, me, b, limit);
                assert_int_equal(na, nb);
                for (size_t i = 0; i < na; i++) {
                    assert_true(a[i].peer == b[i].peer ||
                                (a[i].score - b[i].score < 1e-9 && b[i].score - a[i].score < 1e-9));
                    assert_true(a[i].peer != me);
                }
            }
            me->mark = 0;
        }
    }
    dmf_rank_index_free(&t.rank);
    dmf_strmap_free(&table);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_more_loaded_ranks_lower, teardown),
        cmocka_unit_test_teardown(test_mesh_counts_children_given_as_load, teardown),
        cmocka_unit_test_teardown(test_less_progressed_ranks_lower, teardown),
        cmocka_unit_test(test_location_affinity),
        cmocka_unit_test_teardown(test_farther_ranks_lower, teardown),
        cmocka_unit_test_teardown(test_recently_unreachable_ranks_lower, teardown),
        cmocka_unit_test_teardown(test_stalling_host_is_not_offered, teardown),
        cmocka_unit_test_teardown(test_limit_is_respected_best_first, teardown),
        cmocka_unit_test_teardown(test_who_is_not_offered, teardown),
        cmocka_unit_test_teardown(test_parents_in_use_are_not_offered_again, teardown),
        cmocka_unit_test_teardown(test_ties_break_by_peer_id_under_dag, teardown),
        cmocka_unit_test_teardown(test_ties_break_by_hash_in_a_mesh, teardown),
        cmocka_unit_test_teardown(test_seed_is_a_parent_of_last_resort_under_dag, teardown),
        cmocka_unit_test_teardown(test_seed_in_every_mesh_peer, teardown),
        cmocka_unit_test_teardown(test_seed_by_rendezvous_is_stable, teardown),
        cmocka_unit_test_teardown(test_seed_choice_skips_unusable_seeds, teardown),
        cmocka_unit_test_teardown(test_rank_index_picks_as_the_scan, teardown),
        cmocka_unit_test(test_rank_walk_is_in_key_order),
        cmocka_unit_test(test_rank_index_on_a_big_task_with_ties),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
