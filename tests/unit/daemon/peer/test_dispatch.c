/* Piece selection (src/daemon/peer/dispatch.c) over a piece book and parents made up in
 * the test, with a random callback the test controls. */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "daemon/peer/dispatch.h"

#define MAXP    8
#define MAXREQS 256

struct fixture {
    struct dmf_piece_book book;
    dmf_bitmap_t has[MAXP], deferred[MAXP];
    struct dmf_dispatch_parent parents[MAXP];
    struct dmf_dispatch_in in;
    uint32_t random_value; /* what the random callback answers */
    struct dmf_dispatch_req out[MAXREQS];
    size_t nout;
};

static uint32_t fixed_random(void *arg)
{
    return ((struct fixture *)arg)->random_value;
}

/* A task of npieces pieces (MIN bytes each), every digest known. */
static void fx_init(struct fixture *fx, uint32_t npieces)
{
    memset(fx, 0, sizeof(*fx));
    dmf_book_init(&fx->book);
    assert_int_equal(dmf_book_set_layout(&fx->book, (int64_t)npieces * DMF_PIECE_LENGTH_MIN,
                                         DMF_PIECE_LENGTH_MIN),
                     DMF_BOOK_LAYOUT_CHANGED);
    uint8_t d[DMF_SHA256_LEN] = {0};
    for (uint32_t n = 0; n < npieces; n++) {
        d[0] = (uint8_t)n;
        assert_int_equal(dmf_book_set_digest(&fx->book, n, d), 1);
    }
    fx->in = (struct dmf_dispatch_in){
        .book = &fx->book,
        .parents = fx->parents,
        .parent_concurrency = 1,
        .random = fixed_random,
        .random_arg = fx,
    };
    fx->random_value = 1; /* ties go to the lowest piece */
}

static int setup(void **state)
{
    static struct fixture fx;
    *state = &fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    dmf_book_free(&fx->book);
    for (size_t k = 0; k < MAXP; k++) {
        dmf_bitmap_free(&fx->has[k]);
        dmf_bitmap_free(&fx->deferred[k]);
    }
    return 0;
}

static void set_range(dmf_bitmap_t *b, uint32_t from, uint32_t to)
{
    for (uint32_t n = from; n < to; n++)
        dmf_bitmap_set(b, n);
}

/* A connected parent holding pieces [from, to); returns its index. */
static size_t add_parent(struct fixture *fx, uint32_t from, uint32_t to)
{
    size_t k = fx->in.nparents++;
    assert_true(k < MAXP);
    set_range(&fx->has[k], from, to);
    fx->parents[k] = (struct dmf_dispatch_parent){
        .has = &fx->has[k],
        .deferred = &fx->deferred[k],
        .usable = true,
        .active = true,
    };
    return k;
}

static size_t add_seed(struct fixture *fx, uint32_t from, uint32_t to)
{
    size_t k = add_parent(fx, from, to);
    fx->parents[k].is_seed = true;
    fx->parents[k].complete = true;
    return k;
}

/* Usable peers (parents that are not seeds) holding piece n. */
static int peer_holders(const struct fixture *fx, uint32_t n)
{
    int c = 0;
    for (size_t k = 0; k < fx->in.nparents; k++)
        c += fx->parents[k].usable && !fx->parents[k].is_seed &&
             dmf_bitmap_get(fx->parents[k].has, n);
    return c;
}

/* Plans, and checks what every plan must respect: a piece at most once, only one the
 * book wants (digest known, neither held nor claimed), held by an active parent that has
 * not deferred it, a seed only for pieces no peer holds and only SEED_SLOTS at once. */
