/* `damselfly get URL -O FILE`: asks the local daemon to download URL and writes the
 * verified content to FILE (atomically: a temp file in the same directory, then rename;
 * the path rules are output.h's) or to stdout in order. The daemon passes an open
 * descriptor of the task's data over its socket (SCM_RIGHTS): `get` never opens the
 * daemon's files. Without a reachable daemon it downloads from the origin itself (unless
 * --no-back-to-source). Exit codes: get_exit.h. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "cli/get_exit.h"
#include "cli/header_file.h"
#include "cli/local_socket.h"
#include "cli/output.h"
#include "common/bucket.h"
#include "common/cmd.h"
#include "common/config.h"
#include "common/curl_dl.h"
#include "common/digest.h"
#include "common/application.h"
#include "common/log.h"
#include "common/pb_headers.h"
#include "common/pieces.h"
#include "common/taskid.h"
#include "common/util.h"
#include "damselfly/v1/daemon.pb-c.h"

/* The daemon's status for a download it will not share (grpc_status_code 9): get fetches
 * it directly instead. */
#define GRPC_STATUS_FAILED_PRECONDITION_CODE 9

struct get_config {
    char *output;
    char *socket;
    struct dmf_strlist headers;
    struct dmf_strlist header_files;
    char *digest;
    char *tag;
    char *application;
    struct dmf_strlist filter_query;
    uint64_t timeout;
    bool no_back_to_source;
    bool require_fresh;
    uint64_t limit; /* bytes/s for this task, 0 = none */
    char *priority; /* background, normal, foreground */
    bool overwrite;
    bool quiet;
};

#define OPT(n, s, t, f, lo, hi, def, mv, h)                                                        \
    {                                                                                              \
        n, s, t, offsetof(struct get_config, f), lo, hi, def, mv, h                                \
    }

static const struct dmf_option options[] = {
    OPT("output", 'O', DMF_OPT_STRING, output, 0, 0, NULL, "FILE",
        "where to write the content ('-' for stdout)"),
    OPT("socket", 0, DMF_OPT_STRING, socket, 0, 0, "/run/damselfly/daemon.sock", "PATH",
        "the local daemon's unix socket"),
    OPT("header", 'H', DMF_OPT_LIST, headers, 0, 0, NULL, "'NAME: VALUE'|@FILE",
        "request header passed to the origin (repeatable); @FILE reads one per line from FILE "
        "('-': standard input), keeping credentials off the command line"),
    OPT("header-file", 0, DMF_OPT_LIST, header_files, 0, 0, NULL, "FILE",
        "request headers, one 'Name: value' per line (repeatable); as -H @FILE"),
    OPT("digest", 0, DMF_OPT_STRING, digest, 0, 0, NULL, "sha256:HEX",
        "the content's digest: the download fails unless it matches"),
    OPT("tag", 0, DMF_OPT_STRING, tag, 0, 0, NULL, "TAG",
        "tells apart tasks of the same URL (part of the task ID)"),
    OPT("application", 0, DMF_OPT_STRING, application, 0, 0, NULL, "NAME",
        "the application this download is for (at most 64 bytes of letters, digits, '.', '_', "
        "'-'): the cluster's block_applications may refuse it; not part of the task ID"),
    OPT("filter-query", 0, DMF_OPT_LIST, filter_query, 0, 0, NULL, "NAME",
        "query parameter left out of the task ID, e.g. a signature (repeatable)"),
    OPT("timeout", 0, DMF_OPT_DURATION, timeout, 0, 0, "2h", "DURATION",
        "give up after this long (0 = never)"),
    OPT("overwrite", 0, DMF_OPT_BOOL, overwrite, 0, 0, "false", NULL,
        "replace an existing output file (it keeps its mode)"),
    OPT("no-back-to-source", 0, DMF_OPT_BOOL, no_back_to_source, 0, 0, "false", NULL,
        "never fetch from the origin: peers only"),
    OPT("require-fresh", 0, DMF_OPT_BOOL, require_fresh, 0, 0, "false", NULL,
        "fail rather than take a cached copy due for revalidation that the origin cannot "
        "confirm (unreachable)"),
    OPT("limit", 0, DMF_OPT_SIZE, limit, 0, 0, NULL, "BYTES/S",
        "most this download takes per second (at least 64k; within the daemon's limits)"),
    OPT("priority", 0, DMF_OPT_STRING, priority, 0, 0, "normal", "PRIORITY",
        "share of the daemon's bandwidth against other tasks: background (weight 1), "
        "normal (4) or foreground (16)"),
    OPT("quiet", 'q', DMF_OPT_BOOL, quiet, 0, 0, "false", NULL, "no progress and no summary"),
};

