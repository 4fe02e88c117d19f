/* Jobs' credentials in memory (manager/job_secrets.h): a reference takes them once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "manager/job_secrets.h"

static void test_put_take_once(void **state)
{
    struct dmf_job_secrets *s = dmf_job_secrets_new();
    char a[DMF_JOB_SECRETS_REF_LEN + 1], b[DMF_JOB_SECRETS_REF_LEN + 1];
    dmf_job_secrets_put(s, json_pack("{s:s}", "password", "one"), a);
    dmf_job_secrets_put(s, json_pack("{s:s}", "password", "two"), b);
    assert_int_equal(strlen(a), DMF_JOB_SECRETS_REF_LEN);
    assert_string_not_equal(a, b);
    assert_null(dmf_job_secrets_take(s, "0123"));
    json_t *x = dmf_job_secrets_take(s, b);
    assert_non_null(x);
    assert_string_equal(json_string_value(json_object_get(x, "password")), "two");
    json_decref(x);
    assert_null(dmf_job_secrets_take(s, b)); /* once */
    x = dmf_job_secrets_take(s, a);
    assert_non_null(x);
    json_decref(x);
    dmf_job_secrets_free(s);
}

static void test_bounded(void **state)
{
    struct dmf_job_secrets *s = dmf_job_secrets_new();
    char first[DMF_JOB_SECRETS_REF_LEN + 1], ref[DMF_JOB_SECRETS_REF_LEN + 1];
    dmf_job_secrets_put(s, json_object(), first);
    for (int i = 0; i < DMF_JOB_SECRETS_MAX; i++)
        dmf_job_secrets_put(s, json_object(), ref);
    assert_null(dmf_job_secrets_take(s, first)); /* the oldest went */
    json_t *x = dmf_job_secrets_take(s, ref);
    assert_non_null(x);
    json_decref(x);
    dmf_job_secrets_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_take_once),
        cmocka_unit_test(test_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
