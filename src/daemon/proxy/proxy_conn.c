/* A client connection of the proxy, as every part of the proxy uses it: its state
 * machine, its output, the end of a response, its close; and the proxy's metrics, which
 * every part counts. See proxy_conn.h. */
#include "daemon/proxy/proxy_conn.h"

#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/evx.h"
#include "common/log.h"

DMF_METRIC_COUNTER(proxy_m_req_p2p, "damselfly_proxy_requests_total", "path=\"p2p\"",
                   "Requests the proxy handled, by path taken.");
DMF_METRIC_COUNTER(proxy_m_req_direct, "damselfly_proxy_requests_total", "path=\"direct\"",
                   "Requests the proxy handled, by path taken.");
DMF_METRIC_COUNTER(proxy_m_req_tunnel, "damselfly_proxy_requests_total", "path=\"tunnel\"",
                   "Requests the proxy handled, by path taken.");
DMF_METRIC_COUNTER(proxy_m_req_intercept, "damselfly_proxy_requests_total", "path=\"intercept\"",
                   "Requests the proxy handled, by path taken.");
DMF_METRIC_COUNTER(proxy_m_fallbacks, "damselfly_proxy_fallbacks_total", NULL,
                   "P2P requests that fell back to the origin before sending any byte.");
DMF_METRIC_COUNTER(proxy_m_auth_denied, "damselfly_proxy_auth_denied_total", NULL,
                   "Blob requests the registry did not authorise (its answer relayed).");
DMF_METRIC_COUNTER(proxy_m_aborts, "damselfly_proxy_integrity_aborts_total", NULL,
                   "Responses aborted because the content failed verification.");
DMF_METRIC_COUNTER(proxy_m_bytes_p2p, "damselfly_proxy_bytes_total", "path=\"p2p\"",
                   "Body bytes the proxy sent to clients, by path.");
DMF_METRIC_COUNTER(proxy_m_bytes_direct, "damselfly_proxy_bytes_total", "path=\"direct\"",
                   "Body bytes the proxy sent to clients, by path.");
DMF_METRIC_COUNTER(proxy_m_refused_client, "damselfly_proxy_refused_total", "what=\"client\"",
                   "Connections and requests the proxy's policy refused (proxy_policy.h).");
DMF_METRIC_COUNTER(proxy_m_refused_target, "damselfly_proxy_refused_total", "what=\"target\"",
                   "Connections and requests the proxy's policy refused (proxy_policy.h).");
DMF_METRIC_COUNTER(proxy_m_head_timeouts, "damselfly_proxy_head_timeouts_total", NULL,
                   "Connections closed because a request head did not arrive in time.");

static const char *const state_names[] = {"HEAD", "BODY",       "PASS",  "AUTH",
                                          "BLOB", "CONNECTING", "TUNNEL"};

void proxy_conn_set_state(struct conn *c, enum conn_state s)
{
    if (c->state == s)
        return;
    dmf_debug("proxy conn %lu: %s -> %s", c->id, state_names[c->state], state_names[s]);
    c->state = s;
}

struct evbuffer *proxy_out(struct conn *c)
{
    return bufferevent_get_output(c->bev);
}

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
    event_free(c->head_timer);
    if (c->tunnel_timer)
        event_free(c->tunnel_timer);
    free(c);
}

void proxy_reset_request(struct conn *c)
{
    if (c->hreq)
        dmf_http_cancel(c->hreq);
    c->hreq = NULL;
    if (c->subscribed)
        dmf_task_unsubscribe(c->t, &c->sub);
    c->subscribed = false;
    dmf_revalidation_cancel(c->reval);
    c->reval = NULL;
    if (c->t)
        dmf_task_put(c->t);
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
    /* Chains still in the output keep the segment (and its descriptor) until sent. */
    if (c->seg)
        evbuffer_file_segment_free(c->seg);
    c->seg = NULL;
    c->seg_base = 0;
    if (c->body_fd >= 0)
        close(c->body_fd);
    c->body_fd = -1;
    c->head_scanned = 0;
}

