/* gRPC core bridged onto a libevent loop; see rpc.h and docs/internals/RPC.md.
 *
 * Every batch started on a call carries a `struct op` tag. The poller thread only moves
 * (tag, success) pairs from the completion queue to a locked list and wakes the loop;
 * the loop runs op->done(). A call is reference-counted: the owner holds one reference
 * and each batch in flight holds one, so the memory outlives every batch gRPC still has. */
#include "common/evx.h"
#include "common/rpc.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/log.h>
#include <grpc/support/string_util.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/metrics.h"
#include "common/tls.h"
#include "common/tls_expect.h"
#include "common/util.h"

#include <openssl/pem.h>

static DMF_METRIC_COUNTER(m_slow_readers, "damselfly_rpc_slow_readers_total", NULL,
                          "gRPC calls cut off because the other side stayed too far behind "
                          "in reading what was sent to it");

struct op {
    void (*done)(struct op *op, int ok);
};

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

struct completion {
    struct op *op;
    int ok;
    struct completion *next;
};

struct dmf_rpc {
    struct event_base *base;
    grpc_completion_queue *cq;
    pthread_t poller;
    pthread_mutex_t lock;
    pthread_cond_t cond;            /* signalled when a completion is queued */
    struct completion *head, *tail; /* guarded by lock */
    struct event *wake;
    int live_calls; /* calls not yet destroyed */
    /* Mutual TLS (dmf_rpc_tls_enable), or NULL: one file watcher shared by every server and
     * member channel; it rereads the files every DMF_RPC_TLS_REFRESH_S seconds. */
    grpc_tls_certificate_provider *tls;
    struct dmf_tls_identity self;      /* the identity in --tls-cert, when tls is set */
    char *tls_cert, *tls_key, *tls_ca; /* the watched files (owned) */
};

struct send_item {
    grpc_byte_buffer *buf;
    size_t len;
    struct send_item *next;
};

struct dmf_rpc_call {
    dmf_rpc_t *rpc;
    grpc_call *call;
    bool server_side;
    int refs;
    bool released; /* the owner let go: no more callbacks */
    bool ended;    /* on_end was delivered (or suppressed) */
    const struct dmf_rpc_call_handler *h;
    void *arg;
    char *peer;
    bool has_identity; /* server side over TLS: the client's verified certificate */
    struct dmf_tls_identity identity;

    /* Sending: one batch in flight; messages queued in order; then the closing op. */
    struct op send_op;
    bool send_in_flight;
    bool initial_md_sent;
    struct send_item *sq_head, *sq_tail;
    size_t sq_bytes, send_limit; /* queued behind the batch in flight, and the bound */
    grpc_byte_buffer *send_buf;  /* the buffer of the batch in flight */
    uint64_t send_started_ms;    /* when the batch in flight was started */
    struct event *stall;         /* fires DMF_RPC_SEND_STALL_MS after a message batch starts */
    bool close_pending;          /* close_send (client) or finish (server) asked */
    bool close_sent;
    bool send_broken;
    grpc_status_code finish_status;
    grpc_slice finish_details;
    bool finish_details_set;

    /* Receiving. */
    struct op recv_op;
    grpc_byte_buffer *recv_buf;
    bool recv_started, recv_in_flight, recv_done;

    /* Client: initial metadata exchange and status. Server: close notification. */
    struct op start_op;
    struct op status_op;
    grpc_metadata_array md_recv, trailing_md;
    grpc_status_code status;
    grpc_slice status_details;
    int cancelled;
    bool status_done;
};

struct dmf_rpc_channel {
    dmf_rpc_t *rpc;
    grpc_channel *channel;
};

struct pending_request {
    struct op op;
    dmf_rpc_server_t *server;
    grpc_call *call;
    grpc_call_details details;
    grpc_metadata_array md;
};

struct dmf_rpc_server {
    dmf_rpc_t *rpc;
    bool tls; /* listening with client certificates required */
    grpc_server *server;
    dmf_rpc_on_call on_call;
    void *arg;
    bool started, shutting_down, shutdown_done;
    struct op shutdown_op;
};

/* ---------------------------------------------------------------- poller */

