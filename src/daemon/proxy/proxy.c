/* The daemon's HTTP proxy; see proxy.h and docs/internals/PROXY.md.
 *
 * One struct conn per client connection, an explicit state machine whose every change
 * goes through conn_set_state (logged at debug):
 *
 *   HEAD -> BODY -> (PASS | AUTH -> BLOB [-> PASS on fallback] | CONNECTING -> TUNNEL)
 *   HEAD -> CONNECT(intercepted) -> HEAD (inside TLS)
 *   any response done -> HEAD (keep-alive) or closed
 *
 * A connection is freed on the loop pass after conn_close (it may be closed from inside
 * any of its callbacks); every callback first checks c->dead. */
#include "daemon/proxy/proxy.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/digest.h"
#include "common/http_client.h"
#include "common/log.h"
#include "common/taskid.h"
#include "common/util.h"
#include "daemon/proxy/proxy_http.h"
#include "daemon/proxy/proxy_tls.h"
#include "daemon/proxy/registry.h"
#include "daemon/peer/task.h"

DMF_METRIC_COUNTER(m_req_p2p, "damselfly_proxy_requests_total", "path=\"p2p\"",
                   "Requests the proxy handled, by path taken.");
DMF_METRIC_COUNTER(m_req_direct, "damselfly_proxy_requests_total", "path=\"direct\"",
                   "Requests the proxy handled, by path taken.");
DMF_METRIC_COUNTER(m_req_tunnel, "damselfly_proxy_requests_total", "path=\"tunnel\"",
                   "Requests the proxy handled, by path taken.");
DMF_METRIC_COUNTER(m_req_intercept, "damselfly_proxy_requests_total", "path=\"intercept\"",
                   "Requests the proxy handled, by path taken.");
DMF_METRIC_COUNTER(m_fallbacks, "damselfly_proxy_fallbacks_total", NULL,
                   "P2P requests that fell back to the origin before sending any byte.");
DMF_METRIC_COUNTER(m_auth_denied, "damselfly_proxy_auth_denied_total", NULL,
                   "Blob requests the registry did not authorise (its answer relayed).");
DMF_METRIC_COUNTER(m_aborts, "damselfly_proxy_integrity_aborts_total", NULL,
                   "Responses aborted because the content failed verification.");
DMF_METRIC_COUNTER(m_bytes_p2p, "damselfly_proxy_bytes_total", "path=\"p2p\"",
                   "Body bytes the proxy sent to clients, by path.");
DMF_METRIC_COUNTER(m_bytes_direct, "damselfly_proxy_bytes_total", "path=\"direct\"",
                   "Body bytes the proxy sent to clients, by path.");

void dmf_proxy_metrics_register(void)
{
    struct dmf_metric *all[] = {&m_req_p2p,       &m_req_direct, &m_req_tunnel,
                                &m_req_intercept, &m_fallbacks,  &m_auth_denied,
                                &m_aborts,        &m_bytes_p2p,  &m_bytes_direct};
    for (size_t i = 0; i < DMF_ARRAY_SIZE(all); i++)
        dmf_metric_register(all[i]);
}

#define IDLE_TIMEOUT_S 120
#define READ_CHUNK     (256u << 10)

enum conn_state {
    C_HEAD,       /* reading a request head */
    C_BODY,       /* reading a request body */
    C_PASS,       /* relaying an origin's response */
    C_AUTH,       /* HEAD to the registry with the client's headers */
    C_BLOB,       /* serving a task's pieces */
    C_CONNECTING, /* CONNECT: connecting to the target */
    C_TUNNEL,     /* CONNECT: relaying bytes */
};

static const char *const state_names[] = {"HEAD", "BODY",       "PASS",  "AUTH",
                                          "BLOB", "CONNECTING", "TUNNEL"};

enum framing { F_LENGTH, F_CHUNKED, F_CLOSE, F_NONE };

struct dmf_proxy {
    struct dmf_daemon *d;
    struct evconnlistener *listener;
    struct evdns_base *dns;
    uint16_t port;
    struct dmf_proxy_rules rules;
    dmf_proxy_tls_t *tls;
    struct conn *conns;
    struct conn *zombies; /* closed, freed on the next loop pass (or by dmf_proxy_free) */
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
    struct bufferevent *bev; /* the client (a TLS filter when intercepted) */
    struct bufferevent *up;  /* CONNECT tunnel: the target */
    bool close_after;        /* close once the output is flushed */
    char *tls_host;          /* intercepted: requests go to https://tls_host[:tls_port] */
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
    int64_t off, end; /* next byte to send, last byte (inclusive) */
};

static void conn_close(struct conn *c, bool abort_conn);
static void process_input(struct conn *c);
static void start_pass(struct conn *c, bool fallback);
static void pump(struct conn *c);

static void conn_set_state(struct conn *c, enum conn_state s)
{
    if (c->state == s)
        return;
    dmf_debug("proxy conn %lu: %s -> %s", c->id, state_names[c->state], state_names[s]);
    c->state = s;
}

static struct evbuffer *out(struct conn *c)
{
    return bufferevent_get_output(c->bev);
}

/* ---------------------------------------------------------------- lifetime */

static void on_reap(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    if (c->prev)
        c->prev->next = c->next;
    else
        c->p->zombies = c->next;
    if (c->next)
        c->next->prev = c->prev;
    event_free(c->reap);
    event_free(c->kick);
    free(c);
}

