/* The proxy's HTTP/1.1 request-head parser, chunked decoder, hop-by-hop rules and Range. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/util.h"
#include "daemon/proxy/proxy_http.h"

static int parse(const char *s, struct dmf_proxy_request *r)
{
    char err[128];
    return dmf_proxy_request_parse(s, strlen(s), r, err, sizeof(err));
}

static void test_headers_kept_in_order_with_repeats(void **state)
{
    const char *s = "GET /v2/x/manifests/latest HTTP/1.1\r\nHost: reg\r\n"
                    "Accept: application/vnd.oci.image.index.v1+json\r\n"
                    "Accept: application/vnd.docker.distribution.manifest.v2+json\r\n"
                    "Authorization:   Bearer abc  \r\n\r\nNEXT";
    struct dmf_proxy_request r;
    int n = parse(s, &r);
    assert_int_equal(n, (int)(strlen(s) - 4));
    assert_string_equal(r.method, "GET");
    assert_string_equal(r.target, "/v2/x/manifests/latest");
    assert_int_equal(r.minor, 1);
    assert_int_equal(r.nh, 4);
    assert_string_equal(r.h[1].name, "Accept");
    assert_string_equal(r.h[1].value, "application/vnd.oci.image.index.v1+json");
    assert_string_equal(r.h[2].value, "application/vnd.docker.distribution.manifest.v2+json");
    assert_string_equal(r.h[3].value, "Bearer abc");
    assert_true(r.keep_alive);
    assert_int_equal(r.content_length, -1);
    assert_string_equal(dmf_proxy_request_header(&r, "accept"),
                        "application/vnd.oci.image.index.v1+json");
    dmf_proxy_request_free(&r);
}

static void test_incremental_needs_more_then_parses(void **state)
{
    const char *s = "POST http://h/x HTTP/1.0\nContent-Length: 3\nConnection: keep-alive\n\nabc";
    struct dmf_proxy_request r;
    char err[64];
    size_t head = strlen(s) - 3;
    for (size_t n = 0; n < head; n++)
        assert_int_equal(dmf_proxy_request_parse(s, n, &r, err, sizeof(err)), 0);
    assert_int_equal(dmf_proxy_request_parse(s, head, &r, err, sizeof(err)), (int)head);
    assert_int_equal(r.content_length, 3);
    assert_int_equal(r.minor, 0);
    assert_true(r.keep_alive);
    dmf_proxy_request_free(&r);
}

/* A head fed one byte at a time through the resuming parser parses as the whole, and the
 * search never restarts from the beginning: *scanned follows the bytes in. */
static void test_resumed_byte_by_byte(void **state)
{
    const char *heads[] = {"GET http://h/x HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n",
                           "\r\nGET /y HTTP/1.1\nHost: h\n\n"};
    for (size_t k = 0; k < DMF_ARRAY_SIZE(heads); k++) {
        const char *s = heads[k];
        size_t head = strlen(s), scanned = 0;
        struct dmf_proxy_request r;
        char err[64];
        for (size_t n = 1; n < head; n++) {
            assert_int_equal(dmf_proxy_request_parse_from(s, n, &scanned, &r, err, sizeof(err)), 0);
            assert_int_equal(scanned, n);
        }
        assert_int_equal(dmf_proxy_request_parse_from(s, head, &scanned, &r, err, sizeof(err)),
                         (int)head);
        assert_string_equal(dmf_proxy_request_header(&r, "host"), "h");
        dmf_proxy_request_free(&r);
    }
}

/* A request line longer than the limit is refused as soon as it is seen, resumed or not,
 * and a long head whose request line ended early is not. */
static void test_resumed_line_limit(void **state)
{
    size_t n = DMF_PROXY_TARGET_MAX + 200;
    char *s = malloc(n);
    memset(s, 'a', n);
    memcpy(s, "GET /", 5);
    struct dmf_proxy_request r;
    char err[64];
    size_t scanned = 0;
    int rc = 0;
    for (size_t i = 1; i <= n && rc == 0; i++)
        rc = dmf_proxy_request_parse_from(s, i, &scanned, &r, err, sizeof(err));
    assert_int_equal(rc, -EMSGSIZE);
    memcpy(s, "GET / HTTP/1.1\r\nX: ", 20);
    scanned = 0;
    for (size_t i = 1; i <= n; i++)
        assert_int_equal(dmf_proxy_request_parse_from(s, i, &scanned, &r, err, sizeof(err)), 0);
    free(s);
}

static void test_rejects(void **state)
{
    struct dmf_proxy_request r;
    assert_int_equal(parse("GET / HTTP/2.0\r\n\r\n", &r), -ENOTSUP);
    assert_int_equal(parse("GET /\r\n\r\n", &r), -EBADMSG);
    assert_int_equal(parse("GET / HTTP/1.1\r\nNoColon\r\n\r\n", &r), -EBADMSG);
    assert_int_equal(parse("GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", &r), -EBADMSG);
    assert_int_equal(parse("GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", &r),
                     -EBADMSG);
    assert_int_equal(
        parse("GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", &r),
        -EBADMSG);
    assert_int_equal(parse("GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", &r), -ENOTSUP);
    assert_int_equal(parse("GET / HTTP/1.1\r\nX: a\001b\r\n\r\n", &r), -EBADMSG);
    assert_int_equal(parse("GET /a b HTTP/1.1\r\n\r\n", &r), -ENOTSUP);
    /* A TLS ClientHello on the plain port is refused at once, not waited on. */
    assert_int_equal(parse("\x16\x03\x01\x02", &r), -EBADMSG);
}

