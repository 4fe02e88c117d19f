/* libcurl multi on libevent: curl tells us which sockets to watch (socket callback) and
 * when to call it back (timer callback); we turn those into libevent events and hand
 * readiness back with curl_multi_socket_action. */
#include "common/evx.h"
#include "common/http_client.h"

#include <errno.h>
#include <event2/event.h>
#include <inttypes.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/curl_dl.h"
#include "common/log.h"
#include "common/tls.h"
#include "common/util.h"

struct dmf_http {
    struct event_base *base;
    CURLM *multi;
    struct event *timer;
    struct dmf_http_req *reqs; /* every request not yet done */
    struct event *reap;        /* runs check_done outside curl callbacks */
    struct event *resume;      /* unpauses requests outside our callers' callbacks */
    STACK_OF(X509) * extra_ca; /* trusted for HTTPS besides the system's, or NULL */
    char *proxy;               /* every request goes through it; NULL: none, whatever the
                                * environment (http_proxy, ...) says */
    dmf_throttle_t *throttle;  /* bandwidth limits, or NULL */
    /* Daemon-to-daemon mutual TLS (dmf_http_set_peer_tls), or all NULL. */
    char *peer_cert, *peer_key, *peer_ca_path;
    STACK_OF(X509) * peer_ca; /* the only CA trusted by peer requests */
};

enum {
    HDR_CONTENT_LENGTH,
    HDR_CONTENT_RANGE,
    HDR_ACCEPT_RANGES,
    HDR_CONTENT_TYPE,
    HDR_ETAG,
    HDR_LAST_MODIFIED,
    HDR_VARY,
    HDR_COUNT
};
static const char *const kept_headers[HDR_COUNT] = {
    "content-length", "content-range", "accept-ranges", "content-type",
    "etag",           "last-modified", "vary"};

struct dmf_http_req {
    dmf_http_t *h;
    CURL *easy;
    struct curl_slist *headers;
    const struct dmf_http_req_ops *ops;
    void *arg;
    char *hdr[HDR_COUNT];
    bool headers_seen;
    int abort_err; /* set when a callback aborted */
    bool failed_early;
    bool cancelled; /* no more callbacks; freed on the next reap */
    bool keep_all;
    bool paused, want_resume;
    struct dmf_strlist all; /* every header line of the final response (keep_all) */
    size_t all_len;
    int all_truncated;
    char reason[CURL_ERROR_SIZE];
    const char *(*addr_check)(void *arg, const struct sockaddr *sa);
    void *addr_check_arg;
    const char *refused; /* addr_check's reason for the last refused address */
    bool throttled;      /* charged to the throttle's buckets (wait.charge, wait.flow) */
    struct dmf_throttle_wait wait;
    char *peer_host_id;      /* opts->peer_host_id (copied), or NULL */
    char peer_mismatch[200]; /* why the server's certificate was refused, or "" */
    struct dmf_http_req *prev, *next;
};

struct sock_ctx {
    struct event *ev;
    dmf_http_t *h;
};

static void check_done(dmf_http_t *h);

/* libcurl's socket opener, when the request checks addresses: refuses what the check
 * refuses (libcurl then tries the name's next address, or fails to connect). */
static curl_socket_t open_socket(void *arg, curlsocktype purpose, struct curl_sockaddr *a)
{
    dmf_http_req_t *r = arg;
    const char *why = r->addr_check(r->addr_check_arg, &a->addr);
    if (why != NULL) {
        r->refused = why;
        return CURL_SOCKET_BAD;
    }
    return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}
static void reap_failed_early(dmf_http_t *h);
static void req_free(dmf_http_req_t *r);

