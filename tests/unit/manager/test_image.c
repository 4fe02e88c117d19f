/* Image preheat's pure helpers: manifest URLs, platform matching, token challenges. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "manager/image.h"

static void test_parse_url(void **state)
{
    char base[256], ref[128];
    assert_int_equal(dmf_image_parse_url("https://r.io/v2/library/alpine/manifests/3.19", base,
                                         sizeof(base), ref, sizeof(ref)),
                     0);
    assert_string_equal(base, "https://r.io/v2/library/alpine");
    assert_string_equal(ref, "3.19");
    assert_int_equal(dmf_image_parse_url("http://127.0.0.1:5000/v2/a/manifests/sha256:abc", base,
                                         sizeof(base), ref, sizeof(ref)),
                     0);
    assert_string_equal(ref, "sha256:abc");
    assert_int_not_equal(
        dmf_image_parse_url("ftp://r/v2/a/manifests/1", base, sizeof(base), ref, sizeof(ref)), 0);
    assert_int_not_equal(
        dmf_image_parse_url("https://r/a/manifests/1", base, sizeof(base), ref, sizeof(ref)), 0);
    assert_int_not_equal(
        dmf_image_parse_url("https://r/v2/a/manifests/", base, sizeof(base), ref, sizeof(ref)), 0);
    assert_int_not_equal(
        dmf_image_parse_url("https://r/v2/a/manifests/1/x", base, sizeof(base), ref, sizeof(ref)),
        0);
}

static void test_platform(void **state)
{
    json_t *p = json_pack("{s:s, s:s}", "os", "linux", "architecture", "arm64");
    json_t *v = json_pack("{s:s, s:s, s:s}", "os", "linux", "architecture", "arm", "variant", "v7");
    assert_true(dmf_image_platform_match(p, "linux/arm64"));
    assert_false(dmf_image_platform_match(p, "linux/amd64"));
    assert_false(dmf_image_platform_match(p, "windows/arm64"));
    assert_false(dmf_image_platform_match(p, "linux/arm64/v8"));
    assert_false(dmf_image_platform_match(p, "arm64"));
    assert_true(dmf_image_platform_match(v, "linux/arm"));
    assert_true(dmf_image_platform_match(v, "linux/arm/v7"));
    assert_false(dmf_image_platform_match(v, "linux/arm/v6"));
    assert_false(dmf_image_platform_match(NULL, "linux/arm"));
    json_decref(p);
    json_decref(v);
}

static void test_token_url(void **state)
{
    char *u = dmf_image_token_url(
        "Bearer realm=\"https://auth.io/token\",service=\"reg.io\",scope=\"repository:a/b:pull\"");
    assert_string_equal(u, "https://auth.io/token?service=reg.io&scope=repository%3Aa%2Fb%3Apull");
    free(u);
    u = dmf_image_token_url("Bearer realm=\"http://127.0.0.1:1/t?x=1\"");
    assert_string_equal(u, "http://127.0.0.1:1/t?x=1&");
    free(u);
    assert_null(dmf_image_token_url("Basic realm=\"r\""));
    assert_null(dmf_image_token_url("Bearer service=\"x\""));
    assert_null(dmf_image_token_url("Bearer realm=\"file:///etc/passwd\""));
    assert_null(dmf_image_token_url(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_url),
        cmocka_unit_test(test_platform),
        cmocka_unit_test(test_token_url),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
