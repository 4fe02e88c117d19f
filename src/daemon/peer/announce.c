/* The daemon's side of the scheduler; see sched_client.h. */
#include "daemon/peer/announce.h"

#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/pb_headers.h"
#include "common/util.h"
#include "daemon/peer/parent.h"
#include "daemon/peer/task.h"
#include "damselfly/v1/scheduler.pb-c.h"

#define REPORT_BATCH    32 /* pieces per progress message at most */
#define REPORT_DELAY_MS 30 /* how long a verified piece may wait for company */

struct dmf_sched_client {
    struct dmf_daemon *d;
    dmf_rpc_channel_t *ch;
    struct event *timer;
    bool in_flight;
    bool announced;
    int answers; /* announce answers received (success or not) */
    uint64_t last_uploaded, last_ms, upload_rate;
    struct dmf_sched_peer *lingering; /* finished streams the scheduler has not closed yet */
};

struct dmf_sched_peer {
    struct dmf_task *t; /* NULL once detached from its task */
    dmf_rpc_call_t *call;
    struct dmf_sched_client *c;
    bool answered;
    struct event *flush;
    uint32_t *pieces;
    size_t npieces;
    Damselfly__V1__PieceDigest *digests; /* for pieces fetched from the origin */
    uint8_t (*digest_bytes)[DMF_SHA256_LEN];
    size_t ndigests;
    struct dmf_sched_peer *prev, *next; /* in c->lingering */
    bool lingering;
};

static void peer_free(struct dmf_sched_peer *sp);

static void linger_remove(struct dmf_sched_peer *sp)
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

static void on_announced(void *arg, grpc_status_code status, const char *details,
                         const uint8_t *resp, size_t len)
{
    struct dmf_sched_client *c = arg;
    c->in_flight = false;
    c->answers++;
    if (status == GRPC_STATUS_OK) {
        if (!c->announced)
            dmf_info("announced host %s to the scheduler at %s", c->d->cfg.host_id,
                     c->d->cfg.scheduler);
        c->announced = true;
    } else {
        if (c->announced || c->answers == 1)
            dmf_warn("cannot announce to the scheduler at %s: %s", c->d->cfg.scheduler,
                     details[0] ? details : "unavailable");
        c->announced = false;
    }
}

static void announce(struct dmf_sched_client *c)
{
    struct dmf_daemon *d = c->d;
    if (c->in_flight)
        return;
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
    host.upload_capacity = d->cfg.upload_capacity;
    host.upload_rate = c->upload_rate;
    host.active_uploads = dmf_piece_server_active_uploads(d->pieces);
    Damselfly__V1__AnnounceHostRequest req = DAMSELFLY__V1__ANNOUNCE_HOST_REQUEST__INIT;
    req.host = &host;
    c->in_flight = true;
    dmf_rpc_unary(c->ch, "/damselfly.v1.Scheduler/AnnounceHost", &req.base, 3000, on_announced, c);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    announce(arg);
}

struct dmf_sched_client *dmf_sched_client_new(struct dmf_daemon *d)
{
    struct dmf_sched_client *c = dmf_xcalloc(1, sizeof(*c));
    c->d = d;
    c->ch = dmf_rpc_channel_new(d->rpc, d->cfg.scheduler);
    c->timer = event_new(d->base, -1, EV_PERSIST, on_timer, c);
    uint64_t ms = d->cfg.announce_interval;
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    event_add(c->timer, &tv);
    return c;
}

bool dmf_sched_client_announce_sync(struct dmf_sched_client *c, uint64_t timeout_ms)
{
    int before = c->answers;
    announce(c);
    uint64_t deadline = dmf_now_ms() + timeout_ms;
    while (c->answers == before && dmf_now_ms() < deadline)
        event_base_loop(c->d->base, EVLOOP_ONCE);
    return c->announced;
}

static void on_left(void *arg, grpc_status_code status, const char *details, const uint8_t *resp,
                    size_t len)
{
    *(bool *)arg = true;
}