static size_t plan(struct fixture *fx, size_t max)
{
    assert_true(max <= MAXREQS);
    fx->nout = dmf_dispatch_plan(&fx->in, fx->out, max);
    assert_true(fx->nout <= max);
    int seed_reqs[MAXP] = {0};
    for (size_t i = 0; i < fx->nout; i++) {
        const struct dmf_dispatch_req *r = &fx->out[i];
        const struct dmf_dispatch_parent *p = &fx->parents[r->parent];
        for (size_t j = 0; j < i; j++)
            assert_int_not_equal(fx->out[j].piece, r->piece);
        assert_true(r->parent < fx->in.nparents);
        assert_true(dmf_book_in_range(&fx->book, r->piece));
        assert_non_null(dmf_book_digest(&fx->book, r->piece));
        assert_false(dmf_bitmap_get(&fx->book.have, r->piece));
        assert_false(dmf_book_claimed(&fx->book, r->piece));
        assert_true(p->active);
        assert_true(dmf_bitmap_get(p->has, r->piece));
        assert_false(p->deferred && dmf_bitmap_get(p->deferred, r->piece));
        if (p->is_seed) {
            assert_int_equal(peer_holders(fx, r->piece), 0);
            assert_true(++seed_reqs[r->parent] + p->inflight <= DMF_DISPATCH_SEED_SLOTS);
        }
    }
    return fx->nout;
}

/* Requests planned to parent k. */
static int reqs_to(const struct fixture *fx, size_t k)
{
    int c = 0;
    for (size_t i = 0; i < fx->nout; i++)
        c += fx->out[i].parent == k;
    return c;
}

/* The i-th request planned to parent k (in plan order). */
static uint32_t nth_piece_to(const struct fixture *fx, size_t k, int i)
{
    for (size_t j = 0; j < fx->nout; j++)
        if (fx->out[j].parent == k && i-- == 0)
            return fx->out[j].piece;
    fail_msg("parent %zu got fewer requests than asked for", k);
    return UINT32_MAX;
}

static void test_nothing_to_plan(void **state)
{
    struct fixture *fx = *state;
    fx_init(fx, 16);
    assert_int_equal(plan(fx, 8), 0); /* no parent */
    add_parent(fx, 0, 16);
    assert_int_equal(plan(fx, 0), 0);
    fx->parents[0].usable = fx->parents[0].active = false;
    assert_int_equal(plan(fx, 8), 0);
    /* A book without a piece length. */
    struct dmf_piece_book empty;
    dmf_book_init(&empty);
    fx->parents[0].usable = fx->parents[0].active = true;
    fx->in.book = &empty;
    assert_int_equal(dmf_dispatch_plan(&fx->in, fx->out, 8), 0);
    dmf_book_free(&empty);
}

static void test_rarest_first(void **state)
{
    struct fixture *fx = *state;
    fx_init(fx, 16);
    fx->in.parent_concurrency = DMF_DISPATCH_SLOTS_MAX;
    /* Piece 9 is held by one parent, piece 5 by two, the others by three. Two parents are
     * busy: only a is asked, and it is asked for the rarest first. */
    size_t b = add_parent(fx, 0, 16), c = add_parent(fx, 0, 16), a = add_parent(fx, 0, 16);
    dmf_bitmap_clear(&fx->has[b], 9);
    dmf_bitmap_clear(&fx->has[b], 5);
    dmf_bitmap_clear(&fx->has[c], 9);
    fx->parents[b].inflight = fx->parents[c].inflight = DMF_DISPATCH_SLOTS_MAX;
    assert_int_equal(plan(fx, 16), 16);
    assert_int_equal(reqs_to(fx, a), 16);
    assert_int_equal(nth_piece_to(fx, a, 0), 9);
    assert_int_equal(nth_piece_to(fx, a, 1), 5);
}

static void test_ties_broken_at_random(void **state)
{
    struct fixture *fx = *state;
    fx_init(fx, 8);
    add_parent(fx, 0, 8);
    /* Reservoir sampling: the i-th tie replaces the choice when random % i == 0. */
    fx->random_value = 1;
    assert_int_equal(plan(fx, 1), 1);
    assert_int_equal(fx->out[0].piece, 0);
    fx->random_value = 0;
    assert_int_equal(plan(fx, 1), 1);
    assert_int_equal(fx->out[0].piece, 7);
    fx->random_value = 3; /* replaces at the 1st and 3rd ties only */
    assert_int_equal(plan(fx, 1), 1);
    assert_int_equal(fx->out[0].piece, 2);
}

