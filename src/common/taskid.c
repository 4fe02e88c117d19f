/* Task identity. The exact byte layout hashed here is a cross-implementation contract (see
 * tests/unit/common/taskid_vectors.txt): change it and every stored task changes ID. */
#include "common/taskid.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/digest.h"
#include "common/util.h"

#define URL_MAX 8192

/* One query parameter of the URL being normalised: a view into the caller's string. */
struct param {
    const char *ptr;
    size_t len;     /* whole "name=value" */
    size_t namelen; /* up to the first '=' (or len) */
    size_t index;   /* position in the URL, to keep the sort stable */
};

static int param_cmp(const void *a, const void *b)
{
    const struct param *x = a, *y = b;
    size_t n = DMF_MIN(x->namelen, y->namelen);
    int c = memcmp(x->ptr, y->ptr, n);
    if (c != 0)
        return c;
    if (x->namelen != y->namelen)
        return x->namelen < y->namelen ? -1 : 1;
    /* Same name: compare values (the bytes after '='). */
    const char *xv = x->ptr + x->namelen, *yv = y->ptr + y->namelen;
    size_t xl = x->len - x->namelen, yl = y->len - y->namelen;
    if (xl > 0)
        xv++, xl--;
    if (yl > 0)
        yv++, yl--;
    c = memcmp(xv, yv, DMF_MIN(xl, yl));
    if (c != 0)
        return c;
    if (xl != yl)
        return xl < yl ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

static int filtered(const struct dmf_strlist *filter, const char *name, size_t len)
{
    for (size_t i = 0; filter != NULL && i < filter->n; i++)
        if (strlen(filter->v[i]) == len && memcmp(filter->v[i], name, len) == 0)
            return 1;
    return 0;
}

/* Characters allowed in a host (RFC 3986 reg-name, plus ':' and '[' ']' checked apart). */
static int host_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           strchr("-._~%!$&'()*+,;=", c) != NULL;
}

/* Appends n bytes to the output buffer, which was sized for the whole URL up front. */
static void put(char *buf, size_t *pos, const char *s, size_t n)
{
    memcpy(buf + *pos, s, n);
    *pos += n;
}