static void reset_request(struct conn *c)
{
    if (c->hreq)
        dmf_http_cancel(c->hreq);
    c->hreq = NULL;
    if (c->subscribed)
        dmf_task_unsubscribe(c->t, &c->sub);
    c->subscribed = false;
    c->t = NULL;
    if (c->have_req)
        dmf_proxy_request_free(&c->req);
    c->have_req = false;
    free(c->url);
    free(c->what);
    c->url = c->what = NULL;
    dmf_strlist_free(&c->fwd);
    if (c->body)
        evbuffer_free(c->body);
    c->body = NULL;
    if (c->hold)
        evbuffer_free(c->hold);
    c->hold = NULL;
    if (c->sha)
        dmf_sha256_free(c->sha);
    c->sha = NULL;
    memset(&c->chunked, 0, sizeof(c->chunked));
    c->head_only = c->mirror = c->is_blob = c->resp_started = c->verify = false;
    c->from_cache = c->headers_sent = false;
    c->digest[0] = '\0';
    c->framing = F_NONE;
    c->passed = 0;
    c->off = c->end = 0;
}

/* Closes the connection now. abort_conn: reset it (RST), so the client cannot take a
 * truncated body for a complete one. */
static void conn_close(struct conn *c, bool abort_conn)
{
    if (c->dead)
        return;
    dmf_debug("proxy conn %lu: closed%s", c->id, abort_conn ? " (reset)" : "");
    c->dead = true;
    reset_request(c);
    if (c->bev) {
        if (abort_conn) {
            struct bufferevent *raw = bufferevent_get_underlying(c->bev);
            evutil_socket_t fd = bufferevent_getfd(raw ? raw : c->bev);
            struct linger lg = {.l_onoff = 1, .l_linger = 0};
            if (fd >= 0)
                setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        }
        bufferevent_free(c->bev);
        c->bev = NULL;
    }
    if (c->up)
        bufferevent_free(c->up);
    c->up = NULL;
    free(c->tls_host);
    c->tls_host = NULL;
    dmf_proxy_t *p = c->p;
    if (c->prev)
        c->prev->next = c->next;
    else
        p->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    p->nconns--;
    c->prev = NULL;
    c->next = p->zombies;
    if (p->zombies)
        p->zombies->prev = c;
    p->zombies = c;
    event_active(c->reap, 0, 0);
}

/* The response is complete: next request, or close once flushed. */
static void request_done(struct conn *c)
{
    bool keep = c->have_req && c->req.keep_alive && !c->close_after;
    reset_request(c);
    conn_set_state(c, C_HEAD);
    if (!keep) {
        c->close_after = true;
        if (evbuffer_get_length(out(c)) == 0)
            conn_close(c, false);
        return;
    }
    struct timeval tv = {.tv_sec = IDLE_TIMEOUT_S};
    bufferevent_set_timeouts(c->bev, &tv, NULL);
    event_active(c->kick, 0, 0); /* a pipelined request may be waiting */
}

/* A short response of the proxy's own; the connection closes after it. */
static void respond_error(struct conn *c, long status, const char *msg)
{
    dmf_info("proxy conn %lu: %s: %ld %s", c->id, c->what ? c->what : "request", status, msg);
    evbuffer_add_printf(out(c),
                        "HTTP/1.1 %ld %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                        "Connection: close\r\n\r\n%s\n",
                        status, dmf_proxy_status_reason(status), strlen(msg) + 1, msg);
    c->close_after = true;
    request_done(c);
}

/* ---------------------------------------------------------------- pass-through */

static bool status_has_body(long status, bool head_only)
{
    return !head_only && status >= 200 && status != 204 && status != 304;
}

static int pass_on_headers(void *arg, dmf_http_req_t *req, long status)
{
    struct conn *c = arg;
    if (c->dead)
        return -ECANCELED;
    int truncated = 0;
    const struct dmf_strlist *hs = dmf_http_all_headers(req, &truncated);
    const char *connection = NULL;
    bool has_length = false;
    for (size_t i = 0; i < hs->n; i++) {
        if (strncasecmp(hs->v[i], "connection:", 11) == 0)
            connection = hs->v[i] + 11;
        if (strncasecmp(hs->v[i], "content-length:", 15) == 0)
            has_length = true;
    }
    if (truncated) {
        dmf_warn("proxy conn %lu: %s: the origin's response head is too large", c->id, c->what);
        return -EMSGSIZE;
    }
    if (c->verify && status != 200)
        c->verify = false; /* an error or partial answer is relayed as it is */
    struct evbuffer *o = out(c);
    evbuffer_add_printf(o, "HTTP/1.1 %ld %s\r\n", status, dmf_proxy_status_reason(status));
    for (size_t i = 0; i < hs->n; i++) {
        const char *line = hs->v[i], *colon = strchr(line, ':');
        char name[128];
        size_t nl = colon ? (size_t)(colon - line) : 0;
        if (nl == 0 || nl >= sizeof(name))
            continue;
        memcpy(name, line, nl);
        name[nl] = '\0';
        while (nl > 0 && (name[nl - 1] == ' ' || name[nl - 1] == '\t'))
            name[--nl] = '\0';
        if (dmf_proxy_hop_by_hop(name, connection))
            continue;
        evbuffer_add_printf(o, "%s\r\n", line);
    }
    if (!status_has_body(status, c->head_only))
        c->framing = F_NONE;
    else if (has_length)
        c->framing = F_LENGTH;
    else if (c->req.minor >= 1)
        c->framing = F_CHUNKED;
    else
        c->framing = F_CLOSE;
    if (c->framing == F_CHUNKED)
        evbuffer_add_printf(o, "Transfer-Encoding: chunked\r\n");
    if (c->framing == F_CLOSE || !c->req.keep_alive) {
        c->close_after = true;
        evbuffer_add_printf(o, "Connection: close\r\n");
    }
    evbuffer_add(o, "\r\n", 2);
    c->resp_started = true;
    if (c->verify) {
        c->sha = dmf_sha256_new();
        c->hold = evbuffer_new();
    }
    dmf_debug("proxy conn %lu: %s: origin answered %ld", c->id, c->what, status);
    return 0;
}

