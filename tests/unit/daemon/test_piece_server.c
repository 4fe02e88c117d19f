/* Unit tests for src/daemon/piece_server.c: a real server on a loopback port, driven by
 * libevent's HTTP client on the same event loop, over a temporary data file. */
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
#include <unistd.h>

#include <cmocka.h>

#include "common/util.h"
#include "daemon/piece_server.h"

#define ID_A    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define ID_NO   "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
#define ID_BIG  "b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1"
#define BIG_LEN ((int64_t)16 << 20) /* one sparse 16 MiB piece: more than socket buffers hold */
#define PL      (1u << 20)
#define LEN     (3 * (int64_t)PL + 1000) /* 4 pieces, the last one 1000 bytes */
/* How long a condition may take: DMF_TEST_TIME_SCALE (sanitizer builds) stretches it. */
#define WAIT_MS ((uint64_t)(5000 * time_scale()))

static double time_scale(void)
{
    const char *v = getenv("DMF_TEST_TIME_SCALE");
    double x = v ? atof(v) : 1.0;
    return x >= 1.0 ? x : 1.0;
}

/* The daemon's side of one task, as the lookup callback reports it. */
struct fake_task {
    int fd;
    int64_t content_length;
    uint32_t piece_length;
    dmf_bitmap_t have;
    bool complete;
    bool idle;     /* not complete, and nothing downloading it */
    int bad_piece; /* the verify hook refuses this piece (-1: none) */
};

struct fixture {
    struct event_base *base;
    struct event *tick; /* wakes the loop so that run_until can check its condition */
    dmf_piece_server_t *ps;
    struct fake_task task;
    struct fake_task big; /* ID_BIG */
    uint8_t *content;
    char path[64], big_path[64];
    struct evhttp_connection *conns[8];
    size_t nconns;
    int completed; /* responses received so far */
};

/* One client request and what came back. */
struct fetch {
    struct fixture *f;
    bool done;
    int order; /* 1 for the first response of the test, 2 for the next... */
    int status;
    char content_type[64];
    char content_length[24];
    char *body;
    size_t len, cap;
};

/* The engine's check before a piece leaves (src/daemon/peer/task_cache.c). */
static bool verify_piece(void *arg, uint32_t n)
{
    struct fake_task *t = arg;
    return t->bad_piece < 0 || (uint32_t)t->bad_piece != n;
}

static int lookup(void *arg, const char *task_id, struct dmf_piece_view *view)
{
    struct fixture *f = arg;
    struct fake_task *t = strcmp(task_id, ID_A) == 0     ? &f->task
                          : strcmp(task_id, ID_BIG) == 0 ? &f->big
                                                         : NULL;
    if (t == NULL || t->fd < 0)
        return -ENOENT;
    view->fd = t->fd;
    view->content_length = t->content_length;
    view->piece_length = t->piece_length;
    view->have = &t->have;
    view->complete = t->complete;
    view->downloading = !t->complete && !t->idle;
    view->verify = verify_piece;
    view->verify_arg = t;
    return 0;
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
}

