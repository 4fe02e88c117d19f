/* A task on this daemon: one content, its pieces on disk, and the download that fills
 * them. The task owns its state (task_fsm.h decides the transitions; task.c applies them
 * and logs each one), its piece book, and the parts that fetch: parents, the AnnouncePeer
 * stream and back-to-source, which report back through their sinks and never write the
 * task's fields. Engine-private: other wings see a task through engine.h (task_view.h) only. */
#ifndef DMF_TASK_H
#define DMF_TASK_H

#include <stdbool.h>
#include <stdint.h>

#include "common/config.h"
#include "common/digest.h"
#include "common/piece_token.h"
#include "common/pieces.h"
#include "common/taskid.h"
#include "daemon/daemon.h"
#include "daemon/peer/cache_check.h"
#include "daemon/peer/data_file.h"
#include "daemon/peer/piece_book.h"
#include "daemon/peer/task_fsm.h"
#include "daemon/peer/task_view.h"
#include "daemon/peer/watchdog.h"

/* The engine's metrics (defined in task.c; dmf_m_bytes_local is in task_view.h). */
extern struct dmf_metric dmf_m_bytes_origin, dmf_m_bytes_seed, dmf_m_bytes_peer,
    dmf_m_verify_failures, dmf_m_tasks_succeeded, dmf_m_tasks_failed;

#define DMF_PIECE_JOBS_MAX 32 /* pieces waiting to be checked and written, per daemon */

struct dmf_parents;
struct dmf_source;
struct dmf_announce_client;
struct dmf_announce_peer;
struct verify_job;

struct dmf_task {
    struct dmf_daemon *d;
    struct dmf_announce_client *announcer; /* NULL without a scheduler */
    struct dmf_task *next;                 /* in the engine's list (engine.c) */
    char id[DMF_TASK_ID_LEN + 1];
    char peer_id[160];
    enum dmf_task_state state; /* written by task_set_state() only */

    /* The request that started the current download (headers are secrets: never logged,
     * never stored). */
    char *url;       /* as asked: may carry secret query parameters (memory only) */
    char *shown_url; /* url redacted (url_secrets.h): what is stored, shown and returned */
    struct dmf_strlist headers;
    char *tag;
    char *application; /* of the latest request (NULL = none): told to the scheduler */
    char expected_digest[DMF_DIGEST_STR_LEN + 1]; /* "" when not given */
    struct dmf_strlist filter_query;
    bool disable_back_to_source;
    const struct dmf_origin_policy *origin_policy; /* borrowed; NULL = none (task_view.h) */
    struct dmf_flow *flow; /* its share of the host's bandwidth (throttle.h); NULL until used */

    struct dmf_piece_book book;
    struct dmf_seed_ledger ledger; /* a seed's uploads of this task (piece_server.h) */
    struct dmf_data_file file;     /* its data file, opened on demand (data_file.h) */
    struct dmf_cache_state cache;  /* which held pieces are verified now (task_cache.h) */
    unsigned users;                /* local clients holding it (dmf_task_hold) */
    int64_t accessed_ms;           /* last use, wall-clock ms (a get, an upload, a download) */
    uint64_t uploaded_ms;          /* when a child last asked for a piece (monotonic) */
    int64_t accessed_saved_ms;     /* the access time last written to the store */
    char content_digest[DMF_DIGEST_STR_LEN + 1];
    /* The origin's validators: of the version this task's pieces are (pinned: from the
     * scheduler or this host's fetch), and as this host's own fetch saw them (reported). */
    char *etag, *last_modified;
    char *source_etag, *source_last_modified;
    char *content_type;   /* the origin's, when this host fetched from it (or NULL) */
    int64_t validated_at; /* when this version was last known current (Unix s; 0: never) */
    bool version_news;    /* etag/last_modified come from a conditional request that found a
                           * new version: the next register tells the scheduler */
    struct dmf_revalidation *revals; /* conditional requests in flight (revalidate.c) */
    char *error;                     /* why it failed */
    bool failed_for_good;    /* ... for a reason anyone asking would meet (a 4xx, a digest) */
    uint32_t origin_status;  /* the origin's HTTP status when that is why, else 0 */
    bool drop_on_failure;    /* the origin's content changed: no piece of it may be kept */
    bool not_shared;         /* ... or it varies on a header of this request (Vary) */
    bool release_on_failure; /* the disk is full: give the failed task's space back */

