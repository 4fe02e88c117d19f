/* Unit tests for src/daemon/peer/freshness.c: when a cached URL task is checked with the
 * origin, how, and what the answer means. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "daemon/peer/freshness.h"

#define LM "Mon, 01 Jan 2024 00:00:00 GMT"

static void test_needs_check(void **state)
{
    struct dmf_fresh_cache c = {.etag = "\"v1\"", .validated_at_s = 1000};
    assert_false(dmf_fresh_needs_check(&c, 1000 + 299, 300000)); /* inside 5 min */
    assert_true(dmf_fresh_needs_check(&c, 1000 + 300, 300000));  /* at the window's end */
    assert_true(dmf_fresh_needs_check(&c, 1000, 0));             /* 0: always */
    assert_true(dmf_fresh_needs_check(&c, 999, 300000));         /* the clock went back */
    c.validated_at_s = 0;
    assert_true(dmf_fresh_needs_check(&c, 5, 300000)); /* never validated (an old store) */
    c.digest_task = true;
    assert_false(dmf_fresh_needs_check(&c, 1 << 30, 0)); /* immutable */
}

static void test_conditional_headers(void **state)
{
    struct dmf_strlist l = {0};
    struct dmf_fresh_cache c = {.etag = "\"v1\"", .last_modified = LM};
    assert_int_equal(dmf_fresh_conditional_headers(&c, &l), 2);
    assert_string_equal(l.v[0], "If-None-Match: \"v1\"");
    assert_string_equal(l.v[1], "If-Modified-Since: " LM);
    dmf_strlist_free(&l);
    struct dmf_fresh_cache none = {.etag = "", .last_modified = NULL};
    assert_int_equal(dmf_fresh_conditional_headers(&none, &l), 0);
    assert_int_equal(l.n, 0);
    dmf_strlist_free(&l);
}

static void test_answer(void **state)
{
    struct dmf_fresh_cache c = {.etag = "\"v1\"", .last_modified = LM};
    assert_int_equal(dmf_fresh_answer(&c, 304, NULL, NULL), DMF_FRESH_CURRENT);
    assert_int_equal(dmf_fresh_answer(&c, 200, "\"v2\"", LM), DMF_FRESH_NEW_VERSION);
    assert_int_equal(dmf_fresh_answer(&c, 200, "\"v1\"", LM), DMF_FRESH_CURRENT);
    assert_int_equal(dmf_fresh_answer(&c, 200, "W/\"v1\"", LM), DMF_FRESH_CURRENT);
    assert_int_equal(dmf_fresh_answer(&c, 200, "\"v1\"", "Tue, 02 Jan 2024 00:00:00 GMT"),
                     DMF_FRESH_NEW_VERSION);
    assert_int_equal(dmf_fresh_answer(&c, 200, NULL, NULL), DMF_FRESH_NEW_VERSION);
    assert_int_equal(dmf_fresh_answer(&c, 206, "\"v1\"", LM), DMF_FRESH_CURRENT);
    assert_int_equal(dmf_fresh_answer(&c, 0, NULL, NULL), DMF_FRESH_UNREACHABLE);
    assert_int_equal(dmf_fresh_answer(&c, 503, NULL, NULL), DMF_FRESH_UNREACHABLE);
    assert_int_equal(dmf_fresh_answer(&c, 429, NULL, NULL), DMF_FRESH_UNREACHABLE);
    assert_int_equal(dmf_fresh_answer(&c, 302, NULL, NULL), DMF_FRESH_UNREACHABLE);
    assert_int_equal(dmf_fresh_answer(&c, 404, NULL, NULL), DMF_FRESH_NEW_VERSION);
    assert_int_equal(dmf_fresh_answer(&c, 403, NULL, NULL), DMF_FRESH_NEW_VERSION);
    /* No validators kept: any 2xx is a new version (nothing proves it is the same). */
    struct dmf_fresh_cache none = {0};
    assert_int_equal(dmf_fresh_answer(&none, 200, "\"v1\"", LM), DMF_FRESH_NEW_VERSION);
    assert_int_equal(dmf_fresh_answer(&none, 304, NULL, NULL), DMF_FRESH_CURRENT);
    assert_string_equal(dmf_fresh_verdict_name(DMF_FRESH_NEW_VERSION), "new version");
}

static void test_other_version(void **state)
{
    struct dmf_fresh_cache c = {.etag = "\"v1\"", .last_modified = LM};
    assert_true(dmf_fresh_other_version(&c, "\"v2\"", NULL));
    assert_true(dmf_fresh_other_version(&c, "", "Tue, 02 Jan 2024 00:00:00 GMT"));
    assert_false(dmf_fresh_other_version(&c, "\"v1\"", LM));
    assert_false(dmf_fresh_other_version(&c, NULL, ""));
    struct dmf_fresh_cache none = {0};
    assert_false(dmf_fresh_other_version(&none, "\"v2\"", LM)); /* nothing to compare */
}

static void test_client_match(void **state)
{
    assert_true(dmf_fresh_client_match("\"v1\"", NULL, "\"v1\"", LM));
    assert_true(dmf_fresh_client_match("\"a\", W/\"v1\"", NULL, "\"v1\"", LM));
    assert_true(dmf_fresh_client_match("*", NULL, "\"v1\"", NULL));
    assert_false(dmf_fresh_client_match("\"v2\"", NULL, "\"v1\"", LM));
    assert_false(dmf_fresh_client_match("\"v1\"", NULL, NULL, LM)); /* no ETag to match */
    /* If-None-Match wins over If-Modified-Since. */
    assert_false(dmf_fresh_client_match("\"v2\"", LM, "\"v1\"", LM));
    assert_true(dmf_fresh_client_match(NULL, LM, "\"v1\"", LM));
    assert_false(dmf_fresh_client_match("", "Sun, 31 Dec 2023 00:00:00 GMT", "\"v1\"", LM));
    assert_false(dmf_fresh_client_match(NULL, NULL, "\"v1\"", LM));
    assert_false(dmf_fresh_client_match(" , ,", NULL, "\"v1\"", LM));
    assert_false(dmf_fresh_client_match("\"v1", NULL, "\"v1\"", LM)); /* not the same tag */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_needs_check),   cmocka_unit_test(test_conditional_headers),
        cmocka_unit_test(test_answer),        cmocka_unit_test(test_client_match),
        cmocka_unit_test(test_other_version),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