static void *poller_main(void *arg)
{
    dmf_rpc_t *rpc = arg;
    for (;;) {
        grpc_event ev =
            grpc_completion_queue_next(rpc->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        struct completion *c = dmf_xmalloc(sizeof(*c));
        c->op = ev.tag;
        c->ok = ev.success;
        c->next = NULL;
        pthread_mutex_lock(&rpc->lock);
        if (rpc->tail)
            rpc->tail->next = c;
        else
            rpc->head = c;
        rpc->tail = c;
        pthread_cond_signal(&rpc->cond);
        pthread_mutex_unlock(&rpc->lock);
        event_active(rpc->wake, EV_READ, 0);
    }
    return NULL;
}

static void run_completions(dmf_rpc_t *rpc)
{
    pthread_mutex_lock(&rpc->lock);
    struct completion *c = rpc->head;
    rpc->head = rpc->tail = NULL;
    pthread_mutex_unlock(&rpc->lock);
    while (c) {
        struct completion *next = c->next;
        c->op->done(c->op, c->ok);
        free(c);
        c = next;
    }
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    run_completions(arg);
}

/* Runs completions without the event loop until *flag or *count says we are done (or
 * the time is up): used at shutdown, when the loop may have nothing else to run. */
static void pump_until(dmf_rpc_t *rpc, const bool *flag, const int *count, uint64_t timeout_ms)
{
    uint64_t deadline = dmf_now_ms() + timeout_ms;
    for (;;) {
        run_completions(rpc);
        if ((flag && *flag) || (count && *count == 0) || dmf_now_ms() >= deadline)
            return;
        pthread_mutex_lock(&rpc->lock);
        if (rpc->head == NULL) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 50 * 1000000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&rpc->cond, &rpc->lock, &ts);
        }
        pthread_mutex_unlock(&rpc->lock);
    }
}

struct event_base *dmf_rpc_event_base_new(void)
{
    static int threads_enabled;
    if (!threads_enabled) {
        evthread_use_pthreads();
        threads_enabled = 1;
    }
    struct event_base *base = event_base_new();
    if (base == NULL) {
        fprintf(stderr, "damselfly: cannot create an event loop\n");
        abort();
    }
    return base;
}

/* gRPC's own log lines go through ours, at debug level: the errors that matter to a user
 * come back to the caller, who words them. */
static void grpc_log_to_ours(gpr_log_func_args *args)
{
    dmf_debug("grpc: %s:%d: %s", args->file, args->line, args->message);
}

dmf_rpc_t *dmf_rpc_new(struct event_base *base)
{
    dmf_metric_register(&m_slow_readers);
    gpr_set_log_function(grpc_log_to_ours);
    dmf_rpc_t *rpc = dmf_xcalloc(1, sizeof(*rpc));
    grpc_init();
    rpc->base = base;
    rpc->cq = grpc_completion_queue_create_for_next(NULL);
    pthread_mutex_init(&rpc->lock, NULL);
    pthread_cond_init(&rpc->cond, NULL);
    rpc->wake = dmf_xevent_new(base, -1, 0, on_wake, rpc);
    if (pthread_create(&rpc->poller, NULL, poller_main, rpc) != 0) {
        fprintf(stderr, "damselfly: cannot start the gRPC poller thread\n");
        abort();
    }
    return rpc;
}

void dmf_rpc_free(dmf_rpc_t *rpc)
{
    if (rpc == NULL)
        return;
    /* Let outstanding batches of released calls come back before the queue goes. */
    pump_until(rpc, NULL, &rpc->live_calls, 5000);
    if (rpc->live_calls > 0)
        dmf_warn("rpc: %d calls still alive at shutdown", rpc->live_calls);
    grpc_completion_queue_shutdown(rpc->cq);
    pthread_join(rpc->poller, NULL);
    run_completions(rpc);
    grpc_completion_queue_destroy(rpc->cq);
    event_free(rpc->wake);
    if (rpc->tls)
        grpc_tls_certificate_provider_release(rpc->tls);
    free(rpc->tls_cert);
    free(rpc->tls_key);
    free(rpc->tls_ca);
    pthread_mutex_destroy(&rpc->lock);
    pthread_cond_destroy(&rpc->cond);
    free(rpc);
    grpc_shutdown_blocking(); /* gRPC's own threads are gone when this returns */
}

/* ---------------------------------------------------------------- calls */

static grpc_channel_args *message_size_args(void)
{
    static grpc_arg args[3];
    static grpc_channel_args cargs;
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = (int)DMF_RPC_MAX_MESSAGE;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
    args[1].value.integer = (int)DMF_RPC_MAX_MESSAGE;
    /* Without SO_REUSEPORT a second process on the same port fails to bind instead of
     * silently sharing the port. */
    args[2].type = GRPC_ARG_INTEGER;
    args[2].key = GRPC_ARG_ALLOW_REUSEPORT;
    args[2].value.integer = 0;
    cargs.num_args = 3;
    cargs.args = args;
    return &cargs;
}

static void call_on_send(struct op *op, int ok);
static void call_on_recv(struct op *op, int ok);
static void call_on_start(struct op *op, int ok);
static void call_on_status(struct op *op, int ok);

static dmf_rpc_call_t *call_new(dmf_rpc_t *rpc, grpc_call *gc, bool server_side)
{
    dmf_rpc_call_t *c = dmf_xcalloc(1, sizeof(*c));
    c->rpc = rpc;
    c->call = gc;
    c->server_side = server_side;
    c->refs = 1; /* the owner's */
    c->send_limit = DMF_RPC_SEND_QUEUE_DEFAULT;
    c->send_op.done = call_on_send;
    c->recv_op.done = call_on_recv;
    c->start_op.done = call_on_start;
    c->status_op.done = call_on_status;
    grpc_metadata_array_init(&c->md_recv);
    grpc_metadata_array_init(&c->trailing_md);
    c->status_details = grpc_empty_slice();
    rpc->live_calls++;
    return c;
}