static const char usage[] =
    "damselfly get URL -O FILE|DIR/|- [--socket PATH] [-H 'Name: value']... "
    "[--digest sha256:HEX] [--overwrite] [options]";

/* One download's output: the file (output.h) or stdout, and the pieces copied into it
 * from the daemon's data (src_fd, the descriptor the daemon passed). */
struct output {
    struct dmf_output file;
    const char *path; /* file.path; NULL for stdout */
    int fd;           /* file.fd, or stdout */
    int src_fd;       /* the daemon's data, read-only */
    bool share;       /* same filesystem and owner: the output shares its blocks at the end */
    dmf_bitmap_t written;
    uint32_t next; /* stdout: next piece to write */
    int64_t content_length;
    uint32_t piece_length;
    uint64_t bytes;
};

struct get {
    struct get_config *cfg;
    const char *url;
    struct output out;
    char error[512];
    char content_digest[DMF_DIGEST_STR_LEN + 1];
    uint64_t start_ms, last_draw_ms;
    uint64_t completed, from_peers, from_origin;
    bool tty;
    int exit; /* enum dmf_get_exit of the failure */
};

static int output_open(struct output *o, const char *arg, const char *url, bool overwrite,
                       char *err, size_t errlen)
{
    memset(o, 0, sizeof(*o));
    o->fd = -1;
    o->src_fd = -1;
    o->content_length = -1;
    dmf_bitmap_init(&o->written);
    int e = dmf_output_prepare(&o->file, arg, url, overwrite, err, errlen);
    o->path = o->file.path;
    o->fd = o->file.fd;
    return e;
}

static void output_abort(struct output *o)
{
    dmf_output_abort(&o->file);
    o->fd = -1;
    if (o->src_fd >= 0)
        close(o->src_fd);
    o->src_fd = -1;
    dmf_bitmap_free(&o->written);
}

/* The daemon passed a descriptor of the task's data (again, when it started a fresh data
 * file: what was copied from the old one is copied again). */
static void output_source(struct output *o, int fd)
{
    if (o->src_fd >= 0) {
        close(o->src_fd);
        dmf_bitmap_free(&o->written);
        dmf_bitmap_init(&o->written);
    }
    o->src_fd = fd;
    struct stat s, d;
    /* Same filesystem and owner: copy nothing now, share the blocks once complete. */
    o->share = o->path && fstat(fd, &s) == 0 && fstat(o->fd, &d) == 0 && s.st_dev == d.st_dev &&
               s.st_uid == geteuid();
}

static int copy_piece(struct output *o, uint32_t n);

/* The daemon will not serve this download: forget what it passed (its data descriptor and
 * layout) before the output is written from the origin instead. */
static void output_forget_daemon(struct output *o)
{
    if (o->src_fd >= 0)
        close(o->src_fd);
    o->src_fd = -1;
    o->share = false;
    dmf_bitmap_free(&o->written);
    dmf_bitmap_init(&o->written);
    o->content_length = -1;
    o->piece_length = 0;
    o->next = 0;
}

static int output_commit(struct output *o, char *err, size_t errlen)
{
    if (o->path && o->share && o->src_fd >= 0) {
        int e = dmf_output_share(&o->file, o->src_fd);
        o->fd = o->file.fd;
        if (e != 0 && o->fd < 0) {
            snprintf(err, errlen, "cannot write %s: %s", o->path, dmf_strerror(e));
            output_abort(o);
            return e;
        }
        if (e != 0) /* neither a reflink nor a hard link here: copy after all */
            for (uint32_t n = 0; n < dmf_piece_count(o->content_length, o->piece_length); n++)
                if ((e = copy_piece(o, n)) != 0) {
                    snprintf(err, errlen, "cannot write %s: %s", o->path, dmf_strerror(e));
                    output_abort(o);
                    return e;
                }
    }
    int e = dmf_output_commit(&o->file, o->content_length, err, errlen);
    o->fd = -1;
    if (o->src_fd >= 0)
        close(o->src_fd);
    o->src_fd = -1;
    dmf_bitmap_free(&o->written);
    return e;
}

