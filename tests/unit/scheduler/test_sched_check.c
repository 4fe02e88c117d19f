/* Bounds checks of the scheduler's network input (src/scheduler/sched_check.c): what a
 * daemon may send is accepted, and everything out of bounds is refused with -EINVAL and a
 * reason that names the field (and never echoes a URL or a header value). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/pieces.h"
#include "scheduler/sched.h"
#include "scheduler/sched_check.h"

#define T1 "1111111111111111111111111111111111111111111111111111111111111111"
#define D1 "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

static char err[512];

/* A string of n copies of c (static storage, one at a time). */
static const char *repeat(char c, size_t n)
{
    static char buf[DMF_SCHED_URL_MAX + 64];
    assert_true(n < sizeof(buf));
    memset(buf, c, n);
    buf[n] = '\0';
    return buf;
}

/* rc must be -EINVAL, with a reason in err that contains want. */
static void assert_refused(int rc, const char *want)
{
    assert_int_equal(rc, -EINVAL);
    if (strstr(err, want) == NULL)
        fail_msg("reason \"%s\" does not contain \"%s\"", err, want);
}

static void assert_accepted(int rc)
{
    if (rc != 0)
        fail_msg("refused (%d): %s", rc, err);
}

static void test_fail_fills_err_and_returns_the_code(void **state)
{
    memset(err, 'x', sizeof(err));
    assert_int_equal(dmf_sched_fail(err, sizeof(err), -ENOSPC, "too many %s (%d)", "hosts", 3),
                     -ENOSPC);
    assert_string_equal(err, "too many hosts (3)");

    char small[8];
    assert_int_equal(dmf_sched_fail(small, sizeof(small), -EINVAL, "%s", "truncated here"),
                     -EINVAL);
    assert_string_equal(small, "truncat");

    /* No buffer: the code all the same. */
    assert_int_equal(dmf_sched_fail(NULL, 0, -ENOENT, "x"), -ENOENT);
    assert_int_equal(dmf_sched_check_id("peer_id", "", DMF_SCHED_ID_MAX, NULL, 0), -EINVAL);
}