int dmf_url_normalize(const char *url, const struct dmf_strlist *filter_query, char **out,
                      char *err, size_t errlen)
{
    struct param *params = NULL;
    char *buf = NULL;
    int rc = -EINVAL;

    *out = NULL;
    if (url == NULL || url[0] == '\0') {
        snprintf(err, errlen, "no URL given");
        goto out;
    }
    size_t len = strlen(url);
    if (len > URL_MAX) {
        snprintf(err, errlen, "URL is longer than %d bytes", URL_MAX);
        goto out;
    }
    /* The URL is never quoted in errors: its query may carry a signature or token. */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)url[i];
        if (c <= 0x20 || c >= 0x7f) {
            snprintf(err, errlen,
                     "URL contains a space, control or non-ASCII character at byte %zu "
                     "(percent-encode it)",
                     i);
            goto out;
        }
    }

    const char *sep = strstr(url, "://");
    if (sep == NULL || sep == url) {
        snprintf(err, errlen, "URL is not absolute (expected http://HOST/... or https://...)");
        goto out;
    }
    size_t slen = (size_t)(sep - url);
    const char *scheme;
    uint16_t default_port;
    if (slen == 4 && strncasecmp(url, "http", 4) == 0) {
        scheme = "http";
        default_port = 80;
    } else if (slen == 5 && strncasecmp(url, "https", 5) == 0) {
        scheme = "https";
        default_port = 443;
    } else {
        snprintf(err, errlen, "unsupported URL scheme '%.*s' (only http and https)",
                 (int)DMF_MIN(slen, 16), url);
        goto out;
    }

    const char *auth = sep + 3;
    size_t alen = strcspn(auth, "/?#");
    if (memchr(auth, '@', alen) != NULL) {
        snprintf(err, errlen,
                 "URL must not contain credentials (user:password@); send them in a header");
        goto out;
    }

    /* Host, then an optional port. */
    const char *host = auth, *port = NULL;
    size_t hlen, plen = 0;
    if (alen > 0 && auth[0] == '[') {
        const char *close = memchr(auth, ']', alen);
        if (close == NULL) {
            snprintf(err, errlen, "URL has an unterminated IPv6 address");
            goto out;
        }
        hlen = (size_t)(close - auth) + 1;
        for (size_t i = 1; i + 1 < hlen; i++)
            if (!host_char(auth[i]) && auth[i] != ':') {
                snprintf(err, errlen, "URL has an invalid IPv6 address");
                goto out;
            }
        if (hlen == 2) {
            snprintf(err, errlen, "URL has no host");
            goto out;
        }
    } else {
        const char *colon = memchr(auth, ':', alen);
        hlen = colon != NULL ? (size_t)(colon - auth) : alen;
        for (size_t i = 0; i < hlen; i++)
            if (!host_char(auth[i])) {
                snprintf(err, errlen, "URL host has an invalid character '%c'", auth[i]);
                goto out;
            }
    }
    if (hlen == 0) {
        snprintf(err, errlen, "URL has no host");
        goto out;
    }
    if (hlen < alen) {
        if (auth[hlen] != ':') {
            snprintf(err, errlen, "URL has garbage after the host");
            goto out;
        }
        port = auth + hlen + 1;
        plen = alen - hlen - 1;
    }
    unsigned long portnum = 0;
    for (size_t i = 0; i < plen; i++) {
        if (port[i] < '0' || port[i] > '9' || portnum > 65535) {
            snprintf(err, errlen, "URL has an invalid port");
            goto out;
        }
        portnum = portnum * 10 + (unsigned long)(port[i] - '0');
    }
    if (plen > 0 && (portnum == 0 || portnum > 65535)) {
        snprintf(err, errlen, "URL has an invalid port");
        goto out;
    }

    /* Path and query; the fragment is dropped. */
    const char *path = auth + alen;
    size_t rest = strcspn(path, "#");
    size_t pathlen = strcspn(path, "?#");
    const char *query = path + pathlen;
    size_t qlen = rest - pathlen;
    if (qlen > 0) { /* skip the '?' */
        query++;
        qlen--;
    }

    /* Output is never longer than the input plus the scheme's case change. */
    buf = dmf_xmalloc(len + 1);
    size_t pos = 0;
    put(buf, &pos, scheme, strlen(scheme));
    put(buf, &pos, "://", 3);
    for (size_t i = 0; i < hlen; i++) {
        char c = host[i];
        buf[pos++] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    }
    if (plen > 0 && portnum != default_port)
        pos += (size_t)sprintf(buf + pos, ":%lu", portnum);
    put(buf, &pos, path, pathlen);

    size_t np = 0;
    params = dmf_xcalloc(qlen / 2 + 1, sizeof(*params));
    for (const char *p = query, *end = query + qlen; p < end;) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        size_t n = amp != NULL ? (size_t)(amp - p) : (size_t)(end - p);
        if (n > 0) {
            const char *eq = memchr(p, '=', n);
            size_t namelen = eq != NULL ? (size_t)(eq - p) : n;
            if (!filtered(filter_query, p, namelen)) {
                params[np] = (struct param){p, n, namelen, np};
                np++;
            }
        }
        p += n + 1;
    }
    qsort(params, np, sizeof(*params), param_cmp);
    for (size_t i = 0; i < np; i++) {
        buf[pos++] = i == 0 ? '?' : '&';
        put(buf, &pos, params[i].ptr, params[i].len);
    }
    buf[pos] = '\0';
    *out = buf;
    buf = NULL;
    rc = 0;
out:
    free(params);
    free(buf);
    return rc;
}

