/* Token bucket and fair share arithmetic (src/common/bucket.c): exact, with an injected
 * clock (nanoseconds). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common/bucket.h"

#define MS (1000ull * 1000)
#define S  (1000ull * MS)

static void test_refill_is_exact(void **state)
{
    struct dmf_bucket b;
    dmf_bucket_init(&b, 1000, 10000, 0); /* 1000 B/s: one byte per ms */
    assert_int_equal(b.tokens, 0);
    assert_false(dmf_bucket_ready(&b, 0));
    assert_false(dmf_bucket_ready(&b, MS - 1)); /* 0.999 bytes earned */
    assert_true(dmf_bucket_ready(&b, MS));
    assert_int_equal(b.tokens, 1);
    dmf_bucket_refill(&b, 1500 * MS);
    assert_int_equal(b.tokens, 1500);
    /* Fractions carry over: 3 x 1/3 ms = 1 ms = 1 byte, no rounding lost. */
    dmf_bucket_init(&b, 3, 100, 0); /* 3 B/s */
    for (int i = 1; i <= 9; i++)
        dmf_bucket_refill(&b, (uint64_t)i * S / 9);
    assert_int_equal(b.tokens, 3);
    assert_int_equal(b.frac, 0);
    /* A clock that goes back counts as no time. */
    dmf_bucket_refill(&b, S / 2);
    assert_int_equal(b.tokens, 3);
}

static void test_burst_caps_idle_savings(void **state)
{
    struct dmf_bucket b;
    dmf_bucket_init(&b, 1000, 500, 0);
    dmf_bucket_refill(&b, 3600 * S); /* an hour idle: at most the burst */
    assert_int_equal(b.tokens, 500);
    assert_int_equal(b.frac, 0);
    /* Default burst: 1/8 s of the rate, at least 4 KiB. */
    assert_int_equal(dmf_bucket_default_burst(16 << 20), 2 << 20);
    assert_int_equal(dmf_bucket_default_burst(1000), 4096);
    dmf_bucket_init(&b, 16 << 20, 0, 0);
    assert_int_equal(b.burst, 2 << 20);
}

static void test_debt_and_wait(void **state)
{
    struct dmf_bucket b;
    dmf_bucket_init(&b, 1000, 10000, 0);
    dmf_bucket_refill(&b, 10 * MS); /* 10 tokens */
    dmf_bucket_charge(&b, 256, 10 * MS);
    assert_int_equal(b.tokens, -246);
    assert_false(dmf_bucket_ready(&b, 10 * MS));
    /* Ready at one token: 247 bytes at 1 B/ms. */
    assert_int_equal(dmf_bucket_wait_ns(&b, 10 * MS), 247 * MS);
    assert_false(dmf_bucket_ready(&b, 257 * MS - 1));
    assert_true(dmf_bucket_ready(&b, 257 * MS));
    assert_int_equal(dmf_bucket_wait_ns(&b, 257 * MS), 0);
    /* Part of a byte already earned shortens the wait by exactly that much. */
    dmf_bucket_init(&b, 1000, 10000, 0);
    dmf_bucket_charge(&b, 1, 0);                                   /* -1 */
    dmf_bucket_refill(&b, MS / 2);                                 /* half a byte */
    assert_int_equal(dmf_bucket_wait_ns(&b, MS / 2), MS + MS / 2); /* 2 bytes - 0.5 */
}

static void test_throughput_over_a_window(void **state)
{
    /* A transfer that moves 64 KiB chunks whenever the bucket is ready, for 5 s at 1 MiB/s:
     * what moved is within one chunk of rate * time (the bucket starts empty). */
    struct dmf_bucket b;
    uint64_t rate = 1 << 20, chunk = 64 << 10, moved = 0, now = 0;
    dmf_bucket_init(&b, rate, 0, 0);
    while (now < 5 * S) {
        if (dmf_bucket_ready(&b, now)) {
            dmf_bucket_charge(&b, chunk, now);
            moved += chunk;
        }
        now += dmf_bucket_wait_ns(&b, now) ?: 1;
    }
    assert_true(moved <= 5 * rate + chunk);
    assert_true(moved >= 5 * rate - chunk);
}

