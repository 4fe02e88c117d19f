/* A client connection of the proxy, as the proxy's own files see it. No file outside
 * src/daemon/proxy/ includes this header; its functions carry the wing's prefix proxy_
 * (as curl's library-internal names carry Curl_), not the project's public dmf_.
 *
 *   proxy.c         the listener (proxy.h) and a request's way in: the client's events,
 *                   the request head and body, the dispatch to a mode
 *   proxy_blob.c    modes AUTH and BLOB: content served from a task (P2P or the cache)
 *   proxy_pass.c    mode PASS: the request forwarded to the origin, its answer relayed
 *   proxy_tunnel.c  modes CONNECTING and TUNNEL: CONNECT, and TLS interception
 *   proxy_conn.c    the connection every one of them uses: its state machine, its
 *                   output, the end of a response, its close; the proxy's metrics
 *
 * Calls go one way, down that list: proxy.c calls the modes, the modes call
 * proxy_conn.c, and proxy_conn.c calls none of them (events come back up through the
 * callbacks proxy.c hands to proxy_conn_new and proxy_conn_attach). One mode uses
 * another, through the functions declared here: the blob mode uses pass-through, to fall
 * back to the origin when P2P cannot deliver (proxy_pass_start) and to send the client's
 * headers by the same rules (proxy_forward_headers); pass-through knows nothing of blobs.
 * No mode has a header of its own, so no include runs between modes.
 *
 * The state machine, every change through proxy_conn_set_state (logged at debug):
 *
 *   HEAD -> BODY -> (PASS | AUTH -> BLOB [-> PASS on fallback] | CONNECTING -> TUNNEL)
 *   HEAD -> CONNECT(intercepted) -> HEAD (inside TLS)
 *   any response done -> HEAD (keep-alive) or closed
 *
 * A connection is freed on the loop pass after proxy_conn_close (it may be closed from
 * inside any of its callbacks); every callback first checks c->dead. Everything runs on
 * the daemon's loop thread. */
#ifndef DMF_PROXY_CONN_H
#define DMF_PROXY_CONN_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "common/digest.h"
#include "common/fdlimit.h"
#include "common/http_client.h"
#include "common/metrics.h"
#include "common/util.h"
#include "daemon/peer/engine.h"
#include "daemon/proxy/proxy.h"
#include "daemon/proxy/proxy_http.h"
#include "daemon/proxy/proxy_policy.h"
#include "daemon/proxy/proxy_rules.h"
#include "daemon/proxy/proxy_tls.h"

enum conn_state {
    C_HEAD,       /* reading a request head */
    C_BODY,       /* reading a request body */
    C_PASS,       /* relaying an origin's response */
    C_AUTH,       /* HEAD to the registry with the client's headers */
    C_BLOB,       /* serving a task's pieces */
    C_CONNECTING, /* CONNECT: connecting to the target */
    C_TUNNEL,     /* CONNECT: relaying bytes */
};

/* How a relayed response's body is delimited towards the client. */
enum framing { F_LENGTH, F_CHUNKED, F_CLOSE, F_NONE };

struct dmf_proxy {
    struct dmf_daemon *d;
    struct evconnlistener *listener;
    struct dmf_listener_guard *guard; /* accept errors pause, not spin (fdlimit.h) */
    struct evdns_base *dns;
    uint16_t port;
    struct dmf_proxy_rules rules;
    struct dmf_proxy_policy policy; /* who may use the proxy, where it may connect */
    dmf_proxy_tls_t *tls;
    struct conn *conns;
    struct conn *zombies;          /* closed, freed on the next loop pass (or by dmf_proxy_free) */
    struct timeval head_timeout;   /* a request head is complete this long after its first byte */
    struct timeval idle_timeout;   /* between requests; a client not reading; a connect */
    struct timeval tunnel_timeout; /* a CONNECT tunnel with no byte either way */
    size_t nconns;
    unsigned long next_id;
};

struct conn {
    dmf_proxy_t *p;
    struct conn *prev, *next;
    unsigned long id;
    enum conn_state state;
    bool dead;
    struct event *reap, *kick;
    struct event *head_timer;   /* armed by a head's first byte, not reset by later ones */
    struct event *tunnel_timer; /* TUNNEL (made by proxy_tunnel.c): re-armed by every relay */
    size_t head_scanned;        /* how far the head parser looked for the head's end */
    struct bufferevent *bev;    /* the client (a TLS filter when intercepted) */
    struct bufferevent *up;     /* CONNECT tunnel: the target */
    bool close_after;           /* close once the output is flushed */
    char *tls_host;             /* intercepted: requests go to https://tls_host[:tls_port] */
    uint16_t tls_port;

    /* The request being served. */
    struct dmf_proxy_request req;
    bool have_req, head_only;
    char *url;  /* absolute upstream URL */
    char *what; /* "GET http://host/path" without the query, for logs */
    struct dmf_strlist fwd;
    struct evbuffer *body;
    struct dmf_proxy_chunked chunked;
    bool mirror, is_blob;
    uint64_t rate_limit;        /* the matching proxy rule's task limit (0 = none) */
    enum dmf_priority priority; /* ... and priority */
    /* The request's application: the matching rule's, else the client's
     * X-Dragonfly-Application header ("" = none). The header never reaches the origin. */
    char application[DMF_APPLICATION_MAX + 1];
    char digest[DMF_DIGEST_STR_LEN + 1];

    /* Pass-through. */
    dmf_http_req_t *hreq;
    bool resp_started;
    enum framing framing;
    bool verify; /* blob bytes from the origin: hash, hold back the tail */
    dmf_sha256_ctx_t *sha;
    struct evbuffer *hold;
    uint64_t passed;

