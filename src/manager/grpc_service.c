/* The manager's gRPC service; see grpc_service.h. */
#include "manager/grpc_service.h"

#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "common/log.h"
#include "common/metrics.h"
#include "common/tls_identity.h"
#include "common/util.h"
#include "damselfly/v1/manager.pb-c.h"
#include "manager/scope.h"

#define METHOD_PREFIX "/damselfly.v1.Manager/"
#define FIELD_MAX     256

static DMF_METRIC_GAUGE(m_streams, "damselfly_manager_keepalive_streams", NULL,
                        "KeepAlive streams held by schedulers and seed peers.");
static DMF_METRIC_COUNTER(m_list, "damselfly_manager_list_schedulers_total", NULL,
                          "ListSchedulers calls answered.");

enum method { M_KEEPALIVE, M_LIST_SCHEDULERS };

struct call {
    dmf_manager_grpc_t *g;
    dmf_rpc_call_t *rpc_call;
    enum method method;
    bool ended;    /* on_end ran: the rpc call is released */
    bool finished; /* our status is on its way */
    int jobs;      /* database jobs in flight that point at this call */
    /* KeepAlive */
    bool registered;
    bool seed;
    int64_t component_id;
    char what[300]; /* "scheduler host 1.2.3.4:8002", for the log */
    struct event *timeout;
    LIST_ENTRY(call) link;
};

struct dmf_manager_grpc {
    struct dmf_manager *m;
    dmf_rpc_server_t *server;
    LIST_HEAD(, call) calls;
};

/* One database job for a call. */
struct db_job {
    struct call *c;
    struct dmf_manager *m;
    int kind;                      /* JOB_* */
    Damselfly__V1__Component comp; /* register: copied strings */
    Damselfly__V1__ListSchedulersRequest list;
    int64_t component_id;
    bool seed;
    /* results */
    int rc;
    char err[256];
    int64_t cluster_id;
    json_t *config;
    json_t *schedulers;
};

enum { JOB_REGISTER, JOB_PING, JOB_INACTIVE, JOB_LIST };

static void i64s(int64_t v, char out[24])
{
    snprintf(out, 24, "%lld", (long long)v);
}

static void call_maybe_free(struct call *c)
{
    if (!c->ended || c->jobs > 0)
        return;
    LIST_REMOVE(c, link);
    if (c->timeout)
        event_free(c->timeout);
    free(c);
}

static void call_finish(struct call *c, grpc_status_code st, const char *detail)
{
    if (c->finished || c->ended)
        return;
    c->finished = true;
    if (st != GRPC_STATUS_OK)
        dmf_warn("manager rpc from %s: %s", dmf_rpc_call_peer(c->rpc_call), detail);
    dmf_rpc_call_finish(c->rpc_call, st, detail);
}

/* ---- worker side */

/* The cluster's config object (a new reference), or an empty object. */
static json_t *cluster_config(dmf_mdb_t *db, int64_t cluster_id)
{
    char id[24];
    i64s(cluster_id, id);
    const char *p[] = {id};
    json_t *row = dmf_mdb_row(db, "SELECT config FROM clusters WHERE id = $1", p, 1, NULL, 0);
    json_t *cfg =
        row ? json_loads(json_string_value(json_object_get(row, "config")) ?: "{}", 0, NULL) : NULL;
    json_decref(row);
    return cfg ?: json_object();
}

static int64_t default_cluster(dmf_mdb_t *db)
{
    json_t *row = dmf_mdb_row(
        db, "SELECT id FROM clusters ORDER BY is_default DESC, id ASC LIMIT 1", NULL, 0, NULL, 0);
    int64_t id = row ? json_integer_value(json_object_get(row, "id")) : 0;
    json_decref(row);
    return id;
}

