/* The daemon's side of the scheduler; see announce.h. */
#include "daemon/peer/announce.h"

#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/evx.h"
#include "common/log.h"
#include "daemon/limits.h"
#include "common/pb_headers.h"
#include "common/rendezvous.h"
#include "common/rpc.h"
#include "common/util.h"
#include "daemon/daemon.h"
#include "damselfly/v1/scheduler.pb-c.h"

#define REPORT_BATCH    32 /* pieces per progress message at most */
#define REPORT_DELAY_MS 30 /* how long a verified piece may wait for company */
#define PARENT_IP_MAX   64

#define SCHEDULERS_MAX 16 /* --scheduler A,B,...: at most this many */

/* One scheduler of the list, announced to on its own. */
struct sched_conn {
    struct dmf_announce_client *c;
    char *addr;
    dmf_rpc_channel_t *ch;
    bool in_flight;
    bool announced;        /* the last AnnounceHost succeeded (and no stream found it down) */
    int answers;           /* announce answers received (success or not) */
    char scheduler_id[64]; /* of the last answer: a change means a new scheduler process */
};

struct dmf_announce_client {
    struct dmf_daemon *d;
    struct sched_conn conns[SCHEDULERS_MAX];
    size_t nconns;
    struct event *timer;
    dmf_announce_rejoin_cb rejoin;
    void *rejoin_arg;
    uint64_t last_uploaded, last_ms, upload_rate;
    struct dmf_announce_peer *lingering; /* finished streams the scheduler has not closed yet */
};

struct dmf_announce_peer {
    struct dmf_announce_peer_env env; /* env.sink is NULL once the task let go */
    struct dmf_announce_client *c;
    struct sched_conn *conn; /* the scheduler the task went to */
    dmf_rpc_call_t *call;
    struct event *flush;
    uint32_t *pieces;
    size_t npieces;
    Damselfly__V1__PieceDigest *digests; /* for pieces fetched from the origin */
    uint8_t (*digest_bytes)[DMF_SHA256_LEN];
    size_t ndigests;
    struct dmf_announce_peer *prev, *next; /* in c->lingering */
    bool lingering;
};

static void peer_free(struct dmf_announce_peer *sp);

static void linger_remove(struct dmf_announce_peer *sp)
{
    if (!sp->lingering)
        return;
    if (sp->prev)
        sp->prev->next = sp->next;
    else
        sp->c->lingering = sp->next;
    if (sp->next)
        sp->next->prev = sp->prev;
    sp->lingering = false;
}

/* ---------------------------------------------------------------- AnnounceHost */

static void set_announced(struct sched_conn *sc, bool up)
{
    bool was = sc->announced;
    sc->announced = up;
    /* A scheduler that went (its tasks move to the next) or came back (its share comes
     * home): what the schedulers know of this host's tasks changed. */
    if (was != up && sc->c->nconns > 1 && sc->c->rejoin)
        sc->c->rejoin(sc->c->rejoin_arg);
}

static void on_announced(void *arg, grpc_status_code status, const char *details,
                         const uint8_t *resp, size_t len)
{
    struct sched_conn *sc = arg;
    struct dmf_announce_client *c = sc->c;
    sc->in_flight = false;
    if (sc->ch == NULL)
        return; /* the slot's scheduler was dropped from the list meanwhile */
    sc->answers++;
    if (status == GRPC_STATUS_OK) {
        Damselfly__V1__AnnounceHostResponse *r =
            damselfly__v1__announce_host_response__unpack(NULL, len, resp);
        const char *id = r && r->scheduler_id ? r->scheduler_id : "";
        bool restarted = sc->announced && strncmp(id, sc->scheduler_id, sizeof(sc->scheduler_id));
        bool first = !sc->announced;
        if (first)
            dmf_info("announced host %s to the scheduler at %s", c->d->cfg.host_id, sc->addr);
        else if (restarted)
            dmf_info("the scheduler at %s restarted: registering this host's tasks again",
                     sc->addr);
        snprintf(sc->scheduler_id, sizeof(sc->scheduler_id), "%s", id);
        if (r)
            damselfly__v1__announce_host_response__free_unpacked(r, NULL);
        if (first && c->nconns > 1) {
            set_announced(sc, true); /* rejoins */
        } else {
            sc->announced = true;
            if ((first || restarted) && c->rejoin)
                c->rejoin(c->rejoin_arg);
        }
    } else {
        if (sc->announced || sc->answers == 1)
            dmf_warn("cannot announce to the scheduler at %s: %s", sc->addr,
                     details[0] ? details : "unavailable");
        set_announced(sc, false);
    }
}

