/* The scheduler's state and decisions; see sched.h and docs/internals/SCHEDULER.md. The
 * bounds checks of network input are in sched_check.c, the scoring and choice of parents
 * and seeds in sched_rank.c; this file owns the tables and the parent graph and makes
 * every change to them. */
#include "scheduler/sched.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "common/log.h"
#include "common/pieces.h"
#include "common/taskid.h"
#include "common/url_secrets.h"
#include "common/util.h"
#include "scheduler/negcache.h"
#include "scheduler/provenance.h"
#include "scheduler/sched_check.h"
#include "scheduler/sched_rank.h"
#include "scheduler/sched_state.h"
#include "scheduler/strmap.h"

struct dmf_scheduler {
    struct dmf_scheduler_config cfg;
    struct dmf_scheduler_sink sink;
    void *sink_arg;
    dmf_strmap_t hosts; /* id -> struct dmf_sched_host */
    dmf_strmap_t tasks; /* id -> struct dmf_sched_task */
    dmf_strmap_t peers; /* task id + host id -> peer */
    TAILQ_HEAD(, dmf_sched_host) hosts_by_seen;
    struct dmf_sched_host_list seeds;
    TAILQ_HEAD(, dmf_sched_task) all_tasks;
    TAILQ_HEAD(, dmf_scheduler_peer) idle_peers; /* SUCCEEDED and detached, oldest first */
    size_t nhosts, ntasks, npeers;
    uint64_t epoch;
    uint64_t next_trigger_id;
    struct dmf_negcache failed;     /* tasks that failed for good, for a while */
    dmf_scheduler_peer_t **scratch; /* traversal stack */
    size_t scratch_cap;
};

static const char *const state_names[] = {"PENDING", "RUNNING", "BACK_TO_SOURCE", "SUCCEEDED",
                                          "FAILED"};

const char *dmf_scheduler_peer_state_name(enum dmf_scheduler_peer_state st)
{
    return (unsigned)st < DMF_ARRAY_SIZE(state_names) ? state_names[st] : "?";
}

static uint64_t now_ms(const dmf_scheduler_t *s)
{
    return s->cfg.now ? s->cfg.now(s->cfg.now_arg) : dmf_now_ms();
}

static void peer_reindex(const dmf_scheduler_t *s, dmf_scheduler_peer_t *p);

/* ------------------------------------------------------------ hosts */

static struct dmf_sched_host *host_get(const dmf_scheduler_t *s, const char *id)
{
    return dmf_strmap_get(&s->hosts, id);
}

static void host_forget_bad(struct dmf_sched_host *h)
{
    for (uint32_t i = 0; i < h->bad_reports; i++)
        free(h->bad_reporters[i]);
    free(h->bad_reporters);
    h->bad_reporters = NULL;
    h->bad_reports = 0;
}

/* One bad-piece report from reporter_host about h: counted once per reporting host (a
 * peer that reports other hosts in between, or registers again, cannot count twice), and
 * forgotten DMF_SCHED_BAD_FORGET_MS after the last one. Returns true when it counted. */
static bool host_count_bad(struct dmf_sched_host *h, const char *reporter_host, uint32_t threshold,
                           uint64_t now)
{
    if (h->bad_reports && now - h->last_bad_at >= DMF_SCHED_BAD_FORGET_MS)
        host_forget_bad(h);
    h->last_bad_at = now;
    for (uint32_t i = 0; i < h->bad_reports; i++)
        if (strcmp(h->bad_reporters[i], reporter_host) == 0)
            return false;
    if (h->bad_reports >= threshold)
        return false; /* excluded already */
    h->bad_reporters = dmf_xrealloc(h->bad_reporters, (h->bad_reports + 1) * sizeof(char *));
    h->bad_reporters[h->bad_reports++] = dmf_xstrdup(reporter_host);
    return true;
}

/* Records that reporter_host found h unreachable or stalled: one slot per reporter (its
 * latest report), else the oldest slot is taken. Only distinct reporters add up, so one
 * host cannot keep another from being offered. */
static void host_count_unreachable(struct dmf_sched_host *h, const char *reporter_host,
                                   uint64_t now)
{
    uint64_t key = dmf_sched_rendezvous("unreachable", reporter_host);
    size_t slot = 0;
    for (size_t i = 0; i < DMF_SCHED_UNREACHABLE_RING; i++) {
        if (h->unreachable[i].at != 0 && h->unreachable[i].reporter == key) {
            slot = i;
            break;
        }
        if (h->unreachable[i].at < h->unreachable[slot].at)
            slot = i;
    }
    h->unreachable[slot] = (struct dmf_sched_unreachable){key, now ? now : 1};
}

static void host_free(struct dmf_sched_host *h)
{
    host_forget_bad(h);
    free(h->id);
    free(h->hostname);
    free(h->ip);
    free(h->idc);
    free(h->location);
    free(h);
}

static void replace_str(char **dst, const char *src)
{
    free(*dst);
    *dst = dmf_xstrdup(src ? src : "");
}

int dmf_scheduler_announce_host(dmf_scheduler_t *s, const struct dmf_scheduler_host_info *in,
                                char *err, size_t errlen)
{
    int rc = dmf_sched_check_host_info(in, err, errlen);
    if (rc != 0)
        return rc;
    struct dmf_sched_host *h = host_get(s, in->id);
    if (h == NULL) {
        if (s->nhosts >= s->cfg.max_hosts)
            return dmf_sched_fail(err, errlen, -ENOSPC, "too many hosts (%zu): host %s refused",
                                  s->cfg.max_hosts, in->id);
        h = dmf_xcalloc(1, sizeof(*h));
        h->id = dmf_xstrdup(in->id);
        LIST_INIT(&h->peers);
        h->type = DMF_SCHED_HOST_NORMAL;
        dmf_strmap_put(&s->hosts, h->id, h);
        s->nhosts++;
        dmf_info("host %s (%s) announced: %s piece port %u%s", in->id,
                 in->hostname ? in->hostname : "", in->ip, in->piece_port,
                 in->type == DMF_SCHED_HOST_SEED ? ", seed" : "");
    } else {
        TAILQ_REMOVE(&s->hosts_by_seen, h, by_seen);
    }
    replace_str(&h->hostname, in->hostname);
    replace_str(&h->ip, in->ip);
    replace_str(&h->idc, in->idc);
    replace_str(&h->location, in->location);
    h->piece_port = in->piece_port;
    h->rpc_port = in->rpc_port;
    if (h->type != in->type) {
        if (in->type == DMF_SCHED_HOST_SEED)
            LIST_INSERT_HEAD(&s->seeds, h, seeds);
        else
            LIST_REMOVE(h, seeds);
        h->type = in->type;
    }
    h->upload_capacity = in->upload_capacity;
    h->upload_rate = in->upload_rate;
    h->active_uploads = in->active_uploads;
    dmf_scheduler_peer_t *q;
    LIST_FOREACH(q, &h->peers, in_host)
    {
        peer_reindex(s, q); /* the rank keys read the upload figures */
    }
    h->last_seen = now_ms(s);
    if (h->bad_reports && h->last_seen - h->last_bad_at >= DMF_SCHED_BAD_FORGET_MS) {
        dmf_info("host %s: its bad-piece reports are forgotten", h->id);
        host_forget_bad(h);
    }
    TAILQ_INSERT_TAIL(&s->hosts_by_seen, h, by_seen);
    return 0;
}

/* ------------------------------------------------------------ tasks */

static void task_clear_request(struct dmf_sched_task *t)
{
    free(t->url);
    free(t->shown_url);
    for (size_t i = 0; i < t->nheaders; i++) {
        free(t->headers[i].name);
        /* Credentials do not linger in freed memory. */
        explicit_bzero(t->headers[i].value, strlen(t->headers[i].value));
        free(t->headers[i].value);
    }
    free(t->headers);
    free(t->tag);
    free(t->digest);
    for (size_t i = 0; i < t->nfilter_query; i++)
        free(t->filter_query[i]);
    free(t->filter_query);
    t->url = t->shown_url = NULL;
    t->headers = NULL;
    t->nheaders = 0;
    t->tag = t->digest = NULL;
    t->filter_query = NULL;
    t->nfilter_query = 0;
}

static void task_set_request(const dmf_scheduler_t *s, struct dmf_sched_task *t,
                             const struct dmf_scheduler_register *r)
{
    task_clear_request(t);
    t->url = dmf_xstrdup(r->url);
    struct dmf_strlist hide = {0};
    for (size_t i = 0; i < r->nfilter_query; i++)
        dmf_strlist_push(&hide, r->filter_query[i]);
    dmf_strlist_merge(&hide, s->cfg.secret_query);
    t->shown_url = dmf_url_redact(r->url, &hide);
    dmf_strlist_free(&hide);
    t->headers = dmf_xcalloc(r->nheaders, sizeof(*t->headers));
    for (size_t i = 0; i < r->nheaders; i++) {
        t->headers[i].name = dmf_xstrdup(r->headers[i].name);
        t->headers[i].value = dmf_xstrdup(r->headers[i].value ? r->headers[i].value : "");
    }
    t->nheaders = r->nheaders;
    t->tag = dmf_xstrdup(r->tag ? r->tag : "");
    t->digest = dmf_xstrdup(r->digest ? r->digest : "");
    t->filter_query = dmf_xcalloc(r->nfilter_query, sizeof(char *));
    for (size_t i = 0; i < r->nfilter_query; i++)
        t->filter_query[i] = dmf_xstrdup(r->filter_query[i]);
    t->nfilter_query = r->nfilter_query;
}

static struct dmf_sched_task *task_new(dmf_scheduler_t *s, const char *id)
{
    struct dmf_sched_task *t = dmf_xcalloc(1, sizeof(*t));
    memcpy(t->id, id, DMF_TASK_ID_LEN);
    t->content_length = -1;
    t->overruled_from = SIZE_MAX;
    TAILQ_INIT(&t->peers);
    dmf_strmap_init(&t->by_peer_id);
    dmf_rank_index_init(&t->rank);
    TAILQ_INIT(&t->hungry);
    TAILQ_INIT(&t->roomy);
    dmf_strmap_put(&s->tasks, t->id, t);
    TAILQ_INSERT_TAIL(&s->all_tasks, t, link);
    s->ntasks++;
    return t;
}

static void task_free(struct dmf_sched_task *t)
{
    task_clear_request(t);
    free(t->etag);
    free(t->last_modified);
    free(t->content_type);
    free(t->digests);
    free(t->digest_at);
    free(t->digest_by);
    free(t->meta_buf);
    for (size_t i = 0; i < t->nreporters; i++)
        free(t->reporters[i].host_id);
    free(t->reporters);
    dmf_strmap_free(&t->by_peer_id);
    dmf_rank_index_free(&t->rank);
    free(t);
}

static void task_remove(dmf_scheduler_t *s, struct dmf_sched_task *t)
{
    dmf_strmap_del(&s->tasks, t->id);
    TAILQ_REMOVE(&s->all_tasks, t, link);
    s->ntasks--;
    dmf_debug("task %s: no peers left, forgotten", t->id);
    task_free(t);
}

/* Whether the digest at index i of t's list goes to peers: not a tombstone, and while the
 * task is re-verified, a seed's. */
static bool digest_handed_out(const struct dmf_sched_task *t, size_t i)
{
    uint16_t by = t->digest_by[i];
    return by != DMF_SCHED_DIGEST_DEAD && (!t->reverifying || t->reporters[by].seed);
}