static void job_register(struct db_job *j)
{
    dmf_mdb_t *db = j->m->db;
    const Damselfly__V1__Component *c = &j->comp;
    int64_t cl = (int64_t)c->cluster_id;
    if (cl > 0) {
        char id[24];
        i64s(cl, id);
        const char *p[] = {id};
        json_t *row = dmf_mdb_row(db, "SELECT id FROM clusters WHERE id = $1", p, 1, NULL, 0);
        if (!row) {
            j->rc = -ENOENT;
            snprintf(j->err, sizeof(j->err), "no cluster %lld", (long long)cl);
            return;
        }
        json_decref(row);
    } else {
        cl = default_cluster(db);
        if (cl == 0) {
            j->rc = -ENOENT;
            snprintf(j->err, sizeof(j->err), "no cluster to join");
            return;
        }
    }
    char cls[24], port[24], pport[24], now[24];
    i64s(cl, cls);
    i64s(c->port, port);
    i64s(c->piece_port, pport);
    i64s(dmf_manager_now(), now);
    json_t *rows = NULL;
    if (j->seed) {
        const char *p[] = {cls, c->hostname, c->ip, port, pport, c->idc, c->location, now};
        j->rc = dmf_mdb_exec(
            db,
            "INSERT INTO seed_peers (cluster_id, hostname, ip, port, piece_port, idc, location,"
            " state, last_keepalive_at, created_at, updated_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, 'active', $8, $8, $8)"
            " ON CONFLICT (cluster_id, ip, port) DO UPDATE SET hostname = $2, piece_port = $5,"
            " idc = $6, location = $7, state = 'active', last_keepalive_at = $8, updated_at = $8"
            " RETURNING id",
            p, 8, &rows, j->err, sizeof(j->err));
    } else {
        const char *p[] = {cls, c->hostname, c->ip, port, c->idc, c->location, now};
        j->rc = dmf_mdb_exec(
            db,
            "INSERT INTO schedulers (cluster_id, hostname, ip, port, idc, location,"
            " state, last_keepalive_at, created_at, updated_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, 'active', $7, $7, $7)"
            " ON CONFLICT (cluster_id, ip, port) DO UPDATE SET hostname = $2, idc = $5,"
            " location = $6, state = 'active', last_keepalive_at = $7, updated_at = $7"
            " RETURNING id",
            p, 7, &rows, j->err, sizeof(j->err));
    }
    if (j->rc == 0) {
        j->component_id = json_integer_value(json_object_get(json_array_get(rows, 0), "id"));
        j->cluster_id = cl;
        j->config = cluster_config(db, cl);
    }
    json_decref(rows);
}

static void job_ping_or_inactive(struct db_job *j, bool inactive)
{
    char id[24], now[24];
    i64s(j->component_id, id);
    i64s(dmf_manager_now(), now);
    const char *p[] = {id, now};
    const char *sql =
        j->seed ? (inactive ? "UPDATE seed_peers SET state = 'inactive', updated_at = $2"
                              " WHERE id = $1 RETURNING cluster_id"
                            : "UPDATE seed_peers SET state = 'active', last_keepalive_at = $2"
                              " WHERE id = $1 RETURNING cluster_id")
                : (inactive ? "UPDATE schedulers SET state = 'inactive', updated_at = $2"
                              " WHERE id = $1 RETURNING cluster_id"
                            : "UPDATE schedulers SET state = 'active', last_keepalive_at = $2"
                              " WHERE id = $1 RETURNING cluster_id");
    json_t *rows = NULL;
    j->rc = dmf_mdb_exec(j->m->db, sql, p, 2, &rows, j->err, sizeof(j->err));
    if (j->rc == 0 && json_array_size(rows) == 0) {
        j->rc = -ENOENT;
        snprintf(j->err, sizeof(j->err), "deleted through the API");
    }
    if (j->rc == 0 && !inactive) {
        j->cluster_id = json_integer_value(json_object_get(json_array_get(rows, 0), "cluster_id"));
        j->config = cluster_config(j->m->db, j->cluster_id);
    }
    json_decref(rows);
}

