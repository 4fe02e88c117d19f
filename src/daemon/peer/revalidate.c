/* Revalidation of a cached URL task; see revalidate.h and task_view.h. */
#include "daemon/peer/revalidate.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/http_client.h"
#include "common/log.h"
#include "common/util.h"
#include "daemon/peer/freshness.h"
#include "daemon/peer/task.h"

DMF_METRIC_COUNTER(dmf_m_reval_current, "damselfly_revalidations_total", "result=\"not_modified\"",
                   "Conditional requests for cached URL tasks, by what the origin answered.");
DMF_METRIC_COUNTER(dmf_m_reval_new, "damselfly_revalidations_total", "result=\"modified\"",
                   "Conditional requests for cached URL tasks, by what the origin answered.");
DMF_METRIC_COUNTER(dmf_m_reval_error, "damselfly_revalidations_total", "result=\"error\"",
                   "Conditional requests for cached URL tasks, by what the origin answered.");

#define REVAL_CONNECT_TIMEOUT_MS 5000
#define REVAL_LOW_SPEED_S        5

/* SENT -> DONE: one request, one verdict. */
enum reval_state { REVAL_SENT, REVAL_DONE };

struct dmf_revalidation {
    struct dmf_task *t;
    enum reval_state state;
    dmf_http_req_t *req;
    struct dmf_strlist headers; /* the caller's, then the conditions (secrets) */
    long status;                /* the origin's answer, 0 until headers came */
    char *etag, *last_modified; /* the answer's validators */
    dmf_revalidated_cb cb;
    void *arg;
    struct dmf_revalidation *next; /* in t->revals */
};

static void unlink_reval(struct dmf_revalidation *r)
{
    for (struct dmf_revalidation **p = &r->t->revals; *p; p = &(*p)->next) {
        if (*p == r) {
            *p = r->next;
            return;
        }
    }
}

static void reval_free(struct dmf_revalidation *r)
{
    dmf_strlist_free(&r->headers);
    free(r->etag);
    free(r->last_modified);
    free(r);
}

static void cache_of(const struct dmf_task *t, struct dmf_fresh_cache *c)
{
    *c = (struct dmf_fresh_cache){
        .digest_task = t->expected_digest[0] != '\0',
        .etag = t->etag,
        .last_modified = t->last_modified,
        .validated_at_s = t->validated_at,
    };
}

bool dmf_task_needs_revalidation(struct dmf_task *t)
{
    if (t->url == NULL || dmf_task_state_running(t->state) || !dmf_book_all_held(&t->book))
        return false;
    struct dmf_fresh_cache c;
    cache_of(t, &c);
    return dmf_fresh_needs_check(&c, (int64_t)time(NULL), t->d->cfg.revalidate_after);
}

bool dmf_task_other_version(struct dmf_task *t, const char *etag, const char *last_modified)
{
    if (dmf_task_state_running(t->state) || t->book.have.count == 0)
        return false;
    struct dmf_fresh_cache c;
    cache_of(t, &c);
    return dmf_fresh_other_version(&c, etag, last_modified);
}

void dmf_task_drop_version(struct dmf_task *t, const char *etag, const char *last_modified)
{
    dmf_info("task %s: the cluster has pinned another version (ETag %s)", t->id,
             etag && *etag ? etag : "none");
    dmf_task_new_version(t, etag, last_modified);
}

static char *dup_header(dmf_http_req_t *req, const char *name)
{
    const char *v = dmf_http_header(req, name);
    return v && *v && strlen(v) <= DMF_VALIDATOR_MAX ? dmf_xstrdup(v) : NULL;
}

static int reval_on_headers(void *arg, dmf_http_req_t *req, long status)
{
    struct dmf_revalidation *r = arg;
    r->status = status;
    r->etag = dup_header(req, "etag");
    r->last_modified = dup_header(req, "last-modified");
    return -ECANCELED; /* the status and validators are all it needs: no body */
}

