/* Secret query parameters (src/common/url_secrets.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/config.h"
#include "common/url_secrets.h"
#include "common/util.h"

static struct dmf_strlist defaults(void)
{
    struct dmf_strlist l = {0};
    char *all = dmf_xstrdup(DMF_SECRET_QUERY_DEFAULT), *save = NULL;
    for (char *t = strtok_r(all, ",", &save); t; t = strtok_r(NULL, ",", &save))
        dmf_strlist_push(&l, t);
    free(all);
    return l;
}

static void expect(const struct dmf_strlist *l, const char *in, const char *want)
{
    char *got = dmf_url_redact(in, l);
    assert_string_equal(got, want);
    free(got);
}

static void test_redacts_values(void **state)
{
    struct dmf_strlist l = defaults();
    expect(&l, "https://h/p?token=s3cr3t&a=1", "https://h/p?token=REDACTED&a=1");
    expect(&l, "https://h/p?a=1&X-Amz-Signature=abc&X-Amz-Credential=AK%2F1#frag",
           "https://h/p?a=1&X-Amz-Signature=REDACTED&X-Amz-Credential=REDACTED");
    /* The fragment goes, with whatever it holds. */
    expect(&l, "https://h/p#x?token=1", "https://h/p");
    /* Any case; a name without '=' has no value to hide; empty pieces stay. */
    expect(&l, "http://h/?TOKEN=x&&sig&sv=2020", "http://h/?TOKEN=REDACTED&&sig&sv=REDACTED");
    /* A value holding '=' is hidden whole. */
    expect(&l, "https://h/?se=a=b=c&x=1", "https://h/?se=REDACTED&x=1");
    /* Unlisted names and a URL without a query are untouched. */
    expect(&l, "https://h/a/b?tokenish=1&atoken=2", "https://h/a/b?tokenish=1&atoken=2");
    expect(&l, "https://h:8443/a", "https://h:8443/a");
    /* Credentials in the authority never survive. */
    expect(&l, "https://user:pw@h/a?token=1", "https://h/a?token=REDACTED");
    /* A "://" after the authority (found by fuzz/fuzz_local_api.c) is not the scheme's. */
    expect(&l, "https:/x/h?token=ab://u@h/=0", "https:/x/h?token=REDACTED");
    expect(&l, "", "");
    char *n = dmf_url_redact(NULL, &l);
    assert_string_equal(n, "");
    free(n);
    /* The worst case for the output's size: many empty values. */
    expect(&l, "http://h/?token=&token=&token=",
           "http://h/?token=REDACTED&token=REDACTED&token=REDACTED");
    dmf_strlist_free(&l);
}

static void test_merge(void **state)
{
    struct dmf_strlist a = {0}, b = {0};
    dmf_strlist_push(&a, "x");
    dmf_strlist_push(&b, "x");
    dmf_strlist_push(&b, "token");
    dmf_strlist_merge(&a, &b);
    dmf_strlist_merge(&a, &b);
    assert_int_equal(a.n, 2);
    assert_string_equal(a.v[1], "token");
    dmf_strlist_free(&a);
    dmf_strlist_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_redacts_values),
        cmocka_unit_test(test_merge),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