/* What t is known to be, with the digests from index `from` on that go to peers (in
 * t->meta_buf when some are left out: valid until the next call). */
static void task_meta(struct dmf_sched_task *t, size_t from, struct dmf_scheduler_meta *m)
{
    m->task_id = t->id;
    m->content_length = t->content_length;
    m->piece_length = t->piece_length;
    m->total_pieces = t->content_length >= 0 ? t->total_pieces : 0;
    m->digests = from < t->ndigests ? t->digests + from : NULL;
    m->ndigests = from < t->ndigests ? t->ndigests - from : 0;
    if (m->ndigests && (t->ndead || t->reverifying)) {
        if (t->meta_cap < m->ndigests) {
            t->meta_cap = m->ndigests;
            t->meta_buf = dmf_xrealloc(t->meta_buf, t->meta_cap * sizeof(*t->meta_buf));
        }
        size_t n = 0;
        for (size_t i = from; i < t->ndigests; i++)
            if (digest_handed_out(t, i))
                t->meta_buf[n++] = t->digests[i];
        m->digests = n ? t->meta_buf : NULL;
        m->ndigests = n;
    }
    m->content_type = t->content_type ? t->content_type : "";
    /* Validators only a registrant claimed are not the cluster's yet. */
    m->etag = t->etag && t->validators_trusted ? t->etag : "";
    m->last_modified = t->last_modified && t->validators_trusted ? t->last_modified : "";
}

/* The first validator a fetcher reports is the task's (like its digests). */
static bool task_pin(char **dst, const char *v)
{
    if (*dst != NULL || v == NULL || v[0] == '\0' || strlen(v) > DMF_SCHED_TAG_MAX)
        return false;
    *dst = dmf_xstrdup(v);
    return true;
}

static bool validator_set(const char *v)
{
    return v != NULL && v[0] != '\0' && strlen(v) <= DMF_SCHED_TAG_MAX;
}

/* Pins the validators a reporter saw (trusted: it is a digest source) as
 * dmf_provenance_validators decides. Returns true when what TaskMeta carries changed. */
static bool task_pin_validators(struct dmf_sched_task *t, const char *etag, const char *lm,
                                bool trusted, const char *host_id)
{
    bool any = validator_set(etag) || validator_set(lm);
    bool pinned = t->etag != NULL || t->last_modified != NULL;
    switch (dmf_provenance_validators(pinned, t->validators_trusted, trusted, any)) {
    case DMF_VAL_KEEP:
        return false;
    case DMF_VAL_PIN:
        task_pin(&t->etag, etag);
        task_pin(&t->last_modified, lm);
        t->validators_trusted = trusted;
        return trusted;
    case DMF_VAL_REPLACE:
        if ((validator_set(etag) && t->etag && strcmp(etag, t->etag) != 0) ||
            (validator_set(lm) && t->last_modified && strcmp(lm, t->last_modified) != 0))
            dmf_warn("task %s: the validators a registrant claimed (ETag %.100s) are replaced by "
                     "those of host %s, a digest source (ETag %.100s)",
                     t->id, t->etag ? t->etag : "-", host_id, validator_set(etag) ? etag : "-");
        free(t->etag);
        free(t->last_modified);
        t->etag = t->last_modified = NULL;
        task_pin(&t->etag, etag);
        task_pin(&t->last_modified, lm);
        t->validators_trusted = true;
        return true;
    case DMF_VAL_FILL:
        break;
    }
    bool changed = task_pin(&t->etag, etag);
    changed |= task_pin(&t->last_modified, lm);
    return changed;
}

/* The stored digest of piece n, or NULL. */
static const struct dmf_scheduler_digest *task_digest(const struct dmf_sched_task *t, uint32_t n)
{
    if (n >= t->digest_at_len || t->digest_at[n] == 0)
        return NULL;
    return &t->digests[t->digest_at[n] - 1];
}

/* The index of host h among t's digest reporters (added when new; the last entry stands
 * for everyone beyond DMF_SCHED_REPORTERS_MAX). */
static uint16_t task_reporter(struct dmf_sched_task *t, const struct dmf_sched_host *h)
{
    for (size_t i = 0; i < t->nreporters; i++)
        if (strcmp(t->reporters[i].host_id, h->id) == 0)
            return (uint16_t)i;
    if (t->nreporters == DMF_SCHED_REPORTERS_MAX)
        return DMF_SCHED_REPORTERS_MAX - 1;
    t->reporters = dmf_xrealloc(t->reporters, (t->nreporters + 1) * sizeof(*t->reporters));
    t->reporters[t->nreporters] = (struct dmf_sched_reporter){
        .host_id = dmf_xstrdup(h->id),
        .seed = dmf_sched_host_is_seed(h),
    };
    return (uint16_t)t->nreporters++;
}

/* Who reported the stored digest of piece n (it must be stored). */
static const struct dmf_sched_reporter *task_digest_reporter(const struct dmf_sched_task *t,
                                                             uint32_t n)
{
    return &t->reporters[t->digest_by[t->digest_at[n] - 1]];
}

static void task_add_digest(struct dmf_sched_task *t, const struct dmf_scheduler_digest *d,
                            uint16_t by)
{
    if (d->number >= t->digest_at_len) {
        uint32_t len = t->digest_at_len ? t->digest_at_len : 64;
        while (len <= d->number)
            len = len > DMF_PIECES_MAX / 2 ? DMF_PIECES_MAX : len * 2;
        t->digest_at = dmf_xrealloc(t->digest_at, len * sizeof(*t->digest_at));
        memset(t->digest_at + t->digest_at_len, 0,
               (len - t->digest_at_len) * sizeof(*t->digest_at));
        t->digest_at_len = len;
    }
    if (t->ndigests == t->digests_cap) {
        t->digests_cap = t->digests_cap ? t->digests_cap * 2 : 64;
        t->digests = dmf_xrealloc(t->digests, t->digests_cap * sizeof(*t->digests));
        t->digest_by = dmf_xrealloc(t->digest_by, t->digests_cap * sizeof(*t->digest_by));
    }
    t->digest_by[t->ndigests] = by;
    t->digests[t->ndigests++] = *d;
    t->digest_at[d->number] = (uint32_t)t->ndigests;
}

/* A task's layout: content_length -1 and piece_length 0 while unknown; total_pieces is
 * valid when content_length >= 0. */
struct layout {
    int64_t content_length;
    uint32_t piece_length;
    uint32_t total_pieces;
};

static struct layout task_layout(const struct dmf_sched_task *t)
{
    return (struct layout){t->content_length, t->piece_length, t->total_pieces};
}

/* Merges a report into the task's layout, into *out: content_length -1 and piece_length 0
 * mean "not said"; total (UINT32_MAX for "not said") comes only with PeerFinished. The
 * layout is checked with dmf_piece_layout_check once length and piece length are known. */
static int layout_merge(const struct layout *cur, int64_t cl, uint32_t pl, uint32_t total,
                        struct layout *out, char *err, size_t errlen)
{
    struct layout n = *cur;

    if (cl < -1)
        return dmf_sched_fail(err, errlen, -EINVAL, "content_length %lld is negative",
                              (long long)cl);
    if (pl != 0) {
        if (pl < DMF_PIECE_LENGTH_MIN || pl > DMF_PIECE_LENGTH_MAX)
            return dmf_sched_fail(err, errlen, -EINVAL, "piece_length %u is not in [%u, %u]", pl,
                                  DMF_PIECE_LENGTH_MIN, DMF_PIECE_LENGTH_MAX);
        if (n.piece_length != 0 && n.piece_length != pl)
            return dmf_sched_fail(err, errlen, -EINVAL,
                                  "piece_length %u conflicts with the task's %u", pl,
                                  n.piece_length);
        n.piece_length = pl;
    }
    if (cl >= 0) {
        if (n.content_length >= 0 && n.content_length != cl)
            return dmf_sched_fail(err, errlen, -EINVAL,
                                  "content_length %lld conflicts with the task's %lld",
                                  (long long)cl, (long long)n.content_length);
        n.content_length = cl;
    }
    if (n.content_length == 0) {
        n.total_pieces = 0;
    } else if (n.content_length > 0 && n.piece_length != 0) {
        n.total_pieces = dmf_piece_count(n.content_length, n.piece_length);
        if (dmf_piece_layout_check(n.content_length, n.piece_length, n.total_pieces) != 0)
            return dmf_sched_fail(err, errlen, -EINVAL,
                                  "content_length %lld with piece_length %u is not a valid layout "
                                  "(at most %u pieces)",
                                  (long long)n.content_length, n.piece_length, DMF_PIECES_MAX);
        if (cur->content_length > 0 && cur->piece_length == 0 &&
            n.total_pieces != cur->total_pieces)
            return dmf_sched_fail(err, errlen, -EINVAL,
                                  "piece_length %u gives %u pieces, but the task has %u",
                                  n.piece_length, n.total_pieces, cur->total_pieces);
    } else if (n.content_length > 0 && cur->content_length < 0) {
        /* The length without the piece length: only a finished peer may say how many. */
        if (total == UINT32_MAX)
            return dmf_sched_fail(err, errlen, -EINVAL, "content_length without piece_length");
        if (total == 0 || total > DMF_PIECES_MAX)
            return dmf_sched_fail(err, errlen, -EINVAL, "total_pieces %u is not in 1..%u", total,
                                  DMF_PIECES_MAX);
        n.total_pieces = total;
    } else if (n.content_length < 0) {
        n.total_pieces = 0;
    }
    if (total != UINT32_MAX && n.content_length >= 0 && total != n.total_pieces)
        return dmf_sched_fail(err, errlen, -EINVAL,
                              "total_pieces %u does not match the layout (%u)", total,
                              n.total_pieces);
    *out = n;
    return 0;
}

/* Stores a merged layout; true when the task learnt something. */
/* ------------------------------------------------------------ peers and the graph */

/* Which list of peers with room p belongs on (DMF_SCHED_ROOM_*). */
static uint8_t peer_room(const dmf_scheduler_t *s, const dmf_scheduler_peer_t *p)
{
    if (p->stream == NULL || p->state != DMF_PEER_RUNNING)
        return DMF_SCHED_ROOM_NONE;
    if (p->nparents < s->cfg.candidate_limit)
        return DMF_SCHED_ROOM_HUNGRY;
    return p->nparents < 2 * s->cfg.candidate_limit ? DMF_SCHED_ROOM_ROOMY : DMF_SCHED_ROOM_NONE;
}

static struct dmf_sched_room_list *room_list(struct dmf_sched_task *t, uint8_t room)
{
    return room == DMF_SCHED_ROOM_HUNGRY ? &t->hungry : &t->roomy;
}

/* Brings p's place in its task's indexes up to date: the rank index (dmf_sched_rank_key)
 * and the lists of peers with room. Called after every change of what they read: p's
 * state, placeholder, stream, parents, children and held pieces, its host's upload
 * figures, its task's layout, the candidate limit. */
static void peer_reindex(const dmf_scheduler_t *s, dmf_scheduler_peer_t *p)
{
    struct dmf_sched_task *t = p->task;
    dmf_rank_index_update(&t->rank, p, dmf_sched_rank_key(s->cfg.mesh, p));
    uint8_t room = peer_room(s, p);
    if (room == p->room)
        return;
    if (p->room != DMF_SCHED_ROOM_NONE)
        TAILQ_REMOVE(room_list(t, p->room), p, in_room);
    if (room != DMF_SCHED_ROOM_NONE)
        TAILQ_INSERT_TAIL(room_list(t, room), p, in_room);
    p->room = room;
}

