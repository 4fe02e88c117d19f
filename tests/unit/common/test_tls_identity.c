/* Identity and role decisions for mutual TLS (common/tls_identity.h). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "common/tls_identity.h"

static int from(const char *cn, const char *ou, struct dmf_tls_identity *id)
{
    const char *cns[1] = {cn}, *ous[1] = {ou};
    size_t cl[1] = {cn ? strlen(cn) : 0}, ol[1] = {ou ? strlen(ou) : 0};
    char why[128];
    return dmf_tls_identity_from_subject(cns, cl, cn ? 1 : 0, ous, ol, ou ? 1 : 0, id, why,
                                         sizeof(why));
}

static void test_host_id(void **state)
{
    assert_true(dmf_tls_host_id_valid("host-1.example:a_b"));
    assert_false(dmf_tls_host_id_valid(""));
    assert_false(dmf_tls_host_id_valid(NULL));
    assert_false(dmf_tls_host_id_valid("-x"));
    assert_false(dmf_tls_host_id_valid(".x"));
    assert_false(dmf_tls_host_id_valid("a b"));
    assert_false(dmf_tls_host_id_valid("a/b"));
    char big[DMF_TLS_ID_MAX + 2];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_false(dmf_tls_host_id_valid(big));
    big[DMF_TLS_ID_MAX] = '\0';
    assert_true(dmf_tls_host_id_valid(big));
}

static void test_subject(void **state)
{
    struct dmf_tls_identity id;
    assert_int_equal(from("h1", "seed", &id), 0);
    assert_string_equal(id.host_id, "h1");
    assert_int_equal(id.role, DMF_TLS_ROLE_SEED);
    assert_int_equal(from("h1", NULL, &id), 0);
    assert_int_equal(id.role, DMF_TLS_ROLE_PEER);
    assert_int_equal(from("s", "scheduler", &id), 0);
    assert_int_equal(id.role, DMF_TLS_ROLE_SCHEDULER);
    /* attacks: unknown or differently-cased role, missing CN, bad CN */
    assert_int_equal(from("h1", "Seed", &id), -EPERM);
    assert_int_equal(id.role, DMF_TLS_ROLE_NONE);
    assert_int_equal(from("h1", "seed,scheduler", &id), -EPERM);
    assert_int_equal(from(NULL, "seed", &id), -EPERM);
    assert_int_equal(from("a b", "seed", &id), -EPERM);
}

static void test_subject_ambiguous(void **state)
{
    struct dmf_tls_identity id;
    char why[128];
    const char *cns[2] = {"h1", "h2"}, *ous[2] = {"peer", "seed"};
    size_t l[2] = {2, 2}, ol[2] = {4, 4};
    /* two CNs: which host is it? Neither. */
    assert_int_equal(dmf_tls_identity_from_subject(cns, l, 2, ous, ol, 1, &id, why, sizeof(why)),
                     -EPERM);
    /* two OUs (peer + seed): a peer must not add a seed role beside its own */
    assert_int_equal(dmf_tls_identity_from_subject(cns, l, 1, ous, ol, 2, &id, why, sizeof(why)),
                     -EPERM);
    /* an embedded NUL: "h1\0evil" is not "h1" */
    const char *nul[1] = {"h1"};
    size_t nl[1] = {7};
    assert_int_equal(dmf_tls_identity_from_subject(nul, nl, 1, ous, ol, 0, &id, why, sizeof(why)),
                     -EPERM);
}

static void test_decisions(void **state)
{
    struct dmf_tls_identity a = {.host_id = "hA", .role = DMF_TLS_ROLE_PEER};
    struct dmf_tls_identity seed = {.host_id = "s1", .role = DMF_TLS_ROLE_SEED};
    struct dmf_tls_identity sched = {.host_id = "sch", .role = DMF_TLS_ROLE_SCHEDULER};
    struct dmf_tls_identity mgr = {.host_id = "m", .role = DMF_TLS_ROLE_MANAGER};
    struct dmf_tls_identity none = {.host_id = "hA", .role = DMF_TLS_ROLE_NONE};
    assert_true(dmf_tls_may_act_for(&a, "hA"));
    assert_false(dmf_tls_may_act_for(&a, "hB"));
    assert_false(dmf_tls_may_act_for(&a, "hA2"));
    assert_false(dmf_tls_may_act_for(&a, "h"));
    assert_false(dmf_tls_may_act_for(&a, NULL));
    assert_false(dmf_tls_may_act_for(&none, "hA"));
    assert_true(dmf_tls_may_act_for(NULL, "anything")); /* TLS off: as before */

    assert_false(dmf_tls_is_seed(&a, false)); /* a peer cert claiming seed is not one */
    assert_true(dmf_tls_is_seed(&a, true));   /* --seed-hosts still admits it */
    assert_true(dmf_tls_is_seed(&seed, false));
    assert_false(dmf_tls_is_seed(&none, true));
    assert_false(dmf_tls_is_seed(NULL, false));

    assert_false(dmf_tls_may_trigger_download(&a));
    assert_false(dmf_tls_may_trigger_download(&seed));
    assert_false(dmf_tls_may_trigger_download(&none));
    assert_true(dmf_tls_may_trigger_download(&sched));
    assert_true(dmf_tls_may_trigger_download(&mgr));
}

static void test_role_names(void **state)
{
    for (int r = DMF_TLS_ROLE_PEER; r <= DMF_TLS_ROLE_MANAGER; r++)
        assert_int_equal(dmf_tls_role_parse(dmf_tls_role_name((enum dmf_tls_role)r)), r);
    assert_int_equal(dmf_tls_role_parse("none"), DMF_TLS_ROLE_NONE);
    assert_int_equal(dmf_tls_role_parse(NULL), DMF_TLS_ROLE_NONE);
    assert_string_equal(dmf_tls_role_name((enum dmf_tls_role)99), "none");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_host_id),           cmocka_unit_test(test_subject),
        cmocka_unit_test(test_subject_ambiguous), cmocka_unit_test(test_decisions),
        cmocka_unit_test(test_role_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