static void job_list(struct db_job *j)
{
    dmf_mdb_t *db = j->m->db;
    const Damselfly__V1__ListSchedulersRequest *q = &j->list;
    json_t *clusters = NULL;
    j->rc = dmf_mdb_exec(db, "SELECT id, scopes, is_default FROM clusters ORDER BY id", NULL, 0,
                         &clusters, j->err, sizeof(j->err));
    if (j->rc != 0)
        return;
    int best = 0;
    int64_t pick = 0, def = 0;
    size_t i;
    json_t *c;
    json_array_foreach(clusters, i, c)
    {
        int64_t id = json_integer_value(json_object_get(c, "id"));
        if (def == 0 || json_integer_value(json_object_get(c, "is_default")))
            def = json_integer_value(json_object_get(c, "is_default")) || def == 0 ? id : def;
        json_t *sc = json_loads(json_string_value(json_object_get(c, "scopes")) ?: "{}", 0, NULL);
        int s = dmf_scope_score(sc, q->hostname, q->ip, q->idc, q->location);
        json_decref(sc);
        if (s > best) {
            best = s;
            pick = id;
        }
    }
    json_decref(clusters);
    j->cluster_id = pick ? pick : def;
    if (j->cluster_id == 0) {
        j->schedulers = json_array();
        j->config = json_object();
        return;
    }
    char cls[24], since[24], now[24];
    i64s(j->cluster_id, cls);
    i64s(dmf_manager_now() - (int64_t)(j->m->keepalive_timeout_ms + 999) / 1000, since);
    i64s(dmf_manager_now(), now);
    const char *p[] = {cls, since};
    j->rc = dmf_mdb_exec(db,
                         "SELECT id, hostname, ip, port FROM schedulers WHERE cluster_id = $1"
                         " AND state = 'active' AND last_keepalive_at >= $2 ORDER BY id",
                         p, 2, &j->schedulers, j->err, sizeof(j->err));
    if (j->rc != 0)
        return;
    j->config = cluster_config(db, j->cluster_id);
    if (q->host_id && *q->host_id) {
        /* The ports too: jobs reach hosts at their rpc port (scope all_peers, delete_task). */
        char rpc[12], piece[12];
        snprintf(rpc, sizeof(rpc), "%u", q->rpc_port <= 65535 ? q->rpc_port : 0);
        snprintf(piece, sizeof(piece), "%u", q->piece_port <= 65535 ? q->piece_port : 0);
        const char *hp[] = {
            q->host_id, q->hostname, q->ip, q->idc, q->location, q->seed ? "seed" : "normal",
            cls,        now,         rpc,   piece};
        (void)dmf_mdb_exec(db,
                           "INSERT INTO hosts (host_id, hostname, ip, idc, location, type,"
                           " cluster_id, last_seen_at, created_at, rpc_port, piece_port)"
                           " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, $10)"
                           " ON CONFLICT (host_id) DO UPDATE SET hostname = $2, ip = $3,"
                           " idc = $4, location = $5, type = $6, cluster_id = $7,"
                           " last_seen_at = $8, rpc_port = $9, piece_port = $10",
                           hp, 10, NULL, NULL, 0);
    }
}

static void db_work(void *arg)
{
    struct db_job *j = arg;
    dmf_mdb_lock(j->m->db);
    switch (j->kind) {
    case JOB_REGISTER:
        job_register(j);
        break;
    case JOB_PING:
        job_ping_or_inactive(j, false);
        break;
    case JOB_INACTIVE:
        job_ping_or_inactive(j, true);
        break;
    case JOB_LIST:
        job_list(j);
        break;
    }
    dmf_mdb_unlock(j->m->db);
}

/* ---- loop side */

static void fill_config(Damselfly__V1__DynamicConfig *dc, json_t *cfg, char ***bu, char ***ba)
{
    damselfly__v1__dynamic_config__init(dc);
    dc->candidate_limit = (uint32_t)json_integer_value(json_object_get(cfg, "candidate_limit"));
    dc->download_rate_limit =
        (uint64_t)json_integer_value(json_object_get(cfg, "download_rate_limit"));
    dc->upload_rate_limit = (uint64_t)json_integer_value(json_object_get(cfg, "upload_rate_limit"));
    dc->cache_limit = (uint64_t)json_integer_value(json_object_get(cfg, "cache_limit"));
    json_t *u = json_object_get(cfg, "block_urls"), *a = json_object_get(cfg, "block_applications");
    *bu = dmf_xcalloc(json_array_size(u) + 1, sizeof(char *));
    *ba = dmf_xcalloc(json_array_size(a) + 1, sizeof(char *));
    size_t i;
    json_t *e;
    json_array_foreach(u, i, e)(*bu)[dc->n_block_urls++] = (char *)json_string_value(e);
    json_array_foreach(a, i, e)(*ba)[dc->n_block_applications++] = (char *)json_string_value(e);
    dc->block_urls = *bu;
    dc->block_applications = *ba;
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct call *c = arg;
    dmf_warn("%s: no keepalive for %llu ms: inactive", c->what,
             (unsigned long long)c->g->m->keepalive_timeout_ms);
    if (!c->ended)
        dmf_rpc_call_cancel(c->rpc_call);
}

static void arm_timeout(struct call *c)
{
    uint64_t ms = c->g->m->keepalive_timeout_ms;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    if (!c->timeout)
        c->timeout = evtimer_new(c->g->m->base, on_timeout, c);
    evtimer_add(c->timeout, &tv);
}

