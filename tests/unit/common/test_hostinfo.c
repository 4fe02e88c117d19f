/* The machine as the network sees it (src/common/hostinfo.c): the default route's
 * interface, loopback addresses, the machine id. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/hostinfo.h"

static const char ROUTES[] =
    "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
    "docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n"
    "wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n"
    "eth0\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
    "eth0\t0000000A\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n";

static void test_default_route(void **state)
{
    char name[32];
    assert_int_equal(dmf_route_default_iface(ROUTES, name, sizeof(name)), 0);
    assert_string_equal(name, "eth0"); /* the lowest metric */
    /* No default route; a default route that is down; garbage. */
    assert_int_equal(dmf_route_default_iface("Iface\tDestination\n"
                                             "eth0\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\n",
                                             name, sizeof(name)),
                     -ENOENT);
    assert_int_equal(dmf_route_default_iface("eth9\t00000000\t01\t0000\t0\t0\t0\t00000000\n", name,
                                             sizeof(name)),
                     -ENOENT);
    assert_int_equal(dmf_route_default_iface("", name, sizeof(name)), -ENOENT);
    assert_int_equal(dmf_route_default_iface("\n\n\x01\x02 zz\n", name, sizeof(name)), -ENOENT);
}

static void test_loopback(void **state)
{
    const char *yes[] = {"127.0.0.1", "127.1.2.3", "localhost",       "LOCALHOST",
                         "::1",       "[::1]",     "::ffff:127.0.0.1"};
    const char *no[] = {"10.0.0.5", "192.168.1.1", "scheduler.example.com", "::2", "", "128.0.0.1",
                        "[::1",     "0.0.0.0"};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
        assert_true(dmf_host_is_loopback(yes[i]));
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
        assert_false(dmf_host_is_loopback(no[i]));
    assert_false(dmf_host_is_loopback(NULL));
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_machine_id(void **state)
{
    char path[] = "/tmp/dmf-machine-id-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    char id[16];
    write_file(path, "0123456789ABCDEF0123456789abcdef\n");
    assert_int_equal(dmf_machine_id(path, id, sizeof(id)), 0);
    assert_string_equal(id, "0123456789ab");
    write_file(path, "short\n");
    assert_int_equal(dmf_machine_id(path, id, sizeof(id)), -ENOENT);
    write_file(path, "");
    assert_int_equal(dmf_machine_id(path, id, sizeof(id)), -ENOENT);
    unlink(path);
    assert_int_equal(dmf_machine_id(path, id, sizeof(id)), -ENOENT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_route),
        cmocka_unit_test(test_loopback),
        cmocka_unit_test(test_machine_id),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
