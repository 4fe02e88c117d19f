/* HTTP/1.1 for the proxy: a bounded parser of request heads, an incremental decoder of
 * chunked bodies, and the header rules a proxy applies (hop-by-hop headers).
 *
 * The request-head parser is incremental in the way a network parser must be: it is
 * handed whatever has arrived so far, answers "need more" (0) until the blank line that
 * ends the head is in, and never looks past DMF_PROXY_HEAD_MAX bytes; then it parses the
 * head in one pass, keeping every header line in order, exactly as sent (a proxy must
 * forward repeated lines such as several Accept lines one by one). It is pure: no I/O, no
 * globals, so the fuzz harness (fuzz/fuzz_proxy_http.c) drives it directly. */
#ifndef DMF_PROXY_HTTP_H
#define DMF_PROXY_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DMF_PROXY_HEAD_MAX    (64 * 1024) /* request line + headers */
#define DMF_PROXY_HEADERS_MAX 128         /* header lines in one head */
#define DMF_PROXY_METHOD_MAX  16
#define DMF_PROXY_TARGET_MAX  8192

struct dmf_proxy_header {
    char *name;  /* as sent (case kept) */
    char *value; /* without surrounding blanks */
};

/* A parsed request head. All strings are owned; free with dmf_proxy_request_free. */
struct dmf_proxy_request {
    char *method;
    char *target; /* origin-form "/path?q", absolute-form "http://h/p", or "host:port" */
    int minor;    /* HTTP/1.<minor> */
    struct dmf_proxy_header *h;
    size_t nh;
    int64_t content_length; /* -1 when no Content-Length */
    bool chunked;           /* Transfer-Encoding: chunked */
    bool keep_alive;        /* from the version and Connection */
    bool expect_continue;   /* Expect: 100-continue */
};

/* Parses the request head at the start of buf[0..len). Returns the head's length in
 * bytes (> 0) with *req filled (the caller frees it), 0 when the head is not complete yet
 * (and len <= DMF_PROXY_HEAD_MAX), or a negative code with a reason in err:
 * -EMSGSIZE head too large or too many headers; -EBADMSG malformed (bad request line,
 * header without colon, obs-fold, control bytes, conflicting or invalid Content-Length,
 * Content-Length together with Transfer-Encoding); -ENOTSUP HTTP version other than 1.x
 * or a transfer coding other than chunked. Leading empty lines are skipped. Lines end with
 * CRLF or a bare LF. *req is untouched unless the return is > 0. */
int dmf_proxy_request_parse(const char *buf, size_t len, struct dmf_proxy_request *req, char *err,
                            size_t errlen);
/* The same, for a caller that feeds a growing buffer: *scanned (0 at the start of a head)
 * is how far earlier calls looked for the head's end; the search resumes there and
 * *scanned is advanced while the head is incomplete, so a head that arrives one byte at a
 * time costs linear time, not quadratic. The buffer's first *scanned bytes must be the
 * same bytes as on the previous call. */
int dmf_proxy_request_parse_from(const char *buf, size_t len, size_t *scanned,
                                 struct dmf_proxy_request *req, char *err, size_t errlen);
void dmf_proxy_request_free(struct dmf_proxy_request *req);

/* The first header of that name (case-insensitive), or NULL. Borrowed from req. */
const char *dmf_proxy_request_header(const struct dmf_proxy_request *req, const char *name);

/* True for a header that belongs to one connection and is never forwarded: Connection,
 * Keep-Alive, Proxy-Connection, Proxy-Authorization, Proxy-Authenticate, TE, Trailer,
 * Transfer-Encoding, Upgrade, and any name that connection (the request's Connection
 * header value, may be NULL) lists. */
bool dmf_proxy_hop_by_hop(const char *name, const char *connection);

/* An incremental decoder of a chunked body. Zero-initialise; feed bytes as they come. */
struct dmf_proxy_chunked {
    int state;
    uint64_t left;   /* bytes left in the current chunk */
    size_t linelen;  /* bytes of the current size or trailer line (bounded) */
    int size_digits; /* hex digits of the current size */
};

/* Decodes in[0..inlen): writes chunk data into out (which has room for inlen bytes),
 * sets *outlen to the bytes written and *consumed to the input bytes used. Returns 1 when
 * the body ended (last chunk and trailers consumed; bytes after it are not consumed), 0
 * when more input is needed, or -EBADMSG on a malformed body (bad size, size over 2^60,
 * chunk not followed by CRLF, line longer than 4 KiB). */
int dmf_proxy_chunked_decode(struct dmf_proxy_chunked *c, const char *in, size_t inlen, char *out,
                             size_t *outlen, size_t *consumed);

/* The reason phrase of a status code ("OK", "Not Found"), "Unknown" otherwise. */
const char *dmf_proxy_status_reason(long status);

/* Parses a Range header value that asks for one byte range of a content of total bytes
 * (total >= 0): "bytes=A-B", "bytes=A-", "bytes=-N". Returns 1 with [*start, *end]
 * (inclusive, clamped to the content), 0 when the header should be ignored (several
 * ranges, other units, malformed: serve the whole content), or -ERANGE when the range is
 * unsatisfiable (answer 416). */
int dmf_proxy_parse_range(const char *v, int64_t total, int64_t *start, int64_t *end);

#endif
