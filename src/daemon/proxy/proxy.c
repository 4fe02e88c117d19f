/* The daemon's HTTP proxy (proxy.h): the listener, and a request's way in: the client's
 * events, the request head and body, and the dispatch to a mode. The connection itself
 * and the modes are in proxy_conn.h; contract, threat model and state machine in
 * docs/internals/PROXY.md. */
#include "daemon/proxy/proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "common/application.h"
#include "common/evx.h"
#include "common/log.h"
#include "common/util.h"
#include "daemon/manager_link.h"
#include "daemon/proxy/proxy_conn.h"
#include "daemon/proxy/registry.h"

void dmf_proxy_metrics_register(void)
{
    struct dmf_metric *all[] = {
        &proxy_m_req_p2p,       &proxy_m_req_direct,     &proxy_m_req_tunnel,
        &proxy_m_req_intercept, &proxy_m_fallbacks,      &proxy_m_auth_denied,
        &proxy_m_aborts,        &proxy_m_bytes_p2p,      &proxy_m_bytes_direct,
        &proxy_m_head_timeouts, &proxy_m_refused_client, &proxy_m_refused_target};
    for (size_t i = 0; i < DMF_ARRAY_SIZE(all); i++)
        dmf_metric_register(all[i]);
}

/* ---------------------------------------------------------------- dispatch */

/* "GET http://host/path" without the query (which may carry a signature). */
static char *describe(const char *method, const char *url)
{
    size_t n = strcspn(url, "?");
    return dmf_xasprintf("%s %.*s%s", method, (int)DMF_MIN(n, 300), url,
                         url[n] || n > 300 ? "..." : "");
}

static void log_headers(struct conn *c)
{
    if (dmf_log_threshold > DMF_LOG_DEBUG)
        return;
    for (size_t i = 0; i < c->req.nh; i++)
        dmf_debug("proxy conn %lu: > %s: %s", c->id, c->req.h[i].name,
                  dmf_log_header_value(c->req.h[i].name, c->req.h[i].value));
}

/* The request is all in: P2P (blobs, and the URLs the rules name) or pass-through. */
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

    const char *blocked = dmf_daemon_url_blocked(p->d, c->url);
    if (blocked != NULL) {
        dmf_info("proxy: %s refused: its URL matches the cluster's block list (%.200s)",
                 c->req.method, blocked);
        proxy_respond_error(c, 403, "the URL is on the cluster's block list");
        return;
    }

    /* The application: the rule's (the operator's word), else the client's header. */
    const struct dmf_proxy_rule *rule = dmf_proxy_rules_find(&p->rules, c->url);
    const char *app = dmf_proxy_request_header(&c->req, DMF_PROXY_APPLICATION_HEADER);
    char why[160];
    if (rule && rule->application[0]) {
        app = rule->application;
    } else if (app && (app[0] == '\0' || dmf_application_check(app, why, sizeof(why)) != 0)) {
        proxy_respond_error(c, 400, app[0] ? why : "an empty " DMF_PROXY_APPLICATION_HEADER);
        return;
    }
    snprintf(c->application, sizeof(c->application), "%s", app ? app : "");
    if (dmf_daemon_application_blocked(p->d, c->application)) {
        dmf_info("proxy: %s refused: application '%s' is on the cluster's block list",
                 c->req.method, c->application);
        proxy_respond_error(c, 403, "the application is on the cluster's block list");
        return;
    }

    bool p2p = false;
    c->rate_limit = 0; /* a rule's, for this request only */
    c->priority = DMF_PRIORITY_NORMAL;
    if (get && c->mirror) {
        p2p = c->is_blob;
    } else if (get) {
        p2p = (rule && rule->p2p) || (rule == NULL && p->rules.n == 0 && c->is_blob);
        c->rate_limit = rule ? rule->limit : 0;
        c->priority = rule ? rule->priority : DMF_PRIORITY_NORMAL;
    }
    if (p2p)
        proxy_blob_start(c);
    else
        proxy_pass_start(c, false);
}

