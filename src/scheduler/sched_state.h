/* The scheduler's in-memory state, shared by its own modules: hosts, tasks, peers and the
 * edges of the parent graph. sched.c owns and changes it (the tables, the lists, every
 * allocation and free); rank_index.c keeps the heap of a task's rank index (and each
 * peer's rank_at) for it; sched_rank.c only reads it to score and pick parents.
 *
 * Private to src/scheduler/ (and its unit tests): service.c and everything else use the
 * public contract in sched.h, where dmf_scheduler_peer_t stays opaque. */
#ifndef DMF_SCHED_STATE_H
#define DMF_SCHED_STATE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/queue.h>

#include "common/pieces.h"
#include "common/taskid.h"
#include "common/util.h"
#include "scheduler/rank_index.h"
#include "scheduler/sched.h"
#include "scheduler/strmap.h"

#define DMF_SCHED_UNREACHABLE_RING 8  /* distinct recent unreachable reporters per host */
#define DMF_SCHED_BLOCKED_MAX      16 /* parent hosts a peer asked not to be offered again */

/* struct dmf_scheduler_peer.room */
#define DMF_SCHED_ROOM_NONE   0
#define DMF_SCHED_ROOM_HUNGRY 1 /* fewer parents than the candidate limit */
#define DMF_SCHED_ROOM_ROOMY  2 /* fewer than twice that */

/* The peer table's key: task id then host id. */
#define DMF_SCHED_PEER_KEY_LEN (DMF_TASK_ID_LEN + DMF_SCHED_ID_MAX + 1)

struct dmf_sched_host {
    char *id;
    char *hostname;
    char *ip;
    char *idc;
    char *location;
    uint32_t piece_port;
    uint32_t rpc_port;
    int type;
    uint64_t upload_capacity;
    uint64_t upload_rate;
    uint32_t active_uploads;
    uint64_t last_seen;
    uint32_t bad_reports; /* distinct reporting hosts (bad_reporters), until it wears off */
    uint64_t last_bad_at; /* the latest; DMF_SCHED_BAD_FORGET_MS later they are forgotten */
    char **bad_reporters; /* their host ids (owned), at most the threshold */
    /* Hosts that recently reported this one unreachable or stalled, one slot per reporter
     * (a hash of its host id) with the time of its latest report; at 0 = free. */
    struct dmf_sched_unreachable {
        uint64_t reporter;
        uint64_t at;
    } unreachable[DMF_SCHED_UNREACHABLE_RING];
    bool leaving;  /* being removed: offer nothing on it */
    size_t npeers; /* its peers (max_peers_per_host) */
    LIST_HEAD(, dmf_scheduler_peer) peers;
    TAILQ_ENTRY(dmf_sched_host) by_seen; /* oldest announce first */
    LIST_ENTRY(dmf_sched_host) seeds;    /* on the seed list when type is seed */
};

/* The list of seed hosts (struct dmf_sched_host.seeds). */
LIST_HEAD(dmf_sched_host_list, dmf_sched_host);

#define DMF_SCHED_REPORTERS_MAX 64 /* distinct digest reporters remembered per task */
/* digest_by of a digest a seed's has replaced (a tombstone: handed out to nobody again). */
#define DMF_SCHED_DIGEST_DEAD      UINT16_MAX
#define DMF_SCHED_CONFLICTS_LOGGED 8 /* disagreeing digests logged at warn per task */

/* A host that reported digests of a task. */
struct dmf_sched_reporter {
    char *host_id;
    bool seed;
};

/* A request header kept to trigger a seed (owned copies; the value is a secret). */
struct dmf_sched_req_header {
    char *name;
    char *value;
};

struct dmf_sched_task {
    char id[DMF_TASK_ID_LEN + 1];
    /* The latest registrant's request, kept to trigger a seed; headers never logged, url
     * never logged or returned (it may carry secret query parameters): shown_url is its
     * redacted form (url_secrets.h), for StatTask. */
    char *url;
    char *shown_url;
    struct dmf_sched_req_header *headers;
    size_t nheaders;
    char *tag;
    char *digest;
    char **filter_query;
    size_t nfilter_query;

