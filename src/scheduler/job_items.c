/* Job items carried by the scheduler; see job_items.h.
 *
 * One struct item per item_id: its request (owned), the call to the host's Daemon service
 * while it runs, its progress and result, and the callers (struct watcher) that follow it.
 * Every state change of an item goes through item_set_state(), which logs it. */
#include "scheduler/job_items.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "common/log.h"
#include "common/metrics.h"
#include "common/tls_expect.h"
#include "common/util.h"
#include "damselfly/v1/daemon.pb-c.h"
#include "damselfly/v1/scheduler.pb-c.h"
#include "scheduler/job_item_check.h"
#include "scheduler/sched_state.h"

#define METHOD "/damselfly.v1.Scheduler/RunJobItem"
#define ITEMS_HELP                                                                                 \
    "Manager job items: started on a host, attached to one already running or finished, "          \
    "succeeded, failed."

static DMF_METRIC_COUNTER(m_started, "damselfly_scheduler_job_items_total", "event=\"started\"",
                          ITEMS_HELP);
static DMF_METRIC_COUNTER(m_attached, "damselfly_scheduler_job_items_total", "event=\"attached\"",
                          ITEMS_HELP);
static DMF_METRIC_COUNTER(m_succeeded, "damselfly_scheduler_job_items_total", "event=\"succeeded\"",
                          ITEMS_HELP);
static DMF_METRIC_COUNTER(m_failed, "damselfly_scheduler_job_items_total", "event=\"failed\"",
                          ITEMS_HELP);
static DMF_METRIC_COUNTER(m_refused, "damselfly_scheduler_job_items_refused_total", NULL,
                          "RunJobItem calls refused (not a manager certificate, malformed, "
                          "unknown host, busy).");

enum item_state { ITEM_RUNNING, ITEM_SUCCEEDED, ITEM_FAILED };
static const char *const state_names[] = {"running", "succeeded", "failed"};

struct item;

/* One RunJobItem call: before its request arrives it is on the service's pending list,
 * then on its item's. */
struct watcher {
    dmf_job_items_t *j;
    struct item *it;
    dmf_rpc_call_t *call;
    bool finished; /* our status is on its way */
    LIST_ENTRY(watcher) link;
};

struct item {
    dmf_job_items_t *j;
    Damselfly__V1__RunJobItemRequest *req; /* owned (unpacked) */
    char host_id[DMF_TLS_ID_MAX + 1];
    char target[128];
    enum item_state state;
    uint64_t completed;
    bool removed;
    char reason[300];
    uint64_t done_at;
    dmf_rpc_channel_t *ch;
    dmf_rpc_call_t *call; /* to the host, while running */
    LIST_HEAD(, watcher) watchers;
    TAILQ_ENTRY(item) link;
};

TAILQ_HEAD(item_list, item);

struct dmf_job_items {
    dmf_rpc_t *rpc;
    dmf_scheduler_t *sched;
    struct item_list running;
    struct item_list done; /* oldest result first */
    size_t nrunning, ndone;
    LIST_HEAD(, watcher) pending;
};

/* ---------------------------------------------------------------- callers */

static void watcher_free(struct watcher *w)
{
    LIST_REMOVE(w, link);
    dmf_rpc_call_release(w->call);
    free(w);
}

static void watcher_finish(struct watcher *w, grpc_status_code st, const char *details)
{
    if (w->finished)
        return;
    if (st != GRPC_STATUS_OK && w->it == NULL)
        dmf_metric_add(&m_refused, 1);
    w->finished = true;
    dmf_rpc_call_finish(w->call, st, details);
}

static void watcher_send(struct watcher *w, bool attached)
{
    struct item *it = w->it;
    if (w->finished)
        return;
    Damselfly__V1__RunJobItemResponse r = DAMSELFLY__V1__RUN_JOB_ITEM_RESPONSE__INIT;
    r.host_id = it->host_id;
    r.attached = attached;
    r.completed_length = it->completed;
    r.done = it->state != ITEM_RUNNING;
    r.succeeded = it->state == ITEM_SUCCEEDED;
    r.reason = it->reason;
    r.removed = it->removed;
    if (dmf_rpc_call_send(w->call, &r.base) != 0) {
        w->finished = true; /* cancelled (a slow reader) or over: on_end follows */
        return;
    }
    if (r.done)
        watcher_finish(w, GRPC_STATUS_OK, NULL);
}

