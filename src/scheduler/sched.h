/* The scheduler's state and decisions: hosts, tasks, peers and the parent graph, kept in
 * memory, with no gRPC in sight (service.c maps messages to these calls and the sink's
 * callbacks back to messages). Time comes from an injected clock so tests can move it.
 * See docs/internals/SCHEDULER.md for the rules and the scoring formula.
 *
 * Not thread-safe: one thread (the scheduler's loop) uses a dmf_scheduler_t. Strings passed in
 * are borrowed for the call and copied when kept; strings passed out (to the sink, in
 * stats) are borrowed and valid until the next call that changes the state. */
#ifndef DMF_SCHED_H
#define DMF_SCHED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/config.h"
#include "common/digest.h"

/* Bounds on what the network may make us keep. */
#define DMF_SCHED_ID_MAX             128 /* host and peer ids, idc */
#define DMF_SCHED_HOSTNAME_MAX       255
#define DMF_SCHED_LOCATION_MAX       1024
#define DMF_SCHED_URL_MAX            (8u << 10)
#define DMF_SCHED_HEADERS_MAX        64
#define DMF_SCHED_HEADER_MAX         (8u << 10) /* name + value */
#define DMF_SCHED_TAG_MAX            1024
#define DMF_SCHED_FILTERS_MAX        64
#define DMF_SCHED_FILTER_MAX         256
#define DMF_SCHED_REASON_MAX         1024
#define DMF_SCHED_CANDIDATES_MAX     32
#define DMF_SCHED_CANDIDATES_DEFAULT 16
#define DMF_SCHED_UNREACHABLE_WIN    60000  /* ms: how long an unreachable report counts */
#define DMF_SCHED_BAD_FORGET_MS      600000 /* ms after the last bad-piece report: forgiven */

/* Error codes returned by the calls below (negative), and what the service answers:
 *   -EINVAL   INVALID_ARGUMENT     malformed or out-of-bounds input
 *   -ESRCH    FAILED_PRECONDITION  the host has not announced / the peer is unknown
 *   -ENOENT   NOT_FOUND            no such task (stat) or peer (leave)
 *   -EEXIST   ALREADY_EXISTS       the peer id is taken by another host in the task
 *   -ENOSPC   RESOURCE_EXHAUSTED   a table is full
 * Every error comes with a one-line reason in the caller's err buffer. */

typedef struct dmf_scheduler dmf_scheduler_t;
typedef struct dmf_scheduler_peer dmf_scheduler_peer_t;

enum dmf_scheduler_host_type { DMF_SCHED_HOST_NORMAL = 0, DMF_SCHED_HOST_SEED = 1 };

/* Values match PeerState in scheduler.proto. */
enum dmf_scheduler_peer_state {
    DMF_PEER_PENDING = 0,
    DMF_PEER_RUNNING = 1,
    DMF_PEER_BACK_TO_SOURCE = 2,
    DMF_PEER_SUCCEEDED = 3,
    DMF_PEER_FAILED = 4,
};

/* Values match ParentFailureReason in scheduler.proto. */
enum dmf_scheduler_parent_failure {
    DMF_PARENT_UNREACHABLE = 0,
    DMF_PARENT_BAD_PIECE = 1,
};

struct dmf_scheduler_header {
    const char *name;
    const char *value; /* a secret as far as logs go */
};

struct dmf_scheduler_digest {
    uint32_t number;
    uint8_t sha256[DMF_SHA256_LEN];
};

/* What a task's content is known to be (TaskMeta). */
struct dmf_scheduler_meta {
    const char *task_id;
    int64_t content_length;                     /* -1 unknown */
    uint32_t piece_length;                      /* 0 unknown */
    uint32_t total_pieces;                      /* valid when content_length >= 0 */
    const struct dmf_scheduler_digest *digests; /* new since the last meta on this stream */
    size_t ndigests;
    const char *etag, *last_modified; /* the origin's validators of that content, or "" */
    const char *content_type;         /* the origin's Content-Type (a digest source's), or "" */
};