static int setup(void **state)
{
    struct fixture *f = dmf_xcalloc(1, sizeof(*f));
    f->base = event_base_new();
    assert_non_null(f->base);
    struct timeval tv = {0, 10000};
    f->tick = event_new(f->base, -1, EV_PERSIST, on_tick, NULL);
    event_add(f->tick, &tv);

    f->content = dmf_xmalloc((size_t)LEN);
    for (int64_t i = 0; i < LEN; i++)
        f->content[i] = (uint8_t)((i * 31) ^ (i >> 9));
    snprintf(f->path, sizeof(f->path), "/tmp/dmf-ps-XXXXXX");
    f->task.fd = mkstemp(f->path);
    assert_true(f->task.fd >= 0);
    assert_int_equal(write(f->task.fd, f->content, (size_t)LEN), LEN);
    f->task.content_length = LEN;
    f->task.piece_length = PL;
    f->task.bad_piece = f->big.bad_piece = -1;
    dmf_bitmap_init(&f->task.have);
    dmf_bitmap_set(&f->task.have, 0);
    dmf_bitmap_set(&f->task.have, 1);
    dmf_bitmap_set(&f->task.have, 3); /* piece 2 is missing */

    snprintf(f->big_path, sizeof(f->big_path), "/tmp/dmf-ps-XXXXXX");
    f->big.fd = mkstemp(f->big_path);
    assert_true(f->big.fd >= 0);
    assert_int_equal(ftruncate(f->big.fd, BIG_LEN), 0);
    f->big.content_length = BIG_LEN;
    f->big.piece_length = (uint32_t)BIG_LEN;
    dmf_bitmap_init(&f->big.have);
    dmf_bitmap_set(&f->big.have, 0);

    char err[256] = "";
    f->ps = dmf_piece_server_new(f->base, "127.0.0.1", 0, lookup, f, err, sizeof(err));
    assert_non_null(f->ps);
    assert_true(dmf_piece_server_port(f->ps) != 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    dmf_piece_server_free(f->ps);
    for (size_t i = 0; i < f->nconns; i++)
        evhttp_connection_free(f->conns[i]);
    event_free(f->tick);
    event_base_free(f->base);
    dmf_bitmap_free(&f->task.have);
    close(f->task.fd);
    unlink(f->path);
    dmf_bitmap_free(&f->big.have);
    close(f->big.fd);
    unlink(f->big_path);
    free(f->content);
    free(f);
    return 0;
}

/* ---- the client ---- */

static void fetch_append(struct fetch *fx, struct evbuffer *in)
{
    size_t n = evbuffer_get_length(in);
    if (fx->len + n + 1 > fx->cap) { /* doubling: a copy per chunk would be quadratic */
        fx->cap = DMF_MAX(fx->len + n + 1, 2 * fx->cap);
        fx->body = dmf_xrealloc(fx->body, fx->cap);
    }
    evbuffer_remove(in, fx->body + fx->len, n);
    fx->len += n;
    fx->body[fx->len] = '\0';
}

static void copy_header(struct evhttp_request *req, const char *name, char *out, size_t len)
{
    const char *v = evhttp_find_header(evhttp_request_get_input_headers(req), name);
    snprintf(out, len, "%s", v ? v : "");
}

static void on_chunk(struct evhttp_request *req, void *arg)
{
    struct fetch *fx = arg;
    fetch_append(fx, evhttp_request_get_input_buffer(req));
}

static void on_done(struct evhttp_request *req, void *arg)
{
    struct fetch *fx = arg;
    fx->done = true;
    fx->order = ++fx->f->completed;
    if (req == NULL || evhttp_request_get_response_code(req) == 0) {
        fx->status = -1;
        return;
    }
    fx->status = evhttp_request_get_response_code(req);
    copy_header(req, "Content-Type", fx->content_type, sizeof(fx->content_type));
    copy_header(req, "Content-Length", fx->content_length, sizeof(fx->content_length));
    fetch_append(fx, evhttp_request_get_input_buffer(req));
}

static struct evhttp_connection *connect_client(struct fixture *f)
{
    assert_true(f->nconns < DMF_ARRAY_SIZE(f->conns));
    struct evhttp_connection *c =
        evhttp_connection_base_new(f->base, NULL, "127.0.0.1", dmf_piece_server_port(f->ps));
    assert_non_null(c);
    f->conns[f->nconns++] = c;
    return c;
}

/* Starts a request; progress, when not NULL, is sent as the child's X-Dmf-Progress. */
static void start_as(struct fixture *f, struct evhttp_connection *c, enum evhttp_cmd_type cmd,
                     const char *path, const char *progress, struct fetch *fx)
{
    memset(fx, 0, sizeof(*fx));
    fx->f = f;
    struct evhttp_request *req = evhttp_request_new(on_done, fx);
    evhttp_request_set_chunked_cb(req, on_chunk);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Host", "127.0.0.1");
    if (progress != NULL)
        evhttp_add_header(evhttp_request_get_output_headers(req), DMF_PROGRESS_HEADER, progress);
    assert_int_equal(evhttp_make_request(c, req, cmd, path), 0);
}

static void start(struct fixture *f, struct evhttp_connection *c, enum evhttp_cmd_type cmd,
                  const char *path, struct fetch *fx)
{
    start_as(f, c, cmd, path, NULL, fx);
}

typedef bool (*cond_fn)(struct fixture *f, void *arg);

static bool run_until(struct fixture *f, cond_fn cond, void *arg)
{
    uint64_t deadline = dmf_now_ms() + WAIT_MS;
    while (!cond(f, arg)) {
        if (dmf_now_ms() > deadline)
            return false;
        event_base_loop(f->base, EVLOOP_ONCE);
    }
    return true;
}

static bool fetch_done(struct fixture *f, void *arg)
{
    return ((struct fetch *)arg)->done;
}

static bool body_has(struct fixture *f, void *arg)
{
    struct fetch *fx = arg;
    return fx->body != NULL && strstr(fx->body, "\n") != NULL;
}

static bool body_has_have2(struct fixture *f, void *arg)
{
    struct fetch *fx = arg;
    return fx->body != NULL && strstr(fx->body, "have 2\n") != NULL;
}

static bool no_uploads(struct fixture *f, void *arg)
{
    return dmf_piece_server_active_uploads(f->ps) == 0;
}

static bool watchers_are(struct fixture *f, void *arg)
{
    return dmf_piece_server_watchers(f->ps) == *(uint32_t *)arg;
}

/* GETs path on a new connection and waits for the whole response. */
static void get(struct fixture *f, const char *path, struct fetch *fx)
{
    start(f, connect_client(f), EVHTTP_REQ_GET, path, fx);
    assert_true(run_until(f, fetch_done, fx));
}

static void fetch_free(struct fetch *fx)
{
    free(fx->body);
    fx->body = NULL;
}

/* ---- tests ---- */

static void test_piece_fetch(void **state)
{
    struct fixture *f = *state;
    struct fetch fx;

    get(f, "/pieces/" ID_A "/1", &fx);
    assert_int_equal(fx.status, 200);
    assert_string_equal(fx.content_type, "application/octet-stream");
    assert_string_equal(fx.content_length, "1048576");
    assert_int_equal(fx.len, PL);
    assert_memory_equal(fx.body, f->content + PL, PL);
    fetch_free(&fx);

    /* The last piece is shorter. */
    get(f, "/pieces/" ID_A "/3", &fx);
    assert_int_equal(fx.status, 200);
    assert_string_equal(fx.content_length, "1000");
    assert_int_equal(fx.len, 1000);
    assert_memory_equal(fx.body, f->content + 3 * PL, 1000);
    fetch_free(&fx);

    assert_true(run_until(f, no_uploads, NULL));
    assert_int_equal(dmf_piece_server_uploaded_bytes(f->ps), PL + 1000);
}

/* The daemon may close its fd once the reply is queued: the server sends from a dup. */
static void test_piece_outlives_daemon_fd(void **state)
{
    struct fixture *f = *state;
    struct fetch fx;
    start(f, connect_client(f), EVHTTP_REQ_GET, "/pieces/" ID_A "/0", &fx);
    while (dmf_piece_server_active_uploads(f->ps) == 0)
        event_base_loop(f->base, EVLOOP_ONCE);
    close(f->task.fd);
    f->task.fd = -1;
    assert_true(run_until(f, fetch_done, &fx));
    assert_int_equal(fx.status, 200);
    assert_int_equal(fx.len, PL);
    assert_memory_equal(fx.body, f->content, PL);
    fetch_free(&fx);
    f->task.fd = open(f->path, O_RDONLY);
}

static void test_piece_errors(void **state)
{
    struct fixture *f = *state;
    static const struct {
        const char *path;
        int status;
    } cases[] = {
        {"/pieces/" ID_A "/2", 404},          /* not held */
        {"/pieces/" ID_A "/4", 404},          /* past the last piece */
        {"/pieces/" ID_NO "/0", 404},         /* unknown task */
        {"/pieces/" ID_A "/-1", 400},         /* sign */
        {"/pieces/" ID_A "/+1", 400},         /* sign */
        {"/pieces/" ID_A "/01", 400},         /* not canonical */
        {"/pieces/" ID_A "/1x", 400},         /* trailing garbage */
        {"/pieces/" ID_A "/", 400},           /* no number */
        {"/pieces/" ID_A "/4294967296", 400}, /* over 32 bits */
        {"/pieces/" ID_A, 400},               /* no piece */
        {"/pieces/0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef/0", 400},
        {"/pieces/../../../etc/passwd", 400},
        {"/pieces/%2e%2e/0", 400},
        {"/have/" ID_A "/", 400},
        {"/have/xyz", 400},
        {"/have/" ID_NO, 404},
        {"/", 404},
        {"/piece/" ID_A "/0", 404},
        {"/metricsx", 404},
    };
    struct evhttp_connection *c = connect_client(f);
    for (size_t i = 0; i < DMF_ARRAY_SIZE(cases); i++) {
        struct fetch fx;
        start(f, c, EVHTTP_REQ_GET, cases[i].path, &fx);
        assert_true(run_until(f, fetch_done, &fx));
        if (fx.status != cases[i].status)
            fail_msg("GET %s: %d, want %d", cases[i].path, fx.status, cases[i].status);
        fetch_free(&fx);
    }
    struct fetch fx;
    start(f, c, EVHTTP_REQ_POST, "/pieces/" ID_A "/0", &fx);
    assert_true(run_until(f, fetch_done, &fx));
    assert_int_equal(fx.status, 405);
    fetch_free(&fx);
    start(f, c, EVHTTP_REQ_DELETE, "/have/" ID_A, &fx);
    assert_true(run_until(f, fetch_done, &fx));
    assert_int_equal(fx.status, 405);
    fetch_free(&fx);
    assert_int_equal(dmf_piece_server_uploaded_bytes(f->ps), 0);
}

static void test_have_stream(void **state)
{
    struct fixture *f = *state;
    struct fetch fx;
    start(f, connect_client(f), EVHTTP_REQ_GET, "/have/" ID_A, &fx);
    assert_true(run_until(f, body_has, &fx));
    assert_string_equal(fx.body, "have 0\nhave 1\nhave 3\n");
    assert_false(fx.done);
    assert_int_equal(dmf_piece_server_watchers(f->ps), 1);

    /* Piece 2 arrives: one more line. */
    dmf_bitmap_set(&f->task.have, 2);
    dmf_piece_server_notify_piece(f->ps, ID_A, 2);
    assert_true(run_until(f, body_has_have2, &fx));
    assert_string_equal(fx.body, "have 0\nhave 1\nhave 3\nhave 2\n");
    assert_false(fx.done);

    /* Another task's notification does not reach this watcher. */
    dmf_piece_server_notify_piece(f->ps, ID_NO, 7);

    f->task.complete = true;
    dmf_piece_server_notify_done(f->ps, ID_A);
    assert_int_equal(dmf_piece_server_watchers(f->ps), 0);
    assert_true(run_until(f, fetch_done, &fx));
    assert_int_equal(fx.status, 200);
    assert_string_equal(fx.content_type, "text/plain; charset=utf-8");
    assert_string_equal(fx.body, "have 0\nhave 1\nhave 3\nhave 2\ndone 4\n");
    fetch_free(&fx);
}

static void test_have_complete_task(void **state)
{
    struct fixture *f = *state;
    for (uint32_t n = 0; n < 4; n++)
        dmf_bitmap_set(&f->task.have, n);
    f->task.complete = true;
    struct fetch fx;
    get(f, "/have/" ID_A, &fx);
    assert_int_equal(fx.status, 200);
    assert_string_equal(fx.body, "have 0\nhave 1\nhave 2\nhave 3\ndone 4\n");
    assert_int_equal(dmf_piece_server_watchers(f->ps), 0);
    fetch_free(&fx);
}

/* Part of a task that nobody downloads: the list, then the end without "done" (a child
 * must not wait on this parent for pieces that will never come). */
static void test_have_of_an_idle_task(void **state)
{
    struct fixture *f = *state;
    struct fetch a;
    f->task.idle = true;
    start(f, connect_client(f), EVHTTP_REQ_GET, "/have/" ID_A, &a);
    assert_true(run_until(f, fetch_done, &a));
    assert_int_equal(a.status, 200);
    assert_string_equal(a.body, "have 0\nhave 1\nhave 3\n");
    assert_int_equal(dmf_piece_server_watchers(f->ps), 0);
    fetch_free(&a);
}

/* A held piece the verify hook refuses (cached bytes that no longer match) is never sent. */
static void test_piece_failing_verification_is_not_sent(void **state)
{
    struct fixture *f = *state;
    struct fetch a, b;
    f->task.bad_piece = 1;
    start(f, connect_client(f), EVHTTP_REQ_GET, "/pieces/" ID_A "/1", &a);
    assert_true(run_until(f, fetch_done, &a));
    assert_int_equal(a.status, 404);
    start(f, connect_client(f), EVHTTP_REQ_GET, "/pieces/" ID_A "/0", &b);
    assert_true(run_until(f, fetch_done, &b));
    assert_int_equal(b.status, 200);
    fetch_free(&a);
    fetch_free(&b);
}

static void test_have_gone_and_close(void **state)
{
    struct fixture *f = *state;
    struct fetch a, b, c;
    start(f, connect_client(f), EVHTTP_REQ_GET, "/have/" ID_A, &a);
    start(f, connect_client(f), EVHTTP_REQ_GET, "/have/" ID_A, &b);
    struct evhttp_connection *cc = connect_client(f);
    start(f, cc, EVHTTP_REQ_GET, "/have/" ID_A, &c);
    uint32_t three = 3, zero = 0;
    assert_true(run_until(f, watchers_are, &three));
    assert_true(run_until(f, body_has, &c));

    /* A child that disconnects is forgotten. */
    f->nconns--;
    assert_ptr_equal(f->conns[f->nconns], cc);
    evhttp_connection_free(cc);
    uint32_t two = 2;
    assert_true(run_until(f, watchers_are, &two));
    fetch_free(&c);

    /* The task goes away: the responses end without "done". */
    dmf_piece_server_notify_gone(f->ps, ID_A);
    assert_true(run_until(f, watchers_are, &zero));
    assert_true(run_until(f, fetch_done, &a));
    assert_true(run_until(f, fetch_done, &b));
    assert_int_equal(a.status, 200);
    assert_string_equal(a.body, "have 0\nhave 1\nhave 3\n");
    assert_string_equal(b.body, "have 0\nhave 1\nhave 3\n");
    fetch_free(&a);
    fetch_free(&b);

    /* A watcher still open when the server stops is ended by dmf_piece_server_free
     * (teardown; ASan checks nothing leaks). */
    start(f, connect_client(f), EVHTTP_REQ_GET, "/have/" ID_A, &a);
    uint32_t one = 1;
    assert_true(run_until(f, watchers_are, &one));
    fetch_free(&a);
}

/* Sends request (a whole HTTP/1.1 request head) on a new raw connection that reads
 * nothing back (a 4 KiB receive buffer) and returns its descriptor. */
static int raw_request(struct fixture *f, const char *request)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(s >= 0);
    int rcvbuf = 4096;
    setsockopt(s, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons(dmf_piece_server_port(f->ps)),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
    size_t len = strlen(request);
    assert_int_equal(write(s, request, len), (ssize_t)len);
    return s;
}

#define BIG_PIECE_REQUEST "GET /pieces/" ID_BIG "/0 HTTP/1.1\r\nHost: x\r\n\r\n"

/* A child that asks for a piece and hangs up at once: the upload ends either way. */
static void test_upload_abort(void **state)
{
    struct fixture *f = *state;
    for (int i = 0; i < 4; i++) {
        int s = raw_request(f, "GET /pieces/" ID_A "/0 HTTP/1.1\r\nHost: x\r\n\r\n");
        while (dmf_piece_server_active_uploads(f->ps) == 0)
            event_base_loop(f->base, EVLOOP_ONCE);
        close(s);
        assert_true(run_until(f, no_uploads, NULL));
    }
}

static bool queued_are(struct fixture *f, void *arg)
{
    return dmf_piece_server_queued(f->ps) == *(uint32_t *)arg;
}

static bool all_done(struct fixture *f, void *arg)
{
    struct fetch *fx = arg;
    return fx[0].done && fx[1].done && fx[2].done;
}

/* A raw connection asking for a 16 MiB piece that reads nothing: its upload holds a
 * slot until the connection closes. */
static int occupy_slot(struct fixture *f)
{
    int s = raw_request(f, BIG_PIECE_REQUEST);
    while (dmf_piece_server_active_uploads(f->ps) == 0)
        event_base_loop(f->base, EVLOOP_ONCE);
    return s;
}

/* With every upload slot taken, requests wait; when the slot frees, the child furthest
 * behind (lowest X-Dmf-Progress) is served first, then the others in that order. */
static void test_upload_queue_serves_children_behind_first(void **state)
{
    struct fixture *f = *state;
    dmf_piece_server_set_upload_slots(f->ps, 1);
    int busy = occupy_slot(f);

    struct fetch fx[3];
    const char *progress[3] = {"900", "100", "500"};
    for (int i = 0; i < 3; i++)
        start_as(f, connect_client(f), EVHTTP_REQ_GET, "/pieces/" ID_A "/1", progress[i], &fx[i]);
    uint32_t three = 3;
    assert_true(run_until(f, queued_are, &three));
    assert_int_equal(dmf_piece_server_active_uploads(f->ps), 1);
    assert_int_equal(f->completed, 0);

    close(busy); /* the upload aborts and gives its slot to the queue */
    assert_true(run_until(f, all_done, fx));
    assert_int_equal(fx[1].order, 1); /* progress 100 */
    assert_int_equal(fx[2].order, 2); /* 500 */
    assert_int_equal(fx[0].order, 3); /* 900 */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(fx[i].status, 200);
        assert_int_equal(fx[i].len, PL);
        assert_memory_equal(fx[i].body, f->content + PL, PL);
        fetch_free(&fx[i]);
    }
    assert_int_equal(dmf_piece_server_queued(f->ps), 0);
}

