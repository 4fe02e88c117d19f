/* The gRPC Scheduler service; see service.h. Every function runs on the loop thread. */
#include "scheduler/service.h"

#include <errno.h>
#include <malloc.h>
#include <sys/random.h>
#include <unistd.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>

#include "common/evx.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/taskid.h"
#include "common/tls_expect.h"
#include "common/tls_identity.h"
#include "common/util.h"
#include "damselfly/v1/daemon.pb-c.h"
#include "damselfly/v1/scheduler.pb-c.h"
#include "scheduler/job_items.h"
#include "scheduler/live_view.h"
#include "scheduler/sched_check.h"

#define METHOD_PREFIX "/damselfly.v1.Scheduler/"
#define DOWNLOAD_TASK "/damselfly.v1.Daemon/DownloadTask"

/* Digests per message: 64 Ki digests pack to about 2.7 MB, well under DMF_RPC_MAX_MESSAGE. */
#define DIGESTS_PER_MESSAGE 65536

static DMF_METRIC_GAUGE(m_hosts, "damselfly_scheduler_hosts", NULL,
                        "Hosts that announced within the host timeout.");
static DMF_METRIC_GAUGE(m_tasks, "damselfly_scheduler_tasks", NULL,
                        "Tasks with at least one peer.");
static DMF_METRIC_GAUGE(m_peers, "damselfly_scheduler_peers", NULL,
                        "Peers known to the scheduler, in every state.");
static DMF_METRIC_COUNTER(m_seed_triggers, "damselfly_scheduler_seed_triggers_total", NULL,
                          "Seed peers asked to fetch a task from the origin.");
static DMF_METRIC_COUNTER(m_back_to_source, "damselfly_scheduler_back_to_source_total", NULL,
                          "Peers told to fetch from the origin (seeds included).");
static DMF_METRIC_COUNTER(m_bad_parent_reports, "damselfly_scheduler_bad_parent_reports_total",
                          NULL, "Parents reported for sending a piece that failed its digest.");
#define REFUSED_HELP "Registers and seed triggers refused by admission control, by limit."
static DMF_METRIC_COUNTER(m_refused_streams, "damselfly_scheduler_refused_total",
                          "reason=\"streams\"", REFUSED_HELP);
static DMF_METRIC_COUNTER(m_refused_rate, "damselfly_scheduler_refused_total",
                          "reason=\"register_rate\"", REFUSED_HELP);
static DMF_METRIC_COUNTER(m_refused_tasks, "damselfly_scheduler_refused_total", "reason=\"tasks\"",
                          REFUSED_HELP);
static DMF_METRIC_COUNTER(m_refused_hosts, "damselfly_scheduler_refused_total", "reason=\"hosts\"",
                          REFUSED_HELP);
static DMF_METRIC_COUNTER(m_refused_triggers, "damselfly_scheduler_refused_total",
                          "reason=\"trigger_budget\"", REFUSED_HELP);
static DMF_METRIC_COUNTER(m_refused_trigger_bytes, "damselfly_scheduler_refused_total",
                          "reason=\"trigger_bytes\"", REFUSED_HELP);
static DMF_METRIC_COUNTER(m_refused_trigger_unsized, "damselfly_scheduler_refused_total",
                          "reason=\"trigger_unsized\"", REFUSED_HELP);
static DMF_METRIC_COUNTER(m_unlisted_seeds, "damselfly_scheduler_unlisted_seed_announces_total",
                          NULL,
                          "Announces of type seed from hosts not in --seed-hosts (treated as "
                          "normal peers).");
static DMF_METRIC_COUNTER(m_peers_expired, "damselfly_scheduler_peers_expired_total", NULL,
                          "Finished peers forgotten after --peer-ttl without a stream.");

enum method {
    M_ANNOUNCE_HOST,
    M_ANNOUNCE_PEER,
    M_STAT_TASK,
    M_LEAVE_PEER,
    M_LEAVE_HOST,
};

static const char *const method_names[] = {
    [M_ANNOUNCE_HOST] = "AnnounceHost", [M_ANNOUNCE_PEER] = "AnnouncePeer",
    [M_STAT_TASK] = "StatTask",         [M_LEAVE_PEER] = "LeavePeer",
    [M_LEAVE_HOST] = "LeaveHost",
};

/* One server call. For AnnouncePeer it is the peer's stream: the scheduler's `stream`. */
struct call {
    dmf_scheduler_service_t *svc;
    dmf_rpc_call_t *rpc_call;
    enum method method;
    bool finished;              /* our status is on its way: ignore what follows */
    bool registered;            /* a register arrived on this stream */
    dmf_scheduler_peer_t *peer; /* the stream's peer while the scheduler keeps it */
    char *admitted_host;        /* the host whose stream count this stream holds, or NULL */
    /* The piece-fetch token last sent on this stream (with a cluster key): its task and
     * expiry (Unix s; 0: none sent yet). */
    char token_task[DMF_TASK_ID_LEN + 1];
    int64_t token_expiry;
    LIST_ENTRY(call) link;
};

/* One cached channel to a seed host's Daemon service. */
struct seed_channel {
    char *host_id;
    char *target;
    dmf_rpc_channel_t *channel;
    int calls;    /* DownloadTask calls still running on it */
    bool retired; /* the host left or moved: freed when its last call ends */
    LIST_ENTRY(seed_channel) link;
};

/* One DownloadTask call to a seed. */
struct trigger {
    dmf_scheduler_service_t *svc;
    dmf_rpc_call_t *rpc_call;
    struct seed_channel *ch;
    uint64_t id;
    char task_id[DMF_TASK_ID_LEN + 1];
    char *host_id;
    LIST_ENTRY(trigger) link;
};

struct dmf_scheduler_service {
    struct event_base *base;
    dmf_rpc_t *rpc;
    dmf_rpc_server_t *server;
    dmf_scheduler_t *sched;
    struct event *expiry;
    bool stopping;
    LIST_HEAD(, call) calls;
    LIST_HEAD(, seed_channel) channels;
    LIST_HEAD(, trigger) triggers;
    char id[33]; /* random per process (AnnounceHostResponse.scheduler_id) */
    struct dmf_admission admission;
    struct dmf_seed_list seeds;
    uint64_t ticks;              /* of the expiry timer */
    size_t freed_since_trim;     /* peers and hosts expired since the last malloc_trim */
    uint64_t refusals_logged;    /* second of the last refusal summary */
    uint64_t refusals_pending;   /* refusals not yet in a summary */
    struct dmf_cluster_key *key; /* piece-fetch tokens are minted with it, or NULL */
    int64_t token_ttl_s;         /* a token lives this long; renewed once half of it is gone */
    dmf_job_items_t *job_items;  /* RunJobItem: the manager's job items (job_items.h) */
};

