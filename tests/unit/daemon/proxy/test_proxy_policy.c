/* The proxy's client and target policy (proxy_policy.h): decisions on filled policies. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "daemon/proxy/proxy_policy.h"

static struct sockaddr_storage at(const char *ip, uint16_t port)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(port);
    } else {
        assert_int_equal(inet_pton(AF_INET6, ip, &v6->sin6_addr), 1);
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(port);
    }
    return ss;
}

static const char *target(const struct dmf_proxy_policy *p, const char *ip, uint16_t port,
                          bool connect)
{
    struct sockaddr_storage ss = at(ip, port);
    return dmf_proxy_policy_target(p, (struct sockaddr *)&ss, connect);
}

static const char *client(const struct dmf_proxy_policy *p, const char *ip)
{
    struct sockaddr_storage ss = at(ip, 40000);
    return dmf_proxy_policy_client(p, (struct sockaddr *)&ss);
}

/* A policy as dmf_proxy_policy_load makes it, without the machine's interfaces: this host
 * is 192.0.2.10, the daemon listens on 65001 and 65002, the scheduler is 192.0.2.1:8002. */
static void fill(struct dmf_proxy_policy *p, const char *const *clients, const char *const *allow,
                 const char *const *ports)
{
    struct dmf_strlist c = {0}, a = {0}, pt = {0};
    for (; clients && *clients; clients++)
        dmf_strlist_push(&c, *clients);
    for (; allow && *allow; allow++)
        dmf_strlist_push(&a, *allow);
    for (; ports && *ports; ports++)
        dmf_strlist_push(&pt, *ports);
    char err[256];
    assert_int_equal(dmf_proxy_policy_load(p, &c, &a, &pt, NULL, err, sizeof(err)), 0);
    p->nlocal = 0;
    assert_int_equal(dmf_cidr_parse("192.0.2.10", &p->local[p->nlocal++]), 0);
    dmf_proxy_policy_own_port(p, 65001);
    dmf_proxy_policy_own_port(p, 65002);
    p->sched[0] = at("192.0.2.1", 8002);
    p->nsched = 1;
    dmf_strlist_free(&c);
    dmf_strlist_free(&a);
    dmf_strlist_free(&pt);
}

static void test_clients(void **state)
{
    struct dmf_proxy_policy p;
    fill(&p, NULL, NULL, NULL);
    assert_null(client(&p, "127.0.0.1"));
    assert_null(client(&p, "127.9.9.9"));
    assert_null(client(&p, "::1"));
    assert_null(client(&p, "::ffff:127.0.0.1"));
    assert_non_null(client(&p, "192.0.2.50"));
    const char *nets[] = {"10.0.0.0/8", "fd00::/8", NULL};
    fill(&p, nets, NULL, NULL);
    assert_null(client(&p, "10.1.2.3"));
    assert_null(client(&p, "fd12::3"));
    assert_non_null(client(&p, "127.0.0.1")); /* the list replaces the loopback default */
    assert_non_null(client(&p, "11.0.0.1"));
}

static void test_targets_refused_by_default(void **state)
{
    struct dmf_proxy_policy p;
    fill(&p, NULL, NULL, NULL);
    assert_non_null(target(&p, "169.254.169.254", 80, false));
    assert_non_null(target(&p, "::ffff:169.254.169.254", 80, false));
    assert_non_null(target(&p, "fe80::1", 80, false));
    assert_non_null(target(&p, "127.0.0.1", 65002, false));  /* own port on loopback */
    assert_non_null(target(&p, "0.0.0.0", 65001, false));    /* unspecified = this host */
    assert_non_null(target(&p, "192.0.2.10", 65002, false)); /* own port on an interface */
    assert_non_null(target(&p, "192.0.2.1", 8002, false));   /* the scheduler */
    /* Everything else passes: another host at the daemon's port numbers, another port. */
    assert_null(target(&p, "192.0.2.11", 65002, false));
    assert_null(target(&p, "127.0.0.1", 8080, false));
    assert_null(target(&p, "192.0.2.1", 80, false));
}

static void test_connect_ports(void **state)
{
    struct dmf_proxy_policy p;
    fill(&p, NULL, NULL, NULL);
    assert_null(target(&p, "203.0.113.5", 443, true));
    assert_non_null(target(&p, "203.0.113.5", 22, true));
    assert_null(target(&p, "203.0.113.5", 22, false)); /* not a CONNECT */
    assert_null(dmf_proxy_policy_connect_port(&p, 443));
    const char *ports[] = {"443", "8443", NULL};
    fill(&p, NULL, NULL, ports);
    assert_null(dmf_proxy_policy_connect_port(&p, 8443));
    assert_non_null(dmf_proxy_policy_connect_port(&p, 22));
    const char *any[] = {"*", NULL};
    fill(&p, NULL, NULL, any);
    assert_null(dmf_proxy_policy_connect_port(&p, 22));
    /* Any port, but still not the metadata service nor this daemon's own ports. */
    assert_non_null(target(&p, "169.254.169.254", 443, true));
    assert_non_null(target(&p, "127.0.0.1", 65001, true));
}

static void test_explicit_allow_wins(void **state)
{
    struct dmf_proxy_policy p;
    const char *allow[] = {"169.254.169.254/32", "127.0.0.1", NULL};
    fill(&p, NULL, allow, NULL);
    assert_null(target(&p, "169.254.169.254", 80, false));
    assert_non_null(target(&p, "169.254.1.1", 80, false));
    assert_null(target(&p, "127.0.0.1", 65002, false));
    /* The CONNECT port rule stays: allow lists addresses, not ports. */
    assert_non_null(target(&p, "169.254.169.254", 80, true));
}

static void test_load_errors(void **state)
{
    struct dmf_proxy_policy p;
    char err[256];
    struct dmf_strlist bad = {0}, none = {0};
    dmf_strlist_push(&bad, "10.0.0.0/40");
    assert_int_not_equal(dmf_proxy_policy_load(&p, &bad, &none, &none, NULL, err, sizeof(err)), 0);
    assert_non_null(strstr(err, "--proxy-allow-clients"));
    assert_int_not_equal(dmf_proxy_policy_load(&p, &none, &bad, &none, NULL, err, sizeof(err)), 0);
    assert_non_null(strstr(err, "--proxy-allow-targets"));
    dmf_strlist_free(&bad);
    const char *ports[] = {"0", "65536", "44x", "", NULL};
    for (int i = 0; ports[i]; i++) {
        struct dmf_strlist pl = {0};
        dmf_strlist_push(&pl, ports[i]);
        assert_int_not_equal(dmf_proxy_policy_load(&p, &none, &none, &pl, NULL, err, sizeof(err)),
                             0);
        assert_non_null(strstr(err, "--proxy-connect-ports"));
        dmf_strlist_free(&pl);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clients),       cmocka_unit_test(test_targets_refused_by_default),
        cmocka_unit_test(test_connect_ports), cmocka_unit_test(test_explicit_allow_wins),
        cmocka_unit_test(test_load_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
