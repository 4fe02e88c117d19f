/* Capped exponential backoff with jitter (src/common/backoff.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common/backoff.h"

static void test_grows_then_caps(void **state)
{
    /* With the largest jitter each wait is the full step: 100, 200, 400, ... capped. */
    assert_int_equal(dmf_backoff_ms(0, 100, 5000, UINT32_MAX - (UINT32_MAX % 51)), 50);
    uint64_t prev = 0;
    for (unsigned a = 0; a < 12; a++) {
        uint64_t hi = 0, lo = UINT64_MAX;
        for (uint32_t r = 0; r < 5000; r += 7) {
            uint64_t d = dmf_backoff_ms(a, 100, 5000, r);
            hi = d > hi ? d : hi;
            lo = d < lo ? d : lo;
        }
        uint64_t step = 100u << (a < 6 ? a : 6);
        if (step > 5000)
            step = 5000;
        assert_true(hi <= step);
        assert_true(lo >= step / 2);
        assert_true(hi >= prev / 2);
        prev = hi;
    }
    /* Far past the cap, and with absurd attempt counts, it stays capped. */
    for (uint32_t r = 0; r < 1000; r++)
        assert_true(dmf_backoff_ms(1000000, 100, 5000, r * 2654435761u) <= 5000);
}

static void test_jitter_spreads(void **state)
{
    /* Different random values give different waits within the same step. */
    uint64_t a = dmf_backoff_ms(3, 100, 5000, 1), b = dmf_backoff_ms(3, 100, 5000, 300);
    assert_true(a != b);
    assert_true(a >= 400 && a <= 800 && b >= 400 && b <= 800);
}

static void test_degenerate(void **state)
{
    assert_int_equal(dmf_backoff_ms(0, 0, 5000, 12345), 0);
    assert_true(dmf_backoff_ms(5, 1, 1, 7) <= 1);
    assert_true(dmf_backoff_ms(0, 9000, 5000, 7) <= 5000); /* base above the cap */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grows_then_caps),
        cmocka_unit_test(test_jitter_spreads),
        cmocka_unit_test(test_degenerate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