static void task_reindex(const dmf_scheduler_t *s, struct dmf_sched_task *t)
{
    dmf_scheduler_peer_t *q;
    TAILQ_FOREACH(q, &t->peers, in_task)
    {
        peer_reindex(s, q);
    }
}

/* Stores a merged layout; true when the task learnt something. */
static bool task_set_layout(const dmf_scheduler_t *s, struct dmf_sched_task *t,
                            const struct layout *l)
{
    bool changed = l->content_length != t->content_length || l->piece_length != t->piece_length ||
                   l->total_pieces != t->total_pieces;
    t->content_length = l->content_length;
    t->piece_length = l->piece_length;
    t->total_pieces = l->total_pieces;
    if (changed)
        task_reindex(s, t); /* progress reads the layout */
    return changed;
}

static void peer_set_state(const dmf_scheduler_t *s, dmf_scheduler_peer_t *p,
                           enum dmf_scheduler_peer_state st)
{
    if (p->state == st)
        return;
    dmf_info("task %s peer %s host %s: %s -> %s", p->task->id, p->peer_id, p->host->id,
             dmf_scheduler_peer_state_name(p->state), dmf_scheduler_peer_state_name(st));
    p->state = st;
    if (st == DMF_PEER_BACK_TO_SOURCE)
        p->fetched_source = true;
    peer_reindex(s, p);
}

/* The scheduler sends p to the origin: from now on its digests count (provenance.h). */
static void send_to_source(dmf_scheduler_t *s, dmf_scheduler_peer_t *p, const char *reason)
{
    peer_set_state(s, p, DMF_PEER_BACK_TO_SOURCE);
    p->source_ordered = true;
    s->sink.back_to_source(s->sink_arg, p->stream, reason);
}

static const char budget_spent[] = "this host's budget of seed triggers is spent";

static dmf_scheduler_peer_t *task_seed_fetching(const struct dmf_sched_task *t);

/* Whether a seed fetches t, or one could: alive, not excluded, and no trigger failed for
 * the task. The blocks of the peer asking do not count: a peer cannot report the seeds
 * away to be sent to the origin itself. */
static bool seed_could_fetch(const dmf_scheduler_t *s, const struct dmf_sched_task *t)
{
    if (task_seed_fetching(t) != NULL)
        return true;
    if (t->seed_failed)
        return false;
    uint64_t now = now_ms(s);
    const struct dmf_sched_host *h;
    LIST_FOREACH(h, &s->seeds, seeds)
    {
        if (!dmf_sched_host_excluded(h, s->cfg.bad_parent_threshold) &&
            now - h->last_seen < s->cfg.host_timeout_ms)
            return true;
    }
    return false;
}

/* p goes to the origin because no seed fetches for it. Its digests count (as
 * send_to_source) only when no seed fetches the task or could: otherwise it is there for
 * a budget of seed triggers its host spent, or seeds it reported itself, and the download
 * is its own business, or a host could spend its budget (or report the seeds) on purpose
 * and become the digest source of any task it registers for first. Peers that stall on
 * it get the seed. */
static void send_to_source_for(dmf_scheduler_t *s, dmf_scheduler_peer_t *p, const char *why)
{
    send_to_source(s, p, why);
    if (seed_could_fetch(s, p->task)) {
        p->source_ordered = false;
        dmf_info("task %s peer %s host %s: fetches from the origin for itself (%s, but a seed "
                 "could): its digests do not count",
                 p->task->id, p->peer_id, p->host->id,
                 why == budget_spent ? "its budget of seed triggers is spent"
                                     : "no seed is free for it");
    }
}

static void edge_add(const dmf_scheduler_t *s, dmf_scheduler_peer_t *child,
                     dmf_scheduler_peer_t *parent)
{
    struct dmf_sched_edge *e = dmf_xmalloc(sizeof(*e));
    e->child = child;
    e->parent = parent;
    LIST_INSERT_HEAD(&child->parents, e, in_child);
    LIST_INSERT_HEAD(&parent->children, e, in_parent);
    child->nparents++;
    parent->nchildren++;
    peer_reindex(s, child);
    peer_reindex(s, parent);
}

static void edge_remove(const dmf_scheduler_t *s, struct dmf_sched_edge *e)
{
    dmf_scheduler_peer_t *child = e->child, *parent = e->parent;
    child->nparents--;
    parent->nchildren--;
    LIST_REMOVE(e, in_child);
    LIST_REMOVE(e, in_parent);
    free(e);
    peer_reindex(s, child);
    peer_reindex(s, parent);
}

static void peer_drop_parents(const dmf_scheduler_t *s, dmf_scheduler_peer_t *p)
{
    while (!LIST_EMPTY(&p->parents))
        edge_remove(s, LIST_FIRST(&p->parents));
}

/* Remembers a parent host the peer must not be offered again (the oldest is forgotten
 * when the list is full). */
static void peer_block(dmf_scheduler_peer_t *p, const char *host_id)
{
    size_t i = p->nblocked % DMF_SCHED_BLOCKED_MAX;
    if (p->nblocked >= DMF_SCHED_BLOCKED_MAX)
        free(p->blocked[i]);
    p->blocked[i] = dmf_xstrdup(host_id);
    p->nblocked++;
}

static dmf_scheduler_peer_t *peer_new(dmf_scheduler_t *s, struct dmf_sched_task *t,
                                      struct dmf_sched_host *h, const char *peer_id)
{
    dmf_scheduler_peer_t *p = dmf_xcalloc(1, sizeof(*p));
    snprintf(p->key, sizeof(p->key), "%s%s", t->id, h->id);
    p->peer_id = dmf_xstrdup(peer_id);
    p->task = t;
    p->host = h;
    p->state = DMF_PEER_PENDING;
    dmf_bitmap_init(&p->held);
    LIST_INIT(&p->parents);
    LIST_INIT(&p->children);
    TAILQ_INSERT_TAIL(&t->peers, p, in_task);
    t->npeers++;
    dmf_strmap_put(&t->by_peer_id, p->peer_id, p);
    LIST_INSERT_HEAD(&h->peers, p, in_host);
    h->npeers++;
    dmf_strmap_put(&s->peers, p->key, p);
    s->npeers++;
    dmf_info("task %s peer %s host %s: (new) -> PENDING", t->id, p->peer_id, h->id);
    peer_reindex(s, p);
    return p;
}

/* Keeps p on the idle list exactly while it is SUCCEEDED with no stream. */
static void peer_update_idle(dmf_scheduler_t *s, dmf_scheduler_peer_t *p)
{
    bool idle = p->state == DMF_PEER_SUCCEEDED && p->stream == NULL;
    if (idle == p->idle)
        return;
    if (idle) {
        p->idle_since = now_ms(s);
        TAILQ_INSERT_TAIL(&s->idle_peers, p, by_idle);
    } else {
        TAILQ_REMOVE(&s->idle_peers, p, by_idle);
    }
    p->idle = idle;
}

static void peer_free(dmf_scheduler_peer_t *p)
{
    free(p->trigger_for);
    for (size_t i = 0; i < DMF_MIN(p->nblocked, (size_t)DMF_SCHED_BLOCKED_MAX); i++)
        free(p->blocked[i]);
    dmf_bitmap_free(&p->held);
    free(p->peer_id);
    free(p->application);
    free(p);
}

/* Marks with a fresh epoch every peer that has p as an ancestor (p's descendants, by
 * child edges), and p itself: none of them may become p's parent. */
static uint64_t mark_descendants(dmf_scheduler_t *s, dmf_scheduler_peer_t *p)
{
    uint64_t epoch = ++s->epoch;
    size_t need = p->task->npeers + 1;
    if (s->scratch_cap < need) {
        s->scratch_cap = need * 2;
        s->scratch = dmf_xrealloc(s->scratch, s->scratch_cap * sizeof(*s->scratch));
    }
    size_t top = 0;
    p->mark = epoch;
    s->scratch[top++] = p;
    while (top > 0) {
        dmf_scheduler_peer_t *q = s->scratch[--top];
        struct dmf_sched_edge *e;
        LIST_FOREACH(e, &q->children, in_parent)
        {
            if (e->child->mark != epoch) {
                e->child->mark = epoch;
                s->scratch[top++] = e->child;
            }
        }
    }
    return epoch;
}

/* Marks with a fresh epoch the peers p may not get as new parents: itself, the parents it
 * uses and, under the DAG rule, its descendants. */
static uint64_t mark_not_candidates(dmf_scheduler_t *s, dmf_scheduler_peer_t *p)
{
    uint64_t epoch;
    if (s->cfg.mesh) {
        epoch = ++s->epoch;
        p->mark = epoch;
    } else {
        epoch = mark_descendants(s, p);
    }
    struct dmf_sched_edge *e;
    LIST_FOREACH(e, &p->parents, in_child)
    {
        e->parent->mark = epoch;
    }
    return epoch;
}

/* What the ranking rules read besides the peers, as of now (sched_rank.h). */
static struct dmf_sched_view rank_view(const dmf_scheduler_t *s, uint64_t epoch)
{
    return (struct dmf_sched_view){
        .now = now_ms(s),
        .mesh = s->cfg.mesh,
        .bad_parent_threshold = s->cfg.bad_parent_threshold,
        .unreachable_threshold = s->cfg.unreachable_threshold,
        .host_timeout_ms = s->cfg.host_timeout_ms,
        .epoch = epoch,
        .seeds = &s->seeds,
        .peers = &s->peers,
    };
}

static void send_meta_update(dmf_scheduler_peer_t *p, struct dmf_scheduler_meta *m)
{
    task_meta(p->task, p->meta_sent, m);
    p->meta_sent = p->task->ndigests;
}

static void trigger_seed(dmf_scheduler_t *s, dmf_scheduler_peer_t *ph, const char *requester)
{
    struct dmf_sched_task *t = ph->task;
    const char **filters = dmf_xcalloc(t->nfilter_query, sizeof(char *));
    struct dmf_scheduler_header *headers = dmf_xcalloc(t->nheaders, sizeof(*headers));
    for (size_t i = 0; i < t->nfilter_query; i++)
        filters[i] = t->filter_query[i];
    for (size_t i = 0; i < t->nheaders; i++) {
        headers[i].name = t->headers[i].name;
        headers[i].value = t->headers[i].value;
    }
    struct dmf_scheduler_seed_trigger tr = {
        .trigger_id = ph->trigger_id,
        .task_id = t->id,
        .host_id = ph->host->id,
        .ip = ph->host->ip,
        .rpc_port = ph->host->rpc_port,
        .url = t->url ? t->url : "",
        .headers = headers,
        .nheaders = t->nheaders,
        .tag = t->tag ? t->tag : "",
        .digest = t->digest ? t->digest : "",
        .filter_query = filters,
        .nfilter_query = t->nfilter_query,
        .etag = t->etag,
        .last_modified = t->last_modified,
        .requester_host_id = requester,
    };
    dmf_info("task %s: seed host %s asked to fetch it (trigger %llu)", t->id, ph->host->id,
             (unsigned long long)ph->trigger_id);
    s->sink.trigger_seed(s->sink_arg, &tr);
    free(filters);
    free(headers);
}

