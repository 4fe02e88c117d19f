/* Sign-in throttling (src/manager/signin_limit.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "manager/signin_limit.h"

static void test_locks_double_and_success_clears(void **state)
{
    struct dmf_signin_limit *l = dmf_signin_limit_new();
    for (int i = 0; i < DMF_SIGNIN_FREE_FAILURES - 1; i++) {
        dmf_signin_limit_failed(l, "10.0.0.1", "root", 100);
        assert_int_equal(dmf_signin_limit_check(l, "10.0.0.1", "root", 100), 0);
    }
    dmf_signin_limit_failed(l, "10.0.0.1", "root", 100);
    assert_int_equal(dmf_signin_limit_check(l, "10.0.0.1", "root", 100), 1);
    assert_int_equal(dmf_signin_limit_check(l, "10.0.0.9", "root", 100), 1);  /* by name */
    assert_int_equal(dmf_signin_limit_check(l, "10.0.0.1", "alice", 100), 1); /* by address */
    assert_int_equal(dmf_signin_limit_check(l, "10.0.0.9", "alice", 100), 0);
    assert_int_equal(dmf_signin_limit_check(l, "10.0.0.1", "root", 101), 0);
    dmf_signin_limit_failed(l, "10.0.0.1", "root", 101);
    assert_int_equal(dmf_signin_limit_check(l, "10.0.0.1", "root", 101), 2);
    for (int i = 0; i < 20; i++)
        dmf_signin_limit_failed(l, "10.0.0.1", "root", 200);
    assert_int_equal(dmf_signin_limit_check(l, "10.0.0.1", "root", 200), DMF_SIGNIN_MAX_LOCK_S);
    dmf_signin_limit_succeeded(l, "10.0.0.1", "root");
    assert_int_equal(dmf_signin_limit_check(l, "10.0.0.1", "root", 200), 0);
    /* Forgotten after an hour without failures. */
    for (int i = 0; i < DMF_SIGNIN_FREE_FAILURES; i++)
        dmf_signin_limit_failed(l, "10.0.0.2", "bob", 1000);
    assert_true(dmf_signin_limit_check(l, "10.0.0.2", "bob", 1000) > 0);
    dmf_signin_limit_failed(l, "10.0.0.2", "bob", 1001 + DMF_SIGNIN_FORGET_S);
    assert_int_equal(dmf_signin_limit_check(l, "10.0.0.2", "bob", 1001 + DMF_SIGNIN_FORGET_S), 0);
    dmf_signin_limit_free(l);
}

static void test_table_is_bounded(void **state)
{
    struct dmf_signin_limit *l = dmf_signin_limit_new();
    for (int i = 0; i < DMF_SIGNIN_FREE_FAILURES; i++)
        dmf_signin_limit_failed(l, "victim-addr", "victim", 500);
    char a[32];
    /* A flood of fresh names and addresses pushes out the oldest entries, never grows. */
    for (int i = 0; i < 3 * DMF_SIGNIN_KEYS; i++) {
        snprintf(a, sizeof(a), "n%d", i);
        dmf_signin_limit_failed(l, a, a, 400);
    }
    assert_true(dmf_signin_limit_check(l, "victim-addr", "victim", 500) > 0);
    dmf_signin_limit_free(l);
}

static void test_address_of_peer(void **state)
{
    char out[64];
    dmf_signin_addr_of("127.0.0.1:5555", out, sizeof(out));
    assert_string_equal(out, "127.0.0.1");
    dmf_signin_addr_of("[::1]:5555", out, sizeof(out));
    assert_string_equal(out, "::1");
    dmf_signin_addr_of("::1", out, sizeof(out));
    assert_string_equal(out, "::1");
    dmf_signin_addr_of("", out, sizeof(out));
    assert_string_equal(out, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_locks_double_and_success_clears),
        cmocka_unit_test(test_table_is_bounded),
        cmocka_unit_test(test_address_of_peer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
