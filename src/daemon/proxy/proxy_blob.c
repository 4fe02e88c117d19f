/* Content from a task, through P2P or from the local cache (states AUTH and BLOB): a
 * blob of a registry after the registry's HEAD accepted the client's own headers, or a
 * URL the rules send through P2P; see proxy_conn.h. The task is the engine's
 * (daemon/peer/engine.h), seen through its façade only. */
#include "daemon/proxy/proxy_conn.h"

#include <errno.h>
#include <event2/buffer.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/pieces.h"
#include "common/taskid.h"

#define READ_CHUNK (256u << 10)

/* The origin's validators and Content-Type as the task has them (a blob's ETag is its
 * digest, as registries send it). */
static void add_task_headers(struct conn *c, struct evbuffer *o, const struct dmf_task_info *info)
{
    if (c->digest[0])
        evbuffer_add_printf(o, "Etag: \"%s\"\r\n", c->digest);
    else if (info->etag[0])
        evbuffer_add_printf(o, "ETag: %s\r\n", info->etag);
    if (!c->digest[0] && info->last_modified[0])
        evbuffer_add_printf(o, "Last-Modified: %s\r\n", info->last_modified);
}

/* Ends a response head to the client: the task's headers, the connection's fate. */
static void end_head(struct conn *c, struct evbuffer *o, const struct dmf_task_info *info)
{
    add_task_headers(c, o, info);
    if (!c->req.keep_alive) {
        evbuffer_add_printf(o, "Connection: close\r\n");
        c->close_after = true;
    }
    evbuffer_add(o, "\r\n", 2);
    c->headers_sent = true;
    c->resp_started = true;
}

/* The task's ETag as a client compares it. */
static const char *task_etag(struct conn *c, const struct dmf_task_info *info, char *buf,
                             size_t len)
{
    if (!c->digest[0])
        return info->etag;
    snprintf(buf, len, "\"%s\"", c->digest);
    return buf;
}

/* A client's conditional request the content it would get matches: 304, no body. */
static bool answer_not_modified(struct conn *c, const struct dmf_task_info *info)
{
    char buf[DMF_DIGEST_STR_LEN + 3];
    if (!dmf_fresh_client_match(dmf_proxy_request_header(&c->req, "if-none-match"),
                                dmf_proxy_request_header(&c->req, "if-modified-since"),
                                task_etag(c, info, buf, sizeof(buf)),
                                c->digest[0] ? NULL : info->last_modified))
        return false;
    struct evbuffer *o = proxy_out(c);
    evbuffer_add_printf(o, "HTTP/1.1 304 Not Modified\r\n");
    end_head(c, o, info);
    dmf_info("proxy conn %lu: %s: 304 to the client's conditional request (task %s)", c->id,
             c->what, info->id);
    proxy_request_done(c);
    return true;
}

static void send_blob_headers(struct conn *c, long status, int64_t total,
                              const struct dmf_task_info *info)
{
    struct evbuffer *o = proxy_out(c);
    int64_t len = c->end - c->off + 1;
    evbuffer_add_printf(o, "HTTP/1.1 %ld %s\r\n", status, dmf_proxy_status_reason(status));
    evbuffer_add_printf(o, "Content-Length: %" PRId64 "\r\n", len < 0 ? 0 : len);
    evbuffer_add_printf(o, "Content-Type: %s\r\n",
                        info->content_type[0] ? info->content_type : "application/octet-stream");
    evbuffer_add_printf(o, "Accept-Ranges: bytes\r\n");
    if (status == 206)
        evbuffer_add_printf(o, "Content-Range: bytes %" PRId64 "-%" PRId64 "/%" PRId64 "\r\n",
                            c->off, c->end, total);
    if (c->digest[0])
        evbuffer_add_printf(o, "Docker-Content-Digest: %s\r\n", c->digest);
    end_head(c, o, info);
}

/* May byte offset off of task t (info: its snapshot) be sent? Its piece is verified, and
 * the last piece only once the whole task is (the content digest is checked before the
 * last byte leaves). */