void dmf_sched_client_free(struct dmf_sched_client *c)
{
    if (c == NULL)
        return;
    event_free(c->timer);
    while (c->lingering) {
        struct dmf_sched_peer *sp = c->lingering;
        linger_remove(sp);
        dmf_rpc_call_release(sp->call);
        peer_free(sp);
    }
    if (c->announced) {
        bool done = false;
        Damselfly__V1__LeaveHostRequest req = DAMSELFLY__V1__LEAVE_HOST_REQUEST__INIT;
        req.host_id = c->d->cfg.host_id;
        dmf_rpc_unary(c->ch, "/damselfly.v1.Scheduler/LeaveHost", &req.base, 1000, on_left, &done);
        uint64_t deadline = dmf_now_ms() + 1500;
        while (!done && dmf_now_ms() < deadline)
            event_base_loop(c->d->base, EVLOOP_ONCE);
    }
    /* An announce still in flight holds c: wait for it (bounded by its 3 s deadline). */
    uint64_t deadline = dmf_now_ms() + 3500;
    while (c->in_flight && dmf_now_ms() < deadline)
        event_base_loop(c->d->base, EVLOOP_ONCE);
    dmf_rpc_channel_free(c->ch);
    free(c);
}

/* ---------------------------------------------------------------- AnnouncePeer */

static void apply_meta(struct dmf_task *t, const Damselfly__V1__TaskMeta *m)
{
    if (m == NULL)
        return;
    if (m->piece_length > 0 || m->content_length == 0) {
        if (dmf_task_set_layout(t, m->content_length < 0 ? -1 : m->content_length,
                                m->piece_length) != 0) {
            dmf_task_fail(t, "the scheduler sent an invalid layout (%lld bytes, pieces of %u)",
                          (long long)m->content_length, m->piece_length);
            return;
        }
    }
    for (size_t i = 0; i < m->n_digests; i++) {
        const Damselfly__V1__PieceDigest *pd = m->digests[i];
        if (pd->sha256.len == DMF_SHA256_LEN)
            dmf_task_set_digest(t, pd->number, pd->sha256.data);
    }
}

static void apply_candidates(struct dmf_task *t, const Damselfly__V1__Candidates *cand)
{
    apply_meta(t, cand->task);
    for (size_t i = 0; i < cand->n_parents; i++) {
        const Damselfly__V1__Parent *p = cand->parents[i];
        if (p->ip == NULL || p->ip[0] == '\0' || p->piece_port == 0 || p->piece_port > 65535 ||
            strlen(p->ip) > 64 || p->host_id == NULL || p->host_id[0] == '\0' ||
            strcmp(p->host_id, t->d->cfg.host_id) == 0)
            continue;
        struct dmf_parent_info info = {
            .peer_id = p->peer_id ? p->peer_id : "",
            .host_id = p->host_id,
            .ip = p->ip,
            .port = (uint16_t)p->piece_port,
            .is_seed = p->is_seed,
        };
        dmf_parents_add(t, &info);
    }
    if (t->state == DMF_TASK_REGISTERING) {
        dmf_info("task %s peer %s: scheduler offers %zu parent(s)%s", t->id, t->peer_id,
                 cand->n_parents, cand->seed_triggered ? " (a seed is fetching it)" : "");
        dmf_task_set_state(t, DMF_TASK_P2P);
    }
    dmf_task_kick(t);
}

