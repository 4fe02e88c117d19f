/* Forward-proxy rules: order, regex errors, the YAML list with file:line errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "daemon/proxy/proxy_rules.h"

static char path[64];

static void write_file(const char *text)
{
    strcpy(path, "/tmp/dmf-rules-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

static void test_first_match_wins(void **state)
{
    struct dmf_proxy_rules r = {0};
    char err[256];
    assert_int_equal(dmf_proxy_rules_match(&r, "http://a/x"), -1);
    assert_int_equal(dmf_proxy_rules_add(&r, "\\.tar$", true, err, sizeof(err)), 0);
    assert_int_equal(dmf_proxy_rules_add(&r, "^http://a/", false, err, sizeof(err)), 0);
    assert_int_equal(dmf_proxy_rules_match(&r, "http://a/x.tar"), 1);
    assert_int_equal(dmf_proxy_rules_match(&r, "http://a/x.zip"), 0);
    assert_int_equal(dmf_proxy_rules_match(&r, "http://b/x.zip"), -1);
    assert_int_not_equal(dmf_proxy_rules_add(&r, "(unclosed", true, err, sizeof(err)), 0);
    assert_non_null(strstr(err, "invalid regex"));
    dmf_proxy_rules_free(&r);
}

static void test_yaml(void **state)
{
    struct dmf_proxy_rules r = {0};
    char err[256];
    write_file("log-level: debug\nother:\n  nested: [1, 2]\nproxy_rules:\n"
               "  - regex: '/blobs/sha256:'\n  - regex: '.*'\n    p2p: false\n");
    assert_int_equal(dmf_proxy_rules_load_yaml(&r, path, "proxy-rules", err, sizeof(err)), 0);
    assert_int_equal(r.n, 2);
    assert_true(r.v[0].p2p);
    assert_false(r.v[1].p2p);
    assert_int_equal(r.v[0].line, 5);
    assert_int_equal(dmf_proxy_rules_match(&r, "http://x/v2/a/blobs/sha256:00"), 1);
    assert_int_equal(dmf_proxy_rules_match(&r, "http://x/y"), 0);
    dmf_proxy_rules_free(&r);
    unlink(path);

    write_file("proxy-rules:\n  - regex: 'a'\n    p2p: maybe\n");
    assert_int_not_equal(dmf_proxy_rules_load_yaml(&r, path, "proxy-rules", err, sizeof(err)), 0);
    assert_non_null(strstr(err, ":3:"));
    dmf_proxy_rules_free(&r);
    unlink(path);

    write_file("proxy-rules:\n  - p2p: true\n");
    assert_int_not_equal(dmf_proxy_rules_load_yaml(&r, path, "proxy-rules", err, sizeof(err)), 0);
    assert_non_null(strstr(err, ":2:"));
    assert_non_null(strstr(err, "regex"));
    unlink(path);

    write_file("proxy-rules:\n  - regex: '('\n");
    assert_int_not_equal(dmf_proxy_rules_load_yaml(&r, path, "proxy-rules", err, sizeof(err)), 0);
    assert_non_null(strstr(err, ":2:"));
    unlink(path);

    write_file("proxy-rules: 'x'\n");
    assert_int_not_equal(dmf_proxy_rules_load_yaml(&r, path, "proxy-rules", err, sizeof(err)), 0);
    assert_non_null(strstr(err, ":1:"));
    dmf_proxy_rules_free(&r);
    unlink(path);
}

static void test_yaml_bandwidth(void **state)
{
    struct dmf_proxy_rules r = {0};
    char err[256];
    write_file("proxy-rules:\n  - regex: 'big'\n    limit: 4m\n    priority: background\n"
               "  - regex: '.*'\n");
    assert_int_equal(dmf_proxy_rules_load_yaml(&r, path, "proxy-rules", err, sizeof(err)), 0);
    assert_int_equal(r.n, 2);
    assert_int_equal(r.v[0].limit, 4 << 20);
    assert_int_equal(r.v[0].priority, DMF_PRIORITY_BACKGROUND);
    assert_int_equal(r.v[1].limit, 0);
    assert_int_equal(r.v[1].priority, DMF_PRIORITY_NORMAL);
    assert_ptr_equal(dmf_proxy_rules_find(&r, "http://x/big"), &r.v[0]);
    assert_ptr_equal(dmf_proxy_rules_find(&r, "http://x/small"), &r.v[1]);
    dmf_proxy_rules_free(&r);
    unlink(path);
    const char *bad[] = {
        "proxy-rules:\n  - regex: 'a'\n    limit: 60k\n",       /* below 64k */
        "proxy-rules:\n  - regex: 'a'\n    limit: fast\n",      /* no size */
        "proxy-rules:\n  - regex: 'a'\n    priority: urgent\n", /* no priority */
        "proxy-rules:\n  - regex: 'a'\n    limit: 1m\n    limit: 2m\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        write_file(bad[i]);
        assert_int_not_equal(dmf_proxy_rules_load_yaml(&r, path, "proxy-rules", err, sizeof(err)),
                             0);
        assert_non_null(strstr(err, i < 3 ? ":3:" : ":4:"));
        dmf_proxy_rules_free(&r);
        unlink(path);
    }
}

static void test_yaml_application(void **state)
{
    struct dmf_proxy_rules r = {0};
    char err[256];
    write_file("proxy-rules:\n  - regex: 'ci'\n    application: ci-runner\n  - regex: '.*'\n");
    assert_int_equal(dmf_proxy_rules_load_yaml(&r, path, "proxy-rules", err, sizeof(err)), 0);
    assert_int_equal(r.n, 2);
    assert_string_equal(r.v[0].application, "ci-runner");
    assert_string_equal(r.v[1].application, "");
    dmf_proxy_rules_free(&r);
    unlink(path);
    const char *bad[] = {
        "proxy-rules:\n  - regex: 'a'\n    application: 'a b'\n", /* charset */
        "proxy-rules:\n  - regex: 'a'\n    application: ''\n",    /* empty */
        "proxy-rules:\n  - regex: 'a'\n    application: x\n    application: y\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        write_file(bad[i]);
        assert_int_not_equal(dmf_proxy_rules_load_yaml(&r, path, "proxy-rules", err, sizeof(err)),
                             0);
        assert_non_null(strstr(err, i < 2 ? ":3:" : ":4:"));
        dmf_proxy_rules_free(&r);
        unlink(path);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_match_wins),
        cmocka_unit_test(test_yaml),
        cmocka_unit_test(test_yaml_bandwidth),
        cmocka_unit_test(test_yaml_application),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