static void announce(struct dmf_announce_client *c)
{
    struct dmf_daemon *d = c->d;
    uint64_t now = dmf_now_ms(), up = dmf_piece_server_uploaded_bytes(d->pieces);
    if (c->last_ms && now > c->last_ms)
        c->upload_rate = (up - c->last_uploaded) * 1000 / (now - c->last_ms);
    c->last_ms = now;
    c->last_uploaded = up;

    Damselfly__V1__Host host = DAMSELFLY__V1__HOST__INIT;
    host.id = d->cfg.host_id;
    host.hostname = d->cfg.hostname;
    host.ip = d->cfg.ip;
    host.piece_port = d->piece_port;
    host.rpc_port = (uint32_t)d->rpc_port;
    host.type = d->cfg.seed ? DAMSELFLY__V1__HOST_TYPE__HOST_TYPE_SEED
                            : DAMSELFLY__V1__HOST_TYPE__HOST_TYPE_NORMAL;
    host.idc = d->cfg.idc ? d->cfg.idc : "";
    host.location = d->cfg.location ? d->cfg.location : "";
    host.upload_capacity = dmf_daemon_upload_capacity(d);
    host.upload_rate = c->upload_rate;
    host.active_uploads = dmf_piece_server_active_uploads(d->pieces);
    Damselfly__V1__AnnounceHostRequest req = DAMSELFLY__V1__ANNOUNCE_HOST_REQUEST__INIT;
    req.host = &host;
    /* Every scheduler knows every host: any of them may send one of its tasks here. */
    for (size_t i = 0; i < c->nconns; i++) {
        struct sched_conn *sc = &c->conns[i];
        if (sc->in_flight)
            continue;
        sc->in_flight = true;
        dmf_rpc_unary(sc->ch, "/damselfly.v1.Scheduler/AnnounceHost", &req.base, 3000, on_announced,
                      sc);
    }
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    announce(arg);
}

/* One connection per address of d->cfg.scheduler ("A,B,C"). */
static void connect_all(struct dmf_announce_client *c)
{
    for (size_t i = 0; i < SCHEDULERS_MAX; i++)
        c->conns[i].c = c; /* also for a late answer to a slot no longer used */
    char *list = dmf_xstrdup(c->d->cfg.scheduler ? c->d->cfg.scheduler : ""), *save = NULL;
    for (char *a = strtok_r(list, ", ", &save); a && c->nconns < SCHEDULERS_MAX;
         a = strtok_r(NULL, ", ", &save)) {
        struct sched_conn *sc = &c->conns[c->nconns++];
        sc->addr = dmf_xstrdup(a);
        /* With TLS: only a host whose certificate is a scheduler's. */
        struct dmf_tls_expect expect = {.role = DMF_TLS_ROLE_SCHEDULER};
        sc->ch = dmf_rpc_channel_new_member(c->d->rpc, a, &expect);
    }
    free(list);
}

struct dmf_announce_client *dmf_announce_client_new(struct dmf_daemon *d,
                                                    dmf_announce_rejoin_cb rejoin, void *arg)
{
    struct dmf_announce_client *c = dmf_xcalloc(1, sizeof(*c));
    c->d = d;
    c->rejoin = rejoin;
    c->rejoin_arg = arg;
    connect_all(c);
    c->timer = dmf_xevent_new(d->base, -1, EV_PERSIST, on_timer, c);
    uint64_t ms = d->cfg.announce_interval;
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    event_add(c->timer, &tv);
    return c;
}