static void on_body_complete(struct conn *c)
{
    proxy_conn_responding(c);
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
            proxy_respond_error(c, 400, "malformed chunked request body");
            return;
        }
        evbuffer_add(c->body, dec, outlen);
        if (evbuffer_get_length(c->body) > DMF_PROXY_BODY_MAX) {
            proxy_respond_error(c, 413, "request body too large for the proxy");
            return;
        }
        if (r == 1) {
            on_body_complete(c);
            return;
        }
    }
}

/* ---------------------------------------------------------------- request heads */

static void handle_head(struct conn *c)
{
    dmf_proxy_t *p = c->p;
    const char *target = c->req.target;
    if (strcmp(c->req.method, "CONNECT") == 0) {
        c->what = dmf_xasprintf("CONNECT %.300s", target);
        proxy_tunnel_start(c);
        return;
    }
    if (c->tls_host) {
        if (target[0] != '/') {
            c->what = dmf_xstrdup("request");
            proxy_respond_error(c, 400, "expected an origin-form request inside the tunnel");
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
            proxy_respond_error(c, 502,
                                "no upstream registry for this request (--registry-mirror)");
            return;
        }
    } else {
        c->what = describe(c->req.method, target);
        proxy_respond_error(c, 404,
                            "this is damselfly's proxy: registry-mirror requests start "
                            "with /v2/, forward-proxy requests with http://");
        return;
    }
    c->what = describe(c->req.method, c->url);
    dmf_debug("proxy conn %lu: %s", c->id, c->what);
    if (c->req.content_length > (int64_t)DMF_PROXY_BODY_MAX) {
        proxy_respond_error(c, 413, "request body too large for the proxy");
        return;
    }
    if (c->req.content_length > 0 || c->req.chunked) {
        c->body = dmf_xevbuffer_new();
        proxy_conn_set_state(c, C_BODY);
        if (c->req.expect_continue)
            evbuffer_add_printf(proxy_out(c), "HTTP/1.1 100 Continue\r\n\r\n");
        read_body(c);
        return;
    }
    if (c->req.content_length == 0)
        c->body = dmf_xevbuffer_new(); /* an explicit empty body (POST with no data) */
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
        proxy_tunnel_on_client_read(c);
        return;
    }
    if (c->state != C_HEAD || c->close_after)
        return;
    struct evbuffer *in = bufferevent_get_input(c->bev);
    size_t len = evbuffer_get_length(in);
    if (len == 0)
        return;
    proxy_head_begin(c);
    size_t look = DMF_MIN(len, (size_t)DMF_PROXY_HEAD_MAX);
    const char *buf = (const char *)evbuffer_pullup(in, (ev_ssize_t)look);
    char err[128];
    int r = dmf_proxy_request_parse_from(buf, look, &c->head_scanned, &c->req, err, sizeof(err));
    if (r > 0)
        proxy_head_done(c);
    if (r == 0) {
        if (len >= DMF_PROXY_HEAD_MAX)
            proxy_respond_error(c, 431, "request head too large");
        return;
    }
    if (r < 0) {
        c->what = dmf_xstrdup("request");
        proxy_respond_error(c, r == -EMSGSIZE ? 431 : r == -ENOTSUP ? 501 : 400, err);
        return;
    }
    evbuffer_drain(in, (size_t)r);
    c->have_req = true;
    handle_head(c);
}

/* ---------------------------------------------------------------- the client's events */

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
    if (c->close_after && c->state == C_HEAD && evbuffer_get_length(proxy_out(c)) == 0) {
        proxy_conn_close(c, false);
        return;
    }
    switch (c->state) {
    case C_PASS:
        dmf_http_resume(c->hreq);
        break;
    case C_BLOB:
        proxy_blob_pump(c);
        break;
    case C_TUNNEL:
        proxy_tunnel_on_client_write(c);
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
    if ((what & BEV_EVENT_TIMEOUT) && (what & BEV_EVENT_WRITING)) {
        dmf_info("proxy conn %lu: %s: the client read nothing for %ld s, closed", c->id,
                 c->what ? c->what : "response", (long)c->p->idle_timeout.tv_sec);
        proxy_conn_close(c, true);
        return;
    } else if (what & BEV_EVENT_TIMEOUT) {
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
        proxy_tunnel_on_client_eof(c);
        return;
    }
    proxy_conn_close(c, false);
}