    struct dmf_task_sub *subs;
    uint32_t *fresh; /* pieces verified since subscribers were last told */
    size_t nfresh, fresh_cap;

    struct dmf_announce_peer *announce; /* the AnnouncePeer stream, when registered */
    struct dmf_parents *parents;        /* while P2P */
    struct dmf_source *source;          /* while BACK_TO_SOURCE */
    struct event *kick;                 /* deferred: the KICK pass */
    struct event *stall;                /* the progress watchdog's timer (watchdog.h) */
    struct event *reconnect;            /* the backoff before reopening a lost stream */
    struct event *release;              /* gives a failed task's blocks back (disk full) */
    struct dmf_watchdog watchdog;
    unsigned reconnects;       /* stream losses in a row (the backoff's attempt) */
    bool held_announced;       /* a held task told the scheduler since it joined */
    struct verify_job *verify; /* whole-content digest being computed on the worker pool */

    struct dmf_transfer_bytes bytes;
    uint64_t started_ms;

    /* The scheduler's piece-fetch token for this task (a secret: never logged), renewed in
     * place; "" until one comes. The parents read it at each request. */
    char piece_token[DMF_PIECE_TOKEN_MAX + 1];
};

/* A new task (IDLE, nothing known). announcer may be NULL (no scheduler). */
struct dmf_task *dmf_task_new(struct dmf_daemon *d, struct dmf_announce_client *announcer,
                              const char *id);
/* The task as the store has it (IDLE, or SUCCEEDED when every piece is held); NULL when
 * the store does not know it. */
struct dmf_task *dmf_task_load(struct dmf_daemon *d, struct dmf_announce_client *announcer,
                               const char *id);
/* Records what a request asks for, unless a download is running (it keeps the request
 * that started it). */
void dmf_task_set_request(struct dmf_task *t, const struct dmf_task_request *req);
/* Opens the task's data file (creating it) if it is not open: 0 or -errno. */
int dmf_task_ensure_data(struct dmf_task *t);
/* The open descriptor of the task's data file (opened first if it was closed), borrowed:
 * valid until control returns to the loop or another data file is opened. -errno. */
int dmf_task_data_fd(struct dmf_task *t);
/* Piece n was verified (again): watchers are told with the next update. */
void dmf_task_note_verified(struct dmf_task *t, uint32_t n);
/* The scheduler may have lost what it knew of this task (it restarted, or this host
 * rejoined it): a running download whose stream is gone reconnects now, a held task tells
 * it holds every piece (with the digests). */
void dmf_task_rejoin(struct dmf_task *t);
/* A failed task whose disk filled up gives its blocks back now rather than in a moment
 * (another download is about to need them). */
void dmf_task_release_now(struct dmf_task *t);
/* The origin confirmed the cached version (a 304, or the same validators): it counts as
 * validated now. */
void dmf_task_still_current(struct dmf_task *t);
/* The origin has another version (validators etag, last_modified: either may be NULL) or
 * no longer has the content: the cached pieces are dropped (a user's hard link keeps the
 * old file), the layout is forgotten and the new validators are pinned for the next
 * download, which tells the scheduler. Ignored while a download runs. */
void dmf_task_new_version(struct dmf_task *t, const char *etag, const char *last_modified);
/* True while the task must not be evicted: a download or a check runs, a local client
 * holds it (dmf_task_hold), a piece is being written, or one is being uploaded. */
bool dmf_task_in_use(const struct dmf_task *t);
/* The task is about to be evicted: children watching it stop counting on this host, and
 * the scheduler stops offering it as a parent of the task (LeavePeer). */
void dmf_task_leave(struct dmf_task *t);
/* The piece server's view of the task. */
void dmf_task_piece_view(struct dmf_task *t, struct dmf_piece_view *view);
/* Something outside the task changed (piece memory was freed): it makes a dispatch pass. */
void dmf_task_kick(struct dmf_task *t);
/* Frees the task; watchers first get the end with reason why (daemon shutdown). */
void dmf_task_free(struct dmf_task *t, const char *why);
/* Cancels the task's long jobs on the worker pool (a whole-content verification): the
 * daemon stops, and dmf_workq_free must not wait for gigabytes to be hashed. The task is
 * left as it was; free it next. */
void dmf_task_cancel_long_work(struct dmf_task *t);

#endif