/* One candidate parent (Parent). */
struct dmf_scheduler_parent {
    const char *peer_id;
    const char *host_id;
    const char *ip;
    uint32_t piece_port;
    bool is_seed;
};

/* Everything the service needs to ask a seed host to fetch a task (DownloadTaskRequest),
 * and the trigger id to quote back in dmf_scheduler_seed_result(). */
struct dmf_scheduler_seed_trigger {
    uint64_t trigger_id;
    const char *task_id;
    const char *host_id;
    const char *ip;
    uint32_t rpc_port;
    const char *url;
    const struct dmf_scheduler_header *headers;
    size_t nheaders;
    const char *tag;
    const char *digest;
    const char *const *filter_query;
    size_t nfilter_query;
    const char *etag, *last_modified; /* the version pinned for the task, or NULL */
    const char *requester_host_id;    /* the host whose peer needed the seed */
};

/* Where decisions go. `stream` is the pointer the service attached to the peer at
 * register. Every callback runs synchronously inside the dmf_scheduler_* call that made the
 * decision and must not call back into the scheduler. */
struct dmf_scheduler_sink {
    /* A (new) candidate set for the peer, with what is known of the task. */
    void (*candidates)(void *arg, void *stream, const struct dmf_scheduler_parent *parents,
                       size_t nparents, bool seed_triggered, const struct dmf_scheduler_meta *meta);
    /* The peer is to fetch from the origin. */
    void (*back_to_source)(void *arg, void *stream, const char *reason);
    /* New digests or content length for a peer that is downloading. */
    void (*task_meta)(void *arg, void *stream, const struct dmf_scheduler_meta *meta);
    /* Ask a seed host to fetch the task (DownloadTask on its Daemon service). */
    void (*trigger_seed)(void *arg, const struct dmf_scheduler_seed_trigger *t);
    /* The peer attached to stream was removed by something other than its stream
     * (LeavePeer, LeaveHost, host expiry, a newer register): end the stream. */
    void (*peer_gone)(void *arg, void *stream, const char *reason);
    /* The task cannot be fetched (the origin's answer, for everyone): the peer is to fail
     * with reason. origin_status is the origin's HTTP status, or 0. */
    void (*task_failed)(void *arg, void *stream, const char *reason, uint32_t origin_status);
    /* The origin's content changed under the task: the peer is to fail with reason and drop
     * what it holds of the old version (TaskFailed.content_changed). May be NULL. */
    void (*task_changed)(void *arg, void *stream, const char *reason);
    /* A host was removed (LeaveHost or expiry). May be NULL. */
    void (*host_gone)(void *arg, const char *host_id);
    /* May a peer of requester_host_id make seed_host_id fetch a task now (its budget of
     * triggered tasks)? false: the peer goes back to the source instead. NULL: always. */
    bool (*may_trigger)(void *arg, const char *requester_host_id, const char *seed_host_id);
    /* A trigger may_trigger admitted learnt its task's size in bytes, or ended before it was
     * known (bytes < 0): called once per admitted trigger. NULL: not told. */
    void (*trigger_sized)(void *arg, const char *requester_host_id, int64_t bytes);
};