#define PIECE_TOKEN_TTL_S 600 /* the default token_ttl_s */

static void update_gauges(dmf_scheduler_service_t *svc)
{
    struct dmf_scheduler_counts c;
    dmf_scheduler_counts(svc->sched, &c);
    dmf_metric_set(&m_hosts, (int64_t)c.hosts);
    dmf_metric_set(&m_tasks, (int64_t)c.tasks);
    dmf_metric_set(&m_peers, (int64_t)c.peers);
}

static grpc_status_code status_for(int rc)
{
    switch (rc) {
    case -EINVAL:
        return GRPC_STATUS_INVALID_ARGUMENT;
    case -ESRCH:
        return GRPC_STATUS_FAILED_PRECONDITION;
    case -ENOENT:
        return GRPC_STATUS_NOT_FOUND;
    case -EEXIST:
        return GRPC_STATUS_ALREADY_EXISTS;
    case -ENOSPC:
        return GRPC_STATUS_RESOURCE_EXHAUSTED;
    case -EPERM:
        return GRPC_STATUS_PERMISSION_DENIED;
    default:
        return GRPC_STATUS_INTERNAL;
    }
}

/* With TLS on, may this call's certificate act for host_id? 0, or -EPERM with why. */
static int check_acts_for(const struct call *c, const char *host_id, char *err, size_t errlen)
{
    const struct dmf_tls_identity *id = dmf_rpc_call_identity(c->rpc_call);
    if (dmf_tls_may_act_for(id, host_id))
        return 0;
    snprintf(err, errlen, "the certificate of host %s may not act for host %s", id->host_id,
             host_id ? host_id : "(none)");
    return -EPERM;
}

/* Refusals come in floods: one summary line per second at most, not one per refusal. */
static void log_refusal(dmf_scheduler_service_t *svc, const char *what)
{
    uint64_t sec = dmf_now_ms() / 1000;
    svc->refusals_pending++;
    if (sec == svc->refusals_logged)
        return;
    dmf_warn("admission control: refused %llu request(s) since the last summary; latest: %s",
             (unsigned long long)svc->refusals_pending, what);
    svc->refusals_logged = sec;
    svc->refusals_pending = 0;
}

/* Ends the call with a status (once); an error is logged with the client's address. */
static void call_finish(struct call *c, grpc_status_code st, const char *detail)
{
    if (c->finished)
        return;
    c->finished = true;
    /* An unknown task is an answer, not a problem; refusals are summarised by log_refusal;
     * a peer ended because its host went (ABORTED) was logged once with the host, not once
     * per stream. Anything else is worth a warning. */
    bool quiet = st == GRPC_STATUS_NOT_FOUND || st == GRPC_STATUS_RESOURCE_EXHAUSTED ||
                 st == GRPC_STATUS_ABORTED;
    if (st != GRPC_STATUS_OK)
        dmf_log(quiet ? DMF_LOG_DEBUG : DMF_LOG_WARN, "%s from %s: %s", method_names[c->method],
                dmf_rpc_call_peer(c->rpc_call), detail);
    dmf_rpc_call_finish(c->rpc_call, st, detail);
}

/* ------------------------------------------------------------ messages to peers */

static void send_response(struct call *c, Damselfly__V1__AnnouncePeerResponse *resp)
{
    if (c->finished)
        return;
    /* -EPIPE: the client is gone; its on_end cleans up. */
    (void)dmf_rpc_call_send(c->rpc_call, &resp->base);
}

/* Fills tm with the meta and up to DIGESTS_PER_MESSAGE digests from *next; the digest
 * structs live in pd/ppd (caller's arrays of DIGESTS_PER_MESSAGE). */
static void fill_meta(Damselfly__V1__TaskMeta *tm, const struct dmf_scheduler_meta *m, size_t *next,
                      Damselfly__V1__PieceDigest *pd, Damselfly__V1__PieceDigest **ppd)
{
    damselfly__v1__task_meta__init(tm);
    tm->task_id = (char *)m->task_id;
    tm->content_length = m->content_length;
    tm->piece_length = m->piece_length;
    tm->total_pieces = m->total_pieces;
    tm->etag = (char *)(m->etag ? m->etag : "");
    tm->last_modified = (char *)(m->last_modified ? m->last_modified : "");
    tm->content_type = (char *)(m->content_type ? m->content_type : "");
    size_t n = DMF_MIN(m->ndigests - *next, (size_t)DIGESTS_PER_MESSAGE);
    for (size_t i = 0; i < n; i++) {
        const struct dmf_scheduler_digest *d = &m->digests[*next + i];
        damselfly__v1__piece_digest__init(&pd[i]);
        pd[i].number = d->number;
        pd[i].sha256.data = (uint8_t *)d->sha256;
        pd[i].sha256.len = DMF_SHA256_LEN;
        ppd[i] = &pd[i];
    }
    tm->n_digests = n;
    tm->digests = n ? ppd : NULL;
    *next += n;
}

/* Sends the digests from *next on as TaskMeta messages. */
static void send_meta_rest(struct call *c, const struct dmf_scheduler_meta *m, size_t next,
                           bool always)
{
    Damselfly__V1__PieceDigest *pd = NULL;
    Damselfly__V1__PieceDigest **ppd = NULL;
    if (m->ndigests > next) {
        pd = dmf_xcalloc(DIGESTS_PER_MESSAGE, sizeof(*pd));
        ppd = dmf_xcalloc(DIGESTS_PER_MESSAGE, sizeof(*ppd));
    }
    while (always || next < m->ndigests) {
        Damselfly__V1__TaskMeta tm;
        fill_meta(&tm, m, &next, pd, ppd);
        Damselfly__V1__AnnouncePeerResponse resp = DAMSELFLY__V1__ANNOUNCE_PEER_RESPONSE__INIT;
        resp.msg_case = DAMSELFLY__V1__ANNOUNCE_PEER_RESPONSE__MSG_TASK_META;
        resp.task_meta = &tm;
        send_response(c, &resp);
        always = false;
    }
    free(pd);
    free(ppd);
}

/* A fresh piece-fetch token for c's peer (its host, task_id) into out; false without a
 * cluster key or a host. Remembered on c for the renewal. */