static void test_seed_last(void **state)
{
    struct fixture *fx = *state;
    fx_init(fx, 16);
    fx->in.parent_concurrency = 8;
    size_t seed = add_seed(fx, 0, 16), peer = add_parent(fx, 0, 8);
    assert_int_equal(plan(fx, MAXREQS), 9);
    /* The seed gets one piece, one the peer does not hold; the peer its own. */
    assert_int_equal(reqs_to(fx, seed), DMF_DISPATCH_SEED_SLOTS);
    assert_true(nth_piece_to(fx, seed, 0) >= 8);
    assert_int_equal(reqs_to(fx, peer), 8);
    /* A seed busy already gets nothing more. */
    fx->parents[seed].inflight = DMF_DISPATCH_SEED_SLOTS;
    assert_int_equal(plan(fx, MAXREQS), 8);
    assert_int_equal(reqs_to(fx, seed), 0);
    /* Nothing only the seed holds: it is left alone. */
    fx->parents[seed].inflight = 0;
    set_range(&fx->has[peer], 8, 16);
    plan(fx, MAXREQS);
    assert_int_equal(reqs_to(fx, seed), 0);
    /* A peer still connecting counts as a holder too. */
    fx->parents[peer].active = false;
    assert_int_equal(plan(fx, MAXREQS), 0);
}

/* Two seeds and no peer (a cluster whose peers all left): the seeds share the pieces
 * instead of each leaving them to the other, which planned nothing, for ever. */
static void test_two_seeds_alone_share(void **state)
{
    struct fixture *fx = *state;
    fx_init(fx, 16);
    size_t s1 = add_seed(fx, 0, 16), s2 = add_seed(fx, 0, 16);
    assert_int_equal(plan(fx, MAXREQS), 2);
    assert_int_equal(reqs_to(fx, s1), DMF_DISPATCH_SEED_SLOTS);
    assert_int_equal(reqs_to(fx, s2), DMF_DISPATCH_SEED_SLOTS);
}

static void test_seed_slots_do_not_count_for_peers(void **state)
{
    struct fixture *fx = *state;
    fx_init(fx, 16);
    size_t seed = add_seed(fx, 0, 16);
    fx->parents[seed].inflight = 5; /* more than its slots: never counted in the budget */
    size_t peer = add_parent(fx, 0, 8);
    struct dmf_dispatch_budget bud = dmf_dispatch_budget(&fx->in, 16);
    assert_int_equal(bud.in_flight, 0);
    plan(fx, MAXREQS);
    assert_int_equal(reqs_to(fx, seed), 0);
    assert_int_equal(reqs_to(fx, peer), DMF_DISPATCH_MIN_IN_FLIGHT);
}

static void test_per_parent_budget(void **state)
{
    struct fixture *fx = *state;
    fx_init(fx, 64);
    fx->in.parent_concurrency = 3;
    for (int k = 0; k < 3; k++)
        add_parent(fx, 0, 64);
    fx->parents[1].inflight = 2;
    struct dmf_dispatch_budget b = dmf_dispatch_budget(&fx->in, 64);
    assert_int_equal(b.per_parent, 3);
    assert_int_equal(b.total, INT_MAX);
    assert_int_equal(b.in_flight, 2);
    assert_int_equal(plan(fx, MAXREQS), 3 + 1 + 3);
    assert_int_equal(reqs_to(fx, 0), 3);
    assert_int_equal(reqs_to(fx, 1), 1);
    assert_int_equal(reqs_to(fx, 2), 3);
    /* max cuts the plan short, round-robin: one per parent per round. */
    assert_int_equal(plan(fx, 4), 4);
    assert_int_equal(reqs_to(fx, 0), 2);
    assert_int_equal(reqs_to(fx, 1), 1);
    assert_int_equal(reqs_to(fx, 2), 1);
    /* Configured past the cap: the cap. */
    fx->in.parent_concurrency = 100;
    assert_int_equal(dmf_dispatch_budget(&fx->in, 64).per_parent, DMF_DISPATCH_SLOTS_MAX);
}

