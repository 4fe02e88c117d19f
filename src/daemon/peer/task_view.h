/* A task as the daemon's other wings see it: the request that opens it, the watcher
 * that follows it, the snapshot of what is known, and what a watcher may do with it
 * (start, watch, read its verified bytes). Implemented by task.c; reached by other wings
 * through engine.h, which includes this header. The task's fields stay private. */
#ifndef DMF_TASK_VIEW_H
#define DMF_TASK_VIEW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "common/config.h"
#include "common/bucket.h"
#include "common/metrics.h"
#include "daemon/peer/freshness.h"

struct dmf_origin_policy;

struct dmf_task;

/* A task's state as its watchers see it (the engine's finer states map onto these). */
enum dmf_task_phase {
    DMF_TASK_PHASE_PENDING,   /* known, nothing running */
    DMF_TASK_PHASE_RUNNING,   /* downloading or verifying */
    DMF_TASK_PHASE_SUCCEEDED, /* every piece held and verified */
    DMF_TASK_PHASE_FAILED,
};

/* What a download asks for (all borrowed by dmf_engine_open, which copies). Headers are
 * secrets: never logged, never stored. */
struct dmf_task_request {
    const char *url;
    const struct dmf_strlist *headers; /* "Name: value" */
    const char *tag;
    const char *application; /* checked (application.h); NULL or "" = none */
    const char *digest;      /* "sha256:HEX" or NULL */
    const struct dmf_strlist *filter_query;
    bool disable_back_to_source;
    /* Another host asked for this fetch (DownloadTask on the rpc port): every address the
     * origin fetch connects to is checked against this policy (borrowed: the daemon's,
     * outlives the task). NULL: a local client's own request, no check. */
    const struct dmf_origin_policy *origin_policy;
    /* Bandwidth (throttle.h): this task's own limit in bytes per second (0 = none) and its
     * priority in the host's fair share. The request that starts a download sets both; a
     * request joining a running one may raise the priority. */
    uint64_t rate_limit;
    enum dmf_priority priority;
};
/* The lowest per-task limit a request may ask for (bytes/s). */
#define DMF_TASK_RATE_LIMIT_MIN (64 * 1024)

/* A snapshot of a task. Strings are borrowed from the task: valid until control returns
 * to the event loop. */
struct dmf_task_info {
    const char *id;
    const char *peer_id;
    const char *url;                  /* "" when unknown */
    const char *data_path;            /* "" when the data file is not open */
    uint32_t data_gen;                /* changes when the task starts a fresh data file; 0: none */
    const char *content_digest;       /* "sha256:HEX" once verified against one, else "" */
    const char *error;                /* why it failed, or NULL */
    const char *etag, *last_modified; /* the origin's validators of the pieces, or "" */
    const char *content_type;         /* the origin's Content-Type, or "" when not known */
    bool not_shared;                  /* failed because the content is per request (Vary): the
                                       * client may fetch it from the origin itself */
    enum dmf_task_phase phase;
    int64_t content_length; /* -1 unknown */
    uint32_t piece_length;  /* 0 unknown */
    uint32_t total_pieces;  /* valid when content_length >= 0 */
    uint32_t held_pieces;
    uint64_t completed_length;                    /* bytes of verified pieces */
    uint64_t bytes_from_origin, bytes_from_peers; /* of the current download */
};

/* A local watcher of a task (a DownloadTask call, a proxy connection). on_update gets the
 * pieces verified since the previous call (borrowed) and end = true once the task
 * succeeded or failed (then the subscription is already removed). */
struct dmf_task_sub {
    void (*on_update)(void *arg, struct dmf_task *t, const uint32_t *pieces, size_t n, bool end);
    void *arg;
    struct dmf_task_sub *next;
};

/* Fills *info (see struct dmf_task_info for how long its strings live). */
void dmf_task_info(const struct dmf_task *t, struct dmf_task_info *info);
/* True when the task can be served from the local cache now: every piece held and
 * verified, and no download running or failed (a running one is watched instead: its
 * content digest may not be checked yet). */
