/* Back-to-source; see source.h. */
#include "daemon/peer/source.h"

#include <errno.h>
#include <event2/event.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/evx.h"
#include "common/backoff.h"
#include "common/log.h"
#include "common/origin_policy.h"
#include "common/piecemem.h"
#include "common/taskid.h"
#include "common/util.h"

#define MAX_RANGES    16
#define MAX_RETRIES   5    /* failed requests in a row before giving up */
#define RETRY_BASE_MS 200  /* the first retry's wait (then doubled, jittered) */
#define RETRY_CAP_MS  4000 /* the longest wait between two tries */
/* A request to the origin that moves no byte this long is given up and tried again: well
 * within the progress watchdog's 30 s, which would fail the whole download instead. */
#define ORIGIN_STALL_S 15

struct range {
    struct dmf_source *src;
    dmf_http_req_t *req; /* NULL when the slot is free */
    uint32_t n;
    struct dmf_piece_buf piece;
};

struct dmf_source {
    struct dmf_source_env env;
    enum dmf_source_mode mode;
    bool failed; /* reported to the task: nothing more to start */
    dmf_http_req_t *probe;
    /* Stream mode: the probe's response is the whole body, cut into pieces here. */
    uint8_t *buf;
    size_t len;
    uint32_t next_piece;
    uint64_t received;
    /* Range mode. */
    struct range ranges[MAX_RANGES];
    int failures; /* consecutive failed requests (probe or ranges) */
    bool paused;  /* stream mode: waiting for the workers */
    long status;  /* the last HTTP status seen from the origin */
    /* The version the probe saw: every range response must be the same one. */
    char *etag, *last_modified;
    struct event *retry; /* the backoff after a failure: nothing starts until it fires */
};

/* Reports that the download from the origin failed. status: the origin's HTTP status when
 * it is why (0 otherwise; a status not worth retrying makes the failure one "for good");
 * changed: the content changed at the origin under the task. */