static bool sendable(const struct dmf_task *t, const struct dmf_task_info *info, int64_t off)
{
    uint32_t n = (uint32_t)((uint64_t)off / info->piece_length);
    if (!dmf_task_has_piece(t, n))
        return false;
    return n + 1 < info->total_pieces || info->phase == DMF_TASK_PHASE_SUCCEEDED;
}

/* Opens the response's own descriptor of the task's data file (see proxy_conn.h): a file
 * segment over bytes off..end for a plain client, body_fd for an intercepted one.
 * Returns 0 or a negative errno (logged). */
static int open_body(struct conn *c, const struct dmf_task_info *info)
{
    int fd = dmf_task_open_read(c->t);
    if (fd < 0) {
        dmf_warn("proxy conn %lu: task %s: cannot open its data file: %s", c->id, info->id,
                 strerror(-fd));
        return fd;
    }
    if (fstat(fd, &c->body_file) != 0) {
        int e = -errno;
        close(fd);
        dmf_warn("proxy conn %lu: task %s: cannot stat its data file: %s", c->id, info->id,
                 strerror(-e));
        return e;
    }
    if (c->tls_host) {
        /* OpenSSL encrypts from memory: libevent would map the segment (a file truncated
         * under the mapping is SIGBUS for the whole daemon) or lseek+read+lseek it into a
         * copy. One pread into the output buffer is the cheaper of the safe ways. */
        c->body_fd = fd;
        return 0;
    }
    c->seg = evbuffer_file_segment_new(fd, (ev_off_t)c->off, (ev_off_t)(c->end - c->off + 1),
                                       EVBUF_FS_CLOSE_ON_FREE);
    if (c->seg == NULL) {
        close(fd);
        dmf_warn("proxy conn %lu: task %s: cannot make a file segment of its data file", c->id,
                 info->id);
        return -ENOMEM;
    }
    c->seg_base = c->off;
    return 0;
}

/* Appends up to want bytes at c->off to the client's output as a part of c->seg (sent with
 * sendfile when the socket drains), no more than the output's room below
 * DMF_PROXY_OUT_HIGH. Returns the bytes added, or -1. */
static ssize_t add_segment(struct conn *c, size_t want)
{
    struct evbuffer *o = proxy_out(c);
    size_t room = DMF_PROXY_OUT_HIGH - evbuffer_get_length(o); /* > 0: the caller's test */
    size_t len = DMF_MIN(want, room);
    if (evbuffer_add_file_segment(o, c->seg, (ev_off_t)(c->off - c->seg_base), (ev_off_t)len) != 0)
        return -1;
    return (ssize_t)len;
}

/* Reads up to want bytes at c->off from c->body_fd into the client's output (TLS).
 * Returns the bytes read, 0 past the file's end, or -1. */
static ssize_t read_chunk(struct conn *c, size_t want)
{
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(proxy_out(c), (ev_ssize_t)want, &v, 1) < 1)
        return -1;
    ssize_t got = pread(c->body_fd, v.iov_base, want, (off_t)c->off);
    if (got <= 0)
        return got;
    v.iov_len = (size_t)got;
    evbuffer_commit_space(proxy_out(c), &v, 1);
    return got;
}