    char *etag, *last_modified; /* the origin's validators, from the first fetcher, or NULL */
    /* Whether they come from a digest source (provenance.h). A registrant that is not one
     * pins them provisionally: they go to a triggered seed, but not into TaskMeta, and a
     * digest source's validators replace them. */
    bool validators_trusted;
    char *content_type;     /* the origin's, from the first digest source that said, or NULL */
    int64_t content_length; /* -1 unknown */
    uint32_t piece_length;  /* 0 unknown */
    uint32_t total_pieces;  /* valid when content_length >= 0 */

    /* Piece digests in arrival order, and where each piece's digest sits (index + 1). */
    struct dmf_scheduler_digest *digests;
    size_t ndigests, digests_cap;
    uint32_t *digest_at;
    uint32_t digest_at_len;
    /* Who reported each digest (provenance.h): an index into reporters, parallel to
     * digests. reporters holds host ids (owned), at most DMF_SCHED_REPORTERS_MAX; a
     * reporter beyond that is recorded as the last entry. */
    uint16_t *digest_by;
    struct dmf_sched_reporter *reporters;
    size_t nreporters;
    bool conflicted;           /* two accepted reporters disagreed on a piece (logged) */
    uint32_t conflicts_logged; /* disagreements logged at warn (DMF_SCHED_CONFLICTS_LOGGED) */
    size_t overruled_from;     /* lowest digest index a seed overruled, SIZE_MAX when none */
    /* Conflicted and being re-verified: a seed fetches the task from the origin, and until
     * it has reported every piece only seeds' digests are handed out. nsuspect counts the
     * live digests of other hosts (withheld), ndead the tombstones. */
    bool reverifying;
    size_t nsuspect, ndead, noverruled;
    struct dmf_scheduler_digest *meta_buf; /* the digests handed out, when some are withheld */
    size_t meta_cap;

    bool seed_failed; /* a seed trigger failed: ask none again for this task */
    size_t npeers;
    TAILQ_HEAD(, dmf_scheduler_peer) peers;
    dmf_strmap_t by_peer_id;    /* peer id -> peer (the key is the peer's peer_id) */
    struct dmf_rank_index rank; /* the peers that can serve, by rank key (rank_index.h) */
    /* Attached RUNNING peers with fewer parents than the candidate limit (hungry), and
     * with fewer than twice the limit (roomy, the others): the ones a new peer and a
     * finished one are offered to in a mesh. */
    TAILQ_HEAD(dmf_sched_room_list, dmf_scheduler_peer) hungry, roomy;
    TAILQ_ENTRY(dmf_sched_task) link;
};

/* child -> parent in a task's parent graph (a DAG unless the scheduler runs a mesh). */
struct dmf_sched_edge {
    struct dmf_scheduler_peer *child, *parent;
    LIST_ENTRY(dmf_sched_edge) in_child;
    LIST_ENTRY(dmf_sched_edge) in_parent;
};

struct dmf_scheduler_peer {
    char key[DMF_SCHED_PEER_KEY_LEN + 1]; /* task id then host id: the peer table's key */
    char *peer_id;
    char *application; /* of its latest register (NULL = none; live view only) */
    struct dmf_sched_task *task;
    struct dmf_sched_host *host;
    enum dmf_scheduler_peer_state state;
    /* The requester whose trigger made this seed fetch, until the task's size is charged to
     * its budget (sink.trigger_sized); owned; NULL when settled or never triggered. */
    char *trigger_for;
    uint64_t bytes_from_parents, bytes_from_origin; /* as last reported (live view only) */
    uint32_t held_base;          /* pieces held at register (a resumed download) */
    dmf_bitmap_t held;           /* pieces reported since */
    bool placeholder;            /* a seed asked to fetch; no stream has taken it over yet */
    bool triggered_seed;         /* this peer exists because the scheduler triggered a seed */
    bool fetched_source;         /* it was sent to (or said it was at) the origin */
    bool source_ordered;         /* the scheduler sent it to the origin: its digests count */
    bool digests_ignored_logged; /* the warning that its digests do not count was given */
    uint64_t trigger_id;
    void *stream;     /* the service's stream, or NULL when detached */
    size_t meta_sent; /* task digests already sent on the stream */
    char *blocked[DMF_SCHED_BLOCKED_MAX];
    size_t nblocked;
    uint64_t mark;     /* traversal epoch */
    uint32_t nparents; /* parents in use (pushed candidates add up) */
    uint32_t nchildren;
    LIST_HEAD(, dmf_sched_edge) parents;
    LIST_HEAD(, dmf_sched_edge) children;
    TAILQ_ENTRY(dmf_scheduler_peer) in_task;
    LIST_ENTRY(dmf_scheduler_peer) in_host;
    uint32_t rank_at; /* its place in the task's rank index + 1; 0 = not in it */
    double rank_key;  /* its key there (dmf_sched_rank_key when it was last updated) */
    uint8_t room;     /* DMF_SCHED_ROOM_*: on which of its task's lists of peers with room */
    TAILQ_ENTRY(dmf_scheduler_peer) in_room;
    /* SUCCEEDED with no stream: on the scheduler's idle list since idle_since, and
     * removed peer_ttl_ms later unless a stream takes it again. */
    bool idle;
    uint64_t idle_since;
    TAILQ_ENTRY(dmf_scheduler_peer) by_idle;
};