static void on_head_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    if (c->dead || c->state != C_HEAD)
        return;
    dmf_metric_add(&proxy_m_head_timeouts, 1);
    proxy_respond_error(c, 408, "request head not complete in time");
}

void proxy_head_begin(struct conn *c)
{
    if (!evtimer_pending(c->head_timer, NULL))
        evtimer_add(c->head_timer, &c->p->head_timeout);
}

void proxy_head_done(struct conn *c)
{
    evtimer_del(c->head_timer);
    c->head_scanned = 0;
}

void proxy_conn_responding(struct conn *c)
{
    bufferevent_set_timeouts(c->bev, NULL, &c->p->idle_timeout);
}

void proxy_conn_close(struct conn *c, bool abort_conn)
{
    if (c->dead)
        return;
    dmf_debug("proxy conn %lu: closed%s", c->id, abort_conn ? " (reset)" : "");
    c->dead = true;
    evtimer_del(c->head_timer);
    if (c->tunnel_timer)
        evtimer_del(c->tunnel_timer);
    proxy_reset_request(c);
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

void proxy_conn_close_all(dmf_proxy_t *p)
{
    while (p->conns)
        proxy_conn_close(p->conns, false);
    while (p->zombies) /* the loop will not run their reap events: free them now */
        on_reap(-1, 0, p->zombies);
}

void proxy_request_done(struct conn *c)
{
    bool keep = c->have_req && c->req.keep_alive && !c->close_after;
    proxy_reset_request(c);
    proxy_conn_set_state(c, C_HEAD);
    if (!keep) {
        c->close_after = true;
        if (evbuffer_get_length(proxy_out(c)) == 0)
            proxy_conn_close(c, false);
        return;
    }
    bufferevent_set_timeouts(c->bev, &c->p->idle_timeout, NULL);
    event_active(c->kick, 0, 0); /* a pipelined request may be waiting */
}

void proxy_respond_error(struct conn *c, long status, const char *msg)
{
    dmf_info("proxy conn %lu: %s: %ld %s", c->id, c->what ? c->what : "request", status, msg);
    evbuffer_add_printf(proxy_out(c),
                        "HTTP/1.1 %ld %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                        "Connection: close\r\n\r\n%s\n",
                        status, dmf_proxy_status_reason(status), strlen(msg) + 1, msg);
    c->close_after = true;
    proxy_request_done(c);
}

void proxy_conn_attach(struct conn *c, struct bufferevent *bev, bufferevent_data_cb on_read,
                       bufferevent_data_cb on_write, bufferevent_event_cb on_event)
{
    c->bev = bev;
    bufferevent_setcb(bev, on_read, on_write, on_event, c);
    bufferevent_setwatermark(bev, EV_READ, 0, DMF_PROXY_INPUT_HIGH);
    bufferevent_setwatermark(bev, EV_WRITE, DMF_PROXY_OUT_HIGH / 2, 0);
    /* libevent writes at most 16 KiB per write event by default: a 256 MiB body would take
     * 16,384 writev and as many loop passes. Up to the output's bound at once instead (the
     * socket takes what it has room for); also on the socket under a TLS filter. */
    bufferevent_set_max_single_write(bev, DMF_PROXY_OUT_HIGH);
    if (bufferevent_get_underlying(bev))
        bufferevent_set_max_single_write(bufferevent_get_underlying(bev), DMF_PROXY_OUT_HIGH);
    bufferevent_set_timeouts(bev, &c->p->idle_timeout, NULL);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

struct conn *proxy_conn_new(dmf_proxy_t *p, struct event_base *base, event_callback_fn on_kick)
{
    struct conn *c = dmf_xcalloc(1, sizeof(*c));
    c->p = p;
    c->id = ++p->next_id;
    c->reap = dmf_xevent_new(base, -1, 0, on_reap, c);
    c->kick = dmf_xevent_new(base, -1, 0, on_kick, c);
    c->head_timer = dmf_xevtimer_new(base, on_head_timeout, c);
    c->framing = F_NONE;
    c->body_fd = -1;
    c->next = p->conns;
    if (p->conns)
        p->conns->prev = c;
    p->conns = c;
    p->nconns++;
    return c;
}