static void free_job(struct db_job *j)
{
    free(j->comp.hostname);
    free(j->comp.ip);
    free(j->comp.idc);
    free(j->comp.location);
    free(j->list.host_id);
    free(j->list.hostname);
    free(j->list.ip);
    free(j->list.idc);
    free(j->list.location);
    json_decref(j->config);
    json_decref(j->schedulers);
    free(j);
}

static void db_done(void *arg)
{
    struct db_job *j = arg;
    struct call *c = j->c;
    if (c) {
        c->jobs--;
    }
    if (j->kind == JOB_INACTIVE) {
        if (j->rc == 0)
            dmf_info("%s (id %lld): inactive", c ? c->what : "component",
                     (long long)j->component_id);
        goto out;
    }
    if (!c || c->ended || c->finished)
        goto out;
    if (j->rc != 0) {
        call_finish(c,
                    j->rc == -ENOENT   ? GRPC_STATUS_NOT_FOUND
                    : j->rc == -EINVAL ? GRPC_STATUS_INVALID_ARGUMENT
                                       : GRPC_STATUS_UNAVAILABLE,
                    j->err);
        goto out;
    }
    char **bu = NULL, **ba = NULL;
    Damselfly__V1__DynamicConfig dc;
    fill_config(&dc, j->config, &bu, &ba);
    if (j->kind == JOB_LIST) {
        size_t n = json_array_size(j->schedulers);
        Damselfly__V1__SchedulerAddr *sa = dmf_xcalloc(n + 1, sizeof(*sa));
        Damselfly__V1__SchedulerAddr **psa = dmf_xcalloc(n + 1, sizeof(*psa));
        for (size_t i = 0; i < n; i++) {
            json_t *s = json_array_get(j->schedulers, i);
            damselfly__v1__scheduler_addr__init(&sa[i]);
            sa[i].id = (uint64_t)json_integer_value(json_object_get(s, "id"));
            sa[i].hostname = (char *)json_string_value(json_object_get(s, "hostname"));
            sa[i].ip = (char *)json_string_value(json_object_get(s, "ip"));
            sa[i].port = (uint32_t)json_integer_value(json_object_get(s, "port"));
            psa[i] = &sa[i];
        }
        Damselfly__V1__ListSchedulersResponse resp = DAMSELFLY__V1__LIST_SCHEDULERS_RESPONSE__INIT;
        resp.cluster_id = (uint64_t)j->cluster_id;
        resp.n_schedulers = n;
        resp.schedulers = psa;
        resp.config = &dc;
        resp.refresh_interval_ms = (uint32_t)c->g->m->config_interval_ms;
        dmf_rpc_call_send(c->rpc_call, &resp.base);
        call_finish(c, GRPC_STATUS_OK, NULL);
        dmf_metric_add(&m_list, 1);
        free(sa);
        free(psa);
    } else {
        if (j->kind == JOB_REGISTER) {
            c->component_id = j->component_id;
            dmf_info("%s registered (id %lld, cluster %lld): active", c->what,
                     (long long)j->component_id, (long long)j->cluster_id);
        }
        Damselfly__V1__KeepAliveResponse resp = DAMSELFLY__V1__KEEP_ALIVE_RESPONSE__INIT;
        resp.cluster_id = (uint64_t)j->cluster_id;
        resp.config = &dc;
        resp.keepalive_timeout_ms = (uint32_t)c->g->m->keepalive_timeout_ms;
        dmf_rpc_call_send(c->rpc_call, &resp.base);
    }
    free(bu);
    free(ba);
out:
    if (c)
        call_maybe_free(c);
    free_job(j);
}

static void submit(struct call *c, struct db_job *j)
{
    j->c = c;
    j->m = c ? c->g->m : j->m;
    if (c)
        c->jobs++;
    dmf_workq_submit(j->m->wq, db_work, db_done, j);
}

static char *bounded_dup(const char *s)
{
    s = s ? s : "";
    return dmf_xstrndup(s, FIELD_MAX);
}

