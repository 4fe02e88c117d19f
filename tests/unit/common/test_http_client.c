/* Daemon-to-daemon requests over mutual TLS (common/http_client.c, opts.peer_host_id),
 * against the real piece server with TLS on (daemon/piece_server.c), on one event loop over
 * loopback, with a CA and certificates made here: the parent's CN is checked; a parent
 * whose certificate another CA signed is refused; large pieces arrive byte-exact without
 * sendfile; a new server context (SIGHUP) applies to new connections while a transfer in
 * flight completes. */
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "common/http_client.h"
#include "common/tls.h"
#include "common/util.h"
#include "daemon/piece_server.h"
#include "support/certs.h"

#define ID_A "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define PL   (4u << 20)               /* 4 MiB pieces: far more than a socket buffer */
#define LEN  (2 * (int64_t)PL + 1000) /* 3 pieces, the last one 1000 bytes */

static char dir[64];

static struct dmf_tls_files files(const char *name, const char *ca)
{
    return dmf_test_tls_files(dir, name, ca);
}

/* ---- the parent: a piece server with TLS, holding one task ---- */

struct fixture {
    struct event_base *base;
    struct event *tick;
    dmf_piece_server_t *ps;
    dmf_http_t *http;
    int fd;
    dmf_bitmap_t have;
    uint8_t *content;
    char path[64];
};

static int lookup(void *arg, const char *task_id, struct dmf_piece_view *view)
{
    struct fixture *f = arg;
    if (strcmp(task_id, ID_A) != 0)
        return -ENOENT;
    view->fd = f->fd;
    view->content_length = LEN;
    view->piece_length = PL;
    view->have = &f->have;
    view->complete = true;
    return 0;
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
}

static SSL_CTX *server_ctx(const char *name, const char *ca)
{
    struct dmf_tls_files fl = files(name, ca);
    char err[256] = "";
    SSL_CTX *ctx = dmf_tls_ctx_new(&fl, true, err, sizeof(err));
    if (ctx == NULL)
        fail_msg("server context of %s: %s", name, err);
    return ctx;
}

