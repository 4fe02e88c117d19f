/* Registry-mirror helpers: blob paths, the ns parameter, upstream choice. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "daemon/proxy/registry.h"

#define HEX "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static void test_blob_path(void **state)
{
    char d[DMF_DIGEST_STR_LEN + 1];
    assert_true(dmf_registry_blob_path("/v2/library/alpine/blobs/sha256:" HEX, d));
    assert_string_equal(d, "sha256:" HEX);
    assert_true(dmf_registry_blob_path("/v2/a/blobs/sha256:" HEX, d));
    assert_false(dmf_registry_blob_path("/v2/blobs/sha256:" HEX, d));
    assert_false(dmf_registry_blob_path("/v2//a/blobs/sha256:" HEX, d));
    assert_false(dmf_registry_blob_path("/v2/a/blobs/sha256:" HEX "0", d));
    assert_false(dmf_registry_blob_path("/v2/a/blobs/sha256:0123", d));
    assert_false(dmf_registry_blob_path("/v2/a/blobs/sha512:" HEX, d));
    assert_false(dmf_registry_blob_path("/v2/a/manifests/sha256:" HEX, d));
    assert_false(dmf_registry_blob_path("/v2/a/blobs/sha256:0123456789ABCDEF0123456789abcdef"
                                        "0123456789abcdef0123456789abcdef",
                                        d));
}

static void test_strip_ns(void **state)
{
    char *out, *ns;
    dmf_registry_strip_ns("/v2/x/manifests/v1?ns=docker.io", &out, &ns);
    assert_string_equal(out, "/v2/x/manifests/v1");
    assert_string_equal(ns, "docker.io");
    free(out);
    free(ns);
    dmf_registry_strip_ns("/v2/x?a=1&ns=127.0.0.1%3A5000&b=2", &out, &ns);
    assert_string_equal(out, "/v2/x?a=1&b=2");
    assert_string_equal(ns, "127.0.0.1:5000");
    free(out);
    free(ns);
    dmf_registry_strip_ns("/v2/", &out, &ns);
    assert_string_equal(out, "/v2/");
    assert_null(ns);
    free(out);
}

static void test_upstream(void **state)
{
    char *m[] = {"quay.io=https://mirror.example:8443/"};
    struct dmf_strlist map = {.v = m, .n = 1};
    char *u;
    u = dmf_registry_upstream(&map, "http://127.0.0.1:5000/", NULL);
    assert_string_equal(u, "http://127.0.0.1:5000");
    free(u);
    u = dmf_registry_upstream(&map, "http://127.0.0.1:5000", "127.0.0.1:5000");
    assert_string_equal(u, "http://127.0.0.1:5000");
    free(u);
    u = dmf_registry_upstream(&map, NULL, "quay.io");
    assert_string_equal(u, "https://mirror.example:8443");
    free(u);
    u = dmf_registry_upstream(&map, NULL, "docker.io");
    assert_string_equal(u, "https://registry-1.docker.io");
    free(u);
    u = dmf_registry_upstream(&map, NULL, "ghcr.io");
    assert_string_equal(u, "https://ghcr.io");
    free(u);
    assert_null(dmf_registry_upstream(&map, NULL, "evil.example/path"));
    assert_null(dmf_registry_upstream(&map, NULL, "user@evil"));
    assert_null(dmf_registry_upstream(NULL, NULL, NULL));
    char err[128];
    assert_int_equal(dmf_registry_map_check("a=http://b", err, sizeof(err)), 0);
    assert_int_not_equal(dmf_registry_map_check("a=ftp://b", err, sizeof(err)), 0);
    assert_int_not_equal(dmf_registry_map_check("=http://b", err, sizeof(err)), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_blob_path),
        cmocka_unit_test(test_strip_ns),
        cmocka_unit_test(test_upstream),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