void proxy_blob_pump(struct conn *c)
{
    struct dmf_task *t = c->t;
    if (c->dead || c->state != C_BLOB || t == NULL || c->reval != NULL)
        return; /* (a revalidation in flight: nothing is sent before its verdict) */
    /* Nothing below gives control back to the loop, so the snapshot holds throughout. */
    struct dmf_task_info info;
    dmf_task_info(t, &info);
    if (!c->headers_sent) {
        if (info.content_length < 0 || info.piece_length == 0)
            return;
        int64_t total = info.content_length;
        bool done = info.phase == DMF_TASK_PHASE_SUCCEEDED;
        int64_t start = 0, end = total - 1;
        long status = 200;
        const char *range = dmf_proxy_request_header(&c->req, "range");
        int r = range ? dmf_proxy_parse_range(range, total, &start, &end) : 0;
        if (r < 0) {
            evbuffer_add_printf(proxy_out(c),
                                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes "
                                "*/%" PRId64 "\r\nContent-Length: 0\r\n\r\n",
                                total);
            proxy_request_done(c);
            return;
        }
        if (r > 0)
            status = 206;
        c->off = start;
        c->end = end;
        /* The response starts with its first verified piece; an empty content only once
         * it is verified (its digest is all there is to check). */
        if (!done && (total == 0 || !sendable(t, &info, start)))
            return;
        if (answer_not_modified(c, &info))
            return;
        send_blob_headers(c, status, total, &info);
        dmf_info("proxy conn %lu: %s: streaming %s task %s (%" PRId64 " bytes%s)", c->id, c->what,
                 c->from_cache ? "cached" : "P2P", info.id, end - start + 1,
                 status == 206 ? ", a range" : "");
        if (c->head_only) {
            proxy_request_done(c);
            return;
        }
    }
    if (c->seg == NULL && c->body_fd < 0 && c->off <= c->end && open_body(c, &info) != 0) {
        proxy_conn_close(c, true);
        return;
    }
    while (c->off <= c->end && evbuffer_get_length(proxy_out(c)) < DMF_PROXY_OUT_HIGH) {
        if (!sendable(t, &info, c->off)) {
            if (!dmf_task_data_is(t, &c->body_file)) {
                /* A new version replaced the data file: what the task verifies from now
                 * on is another content than the bytes this response sends. */
                dmf_warn("proxy conn %lu: %s: task %s has another data file now (a new "
                         "version) after %" PRId64 " bytes: connection aborted",
                         c->id, c->what, info.id, c->off);
                proxy_conn_close(c, true);
            }
            return; /* more on the next update */
        }
        uint32_t n = (uint32_t)((uint64_t)c->off / info.piece_length);
        uint64_t piece_end = dmf_piece_offset(info.piece_length, n) +
                             dmf_piece_size(info.content_length, info.piece_length, n);
        size_t want = (size_t)(DMF_MIN((uint64_t)(c->end + 1), piece_end) - (uint64_t)c->off);
        ssize_t got = c->seg ? add_segment(c, want) : read_chunk(c, DMF_MIN(want, READ_CHUNK));
        if (got <= 0) {
            dmf_warn("proxy conn %lu: task %s: cannot read its data file at %" PRId64, c->id,
                     info.id, c->off);
            proxy_conn_close(c, true);
            return;
        }
        c->off += got;
        dmf_metric_add(&proxy_m_bytes_p2p, got);
        if (c->from_cache)
            dmf_metric_add(&dmf_m_bytes_local, got);
    }
    if (c->off > c->end)
        proxy_request_done(c);
}

static void on_task_update(void *arg, struct dmf_task *t, const uint32_t *pieces, size_t n,
                           bool end)
{
    struct conn *c = arg;
    if (c->dead)
        return;
    if (end)
        c->subscribed = false;
    struct dmf_task_info info;
    dmf_task_info(t, &info);
    if (!end || info.phase == DMF_TASK_PHASE_SUCCEEDED) {
        proxy_blob_pump(c);
        return;
    }
    const char *why = info.error ? info.error : "unknown";
    if (!c->headers_sent) {
        /* Nothing sent yet: the client can still get the content from the origin. */
        dmf_warn("proxy conn %lu: %s: task %s failed (%s)", c->id, c->what, info.id, why);
        dmf_task_put(c->t);
        c->t = NULL;
        proxy_pass_start(c, true);
        return;
    }
    dmf_warn("proxy conn %lu: %s: task %s failed after %" PRId64 " bytes were sent (%s): "
             "connection aborted",
             c->id, c->what, info.id, c->off, why);
    if (info.error && strstr(info.error, "digest"))
        dmf_metric_add(&proxy_m_aborts, 1);
    proxy_conn_close(c, true);
}

static void serve_task(struct conn *c);

