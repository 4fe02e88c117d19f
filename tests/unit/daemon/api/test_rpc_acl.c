/* Who may call DownloadTask on the rpc port (src/daemon/api/rpc_acl.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "daemon/api/rpc_acl.h"

static void test_only_the_cluster_and_the_allow_list(void **state)
{
    char err[256];
    struct dmf_rpc_acl a;
    struct dmf_strlist allow = {0};
    dmf_strlist_push(&allow, "10.1.0.0/16");
    assert_int_equal(dmf_rpc_acl_init(&a, &allow, err, sizeof(err)), 0);
    struct dmf_strlist managers = {0};
    dmf_strlist_push(&managers, "192.0.2.9:65003");
    dmf_rpc_acl_cluster(&a, "192.0.2.7:8002,[fd00::7]:8002", &managers);
    assert_null(dmf_rpc_acl_check(&a, "ipv4:192.0.2.7:40000"));
    assert_null(dmf_rpc_acl_check(&a, "ipv4:192.0.2.9:40000"));
    assert_null(dmf_rpc_acl_check(&a, "ipv6:[fd00::7]:40000"));
    assert_null(dmf_rpc_acl_check(&a, "ipv6:[::ffff:192.0.2.7]:40000"));
    assert_null(dmf_rpc_acl_check(&a, "ipv4:10.1.2.3:1"));
    assert_null(dmf_rpc_acl_check(&a, "unix:/run/damselfly.sock"));
    assert_non_null(dmf_rpc_acl_check(&a, "ipv4:192.0.2.8:40000"));
    assert_non_null(dmf_rpc_acl_check(&a, "ipv4:127.0.0.1:40000"));
    assert_non_null(dmf_rpc_acl_check(&a, "garbage"));
    assert_non_null(dmf_rpc_acl_check(&a, NULL));
    /* The manager moved the daemon to another scheduler: re-resolved on the change. */
    dmf_rpc_acl_cluster(&a, "127.0.0.1:8002", NULL);
    assert_null(dmf_rpc_acl_check(&a, "ipv4:127.0.0.1:40000"));
    assert_non_null(dmf_rpc_acl_check(&a, "ipv4:192.0.2.7:40000"));
    dmf_rpc_acl_free(&a);
    dmf_strlist_free(&allow);
    dmf_strlist_free(&managers);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_only_the_cluster_and_the_allow_list),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
