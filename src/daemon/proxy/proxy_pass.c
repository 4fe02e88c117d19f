/* Pass-through: the request forwarded to the origin through the daemon's libcurl multi,
 * the answer relayed to the client as it streams (state PASS); see proxy_conn.h. Also the
 * fallback of a P2P blob, whose bytes are then hashed and the tail held back. */
#include "daemon/proxy/proxy_conn.h"

#include <errno.h>
#include <event2/buffer.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/evx.h"
#include "common/log.h"

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
    struct evbuffer *o = proxy_out(c);
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
        c->hold = dmf_xevbuffer_new();
    }
    dmf_debug("proxy conn %lu: %s: origin answered %ld", c->id, c->what, status);
    return 0;
}

static void emit(struct conn *c, const char *data, size_t len)
{
    if (len == 0)
        return;
    if (c->framing == F_CHUNKED) {
        evbuffer_add_printf(proxy_out(c), "%zx\r\n", len);
        evbuffer_add(proxy_out(c), data, len);
        evbuffer_add(proxy_out(c), "\r\n", 2);
    } else {
        evbuffer_add(proxy_out(c), data, len);
    }
    dmf_metric_add(&proxy_m_bytes_direct, (int64_t)len);
}

static int pass_on_data(void *arg, dmf_http_req_t *req, const char *data, size_t len)
{
    struct conn *c = arg;
    if (c->dead)
        return -ECANCELED;
    if (evbuffer_get_length(proxy_out(c)) > DMF_PROXY_OUT_HIGH)
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
            if (err == -EACCES)
                dmf_metric_add(&proxy_m_refused_target, 1);
            proxy_respond_error(c, err == -EACCES ? 403 : err == -ETIMEDOUT ? 504 : 502, msg);
        } else {
            dmf_warn("proxy conn %lu: %s: the origin's response broke off: %s", c->id, c->what,
                     reason);
            proxy_conn_close(c, true);
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
            dmf_metric_add(&proxy_m_aborts, 1);
            proxy_conn_close(c, true);
            return;
        }
        size_t n = evbuffer_get_length(c->hold);
        char *tmp = dmf_xmalloc(n ? n : 1);
        evbuffer_remove(c->hold, tmp, n);
        emit(c, tmp, n);
        free(tmp);
    }
    if (c->framing == F_CHUNKED)
        evbuffer_add(proxy_out(c), "0\r\n\r\n", 5);
    dmf_info("proxy conn %lu: %s: %" PRIu64 " bytes from the origin", c->id, c->what, c->passed);
    proxy_request_done(c);
}

static const struct dmf_http_req_ops pass_ops = {
    .on_headers = pass_on_headers,
    .on_data = pass_on_data,
    .on_done = pass_on_done,
};

void proxy_forward_headers(struct conn *c, bool for_task)
{
    const char *connection = dmf_proxy_request_header(&c->req, "connection");
    bool accept = false;
    dmf_strlist_free(&c->fwd);
    for (size_t i = 0; i < c->req.nh; i++) {
        const struct dmf_proxy_header *h = &c->req.h[i];
        if (dmf_proxy_hop_by_hop(h->name, connection) || strcasecmp(h->name, "host") == 0 ||
            strcasecmp(h->name, "content-length") == 0 || strcasecmp(h->name, "expect") == 0 ||
            strcasecmp(h->name, DMF_PROXY_APPLICATION_HEADER) == 0)
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

static const char *pass_addr_check(void *arg, const struct sockaddr *sa)
{
    dmf_proxy_t *p = arg;
    return dmf_proxy_policy_target(&p->policy, sa, false);
}

void proxy_pass_start(struct conn *c, bool fallback)
{
    proxy_forward_headers(c, false);
    c->verify = fallback && c->is_blob && !c->head_only &&
                dmf_proxy_request_header(&c->req, "range") == NULL;
    if (fallback)
        dmf_metric_add(&proxy_m_fallbacks, 1);
    else
        dmf_metric_add(&proxy_m_req_direct, 1);
    struct dmf_http_opts o = {
        .headers = &c->fwd,
        .method = c->req.method,
        .body = c->body ? (const char *)evbuffer_pullup(c->body, -1) : NULL,
        .body_len = c->body ? evbuffer_get_length(c->body) : 0,
        .keep_all_headers = 1,
        .http11 = 1,
        .low_speed_time_s = 60,
        .addr_check = pass_addr_check,
        .addr_check_arg = c->p,
        .charge = DMF_CHARGE_DOWNLOAD | DMF_CHARGE_ORIGIN, /* from an origin, not a peer */
    };
    if (o.body == NULL && c->body) /* an empty body */
        o.body = "";
    dmf_info("proxy conn %lu: %s: %s", c->id, c->what,
             fallback ? "P2P could not deliver, fetching from the origin" : "passed through");
    proxy_conn_set_state(c, C_PASS);
    c->hreq = dmf_http_get(c->p->d->http, c->url, &o, &pass_ops, c);
}
