/* The store's writer: a thread that owns the writes of piece rows and commits them in
 * batches, so that the daemon's loop never waits for SQLite on the per-piece path.
 *
 * The loop queues a row once the piece's bytes are written to its data file (so a row is
 * never committed before its data: see docs/internals/STORE.md, "Batched piece rows");
 * the writer commits what is queued, in queue order, in one transaction per batch of at
 * most max_batch rows, and at most one batch per max_delay_ms unless max_batch rows wait,
 * a flush asks or the writer stops: a row that comes to an idle writer is committed at
 * once, rows that come faster wait for the next batch (at most max_delay_ms). A failed
 * batch (a full disk) is tried again after retry_ms, doubling, retries times. The queue holds at
 * most capacity rows. When it is full, dmf_store_writer_put waits up to full_wait_ms for room and
 * then gives up: that piece is not recorded (it is valid and served in this session, and fetched
 * again after a restart). A failed batch that failed every try is likewise not recorded. So after a
 * crash the store knows the same or fewer pieces than were written, never more.
 *
 * The writer does not know SQLite: it hands each batch to a commit callback (store.c's
 * runs on the writer's own connection). Put, flush and free are for one thread (the
 * loop); the callback runs on the writer thread. */
#ifndef DMF_STORE_WRITER_H
#define DMF_STORE_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/digest.h"
#include "common/metrics.h"
#include "common/taskid.h"

/* One verified piece, to be recorded. */
struct dmf_piece_row {
    char id[DMF_TASK_ID_LEN + 1];
    uint32_t n;
    uint8_t digest[DMF_SHA256_LEN];
};

struct dmf_store_writer_config {
    size_t max_batch;      /* rows per transaction (default 256) */
    uint32_t max_delay_ms; /* at most one batch this often, but for a full one (default 50) */
    size_t capacity;       /* rows the queue holds (default 4096) */
    uint32_t full_wait_ms; /* how long a put waits for room in a full queue (default 20) */
    uint32_t retry_ms;     /* first pause before a failed batch is tried again (default 100) */
    uint32_t retries;      /* tries after the first (default 4: 100+200+400+800 ms) */
};
/* clang-format off */
#define DMF_STORE_WRITER_DEFAULTS {256, 50, 4096, 20, 100, 4}
/* clang-format on */

/* Commits rows[0..n) in one transaction (on the writer thread). Returns how many were
 * recorded (rows it had to skip, such as one whose task row is gone, are not), or a
 * negative code when the batch failed as a whole (nothing recorded). */
typedef int (*dmf_store_commit_cb)(void *ctx, const struct dmf_piece_row *rows, size_t n);

typedef struct dmf_store_writer dmf_store_writer_t;

/* Rows queued now; rows recorded, not recorded (by reason) and batches committed. */
extern struct dmf_metric dmf_m_store_queue_depth, dmf_m_store_rows_committed, dmf_m_store_rows_full,
    dmf_m_store_rows_failed, dmf_m_store_batches;
void dmf_store_writer_metrics_register(void);

/* The pure rule: true when a batch is due with queued rows, since_commit_ms after the last
 * batch ended, flush telling that a flush asked for it or the writer stops. */
bool dmf_store_batch_due(const struct dmf_store_writer_config *cfg, size_t queued,
                         uint64_t since_commit_ms, bool flush);

/* Starts the writer thread. cfg (copied) may be NULL for the defaults; its zero fields
 * take the defaults, but for full_wait_ms (0: a put into a full queue fails at once) and
 * retries (0: a failed batch is not tried again).
 * commit and ctx stay in use until dmf_store_writer_free. Never NULL. */
dmf_store_writer_t *dmf_store_writer_new(const struct dmf_store_writer_config *cfg,
                                         dmf_store_commit_cb commit, void *ctx);

/* Queues a row (copied). Returns 0, or -EAGAIN when the queue stayed full for
 * full_wait_ms (the row is not recorded; counted in dmf_m_store_rows_full). */
int dmf_store_writer_put(dmf_store_writer_t *w, const struct dmf_piece_row *row);

/* Commits every row queued so far now, and returns once they are committed (or failed).
 * Blocks for about one batch; returns early while a failed batch waits to be tried again
 * (a full disk: the caller may be the one that must make room). */
void dmf_store_writer_flush(dmf_store_writer_t *w);

/* Takes the rows of task id (all of them, or piece n's) out of the queue and the batch,
 * before the caller deletes the task or drops the piece: a row queued before cannot land
 * after. Waits only while a try of the batch holding such a row is in progress. */
void dmf_store_writer_forget(dmf_store_writer_t *w, const char *id, bool all, uint32_t n);

/* Room was made on the disk: a failed batch waiting to be tried again is tried now. */
void dmf_store_writer_retry_now(dmf_store_writer_t *w);

/* True when a row of task id is queued or being committed. */
bool dmf_store_writer_holds(dmf_store_writer_t *w, const char *id);

/* Rows queued and not yet committed. */
size_t dmf_store_writer_depth(dmf_store_writer_t *w);

/* Commits every queued row, stops the thread and frees w. NULL is fine. */
void dmf_store_writer_free(dmf_store_writer_t *w);

#endif
