/* The job runner; see jobs.h and docs/internals/MANAGER.md.
 *
 * Every second (and at once when the API creates or cancels a job) one database job runs
 * on a worker: it renews this manager's lease on the jobs it runs, lists which of them are
 * still running (a cancelled one is not), and claims pending jobs and jobs whose lease ran
 * out (their manager died) with an UPDATE that only one manager can win. A claimed job's
 * work items are (URL, target host) pairs: resolved from the seed peers and hosts tables at
 * the first claim and stored in the job's result, so a resumed job redoes only what had not
 * succeeded. A preheat or delete item is handed to an active scheduler of the target's
 * cluster (Scheduler.RunJobItem, named "<job id>.<created_at>/<index>"), which calls the
 * target's Daemon service (DownloadTask, DeleteTask) with the cluster's identity and
 * streams the result back; a scheduler that is unreachable, dies mid-item or does not know
 * the host is replaced by the next active one of the cluster, and a resumed job asks the
 * scheduler it had given the item to first (which attaches the call to the running item).
 * get_task items are StatTask calls on every scheduler. */
#include "manager/jobs.h"

#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "common/log.h"
#include "common/metrics.h"
#include "common/tls_expect.h"
#include "common/util.h"
#include "damselfly/v1/common.pb-c.h"
#include "damselfly/v1/scheduler.pb-c.h"
#include "manager/image.h"
#include "manager/job_secrets.h"

#define LEASE_S       5 /* a running job whose lease is older than this is claimed again */
#define MAX_RUNS      8 /* jobs one manager runs at once */
#define ITEM_TIMEOUT  (30 * 60 * 1000)
#define ITEM_ATTEMPTS 60   /* schedulers asked for one item (about a second apart) */
#define RETRY_MS      1000 /* between two attempts of one item */

static DMF_METRIC_COUNTER(m_jobs_ok, "damselfly_manager_jobs_total", "result=\"succeeded\"",
                          "Jobs finished, by result.");
static DMF_METRIC_COUNTER(m_jobs_failed, "damselfly_manager_jobs_total", "result=\"failed\"",
                          "Jobs finished, by result.");
static DMF_METRIC_GAUGE(m_jobs_running, "damselfly_manager_jobs_running", NULL,
                        "Jobs this manager is carrying out.");

enum item_state { ITEM_PENDING, ITEM_RUNNING, ITEM_SUCCEEDED, ITEM_FAILED };
static const char *const item_state_names[] = {"pending", "running", "succeeded", "failed"};

struct run;

struct item {
    struct run *run;
    char *url;
    char *digest;        /* "sha256:..." for an image layer, or NULL */
    char *host;          /* the target's name, for the result */
    char *addr;          /* its Daemon service "IP:PORT" */
    char *host_id;       /* the target's host ID when known (hosts), else NULL (seed peers) */
    int64_t cluster_id;  /* the target's cluster (its schedulers carry the item), 0 unknown */
    char *sched;         /* the scheduler "IP:PORT" the item was last given to, or NULL */
    bool prefer_sched;   /* resumed: ask sched first, it may be running the item */
    int attempts;        /* schedulers asked so far */
    uint64_t not_before; /* a retry waits until then (dmf_now_ms) */
    bool got_done;       /* the scheduler sent the item's result */
    bool done_ok;
    enum item_state state;
    char *reason;
    uint64_t completed;
    json_t *peers; /* get_task: the peers this scheduler knows of the task */
    int removed;   /* delete_task: 1 the host dropped the task, 0 it held none, -1 unknown */
    dmf_rpc_channel_t *ch;
    dmf_rpc_call_t *call;
};

struct run {
    struct dmf_manager_jobs *jobs;
    int64_t id;
    int64_t created_at; /* with id, names the job's items at the schedulers */
    char type[16];
    json_t *args;
    struct item *items;
    size_t nitems;
    size_t running;
    int concurrency;
    bool cancelled;      /* by the API, or the job left our hands */
    bool resolving;      /* an image's manifests are being fetched */
    bool saving;         /* a progress write is in flight */
    bool dirty;          /* progress changed since the last write */
    bool done;           /* the final write is on its way */
    bool finished;       /* the final write landed */
    json_t *schedulers;  /* [{cluster_id, addr}] active schedulers, or NULL until loaded */
    bool loading;        /* a schedulers load is in flight */
    bool scheds_stale;   /* reload them before the next attempt */
    uint64_t scheds_at;  /* when they were last loaded */
    struct event *retry; /* wakes run_step for items waiting to retry */
    /* Credentials were given (args.withheld) but this manager does not hold them (it was
     * restarted, or another one created the job): an image resolves anonymously. */
    bool secrets_lost;
    LIST_ENTRY(run) link;
};

struct dmf_manager_jobs {
    struct dmf_manager *m;
    struct event *tick;
    bool ticking; /* a tick's database job is in flight */
    bool again;   /* a kick arrived meanwhile */
    int ops;      /* database jobs in flight (the runner is freed after the last) */
    bool stopping;
    size_t nruns;
    LIST_HEAD(, run) runs;
    dmf_image_resolver_t *images;
};

static void run_step(struct run *r);
static void run_free(struct run *r);

static void i64s(int64_t v, char out[24])
{
    snprintf(out, 24, "%lld", (long long)v);
}

/* ---------------------------------------------------------------- the result JSON */

static json_t *result_json(const struct run *r)
{
    json_t *items = json_array();
    size_t ok = 0, failed = 0;
    for (size_t i = 0; i < r->nitems; i++) {
        const struct item *it = &r->items[i];
        json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:I}", "url", it->url, "host", it->host, "addr",
                              it->addr, "state", item_state_names[it->state], "completed_length",
                              (json_int_t)it->completed);
        if (it->digest)
            json_object_set_new(o, "digest", json_string(it->digest));
        if (it->host_id)
            json_object_set_new(o, "host_id", json_string(it->host_id));
        if (it->cluster_id)
            json_object_set_new(o, "cluster_id", json_integer(it->cluster_id));
        if (it->sched)
            json_object_set_new(o, "scheduler", json_string(it->sched));
        if (it->attempts)
            json_object_set_new(o, "attempts", json_integer(it->attempts));
        if (it->reason)
            json_object_set_new(o, "reason", json_string(it->reason));
        if (it->peers)
            json_object_set(o, "peers", it->peers);
        if (it->removed >= 0 && strcmp(r->type, "delete_task") == 0)
            json_object_set_new(o, "removed", json_boolean(it->removed));
        json_array_append_new(items, o);
        ok += it->state == ITEM_SUCCEEDED;
        failed += it->state == ITEM_FAILED;
    }
    return json_pack("{s:o, s:I, s:I, s:I}", "items", items, "total", (json_int_t)r->nitems,
                     "succeeded", (json_int_t)ok, "failed", (json_int_t)failed);
}