static bool mint_token(struct call *c, const char *task_id, char *out, size_t outlen)
{
    dmf_scheduler_service_t *svc = c->svc;
    if (svc->key == NULL || c->admitted_host == NULL || task_id == NULL)
        return false;
    int64_t expiry = (int64_t)time(NULL) + svc->token_ttl_s;
    if (dmf_piece_token_mint(svc->key, task_id, c->admitted_host, expiry, out, outlen) != 0)
        return false;
    snprintf(c->token_task, sizeof(c->token_task), "%s", task_id);
    c->token_expiry = expiry;
    return true;
}

static void send_candidates(struct call *c, Damselfly__V1__Candidates *cand)
{
    Damselfly__V1__AnnouncePeerResponse resp = DAMSELFLY__V1__ANNOUNCE_PEER_RESPONSE__INIT;
    resp.msg_case = DAMSELFLY__V1__ANNOUNCE_PEER_RESPONSE__MSG_CANDIDATES;
    resp.candidates = cand;
    send_response(c, &resp);
}

/* Sends c's peer a new token, alone, when half the last one's life is gone. */
static void renew_token(struct call *c, int64_t now)
{
    if (c->finished || c->peer == NULL || c->token_expiry == 0 ||
        now < c->token_expiry - c->svc->token_ttl_s / 2)
        return;
    char token[DMF_PIECE_TOKEN_MAX + 1];
    char task[DMF_TASK_ID_LEN + 1];
    snprintf(task, sizeof(task), "%s", c->token_task);
    if (!mint_token(c, task, token, sizeof(token)))
        return;
    Damselfly__V1__Candidates cand = DAMSELFLY__V1__CANDIDATES__INIT;
    cand.piece_token = token;
    send_candidates(c, &cand);
    explicit_bzero(token, sizeof(token));
}

static void on_candidates(void *arg, void *stream, const struct dmf_scheduler_parent *parents,
                          size_t nparents, bool seed_triggered,
                          const struct dmf_scheduler_meta *meta)
{
    struct call *c = stream;
    char token[DMF_PIECE_TOKEN_MAX + 1] = "";
    Damselfly__V1__Parent pv[DMF_SCHED_CANDIDATES_MAX];
    Damselfly__V1__Parent *pp[DMF_SCHED_CANDIDATES_MAX];
    for (size_t i = 0; i < nparents; i++) {
        damselfly__v1__parent__init(&pv[i]);
        pv[i].peer_id = (char *)parents[i].peer_id;
        pv[i].host_id = (char *)parents[i].host_id;
        pv[i].ip = (char *)parents[i].ip;
        pv[i].piece_port = parents[i].piece_port;
        pv[i].is_seed = parents[i].is_seed;
        pp[i] = &pv[i];
    }
    Damselfly__V1__PieceDigest *pd = NULL;
    Damselfly__V1__PieceDigest **ppd = NULL;
    if (meta->ndigests) {
        pd = dmf_xcalloc(DMF_MIN(meta->ndigests, (size_t)DIGESTS_PER_MESSAGE), sizeof(*pd));
        ppd = dmf_xcalloc(DMF_MIN(meta->ndigests, (size_t)DIGESTS_PER_MESSAGE), sizeof(*ppd));
    }
    size_t next = 0;
    Damselfly__V1__TaskMeta tm;
    fill_meta(&tm, meta, &next, pd, ppd);
    Damselfly__V1__Candidates cand = DAMSELFLY__V1__CANDIDATES__INIT;
    cand.n_parents = nparents;
    cand.parents = pp;
    cand.seed_triggered = seed_triggered;
    cand.task = &tm;
    if (mint_token(c, meta->task_id, token, sizeof(token)))
        cand.piece_token = token;
    send_candidates(c, &cand);
    explicit_bzero(token, sizeof(token));
    free(pd);
    free(ppd);
    send_meta_rest(c, meta, next, false);
}

static void on_back_to_source(void *arg, void *stream, const char *reason)
{
    dmf_metric_add(&m_back_to_source, 1);
    Damselfly__V1__BackToSource bts = DAMSELFLY__V1__BACK_TO_SOURCE__INIT;
    bts.reason = (char *)reason;
    Damselfly__V1__AnnouncePeerResponse resp = DAMSELFLY__V1__ANNOUNCE_PEER_RESPONSE__INIT;
    resp.msg_case = DAMSELFLY__V1__ANNOUNCE_PEER_RESPONSE__MSG_BACK_TO_SOURCE;
    resp.back_to_source = &bts;
    send_response(stream, &resp);
}

static void send_task_failed(void *stream, const char *reason, uint32_t origin_status,
                             bool content_changed)
{
    Damselfly__V1__TaskFailed tf = DAMSELFLY__V1__TASK_FAILED__INIT;
    tf.reason = (char *)reason;
    tf.origin_status = origin_status;
    tf.content_changed = content_changed;
    Damselfly__V1__AnnouncePeerResponse resp = DAMSELFLY__V1__ANNOUNCE_PEER_RESPONSE__INIT;
    resp.msg_case = DAMSELFLY__V1__ANNOUNCE_PEER_RESPONSE__MSG_TASK_FAILED;
    resp.task_failed = &tf;
    send_response(stream, &resp);
}

static void on_task_failed(void *arg, void *stream, const char *reason, uint32_t origin_status)
{
    send_task_failed(stream, reason, origin_status, false);
}

static void on_task_changed(void *arg, void *stream, const char *reason)
{
    send_task_failed(stream, reason, 0, true);
}

static void on_task_meta(void *arg, void *stream, const struct dmf_scheduler_meta *meta)
{
    send_meta_rest(stream, meta, 0, true);
}

static void on_peer_gone(void *arg, void *stream, const char *reason)
{
    struct call *c = stream;
    c->peer = NULL;
    call_finish(c, GRPC_STATUS_ABORTED, reason);
}

/* ------------------------------------------------------------ seed triggers */

static void channel_free(struct seed_channel *ch)
{
    LIST_REMOVE(ch, link);
    dmf_rpc_channel_free(ch->channel);
    free(ch->host_id);
    free(ch->target);
    free(ch);
}

static void channel_retire(struct seed_channel *ch)
{
    ch->retired = true;
    if (ch->calls == 0)
        channel_free(ch);
}

