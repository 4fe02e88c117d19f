/* The Daemon gRPC service: DownloadTask (server streaming) and StatTask, served on the
 * unix socket for local clients and on the TCP rpc port for the scheduler. */
#include "daemon/api/local_service.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/evx.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/application.h"
#include "common/origin_policy.h"
#include "daemon/manager_link.h"
#include "common/taskid.h"
#include "common/url_secrets.h"
#include "common/util.h"
#include "common/tls_identity.h"
#include "daemon/api/rpc_acl.h"
#include "daemon/peer/cache_gc.h"
#include "daemon/peer/engine.h"
#include "daemon/peer/task.h"
#include "damselfly/v1/daemon.pb-c.h"

#define URL_MAX        8192
#define HEADERS_MAX    64
#define HEADER_LEN_MAX 8192
#define FILTERS_MAX    64

struct dmf_download {
    struct dmf_daemon *d;
    const struct dmf_download_transport *tr;
    void *ctx; /* the transport's */
    struct dmf_task *t;
    struct dmf_task_sub sub;
    struct event *timeout;
    uint64_t timeout_ms;
    uint32_t sent_gen; /* the data file whose descriptor the client has (task_info.data_gen) */
    bool from_cache;   /* every piece was held: checked, then handed out from the cache */
    bool done;
    bool require_fresh;             /* fail rather than serve a cache not revalidated */
    struct dmf_revalidation *reval; /* the conditional request before serving, if any */
    uint32_t req_timeout_ms;        /* the request's timeout, armed once it runs */
};

void dmf_download_abandon(struct dmf_download *dl)
{
    dmf_revalidation_cancel(dl->reval);
    if (dl->t && !dl->done)
        dmf_task_unsubscribe(dl->t, &dl->sub);
    if (dl->t)
        dmf_task_put(dl->t);
    if (dl->timeout)
        event_free(dl->timeout);
    free(dl);
}

/* The last thing any path does with dl: the transport may free it inside. */
static void finish(struct dmf_download *dl, grpc_status_code status, const char *details)
{
    dl->done = true;
    dl->tr->finish(dl->ctx, status, details);
}

/* The TaskState a client sees for a task in this phase. */
static Damselfly__V1__TaskState task_state(enum dmf_task_phase phase)
{
    switch (phase) {
    case DMF_TASK_PHASE_PENDING:
        return DAMSELFLY__V1__TASK_STATE__TASK_STATE_PENDING;
    case DMF_TASK_PHASE_SUCCEEDED:
        return DAMSELFLY__V1__TASK_STATE__TASK_STATE_SUCCEEDED;
    case DMF_TASK_PHASE_FAILED:
        return DAMSELFLY__V1__TASK_STATE__TASK_STATE_FAILED;
    default:
        return DAMSELFLY__V1__TASK_STATE__TASK_STATE_RUNNING;
    }
}

/* The client gets a descriptor of the data before it is told of any piece in it. */
static void send_data_fd(struct dmf_download *dl, const struct dmf_task_info *info)
{
    if (dl->tr->send_fd == NULL || info->data_gen == 0 || info->data_gen == dl->sent_gen)
        return;
    int fd = dmf_task_open_read(dl->t);
    int e = fd >= 0 ? dl->tr->send_fd(dl->ctx, fd) : fd;
    if (fd >= 0)
        close(fd);
    if (e != 0)
        dmf_warn("task %s: cannot pass its data to a local client: %s", info->id, dmf_strerror(e));
    else
        dl->sent_gen = info->data_gen;
}

