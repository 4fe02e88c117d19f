/* The gRPC bridge against itself over loopback TCP: unary, server streaming, status
 * details, a call to nobody, a client that goes away mid-stream, and a client that stops
 * reading a stream (its queue is bounded and it is cut off; one that reads is not). */
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

#include <grpc/byte_buffer.h>
#include <grpc/grpc_security.h>

#include "common/rpc.h"
#include "common/util.h"
#include "damselfly/v1/daemon.pb-c.h"

#define FLOOD_MESSAGE (64u << 10) /* bytes of each message of a "flood" call */
#define FLOOD_LIMIT   (1u << 20)  /* its send bound */

struct server_state {
    int calls;
    int ended_cancelled;
    int streamed; /* messages a streaming call should send */
    /* A "flood" call: `streamed` messages of FLOOD_MESSAGE bytes, one per millisecond. */
    struct event_base *base;
    struct event *flood_timer;
    dmf_rpc_call_t *flood_call;
    int flood_sent;
    int flood_result; /* of the send that stopped the flood (0: all were sent) */
    bool flood_over;
};

static void on_flood_tick(evutil_socket_t fd, short what, void *arg)
{
    struct server_state *st = arg;
    static char payload[FLOOD_MESSAGE + 1];
    memset(payload, 'x', FLOOD_MESSAGE);
    Damselfly__V1__StatLocalTaskResponse r = DAMSELFLY__V1__STAT_LOCAL_TASK_RESPONSE__INIT;
    r.task_id = payload;
    r.held_pieces = (uint32_t)st->flood_sent;
    st->flood_result = dmf_rpc_call_send(st->flood_call, &r.base);
    if (st->flood_result == 0 && ++st->flood_sent < st->streamed) {
        struct timeval tv = {0, 1000};
        evtimer_add(st->flood_timer, &tv);
        return;
    }
    if (st->flood_result == 0)
        dmf_rpc_call_finish(st->flood_call, GRPC_STATUS_OK, NULL);
    st->flood_over = true;
}

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
    } else if (strcmp(req->task_id, "flood") == 0) {
        dmf_rpc_call_set_send_limit(call, FLOOD_LIMIT);
        st->flood_call = call;
        st->flood_timer = evtimer_new(st->base, on_flood_tick, st);
        on_flood_tick(-1, 0, st);
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
    int port;
    struct server_state st;
};

static int setup(void **state)
{
    struct fixture *f = dmf_xcalloc(1, sizeof(*f));
    char err[128], target[64];
    int port = 0;
    f->base = dmf_rpc_event_base_new();
    f->st.base = f->base;
    f->rpc = dmf_rpc_new(f->base);
    f->server = dmf_rpc_server_new(f->rpc, on_call, &f->st);
    assert_int_equal(dmf_rpc_server_listen(f->server, "127.0.0.1:0", &port, err, sizeof(err)), 0);
    assert_true(port > 0);
    f->port = port;
    dmf_rpc_server_start(f->server);
    snprintf(target, sizeof(target), "127.0.0.1:%d", port);
    f->ch = dmf_rpc_channel_new(f->rpc, target);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    if (f->st.flood_timer)
        event_free(f->st.flood_timer);
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

static void test_a_reader_that_keeps_up_is_never_cut_off(void **state)
{
    struct fixture *f = *state;
    struct client_state cs = {0};
    f->st.streamed = 200; /* 12.5 MiB in all, 12 times the bound */
    dmf_rpc_call_t *c = stat_call(f, "flood", &cs);
    run_until(f, &cs.ended);
    assert_int_equal(cs.status, GRPC_STATUS_OK);
    assert_int_equal(cs.messages, 200);
    assert_int_equal(f->st.flood_result, 0);
    dmf_rpc_call_release(c);
}

/* A client on gRPC core directly that sends its request and never asks for a message. */
static void test_a_reader_that_stops_is_cut_off(void **state)
{
    struct fixture *f = *state;
    f->st.streamed = 100000; /* 6 GiB if nothing stopped it */
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%d", f->port);
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    grpc_channel *ch = grpc_channel_create(target, creds, NULL);
    grpc_channel_credentials_release(creds);
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    gpr_timespec deadline =
        gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_seconds(20, GPR_TIMESPAN));
    grpc_call *call = grpc_channel_create_call(
        ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
        grpc_slice_from_static_string("/damselfly.v1.Daemon/StatTask"), NULL, deadline, NULL);
    Damselfly__V1__StatLocalTaskRequest req = DAMSELFLY__V1__STAT_LOCAL_TASK_REQUEST__INIT;
    req.task_id = "flood";
    uint8_t packed[64];
    grpc_slice slice = grpc_slice_from_copied_buffer((const char *)packed,
                                                     protobuf_c_message_pack(&req.base, packed));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_op ops[3];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    assert_int_equal(grpc_call_start_batch(call, ops, 3, (void *)1, NULL), GRPC_CALL_OK);
    grpc_event ev = grpc_completion_queue_pluck(cq, (void *)1, deadline, NULL);
    assert_int_equal(ev.type, GRPC_OP_COMPLETE);
    /* The server floods, the client reads nothing: the server's queue reaches its bound. */
    uint64_t until = dmf_now_ms() + 10000;
    while (!f->st.flood_over && dmf_now_ms() < until)
        event_base_loop(f->base, EVLOOP_ONCE);
    assert_true(f->st.flood_over);
    assert_int_equal(f->st.flood_result, -ENOBUFS);
    /* Well before 6 GiB: the bound plus what HTTP/2 lets through before the reader reads. */
    assert_true((size_t)f->st.flood_sent * FLOOD_MESSAGE < 16 * FLOOD_LIMIT);
    /* The call is over on the server (cancelled): its queue is freed. */
    until = dmf_now_ms() + 5000;
    while (f->st.ended_cancelled == 0 && dmf_now_ms() < until)
        event_base_loop(f->base, EVLOOP_ONCE);
    assert_int_equal(f->st.ended_cancelled, 1);
    /* (The client itself learns it only at its deadline: the server's status would have to
     * queue behind the data flow control holds back.) */
    grpc_call_cancel(call, NULL);
    grpc_byte_buffer_destroy(bb);
    grpc_slice_unref(slice);
    grpc_call_unref(call);
    grpc_channel_destroy(ch);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(cq);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_stream_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_status_and_details, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unary, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nobody_listening_fails_fast, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_cancel_reaches_server, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_reader_that_keeps_up_is_never_cut_off, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_reader_that_stops_is_cut_off, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