void dmf_announce_client_retarget(struct dmf_announce_client *c)
{
    /* Every connection is made again from the new list. An announce still in flight on an
     * old channel keeps its slot's in_flight (so freeing c still waits for it), and its
     * answer lands on the slot's new scheduler, which the next announce corrects. Streams
     * open on an old channel stay there until they end, then reconnect to the new list. */
    for (size_t i = 0; i < c->nconns; i++) {
        dmf_rpc_channel_free(c->conns[i].ch);
        free(c->conns[i].addr);
        c->conns[i].ch = NULL;
        c->conns[i].addr = NULL;
        c->conns[i].announced = false;
        c->conns[i].answers = 0;
        c->conns[i].scheduler_id[0] = '\0';
    }
    c->nconns = 0;
    connect_all(c);
    announce(c);
}

static int total_answers(const struct dmf_announce_client *c, bool *any_up)
{
    int n = 0;
    *any_up = false;
    for (size_t i = 0; i < c->nconns; i++) {
        n += c->conns[i].answers > 0;
        *any_up |= c->conns[i].announced;
    }
    return n;
}

bool dmf_announce_client_announce_sync(struct dmf_announce_client *c, uint64_t timeout_ms)
{
    bool up;
    announce(c);
    uint64_t deadline = dmf_now_ms() + timeout_ms;
    while (total_answers(c, &up) < (int)c->nconns && dmf_now_ms() < deadline)
        event_base_loop(c->d->base, EVLOOP_ONCE);
    total_answers(c, &up);
    return up;
}

static void on_left(void *arg, grpc_status_code status, const char *details, const uint8_t *resp,
                    size_t len)
{
    (*(int *)arg)++;
}

static bool any_in_flight(const struct dmf_announce_client *c)
{
    for (size_t i = 0; i < SCHEDULERS_MAX; i++) /* a dropped slot's answer may be due */
        if (c->conns[i].in_flight)
            return true;
    return false;
}

void dmf_announce_client_free(struct dmf_announce_client *c)
{
    if (c == NULL)
        return;
    event_free(c->timer);
    while (c->lingering) {
        struct dmf_announce_peer *sp = c->lingering;
        linger_remove(sp);
        dmf_rpc_call_release(sp->call);
        peer_free(sp);
    }
    int asked = 0, done = 0;
    Damselfly__V1__LeaveHostRequest req = DAMSELFLY__V1__LEAVE_HOST_REQUEST__INIT;
    req.host_id = c->d->cfg.host_id;
    c->rejoin = NULL; /* leaving: nothing to tell the engine any more */
    for (size_t i = 0; i < c->nconns; i++) {
        if (!c->conns[i].announced)
            continue;
        asked++;
        dmf_rpc_unary(c->conns[i].ch, "/damselfly.v1.Scheduler/LeaveHost", &req.base, 1000, on_left,
                      &done);
    }
    uint64_t deadline = dmf_now_ms() + 1500;
    while (done < asked && dmf_now_ms() < deadline)
        event_base_loop(c->d->base, EVLOOP_ONCE);
    /* An announce still in flight holds c: wait for it (bounded by its 3 s deadline). */
    deadline = dmf_now_ms() + 3500;
    while (any_in_flight(c) && dmf_now_ms() < deadline)
        event_base_loop(c->d->base, EVLOOP_ONCE);
    for (size_t i = 0; i < c->nconns; i++) {
        dmf_rpc_channel_free(c->conns[i].ch);
        free(c->conns[i].addr);
    }
    free(c);
}

/* The scheduler a task's stream goes to: by rendezvous hashing on the task id among those
 * whose last announce succeeded (all of them when none did), so every host sends a task
 * to the same scheduler, and a dead one's tasks move to the next. */
static struct sched_conn *pick_conn(struct dmf_announce_client *c, const char *task_id)
{
    const char *addrs[SCHEDULERS_MAX];
    bool up[SCHEDULERS_MAX];
    bool any = false;
    for (size_t i = 0; i < c->nconns; i++) {
        addrs[i] = c->conns[i].addr;
        up[i] = c->conns[i].announced;
        any |= up[i];
    }
    size_t i = dmf_rendezvous_pick(task_id, addrs, any ? up : NULL, c->nconns);
    return &c->conns[i < c->nconns ? i : 0];
}

