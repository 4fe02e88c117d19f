/* The daemon's side of the scheduler: AnnounceHost every announce_interval, and one
 * AnnouncePeer stream per download (register, batched progress, parent failures,
 * finished/failed). Answers drive the task: candidates become parents, "back to source"
 * sends it to the origin, TaskMeta brings piece digests. A scheduler that cannot be
 * reached sends the download to the origin. */
#ifndef DMF_SCHED_CLIENT_H
#define DMF_SCHED_CLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include "common/digest.h"

struct dmf_daemon;
struct dmf_task;
struct dmf_parent_info;

struct dmf_sched_client *dmf_sched_client_new(struct dmf_daemon *d);
/* Announces now and runs the loop until that answer (or timeout_ms) — used once at
 * startup so the first download finds this host known. Returns true when announced. */
bool dmf_sched_client_announce_sync(struct dmf_sched_client *c, uint64_t timeout_ms);
/* Says LeaveHost (best effort) and frees. */
void dmf_sched_client_free(struct dmf_sched_client *c);

/* Opens the task's AnnouncePeer stream and registers. */
void dmf_sched_register(struct dmf_task *t);
/* Piece n verified; digest is non-NULL when we fetched it from the origin. Batched. */
void dmf_sched_report_piece(struct dmf_task *t, uint32_t n, const uint8_t *digest);
/* A parent failed (bad_piece: its bytes did not match the digest). */
void dmf_sched_report_parent_failure(struct dmf_task *t, const char *peer_id, const char *host_id,
                                     bool bad_piece, uint32_t piece);
/* Sends finished or failed and closes the stream. */
void dmf_sched_finish(struct dmf_task *t, bool ok, const char *reason);
/* Drops the stream without a word (daemon shutdown). */
void dmf_sched_peer_free(struct dmf_task *t);

#endif