/* Copies piece n from the daemon's data into the output. */
static int copy_piece(struct output *o, uint32_t n)
{
    uint64_t off = dmf_piece_offset(o->piece_length, n);
    size_t len = o->content_length >= 0 ? dmf_piece_size(o->content_length, o->piece_length, n)
                                        : o->piece_length;
    if (o->path) {
        loff_t in = (loff_t)off, outp = (loff_t)off;
        size_t left = len;
        while (left > 0) {
            ssize_t c = copy_file_range(o->src_fd, &in, o->fd, &outp, left, 0);
            if (c < 0 && errno == EINTR)
                continue;
            if (c <= 0)
                break;
            left -= (size_t)c;
        }
        if (left == 0) {
            o->bytes += len;
            return 0;
        }
        /* Some file systems refuse copy_file_range: fall back to pread/pwrite. */
        in = (loff_t)(off + (len - left));
        outp = in;
        char buf[1 << 16];
        while (left > 0) {
            ssize_t r = pread(o->src_fd, buf, DMF_MIN(left, sizeof(buf)), in);
            if (r <= 0)
                return -EIO;
            if (pwrite(o->fd, buf, (size_t)r, outp) != r)
                return errno ? -errno : -EIO;
            in += r;
            outp += r;
            left -= (size_t)r;
        }
        o->bytes += len;
        return 0;
    }
    char *buf = dmf_xmalloc(len ? len : 1);
    size_t got = 0;
    while (got < len) {
        ssize_t r = pread(o->src_fd, buf + got, len - got, (off_t)(off + got));
        if (r <= 0) {
            free(buf);
            return -EIO;
        }
        got += (size_t)r;
    }
    size_t put = 0;
    while (put < len) {
        ssize_t w = write(o->fd, buf + put, len - put);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            free(buf);
            return -EPIPE;
        }
        put += (size_t)w;
    }
    free(buf);
    o->bytes += len;
    return 0;
}

static int output_pieces(struct output *o, const uint32_t *pieces, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (pieces[i] >= DMF_PIECES_MAX)
            return -EPROTO;
        if (o->path && !o->share) {
            if (!dmf_bitmap_get(&o->written, pieces[i])) {
                int e = copy_piece(o, pieces[i]);
                if (e)
                    return e;
            }
        }
        dmf_bitmap_set(&o->written, pieces[i]);
    }
    /* stdout: everything contiguous from the start, in order. */
    while (o->path == NULL && dmf_bitmap_get(&o->written, o->next)) {
        int e = copy_piece(o, o->next);
        if (e)
            return e;
        o->next++;
    }
    return 0;
}

/* ---------------------------------------------------------------- progress */

static void human(double v, char *out, size_t n)
{
    const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    snprintf(out, n, u ? "%.1f %s" : "%.0f %s", v, units[u]);
}

static void draw_progress(struct get *g, bool final)
{
    if (!g->tty || g->cfg->quiet)
        return;
    uint64_t now = dmf_now_ms();
    if (!final && now - g->last_draw_ms < 200)
        return;
    g->last_draw_ms = now;
    double secs = (double)(now - g->start_ms) / 1000.0;
    double rate = secs > 0 ? (double)g->completed / secs : 0;
    char done[32], total[32], rates[32], eta[32] = "--";
    human((double)g->completed, done, sizeof(done));
    if (g->out.content_length >= 0)
        human((double)g->out.content_length, total, sizeof(total));
    else
        snprintf(total, sizeof(total), "?");
    human(rate, rates, sizeof(rates));
    int pct = g->out.content_length > 0
                  ? (int)(100.0 * (double)g->completed / (double)g->out.content_length)
                  : (final ? 100 : 0);
    if (rate > 0 && g->out.content_length > 0 && !final)
        snprintf(eta, sizeof(eta), "%.0fs",
                 ((double)g->out.content_length - (double)g->completed) / rate);
    uint64_t recv = g->from_peers + g->from_origin;
    int peers = recv ? (int)(100.0 * (double)g->from_peers / (double)recv) : 0;
    char bar[31];
    int fill = pct * 30 / 100;
    for (int i = 0; i < 30; i++)
        bar[i] = i < fill ? '=' : ' ';
    bar[30] = '\0';
    fprintf(stderr, "\r[%s] %3d%% %s / %s  %s/s  ETA %s  from peers %d%%  ", bar, pct, done, total,
            rates, eta, peers);
    if (final)
        fputc('\n', stderr);
}

/* ---------------------------------------------------------------- via the daemon */

/* One DownloadTaskResponse: copy its new pieces to the output. Returns 0 or a negative
 * code with g->error filled. */
