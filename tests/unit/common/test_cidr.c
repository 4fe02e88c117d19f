/* CIDR parsing and matching (common/cidr.h), IPv4-mapped IPv6 included. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "common/cidr.h"

static struct sockaddr_storage addr(const char *ip)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1)
        v4->sin_family = AF_INET;
    else if (inet_pton(AF_INET6, ip, &v6->sin6_addr) == 1)
        v6->sin6_family = AF_INET6;
    return ss;
}

static bool in(const char *cidr, const char *ip)
{
    struct dmf_cidr c;
    assert_int_equal(dmf_cidr_parse(cidr, &c), 0);
    struct sockaddr_storage ss = addr(ip);
    return dmf_cidr_match(&c, (struct sockaddr *)&ss);
}

static void test_parse(void **state)
{
    struct dmf_cidr c;
    assert_int_equal(dmf_cidr_parse("10.0.0.0/8", &c), 0);
    assert_int_equal(c.family, AF_INET);
    assert_int_equal(c.bits, 8);
    assert_int_equal(dmf_cidr_parse("192.0.2.7", &c), 0);
    assert_int_equal(c.bits, 32);
    assert_int_equal(dmf_cidr_parse("fd00::/8", &c), 0);
    assert_int_equal(c.family, AF_INET6);
    assert_int_equal(dmf_cidr_parse("::1", &c), 0);
    assert_int_equal(c.bits, 128);
    const char *bad[] = {"",
                         "10.0.0.0/",
                         "10.0.0.0/33",
                         "::/129",
                         "10.0.0/8",
                         "10.0.0.0/8x",
                         "host.example",
                         "10.0.0.0/-1",
                         "10.0.0.0/0008",
                         NULL};
    for (int i = 0; bad[i]; i++)
        assert_int_equal(dmf_cidr_parse(bad[i], &c), -EINVAL);
    assert_int_equal(dmf_cidr_parse(NULL, &c), -EINVAL);
}

static void test_match(void **state)
{
    assert_true(in("10.0.0.0/8", "10.255.1.2"));
    assert_false(in("10.0.0.0/8", "11.0.0.1"));
    assert_true(in("169.254.0.0/16", "169.254.169.254"));
    assert_true(in("192.168.1.128/25", "192.168.1.200"));
    assert_false(in("192.168.1.128/25", "192.168.1.127"));
    assert_true(in("0.0.0.0/0", "203.0.113.9"));
    assert_false(in("0.0.0.0/0", "2001:db8::1")); /* families never mix */
    assert_true(in("fe80::/10", "fe80::1"));
    assert_true(in("fe80::/10", "febf::1"));
    assert_false(in("fe80::/10", "fec0::1"));
    assert_true(in("192.0.2.7", "192.0.2.7"));
    assert_false(in("192.0.2.7", "192.0.2.8"));
}

/* A dual-stack socket sees IPv4 clients as ::ffff:a.b.c.d: they match IPv4 rules. */
static void test_mapped(void **state)
{
    assert_true(in("169.254.0.0/16", "::ffff:169.254.169.254"));
    assert_true(in("127.0.0.0/8", "::ffff:127.0.0.1"));
    assert_false(in("::ffff:0:0/96", "::ffff:127.0.0.1")); /* compared as IPv4, not IPv6 */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_match),
        cmocka_unit_test(test_mapped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