static void drop_send_queue(dmf_rpc_call_t *c)
{
    while (c->sq_head) {
        struct send_item *it = c->sq_head;
        c->sq_head = it->next;
        grpc_byte_buffer_destroy(it->buf);
        free(it);
    }
    c->sq_tail = NULL;
    c->sq_bytes = 0;
}

static void call_destroy(dmf_rpc_call_t *c)
{
    if (c->stall)
        event_free(c->stall);
    drop_send_queue(c);
    if (c->finish_details_set)
        grpc_slice_unref(c->finish_details);
    grpc_slice_unref(c->status_details);
    grpc_metadata_array_destroy(&c->md_recv);
    grpc_metadata_array_destroy(&c->trailing_md);
    if (c->peer)
        gpr_free(c->peer);
    grpc_call_unref(c->call);
    c->rpc->live_calls--;
    free(c);
}

static void call_unref(dmf_rpc_call_t *c)
{
    if (--c->refs == 0)
        call_destroy(c);
}

/* Starts a batch holding a reference; on failure to start, the op is never completed. */
static int call_batch(dmf_rpc_call_t *c, const grpc_op *ops, size_t n, struct op *tag)
{
    grpc_call_error e = grpc_call_start_batch(c->call, ops, n, tag, NULL);
    if (e != GRPC_CALL_OK) {
        dmf_warn("rpc: start_batch failed (%d)", (int)e);
        return -EIO;
    }
    c->refs++;
    return 0;
}

/* Delivers on_end once, when the call is over from our side's point of view. */
static void call_maybe_end(dmf_rpc_call_t *c)
{
    if (c->ended || !c->status_done)
        return;
    /* Client: report the status after the last message has been delivered. */
    if (!c->server_side && c->recv_started && !c->recv_done)
        return;
    c->ended = true;
    if (c->released || c->h == NULL || c->h->on_end == NULL)
        return;
    char *details = grpc_slice_to_c_string(c->status_details);
    grpc_status_code st =
        c->server_side ? (c->cancelled ? GRPC_STATUS_CANCELLED : GRPC_STATUS_OK) : c->status;
    c->refs++; /* the callback may release the owner's reference */
    c->h->on_end(c->arg, c, st, details);
    gpr_free(details);
    call_unref(c);
}

static void on_stall_check(evutil_socket_t fd, short what, void *arg);

static void call_pump_send(dmf_rpc_call_t *c)
{
    if (c->send_in_flight || c->send_broken || c->close_sent)
        return;
    grpc_op ops[3];
    size_t n = 0;
    memset(ops, 0, sizeof(ops));
    if (c->server_side && !c->initial_md_sent) {
        ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
        n++;
    }
    if (c->sq_head) {
        struct send_item *it = c->sq_head;
        c->sq_head = it->next;
        if (c->sq_head == NULL)
            c->sq_tail = NULL;
        c->sq_bytes -= it->len;
        c->send_buf = it->buf;
        free(it);
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = c->send_buf;
        n++;
    } else if (c->close_pending) {
        if (c->server_side) {
            ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
            ops[n].data.send_status_from_server.status = c->finish_status;
            ops[n].data.send_status_from_server.status_details =
                c->finish_details_set ? &c->finish_details : NULL;
        } else {
            ops[n].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
        }
        n++;
        c->close_sent = true;
    } else {
        return;
    }
    if (call_batch(c, ops, n, &c->send_op) != 0) {
        c->send_broken = true;
        if (c->send_buf) {
            grpc_byte_buffer_destroy(c->send_buf);
            c->send_buf = NULL;
        }
        return;
    }
    c->initial_md_sent = true;
    c->send_in_flight = true;
    c->send_started_ms = dmf_now_ms();
    if (c->send_buf != NULL) {
        if (c->stall == NULL)
            c->stall = dmf_xevtimer_new(c->rpc->base, on_stall_check, c);
        struct timeval tv = dmf_timeval_ms(DMF_RPC_SEND_STALL_MS + 100);
        evtimer_add(c->stall, &tv);
    }
}

static void call_on_send(struct op *op, int ok)
{
    dmf_rpc_call_t *c = container_of(op, dmf_rpc_call_t, send_op);
    c->send_in_flight = false;
    if (c->send_buf) {
        grpc_byte_buffer_destroy(c->send_buf);
        c->send_buf = NULL;
    }
    if (!ok)
        c->send_broken = true;
    else
        call_pump_send(c);
    call_unref(c);
}