static void test_bounds(void **state)
{
    struct dmf_proxy_request r;
    char err[64];
    /* Too many header lines. */
    size_t cap = 64 + (DMF_PROXY_HEADERS_MAX + 1) * 8 + 4;
    char *s = dmf_xmalloc(cap);
    size_t n = (size_t)snprintf(s, cap, "GET / HTTP/1.1\r\n");
    for (int i = 0; i <= DMF_PROXY_HEADERS_MAX; i++)
        n += (size_t)snprintf(s + n, cap - n, "A: %03d\r\n", i % 1000);
    n += (size_t)snprintf(s + n, cap - n, "\r\n");
    assert_int_equal(dmf_proxy_request_parse(s, n, &r, err, sizeof(err)), -EMSGSIZE);
    free(s);
    /* A head that never ends is refused at the bound, without reading further. */
    s = dmf_xmalloc(DMF_PROXY_HEAD_MAX + 10);
    memcpy(s, "GET / HTTP/1.1\r\n", 16);
    for (size_t i = 16; i < DMF_PROXY_HEAD_MAX + 10; i++)
        s[i] = (i % 50 == 49) ? '\n' : 'a';
    assert_int_equal(dmf_proxy_request_parse(s, DMF_PROXY_HEAD_MAX + 10, &r, err, sizeof(err)),
                     -EMSGSIZE);
    free(s);
}

static void test_hop_by_hop(void **state)
{
    assert_true(dmf_proxy_hop_by_hop("Connection", NULL));
    assert_true(dmf_proxy_hop_by_hop("proxy-authorization", NULL));
    assert_true(dmf_proxy_hop_by_hop("Transfer-Encoding", NULL));
    assert_false(dmf_proxy_hop_by_hop("Authorization", NULL));
    assert_false(dmf_proxy_hop_by_hop("Accept", NULL));
    assert_true(dmf_proxy_hop_by_hop("X-Private", "close, x-private"));
}

static void test_chunked_any_split(void **state)
{
    const char *body = "5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nT: v\r\n\r\nX";
    size_t len = strlen(body);
    for (size_t step = 1; step <= len; step++) {
        struct dmf_proxy_chunked c = {0};
        char out[128], got[128];
        size_t gl = 0, pos = 0;
        int rc = 0;
        while (pos < len && rc == 0) {
            size_t n = DMF_MIN(step, len - pos), ol, used;
            rc = dmf_proxy_chunked_decode(&c, body + pos, n, out, &ol, &used);
            memcpy(got + gl, out, ol);
            gl += ol;
            pos += used;
        }
        assert_int_equal(rc, 1);
        assert_int_equal(pos, len - 1); /* "X" is the next request */
        got[gl] = '\0';
        assert_string_equal(got, "helloabcdefghijklmnopqrstuvwxyz");
    }
    struct dmf_proxy_chunked c = {0};
    char out[64];
    size_t ol, used;
    assert_int_equal(dmf_proxy_chunked_decode(&c, "zz\r\n", 4, out, &ol, &used), -EBADMSG);
    memset(&c, 0, sizeof(c));
    assert_int_equal(dmf_proxy_chunked_decode(&c, "ffffffffffffffff\r\n", 18, out, &ol, &used),
                     -EBADMSG);
    memset(&c, 0, sizeof(c));
    assert_int_equal(dmf_proxy_chunked_decode(&c, "1\r\nab", 5, out, &ol, &used), -EBADMSG);
}

static void test_range(void **state)
{
    int64_t a, b;
    assert_int_equal(dmf_proxy_parse_range("bytes=0-99", 1000, &a, &b), 1);
    assert_true(a == 0 && b == 99);
    assert_int_equal(dmf_proxy_parse_range("bytes=900-", 1000, &a, &b), 1);
    assert_true(a == 900 && b == 999);
    assert_int_equal(dmf_proxy_parse_range("bytes=-10", 1000, &a, &b), 1);
    assert_true(a == 990 && b == 999);
    assert_int_equal(dmf_proxy_parse_range("bytes=500-5000", 1000, &a, &b), 1);
    assert_true(a == 500 && b == 999);
    assert_int_equal(dmf_proxy_parse_range("bytes=1000-", 1000, &a, &b), -ERANGE);
    assert_int_equal(dmf_proxy_parse_range("bytes=0-1,5-6", 1000, &a, &b), 0);
    assert_int_equal(dmf_proxy_parse_range("items=0-1", 1000, &a, &b), 0);
    assert_int_equal(dmf_proxy_parse_range("bytes=5-1", 1000, &a, &b), 0);
    assert_string_equal(dmf_proxy_status_reason(401), "Unauthorized");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_headers_kept_in_order_with_repeats),
        cmocka_unit_test(test_incremental_needs_more_then_parses),
        cmocka_unit_test(test_resumed_byte_by_byte),
        cmocka_unit_test(test_resumed_line_limit),
        cmocka_unit_test(test_rejects),
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_hop_by_hop),
        cmocka_unit_test(test_chunked_any_split),
        cmocka_unit_test(test_range),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
