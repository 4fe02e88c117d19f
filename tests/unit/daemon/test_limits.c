/* Which bandwidth limits apply (src/daemon/limits.c): the local ones and the manager's. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "daemon/limits.h"

static void test_effective(void **state)
{
    struct dmf_limits none = {0, 0, 0}, local = {16, 8, 4}, mgr = {10, 0, 6};
    struct dmf_limits e = dmf_limits_effective(&none, &none);
    assert_int_equal(e.download, 0);
    assert_int_equal(e.origin, 0);
    assert_int_equal(e.upload, 0);
    e = dmf_limits_effective(&local, &none);
    assert_int_equal(e.download, 16);
    assert_int_equal(e.origin, 8);
    assert_int_equal(e.upload, 4);
    /* The lower of two that are set; either alone applies. */
    e = dmf_limits_effective(&local, &mgr);
    assert_int_equal(e.download, 10);
    assert_int_equal(e.origin, 8);
    assert_int_equal(e.upload, 4);
    e = dmf_limits_effective(&none, &mgr);
    assert_int_equal(e.download, 10);
    assert_int_equal(e.upload, 6);
    /* The origin limit is within the download limit. */
    struct dmf_limits wide_origin = {5, 50, 0};
    e = dmf_limits_effective(&wide_origin, &none);
    assert_int_equal(e.origin, 5);
    /* The download limit alone caps the origin too. */
    assert_int_equal(dmf_limits_effective(&mgr, &none).origin, 10);
}

static void test_upload_capacity(void **state)
{
    assert_int_equal(dmf_limits_upload_capacity(1000, 0), 1000);
    assert_int_equal(dmf_limits_upload_capacity(1000, 300), 300);
    assert_int_equal(dmf_limits_upload_capacity(1000, 3000), 1000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_effective),
        cmocka_unit_test(test_upload_capacity),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