static void reval_on_done(void *arg, dmf_http_req_t *req, int err, const char *reason)
{
    struct dmf_revalidation *r = arg;
    struct dmf_task *t = r->t;
    r->req = NULL;
    r->state = REVAL_DONE;
    unlink_reval(r);
    struct dmf_fresh_cache c;
    cache_of(t, &c);
    enum dmf_fresh_verdict v = dmf_fresh_answer(&c, r->status, r->etag, r->last_modified);
    char detail[300];
    if (r->status == 0)
        snprintf(detail, sizeof(detail), "the origin did not answer (%.200s)",
                 reason ? reason : "no reason");
    else
        snprintf(detail, sizeof(detail), "the origin answered HTTP %ld", r->status);
    dmf_info("task %s: revalidation SENT -> DONE: %s: %s", t->id, detail,
             dmf_fresh_verdict_name(v));
    switch (v) {
    case DMF_FRESH_CURRENT:
        dmf_metric_add(&dmf_m_reval_current, 1);
        dmf_task_still_current(t);
        break;
    case DMF_FRESH_NEW_VERSION:
        dmf_metric_add(&dmf_m_reval_new, 1);
        /* A 4xx names no version: the next download meets the origin's answer itself. */
        dmf_task_new_version(t, r->status < 300 ? r->etag : NULL,
                             r->status < 300 ? r->last_modified : NULL);
        break;
    default:
        dmf_metric_add(&dmf_m_reval_error, 1);
        break;
    }
    dmf_revalidated_cb cb = r->cb;
    void *cb_arg = r->arg;
    reval_free(r);
    cb(cb_arg, t, v, detail);
}

static const struct dmf_http_req_ops reval_ops = {
    .on_headers = reval_on_headers,
    .on_done = reval_on_done,
};

/* A caller's own conditional or range header would change what the answer means. */
static bool ours_to_set(const char *line)
{
    static const char *const names[] = {"if-none-match:",       "if-modified-since:", "if-match:",
                                        "if-unmodified-since:", "if-range:",          "range:"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strncasecmp(line, names[i], strlen(names[i])) == 0)
            return true;
    return false;
}

struct dmf_revalidation *dmf_task_revalidate(struct dmf_task *t, const struct dmf_strlist *headers,
                                             dmf_revalidated_cb cb, void *arg)
{
    struct dmf_revalidation *r = dmf_xcalloc(1, sizeof(*r));
    r->t = t;
    r->cb = cb;
    r->arg = arg;
    for (size_t i = 0; headers && i < headers->n; i++)
        if (!ours_to_set(headers->v[i]))
            dmf_strlist_push(&r->headers, headers->v[i]);
    struct dmf_fresh_cache c;
    cache_of(t, &c);
    int n = dmf_fresh_conditional_headers(&c, &r->headers);
    dmf_info("task %s: revalidation -> SENT (%s%s%s)", t->id,
             n == 0 ? "no validator kept: any answer is a new version" : "",
             c.etag ? "If-None-Match" : "",
             c.etag && c.last_modified ? ", If-Modified-Since"
             : c.last_modified         ? "If-Modified-Since"
                                       : "");
    struct dmf_http_opts o = {
        .headers = &r->headers,
        .range = "0-0",
        .follow_redirects = 1,
        .connect_timeout_ms = REVAL_CONNECT_TIMEOUT_MS,
        .low_speed_time_s = REVAL_LOW_SPEED_S,
    };
    r->next = t->revals;
    t->revals = r;
    r->req = dmf_http_get(t->d->http, t->url, &o, &reval_ops, r);
    return r;
}

void dmf_revalidation_cancel(struct dmf_revalidation *r)
{
    if (r == NULL)
        return;
    dmf_http_cancel(r->req);
    unlink_reval(r);
    reval_free(r);
}

void dmf_revalidations_abort(struct dmf_task *t, const char *why)
{
    while (t->revals) {
        struct dmf_revalidation *r = t->revals;
        t->revals = r->next;
        dmf_http_cancel(r->req);
        dmf_revalidated_cb cb = r->cb;
        void *cb_arg = r->arg;
        reval_free(r);
        cb(cb_arg, t, DMF_FRESH_UNREACHABLE, why ? why : "the task is gone");
    }
}