/* ---------------------------------------------------------------- items */

static const char *kind_name(const struct item *it)
{
    return it->req->kind == DAMSELFLY__V1__JOB_ITEM_KIND__JOB_ITEM_DELETE ? "delete" : "preheat";
}

static void item_set_state(struct item *it, enum item_state st, const char *reason)
{
    dmf_log(st == ITEM_FAILED ? DMF_LOG_WARN : DMF_LOG_INFO,
            "job item %s (%s on host %s): %s -> %s%s%s", it->req->item_id, kind_name(it),
            it->host_id, state_names[it->state], state_names[st], reason && reason[0] ? ": " : "",
            reason ? reason : "");
    it->state = st;
    if (reason)
        snprintf(it->reason, sizeof(it->reason), "%s", reason);
}

static void item_close_call(struct item *it)
{
    dmf_rpc_call_drop(&it->call, &it->ch);
}

static void item_free(struct item *it)
{
    dmf_job_items_t *j = it->j;
    item_close_call(it);
    while (!LIST_EMPTY(&it->watchers)) {
        struct watcher *w = LIST_FIRST(&it->watchers);
        watcher_finish(w, GRPC_STATUS_CANCELLED, "the scheduler is stopping");
        watcher_free(w);
    }
    if (it->state == ITEM_RUNNING) {
        TAILQ_REMOVE(&j->running, it, link);
        j->nrunning--;
    } else {
        TAILQ_REMOVE(&j->done, it, link);
        j->ndone--;
    }
    damselfly__v1__run_job_item_request__free_unpacked(it->req, NULL);
    free(it);
}

/* Forgets results older than DMF_JOB_ITEMS_KEEP_MS, and the oldest beyond the cap. */
static void prune_done(dmf_job_items_t *j)
{
    uint64_t now = dmf_now_ms();
    struct item *it;
    while ((it = TAILQ_FIRST(&j->done)) != NULL &&
           (j->ndone > DMF_JOB_ITEMS_DONE_MAX || now - it->done_at > DMF_JOB_ITEMS_KEEP_MS))
        item_free(it);
}

static void item_over(struct item *it, bool ok, const char *reason)
{
    dmf_job_items_t *j = it->j;
    item_close_call(it);
    TAILQ_REMOVE(&j->running, it, link);
    j->nrunning--;
    item_set_state(it, ok ? ITEM_SUCCEEDED : ITEM_FAILED, reason);
    dmf_metric_add(ok ? &m_succeeded : &m_failed, 1);
    it->done_at = dmf_now_ms();
    TAILQ_INSERT_TAIL(&j->done, it, link);
    j->ndone++;
    struct watcher *w;
    LIST_FOREACH(w, &it->watchers, link)
    watcher_send(w, false);
    prune_done(j);
}

static void host_on_message(void *arg, dmf_rpc_call_t *call, const uint8_t *data, size_t len)
{
    struct item *it = arg;
    if (!data)
        return;
    if (it->req->kind == DAMSELFLY__V1__JOB_ITEM_KIND__JOB_ITEM_DELETE) {
        Damselfly__V1__DeleteTaskResponse *r =
            damselfly__v1__delete_task_response__unpack(NULL, len, data);
        if (r) {
            it->removed = r->removed;
            it->completed = r->freed_bytes;
            damselfly__v1__delete_task_response__free_unpacked(r, NULL);
        }
        return;
    }
    Damselfly__V1__DownloadTaskResponse *r =
        damselfly__v1__download_task_response__unpack(NULL, len, data);
    if (!r)
        return;
    bool moved = r->completed_length != it->completed;
    it->completed = r->completed_length;
    damselfly__v1__download_task_response__free_unpacked(r, NULL);
    if (!moved)
        return;
    struct watcher *w;
    LIST_FOREACH(w, &it->watchers, link)
    watcher_send(w, false);
}

static void host_on_end(void *arg, dmf_rpc_call_t *call, grpc_status_code st, const char *details)
{
    struct item *it = arg;
    char reason[300] = "";
    if (st != GRPC_STATUS_OK)
        snprintf(reason, sizeof(reason), "%s (%d)", details && details[0] ? details : "failed",
                 (int)st);
    item_over(it, st == GRPC_STATUS_OK, reason);
}