/* Seed peer p's trigger is charged to its requester once the task's size is known, or
 * dropped (-1) when p goes first: exactly once per trigger the sink admitted. */
static void trigger_settle(dmf_scheduler_t *s, dmf_scheduler_peer_t *p, bool dropped)
{
    if (p->trigger_for == NULL || (!dropped && p->task->content_length < 0))
        return;
    if (s->sink.trigger_sized)
        s->sink.trigger_sized(s->sink_arg, p->trigger_for, dropped ? -1 : p->task->content_length);
    free(p->trigger_for);
    p->trigger_for = NULL;
}

/* Peer c as a candidate parent (borrowed strings). */
static struct dmf_scheduler_parent parent_of(const dmf_scheduler_peer_t *c)
{
    return (struct dmf_scheduler_parent){
        .peer_id = c->peer_id,
        .host_id = c->host->id,
        .ip = c->host->ip,
        .piece_port = c->host->piece_port,
        .is_seed = dmf_sched_host_is_seed(c->host),
    };
}

/* Makes seed fetch t for a peer of host `requester` (the seed itself for the scheduler's
 * own triggers): its placeholder peer, or NULL (with the reason in *why) when the peer
 * table is full or the requester's budget of seed triggers is spent (the sink's
 * may_trigger). */
static dmf_scheduler_peer_t *trigger_new_seed(dmf_scheduler_t *s, struct dmf_sched_task *t,
                                              struct dmf_sched_host *seed,
                                              const struct dmf_sched_host *requester,
                                              const char **why)
{
    if (s->npeers >= s->cfg.max_peers)
        return NULL;
    if (s->sink.may_trigger && !s->sink.may_trigger(s->sink_arg, requester->id, seed->id)) {
        *why = budget_spent;
        return NULL;
    }
    char *ph_id = dmf_xasprintf("seed-%s", seed->id);
    dmf_scheduler_peer_t *ph = peer_new(s, t, seed, ph_id);
    free(ph_id);
    ph->placeholder = true;
    peer_reindex(s, ph);
    ph->triggered_seed = true;
    ph->source_ordered = true;
    ph->trigger_id = ++s->next_trigger_id;
    ph->trigger_for = s->sink.may_trigger ? dmf_xstrdup(requester->id) : NULL;
    trigger_settle(s, ph, false);
    trigger_seed(s, ph, requester->id);
    return ph;
}

static bool task_fetching_from_source(const struct dmf_sched_task *t,
                                      const dmf_scheduler_peer_t *p);

/* Whether t has no digest source for what p may still need: its digests (those handed
 * out) do not cover every piece, and no peer but p whose digests count fetches from the
 * origin (task_fetching_from_source). */
static bool task_lacks_source(const struct dmf_sched_task *t, const dmf_scheduler_peer_t *p)
{
    bool covered =
        t->content_length >= 0 && !t->reverifying && t->ndigests - t->ndead >= t->total_pieces;
    return !covered && !task_fetching_from_source(t, p);
}

/* check_indexes: the indexed pick must be the scan's. */
static void check_pick(const struct dmf_sched_view *v, const dmf_scheduler_peer_t *p,
                       const struct dmf_sched_ranked *best, size_t n, size_t want)
{
    struct dmf_sched_ranked scan[DMF_SCHED_CANDIDATES_MAX];
    size_t ns = dmf_sched_pick_candidates_scan(v, p, scan, want);
    bool same = ns == n;
    /* The same peers, or peers of the same score (a tie among many, sched_rank.h). */
    for (size_t i = 0; same && i < n; i++)
        same = scan[i].peer == best[i].peer ||
               (scan[i].score - best[i].score < 1e-9 && best[i].score - scan[i].score < 1e-9);
    if (!same) {
        dmf_error("task %s peer %s: the rank index picked %zu parents (first %s), the scan %zu "
                  "(first %s)",
                  p->task->id, p->peer_id, n, n ? best[0].peer->peer_id : "-", ns,
                  ns ? scan[0].peer->peer_id : "-");
        abort();
    }
}

/* check_indexes: the lists of peers with room hold exactly the peers peer_room puts there. */
static void check_room(const dmf_scheduler_t *s, struct dmf_sched_task *t)
{
    size_t want = 0, have = 0;
    const dmf_scheduler_peer_t *q;
    TAILQ_FOREACH(q, &t->peers, in_task)
    {
        want += peer_room(s, q) != DMF_SCHED_ROOM_NONE;
    }
    for (uint8_t room = DMF_SCHED_ROOM_HUNGRY; room <= DMF_SCHED_ROOM_ROOMY; room++)
        TAILQ_FOREACH(q, room_list(t, room), in_room)
        {
            have++;
            if (q->room != room || peer_room(s, q) != room) {
                dmf_error("task %s: peer %s is on the wrong list of peers with room", t->id,
                          q->peer_id);
                abort();
            }
        }
    if (want != have) {
        dmf_error("task %s: %zu peers on the lists of peers with room, %zu have room", t->id, have,
                  want);
        abort();
    }
}

/* Gives p more parents until it uses candidate_limit of them, and tells its stream (a
 * pushed Candidates adds to the parents in use). A peer left with no parent at all gets a
 * freshly triggered seed, or is sent back to the source. p must be PENDING or RUNNING and
 * attached. */
static void schedule(dmf_scheduler_t *s, dmf_scheduler_peer_t *p)
{
    struct dmf_sched_ranked best[DMF_SCHED_CANDIDATES_MAX];
    struct dmf_scheduler_parent parents[DMF_SCHED_CANDIDATES_MAX];
    struct dmf_scheduler_meta meta;
    bool seed_triggered = false;

    size_t limit = s->cfg.candidate_limit;
    size_t want = p->nparents < limit ? limit - p->nparents : 0;
    size_t n = 0;
    if (want) {
        struct dmf_sched_view v = rank_view(s, mark_not_candidates(s, p));
        n = dmf_sched_pick_candidates(&v, p, best, want);
        if (s->cfg.check_indexes)
            check_pick(&v, p, best, n, want);
    }
    if (n == 0 && p->nparents > 0) {
        dmf_debug("task %s peer %s host %s: no new parent; keeps its %u", p->task->id, p->peer_id,
                  p->host->id, p->nparents);
        return;
    }
    if (n > 0 && task_lacks_source(p->task, p)) {
        /* The candidates hold pieces but nobody whose digests count brings them (holders
         * that rejoined, peers at the origin for themselves): without digests p could
         * take nothing from them, and would stall. A seed fetches, as for no candidate. */
        struct dmf_sched_view v = rank_view(s, 0);
        struct dmf_sched_host *seed = dmf_sched_pick_seed(&v, p);
        const char *why = NULL;
        dmf_scheduler_peer_t *ph = seed ? trigger_new_seed(s, p->task, seed, p->host, &why) : NULL;
        if (ph != NULL)
            best[n < want ? n++ : n - 1].peer = ph;
    }
    if (n == 0) {
        struct dmf_sched_view v = rank_view(s, 0); /* marks do not matter to a seed */
        struct dmf_sched_host *seed = dmf_sched_pick_seed(&v, p);
        const char *why = "no seed peer and no peer holds the task";
        dmf_scheduler_peer_t *ph = seed ? trigger_new_seed(s, p->task, seed, p->host, &why) : NULL;
        if (ph == NULL) {
            send_to_source_for(s, p, why);
            return;
        }
        best[0].peer = ph;
        n = 1;
    }
    for (size_t i = 0; i < n; i++) {
        dmf_scheduler_peer_t *c = best[i].peer;
        edge_add(s, p, c);
        parents[i] = parent_of(c);
        seed_triggered |= c->triggered_seed;
    }
    peer_set_state(s, p, DMF_PEER_RUNNING);
    send_meta_update(p, &meta);
    s->sink.candidates(s->sink_arg, p->stream, parents, n, seed_triggered, &meta);
}

/* Offers p to q as a parent when q has fewer than room parents and may take p. */
static void offer_one(dmf_scheduler_t *s, dmf_scheduler_peer_t *p, dmf_scheduler_peer_t *q,
                      uint32_t room)
{
    if (q == p || q->stream == NULL || q->state != DMF_PEER_RUNNING || q->nparents >= room ||
        dmf_sched_peer_blocked(q, p->host->id) ||
        dmf_sched_host_excluded(p->host, s->cfg.bad_parent_threshold) || q->host->leaving)
        return;
    struct dmf_sched_edge *e;
    bool already = false;
    LIST_FOREACH(e, &q->parents, in_child)
    already |= e->parent == p;
    if (already)
        return;
    edge_add(s, q, p);
    struct dmf_scheduler_parent parent = parent_of(p);
    struct dmf_scheduler_meta meta;
    send_meta_update(q, &meta);
    s->sink.candidates(s->sink_arg, q->stream, &parent, 1, false, &meta);
}

/* Mesh: a newly registered peer p becomes a parent of every running peer of the task that
 * still has room for one (earlier registrants would otherwise never learn of p). */
static void offer_to_others(dmf_scheduler_t *s, dmf_scheduler_peer_t *p, bool finished)
{
    uint32_t room = finished ? 2 * s->cfg.candidate_limit : s->cfg.candidate_limit;
    if (s->cfg.check_indexes)
        check_room(s, p->task);
    /* The attached RUNNING peers with fewer parents than room are on the hungry list, and
     * for a finished p also on the roomy one. An edge to p may move q to another list,
     * hence next first; q moved to the roomy list has p already. */
    for (uint8_t list = DMF_SCHED_ROOM_HUNGRY;
         list <= (finished ? DMF_SCHED_ROOM_ROOMY : DMF_SCHED_ROOM_HUNGRY); list++) {
        dmf_scheduler_peer_t *q, *next;
        for (q = TAILQ_FIRST(room_list(p->task, list)); q != NULL; q = next) {
            next = TAILQ_NEXT(q, in_room);
            offer_one(s, p, q, room);
        }
    }
}

/* A peer that lost a parent (or asked for others) gets a new set, when it still needs one. */
static void reschedule(dmf_scheduler_t *s, dmf_scheduler_peer_t *p)
{
    if (p->stream == NULL || p->host->leaving ||
        (p->state != DMF_PEER_PENDING && p->state != DMF_PEER_RUNNING))
        return;
    if (dmf_negcache_get(&s->failed, p->task->id, now_ms(s)))
        return; /* it was told the task failed for good: no origin, no seed for it */
    schedule(s, p);
}

static bool task_fetching_from_source(const struct dmf_sched_task *t,
                                      const dmf_scheduler_peer_t *p);
static void reverify_check_lost(dmf_scheduler_t *s, struct dmf_sched_task *t);

/* The peer that brought t's pieces from the origin is gone: unless another does, a peer
 * holds the whole task, or the task failed for good, one peer still downloading fetches the rest
 * from the origin and the others get it from that peer (they are its children already in a mesh).
 */
static void replace_fetcher(dmf_scheduler_t *s, struct dmf_sched_task *t)
{
    if (task_fetching_from_source(t, NULL) || dmf_negcache_get(&s->failed, t->id, now_ms(s)))
        return;
    dmf_scheduler_peer_t *q;
    TAILQ_FOREACH(q, &t->peers, in_task)
    {
        if (q->state == DMF_PEER_SUCCEEDED)
            return; /* a peer holds it all: the others get the rest from it */
    }
    dmf_scheduler_peer_t *f = dmf_sched_pick_fetcher(t);
    if (f == NULL)
        return;
    send_to_source(s, f, "the peer fetching from the origin is gone: fetch the rest there");
}

