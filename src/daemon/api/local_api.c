/* The local API on the daemon's unix socket; see local_api.h and docs/internals/LOCAL-API.md. */
#include "daemon/api/local_api.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/evx.h"
#include "common/fdlimit.h"
#include "common/log.h"
#include "common/util.h"
#include "daemon/daemon.h"
#include "daemon/api/cache_routes.h"
#include "daemon/api/local_service.h"
#include "daemon/api/socket_perms.h"

#define REQUEST_MAX     (1u << 20)
#define FD_SEND_WAIT_MS 2000

struct dmf_local_api {
    struct dmf_daemon *d;
    struct evhttp *http;
    struct dmf_listener_guard *guard; /* accept errors pause, not spin (fdlimit.h) */
};

/* One DownloadTask over HTTP: the reply is chunked, one frame per chunk. */
struct http_download {
    struct evhttp_request *req;
    struct evhttp_connection *conn;
    struct dmf_download *dl;
    bool finished;
};

static void send_frame(struct evhttp_request *req, char type, const void *a, size_t alen,
                       const void *b, size_t blen)
{
    struct evbuffer *buf = dmf_xevbuffer_new();
    uint32_t len = htonl((uint32_t)(alen + blen));
    evbuffer_add(buf, &type, 1);
    evbuffer_add(buf, &len, 4);
    if (alen)
        evbuffer_add(buf, a, alen);
    if (blen)
        evbuffer_add(buf, b, blen);
    evhttp_send_reply_chunk(req, buf);
    evbuffer_free(buf);
}

static void http_send(void *ctx, const Damselfly__V1__DownloadTaskResponse *r)
{
    struct http_download *hd = ctx;
    size_t len = damselfly__v1__download_task_response__get_packed_size(r);
    uint8_t *p = dmf_xmalloc(len ? len : 1);
    damselfly__v1__download_task_response__pack(r, p);
    send_frame(hd->req, 'M', p, len, NULL, 0);
    free(p);
}

static void http_finish(void *ctx, int status, const char *details)
{
    struct http_download *hd = ctx;
    uint32_t st = htonl((uint32_t)status);
    const char *msg = details ? details : "";
    send_frame(hd->req, 'S', &st, 4, msg, strlen(msg));
    /* The connection must not call us back after this. */
    evhttp_connection_set_closecb(hd->conn, NULL, NULL);
    evhttp_send_reply_end(hd->req);
    if (hd->dl)
        dmf_download_abandon(hd->dl);
    hd->finished = true;
    if (hd->dl) /* started: nobody else holds hd */
        free(hd);
}

/* Waits (briefly: a local client reading its answer) until sock takes more bytes. */
static int wait_writable(int sock)
{
    struct pollfd p = {.fd = sock, .events = POLLOUT};
    int r = poll(&p, 1, FD_SEND_WAIT_MS);
    return r > 0 ? 0 : r == 0 ? -ETIMEDOUT : -errno;
}

/* An 'F' frame carrying fd (SCM_RIGHTS). The descriptor travels with the frame's own
 * bytes, so what libevent buffered for the connection is written out first; the frame is
 * then one HTTP chunk written straight to the socket, and the client's recvmsg gets the
 * descriptor with the bytes of that frame, never before the answers sent ahead of it. */
static int http_send_fd(void *ctx, int fd)
{
    struct http_download *hd = ctx;
    struct bufferevent *bev = evhttp_connection_get_bufferevent(hd->conn);
    int sock = bev ? bufferevent_getfd(bev) : -1;
    if (sock < 0)
        return -ENOTCONN;
    struct evbuffer *out = bufferevent_get_output(bev);
    while (evbuffer_get_length(out) > 0) {
        int w = evbuffer_write(out, sock);
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int e = wait_writable(sock);
            if (e != 0)
                return e;
        } else if (w < 0) {
            return errno == EINTR ? 0 : -errno;
        }
    }
    static const char chunk[] = "5\r\nF\0\0\0\0\r\n";
    size_t len = sizeof(chunk) - 1, off = 0;
    union {
        struct cmsghdr h;
        char space[CMSG_SPACE(sizeof(int))];
    } ctl;
    memset(&ctl, 0, sizeof(ctl));
    while (off < len) {
        struct iovec iov = {(char *)chunk + off, len - off};
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
        if (off == 0) {
            msg.msg_control = &ctl;
            msg.msg_controllen = sizeof(ctl);
            struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(sizeof(int));
            memcpy(CMSG_DATA(c), &fd, sizeof(int));
        }
        ssize_t w = sendmsg(sock, &msg, MSG_NOSIGNAL);
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int e = wait_writable(sock);
            if (e != 0)
                return e;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w < 0 ? -errno : -EPIPE;
        off += (size_t)w;
    }
    return 0;
}