static void keepalive_message(struct call *c, const uint8_t *data, size_t len)
{
    if (!data) { /* the component closed its side: it is leaving */
        call_finish(c, GRPC_STATUS_OK, NULL);
        return;
    }
    Damselfly__V1__KeepAliveRequest *req =
        damselfly__v1__keep_alive_request__unpack(NULL, len, data);
    if (!req) {
        call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, "malformed KeepAliveRequest");
        return;
    }
    struct db_job *j = dmf_xcalloc(1, sizeof(*j));
    if (req->msg_case == DAMSELFLY__V1__KEEP_ALIVE_REQUEST__MSG_REGISTER && !c->registered) {
        const Damselfly__V1__Component *m = req->register_;
        if (!m->ip || !*m->ip || m->port == 0 || m->port > 65535 || strlen(m->ip) > 64 ||
            (m->hostname && strlen(m->hostname) > FIELD_MAX)) {
            free(j);
            damselfly__v1__keep_alive_request__free_unpacked(req, NULL);
            call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, "register needs an ip and a port");
            return;
        }
        /* With TLS, a scheduler registers only with a scheduler certificate and a seed peer
         * only with a seed certificate: nobody else gets jobs or peers sent its way. */
        const struct dmf_tls_identity *caller = dmf_rpc_call_identity(c->rpc_call);
        bool seed = m->type == DAMSELFLY__V1__COMPONENT_TYPE__COMPONENT_TYPE_SEED_PEER;
        if (caller && caller->role != (seed ? DMF_TLS_ROLE_SEED : DMF_TLS_ROLE_SCHEDULER)) {
            free(j);
            damselfly__v1__keep_alive_request__free_unpacked(req, NULL);
            call_finish(c, GRPC_STATUS_PERMISSION_DENIED,
                        seed ? "only a seed certificate may register a seed peer"
                             : "only a scheduler certificate may register a scheduler");
            return;
        }
        c->registered = true;
        c->seed = seed;
        snprintf(c->what, sizeof(c->what), "%s %s at %s:%u", c->seed ? "seed peer" : "scheduler",
                 m->hostname ? m->hostname : "", m->ip, m->port);
        j->kind = JOB_REGISTER;
        j->seed = c->seed;
        damselfly__v1__component__init(&j->comp);
        j->comp.type = m->type;
        j->comp.port = m->port;
        j->comp.piece_port = m->piece_port;
        j->comp.cluster_id = m->cluster_id;
        j->comp.hostname = bounded_dup(m->hostname);
        j->comp.ip = bounded_dup(m->ip);
        j->comp.idc = bounded_dup(m->idc);
        j->comp.location = bounded_dup(m->location);
    } else if (req->msg_case == DAMSELFLY__V1__KEEP_ALIVE_REQUEST__MSG_PING && c->registered) {
        if (c->component_id == 0) { /* registration still on its way */
            free(j);
            damselfly__v1__keep_alive_request__free_unpacked(req, NULL);
            arm_timeout(c);
            return;
        }
        j->kind = JOB_PING;
        j->seed = c->seed;
        j->component_id = c->component_id;
    } else {
        free(j);
        damselfly__v1__keep_alive_request__free_unpacked(req, NULL);
        call_finish(c, GRPC_STATUS_INVALID_ARGUMENT,
                    c->registered ? "already registered" : "register first");
        return;
    }
    damselfly__v1__keep_alive_request__free_unpacked(req, NULL);
    arm_timeout(c);
    submit(c, j);
}

static void list_message(struct call *c, const uint8_t *data, size_t len)
{
    if (!data) {
        if (!c->registered) /* reused as "a request arrived" */
            call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, "no request message");
        return;
    }
    if (c->registered) {
        call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, "one request per call");
        return;
    }
    c->registered = true;
    Damselfly__V1__ListSchedulersRequest *req =
        damselfly__v1__list_schedulers_request__unpack(NULL, len, data);
    if (!req) {
        call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, "malformed ListSchedulersRequest");
        return;
    }
    /* With TLS, a daemon lists itself (its host row) only under its certificate's ID. */
    if (req->host_id && *req->host_id &&
        !dmf_tls_may_act_for(dmf_rpc_call_identity(c->rpc_call), req->host_id)) {
        damselfly__v1__list_schedulers_request__free_unpacked(req, NULL);
        call_finish(c, GRPC_STATUS_PERMISSION_DENIED,
                    "the host ID is not the one in the caller's certificate");
        return;
    }
    struct db_job *j = dmf_xcalloc(1, sizeof(*j));
    j->kind = JOB_LIST;
    damselfly__v1__list_schedulers_request__init(&j->list);
    j->list.host_id = bounded_dup(req->host_id);
    j->list.hostname = bounded_dup(req->hostname);
    j->list.ip = bounded_dup(req->ip);
    j->list.idc = bounded_dup(req->idc);
    j->list.location = bounded_dup(req->location);
    j->list.seed = req->seed;
    j->list.rpc_port = req->rpc_port <= 65535 ? req->rpc_port : 0;
    j->list.piece_port = req->piece_port <= 65535 ? req->piece_port : 0;
    damselfly__v1__list_schedulers_request__free_unpacked(req, NULL);
    submit(c, j);
}

