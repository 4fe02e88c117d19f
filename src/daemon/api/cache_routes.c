/* The cache's routes on the local API; see cache_routes.h. */
#include "daemon/api/cache_routes.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "common/evx.h"
#include "common/log.h"
#include "common/util.h"
#include "daemon/daemon.h"
#include "daemon/peer/engine.h"

static void reply(struct evhttp_request *req, int code, const char *reason, struct evbuffer *b)
{
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; charset=utf-8");
    evhttp_send_reply(req, code, reason, b);
}

static void reply_text(struct evhttp_request *req, int code, const char *reason, const char *fmt,
                       ...) __attribute__((format(printf, 4, 5)));
static void reply_text(struct evhttp_request *req, int code, const char *reason, const char *fmt,
                       ...)
{
    struct evbuffer *b = dmf_xevbuffer_new();
    va_list ap;
    va_start(ap, fmt);
    evbuffer_add_vprintf(b, fmt, ap);
    va_end(ap);
    reply(req, code, reason, b);
    evbuffer_free(b);
}

static bool method_is(struct evhttp_request *req, enum evhttp_cmd_type want)
{
    if (evhttp_request_get_command(req) == want)
        return true;
    evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
                      want == EVHTTP_REQ_GET ? "GET" : "POST");
    reply_text(req, 405, "Method Not Allowed", "use %s\n", want == EVHTTP_REQ_GET ? "GET" : "POST");
    return false;
}

static struct dmf_cache_gc *collector(struct evhttp_request *req, struct dmf_daemon *d)
{
    struct dmf_cache_gc *gc = dmf_engine_cache(d);
    if (gc == NULL)
        reply_text(req, 503, "Service Unavailable", "the daemon is shutting down\n");
    return gc;
}

/* The URL with tabs and line breaks escaped, so that a line stays one row. */
static void add_url(struct evbuffer *b, const char *url)
{
    if (url == NULL || *url == '\0') {
        evbuffer_add(b, "-", 1);
        return;
    }
    for (const char *p = url; *p; p++) {
        if (*p == '\t' || *p == '\n' || *p == '\r')
            evbuffer_add_printf(b, "%%%02X", (unsigned char)*p);
        else
            evbuffer_add(b, p, 1);
    }
}

static void on_list(struct evhttp_request *req, void *arg)
{
    struct dmf_cache_gc *gc;
    if (!method_is(req, EVHTTP_REQ_GET) || (gc = collector(req, arg)) == NULL)
        return;
    struct dmf_cache_row *rows;
    size_t n;
    if (dmf_cache_gc_list(gc, &rows, &n) != 0) {
        reply_text(req, 500, "Internal Server Error", "cannot read the store\n");
        return;
    }
    struct evbuffer *b = dmf_xevbuffer_new();
    for (size_t i = 0; i < n; i++) {
        const struct dmf_cache_row *r = &rows[i];
        evbuffer_add_printf(b, "%s\t%llu\t%u\t%u\t%lld\t%s\t%s\t", r->u.id,
                            (unsigned long long)r->u.held_bytes, r->u.held_pieces,
                            r->u.total_pieces, (long long)r->accessed_ms, r->state,
                            r->in_use ? "in-use" : "-");
        add_url(b, r->u.url);
        evbuffer_add(b, "\n", 1);
    }
    dmf_cache_rows_free(rows, n);
    reply(req, 200, "OK", b);
    evbuffer_free(b);
}

static void on_remove(struct evhttp_request *req, void *arg)
{
    struct dmf_cache_gc *gc;
    if (!method_is(req, EVHTTP_REQ_POST) || (gc = collector(req, arg)) == NULL)
        return;
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    if (len == 0 || len > DMF_CACHE_RM_MAX) {
        reply_text(req, 400, "Bad Request", "the body must be a task id or a URL (1 to %u bytes)\n",
                   DMF_CACHE_RM_MAX);
        return;
    }
    char *what = dmf_xmalloc(len + 1);
    evbuffer_remove(in, what, len);
    what[len] = '\0';
    what[strcspn(what, "\r\n")] = '\0';
    size_t removed;
    uint64_t freed;
    int e = what[0] ? dmf_cache_gc_remove(gc, what, &removed, &freed) : -EINVAL;
    free(what);
    if (e == 0)
        reply_text(req, 200, "OK", "removed %zu %llu\n", removed, (unsigned long long)freed);
    else if (e == -ENOENT)
        reply_text(req, 404, "Not Found", "no such task in the cache\n");
    else if (e == -EBUSY)
        reply_text(req, 409, "Conflict",
                   "the task is in use (a download, a get or an upload is running); nothing "
                   "was removed\n");
    else if (e == -EINVAL)
        reply_text(req, 400, "Bad Request", "the body must be a task id or a URL\n");
    else
        reply_text(req, 500, "Internal Server Error", "%s\n", dmf_strerror(e));
}

static void on_gc(struct evhttp_request *req, void *arg)
{
    struct dmf_cache_gc *gc;
    if (!method_is(req, EVHTTP_REQ_POST) || (gc = collector(req, arg)) == NULL)
        return;
    struct dmf_cache_gc_report r;
    if (dmf_cache_gc_run(gc, 0, &r) != 0) {
        reply_text(req, 500, "Internal Server Error", "cannot read the store\n");
        return;
    }
    reply_text(req, 200, "OK", "evicted %zu %llu %zu %zu %llu %zu\n", r.evicted,
               (unsigned long long)r.freed, r.expired, r.tasks, (unsigned long long)r.bytes,
               r.in_use);
}

void dmf_cache_routes_add(struct evhttp *http, struct dmf_daemon *d)
{
    evhttp_set_cb(http, "/cache", on_list, d);
    evhttp_set_cb(http, "/cache/rm", on_remove, d);
    evhttp_set_cb(http, "/cache/gc", on_gc, d);
}
