/* Outbound HTTP on a libevent loop: one libcurl multi handle per loop, driven by
 * libevent socket and timer events. Used for back-to-source (origins: HTTPS, redirects,
 * ranges, pass-through headers) and for the data plane between daemons (pieces, /have).
 * All functions and callbacks run on the loop thread. */
#ifndef DMF_HTTP_CLIENT_H
#define DMF_HTTP_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "common/config.h"

struct event_base;

typedef struct dmf_http dmf_http_t;
typedef struct dmf_http_req dmf_http_req_t;

struct dmf_http_req_ops {
    /* The final response's status line and headers are in (after redirects). Return 0 to
     * go on, or a negative code to abort the request (on_done then reports that code). */
    int (*on_headers)(void *arg, dmf_http_req_t *req, long status);
    /* Body bytes, in order. Return 0, or a negative code to abort. */
    int (*on_data)(void *arg, dmf_http_req_t *req, const char *data, size_t len);
    /* The request is over: err 0 after a complete response, else a negative code and a
     * reason (borrowed). The request is freed after this returns. */
    void (*on_done)(void *arg, dmf_http_req_t *req, int err, const char *reason);
};

struct dmf_http_opts {
    const struct dmf_strlist *headers; /* "Name: value" lines, sent as given; may be NULL */
    const char *range;                 /* "0-1023" for a Range header, or NULL */
    long connect_timeout_ms;           /* 0 = 10 s */
    long low_speed_time_s;             /* abort when under 1 byte/s this long; 0 = 30 s */
    int follow_redirects;              /* origins: yes; daemons: no */
};

dmf_http_t *dmf_http_new(struct event_base *base);
/* Cancels every request (without callbacks) and frees. */
void dmf_http_free(dmf_http_t *h);

/* Starts a GET. Never NULL; failures are reported through on_done (on a later loop pass). */
dmf_http_req_t *dmf_http_get(dmf_http_t *h, const char *url, const struct dmf_http_opts *opts,
                             const struct dmf_http_req_ops *ops, void *arg);
/* Cancels a request: no callback runs after this. */
void dmf_http_cancel(dmf_http_req_t *req);

/* Response header of the final response (case-insensitive name), or NULL. Borrowed until
 * the request is done. Only Content-Length, Content-Range, Accept-Ranges and
 * Content-Type are kept. */
const char *dmf_http_header(const dmf_http_req_t *req, const char *name);

/* Parses "bytes A-B/T" (T may be "*"): fills start, end, total (-1 for "*"); 0 or -EINVAL.
 * "bytes * /T" (unsatisfiable; written without the space) gives start = end = -1. */
int dmf_http_parse_content_range(const char *v, int64_t *start, int64_t *end, int64_t *total);

#endif
