/* HTTP/1.1 request heads, chunked bodies and header rules for the proxy; see proxy_http.h. */
#include "daemon/proxy/proxy_http.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/util.h"

#define CHUNK_LINE_MAX 4096

static bool is_tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* Finds the end of the head: the offset just past the empty line, or 0 when absent. The
 * bytes before `from` are known to hold no end; the scan resumes two bytes before it, so
 * an empty line split across two reads is still seen. */
static size_t head_end(const char *buf, size_t len, size_t from)
{
    for (size_t i = from > 2 ? from - 2 : 0; i < len; i++) {
        if (buf[i] != '\n')
            continue;
        /* An empty line is "\n" right after the previous "\n" (or "\r\n"). */
        if (i + 1 < len && buf[i + 1] == '\n')
            return i + 2;
        if (i + 2 < len && buf[i + 1] == '\r' && buf[i + 2] == '\n')
            return i + 3;
    }
    return 0;
}

/* One line [p, end of line) without its CR LF; advances *pos past the line. */
static bool next_line(const char *buf, size_t len, size_t *pos, const char **line, size_t *ll)
{
    if (*pos >= len)
        return false;
    const char *p = buf + *pos;
    const char *nl = memchr(p, '\n', len - *pos);
    if (nl == NULL)
        return false;
    size_t l = (size_t)(nl - p);
    *pos += l + 1;
    if (l > 0 && p[l - 1] == '\r')
        l--;
    *line = p;
    *ll = l;
    return true;
}

static void set_err(char *err, size_t errlen, const char *msg)
{
    if (err && errlen)
        snprintf(err, errlen, "%s", msg);
}

/* Does the comma-separated list v contain token tok (case-insensitive)? */
static bool list_has(const char *v, const char *tok)
{
    size_t tl = strlen(tok);
    while (v && *v) {
        while (*v == ' ' || *v == '\t' || *v == ',')
            v++;
        const char *e = v;
        while (*e && *e != ',')
            e++;
        const char *t = e;
        while (t > v && (t[-1] == ' ' || t[-1] == '\t'))
            t--;
        if ((size_t)(t - v) == tl && strncasecmp(v, tok, tl) == 0)
            return true;
        v = e;
    }
    return false;
}

/* Parses a Content-Length value: digits only, at most 18 of them. */
static int parse_length(const char *v, int64_t *out)
{
    int64_t n = 0;
    int digits = 0;
    if (*v == '\0')
        return -EBADMSG;
    for (; *v; v++, digits++) {
        if (*v < '0' || *v > '9' || digits >= 18)
            return -EBADMSG;
        n = n * 10 + (*v - '0');
    }
    *out = n;
    return 0;
}

int dmf_proxy_request_parse(const char *buf, size_t len, struct dmf_proxy_request *out, char *err,
                            size_t errlen)
{
    size_t scanned = 0;
    return dmf_proxy_request_parse_from(buf, len, &scanned, out, err, errlen);
}

int dmf_proxy_request_parse_from(const char *buf, size_t len, size_t *scanned,
                                 struct dmf_proxy_request *out, char *err, size_t errlen)
{
    struct dmf_proxy_request r;
    size_t skip = 0;
    int rc;

    /* Tolerate empty lines before the request line (RFC 9112 2.2). */
    while (skip < len && (buf[skip] == '\r' || buf[skip] == '\n') && skip < 16)
        skip++;
    size_t scan = DMF_MIN(len, DMF_PROXY_HEAD_MAX);
    size_t prev = *scanned;
    size_t from = prev > skip ? prev - skip : 0;
    size_t end = skip < scan ? head_end(buf + skip, scan - skip, from) : 0;
    if (end == 0) {
        *scanned = DMF_MAX(scan, skip);
        if (len >= DMF_PROXY_HEAD_MAX) {
            set_err(err, errlen, "request head too large");
            return -EMSGSIZE;
        }
        /* The method is checked as it arrives: a TLS handshake or other binary sent to
         * the plain-text port is refused at once, not after a timeout. */
        for (size_t i = skip; i < len && buf[i] != ' '; i++)
            if (!is_tchar((unsigned char)buf[i]) || i - skip >= DMF_PROXY_METHOD_MAX) {
                set_err(err, errlen, "not an HTTP/1.x request");
                return -EBADMSG;
            }
        /* The request line alone bounds its fields early: checked once, on the call
         * that first holds more than the longest request line. */
        size_t line_max = DMF_PROXY_TARGET_MAX + DMF_PROXY_METHOD_MAX + 16;
        if (len - skip > line_max && prev <= skip + line_max &&
            memchr(buf + skip, '\n', line_max + 1) == NULL) {
            set_err(err, errlen, "request line too long");
            return -EMSGSIZE;
        }
        return 0;
    }
    end += skip;

