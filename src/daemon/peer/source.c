/* Back-to-source; see source.h. */
#include "daemon/peer/source.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/http_client.h"
#include "common/log.h"
#include "common/util.h"
#include "daemon/peer/task.h"

#define MAX_RANGES 16

enum source_mode { SRC_PROBING, SRC_RANGES, SRC_STREAM, SRC_DONE };

struct range {
    struct dmf_source *src;
    dmf_http_req_t *req; /* NULL when the slot is free */
    uint32_t n;
    uint8_t *buf;
    size_t len, want;
};

struct dmf_source {
    struct dmf_task *t;
    enum source_mode mode;
    dmf_http_req_t *probe;
    /* Stream mode: the probe's response is the whole body, cut into pieces here. */
    uint8_t *buf;
    size_t len;
    uint32_t next_piece;
    uint64_t received;
    /* Range mode. */
    struct range ranges[MAX_RANGES];
    int failures; /* consecutive failed range requests */
    bool paused;  /* stream mode: waiting for the workers */
};

static struct dmf_http_opts request_opts(struct dmf_task *t, const char *range)
{
    struct dmf_http_opts o = {
        .headers = &t->headers,
        .range = range,
        .follow_redirects = 1,
    };
    return o;
}

/* ---------------------------------------------------------------- stream mode */

static int stream_commit(struct dmf_source *src, size_t len)
{
    struct dmf_task *t = src->t;
    uint32_t n = src->next_piece++;
    if (dmf_bitmap_get(&t->have, n)) /* resumed: already verified */
        return 0;
    /* The buffer goes with the piece; the stream continues into a new one. */
    uint8_t *buf = src->buf;
    src->buf = dmf_xmalloc(t->piece_length);
    int e = dmf_task_piece_submit(t, n, buf, len, DMF_FROM_ORIGIN, NULL);
    if (e == -ECANCELED)
        return e;
    if (e != 0) {
        dmf_task_fail(t, "cannot take piece %u from the origin: %s", n, dmf_strerror(e));
        return e;
    }
    return 0;
}

static int stream_on_data(struct dmf_source *src, const char *data, size_t len)
{
    struct dmf_task *t = src->t;
    if (dmf_task_workers_busy(t)) {
        /* Pieces wait for the workers: hold the stream (and the origin) back. */
        src->paused = true;
        return DMF_HTTP_PAUSE;
    }
    uint32_t pl = t->piece_length;
    src->received += len;
    if (t->content_length >= 0 && src->received > (uint64_t)t->content_length) {
        dmf_task_fail(t, "the origin sent more bytes than its Content-Length");
        return -EPROTO;
    }
    while (len > 0) {
        size_t take = DMF_MIN(len, pl - src->len);
        memcpy(src->buf + src->len, data, take);
        src->len += take;
        data += take;
        len -= take;
        if (src->len == pl) {
            int e = stream_commit(src, pl);
            src->len = 0;
            if (e != 0)
                return e;
        }
        if (src->next_piece >= DMF_PIECES_MAX) {
            dmf_task_fail(t, "the origin's content is too large");
            return -EFBIG;
        }
    }
    return 0;
}

static void stream_on_end(struct dmf_source *src)
{
    struct dmf_task *t = src->t;
    /* Now the length is known, even when the origin did not say it. */
    if (t->content_length < 0 &&
        dmf_task_set_layout(t, (int64_t)src->received, t->piece_length) != 0)
        return;
    if (src->received != (uint64_t)t->content_length) {
        dmf_task_fail(t, "the origin closed after %" PRIu64 " of %lld bytes", src->received,
                      (long long)t->content_length);
        return;
    }
    if (src->len > 0)
        stream_commit(src, src->len);
    src->len = 0;
    src->mode = SRC_DONE;
    dmf_task_kick(t);
}

/* ---------------------------------------------------------------- probe */

