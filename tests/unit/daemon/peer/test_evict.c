/* The eviction decision (src/daemon/peer/evict.c): least recently used first, never a task
 * in use, the TTL, the filesystem's watermarks without a limit, and a full disk's need. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "daemon/peer/evict.h"

#define MIB (1024ull * 1024)

static void test_lru_down_to_the_limit(void **state)
{
    /* Six 30 MiB tasks under a 100 MiB limit: the three oldest go, the newest three stay. */
    struct dmf_evict_task t[6];
    for (int i = 0; i < 6; i++)
        t[i] = (struct dmf_evict_task){.bytes = 30 * MIB, .accessed = 1000 + (5 - i)};
    struct dmf_evict_policy p = {.limit = 100 * MIB, .now = 2000};
    enum dmf_evict_reason out[6];
    uint64_t freed;
    assert_int_equal(dmf_evict_plan(t, 6, &p, out, &freed), 3);
    assert_int_equal(freed, 90 * MIB);
    /* t[5], t[4], t[3] are the least recently used (accessed 1000, 1001, 1002). */
    for (int i = 0; i < 3; i++)
        assert_int_equal(out[i], DMF_EVICT_KEEP);
    for (int i = 3; i < 6; i++)
        assert_int_equal(out[i], DMF_EVICT_SPACE);
}

static void test_under_the_limit_nothing_goes(void **state)
{
    struct dmf_evict_task t[3] = {{10 * MIB, 1, false}, {10 * MIB, 2, false}, {10 * MIB, 3, false}};
    struct dmf_evict_policy p = {.limit = 30 * MIB, .now = 10};
    enum dmf_evict_reason out[3];
    assert_int_equal(dmf_evict_plan(t, 3, &p, out, NULL), 0);
    assert_int_equal(dmf_evict_excess(30 * MIB, &p), 0);
    assert_int_equal(dmf_evict_excess(30 * MIB + 1, &p), 1);
}

