/* Candidate scoring and selection; see sched_rank.h and docs/internals/SCHEDULER.md. */
#include "scheduler/sched_rank.h"

#include <string.h>

#include "common/util.h"

#define SEED_FALLBACK_BELOW 2 /* a seed parent only for peers with fewer normal parents */

#define FNV_OFFSET 1469598103934665603ull
#define FNV_PRIME  1099511628211ull

double dmf_sched_location_affinity(const char *a, const char *b)
{
    if (*a == '\0' || *b == '\0')
        return 0.0;
    unsigned na = 1, nb = 1, common = 0;
    for (const char *c = a; *c; c++)
        na += *c == '|';
    for (const char *c = b; *c; c++)
        nb += *c == '|';
    while (*a && *b) {
        size_t la = strcspn(a, "|"), lb = strcspn(b, "|");
        if (la != lb || memcmp(a, b, la) != 0)
            break;
        common++;
        a += la;
        b += lb;
        if (*a != *b)
            break;
        if (*a == '|') {
            a++;
            b++;
        }
    }
    return (double)common / (double)DMF_MAX(na, nb);
}

/* How much of the task the candidate holds, in [0, 1]. */
static double peer_progress(const dmf_scheduler_peer_t *p)
{
    if (p->state == DMF_PEER_SUCCEEDED)
        return 1.0;
    uint32_t held = dmf_sched_peer_held(p);
    if (p->task->content_length >= 0)
        return p->task->total_pieces ? (double)held / p->task->total_pieces : 1.0;
    /* Total unknown: saturate, so more pieces still rank higher. */
    return (double)held / (held + 16.0);
}

/* The candidate's upload capacity term, in [0, 1]. */
static double candidate_capacity(bool mesh, const dmf_scheduler_peer_t *c)
{
    const struct dmf_sched_host *h = c->host;
    double free_upload = 0.5;
    if (h->upload_capacity > 0)
        free_upload = h->upload_rate >= h->upload_capacity
                          ? 0.0
                          : 1.0 - (double)h->upload_rate / (double)h->upload_capacity;
    double capacity = 0.5 * free_upload + 0.5 / (1.0 + h->active_uploads);
    /* Mesh: the children the scheduler already gave this peer are its upload's future load
     * (host announces lag by seconds; a burst of registrations would otherwise all pick the
     * same few parents and leave the other uplinks idle). */
    if (mesh)
        capacity = 0.5 * capacity + 0.5 / (1.0 + c->nchildren);
    return capacity;
}

double dmf_sched_score(const struct dmf_sched_view *v, const dmf_scheduler_peer_t *child,
                       const dmf_scheduler_peer_t *c)
{
    const struct dmf_sched_host *h = c->host;
    const struct dmf_sched_host *me = child->host;
    double capacity = candidate_capacity(v->mesh, c);
    double idc = *me->idc && strcmp(me->idc, h->idc) == 0 ? 1.0 : 0.0;
    double locality = 0.5 * idc + 0.5 * dmf_sched_location_affinity(me->location, h->location);
    double health = 1.0 / (1.0 + dmf_sched_host_unreachable(h, v->now));
    return 0.3 * capacity + 0.3 * peer_progress(c) + 0.2 * locality + 0.2 * health;
}

static bool peer_can_serve(const dmf_scheduler_peer_t *c)
{
    return c->state == DMF_PEER_RUNNING || c->state == DMF_PEER_BACK_TO_SOURCE ||
           c->state == DMF_PEER_SUCCEEDED || c->placeholder;
}

/* FNV-1a over the bytes of str, from h. */
static uint64_t fnv1a_bytes(uint64_t h, const char *str)
{
    for (const char *c = str; *c; c++)
        h = (h ^ (unsigned char)*c) * FNV_PRIME;
    return h;
}

/* FNV-1a over str and a terminator (so "ab","c" and "a","bc" differ). */
static uint64_t fnv1a(uint64_t h, const char *str)
{
    return (fnv1a_bytes(h, str) ^ 0xff) * FNV_PRIME;
}

/* Equal scores: by peer id under the DAG rule (reproducible); in a mesh by a hash of both
 * peers, so that different children order equal candidates differently. */
static uint64_t tiebreak(const struct dmf_sched_view *v, const dmf_scheduler_peer_t *child,
                         const dmf_scheduler_peer_t *c)
{
    if (!v->mesh)
        return 0;
    return fnv1a(fnv1a(FNV_OFFSET, child->peer_id), c->peer_id);
}