static void test_id(void **state)
{
    assert_accepted(
        dmf_sched_check_id("peer_id", "peer-1_a.b:c@d", DMF_SCHED_ID_MAX, err, sizeof(err)));
    assert_accepted(dmf_sched_check_id("peer_id", repeat('a', DMF_SCHED_ID_MAX), DMF_SCHED_ID_MAX,
                                       err, sizeof(err)));

    assert_refused(dmf_sched_check_id("peer_id", NULL, DMF_SCHED_ID_MAX, err, sizeof(err)),
                   "peer_id is empty");
    assert_refused(dmf_sched_check_id("peer_id", "", DMF_SCHED_ID_MAX, err, sizeof(err)),
                   "peer_id is empty");
    assert_refused(dmf_sched_check_id("peer_id", repeat('a', DMF_SCHED_ID_MAX + 1),
                                      DMF_SCHED_ID_MAX, err, sizeof(err)),
                   "peer_id is longer than 128 bytes");
    /* Ids go into logs: no spaces, no control or non-ASCII bytes. */
    const char *bad[] = {"a b", "a\tb", "a\nb", "a\x7f", "caf\xc3\xa9", "\x1b[31m"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_refused(dmf_sched_check_id("host id", bad[i], DMF_SCHED_ID_MAX, err, sizeof(err)),
                       "host id contains a space or a non-printable byte");
}

static void test_text(void **state)
{
    assert_accepted(dmf_sched_check_text("tag", NULL, 16, err, sizeof(err)));
    assert_accepted(dmf_sched_check_text("tag", "", 16, err, sizeof(err)));
    /* Free text may hold spaces and UTF-8. */
    assert_accepted(
        dmf_sched_check_text("location", "eu west|z 1|caf\xc3\xa9", 64, err, sizeof(err)));
    assert_accepted(dmf_sched_check_text("tag", repeat('t', 16), 16, err, sizeof(err)));

    assert_refused(dmf_sched_check_text("tag", repeat('t', 17), 16, err, sizeof(err)),
                   "tag is longer than 16 bytes");
    const char *bad[] = {"a\nb", "a\rb", "\x01", "a\tb", "del\x7f", "\x1b[2J"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_refused(dmf_sched_check_text("hostname", bad[i], 64, err, sizeof(err)),
                       "hostname contains a control character");
}

static void test_task_id(void **state)
{
    assert_accepted(dmf_sched_check_task_id(T1, err, sizeof(err)));
    assert_accepted(dmf_sched_check_task_id(
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", err, sizeof(err)));

    const char *bad[] = {
        NULL,
        "",
        "111111111111111111111111111111111111111111111111111111111111111",   /* 63 */
        "11111111111111111111111111111111111111111111111111111111111111111", /* 65 */
        "ABCDEF1111111111111111111111111111111111111111111111111111111111",  /* upper case */
        "g111111111111111111111111111111111111111111111111111111111111111",  /* not hex */
        "1111111111111111111111111111111 11111111111111111111111111111111",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_refused(dmf_sched_check_task_id(bad[i], err, sizeof(err)),
                       "task_id must be 64 lower-case hex digits");
}

static struct dmf_scheduler_host_info good_host(void)
{
    return (struct dmf_scheduler_host_info){
        .id = "host-1",
        .hostname = "node1.example.com",
        .ip = "10.0.0.1",
        .piece_port = 65002,
        .rpc_port = 0,
        .type = DMF_SCHED_HOST_NORMAL,
        .idc = "idc1",
        .location = "eu|z1|r3",
    };
}

static void test_host_info(void **state)
{
    struct dmf_scheduler_host_info h = good_host();
    assert_accepted(dmf_sched_check_host_info(&h, err, sizeof(err)));
    h.ip = "fd00::1";
    assert_accepted(dmf_sched_check_host_info(&h, err, sizeof(err)));
    h = good_host();
    h.type = DMF_SCHED_HOST_SEED;
    h.rpc_port = 65000;
    assert_accepted(dmf_sched_check_host_info(&h, err, sizeof(err)));
    h = good_host();
    h.hostname = h.idc = h.location = NULL; /* optional */
    assert_accepted(dmf_sched_check_host_info(&h, err, sizeof(err)));

    h = good_host();
    h.id = "host 1";
    assert_refused(dmf_sched_check_host_info(&h, err, sizeof(err)), "host id contains a space");
    h = good_host();
    h.id = repeat('h', DMF_SCHED_ID_MAX + 1);
    assert_refused(dmf_sched_check_host_info(&h, err, sizeof(err)), "host id is longer than");
    h = good_host();
    h.hostname = "node1\n2024-01-01 INFO forged line";
    assert_refused(dmf_sched_check_host_info(&h, err, sizeof(err)),
                   "hostname contains a control character");
    h = good_host();
    h.hostname = repeat('n', DMF_SCHED_HOSTNAME_MAX + 1);
    assert_refused(dmf_sched_check_host_info(&h, err, sizeof(err)), "hostname is longer than 255");
    h = good_host();
    h.idc = repeat('i', DMF_SCHED_ID_MAX + 1);
    assert_refused(dmf_sched_check_host_info(&h, err, sizeof(err)), "idc is longer than 128");
    h = good_host();
    h.location = repeat('l', DMF_SCHED_LOCATION_MAX + 1);
    assert_refused(dmf_sched_check_host_info(&h, err, sizeof(err)), "location is longer than");

    const char *bad_ips[] = {NULL,          "",         "10.0.0.256", "node1.example.com",
                             "10.0.0.1:80", "10.0.0.1 "};
    for (size_t i = 0; i < sizeof(bad_ips) / sizeof(bad_ips[0]); i++) {
        h = good_host();
        h.ip = bad_ips[i];
        assert_refused(dmf_sched_check_host_info(&h, err, sizeof(err)),
                       "host host-1: ip is not an IPv4 or IPv6 address");
    }
    h = good_host();
    h.ip = repeat('1', 65);
    assert_refused(dmf_sched_check_host_info(&h, err, sizeof(err)), "ip is not an IPv4 or IPv6");

    h = good_host();
    h.piece_port = 0;
    assert_refused(dmf_sched_check_host_info(&h, err, sizeof(err)),
                   "piece_port 0 is not in 1..65535");
    h.piece_port = 65536;
    assert_refused(dmf_sched_check_host_info(&h, err, sizeof(err)),
                   "piece_port 65536 is not in 1..65535");
    h = good_host();
    h.rpc_port = 70000;
    assert_refused(dmf_sched_check_host_info(&h, err, sizeof(err)),
                   "rpc_port 70000 is not in 0..65535");
    h = good_host();
    h.type = 2;
    assert_refused(dmf_sched_check_host_info(&h, err, sizeof(err)), "unknown host type 2");
    h = good_host();
    h.type = DMF_SCHED_HOST_SEED;
    assert_refused(dmf_sched_check_host_info(&h, err, sizeof(err)),
                   "seed host host-1 needs an rpc_port");
}

static const struct dmf_scheduler_header good_headers[] = {
    {"Authorization", "Bearer s3cret"},
    {"X-Trace", ""},
};
static const char *const good_filters[] = {"Expires", "Signature"};

static struct dmf_scheduler_register good_register(void)
{
    return (struct dmf_scheduler_register){
        .task_id = T1,
        .peer_id = "peer-1",
        .host_id = "host-1",
        .url = "https://example.com/blob?sig=abc",
        .headers = good_headers,
        .nheaders = 2,
        .tag = "v1",
        .digest = D1,
        .filter_query = good_filters,
        .nfilter_query = 2,
        .held_pieces = 3,
    };
}

static void test_register_accepts_good_input(void **state)
{
    struct dmf_scheduler_register r = good_register();
    assert_accepted(dmf_sched_check_register(&r, err, sizeof(err)));
    /* Optional fields left out. */
    r = (struct dmf_scheduler_register){
        .task_id = T1, .peer_id = "p", .host_id = "h", .url = "http://o/x"};
    assert_accepted(dmf_sched_check_register(&r, err, sizeof(err)));
    /* At the bounds. */
    static struct dmf_scheduler_header many[DMF_SCHED_HEADERS_MAX];
    for (size_t i = 0; i < DMF_SCHED_HEADERS_MAX; i++)
        many[i] = (struct dmf_scheduler_header){"X-H", "v"};
    r = good_register();
    r.headers = many;
    r.nheaders = DMF_SCHED_HEADERS_MAX;
    r.held_pieces = DMF_PIECES_MAX;
    r.url = repeat('u', DMF_SCHED_URL_MAX);
    assert_accepted(dmf_sched_check_register(&r, err, sizeof(err)));
}

static void test_register_refuses_bad_ids(void **state)
{
    struct dmf_scheduler_register r = good_register();
    r.task_id = "1111";
    assert_refused(dmf_sched_check_register(&r, err, sizeof(err)),
                   "task_id must be 64 lower-case hex digits");
    r = good_register();
    r.peer_id = repeat('p', DMF_SCHED_ID_MAX + 1);
    assert_refused(dmf_sched_check_register(&r, err, sizeof(err)),
                   "peer_id is longer than 128 bytes");
    r = good_register();
    r.host_id = "";
    assert_refused(dmf_sched_check_register(&r, err, sizeof(err)), "host_id is empty");
    r = good_register();
    r.tag = repeat('t', DMF_SCHED_TAG_MAX + 1);
    assert_refused(dmf_sched_check_register(&r, err, sizeof(err)), "tag is longer than 1024");
}

static void test_register_refuses_bad_urls_without_echoing_them(void **state)
{
    struct dmf_scheduler_register r = good_register();
    r.url = "";
    assert_refused(dmf_sched_check_register(&r, err, sizeof(err)), "url is empty");
    r.url = NULL;
    assert_refused(dmf_sched_check_register(&r, err, sizeof(err)), "url is empty");
    r.url = repeat('u', DMF_SCHED_URL_MAX + 1);
    assert_refused(dmf_sched_check_register(&r, err, sizeof(err)), "url is longer than 8192 bytes");
    assert_null(strstr(err, "uuuu"));
    r.url = "https://example.com/x?token=SECRET\r\nX-Injected: 1";
    assert_refused(dmf_sched_check_register(&r, err, sizeof(err)),
                   "url contains a control character");
    assert_null(strstr(err, "SECRET"));
}

static void test_register_refuses_bad_headers(void **state)
{
    struct dmf_scheduler_register r = good_register();
    static struct dmf_scheduler_header many[DMF_SCHED_HEADERS_MAX + 1];
    for (size_t i = 0; i < DMF_SCHED_HEADERS_MAX + 1; i++)
        many[i] = (struct dmf_scheduler_header){"X-H", "v"};
    r.headers = many;
    r.nheaders = DMF_SCHED_HEADERS_MAX + 1;
    assert_refused(dmf_sched_check_register(&r, err, sizeof(err)), "more than 64 headers");

    struct dmf_scheduler_header h[2] = {{"X-A", "ok"}, {"", "v"}};
    r = good_register();
    r.headers = h;
    assert_refused(dmf_sched_check_register(&r, err, sizeof(err)), "header 1 has an empty name");
    h[1].name = NULL;
    assert_refused(dmf_sched_check_register(&r, err, sizeof(err)), "header 1 has an empty name");

    h[1] = (struct dmf_scheduler_header){"X-Big", repeat('v', DMF_SCHED_HEADER_MAX)};
    assert_refused(dmf_sched_check_register(&r, err, sizeof(err)),
                   "header 1 is longer than 8192 bytes");
    assert_null(strstr(err, "vvvv"));

    const struct dmf_scheduler_header bad[] = {
        {"X-A:B", "v"},
        {"X-A\r\nX-Injected", "v"},
        {"X-A", "secret\r\nX-Injected: 1"},
        {"X-A", "secret\nmore"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        h[1] = bad[i];
        assert_refused(dmf_sched_check_register(&r, err, sizeof(err)),
                       "header 1 contains CR, LF or ':'");
        assert_null(strstr(err, "secret"));
    }
}

static void test_register_refuses_bad_filters_digest_and_pieces(void **state)
{
    struct dmf_scheduler_register r = good_register();
    static const char *many[DMF_SCHED_FILTERS_MAX + 1];
    for (size_t i = 0; i < DMF_SCHED_FILTERS_MAX + 1; i++)
        many[i] = "f";
    r.filter_query = many;
    r.nfilter_query = DMF_SCHED_FILTERS_MAX + 1;
    assert_refused(dmf_sched_check_register(&r, err, sizeof(err)),
                   "more than 64 filter_query entries");

    const char *f[] = {"ok", "bad\nentry"};
    r = good_register();
    r.filter_query = f;
    assert_refused(dmf_sched_check_register(&r, err, sizeof(err)),
                   "filter_query entry contains a control character");
    f[1] = repeat('f', DMF_SCHED_FILTER_MAX + 1);
    assert_refused(dmf_sched_check_register(&r, err, sizeof(err)),
                   "filter_query entry is longer than 256 bytes");

    r = good_register();
    r.digest = "md5:abc";
    assert_refused(dmf_sched_check_register(&r, err, sizeof(err)),
                   "digest: unsupported digest algorithm 'md5'");
    r.digest = "sha256:abc";
    assert_refused(dmf_sched_check_register(&r, err, sizeof(err)),
                   "digest: sha256 digest must have 64 hex digits");
    r.digest = ""; /* no digest */
    assert_accepted(dmf_sched_check_register(&r, err, sizeof(err)));

    r = good_register();
    r.held_pieces = DMF_PIECES_MAX + 1;
    assert_refused(dmf_sched_check_register(&r, err, sizeof(err)),
                   "held_pieces 1048577 is more than 1048576");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fail_fills_err_and_returns_the_code),
        cmocka_unit_test(test_id),
        cmocka_unit_test(test_text),
        cmocka_unit_test(test_task_id),
        cmocka_unit_test(test_host_info),
        cmocka_unit_test(test_register_accepts_good_input),
        cmocka_unit_test(test_register_refuses_bad_ids),
        cmocka_unit_test(test_register_refuses_bad_urls_without_echoing_them),
        cmocka_unit_test(test_register_refuses_bad_headers),
        cmocka_unit_test(test_register_refuses_bad_filters_digest_and_pieces),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