static const struct dmf_rpc_call_handler host_handler = {
    .on_message = host_on_message,
    .on_end = host_on_end,
};

/* Starts the item's call on its host's Daemon service. */
static void item_start(struct item *it)
{
    const Damselfly__V1__RunJobItemRequest *q = it->req;
    /* With TLS, only the host whose certificate names it hears the request (and the
     * headers in a preheat). */
    struct dmf_tls_expect expect = {.role = DMF_TLS_ROLE_NONE, .host_id = it->host_id};
    it->ch = dmf_rpc_channel_new_member(it->j->rpc, it->target, &expect);
    if (q->kind == DAMSELFLY__V1__JOB_ITEM_KIND__JOB_ITEM_DELETE) {
        Damselfly__V1__DeleteTaskRequest d = DAMSELFLY__V1__DELETE_TASK_REQUEST__INIT;
        d.task_id = q->task_id;
        it->call = dmf_rpc_call_start(it->ch, "/damselfly.v1.Daemon/DeleteTask", 30000, false);
        dmf_rpc_call_set_handler(it->call, &host_handler, it);
        dmf_rpc_call_send(it->call, &d.base);
    } else {
        Damselfly__V1__DownloadTaskRequest d = DAMSELFLY__V1__DOWNLOAD_TASK_REQUEST__INIT;
        d.url = q->url;
        d.headers = q->headers;
        d.n_headers = q->n_headers;
        d.digest = q->digest;
        d.tag = q->tag;
        d.application = q->application;
        it->call = dmf_rpc_call_start(it->ch, "/damselfly.v1.Daemon/DownloadTask",
                                      DMF_JOB_ITEMS_TIMEOUT_MS, false);
        dmf_rpc_call_set_handler(it->call, &host_handler, it);
        dmf_rpc_call_send(it->call, &d.base);
    }
    dmf_rpc_call_close_send(it->call);
}

struct find_host {
    const Damselfly__V1__RunJobItemRequest *req;
    const struct dmf_sched_host *found;
};

static bool match_host(void *arg, const struct dmf_sched_host *h)
{
    struct find_host *f = arg;
    if (h->leaving || !dmf_job_item_targets(f->req, h->id, h->ip, h->rpc_port))
        return true;
    f->found = h;
    return false;
}

static struct item *item_find(dmf_job_items_t *j, const char *id)
{
    struct item *it;
    TAILQ_FOREACH(it, &j->running, link)
    if (strcmp(it->req->item_id, id) == 0)
        return it;
    TAILQ_FOREACH(it, &j->done, link)
    if (strcmp(it->req->item_id, id) == 0)
        return it;
    return NULL;
}

/* ---------------------------------------------------------------- RunJobItem */

