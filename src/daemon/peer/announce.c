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

/* The client's life (every change goes through set_state, which logs it):
 * IDLE -> JOINING (dmf_announce_client_join: the first announce is out) -> RUNNING (every
 * scheduler answered, or the join timed out) -> LEAVING (dmf_announce_client_leave:
 * LeaveHost is out) -> LEFT (every LeaveHost answered, or the leave timed out). No state
 * runs the event loop itself: answers and timeouts are events of the daemon's loop. */
enum client_state {
    CLIENT_IDLE,
    CLIENT_JOINING,
    CLIENT_RUNNING,
    CLIENT_LEAVING,
    CLIENT_LEFT,
};

#define LEAVE_TIMEOUT_MS 1000 /* each LeaveHost's deadline */
#define LEAVE_WAIT_MS    1500 /* the leave ends this long after it began at the latest */

struct dmf_announce_client {
    struct dmf_daemon *d;
    enum client_state state;
    struct sched_conn conns[SCHEDULERS_MAX];
    size_t nconns;
    struct event *timer;
    struct event *phase_timer; /* bounds JOINING and LEAVING */
    dmf_announce_done_cb done; /* the end of JOINING or LEAVING, once */
    void *done_arg;
    int calls; /* unary calls whose answer is due: each holds c */
    int leaves_asked, leaves_answered;
    bool freed; /* dmf_announce_client_free ran: the last answer frees c */
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

static const char *state_name(enum client_state s)
{
    static const char *const names[] = {"idle", "joining", "running", "leaving", "left"};
    return s <= CLIENT_LEFT ? names[s] : "?";
}

static void set_state(struct dmf_announce_client *c, enum client_state to, const char *why)
{
    dmf_info("scheduler client: %s -> %s (%s)", state_name(c->state), state_name(to), why);
    c->state = to;
}

static void client_release(struct dmf_announce_client *c);

/* JOINING or LEAVING ends: the next state, the phase timer stopped, done told (once). */
static void end_phase(struct dmf_announce_client *c, enum client_state to, const char *why)
{
    set_state(c, to, why);
    evtimer_del(c->phase_timer);
    dmf_announce_done_cb done = c->done;
    c->done = NULL;
    if (done) {
        bool up = false;
        for (size_t i = 0; i < c->nconns; i++)
            up |= c->conns[i].announced;
        done(c->done_arg, up);
    }
}

/* One unary call of c was answered: c may have been freed meanwhile (its memory waited for
 * this). Returns true when c is gone and the answer must be dropped. */
static bool call_answered(struct dmf_announce_client *c)
{
    c->calls--;
    if (!c->freed)
        return false;
    if (c->calls == 0)
        client_release(c);
    return true;
}

static int total_answers(const struct dmf_announce_client *c, bool *any_up);

static void on_announced(void *arg, grpc_status_code status, const char *details,
                         const uint8_t *resp, size_t len)
{
    struct sched_conn *sc = arg;
    struct dmf_announce_client *c = sc->c;
    sc->in_flight = false;
    if (call_answered(c))
        return;
    if (sc->ch == NULL || c->state >= CLIENT_LEAVING)
        return; /* the slot's scheduler was dropped from the list meanwhile, or leaving */
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
    bool up;
    if (c->state == CLIENT_JOINING && total_answers(c, &up) == (int)c->nconns)
        end_phase(c, CLIENT_RUNNING,
                  up ? "every scheduler answered" : "every scheduler answered, none took us");
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
        c->calls++;
        dmf_rpc_unary(sc->ch, "/damselfly.v1.Scheduler/AnnounceHost", &req.base, 3000, on_announced,
                      sc);
    }
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    announce(arg);
}

static void on_phase_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct dmf_announce_client *c = arg;
    if (c->state == CLIENT_JOINING)
        end_phase(c, CLIENT_RUNNING, "not every scheduler answered in time: serving anyway");
    else if (c->state == CLIENT_LEAVING)
        end_phase(c, CLIENT_LEFT,
                  c->leaves_asked == 0 ? "no scheduler to leave" : "LeaveHost timed out");
}

