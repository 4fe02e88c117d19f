/* The scheduler's negative cache (src/scheduler/negcache.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "scheduler/negcache.h"

static void test_remembers_until_the_ttl(void **state)
{
    struct dmf_negcache nc;
    dmf_negcache_init(&nc, 5000, 10);
    assert_null(dmf_negcache_get(&nc, "t1", 0));
    dmf_negcache_put(&nc, "t1", 404, "the origin answered HTTP 404", 1000);
    const struct dmf_negcache_entry *e = dmf_negcache_get(&nc, "t1", 5999);
    assert_non_null(e);
    assert_int_equal(e->origin_status, 404);
    assert_string_equal(e->reason, "the origin answered HTTP 404");
    assert_null(dmf_negcache_get(&nc, "t2", 2000));
    assert_null(dmf_negcache_get(&nc, "t1", 6000)); /* expired */
    assert_int_equal(nc.n, 0);
    dmf_negcache_free(&nc);
}

static void test_put_again_extends(void **state)
{
    struct dmf_negcache nc;
    dmf_negcache_init(&nc, 1000, 10);
    dmf_negcache_put(&nc, "t1", 401, "first", 0);
    dmf_negcache_put(&nc, "t2", 0, "other", 100);
    dmf_negcache_put(&nc, "t1", 403, "second", 500);
    assert_int_equal(nc.n, 2);
    assert_null(dmf_negcache_get(&nc, "t2", 1100));
    const struct dmf_negcache_entry *e = dmf_negcache_get(&nc, "t1", 1100);
    assert_non_null(e);
    assert_string_equal(e->reason, "second");
    assert_int_equal(e->origin_status, 403);
    dmf_negcache_free(&nc);
}

static void test_bounded(void **state)
{
    struct dmf_negcache nc;
    dmf_negcache_init(&nc, 60000, 3);
    char id[16];
    for (int i = 0; i < 10; i++) {
        snprintf(id, sizeof(id), "t%d", i);
        dmf_negcache_put(&nc, id, 404, "gone", (uint64_t)i);
    }
    assert_int_equal(nc.n, 3);
    assert_null(dmf_negcache_get(&nc, "t6", 10));
    assert_non_null(dmf_negcache_get(&nc, "t9", 10));
    assert_non_null(dmf_negcache_get(&nc, "t7", 10));
    /* A long reason is cut, not overflowed. */
    char longr[2000];
    memset(longr, 'x', sizeof(longr) - 1);
    longr[sizeof(longr) - 1] = '\0';
    dmf_negcache_put(&nc, "big", 0, longr, 20);
    assert_int_equal(strlen(dmf_negcache_get(&nc, "big", 21)->reason), DMF_NEGCACHE_REASON_MAX - 1);
    dmf_negcache_free(&nc);
}

static void test_ttl_zero_keeps_nothing(void **state)
{
    struct dmf_negcache nc;
    dmf_negcache_init(&nc, 0, 10);
    dmf_negcache_put(&nc, "t1", 404, "gone", 0);
    assert_null(dmf_negcache_get(&nc, "t1", 0));
    dmf_negcache_free(&nc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_remembers_until_the_ttl),
        cmocka_unit_test(test_put_again_extends),
        cmocka_unit_test(test_bounded),
        cmocka_unit_test(test_ttl_zero_keeps_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