/* ---------------------------------------------------------------- database work */

enum op_kind { OP_TICK, OP_SAVE, OP_FINISH, OP_TARGETS, OP_SCHEDULERS };

struct claimed {
    int64_t id;
    int64_t created_at;
    char *type;
    json_t *args;
    json_t *result;
};

struct op {
    struct dmf_manager_jobs *jobs;
    enum op_kind kind;
    struct run *run; /* SAVE, FINISH, TARGETS */
    /* TICK */
    int64_t mine[MAX_RUNS];
    size_t nmine;
    size_t want;
    json_t *still; /* ids still running for us */
    struct claimed claimed[MAX_RUNS];
    size_t nclaimed;
    /* SAVE / FINISH */
    char *result;
    const char *state;
    char reason[300];
    bool lost; /* the row was no longer ours */
    /* TARGETS */
    json_t *targets; /* [{host, addr, cluster_id[, host_id]}] */
    /* TARGETS, SCHEDULERS */
    json_t *scheds; /* [{cluster_id, addr}] */
};

static void op_tick(struct op *o)
{
    dmf_mdb_t *db = o->jobs->m->db;
    const char *me = o->jobs->m->id;
    char now[24], stale[24], e[256];
    i64s(dmf_manager_now(), now);
    i64s(dmf_manager_now() - LEASE_S, stale);
    const char *p[] = {me, now};
    /* Pending jobs reserved for this manager (it holds their credentials, job_secrets.h)
     * stay reserved while it lives, also when it runs MAX_RUNS jobs already. */
    (void)dmf_mdb_exec(db,
                       "UPDATE jobs SET claimed_at = $2 WHERE claimed_by = $1 AND"
                       " (state = 'running' OR state = 'pending')",
                       p, 2, NULL, e, sizeof(e));
    (void)dmf_mdb_exec(db, "SELECT id FROM jobs WHERE claimed_by = $1 AND state = 'running'", p, 1,
                       &o->still, e, sizeof(e));
    for (size_t n = 0; n < o->want; n++) {
        const char *cp[] = {me, now, stale};
        json_t *rows = NULL;
        /* One statement: two managers never both win the same row. */
        if (dmf_mdb_exec(db,
                         "UPDATE jobs SET state = 'running', claimed_by = $1, claimed_at = $2,"
                         " updated_at = $2 WHERE id = (SELECT id FROM jobs WHERE (state = 'pending'"
                         " AND (claimed_by IS NULL OR claimed_by = $1 OR claimed_at < $3))"
                         " OR (state = 'running' AND (claimed_at IS NULL OR claimed_at < $3)"
                         " AND claimed_by <> $1) ORDER BY id LIMIT 1)"
                         " AND ((state = 'pending' AND (claimed_by IS NULL OR claimed_by = $1 OR"
                         " claimed_at < $3)) OR (state = 'running' AND"
                         " (claimed_at IS NULL OR claimed_at < $3)))"
                         " RETURNING id, type, args, result, created_at",
                         cp, 3, &rows, e, sizeof(e)) != 0) {
            dmf_warn("jobs: claim: %s", e);
            json_decref(rows);
            break;
        }
        json_t *row = json_array_get(rows, 0);
        if (!row) {
            json_decref(rows);
            break;
        }
        struct claimed *c = &o->claimed[o->nclaimed++];
        c->id = json_integer_value(json_object_get(row, "id"));
        c->created_at = json_integer_value(json_object_get(row, "created_at"));
        c->type = dmf_xstrdup(json_string_value(json_object_get(row, "type")) ?: "");
        c->args = json_loads(json_string_value(json_object_get(row, "args")) ?: "{}", 0, NULL);
        c->result = json_loads(json_string_value(json_object_get(row, "result")) ?: "{}", 0, NULL);
        json_decref(rows);
    }
}

static void op_write(struct op *o, bool final)
{
    dmf_mdb_t *db = o->jobs->m->db;
    char id[24], now[24], e[256];
    i64s(o->run->id, id);
    i64s(dmf_manager_now(), now);
    json_t *rows = NULL;
    int rc;
    if (final) {
        const char *p[] = {id, o->state, o->reason, o->result, now, o->jobs->m->id};
        rc = dmf_mdb_exec(db,
                          "UPDATE jobs SET state = $2, reason = $3, result = $4, updated_at = $5"
                          " WHERE id = $1 AND state = 'running' AND claimed_by = $6 RETURNING id",
                          p, 6, &rows, e, sizeof(e));
    } else {
        const char *p[] = {id, o->result, now, o->jobs->m->id};
        rc = dmf_mdb_exec(db,
                          "UPDATE jobs SET result = $2, updated_at = $3, claimed_at = $3"
                          " WHERE id = $1 AND state = 'running' AND claimed_by = $4 RETURNING id",
                          p, 4, &rows, e, sizeof(e));
    }
    if (rc != 0)
        dmf_warn("job %lld: cannot write its state: %s", (long long)o->run->id, e);
    o->lost = rc == 0 && json_array_size(rows) == 0;
    json_decref(rows);
}