static void send_progress(struct dmf_download *dl, const uint32_t *pieces, size_t n,
                          Damselfly__V1__TaskState state)
{
    struct dmf_task_info info;
    dmf_task_info(dl->t, &info);
    send_data_fd(dl, &info);
    Damselfly__V1__DownloadTaskResponse r = DAMSELFLY__V1__DOWNLOAD_TASK_RESPONSE__INIT;
    r.task_id = (char *)info.id;
    r.peer_id = (char *)info.peer_id;
    r.state = state;
    r.data_path = (char *)info.data_path;
    r.content_length = info.content_length;
    r.piece_length = info.piece_length;
    r.total_pieces = info.total_pieces;
    r.new_pieces = (uint32_t *)pieces;
    r.n_new_pieces = n;
    r.completed_length = info.completed_length;
    r.bytes_from_origin = info.bytes_from_origin;
    r.bytes_from_peers = info.bytes_from_peers;
    r.content_digest = (char *)info.content_digest;
    dl->tr->send(dl->ctx, &r);
}

/* Every piece held, for a client that joins a task in progress or done. */
static void send_held(struct dmf_download *dl, Damselfly__V1__TaskState state)
{
    uint32_t *held;
    size_t n = dmf_task_held_pieces(dl->t, &held);
    send_progress(dl, held, n, state);
    free(held);
}

static void on_task_update(void *arg, struct dmf_task *t, const uint32_t *pieces, size_t n,
                           bool end)
{
    struct dmf_download *dl = arg;
    if (!end) {
        if (n)
            send_progress(dl, pieces, n, DAMSELFLY__V1__TASK_STATE__TASK_STATE_RUNNING);
        return;
    }
    dl->done = true;
    if (dl->timeout)
        evtimer_del(dl->timeout);
    struct dmf_task_info info;
    dmf_task_info(t, &info);
    if (info.phase == DMF_TASK_PHASE_SUCCEEDED) {
        if (dl->from_cache && info.bytes_from_origin + info.bytes_from_peers == 0) {
            dmf_info("task %s: served from the local cache, verified first (%lld bytes)", info.id,
                     (long long)info.content_length);
            dmf_metric_add(&dmf_m_bytes_local, info.content_length);
        }
        send_progress(dl, pieces, n, DAMSELFLY__V1__TASK_STATE__TASK_STATE_SUCCEEDED);
        finish(dl, GRPC_STATUS_OK, NULL);
    } else {
        finish(dl, info.not_shared ? GRPC_STATUS_FAILED_PRECONDITION : GRPC_STATUS_ABORTED,
               info.error ? info.error : "download failed");
    }
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct dmf_download *dl = arg;
    if (dl->done)
        return;
    dl->done = true;
    dmf_task_unsubscribe(dl->t, &dl->sub);
    struct dmf_task_info info;
    dmf_task_info(dl->t, &info);
    char msg[160];
    snprintf(msg, sizeof(msg), "timed out after %.1f s with %llu bytes of %lld",
             (double)dl->timeout_ms / 1000.0, (unsigned long long)info.completed_length,
             (long long)info.content_length);
    finish(dl, GRPC_STATUS_DEADLINE_EXCEEDED, msg);
}

/* A header is "Name: value": a token name and a value without CR or LF. */
static bool header_ok(const char *name, const char *value)
{
    size_t nl = strlen(name);
    if (nl == 0 || nl > 256 || strlen(value) > HEADER_LEN_MAX)
        return false;
    for (const char *p = name; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("!#$%&'*+-.^_`|~", *p))
            return false;
    for (const char *p = value; *p; p++)
        if (*p == '\r' || *p == '\n')
            return false;
    return true;
}

