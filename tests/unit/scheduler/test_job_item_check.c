/* RunJobItem's checks (src/scheduler/job_item_check.c): well-formed items are accepted,
 * malformed or unbounded ones refused with a reason that never quotes a header value; the
 * target must be a known host's address (and ID when given); only a manager certificate
 * may run items with TLS; "the same item" compares the work, not the headers. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "scheduler/job_item_check.h"

#define T1 "1111111111111111111111111111111111111111111111111111111111111111"

static char why[256];

static Damselfly__V1__RunJobItemRequest preheat(void)
{
    Damselfly__V1__RunJobItemRequest r = DAMSELFLY__V1__RUN_JOB_ITEM_REQUEST__INIT;
    r.item_id = "7/0";
    r.kind = DAMSELFLY__V1__JOB_ITEM_KIND__JOB_ITEM_PREHEAT;
    r.ip = "10.0.0.5";
    r.rpc_port = 65000;
    r.url = "http://origin/a.bin";
    return r;
}

static void test_accepts_good_items(void **state)
{
    (void)state;
    Damselfly__V1__RunJobItemRequest r = preheat();
    assert_int_equal(dmf_job_item_check(&r, why, sizeof(why)), 0);
    Damselfly__V1__Header h = DAMSELFLY__V1__HEADER__INIT, *hp[] = {&h};
    h.name = "Authorization";
    h.value = "Bearer x y";
    r.headers = hp;
    r.n_headers = 1;
    assert_int_equal(dmf_job_item_check(&r, why, sizeof(why)), 0);
    Damselfly__V1__RunJobItemRequest d = DAMSELFLY__V1__RUN_JOB_ITEM_REQUEST__INIT;
    d.item_id = "job:12/3";
    d.kind = DAMSELFLY__V1__JOB_ITEM_KIND__JOB_ITEM_DELETE;
    d.host_id = "node-7";
    d.task_id = T1;
    assert_int_equal(dmf_job_item_check(&d, why, sizeof(why)), 0);
}

static void test_refuses_bad_items(void **state)
{
    (void)state;
    char long_id[DMF_JOB_ITEM_ID_MAX + 2];
    memset(long_id, 'a', sizeof(long_id) - 1);
    long_id[sizeof(long_id) - 1] = '\0';
    const char *bad_ids[] = {"", long_id, "a b", "x\n", "7/0;"};
    for (size_t i = 0; i < sizeof(bad_ids) / sizeof(bad_ids[0]); i++) {
        Damselfly__V1__RunJobItemRequest r = preheat();
        r.item_id = (char *)bad_ids[i];
        assert_int_equal(dmf_job_item_check(&r, why, sizeof(why)), -EINVAL);
        assert_non_null(strstr(why, "item_id"));
    }
    Damselfly__V1__RunJobItemRequest r = preheat();
    r.ip = "";
    assert_int_equal(dmf_job_item_check(&r, why, sizeof(why)), -EINVAL); /* no target */
    r = preheat();
    r.rpc_port = 70000;
    assert_int_equal(dmf_job_item_check(&r, why, sizeof(why)), -EINVAL);
    r = preheat();
    r.host_id = "-bad";
    assert_int_equal(dmf_job_item_check(&r, why, sizeof(why)), -EINVAL);
    r = preheat();
    r.url = "ftp://x/y";
    assert_int_equal(dmf_job_item_check(&r, why, sizeof(why)), -EINVAL);
    r = preheat();
    r.url = "http://x/a b";
    assert_int_equal(dmf_job_item_check(&r, why, sizeof(why)), -EINVAL);
    r = preheat();
    r.kind = 9;
    assert_int_equal(dmf_job_item_check(&r, why, sizeof(why)), -EINVAL);
    /* A bad header is refused without quoting its value. */
    r = preheat();
    Damselfly__V1__Header h = DAMSELFLY__V1__HEADER__INIT, *hp[] = {&h};
    h.name = "X-Secret";
    h.value = "hunter2\r\nInjected: 1";
    r.headers = hp;
    r.n_headers = 1;
    assert_int_equal(dmf_job_item_check(&r, why, sizeof(why)), -EINVAL);
    assert_null(strstr(why, "hunter2"));
    r.n_headers = DMF_JOB_ITEM_HEADERS + 1;
    assert_int_equal(dmf_job_item_check(&r, why, sizeof(why)), -EINVAL);
    /* A delete needs a task ID. */
    Damselfly__V1__RunJobItemRequest d = preheat();
    d.kind = DAMSELFLY__V1__JOB_ITEM_KIND__JOB_ITEM_DELETE;
    d.task_id = "ABC";
    assert_int_equal(dmf_job_item_check(&d, why, sizeof(why)), -EINVAL);
    assert_non_null(strstr(why, "task_id"));
}

static void test_targets_only_the_known_host(void **state)
{
    (void)state;
    Damselfly__V1__RunJobItemRequest r = preheat();
    assert_true(dmf_job_item_targets(&r, "seed", "10.0.0.5", 65000));
    assert_false(dmf_job_item_targets(&r, "seed", "10.0.0.5", 65001));
    assert_false(dmf_job_item_targets(&r, "seed", "10.0.0.6", 65000));
    assert_false(dmf_job_item_targets(&r, "seed", "10.0.0.5", 0));
    r.host_id = "seed";
    assert_true(dmf_job_item_targets(&r, "seed", "10.0.0.5", 65000));
    assert_false(dmf_job_item_targets(&r, "other", "10.0.0.5", 65000));
    r.ip = "";
    r.rpc_port = 0;
    assert_true(dmf_job_item_targets(&r, "seed", "10.9.9.9", 1));
    r.host_id = "";
    assert_false(dmf_job_item_targets(&r, "seed", "10.9.9.9", 1)); /* no target at all */
}

static void test_only_a_manager_may_run_items(void **state)
{
    (void)state;
    struct dmf_tls_identity id = {.host_id = "x"};
    assert_true(dmf_job_item_may_run(NULL)); /* TLS off */
    id.role = DMF_TLS_ROLE_MANAGER;
    assert_true(dmf_job_item_may_run(&id));
    enum dmf_tls_role others[] = {DMF_TLS_ROLE_NONE, DMF_TLS_ROLE_PEER, DMF_TLS_ROLE_SEED,
                                  DMF_TLS_ROLE_SCHEDULER};
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
        id.role = others[i];
        assert_false(dmf_job_item_may_run(&id));
    }
}

static void test_same_compares_the_work(void **state)
{
    (void)state;
    Damselfly__V1__RunJobItemRequest a = preheat(), b = preheat();
    assert_true(dmf_job_item_same(&a, &b));
    b.url = "http://origin/b.bin";
    assert_false(dmf_job_item_same(&a, &b));
    b = preheat();
    b.rpc_port = 1;
    assert_false(dmf_job_item_same(&a, &b));
    b = preheat();
    b.kind = DAMSELFLY__V1__JOB_ITEM_KIND__JOB_ITEM_DELETE;
    assert_false(dmf_job_item_same(&a, &b));
    /* Asked again with the host ID the first answer named: the same item. */
    b = preheat();
    b.host_id = "seed";
    assert_true(dmf_job_item_same(&a, &b));
    a.host_id = "other";
    assert_false(dmf_job_item_same(&a, &b));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepts_good_items),
        cmocka_unit_test(test_refuses_bad_items),
        cmocka_unit_test(test_targets_only_the_known_host),
        cmocka_unit_test(test_only_a_manager_may_run_items),
        cmocka_unit_test(test_same_compares_the_work),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