static void on_socket_event(evutil_socket_t fd, short what, void *arg)
{
    dmf_http_t *h = arg;
    int running;
    int flags = (what & EV_READ ? CURL_CSELECT_IN : 0) | (what & EV_WRITE ? CURL_CSELECT_OUT : 0);
    curl_multi_socket_action(h->multi, fd, flags, &running);
    check_done(h);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    dmf_http_t *h = arg;
    int running;
    curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(h);
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
    dmf_http_t *h = arg;
    for (dmf_http_req_t *r = h->reqs; r; r = r->next) {
        if (!r->want_resume || r->cancelled)
            continue;
        r->want_resume = false;
        r->paused = false;
        curl_easy_pause(r->easy, CURLPAUSE_CONT);
        break; /* the callbacks may have changed the list: go on next pass */
    }
    for (dmf_http_req_t *r = h->reqs; r; r = r->next)
        if (r->want_resume && !r->cancelled) {
            event_active(h->resume, 0, 0);
            break;
        }
    int running;
    curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(h);
}

static void on_reap(evutil_socket_t fd, short what, void *arg)
{
    dmf_http_t *h = arg;
    for (dmf_http_req_t *r = h->reqs, *next; r; r = next) {
        next = r->next;
        if (r->cancelled)
            req_free(r);
    }
    check_done(h);
    reap_failed_early(h);
}

static int socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    dmf_http_t *h = userp;
    struct sock_ctx *sc = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (sc) {
            event_free(sc->ev);
            free(sc);
            curl_multi_assign(h->multi, s, NULL);
        }
        return 0;
    }
    short kind =
        EV_PERSIST | (what & CURL_POLL_IN ? EV_READ : 0) | (what & CURL_POLL_OUT ? EV_WRITE : 0);
    if (sc == NULL) {
        sc = dmf_xcalloc(1, sizeof(*sc));
        sc->h = h;
        curl_multi_assign(h->multi, s, sc);
    } else {
        event_free(sc->ev);
    }
    sc->ev = dmf_xevent_new(h->base, s, kind, on_socket_event, h);
    event_add(sc->ev, NULL);
    return 0;
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    dmf_http_t *h = userp;
    if (timeout_ms < 0) {
        evtimer_del(h->timer);
        return 0;
    }
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    evtimer_add(h->timer, &tv);
    return 0;
}

int dmf_http_load(char *err, size_t errlen)
{
    return dmf_curl_load(err, errlen);
}

dmf_http_t *dmf_http_new(struct event_base *base)
{
    char err[256];
    if (dmf_curl_load(err, sizeof(err)) != 0) {
        fprintf(stderr, "damselfly: %s\n", err);
        abort();
    }
    dmf_http_t *h = dmf_xcalloc(1, sizeof(*h));
    h->base = base;
    h->multi = dmf_xcheck(curl_multi_init(), "a curl multi handle");
    h->timer = dmf_xevtimer_new(base, on_timer, h);
    h->reap = dmf_xevent_new(base, -1, 0, on_reap, h);
    h->resume = dmf_xevent_new(base, -1, 0, on_resume, h);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_MAX_HOST_CONNECTIONS, 16L);
    return h;
}

static void req_free(dmf_http_req_t *r)
{
    dmf_http_t *h = r->h;
    if (r->prev)
        r->prev->next = r->next;
    else
        h->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    if (r->throttled) {
        dmf_throttle_cancel(h->throttle, &r->wait);
        dmf_flow_unref(r->wait.flow);
    }
    curl_multi_remove_handle(h->multi, r->easy);
    curl_easy_cleanup(r->easy);
    curl_slist_free_all(r->headers);
    free(r->peer_host_id);
    dmf_strlist_free(&r->all);
    for (int i = 0; i < HDR_COUNT; i++)
        free(r->hdr[i]);
    free(r);
}

void dmf_http_free(dmf_http_t *h)
{
    if (h == NULL)
        return;
    while (h->reqs)
        req_free(h->reqs);
    curl_multi_cleanup(h->multi);
    event_free(h->timer);
    event_free(h->reap);
    event_free(h->resume);
    free(h->proxy);
    if (h->extra_ca)
        sk_X509_pop_free(h->extra_ca, X509_free);
    dmf_http_set_peer_tls(h, NULL, NULL, 0);
    free(h);
}