/* Serves the task from the cache, or starts (or joins) its download. */
static void serve_or_start(struct dmf_download *dl)
{
    struct dmf_daemon *d = dl->d;
    struct dmf_task *t = dl->t;
    if (dmf_task_cached(t)) {
        /* Already here: the local cache answers, nobody else is asked. */
        struct dmf_task_info info;
        dmf_task_info(t, &info);
        dmf_info("task %s: served from the local cache (%lld bytes)", info.id,
                 (long long)info.content_length);
        dmf_metric_add(&dmf_m_bytes_local, info.content_length);
        dmf_task_serve_cached(t);
        send_held(dl, DAMSELFLY__V1__TASK_STATE__TASK_STATE_SUCCEEDED);
        finish(dl, GRPC_STATUS_OK, NULL);
        return;
    }
    struct dmf_task_info held;
    dmf_task_info(t, &held);
    dl->from_cache = held.content_length >= 0 && held.held_pieces == held.total_pieces;
    dmf_task_subscribe(t, &dl->sub);
    dmf_task_start(t);
    if (!dl->done)
        send_held(dl, DAMSELFLY__V1__TASK_STATE__TASK_STATE_RUNNING);
    if (!dl->done && dl->req_timeout_ms > 0) {
        dl->timeout_ms = dl->req_timeout_ms;
        dl->timeout = dmf_xevtimer_new(d->base, on_timeout, dl);
        struct timeval tv = {.tv_sec = dl->req_timeout_ms / 1000,
                             .tv_usec = (dl->req_timeout_ms % 1000) * 1000};
        evtimer_add(dl->timeout, &tv);
    }
}

static void on_revalidated(void *arg, struct dmf_task *t, enum dmf_fresh_verdict v,
                           const char *detail)
{
    struct dmf_download *dl = arg;
    dl->reval = NULL;
    if (dl->d->stopping) { /* the task is being freed */
        finish(dl, GRPC_STATUS_UNAVAILABLE, detail);
        return;
    }
    if (v == DMF_FRESH_UNREACHABLE) {
        if (dl->require_fresh) {
            char msg[400];
            snprintf(msg, sizeof(msg),
                     "cannot revalidate the cached copy with the origin (%.300s) and fresh "
                     "content is required",
                     detail);
            finish(dl, GRPC_STATUS_UNAVAILABLE, msg);
            return;
        }
        struct dmf_task_info info;
        dmf_task_info(t, &info);
        dmf_warn("task %s: serving the cached copy without revalidation: %s", info.id, detail);
    }
    serve_or_start(dl);
}

static DMF_METRIC_COUNTER(m_rpc_refused_caller, "damselfly_rpc_refused_total", "reason=\"caller\"",
                          "DownloadTask calls on the rpc port refused, by reason.");
static DMF_METRIC_COUNTER(m_rpc_refused_origin, "damselfly_rpc_refused_total",
                          "reason=\"origin_policy\"",
                          "DownloadTask calls on the rpc port refused, by reason.");
static DMF_METRIC_COUNTER(m_blocked, "damselfly_blocked_downloads_total", NULL,
                          "Downloads refused because their URL is on the cluster's block list.");
static DMF_METRIC_COUNTER(m_blocked_app, "damselfly_blocked_application_downloads_total", NULL,
                          "Downloads refused because their application is on the cluster's "
                          "block list.");

void dmf_local_service_metrics_register(void)
{
    dmf_metric_register(&m_rpc_refused_caller);
    dmf_metric_register(&m_rpc_refused_origin);
    dmf_metric_register(&m_blocked);
    dmf_metric_register(&m_blocked_app);
}

/* The URL of a request from another host, against the origin policy: NULL when it may be
 * fetched (*check_addrs: whether every connect is still checked), else the reason. An IP
 * literal is checked here already, so nothing is even opened for it. */
static const char *origin_refusal(const struct dmf_origin_policy *p, const char *url,
                                  bool *check_addrs)
{
    char host[DMF_ORIGIN_HOST_MAX];
    bool any = false;
    *check_addrs = true;
    if (dmf_origin_policy_url_host(url, host, sizeof(host)) != 0)
        return "the URL has no http(s) host";
    const char *why = dmf_origin_policy_host(p, host, &any);
    if (why != NULL)
        return why;
    if (any) {
        *check_addrs = false;
        return NULL;
    }
    struct sockaddr_storage ss = {0};
    struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, host, &sin->sin_addr) == 1)
        sin->sin_family = AF_INET;
    else if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1)
        sin6->sin6_family = AF_INET6;
    else
        return NULL; /* a name: its addresses are checked as they are connected to */
    return dmf_origin_policy_addr((void *)p, (const struct sockaddr *)&ss);
}

