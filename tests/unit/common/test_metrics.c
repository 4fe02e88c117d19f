/* Metrics: atomic updates, the registry, the text format and the /metrics handler. */
#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "common/metrics.h"

/* Each test uses its own metric names: the registry is process-wide. */
static DMF_METRIC_COUNTER(bytes_origin, "t_bytes_total", "source=\"origin\"", "Bytes fetched.");
static DMF_METRIC_GAUGE(tasks_running, "t_tasks", NULL, "Tasks running.");
static DMF_METRIC_COUNTER(bytes_peer, "t_bytes_total", "source=\"peer\"", "Bytes fetched.");
static DMF_METRIC_COUNTER(escaped, "t_escaped_total", NULL, "Back\\slash and\nnewline.");
static DMF_METRIC_COUNTER(contended, "t_contended_total", NULL, "Added from threads.");
static DMF_METRIC_GAUGE(http_gauge, "t_http_gauge", NULL, "Served over HTTP.");

static void test_updates(void **state)
{
    DMF_METRIC_GAUGE(g, "t_local", NULL, "Local.");
    assert_int_equal(dmf_metric_get(&g), 0);
    dmf_metric_add(&g, 5);
    dmf_metric_add(&g, -7);
    assert_int_equal(dmf_metric_get(&g), -2);
    dmf_metric_set(&g, 42);
    assert_int_equal(dmf_metric_get(&g), 42);
}

/* Counts non-overlapping occurrences of needle in s. */
static int count(const char *s, const char *needle)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

static void test_render_groups_series(void **state)
{
    dmf_metric_register(&bytes_origin);
    dmf_metric_register(&tasks_running);
    dmf_metric_register(&bytes_peer);
    dmf_metric_register(&bytes_origin); /* idempotent */
    dmf_metric_add(&bytes_origin, 100);
    dmf_metric_add(&bytes_peer, 7);
    dmf_metric_set(&tasks_running, 3);

    char *text = dmf_metrics_render();
    assert_non_null(text);
    /* HELP and TYPE once per name, both series of the name together. */
    assert_int_equal(count(text, "# HELP t_bytes_total Bytes fetched.\n"), 1);
    assert_int_equal(count(text, "# TYPE t_bytes_total counter\n"), 1);
    assert_non_null(strstr(text, "# HELP t_bytes_total Bytes fetched.\n"
                                 "# TYPE t_bytes_total counter\n"
                                 "t_bytes_total{source=\"origin\"} 100\n"
                                 "t_bytes_total{source=\"peer\"} 7\n"));
    assert_non_null(strstr(text, "# HELP t_tasks Tasks running.\n"
                                 "# TYPE t_tasks gauge\n"
                                 "t_tasks 3\n"));
    assert_int_equal(count(text, "t_bytes_total{source=\"origin\"}"), 1);
    free(text);
}

static void test_help_escaped(void **state)
{
    dmf_metric_register(&escaped);
    char *text = dmf_metrics_render();
    assert_non_null(strstr(text, "# HELP t_escaped_total Back\\\\slash and\\nnewline.\n"));
    free(text);
}

static void *add_many(void *arg)
{
    for (int i = 0; i < 100000; i++)
        dmf_metric_add(&contended, 1);
    return NULL;
}

static void test_concurrent_adds(void **state)
{
    pthread_t t[4];
    dmf_metric_register(&contended);
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, add_many, NULL), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(dmf_metric_get(&contended), 400000);
}

/* ---- HTTP ---- */

struct reply {
    struct event_base *base;
    int code;
    char content_type[128];
    char body[65536];
};

static void on_reply(struct evhttp_request *req, void *arg)
{
    struct reply *r = arg;
    if (req != NULL) {
        r->code = evhttp_request_get_response_code(req);
        const char *ct = evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type");
        snprintf(r->content_type, sizeof(r->content_type), "%s", ct != NULL ? ct : "");
        struct evbuffer *b = evhttp_request_get_input_buffer(req);
        size_t n = evbuffer_get_length(b);
        if (n >= sizeof(r->body))
            n = sizeof(r->body) - 1;
        evbuffer_remove(b, r->body, n);
        r->body[n] = '\0';
    }
    event_base_loopexit(r->base, NULL);
}

static void request(struct event_base *base, uint16_t port, enum evhttp_cmd_type cmd,
                    struct reply *r)
{
    memset(r, 0, sizeof(*r));
    r->base = base;
    struct evhttp_connection *conn = evhttp_connection_base_new(base, NULL, "127.0.0.1", port);
    struct evhttp_request *req = evhttp_request_new(on_reply, r);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Host", "127.0.0.1");
    assert_int_equal(evhttp_make_request(conn, req, cmd, "/metrics"), 0);
    struct timeval limit = {10, 0};
    event_base_loopexit(base, &limit);
    event_base_dispatch(base);
    evhttp_connection_free(conn);
}

static void test_http_handler(void **state)
{
    struct event_base *base = event_base_new();
    struct evhttp *http = evhttp_new(base);
    evhttp_set_cb(http, "/metrics", dmf_metrics_http_handler, NULL);
    struct evhttp_bound_socket *sock = evhttp_bind_socket_with_handle(http, "127.0.0.1", 0);
    assert_non_null(sock);
    struct sockaddr_in sin;
    socklen_t slen = sizeof(sin);
    assert_int_equal(getsockname(evhttp_bound_socket_get_fd(sock), (struct sockaddr *)&sin, &slen),
                     0);
    uint16_t port = ntohs(sin.sin_port);

    dmf_metric_register(&http_gauge);
    dmf_metric_set(&http_gauge, 77);
    struct reply *r = malloc(sizeof(*r));

    request(base, port, EVHTTP_REQ_GET, r);
    assert_int_equal(r->code, 200);
    assert_string_equal(r->content_type, "text/plain; version=0.0.4");
    assert_non_null(strstr(r->body, "# TYPE t_http_gauge gauge\nt_http_gauge 77\n"));

    request(base, port, EVHTTP_REQ_POST, r);
    assert_int_equal(r->code, 405);
    assert_null(strstr(r->body, "t_http_gauge"));

    free(r);
    evhttp_free(http);
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_updates),      cmocka_unit_test(test_render_groups_series),
        cmocka_unit_test(test_help_escaped), cmocka_unit_test(test_concurrent_adds),
        cmocka_unit_test(test_http_handler),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