static void peer_on_message(void *arg, dmf_rpc_call_t *call, const uint8_t *data, size_t len)
{
    struct dmf_sched_peer *sp = arg;
    struct dmf_task *t = sp->t;
    if (data == NULL || t == NULL)
        return;
    Damselfly__V1__AnnouncePeerResponse *resp =
        damselfly__v1__announce_peer_response__unpack(NULL, len, data);
    if (resp == NULL) {
        dmf_warn("task %s: undecodable message from the scheduler", t->id);
        return;
    }
    sp->answered = true;
    switch (resp->msg_case) {
    case DAMSELFLY__V1__ANNOUNCE_PEER_RESPONSE__MSG_CANDIDATES:
        if (t->state == DMF_TASK_REGISTERING || t->state == DMF_TASK_P2P)
            apply_candidates(t, resp->candidates);
        break;
    case DAMSELFLY__V1__ANNOUNCE_PEER_RESPONSE__MSG_BACK_TO_SOURCE:
        if (t->state == DMF_TASK_REGISTERING || t->state == DMF_TASK_P2P) {
            char why[300];
            snprintf(why, sizeof(why), "the scheduler says: %.256s",
                     resp->back_to_source->reason ? resp->back_to_source->reason : "");
            dmf_task_back_to_source(t, why);
        }
        break;
    case DAMSELFLY__V1__ANNOUNCE_PEER_RESPONSE__MSG_TASK_META:
        if (t->state == DMF_TASK_REGISTERING || t->state == DMF_TASK_P2P)
            apply_meta(t, resp->task_meta);
        break;
    default:
        break;
    }
    damselfly__v1__announce_peer_response__free_unpacked(resp, NULL);
}

static void peer_free(struct dmf_sched_peer *sp)
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
    struct dmf_sched_peer *sp = arg;
    struct dmf_task *t = sp->t;
    dmf_rpc_call_release(call);
    sp->call = NULL;
    linger_remove(sp);
    if (t != NULL) {
        t->sched_peer = NULL;
        sp->t = NULL;
        if (t->state == DMF_TASK_REGISTERING) {
            char why[300];
            snprintf(why, sizeof(why), "scheduler at %s unreachable (%.200s)", t->d->cfg.scheduler,
                     details && details[0] ? details : "no answer");
            dmf_task_back_to_source(t, why);
        } else if (t->state == DMF_TASK_P2P) {
            dmf_warn("task %s peer %s: lost the scheduler (%s); going on with current parents",
                     t->id, t->peer_id, details && details[0] ? details : "stream closed");
        }
    }
    peer_free(sp);
}

static const struct dmf_rpc_call_handler peer_handler = {
    .on_message = peer_on_message,
    .on_end = peer_on_end,
};

static void send_request(struct dmf_sched_peer *sp, Damselfly__V1__AnnouncePeerRequest *req)
{
    if (sp->call)
        dmf_rpc_call_send(sp->call, &req->base);
}