static void call_start_recv(dmf_rpc_call_t *c)
{
    if (c->recv_in_flight || c->recv_done || c->released)
        return;
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->recv_buf;
    if (call_batch(c, &op, 1, &c->recv_op) != 0) {
        c->recv_done = true;
        return;
    }
    c->recv_in_flight = true;
}

static void call_on_recv(struct op *op, int ok)
{
    dmf_rpc_call_t *c = container_of(op, dmf_rpc_call_t, recv_op);
    c->recv_in_flight = false;
    grpc_byte_buffer *buf = c->recv_buf;
    c->recv_buf = NULL;
    if (ok && buf) {
        grpc_byte_buffer_reader reader;
        if (grpc_byte_buffer_reader_init(&reader, buf)) {
            grpc_slice s = grpc_byte_buffer_reader_readall(&reader);
            grpc_byte_buffer_reader_destroy(&reader);
            if (!c->released && !c->ended && c->h && c->h->on_message) {
                c->refs++;
                c->h->on_message(c->arg, c, GRPC_SLICE_START_PTR(s), GRPC_SLICE_LENGTH(s));
                grpc_slice_unref(s);
                grpc_byte_buffer_destroy(buf);
                call_start_recv(c);
                call_unref(c);
                call_unref(c);
                return;
            }
            grpc_slice_unref(s);
        }
        grpc_byte_buffer_destroy(buf);
        call_start_recv(c);
    } else {
        if (buf)
            grpc_byte_buffer_destroy(buf);
        c->recv_done = true;
        /* A clean end of the other side's messages is worth telling a server handler. */
        if (ok && c->server_side && !c->released && !c->ended && c->h && c->h->on_message) {
            c->refs++;
            c->h->on_message(c->arg, c, NULL, 0);
            call_unref(c);
        }
        call_maybe_end(c);
    }
    call_unref(c);
}

static void call_on_start(struct op *op, int ok)
{
    dmf_rpc_call_t *c = container_of(op, dmf_rpc_call_t, start_op);
    call_unref(c);
}

static void call_on_status(struct op *op, int ok)
{
    dmf_rpc_call_t *c = container_of(op, dmf_rpc_call_t, status_op);
    c->status_done = true;
    if (!ok && !c->server_side)
        c->status = GRPC_STATUS_UNKNOWN;
    call_maybe_end(c);
    call_unref(c);
}

void dmf_rpc_call_set_handler(dmf_rpc_call_t *c, const struct dmf_rpc_call_handler *h, void *arg)
{
    c->h = h;
    c->arg = arg;
    c->recv_started = true;
    call_start_recv(c);
}

void dmf_rpc_call_set_send_limit(dmf_rpc_call_t *c, size_t bytes)
{
    c->send_limit = bytes;
}

/* The other side stopped reading (or reads far slower than we produce): buffering more for
 * it would let one client grow our memory without bound, so its call ends. */
static void call_cut_slow_reader(dmf_rpc_call_t *c, bool stalled)
{
    dmf_metric_add(&m_slow_readers, 1);
    dmf_warn("rpc: the reader at %s is %zu bytes behind (bound %zu)%s: ending its call",
             dmf_rpc_call_peer(c), c->sq_bytes, c->send_limit,
             stalled ? ", and has not taken a message for a while" : "");
    c->send_broken = true;
    drop_send_queue(c);
    grpc_call_cancel_with_status(c->call, GRPC_STATUS_RESOURCE_EXHAUSTED,
                                 "the reader stayed too far behind", NULL);
}

static bool call_send_stalled(const dmf_rpc_call_t *c)
{
    return c->send_in_flight && c->send_buf != NULL &&
           dmf_now_ms() - c->send_started_ms > DMF_RPC_SEND_STALL_MS;
}

/* A message batch has waited since send_started_ms: a reader that stopped for good is cut
 * off here even when nothing more is sent to it (its queue would be held for ever). */
static void on_stall_check(evutil_socket_t fd, short what, void *arg)
{
    dmf_rpc_call_t *c = arg;
    if (!c->ended && !c->send_broken && call_send_stalled(c))
        call_cut_slow_reader(c, true);
}

int dmf_rpc_call_send(dmf_rpc_call_t *c, const ProtobufCMessage *msg)
{
    if (c->ended || c->close_pending || c->send_broken)
        return -EPIPE;
    size_t len = protobuf_c_message_get_packed_size(msg);
    bool stalled = call_send_stalled(c);
    if (c->sq_head != NULL && (c->sq_bytes + len > c->send_limit || stalled)) {
        call_cut_slow_reader(c, stalled);
        return -ENOBUFS;
    }
    grpc_slice s = grpc_slice_malloc(len);
    protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(s));
    struct send_item *it = dmf_xmalloc(sizeof(*it));
    it->buf = grpc_raw_byte_buffer_create(&s, 1);
    it->len = len;
    c->sq_bytes += len;
    grpc_slice_unref(s);
    it->next = NULL;
    if (c->sq_tail)
        c->sq_tail->next = it;
    else
        c->sq_head = it;
    c->sq_tail = it;
    call_pump_send(c);
    return 0;
}