    /* P2P. */
    struct dmf_task *t;
    struct dmf_task_sub sub;
    bool subscribed, from_cache, headers_sent;
    struct dmf_revalidation *reval; /* a cached URL task checked with its origin first */
    int64_t off, end;               /* next byte to send, last byte (inclusive) */
    /* The response's own read-only descriptor of the task's data file, opened when its
     * body starts (proxy_blob.c): the bytes sent are those of the file the verified
     * pieces were written to, even if the task's data file is replaced meanwhile. A plain
     * client gets it as one file segment (owning the descriptor, closed by libevent once
     * the connection and its output chains released it: sendfile); an intercepted (TLS)
     * client's body is read from body_fd with pread, on the loop. */
    struct evbuffer_file_segment *seg;
    int64_t seg_base;      /* the task offset of the segment's first byte */
    int body_fd;           /* TLS: owned; -1 when none */
    struct stat body_file; /* what the descriptor reads (device, inode) */
};

/* The proxy's metrics (defined in proxy_conn.c, registered by dmf_proxy_metrics_register). */
extern struct dmf_metric proxy_m_req_p2p, proxy_m_req_direct, proxy_m_req_tunnel,
    proxy_m_req_intercept, proxy_m_fallbacks, proxy_m_auth_denied, proxy_m_aborts,
    proxy_m_bytes_p2p, proxy_m_bytes_direct, proxy_m_head_timeouts, proxy_m_refused_client,
    proxy_m_refused_target;

/* ---- proxy_conn.c: the connection */

/* A request head's clock: proxy_head_begin arms the header timeout when the first byte of
 * a head is in (a no-op when armed); proxy_head_done disarms it once the head is parsed.
 * A head not complete in time is answered 408 and the connection closed, however often
 * bytes trickle in (the idle timeout alone would be reset by each of them). */
void proxy_head_begin(struct conn *c);
void proxy_head_done(struct conn *c);
/* While a response is sent: no read timeout (the client waits), but a client that stops
 * reading for the idle timeout while output is pending is closed. */
void proxy_conn_responding(struct conn *c);

/* A new connection of p (owned by p's list until proxy_conn_close), with no client side
 * yet; on_kick (arg: the connection) runs on the loop pass after a keep-alive response
 * ends, to read a request that may already be waiting. */
struct conn *proxy_conn_new(dmf_proxy_t *p, struct event_base *base, event_callback_fn on_kick);
/* Makes bev (taken over) the connection's client side: the callbacks (arg: the
 * connection), the input and output watermarks, the idle timeout, reading and
 * writing enabled. */
void proxy_conn_attach(struct conn *c, struct bufferevent *bev, bufferevent_data_cb on_read,
                       bufferevent_data_cb on_write, bufferevent_event_cb on_event);
/* Closes every connection of p and frees them now (the proxy is going away). */
void proxy_conn_close_all(dmf_proxy_t *p);

/* The one place a connection changes state; logs the change at debug. */
void proxy_conn_set_state(struct conn *c, enum conn_state s);
/* The client's output buffer (borrowed). */
struct evbuffer *proxy_out(struct conn *c);
/* Closes the connection now; it is freed on the next loop pass. abort_conn: reset it
 * (RST), so the client cannot take a truncated body for a complete one. */
void proxy_conn_close(struct conn *c, bool abort_conn);
/* Forgets the request being served: cancels its origin request, leaves its task, frees
 * what it owns. The connection itself stays. */
void proxy_reset_request(struct conn *c);
/* The response is complete: next request, or close once flushed. */
void proxy_request_done(struct conn *c);
/* A short response of the proxy's own; the connection closes after it. */
void proxy_respond_error(struct conn *c, long status, const char *msg);

/* ---- proxy_pass.c: pass-through (also called by proxy_blob.c, see above) */

/* Sends the request to c->url and relays the answer (state PASS). fallback: P2P could
 * not deliver; a whole blob is then hashed on the way and its tail held back until it
 * matches c->digest. */
void proxy_pass_start(struct conn *c, bool fallback);
/* Fills c->fwd (owned by c) with the request as the origin gets it: every header line
 * in order, minus the hop-by-hop ones and those libcurl writes itself (Host,
 * Content-Length, Expect). for_task: for a task's download or the registry's HEAD, which
 * concern the whole content: no Range or If-* lines. Otherwise empty "Expect:" and (when
 * the client sent none) "Accept:" lines keep libcurl from adding its own. */
void proxy_forward_headers(struct conn *c, bool for_task);

/* ---- proxy_blob.c: content from a task */

/* Serves c->url through P2P: a blob after the registry's HEAD accepted the client's
 * headers (state AUTH), then from its task (state BLOB). */
void proxy_blob_start(struct conn *c);
/* Sends what the task holds, as far as the client's output allows. */
void proxy_blob_pump(struct conn *c);

/* ---- proxy_tunnel.c: CONNECT */

/* Answers a CONNECT: a byte tunnel to the target (states CONNECTING, TUNNEL), or TLS
 * interception (the connection reads requests again, inside TLS). */
void proxy_tunnel_start(struct conn *c);
/* The client sent bytes (TUNNEL): relays them to the target. */
void proxy_tunnel_on_client_read(struct conn *c);
/* The client's output drained (TUNNEL): reads from the target again, or closes. */
void proxy_tunnel_on_client_write(struct conn *c);
/* The client closed its side (TUNNEL): flushes to the target, then closes. */
void proxy_tunnel_on_client_eof(struct conn *c);

#endif