static void fail_as(struct dmf_source *src, long status, bool changed, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void fail_as(struct dmf_source *src, long status, bool changed, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    src->failed = true;
    struct dmf_source_failure f = {
        .reason = buf,
        .http_status = status,
        .for_good = status > 0 && !dmf_source_retryable(status),
        .content_changed = changed,
    };
    src->env.sink->failed(src->env.arg, &f);
}

/* The origin's answer varies on a header of this request: not content for anyone else. */
static void fail_vary(struct dmf_source *src, const char *header)
{
    char buf[400];
    snprintf(buf, sizeof(buf),
             "the origin's answer varies on header %s, which this request sets: it is not "
             "shared through P2P (fetch it directly)",
             header);
    src->failed = true;
    struct dmf_source_failure f = {.reason = buf, .not_shared = true};
    src->env.sink->failed(src->env.arg, &f);
}

static void changed(struct dmf_source *src)
{
    src->env.sink->changed(src->env.arg);
}

static bool busy(struct dmf_source *src)
{
    return src->env.sink->busy(src->env.arg);
}

static struct dmf_http_opts request_opts(struct dmf_source *src, const char *range)
{
    struct dmf_http_opts o = {
        .headers = src->env.headers,
        .range = range,
        .follow_redirects = 1,
        .charge = DMF_CHARGE_DOWNLOAD | DMF_CHARGE_ORIGIN,
        .flow = src->env.flow,
        .low_speed_time_s = ORIGIN_STALL_S,
    };
    if (src->env.origin_policy) {
        /* Redirects and re-resolved names are checked too: every connect goes through it. */
        o.addr_check = dmf_origin_policy_addr;
        o.addr_check_arg = (void *)src->env.origin_policy;
    }
    return o;
}

/* ---------------------------------------------------------------- decisions */

bool dmf_source_retryable(long status)
{
    return status == 0 || status == 408 || status == 429 || (status >= 500 && status <= 599);
}

bool dmf_source_same_version(const char *pinned, const char *now)
{
    return pinned == NULL || now == NULL || strcmp(pinned, now) == 0;
}

int dmf_source_probe_answer(long status, const char *content_range, const char *content_length,
                            uint32_t known_piece_length, enum dmf_source_mode *mode, int64_t *total,
                            uint32_t *piece_length, char *err, size_t errlen)
{
    int64_t start, end, len = -1;
    if (status == 206) {
        if (dmf_http_parse_content_range(content_range, &start, &end, &len) != 0 || len < 0 ||
            start != 0) {
            snprintf(err, errlen, "the origin sent an invalid Content-Range");
            return -EPROTO;
        }
        *mode = DMF_SOURCE_RANGES;
    } else if (status == 200) {
        if (content_length && content_length[0] == '\0') {
            snprintf(err, errlen, "the origin sent an empty Content-Length");
            return -EPROTO;
        }
        if (content_length) {
            char *endp;
            errno = 0;
            long long v = strtoll(content_length, &endp, 10);
            if (errno || *endp || v < 0) {
                snprintf(err, errlen, "the origin sent an invalid Content-Length");
                return -EPROTO;
            }
            len = v;
        }
        *mode = DMF_SOURCE_STREAM;
    } else if (status == 416 &&
               dmf_http_parse_content_range(content_range, &start, &end, &len) == 0 && len == 0) {
        *mode = DMF_SOURCE_DONE;
        *total = 0;
        *piece_length = known_piece_length ? known_piece_length : DMF_PIECE_LENGTH_MIN;
        return 0;
    } else {
        snprintf(err, errlen, "the origin answered HTTP %ld", status);
        return -EPROTO;
    }
    *total = len;
    *piece_length = known_piece_length ? known_piece_length : dmf_piece_length_for(len);
    return 0;
}

bool dmf_source_range_matches(const struct dmf_piece_book *book, uint32_t n,
                              const char *content_range)
{
    int64_t start, end, total;
    return dmf_http_parse_content_range(content_range, &start, &end, &total) == 0 &&
           start == (int64_t)dmf_piece_offset(book->piece_length, n) &&
           (uint64_t)(end - start + 1) == dmf_book_piece_size(book, n) &&
           total == book->content_length;
}

/* ---------------------------------------------------------------- retries */

static void start_probe(struct dmf_source *src);

/* A request failed in a way worth another try: wait (capped exponential backoff with
 * jitter), then start again. Returns false when the tries are used up. */
static bool retry_later(struct dmf_source *src)
{
    if (++src->failures >= MAX_RETRIES)
        return false;
    uint64_t ms = dmf_backoff_ms((unsigned)src->failures - 1, RETRY_BASE_MS, RETRY_CAP_MS,
                                 (uint32_t)random());
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    if (src->retry == NULL || evtimer_add(src->retry, &tv) != 0)
        return false;
    return true;
}

static bool waiting_to_retry(const struct dmf_source *src)
{
    return src->retry != NULL && evtimer_pending(src->retry, NULL);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    struct dmf_source *src = arg;
    if (src->failed)
        return;
    if (src->mode == DMF_SOURCE_PROBING && src->probe == NULL)
        start_probe(src);
    else
        changed(src);
}

/* ---------------------------------------------------------------- stream mode */

static int stream_commit(struct dmf_source *src, size_t len)
{
    const struct dmf_piece_book *book = src->env.book;
    uint32_t n = src->next_piece++;
    if (dmf_bitmap_get(&book->have, n)) /* resumed: already verified; the buffer is reused */
        return 0;
    /* The buffer goes with the piece; the stream continues into a new one (stream_on_data). */
    uint8_t *buf = src->buf;
    src->buf = NULL;
    int e = src->env.sink->piece(src->env.arg, n, buf, len, DMF_FROM_ORIGIN, NULL);
    if (e == -ECANCELED)
        return e;
    if (e != 0) {
        fail_as(src, 0, false, "cannot take piece %u from the origin: %s", n, dmf_strerror(e));
        return e;
    }
    return 0;
}

static int stream_on_data(struct dmf_source *src, const char *data, size_t len)
{
    const struct dmf_piece_book *book = src->env.book;
    uint32_t pl = book->piece_length;
    /* Whether this chunk needs a new piece buffer: none is held, or the chunk runs past the
     * end of the one being filled (it is at most one piece long: CURLOPT_BUFFERSIZE is the
     * smallest piece length, so it needs one at most). */
    bool needs_buffer = src->buf == NULL || len > pl - src->len;
    if (busy(src) || (needs_buffer && !dmf_piecemem_may_grow(pl, src->buf ? pl : 0))) {
        /* Pieces wait for the workers, or fill --memory-limit: hold the stream (and the
         * origin) back; the chunk comes again when it is resumed (dmf_source_dispatch). */
        src->paused = true;
        return DMF_HTTP_PAUSE;
    }
    src->received += len;
    if (book->content_length >= 0 && src->received > (uint64_t)book->content_length) {
        fail_as(src, 0, false, "the origin sent more bytes than its Content-Length");
        return -EPROTO;
    }
    while (len > 0) {
        if (src->buf == NULL)
            src->buf = dmf_piecemem_alloc(pl);
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
            fail_as(src, 0, false, "the origin's content is too large");
            return -EFBIG;
        }
    }
    return 0;
}