struct dmf_scheduler_config {
    uint32_t candidate_limit;      /* 1..DMF_SCHED_CANDIDATES_MAX; 0 = DEFAULT */
    uint64_t host_timeout_ms;      /* 0 = 10 s */
    uint32_t bad_parent_threshold; /* 0 = 2 */
    /* Distinct hosts that must find a host unreachable or stalled within a minute before it
     * is offered to nobody (until the reports age out); 0 = never excluded for that. */
    uint32_t unreachable_threshold;
    /* false: the parent graph of a task is a DAG (Dragonfly's rule: nobody is offered one
     * of its descendants), seeds are parents of last resort. true ("mesh"): peers of a
     * task may exchange pieces both ways (each piece still travels a tree: a peer fetches
     * a piece once, from a holder that verified it), and a newly registered peer is
     * offered to running peers that still have room, so that every uplink works until the
     * end. Either way seeds are parents of last resort. */
    bool mesh;
    /* How long a task whose origin fetch failed for good is answered with that failure
     * (negcache.h); 10 s unless negative_ttl_set (then 0 = never). */
    uint64_t negative_ttl_ms;
    bool negative_ttl_set;
    /* Who may report piece digests (provenance.h): seeds and peers sent to the origin
     * (default), or seed hosts only. */
    int digest_sources; /* enum dmf_digest_sources */
    /* Query parameters hidden in what StatTask returns, besides each request's filtered
     * ones (url_secrets.h); borrowed for the scheduler's life, may be NULL. */
    const struct dmf_strlist *secret_query;
    size_t max_hosts; /* 0 = 100,000 */
    size_t max_tasks; /* 0 = 100,000 */
    size_t max_peers; /* 0 = 1,000,000 */
    /* Peers (tasks) one host may have; more registers are refused with -ENOSPC. 0 = 10,000. */
    size_t max_peers_per_host;
    /* A SUCCEEDED peer with no stream is forgotten this long after its stream closed, so
     * finished tasks do not pile up; 1 h unless peer_ttl_set (then 0 = never). */
    uint64_t peer_ttl_ms;
    bool peer_ttl_set;
    /* Monotonic milliseconds; NULL = dmf_now_ms. */
    uint64_t (*now)(void *arg);
    void *now_arg;
    /* Tests: every choice made through an index (the rank index, the hungry lists) is also
     * made by a walk over every peer of the task, and a difference aborts. */
    bool check_indexes;
};

/* Creates the scheduler; cfg and sink are copied. Never NULL. */
dmf_scheduler_t *dmf_scheduler_new(const struct dmf_scheduler_config *cfg,
                                   const struct dmf_scheduler_sink *sink, void *sink_arg);
/* Frees every host, task and peer (no sink callbacks). */
void dmf_scheduler_free(dmf_scheduler_t *s);

/* ---- hosts ---- */

struct dmf_scheduler_host_info {
    const char *id;
    const char *hostname;
    const char *ip; /* IPv4 or IPv6 literal */
    uint32_t piece_port;
    uint32_t rpc_port; /* required for a seed */
    int type;          /* enum dmf_scheduler_host_type */
    const char *idc;
    const char *location; /* "region|zone|rack" */
    uint64_t upload_capacity;
    uint64_t upload_rate;
    uint32_t active_uploads;
};

/* Adds or refreshes a host (AnnounceHost). 0, -EINVAL or -ENOSPC. */
int dmf_scheduler_announce_host(dmf_scheduler_t *s, const struct dmf_scheduler_host_info *h,
                                char *err, size_t errlen);
/* Removes a host and its peers; their children are rescheduled. 0 or -ENOENT. */
int dmf_scheduler_leave_host(dmf_scheduler_t *s, const char *host_id, char *err, size_t errlen);
/* Removes every host that has not announced within host_timeout; returns how many. */
size_t dmf_scheduler_expire_hosts(dmf_scheduler_t *s);
/* Removes every SUCCEEDED peer whose stream closed peer_ttl_ms ago or earlier (a task left
 * with no peer is forgotten); returns how many. */
size_t dmf_scheduler_expire_peers(dmf_scheduler_t *s);

/* ---- peers ---- */

struct dmf_scheduler_register {
    const char *task_id;
    const char *peer_id;
    const char *host_id;
    const char *url;
    const struct dmf_scheduler_header *headers;
    size_t nheaders;
    const char *tag;
    const char *application; /* checked (application.h); NULL or "" = none */
    const char *digest;
    const char *const *filter_query;
    size_t nfilter_query;
    uint32_t held_pieces;
    /* Re-registrations: the peer holds every piece (it becomes SUCCEEDED with the finished
     * that follows), or fetches from the origin already. Either way no parent is chosen,
     * no seed triggered, and the task's request is kept when one is known. */
    bool holds_task;
    bool from_source;
    /* Registers again because nothing progressed with its parents: it goes back to the
     * source unless another peer of the task does already (or a seed was triggered). */
    bool stalled;
    /* The origin's validators as the registrant's own conditional request just saw them
     * ("" or NULL: none): another version than the task's makes the scheduler forget the
     * old one first (dmf_scheduler_content_changed). */
    const char *etag, *last_modified;
};

