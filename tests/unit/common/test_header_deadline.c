/* The request-head deadline (common/header_deadline.c) on a real evhttp server over
 * loopback: a connection evhttp has freed must not leave a read event behind that takes the
 * bytes of the next socket to get its descriptor number (seen as origin ranges that lost
 * 4 KiB and stalled for 15 s), its descriptor is given back soon, and a head that drips
 * past the deadline is still cut off. */
#include <dirent.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/header_deadline.h"
#include "common/util.h"

struct fixture {
    struct event_base *base;
    struct evhttp *http;
    dmf_header_deadline_t *hd;
    int port;
};

static void on_request(struct evhttp_request *req, void *arg)
{
    struct fixture *f = arg;
    dmf_header_deadline_got_request(f->hd, req);
    struct evbuffer *body = evbuffer_new();
    evbuffer_add_printf(body, "ok\n");
    evhttp_send_reply(req, 200, "OK", body);
    evbuffer_free(body);
}

static int setup(void **state)
{
    struct fixture *f = dmf_xcalloc(1, sizeof(*f));
    f->base = event_base_new();
    f->http = evhttp_new(f->base);
    evhttp_set_gencb(f->http, on_request, f);
    f->hd = dmf_header_deadline_new(f->base, f->http, 300, "test server");
    struct evhttp_bound_socket *bs = evhttp_bind_socket_with_handle(f->http, "127.0.0.1", 0);
    assert_non_null(bs);
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    assert_int_equal(getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&sa, &len), 0);
    f->port = ntohs(sa.sin_port);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    evhttp_free(f->http);
    dmf_header_deadline_free(f->hd);
    event_base_free(f->base);
    free(f);
    return 0;
}

static int open_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    while (readdir(d) != NULL)
        n++;
    closedir(d);
    return n;
}

static int client(const struct fixture *f)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(s >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)f->port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
    fcntl(s, F_SETFL, fcntl(s, F_GETFL) | O_NONBLOCK);
    return s;
}

/* Runs the loop until the client has read the whole reply and its end; returns its length. */
static size_t until_end(struct fixture *f, int s)
{
    char buf[4096];
    size_t got = 0;
    uint64_t deadline = dmf_now_ms() + 5000;
    while (dmf_now_ms() < deadline) {
        event_base_loop(f->base, EVLOOP_NONBLOCK);
        ssize_t n = read(s, buf, sizeof(buf));
        if (n == 0)
            return got;
        if (n > 0)
            got += (size_t)n;
        else if (errno != EAGAIN)
            fail_msg("read: %s", strerror(errno));
        usleep(1000);
    }
    fail_msg("the server never ended the connection");
    return 0;
}

static void run_for(struct fixture *f, uint64_t ms)
{
    uint64_t end = dmf_now_ms() + ms;
    while (dmf_now_ms() < end) {
        event_base_loop(f->base, EVLOOP_NONBLOCK);
        usleep(1000);
    }
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    (*(int *)arg)++;
}

/* A socket made right after evhttp freed a connection, watched on the same base, keeps
 * every byte written to it. */
static void test_freed_connection_takes_no_bytes_of_a_new_socket(void **state)
{
    struct fixture *f = *state;
    for (int round = 0; round < 20; round++) {
        int s = client(f);
        const char *req = "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        assert_int_equal(write(s, req, strlen(req)), (ssize_t)strlen(req));
        assert_true(until_end(f, s) > 0);
        /* evhttp has freed the connection; a new socket pair gets the lowest free numbers,
         * which is where a closed descriptor would be reused. */
        int sv[2];
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
        int woke = 0;
        struct event *ev = event_new(f->base, sv[0], EV_READ, on_readable, &woke);
        event_add(ev, NULL);
        char data[8192];
        memset(data, 'x', sizeof(data));
        assert_int_equal(write(sv[1], data, sizeof(data)), (ssize_t)sizeof(data));
        for (int i = 0; i < 20 && woke == 0; i++) {
            event_base_loop(f->base, EVLOOP_NONBLOCK);
            usleep(1000);
        }
        assert_true(woke > 0);
        char in[sizeof(data) + 1];
        ssize_t n = read(sv[0], in, sizeof(in));
        if (n != (ssize_t)sizeof(data))
            fail_msg("round %d: the new socket (fd %d) kept %zd of %zu bytes", round, sv[0], n,
                     sizeof(data));
        event_free(ev);
        close(sv[0]);
        close(sv[1]);
        close(s);
    }
}

/* Descriptors of connections evhttp freed are given back within a few sweeps. */
static void test_freed_descriptors_are_given_back(void **state)
{
    struct fixture *f = *state;
    int before = open_fds();
    for (int i = 0; i < 50; i++) {
        int s = client(f);
        const char *req = "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        assert_int_equal(write(s, req, strlen(req)), (ssize_t)strlen(req));
        until_end(f, s);
        close(s);
    }
    run_for(f, 400);
    assert_int_equal(open_fds(), before);
}

/* A head that drips past the 300 ms deadline is cut off, and a complete one is not. */
static void test_dripping_head_is_cut_off(void **state)
{
    struct fixture *f = *state;
    int slow = client(f);
    assert_int_equal(write(slow, "GET / HT", 8), 8);
    uint64_t t0 = dmf_now_ms();
    char buf[256];
    bool ended = false;
    while (!ended && dmf_now_ms() - t0 < 3000) {
        event_base_loop(f->base, EVLOOP_NONBLOCK);
        if (write(slow, "T", 1) < 0 && errno != EAGAIN)
            ended = true; /* reset by the server */
        ssize_t n = read(slow, buf, sizeof(buf));
        if (n == 0 || (n < 0 && errno != EAGAIN))
            ended = true;
        usleep(20000);
    }
    assert_true(ended);
    uint64_t took = dmf_now_ms() - t0;
    assert_true(took >= 300);
    assert_true(took < 2000);
    assert_int_equal(dmf_header_deadline_closed(f->hd), 1);
    int quick = client(f);
    const char *req = "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    assert_int_equal(write(quick, req, strlen(req)), (ssize_t)strlen(req));
    assert_true(until_end(f, quick) > 0);
    close(slow);
    close(quick);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_freed_connection_takes_no_bytes_of_a_new_socket, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_freed_descriptors_are_given_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dripping_head_is_cut_off, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
