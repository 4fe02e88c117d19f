/* The proxy over loopback, without tasks: pass-through keeps every request header line in
 * order (repeated Accept lines too) and relays the origin's status and headers; bodies
 * reach the origin; malformed or misdirected requests get the proxy's own answers. One
 * event loop runs the proxy, an evhttp origin and a bufferevent client. */
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/util.h"
#include "daemon/daemon.h"
#include "daemon/proxy/proxy.h"

struct fixture {
    struct dmf_daemon d;
    struct evhttp *origin;
    uint16_t origin_port;
    dmf_proxy_t *proxy;
    char seen[4096]; /* the origin's view of the last request: "Name: value\n"... */
    char body[256];  /* and its body */
    struct evbuffer *response;
};

static struct fixture *fx;

static void origin_cb(struct evhttp_request *req, void *arg)
{
    struct evkeyvalq *h = evhttp_request_get_input_headers(req);
    size_t n = 0;
    fx->seen[0] = '\0';
    for (struct evkeyval *kv = h->tqh_first; kv; kv = kv->next.tqe_next)
        n += (size_t)snprintf(fx->seen + n, sizeof(fx->seen) - n, "%s: %s\n", kv->key, kv->value);
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t bl = DMF_MIN(evbuffer_get_length(in), sizeof(fx->body) - 1);
    evbuffer_remove(in, fx->body, bl);
    fx->body[bl] = '\0';
    struct evkeyvalq *oh = evhttp_request_get_output_headers(req);
    evhttp_add_header(oh, "WWW-Authenticate", "Bearer realm=\"http://auth/token\"");
    evhttp_add_header(oh, "Docker-Content-Digest", "sha256:abc");
    evhttp_add_header(oh, "X-Twice", "one");
    evhttp_add_header(oh, "X-Twice", "two");
    struct evbuffer *b = evbuffer_new();
    evbuffer_add_printf(b, "{\"errors\":[]}");
    evhttp_send_reply(req, 401, "Unauthorized", b);
    evbuffer_free(b);
}

static void client_read(struct bufferevent *bev, void *arg)
{
    evbuffer_add_buffer(fx->response, bufferevent_get_input(bev));
}

static void client_event(struct bufferevent *bev, short what, void *arg)
{
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        evbuffer_add_buffer(fx->response, bufferevent_get_input(bev));
        event_base_loopexit(fx->d.base, NULL);
    }
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    event_base_loopexit(fx->d.base, NULL);
}

/* Sends raw bytes to the proxy, runs the loop until the proxy closes (or 10 s), and
 * returns the response (caller frees). */
static char *exchange(const char *request)
{
    fx->response = evbuffer_new();
    struct bufferevent *bev = bufferevent_socket_new(fx->d.base, -1, BEV_OPT_CLOSE_ON_FREE);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(dmf_proxy_port(fx->proxy))};
    sa.sin_addr.s_addr = htonl(0x7f000001);
    bufferevent_setcb(bev, client_read, NULL, client_event, NULL);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    assert_int_equal(bufferevent_socket_connect(bev, (struct sockaddr *)&sa, sizeof(sa)), 0);
    bufferevent_write(bev, request, strlen(request));
    struct event *deadline = evtimer_new(fx->d.base, on_deadline, NULL);
    struct timeval tv = {.tv_sec = 10};
    evtimer_add(deadline, &tv);
    event_base_dispatch(fx->d.base);
    event_free(deadline);
    bufferevent_free(bev);
    size_t n = evbuffer_get_length(fx->response);
    char *s = dmf_xmalloc(n + 1);
    evbuffer_remove(fx->response, s, n);
    s[n] = '\0';
    evbuffer_free(fx->response);
    return s;
}

static int setup(void **state)
{
    fx = dmf_xcalloc(1, sizeof(*fx));
    fx->d.base = event_base_new();
    fx->d.http = dmf_http_new(fx->d.base);
    fx->origin = evhttp_new(fx->d.base);
    struct evhttp_bound_socket *s = evhttp_bind_socket_with_handle(fx->origin, "127.0.0.1", 0);
    assert_non_null(s);
    struct sockaddr_in sa;
    socklen_t sl = sizeof(sa);
    getsockname(evhttp_bound_socket_get_fd(s), (struct sockaddr *)&sa, &sl);
    fx->origin_port = ntohs(sa.sin_port);
    evhttp_set_gencb(fx->origin, origin_cb, NULL);
    evhttp_set_allowed_methods(fx->origin, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD);
    fx->d.cfg.registry_mirror = dmf_xasprintf("http://127.0.0.1:%u", fx->origin_port);
    struct dmf_proxy_rules rules = {0};
    char err[256];
    fx->proxy = dmf_proxy_new(&fx->d, "127.0.0.1:0", &rules, err, sizeof(err));
    if (fx->proxy == NULL)
        fprintf(stderr, "dmf_proxy_new: [%s]\n", err), fail();
    return 0;
}