static void start_download(struct dmf_download *dl, const Damselfly__V1__DownloadTaskRequest *req,
                           const struct dmf_origin_policy *policy)
{
    struct dmf_daemon *d = dl->d;
    dl->sub.on_update = on_task_update;
    dl->sub.arg = dl;
    char err[256], id[DMF_TASK_ID_LEN + 1];
    struct dmf_strlist headers = {0}, filter = {0};
    grpc_status_code status = GRPC_STATUS_INVALID_ARGUMENT;

    if (req->url == NULL || req->url[0] == '\0' || strlen(req->url) > URL_MAX) {
        snprintf(err, sizeof(err), "a URL of at most %d bytes is required", URL_MAX);
        goto fail;
    }
    const char *blocked = dmf_daemon_url_blocked(d, req->url);
    if (blocked != NULL) {
        dmf_metric_add(&m_blocked, 1);
        dmf_info("download refused: its URL matches the cluster's block list (%.200s)", blocked);
        snprintf(err, sizeof(err), "the URL is on the cluster's block list (pattern %.200s)",
                 blocked);
        status = GRPC_STATUS_PERMISSION_DENIED;
        goto fail;
    }
    if (dmf_application_check(req->application, err, sizeof(err)) != 0)
        goto fail;
    if (dmf_daemon_application_blocked(d, req->application)) {
        dmf_metric_add(&m_blocked_app, 1);
        dmf_info("download refused: application '%s' is on the cluster's block list",
                 req->application);
        snprintf(err, sizeof(err), "application '%s' is on the cluster's block list",
                 req->application);
        status = GRPC_STATUS_PERMISSION_DENIED;
        goto fail;
    }
    bool check_addrs = false;
    if (policy != NULL) {
        const char *why = origin_refusal(policy, req->url, &check_addrs);
        if (why != NULL) {
            dmf_metric_add(&m_rpc_refused_origin, 1);
            dmf_warn("DownloadTask refused by the origin policy: %s", why);
            snprintf(err, sizeof(err), "refused by the origin policy: %s", why);
            status = GRPC_STATUS_PERMISSION_DENIED;
            goto fail;
        }
    }
    if (req->n_headers > HEADERS_MAX || req->n_filter_query > FILTERS_MAX) {
        snprintf(err, sizeof(err), "too many headers or filtered query parameters");
        goto fail;
    }
    for (size_t i = 0; i < req->n_headers; i++) {
        const char *name = req->headers[i]->name, *value = req->headers[i]->value;
        if (!header_ok(name, value)) {
            snprintf(err, sizeof(err), "invalid header '%.64s'", name);
            goto fail;
        }
        char *line = dmf_xasprintf("%s: %s", name, value);
        dmf_strlist_push(&headers, line);
        free(line);
    }
    if (req->priority != DAMSELFLY__V1__PRIORITY__PRIORITY_NORMAL &&
        req->priority != DAMSELFLY__V1__PRIORITY__PRIORITY_BACKGROUND &&
        req->priority != DAMSELFLY__V1__PRIORITY__PRIORITY_FOREGROUND) {
        snprintf(err, sizeof(err), "unknown priority %d", (int)req->priority);
        goto fail;
    }
    if (req->rate_limit != 0 && req->rate_limit < DMF_TASK_RATE_LIMIT_MIN) {
        snprintf(err, sizeof(err), "a task's rate limit is at least %d bytes/s (or 0: none)",
                 DMF_TASK_RATE_LIMIT_MIN);
        goto fail;
    }
    for (size_t i = 0; i < req->n_filter_query; i++)
        dmf_strlist_push(&filter, req->filter_query[i]);
    /* Secret query parameters are not part of the task's identity (url_secrets.h), and go
     * to the scheduler with the filtered ones so that a seed derives the same ID. A request
     * that names its task (the scheduler's, for a seed) carries that list already. */
    if (req->task_id == NULL || req->task_id[0] == '\0')
        dmf_strlist_merge(&filter, &d->cfg.secret_query);
    if (filter.n > FILTERS_MAX) {
        snprintf(err, sizeof(err), "more than %d filtered and secret query parameters",
                 FILTERS_MAX);
        goto fail;
    }
    uint8_t digest[DMF_SHA256_LEN];
    char digest_str[DMF_DIGEST_STR_LEN + 1] = "";
    if (req->digest && req->digest[0]) {
        if (dmf_digest_parse(req->digest, digest, err, sizeof(err)) != 0)
            goto fail;
        dmf_digest_format(digest, digest_str);
    }
    struct dmf_task_id_input in = {
        .url = req->url,
        .tag = req->tag,
        .filter_query = &filter,
        .digest = digest_str[0] ? digest_str : NULL,
        .headers = &headers,
    };
    const char *bypass = digest_str[0] ? NULL : dmf_task_bypass_header(&headers);
    if (bypass != NULL) {
        /* Content chosen per request: not a task anyone else could share. */
        dmf_info("download refused: its %s header selects content per request; not shared "
                 "through P2P",
                 bypass);
        status = GRPC_STATUS_FAILED_PRECONDITION;
        snprintf(err, sizeof(err),
                 "the %s header selects content per request: it is not shared through P2P "
                 "(fetch it directly)",
                 bypass);
        goto fail;
    }
    char *norm = NULL;
    if (dmf_url_normalize(req->url, &filter, &norm, err, sizeof(err)) != 0 ||
        dmf_task_id(&in, id, err, sizeof(err)) != 0) {
        free(norm);
        goto fail;
    }
    free(norm);
    if (req->task_id && req->task_id[0] && strcmp(req->task_id, id) != 0) {
        snprintf(err, sizeof(err), "task id %.64s does not match the request (derived %s)",
                 req->task_id, id);
        goto fail;
    }

    struct dmf_task_request treq = {
        .url = req->url,
        .headers = &headers,
        .tag = req->tag,
        .application = req->application,
        .digest = digest_str[0] ? digest_str : NULL,
        .filter_query = &filter,
        .disable_back_to_source = req->disable_back_to_source,
        .origin_policy = check_addrs ? policy : NULL,
        .rate_limit = req->rate_limit,
        .priority = (enum dmf_priority)req->priority,
    };
    struct dmf_task *t;
    int e = dmf_engine_open(d, id, &treq, &t);
    dl->t = t;
    if (t)
        dmf_task_hold(t); /* an open get: not evicted until abandoned */
    if (e != 0) {
        status = GRPC_STATUS_INTERNAL;
        snprintf(err, sizeof(err), "cannot open the task's data file");
        goto fail;
    }
    if (dmf_task_other_version(t, req->etag, req->last_modified)) {
        /* The cluster has pinned another version than the one this host holds. */
        dmf_task_drop_version(t, req->etag, req->last_modified);
    }
    dl->require_fresh = req->require_fresh;
    dl->req_timeout_ms = req->timeout_ms;
    if (dmf_task_needs_revalidation(t)) {
        /* Cached but old: one conditional request first, with this caller's headers. */
        dl->reval = dmf_task_revalidate(t, &headers, on_revalidated, dl);
        dmf_strlist_free(&headers);
        dmf_strlist_free(&filter);
        return;
    }
    dmf_strlist_free(&headers);
    dmf_strlist_free(&filter);
    serve_or_start(dl);
    return;

fail:
    dmf_strlist_free(&headers);
    dmf_strlist_free(&filter);
    finish(dl, status, err);
}