/* The cached channel to a seed host, made anew when the host moved to another address. */
static struct seed_channel *seed_channel(dmf_scheduler_service_t *svc, const char *host_id,
                                         const char *ip, uint32_t port)
{
    char target[128];
    if (strchr(ip, ':'))
        snprintf(target, sizeof(target), "[%s]:%u", ip, port);
    else
        snprintf(target, sizeof(target), "%s:%u", ip, port);
    struct seed_channel *ch;
    LIST_FOREACH(ch, &svc->channels, link)
    {
        if (!ch->retired && strcmp(ch->host_id, host_id) == 0)
            break;
    }
    if (ch && strcmp(ch->target, target) == 0)
        return ch;
    if (ch)
        channel_retire(ch);
    ch = dmf_xcalloc(1, sizeof(*ch));
    ch->host_id = dmf_xstrdup(host_id);
    ch->target = dmf_xstrdup(target);
    /* With TLS, DownloadTask (and the client's headers in it) reaches only the host whose
     * certificate names this seed. */
    struct dmf_tls_expect expect = {.role = DMF_TLS_ROLE_NONE, .host_id = host_id};
    ch->channel = dmf_rpc_channel_new_member(svc->rpc, target, &expect);
    LIST_INSERT_HEAD(&svc->channels, ch, link);
    return ch;
}

static void on_host_gone(void *arg, const char *host_id)
{
    dmf_scheduler_service_t *svc = arg;
    struct seed_channel *ch, *next;
    for (ch = LIST_FIRST(&svc->channels); ch; ch = next) {
        next = LIST_NEXT(ch, link);
        if (!ch->retired && strcmp(ch->host_id, host_id) == 0)
            channel_retire(ch);
    }
}

static void trigger_free(struct trigger *t)
{
    LIST_REMOVE(t, link);
    dmf_rpc_call_release(t->rpc_call);
    if (--t->ch->calls == 0 && t->ch->retired)
        channel_free(t->ch);
    free(t->host_id);
    free(t);
}

static void trigger_on_message(void *arg, dmf_rpc_call_t *call, const uint8_t *data, size_t len)
{
    /* Progress of the seed's download: the seed's own AnnouncePeer stream tells us more. */
}

static void trigger_on_end(void *arg, dmf_rpc_call_t *call, grpc_status_code status,
                           const char *details)
{
    struct trigger *t = arg;
    dmf_scheduler_service_t *svc = t->svc;
    char reason[512] = "";
    if (status == GRPC_STATUS_OK) {
        dmf_info("task %s: seed host %s finished DownloadTask", t->task_id, t->host_id);
    } else {
        snprintf(reason, sizeof(reason), "DownloadTask ended with status %d: %s", (int)status,
                 details && *details ? details : "no details");
    }
    dmf_scheduler_seed_result(svc->sched, t->task_id, t->host_id, t->id, status == GRPC_STATUS_OK,
                              reason);
    trigger_free(t);
    update_gauges(svc);
}

static const struct dmf_rpc_call_handler trigger_handler = {
    .on_message = trigger_on_message,
    .on_end = trigger_on_end,
};

/* Starts DownloadTask on the seed now. rpc.h delivers completions only from the loop, so
 * trigger_on_end never runs inside this call (and so never inside the scheduler). */
static void on_trigger_seed(void *arg, const struct dmf_scheduler_seed_trigger *tr)
{
    dmf_scheduler_service_t *svc = arg;
    if (svc->stopping)
        return;
    dmf_metric_add(&m_seed_triggers, 1);

    Damselfly__V1__Header hv[DMF_SCHED_HEADERS_MAX];
    Damselfly__V1__Header *hp[DMF_SCHED_HEADERS_MAX];
    for (size_t i = 0; i < tr->nheaders; i++) {
        damselfly__v1__header__init(&hv[i]);
        hv[i].name = (char *)tr->headers[i].name;
        hv[i].value = (char *)tr->headers[i].value;
        hp[i] = &hv[i];
    }
    Damselfly__V1__DownloadTaskRequest req = DAMSELFLY__V1__DOWNLOAD_TASK_REQUEST__INIT;
    req.url = (char *)tr->url;
    req.n_headers = tr->nheaders;
    req.headers = hp;
    req.digest = (char *)tr->digest;
    req.tag = (char *)tr->tag;
    req.n_filter_query = tr->nfilter_query;
    req.filter_query = (char **)tr->filter_query;
    req.task_id = (char *)tr->task_id;
    req.etag = (char *)(tr->etag ? tr->etag : "");
    req.last_modified = (char *)(tr->last_modified ? tr->last_modified : "");

    struct trigger *t = dmf_xcalloc(1, sizeof(*t));
    t->svc = svc;
    t->id = tr->trigger_id;
    snprintf(t->task_id, sizeof(t->task_id), "%s", tr->task_id);
    t->host_id = dmf_xstrdup(tr->host_id);
    t->ch = seed_channel(svc, tr->host_id, tr->ip, tr->rpc_port);
    t->ch->calls++;
    t->rpc_call = dmf_rpc_call_start(t->ch->channel, DOWNLOAD_TASK, 0, false);
    LIST_INSERT_HEAD(&svc->triggers, t, link);
    dmf_rpc_call_set_handler(t->rpc_call, &trigger_handler, t);
    dmf_rpc_call_send(t->rpc_call, &req.base);
    dmf_rpc_call_close_send(t->rpc_call);
}

/* ------------------------------------------------------------ unary methods */