/* Removes p; its attached stream (unless it is the one going away) hears why; children
 * that still download are rescheduled; an empty task is forgotten. */
static void peer_remove(dmf_scheduler_t *s, dmf_scheduler_peer_t *p, const char *why,
                        bool tell_stream)
{
    struct dmf_sched_task *t = p->task;
    bool was_fetching = (p->fetched_source && p->state != DMF_PEER_SUCCEEDED) ||
                        (p->placeholder && p->triggered_seed);
    bool was_seed = dmf_sched_host_is_seed(p->host);
    dmf_info("task %s peer %s host %s: %s -> (removed: %s)", t->id, p->peer_id, p->host->id,
             dmf_scheduler_peer_state_name(p->state), why);
    trigger_settle(s, p, true);
    if (p->stream && tell_stream && s->sink.peer_gone)
        s->sink.peer_gone(s->sink_arg, p->stream, why);
    p->stream = NULL;
    if (p->idle) {
        TAILQ_REMOVE(&s->idle_peers, p, by_idle);
        p->idle = false;
    }
    peer_drop_parents(s, p);

    size_t nkids = 0, cap = 0;
    dmf_scheduler_peer_t **kids = NULL;
    while (!LIST_EMPTY(&p->children)) {
        struct dmf_sched_edge *e = LIST_FIRST(&p->children);
        if (nkids == cap) {
            cap = cap ? cap * 2 : 8;
            kids = dmf_xrealloc(kids, cap * sizeof(*kids));
        }
        kids[nkids++] = e->child;
        edge_remove(s, e);
    }
    TAILQ_REMOVE(&t->peers, p, in_task);
    t->npeers--;
    dmf_strmap_del(&t->by_peer_id, p->peer_id);
    dmf_rank_index_remove(&t->rank, p);
    if (p->room != DMF_SCHED_ROOM_NONE)
        TAILQ_REMOVE(room_list(t, p->room), p, in_room);
    LIST_REMOVE(p, in_host);
    p->host->npeers--;
    dmf_strmap_del(&s->peers, p->key);
    s->npeers--;
    peer_free(p);

    for (size_t i = 0; i < nkids; i++)
        reschedule(s, kids[i]);
    free(kids);
    if (t->npeers == 0) {
        task_remove(s, t);
        return;
    }
    if (was_seed)
        reverify_check_lost(s, t);
    if (was_fetching)
        replace_fetcher(s, t);
}

static void host_remove(dmf_scheduler_t *s, struct dmf_sched_host *h, const char *why)
{
    char reason[DMF_SCHED_ID_MAX + 64];
    snprintf(reason, sizeof(reason), "host %s %s", h->id, why);
    dmf_info("host %s: %s, removing %s", h->id, why,
             LIST_EMPTY(&h->peers) ? "it" : "it and its peers");
    h->leaving = true;
    while (!LIST_EMPTY(&h->peers))
        peer_remove(s, LIST_FIRST(&h->peers), reason, true);
    if (s->sink.host_gone)
        s->sink.host_gone(s->sink_arg, h->id);
    dmf_strmap_del(&s->hosts, h->id);
    TAILQ_REMOVE(&s->hosts_by_seen, h, by_seen);
    if (h->type == DMF_SCHED_HOST_SEED)
        LIST_REMOVE(h, seeds);
    s->nhosts--;
    host_free(h);
}

int dmf_scheduler_leave_host(dmf_scheduler_t *s, const char *host_id, char *err, size_t errlen)
{
    int rc = dmf_sched_check_id("host_id", host_id, DMF_SCHED_ID_MAX, err, errlen);
    if (rc != 0)
        return rc;
    struct dmf_sched_host *h = host_get(s, host_id);
    if (h == NULL)
        return dmf_sched_fail(err, errlen, -ENOENT, "host %s is not known", host_id);
    host_remove(s, h, "left");
    return 0;
}

size_t dmf_scheduler_expire_hosts(dmf_scheduler_t *s)
{
    uint64_t now = now_ms(s);
    size_t n = 0;
    struct dmf_sched_host *h;
    while ((h = TAILQ_FIRST(&s->hosts_by_seen)) != NULL &&
           now - h->last_seen >= s->cfg.host_timeout_ms) {
        host_remove(s, h, "expired (no announce)");
        n++;
    }
    return n;
}

size_t dmf_scheduler_expire_peers(dmf_scheduler_t *s)
{
    if (s->cfg.peer_ttl_ms == 0)
        return 0;
    uint64_t now = now_ms(s);
    size_t n = 0;
    dmf_scheduler_peer_t *p;
    while ((p = TAILQ_FIRST(&s->idle_peers)) != NULL && now - p->idle_since >= s->cfg.peer_ttl_ms) {
        peer_remove(s, p, "expired (finished, no stream for the peer ttl)", false);
        n++;
    }
    return n;
}

/* ------------------------------------------------------------ peer decisions */

/* True when a peer of t other than p brings new pieces from the origin whose digests
 * count: one the scheduler sent there with its stream open (or a seed), or a triggered
 * seed not heard from yet. A peer that only says it is at the origin does not count. */
static bool task_fetching_from_source(const struct dmf_sched_task *t, const dmf_scheduler_peer_t *p)
{
    const dmf_scheduler_peer_t *q;
    TAILQ_FOREACH(q, &t->peers, in_task)
    {
        if (q != p && ((q->state == DMF_PEER_BACK_TO_SOURCE && q->stream != NULL &&
                        (q->source_ordered || dmf_sched_host_is_seed(q->host))) ||
                       (q->placeholder && q->triggered_seed)))
            return true;
    }
    return false;
}

/* The origin has another version than the one the task's pieces are of: every peer but
 * keep goes (those still downloading are told, so that they drop what they hold), and
 * with the last one the task itself, its validators and digests. Returns false when the
 * task is gone (keep NULL). */
static bool task_forget_version(dmf_scheduler_t *s, struct dmf_sched_task *t,
                                dmf_scheduler_peer_t *keep, const char *why)
{
    dmf_warn("task %s: %s: forgetting the version it had (%zu peers)", t->id, why,
             t->npeers - (keep ? 1 : 0));
    t->reverifying = false; /* whatever a seed would find is another version */
    for (size_t left = t->npeers - (keep ? 1 : 0); left > 0; left--) {
        dmf_scheduler_peer_t *q = TAILQ_FIRST(&t->peers);
        if (q == keep)
            q = TAILQ_NEXT(q, in_task);
        bool last = t->npeers == 1;
        if (q->stream != NULL && q->state != DMF_PEER_SUCCEEDED && s->sink.task_changed)
            s->sink.task_changed(s->sink_arg, q->stream, why);
        peer_remove(s, q, why, true);
        if (last)
            return false;
    }
    return true;
}

/* True when a registrant's fresh validators name another version than the task's. */
static bool other_version(const struct dmf_sched_task *t, const struct dmf_scheduler_register *r)
{
    bool etag = r->etag && *r->etag && t->etag && strcmp(r->etag, t->etag) != 0;
    bool lm = r->last_modified && *r->last_modified && t->last_modified &&
              strcmp(r->last_modified, t->last_modified) != 0;
    return etag || lm;
}

int dmf_scheduler_register(dmf_scheduler_t *s, const struct dmf_scheduler_register *r, void *stream,
                           dmf_scheduler_peer_t **out, char *err, size_t errlen)
{
    int rc = dmf_sched_check_register(r, err, errlen);
    if (rc != 0)
        return rc;
    struct dmf_sched_host *h = host_get(s, r->host_id);
    if (h == NULL || h->leaving)
        return dmf_sched_fail(err, errlen, -ESRCH, "host %s has not announced", r->host_id);
    struct dmf_sched_task *t = dmf_strmap_get(&s->tasks, r->task_id);
    if (t && other_version(t, r)) {
        char why[DMF_SCHED_REASON_MAX];
        snprintf(why, sizeof(why), "host %s found another version at the origin", h->id);
        if (!task_forget_version(s, t, NULL, why))
            t = NULL;
    }
    dmf_scheduler_peer_t *p = t ? dmf_sched_peer_find(&s->peers, t->id, h->id) : NULL;
    if (t) {
        dmf_scheduler_peer_t *q = dmf_strmap_get(&t->by_peer_id, r->peer_id);
        if (q != NULL && q != p)
            return dmf_sched_fail(err, errlen, -EEXIST,
                                  "peer %s is already registered from host %s", r->peer_id,
                                  q->host->id);
    } else if (s->ntasks >= s->cfg.max_tasks) {
        return dmf_sched_fail(err, errlen, -ENOSPC, "too many tasks (%zu): task %s refused",
                              s->cfg.max_tasks, r->task_id);
    }
    if (p == NULL && s->npeers >= s->cfg.max_peers)
        return dmf_sched_fail(err, errlen, -ENOSPC, "too many peers (%zu): peer %s refused",
                              s->cfg.max_peers, r->peer_id);
    if (p == NULL && h->npeers >= s->cfg.max_peers_per_host)
        return dmf_sched_fail(err, errlen, -ENOSPC,
                              "host %s has too many tasks (%zu): peer %s refused", h->id,
                              s->cfg.max_peers_per_host, r->peer_id);

    bool rejoin = r->holds_task || r->from_source;
    if (t == NULL)
        t = task_new(s, r->task_id);
    /* The version a registrant's conditional request just found is the task's: a holder of
     * another one cannot fill it (dmf_scheduler_progress). Only a digest source's pin is
     * the cluster's; anyone else's is provisional (a triggered seed is told, nobody else). */
    struct dmf_provenance_reporter who = {
        .seed_host = dmf_sched_host_is_seed(h),
        .source_ordered = p != NULL && p->source_ordered && r->from_source,
    };
    task_pin_validators(t, r->etag, r->last_modified,
                        dmf_provenance_trusted(s->cfg.digest_sources, &who), h->id);
    /* A rejoining peer sends no headers: the request of a real registrant stays. */
    if (!rejoin || t->url == NULL || t->url[0] == '\0')
        task_set_request(s, t, r);
    if (p == NULL) {
        p = peer_new(s, t, h, r->peer_id);
    } else {
        /* The same host registers the task again (a restarted daemon, or the seed taking
         * over its placeholder): the peer keeps its children, the newest stream wins. */
        if (p->stream && s->sink.peer_gone)
            s->sink.peer_gone(s->sink_arg, p->stream,
                              "a newer register for this task arrived from the same host");
        if (strcmp(p->peer_id, r->peer_id) != 0) {
            dmf_info("task %s peer %s host %s: now peer %s", t->id, p->peer_id, h->id, r->peer_id);
            dmf_strmap_del(&t->by_peer_id, p->peer_id);
            replace_str(&p->peer_id, r->peer_id);
            dmf_strmap_put(&t->by_peer_id, p->peer_id, p);
        }
        p->placeholder = false;
        /* A peer sent to the origin by this scheduler keeps that standing when it joins
         * again from the origin; any other register starts over. */
        if (!r->from_source)
            p->source_ordered = false;
        peer_drop_parents(s, p);
        dmf_bitmap_free(&p->held);
        dmf_bitmap_init(&p->held);
        if (h->type != DMF_SCHED_HOST_SEED)
            peer_set_state(s, p, DMF_PEER_PENDING);
    }
    free(p->application);
    p->application = r->application && r->application[0] ? dmf_xstrdup(r->application) : NULL;
    p->stream = stream;
    peer_update_idle(s, p);
    p->meta_sent = 0;
    p->held_base = rejoin ? 0 : r->held_pieces; /* a rejoining peer reports each piece */
    peer_reindex(s, p);
    *out = p;

    if (rejoin) {
        dmf_info("task %s peer %s host %s: joins again (%s)", t->id, p->peer_id, h->id,
                 r->holds_task ? "holds the task" : "fetching from the origin");
        if (r->from_source)
            peer_set_state(s, p, DMF_PEER_BACK_TO_SOURCE);
        return 0;
    }
    const struct dmf_negcache_entry *neg = dmf_negcache_get(&s->failed, t->id, now_ms(s));
    if (neg != NULL) {
        /* Asking the origin again would get the same answer: say it, trigger nothing. */
        dmf_info("task %s peer %s host %s: failed %llu ms ago for good: %s", t->id, p->peer_id,
                 h->id, (unsigned long long)(now_ms(s) + s->failed.ttl_ms - neg->expires),
                 neg->reason);
        if (s->sink.task_failed)
            s->sink.task_failed(s->sink_arg, stream, neg->reason, neg->origin_status);
        return 0;
    }
    if (h->type == DMF_SCHED_HOST_SEED) {
        send_to_source(s, p, "seed peer fetches from the origin");
        return 0;
    }
    if (r->stalled && !task_fetching_from_source(t, p)) {
        /* Its parents hold nothing new (the peer that fetched from the origin is gone):
         * a seed fetches the rest when there is one (a stalled register cannot make a
         * peer the task's digest source while a seed could be), else this peer does; the
         * others get it from there. */
        struct dmf_sched_view v = rank_view(s, 0);
        struct dmf_sched_host *seed = t->seed_failed ? NULL : dmf_sched_pick_seed(&v, p);
        const char *why = "no peer fetches the missing pieces from the origin";
        dmf_scheduler_peer_t *ph = seed ? trigger_new_seed(s, t, seed, h, &why) : NULL;
        if (ph == NULL) {
            send_to_source_for(s, p, why);
            return 0;
        }
        edge_add(s, p, ph);
        struct dmf_scheduler_parent parent = parent_of(ph);
        struct dmf_scheduler_meta meta;
        peer_set_state(s, p, DMF_PEER_RUNNING);
        send_meta_update(p, &meta);
        s->sink.candidates(s->sink_arg, stream, &parent, 1, true, &meta);
        return 0;
    }
    schedule(s, p);
    if (s->cfg.mesh && p->state == DMF_PEER_RUNNING)
        offer_to_others(s, p, false);
    return 0;
}