/* Hashes "<field>=<len>:<value>\n". */
static void put_field(dmf_sha256_ctx_t *c, const char *field, const char *value)
{
    char prefix[64];
    size_t vlen = strlen(value);
    int n = snprintf(prefix, sizeof(prefix), "%s=%zu:", field, vlen);
    dmf_sha256_update(c, prefix, (size_t)n);
    dmf_sha256_update(c, value, vlen);
    dmf_sha256_update(c, "\n", 1);
}

/* ---- headers that select content ---- */

/* Compared case-insensitively; written as a log line names them. */
static const char *const identity_headers[] = {"Host", "Accept-Encoding"};
static const char *const bypass_headers[] = {"Cookie",
                                             "Range",
                                             "If-Range",
                                             "If-Match",
                                             "If-None-Match",
                                             "If-Modified-Since",
                                             "If-Unmodified-Since"};

/* Length of the name of header line "Name: value" (up to ':'), or 0 when there is none. */
static size_t header_name_len(const char *line)
{
    const char *colon = strchr(line, ':');
    return colon ? (size_t)(colon - line) : 0;
}

static bool name_is(const char *line, size_t len, const char *name)
{
    return len == strlen(name) && strncasecmp(line, name, len) == 0;
}

enum dmf_header_role dmf_task_header_role(const char *line)
{
    size_t len = header_name_len(line);
    for (size_t i = 0; i < DMF_ARRAY_SIZE(identity_headers); i++)
        if (name_is(line, len, identity_headers[i]))
            return DMF_HEADER_IDENTITY;
    for (size_t i = 0; i < DMF_ARRAY_SIZE(bypass_headers); i++)
        if (name_is(line, len, bypass_headers[i]))
            return DMF_HEADER_BYPASS;
    return DMF_HEADER_PASSED;
}

const char *dmf_task_bypass_header(const struct dmf_strlist *headers)
{
    for (size_t i = 0; headers && i < headers->n; i++) {
        size_t len = header_name_len(headers->v[i]);
        for (size_t j = 0; j < DMF_ARRAY_SIZE(bypass_headers); j++)
            if (name_is(headers->v[i], len, bypass_headers[j]))
                return bypass_headers[j];
    }
    return NULL;
}

/* The value of header name in headers (trimmed, borrowed), or NULL; *len gets its length. */
static const char *header_value(const struct dmf_strlist *headers, const char *name, size_t *len)
{
    for (size_t i = 0; headers && i < headers->n; i++) {
        const char *line = headers->v[i];
        size_t nl = header_name_len(line);
        if (!name_is(line, nl, name))
            continue;
        const char *v = line + nl + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        size_t l = strlen(v);
        while (l > 0 && (v[l - 1] == ' ' || v[l - 1] == '\t'))
            l--;
        *len = l;
        return v;
    }
    return NULL;
}

int dmf_task_vary_conflict(const char *vary, const struct dmf_strlist *headers, char *name,
                           size_t namelen)
{
    if (vary == NULL)
        return 0;
    const char *p = vary;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *start = p;
        while (*p && *p != ',' && *p != ' ' && *p != '\t')
            p++;
        size_t len = (size_t)(p - start);
        if (len == 0)
            continue;
        snprintf(name, namelen, "%.*s", (int)DMF_MIN(len, 200), start);
        if (len == 1 && *start == '*')
            return 1;
        bool identity = false;
        for (size_t i = 0; i < DMF_ARRAY_SIZE(identity_headers); i++)
            identity |= name_is(start, len, identity_headers[i]);
        size_t vl;
        if (!identity && header_value(headers, name, &vl) != NULL)
            return 1;
    }
    name[0] = '\0';
    return 0;
}