struct dmf_download *dmf_download_start(struct dmf_daemon *d,
                                        const Damselfly__V1__DownloadTaskRequest *req,
                                        const struct dmf_download_transport *tr, void *ctx,
                                        const struct dmf_origin_policy *policy)
{
    struct dmf_download *dl = dmf_xcalloc(1, sizeof(*dl));
    dl->d = d;
    dl->tr = tr;
    dl->ctx = ctx;
    start_download(dl, req, policy);
    return dl;
}

/* ---------------------------------------------------------------- over gRPC */

struct grpc_download {
    dmf_rpc_call_t *call;
    struct dmf_daemon *d;
    struct dmf_download *dl;
    bool got_request;
};

static void grpc_send(void *ctx, const Damselfly__V1__DownloadTaskResponse *r)
{
    struct grpc_download *gd = ctx;
    dmf_rpc_call_send(gd->call, &r->base);
}

static void grpc_finish(void *ctx, int status, const char *details)
{
    struct grpc_download *gd = ctx;
    dmf_rpc_call_finish(gd->call, (grpc_status_code)status, details);
}

static const struct dmf_download_transport grpc_transport = {grpc_send, grpc_finish};

/* With TLS, only a scheduler's or manager's certificate may call method (which does what):
 * true when the call was refused (finished with PERMISSION_DENIED, logged, counted). */