static int on_response(struct get *g, const uint8_t *data, size_t len)
{
    Damselfly__V1__DownloadTaskResponse *r =
        damselfly__v1__download_task_response__unpack(NULL, len, data);
    if (r == NULL) {
        snprintf(g->error, sizeof(g->error), "undecodable answer from the daemon");
        return -EPROTO;
    }
    int e = 0;
    struct output *o = &g->out;
    if (r->piece_length >= DMF_PIECE_LENGTH_MIN && r->piece_length <= DMF_PIECE_LENGTH_MAX)
        o->piece_length = r->piece_length;
    if (r->content_length >= 0)
        o->content_length = r->content_length;
    if (r->n_new_pieces && (o->src_fd < 0 || o->piece_length == 0)) {
        e = -EPROTO;
        snprintf(g->error, sizeof(g->error),
                 "the daemon sent pieces without a layout or a "
                 "descriptor of its data");
        goto out;
    }
    e = output_pieces(o, r->new_pieces, r->n_new_pieces);
    if (e != 0) {
        snprintf(g->error, sizeof(g->error), "cannot write the output: %s", dmf_strerror(e));
        g->exit = dmf_get_exit_for_write(e);
        goto out;
    }
    g->completed = r->completed_length;
    g->from_peers = r->bytes_from_peers;
    g->from_origin = r->bytes_from_origin;
    if (r->content_digest && r->content_digest[0])
        snprintf(g->content_digest, sizeof(g->content_digest), "%s", r->content_digest);
    draw_progress(g, false);
out:
    damselfly__v1__download_task_response__free_unpacked(r, NULL);
    return e;
}

/* The local API's frames (src/daemon/local_api.h) arrive inside HTTP chunks. */
struct reader {
    int fd;
    int timeout_ms; /* per read; -1 none */
    char buf[65536];
    size_t off, len;
    int fds[4]; /* descriptors received (SCM_RIGHTS), oldest first */
    int nfds;
};

/* Keeps a descriptor that came with the bytes just read (it belongs to an 'F' frame). */
static void rd_keep_fd(struct reader *r, int fd)
{
    if (r->nfds == (int)DMF_ARRAY_SIZE(r->fds)) {
        close(fd);
        return;
    }
    r->fds[r->nfds++] = fd;
}

/* The oldest descriptor received, or -1. */
static int rd_take_fd(struct reader *r)
{
    if (r->nfds == 0)
        return -1;
    int fd = r->fds[0];
    memmove(r->fds, r->fds + 1, (size_t)(r->nfds - 1) * sizeof(int));
    r->nfds--;
    return fd;
}

static int rd_fill(struct reader *r)
{
    if (r->off > 0 && r->off == r->len)
        r->off = r->len = 0;
    if (r->len == sizeof(r->buf)) {
        memmove(r->buf, r->buf + r->off, r->len - r->off);
        r->len -= r->off;
        r->off = 0;
    }
    struct pollfd p = {.fd = r->fd, .events = POLLIN};
    int pr = poll(&p, 1, r->timeout_ms);
    if (pr == 0)
        return -ETIMEDOUT;
    struct iovec iov = {r->buf + r->len, sizeof(r->buf) - r->len};
    union {
        struct cmsghdr h;
        char space[CMSG_SPACE(sizeof(int) * 4)];
    } ctl;
    struct msghdr msg = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = &ctl, .msg_controllen = sizeof(ctl)};
    ssize_t n = recvmsg(r->fd, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0)
        return errno == EINTR ? 0 : -errno;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            rd_keep_fd(r, fd);
        }
    }
    if (msg.msg_flags & MSG_CTRUNC)
        return -EPROTO;
    if (n == 0)
        return -ECONNRESET;
    r->len += (size_t)n;
    return 0;
}

/* Reads exactly n bytes into out. */
static int rd_exact(struct reader *r, void *out, size_t n)
{
    size_t got = 0;
    while (got < n) {
        if (r->off == r->len) {
            int e = rd_fill(r);
            if (e)
                return e;
            continue;
        }
        size_t take = DMF_MIN(n - got, r->len - r->off);
        memcpy((char *)out + got, r->buf + r->off, take);
        r->off += take;
        got += take;
    }
    return 0;
}

/* Reads one line (CRLF-terminated, at most max-1 bytes) into out. */
static int rd_line(struct reader *r, char *out, size_t max)
{
    size_t n = 0;
    for (;;) {
        char c;
        int e = rd_exact(r, &c, 1);
        if (e)
            return e;
        if (c == '\n')
            break;
        if (n + 1 >= max)
            return -EPROTO;
        out[n++] = c;
    }
    if (n && out[n - 1] == '\r')
        n--;
    out[n] = '\0';
    return 0;
}

/* The chunked body as a byte stream: fills out with exactly n body bytes. */
struct chunks {
    struct reader *r;
    uint64_t left; /* in the current chunk */
    bool eof;
};