void dmf_rpc_call_close_send(dmf_rpc_call_t *c)
{
    if (c->server_side || c->close_pending)
        return;
    c->close_pending = true;
    call_pump_send(c);
}

void dmf_rpc_call_finish(dmf_rpc_call_t *c, grpc_status_code status, const char *details)
{
    if (!c->server_side || c->close_pending)
        return;
    c->close_pending = true;
    c->finish_status = status;
    if (details) {
        c->finish_details = grpc_slice_from_copied_string(details);
        c->finish_details_set = true;
    }
    call_pump_send(c);
}

void dmf_rpc_call_cancel(dmf_rpc_call_t *c)
{
    if (!c->status_done)
        grpc_call_cancel(c->call, NULL);
}

void dmf_rpc_call_release(dmf_rpc_call_t *c)
{
    if (c == NULL || c->released)
        return;
    c->released = true;
    /* A server call whose status is queued is let finish: cancelling would lose it. */
    if (!c->status_done && !(c->server_side && c->close_pending && !c->send_broken))
        grpc_call_cancel(c->call, NULL);
    call_unref(c);
}

const char *dmf_rpc_call_peer(dmf_rpc_call_t *c)
{
    if (c->peer == NULL)
        c->peer = grpc_call_get_peer(c->call);
    return c->peer ? c->peer : "";
}

/* ---------------------------------------------------------------- mutual TLS */

int dmf_rpc_tls_enable(dmf_rpc_t *rpc, const struct dmf_tls_files *f, char *err, size_t errlen)
{
    if (dmf_tls_files_check(f, err, errlen) != 0)
        return -EINVAL;
    if (f->cert == NULL)
        return 0;
    /* gRPC's file watcher reports nothing useful when a file does not load: load them once
     * with OpenSSL, which words the error, before handing the paths to gRPC. */
    SSL_CTX *probe = dmf_tls_ctx_new(f, true, err, errlen);
    if (probe == NULL)
        return -EINVAL;
    char why[300];
    X509 *own = SSL_CTX_get0_certificate(probe); /* borrowed from probe */
    int rc = own ? dmf_tls_identity_from_x509(own, &rpc->self, why, sizeof(why)) : -EPERM;
    SSL_CTX_free(probe);
    if (rc != 0) {
        snprintf(err, errlen, "certificate %s: %s", f->cert, own ? why : "none loaded");
        return -EINVAL;
    }
    if (rpc->tls)
        grpc_tls_certificate_provider_release(rpc->tls);
    free(rpc->tls_cert);
    free(rpc->tls_key);
    free(rpc->tls_ca);
    rpc->tls_cert = dmf_xstrdup(f->cert);
    rpc->tls_key = dmf_xstrdup(f->key);
    rpc->tls_ca = dmf_xstrdup(f->ca);
    rpc->tls = grpc_tls_certificate_provider_file_watcher_create(f->key, f->cert, f->ca,
                                                                 DMF_RPC_TLS_REFRESH_S);
    if (rpc->tls == NULL) {
        snprintf(err, errlen, "gRPC cannot watch the TLS files %s, %s, %s", f->cert, f->key, f->ca);
        return -EINVAL;
    }
    return 0;
}

bool dmf_rpc_tls_on(const dmf_rpc_t *rpc)
{
    return rpc->tls != NULL;
}

const struct dmf_tls_identity *dmf_rpc_tls_identity(const dmf_rpc_t *rpc)
{
    return rpc->tls ? &rpc->self : NULL;
}

int dmf_rpc_tls_recheck(const dmf_rpc_t *rpc, char *err, size_t errlen)
{
    if (rpc->tls == NULL)
        return 0;
    struct dmf_tls_files f = {.cert = rpc->tls_cert, .key = rpc->tls_key, .ca = rpc->tls_ca};
    SSL_CTX *probe = dmf_tls_ctx_new(&f, true, err, errlen);
    if (probe == NULL)
        return -EINVAL;
    struct dmf_tls_identity id;
    char why[300];
    X509 *own = SSL_CTX_get0_certificate(probe);
    int rc = own ? dmf_tls_identity_from_x509(own, &id, why, sizeof(why)) : -EPERM;
    SSL_CTX_free(probe);
    if (rc != 0) {
        snprintf(err, errlen, "certificate %s: %s", f.cert, own ? why : "none loaded");
        return -EINVAL;
    }
    if (strcmp(id.host_id, rpc->self.host_id) != 0 || id.role != rpc->self.role) {
        snprintf(err, errlen,
                 "certificate %s now names host %s (role %s), not %s (role %s): restart to "
                 "change identity",
                 f.cert, id.host_id, dmf_tls_role_name(id.role), rpc->self.host_id,
                 dmf_tls_role_name(rpc->self.role));
        return -EINVAL;
    }
    return 0;
}

