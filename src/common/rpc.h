/* gRPC core on a libevent loop.
 *
 * gRPC core exposes no file descriptor: one poller thread per dmf_rpc_t waits in
 * grpc_completion_queue_next() and posts every completed batch back to the event loop,
 * where all callbacks below run. Every function here must be called on the loop thread.
 * Messages are protobuf-c messages, packed/unpacked here; method names are full paths
 * ("/damselfly.v1.Scheduler/AnnounceHost"). See docs/internals/RPC.md. */
#ifndef DMF_RPC_H
#define DMF_RPC_H

#include <grpc/grpc.h>
#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/tls.h"
#include "common/tls_expect.h"

struct event_base;

typedef struct dmf_rpc dmf_rpc_t;
typedef struct dmf_rpc_server dmf_rpc_server_t;
typedef struct dmf_rpc_channel dmf_rpc_channel_t;
typedef struct dmf_rpc_call dmf_rpc_call_t;

/* The largest message either side accepts (bigger ones fail the call). */
#define DMF_RPC_MAX_MESSAGE (8u << 20)
/* A call's send queue is bounded: a reader is cut off when what waits for it would pass
 * DMF_RPC_SEND_QUEUE_DEFAULT bytes (or the bound its owner sets: the largest burst the
 * scheduler sends, every digest of a task of DMF_PIECES_MAX pieces, is about 40 MiB), or
 * when one message has waited DMF_RPC_SEND_STALL_MS for it to read (HTTP/2 flow control
 * holds a message until the reader takes the ones before it). */
#define DMF_RPC_SEND_QUEUE_DEFAULT (64u << 20)
#define DMF_RPC_SEND_STALL_MS      30000

/* A new event loop that other threads may wake (evthread_use_pthreads first): every loop
 * that hosts a dmf_rpc_t must be made by this. Never NULL. */
struct event_base *dmf_rpc_event_base_new(void);

/* Initialises gRPC (grpc_init) and starts the poller thread; never NULL. */
dmf_rpc_t *dmf_rpc_new(struct event_base *base);
/* Stops the poller; every server, channel and call must be gone. Calls grpc_shutdown. */
void dmf_rpc_free(dmf_rpc_t *rpc);

/* ---- mutual TLS (optional) ---- */

/* How often gRPC rereads the certificate files (rotation needs no restart and no signal:
 * new connections use the new files; open ones keep theirs). */
#define DMF_RPC_TLS_REFRESH_S 2

/* Turns on mutual TLS for every server listening after this and every member channel
 * (dmf_rpc_channel_new_member) made after it: servers require a client certificate that
 * verifies against f->ca; member channels present f->cert/f->key and require the server's
 * certificate to verify against f->ca and match what the channel expects. All three files
 * NULL: TLS stays off (0). 0, or -EINVAL with err filled when only some are given or they do
 * not load. */
int dmf_rpc_tls_enable(dmf_rpc_t *rpc, const struct dmf_tls_files *f, char *err, size_t errlen);
bool dmf_rpc_tls_on(const dmf_rpc_t *rpc);
/* The identity in this process's own certificate (read when TLS was enabled; a certificate
 * carrying none is refused then), or NULL with TLS off. */
const struct dmf_tls_identity *dmf_rpc_tls_identity(const dmf_rpc_t *rpc);
/* Loads the TLS files again, as gRPC will at its next reread (SIGHUP calls this to tell
 * the operator whether a rotation is good): 0 when they load and still name this
 * process's identity; -EINVAL with err filled otherwise. 0 with TLS off. */
int dmf_rpc_tls_recheck(const dmf_rpc_t *rpc, char *err, size_t errlen);

/* ---- calls (client and server side) ---- */

struct dmf_rpc_call_handler {
    /* One received message (data borrowed for the callback), or data == NULL when the other
     * side has finished sending (half-close). */
    void (*on_message)(void *arg, dmf_rpc_call_t *call, const uint8_t *data, size_t len);
    /* The call is over. Client side: the server's status. Server side: status is
     * GRPC_STATUS_OK when our finish was sent, GRPC_STATUS_CANCELLED when the client went
     * away. Called once; the owner should then dmf_rpc_call_release(). */
    void (*on_end)(void *arg, dmf_rpc_call_t *call, grpc_status_code status, const char *details);
};

/* Installs the handler and starts receiving messages. Call once per call. */
void dmf_rpc_call_set_handler(dmf_rpc_call_t *call, const struct dmf_rpc_call_handler *h,
                              void *arg);