static bool refused_caller(dmf_rpc_call_t *call, const char *method, const char *what)
{
    const struct dmf_tls_identity *caller = dmf_rpc_call_identity(call);
    if (dmf_tls_may_trigger_download(caller))
        return false;
    char msg[300];
    snprintf(msg, sizeof(msg),
             "the certificate of host %s (role %s) may not %s: only a scheduler's or "
             "manager's may",
             caller->host_id, dmf_tls_role_name(caller->role), what);
    const char *peer = dmf_rpc_call_peer(call);
    dmf_metric_add(&m_rpc_refused_caller, 1);
    dmf_warn("%s from %s refused: %s", method, peer && *peer ? peer : "?", msg);
    dmf_rpc_call_finish(call, GRPC_STATUS_PERMISSION_DENIED, msg);
    return true;
}

static void download_on_message(void *arg, dmf_rpc_call_t *call, const uint8_t *data, size_t len)
{
    struct grpc_download *gd = arg;
    if (data == NULL || gd->got_request)
        return;
    gd->got_request = true;
    struct dmf_daemon *d = gd->d;
    const char *peer = dmf_rpc_call_peer(call);
    if (refused_caller(call, "DownloadTask", "trigger downloads"))
        return;
    dmf_rpc_acl_cluster(d->rpc_acl, d->cfg.scheduler, &d->cfg.manager);
    const char *why = dmf_rpc_acl_check(d->rpc_acl, peer);
    if (why != NULL) {
        dmf_metric_add(&m_rpc_refused_caller, 1);
        dmf_warn("DownloadTask from %s refused: %s", peer ? peer : "?", why);
        dmf_rpc_call_finish(call, GRPC_STATUS_PERMISSION_DENIED, why);
        return;
    }
    Damselfly__V1__DownloadTaskRequest *req =
        damselfly__v1__download_task_request__unpack(NULL, len, data);
    if (req == NULL) {
        dmf_rpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "undecodable request");
        return;
    }
    gd->dl = dmf_download_start(d, req, &grpc_transport, gd, d->origin_policy);
    damselfly__v1__download_task_request__free_unpacked(req, NULL);
}

static void download_on_end(void *arg, dmf_rpc_call_t *call, grpc_status_code status,
                            const char *details)
{
    struct grpc_download *gd = arg;
    if (gd->dl)
        dmf_download_abandon(gd->dl);
    dmf_rpc_call_release(call);
    free(gd);
}

static const struct dmf_rpc_call_handler download_handler = {
    .on_message = download_on_message,
    .on_end = download_on_end,
};

/* ---------------------------------------------------------------- StatTask */