static void test_min_in_flight(void **state)
{
    struct fixture *fx = *state;
    fx_init(fx, 64);
    fx->in.parent_concurrency = 1;
    size_t a = add_parent(fx, 0, 64);
    /* One parent at concurrency 1 would idle the link between pieces. */
    assert_int_equal(dmf_dispatch_budget(&fx->in, 64).per_parent, DMF_DISPATCH_MIN_IN_FLIGHT);
    assert_int_equal(plan(fx, MAXREQS), DMF_DISPATCH_MIN_IN_FLIGHT);
    assert_int_equal(reqs_to(fx, a), DMF_DISPATCH_MIN_IN_FLIGHT);
    /* Two: half each. */
    add_parent(fx, 0, 64);
    assert_int_equal(dmf_dispatch_budget(&fx->in, 64).per_parent,
                     (DMF_DISPATCH_MIN_IN_FLIGHT + 1) / 2);
    assert_int_equal(plan(fx, MAXREQS), DMF_DISPATCH_MIN_IN_FLIGHT);
    /* One connecting parent is not one to spread over. */
    fx->parents[1].active = false;
    assert_int_equal(dmf_dispatch_budget(&fx->in, 64).per_parent, DMF_DISPATCH_MIN_IN_FLIGHT);
}

/* The child holds 40 of 64 pieces; n downloading parents hold 8 each of the rest. */
static void ahead_of(struct fixture *fx, int n)
{
    fx_init(fx, 64);
    fx->in.parent_concurrency = 4;
    for (uint32_t i = 0; i < 40; i++)
        dmf_book_commit(&fx->book, i, (uint8_t[DMF_SHA256_LEN]){(uint8_t)i});
    for (int k = 0; k < n; k++)
        add_parent(fx, 40 + (uint32_t)k * 3, 48 + (uint32_t)k * 3);
}

static void test_pacing(void **state)
{
    struct fixture *fx = *state;
    ahead_of(fx, 6);
    struct dmf_dispatch_budget b = dmf_dispatch_budget(&fx->in, 64);
    assert_int_equal(b.per_parent, 1);
    assert_int_equal(b.total, 3);
    assert_int_equal(plan(fx, MAXREQS), 3);
    for (size_t k = 0; k < 6; k++)
        assert_true(reqs_to(fx, k) <= 1);
    /* Requests in flight count against the total. */
    fx->parents[5].inflight = 2;
    assert_int_equal(plan(fx, MAXREQS), 1);
    teardown(state);

    /* Few parents: still two at once. */
    ahead_of(fx, 2);
    b = dmf_dispatch_budget(&fx->in, 64);
    assert_int_equal(b.per_parent, 1);
    assert_int_equal(b.total, 2);
    assert_int_equal(plan(fx, MAXREQS), 2);
    teardown(state);

    /* Complete parents are not downloaders to wait for. */
    ahead_of(fx, 6);
    for (size_t k = 0; k < 6; k++)
        fx->parents[k].complete = true;
    b = dmf_dispatch_budget(&fx->in, 64);
    assert_int_equal(b.per_parent, 4);
    assert_int_equal(b.total, INT_MAX);
}