static void emit(struct conn *c, const char *data, size_t len)
{
    if (len == 0)
        return;
    if (c->framing == F_CHUNKED) {
        evbuffer_add_printf(out(c), "%zx\r\n", len);
        evbuffer_add(out(c), data, len);
        evbuffer_add(out(c), "\r\n", 2);
    } else {
        evbuffer_add(out(c), data, len);
    }
    dmf_metric_add(&m_bytes_direct, (int64_t)len);
}

static int pass_on_data(void *arg, dmf_http_req_t *req, const char *data, size_t len)
{
    struct conn *c = arg;
    if (c->dead)
        return -ECANCELED;
    if (evbuffer_get_length(out(c)) > DMF_PROXY_OUT_HIGH)
        return DMF_HTTP_PAUSE; /* resumed by on_write */
    c->passed += len;
    if (!c->verify) {
        emit(c, data, len);
        return 0;
    }
    /* Hash everything; send all but the last DMF_PROXY_HOLD_BACK bytes. */
    dmf_sha256_update(c->sha, data, len);
    evbuffer_add(c->hold, data, len);
    size_t held = evbuffer_get_length(c->hold);
    if (held > DMF_PROXY_HOLD_BACK) {
        size_t n = held - DMF_PROXY_HOLD_BACK;
        char *tmp = dmf_xmalloc(n);
        evbuffer_remove(c->hold, tmp, n);
        emit(c, tmp, n);
        free(tmp);
    }
    return 0;
}

static void pass_on_done(void *arg, dmf_http_req_t *req, int err, const char *reason)
{
    struct conn *c = arg;
    c->hreq = NULL;
    if (c->dead)
        return;
    if (err != 0) {
        if (!c->resp_started) {
            char msg[300];
            snprintf(msg, sizeof(msg), "cannot reach the origin: %s", reason);
            respond_error(c, err == -ETIMEDOUT ? 504 : 502, msg);
        } else {
            dmf_warn("proxy conn %lu: %s: the origin's response broke off: %s", c->id, c->what,
                     reason);
            conn_close(c, true);
        }
        return;
    }
    if (c->verify) {
        uint8_t got[DMF_SHA256_LEN], want[DMF_SHA256_LEN];
        char e[64];
        dmf_sha256_final(c->sha, got);
        if (dmf_digest_parse(c->digest, want, e, sizeof(e)) != 0 ||
            memcmp(got, want, DMF_SHA256_LEN) != 0) {
            char gots[DMF_DIGEST_STR_LEN + 1];
            dmf_digest_format(got, gots);
            dmf_warn("proxy conn %lu: %s: the origin's blob is %s, not %s: connection aborted",
                     c->id, c->what, gots, c->digest);
            dmf_metric_add(&m_aborts, 1);
            conn_close(c, true);
            return;
        }
        size_t n = evbuffer_get_length(c->hold);
        char *tmp = dmf_xmalloc(n ? n : 1);
        evbuffer_remove(c->hold, tmp, n);
        emit(c, tmp, n);
        free(tmp);
    }
    if (c->framing == F_CHUNKED)
        evbuffer_add(out(c), "0\r\n\r\n", 5);
    dmf_info("proxy conn %lu: %s: %" PRIu64 " bytes from the origin", c->id, c->what, c->passed);
    request_done(c);
}

static const struct dmf_http_req_ops pass_ops = {
    .on_headers = pass_on_headers,
    .on_data = pass_on_data,
    .on_done = pass_on_done,
};

/* The request as the origin gets it: every header line in order, minus the hop-by-hop
 * ones and those libcurl writes itself. */
static void build_forward_headers(struct conn *c, bool for_task)
{
    const char *connection = dmf_proxy_request_header(&c->req, "connection");
    bool accept = false;
    dmf_strlist_free(&c->fwd);
    for (size_t i = 0; i < c->req.nh; i++) {
        const struct dmf_proxy_header *h = &c->req.h[i];
        if (dmf_proxy_hop_by_hop(h->name, connection) || strcasecmp(h->name, "host") == 0 ||
            strcasecmp(h->name, "content-length") == 0 || strcasecmp(h->name, "expect") == 0)
            continue;
        /* A task's request is the whole content, whoever asked for which part of it. */
        if (for_task &&
            (strcasecmp(h->name, "range") == 0 || strcasecmp(h->name, "if-range") == 0 ||
             strncasecmp(h->name, "if-", 3) == 0))
            continue;
        if (strcasecmp(h->name, "accept") == 0)
            accept = true;
        char *line = dmf_xasprintf("%s: %s", h->name, h->value);
        dmf_strlist_push(&c->fwd, line);
        free(line);
    }
    if (!for_task) {
        dmf_strlist_push(&c->fwd, "Expect:");
        if (!accept)
            dmf_strlist_push(&c->fwd, "Accept:");
    }
}

static void log_headers(struct conn *c)
{
    if (dmf_log_threshold > DMF_LOG_DEBUG)
        return;
    for (size_t i = 0; i < c->req.nh; i++)
        dmf_debug("proxy conn %lu: > %s: %s", c->id, c->req.h[i].name,
                  dmf_log_header_value(c->req.h[i].name, c->req.h[i].value));
}

