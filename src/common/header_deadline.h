/* A deadline on every request head of an evhttp server: from accept to the first complete
 * head, and on a keep-alive connection from the first byte of each later head to its end.
 *
 * evhttp's timeouts are the bufferevent's, which every byte read restarts: a client that
 * drips one header byte every few seconds keeps its connection (and a descriptor) for
 * ever. libevent 2.1 has no hook at the start of a request, so this module makes each
 * incoming connection's bufferevent itself (evhttp_set_bevcb), holds a reference to it,
 * and a sweep timer shuts down the socket of any connection that has not completed a
 * request head within the timeout; evhttp then sees the end of the stream and frees the
 * connection as it would any other. The server's request callback marks the connection
 * (dmf_header_deadline_got_request); a callback on the bufferevent's input notes when the
 * next head's first byte arrives. A complete head waiting in the input (a pipelined request
 * while a response is still being sent) is not late.
 *
 * The bufferevent owns its descriptor (BEV_OPT_CLOSE_ON_FREE): when evhttp frees the
 * connection it shuts the socket down for writing (the client sees the end at once), and the
 * descriptor is closed when the last reference goes, the sweep's, at most 100 ms later
 * (the sweep sees that evhttp freed it: its callbacks are cleared). It must not be closed
 * earlier: a freed bufferevent that is still referenced keeps its read event in the event
 * base, and once the descriptor's number is reused (an origin or peer socket), libevent
 * runs that stale event for the new socket's bytes, which its read callback would take.
 * Bytes that still arrive on a freed connection stop its reading at once.
 *
 * A keep-alive connection that sends nothing between requests is bounded by the server's
 * idle timeout instead. */
#ifndef DMF_HEADER_DEADLINE_H
#define DMF_HEADER_DEADLINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct bufferevent;
struct event_base;
struct evhttp;
struct evhttp_request;

typedef struct dmf_header_deadline dmf_header_deadline_t;

/* Installs the deadline on http (borrowed; it must be freed before this). timeout_ms > 0.
 * what names the server in logs ("piece server"). Never NULL. */
dmf_header_deadline_t *dmf_header_deadline_new(struct event_base *base, struct evhttp *http,
                                               uint64_t timeout_ms, const char *what);
/* How each new connection's bufferevent is made, instead of a plain socket one (an
 * OpenSSL one for TLS): make returns a bufferevent made with fd -1, or NULL for a plain
 * one. Make it with BEV_OPT_CLOSE_ON_FREE: its descriptor (and its SSL) then go when the
 * module drops its reference, at the sweep after evhttp freed the connection (at most
 * 100 ms later), so the descriptor is never closed and reused under a bufferevent that
 * still holds it. */
typedef struct bufferevent *(*dmf_header_deadline_make_cb)(struct event_base *base, void *arg);
void dmf_header_deadline_set_maker(dmf_header_deadline_t *hd, dmf_header_deadline_make_cb make,
                                   void *arg);
/* Changes the timeout (> 0) for connections accepted from now on and the sweep. */
void dmf_header_deadline_set_timeout(dmf_header_deadline_t *hd, uint64_t timeout_ms);
/* A request head arrived on req's connection: its deadline is met. */
void dmf_header_deadline_got_request(dmf_header_deadline_t *hd, struct evhttp_request *req);
/* Connections closed for a late head since start. */
uint64_t dmf_header_deadline_closed(const dmf_header_deadline_t *hd);
/* Call after evhttp_free() of the server: releases what is still held. NULL is ignored. */
void dmf_header_deadline_free(dmf_header_deadline_t *hd);

/* The decision, pure: is a connection whose awaited head began at head_from_ms (0: no head
 * awaited) late at now_ms? head_waiting: a complete head is buffered, unread by evhttp. */
bool dmf_header_deadline_late(uint64_t head_from_ms, uint64_t now_ms, uint64_t timeout_ms,
                              bool head_waiting);

#endif
