/* The origin policy of fetches other hosts ask for (src/common/origin_policy.c): loopback,
 * link-local, unspecified and the cluster's own addresses refused by default; the
 * allow-list and deny-list of networks and host names; URL hosts. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/origin_policy.h"

static char err[256];

static const char *check(const struct dmf_origin_policy *p, const char *ip)
{
    struct sockaddr_storage ss = {0};
    struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, ip, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
    } else {
        assert_int_equal(inet_pton(AF_INET6, ip, &sin6->sin6_addr), 1);
        sin6->sin6_family = AF_INET6;
    }
    return dmf_origin_policy_addr((void *)p, (struct sockaddr *)&ss);
}

static void list(struct dmf_strlist *l, const char *a, const char *b)
{
    memset(l, 0, sizeof(*l));
    if (a)
        dmf_strlist_push(l, a);
    if (b)
        dmf_strlist_push(l, b);
}

static void test_defaults_refuse_internal_addresses(void **state)
{
    struct dmf_origin_policy p;
    assert_int_equal(dmf_origin_policy_load(&p, NULL, NULL, "192.0.2.77:8002", err, sizeof(err)),
                     0);
    assert_non_null(check(&p, "127.0.0.1"));
    assert_non_null(check(&p, "127.9.9.9"));
    assert_non_null(check(&p, "::1"));
    assert_non_null(check(&p, "::ffff:127.0.0.1")); /* mapped: still loopback */
    assert_non_null(strstr(check(&p, "169.254.169.254"), "link-local"));
    assert_non_null(check(&p, "fe80::1"));
    assert_non_null(check(&p, "0.0.0.0"));
    assert_non_null(strstr(check(&p, "192.0.2.77"), "cluster")); /* the scheduler's */
    assert_null(check(&p, "93.184.216.34"));
    assert_null(check(&p, "2001:db8::5"));
}

static void test_allow_and_deny_lists(void **state)
{
    struct dmf_origin_policy p;
    struct dmf_strlist allow, deny;
    list(&allow, "127.0.0.0/8", "*.internal.example");
    list(&deny, "93.184.216.0/24", "evil.example");
    assert_int_equal(dmf_origin_policy_load(&p, &allow, &deny, NULL, err, sizeof(err)), 0);
    assert_null(check(&p, "127.0.0.1"));
    assert_non_null(check(&p, "::1")); /* only what was allowed */
    assert_non_null(strstr(check(&p, "93.184.216.34"), "--origin-deny"));
    bool any = true;
    assert_non_null(dmf_origin_policy_host(&p, "EVIL.example", &any));
    assert_null(dmf_origin_policy_host(&p, "registry.internal.example", &any));
    assert_true(any);
    assert_null(dmf_origin_policy_host(&p, "internal.example", &any));
    assert_false(any); /* "*.domain" is subdomains only */
    dmf_strlist_free(&allow);
    dmf_strlist_free(&deny);
}

static void test_bad_entries_are_refused(void **state)
{
    struct dmf_origin_policy p;
    struct dmf_strlist allow;
    list(&allow, "10.0.0.0/33", NULL);
    assert_int_equal(dmf_origin_policy_load(&p, &allow, NULL, NULL, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "--origin-allow: '10.0.0.0/33'"));
    dmf_strlist_free(&allow);
    list(&allow, "a*b.example", NULL);
    assert_int_equal(dmf_origin_policy_load(&p, &allow, NULL, NULL, err, sizeof(err)), -EINVAL);
    dmf_strlist_free(&allow);
}

static void test_url_host(void **state)
{
    char h[256];
    assert_int_equal(
        dmf_origin_policy_url_host("http://User:pw@Example.COM:8080/x?y", h, sizeof(h)), 0);
    assert_string_equal(h, "example.com");
    assert_int_equal(dmf_origin_policy_url_host("https://[::1]:443/", h, sizeof(h)), 0);
    assert_string_equal(h, "::1");
    assert_int_equal(dmf_origin_policy_url_host("http://169.254.169.254/latest", h, sizeof(h)), 0);
    assert_string_equal(h, "169.254.169.254");
    /* The "@" in the path does not move the host. */
    assert_int_equal(dmf_origin_policy_url_host("http://a.example/@127.0.0.1", h, sizeof(h)), 0);
    assert_string_equal(h, "a.example");
    assert_int_equal(dmf_origin_policy_url_host("file:///etc/passwd", h, sizeof(h)), -EINVAL);
    assert_int_equal(dmf_origin_policy_url_host("http:///x", h, sizeof(h)), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_refuse_internal_addresses),
        cmocka_unit_test(test_allow_and_deny_lists),
        cmocka_unit_test(test_bad_entries_are_refused),
        cmocka_unit_test(test_url_host),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