static void start_pass(struct conn *c, bool fallback)
{
    build_forward_headers(c, false);
    c->verify = fallback && c->is_blob && !c->head_only &&
                dmf_proxy_request_header(&c->req, "range") == NULL;
    if (fallback)
        dmf_metric_add(&m_fallbacks, 1);
    else
        dmf_metric_add(&m_req_direct, 1);
    struct dmf_http_opts o = {
        .headers = &c->fwd,
        .method = c->req.method,
        .body = c->body ? (const char *)evbuffer_pullup(c->body, -1) : NULL,
        .body_len = c->body ? evbuffer_get_length(c->body) : 0,
        .keep_all_headers = 1,
        .http11 = 1,
        .low_speed_time_s = 60,
    };
    if (o.body == NULL && c->body) /* an empty body */
        o.body = "";
    dmf_info("proxy conn %lu: %s: %s", c->id, c->what,
             fallback ? "P2P could not deliver, fetching from the origin" : "passed through");
    conn_set_state(c, C_PASS);
    c->hreq = dmf_http_get(c->p->d->http, c->url, &o, &pass_ops, c);
}

/* ---------------------------------------------------------------- P2P */

static void send_blob_headers(struct conn *c, long status, int64_t total)
{
    struct evbuffer *o = out(c);
    int64_t len = c->end - c->off + 1;
    evbuffer_add_printf(o, "HTTP/1.1 %ld %s\r\n", status, dmf_proxy_status_reason(status));
    evbuffer_add_printf(o, "Content-Length: %" PRId64 "\r\n", len < 0 ? 0 : len);
    evbuffer_add_printf(o, "Content-Type: application/octet-stream\r\n");
    evbuffer_add_printf(o, "Accept-Ranges: bytes\r\n");
    if (status == 206)
        evbuffer_add_printf(o, "Content-Range: bytes %" PRId64 "-%" PRId64 "/%" PRId64 "\r\n",
                            c->off, c->end, total);
    if (c->digest[0]) {
        evbuffer_add_printf(o, "Docker-Content-Digest: %s\r\n", c->digest);
        evbuffer_add_printf(o, "Etag: \"%s\"\r\n", c->digest);
    }
    if (!c->req.keep_alive) {
        evbuffer_add_printf(o, "Connection: close\r\n");
        c->close_after = true;
    }
    evbuffer_add(o, "\r\n", 2);
    c->headers_sent = true;
    c->resp_started = true;
}

/* May byte offset off be sent? Its piece is verified, and the last piece only once the
 * whole task is (the content digest is checked before the last byte leaves). */
static bool sendable(const struct dmf_task *t, int64_t off)
{
    uint32_t n = (uint32_t)((uint64_t)off / t->piece_length);
    if (!dmf_bitmap_get(&t->have, n))
        return false;
    return n + 1 < t->total_pieces || t->state == DMF_TASK_SUCCEEDED;
}

static void pump(struct conn *c)
{
    struct dmf_task *t = c->t;
    if (c->dead || c->state != C_BLOB || t == NULL)
        return;
    if (!c->headers_sent) {
        if (t->content_length < 0 || t->piece_length == 0)
            return;
        int64_t total = t->content_length;
        bool done = t->state == DMF_TASK_SUCCEEDED;
        int64_t start = 0, end = total - 1;
        long status = 200;
        const char *range = dmf_proxy_request_header(&c->req, "range");
        int r = range ? dmf_proxy_parse_range(range, total, &start, &end) : 0;
        if (r < 0) {
            evbuffer_add_printf(out(c),
                                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes "
                                "*/%" PRId64 "\r\nContent-Length: 0\r\n\r\n",
                                total);
            request_done(c);
            return;
        }
        if (r > 0)
            status = 206;
        c->off = start;
        c->end = end;
        /* The response starts with its first verified piece; an empty content only once
         * it is verified (its digest is all there is to check). */
        if (!done && (total == 0 || !sendable(t, start)))
            return;
        send_blob_headers(c, status, total);
        dmf_info("proxy conn %lu: %s: streaming %s task %s (%" PRId64 " bytes%s)", c->id, c->what,
                 c->from_cache ? "cached" : "P2P", t->id, end - start + 1,
                 status == 206 ? ", a range" : "");
        if (c->head_only) {
            request_done(c);
            return;
        }
    }
    while (c->off <= c->end && evbuffer_get_length(out(c)) < DMF_PROXY_OUT_HIGH) {
        if (!sendable(t, c->off))
            return; /* more on the next update */
        uint32_t n = (uint32_t)((uint64_t)c->off / t->piece_length);
        uint64_t piece_end = dmf_piece_offset(t->piece_length, n) +
                             dmf_piece_size(t->content_length, t->piece_length, n);
        size_t want = (size_t)DMF_MIN(DMF_MIN((uint64_t)(c->end + 1), piece_end) - (uint64_t)c->off,
                                      (uint64_t)READ_CHUNK);
        struct evbuffer_iovec v;
        if (evbuffer_reserve_space(out(c), (ev_ssize_t)want, &v, 1) < 1) {
            conn_close(c, true);
            return;
        }
        ssize_t got = pread(t->fd, v.iov_base, want, (off_t)c->off);
        if (got <= 0) {
            dmf_warn("proxy conn %lu: task %s: cannot read its data file", c->id, t->id);
            conn_close(c, true);
            return;
        }
        v.iov_len = (size_t)got;
        evbuffer_commit_space(out(c), &v, 1);
        c->off += got;
        dmf_metric_add(&m_bytes_p2p, got);
        if (c->from_cache)
            dmf_metric_add(&dmf_m_bytes_local, got);
    }
    if (c->off > c->end)
        request_done(c);
}