static void announce_host(struct call *c, const uint8_t *data, size_t len)
{
    dmf_scheduler_service_t *svc = c->svc;
    char err[512];
    Damselfly__V1__AnnounceHostRequest *req =
        damselfly__v1__announce_host_request__unpack(NULL, len, data);
    if (req == NULL) {
        call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, "malformed AnnounceHostRequest");
        return;
    }
    const Damselfly__V1__Host *h = req->host;
    int rc = -EINVAL;
    const struct dmf_tls_identity *caller = dmf_rpc_call_identity(c->rpc_call);
    if (h == NULL) {
        snprintf(err, sizeof(err), "host is missing");
    } else if ((rc = check_acts_for(c, h->id, err, sizeof(err))) != 0) {
        /* refused: the certificate names another host */
    } else {
        struct dmf_scheduler_host_info info = {
            .id = h->id,
            .hostname = h->hostname,
            .ip = h->ip,
            .piece_port = h->piece_port,
            .rpc_port = h->rpc_port,
            .type = (int)h->type,
            .idc = h->idc,
            .location = h->location,
            .upload_capacity = h->upload_capacity,
            .upload_rate = h->upload_rate,
            .active_uploads = h->active_uploads,
        };
        /* Seeds are known, not claimed: listed in --seed-hosts or, with TLS, holding a seed
         * certificate. */
        bool listed = dmf_seed_list_admits(&svc->seeds, h->id, h->ip, h->rpc_port);
        if (info.type == DMF_SCHED_HOST_SEED && !dmf_tls_is_seed(caller, listed)) {
            /* Seeds are known, not claimed: this one gets no DownloadTask, no headers. */
            info.type = DMF_SCHED_HOST_NORMAL;
            dmf_metric_add(&m_unlisted_seeds, 1);
            if (dmf_metric_get(&m_unlisted_seeds) <= 16 ||
                dmf_metric_get(&m_unlisted_seeds) % 1000 == 0)
                dmf_warn("host %s announced itself as a seed at %s rpc port %u, which "
                         "--seed-hosts does not list%s: it is a normal peer (%lld such announces)",
                         h->id, h->ip, h->rpc_port,
                         caller ? " and its certificate is not a seed's" : "",
                         (long long)dmf_metric_get(&m_unlisted_seeds));
        }
        rc = dmf_scheduler_announce_host(svc->sched, &info, err, sizeof(err));
    }
    damselfly__v1__announce_host_request__free_unpacked(req, NULL);
    if (rc != 0) {
        call_finish(c, status_for(rc), err);
        return;
    }
    Damselfly__V1__AnnounceHostResponse resp = DAMSELFLY__V1__ANNOUNCE_HOST_RESPONSE__INIT;
    resp.host_timeout_ms = (uint32_t)dmf_scheduler_host_timeout_ms(svc->sched);
    resp.scheduler_id = svc->id;
    dmf_rpc_call_send(c->rpc_call, &resp.base);
    call_finish(c, GRPC_STATUS_OK, NULL);
}

static void stat_task(struct call *c, const uint8_t *data, size_t len)
{
    char err[512];
    Damselfly__V1__StatTaskRequest *req = damselfly__v1__stat_task_request__unpack(NULL, len, data);
    if (req == NULL) {
        call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, "malformed StatTaskRequest");
        return;
    }
    struct dmf_scheduler_task_stat st;
    int rc = dmf_scheduler_stat_task(c->svc->sched, req->task_id, &st, err, sizeof(err));
    const struct dmf_tls_identity *caller = dmf_rpc_call_identity(c->rpc_call);
    bool in_task = false;
    for (size_t i = 0; rc == 0 && caller && i < st.npeers && !in_task; i++)
        in_task = strcmp(st.peers[i].host_id, caller->host_id) == 0;
    /* An unknown task gets the same answer as another host's: no oracle of which tasks
     * exist. */
    if ((rc == 0 || rc == -ENOENT) && !dmf_tls_may_stat_task(caller, in_task)) {
        snprintf(err, sizeof(err),
                 "the certificate of host %s may not stat task %s: the host "
                 "has no peer in it",
                 caller->host_id, req->task_id);
        if (rc == 0)
            dmf_scheduler_task_stat_free(&st);
        rc = -EPERM;
    }
    if (rc != 0) {
        damselfly__v1__stat_task_request__free_unpacked(req, NULL);
        call_finish(c, status_for(rc), err);
        return;
    }
    damselfly__v1__stat_task_request__free_unpacked(req, NULL);
    Damselfly__V1__PeerStat *ps = dmf_xcalloc(st.npeers, sizeof(*ps));
    Damselfly__V1__PeerStat **pps = dmf_xcalloc(st.npeers, sizeof(*pps));
    for (size_t i = 0; i < st.npeers; i++) {
        damselfly__v1__peer_stat__init(&ps[i]);
        ps[i].peer_id = (char *)st.peers[i].peer_id;
        ps[i].host_id = (char *)st.peers[i].host_id;
        ps[i].state = (Damselfly__V1__PeerState)st.peers[i].state;
        ps[i].finished_pieces = st.peers[i].finished_pieces;
        pps[i] = &ps[i];
    }
    size_t next = 0;
    Damselfly__V1__TaskMeta tm;
    fill_meta(&tm, &st.meta, &next, NULL, NULL);
    Damselfly__V1__StatTaskResponse resp = DAMSELFLY__V1__STAT_TASK_RESPONSE__INIT;
    resp.task = &tm;
    resp.url = (char *)st.url;
    resp.n_peers = st.npeers;
    resp.peers = pps;
    dmf_rpc_call_send(c->rpc_call, &resp.base);
    call_finish(c, GRPC_STATUS_OK, NULL);
    free(ps);
    free(pps);
    dmf_scheduler_task_stat_free(&st);
}

static void leave_peer(struct call *c, const uint8_t *data, size_t len)
{
    char err[512];
    Damselfly__V1__LeavePeerRequest *req =
        damselfly__v1__leave_peer_request__unpack(NULL, len, data);
    if (req == NULL) {
        call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, "malformed LeavePeerRequest");
        return;
    }
    const struct dmf_tls_identity *caller = dmf_rpc_call_identity(c->rpc_call);
    int rc = dmf_scheduler_leave_peer(c->svc->sched, req->task_id, req->peer_id,
                                      caller ? caller->host_id : NULL, err, sizeof(err));
    damselfly__v1__leave_peer_request__free_unpacked(req, NULL);
    if (rc != 0) {
        call_finish(c, status_for(rc), err);
        return;
    }
    Damselfly__V1__LeavePeerResponse resp = DAMSELFLY__V1__LEAVE_PEER_RESPONSE__INIT;
    dmf_rpc_call_send(c->rpc_call, &resp.base);
    call_finish(c, GRPC_STATUS_OK, NULL);
}

static void leave_host(struct call *c, const uint8_t *data, size_t len)
{
    char err[512];
    Damselfly__V1__LeaveHostRequest *req =
        damselfly__v1__leave_host_request__unpack(NULL, len, data);
    if (req == NULL) {
        call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, "malformed LeaveHostRequest");
        return;
    }
    int rc = check_acts_for(c, req->host_id, err, sizeof(err));
    if (rc == 0)
        rc = dmf_scheduler_leave_host(c->svc->sched, req->host_id, err, sizeof(err));
    damselfly__v1__leave_host_request__free_unpacked(req, NULL);
    if (rc != 0) {
        call_finish(c, status_for(rc), err);
        return;
    }
    Damselfly__V1__LeaveHostResponse resp = DAMSELFLY__V1__LEAVE_HOST_RESPONSE__INIT;
    dmf_rpc_call_send(c->rpc_call, &resp.base);
    call_finish(c, GRPC_STATUS_OK, NULL);
}