static void test_pacing_within_lead(void **state)
{
    struct fixture *fx = *state;
    /* 12 held against parents at 8: within DMF_DISPATCH_LEAD_MIN. */
    fx_init(fx, 64);
    fx->in.parent_concurrency = 4;
    for (uint32_t i = 0; i < 8 + DMF_DISPATCH_LEAD_MIN; i++)
        dmf_book_commit(&fx->book, i, (uint8_t[DMF_SHA256_LEN]){(uint8_t)i});
    add_parent(fx, 0, 8);
    add_parent(fx, 20, 28);
    struct dmf_dispatch_budget b = dmf_dispatch_budget(&fx->in, 64);
    assert_int_equal(b.per_parent, 4);
    assert_int_equal(b.total, INT_MAX);
    /* One more: ahead. */
    dmf_book_commit(&fx->book, 40, (uint8_t[DMF_SHA256_LEN]){40});
    assert_int_equal(dmf_dispatch_budget(&fx->in, 64).per_parent, 1);
}

static void test_only_wanted_pieces(void **state)
{
    struct fixture *fx = *state;
    fx_init(fx, 32);
    fx->in.parent_concurrency = DMF_DISPATCH_SLOTS_MAX;
    for (int k = 0; k < 3; k++)
        add_parent(fx, 0, 32);
    /* Held 0-3, claimed 4-7, digest unknown 8-11 (a fresh book without those). */
    for (uint32_t n = 0; n < 4; n++)
        dmf_book_commit(&fx->book, n, (uint8_t[DMF_SHA256_LEN]){(uint8_t)n});
    for (uint32_t n = 4; n < 8; n++)
        assert_true(dmf_book_claim(&fx->book, n));
    dmf_bitmap_free(&fx->book.digest_known);
    dmf_bitmap_init(&fx->book.digest_known);
    for (uint32_t n = 0; n < 32; n++)
        if (n < 8 || n >= 12)
            dmf_bitmap_set(&fx->book.digest_known, n);
    /* Every piece left, each once (plan() checks the rest). */
    assert_int_equal(plan(fx, MAXREQS), 20);
}

static void test_parent_past_the_end(void **state)
{
    struct fixture *fx = *state;
    fx_init(fx, 10);
    fx->in.parent_concurrency = DMF_DISPATCH_SLOTS_MAX;
    add_parent(fx, 0, 40); /* says it holds more than the task has */
    assert_int_equal(plan(fx, MAXREQS), 10);
    /* A digest learnt before the length, for a piece past the end the length then put:
     * the book still knows it, the plan does not ask for the piece. */
    dmf_book_free(&fx->book);
    dmf_book_init(&fx->book);
    assert_int_equal(dmf_book_set_digest(&fx->book, 20, (uint8_t[DMF_SHA256_LEN]){20}), 1);
    assert_int_equal(
        dmf_book_set_layout(&fx->book, 10 * (int64_t)DMF_PIECE_LENGTH_MIN, DMF_PIECE_LENGTH_MIN),
        DMF_BOOK_LAYOUT_CHANGED);
    assert_int_equal(dmf_book_set_digest(&fx->book, 3, (uint8_t[DMF_SHA256_LEN]){3}), 1);
    assert_int_equal(plan(fx, MAXREQS), 1);
    assert_int_equal(fx->out[0].piece, 3);
}

static void test_deferred_skipped(void **state)
{
    struct fixture *fx = *state;
    fx_init(fx, 8);
    size_t a = add_parent(fx, 0, 8);
    set_range(&fx->deferred[a], 0, 4);
    assert_int_equal(plan(fx, MAXREQS), 4);
    for (int i = 0; i < 4; i++)
        assert_true(nth_piece_to(fx, a, i) >= 4);
    /* Nothing else to ask it for. */
    set_range(&fx->deferred[a], 4, 8);
    assert_int_equal(plan(fx, MAXREQS), 0);
    /* No deferred set at all. */
    fx->parents[a].deferred = NULL;
    assert_int_equal(plan(fx, MAXREQS), 4);
}