static void on_task_update(void *arg, struct dmf_task *t, const uint32_t *pieces, size_t n,
                           bool end)
{
    struct conn *c = arg;
    if (c->dead)
        return;
    if (end)
        c->subscribed = false;
    if (!end || t->state == DMF_TASK_SUCCEEDED) {
        pump(c);
        return;
    }
    if (!c->headers_sent) {
        dmf_warn("proxy conn %lu: %s: task %s failed (%s)", c->id, c->what, t->id,
                 t->error ? t->error : "unknown");
        c->t = NULL;
        start_pass(c, true);
        return;
    }
    dmf_warn("proxy conn %lu: %s: task %s failed after %" PRId64 " bytes were sent (%s): "
             "connection aborted",
             c->id, c->what, t->id, c->off, t->error ? t->error : "unknown");
    if (t->error && strstr(t->error, "digest"))
        dmf_metric_add(&m_aborts, 1);
    conn_close(c, true);
}

static void start_task(struct conn *c)
{
    struct dmf_daemon *d = c->p->d;
    char id[DMF_TASK_ID_LEN + 1], err[256];
    struct dmf_task_id_input in = {.url = c->url, .digest = c->digest[0] ? c->digest : NULL};
    if (dmf_task_id(&in, id, err, sizeof(err)) != 0) {
        start_pass(c, false);
        return;
    }
    build_forward_headers(c, true);
    struct dmf_task_request treq = {
        .url = c->url,
        .headers = &c->fwd,
        .digest = c->digest[0] ? c->digest : NULL,
    };
    struct dmf_task *t = dmf_task_open(d, id, &treq);
    if (dmf_task_ensure_data(t) != 0) {
        start_pass(c, true);
        return;
    }
    dmf_metric_add(&m_req_p2p, 1);
    c->t = t;
    conn_set_state(c, C_BLOB);
    if (dmf_task_complete(t) && t->state != DMF_TASK_FAILED) {
        c->from_cache = true;
        if (t->state != DMF_TASK_SUCCEEDED)
            dmf_task_start(t); /* marks it SUCCEEDED */
        pump(c);
        return;
    }
    c->sub.on_update = on_task_update;
    c->sub.arg = c;
    dmf_task_subscribe(t, &c->sub);
    c->subscribed = true;
    dmf_task_start(t);
    pump(c);
}

/* The registry's verdict on this client reading this blob. */
static int auth_on_headers(void *arg, dmf_http_req_t *req, long status)
{
    struct conn *c = arg;
    c->passed = (uint64_t)status; /* kept for on_done */
    return 0;
}

static void auth_on_done(void *arg, dmf_http_req_t *req, int err, const char *reason)
{
    struct conn *c = arg;
    c->hreq = NULL;
    if (c->dead)
        return;
    long status = (long)c->passed;
    c->passed = 0;
    if (err != 0) {
        char msg[300];
        snprintf(msg, sizeof(msg),
                 "cannot ask the registry whether this client may read the blob: %s", reason);
        respond_error(c, 502, msg);
        return;
    }
    if (status >= 200 && status < 400) {
        start_task(c);
        return;
    }
    /* Not allowed (or not there): the client gets the registry's own answer to its GET. */
    dmf_info("proxy conn %lu: %s: the registry answered %ld to this client's credentials", c->id,
             c->what, status);
    dmf_metric_add(&m_auth_denied, 1);
    start_pass(c, false);
}

static const struct dmf_http_req_ops auth_ops = {
    .on_headers = auth_on_headers,
    .on_done = auth_on_done,
};

static void start_auth(struct conn *c)
{
    build_forward_headers(c, true);
    dmf_strlist_push(&c->fwd, "Accept:");
    struct dmf_http_opts o = {
        .headers = &c->fwd,
        .method = "HEAD",
        .http11 = 1,
    };
    conn_set_state(c, C_AUTH);
    c->passed = 0;
    c->hreq = dmf_http_get(c->p->d->http, c->url, &o, &auth_ops, c);
}

/* ---------------------------------------------------------------- dispatch */

/* "GET http://host/path" without the query (which may carry a signature). */
static char *describe(const char *method, const char *url)
{
    size_t n = strcspn(url, "?");
    return dmf_xasprintf("%s %.*s%s", method, (int)DMF_MIN(n, 300), url,
                         url[n] || n > 300 ? "..." : "");
}

static void dispatch(struct conn *c)
{
    dmf_proxy_t *p = c->p;
    bool get = strcmp(c->req.method, "GET") == 0;
    c->head_only = strcmp(c->req.method, "HEAD") == 0;
    log_headers(c);

    /* The path without query, to recognise blobs. */
    const char *path = c->url;
    const char *s = strstr(path, "://");
    if (s) {
        path = strchr(s + 3, '/');
        if (path == NULL)
            path = "/";
    }
    char *bare = dmf_xstrndup(path, strcspn(path, "?#"));
    c->is_blob = dmf_registry_blob_path(bare, c->digest);
    free(bare);
    if (!c->is_blob)
        c->digest[0] = '\0';

    bool p2p = false;
    if (get && c->mirror) {
        p2p = c->is_blob;
    } else if (get) {
        int r = dmf_proxy_rules_match(&p->rules, c->url);
        p2p = r == 1 || (r < 0 && p->rules.n == 0 && c->is_blob);
    }
    if (!p2p) {
        start_pass(c, false);
        return;
    }
    if (c->is_blob)
        start_auth(c);
    else
        start_task(c);
}

static void on_body_complete(struct conn *c)
{
    bufferevent_set_timeouts(c->bev, NULL, NULL);
    dispatch(c);
}