/* A queued request whose child hangs up costs nothing but its turn (evhttp notices the
 * hang-up when the reply is written); a request for a piece this server does not hold is
 * answered 404 when its turn comes. */
static void test_upload_queue_hangup_and_missing_piece(void **state)
{
    struct fixture *f = *state;
    dmf_piece_server_set_upload_slots(f->ps, 1);
    int busy = occupy_slot(f);

    int s = raw_request(f, "GET /pieces/" ID_A "/3 HTTP/1.1\r\nX-Dmf-Progress: 0\r\n\r\n");
    uint32_t one = 1, two = 2, zero = 0;
    assert_true(run_until(f, queued_are, &one));
    close(s);

    struct fetch missing;
    start_as(f, connect_client(f), EVHTTP_REQ_GET, "/pieces/" ID_A "/2", "10", &missing);
    assert_true(run_until(f, queued_are, &two));
    close(busy);
    assert_true(run_until(f, fetch_done, &missing));
    assert_int_equal(missing.status, 404);
    fetch_free(&missing);
    assert_true(run_until(f, queued_are, &zero));
    assert_true(run_until(f, no_uploads, NULL));

    struct fetch again; /* and the server goes on serving */
    get(f, "/pieces/" ID_A "/3", &again);
    assert_int_equal(again.status, 200);
    assert_int_equal(again.len, 1000);
    fetch_free(&again);
}