static int body_read(struct chunks *c, uint8_t *out, size_t n)
{
    while (n > 0) {
        if (c->left == 0) {
            char line[64];
            int e;
            if (c->eof)
                return -ECONNRESET;
            if ((e = rd_line(c->r, line, sizeof(line))) != 0)
                return e;
            if (line[0] == '\0' && (e = rd_line(c->r, line, sizeof(line))) != 0)
                return e; /* the CRLF closing the previous chunk */
            char *end;
            unsigned long long v = strtoull(line, &end, 16);
            if (end == line || v > (1ull << 32))
                return -EPROTO;
            if (v == 0) {
                c->eof = true;
                return -ECONNRESET;
            }
            c->left = v;
        }
        size_t take = (size_t)DMF_MIN((uint64_t)n, c->left);
        int e = rd_exact(c->r, out, take);
        if (e)
            return e;
        c->left -= take;
        out += take;
        n -= take;
    }
    return 0;
}

static int write_all(int fd, const void *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -errno;
        p = (const char *)p + w;
        n -= (size_t)w;
    }
    return 0;
}

static int build_request(struct get *g, uint8_t **out, size_t *outlen)
{
    struct get_config *cfg = g->cfg;
    Damselfly__V1__DownloadTaskRequest req = DAMSELFLY__V1__DOWNLOAD_TASK_REQUEST__INIT;
    req.url = (char *)g->url;
    struct dmf_pb_headers hdrs;
    dmf_pb_headers_init(&hdrs, &cfg->headers);
    req.headers = hdrs.ptrs;
    req.n_headers = hdrs.n;
    req.digest = cfg->digest ? cfg->digest : "";
    req.tag = cfg->tag ? cfg->tag : "";
    req.application = cfg->application ? cfg->application : "";
    req.filter_query = cfg->filter_query.v;
    req.n_filter_query = cfg->filter_query.n;
    req.disable_back_to_source = cfg->no_back_to_source;
    req.require_fresh = cfg->require_fresh;
    req.rate_limit = cfg->limit;
    enum dmf_priority prio = DMF_PRIORITY_NORMAL;
    dmf_priority_parse(cfg->priority, &prio); /* checked with the other options */
    req.priority = (Damselfly__V1__Priority)prio;
    req.timeout_ms = (uint32_t)DMF_MIN(cfg->timeout, UINT32_MAX);
    size_t blen = damselfly__v1__download_task_request__get_packed_size(&req);
    char head[256];
    int hl = snprintf(head, sizeof(head),
                      "POST /damselfly.v1.Daemon/DownloadTask HTTP/1.1\r\nHost: localhost\r\n"
                      "Content-Type: application/x-protobuf\r\nContent-Length: %zu\r\n"
                      "Connection: close\r\n\r\n",
                      blen);
    *out = dmf_xmalloc((size_t)hl + blen);
    memcpy(*out, head, (size_t)hl);
    damselfly__v1__download_task_request__pack(&req, *out + hl);
    *outlen = (size_t)hl + blen;
    dmf_pb_headers_free(&hdrs);
    return 0;
}

/* Returns 0 on success, -ECONNREFUSED when no daemon answers on the socket, else a
 * negative code with g->error filled. */
