/* The gRPC bridge against itself over loopback TCP: unary, server streaming, status
 * details, a call to nobody, and a client that goes away mid-stream. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/event.h>

#include "common/rpc.h"
#include "common/util.h"
#include "damselfly/v1/daemon.pb-c.h"

struct server_state {
    int calls;
    int ended_cancelled;
    int streamed; /* messages a streaming call should send */
};

static void srv_on_message(void *arg, dmf_rpc_call_t *call, const uint8_t *data, size_t len)
{
    struct server_state *st = arg;
    if (data == NULL)
        return;
    Damselfly__V1__StatLocalTaskRequest *req =
        damselfly__v1__stat_local_task_request__unpack(NULL, len, data);
    assert_non_null(req);
    if (strcmp(req->task_id, "missing") == 0) {
        dmf_rpc_call_finish(call, GRPC_STATUS_NOT_FOUND, "no such task");
    } else if (strcmp(req->task_id, "hang") == 0) {
        /* Never answers: the client cancels. */
    } else {
        for (int i = 0; i < st->streamed; i++) {
            Damselfly__V1__StatLocalTaskResponse r = DAMSELFLY__V1__STAT_LOCAL_TASK_RESPONSE__INIT;
            r.task_id = req->task_id;
            r.held_pieces = (uint32_t)i;
            assert_int_equal(dmf_rpc_call_send(call, &r.base), 0);
        }
        dmf_rpc_call_finish(call, GRPC_STATUS_OK, NULL);
        /* After finish nothing more may be sent. */
        Damselfly__V1__StatLocalTaskResponse r = DAMSELFLY__V1__STAT_LOCAL_TASK_RESPONSE__INIT;
        assert_int_equal(dmf_rpc_call_send(call, &r.base), -EPIPE);
    }
    damselfly__v1__stat_local_task_request__free_unpacked(req, NULL);
}

static void srv_on_end(void *arg, dmf_rpc_call_t *call, grpc_status_code status,
                       const char *details)
{
    struct server_state *st = arg;
    if (status == GRPC_STATUS_CANCELLED)
        st->ended_cancelled++;
    dmf_rpc_call_release(call);
}

static const struct dmf_rpc_call_handler srv_handler = {srv_on_message, srv_on_end};

static void on_call(void *arg, dmf_rpc_call_t *call, const char *method)
{
    struct server_state *st = arg;
    st->calls++;
    assert_string_equal(method, "/damselfly.v1.Daemon/StatTask");
    dmf_rpc_call_set_handler(call, &srv_handler, st);
}

struct client_state {
    int messages;
    uint32_t last_held;
    bool ended;
    grpc_status_code status;
    char details[128];
};

static void cli_on_message(void *arg, dmf_rpc_call_t *call, const uint8_t *data, size_t len)
{
    struct client_state *cs = arg;
    Damselfly__V1__StatLocalTaskResponse *r =
        damselfly__v1__stat_local_task_response__unpack(NULL, len, data);
    assert_non_null(r);
    assert_int_equal(r->held_pieces, (uint32_t)cs->messages); /* in order */
    cs->messages++;
    damselfly__v1__stat_local_task_response__free_unpacked(r, NULL);
}

static void cli_on_end(void *arg, dmf_rpc_call_t *call, grpc_status_code status,
                       const char *details)
{
    struct client_state *cs = arg;
    cs->ended = true;
    cs->status = status;
    snprintf(cs->details, sizeof(cs->details), "%s", details);
}

static const struct dmf_rpc_call_handler cli_handler = {cli_on_message, cli_on_end};

struct fixture {
    struct event_base *base;
    dmf_rpc_t *rpc;
    dmf_rpc_server_t *server;
    dmf_rpc_channel_t *ch;
    struct server_state st;
};

static int setup(void **state)
{
    struct fixture *f = dmf_xcalloc(1, sizeof(*f));
    char err[128], target[64];
    int port = 0;
    f->base = dmf_rpc_event_base_new();
    f->rpc = dmf_rpc_new(f->base);
    f->server = dmf_rpc_server_new(f->rpc, on_call, &f->st);
    assert_int_equal(dmf_rpc_server_listen(f->server, "127.0.0.1:0", &port, err, sizeof(err)), 0);
    assert_true(port > 0);
    dmf_rpc_server_start(f->server);
    snprintf(target, sizeof(target), "127.0.0.1:%d", port);
    f->ch = dmf_rpc_channel_new(f->rpc, target);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    dmf_rpc_channel_free(f->ch);
    dmf_rpc_server_free(f->server);
    dmf_rpc_free(f->rpc);
    event_base_free(f->base);
    free(f);
    return 0;
}

