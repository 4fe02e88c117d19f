/* Outbound HTTP on a libevent loop: one libcurl multi handle per loop, driven by
 * libevent socket and timer events. Used for back-to-source (origins: HTTPS, redirects,
 * ranges, pass-through headers) and for the data plane between daemons (pieces, /have).
 * All functions and callbacks run on the loop thread. */
#ifndef DMF_HTTP_CLIENT_H
#define DMF_HTTP_CLIENT_H

#include <stddef.h>
#include <sys/socket.h>
#include <stdint.h>

#include "common/config.h"
#include "common/throttle.h"

struct event_base;

typedef struct dmf_http dmf_http_t;
typedef struct dmf_http_req dmf_http_req_t;

struct dmf_http_req_ops {
    /* The final response's status line and headers are in (after redirects). Return 0 to
     * go on, or a negative code to abort the request (on_done then reports that code). */
    int (*on_headers)(void *arg, dmf_http_req_t *req, long status);
    /* Body bytes, in order. Return 0, DMF_HTTP_PAUSE to leave these bytes unconsumed and
     * pause the transfer (they are offered again after dmf_http_resume), or a negative code
     * to abort. */
    int (*on_data)(void *arg, dmf_http_req_t *req, const char *data, size_t len);
    /* The request is over: err 0 after a complete response, else a negative code and a
     * reason (borrowed). The request is freed after this returns. */
    void (*on_done)(void *arg, dmf_http_req_t *req, int err, const char *reason);
};

/* on_data's answer to pause the transfer until dmf_http_resume. */
#define DMF_HTTP_PAUSE 1

/* Response header lines kept with keep_all_headers, at most (the rest are dropped). */
#define DMF_HTTP_ALL_HEADERS_MAX     128
#define DMF_HTTP_ALL_HEADERS_MAX_LEN (64 * 1024)

struct dmf_http_opts {
    const struct dmf_strlist *headers; /* "Name: value" lines, sent as given; may be NULL.
                                        * "Name:" (no value) removes a header libcurl would
                                        * add by itself (e.g. "Accept:", "Expect:"). */
    const char *range;                 /* "0-1023" for a Range header, or NULL */
    long connect_timeout_ms;           /* 0 = 10 s */
    long low_speed_time_s;             /* abort when under 1 byte/s this long; 0 = 30 s */
    int follow_redirects;              /* origins: yes; daemons: no */
    /* Pass-through requests (the proxy). All default to a plain GET. */
    const char *method;   /* "GET" (NULL), "HEAD" (no body is read), "POST", anything else */
    const char *body;     /* request body (borrowed until on_done), or NULL */
    size_t body_len;      /* bytes of body */
    int keep_all_headers; /* keep every header line of the final response, in order */
    int http11;           /* force HTTP/1.1 (no HTTP/2 over TLS) */
    /* Asked before each new connection with the address libcurl is about to connect to:
     * NULL allows it, a reason refuses it (the request then fails with -EACCES and
     * "refused: <reason>"). NULL hook = any address. */
    const char *(*addr_check)(void *arg, const struct sockaddr *sa);
    void *addr_check_arg;
    /* Bandwidth limits (throttle.h, with dmf_http_set_throttle): the host buckets the
     * response body is charged to (DMF_CHARGE_*; 0 = none) and the task's flow (a
     * reference is taken; NULL = none). The transfer pauses while a bucket is in debt. */
    unsigned charge;
    struct dmf_flow *flow;
    /* A request to another daemon over mutual TLS (with dmf_http_set_peer_tls): the host ID
     * the server's certificate must name (its CN). Checked after every handshake and before
     * each request is sent, on new and reused connections alike; another name fails the
     * request with -EACCES. NULL: an ordinary request (origins). */
    const char *peer_host_id;
};

/* Loads libcurl (curl_dl.h): 0, or -ENOENT with the reason in err. dmf_http_new needs it
 * to have succeeded; a program calls it first to report a missing or unfit libcurl. */
int dmf_http_load(char *err, size_t errlen);
dmf_http_t *dmf_http_new(struct event_base *base);
/* Cancels every request (without callbacks) and frees. */
void dmf_http_free(dmf_http_t *h);

/* Sends every later request through the proxy at url (NULL or "": none). Proxy environment
 * variables are never followed: a daemon pointed at its own proxy would deadlock. */
void dmf_http_set_proxy(dmf_http_t *h, const char *url);

/* Charges later requests' bodies to t's buckets as their opts say (NULL: none). */
void dmf_http_set_throttle(dmf_http_t *h, dmf_throttle_t *t);

/* Trusts the CA certificates in this PEM file for HTTPS, in addition to the system's
 * (every later request; NULL clears). Returns 0, or -EINVAL when the file holds no
 * certificate it can read. */
int dmf_http_set_extra_ca(dmf_http_t *h, const char *pem_path);

/* The certificate, key and cluster CA of daemon-to-daemon requests (opts->peer_host_id):
 * they present f->cert/f->key and trust only f->ca (not the system's CAs), without host
 * name checks (peers are addressed by IP; the CN is checked instead). The CA is read now
 * (call again to reload: requests started later use the new one); the certificate and key
 * are read for each new connection. 0, or -EINVAL with err filled. NULL f: off. */
struct dmf_tls_files;
int dmf_http_set_peer_tls(dmf_http_t *h, const struct dmf_tls_files *f, char *err, size_t errlen);

/* Starts a request (a GET unless opts->method says otherwise). Never NULL; failures are
 * reported through on_done (on a later loop pass). */
dmf_http_req_t *dmf_http_get(dmf_http_t *h, const char *url, const struct dmf_http_opts *opts,
                             const struct dmf_http_req_ops *ops, void *arg);
/* Cancels a request: no callback runs after this. */
void dmf_http_cancel(dmf_http_req_t *req);
/* Resumes a transfer that on_data paused (on a later loop pass; harmless otherwise). */
void dmf_http_resume(dmf_http_req_t *req);

/* Response header of the final response (case-insensitive name), or NULL. Borrowed until
 * the request is done. Only Content-Length, Content-Range, Accept-Ranges, Content-Type,
 * ETag, Last-Modified and Vary are kept. */
const char *dmf_http_header(const dmf_http_req_t *req, const char *name);

/* With keep_all_headers: every header line of the final response in order, as
 * "Name: value" without CR LF (borrowed until the request is done), else an empty list.
 * At most DMF_HTTP_ALL_HEADERS_MAX lines and DMF_HTTP_ALL_HEADERS_MAX_LEN bytes are kept;
 * *truncated (may be NULL) tells whether some were dropped. */
const struct dmf_strlist *dmf_http_all_headers(const dmf_http_req_t *req, int *truncated);

/* Parses "bytes A-B/T" (T may be "*"): fills start, end, total (-1 for "*"); 0 or -EINVAL.
 * "bytes * /T" (unsatisfiable; written without the space) gives start = end = -1. */
int dmf_http_parse_content_range(const char *v, int64_t *start, int64_t *end, int64_t *total);

#endif
