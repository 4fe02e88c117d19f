/* CONNECT: a byte-for-byte tunnel to the target (states CONNECTING and TUNNEL), or, for
 * the hosts listed in --proxy-intercept, TLS terminated here with a leaf of the operator's
 * CA (proxy_tls.h), after which the connection reads requests again; see proxy_conn.h. */
#include "daemon/proxy/proxy_conn.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "common/evx.h"
#include "common/log.h"

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

/* Moves what from has received to to's output; stops reading from while to's output is
 * above DMF_PROXY_OUT_HIGH (the drained side's write callback enables it again). */
static void relay(struct bufferevent *from, struct bufferevent *to)
{
    evbuffer_add_buffer(bufferevent_get_output(to), bufferevent_get_input(from));
    if (evbuffer_get_length(bufferevent_get_output(to)) > DMF_PROXY_OUT_HIGH)
        bufferevent_disable(from, EV_READ);
}

/* A tunnel is idle when no byte has gone either way for the tunnel timeout; every relay
 * re-arms the clock. */
static void on_tunnel_idle(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    if (c->dead || c->state != C_TUNNEL)
        return;
    dmf_info("proxy conn %lu: tunnel idle for %ld s, closed", c->id,
             (long)c->p->tunnel_timeout.tv_sec);
    proxy_conn_close(c, false);
}

static void tunnel_touch(struct conn *c)
{
    evtimer_add(c->tunnel_timer, &c->p->tunnel_timeout);
}

/* host as an address (IPv4, or IPv6 with or without brackets) with port, or false. */
static bool literal_address(const char *host, uint16_t port, struct sockaddr_storage *out)
{
    memset(out, 0, sizeof(*out));
    struct sockaddr_in *v4 = (struct sockaddr_in *)out;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)out;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(port);
        return true;
    }
    if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(port);
        return true;
    }
    return false;
}

static void refuse(struct conn *c, const char *why)
{
    char msg[160];
    snprintf(msg, sizeof(msg), "refused: %s", why);
    dmf_metric_add(&proxy_m_refused_target, 1);
    proxy_respond_error(c, 403, msg);
}

static void on_up_read(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    if (!c->dead && c->state == C_TUNNEL) {
        tunnel_touch(c);
        relay(c->up, c->bev);
    }
}

static void on_up_write(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    if (c->dead || c->state != C_TUNNEL)
        return;
    if (c->close_after && evbuffer_get_length(bufferevent_get_output(c->up)) == 0) {
        proxy_conn_close(c, false);
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
        /* The name is resolved by now: check the address it led to before a byte goes. */
        struct sockaddr_storage peer;
        socklen_t pl = sizeof(peer);
        const char *why =
            getpeername(bufferevent_getfd(bev), (struct sockaddr *)&peer, &pl) != 0
                ? "the target's address is unknown"
                : dmf_proxy_policy_target(&c->p->policy, (struct sockaddr *)&peer, true);
        if (why != NULL) {
            refuse(c, why);
            return;
        }
        dmf_info("proxy conn %lu: %s: tunnel open", c->id, c->what);
        proxy_conn_set_state(c, C_TUNNEL);
        evbuffer_add_printf(proxy_out(c), "HTTP/1.1 200 Connection established\r\n\r\n");
        proxy_reset_request(c);
        bufferevent_set_timeouts(c->bev, NULL, NULL);
        bufferevent_set_timeouts(c->up, NULL, NULL);
        c->tunnel_timer = dmf_xevtimer_new(bufferevent_get_base(c->bev), on_tunnel_idle, c);
        tunnel_touch(c);
        bufferevent_setwatermark(c->bev, EV_READ, 0, 0);
        bufferevent_enable(c->up, EV_READ | EV_WRITE);
        relay(c->bev, c->up);
        return;
    }
    if (c->state == C_CONNECTING && (what & BEV_EVENT_TIMEOUT)) {
        char msg[96];
        snprintf(msg, sizeof(msg), "cannot connect: no answer in %ld s",
                 (long)c->p->idle_timeout.tv_sec);
        proxy_respond_error(c, 504, msg);
        return;
    }
    if (c->state == C_CONNECTING) {
        int e = evutil_socket_geterror(bufferevent_getfd(bev));
        int dnserr = bufferevent_socket_get_dns_error(bev);
        char msg[256];
        snprintf(msg, sizeof(msg), "cannot connect: %s",
                 dnserr ? evutil_gai_strerror(dnserr) : evutil_socket_error_to_string(e));
        proxy_respond_error(c, 502, msg);
        return;
    }
    /* The target closed: flush what it sent, then close. */
    relay(c->up, c->bev);
    c->close_after = true;
    if (evbuffer_get_length(proxy_out(c)) == 0)
        proxy_conn_close(c, false);
}