static bool uploads_are(struct fixture *f, void *arg)
{
    return dmf_piece_server_active_uploads(f->ps) == *(uint32_t *)arg;
}

/* One upload slot per 4 children watching, at least: with 5 watchers and --upload-slots 1,
 * two uploads run at once and nothing waits. */
static void test_upload_slots_grow_with_children(void **state)
{
    struct fixture *f = *state;
    dmf_piece_server_set_upload_slots(f->ps, 1);
    struct fetch w[5];
    for (int i = 0; i < 5; i++)
        start(f, connect_client(f), EVHTTP_REQ_GET, "/have/" ID_A, &w[i]);
    uint32_t five = 5, two = 2, zero = 0;
    assert_true(run_until(f, watchers_are, &five));
    int a = occupy_slot(f);
    int b = raw_request(f, BIG_PIECE_REQUEST);
    assert_true(run_until(f, uploads_are, &two));
    assert_int_equal(dmf_piece_server_queued(f->ps), 0);
    close(a);
    close(b);
    assert_true(run_until(f, uploads_are, &zero));
    for (int i = 0; i < 5; i++)
        fetch_free(&w[i]);
}

/* A server stopped with requests still queued frees them (ASan and valgrind check this). */
static void test_upload_queue_freed_on_stop(void **state)
{
    struct fixture *f = *state;
    dmf_piece_server_set_upload_slots(f->ps, 1);
    int busy = occupy_slot(f);
    struct fetch fx;
    start_as(f, connect_client(f), EVHTTP_REQ_GET, "/pieces/" ID_A "/1", "5", &fx);
    uint32_t one = 1;
    assert_true(run_until(f, queued_are, &one));
    dmf_piece_server_free(f->ps); /* teardown must not free it again */
    f->ps = NULL;
    close(busy);
    fetch_free(&fx);
}