static const struct dmf_download_transport http_transport = {http_send, http_finish, http_send_fd};

static void on_client_gone(struct evhttp_connection *conn, void *arg)
{
    struct http_download *hd = arg;
    dmf_download_abandon(hd->dl);
    /* A connection that failed under an unfinished reply (the client went away) leaves
     * its request to us, detached: ending the reply frees it. At shutdown the request is
     * still attached and goes with its connection. */
    if (evhttp_request_get_connection(hd->req) == NULL)
        evhttp_send_reply_end(hd->req);
    free(hd);
}

static void on_download(struct evhttp_request *req, void *arg)
{
    struct dmf_local_api *api = arg;
    if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
        evhttp_send_error(req, 405, "POST a DownloadTaskRequest");
        return;
    }
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    uint8_t *body = evbuffer_pullup(in, (ev_ssize_t)len);
    Damselfly__V1__DownloadTaskRequest *dreq =
        damselfly__v1__download_task_request__unpack(NULL, len, len ? body : (uint8_t *)"");
    if (dreq == NULL) {
        evhttp_send_error(req, 400, "undecodable DownloadTaskRequest");
        return;
    }
    struct http_download *hd = dmf_xcalloc(1, sizeof(*hd));
    hd->req = req;
    hd->conn = evhttp_request_get_connection(req);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "application/x-damselfly-frames");
    evhttp_send_reply_start(req, 200, "OK");
    evhttp_connection_set_closecb(hd->conn, on_client_gone, hd);
    struct dmf_download *dl = dmf_download_start(api->d, dreq, &http_transport, hd, NULL);
    damselfly__v1__download_task_request__free_unpacked(dreq, NULL);
    if (hd->finished) {
        /* Answered at once (cache hit or bad request): finish could not free dl yet. */
        dmf_download_abandon(dl);
        free(hd);
        return;
    }
    hd->dl = dl;
}

static void on_other(struct evhttp_request *req, void *arg)
{
    evhttp_send_error(req, 404, "unknown path (see docs/internals/LOCAL-API.md)");
}

struct dmf_local_api *dmf_local_api_new(struct dmf_daemon *d, const char *path,
                                        const struct dmf_socket_perms *perms, char *err,
                                        size_t errlen)
{
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sa.sun_path)) {
        snprintf(err, errlen, "socket path too long: %s", path);
        return NULL;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);
    /* Nobody may connect before the socket has its group and mode. */
    mode_t old = umask(0177);
    struct evconnlistener *l =
        evconnlistener_new_bind(d->base, NULL, NULL, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC,
                                128, (struct sockaddr *)&sa, sizeof(sa));
    int bind_errno = errno;
    umask(old);
    if (l == NULL) {
        snprintf(err, errlen, "cannot listen on %s: %s", path, strerror(bind_errno));
        return NULL;
    }
    if (dmf_socket_perms_apply(path, perms, err, errlen) != 0) {
        evconnlistener_free(l);
        unlink(path);
        return NULL;
    }
    struct dmf_local_api *api = dmf_xcalloc(1, sizeof(*api));
    api->d = d;
    api->http = evhttp_new(d->base);
    evhttp_set_max_headers_size(api->http, 16384);
    evhttp_set_max_body_size(api->http, REQUEST_MAX);
    evhttp_set_allowed_methods(api->http, EVHTTP_REQ_POST | EVHTTP_REQ_GET);
    evhttp_set_cb(api->http, "/damselfly.v1.Daemon/DownloadTask", on_download, api);
    dmf_cache_routes_add(api->http, d);
    evhttp_set_gencb(api->http, on_other, api);
    if (evhttp_bind_listener(api->http, l) == NULL) {
        snprintf(err, errlen, "cannot serve HTTP on %s", path);
        evconnlistener_free(l);
        evhttp_free(api->http);
        free(api);
        return NULL;
    }
    api->guard = dmf_listener_guard_new(l, "local API");
    return api;
}

void dmf_local_api_free(struct dmf_local_api *api)
{
    if (api == NULL)
        return;
    dmf_listener_guard_free(api->guard);
    evhttp_free(api->http); /* closes connections: their close callbacks abandon downloads */
    free(api);
}