/* Reads as much of the request body as has arrived. */
static void read_body(struct conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    if (!c->req.chunked) {
        size_t want = (size_t)c->req.content_length - evbuffer_get_length(c->body);
        evbuffer_remove_buffer(in, c->body, want);
        if (evbuffer_get_length(c->body) == (size_t)c->req.content_length)
            on_body_complete(c);
        return;
    }
    char buf[16384], dec[16384];
    for (;;) {
        ev_ssize_t n = evbuffer_copyout(in, buf, sizeof(buf));
        if (n <= 0)
            return;
        size_t outlen, used;
        int r = dmf_proxy_chunked_decode(&c->chunked, buf, (size_t)n, dec, &outlen, &used);
        evbuffer_drain(in, used);
        if (r < 0) {
            respond_error(c, 400, "malformed chunked request body");
            return;
        }
        evbuffer_add(c->body, dec, outlen);
        if (evbuffer_get_length(c->body) > DMF_PROXY_BODY_MAX) {
            respond_error(c, 413, "request body too large for the proxy");
            return;
        }
        if (r == 1) {
            on_body_complete(c);
            return;
        }
    }
}

static bool intercepted(dmf_proxy_t *p, const char *host, uint16_t port)
{
    const struct dmf_strlist *l = &p->d->cfg.proxy_intercept;
    char hp[300];
    snprintf(hp, sizeof(hp), "%s:%u", host, port);
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i], "*") == 0 || strcasecmp(l->v[i], host) == 0 ||
            strcasecmp(l->v[i], hp) == 0)
            return true;
    return false;
}

static void on_client_read(struct bufferevent *bev, void *arg);
static void on_client_write(struct bufferevent *bev, void *arg);
static void on_client_event(struct bufferevent *bev, short what, void *arg);

/* ---- CONNECT tunnel ---- */

static void relay(struct bufferevent *from, struct bufferevent *to)
{
    evbuffer_add_buffer(bufferevent_get_output(to), bufferevent_get_input(from));
    if (evbuffer_get_length(bufferevent_get_output(to)) > DMF_PROXY_OUT_HIGH)
        bufferevent_disable(from, EV_READ);
}

static void on_up_read(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    if (!c->dead && c->state == C_TUNNEL)
        relay(c->up, c->bev);
}

static void on_up_write(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    if (c->dead || c->state != C_TUNNEL)
        return;
    if (c->close_after && evbuffer_get_length(bufferevent_get_output(c->up)) == 0) {
        conn_close(c, false);
        return;
    }
    bufferevent_enable(c->bev, EV_READ);
}

static void on_up_event(struct bufferevent *bev, short what, void *arg)
{
    struct conn *c = arg;
    if (c->dead)
        return;
    if (what & BEV_EVENT_CONNECTED) {
        dmf_info("proxy conn %lu: %s: tunnel open", c->id, c->what);
        conn_set_state(c, C_TUNNEL);
        evbuffer_add_printf(out(c), "HTTP/1.1 200 Connection established\r\n\r\n");
        reset_request(c);
        bufferevent_set_timeouts(c->bev, NULL, NULL);
        bufferevent_setwatermark(c->bev, EV_READ, 0, 0);
        bufferevent_enable(c->up, EV_READ | EV_WRITE);
        relay(c->bev, c->up);
        return;
    }
    if (c->state == C_CONNECTING) {
        int e = evutil_socket_geterror(bufferevent_getfd(bev));
        int dnserr = bufferevent_socket_get_dns_error(bev);
        char msg[256];
        snprintf(msg, sizeof(msg), "cannot connect: %s",
                 dnserr ? evutil_gai_strerror(dnserr) : evutil_socket_error_to_string(e));
        respond_error(c, 502, msg);
        return;
    }
    /* The target closed: flush what it sent, then close. */
    relay(c->up, c->bev);
    c->close_after = true;
    if (evbuffer_get_length(out(c)) == 0)
        conn_close(c, false);
}