/* Packs msg and queues it (messages go out in order). Returns 0, -EPIPE when the call has
 * ended or finish/close_send was already called, or -ENOBUFS when the other side reads so
 * slowly that the queue would pass its bounds (above): the call is then cancelled with
 * RESOURCE_EXHAUSTED (logged, counted in damselfly_rpc_slow_readers_total) and on_end
 * follows. One message is always accepted into an empty queue. */
int dmf_rpc_call_send(dmf_rpc_call_t *call, const ProtobufCMessage *msg);
/* The bound on the bytes queued for sending on this call (default
 * DMF_RPC_SEND_QUEUE_DEFAULT). */
void dmf_rpc_call_set_send_limit(dmf_rpc_call_t *call, size_t bytes);
/* Client: half-close (no more messages from us). */
void dmf_rpc_call_close_send(dmf_rpc_call_t *call);
/* Server: ends the call with a status after the queued messages are sent. */
void dmf_rpc_call_finish(dmf_rpc_call_t *call, grpc_status_code status, const char *details);
/* Cancels the call (either side); on_end follows. */
void dmf_rpc_call_cancel(dmf_rpc_call_t *call);
/* The owner gives up its reference: no callback runs after this returns. A call still in
 * progress is cancelled. Memory is freed once gRPC has returned every batch. */
void dmf_rpc_call_release(dmf_rpc_call_t *call);
/* Server side: the identity in the client's verified certificate when the server listens
 * with TLS (a call whose certificate names no valid identity never reaches the service:
 * it is refused with UNAUTHENTICATED); NULL without TLS. Borrowed, lives with the call. */
const struct dmf_tls_identity *dmf_rpc_call_identity(const dmf_rpc_call_t *call);
/* The peer address as gRPC reports it ("ipv4:127.0.0.1:5555"); borrowed, may be "". */
const char *dmf_rpc_call_peer(dmf_rpc_call_t *call);

/* ---- server ---- */

/* A new call arrived for method (borrowed). The callback owns one reference to call: it
 * must set a handler (then finish/release it later), or finish and release it. */
typedef void (*dmf_rpc_on_call)(void *arg, dmf_rpc_call_t *call, const char *method);

dmf_rpc_server_t *dmf_rpc_server_new(dmf_rpc_t *rpc, dmf_rpc_on_call on_call, void *arg);
/* Adds a listening address: "HOST:PORT" or "unix:/path". *bound_port (may be NULL) gets
 * the TCP port actually bound. Returns 0 or -EADDRINUSE/-EINVAL with a reason in err. */
int dmf_rpc_server_listen(dmf_rpc_server_t *s, const char *addr, int *bound_port, char *err,
                          size_t errlen);
void dmf_rpc_server_start(dmf_rpc_server_t *s);
/* Cancels every call and stops; blocks until gRPC confirms. Frees s. */
void dmf_rpc_server_free(dmf_rpc_server_t *s);

/* ---- client ---- */

/* A channel to "HOST:PORT" or "unix:/path" (insecure, always: the manager's plane has no
 * TLS yet). Never NULL; connects lazily. */
dmf_rpc_channel_t *dmf_rpc_channel_new(dmf_rpc_t *rpc, const char *target);
/* A channel to another member of the cluster (scheduler, seed): with TLS on it presents
 * this host's certificate and accepts only a server whose verified certificate matches
 * expect (copied); a mismatch fails calls with UNAVAILABLE. TLS off or expect NULL: as
 * dmf_rpc_channel_new. */
dmf_rpc_channel_t *dmf_rpc_channel_new_member(dmf_rpc_t *rpc, const char *target,
                                              const struct dmf_tls_expect *expect);
void dmf_rpc_channel_free(dmf_rpc_channel_t *ch);
/* An outgoing call's end for its owner: releases *call (dmf_rpc_call_release), then frees
 * the channel it ran on, and clears both; either may be NULL. */
void dmf_rpc_call_drop(dmf_rpc_call_t **call, dmf_rpc_channel_t **ch);

/* Starts a streaming call. timeout_ms 0 = no deadline. wait_for_ready: wait for the
 * channel to connect (until the deadline) instead of failing at once with UNAVAILABLE.
 * The caller owns one reference and must set a handler. */
dmf_rpc_call_t *dmf_rpc_call_start(dmf_rpc_channel_t *ch, const char *method, uint64_t timeout_ms,
                                   bool wait_for_ready);

/* Unary call: the response (borrowed for the callback; NULL unless status is OK). */
typedef void (*dmf_rpc_unary_cb)(void *arg, grpc_status_code status, const char *details,
                                 const uint8_t *resp, size_t len);
void dmf_rpc_unary(dmf_rpc_channel_t *ch, const char *method, const ProtobufCMessage *req,
                   uint64_t timeout_ms, dmf_rpc_unary_cb cb, void *arg);

#endif