static void on_revalidated(void *arg, struct dmf_task *t, enum dmf_fresh_verdict v,
                           const char *detail)
{
    struct conn *c = arg;
    c->reval = NULL;
    if (c->dead || c->t != t)
        return;
    if (v == DMF_FRESH_UNREACHABLE)
        dmf_warn("proxy conn %lu: %s: serving the cached copy without revalidation: %s", c->id,
                 c->what, detail);
    serve_task(c);
}

static void start_task(struct conn *c)
{
    struct dmf_daemon *d = c->p->d;
    char id[DMF_TASK_ID_LEN + 1], err[256];
    proxy_forward_headers(c, true);
    /* A blob is checked against its digest: no header can change what it is. */
    const char *bypass = c->digest[0] ? NULL : dmf_task_bypass_header(&c->fwd);
    if (bypass != NULL) {
        dmf_info("proxy conn %lu: %s: its %s header selects content per request: passed to "
                 "the origin, not shared through P2P",
                 c->id, c->what, bypass);
        proxy_pass_start(c, false);
        return;
    }
    struct dmf_task_id_input in = {
        .url = c->url, .digest = c->digest[0] ? c->digest : NULL, .headers = &c->fwd};
    if (dmf_task_id(&in, id, err, sizeof(err)) != 0) {
        proxy_pass_start(c, false);
        return;
    }
    struct dmf_task_request treq = {
        .url = c->url,
        .headers = &c->fwd,
        .digest = c->digest[0] ? c->digest : NULL,
        .rate_limit = c->rate_limit,
        .priority = c->priority,
        .application = c->application,
    };
    struct dmf_task *t;
    if (dmf_engine_open(d, id, &treq, &t) != 0) {
        proxy_pass_start(c, true); /* no data file: the origin directly */
        return;
    }
    dmf_metric_add(&proxy_m_req_p2p, 1);
    c->t = t;
    dmf_task_hold(t); /* not evicted while this connection serves it */
    proxy_conn_set_state(c, C_BLOB);
    if (!c->digest[0] && dmf_task_needs_revalidation(t)) {
        c->reval = dmf_task_revalidate(t, &c->fwd, on_revalidated, c);
        return;
    }
    serve_task(c);
}

/* Serves the task c->t from the cache, or follows its download. */
static void serve_task(struct conn *c)
{
    struct dmf_task *t = c->t;
    if (dmf_task_cached(t)) {
        c->from_cache = true;
        dmf_task_serve_cached(t);
        proxy_blob_pump(c);
        return;
    }
    /* Held but to be checked first (after a restart, a changed data file, or the blob's
     * digest): served from the cache once verified. */
    struct dmf_task_info held;
    dmf_task_info(t, &held);
    c->from_cache = held.content_length >= 0 && held.held_pieces == held.total_pieces;
    c->sub.on_update = on_task_update;
    c->sub.arg = c;
    dmf_task_subscribe(t, &c->sub);
    c->subscribed = true;
    dmf_task_start(t);
    proxy_blob_pump(c);
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
        proxy_respond_error(c, 502, msg);
        return;
    }
    if (status >= 200 && status < 400) {
        start_task(c);
        return;
    }
    /* Not allowed (or not there): the client gets the registry's own answer to its GET. */
    dmf_info("proxy conn %lu: %s: the registry answered %ld to this client's credentials", c->id,
             c->what, status);
    dmf_metric_add(&proxy_m_auth_denied, 1);
    proxy_pass_start(c, false);
}

static const struct dmf_http_req_ops auth_ops = {
    .on_headers = auth_on_headers,
    .on_done = auth_on_done,
};

static void start_auth(struct conn *c)
{
    proxy_forward_headers(c, true);
    dmf_strlist_push(&c->fwd, "Accept:");
    struct dmf_http_opts o = {
        .headers = &c->fwd,
        .method = "HEAD",
        .http11 = 1,
    };
    proxy_conn_set_state(c, C_AUTH);
    c->passed = 0;
    c->hreq = dmf_http_get(c->p->d->http, c->url, &o, &auth_ops, c);
}

void proxy_blob_start(struct conn *c)
{
    if (c->is_blob)
        start_auth(c); /* a registry's blob: may this client read it? */
    else
        start_task(c);
}