/* The stream broke off: the pieces it completed stay; it is read again from the start
 * (held pieces are skipped) after a backoff. */
static bool stream_restart(struct dmf_source *src)
{
    dmf_piecemem_free(src->buf);
    src->buf = NULL;
    src->len = 0;
    src->next_piece = 0;
    src->received = 0;
    src->paused = false;
    src->mode = DMF_SOURCE_PROBING;
    return retry_later(src);
}

static void stream_on_end(struct dmf_source *src)
{
    const struct dmf_piece_book *book = src->env.book;
    /* Now the length is known, even when the origin did not say it. */
    if (book->content_length < 0 &&
        src->env.sink->layout(src->env.arg, (int64_t)src->received, book->piece_length) != 0)
        return;
    if (src->received != (uint64_t)book->content_length) {
        uint64_t got = src->received;
        if (stream_restart(src)) {
            dmf_warn("task %s: the origin closed after %" PRIu64 " of %lld bytes; retrying",
                     src->env.task_id, got, (long long)book->content_length);
            return;
        }
        fail_as(src, 0, false, "the origin closed after %" PRIu64 " of %lld bytes", got,
                (long long)book->content_length);
        return;
    }
    if (src->len > 0)
        stream_commit(src, src->len);
    src->len = 0;
    src->mode = DMF_SOURCE_DONE;
    changed(src);
}

/* ---------------------------------------------------------------- probe */

static void pin(char **dst, const char *v)
{
    free(*dst);
    *dst = v ? dmf_xstrdup(v) : NULL;
}

static int probe_on_headers(void *arg, dmf_http_req_t *req, long status)
{
    struct dmf_source *src = arg;
    const struct dmf_piece_book *book = src->env.book;
    char err[128];
    enum dmf_source_mode mode;
    int64_t total;
    uint32_t pl;
    src->status = status;
    if (status != 200 && status != 206 && status != 416) {
        if (dmf_source_retryable(status))
            return -EAGAIN; /* probe_on_done tries again */
        fail_as(src, status, false, "the origin answered HTTP %ld", status);
        return -EPROTO;
    }
    if (dmf_source_probe_answer(status, dmf_http_header(req, "content-range"),
                                dmf_http_header(req, "content-length"), book->piece_length, &mode,
                                &total, &pl, err, sizeof(err)) != 0) {
        fail_as(src, 0, false, "%s", err);
        return -EPROTO;
    }
    const char *etag = dmf_http_header(req, "etag"), *lm = dmf_http_header(req, "last-modified");
    const char *task_etag = src->env.etag ? *src->env.etag : NULL;
    const char *task_lm = src->env.last_modified ? *src->env.last_modified : NULL;
    if (!dmf_source_same_version(src->etag, etag) ||
        !dmf_source_same_version(src->last_modified, lm) ||
        !dmf_source_same_version(task_etag, etag) || !dmf_source_same_version(task_lm, lm)) {
        fail_as(src, 0, true, "the content changed at the origin during the download");
        return -EPROTO;
    }
    char varied[256];
    if (!src->env.immutable && dmf_task_vary_conflict(dmf_http_header(req, "vary"),
                                                      src->env.headers, varied, sizeof(varied))) {
        dmf_info("task %s: the origin varies on %s, which this request sets: not shared "
                 "through P2P",
                 src->env.task_id, varied);
        fail_vary(src, varied);
        return -EPROTO;
    }
    pin(&src->etag, etag);
    pin(&src->last_modified, lm);
    if (src->env.sink->validators)
        src->env.sink->validators(src->env.arg, etag, lm, dmf_http_header(req, "content-type"));
    if (src->env.sink->layout(src->env.arg, total, pl) != 0)
        return -EINVAL;
    src->mode = mode;
    if (mode == DMF_SOURCE_RANGES)
        dmf_info("task %s: origin supports ranges, %lld bytes in %u pieces", src->env.task_id,
                 (long long)total, book->total_pieces);
    if (mode == DMF_SOURCE_STREAM) {
        dmf_info("task %s: origin has no range support, streaming %s%lld bytes", src->env.task_id,
                 total < 0 ? "an unknown number of " : "", (long long)(total < 0 ? 0 : total));
    }
    return 0;
}