static void test_in_use_never_goes(void **state)
{
    /* The oldest two are in use: the next oldest go instead, and when nothing else can go
     * the plan stays over the limit rather than touch them. */
    struct dmf_evict_task t[4] = {
        {50 * MIB, 1, true}, {50 * MIB, 2, true}, {50 * MIB, 3, false}, {50 * MIB, 4, false}};
    struct dmf_evict_policy p = {.limit = 120 * MIB, .now = 10, .ttl = 8};
    enum dmf_evict_reason out[4];
    uint64_t freed;
    /* 80 MiB over: t[0] and t[1] are older (and t[0] expired) but in use; t[2] and t[3] go. */
    assert_int_equal(dmf_evict_plan(t, 4, &p, out, &freed), 2);
    assert_int_equal(out[0], DMF_EVICT_KEEP);
    assert_int_equal(out[1], DMF_EVICT_KEEP);
    assert_int_equal(out[2], DMF_EVICT_SPACE);
    assert_int_equal(out[3], DMF_EVICT_SPACE);
    assert_int_equal(freed, 100 * MIB);

    p.limit = 10 * MIB;
    t[2].in_use = t[3].in_use = true;
    assert_int_equal(dmf_evict_plan(t, 4, &p, out, &freed), 0);
    assert_int_equal(freed, 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(out[i], DMF_EVICT_KEEP);
}

static void test_ttl(void **state)
{
    struct dmf_evict_task t[3] = {{1, 100, false}, {1, 150, false}, {1, 100, true}};
    struct dmf_evict_policy p = {.limit = 1000, .now = 200, .ttl = 60};
    enum dmf_evict_reason out[3];
    assert_int_equal(dmf_evict_plan(t, 3, &p, out, NULL), 1);
    assert_int_equal(out[0], DMF_EVICT_EXPIRED); /* 100 s unused */
    assert_int_equal(out[1], DMF_EVICT_KEEP);    /* 50 s */
    assert_int_equal(out[2], DMF_EVICT_KEEP);    /* in use: kept however old */
    p.ttl = 0;                                   /* no TTL */
    assert_int_equal(dmf_evict_plan(t, 3, &p, out, NULL), 0);
}

static void test_filesystem_watermarks(void **state)
{
    /* No limit: a 1000 MiB filesystem with 790 MiB used keeps everything; at 850 MiB
     * used, tasks go until 700 MiB would be used (150 MiB), oldest first. */
    struct dmf_evict_task t[4] = {
        {100 * MIB, 4, false}, {100 * MIB, 1, false}, {100 * MIB, 3, false}, {100 * MIB, 2, false}};
    struct dmf_evict_policy p = {.fs_size = 1000 * MIB, .fs_free = 210 * MIB, .now = 10};
    enum dmf_evict_reason out[4];
    assert_int_equal(dmf_evict_plan(t, 4, &p, out, NULL), 0);
    p.fs_free = 150 * MIB;
    assert_int_equal(dmf_evict_excess(400 * MIB, &p), 150 * MIB);
    uint64_t freed;
    assert_int_equal(dmf_evict_plan(t, 4, &p, out, &freed), 2);
    assert_int_equal(freed, 200 * MIB);
    assert_int_equal(out[1], DMF_EVICT_SPACE); /* accessed 1 */
    assert_int_equal(out[3], DMF_EVICT_SPACE); /* accessed 2 */
    assert_int_equal(out[0], DMF_EVICT_KEEP);
    assert_int_equal(out[2], DMF_EVICT_KEEP);
}

static void test_need_on_a_full_disk(void **state)
{
    /* Under the limit, a write that found the disk full still frees what it needs. */
    struct dmf_evict_task t[3] = {{4 * MIB, 1, false}, {4 * MIB, 2, false}, {4 * MIB, 3, true}};
    struct dmf_evict_policy p = {.limit = 100 * MIB, .now = 10, .need = 5 * MIB};
    enum dmf_evict_reason out[3];
    uint64_t freed;
    assert_int_equal(dmf_evict_plan(t, 3, &p, out, &freed), 2);
    assert_int_equal(freed, 8 * MIB);
    assert_int_equal(out[2], DMF_EVICT_KEEP);
    assert_int_equal(dmf_evict_plan(NULL, 0, &p, out, &freed), 0);
    assert_int_equal(freed, 0);
}

static void test_failed_empty_goes(void **state)
{
    /* A failed download with no piece left goes at once; one with pieces stays (to resume
     * from) under the limit; one in use stays whatever it is. */
    struct dmf_evict_task t[3] = {
        {0, 100, false, true}, {5 * MIB, 100, false, true}, {0, 100, true, true}};
    struct dmf_evict_policy p = {.limit = 100 * MIB, .now = 200};
    enum dmf_evict_reason out[3];
    assert_int_equal(dmf_evict_plan(t, 3, &p, out, NULL), 1);
    assert_int_equal(out[0], DMF_EVICT_FAILED);
    assert_int_equal(out[1], DMF_EVICT_KEEP);
    assert_int_equal(out[2], DMF_EVICT_KEEP);
    assert_string_equal(dmf_evict_reason_name(out[0]), "failed");
}

static void test_failed_with_pieces_has_a_grace(void **state)
{
    /* A failed download's pieces wait DMF_EVICT_FAILED_GRACE for a retry to resume from,
     * then go; a shorter TTL shortens the wait. */
    struct dmf_evict_task t[2] = {{5 * MIB, 0, false, true}, {5 * MIB, 0, false, false}};
    struct dmf_evict_policy p = {.limit = 100 * MIB, .now = DMF_EVICT_FAILED_GRACE - 1};
    enum dmf_evict_reason out[2];
    assert_int_equal(dmf_evict_plan(t, 2, &p, out, NULL), 0);
    p.now = DMF_EVICT_FAILED_GRACE;
    assert_int_equal(dmf_evict_plan(t, 2, &p, out, NULL), 1);
    assert_int_equal(out[0], DMF_EVICT_FAILED);
    assert_int_equal(out[1], DMF_EVICT_KEEP);
    p.now = 1000;
    p.ttl = 1000;
    assert_int_equal(dmf_evict_plan(t, 2, &p, out, NULL), 2);
    assert_int_equal(out[0], DMF_EVICT_FAILED);
    assert_int_equal(out[1], DMF_EVICT_EXPIRED);
}

static void test_failed_go_first_for_room(void **state)
{
    /* Over the limit, a failed task goes before older complete ones. */
    struct dmf_evict_task t[3] = {
        {30 * MIB, 10, false, false}, {30 * MIB, 20, false, false}, {30 * MIB, 500, false, true}};
    struct dmf_evict_policy p = {.limit = 60 * MIB, .now = 1000};
    enum dmf_evict_reason out[3];
    assert_int_equal(dmf_evict_plan(t, 3, &p, out, NULL), 1);
    assert_int_equal(out[0], DMF_EVICT_KEEP);
    assert_int_equal(out[1], DMF_EVICT_KEEP);
    assert_int_equal(out[2], DMF_EVICT_SPACE);
}

static void test_room_needed(void **state)
{
    /* 10 MiB wanted with 4 MiB free: 6 MiB and the margin; with enough free (another
     * eviction made it meanwhile), nothing. */
    assert_int_equal(dmf_evict_room_needed(10 * MIB, 4 * MIB), 6 * MIB + DMF_EVICT_ROOM_MARGIN);
    assert_int_equal(dmf_evict_room_needed(10 * MIB, 11 * MIB + DMF_EVICT_ROOM_MARGIN), 0);
    assert_int_equal(dmf_evict_room_needed(0, 0), DMF_EVICT_ROOM_MARGIN);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lru_down_to_the_limit),
        cmocka_unit_test(test_under_the_limit_nothing_goes),
        cmocka_unit_test(test_in_use_never_goes),
        cmocka_unit_test(test_ttl),
        cmocka_unit_test(test_filesystem_watermarks),
        cmocka_unit_test(test_need_on_a_full_disk),
        cmocka_unit_test(test_failed_empty_goes),
        cmocka_unit_test(test_failed_with_pieces_has_a_grace),
        cmocka_unit_test(test_failed_go_first_for_room),
        cmocka_unit_test(test_room_needed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
