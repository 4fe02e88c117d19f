/* The daemon's side of the scheduler: AnnounceHost every announce_interval (the client),
 * and one AnnouncePeer stream per download (register, batched progress, parent failures,
 * finished/failed). What the scheduler answers is decoded and checked here and reported
 * to the task through the sink; the task decides what it means for its state. */
#ifndef DMF_ANNOUNCE_H
#define DMF_ANNOUNCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/config.h"
#include "common/digest.h"
#include "daemon/peer/parent.h"
#include "daemon/peer/piece_book.h"

struct dmf_daemon;
struct dmf_announce_client;
struct dmf_announce_peer;

/* ---- the host: AnnounceHost, LeaveHost ---- */

/* Called when the scheduler is back after announces failed, or is a new process (its
 * scheduler_id changed, or the first announce): whatever it knew of this host's tasks may
 * be gone, so the engine registers its running and held tasks again. */
typedef void (*dmf_announce_rejoin_cb)(void *arg);

/* The end of a join or a leave (below): announced tells whether some scheduler has this
 * host (after a leave: had it). Runs from the daemon's loop, once. */
typedef void (*dmf_announce_done_cb)(void *arg, bool announced);

/* Makes the client of daemon d and starts announcing every d->cfg.announce_interval;
 * rejoin (may be NULL) as above. */
struct dmf_announce_client *dmf_announce_client_new(struct dmf_daemon *d,
                                                    dmf_announce_rejoin_cb rejoin, void *arg);
/* Announces now and calls done (may be NULL) once every scheduler answered or timeout_ms
 * passed, whichever is first — used once at startup, so that the daemon starts serving
 * when the first download can find the host known. Never runs the loop itself; a second
 * call is ignored. */
void dmf_announce_client_join(struct dmf_announce_client *c, uint64_t timeout_ms,
                              dmf_announce_done_cb done, void *arg);
/* Says LeavePeer for the task's peer on this host (best effort, not waited for): the
 * scheduler stops offering this host as a parent of the task (it was evicted). NULL c is
 * ignored. */
void dmf_announce_leave_peer(struct dmf_announce_client *c, const char *task_id,
                             const char *peer_id);
/* The shutdown sequence's step: stops announcing, drops the streams that linger, says
 * LeaveHost to every scheduler that has this host and calls done (may be NULL) once each
 * answered or 1.5 s passed (at once, from the loop, when none has it). Never runs the loop
 * itself. */
void dmf_announce_client_leave(struct dmf_announce_client *c, dmf_announce_done_cb done, void *arg);
/* Frees the client without a word more (after dmf_announce_client_leave, or on a failed
 * start). An answer still due keeps the memory until it arrives (dmf_rpc_free returns
 * every one); no callback runs after this. NULL is ignored. */
void dmf_announce_client_free(struct dmf_announce_client *c);
/* Moves to the schedulers of d->cfg.scheduler (the manager gave another list): every
 * connection is made again and announced at once; streams open on an old one stay there
 * until they end, then reconnect to the new list. */
void dmf_announce_client_retarget(struct dmf_announce_client *c);

/* ---- a download: AnnouncePeer ---- */

struct dmf_announce_digest {
    uint32_t number;
    const uint8_t *sha256; /* DMF_SHA256_LEN bytes */
};

/* What the scheduler says of the task's content (borrowed for the callback). */
struct dmf_announce_meta {
    bool has_layout;        /* content_length and piece_length are meant to be applied */
    int64_t content_length; /* -1 unknown */
    uint32_t piece_length;
    const struct dmf_announce_digest *digests; /* only well-formed ones */
    size_t ndigests;
    const char *etag, *last_modified; /* the origin's validators of that content, or "" */
    const char *content_type;         /* the origin's (dmf_content_type_valid), or "" */
};

