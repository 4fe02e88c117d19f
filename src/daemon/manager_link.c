/* The daemon's link to the manager; see manager_link.h. */
#include "daemon/manager_link.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/application.h"
#include "common/evx.h"
#include "common/log.h"
#include "common/manager_client.h"
#include "common/url_secrets.h"
#include "common/util.h"
#include "daemon/blocklist.h"
#include "daemon/limits.h"
#include "daemon/peer/cache_gc.h"
#include "daemon/peer/engine.h"

struct dmf_daemon_manager_link {
    struct dmf_daemon *d;
    dmf_manager_keepalive_t *keepalive; /* seeds only */
    struct event *poll;
    uint64_t interval_ms;
    bool in_flight;
    dmf_manager_list_t *list; /* the ListSchedulers call in flight */
    bool pinned;              /* --scheduler given: never moved */
    uint32_t candidate_limit;
    uint64_t download_rate_limit, upload_rate_limit;
    struct dmf_blocklist *blocklist;  /* the cluster's block_urls; NULL = none */
    struct event *resolve_timer;      /* bounds the start-up question */
    dmf_manager_resolved_cb resolved; /* the start-up question's end, once */
    void *resolved_arg;
    struct dmf_strlist block_apps; /* the cluster's block_applications (exact names) */
};

/* The start-up question ends (answered, or its time is up): told once, from the loop. */
static void resolve_end(struct dmf_daemon_manager_link *l, const char *why)
{
    dmf_manager_resolved_cb cb = l->resolved;
    if (cb == NULL)
        return;
    l->resolved = NULL;
    evtimer_del(l->resolve_timer);
    dmf_info("manager: start-up question %s: scheduler %s", why,
             l->d->cfg.scheduler ? l->d->cfg.scheduler : "none yet");
    cb(l->resolved_arg);
}

static struct dmf_daemon_manager_link *link_of(struct dmf_daemon *d)
{
    if (!d->manager_link) {
        d->manager_link = dmf_xcalloc(1, sizeof(*d->manager_link));
        d->manager_link->d = d;
        d->manager_link->interval_ms = 30000;
        d->manager_link->pinned = d->cfg.scheduler != NULL;
    }
    return d->manager_link;
}

static void apply_cache_limit(struct dmf_daemon *d, uint64_t limit)
{
    if (limit == d->cache_limit_manager)
        return;
    dmf_info("manager: cluster cache limit %llu -> %llu bytes (0 = none; the lower of it and "
             "--cache-limit %llu applies)",
             (unsigned long long)d->cache_limit_manager, (unsigned long long)limit,
             (unsigned long long)d->cfg.cache_limit);
    d->cache_limit_manager = limit;
    if (limit != 0 && dmf_engine_cache(d))
        dmf_cache_gc_soon(dmf_engine_cache(d)); /* a lower limit evicts now */
}

static void apply_blocklist(struct dmf_daemon_manager_link *l,
                            const Damselfly__V1__DynamicConfig *c)
{
    const char *const *pats = (const char *const *)c->block_urls;
    if (dmf_blocklist_same(l->blocklist, pats, c->n_block_urls))
        return;
    char err[256];
    struct dmf_blocklist *b = dmf_blocklist_new(pats, c->n_block_urls, err, sizeof(err));
    if (b == NULL) {
        dmf_warn("manager: the cluster's block list is not applied (keeping the %zu pattern(s) "
                 "in force): %s",
                 dmf_blocklist_count(l->blocklist), err);
        return;
    }
    dmf_info("manager: cluster block list: %zu URL pattern(s) (was %zu)", dmf_blocklist_count(b),
             dmf_blocklist_count(l->blocklist));
    dmf_blocklist_free(l->blocklist);
    l->blocklist = b;
}

