/* Observed rates and piece request deadlines (src/daemon/peer/rate.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "daemon/peer/rate.h"

#define KiB 1024u

static void test_nothing_observed(void **state)
{
    struct dmf_rate r = {0};
    assert_int_equal(dmf_rate_deadline_ms(&r, 256 * KiB), DMF_RATE_FIRST_DEADLINE);
    assert_int_equal(dmf_rate_deadline_ms(NULL, 256 * KiB), DMF_RATE_FIRST_DEADLINE);
}

static void test_deadline_follows_the_best_rate(void **state)
{
    struct dmf_rate r = {0};
    /* 1 MiB/s (about 1 KiB/ms): a 4 MiB piece takes 4 s, the deadline is MARGIN times. */
    dmf_rate_add(&r, 1024 * KiB, 1000);
    assert_int_equal(dmf_rate_deadline_ms(&r, 4096 * KiB), 4000 * DMF_RATE_MARGIN);
    /* Fast: the lower bound. */
    struct dmf_rate fast = {0};
    dmf_rate_add(&fast, 256 * KiB, 2);
    assert_int_equal(dmf_rate_deadline_ms(&fast, 256 * KiB), DMF_RATE_MIN_DEADLINE);
    /* Very slow: the upper bound. */
    struct dmf_rate slow = {0};
    dmf_rate_add(&slow, 10 * KiB, 1000);
    assert_int_equal(dmf_rate_deadline_ms(&slow, 4096 * KiB), DMF_RATE_MAX_DEADLINE);
}

static void test_smoothing(void **state)
{
    struct dmf_rate r = {0};
    dmf_rate_add(&r, 1000, 0); /* 0 ms counts as 1 */
    assert_true(r.bytes_per_ms == 1000.0);
    dmf_rate_add(&r, 0, 10);
    assert_true(r.bytes_per_ms > 0 && r.bytes_per_ms < 1000.0);
    /* One slow sample does not make a fast parent look slow. */
    assert_true(r.bytes_per_ms > 500.0);
    assert_int_equal(r.samples, 2);
}

static void test_endgame_age(void **state)
{
    assert_int_equal(dmf_rate_endgame_ms(NULL, 4 * KiB * KiB), DMF_RATE_FIRST_DEADLINE / 2);
    struct dmf_rate r = {0};
    dmf_rate_add(&r, 4 * KiB * KiB, 100);                          /* 4 MiB in 100 ms */
    assert_int_equal(dmf_rate_endgame_ms(&r, 4 * KiB * KiB), 200); /* two pieces' time */
    assert_int_equal(dmf_rate_endgame_ms(&r, 256 * KiB), DMF_RATE_ENDGAME_MIN);
    struct dmf_rate slow = {0};
    dmf_rate_add(&slow, 1, 1000);
    assert_int_equal(dmf_rate_endgame_ms(&slow, 4 * KiB * KiB), DMF_RATE_MAX_DEADLINE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nothing_observed),
        cmocka_unit_test(test_deadline_follows_the_best_rate),
        cmocka_unit_test(test_smoothing),
        cmocka_unit_test(test_endgame_age),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
