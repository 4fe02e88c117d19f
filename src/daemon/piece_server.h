/* The piece server: HTTP/1.1 on the daemon's piece port, the data plane between daemons.
 *
 *   GET /pieces/<task-id>/<n>  200 with the piece's bytes (sendfile from the data file);
 *                              404 when the task or piece is not held here; 400 when the
 *                              path is malformed; 503 from a seed for a piece it
 *                              sent recently (see struct dmf_seed_ledger).
 *   GET /have/<task-id>        200, chunked text/plain, one line per verified piece
 *                              "have <n>\n" (first every piece held now, then each new one
 *                              as it is verified), then "done <total_pieces>\n" once the
 *                              task is complete, and the response ends. 404 for an unknown
 *                              task. This is how a parent tells its children which pieces
 *                              it holds; the scheduler is never on this path.
 *   GET /metrics               Prometheus text.
 *
 * With dmf_piece_server_set_tls the port speaks only HTTPS and every client must present a
 * certificate signed by the cluster CA. With dmf_piece_server_set_cluster_key /pieces and
 * /have answer 403 unless the request carries a piece-fetch token (piece_token.h) for the
 * task and the requesting host: the CN of its certificate, or without TLS the host ID it
 * claims in DMF_HOST_ID_HEADER (weaker: anyone who saw a token can replay it). /metrics is
 * never token-checked.
 *
 * Every path component is validated (task IDs are 64 lower-case hex digits; piece numbers
 * are canonical decimal). Other paths get 404, other methods 405. At most
 * DMF_PIECE_SERVER_MAX_WATCHERS /have streams are open at once; beyond that /have answers
 * 503. Full contract with examples: docs/internals/PIECE-PROTOCOL.md. */
#ifndef DMF_PIECE_SERVER_H
#define DMF_PIECE_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/pieces.h"

struct event_base;

/* Open /have streams allowed at once, over all tasks (each holds a connection). */
#define DMF_PIECE_SERVER_MAX_WATCHERS 4096

typedef struct dmf_piece_server dmf_piece_server_t;

/* What the piece server needs to know of a task (all borrowed from the daemon). */
struct dmf_piece_view {
    int fd;                   /* the task's data file */
    int64_t content_length;   /* -1 while unknown */
    uint32_t piece_length;    /* 0 while unknown */
    const dmf_bitmap_t *have; /* verified pieces */
    bool complete;            /* every piece held; total is dmf_piece_count(...) */
    bool downloading;         /* more pieces may come (a /have stream stays open for them) */
    /* A seed's record of its uploads, or NULL (see struct dmf_seed_ledger). */
    struct dmf_seed_ledger *ledger;
    /* Called before a held piece is sent: true when its bytes may go out (verified now,
     * hashing them first if they were not verified since a restart or a change of the data
     * file); false drops it and the request gets 404. NULL: every held piece may go. Only
     * called when the piece is about to be uploaded (the task counts it as a use). */
    bool (*verify)(void *arg, uint32_t n);
    void *verify_arg;
};

/* A seed sends each piece into the swarm once before it sends any twice, and after that
 * sends a piece again only when it has not sent it for DMF_SEED_REPEAT_MS: the peers are
 * expected to pass it on. Otherwise the request gets 503 with "Retry-After: 1" (the
 * child defers that piece and takes it from a peer). */
struct dmf_seed_ledger {
    dmf_bitmap_t served; /* pieces uploaded at least once */
    uint64_t *last_ms;   /* when each was last uploaded (monotonic ms) */
    uint32_t nlast;      /* entries in last_ms */
};
#define DMF_SEED_REPEAT_MS 3000

void dmf_seed_ledger_free(struct dmf_seed_ledger *l);

/* Looks a task up on the loop thread: 0 with *view filled, or -ENOENT. */
typedef int (*dmf_piece_lookup_cb)(void *arg, const char *task_id, struct dmf_piece_view *view);

/* Binds addr:port (port 0 = any; see dmf_piece_server_port). Returns NULL with a reason
 * in err ("cannot listen on 127.0.0.1:65002: Address already in use"). Connections idle
 * for 60 s, or whose peer stops reading or sending for that long, are closed. */