static void on_left_peer(void *arg, grpc_status_code status, const char *details,
                         const uint8_t *resp, size_t len)
{
    if (status != GRPC_STATUS_OK && status != GRPC_STATUS_NOT_FOUND)
        dmf_debug("LeavePeer: %s", details ? details : "failed");
}

void dmf_announce_leave_peer(struct dmf_announce_client *c, const char *task_id,
                             const char *peer_id)
{
    if (c == NULL || c->nconns == 0)
        return;
    Damselfly__V1__LeavePeerRequest req = DAMSELFLY__V1__LEAVE_PEER_REQUEST__INIT;
    req.task_id = (char *)task_id;
    req.peer_id = (char *)peer_id;
    struct sched_conn *sc = pick_conn(c, task_id);
    if (sc->ch != NULL)
        dmf_rpc_unary(sc->ch, "/damselfly.v1.Scheduler/LeavePeer", &req.base, 1000, on_left_peer,
                      NULL);
}

/* ---------------------------------------------------------------- AnnouncePeer: answers */

static void decode_meta(const Damselfly__V1__TaskMeta *m, struct dmf_announce_meta *out,
                        struct dmf_announce_digest *digests)
{
    *out = (struct dmf_announce_meta){.content_length = -1,
                                      .digests = digests,
                                      .etag = "",
                                      .last_modified = "",
                                      .content_type = ""};
    if (m == NULL)
        return;
    out->has_layout = m->piece_length > 0 || m->content_length == 0;
    out->content_length = m->content_length < 0 ? -1 : m->content_length;
    out->piece_length = m->piece_length;
    out->etag = m->etag && strlen(m->etag) <= 1024 ? m->etag : "";
    out->last_modified =
        m->last_modified && strlen(m->last_modified) <= 1024 ? m->last_modified : "";
    out->content_type = dmf_content_type_valid(m->content_type) ? m->content_type : "";
    for (size_t i = 0; i < m->n_digests; i++) {
        const Damselfly__V1__PieceDigest *pd = m->digests[i];
        if (pd->sha256.len == DMF_SHA256_LEN)
            digests[out->ndigests++] = (struct dmf_announce_digest){pd->number, pd->sha256.data};
    }
}

static bool parent_ok(const Damselfly__V1__Parent *p, const char *self_host_id)
{
    return p->ip != NULL && p->ip[0] != '\0' && p->piece_port != 0 && p->piece_port <= 65535 &&
           strlen(p->ip) <= PARENT_IP_MAX && p->host_id != NULL && p->host_id[0] != '\0' &&
           strcmp(p->host_id, self_host_id) != 0;
}

static void decode_candidates(const Damselfly__V1__Candidates *cand, const char *self_host_id,
                              const struct dmf_announce_sink *sink, void *arg)
{
    if (cand->piece_token != NULL && cand->piece_token[0] != '\0' && sink->piece_token)
        sink->piece_token(arg, cand->piece_token);
    if (cand->n_parents == 0 && cand->piece_token != NULL && cand->piece_token[0] != '\0')
        return; /* a renewal of the token alone */
    const Damselfly__V1__TaskMeta *m = cand->task;
    struct dmf_announce_digest *digests = dmf_xcalloc(m ? m->n_digests + 1 : 1, sizeof(*digests));
    struct dmf_parent_info *parents = dmf_xcalloc(cand->n_parents + 1, sizeof(*parents));
    struct dmf_announce_meta meta;
    decode_meta(m, &meta, digests);
    size_t n = 0;
    for (size_t i = 0; i < cand->n_parents; i++) {
        const Damselfly__V1__Parent *p = cand->parents[i];
        if (!parent_ok(p, self_host_id))
            continue;
        parents[n++] = (struct dmf_parent_info){
            .peer_id = p->peer_id ? p->peer_id : "",
            .host_id = p->host_id,
            .ip = p->ip,
            .port = (uint16_t)p->piece_port,
            .is_seed = p->is_seed,
        };
    }
    sink->candidates(arg, parents, n, cand->seed_triggered, &meta);
    free(parents);
    free(digests);
}