static int deliver_headers(dmf_http_req_t *r)
{
    if (r->headers_seen)
        return 0;
    r->headers_seen = true;
    long status = 0;
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
    if (r->ops->on_headers) {
        int e = r->ops->on_headers(r->arg, r, status);
        if (e < 0) {
            r->abort_err = e;
            return e;
        }
    }
    return 0;
}

static size_t write_cb(char *data, size_t size, size_t n, void *arg)
{
    dmf_http_req_t *r = arg;
    size_t len = size * n;
    if (r->cancelled || deliver_headers(r) < 0 || r->cancelled)
        return 0;
    if (r->throttled && len > 0 && dmf_throttle_take(r->h->throttle, &r->wait, len) != 0) {
        r->paused = true; /* on_throttle_wake resumes it */
        return CURL_WRITEFUNC_PAUSE;
    }
    if (r->ops->on_data) {
        int e = r->ops->on_data(r->arg, r, data, len);
        if (e == DMF_HTTP_PAUSE && !r->cancelled) {
            if (r->throttled)
                dmf_throttle_unused(&r->wait, len); /* offered again: charged once */
            r->paused = true;
            return CURL_WRITEFUNC_PAUSE;
        }
        if (e < 0 || r->cancelled) {
            r->abort_err = e < 0 ? e : -ECANCELED;
            return 0;
        }
    }
    return len;
}

static size_t header_cb(char *data, size_t size, size_t n, void *arg)
{
    dmf_http_req_t *r = arg;
    size_t len = size * n;
    if (len >= 5 && strncmp(data, "HTTP/", 5) == 0) {
        /* A new response (after a redirect or 100-continue): forget the previous one. */
        for (int i = 0; i < HDR_COUNT; i++) {
            free(r->hdr[i]);
            r->hdr[i] = NULL;
        }
        dmf_strlist_free(&r->all);
        r->all_len = 0;
        r->all_truncated = 0;
        return len;
    }
    const char *colon = memchr(data, ':', len);
    if (colon == NULL || colon == data)
        return len;
    if (r->keep_all) {
        size_t l = len;
        while (l > 0 && (data[l - 1] == '\r' || data[l - 1] == '\n'))
            l--;
        if (r->all.n >= DMF_HTTP_ALL_HEADERS_MAX || r->all_len + l > DMF_HTTP_ALL_HEADERS_MAX_LEN ||
            memchr(data, '\0', l) != NULL) {
            r->all_truncated = 1;
        } else {
            char *line = dmf_xstrndup(data, l);
            dmf_strlist_push(&r->all, line);
            free(line);
            r->all_len += l;
        }
    }
    if (len > 8192)
        return len;
    size_t nl = (size_t)(colon - data);
    for (int i = 0; i < HDR_COUNT; i++) {
        if (strlen(kept_headers[i]) != nl || strncasecmp(data, kept_headers[i], nl) != 0)
            continue;
        const char *v = colon + 1, *end = data + len;
        while (v < end && (*v == ' ' || *v == '\t'))
            v++;
        while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
            end--;
        free(r->hdr[i]);
        r->hdr[i] = dmf_xstrndup(v, (size_t)(end - v));
    }
    return len;
}

static void check_done(dmf_http_t *h)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(h->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        dmf_http_req_t *r = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        if (r->cancelled) {
            req_free(r);
            continue;
        }
        CURLcode res = m->data.result;
        int err = 0;
        const char *reason = "";
        char refused[160];
        if (r->abort_err < 0) {
            err = r->abort_err;
            reason = "aborted";
        } else if (res != CURLE_OK && r->peer_mismatch[0]) {
            err = -EACCES;
            reason = r->peer_mismatch;
        } else if (res != CURLE_OK && r->refused) {
            err = -EACCES;
            snprintf(refused, sizeof(refused), "refused: %s", r->refused);
            reason = refused;
        } else if (res != CURLE_OK) {
            err = res == CURLE_OPERATION_TIMEDOUT ? -ETIMEDOUT
                  : res == CURLE_COULDNT_CONNECT  ? -ECONNREFUSED
                                                  : -EIO;
            reason = r->reason[0] ? r->reason : curl_easy_strerror(res);
        } else if (deliver_headers(r) < 0) {
            err = r->abort_err;
            reason = "aborted";
        }
        if (r->ops->on_done)
            r->ops->on_done(r->arg, r, err, reason);
        req_free(r);
    }
}