/* Targets of a preheat by scope, in the job's clusters (all clusters when none given). */
static void op_targets(struct op *o)
{
    struct dmf_manager *m = o->jobs->m;
    json_t *args = o->run->args;
    bool get_task = strcmp(o->run->type, "get_task") == 0;
    /* A task is deleted from every seed and every host. */
    const char *scope = strcmp(o->run->type, "delete_task") == 0
                            ? "all_peers"
                            : json_string_value(json_object_get(args, "scope")) ?: "single_seed_peer";
    char since[24], hsince[24], e[256];
    i64s(dmf_manager_now() - (int64_t)(m->keepalive_timeout_ms + 999) / 1000, since);
    i64s(dmf_manager_now() - 3 * (int64_t)(m->config_interval_ms + 999) / 1000 - 5, hsince);
    json_t *clusters = json_object_get(args, "cluster_ids");
    char in[512] = "";
    size_t i;
    json_t *c;
    json_array_foreach(clusters, i, c)
    {
        size_t n = strlen(in);
        snprintf(in + n, sizeof(in) - n, "%s%lld", n ? "," : "", (long long)json_integer_value(c));
    }
    char sql[700];
    snprintf(sql, sizeof(sql),
             "SELECT hostname AS host, ip, port, cluster_id FROM %s"
             " WHERE state = 'active' AND last_keepalive_at >= $1%s%s%s ORDER BY cluster_id, id",
             get_task ? "schedulers" : "seed_peers", in[0] ? " AND cluster_id IN (" : "", in,
             in[0] ? ")" : "");
    const char *p[] = {since};
    json_t *seeds = NULL;
    o->targets = json_array();
    if (dmf_mdb_exec(m->db, sql, p, 1, &seeds, e, sizeof(e)) != 0) {
        snprintf(o->reason, sizeof(o->reason), "database: %s", e);
        return;
    }
    int64_t last_cluster = -1;
    json_array_foreach(seeds, i, c)
    {
        int64_t cl = json_integer_value(json_object_get(c, "cluster_id"));
        if (!get_task && strcmp(scope, "single_seed_peer") == 0 && cl == last_cluster)
            continue;
        last_cluster = cl;
        char addr[128];
        snprintf(addr, sizeof(addr), "%s:%lld", json_string_value(json_object_get(c, "ip")),
                 (long long)json_integer_value(json_object_get(c, "port")));
        json_array_append_new(o->targets, json_pack("{s:s, s:s, s:I}", "host",
                                                    json_string_value(json_object_get(c, "host")),
                                                    "addr", addr, "cluster_id", (json_int_t)cl));
    }
    json_decref(seeds);
    if (!get_task && strcmp(scope, "all_peers") == 0) {
        snprintf(sql, sizeof(sql),
                 "SELECT host_id AS host, ip, rpc_port, cluster_id FROM hosts WHERE type = 'normal'"
                 " AND rpc_port > 0 AND last_seen_at >= $1%s%s%s ORDER BY id",
                 in[0] ? " AND cluster_id IN (" : "", in, in[0] ? ")" : "");
        const char *hp[] = {hsince};
        json_t *hosts = NULL;
        if (dmf_mdb_exec(m->db, sql, hp, 1, &hosts, e, sizeof(e)) == 0) {
            json_array_foreach(hosts, i, c)
            {
                char addr[128];
                snprintf(addr, sizeof(addr), "%s:%lld", json_string_value(json_object_get(c, "ip")),
                         (long long)json_integer_value(json_object_get(c, "rpc_port")));
                const char *hid = json_string_value(json_object_get(c, "host"));
                json_array_append_new(
                    o->targets,
                    json_pack("{s:s, s:s, s:s, s:I}", "host", hid, "addr", addr, "host_id", hid,
                              "cluster_id",
                              (json_int_t)json_integer_value(json_object_get(c, "cluster_id"))));
            }
        }
        json_decref(hosts);
    }
    if (json_array_size(o->targets) == 0)
        snprintf(o->reason, sizeof(o->reason), "no active %s in the job's clusters",
                 get_task                          ? "scheduler"
                 : strcmp(scope, "all_peers") == 0 ? "seed peer or host"
                                                   : "seed peer");
}

/* The active schedulers of every cluster: who carries preheat and delete items. */
static void op_schedulers(struct op *o)
{
    struct dmf_manager *m = o->jobs->m;
    char since[24], e[256];
    i64s(dmf_manager_now() - (int64_t)(m->keepalive_timeout_ms + 999) / 1000, since);
    const char *p[] = {since};
    json_t *rows = NULL;
    o->scheds = json_array();
    if (dmf_mdb_exec(m->db,
                     "SELECT ip, port, cluster_id FROM schedulers WHERE state = 'active'"
                     " AND last_keepalive_at >= $1 ORDER BY cluster_id, id",
                     p, 1, &rows, e, sizeof(e)) != 0) {
        dmf_warn("jobs: cannot list schedulers: %s", e);
        return;
    }
    size_t i;
    json_t *c;
    json_array_foreach(rows, i, c)
    {
        const char *ip = json_string_value(json_object_get(c, "ip"));
        char addr[128];
        snprintf(addr, sizeof(addr), strchr(ip ? ip : "", ':') ? "[%s]:%lld" : "%s:%lld",
                 ip ? ip : "", (long long)json_integer_value(json_object_get(c, "port")));
        json_array_append_new(
            o->scheds, json_pack("{s:I, s:s}", "cluster_id",
                                 (json_int_t)json_integer_value(json_object_get(c, "cluster_id")),
                                 "addr", addr));
    }
    json_decref(rows);
}

static void op_work(void *arg)
{
    struct op *o = arg;
    dmf_mdb_lock(o->jobs->m->db);
    switch (o->kind) {
    case OP_TICK:
        op_tick(o);
        break;
    case OP_SAVE:
        op_write(o, false);
        break;
    case OP_FINISH:
        op_write(o, true);
        break;
    case OP_TARGETS:
        op_targets(o);
        op_schedulers(o);
        break;
    case OP_SCHEDULERS:
        op_schedulers(o);
        break;
    }
    dmf_mdb_unlock(o->jobs->m->db);
}

static void op_done(void *arg);

static void op_submit(struct dmf_manager_jobs *j, struct op *o)
{
    o->jobs = j;
    j->ops++;
    dmf_workq_submit(j->m->wq, op_work, op_done, o);
}

/* ---------------------------------------------------------------- running a job */