/* Sends what the task learnt to every attached peer but `except` (already up to date). */
static void push_meta(dmf_scheduler_t *s, struct dmf_sched_task *t, dmf_scheduler_peer_t *except,
                      bool layout)
{
    dmf_scheduler_peer_t *q;
    TAILQ_FOREACH(q, &t->peers, in_task)
    {
        if (q == except || q->stream == NULL || (!layout && q->meta_sent >= t->ndigests))
            continue;
        struct dmf_scheduler_meta m;
        send_meta_update(q, &m);
        s->sink.task_meta(s->sink_arg, q->stream, &m);
    }
}

/* Whether p's digests count (provenance.h). */
static bool reporter_trusted(const dmf_scheduler_t *s, const dmf_scheduler_peer_t *p)
{
    struct dmf_provenance_reporter r = {
        .seed_host = dmf_sched_host_is_seed(p->host),
        .source_ordered = p->source_ordered,
    };
    return dmf_provenance_trusted(s->cfg.digest_sources, &r);
}

/* While t is re-verified, the digest at index `at` (another host's) is replaced by seed
 * reporter `by`'s d: the old entry becomes a tombstone and d is appended, so that every
 * peer is handed it. */
static void replace_by_seed(struct dmf_sched_task *t, size_t at,
                            const struct dmf_scheduler_digest *d, uint16_t by)
{
    t->digest_by[at] = DMF_SCHED_DIGEST_DEAD;
    t->ndead++;
    t->nsuspect--;
    t->digest_at[d->number] = 0;
    task_add_digest(t, d, by);
}

/* Applies one reported digest d from p under the provenance rules and returns the
 * verdict (logged when it is not plain). A seed's digest that overrules another
 * fetcher's replaces it (in place, marking where in the digest list peers must have been
 * sent the other one: before `sent` counts as sent to someone; or, while the task is
 * re-verified, as a new entry, since the other one went to nobody since). */
static enum dmf_provenance_verdict judge_digest(dmf_scheduler_t *s, dmf_scheduler_peer_t *p,
                                                const struct dmf_scheduler_digest *d, size_t sent)
{
    struct dmf_sched_task *t = p->task;
    const struct dmf_scheduler_digest *have = task_digest(t, d->number);
    const struct dmf_sched_reporter *by = have ? task_digest_reporter(t, d->number) : NULL;
    struct dmf_provenance_reporter r = {
        .seed_host = dmf_sched_host_is_seed(p->host),
        .source_ordered = p->source_ordered,
    };
    enum dmf_provenance_verdict v = dmf_provenance_judge(
        s->cfg.digest_sources, &r, have ? have->sha256 : NULL, by && by->seed, d->sha256);
    char a[2 * DMF_SHA256_LEN + 1], b[2 * DMF_SHA256_LEN + 1];
    dmf_hex_encode(d->sha256, DMF_SHA256_LEN, b);
    if (have)
        dmf_hex_encode(have->sha256, DMF_SHA256_LEN, a);
    switch (v) {
    case DMF_PROV_UNTRUSTED:
        if (!p->digests_ignored_logged)
            dmf_warn("task %s peer %s host %s: its piece digests are ignored: the scheduler "
                     "did not send it to the origin (digest sources: %s)",
                     t->id, p->peer_id, p->host->id,
                     dmf_digest_sources_name(s->cfg.digest_sources));
        p->digests_ignored_logged = true;
        break;
    case DMF_PROV_NEW:
        task_add_digest(t, d, task_reporter(t, p->host));
        if (t->reverifying && !r.seed_host)
            t->nsuspect++;
        break;
    case DMF_PROV_SAME:
        if (t->reverifying && r.seed_host && !by->seed)
            replace_by_seed(t, t->digest_at[d->number] - 1, d, task_reporter(t, p->host));
        break;
    case DMF_PROV_CONFLICT:
        if (t->reverifying) {
            /* Both hosts' digests are withheld already; the seed's decide. */
            dmf_debug("task %s: piece %u: host %s disagrees with host %s too (being re-verified)",
                      t->id, d->number, p->host->id, by->host_id);
            break;
        }
        /* fall through */
    case DMF_PROV_SEED_OVERRULES:
    case DMF_PROV_SEED_STANDS:
        t->conflicted = true;
        /* One line per disagreeing piece, at warn for the first few of the task only: a
         * message may carry thousands. */
        dmf_log(t->conflicts_logged < DMF_SCHED_CONFLICTS_LOGGED ? DMF_LOG_WARN : DMF_LOG_DEBUG,
                "task %s: conflicted: piece %u has digest %s from host %s and %s from host %s "
                "(%s%s)",
                t->id, d->number, a, by->host_id, b, p->host->id, dmf_provenance_verdict_name(v),
                v == DMF_PROV_SEED_OVERRULES ? ": the seed's, fetched from the origin, counts"
                : v == DMF_PROV_SEED_STANDS  ? ": the seed's, fetched from the origin, stays"
                : t->digest && t->digest[0]  ? ": the whole-content digest decides"
                                             : ": the origin decides");
        if (t->conflicts_logged++ == DMF_SCHED_CONFLICTS_LOGGED)
            dmf_warn("task %s: more disagreeing piece digests are logged at debug level", t->id);
        if (v == DMF_PROV_SEED_OVERRULES) {
            size_t at = t->digest_at[d->number] - 1;
            if (t->reverifying) {
                t->noverruled++;
                replace_by_seed(t, at, d, task_reporter(t, p->host));
                break;
            }
            memcpy(t->digests[at].sha256, d->sha256, DMF_SHA256_LEN);
            t->digest_by[at] = task_reporter(t, p->host);
            if (at < sent && at < t->overruled_from)
                t->overruled_from = at;
        }
        break;
    }
    return v;
}

/* After a conflict: every attached peer still downloading that was given a digest since
 * overruled (all of them when fail_all) fails the task, with the reason; fail_all also
 * remembers the failure (negative cache) so that nobody is served the task until the
 * origin is asked again. */
static void fail_conflicted(dmf_scheduler_t *s, struct dmf_sched_task *t, bool fail_all)
{
    const char *why = fail_all ? "conflicting piece digests from two hosts that fetched from "
                                 "the origin (the content changed, or a host lies)"
                               : "a piece digest this peer was given was overruled by a seed's";
    if (fail_all)
        dmf_negcache_put(&s->failed, t->id, 0, why, now_ms(s));
    dmf_scheduler_peer_t *q;
    TAILQ_FOREACH(q, &t->peers, in_task)
    {
        if (q->stream == NULL || q->state == DMF_PEER_SUCCEEDED || dmf_sched_host_is_seed(q->host))
            continue;
        if (!fail_all && q->meta_sent <= t->overruled_from)
            continue;
        if (s->sink.task_failed)
            s->sink.task_failed(s->sink_arg, q->stream, why, 0);
    }
    t->overruled_from = SIZE_MAX;
    /* Peers not told to fail learn the (corrected) digests they lack. */
    push_meta(s, t, NULL, false);
}

/* A peer of t on a seed host that is fetching it, or will (a triggered seed's
 * placeholder), or NULL. */
static dmf_scheduler_peer_t *task_seed_fetching(const struct dmf_sched_task *t)
{
    dmf_scheduler_peer_t *q;
    TAILQ_FOREACH(q, &t->peers, in_task)
    {
        if (!dmf_sched_host_is_seed(q->host))
            continue;
        if ((q->placeholder && q->triggered_seed) ||
            (q->stream != NULL && q->state != DMF_PEER_SUCCEEDED && q->state != DMF_PEER_FAILED))
            return q;
    }
    return NULL;
}

/* Whether q was handed a digest of a host other than a seed. */
static bool peer_given_suspect(const struct dmf_sched_task *t, const dmf_scheduler_peer_t *q)
{
    for (size_t i = 0; i < q->meta_sent && i < t->ndigests; i++)
        if (t->digest_by[i] == DMF_SCHED_DIGEST_DEAD || !t->reporters[t->digest_by[i]].seed)
            return true;
    return false;
}

/* Two hosts that are not seeds but fetched from the origin disagree, and no whole-content
 * digest decides: a seed fetches the task from the origin (one already doing so, or one
 * triggered now on the seed's own trigger budget) and only seeds' digests are
 * handed out until it has reported every piece. Peers that were given another host's
 * digests fail now (their pieces may be a liar's; they may ask again). false when no seed
 * can: the caller fails the task as before. */