/* Registers the peer of an AnnouncePeer stream and decides where it downloads from
 * (candidates, a triggered seed, or back-to-source; see the sink). `stream` is attached to
 * the peer and passed back in sink callbacks. *out is the peer's handle, valid until the
 * peer is removed (the sink's peer_gone, or dmf_scheduler_stream_closed/failed). */
int dmf_scheduler_register(dmf_scheduler_t *s, const struct dmf_scheduler_register *r, void *stream,
                           dmf_scheduler_peer_t **out, char *err, size_t errlen);

struct dmf_scheduler_progress {
    const uint32_t *pieces;
    size_t npieces;
    const struct dmf_scheduler_digest *digests;
    size_t ndigests;
    int64_t content_length;           /* -1 unknown */
    uint32_t piece_length;            /* 0 unknown */
    const char *etag, *last_modified; /* the origin's validators (a fetcher's), or NULL/"" */
    /* The peer's bytes so far in this download, by source (cumulative; shown in the live
     * view, never trusted for a decision). */
    uint64_t bytes_from_parents, bytes_from_origin;
    const char *content_type; /* the origin's, or NULL/"" (else dmf_content_type_valid) */
};

/* Records pieces held by the peer, its digests and the task's layout; new digests or
 * layout are pushed (task_meta) to every other attached peer. Digests and validators count
 * only from a peer that fetched from the origin on the scheduler's order (provenance.h):
 * others are ignored. Two accepted reporters that disagree mark the task conflicted
 * (logged with both): a seed's digest prevails over another fetcher's, and peers that were
 * given the other one fail the task (task_failed); between equals the whole-content digest
 * decides when known, else a seed re-verifies the task (one fetching already, or one
 * triggered now: only seeds' digests are handed out until it reported every piece, peers
 * given another host's fail), else the task fails for good. 0, -EINVAL or -ESTALE
 * (validators of another version than a digest source pinned); nothing is changed then. */
int dmf_scheduler_progress(dmf_scheduler_t *s, dmf_scheduler_peer_t *p,
                           const struct dmf_scheduler_progress *pr, char *err, size_t errlen);
/* The peer holds the whole task (SUCCEEDED); it stays a parent candidate until its host
 * leaves. 0 or -EINVAL. */
int dmf_scheduler_finished(dmf_scheduler_t *s, dmf_scheduler_peer_t *p, int64_t content_length,
                           uint32_t total_pieces, char *err, size_t errlen);
/* The peer's download failed: it is removed (p is invalid afterwards) and its children are
 * rescheduled. */
void dmf_scheduler_failed(dmf_scheduler_t *s, dmf_scheduler_peer_t *p, const char *reason);
/* The peer's download failed for a reason that holds for anyone (the origin answered a
 * 4xx, or the content does not match its digest): remembered for negative_ttl_ms, every
 * other attached peer of the task still downloading is told (task_failed), and so is
 * every registrant meanwhile; then as dmf_scheduler_failed. */
void dmf_scheduler_failed_for_good(dmf_scheduler_t *s, dmf_scheduler_peer_t *p,
                                   uint32_t origin_status, const char *reason);
/* The peer's download failed because the origin's content changed under it (believed only
 * from a digest source, provenance.h; anyone else's is dmf_scheduler_failed): the task's
 * version is forgotten (validators, digests, layout): every other peer of the task is
 * removed, those still downloading told first (task_changed) so that they drop what they
 * hold; then as dmf_scheduler_failed. The next registrant starts the task afresh. */