static void set_state_log(struct run *r, const char *state, const char *reason)
{
    dmf_info("job %lld: running -> %s%s%s", (long long)r->id, state, reason[0] ? ": " : "", reason);
}

static void run_finish(struct run *r, const char *state, const char *reason)
{
    if (r->done)
        return;
    r->done = true;
    struct op *o = dmf_xcalloc(1, sizeof(*o));
    o->kind = OP_FINISH;
    o->run = r;
    o->state = state;
    snprintf(o->reason, sizeof(o->reason), "%s", reason);
    json_t *res = result_json(r);
    o->result = json_dumps(res, JSON_COMPACT);
    json_decref(res);
    op_submit(r->jobs, o);
}

static void run_save(struct run *r)
{
    if (r->saving || r->done) {
        r->dirty = true;
        return;
    }
    r->dirty = false;
    r->saving = true;
    struct op *o = dmf_xcalloc(1, sizeof(*o));
    o->kind = OP_SAVE;
    o->run = r;
    json_t *res = result_json(r);
    o->result = json_dumps(res, JSON_COMPACT);
    json_decref(res);
    op_submit(r->jobs, o);
}

static void item_close(struct item *it)
{
    dmf_rpc_call_drop(&it->call, &it->ch);
}
/* A unary item call came back: its channel goes, and its slot. */
static void item_unary_over(struct item *it)
{
    dmf_rpc_channel_free(it->ch);
    it->ch = NULL;
    it->run->running--;
}

static void item_failed_with(struct item *it, grpc_status_code st, const char *details)
{
    it->state = ITEM_FAILED;
    free(it->reason);
    it->reason = dmf_xasprintf("%s (%d)", details && details[0] ? details : "failed", (int)st);
}

static void item_retry(struct item *it, const char *why);

/* The scheduler's RunJobItem stream: progress, then the item's result. */
static void item_on_message(void *arg, dmf_rpc_call_t *call, const uint8_t *data, size_t len)
{
    struct item *it = arg;
    if (!data)
        return;
    Damselfly__V1__RunJobItemResponse *r =
        damselfly__v1__run_job_item_response__unpack(NULL, len, data);
    if (!r)
        return;
    it->completed = r->completed_length;
    if (r->host_id && r->host_id[0] && !it->host_id && dmf_tls_host_id_valid(r->host_id))
        it->host_id = dmf_xstrdup(r->host_id);
    if (r->attached && it->attempts == 0)
        dmf_info("job %lld: %s on %s: scheduler %s was already running it", (long long)it->run->id,
                 it->url, it->host, it->sched);
    if (r->done) {
        it->got_done = true;
        it->done_ok = r->succeeded;
        it->removed = r->removed;
        free(it->reason);
        it->reason = r->succeeded ? NULL : dmf_xstrndup(r->reason ? r->reason : "failed", 250);
    }
    damselfly__v1__run_job_item_response__free_unpacked(r, NULL);
}

/* Statuses that say "this scheduler did not carry the item" (unreachable, died, does not
 * know the host, busy): another scheduler of the cluster is asked. */
static bool retryable(grpc_status_code st)
{
    return st == GRPC_STATUS_UNAVAILABLE || st == GRPC_STATUS_NOT_FOUND ||
           st == GRPC_STATUS_CANCELLED || st == GRPC_STATUS_RESOURCE_EXHAUSTED ||
           st == GRPC_STATUS_UNKNOWN || st == GRPC_STATUS_INTERNAL || st == GRPC_STATUS_OK;
}

static void item_on_end(void *arg, dmf_rpc_call_t *call, grpc_status_code st, const char *details)
{
    struct item *it = arg;
    struct run *r = it->run;
    bool del = strcmp(r->type, "delete_task") == 0;
    item_close(it);
    r->running--;
    if (r->cancelled) {
        it->state = ITEM_FAILED;
    } else if (st == GRPC_STATUS_OK && it->got_done) {
        it->state = it->done_ok ? ITEM_SUCCEEDED : ITEM_FAILED;
        if (del && it->done_ok)
            dmf_info("job %lld: task %s on %s: %s", (long long)r->id, it->url, it->host,
                     it->removed ? "deleted" : "not held");
        else if (it->done_ok)
            dmf_info("job %lld: %s on %s: succeeded", (long long)r->id, it->url, it->host);
        else
            dmf_warn("job %lld: %s on %s: failed: %s", (long long)r->id, it->url, it->host,
                     it->reason);
    } else if (retryable(st)) {
        char why[300];
        snprintf(why, sizeof(why), "scheduler %s: %s (%d)", it->sched,
                 st == GRPC_STATUS_OK    ? "the stream ended without a result"
                 : details && details[0] ? details
                                         : "failed",
                 (int)st);
        item_retry(it, why);
    } else {
        item_failed_with(it, st, details);
        dmf_warn("job %lld: %s on %s: failed: %s", (long long)r->id, it->url, it->host, it->reason);
    }
    run_save(r);
    run_step(r);
}

static const struct dmf_rpc_call_handler item_handler = {
    .on_message = item_on_message,
    .on_end = item_on_end,
};

/* The item waits RETRY_MS and goes to the next scheduler, up to ITEM_ATTEMPTS. */
static void item_retry(struct item *it, const char *why)
{
    struct run *r = it->run;
    it->attempts++;
    r->scheds_stale = true;
    if (it->attempts >= ITEM_ATTEMPTS) {
        it->state = ITEM_FAILED;
        free(it->reason);
        it->reason = dmf_xasprintf("no scheduler of cluster %lld carried it after %d attempts; "
                                   "last: %s",
                                   (long long)it->cluster_id, it->attempts, why);
        dmf_warn("job %lld: %s on %s: failed: %s", (long long)r->id, it->url, it->host, it->reason);
        return;
    }
    dmf_info("job %lld: %s on %s: again in %d ms (%s)", (long long)r->id, it->url, it->host,
             RETRY_MS, why);
    it->state = ITEM_PENDING;
    it->got_done = false;
    it->not_before = dmf_now_ms() + RETRY_MS;
}

/* The scheduler to give the item to: the one a resumed item had, else the cluster's active
 * schedulers in turn, one per attempt. NULL: none is active. */