static void flush_progress(struct dmf_sched_peer *sp)
{
    struct dmf_task *t = sp->t;
    if (sp->npieces == 0 || t == NULL)
        return;
    Damselfly__V1__PieceProgress pp = DAMSELFLY__V1__PIECE_PROGRESS__INIT;
    pp.pieces = sp->pieces;
    pp.n_pieces = sp->npieces;
    Damselfly__V1__PieceDigest *ptrs[REPORT_BATCH];
    for (size_t i = 0; i < sp->ndigests; i++)
        ptrs[i] = &sp->digests[i];
    pp.digests = ptrs;
    pp.n_digests = sp->ndigests;
    pp.content_length = t->content_length;
    pp.piece_length = t->piece_length;
    pp.bytes_from_parents = t->bytes_seed + t->bytes_peer;
    pp.bytes_from_origin = t->bytes_origin;
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

void dmf_sched_register(struct dmf_task *t)
{
    struct dmf_daemon *d = t->d;
    dmf_sched_peer_free(t);
    struct dmf_sched_peer *sp = dmf_xcalloc(1, sizeof(*sp));
    sp->t = t;
    sp->c = d->sched;
    sp->flush = evtimer_new(d->base, on_flush, sp);
    sp->pieces = dmf_xmalloc(REPORT_BATCH * sizeof(*sp->pieces));
    sp->digests = dmf_xmalloc(REPORT_BATCH * sizeof(*sp->digests));
    sp->digest_bytes = dmf_xmalloc(REPORT_BATCH * DMF_SHA256_LEN);
    t->sched_peer = sp;
    sp->call = dmf_rpc_call_start(d->sched->ch, "/damselfly.v1.Scheduler/AnnouncePeer", 0, false);
    dmf_rpc_call_set_handler(sp->call, &peer_handler, sp);

    Damselfly__V1__RegisterPeer reg = DAMSELFLY__V1__REGISTER_PEER__INIT;
    reg.task_id = t->id;
    reg.peer_id = t->peer_id;
    reg.host_id = d->cfg.host_id;
    reg.url = t->url;
    struct dmf_pb_headers hdrs;
    dmf_pb_headers_init(&hdrs, &t->headers);
    reg.headers = hdrs.ptrs;
    reg.n_headers = hdrs.n;
    reg.tag = t->tag ? t->tag : "";
    reg.digest = t->expected_digest;
    reg.filter_query = t->filter_query.v;
    reg.n_filter_query = t->filter_query.n;
    reg.disable_back_to_source = t->disable_back_to_source;
    reg.held_pieces = t->have.count;
    Damselfly__V1__AnnouncePeerRequest req = DAMSELFLY__V1__ANNOUNCE_PEER_REQUEST__INIT;
    req.msg_case = DAMSELFLY__V1__ANNOUNCE_PEER_REQUEST__MSG_REGISTER;
    req.register_ = &reg;
    send_request(sp, &req);
    dmf_pb_headers_free(&hdrs);

    /* A resumed download tells the scheduler what it already holds. */
    for (uint32_t n = 0; n < t->have.nbits; n++)
        if (dmf_bitmap_get(&t->have, n))
            dmf_sched_report_piece(t, n, NULL);
}

void dmf_sched_report_piece(struct dmf_task *t, uint32_t n, const uint8_t *digest)
{
    struct dmf_sched_peer *sp = t->sched_peer;
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

void dmf_sched_report_parent_failure(struct dmf_task *t, const char *peer_id, const char *host_id,
                                     bool bad_piece, uint32_t piece)
{
    struct dmf_sched_peer *sp = t->sched_peer;
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

void dmf_sched_finish(struct dmf_task *t, bool ok, const char *reason)
{
    struct dmf_sched_peer *sp = t->sched_peer;
    if (sp == NULL)
        return;
    flush_progress(sp);
    evtimer_del(sp->flush);
    Damselfly__V1__AnnouncePeerRequest req = DAMSELFLY__V1__ANNOUNCE_PEER_REQUEST__INIT;
    Damselfly__V1__PeerFinished fin = DAMSELFLY__V1__PEER_FINISHED__INIT;
    Damselfly__V1__PeerFailed failed = DAMSELFLY__V1__PEER_FAILED__INIT;
    if (ok) {
        fin.content_length = t->content_length;
        fin.total_pieces = t->total_pieces;
        req.msg_case = DAMSELFLY__V1__ANNOUNCE_PEER_REQUEST__MSG_FINISHED;
        req.finished = &fin;
    } else {
        failed.reason = (char *)(reason ? reason : "failed");
        req.msg_case = DAMSELFLY__V1__ANNOUNCE_PEER_REQUEST__MSG_FAILED;
        req.failed = &failed;
    }
    send_request(sp, &req);
    if (sp->call)
        dmf_rpc_call_close_send(sp->call);
    /* The stream lives on until the scheduler closes it; the task no longer listens. */
    sp->t = NULL;
    t->sched_peer = NULL;
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

void dmf_sched_peer_free(struct dmf_task *t)
{
    struct dmf_sched_peer *sp = t->sched_peer;
    if (sp == NULL)
        return;
    t->sched_peer = NULL;
    sp->t = NULL;
    if (sp->call) {
        dmf_rpc_call_release(sp->call); /* no callback after this */
        sp->call = NULL;
    }
    peer_free(sp);
}