void dmf_scheduler_content_changed(dmf_scheduler_t *s, dmf_scheduler_peer_t *p, const char *reason);
/* The peer's stream ended: a SUCCEEDED peer stays (detached), any other is removed (p is
 * then invalid) and its children rescheduled. No peer_gone for this stream. */
void dmf_scheduler_stream_closed(dmf_scheduler_t *s, dmf_scheduler_peer_t *p);
/* The peer reports that a parent failed it: counted against the parent host (BAD_PIECE
 * towards permanent exclusion, UNREACHABLE as a recent failure) and the peer gets a new
 * candidate set without that parent. 0 or -EINVAL. */
int dmf_scheduler_parent_failure(dmf_scheduler_t *s, dmf_scheduler_peer_t *p,
                                 const char *parent_peer_id, const char *parent_host_id, int reason,
                                 char *err, size_t errlen);
/* LeavePeer: removes the peer whatever its state. only_host (NULL = any): the caller's
 * authenticated host ID; a peer of another host is not removed (-EPERM). 0, -EINVAL,
 * -ENOENT or -EPERM. */
int dmf_scheduler_leave_peer(dmf_scheduler_t *s, const char *task_id, const char *peer_id,
                             const char *only_host, char *err, size_t errlen);
/* The DownloadTask call of trigger `trigger_id` ended. On error the seed's placeholder peer
 * fails (its children are rescheduled, and the task asks no seed again); on success a
 * placeholder that no seed stream took over is marked SUCCEEDED. */
void dmf_scheduler_seed_result(dmf_scheduler_t *s, const char *task_id, const char *host_id,
                               uint64_t trigger_id, bool ok, const char *reason);

/* Accessors of a peer handle (borrowed strings). */
const char *dmf_scheduler_peer_id(const dmf_scheduler_peer_t *p);
const char *dmf_scheduler_peer_task_id(const dmf_scheduler_peer_t *p);
const char *dmf_scheduler_peer_host_id(const dmf_scheduler_peer_t *p);
enum dmf_scheduler_peer_state dmf_scheduler_peer_state(const dmf_scheduler_peer_t *p);

/* ---- queries ---- */

struct dmf_scheduler_peer_stat {
    const char *peer_id;
    const char *host_id;
    enum dmf_scheduler_peer_state state;
    uint32_t finished_pieces;
};

struct dmf_scheduler_task_stat {
    struct dmf_scheduler_meta meta;        /* without digests */
    const char *url;                       /* redacted: secret query parameters hidden */
    struct dmf_scheduler_peer_stat *peers; /* owned: free with dmf_scheduler_task_stat_free */
    size_t npeers;
};

/* StatTask. 0 with *st filled, -EINVAL (malformed id) or -ENOENT. */
int dmf_scheduler_stat_task(dmf_scheduler_t *s, const char *task_id,
                            struct dmf_scheduler_task_stat *st, char *err, size_t errlen);
void dmf_scheduler_task_stat_free(struct dmf_scheduler_task_stat *st);

struct dmf_scheduler_counts {
    size_t hosts, tasks, peers;
};
void dmf_scheduler_counts(const dmf_scheduler_t *s, struct dmf_scheduler_counts *c);

/* The host_timeout in effect (AnnounceHostResponse.host_timeout_ms). */
uint64_t dmf_scheduler_host_timeout_ms(const dmf_scheduler_t *s);
/* Changes the most parents a peer is given (the manager's dynamic config); out-of-range
 * values (0 included) leave it as it is. Returns the limit in effect. */
uint32_t dmf_scheduler_set_candidate_limit(dmf_scheduler_t *s, uint32_t n);
/* Calls fn for every host, the most recently announced last, while fn returns true (the
 * live view, live_view.h; struct dmf_sched_host is in sched_state.h). */
struct dmf_sched_host;
void dmf_scheduler_each_host(const dmf_scheduler_t *s,
                             bool (*fn)(void *arg, const struct dmf_sched_host *h), void *arg);

const char *dmf_scheduler_peer_state_name(enum dmf_scheduler_peer_state st);

#endif