static int teardown(void **state)
{
    dmf_proxy_free(fx->proxy);
    evhttp_free(fx->origin);
    dmf_http_free(fx->d.http);
    event_base_free(fx->d.base);
    free(fx->d.cfg.registry_mirror);
    free(fx);
    return 0;
}

static void test_mirror_pass_through_keeps_header_lines(void **state)
{
    char req[1024];
    snprintf(req, sizeof(req),
             "GET /v2/lib/app/manifests/v1?ns=127.0.0.1:%u HTTP/1.1\r\n"
             "Host: localhost\r\n"
             "Accept: application/vnd.oci.image.index.v1+json\r\n"
             "Accept: application/vnd.docker.distribution.manifest.v2+json\r\n"
             "Authorization: Bearer t0ken\r\n"
             "Proxy-Authorization: Basic eA==\r\n"
             "Connection: close\r\n\r\n",
             fx->origin_port);
    char *r = exchange(req);
    /* The origin saw both Accept lines, in order, and the client's Authorization; not the
     * hop-by-hop ones. */
    const char *a1 = strstr(fx->seen, "Accept: application/vnd.oci.image.index.v1+json\n");
    const char *a2 =
        strstr(fx->seen, "Accept: application/vnd.docker.distribution.manifest.v2+json\n");
    assert_non_null(a1);
    assert_non_null(a2);
    assert_true(a1 < a2);
    assert_non_null(strstr(fx->seen, "Authorization: Bearer t0ken\n"));
    assert_null(strstr(fx->seen, "Proxy-Authorization"));
    /* The client got the origin's status, challenge, digest and repeated headers. */
    assert_true(strncmp(r, "HTTP/1.1 401 Unauthorized\r\n", 27) == 0);
    assert_non_null(strstr(r, "\r\nWWW-Authenticate: Bearer realm=\"http://auth/token\"\r\n"));
    assert_non_null(strstr(r, "\r\nDocker-Content-Digest: sha256:abc\r\n"));
    const char *t1 = strstr(r, "X-Twice: one\r\n"), *t2 = strstr(r, "X-Twice: two\r\n");
    assert_true(t1 && t2 && t1 < t2);
    assert_non_null(strstr(r, "\r\n\r\n{\"errors\":[]}"));
    free(r);
}

static void test_forward_post_body_and_chunked(void **state)
{
    char req[512];
    snprintf(req, sizeof(req),
             "POST http://127.0.0.1:%u/token HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
             "Content-Type: application/x-www-form-urlencoded\r\nConnection: close\r\n\r\n"
             "6\r\ngrant_\r\nd\r\ntype=password\r\n0\r\n\r\n",
             fx->origin_port);
    char *r = exchange(req);
    assert_string_equal(fx->body, "grant_type=password");
    assert_true(strncmp(r, "HTTP/1.1 401", 12) == 0);
    free(r);
}

static void test_own_answers(void **state)
{
    char *r = exchange("\x16\x03\x01\x02\x00\x01\x00");
    assert_true(strncmp(r, "HTTP/1.1 400 ", 13) == 0);
    free(r);
    r = exchange("GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_true(strncmp(r, "HTTP/1.1 404 ", 13) == 0);
    free(r);
    r = exchange("GET / HTTP/3.0\r\n\r\n");
    assert_true(strncmp(r, "HTTP/1.1 501 ", 13) == 0);
    free(r);
    r = exchange("CONNECT nohost HTTP/1.1\r\n\r\n");
    assert_true(strncmp(r, "HTTP/1.1 400 ", 13) == 0);
    free(r);
    /* A refused connection: 502 with the reason. */
    r = exchange("GET http://127.0.0.1:1/x HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_true(strncmp(r, "HTTP/1.1 502 ", 13) == 0);
    free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mirror_pass_through_keeps_header_lines),
        cmocka_unit_test(test_forward_post_body_and_chunked),
        cmocka_unit_test(test_own_answers),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