static int probe_on_data(void *arg, dmf_http_req_t *req, const char *data, size_t len)
{
    struct dmf_source *src = arg;
    if (src->mode == DMF_SOURCE_STREAM)
        return stream_on_data(src, data, len);
    return 0; /* the probe's byte, or a 416 body */
}

static void probe_on_done(void *arg, dmf_http_req_t *req, int err, const char *reason)
{
    struct dmf_source *src = arg;
    src->probe = NULL;
    if (src->failed)
        return;
    if (err != 0) {
        /* -EACCES: the origin policy refused the address; asking again changes nothing. */
        bool retryable = err == -EAGAIN || (err != -EPROTO && err != -EINVAL && err != -EACCES);
        if (src->mode == DMF_SOURCE_STREAM)
            retryable = retryable && stream_restart(src);
        else
            retryable = retryable && retry_later(src);
        if (retryable) {
            dmf_warn("task %s: the origin failed (%s); retrying", src->env.task_id,
                     err == -EAGAIN ? "a server error" : reason);
        } else if (err == -EAGAIN) {
            fail_as(src, src->status, false, "the origin answered HTTP %ld (%d tries)", src->status,
                    src->failures);
        } else {
            fail_as(src, 0, false, "cannot fetch from the origin: %s", reason);
        }
        return;
    }
    if (src->mode == DMF_SOURCE_STREAM)
        stream_on_end(src);
    else
        changed(src);
}

static const struct dmf_http_req_ops probe_ops = {
    .on_headers = probe_on_headers,
    .on_data = probe_on_data,
    .on_done = probe_on_done,
};

static void start_probe(struct dmf_source *src)
{
    src->mode = DMF_SOURCE_PROBING;
    struct dmf_http_opts o = request_opts(src, "0-0");
    src->probe = dmf_http_get(src->env.http, src->env.url, &o, &probe_ops, src);
}

/* ---------------------------------------------------------------- range mode */

static int range_on_headers(void *arg, dmf_http_req_t *req, long status)
{
    struct range *r = arg;
    struct dmf_source *src = r->src;
    src->status = status;
    if (status != 206)
        return dmf_source_retryable(status) || status == 200 ? -EAGAIN : -EPROTO;
    const char *cr = dmf_http_header(req, "content-range");
    int64_t start, end, total;
    if (!dmf_source_same_version(src->etag, dmf_http_header(req, "etag")) ||
        !dmf_source_same_version(src->last_modified, dmf_http_header(req, "last-modified")) ||
        (dmf_http_parse_content_range(cr, &start, &end, &total) == 0 &&
         total != src->env.book->content_length))
        return -ESTALE;
    if (!dmf_source_range_matches(src->env.book, r->n, cr))
        return -EAGAIN;
    return 0;
}

static int range_on_data(void *arg, dmf_http_req_t *req, const char *data, size_t len)
{
    struct range *r = arg;
    return dmf_piece_buf_append(&r->piece, data, len);
}