/* How a stream reports to its task (everything borrowed for the callback). */
struct dmf_announce_sink {
    /* Candidate parents (only well-formed ones, never this host), with the task's meta. */
    void (*candidates)(void *arg, const struct dmf_parent_info *parents, size_t n,
                       bool seed_triggered, const struct dmf_announce_meta *meta);
    void (*meta)(void *arg, const struct dmf_announce_meta *meta);
    /* A piece-fetch token for the task (borrowed for the call; a secret: never log it).
     * It comes before the candidates it came with, or alone (a renewal: a Candidates
     * without parents). NULL hook: tokens are ignored. */
    void (*piece_token)(void *arg, const char *token);
    /* The scheduler says: fetch it from the origin. */
    void (*back_to_source)(void *arg, const char *reason);
    /* The scheduler says: the task failed for good elsewhere (origin_status: the origin's
     * HTTP status, or 0); do not try it again. content_changed: the origin has another
     * version than the one being fetched: drop what is held. */
    void (*failed)(void *arg, const char *reason, uint32_t origin_status, bool content_changed);
    /* The stream ended (details may be ""): it is freed after this call, forget it. */
    void (*lost)(void *arg, const char *details);
};

/* What a download registers with (borrowed for dmf_announce_open). */
struct dmf_announce_register {
    const char *url;
    const struct dmf_strlist *headers; /* secrets: to the scheduler only, never logged */
    const char *tag;                   /* or NULL */
    const char *application;           /* or NULL */
    const char *digest;                /* "sha256:HEX" or "" */
    const struct dmf_strlist *filter_query;
    bool disable_back_to_source;
    bool holds_task;  /* a held task joins again: no parents wanted (finish follows) */
    bool from_source; /* already fetching from the origin: no parents wanted */
    bool stalled;     /* nothing progressed with the parents it has */
    /* The validators a conditional request just found at the origin (a new version of a
     * cached task), or NULL: the scheduler forgets another version it knows. */
    const char *etag, *last_modified;
};

struct dmf_announce_peer_env {
    const char *task_id, *peer_id;          /* borrowed: outlive the stream */
    const struct dmf_piece_book *book;      /* the task's, read for progress */
    const struct dmf_transfer_bytes *bytes; /* the task's, read for progress */
    /* The origin's validators as this host's own fetch saw them (the task's fields, read
     * for progress; NULL or "" when it fetched nothing from the origin). */
    char *const *etag, *const *last_modified;
    /* The origin's Content-Type as the task has it (NULL or unset: none); sent when valid. */
    char *const *content_type;
    const struct dmf_announce_sink *sink;
    void *arg;
};

/* Opens the AnnouncePeer stream, registers, and reports the pieces already held with
 * their digests (so that a restarted scheduler can relay them again). */
struct dmf_announce_peer *dmf_announce_open(struct dmf_announce_client *c,
                                            const struct dmf_announce_peer_env *env,
                                            const struct dmf_announce_register *reg);
/* Piece n verified; digest is non-NULL when we fetched it from the origin. Batched. */
void dmf_announce_report_piece(struct dmf_announce_peer *sp, uint32_t n, const uint8_t *digest);
/* A parent failed (bad_piece: its bytes did not match the digest). */
void dmf_announce_report_parent_failure(struct dmf_announce_peer *sp, const char *peer_id,
                                        const char *host_id, bool bad_piece, uint32_t piece);
/* Sends finished or failed and half-closes; for_good: the failure holds for anyone who
 * tries (a 4xx from the origin, with its origin_status; a digest mismatch), so the
 * scheduler tells the other peers instead of letting them ask the origin again; the stream lingers
 * (owned by the client) until the scheduler closes it, and reports nothing more: forget it. */
void dmf_announce_finish(struct dmf_announce_peer *sp, bool ok, const char *reason, bool for_good,
                         uint32_t origin_status, bool content_changed);
/* Drops the stream without a word (daemon shutdown). NULL is ignored. */
void dmf_announce_peer_free(struct dmf_announce_peer *sp);

/* Decodes one AnnouncePeerResponse and reports it to sink; self_host_id's own entry is
 * never a candidate. Returns 0, or -EBADMSG when it does not decode (nothing reported). */
int dmf_announce_decode(const uint8_t *data, size_t len, const char *self_host_id,
                        const struct dmf_announce_sink *sink, void *arg);

#endif