static int setup(void **state)
{
    /* "rogue" names the parent: only its CA differs. */
    static const struct dmf_test_host hosts[] = {{"parent", "parent", "peer", false},
                                                 {"child", "child", "peer", false},
                                                 {"parent2", "parent2", "peer", false},
                                                 {"rogue", "parent", "peer", true}};
    dmf_test_certs_make(dir, sizeof(dir), "/tmp/dmf-test-http-XXXXXX", hosts,
                        sizeof(hosts) / sizeof(hosts[0]));

    struct fixture *f = dmf_xcalloc(1, sizeof(*f));
    f->base = event_base_new();
    struct timeval tv = {0, 10000};
    f->tick = event_new(f->base, -1, EV_PERSIST, on_tick, NULL);
    event_add(f->tick, &tv);
    f->content = dmf_xmalloc((size_t)LEN);
    for (int64_t i = 0; i < LEN; i++)
        f->content[i] = (uint8_t)((i * 31) ^ (i >> 11));
    snprintf(f->path, sizeof(f->path), "/tmp/dmf-http-XXXXXX");
    f->fd = mkstemp(f->path);
    assert_true(f->fd >= 0);
    assert_int_equal(write(f->fd, f->content, (size_t)LEN), LEN);
    dmf_bitmap_init(&f->have);
    for (uint32_t n = 0; n < 3; n++)
        dmf_bitmap_set(&f->have, n);

    char err[256] = "";
    f->ps = dmf_piece_server_new(f->base, "127.0.0.1", 0, lookup, f, err, sizeof(err));
    assert_non_null(f->ps);
    SSL_CTX *ctx = server_ctx("parent", "ca");
    dmf_piece_server_set_tls(f->ps, ctx);
    SSL_CTX_free(ctx);

    if (dmf_http_load(err, sizeof(err)) != 0)
        fail_msg("%s", err);
    f->http = dmf_http_new(f->base);
    struct dmf_tls_files cf = files("child", "ca");
    assert_int_equal(dmf_http_set_peer_tls(f->http, &cf, err, sizeof(err)), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    dmf_http_free(f->http);
    dmf_piece_server_free(f->ps);
    event_free(f->tick);
    event_base_free(f->base);
    dmf_bitmap_free(&f->have);
    close(f->fd);
    unlink(f->path);
    free(f->content);
    free(f);
    return dmf_test_certs_remove(dir);
}

/* ---- the child ---- */

struct fetch {
    struct fixture *f;
    bool done;
    long status;
    int err;
    char reason[256];
    uint8_t *body;
    size_t len;
    SSL_CTX *swap_after_first; /* installed on the server when the first bytes arrive */
};

static int on_headers(void *arg, dmf_http_req_t *req, long status)
{
    ((struct fetch *)arg)->status = status;
    return 0;
}

static int on_data(void *arg, dmf_http_req_t *req, const char *data, size_t len)
{
    struct fetch *fx = arg;
    fx->body = dmf_xrealloc(fx->body, fx->len + len + 1);
    memcpy(fx->body + fx->len, data, len);
    fx->len += len;
    if (fx->swap_after_first != NULL) {
        dmf_piece_server_set_tls(fx->f->ps, fx->swap_after_first);
        SSL_CTX_free(fx->swap_after_first);
        fx->swap_after_first = NULL;
    }
    return 0;
}

static void on_done(void *arg, dmf_http_req_t *req, int err, const char *reason)
{
    struct fetch *fx = arg;
    fx->done = true;
    fx->err = err;
    snprintf(fx->reason, sizeof(fx->reason), "%s", reason);
}

static const struct dmf_http_req_ops ops = {on_headers, on_data, on_done};

static void run_until_done(struct fixture *f, struct fetch *fx)
{
    uint64_t deadline = dmf_now_ms() + 20000;
    while (!fx->done && dmf_now_ms() < deadline)
        event_base_loop(f->base, EVLOOP_ONCE);
    assert_true(fx->done);
}

/* GET path of the parent as a child expecting its certificate to name host. */
static void get(struct fixture *f, dmf_http_t *http, const char *path, const char *host,
                struct fetch *fx)
{
    fx->f = f;
    char url[256];
    snprintf(url, sizeof(url), "https://127.0.0.1:%u%s", dmf_piece_server_port(f->ps), path);
    struct dmf_http_opts o = {.peer_host_id = host};
    dmf_http_get(http, url, &o, &ops, fx);
    run_until_done(f, fx);
}

static void test_piece_over_tls_is_byte_exact(void **state)
{
    struct fixture *f = *state;
    for (uint32_t n = 0; n < 3; n++) {
        struct fetch fx = {0};
        char path[128];
        snprintf(path, sizeof(path), "/pieces/%s/%u", ID_A, n);
        get(f, f->http, path, "parent", &fx);
        if (fx.err != 0)
            fail_msg("piece %u: %d %s", n, fx.err, fx.reason);
        assert_int_equal(fx.status, 200);
        size_t want = n < 2 ? PL : 1000;
        assert_int_equal(fx.len, want);
        assert_memory_equal(fx.body, f->content + (size_t)n * PL, want);
        free(fx.body);
    }
}

static void test_parent_naming_another_host_is_refused(void **state)
{
    struct fixture *f = *state;
    struct fetch fx = {0};
    get(f, f->http, "/have/" ID_A, "someone-else", &fx);
    assert_int_equal(fx.err, -EACCES);
    assert_int_equal(fx.status, 0); /* nothing was asked of it */
    assert_non_null(strstr(fx.reason, "names host parent, not someone-else"));
    free(fx.body);

    /* The same (kept-alive) connection, the expected name: served. */
    struct fetch ok = {0};
    get(f, f->http, "/have/" ID_A, "parent", &ok);
    assert_int_equal(ok.err, 0);
    assert_int_equal(ok.status, 200);
    free(ok.body);
}

static void test_parent_of_another_ca_is_refused(void **state)
{
    struct fixture *f = *state;
    SSL_CTX *rogue = server_ctx("rogue", "ca"); /* CN parent, signed by "other" */
    dmf_piece_server_set_tls(f->ps, rogue);
    SSL_CTX_free(rogue);
    struct fetch fx = {0};
    get(f, f->http, "/have/" ID_A, "parent", &fx);
    assert_int_not_equal(fx.err, 0);
    assert_int_equal(fx.status, 0);
    free(fx.body);
}

static void test_child_of_another_ca_is_refused(void **state)
{
    struct fixture *f = *state;
    dmf_http_t *h = dmf_http_new(f->base);
    struct dmf_tls_files rf = files("rogue", "ca");
    char err[256];
    assert_int_equal(dmf_http_set_peer_tls(h, &rf, err, sizeof(err)), 0);
    struct fetch fx = {0};
    get(f, h, "/have/" ID_A, "parent", &fx);
    assert_int_not_equal(fx.err, 0);
    assert_int_equal(fx.status, 0);
    free(fx.body);
    dmf_http_free(h);
}

/* SIGHUP: a new context for new connections; the transfer in flight completes. */
static void test_new_context_for_new_connections(void **state)
{
    struct fixture *f = *state;
    struct fetch fx = {.swap_after_first = server_ctx("parent2", "ca")};
    char path[128];
    snprintf(path, sizeof(path), "/pieces/%s/1", ID_A);
    get(f, f->http, path, "parent", &fx);
    assert_int_equal(fx.err, 0);
    assert_int_equal(fx.len, PL);
    assert_memory_equal(fx.body, f->content + PL, PL);
    free(fx.body);

    dmf_http_t *h = dmf_http_new(f->base); /* a new connection sees the new certificate */
    struct dmf_tls_files cf = files("child", "ca");
    char err[256];
    assert_int_equal(dmf_http_set_peer_tls(h, &cf, err, sizeof(err)), 0);
    struct fetch old = {0}, now = {0};
    get(f, h, "/have/" ID_A, "parent", &old);
    assert_int_equal(old.err, -EACCES);
    get(f, h, "/have/" ID_A, "parent2", &now);
    assert_int_equal(now.err, 0);
    assert_int_equal(now.status, 200);
    free(old.body);
    free(now.body);
    dmf_http_free(h);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* as the daemon: a refused child's socket closes under us */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_piece_over_tls_is_byte_exact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parent_naming_another_host_is_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_parent_of_another_ca_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_child_of_another_ca_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_new_context_for_new_connections, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