    memset(&r, 0, sizeof(r));
    r.content_length = -1;
    size_t pos = skip;
    const char *line;
    size_t ll;
    next_line(buf, end, &pos, &line, &ll);

    /* Request line: method SP target SP HTTP/1.x */
    const char *sp1 = memchr(line, ' ', ll);
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', ll - (size_t)(sp1 + 1 - line)) : NULL;
    if (sp1 == NULL || sp2 == NULL || sp1 == line || sp2 == sp1 + 1) {
        set_err(err, errlen, "malformed request line");
        return -EBADMSG;
    }
    size_t ml = (size_t)(sp1 - line), tl = (size_t)(sp2 - sp1 - 1),
           vl = ll - (size_t)(sp2 + 1 - line);
    if (ml > DMF_PROXY_METHOD_MAX || tl > DMF_PROXY_TARGET_MAX) {
        set_err(err, errlen, "method or target too long");
        return -EMSGSIZE;
    }
    for (size_t i = 0; i < ml; i++)
        if (!is_tchar((unsigned char)line[i])) {
            set_err(err, errlen, "invalid method");
            return -EBADMSG;
        }
    for (size_t i = 0; i < tl; i++) {
        unsigned char c = (unsigned char)sp1[1 + i];
        if (c <= 0x20 || c >= 0x7f) {
            set_err(err, errlen, "invalid request target");
            return -EBADMSG;
        }
    }
    if (vl != 8 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0 || sp2[8] < '0' || sp2[8] > '9') {
        set_err(err, errlen, "unsupported HTTP version");
        return -ENOTSUP;
    }
    r.minor = sp2[8] - '0';

    /* Header lines. */
    const char *te = NULL, *conn = NULL;
    size_t cap = 0;
    while (next_line(buf, end, &pos, &line, &ll) && ll > 0) {
        if (line[0] == ' ' || line[0] == '\t') {
            set_err(err, errlen, "obsolete line folding");
            rc = -EBADMSG;
            goto fail;
        }
        const char *colon = memchr(line, ':', ll);
        if (colon == NULL || colon == line) {
            set_err(err, errlen, "header line without a name and colon");
            rc = -EBADMSG;
            goto fail;
        }
        size_t nl = (size_t)(colon - line);
        for (size_t i = 0; i < nl; i++)
            if (!is_tchar((unsigned char)line[i])) {
                set_err(err, errlen, "invalid header name");
                rc = -EBADMSG;
                goto fail;
            }
        const char *v = colon + 1, *ve = line + ll;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        for (const char *p = v; p < ve; p++) {
            unsigned char c = (unsigned char)*p;
            if ((c < 0x20 && c != '\t') || c == 0x7f) {
                set_err(err, errlen, "control byte in a header value");
                rc = -EBADMSG;
                goto fail;
            }
        }
        if (r.nh == DMF_PROXY_HEADERS_MAX) {
            set_err(err, errlen, "too many header lines");
            rc = -EMSGSIZE;
            goto fail;
        }
        if (r.nh == cap) {
            cap = cap ? cap * 2 : 16;
            r.h = dmf_xrealloc(r.h, cap * sizeof(*r.h));
        }
        struct dmf_proxy_header *h = &r.h[r.nh++];
        h->name = dmf_xstrndup(line, nl);
        h->value = dmf_xstrndup(v, (size_t)(ve - v));
        if (strcasecmp(h->name, "content-length") == 0) {
            int64_t n;
            if (parse_length(h->value, &n) != 0 ||
                (r.content_length >= 0 && r.content_length != n)) {
                set_err(err, errlen, "invalid or conflicting Content-Length");
                rc = -EBADMSG;
                goto fail;
            }
            r.content_length = n;
        } else if (strcasecmp(h->name, "transfer-encoding") == 0) {
            if (te != NULL) {
                set_err(err, errlen, "repeated Transfer-Encoding");
                rc = -EBADMSG;
                goto fail;
            }
            te = h->value;
        } else if (strcasecmp(h->name, "connection") == 0) {
            conn = h->value;
        } else if (strcasecmp(h->name, "expect") == 0) {
            r.expect_continue = strcasecmp(h->value, "100-continue") == 0;
        }
    }
    if (te != NULL) {
        if (strcasecmp(te, "chunked") != 0) {
            set_err(err, errlen, "unsupported transfer coding");
            rc = -ENOTSUP;
            goto fail;
        }
        if (r.content_length >= 0) {
            set_err(err, errlen, "both Content-Length and Transfer-Encoding");
            rc = -EBADMSG;
            goto fail;
        }
        r.chunked = true;
    }
    r.keep_alive = r.minor >= 1 ? !list_has(conn, "close") : list_has(conn, "keep-alive");
    r.method = dmf_xstrndup(buf + skip, ml);
    r.target = dmf_xstrndup(sp1 + 1, tl);
    *out = r;
    return (int)end;

fail:
    dmf_proxy_request_free(&r);
    return rc;
}