/* Requests that could not even start (dmf_http_get made the reap event active). */
static void reap_failed_early(dmf_http_t *h)
{
    for (dmf_http_req_t *r = h->reqs, *next; r; r = next) {
        next = r->next;
        if (!r->failed_early || r->cancelled)
            continue;
        if (r->ops->on_done)
            r->ops->on_done(r->arg, r, -EINVAL, r->reason);
        req_free(r);
    }
}

static CURLcode add_extra_ca(CURL *curl, void *ssl_ctx, void *arg)
{
    dmf_http_t *h = arg;
    X509_STORE *st = SSL_CTX_get_cert_store(ssl_ctx);
    for (int i = 0; h->extra_ca && i < sk_X509_num(h->extra_ca); i++)
        X509_STORE_add_cert(st, sk_X509_value(h->extra_ca, i)); /* a duplicate is harmless */
    return CURLE_OK;
}

/* Peer requests trust the cluster CA alone: libcurl's store (the system's CAs, cached
 * between connections) is replaced, not added to. */
static CURLcode set_peer_store(CURL *curl, void *ssl_ctx, void *arg)
{
    dmf_http_t *h = arg;
    X509_STORE *st = X509_STORE_new();
    if (st == NULL)
        return CURLE_OUT_OF_MEMORY;
    for (int i = 0; h->peer_ca && i < sk_X509_num(h->peer_ca); i++)
        X509_STORE_add_cert(st, sk_X509_value(h->peer_ca, i));
    SSL_CTX_set_cert_store(ssl_ctx, st); /* frees the one it had */
    return CURLE_OK;
}

/* Before each request is sent on a connection (new or reused): does the server's verified
 * certificate name the host the scheduler named? */
static int check_peer(void *arg, char *primary_ip, char *local_ip, int primary_port, int local_port)
{
    dmf_http_req_t *r = arg;
    struct curl_tlssessioninfo *info = NULL;
    struct dmf_tls_identity id;
    char why[160];
    if (curl_easy_getinfo(r->easy, CURLINFO_TLS_SSL_PTR, &info) != CURLE_OK || info == NULL ||
        info->backend != CURLSSLBACKEND_OPENSSL || info->internals == NULL) {
        snprintf(r->peer_mismatch, sizeof(r->peer_mismatch),
                 "refused: no TLS session to check the parent's certificate on");
        return CURL_PREREQFUNC_ABORT;
    }
    if (dmf_tls_peer_identity(info->internals, &id, why, sizeof(why)) != 0) {
        snprintf(r->peer_mismatch, sizeof(r->peer_mismatch), "refused: parent's certificate: %s",
                 why);
        return CURL_PREREQFUNC_ABORT;
    }
    if (strcmp(id.host_id, r->peer_host_id) != 0) {
        snprintf(r->peer_mismatch, sizeof(r->peer_mismatch),
                 "refused: the certificate at %s:%d names host %.64s, not %.64s", primary_ip,
                 primary_port, id.host_id, r->peer_host_id);
        return CURL_PREREQFUNC_ABORT;
    }
    return CURL_PREREQFUNC_OK;
}

/* Reads every certificate of a PEM file: a stack (owned by the caller), or NULL. */
static STACK_OF(X509) * read_certs(const char *pem_path)
{
    FILE *f = fopen(pem_path, "r");
    if (f == NULL)
        return NULL;
    STACK_OF(X509) *sk = sk_X509_new_null();
    X509 *x;
    while ((x = PEM_read_X509(f, NULL, NULL, NULL)) != NULL)
        sk_X509_push(sk, x);
    ERR_clear_error(); /* the end of the file reads as an error */
    fclose(f);
    if (sk_X509_num(sk) == 0) {
        sk_X509_free(sk);
        return NULL;
    }
    return sk;
}