static void run_until(struct fixture *f, const bool *flag)
{
    uint64_t deadline = dmf_now_ms() + 10000;
    while (!*flag && dmf_now_ms() < deadline)
        event_base_loop(f->base, EVLOOP_ONCE);
    assert_true(*flag);
}

static dmf_rpc_call_t *stat_call(struct fixture *f, const char *task_id, struct client_state *cs)
{
    dmf_rpc_call_t *c = dmf_rpc_call_start(f->ch, "/damselfly.v1.Daemon/StatTask", 10000, true);
    dmf_rpc_call_set_handler(c, &cli_handler, cs);
    Damselfly__V1__StatLocalTaskRequest req = DAMSELFLY__V1__STAT_LOCAL_TASK_REQUEST__INIT;
    req.task_id = (char *)task_id;
    assert_int_equal(dmf_rpc_call_send(c, &req.base), 0);
    dmf_rpc_call_close_send(c);
    return c;
}

static void test_stream_in_order(void **state)
{
    struct fixture *f = *state;
    struct client_state cs = {0};
    f->st.streamed = 50;
    dmf_rpc_call_t *c = stat_call(f, "abc", &cs);
    run_until(f, &cs.ended);
    assert_int_equal(cs.status, GRPC_STATUS_OK);
    assert_int_equal(cs.messages, 50); /* every message before the status */
    dmf_rpc_call_release(c);
}

static void test_error_status_and_details(void **state)
{
    struct fixture *f = *state;
    struct client_state cs = {0};
    dmf_rpc_call_t *c = stat_call(f, "missing", &cs);
    run_until(f, &cs.ended);
    assert_int_equal(cs.status, GRPC_STATUS_NOT_FOUND);
    assert_string_equal(cs.details, "no such task");
    assert_int_equal(cs.messages, 0);
    dmf_rpc_call_release(c);
}

struct unary_result {
    bool done;
    grpc_status_code status;
    uint32_t held;
};

static void on_unary(void *arg, grpc_status_code status, const char *details, const uint8_t *resp,
                     size_t len)
{
    struct unary_result *u = arg;
    u->done = true;
    u->status = status;
    if (resp) {
        Damselfly__V1__StatLocalTaskResponse *r =
            damselfly__v1__stat_local_task_response__unpack(NULL, len, resp);
        u->held = r->held_pieces;
        damselfly__v1__stat_local_task_response__free_unpacked(r, NULL);
    }
}

static void test_unary(void **state)
{
    struct fixture *f = *state;
    struct unary_result u = {0};
    f->st.streamed = 1;
    Damselfly__V1__StatLocalTaskRequest req = DAMSELFLY__V1__STAT_LOCAL_TASK_REQUEST__INIT;
    req.task_id = "xyz";
    dmf_rpc_unary(f->ch, "/damselfly.v1.Daemon/StatTask", &req.base, 5000, on_unary, &u);
    run_until(f, &u.done);
    assert_int_equal(u.status, GRPC_STATUS_OK);
    assert_int_equal(u.held, 0);
}

static void test_nobody_listening_fails_fast(void **state)
{
    struct fixture *f = *state;
    struct unary_result u = {0};
    char target[64];
    /* A port nobody listens on: grab one and close it. */
    snprintf(target, sizeof(target), "127.0.0.1:%d", 1);
    dmf_rpc_channel_t *ch = dmf_rpc_channel_new(f->rpc, target);
    Damselfly__V1__StatLocalTaskRequest req = DAMSELFLY__V1__STAT_LOCAL_TASK_REQUEST__INIT;
    req.task_id = "xyz";
    uint64_t t0 = dmf_now_ms();
    dmf_rpc_unary(ch, "/damselfly.v1.Daemon/StatTask", &req.base, 5000, on_unary, &u);
    run_until(f, &u.done);
    assert_int_equal(u.status, GRPC_STATUS_UNAVAILABLE);
    assert_true(dmf_now_ms() - t0 < 4000);
    dmf_rpc_channel_free(ch);
}

static void test_client_cancel_reaches_server(void **state)
{
    struct fixture *f = *state;
    struct client_state cs = {0};
    dmf_rpc_call_t *c = stat_call(f, "hang", &cs);
    uint64_t deadline = dmf_now_ms() + 5000;
    while (f->st.calls == 0 && dmf_now_ms() < deadline)
        event_base_loop(f->base, EVLOOP_ONCE);
    assert_int_equal(f->st.calls, 1);
    dmf_rpc_call_release(c); /* cancels; no client callback after this */
    deadline = dmf_now_ms() + 5000;
    while (f->st.ended_cancelled == 0 && dmf_now_ms() < deadline)
        event_base_loop(f->base, EVLOOP_ONCE);
    assert_int_equal(f->st.ended_cancelled, 1);
    assert_false(cs.ended);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_stream_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_status_and_details, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unary, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nobody_listening_fails_fast, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_cancel_reaches_server, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