static bool reverify_start(dmf_scheduler_t *s, struct dmf_sched_task *t, dmf_scheduler_peer_t *p)
{
    dmf_scheduler_peer_t *seed = task_seed_fetching(t);
    if (seed == NULL && !t->seed_failed) {
        struct dmf_sched_view v = rank_view(s, 0);
        struct dmf_sched_host *h = dmf_sched_pick_seed(&v, p);
        const char *why = NULL;
        /* Charged to the seed's own budget of triggers, not the reporter's (spent, as a
         * rule: that is how it came to fetch from the origin): a cluster-wide bound on the
         * origin fetches conflicts can cause. */
        seed = h ? trigger_new_seed(s, t, h, h, &why) : NULL;
    }
    if (seed == NULL)
        return false;
    t->reverifying = true;
    t->nsuspect = 0;
    for (size_t i = 0; i < t->ndigests; i++)
        if (t->digest_by[i] != DMF_SCHED_DIGEST_DEAD && !t->reporters[t->digest_by[i]].seed)
            t->nsuspect++;
    dmf_warn("task %s: conflicted -> re-verifying: seed host %s fetches it from the origin; "
             "until it has, only seeds' piece digests are handed out (%zu of other hosts "
             "withheld)",
             t->id, seed->host->id, t->nsuspect);
    const char *why = "conflicting piece digests from two hosts that fetched from the origin: "
                      "the task is re-verified from the origin by a seed, ask again";
    dmf_scheduler_peer_t *q;
    TAILQ_FOREACH(q, &t->peers, in_task)
    {
        if (q->stream == NULL || q->state == DMF_PEER_SUCCEEDED ||
            dmf_sched_host_is_seed(q->host) ||
            (q->state == DMF_PEER_BACK_TO_SOURCE && q->source_ordered) || !peer_given_suspect(t, q))
            continue;
        if (s->sink.task_failed)
            s->sink.task_failed(s->sink_arg, q->stream, why, 0);
    }
    return true;
}

/* While t is re-verified: done once seeds' digests cover every piece (the others' are
 * all overruled or confirmed). */
static void reverify_check_done(struct dmf_sched_task *t)
{
    if (!t->reverifying || t->nsuspect != 0 || t->content_length < 0 ||
        t->ndigests - t->ndead < t->total_pieces)
        return;
    t->reverifying = false;
    dmf_warn("task %s: re-verifying -> verified: a seed's digests cover all %u pieces (%zu of "
             "other hosts' overruled); they are handed out",
             t->id, t->total_pieces, t->noverruled);
}

/* While t is re-verified, its seed went away (or finished without every digest): the
 * task fails for everyone as it would have without a seed. */
static void reverify_check_lost(dmf_scheduler_t *s, struct dmf_sched_task *t)
{
    if (!t->reverifying || task_seed_fetching(t) != NULL)
        return;
    t->reverifying = false;
    dmf_warn("task %s: re-verifying -> failed: the seed fetching it went away before it "
             "reported every piece digest",
             t->id);
    fail_conflicted(s, t, true);
}

int dmf_scheduler_progress(dmf_scheduler_t *s, dmf_scheduler_peer_t *p,
                           const struct dmf_scheduler_progress *pr, char *err, size_t errlen)
{
    struct dmf_sched_task *t = p->task;
    struct layout cur = task_layout(t), l;

    /* Check everything first: a bad message changes nothing. */
    int rc = layout_merge(&cur, pr->content_length, pr->piece_length, UINT32_MAX, &l, err, errlen);
    if (rc != 0)
        return rc;
    uint32_t limit = l.content_length >= 0 ? l.total_pieces : DMF_PIECES_MAX;
    for (size_t i = 0; i < pr->npieces; i++)
        if (pr->pieces[i] >= limit)
            return dmf_sched_fail(err, errlen, -EINVAL, "piece %u is out of range (task has %u)",
                                  pr->pieces[i], limit);
    for (size_t i = 0; i < pr->ndigests; i++)
        if (pr->digests[i].number >= limit)
            return dmf_sched_fail(err, errlen, -EINVAL,
                                  "digest of piece %u is out of range (task has %u)",
                                  pr->digests[i].number, limit);
    if (pr->content_type && *pr->content_type && !dmf_content_type_valid(pr->content_type))
        return dmf_sched_fail(err, errlen, -EINVAL,
                              "content_type is not 1..%d bytes of printable ASCII",
                              DMF_CONTENT_TYPE_MAX);

    /* Validators pinned by a digest source are the task's: pieces of another version are
     * refused. Provisional ones (a registrant's claim) refuse nobody. */
    bool trusted = reporter_trusted(s, p);
    if (dmf_provenance_refuses_version(
            t->validators_trusted,
            (pr->etag && *pr->etag && t->etag && strcmp(pr->etag, t->etag) != 0) ||
                (pr->last_modified && *pr->last_modified && t->last_modified &&
                 strcmp(pr->last_modified, t->last_modified) != 0)))
        return dmf_sched_fail(err, errlen, -ESTALE,
                              "the pieces are of another version (ETag %.100s) than the task's "
                              "(%.100s)",
                              pr->etag && *pr->etag ? pr->etag : "-", t->etag ? t->etag : "-");
    bool layout_changed = task_set_layout(s, t, &l);
    trigger_settle(s, p, false);
    p->bytes_from_parents = pr->bytes_from_parents;
    p->bytes_from_origin = pr->bytes_from_origin;
    /* Only a digest source's validators are pinned: a peer in P2P mode reports what it
     * was told, or lies. */
    if (trusted) {
        layout_changed |= task_pin_validators(t, pr->etag, pr->last_modified, true, p->host->id);
        layout_changed |= task_pin(&t->content_type, pr->content_type);
    }
    for (size_t i = 0; i < pr->npieces; i++)
        dmf_bitmap_set(&p->held, pr->pieces[i]);
    peer_reindex(s, p);

    bool reporter_current = p->meta_sent >= t->ndigests;
    size_t before = t->ndigests;
    bool fail_given = false, conflict = false;
    for (size_t i = 0; i < pr->ndigests; i++)
        switch (judge_digest(s, p, &pr->digests[i], before)) {
        case DMF_PROV_SEED_OVERRULES:
            fail_given |= t->overruled_from != SIZE_MAX;
            break;
        case DMF_PROV_CONFLICT:
            conflict |= !t->reverifying && (t->digest == NULL || t->digest[0] == '\0');
            break;
        default:
            break;
        }
    bool fail_all = conflict && !reverify_start(s, t, p);
    if (fail_all)
        dmf_warn("task %s: conflicted -> failed: no seed can re-verify it; it fails until the "
                 "origin is asked again",
                 t->id);
    if (fail_all || fail_given) {
        fail_conflicted(s, t, fail_all);
        return 0;
    }
    reverify_check_done(t);
    if (reporter_current)
        p->meta_sent = t->ndigests;
    if (t->ndigests != before || layout_changed || conflict)
        push_meta(s, t, p, layout_changed);
    return 0;
}

int dmf_scheduler_finished(dmf_scheduler_t *s, dmf_scheduler_peer_t *p, int64_t content_length,
                           uint32_t total_pieces, char *err, size_t errlen)
{
    struct dmf_sched_task *t = p->task;
    struct layout cur = task_layout(t), l;
    if (content_length < 0)
        return dmf_sched_fail(err, errlen, -EINVAL, "a finished peer must know the content_length");
    int rc = layout_merge(&cur, content_length, 0, total_pieces, &l, err, errlen);
    if (rc != 0)
        return rc;
    bool layout_changed = task_set_layout(s, t, &l);
    trigger_settle(s, p, false);
    peer_drop_parents(s, p);
    peer_set_state(s, p, DMF_PEER_SUCCEEDED);
    if (dmf_sched_host_is_seed(p->host)) {
        reverify_check_done(t);
        reverify_check_lost(s, t);
    }
    if (layout_changed)
        push_meta(s, t, p, true);
    /* Mesh: a peer that holds everything can serve any peer still downloading; without
     * this its uplink would idle while peers whose parents lack pieces wait on the seed.
     * Up to twice the candidate limit of parents per peer. */
    if (s->cfg.mesh)
        offer_to_others(s, p, true);
    return 0;
}

void dmf_scheduler_failed(dmf_scheduler_t *s, dmf_scheduler_peer_t *p, const char *reason)
{
    char why[DMF_SCHED_REASON_MAX + 16];
    snprintf(why, sizeof(why), "failed: %s", reason && *reason ? reason : "no reason given");
    peer_set_state(s, p, DMF_PEER_FAILED);
    peer_remove(s, p, why, false);
}

void dmf_scheduler_failed_for_good(dmf_scheduler_t *s, dmf_scheduler_peer_t *p,
                                   uint32_t origin_status, const char *reason)
{
    struct dmf_sched_task *t = p->task;
    char why[DMF_NEGCACHE_REASON_MAX];
    snprintf(why, sizeof(why), "%s (from host %s)", reason && *reason ? reason : "failed",
             p->host->id);
    dmf_warn("task %s: failed for good on host %s: %s", t->id, p->host->id, why);
    dmf_negcache_put(&s->failed, t->id, origin_status, why, now_ms(s));
    dmf_scheduler_peer_t *q;
    TAILQ_FOREACH(q, &t->peers, in_task)
    {
        if (q != p && q->stream != NULL && q->state != DMF_PEER_SUCCEEDED && s->sink.task_failed)
            s->sink.task_failed(s->sink_arg, q->stream, why, origin_status);
    }
    dmf_scheduler_failed(s, p, reason);
}

void dmf_scheduler_content_changed(dmf_scheduler_t *s, dmf_scheduler_peer_t *p, const char *reason)
{
    if (!reporter_trusted(s, p)) {
        /* Only a digest source saw the origin on the scheduler's order; anyone else's word
         * would let one host wipe the task for everyone. */
        dmf_warn("task %s peer %s host %s: says the content changed at the origin, but it is "
                 "not a digest source: only its own download fails",
                 p->task->id, p->peer_id, p->host->id);
        dmf_scheduler_failed(s, p, reason);
        return;
    }
    char why[DMF_SCHED_REASON_MAX + 64];
    snprintf(why, sizeof(why), "the content changed at the origin (host %s: %s)", p->host->id,
             reason && *reason ? reason : "no reason given");
    task_forget_version(s, p->task, p, why);
    dmf_scheduler_failed(s, p, reason);
}

void dmf_scheduler_stream_closed(dmf_scheduler_t *s, dmf_scheduler_peer_t *p)
{
    p->stream = NULL;
    peer_reindex(s, p);
    if (p->state == DMF_PEER_SUCCEEDED) {
        dmf_debug("task %s peer %s host %s: stream closed, stays a parent", p->task->id, p->peer_id,
                  p->host->id);
        peer_update_idle(s, p);
        return;
    }
    peer_remove(s, p, "stream closed", false);
}

/* Does host h hold a peer of p's task (so a report about h is about a host that could
 * have been p's parent, not any host p picked to slander)? The report may come after the
 * scheduler took the edge away (p went back to the source), so the edge is not asked for. */
static bool host_in_task(const struct dmf_sched_host *h, const dmf_scheduler_peer_t *p)
{
    const dmf_scheduler_peer_t *q;
    LIST_FOREACH(q, &h->peers, in_host)
    {
        if (q->task == p->task)
            return true;
    }
    return false;
}