static const char *item_pick_scheduler(struct item *it)
{
    json_t *all = it->run->schedulers, *c;
    size_t i, n = 0;
    json_array_foreach(all, i, c)
    {
        int64_t cl = json_integer_value(json_object_get(c, "cluster_id"));
        const char *a = json_string_value(json_object_get(c, "addr"));
        if (it->cluster_id && cl != it->cluster_id)
            continue;
        if (it->prefer_sched && it->sched && strcmp(a, it->sched) == 0)
            return a;
        n++;
    }
    it->prefer_sched = false;
    if (n == 0)
        return NULL;
    size_t want = (size_t)it->attempts % n, k = 0;
    json_array_foreach(all, i, c)
    {
        if (it->cluster_id &&
            json_integer_value(json_object_get(c, "cluster_id")) != it->cluster_id)
            continue;
        if (k++ == want)
            return json_string_value(json_object_get(c, "addr"));
    }
    return NULL;
}

/* "IP:PORT" or "[IP6]:PORT" into its parts; false when it is neither. */
static bool split_addr(const char *addr, char *ip, size_t iplen, uint32_t *port)
{
    const char *colon = strrchr(addr, ':');
    if (!colon)
        return false;
    const char *b = addr, *e = colon;
    if (*b == '[' && e > b && e[-1] == ']') {
        b++;
        e--;
    }
    if ((size_t)(e - b) >= iplen)
        return false;
    snprintf(ip, iplen, "%.*s", (int)(e - b), b);
    char *end;
    unsigned long p = strtoul(colon + 1, &end, 10);
    *port = (uint32_t)p;
    return *end == '\0' && p > 0 && p <= 65535;
}

/* Hands a preheat or delete item to a scheduler of its cluster (RunJobItem). */
static void item_start_on_scheduler(struct item *it)
{
    struct run *r = it->run;
    const char *sched = item_pick_scheduler(it);
    if (!sched) {
        char why[96];
        snprintf(why, sizeof(why), "no active scheduler in cluster %lld",
                 (long long)it->cluster_id);
        it->state = ITEM_RUNNING; /* item_retry moves it back */
        item_retry(it, why);
        return;
    }
    char ip[64];
    uint32_t port = 0;
    if (!split_addr(it->addr, ip, sizeof(ip), &port)) {
        it->state = ITEM_FAILED;
        free(it->reason);
        it->reason = dmf_xasprintf("the target's address %s is not IP:PORT", it->addr);
        return;
    }
    if (!it->sched || strcmp(it->sched, sched) != 0) {
        free(it->sched);
        it->sched = dmf_xstrdup(sched);
    }
    it->state = ITEM_RUNNING;
    r->running++;
    char item_id[72];
    /* The job's creation time in the ID too: a scheduler that outlived another database's
     * job of the same number does not take this item for that one. */
    snprintf(item_id, sizeof(item_id), "%lld.%lld/%zu", (long long)r->id, (long long)r->created_at,
             (size_t)(it - r->items));
    json_t *hd = json_object_get(r->args, "headers");
    size_t nh = json_object_size(hd), k = 0;
    Damselfly__V1__Header *hv = dmf_xcalloc(nh + 1, sizeof(*hv));
    Damselfly__V1__Header **hp = dmf_xcalloc(nh + 1, sizeof(*hp));
    const char *name;
    json_t *v;
    json_object_foreach(hd, name, v)
    {
        damselfly__v1__header__init(&hv[k]);
        hv[k].name = (char *)name;
        hv[k].value = (char *)json_string_value(v);
        hp[k] = &hv[k];
        k++;
    }
    Damselfly__V1__RunJobItemRequest req = DAMSELFLY__V1__RUN_JOB_ITEM_REQUEST__INIT;
    req.item_id = item_id;
    req.host_id = it->host_id ? it->host_id : "";
    req.ip = ip;
    req.rpc_port = port;
    if (strcmp(r->type, "delete_task") == 0) {
        req.kind = DAMSELFLY__V1__JOB_ITEM_KIND__JOB_ITEM_DELETE;
        req.task_id = it->url;
    } else {
        req.kind = DAMSELFLY__V1__JOB_ITEM_KIND__JOB_ITEM_PREHEAT;
        req.url = it->url;
        req.headers = hp;
        req.n_headers = k;
        req.digest = it->digest ? it->digest : "";
        req.tag = (char *)(json_string_value(json_object_get(r->args, "tag")) ?: "");
        req.application =
            (char *)(json_string_value(json_object_get(r->args, "application")) ?: "");
    }
    /* With --tls-*, only a scheduler's certificate hears the item (and its headers). */
    struct dmf_tls_expect expect = {.role = DMF_TLS_ROLE_SCHEDULER, .host_id = NULL};
    it->ch = dmf_rpc_channel_new_member(r->jobs->m->rpc, sched, &expect);
    it->call =
        dmf_rpc_call_start(it->ch, "/damselfly.v1.Scheduler/RunJobItem", ITEM_TIMEOUT, false);
    dmf_rpc_call_set_handler(it->call, &item_handler, it);
    dmf_rpc_call_send(it->call, &req.base);
    dmf_rpc_call_close_send(it->call);
    free(hv);
    free(hp);
}
/* get_task: the scheduler's StatTask answer (NOT_FOUND: it knows no peer of the task). */
static void item_on_stat(void *arg, grpc_status_code st, const char *details, const uint8_t *resp,
                         size_t len)
{
    struct item *it = arg;
    struct run *r = it->run;
    item_unary_over(it);
    json_decref(it->peers);
    it->peers = json_array();
    Damselfly__V1__StatTaskResponse *sr =
        st == GRPC_STATUS_OK ? damselfly__v1__stat_task_response__unpack(NULL, len, resp) : NULL;
    static const char *const names[] = {"PENDING", "RUNNING", "BACK_TO_SOURCE", "SUCCEEDED",
                                        "FAILED"};
    if (sr) {
        for (size_t i = 0; i < sr->n_peers; i++) {
            const Damselfly__V1__PeerStat *p = sr->peers[i];
            json_array_append_new(it->peers,
                                  json_pack("{s:s, s:s, s:s, s:I}", "host_id", p->host_id,
                                            "peer_id", p->peer_id, "state",
                                            (unsigned)p->state < 5 ? names[p->state] : "?",
                                            "finished_pieces", (json_int_t)p->finished_pieces));
        }
        damselfly__v1__stat_task_response__free_unpacked(sr, NULL);
    }
    if (sr || st == GRPC_STATUS_NOT_FOUND) {
        it->state = ITEM_SUCCEEDED;
        dmf_info("job %lld: scheduler %s knows %zu peers of the task", (long long)r->id, it->host,
                 json_array_size(it->peers));
    } else {
        item_failed_with(it, st, details);
    }
    run_save(r);
    run_step(r);
}