static bool ranks_before(const struct dmf_sched_ranked *a, const struct dmf_sched_ranked *b)
{
    if (a->score != b->score)
        return a->score > b->score;
    if (a->tiebreak != b->tiebreak)
        return a->tiebreak < b->tiebreak;
    return strcmp(a->peer->peer_id, b->peer->peer_id) < 0;
}

/* Keeps the best `limit` candidates in best[0..*n), best first. */
static void rank_insert(struct dmf_sched_ranked *best, size_t *n, size_t limit,
                        struct dmf_sched_ranked r)
{
    if (limit == 0 || (*n == limit && !ranks_before(&r, &best[*n - 1])))
        return;
    size_t i = *n < limit ? (*n)++ : *n - 1;
    while (i > 0 && ranks_before(&r, &best[i - 1])) {
        best[i] = best[i - 1];
        i--;
    }
    best[i] = r;
}

double dmf_sched_rank_key(bool mesh, const dmf_scheduler_peer_t *c)
{
    if (!peer_can_serve(c))
        return -1.0;
    /* The score with full health (recent reports only lower it, and wear off with time
     * alone) and no locality. */
    return 0.3 * candidate_capacity(mesh, c) + 0.3 * peer_progress(c) + 0.2;
}

double dmf_sched_locality_bound(const dmf_scheduler_peer_t *child)
{
    const struct dmf_sched_host *me = child->host;
    return 0.2 * (0.5 * (*me->idc != '\0') + 0.5 * (*me->location != '\0'));
}

/* Whether c may be offered to p at all (before any score). */
static bool may_offer(const struct dmf_sched_view *v, const dmf_scheduler_peer_t *p,
                      const dmf_scheduler_peer_t *c)
{
    return c->mark != v->epoch && peer_can_serve(c) &&
           !dmf_sched_host_excluded(c->host, v->bad_parent_threshold) &&
           !dmf_sched_host_stalling(c->host, v->now, v->unreachable_threshold) &&
           !dmf_sched_peer_blocked(p, c->host->id);
}

/* Not p's descendants (the caller marked them: the graph stays a DAG), not parents it
 * already uses. Seeds are parents of last resort: one is added only while p would have
 * fewer than SEED_FALLBACK_BELOW normal parents, so the seed's upload goes to the peers
 * that have nobody else. best[0..n) holds the normal picks and seed the best seed (nseed
 * of them, 0 or 1). */
static size_t add_seed(const struct dmf_sched_view *v, const dmf_scheduler_peer_t *p,
                       struct dmf_sched_ranked *best, size_t n, size_t limit,
                       const struct dmf_sched_ranked *seed, size_t nseed)
{
    size_t normal_in_use = 0;
    bool seed_in_use = false;
    struct dmf_sched_edge *e;
    LIST_FOREACH(e, &p->parents, in_child)
    {
        if (dmf_sched_host_is_seed(e->parent->host))
            seed_in_use = true;
        else
            normal_in_use++;
    }
    if (v->mesh && nseed && !seed_in_use) {
        /* Mesh: every peer has the seed among its parents. The daemon asks a seed only
         * for pieces no peer among its parents holds, and the seed serves each piece once before
         * it serves any twice, so its upload carries new pieces to whoever can take
         * them (a peer whose own uplink is full receives slowly: its ACKs queue). */
        if (n == limit)
            n--;
        best[n++] = *seed;
    } else if (nseed && !seed_in_use && n < limit && normal_in_use + n < SEED_FALLBACK_BELOW) {
        best[n++] = *seed;
    }
    return n;
}

size_t dmf_sched_pick_candidates_scan(const struct dmf_sched_view *v, const dmf_scheduler_peer_t *p,
                                      struct dmf_sched_ranked *best, size_t limit)
{
    size_t n = 0, nseed = 0;
    struct dmf_sched_ranked seed;
    dmf_scheduler_peer_t *c;
    TAILQ_FOREACH(c, &p->task->peers, in_task)
    {
        if (!may_offer(v, p, c))
            continue;
        struct dmf_sched_ranked r = {c, dmf_sched_score(v, p, c), tiebreak(v, p, c)};
        if (dmf_sched_host_is_seed(c->host))
            rank_insert(&seed, &nseed, 1, r);
        else
            rank_insert(best, &n, limit, r);
    }
    return add_seed(v, p, best, n, limit, &seed, nseed);
}

/* Slack for the rounding of two sums of the same terms in another order. */
#define KEY_SLACK 1e-9
/* Peers that can at best tie with the last pick examined for the tiebreak (see below). */
#define TIES_MAX 64