static void stat_on_message(void *arg, dmf_rpc_call_t *call, const uint8_t *data, size_t len)
{
    struct dmf_daemon *d = arg;
    if (data == NULL)
        return;
    Damselfly__V1__StatLocalTaskRequest *req =
        damselfly__v1__stat_local_task_request__unpack(NULL, len, data);
    if (req == NULL || req->task_id == NULL || !dmf_task_id_valid(req->task_id)) {
        dmf_rpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "a valid task_id is required");
        goto out;
    }
    struct dmf_task *t = dmf_engine_find(d, req->task_id);
    if (t == NULL) {
        dmf_rpc_call_finish(call, GRPC_STATUS_NOT_FOUND, "no such task on this daemon");
        goto out;
    }
    struct dmf_task_info info;
    dmf_task_info(t, &info);
    Damselfly__V1__StatLocalTaskResponse r = DAMSELFLY__V1__STAT_LOCAL_TASK_RESPONSE__INIT;
    r.task_id = (char *)info.id;
    r.state = task_state(info.phase);
    r.content_length = info.content_length;
    r.total_pieces = info.total_pieces;
    r.held_pieces = info.held_pieces;
    r.url = (char *)info.url;
    dmf_rpc_call_send(call, &r.base);
    dmf_rpc_call_finish(call, GRPC_STATUS_OK, NULL);
out:
    if (req)
        damselfly__v1__stat_local_task_request__free_unpacked(req, NULL);
}

static void stat_on_end(void *arg, dmf_rpc_call_t *call, grpc_status_code status,
                        const char *details)
{
    dmf_rpc_call_release(call);
}

static const struct dmf_rpc_call_handler stat_handler = {
    .on_message = stat_on_message,
    .on_end = stat_on_end,
};

/* DeleteTask: the task leaves this host's cache (cache_gc.h). A task in use is removed as
 * soon as it is idle: retried every DELETE_RETRY_MS for up to DELETE_WAIT_MS, then
 * FAILED_PRECONDITION. Unless it is downloading, it first leaves the scheduler, so that no
 * new child is sent here for it. */
#define DELETE_RETRY_MS 250
#define DELETE_WAIT_MS  20000

struct delete_call {
    struct dmf_daemon *d;
    dmf_rpc_call_t *call;
    char task_id[DMF_TASK_ID_LEN + 1];
    char peer[64];
    uint64_t deadline_ms;
    struct event *retry;
    bool answered;
};

static void delete_free(struct delete_call *dc)
{
    if (dc->retry)
        event_free(dc->retry);
    dmf_rpc_call_release(dc->call);
    free(dc);
}

/* One try: true when the call was answered. */
static bool delete_try(struct delete_call *dc)
{
    size_t n = 0;
    uint64_t freed = 0;
    struct dmf_cache_gc *gc = dmf_engine_cache(dc->d);
    int e = gc ? dmf_cache_gc_remove(gc, dc->task_id, &n, &freed) : -EIO;
    if (e == -EBUSY && dmf_now_ms() < dc->deadline_ms)
        return false;
    Damselfly__V1__DeleteTaskResponse r = DAMSELFLY__V1__DELETE_TASK_RESPONSE__INIT;
    if (e == 0 || e == -ENOENT) {
        r.removed = e == 0 && n > 0;
        r.freed_bytes = freed;
        dmf_info("task %s: %s on the request of %s (%llu bytes freed)", dc->task_id,
                 r.removed ? "deleted" : "not held, nothing deleted", dc->peer,
                 (unsigned long long)freed);
        dmf_rpc_call_send(dc->call, &r.base);
        dmf_rpc_call_finish(dc->call, GRPC_STATUS_OK, NULL);
    } else if (e == -EBUSY) {
        dmf_warn("task %s: not deleted on the request of %s: still in use after %d s", dc->task_id,
                 dc->peer, DELETE_WAIT_MS / 1000);
        dmf_rpc_call_finish(dc->call, GRPC_STATUS_FAILED_PRECONDITION,
                            "the task stayed in use on this host (a download or a reader)");
    } else {
        dmf_rpc_call_finish(dc->call, GRPC_STATUS_INTERNAL, "the cache could not remove the task");
    }
    dc->answered = true;
    return true;
}

static void delete_on_retry(evutil_socket_t fd, short what, void *arg)
{
    struct delete_call *dc = arg;
    if (dc->answered || delete_try(dc))
        return;
    struct timeval tv = dmf_timeval_ms(DELETE_RETRY_MS);
    evtimer_add(dc->retry, &tv);
}