static void item_start(struct item *it)
{
    struct run *r = it->run;
    if (strcmp(r->type, "get_task") == 0) {
        it->state = ITEM_RUNNING;
        r->running++;
        Damselfly__V1__StatTaskRequest q = DAMSELFLY__V1__STAT_TASK_REQUEST__INIT;
        q.task_id = it->url;
        struct dmf_tls_expect expect = {.role = DMF_TLS_ROLE_SCHEDULER, .host_id = NULL};
        it->ch = dmf_rpc_channel_new_member(r->jobs->m->rpc, it->addr, &expect);
        dmf_rpc_unary(it->ch, "/damselfly.v1.Scheduler/StatTask", &q.base, 10000, item_on_stat, it);
        return;
    }
    item_start_on_scheduler(it);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    run_step(arg);
}

static void schedulers_load(struct run *r)
{
    struct op *o = dmf_xcalloc(1, sizeof(*o));
    o->kind = OP_SCHEDULERS;
    o->run = r;
    r->loading = true;
    r->scheds_stale = false;
    op_submit(r->jobs, o);
}
/* Starts items up to the concurrency limit; finishes the job when every item is done. */
static void run_step(struct run *r)
{
    if (r->done || r->resolving)
        return;
    if (r->cancelled) {
        for (size_t i = 0; i < r->nitems; i++)
            if (r->items[i].call)
                dmf_rpc_call_cancel(r->items[i].call);
        if (r->running == 0 && !r->saving && !r->loading) {
            dmf_info("job %lld: stopped (cancelled or taken over)", (long long)r->id);
            run_free(r);
        }
        return;
    }
    /* Preheat and delete items go through the cluster's schedulers: know them first. */
    bool via_scheduler = strcmp(r->type, "get_task") != 0;
    if (via_scheduler && (r->loading || !r->schedulers ||
                          (r->scheds_stale && dmf_now_ms() - r->scheds_at >= RETRY_MS))) {
        if (!r->loading)
            schedulers_load(r);
        return;
    }
    size_t pending = 0, failed = 0;
    uint64_t now = dmf_now_ms(), wake = 0;
    bool started = false;
    for (size_t i = 0; i < r->nitems && r->running < (size_t)r->concurrency; i++) {
        struct item *it = &r->items[i];
        if (it->state != ITEM_PENDING)
            continue;
        if (it->not_before > now) {
            if (!wake || it->not_before < wake)
                wake = it->not_before;
            continue;
        }
        item_start(it);
        started = true;
        if (it->state == ITEM_PENDING && (!wake || it->not_before < wake))
            wake = it->not_before; /* no scheduler yet: it waits */
    }
    if (wake) {
        if (!r->retry)
            r->retry = event_new(r->jobs->m->base, -1, 0, on_retry, r);
        uint64_t ms = wake > now ? wake - now : 1;
        struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
        event_add(r->retry, &tv);
    }
    if (started)
        run_save(r); /* which scheduler has which item: a restarted manager asks it first */
    for (size_t i = 0; i < r->nitems; i++) {
        pending += r->items[i].state == ITEM_PENDING || r->items[i].state == ITEM_RUNNING;
        failed += r->items[i].state == ITEM_FAILED;
    }
    if (pending > 0)
        return;
    if (failed == 0) {
        set_state_log(r, "succeeded", "");
        run_finish(r, "succeeded", "");
        return;
    }
    char reason[300];
    const struct item *first = NULL;
    for (size_t i = 0; i < r->nitems && !first; i++)
        if (r->items[i].state == ITEM_FAILED)
            first = &r->items[i];
    snprintf(reason, sizeof(reason), "%zu of %zu failed; first: %s on %s: %s", failed, r->nitems,
             first->url, first->host, first->reason ? first->reason : "?");
    set_state_log(r, "failed", reason);
    run_finish(r, "failed", reason);
}

static void run_free(struct run *r)
{
    struct dmf_manager_jobs *j = r->jobs;
    for (size_t i = 0; i < r->nitems; i++) {
        item_close(&r->items[i]);
        free(r->items[i].host_id);
        free(r->items[i].sched);
        free(r->items[i].url);
        free(r->items[i].digest);
        free(r->items[i].host);
        free(r->items[i].addr);
        free(r->items[i].reason);
        json_decref(r->items[i].peers);
    }
    free(r->items);
    json_decref(r->args);
    json_decref(r->schedulers);
    if (r->retry)
        event_free(r->retry);
    LIST_REMOVE(r, link);
    j->nruns--;
    dmf_metric_set(&m_jobs_running, (int64_t)j->nruns);
    free(r);
}

static void add_item(struct run *r, const char *url, const char *digest, const char *host,
                     const char *addr, const char *host_id, int64_t cluster_id)
{
    r->items = dmf_xrealloc(r->items, (r->nitems + 1) * sizeof(*r->items));
    struct item *it = &r->items[r->nitems++];
    memset(it, 0, sizeof(*it));
    it->run = r;
    it->url = dmf_xstrdup(url);
    it->digest = digest ? dmf_xstrdup(digest) : NULL;
    it->host = dmf_xstrdup(host ? host : "");
    it->addr = dmf_xstrdup(addr ? addr : "");
    it->host_id = host_id && host_id[0] ? dmf_xstrdup(host_id) : NULL;
    it->cluster_id = cluster_id;
    it->removed = -1;
}