void proxy_tunnel_start(struct conn *c)
{
    char host[256], err[256];
    uint16_t port;
    dmf_proxy_t *p = c->p;
    if (dmf_parse_hostport(c->req.target, host, sizeof(host), &port, err, sizeof(err)) != 0 ||
        port == 0) {
        proxy_respond_error(c, 400, "CONNECT needs host:port");
        return;
    }
    if (c->tls_host) {
        proxy_respond_error(c, 400, "CONNECT inside an intercepted connection");
        return;
    }
    if (intercepted(p, host, port)) {
        if (p->tls == NULL) {
            proxy_respond_error(c, 502,
                                "interception configured without --proxy-ca-cert/--proxy-ca-key");
            return;
        }
        SSL *ssl = dmf_proxy_tls_ssl_for(p->tls, host, err, sizeof(err));
        if (ssl == NULL) {
            proxy_respond_error(c, 502, err);
            return;
        }
        dmf_info("proxy conn %lu: %s: intercepting TLS", c->id, c->what);
        dmf_metric_add(&proxy_m_req_intercept, 1);
        evbuffer_add_printf(proxy_out(c), "HTTP/1.1 200 Connection established\r\n\r\n");
        /* The TLS filter takes the socket's place, with the socket's callbacks (the
         * filter's creation replaces those of the socket's bufferevent). */
        bufferevent_data_cb on_read, on_write;
        bufferevent_event_cb on_event;
        bufferevent_getcb(c->bev, &on_read, &on_write, &on_event, NULL);
        struct bufferevent *tls = bufferevent_openssl_filter_new(
            bufferevent_get_base(c->bev), c->bev, ssl, BUFFEREVENT_SSL_ACCEPTING,
            BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
        if (tls == NULL) {
            SSL_free(ssl);
            proxy_conn_close(c, true);
            return;
        }
        c->tls_host = dmf_xstrdup(host);
        c->tls_port = port;
        proxy_conn_attach(c, tls, on_read, on_write, on_event);
        proxy_reset_request(c);
        proxy_conn_set_state(c, C_HEAD);
        return;
    }
    /* The port is known before any lookup, and so is an address given as such; a name's
     * address is checked once connected. */
    const char *why = dmf_proxy_policy_connect_port(&p->policy, port);
    struct sockaddr_storage lit;
    if (why == NULL && literal_address(host, port, &lit))
        why = dmf_proxy_policy_target(&p->policy, (struct sockaddr *)&lit, true);
    if (why != NULL) {
        refuse(c, why);
        return;
    }
    dmf_metric_add(&proxy_m_req_tunnel, 1);
    proxy_conn_set_state(c, C_CONNECTING);
    bufferevent_disable(c->bev, EV_READ);
    c->up = bufferevent_socket_new(bufferevent_get_base(c->bev), -1,
                                   BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    bufferevent_setcb(c->up, on_up_read, on_up_write, on_up_event, c);
    bufferevent_setwatermark(c->up, EV_WRITE, DMF_PROXY_OUT_HIGH / 2, 0);
    bufferevent_set_timeouts(c->up, NULL, &p->idle_timeout); /* bounds the connect */
    if (bufferevent_socket_connect_hostname(c->up, p->dns, AF_UNSPEC, host, port) != 0) {
        /* on_up_event may have answered already */
        if (!c->dead && c->state == C_CONNECTING)
            proxy_respond_error(c, 502, "cannot connect");
    }
}

void proxy_tunnel_on_client_read(struct conn *c)
{
    tunnel_touch(c);
    relay(c->bev, c->up);
}

void proxy_tunnel_on_client_write(struct conn *c)
{
    if (c->close_after && evbuffer_get_length(proxy_out(c)) == 0)
        proxy_conn_close(c, false);
    else if (c->up)
        bufferevent_enable(c->up, EV_READ);
}

void proxy_tunnel_on_client_eof(struct conn *c)
{
    relay(c->bev, c->up);
    c->close_after = true;
    if (evbuffer_get_length(bufferevent_get_output(c->up)) == 0)
        proxy_conn_close(c, false);
    else
        bufferevent_disable(c->bev, EV_READ);
}