static void range_on_done(void *arg, dmf_http_req_t *req, int err, const char *reason)
{
    struct range *r = arg;
    struct dmf_source *src = r->src;
    r->req = NULL;
    if (src->failed) {
        dmf_book_release(src->env.book, r->n);
        dmf_piece_buf_free(&r->piece);
        return;
    }
    if (err == 0 && dmf_piece_buf_full(&r->piece)) {
        /* The claim goes with the piece to the task, which gives it back once stored. */
        size_t got = r->piece.len;
        int e = src->env.sink->piece(src->env.arg, r->n, dmf_piece_buf_take(&r->piece), got,
                                     DMF_FROM_ORIGIN, NULL);
        if (e != 0 && e != -ECANCELED)
            fail_as(src, 0, false, "cannot take piece %u from the origin: %s", r->n,
                    dmf_strerror(e));
        src->failures = 0;
        changed(src);
        return;
    }
    dmf_book_release(src->env.book, r->n);
    /* Its buffer goes too: memory held by a request that is not running would keep others
     * waiting for --memory-limit with nothing in flight to free any. */
    dmf_piece_buf_free(&r->piece);
    if (err == -ESTALE) {
        fail_as(src, 0, true,
                "the content changed at the origin during the download (its "
                "ETag, Last-Modified or length differ from the first answer)");
        return;
    }
    if (err == -EPROTO) {
        fail_as(src, src->status, false, "the origin answered HTTP %ld to a range request",
                src->status);
        return;
    }
    const char *what = err == -EAGAIN ? "unexpected range response"
                       : err == 0     ? "a short body"
                                      : reason;
    if (!retry_later(src)) {
        fail_as(src, 0, false, "the origin failed %d times in a row (last: %s)", src->failures,
                what);
        return;
    }
    dmf_warn("task %s: piece %u from the origin failed (%s); retrying", src->env.task_id, r->n,
             what);
}

static const struct dmf_http_req_ops range_ops = {
    .on_headers = range_on_headers,
    .on_data = range_on_data,
    .on_done = range_on_done,
};

void dmf_source_dispatch(struct dmf_source *src)
{
    if (src == NULL)
        return;
    if (src->paused && src->probe && !busy(src)) {
        src->paused = false;
        dmf_http_resume(src->probe);
    }
    if (src->mode != DMF_SOURCE_RANGES || src->failed || busy(src) || waiting_to_retry(src))
        return;
    struct dmf_piece_book *book = src->env.book;
    int limit = DMF_MIN(src->env.concurrency, MAX_RANGES);
    uint32_t next = 0;
    for (int i = 0; i < limit; i++) {
        struct range *r = &src->ranges[i];
        if (r->req)
            continue;
        /* No memory for one more: the task is kicked when some is freed. */
        if (!dmf_piecemem_may_start(book->piece_length))
            return;
        while (next < book->total_pieces && !dmf_book_claim(book, next))
            next++;
        if (next >= book->total_pieces)
            return;
        r->src = src;
        r->n = next;
        dmf_piece_buf_start(&r->piece, dmf_book_piece_size(book, next));
        char range[64];
        uint64_t off = dmf_piece_offset(book->piece_length, next);
        snprintf(range, sizeof(range), "%" PRIu64 "-%" PRIu64, off, off + r->piece.want - 1);
        struct dmf_http_opts o = request_opts(src, range);
        r->req = dmf_http_get(src->env.http, src->env.url, &o, &range_ops, r);
    }
}

struct dmf_source *dmf_source_start(const struct dmf_source_env *env)
{
    struct dmf_source *src = dmf_xcalloc(1, sizeof(*src));
    src->env = *env;
    if (env->base)
        src->retry = dmf_xevtimer_new(env->base, on_retry, src);
    if (dmf_book_all_held(env->book)) {
        src->mode = DMF_SOURCE_DONE;
        changed(src);
        return src;
    }
    start_probe(src);
    return src;
}

void dmf_source_free(struct dmf_source *src)
{
    if (src == NULL)
        return;
    dmf_http_cancel(src->probe);
    for (int i = 0; i < MAX_RANGES; i++) {
        dmf_http_cancel(src->ranges[i].req);
        if (src->ranges[i].req)
            dmf_book_release(src->env.book, src->ranges[i].n);
        dmf_piece_buf_free(&src->ranges[i].piece);
    }
    if (src->retry)
        event_free(src->retry);
    free(src->etag);
    free(src->last_modified);
    dmf_piecemem_free(src->buf);
    free(src);
}