/* Items of a resumed job, from its stored result; false when it has none. */
static bool items_from_result(struct run *r, json_t *result)
{
    json_t *items = json_object_get(result, "items");
    if (!json_is_array(items) || json_array_size(items) == 0)
        return false;
    size_t i;
    json_t *o;
    json_array_foreach(items, i, o)
    {
        add_item(r, json_string_value(json_object_get(o, "url")) ?: "",
                 json_string_value(json_object_get(o, "digest")),
                 json_string_value(json_object_get(o, "host")),
                 json_string_value(json_object_get(o, "addr")),
                 json_string_value(json_object_get(o, "host_id")),
                 json_integer_value(json_object_get(o, "cluster_id")));
        struct item *it = &r->items[r->nitems - 1];
        const char *st = json_string_value(json_object_get(o, "state")) ?: "";
        const char *sched = json_string_value(json_object_get(o, "scheduler"));
        /* Only success is kept. An item that was running when the manager died is asked
         * of the scheduler it had been given to first: that scheduler attaches the call to
         * the item it is still running (or answers its result), so it does not run twice. */
        if (strcmp(st, "succeeded") == 0)
            it->state = ITEM_SUCCEEDED;
        if (sched && strlen(sched) < 128) {
            it->sched = dmf_xstrdup(sched);
            it->prefer_sched = true;
        }
    }
    return true;
}

/* The items of a preheat: every URL (or image layer) on every target. */
static void build_items(struct run *r, json_t *targets, json_t *layers)
{
    size_t i, t;
    json_t *u, *tg;
    json_t *urls = layers ? layers : json_object_get(r->args, "urls");
    json_t *one = NULL;
    if (strcmp(r->type, "get_task") == 0 || strcmp(r->type, "delete_task") == 0) {
        one = json_pack("[O]", json_object_get(r->args, "task_id"));
        urls = one;
    }
    json_array_foreach(urls, i, u)
    {
        const char *url =
            json_is_string(u) ? json_string_value(u) : json_string_value(json_object_get(u, "url"));
        const char *digest =
            json_is_string(u) ? NULL : json_string_value(json_object_get(u, "digest"));
        json_array_foreach(targets, t, tg)
            add_item(r, url, digest, json_string_value(json_object_get(tg, "host")),
                     json_string_value(json_object_get(tg, "addr")),
                     json_string_value(json_object_get(tg, "host_id")),
                     json_integer_value(json_object_get(tg, "cluster_id")));
    }
    json_decref(one);
}

/* A claimed job's credentials, from this manager's memory (job_secrets.h), back into its
 * args. NULL when the job can go on: it needed none, they are here, or it is an image
 * (which then resolves anonymously; on_image says why when the registry refuses that);
 * else the reason it fails: secret headers of a file preheat are gone, and fetching
 * without them would be fetching something else, or nothing, silently. */
static const char *take_secrets(struct run *r)
{
    const char *ref = json_string_value(json_object_get(r->args, "secrets_ref"));
    if (ref == NULL)
        return NULL;
    json_t *sec = dmf_job_secrets_take(r->jobs->m->secrets, ref);
    if (sec != NULL) {
        dmf_job_args_merge_secrets(r->args, sec);
        json_decref(sec);
        return NULL;
    }
    r->secrets_lost = true;
    json_t *hidden = json_object_get(json_object_get(r->args, "withheld"), "headers");
    const char *kind = json_string_value(json_object_get(r->args, "type")) ?: "file";
    if (strcmp(kind, "image") != 0 || json_array_size(hidden) > 0)
        return "request headers with credentials are not kept across a manager restart; "
               "submit the job again";
    json_object_del(r->args, "username"); /* no half credentials: anonymous */
    dmf_info("job %lld: its registry credentials are not in this manager's memory (a "
             "restart): resolving the image anonymously",
             (long long)r->id);
    return NULL;
}

struct image_wait {
    struct run *r;
    json_t *targets;
};

#define CREDENTIALS_LOST                                                                           \
    "registry credentials are not kept across a manager restart; submit the job again"

static void on_image(void *arg, json_t *layers, const char *err)
{
    struct image_wait *w = arg;
    struct run *r = w->r;
    r->resolving = false;
    if (!layers) {
        dmf_warn("job %lld: image: %s", (long long)r->id, err);
        char why[400];
        snprintf(why, sizeof(why), "%s%s%s%s", r->secrets_lost ? CREDENTIALS_LOST : "",
                 r->secrets_lost ? " (anonymously: " : "", err, r->secrets_lost ? ")" : "");
        set_state_log(r, "failed", why);
        run_finish(r, "failed", why);
    } else {
        dmf_info("job %lld: image resolved to %zu layers%s", (long long)r->id,
                 json_array_size(layers), r->nitems ? " (resumed: its items are kept)" : "");
        /* A resumed job resolves again for the registry's token only (kept in memory). */
        if (r->nitems == 0)
            build_items(r, w->targets, layers);
        json_decref(layers);
        run_save(r);
        run_step(r);
    }
    json_decref(w->targets);
    free(w);
}