/* ------------------------------------------------------------ AnnouncePeer */

/* Ends the stream with an error; the peer goes as if its stream had closed. */
static void stream_fail(struct call *c, grpc_status_code st, const char *detail)
{
    if (c->peer) {
        dmf_scheduler_peer_t *p = c->peer;
        c->peer = NULL;
        dmf_scheduler_stream_closed(c->svc->sched, p);
    }
    call_finish(c, st, detail);
}

static int peer_register(struct call *c, const Damselfly__V1__RegisterPeer *m, char *err,
                         size_t errlen)
{
    if (c->registered) {
        snprintf(err, errlen, "this stream already registered a peer; open one stream per peer");
        return -EINVAL;
    }
    if (m->n_headers > DMF_SCHED_HEADERS_MAX) {
        snprintf(err, errlen, "more than %u headers", DMF_SCHED_HEADERS_MAX);
        return -EINVAL;
    }
    struct dmf_scheduler_header headers[DMF_SCHED_HEADERS_MAX];
    for (size_t i = 0; i < m->n_headers; i++) {
        headers[i].name = m->headers[i]->name;
        headers[i].value = m->headers[i]->value;
    }
    struct dmf_scheduler_register r = {
        .task_id = m->task_id,
        .peer_id = m->peer_id,
        .host_id = m->host_id,
        .url = m->url,
        .headers = headers,
        .nheaders = m->n_headers,
        .tag = m->tag,
        .application = m->application,
        .digest = m->digest,
        .filter_query = (const char *const *)m->filter_query,
        .nfilter_query = m->n_filter_query,
        .held_pieces = m->held_pieces,
        .holds_task = m->holds_task,
        .from_source = m->from_source,
        .stalled = m->stalled,
        .etag = m->etag,
        .last_modified = m->last_modified,
    };
    c->registered = true;
    int rc = dmf_sched_check_id("host_id", m->host_id, DMF_SCHED_ID_MAX, err, errlen);
    if (rc != 0)
        return rc;
    /* The stream's progress, finish and failures speak for the peer registered here: one
     * check covers them. */
    if ((rc = check_acts_for(c, m->host_id, err, errlen)) != 0)
        return rc;
    dmf_scheduler_service_t *svc = c->svc;
    enum dmf_admission_refusal why =
        dmf_admission_register(&svc->admission, m->host_id, dmf_now_ms());
    if (why != DMF_ADMIT_OK) {
        struct dmf_metric *mm = why == DMF_ADMIT_STREAMS         ? &m_refused_streams
                                : why == DMF_ADMIT_REGISTER_RATE ? &m_refused_rate
                                                                 : &m_refused_hosts;
        dmf_metric_add(mm, 1);
        snprintf(err, errlen,
                 why == DMF_ADMIT_STREAMS         ? "host %s has %u streams open: the limit"
                 : why == DMF_ADMIT_REGISTER_RATE ? "host %s registers too fast (limit %u/s)"
                                                  : "too many hosts: %s refused (%u)",
                 m->host_id,
                 why == DMF_ADMIT_STREAMS ? svc->admission.cfg.streams_per_host
                                          : svc->admission.cfg.registers_per_sec);
        log_refusal(svc, err);
        return -ENOSPC;
    }
    c->admitted_host = dmf_xstrdup(m->host_id);
    rc = dmf_scheduler_register(svc->sched, &r, c, &c->peer, err, errlen);
    if (rc == -ENOSPC) {
        dmf_metric_add(&m_refused_tasks, 1);
        log_refusal(svc, err);
    }
    return rc;
}

static int peer_progress(struct call *c, const Damselfly__V1__PieceProgress *m, char *err,
                         size_t errlen)
{
    struct dmf_scheduler_digest *digests = dmf_xcalloc(m->n_digests, sizeof(*digests));
    int rc = 0;
    for (size_t i = 0; i < m->n_digests; i++) {
        if (m->digests[i]->sha256.len != DMF_SHA256_LEN) {
            snprintf(err, errlen, "digest of piece %u has %zu bytes, not %d", m->digests[i]->number,
                     m->digests[i]->sha256.len, DMF_SHA256_LEN);
            rc = -EINVAL;
            goto out;
        }
        digests[i].number = m->digests[i]->number;
        memcpy(digests[i].sha256, m->digests[i]->sha256.data, DMF_SHA256_LEN);
    }
    struct dmf_scheduler_progress pr = {
        .pieces = m->pieces,
        .npieces = m->n_pieces,
        .digests = digests,
        .ndigests = m->n_digests,
        .content_length = m->content_length,
        .piece_length = m->piece_length,
        .etag = m->etag,
        .last_modified = m->last_modified,
        .bytes_from_parents = m->bytes_from_parents,
        .bytes_from_origin = m->bytes_from_origin,
        .content_type = m->content_type,
    };
    rc = dmf_scheduler_progress(c->svc->sched, c->peer, &pr, err, errlen);
out:
    free(digests);
    return rc;
}

static int peer_parent_failure(struct call *c, const Damselfly__V1__ParentFailure *m, char *err,
                               size_t errlen)
{
    int rc = dmf_scheduler_parent_failure(c->svc->sched, c->peer, m->parent_peer_id,
                                          m->parent_host_id, (int)m->reason, err, errlen);
    if (rc == 0 && m->reason == DAMSELFLY__V1__PARENT_FAILURE_REASON__PARENT_FAILURE_BAD_PIECE)
        dmf_metric_add(&m_bad_parent_reports, 1);
    return rc;
}