int dmf_http_set_peer_tls(dmf_http_t *h, const struct dmf_tls_files *f, char *err, size_t errlen)
{
    STACK_OF(X509) *ca = NULL;
    if (f != NULL) {
        if (dmf_tls_files_check(f, err, errlen) != 0)
            return -EINVAL;
        if (f->ca == NULL)
            f = NULL; /* all three unset: TLS off */
    }
    if (f != NULL && (ca = read_certs(f->ca)) == NULL) {
        snprintf(err, errlen, "cannot read a CA certificate from %s", f->ca);
        return -EINVAL;
    }
    free(h->peer_cert);
    free(h->peer_key);
    free(h->peer_ca_path);
    if (h->peer_ca)
        sk_X509_pop_free(h->peer_ca, X509_free);
    h->peer_cert = f ? dmf_xstrdup(f->cert) : NULL;
    h->peer_key = f ? dmf_xstrdup(f->key) : NULL;
    h->peer_ca_path = f ? dmf_xstrdup(f->ca) : NULL;
    h->peer_ca = ca;
    return 0;
}

void dmf_http_set_throttle(dmf_http_t *h, dmf_throttle_t *t)
{
    h->throttle = t;
}

static void on_throttle_wake(void *arg)
{
    dmf_http_resume(arg);
}

void dmf_http_set_proxy(dmf_http_t *h, const char *url)
{
    free(h->proxy);
    h->proxy = url && *url ? dmf_xstrdup(url) : NULL;
}

int dmf_http_set_extra_ca(dmf_http_t *h, const char *pem_path)
{
    if (h->extra_ca)
        sk_X509_pop_free(h->extra_ca, X509_free);
    h->extra_ca = NULL;
    if (pem_path == NULL)
        return 0;
    h->extra_ca = read_certs(pem_path);
    return h->extra_ca ? 0 : -EINVAL;
}

dmf_http_req_t *dmf_http_get(dmf_http_t *h, const char *url, const struct dmf_http_opts *opts,
                             const struct dmf_http_req_ops *ops, void *arg)
{
    dmf_http_req_t *r = dmf_xcalloc(1, sizeof(*r));
    r->h = h;
    r->ops = ops;
    r->arg = arg;
    r->easy = dmf_xcheck(curl_easy_init(), "a curl easy handle");
    r->next = h->reqs;
    if (h->reqs)
        h->reqs->prev = r;
    h->reqs = r;

    CURL *e = r->easy;
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->reason);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    /* "" disables libcurl's use of http_proxy, https_proxy and all_proxy. */
    curl_easy_setopt(e, CURLOPT_PROXY, h->proxy ? h->proxy : "");
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                     opts && opts->connect_timeout_ms ? opts->connect_timeout_ms : 10000L);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME,
                     opts && opts->low_speed_time_s ? opts->low_speed_time_s : 30L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 256L * 1024);
    if (opts && opts->follow_redirects) {
        curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
        curl_easy_setopt(e, CURLOPT_MAXREDIRS, 10L);
    }
    if (opts && opts->range)
        curl_easy_setopt(e, CURLOPT_RANGE, opts->range);
    const char *method = opts && opts->method ? opts->method : "GET";
    if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (opts && opts->body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)opts->body_len);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, opts->body);
        if (strcmp(method, "POST") != 0)
            curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    } else if (strcmp(method, "GET") != 0) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    }
    if (opts && opts->http11)
        curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    r->keep_all = opts && opts->keep_all_headers;
    if (opts && opts->peer_host_id && h->peer_ca) {
        r->peer_host_id = dmf_xstrdup(opts->peer_host_id);
        curl_easy_setopt(e, CURLOPT_SSLCERT, h->peer_cert);
        curl_easy_setopt(e, CURLOPT_SSLCERTTYPE, "PEM");
        curl_easy_setopt(e, CURLOPT_SSLKEY, h->peer_key);
        curl_easy_setopt(e, CURLOPT_SSLKEYTYPE, "PEM");
        curl_easy_setopt(e, CURLOPT_CAINFO, h->peer_ca_path);
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L); /* an IP: the CN is checked instead */
        curl_easy_setopt(e, CURLOPT_SSL_CTX_FUNCTION, set_peer_store);
        curl_easy_setopt(e, CURLOPT_SSL_CTX_DATA, h);
        curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, check_peer);
        curl_easy_setopt(e, CURLOPT_PREREQDATA, r);
    } else if (h->extra_ca) {
        curl_easy_setopt(e, CURLOPT_SSL_CTX_FUNCTION, add_extra_ca);
        curl_easy_setopt(e, CURLOPT_SSL_CTX_DATA, h);
    }
    if (opts && opts->addr_check) {
        r->addr_check = opts->addr_check;
        r->addr_check_arg = opts->addr_check_arg;
        curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, open_socket);
        curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, r);
    }
    if (h->throttle && opts && (opts->charge || opts->flow)) {
        r->throttled = true;
        r->wait.wake = on_throttle_wake;
        r->wait.arg = r;
        r->wait.charge = opts->charge;
        r->wait.flow = dmf_flow_ref(opts->flow);
    }
    if (opts && opts->headers) {
        for (size_t i = 0; i < opts->headers->n; i++)
            r->headers = curl_slist_append(r->headers, opts->headers->v[i]);
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
    }
    if (curl_multi_add_handle(h->multi, e) != CURLM_OK) {
        snprintf(r->reason, sizeof(r->reason), "cannot start a request for this URL");
        r->failed_early = true;
        event_active(h->reap, 0, 0);
    }
    return r;
}