static void op_done(void *arg)
{
    struct op *o = arg;
    struct dmf_manager_jobs *j = o->jobs;
    j->ops--;
    switch (o->kind) {
    case OP_TICK: {
        j->ticking = false;
        if (j->stopping) {
            for (size_t i = 0; i < o->nclaimed; i++) {
                free(o->claimed[i].type);
                json_decref(o->claimed[i].args);
                json_decref(o->claimed[i].result);
            }
            break;
        }
        /* Runs that are no longer ours (cancelled through the API) stop. */
        struct run *r, *next;
        for (r = LIST_FIRST(&j->runs); r; r = next) {
            next = LIST_NEXT(r, link);
            bool still = false;
            size_t i;
            json_t *row;
            json_array_foreach(o->still, i,
                               row) if (json_integer_value(json_object_get(row, "id")) == r->id)
                still = true;
            if (!still && !r->done && !r->cancelled) {
                dmf_info("job %lld: no longer running here (cancelled)", (long long)r->id);
                r->cancelled = true;
                run_step(r);
            }
        }
        for (size_t i = 0; i < o->nclaimed; i++) {
            struct claimed *c = &o->claimed[i];
            struct run *nr = dmf_xcalloc(1, sizeof(*nr));
            nr->jobs = j;
            nr->id = c->id;
            nr->created_at = c->created_at;
            snprintf(nr->type, sizeof(nr->type), "%s", c->type);
            nr->args = c->args ? c->args : json_object();
            json_int_t conc = json_integer_value(json_object_get(nr->args, "concurrency"));
            nr->concurrency = conc >= 1 && conc <= 64 ? (int)conc : 4;
            LIST_INSERT_HEAD(&j->runs, nr, link);
            j->nruns++;
            dmf_metric_set(&m_jobs_running, (int64_t)j->nruns);
            bool resumed = items_from_result(nr, c->result);
            dmf_info("job %lld: %s -> running (%s%s)", (long long)c->id,
                     resumed ? "running" : "pending", c->type, resumed ? ", resumed" : "");
            free(c->type);
            json_decref(c->result);
            const char *lost = take_secrets(nr);
            bool image = strcmp(json_string_value(json_object_get(nr->args, "type")) ?: "file",
                                "image") == 0;
            if (strcmp(nr->type, "preheat") != 0 && strcmp(nr->type, "get_task") != 0 &&
                strcmp(nr->type, "delete_task") != 0) {
                set_state_log(nr, "failed", "this job type is not carried out yet");
                run_finish(nr, "failed", "this job type is not carried out yet");
            } else if (lost != NULL) {
                set_state_log(nr, "failed", lost);
                run_finish(nr, "failed", lost);
            } else if (resumed && image) {
                /* Its layers need the registry's token again: fetched before any item. */
                struct image_wait *w = dmf_xcalloc(1, sizeof(*w));
                w->r = nr;
                nr->resolving = true;
                dmf_image_resolve(j->images, nr->args, on_image, w);
            } else if (resumed) {
                run_step(nr);
            } else {
                struct op *t = dmf_xcalloc(1, sizeof(*t));
                t->kind = OP_TARGETS;
                t->run = nr;
                nr->resolving = true;
                op_submit(j, t);
            }
        }
        if (j->again) {
            j->again = false;
            dmf_jobs_kick(j);
        }
        break;
    }
    case OP_TARGETS: {
        if (j->stopping)
            break;
        struct run *r = o->run;
        r->resolving = false;
        json_decref(r->schedulers);
        r->schedulers = json_incref(o->scheds);
        r->scheds_at = dmf_now_ms();
        if (o->reason[0]) {
            set_state_log(r, "failed", o->reason);
            run_finish(r, "failed", o->reason);
            break;
        }
        const char *kind = json_string_value(json_object_get(r->args, "type")) ?: "file";
        if (strcmp(kind, "image") == 0) {
            struct image_wait *w = dmf_xcalloc(1, sizeof(*w));
            w->r = r;
            w->targets = json_incref(o->targets);
            r->resolving = true;
            dmf_image_resolve(j->images, r->args, on_image, w);
            break;
        }
        build_items(r, o->targets, NULL);
        run_save(r);
        run_step(r);
        break;
    }
    case OP_SAVE: {
        if (j->stopping)
            break;
        struct run *r = o->run;
        r->saving = false;
        if (r->finished) {
            run_free(r);
            break;
        }
        if (o->lost && !r->done) {
            dmf_info("job %lld: no longer running here (cancelled)", (long long)r->id);
            r->cancelled = true;
        }
        if (r->dirty && !r->cancelled)
            run_save(r);
        run_step(r);
        break;
    }
    case OP_SCHEDULERS: {
        if (j->stopping)
            break;
        struct run *r = o->run;
        r->loading = false;
        json_decref(r->schedulers);
        r->schedulers = json_incref(o->scheds);
        r->scheds_at = dmf_now_ms();
        run_step(r);
        break;
    }
    case OP_FINISH: {
        struct run *r = o->run;
        if (!o->lost)
            dmf_metric_add(strcmp(o->state, "succeeded") == 0 ? &m_jobs_ok : &m_jobs_failed, 1);
        if (!j->stopping) {
            r->finished = true;
            if (r->saving) /* a save in flight still points at r: freed after it */
                break;
            run_free(r);
        }
        break;
    }
    }
    json_decref(o->still);
    json_decref(o->targets);
    json_decref(o->scheds);
    free(o->result);
    free(o);
    if (j->stopping && j->ops == 0)
        free(j);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct dmf_manager_jobs *j = arg;
    if (j->stopping)
        return;
    if (j->ticking) {
        j->again = true;
        return;
    }
    j->ticking = true;
    struct op *o = dmf_xcalloc(1, sizeof(*o));
    o->kind = OP_TICK;
    o->want = j->nruns < MAX_RUNS ? MAX_RUNS - j->nruns : 0;
    op_submit(j, o);
}

struct dmf_manager_jobs *dmf_jobs_start(struct dmf_manager *m)
{
    struct dmf_manager_jobs *j = dmf_xcalloc(1, sizeof(*j));
    j->m = m;
    LIST_INIT(&j->runs);
    dmf_metric_register(&m_jobs_ok);
    dmf_metric_register(&m_jobs_failed);
    dmf_metric_register(&m_jobs_running);
    j->images = dmf_image_resolver_new(m->base);
    j->tick = event_new(m->base, -1, EV_PERSIST, on_tick, j);
    struct timeval tv = {1, 0};
    event_add(j->tick, &tv);
    event_active(j->tick, EV_TIMEOUT, 0);
    return j;
}

void dmf_jobs_kick(struct dmf_manager_jobs *j)
{
    if (j && !j->stopping)
        event_active(j->tick, EV_TIMEOUT, 0);
}

void dmf_jobs_stop(struct dmf_manager_jobs *j)
{
    if (!j)
        return;
    j->stopping = true;
    event_free(j->tick);
    /* Running jobs keep their claim; its lease runs out and the next manager resumes them. */
    while (!LIST_EMPTY(&j->runs)) {
        struct run *r = LIST_FIRST(&j->runs);
        for (size_t i = 0; i < r->nitems; i++)
            item_close(&r->items[i]);
        run_free(r);
    }
    dmf_image_resolver_free(j->images);
    if (j->ops == 0)
        free(j);
}