static void announce_peer(struct call *c, const uint8_t *data, size_t len)
{
    dmf_scheduler_service_t *svc = c->svc;
    char err[512];
    int rc = 0;

    if (data == NULL) {
        /* The peer said all it had to say: a finished peer stays, any other goes. */
        stream_fail(c, GRPC_STATUS_OK, NULL);
        return;
    }
    Damselfly__V1__AnnouncePeerRequest *req =
        damselfly__v1__announce_peer_request__unpack(NULL, len, data);
    if (req == NULL) {
        stream_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "malformed AnnouncePeerRequest");
        return;
    }
    if (req->msg_case == DAMSELFLY__V1__ANNOUNCE_PEER_REQUEST__MSG_REGISTER) {
        rc = peer_register(c, req->register_, err, sizeof(err));
    } else if (req->msg_case == DAMSELFLY__V1__ANNOUNCE_PEER_REQUEST__MSG__NOT_SET) {
        snprintf(err, sizeof(err), "AnnouncePeerRequest carries no message");
        rc = -EINVAL;
    } else if (c->peer == NULL) {
        snprintf(err, sizeof(err),
                 c->registered ? "the peer of this stream is gone" : "register the peer first");
        rc = -ESRCH;
    } else {
        switch (req->msg_case) {
        case DAMSELFLY__V1__ANNOUNCE_PEER_REQUEST__MSG_PROGRESS:
            rc = peer_progress(c, req->progress, err, sizeof(err));
            break;
        case DAMSELFLY__V1__ANNOUNCE_PEER_REQUEST__MSG_FINISHED:
            rc = dmf_scheduler_finished(svc->sched, c->peer, req->finished->content_length,
                                        req->finished->total_pieces, err, sizeof(err));
            break;
        case DAMSELFLY__V1__ANNOUNCE_PEER_REQUEST__MSG_FAILED: {
            char reason[DMF_SCHED_REASON_MAX + 1];
            snprintf(reason, sizeof(reason), "%s", req->failed->reason);
            dmf_scheduler_peer_t *p = c->peer;
            c->peer = NULL;
            if (req->failed->content_changed)
                dmf_scheduler_content_changed(svc->sched, p, reason);
            else if (req->failed->for_good)
                dmf_scheduler_failed_for_good(svc->sched, p, req->failed->origin_status, reason);
            else
                dmf_scheduler_failed(svc->sched, p, reason);
            break;
        }
        case DAMSELFLY__V1__ANNOUNCE_PEER_REQUEST__MSG_PARENT_FAILURE:
            rc = peer_parent_failure(c, req->parent_failure, err, sizeof(err));
            break;
        default:
            snprintf(err, sizeof(err), "unknown AnnouncePeerRequest message %d",
                     (int)req->msg_case);
            rc = -EINVAL;
            break;
        }
    }
    damselfly__v1__announce_peer_request__free_unpacked(req, NULL);
    if (rc != 0)
        stream_fail(c, status_for(rc), err);
}

/* ------------------------------------------------------------ calls */

static void call_free(struct call *c)
{
    if (c->admitted_host) {
        dmf_admission_stream_closed(&c->svc->admission, c->admitted_host);
        free(c->admitted_host);
    }
    LIST_REMOVE(c, link);
    dmf_rpc_call_release(c->rpc_call);
    free(c);
}

static void call_on_message(void *arg, dmf_rpc_call_t *call, const uint8_t *data, size_t len)
{
    struct call *c = arg;
    if (c->finished)
        return;
    if (c->method == M_ANNOUNCE_PEER) {
        announce_peer(c, data, len);
    } else if (data == NULL) {
        call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, "no request message");
    } else {
        switch (c->method) {
        case M_ANNOUNCE_HOST:
            announce_host(c, data, len);
            break;
        case M_STAT_TASK:
            stat_task(c, data, len);
            break;
        case M_LEAVE_PEER:
            leave_peer(c, data, len);
            break;
        case M_LEAVE_HOST:
            leave_host(c, data, len);
            break;
        default:
            break;
        }
    }
    update_gauges(c->svc);
}

static void call_on_end(void *arg, dmf_rpc_call_t *call, grpc_status_code status,
                        const char *details)
{
    struct call *c = arg;
    dmf_scheduler_service_t *svc = c->svc;
    if (c->peer) {
        dmf_scheduler_peer_t *p = c->peer;
        c->peer = NULL;
        dmf_scheduler_stream_closed(svc->sched, p);
    }
    call_free(c);
    update_gauges(svc);
}

static const struct dmf_rpc_call_handler call_handler = {
    .on_message = call_on_message,
    .on_end = call_on_end,
};

static void on_call(void *arg, dmf_rpc_call_t *rpc_call, const char *method)
{
    dmf_scheduler_service_t *svc = arg;
    size_t plen = strlen(METHOD_PREFIX);
    for (size_t m = 0; m < DMF_ARRAY_SIZE(method_names); m++) {
        if (strncmp(method, METHOD_PREFIX, plen) == 0 &&
            strcmp(method + plen, method_names[m]) == 0) {
            struct call *c = dmf_xcalloc(1, sizeof(*c));
            c->svc = svc;
            c->rpc_call = rpc_call;
            c->method = (enum method)m;
            LIST_INSERT_HEAD(&svc->calls, c, link);
            dmf_rpc_call_set_handler(rpc_call, &call_handler, c);
            return;
        }
    }
    const struct dmf_tls_identity *caller = dmf_rpc_call_identity(rpc_call);
    if (caller && caller->role != DMF_TLS_ROLE_MANAGER &&
        strcmp(method, "/damselfly.v1.SchedulerView/ListLive") == 0) {
        dmf_rpc_call_finish(rpc_call, GRPC_STATUS_PERMISSION_DENIED,
                            "only a manager certificate may read the live view");
        dmf_rpc_call_release(rpc_call);
        return;
    }
    if (dmf_job_items_on_call(svc->job_items, rpc_call, method))
        return;
    if (dmf_scheduler_live_on_call(svc->sched, rpc_call, method))
        return;
    dmf_debug("unknown method %s from %s", method, dmf_rpc_call_peer(rpc_call));
    dmf_rpc_call_finish(rpc_call, GRPC_STATUS_UNIMPLEMENTED, "unknown method");
    dmf_rpc_call_release(rpc_call);
}

/* ------------------------------------------------------------ lifetime */

/* A peer of requester_host_id needs a seed: within the host's budget of triggers (tasks per
 * minute, bytes per hour, triggers of unknown size at once)? */
static bool on_may_trigger(void *arg, const char *requester_host_id, const char *seed_host_id)
{
    dmf_scheduler_service_t *svc = arg;
    enum dmf_admission_refusal r =
        dmf_admission_trigger(&svc->admission, requester_host_id, dmf_now_ms());
    const char *budget = "seed triggers";
    switch (r) {
    case DMF_ADMIT_OK:
        return true;
    case DMF_ADMIT_TRIGGER_BYTES:
        dmf_metric_add(&m_refused_trigger_bytes, 1);
        budget = "triggered bytes this hour";
        break;
    case DMF_ADMIT_TRIGGER_UNSIZED:
        dmf_metric_add(&m_refused_trigger_unsized, 1);
        budget = "triggers of a size not yet known";
        break;
    default:
        dmf_metric_add(&m_refused_triggers, 1);
        break;
    }
    char what[300];
    snprintf(what, sizeof(what), "host %s spent its budget of %s (seed %s)", requester_host_id,
             budget, seed_host_id);
    log_refusal(svc, what);
    return false;
}

