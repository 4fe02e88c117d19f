/* The REST route table and its path matching (pure): ids, bounds, and every route needing
 * a role except the two public ones. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "manager/api.h"

static void test_match(void **state)
{
    int64_t ids[2] = {0, 0};
    assert_true(dmf_api_path_match("/api/v1/clusters", "/api/v1/clusters", ids));
    assert_false(dmf_api_path_match("/api/v1/clusters", "/api/v1/clusters/", ids));
    assert_false(dmf_api_path_match("/api/v1/clusters", "/api/v1/cluster", ids));
    assert_true(dmf_api_path_match("/api/v1/clusters/{id}", "/api/v1/clusters/42", ids));
    assert_int_equal(ids[0], 42);
    assert_true(dmf_api_path_match("/api/v1/jobs/{id}/cancel", "/api/v1/jobs/7/cancel", ids));
    assert_int_equal(ids[0], 7);
    assert_false(dmf_api_path_match("/api/v1/clusters/{id}", "/api/v1/clusters/0", ids));
    assert_false(dmf_api_path_match("/api/v1/clusters/{id}", "/api/v1/clusters/-1", ids));
    assert_false(dmf_api_path_match("/api/v1/clusters/{id}", "/api/v1/clusters/1a", ids));
    assert_false(dmf_api_path_match("/api/v1/clusters/{id}", "/api/v1/clusters/", ids));
    assert_false(dmf_api_path_match("/api/v1/clusters/{id}", "/api/v1/clusters/1/2", ids));
    assert_true(
        dmf_api_path_match("/api/v1/clusters/{id}", "/api/v1/clusters/999999999999999999", ids));
    assert_false(
        dmf_api_path_match("/api/v1/clusters/{id}", "/api/v1/clusters/9999999999999999999", ids));
}

static void test_table(void **state)
{
    size_t n = 0, public = 0;
    for (const struct dmf_api_route_info *r; (r = dmf_api_route(n)) != NULL; n++) {
        assert_true(strncmp(r->pattern, "/api/v1/", 8) == 0 ||
                    strncmp(r->pattern, "/oapi/v1/", 9) == 0);
        assert_non_null(r->summary);
        if (r->role == DMF_ROLE_NONE) {
            public++;
            assert_true(strcmp(r->pattern, "/api/v1/openapi.json") == 0 ||
                        strcmp(r->pattern, "/api/v1/users/signin") == 0);
        }
        /* Every write needs at least an operator, but signing out. */
        if (r->method != DMF_API_GET && r->role != DMF_ROLE_NONE &&
            strcmp(r->pattern, "/api/v1/users/signout") != 0)
            assert_true(r->role >= DMF_ROLE_OPERATOR);
        /* No two rows for one method and path. */
        for (size_t j = 0; j < n; j++) {
            const struct dmf_api_route_info *o = dmf_api_route(j);
            assert_false(o->method == r->method && strcmp(o->pattern, r->pattern) == 0);
        }
    }
    assert_int_equal(public, 2);
    assert_true(n > 20);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_match),
        cmocka_unit_test(test_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