/* Reads of the state that both sched.c and sched_rank.c make; none changes anything. */

/* Whether the host is a seed. */
static inline bool dmf_sched_host_is_seed(const struct dmf_sched_host *h)
{
    return h->type == DMF_SCHED_HOST_SEED;
}

/* Whether no peer may be offered on the host: it is leaving, or has `threshold` or more
 * bad-piece reports. */
static inline bool dmf_sched_host_excluded(const struct dmf_sched_host *h, uint32_t threshold)
{
    return h->leaving || h->bad_reports >= threshold;
}

/* How many distinct hosts reported h unreachable or stalled within DMF_SCHED_UNREACHABLE_WIN
 * before now. */
static inline uint32_t dmf_sched_host_unreachable(const struct dmf_sched_host *h, uint64_t now)
{
    uint32_t n = 0;
    for (size_t i = 0; i < DMF_SCHED_UNREACHABLE_RING; i++)
        if (h->unreachable[i].at != 0 && now - h->unreachable[i].at < DMF_SCHED_UNREACHABLE_WIN)
            n++;
    return n;
}

/* A host that this many distinct hosts found unreachable or stalled lately is not offered as
 * a parent until the reports age out (0: never). Seeds are exempt: they are the cluster's
 * own, and a child that finds one stalled goes back to the source by itself. */
static inline bool dmf_sched_host_stalling(const struct dmf_sched_host *h, uint64_t now,
                                           uint32_t threshold)
{
    return threshold != 0 && !dmf_sched_host_is_seed(h) &&
           dmf_sched_host_unreachable(h, now) >= threshold;
}

/* How many pieces the peer holds (the whole task once it SUCCEEDED and the layout is
 * known), at most the task's total and DMF_PIECES_MAX. */
static inline uint32_t dmf_sched_peer_held(const dmf_scheduler_peer_t *p)
{
    const struct dmf_sched_task *t = p->task;
    if (p->state == DMF_PEER_SUCCEEDED && t->content_length >= 0)
        return t->total_pieces;
    uint64_t n = (uint64_t)p->held_base + p->held.count;
    if (t->content_length >= 0 && n > t->total_pieces)
        n = t->total_pieces;
    return (uint32_t)DMF_MIN(n, (uint64_t)DMF_PIECES_MAX);
}

/* Whether the peer reported this host as a parent that failed it. */
static inline bool dmf_sched_peer_blocked(const dmf_scheduler_peer_t *p, const char *host_id)
{
    for (size_t i = 0; i < p->nblocked && i < DMF_SCHED_BLOCKED_MAX; i++)
        if (strcmp(p->blocked[i], host_id) == 0)
            return true;
    return false;
}

/* The peer of the task on the host in the peer table, or NULL (borrowed). */
static inline dmf_scheduler_peer_t *dmf_sched_peer_find(const dmf_strmap_t *peers,
                                                        const char *task_id, const char *host_id)
{
    char key[DMF_SCHED_PEER_KEY_LEN + 1];
    snprintf(key, sizeof(key), "%s%s", task_id, host_id);
    return dmf_strmap_get(peers, key);
}

#endif