/* The index holds every peer that can serve, with a key no lower than its score for any
 * child less that child's locality bound. Walked best key first, once limit picks are
 * made, a peer whose key plus the bound is below the last pick cannot rank before it, and
 * neither can any peer after it. Peers whose scores tie exactly are many in a big task
 * (equal upload figures and children), and the tiebreak (a hash of both peers in a mesh,
 * the peer id in a DAG) could only be honoured by scoring all of them: the walk examines
 * TIES_MAX of them and stops. So the picks' scores are always the scan's; the peers differ
 * from the scan's only among candidates of exactly the last pick's score, when more than
 * TIES_MAX of them can serve. Seeds are skipped there and taken from the seed list (a
 * handful of hosts), so that the best seed is found however low its key. */
size_t dmf_sched_pick_candidates(const struct dmf_sched_view *v, const dmf_scheduler_peer_t *p,
                                 struct dmf_sched_ranked *best, size_t limit)
{
    size_t n = 0, nseed = 0;
    struct dmf_sched_ranked seed;
    const struct dmf_sched_task *t = p->task;
    double bound = dmf_sched_locality_bound(p) + KEY_SLACK;
    struct dmf_rank_walk w;
    dmf_rank_walk_begin(&w, &t->rank);
    dmf_scheduler_peer_t *c;
    size_t ties = 0;
    while (limit > 0 && (c = dmf_rank_walk_next(&w)) != NULL) {
        if (n == limit && c->rank_key + bound < best[n - 1].score - KEY_SLACK)
            break;
        /* From here on a peer can at best tie with the last pick (keys only fall along
         * the walk, the last pick's score only rises): after TIES_MAX such peers the
         * rest are left, whose scores are no higher than the picks'. */
        if (n == limit && c->rank_key + bound <= best[n - 1].score + KEY_SLACK && ++ties > TIES_MAX)
            break;
        if (dmf_sched_host_is_seed(c->host) || !may_offer(v, p, c))
            continue;
        struct dmf_sched_ranked r = {c, dmf_sched_score(v, p, c), tiebreak(v, p, c)};
        rank_insert(best, &n, limit, r);
    }
    dmf_rank_walk_end(&w);
    const struct dmf_sched_host *h;
    LIST_FOREACH(h, v->seeds, seeds)
    {
        c = dmf_sched_peer_find(v->peers, t->id, h->id);
        if (c == NULL || !may_offer(v, p, c))
            continue;
        struct dmf_sched_ranked r = {c, dmf_sched_score(v, p, c), tiebreak(v, p, c)};
        rank_insert(&seed, &nseed, 1, r);
    }
    return add_seed(v, p, best, n, limit, &seed, nseed);
}

uint64_t dmf_sched_rendezvous(const char *task_id, const char *host_id)
{
    return fnv1a_bytes(fnv1a(FNV_OFFSET, task_id), host_id);
}

dmf_scheduler_peer_t *dmf_sched_pick_fetcher(const struct dmf_sched_task *t)
{
    dmf_scheduler_peer_t *best = NULL, *q;
    TAILQ_FOREACH(q, &t->peers, in_task)
    {
        if (q->stream == NULL || q->state != DMF_PEER_RUNNING || q->host->leaving)
            continue;
        if (best == NULL || dmf_sched_peer_held(q) > dmf_sched_peer_held(best) ||
            (dmf_sched_peer_held(q) == dmf_sched_peer_held(best) &&
             strcmp(q->peer_id, best->peer_id) < 0))
            best = q;
    }
    return best;
}

/* Rendezvous hashing on the task id sends the same task to the same seed. */
struct dmf_sched_host *dmf_sched_pick_seed(const struct dmf_sched_view *v,
                                           const dmf_scheduler_peer_t *p)
{
    if (p->task->seed_failed)
        return NULL;
    struct dmf_sched_host *best = NULL, *h;
    uint64_t best_w = 0;
    LIST_FOREACH(h, v->seeds, seeds)
    {
        if (dmf_sched_host_excluded(h, v->bad_parent_threshold) ||
            dmf_sched_peer_blocked(p, h->id) || v->now - h->last_seen >= v->host_timeout_ms ||
            dmf_sched_peer_find(v->peers, p->task->id, h->id))
            continue;
        uint64_t w = dmf_sched_rendezvous(p->task->id, h->id);
        if (best == NULL || w > best_w) {
            best = h;
            best_w = w;
        }
    }
    return best;
}