static void test_unlimited_and_set(void **state)
{
    struct dmf_bucket b;
    dmf_bucket_init(&b, 0, 0, 0);
    dmf_bucket_charge(&b, 1ull << 40, 0);
    assert_true(dmf_bucket_ready(&b, 0));
    assert_int_equal(dmf_bucket_wait_ns(&b, 0), 0);
    /* Limited from now on: starts with nothing saved. */
    dmf_bucket_set(&b, 1000, 100, 5 * S);
    assert_false(dmf_bucket_ready(&b, 5 * S));
    assert_true(dmf_bucket_ready(&b, 5 * S + MS));
    /* Tokens earned at the old rate are kept (to the new burst), a debt to one burst. */
    dmf_bucket_refill(&b, 6 * S); /* full: 100 */
    dmf_bucket_set(&b, 10, 40, 6 * S);
    assert_int_equal(b.tokens, 40);
    dmf_bucket_charge(&b, 1000, 6 * S);
    dmf_bucket_set(&b, 20, 50, 6 * S);
    assert_int_equal(b.tokens, -50);
    assert_int_equal(dmf_bucket_wait_ns(&b, 6 * S), 51 * S / 20);
    /* Lowered mid-transfer: the next second moves the new rate. */
    dmf_bucket_init(&b, 16000, 1000, 0);
    dmf_bucket_refill(&b, S);
    dmf_bucket_set(&b, 4000, 0, S);
    assert_int_equal(b.burst, 4096); /* 1/8 s is 500: the 4 KiB floor */
    assert_int_equal(b.tokens, 1000);
    dmf_bucket_charge(&b, 1000, S);
    dmf_bucket_refill(&b, 2 * S);
    assert_int_equal(b.tokens, 4000);
    /* Absurd rates and gaps do not overflow. */
    dmf_bucket_init(&b, UINT64_MAX / 2, UINT64_MAX / 4, 0);
    dmf_bucket_refill(&b, UINT64_MAX);
    assert_int_equal(b.tokens, (int64_t)(UINT64_MAX / 4));
}

static void test_share(void **state)
{
    /* Two flows of equal weight alternate by bytes, not by turns. */
    struct dmf_share a = {0, 4}, b = {0, 4};
    uint64_t got[2] = {0, 0};
    for (int i = 0; i < 1000; i++) {
        uint64_t v[2] = {a.vtime, b.vtime};
        unsigned k = dmf_share_pick(v, 2);
        uint64_t n = k == 0 ? 1000 : 3000; /* b moves bigger chunks */
        dmf_share_charge(k == 0 ? &a : &b, n);
        got[k] += n;
    }
    assert_true(got[0] > got[1] - 3000 && got[0] < got[1] + 3000);
    /* Weights 16 and 1: 16 bytes to 1. */
    struct dmf_share fg = {0, dmf_priority_weight(DMF_PRIORITY_FOREGROUND)},
                     bg = {0, dmf_priority_weight(DMF_PRIORITY_BACKGROUND)};
    got[0] = got[1] = 0;
    for (int i = 0; i < 1700; i++) {
        uint64_t v[2] = {fg.vtime, bg.vtime};
        unsigned k = dmf_share_pick(v, 2);
        dmf_share_charge(k == 0 ? &fg : &bg, 1024);
        got[k] += 1024;
    }
    assert_int_equal(got[0], 1600 * 1024);
    assert_int_equal(got[1], 100 * 1024);
    /* A flow back from idle gets no credit for the time it was away. */
    struct dmf_share idle = {0, 4};
    dmf_share_join(&idle, a.vtime);
    assert_int_equal(idle.vtime, a.vtime);
    dmf_share_join(&idle, 0); /* never moved back */
    assert_int_equal(idle.vtime, a.vtime);
    uint64_t v3[3] = {5, 2, 2};
    assert_int_equal(dmf_share_pick(v3, 3), 1);
}

static void test_priority_names(void **state)
{
    enum dmf_priority p;
    assert_int_equal(dmf_priority_parse("Foreground", &p), 0);
    assert_int_equal(p, DMF_PRIORITY_FOREGROUND);
    assert_int_equal(dmf_priority_parse("background", &p), 0);
    assert_int_equal(p, DMF_PRIORITY_BACKGROUND);
    assert_int_equal(dmf_priority_parse("normal", &p), 0);
    assert_int_equal(p, DMF_PRIORITY_NORMAL);
    assert_int_equal(dmf_priority_parse("urgent", &p), -EINVAL);
    assert_int_equal(dmf_priority_parse(NULL, &p), -EINVAL);
    assert_string_equal(dmf_priority_name(DMF_PRIORITY_BACKGROUND), "background");
    assert_int_equal(dmf_priority_weight(DMF_PRIORITY_NORMAL), 4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refill_is_exact),   cmocka_unit_test(test_burst_caps_idle_savings),
        cmocka_unit_test(test_debt_and_wait),     cmocka_unit_test(test_throughput_over_a_window),
        cmocka_unit_test(test_unlimited_and_set), cmocka_unit_test(test_share),
        cmocka_unit_test(test_priority_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