/* Accept-Encoding as part of the identity: tokens lower-cased, spaces dropped, sorted. */
static char *accept_encoding_norm(const char *v, size_t len)
{
    struct dmf_strlist toks = {0};
    size_t i = 0;
    while (i < len) {
        char tok[128];
        size_t n = 0;
        while (i < len && v[i] != ',') {
            if (v[i] != ' ' && v[i] != '\t' && n + 1 < sizeof(tok))
                tok[n++] = (char)tolower((unsigned char)v[i]);
            i++;
        }
        i++;
        tok[n] = '\0';
        if (n > 0)
            dmf_strlist_push(&toks, tok);
    }
    for (size_t a = 1; a < toks.n; a++) /* insertion sort: a handful of tokens */
        for (size_t b = a; b > 0 && strcmp(toks.v[b - 1], toks.v[b]) > 0; b--) {
            char *t = toks.v[b - 1];
            toks.v[b - 1] = toks.v[b];
            toks.v[b] = t;
        }
    size_t total = 1;
    for (size_t a = 0; a < toks.n; a++)
        total += strlen(toks.v[a]) + 1;
    char *out = dmf_xcalloc(1, total);
    for (size_t a = 0; a < toks.n; a++) {
        if (a)
            strcat(out, ",");
        strcat(out, toks.v[a]);
    }
    dmf_strlist_free(&toks);
    return out;
}

/* A Host header's value as the identity sees it, or NULL when it names the URL's own
 * authority (then it selects nothing the URL does not). norm_url is normalised. */
static char *host_identity(const char *v, size_t len, const char *norm_url)
{
    char *host = dmf_xcalloc(1, len + 1);
    for (size_t i = 0; i < len; i++)
        host[i] = (char)tolower((unsigned char)v[i]);
    bool https = strncmp(norm_url, "https://", 8) == 0;
    const char *dflt = https ? ":443" : ":80";
    size_t hl = strlen(host), dl = strlen(dflt);
    if (hl > dl && strcmp(host + hl - dl, dflt) == 0)
        host[hl - dl] = '\0';
    const char *auth = norm_url + (https ? 8 : 7);
    size_t al = strcspn(auth, "/?");
    if (strlen(host) == al && strncmp(host, auth, al) == 0) {
        free(host);
        return NULL;
    }
    return host;
}

int dmf_task_id(const struct dmf_task_id_input *in, char *out, char *err, size_t errlen)
{
    uint8_t md[DMF_SHA256_LEN];
    char *url = NULL;
    int rc;

    if (in->url != NULL || in->digest == NULL) {
        rc = dmf_url_normalize(in->url, in->filter_query, &url, err, errlen);
        if (rc != 0)
            return rc;
    }

    dmf_sha256_ctx_t *c = dmf_sha256_new();
    if (in->digest != NULL) {
        uint8_t d[DMF_SHA256_LEN];
        char norm[DMF_DIGEST_STR_LEN + 1];
        rc = dmf_digest_parse(in->digest, d, err, errlen);
        if (rc != 0)
            goto out;
        dmf_digest_format(d, norm);
        put_field(c, "digest", norm);
    } else {
        char pl[16];
        snprintf(pl, sizeof(pl), "%u", (unsigned)in->piece_length);
        put_field(c, "url", url);
        put_field(c, "tag", in->tag != NULL ? in->tag : "");
        put_field(c, "application", in->application != NULL ? in->application : "");
        put_field(c, "piece_length", pl);
        size_t vl;
        const char *v = header_value(in->headers, "host", &vl);
        char *host = v ? host_identity(v, vl, url) : NULL;
        if (host)
            put_field(c, "host", host);
        free(host);
        if ((v = header_value(in->headers, "accept-encoding", &vl)) != NULL) {
            char *ae = accept_encoding_norm(v, vl);
            put_field(c, "accept_encoding", ae);
            free(ae);
        }
    }
    dmf_sha256_final(c, md);
    dmf_hex_encode(md, DMF_SHA256_LEN, out);
    rc = 0;
out:
    dmf_sha256_free(c);
    free(url);
    return rc;
}

int dmf_task_id_valid(const char *s)
{
    if (s == NULL)
        return 0;
    for (int i = 0; i < DMF_TASK_ID_LEN; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return s[DMF_TASK_ID_LEN] == '\0';
}