static int via_daemon(struct get *g)
{
    int fd = -1, e = dmf_local_connect(g->cfg->socket, &fd);
    if (e == -EACCES || e == -EPERM) {
        snprintf(g->error, sizeof(g->error),
                 "permission denied on the daemon's socket %s: ask to be added to its group "
                 "(daemon --socket-group), or use another --socket",
                 g->cfg->socket);
        g->exit = DMF_GET_EXIT_DENIED;
        return -EACCES;
    }
    if (e != 0) {
        snprintf(g->error, sizeof(g->error), "%s", dmf_strerror(e));
        return -ECONNREFUSED;
    }
    uint8_t *req;
    size_t reqlen;
    build_request(g, &req, &reqlen);
    e = write_all(fd, req, reqlen);
    free(req);
    struct reader *r = dmf_xcalloc(1, sizeof(*r));
    r->fd = fd;
    /* The daemon enforces --timeout; this only guards against a daemon that hangs. */
    r->timeout_ms = g->cfg->timeout ? (int)DMF_MIN(g->cfg->timeout + 10000, INT32_MAX) : -1;
    char line[1024];
    if (e == 0)
        e = rd_line(r, line, sizeof(line));
    if (e != 0) {
        /* Nothing came back: as good as no daemon. */
        snprintf(g->error, sizeof(g->error), "the daemon closed the connection (%s)",
                 dmf_strerror(e));
        e = -ECONNREFUSED;
        goto out;
    }
    int status = 0;
    if (sscanf(line, "HTTP/1.%*d %d", &status) != 1 || status != 200) {
        snprintf(g->error, sizeof(g->error), "the daemon answered '%.100s'", line);
        e = -EPROTO;
        goto out;
    }
    bool chunked = false;
    for (int i = 0; i < 64; i++) {
        if ((e = rd_line(r, line, sizeof(line))) != 0)
            break;
        if (line[0] == '\0')
            break;
        if (strncasecmp(line, "transfer-encoding:", 18) == 0 && strcasestr(line, "chunked"))
            chunked = true;
    }
    if (e == 0 && !chunked)
        e = -EPROTO;
    struct chunks c = {.r = r};
    uint8_t *frame = NULL;
    while (e == 0) {
        uint8_t hdr[5];
        if ((e = body_read(&c, hdr, sizeof(hdr))) != 0)
            break;
        uint32_t len =
            (uint32_t)hdr[1] << 24 | (uint32_t)hdr[2] << 16 | (uint32_t)hdr[3] << 8 | hdr[4];
        if (len > (16u << 20)) {
            e = -EPROTO;
            break;
        }
        frame = dmf_xrealloc(frame, len ? len : 1);
        if ((e = body_read(&c, frame, len)) != 0)
            break;
        if (hdr[0] == 'M') {
            e = on_response(g, frame, len);
            if (e != 0)
                goto out_frame;
        } else if (hdr[0] == 'F') {
            int dfd = rd_take_fd(r);
            if (dfd < 0) {
                snprintf(g->error, sizeof(g->error),
                         "the daemon announced a descriptor of its data, but none came");
                e = -EPROTO;
                goto out_frame;
            }
            output_source(&g->out, dfd);
        } else if (hdr[0] == 'S' && len >= 4) {
            uint32_t st = (uint32_t)frame[0] << 24 | (uint32_t)frame[1] << 16 |
                          (uint32_t)frame[2] << 8 | frame[3];
            if (st != 0) {
                snprintf(g->error, sizeof(g->error), "%.*s", (int)(len - 4), frame + 4);
                if (g->error[0] == '\0')
                    snprintf(g->error, sizeof(g->error), "failed (status %u)", st);
                g->exit = dmf_get_exit_for_daemon((int)st, g->error);
                e = st == GRPC_STATUS_FAILED_PRECONDITION_CODE ? -EXDEV : -EIO;
            }
            goto out_frame;
        } else {
            e = -EPROTO;
        }
    }
    if (e != 0)
        snprintf(g->error, sizeof(g->error), "lost the daemon mid-download (%s)", dmf_strerror(e));
out_frame:
    free(frame);
out:
    for (int i = 0; i < r->nfds; i++)
        close(r->fds[i]);
    free(r);
    close(fd);
    return e;
}

/* ---------------------------------------------------------------- directly */

struct direct {
    struct output *o;
    dmf_sha256_ctx_t *sha;
    uint64_t bytes;
    int err;
};

static size_t direct_write(char *data, size_t size, size_t n, void *arg)
{
    struct direct *dw = arg;
    size_t len = size * n, put = 0;
    while (put < len) {
        ssize_t w = write(dw->o->fd, data + put, len - put);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            dw->err = -errno;
            return 0;
        }
        put += (size_t)w;
    }
    dmf_sha256_update(dw->sha, data, len);
    dw->bytes += len;
    return len;
}

static int direct_download(struct get *g)
{
    struct get_config *cfg = g->cfg;
    if (dmf_curl_load(g->error, sizeof(g->error)) != 0)
        return -ENOENT;
    struct direct dw = {.o = &g->out, .sha = dmf_sha256_new()};
    CURL *e = curl_easy_init();
    struct curl_slist *hl = NULL;
    char curlerr[CURL_ERROR_SIZE] = "";
    for (size_t i = 0; i < cfg->headers.n; i++)
        hl = curl_slist_append(hl, cfg->headers.v[i]);
    curl_easy_setopt(e, CURLOPT_URL, g->url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(e, CURLOPT_FAILONERROR, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, direct_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &dw);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, curlerr);
    if (cfg->limit) /* one transfer, no daemon: libcurl's own cap is the task's limit */
        curl_easy_setopt(e, CURLOPT_MAX_RECV_SPEED_LARGE, (curl_off_t)cfg->limit);
    if (cfg->timeout)
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)cfg->timeout);
    CURLcode res = curl_easy_perform(e);
    curl_slist_free_all(hl);
    uint8_t got[DMF_SHA256_LEN];
    dmf_sha256_final(dw.sha, got);
    dmf_sha256_free(dw.sha);
    if (res != CURLE_OK) {
        long code = 0;
        if (res == CURLE_HTTP_RETURNED_ERROR)
            curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
        if (code)
            snprintf(g->error, sizeof(g->error), "cannot fetch %s: the origin answered HTTP %ld",
                     g->url, code);
        else
            snprintf(g->error, sizeof(g->error), "cannot fetch %s: %s", g->url,
                     dw.err       ? dmf_strerror(dw.err)
                     : curlerr[0] ? curlerr
                                  : curl_easy_strerror(res));
        g->exit = res == CURLE_HTTP_RETURNED_ERROR  ? DMF_GET_EXIT_HTTP
                  : res == CURLE_OPERATION_TIMEDOUT ? DMF_GET_EXIT_TIMEOUT
                  : dw.err                          ? dmf_get_exit_for_write(dw.err)
                  : res == CURLE_WRITE_ERROR        ? DMF_GET_EXIT_OUTPUT
                                                    : DMF_GET_EXIT_NETWORK;
        curl_easy_cleanup(e);
        return -EIO;
    }
    curl_easy_cleanup(e);
    g->out.content_length = (int64_t)dw.bytes;
    g->completed = g->from_origin = dw.bytes;
    dmf_digest_format(got, g->content_digest);
    if (cfg->digest && strcasecmp(cfg->digest, g->content_digest) != 0) {
        snprintf(g->error, sizeof(g->error), "content digest mismatch: expected %s, got %s",
                 cfg->digest, g->content_digest);
        g->exit = DMF_GET_EXIT_INTEGRITY;
        return -EBADMSG;
    }
    return 0;
}