void dmf_proxy_request_free(struct dmf_proxy_request *r)
{
    for (size_t i = 0; i < r->nh; i++) {
        free(r->h[i].name);
        free(r->h[i].value);
    }
    free(r->h);
    free(r->method);
    free(r->target);
    memset(r, 0, sizeof(*r));
    r->content_length = -1;
}

const char *dmf_proxy_request_header(const struct dmf_proxy_request *r, const char *name)
{
    for (size_t i = 0; i < r->nh; i++)
        if (strcasecmp(r->h[i].name, name) == 0)
            return r->h[i].value;
    return NULL;
}

bool dmf_proxy_hop_by_hop(const char *name, const char *connection)
{
    static const char *const hop[] = {"connection",
                                      "keep-alive",
                                      "proxy-connection",
                                      "proxy-authorization",
                                      "proxy-authenticate",
                                      "te",
                                      "trailer",
                                      "transfer-encoding",
                                      "upgrade"};
    for (size_t i = 0; i < DMF_ARRAY_SIZE(hop); i++)
        if (strcasecmp(name, hop[i]) == 0)
            return true;
    return connection != NULL && list_has(connection, name);
}

enum {
    CH_SIZE,     /* hex digits of a chunk size */
    CH_EXT,      /* chunk extension up to the LF */
    CH_DATA,     /* chunk bytes */
    CH_DATA_CR,  /* the CR after the data (or LF) */
    CH_DATA_LF,  /* the LF after the data */
    CH_TRAILER,  /* start of a trailer line (or the final empty line) */
    CH_TRAILER2, /* inside a trailer line */
    CH_LAST_LF,  /* the LF of the final empty line after a CR */
    CH_DONE,
};