static void test_inactive_parents(void **state)
{
    struct fixture *fx = *state;
    fx_init(fx, 8);
    /* b is connecting: it holds 0-5, so those are less rare than 6 and 7, but it is not
     * asked. c failed (not usable): its piece 6 does not make 6 less rare. */
    size_t a = add_parent(fx, 0, 8), b = add_parent(fx, 0, 6), c = add_parent(fx, 6, 7);
    fx->parents[b].active = false;
    fx->parents[c].usable = fx->parents[c].active = false;
    assert_int_equal(plan(fx, MAXREQS), DMF_DISPATCH_MIN_IN_FLIGHT);
    assert_int_equal(reqs_to(fx, b), 0);
    assert_int_equal(reqs_to(fx, c), 0);
    assert_int_equal(nth_piece_to(fx, a, 0), 6);
    assert_int_equal(nth_piece_to(fx, a, 1), 7);
    /* Its requests in flight still count. */
    fx->parents[b].inflight = 2;
    assert_int_equal(dmf_dispatch_budget(&fx->in, 8).in_flight, 2);
}

/* ---- the endgame */

/* Pieces [0, held) held, the rest claimed; every parent holds everything. */
static void endgame_book(struct fixture *fx, uint32_t npieces, uint32_t held, size_t nparents)
{
    fx_init(fx, npieces);
    uint8_t d[DMF_SHA256_LEN] = {0};
    for (uint32_t n = 0; n < npieces; n++) {
        d[0] = (uint8_t)n;
        if (n < held)
            dmf_book_commit(&fx->book, n, d);
        else
            assert_true(dmf_book_claim(&fx->book, n));
    }
    for (size_t k = 0; k < nparents; k++) {
        add_parent(fx, 0, npieces);
        fx->parents[k].complete = true;
    }
}

static size_t endgame(struct fixture *fx, const struct dmf_dispatch_flight *f, size_t nf,
                      uint64_t min_age)
{
    fx->nout = dmf_dispatch_endgame(&fx->in, f, nf, min_age, fx->out, MAXREQS);
    for (size_t i = 0; i < fx->nout; i++) {
        const struct dmf_dispatch_req *r = &fx->out[i];
        const struct dmf_dispatch_parent *p = &fx->parents[r->parent];
        assert_true(p->active && !p->is_seed && dmf_bitmap_get(p->has, r->piece));
        assert_true(dmf_book_claimed(&fx->book, r->piece));
        for (size_t j = 0; j < nf; j++) /* never to the parent fetching it already */
            assert_false(f[j].piece == r->piece && f[j].parent == r->parent);
        for (size_t j = 0; j < i; j++)
            assert_int_not_equal(fx->out[j].piece, r->piece);
    }
    return fx->nout;
}

static void test_endgame_only_when_all_claimed(void **state)
{
    struct fixture *fx = *state;
    endgame_book(fx, 16, 12, 3);
    struct dmf_dispatch_flight f[] = {{.parent = 0, .piece = 12, .age_ms = 5000}};
    fx->parents[0].inflight = 1;
    dmf_book_release(&fx->book, 15); /* a piece nobody fetches: plan it, no endgame yet */
    assert_false(dmf_dispatch_in_endgame(&fx->book));
    assert_int_equal(endgame(fx, f, 1, 100), 0);
    assert_true(dmf_book_claim(&fx->book, 15));
    assert_true(dmf_dispatch_in_endgame(&fx->book));
    assert_int_equal(endgame(fx, f, 1, 100), 1);
    assert_int_equal(fx->out[0].piece, 12);
    /* Everything held: over, not an endgame. */
    uint8_t d[DMF_SHA256_LEN] = {0};
    for (uint32_t n = 12; n < 16; n++) {
        d[0] = (uint8_t)n;
        dmf_book_commit(&fx->book, n, d);
    }
    assert_false(dmf_dispatch_in_endgame(&fx->book));
    assert_int_equal(endgame(fx, f, 1, 100), 0);
}