static void call_on_message(void *arg, dmf_rpc_call_t *call, const uint8_t *data, size_t len)
{
    struct call *c = arg;
    if (c->finished || c->ended)
        return;
    if (c->method == M_KEEPALIVE)
        keepalive_message(c, data, len);
    else
        list_message(c, data, len);
}

static void call_on_end(void *arg, dmf_rpc_call_t *call, grpc_status_code status,
                        const char *details)
{
    struct call *c = arg;
    c->ended = true;
    dmf_rpc_call_release(c->rpc_call);
    c->rpc_call = NULL;
    if (c->timeout)
        evtimer_del(c->timeout);
    if (c->method == M_KEEPALIVE && c->registered) {
        dmf_metric_add(&m_streams, -1);
        dmf_info("%s: keepalive stream ended", c->what);
        if (c->component_id && !c->g->m->stopping) {
            struct db_job *j = dmf_xcalloc(1, sizeof(*j));
            j->kind = JOB_INACTIVE;
            j->seed = c->seed;
            j->component_id = c->component_id;
            submit(c, j);
        }
    }
    call_maybe_free(c);
}

static const struct dmf_rpc_call_handler handler = {
    .on_message = call_on_message,
    .on_end = call_on_end,
};

static void on_call(void *arg, dmf_rpc_call_t *rpc_call, const char *method)
{
    dmf_manager_grpc_t *g = arg;
    size_t pl = strlen(METHOD_PREFIX);
    int m = -1;
    if (strncmp(method, METHOD_PREFIX, pl) == 0) {
        if (strcmp(method + pl, "KeepAlive") == 0)
            m = M_KEEPALIVE;
        else if (strcmp(method + pl, "ListSchedulers") == 0)
            m = M_LIST_SCHEDULERS;
    }
    if (m < 0 || g->m->stopping) {
        dmf_rpc_call_finish(rpc_call, GRPC_STATUS_UNIMPLEMENTED, "unknown method");
        dmf_rpc_call_release(rpc_call);
        return;
    }
    struct call *c = dmf_xcalloc(1, sizeof(*c));
    c->g = g;
    c->rpc_call = rpc_call;
    c->method = (enum method)m;
    snprintf(c->what, sizeof(c->what), "component from %s", dmf_rpc_call_peer(rpc_call));
    LIST_INSERT_HEAD(&g->calls, c, link);
    if (m == M_KEEPALIVE) {
        dmf_metric_add(&m_streams, 1);
        c->registered = false;
        arm_timeout(c);
    }
    dmf_rpc_call_set_handler(rpc_call, &handler, c);
}

dmf_manager_grpc_t *dmf_manager_grpc_new(struct dmf_manager *m)
{
    dmf_manager_grpc_t *g = dmf_xcalloc(1, sizeof(*g));
    g->m = m;
    LIST_INIT(&g->calls);
    g->server = dmf_rpc_server_new(m->rpc, on_call, g);
    dmf_metric_register(&m_streams);
    dmf_metric_register(&m_list);
    return g;
}

int dmf_manager_grpc_listen(dmf_manager_grpc_t *g, const char *addr, int *bound_port, char *err,
                            size_t errlen)
{
    return dmf_rpc_server_listen(g->server, addr, bound_port, err, errlen);
}

void dmf_manager_grpc_start(dmf_manager_grpc_t *g)
{
    dmf_rpc_server_start(g->server);
}

void dmf_manager_grpc_stop(dmf_manager_grpc_t *g)
{
    if (!g || !g->server)
        return;
    dmf_rpc_server_free(g->server);
    g->server = NULL;
    /* Calls whose end was not reported: release them (no callback after this). Jobs still
     * queued keep their call until dmf_workq_free runs their done(). */
    struct call *c, *next;
    for (c = LIST_FIRST(&g->calls); c; c = next) {
        next = LIST_NEXT(c, link);
        if (!c->ended) {
            c->ended = true;
            dmf_rpc_call_release(c->rpc_call);
            c->rpc_call = NULL;
        }
        if (c->timeout)
            evtimer_del(c->timeout);
        call_maybe_free(c);
    }
}

void dmf_manager_grpc_free(dmf_manager_grpc_t *g)
{
    if (!g)
        return;
    dmf_manager_grpc_stop(g);
    while (!LIST_EMPTY(&g->calls)) {
        struct call *c = LIST_FIRST(&g->calls);
        c->jobs = 0;
        call_maybe_free(c);
    }
    free(g);
}