/* ---------------------------------------------------------------- command */

static int check_args(struct get_config *cfg, struct dmf_strlist *pos, char *err, size_t errlen)
{
    if (pos->n != 1) {
        snprintf(err, errlen, pos->n ? "exactly one URL, please" : "a URL is required");
        return -EINVAL;
    }
    if (cfg->output == NULL) {
        snprintf(err, errlen, "-O FILE is required ('-O -' writes to stdout)");
        return -EINVAL;
    }
    const char *u = pos->v[0];
    if (strncasecmp(u, "http://", 7) != 0 && strncasecmp(u, "https://", 8) != 0) {
        snprintf(err, errlen, "only http:// and https:// URLs are supported");
        return -EINVAL;
    }
    for (size_t i = 0; i < cfg->headers.n; i++) {
        const char *h = cfg->headers.v[i], *colon = strchr(h, ':');
        if (colon == NULL || colon == h || strpbrk(h, "\r\n")) {
            /* Not quoted: a malformed header may still be a credential. */
            snprintf(err, errlen, "-H number %zu is not 'Name: value'", i + 1);
            return -EINVAL;
        }
    }
    enum dmf_priority prio;
    if (dmf_priority_parse(cfg->priority, &prio) != 0) {
        snprintf(err, errlen, "--priority: '%.40s' is not background, normal or foreground",
                 cfg->priority);
        return -EINVAL;
    }
    char aerr[160];
    if (cfg->application && (cfg->application[0] == '\0' ||
                             dmf_application_check(cfg->application, aerr, sizeof(aerr)) != 0)) {
        snprintf(err, errlen, "--application: %s",
                 cfg->application[0] ? aerr : "an application name is required");
        return -EINVAL;
    }
    if (cfg->limit != 0 && cfg->limit < 64 * 1024) {
        snprintf(err, errlen, "--limit: at least 64k (65536 bytes/s)");
        return -EINVAL;
    }
    if (cfg->digest) {
        uint8_t d[DMF_SHA256_LEN];
        char derr[128];
        if (dmf_digest_parse(cfg->digest, d, derr, sizeof(derr)) != 0) {
            snprintf(err, errlen, "--digest: %s", derr);
            return -EINVAL;
        }
    }
    return 0;
}