/* ---------------------------------------------------------------- the listener */

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg)
{
    dmf_proxy_t *p = arg;
    if (p->nconns >= DMF_PROXY_CONNS_MAX) {
        evutil_closesocket(fd);
        return;
    }
    const char *why = dmf_proxy_policy_client(&p->policy, sa);
    if (why != NULL) {
        static const char refuse[] = "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n"
                                     "Connection: close\r\n\r\n";
        char who[INET6_ADDRSTRLEN] = "?";
        if (sa->sa_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)sa)->sin_addr, who, sizeof(who));
        else if (sa->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)sa)->sin6_addr, who, sizeof(who));
        dmf_info("proxy: refused a client at %s: %s", who, why);
        dmf_metric_add(&proxy_m_refused_client, 1);
        (void)!send(fd, refuse, sizeof(refuse) - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
        evutil_closesocket(fd);
        return;
    }
    struct event_base *base = evconnlistener_get_base(l);
    struct conn *c = proxy_conn_new(p, base, on_kick);
    struct bufferevent *bev =
        bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    proxy_conn_attach(c, bev, on_client_read, on_client_write, on_client_event);
    dmf_debug("proxy conn %lu: accepted", c->id);
}

/* Is the listen host a loopback name or address ("127.0.0.1", "::1", "localhost")? */
static bool listen_is_loopback(const char *host)
{
    struct dmf_cidr c;
    if (strcmp(host, "localhost") == 0)
        return true;
    return dmf_cidr_parse(host, &c) == 0 &&
           (c.family == AF_INET ? c.addr[0] == 127
                                : memcmp(c.addr, in6addr_loopback.s6_addr, 16) == 0);
}

dmf_proxy_t *dmf_proxy_new(struct dmf_daemon *d, const char *listen, struct dmf_proxy_rules *rules,
                           char *err, size_t errlen)
{
    dmf_proxy_t *p = dmf_xcalloc(1, sizeof(*p));
    p->d = d;
    p->rules = *rules;
    memset(rules, 0, sizeof(*rules));
    const struct dmf_daemon_config *cfg = &d->cfg;
    p->head_timeout = dmf_timeval_ms(cfg->proxy_header_timeout);
    p->idle_timeout = dmf_timeval_ms(cfg->proxy_idle_timeout);
    p->tunnel_timeout = dmf_timeval_ms(cfg->proxy_tunnel_timeout);
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
    p->guard = dmf_listener_guard_new(p->listener, "proxy");
    if (dmf_proxy_policy_load(&p->policy, &cfg->proxy_allow_clients, &cfg->proxy_allow_targets,
                              &cfg->proxy_connect_ports, cfg->scheduler, err, errlen) != 0)
        goto fail;
    if (p->policy.nclients == 0 && !listen_is_loopback(host)) {
        snprintf(err, errlen,
                 "listening on %s needs --proxy-allow-clients CIDR,... (who may use the proxy; "
                 "it is not an open relay)",
                 listen);
        goto fail;
    }
    struct sockaddr_storage bound;
    socklen_t bl = sizeof(bound);
    getsockname(evconnlistener_get_fd(p->listener), (struct sockaddr *)&bound, &bl);
    p->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                : ((struct sockaddr_in *)&bound)->sin_port);
    dmf_proxy_policy_own_port(&p->policy, p->port);
    dmf_proxy_policy_own_port(&p->policy, d->piece_port);
    dmf_proxy_policy_own_port(&p->policy, (uint16_t)d->rpc_port);
    p->dns = evdns_base_new(d->base,
                            EVDNS_BASE_INITIALIZE_NAMESERVERS | EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (p->dns == NULL) { /* no resolv.conf: /etc/hosts alone */
        p->dns = evdns_base_new(d->base, EVDNS_BASE_DISABLE_WHEN_INACTIVE);
        if (p->dns == NULL) {
            snprintf(err, errlen, "cannot create a DNS resolver for CONNECT targets");
            goto fail;
        }
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
    proxy_conn_close_all(p);
    dmf_listener_guard_free(p->guard);
    if (p->listener)
        evconnlistener_free(p->listener);
    if (p->dns)
        evdns_base_free(p->dns, 0);
    dmf_proxy_tls_free(p->tls);
    dmf_proxy_rules_free(&p->rules);
    free(p);
}