static void phase_timer_start(struct dmf_announce_client *c, uint64_t ms)
{
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(c->phase_timer, &tv);
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
    c->phase_timer = dmf_xevtimer_new(d->base, on_phase_timeout, c);
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

/* The streams of finished downloads the schedulers have not closed yet: gone, unheard. */
static void drop_lingering(struct dmf_announce_client *c)
{
    while (c->lingering) {
        struct dmf_announce_peer *sp = c->lingering;
        linger_remove(sp);
        dmf_rpc_call_release(sp->call);
        peer_free(sp);
    }
}

void dmf_announce_client_join(struct dmf_announce_client *c, uint64_t timeout_ms,
                              dmf_announce_done_cb done, void *arg)
{
    if (c->state != CLIENT_IDLE)
        return;
    c->done = done;
    c->done_arg = arg;
    set_state(c, CLIENT_JOINING, "first announce");
    announce(c);
    phase_timer_start(c, timeout_ms);
}

static void on_left(void *arg, grpc_status_code status, const char *details, const uint8_t *resp,
                    size_t len)
{
    struct sched_conn *sc = arg;
    struct dmf_announce_client *c = sc->c;
    if (call_answered(c))
        return;
    c->leaves_answered++;
    if (status != GRPC_STATUS_OK)
        dmf_info("LeaveHost to the scheduler at %s: %s", sc->addr ? sc->addr : "?",
                 details && details[0] ? details : "failed");
    if (c->state == CLIENT_LEAVING && c->leaves_answered == c->leaves_asked)
        end_phase(c, CLIENT_LEFT, "every LeaveHost answered or failed");
}

void dmf_announce_client_leave(struct dmf_announce_client *c, dmf_announce_done_cb done, void *arg)
{
    if (c->state >= CLIENT_LEAVING)
        return;
    if (c->state == CLIENT_JOINING)
        end_phase(c, CLIENT_RUNNING, "leaving before the join ended");
    event_del(c->timer);
    drop_lingering(c);
    c->done = done;
    c->done_arg = arg;
    c->rejoin = NULL; /* leaving: nothing to tell the engine any more */
    Damselfly__V1__LeaveHostRequest req = DAMSELFLY__V1__LEAVE_HOST_REQUEST__INIT;
    req.host_id = c->d->cfg.host_id;
    c->leaves_asked = c->leaves_answered = 0;
    for (size_t i = 0; i < c->nconns; i++) {
        if (!c->conns[i].announced)
            continue;
        c->leaves_asked++;
        c->calls++;
        dmf_rpc_unary(c->conns[i].ch, "/damselfly.v1.Scheduler/LeaveHost", &req.base,
                      LEAVE_TIMEOUT_MS, on_left, &c->conns[i]);
    }
    set_state(c, CLIENT_LEAVING, c->leaves_asked ? "LeaveHost sent" : "no scheduler took us");
    /* Nothing to wait for: the sequence still ends from the loop, never inside this call. */
    phase_timer_start(c, c->leaves_asked ? LEAVE_WAIT_MS : 0);
}

static void client_release(struct dmf_announce_client *c)
{
    for (size_t i = 0; i < c->nconns; i++) {
        dmf_rpc_channel_free(c->conns[i].ch);
        free(c->conns[i].addr);
    }
    free(c);
}

void dmf_announce_client_free(struct dmf_announce_client *c)
{
    if (c == NULL)
        return;
    event_free(c->timer);
    event_free(c->phase_timer);
    c->timer = c->phase_timer = NULL;
    c->done = NULL;
    c->rejoin = NULL;
    drop_lingering(c);
    /* An announce or LeaveHost still in flight answers into c: the last answer frees it
     * (gRPC returns every answer by dmf_rpc_free, bounded by the calls' deadlines). */
    c->freed = true;
    if (c->calls == 0)
        client_release(c);
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