bool dmf_task_cached(struct dmf_task *t);
/* A cached task is about to be served whole from this host: it is marked SUCCEEDED if it
 * was not, and its per-download byte counters are zeroed (nothing came from elsewhere).
 * A seed (asked by the scheduler for a task it holds), or a host whose scheduler has not
 * heard of the task since it (re)joined, tells the scheduler it holds it, with the layout
 * and every piece digest, so that the requesters waiting on it can fetch and check. */
void dmf_task_serve_cached(struct dmf_task *t);
/* Starts downloading unless the task is complete or already running. */
void dmf_task_start(struct dmf_task *t);
/* A local client (a get, a proxy connection) holds the task while it uses it: a held task
 * is never evicted, nor freed before the matching dmf_task_put. */
void dmf_task_hold(struct dmf_task *t);
void dmf_task_put(struct dmf_task *t);
void dmf_task_subscribe(struct dmf_task *t, struct dmf_task_sub *sub);
void dmf_task_unsubscribe(struct dmf_task *t, struct dmf_task_sub *sub);

/* True when piece n is held and verified in this session (a piece loaded from the store
 * after a restart counts once it was hashed again). */
bool dmf_task_has_piece(const struct dmf_task *t, uint32_t n);
/* Every held piece's number (held and verified, as dmf_task_has_piece), ascending, into a malloc'd
 * array the caller frees (*out is never NULL); returns how many. */
size_t dmf_task_held_pieces(const struct dmf_task *t, uint32_t **out);
/* A new read-only descriptor of the task's data file (the caller closes it), for a local
 * client: only bytes of pieces it is told are verified are meaningful. -errno when the
 * data file is not open. */
int dmf_task_open_read(struct dmf_task *t);
/* True when the task's data file is still the file st describes (an fstat of a descriptor
 * dmf_task_open_read gave): false once the task replaced it (a new version detached the
 * old one) or cannot open one. */
bool dmf_task_data_is(struct dmf_task *t, const struct stat *st);

/* True when every piece of this URL task is held (verified or not yet) and its last
 * validation is older than --revalidate-after: a get asks the origin first. Never for a
 * digest task, nor while a download runs. */
bool dmf_task_needs_revalidation(struct dmf_task *t);

/* True when the validators etag, last_modified (NULL or "": unknown; from the scheduler's
 * trigger) name another version than the one t's pieces are of (and t is not running). */
bool dmf_task_other_version(struct dmf_task *t, const char *etag, const char *last_modified);
/* Drops t's pieces of another version and pins etag, last_modified for the next download
 * (as a revalidation that found a new version). */
void dmf_task_drop_version(struct dmf_task *t, const char *etag, const char *last_modified);

/* The end of a revalidation: verdict (freshness.h) and a line saying what happened
 * (borrowed, for logs and errors). t has already applied it: a new version dropped the
 * cache (dmf_task_start fetches it), current counts as validated now. */
typedef void (*dmf_revalidated_cb)(void *arg, struct dmf_task *t, enum dmf_fresh_verdict v,
                                   const char *detail);
struct dmf_revalidation;
/* Sends one conditional request for t with the caller's headers (borrowed; secrets, never
 * logged). cb runs once, on a later loop pass, unless cancelled first. */
struct dmf_revalidation *dmf_task_revalidate(struct dmf_task *t, const struct dmf_strlist *headers,
                                             dmf_revalidated_cb cb, void *arg);
/* Cancels a revalidation in flight (cb will not run). NULL is ignored. */
void dmf_revalidation_cancel(struct dmf_revalidation *r);
/* Revalidations by result (result="not_modified", "modified", "error"). */
extern struct dmf_metric dmf_m_reval_current, dmf_m_reval_new, dmf_m_reval_error;

/* Bytes handed out from this host's cache (the local API and the proxy add to it). */
extern struct dmf_metric dmf_m_bytes_local;

#endif