static int run(int argc, char **argv)
{
    struct get_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    struct dmf_strlist pos = {0};
    bool help = false;
    char err[512];
    int rc = DMF_GET_EXIT_FAILED, e;

    if (dmf_config_parse(options, DMF_ARRAY_SIZE(options), &cfg, argc, argv, &pos, &help, err,
                         sizeof(err)) != 0) {
        fprintf(stderr, "damselfly get: %s\n", err);
        return DMF_GET_EXIT_USAGE;
    }
    if (help) {
        dmf_config_usage(stdout, usage, "Download URL through the local daemon (P2P).", options,
                         DMF_ARRAY_SIZE(options));
        dmf_get_exit_print(stdout);
        rc = 0;
        goto out;
    }
    struct dmf_strlist headers = {0};
    if (dmf_headers_expand(&cfg.headers, &cfg.header_files, &headers, err, sizeof(err)) != 0) {
        fprintf(stderr, "damselfly get: %s\n", err);
        rc = DMF_GET_EXIT_USAGE;
        goto out;
    }
    dmf_strlist_free(&cfg.headers);
    cfg.headers = headers;
    if (check_args(&cfg, &pos, err, sizeof(err)) != 0) {
        fprintf(stderr, "damselfly get: %s (see --help)\n", err);
        rc = DMF_GET_EXIT_USAGE;
        goto out;
    }
    dmf_log_threshold = DMF_LOG_ERROR + 1; /* the CLI speaks for itself */

    struct get g;
    memset(&g, 0, sizeof(g));
    g.cfg = &cfg;
    g.url = pos.v[0];
    g.start_ms = dmf_now_ms();
    g.tty = isatty(STDERR_FILENO);
    if ((e = output_open(&g.out, cfg.output, g.url, cfg.overwrite, err, sizeof(err))) != 0) {
        fprintf(stderr, "damselfly get: %s\n", err);
        output_abort(&g.out);
        rc = dmf_get_exit_for_write(e);
        goto out;
    }

    struct stat st;
    bool direct = false;
    const char *bypass = cfg.digest ? NULL : dmf_task_bypass_header(&cfg.headers);
    if (bypass != NULL) {
        /* Content chosen per request (docs/architecture.md, task identity). */
        e = -EXDEV;
        snprintf(g.error, sizeof(g.error),
                 "the %s header selects content per request: not shared through P2P", bypass);
    } else if (stat(cfg.socket, &st) != 0 || !S_ISSOCK(st.st_mode)) {
        e = -ECONNREFUSED;
        snprintf(g.error, sizeof(g.error), "%s", "no socket there");
    } else {
        e = via_daemon(&g);
    }
    if (e == -EXDEV && cfg.no_back_to_source) {
        fprintf(stderr, "damselfly get: %s, and --no-back-to-source forbids going to the origin\n",
                g.error);
        output_abort(&g.out);
        rc = DMF_GET_EXIT_FAILED;
        goto out;
    }
    if (e == -EXDEV && !cfg.quiet)
        fprintf(stderr, "damselfly get: %s; downloading directly from the origin\n", g.error);
    if (e == -ECONNREFUSED) {
        if (cfg.no_back_to_source) {
            fprintf(stderr,
                    "damselfly get: no daemon at %s (%s), and --no-back-to-source forbids "
                    "going to the origin\n",
                    cfg.socket, g.error);
            output_abort(&g.out);
            rc = DMF_GET_EXIT_NO_DAEMON;
            goto out;
        }
        if (!cfg.quiet)
            fprintf(stderr,
                    "damselfly get: no daemon at %s (%s); downloading directly from "
                    "the origin\n",
                    cfg.socket, g.error);
    }
    if (e == -ECONNREFUSED || e == -EXDEV) {
        if (g.out.path == NULL && g.out.bytes > 0) {
            fprintf(stderr, "damselfly get: output already started; cannot restart\n");
            output_abort(&g.out);
            goto out;
        }
        direct = true;
        g.error[0] = '\0';
        g.exit = 0;
        output_forget_daemon(&g.out);
        e = direct_download(&g);
    }
    if (e != 0) {
        if (g.tty && !cfg.quiet)
            fputc('\n', stderr);
        fprintf(stderr, "damselfly get: %s\n", g.error);
        output_abort(&g.out);
        rc = g.exit ? g.exit : DMF_GET_EXIT_FAILED;
        goto out;
    }
    if (!direct && g.out.content_length < 0) {
        fprintf(stderr, "damselfly get: the daemon finished without a content length\n");
        output_abort(&g.out);
        goto out;
    }
    if ((e = output_commit(&g.out, err, sizeof(err))) != 0) {
        fprintf(stderr, "damselfly get: %s\n", err);
        rc = dmf_get_exit_for_write(e);
        goto out;
    }
    draw_progress(&g, true);
    if (!cfg.quiet) {
        double secs = (double)(dmf_now_ms() - g.start_ms) / 1000.0;
        char size[32];
        human((double)g.out.content_length, size, sizeof(size));
        fprintf(stderr, "damselfly get: %s: %s in %.2f s%s%s%s\n",
                g.out.path ? g.out.path : "stdout", size, secs,
                direct ? " (directly from the origin)" : "", g.content_digest[0] ? ", " : "",
                g.content_digest);
    }
    dmf_output_free(&g.out.file);
    rc = DMF_GET_EXIT_OK;
out:
    dmf_strlist_free(&pos);
    dmf_config_free(options, DMF_ARRAY_SIZE(options), &cfg);
    return rc;
}

const struct dmf_cmd dmf_cmd_get = {
    .name = "get",
    .summary = "download a URL through the local daemon",
    .run = run,
    .options = options,
    .noptions = DMF_ARRAY_SIZE(options),
};
