/* Cluster scopes: validation, CIDRs, and how a host scores against a cluster. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "manager/scope.h"

static json_t *J(const char *s)
{
    json_t *j = json_loads(s, 0, NULL);
    assert_non_null(j);
    return j;
}

static void test_cidr(void **state)
{
    assert_true(dmf_cidr_contains("10.0.0.0/8", "10.200.3.4"));
    assert_false(dmf_cidr_contains("10.0.0.0/8", "11.0.0.1"));
    assert_true(dmf_cidr_contains("10.1.0.0/16", "10.1.255.255"));
    assert_false(dmf_cidr_contains("10.1.0.0/16", "10.2.0.0"));
    assert_true(dmf_cidr_contains("0.0.0.0/0", "1.2.3.4"));
    assert_true(dmf_cidr_contains("192.0.2.7", "192.0.2.7"));
    assert_false(dmf_cidr_contains("192.0.2.7", "192.0.2.8"));
    assert_true(dmf_cidr_contains("192.0.2.0/25", "192.0.2.127"));
    assert_false(dmf_cidr_contains("192.0.2.0/25", "192.0.2.128"));
    assert_true(dmf_cidr_contains("fd00::/8", "fd12::1"));
    assert_false(dmf_cidr_contains("fd00::/8", "10.0.0.1"));
    assert_false(dmf_cidr_contains("10.0.0.0/33", "10.0.0.1"));
    assert_false(dmf_cidr_contains("10.0.0.0/", "10.0.0.1"));
    assert_false(dmf_cidr_contains("10.0.0.0/8x", "10.0.0.1"));
    assert_false(dmf_cidr_contains("garbage", "10.0.0.1"));
    assert_false(dmf_cidr_contains("10.0.0.0/8", ""));
}

static void test_validate(void **state)
{
    char err[300];
    const char *good[] = {
        "{}", "{\"idc\":\"a|b\"}",
        "{\"cidrs\":[\"10.0.0.0/8\",\"fd00::/8\"],\"hostnames\":[\"^n-[0-9]+$\"]}",
        "{\"location\":\"eu|west\"}"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        json_t *j = J(good[i]);
        assert_int_equal(dmf_scope_validate(j, err, sizeof(err)), 0);
        json_decref(j);
    }
    const char *bad[] = {"[]",
                         "{\"idc\":1}",
                         "{\"cidrs\":\"10.0.0.0/8\"}",
                         "{\"cidrs\":[\"10.0.0.0/99\"]}",
                         "{\"hostnames\":[\"(\"]}",
                         "{\"hostnames\":[1]}",
                         "{\"other\":\"x\"}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *j = J(bad[i]);
        err[0] = '\0';
        assert_int_equal(dmf_scope_validate(j, err, sizeof(err)), -22);
        assert_true(strlen(err) > 0);
        json_decref(j);
    }
    /* Bounded: too many items, too long a string. */
    json_t *many = json_pack("{s:[]}", "cidrs");
    for (int i = 0; i <= DMF_SCOPE_MAX_ITEMS; i++)
        json_array_append_new(json_object_get(many, "cidrs"), json_string("10.0.0.0/8"));
    assert_int_equal(dmf_scope_validate(many, err, sizeof(err)), -22);
    json_decref(many);
    char longs[DMF_SCOPE_MAX_LEN + 2];
    memset(longs, 'a', sizeof(longs) - 1);
    longs[sizeof(longs) - 1] = '\0';
    json_t *lj = json_pack("{s:s}", "idc", longs);
    assert_int_equal(dmf_scope_validate(lj, err, sizeof(err)), -22);
    json_decref(lj);
}

static void test_score(void **state)
{
    json_t *s = J("{\"idc\":\"e1|e2\",\"location\":\"eu|east|r1\",\"cidrs\":[\"10.1.0.0/16\"],"
                  "\"hostnames\":[\"^east-[0-9]+$\"]}");
    assert_int_equal(dmf_scope_score(s, "", "", "", ""), 0);
    assert_int_equal(dmf_scope_score(s, "", "10.1.2.3", "", ""), 8);
    assert_int_equal(dmf_scope_score(s, "east-7", "", "", ""), 4);
    assert_int_equal(dmf_scope_score(s, "east-x", "", "", ""), 0);
    assert_int_equal(dmf_scope_score(s, "", "", "e2", ""), 2);
    assert_int_equal(dmf_scope_score(s, "", "", "e", ""), 0);
    assert_int_equal(dmf_scope_score(s, "", "", "", "eu|east|r2"), 2);
    assert_int_equal(dmf_scope_score(s, "", "", "", "us|east"), 0);
    assert_int_equal(dmf_scope_score(s, "east-1", "10.1.0.1", "e1", "eu|east|r1"), 8 + 4 + 2 + 3);
    /* An empty scope matches nothing (the default cluster takes such hosts). */
    json_t *e = J("{}");
    assert_int_equal(dmf_scope_score(e, "east-1", "10.1.0.1", "e1", "eu"), 0);
    assert_int_equal(dmf_scope_score(NULL, "h", "1.2.3.4", "", ""), 0);
    json_decref(e);
    json_decref(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cidr),
        cmocka_unit_test(test_validate),
        cmocka_unit_test(test_score),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
