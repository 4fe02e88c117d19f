/* Job requests: the native and Dragonfly open-API shapes normalised, bad ones refused,
 * secrets kept out of what the API shows. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "manager/jobs.h"

static json_t *J(const char *s)
{
    json_t *j = json_loads(s, 0, NULL);
    assert_non_null(j);
    return j;
}

static void test_oapi_shape(void **state)
{
    char err[300];
    json_t *b = J("{\"type\":\"preheat\",\"args\":{\"type\":\"image\","
                  "\"url\":\"https://r/v2/a/manifests/1\",\"platform\":\"linux/arm64\","
                  "\"username\":\"u\",\"password\":\"p\",\"concurrent_count\":3,"
                  "\"scope\":\"all_seed_peers\"},\"scheduler_cluster_ids\":[2]}");
    json_t *n = NULL;
    assert_int_equal(dmf_job_validate(b, 1, &n, err, sizeof(err)), 0);
    json_t *a = json_object_get(n, "args");
    assert_string_equal(json_string_value(json_object_get(n, "type")), "preheat");
    assert_string_equal(json_string_value(json_array_get(json_object_get(a, "urls"), 0)),
                        "https://r/v2/a/manifests/1");
    assert_int_equal(json_integer_value(json_object_get(a, "concurrency")), 3);
    assert_string_equal(json_string_value(json_object_get(a, "scope")), "all_seed_peers");
    assert_int_equal(json_integer_value(json_array_get(json_object_get(a, "cluster_ids"), 0)), 2);
    json_t *pub = dmf_job_args_public(a);
    assert_null(json_object_get(pub, "password"));
    assert_non_null(json_object_get(pub, "username"));
    json_decref(pub);
    json_decref(n);
    json_decref(b);
}

static void test_defaults_and_redaction(void **state)
{
    char err[300];
    json_t *b = J("{\"type\":\"preheat\",\"args\":{\"urls\":[\"http://o/f\"],"
                  "\"headers\":{\"Authorization\":\"Bearer x\",\"X-A\":\"1\"}}}");
    json_t *n = NULL;
    assert_int_equal(dmf_job_validate(b, 0, &n, err, sizeof(err)), 0);
    json_t *a = json_object_get(n, "args");
    assert_string_equal(json_string_value(json_object_get(a, "type")), "file");
    assert_string_equal(json_string_value(json_object_get(a, "scope")), "single_seed_peer");
    assert_int_equal(json_integer_value(json_object_get(a, "concurrency")), 4);
    json_t *pub = dmf_job_args_public(a);
    json_t *h = json_object_get(pub, "headers");
    assert_string_equal(json_string_value(json_object_get(h, "Authorization")), "<redacted>");
    assert_string_equal(json_string_value(json_object_get(h, "X-A")), "1");
    /* The stored args keep the header for the daemons. */
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(a, "headers"), "Authorization")),
        "Bearer x");
    json_decref(pub);
    json_decref(n);
    json_decref(b);
}

static void test_refused(void **state)
{
    const char *bad[] = {
        "{\"args\":{}}",
        "{\"type\":\"preheat\"}",
        "{\"type\":\"preheat\",\"args\":{\"url\":\"file:///etc/passwd\"}}",
        "{\"type\":\"preheat\",\"args\":{\"url\":\"http://a/\\u0001\"}}",
        "{\"type\":\"preheat\",\"args\":{\"url\":\"http://a/\",\"concurrency\":65}}",
        "{\"type\":\"preheat\",\"args\":{\"url\":\"http://a/\",\"headers\":[]}}",
        "{\"type\":\"preheat\",\"args\":{\"url\":\"http://a/\",\"headers\":{\"A\":\"x\\r\\ny\"}}}",
        "{\"type\":\"preheat\",\"args\":{\"url\":\"http://a/\"},\"cluster_ids\":[0]}",
        "{\"type\":\"preheat\",\"args\":{\"url\":\"http://a/\"},\"extra\":1}",
        "{\"type\":\"get_task\",\"args\":{\"task_id\":\"abc\"}}",
        "{\"type\":\"rm\",\"args\":{}}",
        "{\"type\":\"preheat\",\"args\":{\"url\":\"http://a/\",\"application\":\"a b\"}}",
        "{\"type\":\"preheat\",\"args\":{\"url\":\"http://a/\",\"application\":\"\"}}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char err[300] = "";
        json_t *b = J(bad[i]);
        json_t *n = NULL;
        assert_int_equal(dmf_job_validate(b, 0, &n, err, sizeof(err)), -22);
        assert_null(n);
        assert_true(strlen(err) > 0);
        json_decref(b);
    }
}

/* Credentials split off a job's args (kept in memory), the rest stored: what was withheld
 * is named, the public view still shows the header as redacted, and merging restores. */
static void test_split_and_merge_secrets(void **state)
{
    json_t *args =
        json_pack("{s:s, s:s, s:s, s:{s:s, s:s}}", "type", "image", "username", "u", "password",
                  "pw1", "headers", "Authorization", "Bearer t0k", "X-Trace", "t1");
    json_t *sec = dmf_job_args_split(args);
    assert_non_null(sec);
    char *stored = json_dumps(args, JSON_COMPACT);
    assert_null(strstr(stored, "pw1"));
    assert_null(strstr(stored, "t0k"));
    free(stored);
    assert_string_equal(json_string_value(json_object_get(args, "username")), "u");
    json_t *w = json_object_get(args, "withheld");
    assert_true(json_is_true(json_object_get(w, "password")));
    assert_string_equal(json_string_value(json_array_get(json_object_get(w, "headers"), 0)),
                        "Authorization");
    json_t *pub = dmf_job_args_public(args);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(pub, "headers"), "Authorization")),
        "<redacted>");
    json_decref(pub);
    dmf_job_args_merge_secrets(args, sec);
    assert_string_equal(json_string_value(json_object_get(args, "password")), "pw1");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(args, "headers"), "Authorization")),
        "Bearer t0k");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(args, "headers"), "X-Trace")), "t1");
    json_decref(sec);
    json_decref(args);
    /* Nothing secret: nothing split, nothing marked. */
    args = json_pack("{s:s, s:{s:s}}", "type", "file", "headers", "X-Trace", "t1");
    assert_null(dmf_job_args_split(args));
    assert_null(json_object_get(args, "withheld"));
    json_decref(args);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_oapi_shape),
        cmocka_unit_test(test_defaults_and_redaction),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_split_and_merge_secrets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
