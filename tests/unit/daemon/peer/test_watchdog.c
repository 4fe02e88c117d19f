/* The progress watchdog's decisions (src/daemon/peer/watchdog.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "daemon/peer/watchdog.h"

#define KiB 1024u
#define MiB (1024u * KiB)

static void test_no_rate_yet_is_the_bound(void **state)
{
    struct dmf_watchdog w;
    dmf_watchdog_start(&w, 1000);
    assert_int_equal(dmf_watchdog_deadline(&w, 256 * KiB, 2000, 30000), 30000);
    assert_int_equal(dmf_watchdog_left(&w, 1000, 30000), 30000);
    assert_int_equal(dmf_watchdog_left(&w, 31000, 30000), 0);
    assert_int_equal(dmf_watchdog_left(&w, 500, 30000), 30000); /* a clock that went back */
}

static void test_deadline_follows_the_rate(void **state)
{
    struct dmf_watchdog w;
    dmf_watchdog_start(&w, 0);
    /* 1 MiB/s, pieces of 1 MiB: a piece a second, a stall after 8 (the margin). */
    for (int i = 1; i <= 4; i++)
        dmf_watchdog_progress(&w, (uint64_t)i * 1000, MiB);
    assert_int_equal(dmf_watchdog_deadline(&w, MiB, 2000, 30000), 8 * 1000);
    /* Faster: 64 MiB/s with 256 KiB pieces is 4 ms a piece: the lower bound. */
    dmf_watchdog_start(&w, 0);
    dmf_watchdog_progress(&w, 1000, 64 * MiB);
    assert_int_equal(dmf_watchdog_deadline(&w, 256 * KiB, 2000, 30000), 2000);
    /* Slower: 10 KiB/s, 4 MiB pieces: the upper bound. */
    dmf_watchdog_start(&w, 0);
    dmf_watchdog_progress(&w, 1000, 10 * KiB);
    assert_int_equal(dmf_watchdog_deadline(&w, 4 * MiB, 2000, 30000), 30000);
    /* Bounds given the wrong way round: the upper wins. */
    assert_int_equal(dmf_watchdog_deadline(&w, MiB, 9000, 3000), 3000);
}

static void test_stalls_count_and_progress_resets(void **state)
{
    struct dmf_watchdog w;
    dmf_watchdog_start(&w, 0);
    dmf_watchdog_progress(&w, 100, MiB);
    assert_int_equal(dmf_watchdog_left(&w, 1100, 2000), 1000);
    assert_int_equal(dmf_watchdog_left(&w, 2100, 2000), 0);
    assert_int_equal(dmf_watchdog_stalled(&w, 2100), 1);
    /* The next stage gets a whole deadline of its own. */
    assert_int_equal(dmf_watchdog_left(&w, 2100, 2000), 2000);
    assert_int_equal(dmf_watchdog_stalled(&w, 4100), 2);
    dmf_watchdog_progress(&w, 4200, MiB);
    assert_int_equal(w.stalls, 0);
    assert_int_equal(w.bytes, 2 * MiB);
}

static void test_no_overflow(void **state)
{
    struct dmf_watchdog w;
    dmf_watchdog_start(&w, 0);
    dmf_watchdog_progress(&w, UINT64_MAX / 2, 1);
    assert_int_equal(dmf_watchdog_deadline(&w, UINT32_MAX, 2000, 30000), 30000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_rate_yet_is_the_bound),
        cmocka_unit_test(test_deadline_follows_the_rate),
        cmocka_unit_test(test_stalls_count_and_progress_resets),
        cmocka_unit_test(test_no_overflow),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