void dmf_http_cancel(dmf_http_req_t *req)
{
    /* Safe inside any callback: curl forbids removing a handle from within its own
     * callbacks, so the handle goes on the next loop pass. */
    if (req == NULL || req->cancelled)
        return;
    req->cancelled = true;
    if (req->throttled)
        dmf_throttle_cancel(req->h->throttle, &req->wait); /* its turn goes to others */
    event_active(req->h->reap, 0, 0);
}

void dmf_http_resume(dmf_http_req_t *req)
{
    if (req == NULL || req->cancelled || !req->paused)
        return;
    req->want_resume = true;
    event_active(req->h->resume, 0, 0);
}

const struct dmf_strlist *dmf_http_all_headers(const dmf_http_req_t *req, int *truncated)
{
    if (truncated)
        *truncated = req->all_truncated;
    return &req->all;
}

const char *dmf_http_header(const dmf_http_req_t *req, const char *name)
{
    for (int i = 0; i < HDR_COUNT; i++)
        if (strcasecmp(name, kept_headers[i]) == 0)
            return req->hdr[i];
    return NULL;
}

int dmf_http_parse_content_range(const char *v, int64_t *start, int64_t *end, int64_t *total)
{
    if (v == NULL || strncasecmp(v, "bytes ", 6) != 0)
        return -EINVAL;
    v += 6;
    char *p;
    if (*v == '*') {
        *start = *end = -1;
        p = (char *)v + 1;
    } else {
        errno = 0;
        long long a = strtoll(v, &p, 10);
        if (errno || p == v || *p != '-' || a < 0)
            return -EINVAL;
        const char *q = p + 1;
        long long b = strtoll(q, &p, 10);
        if (errno || p == q || b < a)
            return -EINVAL;
        *start = a;
        *end = b;
    }
    if (*p != '/')
        return -EINVAL;
    p++;
    if (*p == '*' && p[1] == '\0') {
        *total = -1;
        return 0;
    }
    const char *q = p;
    errno = 0;
    long long t = strtoll(q, &p, 10);
    if (errno || p == q || *p != '\0' || t < 0 || (*end >= 0 && t <= *end))
        return -EINVAL;
    *total = t;
    return 0;
}