static void test_endgame_old_requests_to_the_least_busy(void **state)
{
    struct fixture *fx = *state;
    endgame_book(fx, 16, 14, 3);
    struct dmf_dispatch_flight f[] = {
        {.parent = 0, .piece = 14, .age_ms = 900},
        {.parent = 0, .piece = 15, .age_ms = 50}, /* young: its parent may be fine */
    };
    fx->parents[0].inflight = 2;
    fx->parents[1].inflight = 1;
    assert_int_equal(endgame(fx, f, 2, 100), 1);
    assert_int_equal(fx->out[0].piece, 14);
    assert_int_equal(fx->out[0].parent, 2); /* the one with nothing in flight */
    /* Later both are old: each gets one copy, spread over the other two parents. */
    f[1].age_ms = 400;
    assert_int_equal(endgame(fx, f, 2, 100), 2);
    assert_int_not_equal(fx->out[0].parent, 0);
    assert_int_not_equal(fx->out[1].parent, 0);
}

static void test_endgame_at_most_two_copies(void **state)
{
    struct fixture *fx = *state;
    endgame_book(fx, 8, 7, 3);
    struct dmf_dispatch_flight f[] = {
        {.parent = 0, .piece = 7, .age_ms = 900},
        {.parent = 1, .piece = 7, .age_ms = 400}, /* its copy, already running */
    };
    fx->parents[0].inflight = fx->parents[1].inflight = 1;
    assert_int_equal(endgame(fx, f, 2, 100), 0);
}

static void test_endgame_oldest_first_within_the_budget(void **state)
{
    struct fixture *fx = *state;
    endgame_book(fx, 16, 13, 2); /* 2 peers: 2 requests each */
    struct dmf_dispatch_flight f[] = {
        {.parent = 0, .piece = 13, .age_ms = 300},
        {.parent = 0, .piece = 14, .age_ms = 800},
        {.parent = 1, .piece = 15, .age_ms = 200},
    };
    fx->parents[0].inflight = 2;
    fx->parents[1].inflight = 1; /* one free slot: for the oldest of parent 0's */
    assert_int_equal(endgame(fx, f, 3, 100), 1);
    assert_int_equal(fx->out[0].piece, 14);
    assert_int_equal(fx->out[0].parent, 1);
}

static void test_endgame_never_to_seeds_idle_or_lacking_parents(void **state)
{
    struct fixture *fx = *state;
    endgame_book(fx, 8, 7, 1);
    add_seed(fx, 0, 8);                    /* 1: a seed */
    size_t idle = add_parent(fx, 0, 8);    /* 2: not active */
    size_t lacking = add_parent(fx, 0, 7); /* 3: lacks piece 7 */
    fx->parents[idle].active = false;
    fx->parents[lacking].complete = fx->parents[idle].complete = true;
    struct dmf_dispatch_flight f[] = {{.parent = 0, .piece = 7, .age_ms = 5000}};
    fx->parents[0].inflight = 1;
    assert_int_equal(endgame(fx, f, 1, 100), 0);
    dmf_bitmap_set(&fx->has[lacking], 7);
    assert_int_equal(endgame(fx, f, 1, 100), 1);
    assert_int_equal(fx->out[0].parent, lacking);
}

#define FX_TEST(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        FX_TEST(test_nothing_to_plan),
        FX_TEST(test_rarest_first),
        FX_TEST(test_ties_broken_at_random),
        FX_TEST(test_seed_last),
        FX_TEST(test_two_seeds_alone_share),
        FX_TEST(test_seed_slots_do_not_count_for_peers),
        FX_TEST(test_per_parent_budget),
        FX_TEST(test_min_in_flight),
        FX_TEST(test_pacing),
        FX_TEST(test_pacing_within_lead),
        FX_TEST(test_only_wanted_pieces),
        FX_TEST(test_parent_past_the_end),
        FX_TEST(test_deferred_skipped),
        FX_TEST(test_inactive_parents),
        FX_TEST(test_endgame_only_when_all_claimed),
        FX_TEST(test_endgame_old_requests_to_the_least_busy),
        FX_TEST(test_endgame_at_most_two_copies),
        FX_TEST(test_endgame_oldest_first_within_the_budget),
        FX_TEST(test_endgame_never_to_seeds_idle_or_lacking_parents),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
