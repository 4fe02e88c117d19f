/* Application names (common/application.h): bounds and charset. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "common/application.h"

static int check(const char *name)
{
    char err[128] = "";
    int rc = dmf_application_check(name, err, sizeof(err));
    if (rc != 0)
        assert_true(err[0] != '\0');
    return rc;
}

static void test_valid(void **state)
{
    assert_int_equal(check(NULL), 0);
    assert_int_equal(check(""), 0);
    assert_int_equal(check("bad"), 0);
    assert_int_equal(check("ci-runner_2.x"), 0);
    assert_int_equal(check("0day"), 0);
    char max[DMF_APPLICATION_MAX + 1];
    memset(max, 'a', DMF_APPLICATION_MAX);
    max[DMF_APPLICATION_MAX] = '\0';
    assert_int_equal(check(max), 0);
}

static void test_invalid(void **state)
{
    char big[DMF_APPLICATION_MAX + 2];
    memset(big, 'a', DMF_APPLICATION_MAX + 1);
    big[DMF_APPLICATION_MAX + 1] = '\0';
    assert_int_equal(check(big), -EINVAL);
    assert_int_equal(check("-x"), -EINVAL);
    assert_int_equal(check(".x"), -EINVAL);
    assert_int_equal(check("a b"), -EINVAL);
    assert_int_equal(check("a/b"), -EINVAL);
    assert_int_equal(check("a\nb"), -EINVAL);
    assert_int_equal(check("caf\xc3\xa9"), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),
        cmocka_unit_test(test_invalid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