int dmf_proxy_chunked_decode(struct dmf_proxy_chunked *c, const char *in, size_t inlen, char *out,
                             size_t *outlen, size_t *consumed)
{
    size_t i = 0, o = 0;
    int rc = 0;
    while (i < inlen && c->state != CH_DONE) {
        char ch = in[i];
        switch (c->state) {
        case CH_SIZE: {
            int v = dmf_hex_digit(ch);
            if (v >= 0) {
                if (++c->size_digits > 15) {
                    rc = -EBADMSG;
                    goto out;
                }
                c->left = c->left * 16 + (uint64_t)v;
                i++;
                break;
            }
            if (c->size_digits == 0 ||
                (ch != ';' && ch != '\r' && ch != '\n' && ch != ' ' && ch != '\t')) {
                rc = -EBADMSG;
                goto out;
            }
            c->state = CH_EXT;
            c->linelen = (size_t)c->size_digits;
            break;
        }
        case CH_EXT:
            i++;
            if (++c->linelen > CHUNK_LINE_MAX) {
                rc = -EBADMSG;
                goto out;
            }
            if (ch == '\n') {
                c->size_digits = 0;
                c->linelen = 0;
                c->state = c->left ? CH_DATA : CH_TRAILER;
            }
            break;
        case CH_DATA: {
            size_t take = (size_t)DMF_MIN((uint64_t)(inlen - i), c->left);
            memcpy(out + o, in + i, take);
            o += take;
            i += take;
            c->left -= take;
            if (c->left == 0)
                c->state = CH_DATA_CR;
            break;
        }
        case CH_DATA_CR:
            i++;
            if (ch == '\r')
                c->state = CH_DATA_LF;
            else if (ch == '\n')
                c->state = CH_SIZE;
            else {
                rc = -EBADMSG;
                goto out;
            }
            break;
        case CH_DATA_LF:
            i++;
            if (ch != '\n') {
                rc = -EBADMSG;
                goto out;
            }
            c->state = CH_SIZE;
            break;
        case CH_TRAILER:
            i++;
            if (ch == '\n')
                c->state = CH_DONE;
            else if (ch == '\r')
                c->state = CH_LAST_LF;
            else {
                c->linelen = 1;
                c->state = CH_TRAILER2;
            }
            break;
        case CH_LAST_LF:
            i++;
            if (ch != '\n') {
                rc = -EBADMSG;
                goto out;
            }
            c->state = CH_DONE;
            break;
        case CH_TRAILER2:
            i++;
            if (++c->linelen > CHUNK_LINE_MAX) {
                rc = -EBADMSG;
                goto out;
            }
            if (ch == '\n')
                c->state = CH_TRAILER;
            break;
        }
    }
    if (c->state == CH_DONE)
        rc = 1;
out:
    *outlen = o;
    *consumed = i;
    return rc;
}

const char *dmf_proxy_status_reason(long status)
{
    static const struct {
        long code;
        const char *reason;
    } reasons[] = {
        {100, "Continue"},
        {200, "OK"},
        {201, "Created"},
        {202, "Accepted"},
        {204, "No Content"},
        {206, "Partial Content"},
        {301, "Moved Permanently"},
        {302, "Found"},
        {303, "See Other"},
        {304, "Not Modified"},
        {307, "Temporary Redirect"},
        {308, "Permanent Redirect"},
        {400, "Bad Request"},
        {401, "Unauthorized"},
        {403, "Forbidden"},
        {404, "Not Found"},
        {405, "Method Not Allowed"},
        {407, "Proxy Authentication Required"},
        {408, "Request Timeout"},
        {411, "Length Required"},
        {413, "Content Too Large"},
        {414, "URI Too Long"},
        {416, "Range Not Satisfiable"},
        {429, "Too Many Requests"},
        {431, "Request Header Fields Too Large"},
        {500, "Internal Server Error"},
        {501, "Not Implemented"},
        {502, "Bad Gateway"},
        {503, "Service Unavailable"},
        {504, "Gateway Timeout"},
        {505, "HTTP Version Not Supported"},
    };
    for (size_t i = 0; i < DMF_ARRAY_SIZE(reasons); i++)
        if (reasons[i].code == status)
            return reasons[i].reason;
    return "Unknown";
}

/* Digits only, at most 18: a byte position. -1 when malformed. */
static int64_t parse_pos(const char *s, size_t n)
{
    if (n == 0 || n > 18)
        return -1;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

int dmf_proxy_parse_range(const char *v, int64_t total, int64_t *start, int64_t *end)
{
    if (v == NULL || strncasecmp(v, "bytes=", 6) != 0)
        return 0;
    v += 6;
    while (*v == ' ')
        v++;
    size_t n = strlen(v);
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    if (memchr(v, ',', n) != NULL)
        return 0; /* several ranges: the whole content is an allowed answer */
    const char *dash = memchr(v, '-', n);
    if (dash == NULL)
        return 0;
    size_t al = (size_t)(dash - v), bl = n - al - 1;
    if (al == 0) { /* suffix: the last N bytes */
        int64_t suffix = parse_pos(dash + 1, bl);
        if (suffix < 0)
            return 0;
        if (suffix == 0 || total == 0)
            return -ERANGE;
        *start = suffix >= total ? 0 : total - suffix;
        *end = total - 1;
        return 1;
    }
    int64_t a = parse_pos(v, al);
    int64_t b = bl ? parse_pos(dash + 1, bl) : total - 1;
    if (a < 0 || (bl && b < 0) || (bl && b < a))
        return 0;
    if (a >= total)
        return -ERANGE;
    *start = a;
    *end = b >= total ? total - 1 : b;
    return 1;
}
