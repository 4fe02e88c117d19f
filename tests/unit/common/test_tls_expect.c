/* Expected server identities and StatTask's rule (common/tls_expect.h). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "common/tls_expect.h"

static struct dmf_tls_identity ident(const char *host, enum dmf_tls_role role)
{
    struct dmf_tls_identity id;
    snprintf(id.host_id, sizeof(id.host_id), "%s", host);
    id.role = role;
    return id;
}

static void test_expect(void **state)
{
    char why[256];
    struct dmf_tls_identity sched = ident("s1", DMF_TLS_ROLE_SCHEDULER);
    struct dmf_tls_identity seed = ident("seed1", DMF_TLS_ROLE_SEED);
    struct dmf_tls_identity peer = ident("seed1", DMF_TLS_ROLE_PEER);
    struct dmf_tls_identity none = ident("x", DMF_TLS_ROLE_NONE);
    struct dmf_tls_expect any_sched = {.role = DMF_TLS_ROLE_SCHEDULER};
    struct dmf_tls_expect host_seed1 = {.host_id = "seed1"};
    struct dmf_tls_expect any = {0};

    assert_int_equal(dmf_tls_expect_check(&any_sched, &sched, why, sizeof(why)), 0);
    /* a peer or seed certificate cannot pose as the scheduler */
    assert_int_equal(dmf_tls_expect_check(&any_sched, &seed, why, sizeof(why)), -EPERM);
    assert_non_null(strstr(why, "expected role scheduler"));
    /* a seed is checked by its host ID, whatever its role */
    assert_int_equal(dmf_tls_expect_check(&host_seed1, &seed, why, sizeof(why)), 0);
    assert_int_equal(dmf_tls_expect_check(&host_seed1, &peer, why, sizeof(why)), 0);
    struct dmf_tls_identity other = ident("seed2", DMF_TLS_ROLE_SEED);
    assert_int_equal(dmf_tls_expect_check(&host_seed1, &other, why, sizeof(why)), -EPERM);
    assert_non_null(strstr(why, "host seed2, expected host seed1"));
    /* no identity never matches, not even "any" */
    assert_int_equal(dmf_tls_expect_check(&any, &none, why, sizeof(why)), -EPERM);
    assert_int_equal(dmf_tls_expect_check(&any, NULL, why, sizeof(why)), -EPERM);
    assert_int_equal(dmf_tls_expect_check(&any, &peer, why, sizeof(why)), 0);
}

static void test_stat_task(void **state)
{
    struct dmf_tls_identity sched = ident("s1", DMF_TLS_ROLE_SCHEDULER);
    struct dmf_tls_identity mgr = ident("m1", DMF_TLS_ROLE_MANAGER);
    struct dmf_tls_identity peer = ident("d1", DMF_TLS_ROLE_PEER);
    struct dmf_tls_identity none = ident("x", DMF_TLS_ROLE_NONE);
    assert_true(dmf_tls_may_stat_task(NULL, false));
    assert_true(dmf_tls_may_stat_task(&sched, false));
    assert_true(dmf_tls_may_stat_task(&mgr, false));
    assert_false(dmf_tls_may_stat_task(&peer, false));
    assert_true(dmf_tls_may_stat_task(&peer, true));
    assert_false(dmf_tls_may_stat_task(&none, true));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_expect),
        cmocka_unit_test(test_stat_task),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