dmf_piece_server_t *dmf_piece_server_new(struct event_base *base, const char *addr, uint16_t port,
                                         dmf_piece_lookup_cb lookup, void *arg, char *err,
                                         size_t errlen);
/* Changes that idle/stall timeout (ms) for connections accepted from now on. */
/* A connection must complete its first request head this long after it was accepted, or
 * it is closed (default 10 s), so that a client dripping header bytes cannot keep it. */
void dmf_piece_server_set_header_timeout(dmf_piece_server_t *ps, uint64_t ms);
void dmf_piece_server_set_timeout(dmf_piece_server_t *ps, uint64_t ms);
uint16_t dmf_piece_server_port(const dmf_piece_server_t *ps);

/* Piece n of task_id was just verified and stored: tell the /have watchers. These three
 * ignore a NULL ps (the piece server is already gone at shutdown). */
void dmf_piece_server_notify_piece(dmf_piece_server_t *ps, const char *task_id, uint32_t n);
/* The task is complete: watchers get "done <total>" and their responses end. */
void dmf_piece_server_notify_done(dmf_piece_server_t *ps, const char *task_id);
/* The task is gone (failed, deleted): watchers' responses end without "done". */
void dmf_piece_server_notify_gone(dmf_piece_server_t *ps, const char *task_id);

/* True while a piece of task_id is being sent (eviction leaves such a task alone). */
bool dmf_piece_server_uploading(const dmf_piece_server_t *ps, const char *task_id);

/* Piece uploads at once (default DMF_PIECE_SERVER_UPLOAD_SLOTS; 0 = default). Further
 * requests wait, and the next to start is the one whose child holds the least of the task
 * (its X-Dmf-Progress header, permille), aged by how long it has waited. */
#define DMF_PIECE_SERVER_UPLOAD_SLOTS 2
#define DMF_PROGRESS_HEADER           "X-Dmf-Progress"
void dmf_piece_server_set_upload_slots(dmf_piece_server_t *ps, uint32_t slots);

/* The request headers of piece-fetch authorisation (the token is never logged). */
#define DMF_PIECE_TOKEN_HEADER "X-Damselfly-Piece-Token"
#define DMF_HOST_ID_HEADER     "X-Damselfly-Host-Id"

/* Connections accepted from now on speak TLS with ctx (tls.h: it requires and verifies the
 * client's certificate); a reference is taken, so the caller may free its own. Connections
 * already open keep the context they were made with: this is the SIGHUP reload. NULL turns
 * TLS off for later connections (only meant before the server runs). */
typedef struct ssl_ctx_st SSL_CTX;
void dmf_piece_server_set_tls(dmf_piece_server_t *ps, SSL_CTX *ctx);
bool dmf_piece_server_tls(const dmf_piece_server_t *ps);

/* Checks piece-fetch tokens with key (copied; wiped when replaced or freed) on /pieces and
 * /have; refusals get 403 and count in damselfly_piece_auth_denied_total{reason}. NULL:
 * every request is served, as without --cluster-key-file. */
struct dmf_cluster_key;
void dmf_piece_server_set_cluster_key(dmf_piece_server_t *ps, const struct dmf_cluster_key *key);

/* Puts the connections that upload pieces under t's upload limit (throttle.h; NULL: none). */
struct dmf_throttle;
void dmf_piece_server_set_throttle(dmf_piece_server_t *ps, struct dmf_throttle *t);

/* Pieces being uploaded right now, and bytes uploaded since start (the host's load). */
uint32_t dmf_piece_server_active_uploads(const dmf_piece_server_t *ps);
uint64_t dmf_piece_server_uploaded_bytes(const dmf_piece_server_t *ps);
/* Piece requests waiting for an upload slot right now. */
uint32_t dmf_piece_server_queued(const dmf_piece_server_t *ps);
/* /have streams open right now. */
uint32_t dmf_piece_server_watchers(const dmf_piece_server_t *ps);

/* Ends every /have stream (without "done"), closes the listener and every connection. */
void dmf_piece_server_free(dmf_piece_server_t *ps);

#endif
