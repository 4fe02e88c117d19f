/* Known seeds (src/scheduler/seed_list.c): only an announce matching an entry's id, ip and
 * rpc port makes a host a seed. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "scheduler/seed_list.h"

static char err[256];

static void test_entries_match_exactly(void **state)
{
    struct dmf_seed_list l = {0};
    assert_int_equal(dmf_seed_list_add(&l, "seed|127.0.0.1:6500, 10.0.0.9:7000", err, sizeof(err)),
                     0);
    assert_int_equal(l.n, 2);
    assert_true(dmf_seed_list_admits(&l, "seed", "127.0.0.1", 6500));
    /* Another id, another port, another address: a normal peer. */
    assert_false(dmf_seed_list_admits(&l, "rogue", "127.0.0.1", 6500));
    assert_false(dmf_seed_list_admits(&l, "seed", "127.0.0.1", 6501));
    assert_false(dmf_seed_list_admits(&l, "seed", "127.0.0.2", 6500));
    /* An entry without id admits any id at that address. */
    assert_true(dmf_seed_list_admits(&l, "anyone", "10.0.0.9", 7000));
    assert_false(dmf_seed_list_admits(&l, "anyone", "not-an-ip", 7000));
    assert_false(dmf_seed_list_admits(NULL, "seed", "127.0.0.1", 6500));
}

static void test_ipv6_is_compared_canonically(void **state)
{
    struct dmf_seed_list l = {0};
    assert_int_equal(dmf_seed_list_add(&l, "s|[fd00::1]:6500", err, sizeof(err)), 0);
    assert_true(dmf_seed_list_admits(&l, "s", "fd00:0:0::1", 6500));
}

static void test_bad_entries_are_refused(void **state)
{
    struct dmf_seed_list l = {0};
    assert_int_equal(dmf_seed_list_add(&l, "seed|host.example:6500", err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "not an IP address"));
    assert_int_equal(dmf_seed_list_add(&l, "|127.0.0.1:1", err, sizeof(err)), -EINVAL);
    assert_int_equal(dmf_seed_list_add(&l, "seed|127.0.0.1", err, sizeof(err)), -EINVAL);
    assert_int_equal(l.n, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_entries_match_exactly),
        cmocka_unit_test(test_ipv6_is_compared_canonically),
        cmocka_unit_test(test_bad_entries_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