int dmf_scheduler_parent_failure(dmf_scheduler_t *s, dmf_scheduler_peer_t *p,
                                 const char *parent_peer_id, const char *parent_host_id, int reason,
                                 char *err, size_t errlen)
{
    int rc = dmf_sched_check_id("parent_host_id", parent_host_id, DMF_SCHED_ID_MAX, err, errlen);
    if (rc != 0)
        return rc;
    if (parent_peer_id && *parent_peer_id &&
        (rc = dmf_sched_check_id("parent_peer_id", parent_peer_id, DMF_SCHED_ID_MAX, err,
                                 errlen)) != 0)
        return rc;
    if (reason != DMF_PARENT_UNREACHABLE && reason != DMF_PARENT_BAD_PIECE)
        return dmf_sched_fail(err, errlen, -EINVAL, "unknown parent failure reason %d", reason);

    struct dmf_sched_host *h = host_get(s, parent_host_id);
    /* One bad-piece report per reporting host counts (host_count_bad), so a peer cannot
     * exclude a host alone; unreachable reports once per (peer, parent host). */
    uint64_t now = now_ms(s);
    if (h && reason == DMF_PARENT_BAD_PIECE && h != p->host) {
        if (host_count_bad(h, p->host->id, s->cfg.bad_parent_threshold, now))
            dmf_warn("task %s peer %s host %s: parent host %s sent a bad piece (%u of %u "
                     "reports before exclusion)",
                     p->task->id, p->peer_id, p->host->id, h->id, h->bad_reports,
                     s->cfg.bad_parent_threshold);
    } else if (h && reason == DMF_PARENT_UNREACHABLE && h != p->host &&
               !dmf_sched_peer_blocked(p, parent_host_id) && host_in_task(h, p)) {
        bool was = dmf_sched_host_stalling(h, now, s->cfg.unreachable_threshold);
        host_count_unreachable(h, p->host->id, now);
        dmf_info("task %s peer %s host %s: parent host %s unreachable or stalled (%u distinct "
                 "reporters in the last %d s)",
                 p->task->id, p->peer_id, p->host->id, h->id, dmf_sched_host_unreachable(h, now),
                 DMF_SCHED_UNREACHABLE_WIN / 1000);
        if (!was && dmf_sched_host_stalling(h, now, s->cfg.unreachable_threshold))
            dmf_warn("host %s: reported unreachable or stalled by %u hosts: offered to nobody "
                     "until the reports are %d s old",
                     h->id, dmf_sched_host_unreachable(h, now), DMF_SCHED_UNREACHABLE_WIN / 1000);
    }
    if (!dmf_sched_peer_blocked(p, parent_host_id))
        peer_block(p, parent_host_id);
    struct dmf_sched_edge *e, *next;
    for (e = LIST_FIRST(&p->parents); e != NULL; e = next) {
        next = LIST_NEXT(e, in_child);
        if (strcmp(e->parent->host->id, parent_host_id) == 0)
            edge_remove(s, e);
    }
    reschedule(s, p);
    return 0;
}

int dmf_scheduler_leave_peer(dmf_scheduler_t *s, const char *task_id, const char *peer_id,
                             const char *only_host, char *err, size_t errlen)
{
    int rc;
    if ((rc = dmf_sched_check_task_id(task_id, err, errlen)) != 0 ||
        (rc = dmf_sched_check_id("peer_id", peer_id, DMF_SCHED_ID_MAX, err, errlen)) != 0)
        return rc;
    struct dmf_sched_task *t = dmf_strmap_get(&s->tasks, task_id);
    dmf_scheduler_peer_t *p = t ? TAILQ_FIRST(&t->peers) : NULL;
    while (p != NULL && strcmp(p->peer_id, peer_id) != 0)
        p = TAILQ_NEXT(p, in_task);
    if (p == NULL)
        return dmf_sched_fail(err, errlen, -ENOENT, "peer %s of task %s is not known", peer_id,
                              task_id);
    if (only_host != NULL && strcmp(p->host->id, only_host) != 0)
        return dmf_sched_fail(err, errlen, -EPERM,
                              "peer %s of task %s belongs to another host than %s", peer_id,
                              task_id, only_host);
    peer_remove(s, p, "left", true);
    return 0;
}

void dmf_scheduler_seed_result(dmf_scheduler_t *s, const char *task_id, const char *host_id,
                               uint64_t trigger_id, bool ok, const char *reason)
{
    dmf_scheduler_peer_t *p = dmf_sched_peer_find(&s->peers, task_id, host_id);
    if (p == NULL || p->trigger_id != trigger_id)
        return;
    if (ok) {
        if (p->placeholder) {
            /* The seed had (or fetched) the task without announcing it: it holds it. */
            p->placeholder = false;
            peer_reindex(s, p);
            peer_set_state(s, p, DMF_PEER_SUCCEEDED);
            peer_update_idle(s, p);
            reverify_check_lost(s, p->task); /* it reported no digest */
        }
        return;
    }
    if (!p->placeholder && (p->stream != NULL || p->state == DMF_PEER_SUCCEEDED))
        return; /* the seed's own stream reports on it */
    dmf_warn("task %s: seed host %s could not fetch it: %s", task_id, host_id,
             reason && *reason ? reason : "unknown error");
    p->task->seed_failed = true;
    p->placeholder = false;
    peer_reindex(s, p);
    peer_set_state(s, p, DMF_PEER_FAILED);
    peer_remove(s, p, "seed trigger failed", false);
}

/* ------------------------------------------------------------ queries and lifetime */

const char *dmf_scheduler_peer_id(const dmf_scheduler_peer_t *p)
{
    return p->peer_id;
}

const char *dmf_scheduler_peer_task_id(const dmf_scheduler_peer_t *p)
{
    return p->task->id;
}

const char *dmf_scheduler_peer_host_id(const dmf_scheduler_peer_t *p)
{
    return p->host->id;
}

enum dmf_scheduler_peer_state dmf_scheduler_peer_state(const dmf_scheduler_peer_t *p)
{
    return p->state;
}

int dmf_scheduler_stat_task(dmf_scheduler_t *s, const char *task_id,
                            struct dmf_scheduler_task_stat *st, char *err, size_t errlen)
{
    memset(st, 0, sizeof(*st));
    int rc = dmf_sched_check_task_id(task_id, err, errlen);
    if (rc != 0)
        return rc;
    struct dmf_sched_task *t = dmf_strmap_get(&s->tasks, task_id);
    if (t == NULL)
        return dmf_sched_fail(err, errlen, -ENOENT, "task %s is not known", task_id);
    task_meta(t, t->ndigests, &st->meta);
    st->url = t->shown_url ? t->shown_url : "";
    st->peers = dmf_xcalloc(t->npeers, sizeof(*st->peers));
    dmf_scheduler_peer_t *p;
    TAILQ_FOREACH(p, &t->peers, in_task)
    {
        struct dmf_scheduler_peer_stat *ps = &st->peers[st->npeers++];
        ps->peer_id = p->peer_id;
        ps->host_id = p->host->id;
        ps->state = p->state;
        ps->finished_pieces = dmf_sched_peer_held(p);
    }
    return 0;
}

void dmf_scheduler_task_stat_free(struct dmf_scheduler_task_stat *st)
{
    free(st->peers);
    memset(st, 0, sizeof(*st));
}

void dmf_scheduler_counts(const dmf_scheduler_t *s, struct dmf_scheduler_counts *c)
{
    c->hosts = s->nhosts;
    c->tasks = s->ntasks;
    c->peers = s->npeers;
}

uint64_t dmf_scheduler_host_timeout_ms(const dmf_scheduler_t *s)
{
    return s->cfg.host_timeout_ms;
}

void dmf_scheduler_each_host(const dmf_scheduler_t *s,
                             bool (*fn)(void *arg, const struct dmf_sched_host *h), void *arg)
{
    const struct dmf_sched_host *h;
    TAILQ_FOREACH(h, &s->hosts_by_seen, by_seen)
    {
        if (!fn(arg, h))
            break;
    }
}

uint32_t dmf_scheduler_set_candidate_limit(dmf_scheduler_t *s, uint32_t n)
{
    if (n >= 1 && n <= DMF_SCHED_CANDIDATES_MAX && n != s->cfg.candidate_limit) {
        s->cfg.candidate_limit = n;
        struct dmf_sched_task *t;
        TAILQ_FOREACH(t, &s->all_tasks, link)
        {
            task_reindex(s, t); /* the hungry lists read the limit */
        }
    }
    return s->cfg.candidate_limit;
}

dmf_scheduler_t *dmf_scheduler_new(const struct dmf_scheduler_config *cfg,
                                   const struct dmf_scheduler_sink *sink, void *sink_arg)
{
    dmf_scheduler_t *s = dmf_xcalloc(1, sizeof(*s));
    s->cfg = *cfg;
    if (s->cfg.candidate_limit == 0)
        s->cfg.candidate_limit = DMF_SCHED_CANDIDATES_DEFAULT;
    if (s->cfg.candidate_limit > DMF_SCHED_CANDIDATES_MAX)
        s->cfg.candidate_limit = DMF_SCHED_CANDIDATES_MAX;
    if (s->cfg.host_timeout_ms == 0)
        s->cfg.host_timeout_ms = 10000;
    if (s->cfg.bad_parent_threshold == 0)
        s->cfg.bad_parent_threshold = 2;
    if (s->cfg.max_hosts == 0)
        s->cfg.max_hosts = 100000;
    if (s->cfg.max_tasks == 0)
        s->cfg.max_tasks = 100000;
    if (s->cfg.max_peers == 0)
        s->cfg.max_peers = 1000000;
    if (s->cfg.max_peers_per_host == 0)
        s->cfg.max_peers_per_host = 10000;
    if (!s->cfg.peer_ttl_set)
        s->cfg.peer_ttl_ms = 3600000;
    s->sink = *sink;
    s->sink_arg = sink_arg;
    dmf_negcache_init(&s->failed, s->cfg.negative_ttl_set ? s->cfg.negative_ttl_ms : 10000,
                      s->cfg.max_tasks);
    dmf_strmap_init(&s->hosts);
    dmf_strmap_init(&s->tasks);
    dmf_strmap_init(&s->peers);
    TAILQ_INIT(&s->hosts_by_seen);
    LIST_INIT(&s->seeds);
    TAILQ_INIT(&s->all_tasks);
    TAILQ_INIT(&s->idle_peers);
    return s;
}

void dmf_scheduler_free(dmf_scheduler_t *s)
{
    if (s == NULL)
        return;
    struct dmf_sched_task *t;
    dmf_scheduler_peer_t *p;
    /* Every edge first (each is on its child's list), then the peers they linked. */
    TAILQ_FOREACH(t, &s->all_tasks, link)
    {
        TAILQ_FOREACH(p, &t->peers, in_task)
        {
            peer_drop_parents(s, p);
        }
    }
    while ((t = TAILQ_FIRST(&s->all_tasks)) != NULL) {
        while ((p = TAILQ_FIRST(&t->peers)) != NULL) {
            TAILQ_REMOVE(&t->peers, p, in_task);
            peer_free(p);
        }
        TAILQ_REMOVE(&s->all_tasks, t, link);
        task_free(t);
    }
    struct dmf_sched_host *h;
    while ((h = TAILQ_FIRST(&s->hosts_by_seen)) != NULL) {
        TAILQ_REMOVE(&s->hosts_by_seen, h, by_seen);
        host_free(h);
    }
    dmf_strmap_free(&s->hosts);
    dmf_strmap_free(&s->tasks);
    dmf_strmap_free(&s->peers);
    dmf_negcache_free(&s->failed);
    free(s->scratch);
    free(s);
}