int dmf_announce_decode(const uint8_t *data, size_t len, const char *self_host_id,
                        const struct dmf_announce_sink *sink, void *arg)
{
    Damselfly__V1__AnnouncePeerResponse *resp =
        damselfly__v1__announce_peer_response__unpack(NULL, len, data);
    if (resp == NULL)
        return -EBADMSG;
    switch (resp->msg_case) {
    case DAMSELFLY__V1__ANNOUNCE_PEER_RESPONSE__MSG_CANDIDATES:
        decode_candidates(resp->candidates, self_host_id, sink, arg);
        break;
    case DAMSELFLY__V1__ANNOUNCE_PEER_RESPONSE__MSG_BACK_TO_SOURCE: {
        const char *reason = resp->back_to_source->reason;
        sink->back_to_source(arg, reason ? reason : "");
        break;
    }
    case DAMSELFLY__V1__ANNOUNCE_PEER_RESPONSE__MSG_TASK_FAILED: {
        const char *reason = resp->task_failed->reason;
        sink->failed(arg, reason && *reason ? reason : "failed", resp->task_failed->origin_status,
                     resp->task_failed->content_changed);
        break;
    }
    case DAMSELFLY__V1__ANNOUNCE_PEER_RESPONSE__MSG_TASK_META: {
        const Damselfly__V1__TaskMeta *m = resp->task_meta;
        struct dmf_announce_digest *digests =
            dmf_xcalloc(m ? m->n_digests + 1 : 1, sizeof(*digests));
        struct dmf_announce_meta meta;
        decode_meta(m, &meta, digests);
        sink->meta(arg, &meta);
        free(digests);
        break;
    }
    default:
        break;
    }
    damselfly__v1__announce_peer_response__free_unpacked(resp, NULL);
    return 0;
}

static void peer_on_message(void *arg, dmf_rpc_call_t *call, const uint8_t *data, size_t len)
{
    struct dmf_announce_peer *sp = arg;
    if (data == NULL || sp->env.sink == NULL)
        return;
    if (dmf_announce_decode(data, len, sp->c->d->cfg.host_id, sp->env.sink, sp->env.arg) != 0)
        dmf_warn("task %s: undecodable message from the scheduler", sp->env.task_id);
}

static void peer_free(struct dmf_announce_peer *sp)
{
    event_free(sp->flush);
    free(sp->pieces);
    free(sp->digests);
    free(sp->digest_bytes);
    free(sp);
}

static void peer_on_end(void *arg, dmf_rpc_call_t *call, grpc_status_code status,
                        const char *details)
{
    struct dmf_announce_peer *sp = arg;
    dmf_rpc_call_release(call);
    sp->call = NULL;
    linger_remove(sp);
    if (status == GRPC_STATUS_UNAVAILABLE && sp->conn->announced && sp->c->nconns > 1) {
        /* Gone: the task's next stream goes to the next scheduler, not this one again. */
        dmf_warn("the scheduler at %s is unreachable", sp->conn->addr);
        set_announced(sp->conn, false);
    }
    if (sp->env.sink != NULL)
        sp->env.sink->lost(sp->env.arg, details ? details : "");
    peer_free(sp);
}

static const struct dmf_rpc_call_handler peer_handler = {
    .on_message = peer_on_message,
    .on_end = peer_on_end,
};

/* ---------------------------------------------------------------- AnnouncePeer: reports */

static void send_request(struct dmf_announce_peer *sp, Damselfly__V1__AnnouncePeerRequest *req)
{
    if (sp->call)
        dmf_rpc_call_send(sp->call, &req->base);
}