static bool same_apps(const struct dmf_strlist *have, char *const *names, size_t n)
{
    if (have->n != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (strcmp(have->v[i], names[i]) != 0)
            return false;
    return true;
}

/* The cluster's block_applications: valid names only (the manager checks them too), at
 * most DMF_BLOCKLIST_MAX; an invalid list keeps the one in force. */
static void apply_block_apps(struct dmf_daemon_manager_link *l,
                             const Damselfly__V1__DynamicConfig *c)
{
    if (same_apps(&l->block_apps, c->block_applications, c->n_block_applications))
        return;
    char err[160];
    if (c->n_block_applications > DMF_BLOCKLIST_MAX) {
        dmf_warn("manager: the cluster's %zu blocked applications are not applied (at most %d; "
                 "keeping the %zu in force)",
                 c->n_block_applications, DMF_BLOCKLIST_MAX, l->block_apps.n);
        return;
    }
    for (size_t i = 0; i < c->n_block_applications; i++) {
        const char *name = c->block_applications[i];
        if (name == NULL || name[0] == '\0' || dmf_application_check(name, err, sizeof(err)) != 0) {
            dmf_warn("manager: the cluster's blocked applications are not applied (keeping the "
                     "%zu in force): entry %zu: %s",
                     l->block_apps.n, i, name && name[0] ? err : "empty");
            return;
        }
    }
    dmf_info("manager: cluster block list: %zu application(s) (was %zu)", c->n_block_applications,
             l->block_apps.n);
    dmf_strlist_free(&l->block_apps);
    for (size_t i = 0; i < c->n_block_applications; i++)
        dmf_strlist_push(&l->block_apps, c->block_applications[i]);
}

static void apply_list(struct dmf_daemon_manager_link *l,
                       const Damselfly__V1__ListSchedulersResponse *resp)
{
    struct dmf_daemon *d = l->d;
    if (resp->refresh_interval_ms >= 100 && resp->refresh_interval_ms != l->interval_ms &&
        l->poll) {
        l->interval_ms = resp->refresh_interval_ms;
        struct timeval tv = {(time_t)(l->interval_ms / 1000),
                             (suseconds_t)(l->interval_ms % 1000) * 1000};
        evtimer_add(l->poll, &tv);
    } else if (resp->refresh_interval_ms >= 100) {
        l->interval_ms = resp->refresh_interval_ms;
    }
    if (resp->config) {
        const Damselfly__V1__DynamicConfig *c = resp->config;
        if (c->candidate_limit != l->candidate_limit ||
            c->download_rate_limit != l->download_rate_limit ||
            c->upload_rate_limit != l->upload_rate_limit) {
            dmf_info("manager: cluster %llu config: candidate limit %u, download limit %llu B/s,"
                     " upload limit %llu B/s (0 = none; the lower of these and the local ones "
                     "applies)",
                     (unsigned long long)resp->cluster_id, c->candidate_limit,
                     (unsigned long long)c->download_rate_limit,
                     (unsigned long long)c->upload_rate_limit);
            struct dmf_limits ml = {.download = c->download_rate_limit,
                                    .upload = c->upload_rate_limit};
            if (d->throttle)
                dmf_daemon_limits_set_manager(d, &ml);
        }
        l->candidate_limit = c->candidate_limit;
        l->download_rate_limit = c->download_rate_limit;
        l->upload_rate_limit = c->upload_rate_limit;
        apply_cache_limit(d, c->cache_limit);
        apply_blocklist(l, c);
        apply_block_apps(l, c);
    }
    if (l->pinned)
        return;
    char addr[300];
    bool current = false;
    for (size_t i = 0; i < resp->n_schedulers && d->cfg.scheduler; i++) {
        snprintf(addr, sizeof(addr), "%s:%u", resp->schedulers[i]->ip, resp->schedulers[i]->port);
        if (strcmp(addr, d->cfg.scheduler) == 0)
            current = true;
    }
    if (current)
        return;
    if (resp->n_schedulers == 0) {
        if (d->cfg.scheduler)
            dmf_warn("manager: no active scheduler in cluster %llu (keeping %s)",
                     (unsigned long long)resp->cluster_id, d->cfg.scheduler);
        return;
    }
    /* Spread hosts over the cluster's schedulers by host ID. */
    size_t pick = 0;
    if (d->cfg.host_id) {
        unsigned h = 5381;
        for (const char *p = d->cfg.host_id; *p; p++)
            h = h * 33 + (unsigned char)*p;
        pick = h % resp->n_schedulers;
    }
    snprintf(addr, sizeof(addr), "%s:%u", resp->schedulers[pick]->ip, resp->schedulers[pick]->port);
    dmf_info("manager: scheduler %s (was %s)", addr, d->cfg.scheduler ? d->cfg.scheduler : "none");
    if (d->engine) {
        dmf_engine_set_scheduler(d, addr);
    } else {
        free(d->cfg.scheduler);
        d->cfg.scheduler = dmf_xstrdup(addr);
    }
}

static void on_list(void *arg, const Damselfly__V1__ListSchedulersResponse *resp, const char *err)
{
    struct dmf_daemon_manager_link *l = arg;
    l->in_flight = false;
    l->list = NULL; /* freed after this returns */
    if (!resp) {
        dmf_warn("manager: no answer from any manager (%s)", err);
        resolve_end(l, "unanswered");
        return;
    }
    apply_list(l, resp);
    resolve_end(l, "answered");
}

static void ask(struct dmf_daemon_manager_link *l, uint64_t timeout_ms)
{
    struct dmf_daemon *d = l->d;
    if (l->in_flight)
        return;
    Damselfly__V1__ListSchedulersRequest req = DAMSELFLY__V1__LIST_SCHEDULERS_REQUEST__INIT;
    req.host_id = d->cfg.host_id ? d->cfg.host_id : "";
    req.hostname = d->cfg.hostname ? d->cfg.hostname : "";
    req.ip = d->cfg.ip ? d->cfg.ip : "";
    req.idc = d->cfg.idc ? d->cfg.idc : "";
    req.location = d->cfg.location ? d->cfg.location : "";
    req.seed = d->cfg.seed;
    req.rpc_port = d->rpc_port > 0 ? (uint32_t)d->rpc_port : 0;
    req.piece_port = d->piece_port;
    l->in_flight = true;
    l->list = dmf_manager_list_schedulers(d->rpc, &d->cfg.manager, &req, timeout_ms, on_list, l);
}

static void on_resolve_timeout(evutil_socket_t fd, short what, void *arg)
{
    resolve_end(arg, "timed out (asking on)");
}

bool dmf_daemon_manager_resolve(struct dmf_daemon *d, uint64_t timeout_ms,
                                dmf_manager_resolved_cb resolved, void *arg)
{
    if (d->cfg.manager.n == 0)
        return false;
    struct dmf_daemon_manager_link *l = link_of(d);
    l->resolved = resolved;
    l->resolved_arg = arg;
    l->resolve_timer = dmf_xevtimer_new(d->base, on_resolve_timeout, l);
    struct timeval tv = {(time_t)(timeout_ms / 1000), (suseconds_t)(timeout_ms % 1000) * 1000};
    evtimer_add(l->resolve_timer, &tv);
    ask(l, timeout_ms);
    return true;
}

static void on_poll(evutil_socket_t fd, short what, void *arg)
{
    ask(arg, 3000);
}

void dmf_daemon_manager_link_start(struct dmf_daemon *d)
{
    if (d->cfg.manager.n == 0)
        return;
    struct dmf_daemon_manager_link *l = link_of(d);
    l->poll = dmf_xevent_new(d->base, -1, EV_PERSIST, on_poll, l);
    struct timeval tv = {(time_t)(l->interval_ms / 1000),
                         (suseconds_t)(l->interval_ms % 1000) * 1000};
    evtimer_add(l->poll, &tv);
    ask(l, 3000); /* now with the host ID, so the manager lists this host */
    if (d->cfg.seed) {
        struct dmf_manager_component c = {
            .seed = true,
            .hostname = d->cfg.hostname,
            .ip = d->cfg.ip,
            .port = (uint32_t)d->rpc_port,
            .piece_port = d->piece_port,
            .idc = d->cfg.idc,
            .location = d->cfg.location,
        };
        l->keepalive = dmf_manager_keepalive_new(d->base, d->rpc, &d->cfg.manager, &c, NULL, NULL);
    }
}

void dmf_daemon_manager_link_free(struct dmf_daemon *d)
{
    struct dmf_daemon_manager_link *l = d->manager_link;
    if (!l)
        return;
    dmf_manager_list_cancel(l->list);
    if (l->resolve_timer)
        event_free(l->resolve_timer);
    dmf_manager_keepalive_free(l->keepalive);
    if (l->poll)
        event_free(l->poll);
    dmf_blocklist_free(l->blocklist);
    dmf_strlist_free(&l->block_apps);
    free(l);
    d->manager_link = NULL;
}

const char *dmf_daemon_url_blocked(struct dmf_daemon *d, const char *url)
{
    struct dmf_daemon_manager_link *l = d->manager_link;
    if (l == NULL || dmf_blocklist_count(l->blocklist) == 0 || url == NULL)
        return NULL;
    char *shown = dmf_url_redact(url, &d->cfg.secret_query);
    const char *hit = dmf_blocklist_match(l->blocklist, shown ? shown : url);
    free(shown);
    return hit;
}

bool dmf_daemon_application_blocked(struct dmf_daemon *d, const char *application)
{
    struct dmf_daemon_manager_link *l = d->manager_link;
    if (l == NULL || application == NULL || application[0] == '\0')
        return false;
    for (size_t i = 0; i < l->block_apps.n; i++)
        if (strcmp(l->block_apps.v[i], application) == 0)
            return true;
    return false;
}