static void test_metrics(void **state)
{
    struct fixture *f = *state;
    struct fetch fx;
    get(f, "/pieces/" ID_A "/3", &fx);
    assert_int_equal(fx.status, 200);
    fetch_free(&fx);
    assert_true(run_until(f, no_uploads, NULL));

    get(f, "/metrics", &fx);
    assert_int_equal(fx.status, 200);
    const char *line = strstr(fx.body, "\ndamselfly_upload_bytes_total ");
    assert_non_null(line);
    long long v = strtoll(line + strlen("\ndamselfly_upload_bytes_total "), NULL, 10);
    assert_true(v >= 1000);
    assert_non_null(strstr(fx.body, "damselfly_uploads_active"));
    fetch_free(&fx);
}

static void test_bind_error(void **state)
{
    struct fixture *f = *state;
    char err[256] = "", want[128];
    uint16_t port = dmf_piece_server_port(f->ps);
    dmf_piece_server_t *ps =
        dmf_piece_server_new(f->base, "127.0.0.1", port, lookup, f, err, sizeof(err));
    assert_null(ps);
    snprintf(want, sizeof(want), "cannot listen on 127.0.0.1:%u: Address already in use", port);
    assert_string_equal(err, want);
    ps = dmf_piece_server_new(f->base, "no-such-host.invalid", 0, lookup, f, err, sizeof(err));
    assert_null(ps);
    assert_non_null(strstr(err, "cannot listen on no-such-host.invalid:0"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_piece_fetch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_piece_outlives_daemon_fd, setup, teardown),
        cmocka_unit_test_setup_teardown(test_piece_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_have_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_have_complete_task, setup, teardown),
        cmocka_unit_test_setup_teardown(test_have_of_an_idle_task, setup, teardown),
        cmocka_unit_test_setup_teardown(test_piece_failing_verification_is_not_sent, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_have_gone_and_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upload_abort, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upload_queue_serves_children_behind_first, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_upload_queue_hangup_and_missing_piece, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_upload_queue_freed_on_stop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upload_slots_grow_with_children, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metrics, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bind_error, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
