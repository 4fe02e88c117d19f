/* --socket-group and --socket-mode (src/daemon/api/socket_perms.c). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "daemon/api/socket_perms.h"

static void test_defaults(void **state)
{
    struct dmf_socket_perms p;
    char err[256];
    assert_int_equal(dmf_socket_perms_parse(NULL, NULL, &p, err, sizeof(err)), 0);
    assert_false(p.has_group);
    assert_int_equal(p.mode, 0600);
    assert_int_equal(dmf_socket_perms_parse("54321", NULL, &p, err, sizeof(err)), 0);
    assert_true(p.has_group);
    assert_int_equal(p.gid, 54321);
    assert_int_equal(p.mode, 0660);
    assert_int_equal(dmf_socket_perms_parse("0", "0666", &p, err, sizeof(err)), 0);
    assert_int_equal(p.gid, 0);
    assert_int_equal(p.mode, 0666);
    assert_int_equal(dmf_socket_perms_parse("root", "600", &p, err, sizeof(err)), 0);
    assert_int_equal(p.gid, 0);
    assert_int_equal(p.mode, 0600);
}

static void test_refused(void **state)
{
    struct dmf_socket_perms p;
    char err[256];
    assert_int_equal(dmf_socket_perms_parse("no-such-group-here", NULL, &p, err, sizeof(err)),
                     -EINVAL);
    assert_non_null(strstr(err, "no group named"));
    assert_int_equal(dmf_socket_perms_parse("99999999999", NULL, &p, err, sizeof(err)), -EINVAL);
    assert_int_equal(dmf_socket_perms_parse(NULL, "0888", &p, err, sizeof(err)), -EINVAL);
    assert_int_equal(dmf_socket_perms_parse(NULL, "rw", &p, err, sizeof(err)), -EINVAL);
    assert_int_equal(dmf_socket_perms_parse(NULL, "01777", &p, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "octal"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