static int probe_on_headers(void *arg, dmf_http_req_t *req, long status)
{
    struct dmf_source *src = arg;
    struct dmf_task *t = src->t;
    int64_t start, end, total = -1;
    const char *cr = dmf_http_header(req, "content-range");

    if (status == 206) {
        if (dmf_http_parse_content_range(cr, &start, &end, &total) != 0 || total < 0 ||
            start != 0) {
            dmf_task_fail(t, "the origin sent an invalid Content-Range");
            return -EPROTO;
        }
        uint32_t pl = t->piece_length ? t->piece_length : dmf_piece_length_for(total);
        if (dmf_task_set_layout(t, total, pl) != 0)
            return -EINVAL;
        src->mode = SRC_RANGES;
        dmf_info("task %s: origin supports ranges, %lld bytes in %u pieces", t->id,
                 (long long)total, t->total_pieces);
        return 0;
    }
    if (status == 200) {
        const char *cl = dmf_http_header(req, "content-length");
        if (cl) {
            char *endp;
            errno = 0;
            long long v = strtoll(cl, &endp, 10);
            if (errno || *endp || v < 0) {
                dmf_task_fail(t, "the origin sent an invalid Content-Length");
                return -EPROTO;
            }
            total = v;
        }
        uint32_t pl = t->piece_length ? t->piece_length : dmf_piece_length_for(total);
        if (dmf_task_set_layout(t, total, pl) != 0)
            return -EINVAL;
        src->mode = SRC_STREAM;
        src->buf = dmf_xmalloc(t->piece_length);
        dmf_info("task %s: origin has no range support, streaming %s%lld bytes", t->id,
                 total < 0 ? "an unknown number of " : "", (long long)(total < 0 ? 0 : total));
        return 0;
    }
    if (status == 416 && dmf_http_parse_content_range(cr, &start, &end, &total) == 0 &&
        total == 0) {
        if (dmf_task_set_layout(t, 0, DMF_PIECE_LENGTH_MIN) != 0)
            return -EINVAL;
        src->mode = SRC_DONE;
        return 0;
    }
    dmf_task_fail(t, "the origin answered HTTP %ld", status);
    return -EPROTO;
}

static int probe_on_data(void *arg, dmf_http_req_t *req, const char *data, size_t len)
{
    struct dmf_source *src = arg;
    if (src->mode == SRC_STREAM)
        return stream_on_data(src, data, len);
    return 0; /* the probe's byte, or a 416 body */
}

static void probe_on_done(void *arg, dmf_http_req_t *req, int err, const char *reason)
{
    struct dmf_source *src = arg;
    struct dmf_task *t = src->t;
    src->probe = NULL;
    if (err != 0) {
        if (t->error == NULL)
            dmf_task_fail(t, "cannot fetch from the origin: %s", reason);
        return;
    }
    if (src->mode == SRC_STREAM)
        stream_on_end(src);
    else
        dmf_task_kick(t);
}

static const struct dmf_http_req_ops probe_ops = {
    .on_headers = probe_on_headers,
    .on_data = probe_on_data,
    .on_done = probe_on_done,
};

/* ---------------------------------------------------------------- range mode */

static int range_on_headers(void *arg, dmf_http_req_t *req, long status)
{
    struct range *r = arg;
    if (status != 206)
        return -EPROTO;
    int64_t start, end, total;
    if (dmf_http_parse_content_range(dmf_http_header(req, "content-range"), &start, &end, &total) !=
            0 ||
        start != (int64_t)dmf_piece_offset(r->src->t->piece_length, r->n) ||
        (uint64_t)(end - start + 1) != r->want || total != r->src->t->content_length)
        return -EPROTO;
    return 0;
}

static int range_on_data(void *arg, dmf_http_req_t *req, const char *data, size_t len)
{
    struct range *r = arg;
    if (len > r->want - r->len)
        return -EPROTO;
    memcpy(r->buf + r->len, data, len);
    r->len += len;
    return 0;
}