static void flush_progress(struct dmf_announce_peer *sp)
{
    if (sp->npieces == 0 || sp->env.sink == NULL)
        return;
    const struct dmf_piece_book *book = sp->env.book;
    Damselfly__V1__PieceProgress pp = DAMSELFLY__V1__PIECE_PROGRESS__INIT;
    pp.pieces = sp->pieces;
    pp.n_pieces = sp->npieces;
    Damselfly__V1__PieceDigest *ptrs[REPORT_BATCH];
    for (size_t i = 0; i < sp->ndigests; i++)
        ptrs[i] = &sp->digests[i];
    pp.digests = ptrs;
    pp.n_digests = sp->ndigests;
    pp.content_length = book->content_length;
    pp.piece_length = book->piece_length;
    pp.bytes_from_parents = sp->env.bytes->seed + sp->env.bytes->peer;
    pp.bytes_from_origin = sp->env.bytes->origin;
    if (sp->env.etag && *sp->env.etag)
        pp.etag = *sp->env.etag;
    if (sp->env.last_modified && *sp->env.last_modified)
        pp.last_modified = *sp->env.last_modified;
    if (sp->env.content_type && dmf_content_type_valid(*sp->env.content_type))
        pp.content_type = *sp->env.content_type;
    Damselfly__V1__AnnouncePeerRequest req = DAMSELFLY__V1__ANNOUNCE_PEER_REQUEST__INIT;
    req.msg_case = DAMSELFLY__V1__ANNOUNCE_PEER_REQUEST__MSG_PROGRESS;
    req.progress = &pp;
    send_request(sp, &req);
    sp->npieces = 0;
    sp->ndigests = 0;
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    flush_progress(arg);
}

struct dmf_announce_peer *dmf_announce_open(struct dmf_announce_client *c,
                                            const struct dmf_announce_peer_env *env,
                                            const struct dmf_announce_register *r)
{
    struct dmf_daemon *d = c->d;
    struct dmf_announce_peer *sp = dmf_xcalloc(1, sizeof(*sp));
    sp->env = *env;
    sp->c = c;
    sp->flush = dmf_xevtimer_new(d->base, on_flush, sp);
    sp->pieces = dmf_xmalloc(REPORT_BATCH * sizeof(*sp->pieces));
    sp->digests = dmf_xmalloc(REPORT_BATCH * sizeof(*sp->digests));
    sp->digest_bytes = dmf_xmalloc(REPORT_BATCH * DMF_SHA256_LEN);
    sp->conn = pick_conn(c, env->task_id);
    sp->call = dmf_rpc_call_start(sp->conn->ch, "/damselfly.v1.Scheduler/AnnouncePeer", 0, false);
    dmf_rpc_call_set_handler(sp->call, &peer_handler, sp);

    const dmf_bitmap_t *have = &env->book->have;
    Damselfly__V1__RegisterPeer reg = DAMSELFLY__V1__REGISTER_PEER__INIT;
    reg.task_id = (char *)env->task_id;
    reg.peer_id = (char *)env->peer_id;
    reg.host_id = d->cfg.host_id;
    reg.url = (char *)r->url;
    struct dmf_pb_headers hdrs;
    dmf_pb_headers_init(&hdrs, r->headers);
    reg.headers = hdrs.ptrs;
    reg.n_headers = hdrs.n;
    reg.tag = (char *)(r->tag ? r->tag : "");
    reg.application = (char *)(r->application ? r->application : "");
    reg.digest = (char *)r->digest;
    reg.filter_query = r->filter_query->v;
    reg.n_filter_query = r->filter_query->n;
    reg.disable_back_to_source = r->disable_back_to_source;
    reg.held_pieces = have->count;
    reg.holds_task = r->holds_task;
    reg.from_source = r->from_source;
    reg.stalled = r->stalled;
    reg.etag = (char *)(r->etag ? r->etag : "");
    reg.last_modified = (char *)(r->last_modified ? r->last_modified : "");
    Damselfly__V1__AnnouncePeerRequest req = DAMSELFLY__V1__ANNOUNCE_PEER_REQUEST__INIT;
    req.msg_case = DAMSELFLY__V1__ANNOUNCE_PEER_REQUEST__MSG_REGISTER;
    req.register_ = &reg;
    send_request(sp, &req);
    dmf_pb_headers_free(&hdrs);

    /* A resumed download, or one joining a restarted scheduler, tells what it holds, with
     * the digests: they may be the only copy of them the cluster has left. */
    for (uint32_t n = 0; n < have->nbits; n++)
        if (dmf_bitmap_get(have, n))
            dmf_announce_report_piece(sp, n, dmf_book_digest(env->book, n));
    return sp;
}