static void delete_on_message(void *arg, dmf_rpc_call_t *call, const uint8_t *data, size_t len)
{
    struct delete_call *dc = arg;
    struct dmf_daemon *d = dc->d;
    if (data == NULL || dc->answered || dc->retry)
        return;
    const char *peer = dmf_rpc_call_peer(call);
    snprintf(dc->peer, sizeof(dc->peer), "%s", peer && *peer ? peer : "?");
    if (refused_caller(call, "DeleteTask", "delete tasks")) { /* as DownloadTask's */
        dc->answered = true;
        return;
    }
    dmf_rpc_acl_cluster(d->rpc_acl, d->cfg.scheduler, &d->cfg.manager);
    const char *why = dmf_rpc_acl_check(d->rpc_acl, peer);
    if (why != NULL) {
        dmf_metric_add(&m_rpc_refused_caller, 1);
        dmf_warn("DeleteTask from %s refused: %s", dc->peer, why);
        dmf_rpc_call_finish(call, GRPC_STATUS_PERMISSION_DENIED, why);
        dc->answered = true;
        return;
    }
    Damselfly__V1__DeleteTaskRequest *req =
        damselfly__v1__delete_task_request__unpack(NULL, len, data);
    if (req == NULL || !dmf_task_id_valid(req->task_id)) {
        dmf_rpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT,
                            "task_id must be 64 lower-case hex digits");
        dc->answered = true;
        if (req)
            damselfly__v1__delete_task_request__free_unpacked(req, NULL);
        return;
    }
    snprintf(dc->task_id, sizeof(dc->task_id), "%s", req->task_id);
    damselfly__v1__delete_task_request__free_unpacked(req, NULL);
    dc->deadline_ms = dmf_now_ms() + DELETE_WAIT_MS;
    if (delete_try(dc))
        return;
    struct dmf_task *t = dmf_engine_find(d, dc->task_id);
    struct dmf_task_info info;
    if (t != NULL)
        dmf_task_info(t, &info);
    if (t != NULL && info.phase != DMF_TASK_PHASE_RUNNING) {
        /* Children fetching from it: no new ones. A download in progress keeps its peer. */
        dmf_info("task %s: in use; it leaves the scheduler and is deleted once idle (request of "
                 "%s)",
                 dc->task_id, dc->peer);
        dmf_task_leave(t);
    }
    dc->retry = dmf_xevtimer_new(d->base, delete_on_retry, dc);
    struct timeval tv = dmf_timeval_ms(DELETE_RETRY_MS);
    evtimer_add(dc->retry, &tv);
}

static void delete_on_end(void *arg, dmf_rpc_call_t *call, grpc_status_code status,
                          const char *details)
{
    delete_free(arg);
}

static const struct dmf_rpc_call_handler delete_handler = {
    .on_message = delete_on_message,
    .on_end = delete_on_end,
};

void dmf_local_service_on_call(void *arg, dmf_rpc_call_t *call, const char *method)
{
    struct dmf_daemon *d = arg;
    if (strcmp(method, "/damselfly.v1.Daemon/DownloadTask") == 0) {
        struct grpc_download *gd = dmf_xcalloc(1, sizeof(*gd));
        gd->d = d;
        gd->call = call;
        dmf_rpc_call_set_handler(call, &download_handler, gd);
    } else if (strcmp(method, "/damselfly.v1.Daemon/StatTask") == 0) {
        dmf_rpc_call_set_handler(call, &stat_handler, d);
    } else if (strcmp(method, "/damselfly.v1.Daemon/DeleteTask") == 0) {
        struct delete_call *dc = dmf_xcalloc(1, sizeof(*dc));
        dc->d = d;
        dc->call = call;
        dmf_rpc_call_set_handler(call, &delete_handler, dc);
    } else {
        dmf_rpc_call_set_handler(call, &stat_handler, d);
        dmf_rpc_call_finish(call, GRPC_STATUS_UNIMPLEMENTED, "no such method");
    }
}