static void start_connect(struct conn *c)
{
    char host[256], err[256];
    uint16_t port;
    dmf_proxy_t *p = c->p;
    if (dmf_parse_hostport(c->req.target, host, sizeof(host), &port, err, sizeof(err)) != 0 ||
        port == 0) {
        respond_error(c, 400, "CONNECT needs host:port");
        return;
    }
    if (c->tls_host) {
        respond_error(c, 400, "CONNECT inside an intercepted connection");
        return;
    }
    if (intercepted(p, host, port)) {
        if (p->tls == NULL) {
            respond_error(c, 502, "interception configured without --proxy-ca-cert/--proxy-ca-key");
            return;
        }
        SSL *ssl = dmf_proxy_tls_ssl_for(p->tls, host, err, sizeof(err));
        if (ssl == NULL) {
            respond_error(c, 502, err);
            return;
        }
        dmf_info("proxy conn %lu: %s: intercepting TLS", c->id, c->what);
        dmf_metric_add(&m_req_intercept, 1);
        evbuffer_add_printf(out(c), "HTTP/1.1 200 Connection established\r\n\r\n");
        struct bufferevent *tls = bufferevent_openssl_filter_new(
            bufferevent_get_base(c->bev), c->bev, ssl, BUFFEREVENT_SSL_ACCEPTING,
            BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
        if (tls == NULL) {
            SSL_free(ssl);
            conn_close(c, true);
            return;
        }
        c->bev = tls;
        c->tls_host = dmf_xstrdup(host);
        c->tls_port = port;
        bufferevent_setcb(tls, on_client_read, on_client_write, on_client_event, c);
        bufferevent_setwatermark(tls, EV_READ, 0, DMF_PROXY_INPUT_HIGH);
        bufferevent_setwatermark(tls, EV_WRITE, DMF_PROXY_OUT_HIGH / 2, 0);
        bufferevent_enable(tls, EV_READ | EV_WRITE);
        reset_request(c);
        conn_set_state(c, C_HEAD);
        struct timeval tv = {.tv_sec = IDLE_TIMEOUT_S};
        bufferevent_set_timeouts(tls, &tv, NULL);
        return;
    }
    dmf_metric_add(&m_req_tunnel, 1);
    conn_set_state(c, C_CONNECTING);
    bufferevent_disable(c->bev, EV_READ);
    c->up = bufferevent_socket_new(bufferevent_get_base(c->bev), -1,
                                   BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    bufferevent_setcb(c->up, on_up_read, on_up_write, on_up_event, c);
    bufferevent_setwatermark(c->up, EV_WRITE, DMF_PROXY_OUT_HIGH / 2, 0);
    if (bufferevent_socket_connect_hostname(c->up, p->dns, AF_UNSPEC, host, port) != 0) {
        /* on_up_event may have answered already */
        if (!c->dead && c->state == C_CONNECTING)
            respond_error(c, 502, "cannot connect");
    }
}

/* ---- request heads ---- */

static void handle_head(struct conn *c)
{
    dmf_proxy_t *p = c->p;
    const char *target = c->req.target;
    if (strcmp(c->req.method, "CONNECT") == 0) {
        c->what = dmf_xasprintf("CONNECT %.300s", target);
        start_connect(c);
        return;
    }
    if (c->tls_host) {
        if (target[0] != '/') {
            c->what = dmf_xstrdup("request");
            respond_error(c, 400, "expected an origin-form request inside the tunnel");
            return;
        }
        if (c->tls_port == 443)
            c->url = dmf_xasprintf("https://%s%s", c->tls_host, target);
        else if (strchr(c->tls_host, ':'))
            c->url = dmf_xasprintf("https://[%s]:%u%s", c->tls_host, c->tls_port, target);
        else
            c->url = dmf_xasprintf("https://%s:%u%s", c->tls_host, c->tls_port, target);
    } else if (strncasecmp(target, "http://", 7) == 0 || strncasecmp(target, "https://", 8) == 0) {
        c->url = dmf_xstrdup(target);
    } else if (strncmp(target, "/v2", 3) == 0 &&
               (target[3] == '/' || target[3] == '\0' || target[3] == '?')) {
        char *path, *ns;
        dmf_registry_strip_ns(target, &path, &ns);
        char *base = dmf_registry_upstream(&p->d->cfg.registry_map, p->d->cfg.registry_mirror, ns);
        if (base)
            c->url = dmf_xasprintf("%s%s", base, path);
        free(base);
        free(path);
        free(ns);
        c->mirror = true;
        if (c->url == NULL) {
            c->what = describe(c->req.method, target);
            respond_error(c, 502, "no upstream registry for this request (--registry-mirror)");
            return;
        }
    } else {
        c->what = describe(c->req.method, target);
        respond_error(c, 404,
                      "this is damselfly's proxy: registry-mirror requests start "
                      "with /v2/, forward-proxy requests with http://");
        return;
    }
    c->what = describe(c->req.method, c->url);
    dmf_debug("proxy conn %lu: %s", c->id, c->what);
    if (c->req.content_length > (int64_t)DMF_PROXY_BODY_MAX) {
        respond_error(c, 413, "request body too large for the proxy");
        return;
    }
    if (c->req.content_length > 0 || c->req.chunked) {
        c->body = evbuffer_new();
        conn_set_state(c, C_BODY);
        if (c->req.expect_continue)
            evbuffer_add_printf(out(c), "HTTP/1.1 100 Continue\r\n\r\n");
        read_body(c);
        return;
    }
    if (c->req.content_length == 0)
        c->body = evbuffer_new(); /* an explicit empty body (POST with no data) */
    on_body_complete(c);
}

static void process_input(struct conn *c)
{
    if (c->dead)
        return;
    if (c->state == C_BODY) {
        read_body(c);
        return;
    }
    if (c->state == C_TUNNEL) {
        relay(c->bev, c->up);
        return;
    }
    if (c->state != C_HEAD || c->close_after)
        return;
    struct evbuffer *in = bufferevent_get_input(c->bev);
    size_t len = evbuffer_get_length(in);
    if (len == 0)
        return;
    size_t look = DMF_MIN(len, (size_t)DMF_PROXY_HEAD_MAX);
    const char *buf = (const char *)evbuffer_pullup(in, (ev_ssize_t)look);
    char err[128];
    int r = dmf_proxy_request_parse(buf, look, &c->req, err, sizeof(err));
    if (r == 0) {
        if (len >= DMF_PROXY_HEAD_MAX)
            respond_error(c, 431, "request head too large");
        return;
    }
    if (r < 0) {
        c->what = dmf_xstrdup("request");
        respond_error(c, r == -EMSGSIZE ? 431 : r == -ENOTSUP ? 501 : 400, err);
        return;
    }
    evbuffer_drain(in, (size_t)r);
    c->have_req = true;
    handle_head(c);
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    process_input(arg);
}

static void on_client_read(struct bufferevent *bev, void *arg)
{
    process_input(arg);
}

static void on_client_write(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    if (c->dead)
        return;
    if (c->close_after && c->state == C_HEAD && evbuffer_get_length(out(c)) == 0) {
        conn_close(c, false);
        return;
    }
    switch (c->state) {
    case C_PASS:
        dmf_http_resume(c->hreq);
        break;
    case C_BLOB:
        pump(c);
        break;
    case C_TUNNEL:
        if (c->close_after && evbuffer_get_length(out(c)) == 0)
            conn_close(c, false);
        else if (c->up)
            bufferevent_enable(c->up, EV_READ);
        break;
    default:
        break;
    }
}

static void on_client_event(struct bufferevent *bev, short what, void *arg)
{
    struct conn *c = arg;
    if (c->dead || what == BEV_EVENT_CONNECTED) /* a TLS handshake completed */
        return;
    if (what & BEV_EVENT_TIMEOUT) {
        dmf_debug("proxy conn %lu: idle, closed", c->id);
    } else if (what & BEV_EVENT_ERROR) {
        unsigned long e = bufferevent_get_openssl_error(bev);
        char buf[160] = "";
        if (e)
            ERR_error_string_n(e, buf, sizeof(buf));
        dmf_debug("proxy conn %lu: %s %s", c->id, e ? "TLS error" : "connection error", buf);
    } else if (what & BEV_EVENT_EOF) {
        dmf_debug("proxy conn %lu: the client closed", c->id);
    }
    if (c->state == C_TUNNEL && (what & BEV_EVENT_EOF) && c->up) {
        relay(c->bev, c->up);
        c->close_after = true;
        if (evbuffer_get_length(bufferevent_get_output(c->up)) == 0)
            conn_close(c, false);
        else
            bufferevent_disable(c->bev, EV_READ);
        return;
    }
    conn_close(c, false);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg)
{
    dmf_proxy_t *p = arg;
    if (p->nconns >= DMF_PROXY_CONNS_MAX) {
        evutil_closesocket(fd);
        return;
    }
    struct event_base *base = evconnlistener_get_base(l);
    struct conn *c = dmf_xcalloc(1, sizeof(*c));
    c->p = p;
    c->id = ++p->next_id;
    c->reap = event_new(base, -1, 0, on_reap, c);
    c->kick = event_new(base, -1, 0, on_kick, c);
    c->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    bufferevent_setcb(c->bev, on_client_read, on_client_write, on_client_event, c);
    bufferevent_setwatermark(c->bev, EV_READ, 0, DMF_PROXY_INPUT_HIGH);
    bufferevent_setwatermark(c->bev, EV_WRITE, DMF_PROXY_OUT_HIGH / 2, 0);
    struct timeval tv = {.tv_sec = IDLE_TIMEOUT_S};
    bufferevent_set_timeouts(c->bev, &tv, NULL);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    c->framing = F_NONE;
    c->next = p->conns;
    if (p->conns)
        p->conns->prev = c;
    p->conns = c;
    p->nconns++;
    dmf_debug("proxy conn %lu: accepted", c->id);
}

dmf_proxy_t *dmf_proxy_new(struct dmf_daemon *d, const char *listen, struct dmf_proxy_rules *rules,
                           char *err, size_t errlen)
{
    dmf_proxy_t *p = dmf_xcalloc(1, sizeof(*p));
    p->d = d;
    p->rules = *rules;
    memset(rules, 0, sizeof(*rules));
    const struct dmf_daemon_config *cfg = &d->cfg;
    if (cfg->proxy_ca_cert || cfg->proxy_ca_key) {
        if (!cfg->proxy_ca_cert || !cfg->proxy_ca_key) {
            snprintf(err, errlen, "--proxy-ca-cert and --proxy-ca-key go together");
            goto fail;
        }
        char why[256];
        p->tls = dmf_proxy_tls_new(cfg->proxy_ca_cert, cfg->proxy_ca_key, why, sizeof(why));
        if (p->tls == NULL) {
            snprintf(err, errlen, "cannot load the proxy CA: %s", why);
            goto fail;
        }
    }
    char host[256], why[256], port[8];
    uint16_t pn;
    struct evutil_addrinfo hints = {.ai_family = AF_UNSPEC,
                                    .ai_socktype = SOCK_STREAM,
                                    .ai_flags = EVUTIL_AI_PASSIVE | EVUTIL_AI_ADDRCONFIG},
                           *ai = NULL;
    if (dmf_parse_hostport(listen, host, sizeof(host), &pn, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "%s", why);
        goto fail;
    }
    snprintf(port, sizeof(port), "%u", pn);
    if (evutil_getaddrinfo(host, port, &hints, &ai) != 0 || ai == NULL) {
        snprintf(err, errlen, "cannot resolve %s", host);
        goto fail;
    }
    p->listener = evconnlistener_new_bind(
        d->base, on_accept, p, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
        256, ai->ai_addr, (int)ai->ai_addrlen);
    evutil_freeaddrinfo(ai);
    if (p->listener == NULL) {
        snprintf(err, errlen, "cannot listen on %s: %s", listen, strerror(errno));
        goto fail;
    }
    struct sockaddr_storage bound;
    socklen_t bl = sizeof(bound);
    getsockname(evconnlistener_get_fd(p->listener), (struct sockaddr *)&bound, &bl);
    p->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                : ((struct sockaddr_in *)&bound)->sin_port);
    p->dns = evdns_base_new(d->base,
                            EVDNS_BASE_INITIALIZE_NAMESERVERS | EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (p->dns == NULL) {
        p->dns = evdns_base_new(d->base, EVDNS_BASE_DISABLE_WHEN_INACTIVE);
        evdns_base_load_hosts(p->dns, NULL);
    }
    return p;
fail:
    dmf_proxy_free(p);
    return NULL;
}

uint16_t dmf_proxy_port(const dmf_proxy_t *p)
{
    return p->port;
}

void dmf_proxy_free(dmf_proxy_t *p)
{
    if (p == NULL)
        return;
    while (p->conns)
        conn_close(p->conns, false);
    while (p->zombies) /* the loop will not run their reap events: free them now */
        on_reap(-1, 0, p->zombies);
    if (p->listener)
        evconnlistener_free(p->listener);
    if (p->dns)
        evdns_base_free(p->dns, 0);
    dmf_proxy_tls_free(p->tls);
    dmf_proxy_rules_free(&p->rules);
    free(p);
}