/* The identity in a PEM certificate (the one gRPC verified). 0 or -EPERM with why. */
static int identity_from_pem(const char *pem, size_t len, struct dmf_tls_identity *out, char *why,
                             size_t whylen)
{
    if (pem == NULL || len == 0 || len > (64u << 10)) {
        snprintf(why, whylen, "no client certificate");
        return -EPERM;
    }
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    X509 *x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    if (x == NULL) {
        snprintf(why, whylen, "unreadable certificate");
        return -EPERM;
    }
    int rc = dmf_tls_identity_from_x509(x, out, why, whylen);
    X509_free(x);
    return rc;
}

/* The verified client certificate of a server call over TLS. */
static int call_identity_load(grpc_call *gc, struct dmf_tls_identity *out, char *why, size_t whylen)
{
    grpc_auth_context *ctx = grpc_call_auth_context(gc);
    if (ctx == NULL || !grpc_auth_context_peer_is_authenticated(ctx)) {
        if (ctx)
            grpc_auth_context_release(ctx);
        snprintf(why, whylen, "no verified client certificate");
        return -EPERM;
    }
    grpc_auth_property_iterator it =
        grpc_auth_context_find_properties_by_name(ctx, GRPC_X509_PEM_CERT_PROPERTY_NAME);
    const grpc_auth_property *p = grpc_auth_property_iterator_next(&it);
    int rc = identity_from_pem(p ? p->value : NULL, p ? p->value_length : 0, out, why, whylen);
    grpc_auth_context_release(ctx);
    return rc;
}

const struct dmf_tls_identity *dmf_rpc_call_identity(const dmf_rpc_call_t *call)
{
    return call->has_identity ? &call->identity : NULL;
}

/* The check a member channel makes of the server's certificate, after gRPC verified its
 * chain against the CA (no host-name check: peers are dialled by IP). Runs on a gRPC
 * thread: it only reads its own copy of the expectation. */
struct expect_verifier {
    grpc_tls_certificate_verifier_external ext;
    enum dmf_tls_role role;
    char *host_id; /* NULL = any */
};

static int expect_verify(void *user_data, grpc_tls_custom_verification_check_request *request,
                         grpc_tls_on_custom_verification_check_done_cb callback, void *callback_arg,
                         grpc_status_code *sync_status, char **sync_error_details)
{
    struct expect_verifier *v = user_data;
    struct dmf_tls_identity id;
    char why[300];
    const char *pem = request->peer_info.peer_cert;
    int rc = identity_from_pem(pem, pem ? strlen(pem) : 0, &id, why, sizeof(why));
    if (rc == 0) {
        struct dmf_tls_expect e = {.role = v->role, .host_id = v->host_id};
        rc = dmf_tls_expect_check(&e, &id, why, sizeof(why));
    }
    if (rc == 0) {
        *sync_status = GRPC_STATUS_OK;
    } else {
        *sync_status = GRPC_STATUS_UNAUTHENTICATED;
        *sync_error_details = gpr_strdup(why);
        dmf_debug("rpc: refusing the server at %s: %s",
                  request->target_name ? request->target_name : "?", why);
    }
    return 1; /* done synchronously */
}

static void expect_cancel(void *user_data, grpc_tls_custom_verification_check_request *request)
{
}

static void expect_destruct(void *user_data)
{
    struct expect_verifier *v = user_data;
    free(v->host_id);
    free(v);
}

static grpc_channel_credentials *member_credentials(dmf_rpc_t *rpc,
                                                    const struct dmf_tls_expect *expect)
{
    grpc_tls_credentials_options *o = grpc_tls_credentials_options_create();
    grpc_tls_credentials_options_set_certificate_provider(o, rpc->tls);
    grpc_tls_credentials_options_watch_root_certs(o);
    grpc_tls_credentials_options_watch_identity_key_cert_pairs(o);
    grpc_tls_credentials_options_set_verify_server_cert(o, 1);
    grpc_tls_credentials_options_set_check_call_host(o, 0);
    struct expect_verifier *v = dmf_xcalloc(1, sizeof(*v));
    v->role = expect->role;
    v->host_id = expect->host_id ? dmf_xstrdup(expect->host_id) : NULL;
    v->ext.user_data = v;
    v->ext.verify = expect_verify;
    v->ext.cancel = expect_cancel;
    v->ext.destruct = expect_destruct;
    grpc_tls_certificate_verifier *ver = grpc_tls_certificate_verifier_external_create(&v->ext);
    grpc_tls_credentials_options_set_certificate_verifier(o, ver);
    grpc_tls_certificate_verifier_release(ver);
    return grpc_tls_credentials_create(o); /* takes o */
}