static void call_on_message(void *arg, dmf_rpc_call_t *call, const uint8_t *data, size_t len)
{
    struct watcher *w = arg;
    dmf_job_items_t *j = w->j;
    if (!data || w->it || w->finished)
        return; /* one request per call; the half-close after it */
    Damselfly__V1__RunJobItemRequest *req =
        damselfly__v1__run_job_item_request__unpack(NULL, len, data);
    char why[256];
    if (!req) {
        watcher_finish(w, GRPC_STATUS_INVALID_ARGUMENT, "malformed RunJobItemRequest");
        return;
    }
    if (dmf_job_item_check(req, why, sizeof(why)) != 0) {
        damselfly__v1__run_job_item_request__free_unpacked(req, NULL);
        watcher_finish(w, GRPC_STATUS_INVALID_ARGUMENT, why);
        return;
    }
    prune_done(j);
    struct item *it = item_find(j, req->item_id);
    if (it) {
        bool same = dmf_job_item_same(it->req, req);
        damselfly__v1__run_job_item_request__free_unpacked(req, NULL);
        if (!same) {
            watcher_finish(w, GRPC_STATUS_ALREADY_EXISTS,
                           "this item_id names other work at this scheduler");
            return;
        }
        dmf_info("job item %s (%s on host %s): attached to the %s item", it->req->item_id,
                 kind_name(it), it->host_id, state_names[it->state]);
        dmf_metric_add(&m_attached, 1);
        LIST_REMOVE(w, link);
        LIST_INSERT_HEAD(&it->watchers, w, link);
        w->it = it;
        watcher_send(w, true);
        return;
    }
    struct find_host f = {.req = req};
    dmf_scheduler_each_host(j->sched, match_host, &f);
    if (!f.found) {
        dmf_debug("job item %s: no such host here", req->item_id);
        damselfly__v1__run_job_item_request__free_unpacked(req, NULL);
        watcher_finish(w, GRPC_STATUS_NOT_FOUND, "this scheduler knows no such host");
        return;
    }
    if (j->nrunning >= DMF_JOB_ITEMS_RUNNING_MAX) {
        damselfly__v1__run_job_item_request__free_unpacked(req, NULL);
        watcher_finish(w, GRPC_STATUS_RESOURCE_EXHAUSTED, "too many job items running");
        return;
    }
    it = dmf_xcalloc(1, sizeof(*it));
    it->j = j;
    it->req = req;
    it->state = ITEM_RUNNING;
    LIST_INIT(&it->watchers);
    snprintf(it->host_id, sizeof(it->host_id), "%s", f.found->id);
    if (strchr(f.found->ip, ':'))
        snprintf(it->target, sizeof(it->target), "[%s]:%u", f.found->ip, f.found->rpc_port);
    else
        snprintf(it->target, sizeof(it->target), "%s:%u", f.found->ip, f.found->rpc_port);
    TAILQ_INSERT_TAIL(&j->running, it, link);
    j->nrunning++;
    dmf_info("job item %s (%s on host %s at %s): started", req->item_id, kind_name(it), it->host_id,
             it->target);
    dmf_metric_add(&m_started, 1);
    LIST_REMOVE(w, link);
    LIST_INSERT_HEAD(&it->watchers, w, link);
    w->it = it;
    item_start(it);
    watcher_send(w, false);
}

static void call_on_end(void *arg, dmf_rpc_call_t *call, grpc_status_code st, const char *details)
{
    /* The caller went away or our status went out; the item carries on. */
    watcher_free(arg);
}

static const struct dmf_rpc_call_handler call_handler = {
    .on_message = call_on_message,
    .on_end = call_on_end,
};

bool dmf_job_items_on_call(dmf_job_items_t *j, dmf_rpc_call_t *call, const char *method)
{
    if (strcmp(method, METHOD) != 0)
        return false;
    if (!dmf_job_item_may_run(dmf_rpc_call_identity(call))) {
        dmf_warn("RunJobItem from %s refused: not a manager certificate",
                 dmf_rpc_call_identity(call)->host_id);
        dmf_metric_add(&m_refused, 1);
        dmf_rpc_call_finish(call, GRPC_STATUS_PERMISSION_DENIED,
                            "only a manager certificate may run job items");
        dmf_rpc_call_release(call);
        return true;
    }
    struct watcher *w = dmf_xcalloc(1, sizeof(*w));
    w->j = j;
    w->call = call;
    LIST_INSERT_HEAD(&j->pending, w, link);
    dmf_rpc_call_set_handler(call, &call_handler, w);
    return true;
}

dmf_job_items_t *dmf_job_items_new(dmf_rpc_t *rpc, dmf_scheduler_t *sched)
{
    struct dmf_metric *metrics[] = {&m_started, &m_attached, &m_succeeded, &m_failed, &m_refused};
    for (size_t i = 0; i < sizeof(metrics) / sizeof(metrics[0]); i++)
        dmf_metric_register(metrics[i]);
    dmf_job_items_t *j = dmf_xcalloc(1, sizeof(*j));
    j->rpc = rpc;
    j->sched = sched;
    TAILQ_INIT(&j->running);
    TAILQ_INIT(&j->done);
    LIST_INIT(&j->pending);
    return j;
}

size_t dmf_job_items_running(const dmf_job_items_t *j)
{
    return j->nrunning;
}

void dmf_job_items_free(dmf_job_items_t *j)
{
    if (j == NULL)
        return;
    while (!TAILQ_EMPTY(&j->running))
        item_free(TAILQ_FIRST(&j->running));
    while (!TAILQ_EMPTY(&j->done))
        item_free(TAILQ_FIRST(&j->done));
    while (!LIST_EMPTY(&j->pending))
        watcher_free(LIST_FIRST(&j->pending));
    free(j);
}