void dmf_announce_report_piece(struct dmf_announce_peer *sp, uint32_t n, const uint8_t *digest)
{
    if (sp == NULL)
        return;
    if (sp->npieces == REPORT_BATCH)
        flush_progress(sp);
    sp->pieces[sp->npieces++] = n;
    if (digest) {
        Damselfly__V1__PieceDigest *pd = &sp->digests[sp->ndigests];
        damselfly__v1__piece_digest__init(pd);
        memcpy(sp->digest_bytes[sp->ndigests], digest, DMF_SHA256_LEN);
        pd->number = n;
        pd->sha256.data = sp->digest_bytes[sp->ndigests];
        pd->sha256.len = DMF_SHA256_LEN;
        sp->ndigests++;
    }
    if (sp->npieces == REPORT_BATCH) {
        flush_progress(sp);
    } else if (!evtimer_pending(sp->flush, NULL)) {
        struct timeval tv = {0, REPORT_DELAY_MS * 1000};
        evtimer_add(sp->flush, &tv);
    }
}

void dmf_announce_report_parent_failure(struct dmf_announce_peer *sp, const char *peer_id,
                                        const char *host_id, bool bad_piece, uint32_t piece)
{
    if (sp == NULL)
        return;
    Damselfly__V1__ParentFailure pf = DAMSELFLY__V1__PARENT_FAILURE__INIT;
    pf.parent_peer_id = (char *)peer_id;
    pf.parent_host_id = (char *)host_id;
    pf.reason = bad_piece ? DAMSELFLY__V1__PARENT_FAILURE_REASON__PARENT_FAILURE_BAD_PIECE
                          : DAMSELFLY__V1__PARENT_FAILURE_REASON__PARENT_FAILURE_UNREACHABLE;
    pf.piece = piece;
    Damselfly__V1__AnnouncePeerRequest req = DAMSELFLY__V1__ANNOUNCE_PEER_REQUEST__INIT;
    req.msg_case = DAMSELFLY__V1__ANNOUNCE_PEER_REQUEST__MSG_PARENT_FAILURE;
    req.parent_failure = &pf;
    send_request(sp, &req);
}

void dmf_announce_finish(struct dmf_announce_peer *sp, bool ok, const char *reason, bool for_good,
                         uint32_t origin_status, bool content_changed)
{
    if (sp == NULL)
        return;
    flush_progress(sp);
    evtimer_del(sp->flush);
    Damselfly__V1__AnnouncePeerRequest req = DAMSELFLY__V1__ANNOUNCE_PEER_REQUEST__INIT;
    Damselfly__V1__PeerFinished fin = DAMSELFLY__V1__PEER_FINISHED__INIT;
    Damselfly__V1__PeerFailed failed = DAMSELFLY__V1__PEER_FAILED__INIT;
    if (ok) {
        fin.content_length = sp->env.book->content_length;
        fin.total_pieces = sp->env.book->total_pieces;
        req.msg_case = DAMSELFLY__V1__ANNOUNCE_PEER_REQUEST__MSG_FINISHED;
        req.finished = &fin;
    } else {
        failed.reason = (char *)(reason ? reason : "failed");
        failed.for_good = for_good;
        failed.origin_status = origin_status;
        failed.content_changed = content_changed;
        req.msg_case = DAMSELFLY__V1__ANNOUNCE_PEER_REQUEST__MSG_FAILED;
        req.failed = &failed;
    }
    send_request(sp, &req);
    if (sp->call)
        dmf_rpc_call_close_send(sp->call);
    /* The stream lives on until the scheduler closes it; the task no longer listens. */
    sp->env.sink = NULL;
    if (sp->call == NULL) {
        peer_free(sp);
        return;
    }
    sp->lingering = true;
    sp->prev = NULL;
    sp->next = sp->c->lingering;
    if (sp->next)
        sp->next->prev = sp;
    sp->c->lingering = sp;
}

void dmf_announce_peer_free(struct dmf_announce_peer *sp)
{
    if (sp == NULL)
        return;
    sp->env.sink = NULL;
    if (sp->call) {
        dmf_rpc_call_release(sp->call); /* no callback after this */
        sp->call = NULL;
    }
    peer_free(sp);
}
