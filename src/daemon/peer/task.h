/* A task on this daemon: one content, its pieces on disk, and the download that fills
 * them. Every state change goes through task_set_state(), which logs it:
 *
 *   IDLE -> REGISTERING -> P2P ----------> (VERIFYING) -> SUCCEEDED
 *                |          |  \                          ^
 *                |          |   `-> BACK_TO_SOURCE -------'
 *                `----------+-----> BACK_TO_SOURCE
 *   any running state -> FAILED;  FAILED or IDLE -> (a new request) -> REGISTERING ...
 *
 * Without a scheduler the task goes IDLE -> BACK_TO_SOURCE. A task whose pieces are all
 * held is SUCCEEDED at once (served from the local cache). */
#ifndef DMF_TASK_H
#define DMF_TASK_H

#include <stdbool.h>
#include <stdint.h>

#include "common/config.h"
#include "common/digest.h"
#include "common/pieces.h"
#include "common/taskid.h"
#include "daemon/daemon.h"
#include "daemon/peer/engine.h"

enum dmf_task_state {
    DMF_TASK_IDLE,
    DMF_TASK_REGISTERING,
    DMF_TASK_P2P,
    DMF_TASK_BACK_TO_SOURCE,
    DMF_TASK_VERIFYING,
    DMF_TASK_SUCCEEDED,
    DMF_TASK_FAILED,
};

enum dmf_piece_origin { DMF_FROM_ORIGIN, DMF_FROM_SEED, DMF_FROM_PEER };

struct dmf_parent;
struct dmf_source;
struct dmf_sched_peer;
struct verify_job;

struct dmf_task {
    struct dmf_daemon *d;
    struct dmf_task *next;
    char id[DMF_TASK_ID_LEN + 1];
    char peer_id[160];
    enum dmf_task_state state;

    /* The request that started the current download (headers are secrets: never logged,
     * never stored). */
    char *url;
    struct dmf_strlist headers;
    char *tag;
    char expected_digest[DMF_DIGEST_STR_LEN + 1]; /* "" when not given */
    struct dmf_strlist filter_query;
    bool disable_back_to_source;

    /* Layout and pieces. */
    int64_t content_length; /* -1 unknown */
    uint32_t piece_length;  /* 0 unknown */
    uint32_t total_pieces;  /* valid when content_length >= 0 */
    dmf_bitmap_t have;      /* verified and stored */
    dmf_bitmap_t inflight;  /* being fetched (from a parent or the origin) */
    dmf_bitmap_t digest_known;
    struct dmf_seed_ledger ledger; /* a seed's uploads of this task (piece_server.h) */
    uint8_t (*digests)[DMF_SHA256_LEN];
    uint32_t ndigests;
    int fd;
    char *data_path;
    char content_digest[DMF_DIGEST_STR_LEN + 1];
    char *error; /* why it failed */

    struct dmf_task_sub *subs;
    uint32_t *fresh; /* pieces verified since subscribers were last told */
    size_t nfresh, fresh_cap;

    struct dmf_sched_peer *sched_peer; /* the AnnouncePeer stream, when registered */
    struct dmf_parent *parents;
    struct dmf_source *source;
    struct event *kick;        /* deferred: dispatch work and tell subscribers */
    struct event *stall;       /* no usable parent for a while: go to the origin */
    struct verify_job *verify; /* whole-content digest being computed on a thread */

    uint64_t bytes_origin, bytes_seed, bytes_peer;
    uint64_t started_ms;
};

/* Finds a task in memory or in the store (then loads it, IDLE). NULL when unknown. */
struct dmf_task *dmf_task_find(struct dmf_daemon *d, const char *id);
/* Finds or creates the task for a request and records what the request asked for. */
struct dmf_task *dmf_task_open(struct dmf_daemon *d, const char *id,
                               const struct dmf_task_request *req);
/* Opens the task's data file (creating it) if it is not open: 0 or -errno. */
int dmf_task_ensure_data(struct dmf_task *t);
/* True when every piece is held (and the content digest checked, if one was asked). */
bool dmf_task_complete(const struct dmf_task *t);
/* Bytes held (verified pieces). */
uint64_t dmf_task_completed_length(const struct dmf_task *t);

void dmf_task_set_state(struct dmf_task *t, enum dmf_task_state s);
const char *dmf_task_state_name(enum dmf_task_state s);

/* Learns the layout (from the scheduler or the origin). A layout that contradicts one
 * already known fails the task. Returns 0 or -EINVAL. */
int dmf_task_set_layout(struct dmf_task *t, int64_t content_length, uint32_t piece_length);
/* A piece digest from the scheduler (computed by whoever fetched it from the origin). */
void dmf_task_set_digest(struct dmf_task *t, uint32_t n, const uint8_t digest[DMF_SHA256_LEN]);

/* Piece n's bytes arrived; buf (malloc'd) is taken over. They are hashed and written on a
 * worker thread, then recorded, announced to children, the scheduler and subscribers.
 * From a parent (parent_host_id) they must match the known digest, else the piece is
 * dropped and that parent excluded (dmf_parents_bad_piece); from the origin the digest is
 * computed there and becomes the reference. n stays in t->inflight until then. Returns 0
 * when the piece was queued (or already held), or a negative code (buf freed). */
int dmf_task_piece_submit(struct dmf_task *t, uint32_t n, uint8_t *buf, size_t len,
                          enum dmf_piece_origin from, const char *parent_host_id);
/* True when enough pieces wait for the workers: no new transfer should start. */
bool dmf_task_workers_busy(const struct dmf_task *t);

#define DMF_PIECE_JOBS_MAX 32 /* pieces waiting to be checked and written, per daemon */

/* Work to do on the next loop pass (dispatch requests, tell subscribers, check done). */
void dmf_task_kick(struct dmf_task *t);
/* Leaves P2P for the origin (or fails when back-to-source is forbidden). */
void dmf_task_back_to_source(struct dmf_task *t, const char *why);
void dmf_task_fail(struct dmf_task *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Frees every task (daemon shutdown). */
void dmf_tasks_free_all(struct dmf_daemon *d);

/* The piece server's view of a task (dmf_piece_lookup_cb). */
int dmf_task_piece_lookup(void *daemon, const char *task_id, struct dmf_piece_view *view);

#endif