static grpc_server_credentials *server_credentials(dmf_rpc_t *rpc)
{
    grpc_tls_credentials_options *o = grpc_tls_credentials_options_create();
    grpc_tls_credentials_options_set_certificate_provider(o, rpc->tls);
    grpc_tls_credentials_options_watch_root_certs(o);
    grpc_tls_credentials_options_watch_identity_key_cert_pairs(o);
    grpc_tls_credentials_options_set_cert_request_type(
        o, GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    return grpc_tls_server_credentials_create(o); /* takes o */
}

/* ---------------------------------------------------------------- server */

static void server_request_next(dmf_rpc_server_t *s);

static void server_on_request(struct op *op, int ok)
{
    struct pending_request *pr = container_of(op, struct pending_request, op);
    dmf_rpc_server_t *s = pr->server;
    if (ok && pr->call) {
        dmf_rpc_call_t *c = call_new(s->rpc, pr->call, true);
        /* The close op tells us when the call is over and whether it was cancelled. */
        grpc_op close;
        memset(&close, 0, sizeof(close));
        close.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
        close.data.recv_close_on_server.cancelled = &c->cancelled;
        char why[300];
        if (call_batch(c, &close, 1, &c->status_op) != 0) {
            /* Without its close op the call could never end: refuse it at once. */
            grpc_call_cancel(c->call, NULL);
            call_unref(c);
        } else if (s->tls && call_identity_load(c->call, &c->identity, why, sizeof(why)) != 0) {
            /* gRPC verified the chain; a certificate naming no damselfly identity is
             * refused before any service sees the call. */
            dmf_warn("rpc: refusing a call from %s: %s", dmf_rpc_call_peer(c), why);
            char details[340];
            snprintf(details, sizeof(details), "client certificate refused: %s", why);
            dmf_rpc_call_finish(c, GRPC_STATUS_UNAUTHENTICATED, details);
            dmf_rpc_call_release(c);
        } else {
            c->has_identity = s->tls;
            char *method = grpc_slice_to_c_string(pr->details.method);
            s->on_call(s->arg, c, method);
            gpr_free(method);
        }
    }
    grpc_call_details_destroy(&pr->details);
    grpc_metadata_array_destroy(&pr->md);
    free(pr);
    if (ok && !s->shutting_down)
        server_request_next(s);
}

static void server_request_next(dmf_rpc_server_t *s)
{
    struct pending_request *pr = dmf_xcalloc(1, sizeof(*pr));
    pr->op.done = server_on_request;
    pr->server = s;
    grpc_call_details_init(&pr->details);
    grpc_metadata_array_init(&pr->md);
    grpc_call_error e = grpc_server_request_call(s->server, &pr->call, &pr->details, &pr->md,
                                                 s->rpc->cq, s->rpc->cq, &pr->op);
    if (e != GRPC_CALL_OK) {
        dmf_error("rpc: cannot request a call (%d)", (int)e);
        grpc_call_details_destroy(&pr->details);
        grpc_metadata_array_destroy(&pr->md);
        free(pr);
    }
}

dmf_rpc_server_t *dmf_rpc_server_new(dmf_rpc_t *rpc, dmf_rpc_on_call on_call, void *arg)
{
    dmf_rpc_server_t *s = dmf_xcalloc(1, sizeof(*s));
    s->rpc = rpc;
    s->on_call = on_call;
    s->arg = arg;
    s->server = grpc_server_create(message_size_args(), NULL);
    grpc_server_register_completion_queue(s->server, rpc->cq, NULL);
    return s;
}

int dmf_rpc_server_listen(dmf_rpc_server_t *s, const char *addr, int *bound_port, char *err,
                          size_t errlen)
{
    grpc_server_credentials *creds =
        s->rpc->tls ? server_credentials(s->rpc) : grpc_insecure_server_credentials_create();
    s->tls = s->rpc->tls != NULL;
    int port = grpc_server_add_http2_port(s->server, addr, creds);
    grpc_server_credentials_release(creds);
    if (port <= 0) {
        snprintf(err, errlen, "cannot listen on %s: address in use or not available", addr);
        return -EADDRINUSE;
    }
    if (bound_port)
        *bound_port = port;
    return 0;
}

void dmf_rpc_server_start(dmf_rpc_server_t *s)
{
    grpc_server_start(s->server);
    s->started = true;
    /* A few outstanding requests so bursts of calls do not wait on the loop. */
    for (int i = 0; i < 4; i++)
        server_request_next(s);
}

static void server_on_shutdown(struct op *op, int ok)
{
    dmf_rpc_server_t *s = container_of(op, dmf_rpc_server_t, shutdown_op);
    s->shutdown_done = true;
}

void dmf_rpc_server_free(dmf_rpc_server_t *s)
{
    if (s == NULL)
        return;
    if (s->started) {
        s->shutting_down = true;
        s->shutdown_op.done = server_on_shutdown;
        grpc_server_shutdown_and_notify(s->server, s->rpc->cq, &s->shutdown_op);
        grpc_server_cancel_all_calls(s->server);
        pump_until(s->rpc, &s->shutdown_done, NULL, 10000);
    }
    grpc_server_destroy(s->server);
    /* Pending request tags come back with ok=0 and free themselves. */
    free(s);
}

/* ---------------------------------------------------------------- client */

dmf_rpc_channel_t *dmf_rpc_channel_new(dmf_rpc_t *rpc, const char *target)
{
    return dmf_rpc_channel_new_member(rpc, target, NULL);
}

dmf_rpc_channel_t *dmf_rpc_channel_new_member(dmf_rpc_t *rpc, const char *target,
                                              const struct dmf_tls_expect *expect)
{
    dmf_rpc_channel_t *ch = dmf_xcalloc(1, sizeof(*ch));
    ch->rpc = rpc;
    grpc_channel_credentials *creds =
        rpc->tls && expect ? member_credentials(rpc, expect) : grpc_insecure_credentials_create();
    ch->channel = grpc_channel_create(target, creds, message_size_args());
    grpc_channel_credentials_release(creds);
    return ch;
}

void dmf_rpc_channel_free(dmf_rpc_channel_t *ch)
{
    if (ch == NULL)
        return;
    grpc_channel_destroy(ch->channel);
    free(ch);
}

void dmf_rpc_call_drop(dmf_rpc_call_t **call, dmf_rpc_channel_t **ch)
{
    if (*call) {
        dmf_rpc_call_release(*call);
        *call = NULL;
    }
    dmf_rpc_channel_free(*ch);
    *ch = NULL;
}

dmf_rpc_call_t *dmf_rpc_call_start(dmf_rpc_channel_t *ch, const char *method, uint64_t timeout_ms,
                                   bool wait_for_ready)
{
    gpr_timespec deadline = timeout_ms ? gpr_time_from_millis((int64_t)timeout_ms, GPR_TIMESPAN)
                                       : gpr_inf_future(GPR_CLOCK_REALTIME);
    grpc_slice m = grpc_slice_from_copied_string(method);
    grpc_call *gc = grpc_channel_create_call(ch->channel, NULL, GRPC_PROPAGATE_DEFAULTS,
                                             ch->rpc->cq, m, NULL, deadline, NULL);
    grpc_slice_unref(m);
    dmf_rpc_call_t *c = call_new(ch->rpc, gc, false);

    grpc_op ops[2];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (wait_for_ready)
        ops[0].flags = GRPC_INITIAL_METADATA_WAIT_FOR_READY;
    ops[1].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[1].data.recv_initial_metadata.recv_initial_metadata = &c->md_recv;
    c->initial_md_sent = true;
    call_batch(c, ops, 2, &c->start_op);

    grpc_op st;
    memset(&st, 0, sizeof(st));
    st.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    st.data.recv_status_on_client.trailing_metadata = &c->trailing_md;
    st.data.recv_status_on_client.status = &c->status;
    st.data.recv_status_on_client.status_details = &c->status_details;
    if (call_batch(c, &st, 1, &c->status_op) != 0) {
        c->status = GRPC_STATUS_INTERNAL;
        c->status_done = true;
    }
    return c;
}

struct unary {
    dmf_rpc_unary_cb cb;
    void *arg;
    uint8_t *resp;
    size_t len;
    bool have_resp;
};

static void unary_on_message(void *arg, dmf_rpc_call_t *call, const uint8_t *data, size_t len)
{
    struct unary *u = arg;
    if (data == NULL || u->have_resp)
        return;
    u->resp = dmf_xmalloc(len);
    memcpy(u->resp, data, len);
    u->len = len;
    u->have_resp = true;
}

static void unary_on_end(void *arg, dmf_rpc_call_t *call, grpc_status_code status,
                         const char *details)
{
    struct unary *u = arg;
    if (status == GRPC_STATUS_OK && !u->have_resp) {
        status = GRPC_STATUS_INTERNAL;
        details = "no response message";
    }
    u->cb(u->arg, status, details, status == GRPC_STATUS_OK ? u->resp : NULL, u->len);
    free(u->resp);
    free(u);
    dmf_rpc_call_release(call);
}

static const struct dmf_rpc_call_handler unary_handler = {
    .on_message = unary_on_message,
    .on_end = unary_on_end,
};

void dmf_rpc_unary(dmf_rpc_channel_t *ch, const char *method, const ProtobufCMessage *req,
                   uint64_t timeout_ms, dmf_rpc_unary_cb cb, void *arg)
{
    struct unary *u = dmf_xcalloc(1, sizeof(*u));
    u->cb = cb;
    u->arg = arg;
    dmf_rpc_call_t *c = dmf_rpc_call_start(ch, method, timeout_ms, false);
    dmf_rpc_call_set_handler(c, &unary_handler, u);
    dmf_rpc_call_send(c, req);
    dmf_rpc_call_close_send(c);
}
