/* `get`'s exit codes from the daemon's answers (src/cli/get_exit.c). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cli/get_exit.h"

static void test_from_daemon(void **state)
{
    assert_int_equal(dmf_get_exit_for_daemon(4, "timed out after 1.0 s with 0 bytes of 8"),
                     DMF_GET_EXIT_TIMEOUT);
    assert_int_equal(dmf_get_exit_for_daemon(10, "content digest mismatch: expected a, got b"),
                     DMF_GET_EXIT_INTEGRITY);
    assert_int_equal(dmf_get_exit_for_daemon(10, "cannot fetch from the origin: the origin "
                                                 "answered HTTP 404"),
                     DMF_GET_EXIT_HTTP);
    assert_int_equal(dmf_get_exit_for_daemon(10, "cannot fetch from the origin: Failed to "
                                                 "connect to 127.0.0.1 port 1"),
                     DMF_GET_EXIT_NETWORK);
    assert_int_equal(dmf_get_exit_for_daemon(10, "Could not resolve host: nowhere"),
                     DMF_GET_EXIT_NETWORK);
    assert_int_equal(dmf_get_exit_for_daemon(13, "cannot store piece 3: No space left on device"),
                     DMF_GET_EXIT_DISK_FULL);
    assert_int_equal(dmf_get_exit_for_daemon(7, "application 'bad' is on the cluster's block list"),
                     DMF_GET_EXIT_REFUSED);
    assert_int_equal(
        dmf_get_exit_for_daemon(7, "the URL is on the cluster's block list (pattern x)"),
        DMF_GET_EXIT_REFUSED);
    assert_int_equal(dmf_get_exit_for_daemon(10, "something else"), DMF_GET_EXIT_FAILED);
    assert_int_equal(dmf_get_exit_for_daemon(10, NULL), DMF_GET_EXIT_FAILED);
}

static void test_from_write(void **state)
{
    assert_int_equal(dmf_get_exit_for_write(-ENOSPC), DMF_GET_EXIT_DISK_FULL);
    assert_int_equal(dmf_get_exit_for_write(-EDQUOT), DMF_GET_EXIT_DISK_FULL);
    assert_int_equal(dmf_get_exit_for_write(-EACCES), DMF_GET_EXIT_OUTPUT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_from_daemon),
        cmocka_unit_test(test_from_write),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