static void range_on_done(void *arg, dmf_http_req_t *req, int err, const char *reason)
{
    struct range *r = arg;
    struct dmf_source *src = r->src;
    struct dmf_task *t = src->t;
    r->req = NULL;
    if (err == 0 && r->len == r->want) {
        uint8_t *buf = r->buf;
        r->buf = NULL;
        int e = dmf_task_piece_submit(t, r->n, buf, r->len, DMF_FROM_ORIGIN, NULL);
        if (e != 0 && e != -ECANCELED)
            dmf_task_fail(t, "cannot take piece %u from the origin: %s", r->n, dmf_strerror(e));
        src->failures = 0;
    } else {
        dmf_bitmap_clear(&t->inflight, r->n);
        if (++src->failures >= 5) {
            dmf_task_fail(t, "the origin failed 5 times in a row (last: %s)",
                          err == -EPROTO ? "unexpected range response" : reason);
            return;
        }
        dmf_warn("task %s: piece %u from the origin failed (%s); retrying", t->id, r->n,
                 err == -EPROTO ? "unexpected range response" : reason);
    }
    dmf_task_kick(t);
}

static const struct dmf_http_req_ops range_ops = {
    .on_headers = range_on_headers,
    .on_data = range_on_data,
    .on_done = range_on_done,
};

void dmf_source_dispatch(struct dmf_task *t)
{
    struct dmf_source *src = t->source;
    if (src && src->paused && src->probe && !dmf_task_workers_busy(t)) {
        src->paused = false;
        dmf_http_resume(src->probe);
    }
    if (src == NULL || src->mode != SRC_RANGES || t->error || dmf_task_workers_busy(t))
        return;
    int limit = (int)DMF_MIN(t->d->cfg.source_concurrency, MAX_RANGES);
    uint32_t next = 0;
    for (int i = 0; i < limit; i++) {
        struct range *r = &src->ranges[i];
        if (r->req)
            continue;
        while (next < t->total_pieces &&
               (dmf_bitmap_get(&t->have, next) || dmf_bitmap_get(&t->inflight, next)))
            next++;
        if (next >= t->total_pieces)
            return;
        r->src = src;
        r->n = next;
        r->want = dmf_piece_size(t->content_length, t->piece_length, next);
        r->len = 0;
        r->buf = dmf_xrealloc(r->buf, r->want ? r->want : 1);
        char range[64];
        uint64_t off = dmf_piece_offset(t->piece_length, next);
        snprintf(range, sizeof(range), "%" PRIu64 "-%" PRIu64, off, off + r->want - 1);
        struct dmf_http_opts o = request_opts(t, range);
        dmf_bitmap_set(&t->inflight, next);
        r->req = dmf_http_get(t->d->http, t->url, &o, &range_ops, r);
    }
}

void dmf_source_start(struct dmf_task *t)
{
    dmf_source_free(t);
    struct dmf_source *src = dmf_xcalloc(1, sizeof(*src));
    src->t = t;
    t->source = src;
    if (t->content_length >= 0 && t->piece_length > 0 && t->have.count == t->total_pieces) {
        src->mode = SRC_DONE;
        dmf_task_kick(t);
        return;
    }
    src->mode = SRC_PROBING;
    struct dmf_http_opts o = request_opts(t, "0-0");
    src->probe = dmf_http_get(t->d->http, t->url, &o, &probe_ops, src);
}

void dmf_source_free(struct dmf_task *t)
{
    struct dmf_source *src = t->source;
    if (src == NULL)
        return;
    t->source = NULL;
    dmf_http_cancel(src->probe);
    for (int i = 0; i < MAX_RANGES; i++) {
        dmf_http_cancel(src->ranges[i].req);
        if (src->ranges[i].req)
            dmf_bitmap_clear(&t->inflight, src->ranges[i].n);
        free(src->ranges[i].buf);
    }
    free(src->buf);
    free(src);
}