static void on_trigger_sized(void *arg, const char *requester_host_id, int64_t bytes)
{
    dmf_scheduler_service_t *svc = arg;
    dmf_admission_trigger_sized(&svc->admission, requester_host_id, bytes, dmf_now_ms());
}

/* Once a second: hosts and finished peers expire; piece-fetch tokens past half their life
 * are renewed; every 10 s, admission forgets idle hosts;
 * and once a wave of expiries is over (100 or more freed, none this second), the heap's
 * free pages go back to the system (glibc keeps them otherwise, and a flood's memory would
 * never come back). */
static void on_expiry(evutil_socket_t fd, short what, void *arg)
{
    dmf_scheduler_service_t *svc = arg;
    size_t hosts = dmf_scheduler_expire_hosts(svc->sched);
    size_t peers = dmf_scheduler_expire_peers(svc->sched);
    if (peers > 0)
        dmf_metric_add(&m_peers_expired, (int64_t)peers);
    if (hosts + peers > 0)
        update_gauges(svc);
    svc->freed_since_trim += hosts + peers;
    if (++svc->ticks % 10 == 0)
        dmf_admission_sweep(&svc->admission, dmf_now_ms());
    if (svc->key != NULL) {
        int64_t now = (int64_t)time(NULL);
        struct call *c;
        LIST_FOREACH(c, &svc->calls, link)
        if (c->method == M_ANNOUNCE_PEER)
            renew_token(c, now);
    }
    if (svc->freed_since_trim >= 100 && hosts + peers == 0) {
        /* The expiry wave is over: give its pages back (a few ms for a large heap). */
        malloc_trim(0);
        svc->freed_since_trim = 0;
    }
}

dmf_scheduler_service_t *dmf_scheduler_service_new(struct event_base *base, dmf_rpc_t *rpc,
                                                   const struct dmf_scheduler_service_config *cfg)
{
    static const struct dmf_scheduler_sink sink = {
        .candidates = on_candidates,
        .back_to_source = on_back_to_source,
        .task_failed = on_task_failed,
        .task_changed = on_task_changed,
        .task_meta = on_task_meta,
        .trigger_seed = on_trigger_seed,
        .peer_gone = on_peer_gone,
        .host_gone = on_host_gone,
        .may_trigger = on_may_trigger,
        .trigger_sized = on_trigger_sized,
    };
    dmf_scheduler_service_t *svc = dmf_xcalloc(1, sizeof(*svc));
    svc->base = base;
    svc->rpc = rpc;
    svc->sched = dmf_scheduler_new(&cfg->sched, &sink, svc);
    dmf_admission_init(&svc->admission, &cfg->admission);
    if (cfg->seeds)
        svc->seeds = *cfg->seeds;
    if (cfg->cluster_key) {
        svc->key = dmf_xmalloc(sizeof(*svc->key));
        *svc->key = *cfg->cluster_key;
    }
    svc->token_ttl_s = cfg->piece_token_ttl_s > 0 ? cfg->piece_token_ttl_s : PIECE_TOKEN_TTL_S;
    uint8_t rnd[16];
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
        uint64_t x = dmf_now_ms() ^ ((uint64_t)getpid() << 32);
        memcpy(rnd, &x, sizeof(x));
        memcpy(rnd + 8, &svc, sizeof(void *) <= 8 ? sizeof(void *) : 8);
    }
    dmf_hex_encode(rnd, sizeof(rnd), svc->id);
    svc->server = dmf_rpc_server_new(rpc, on_call, svc);
    svc->job_items = dmf_job_items_new(rpc, svc->sched);
    LIST_INIT(&svc->calls);
    LIST_INIT(&svc->channels);
    LIST_INIT(&svc->triggers);
    struct dmf_metric *metrics[] = {&m_hosts,
                                    &m_tasks,
                                    &m_peers,
                                    &m_seed_triggers,
                                    &m_back_to_source,
                                    &m_bad_parent_reports,
                                    &m_refused_streams,
                                    &m_refused_rate,
                                    &m_refused_tasks,
                                    &m_refused_hosts,
                                    &m_refused_triggers,
                                    &m_refused_trigger_bytes,
                                    &m_refused_trigger_unsized,
                                    &m_unlisted_seeds,
                                    &m_peers_expired};
    for (size_t i = 0; i < DMF_ARRAY_SIZE(metrics); i++)
        dmf_metric_register(metrics[i]);
    update_gauges(svc);
    return svc;
}

int dmf_scheduler_service_listen(dmf_scheduler_service_t *svc, const char *addr, int *bound_port,
                                 char *err, size_t errlen)
{
    return dmf_rpc_server_listen(svc->server, addr, bound_port, err, errlen);
}

dmf_scheduler_t *dmf_scheduler_service_sched(dmf_scheduler_service_t *svc)
{
    return svc->sched;
}

void dmf_scheduler_service_start(dmf_scheduler_service_t *svc)
{
    dmf_rpc_server_start(svc->server);
    svc->expiry = dmf_xevent_new(svc->base, -1, EV_PERSIST, on_expiry, svc);
    struct timeval second = {1, 0};
    event_add(svc->expiry, &second);
}

void dmf_scheduler_service_free(dmf_scheduler_service_t *svc)
{
    if (svc == NULL)
        return;
    svc->stopping = true;
    if (svc->expiry)
        event_free(svc->expiry);
    /* Cancels every call; their on_end may still run while the server shuts down. */
    dmf_rpc_server_free(svc->server);
    /* Calls whose end gRPC has not reported yet: no callback after release. */
    while (!LIST_EMPTY(&svc->calls))
        call_free(LIST_FIRST(&svc->calls));
    while (!LIST_EMPTY(&svc->triggers))
        trigger_free(LIST_FIRST(&svc->triggers));
    while (!LIST_EMPTY(&svc->channels))
        channel_free(LIST_FIRST(&svc->channels));
    dmf_job_items_free(svc->job_items);
    dmf_scheduler_free(svc->sched);
    dmf_admission_free(&svc->admission);
    if (svc->key) {
        dmf_cluster_key_clear(svc->key);
        free(svc->key);
    }
    free(svc);
}
