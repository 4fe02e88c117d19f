/* The store's writer: a thread that owns the writes of piece rows and commits them in
 * batches, so that the daemon's loop never waits for SQLite on the per-piece path.
 *
 * The loop queues a row once the piece's bytes are written to its data file (so a row is
 * never committed before its data: see docs/internals/STORE.md, "Batched piece rows");
 * the writer commits what is queued, in queue order, in one transaction per batch: when
 * max_batch rows wait, when the oldest has waited max_delay_ms, when a flush asks, or at
 * shutdown. The queue holds at most capacity rows. When it is full, dmf_store_writer_put
 * waits up to full_wait_ms for room and then gives up: that piece is not recorded (it is
 * valid and served in this session, and fetched again after a restart). A failed batch
 * is likewise not recorded. So after a crash the store knows the same or fewer pieces
 * than were written, never more.
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
    uint32_t max_delay_ms; /* longest a queued row waits for its batch (default 50) */
    size_t capacity;       /* rows the queue holds (default 4096) */
    uint32_t full_wait_ms; /* how long a put waits for room in a full queue (default 20) */
};
#define DMF_STORE_WRITER_DEFAULTS                                                                  \
    {                                                                                              \
        256, 50, 4096, 20                                                                          \
    }

/* Commits rows[0..n) in one transaction (on the writer thread). Returns how many were
 * recorded (rows it had to skip, such as one whose task row is gone, are not), or a
 * negative code when the batch failed as a whole (nothing recorded). */
typedef int (*dmf_store_commit_cb)(void *ctx, const struct dmf_piece_row *rows, size_t n);

typedef struct dmf_store_writer dmf_store_writer_t;

/* Rows queued now; rows recorded, not recorded (by reason) and batches committed. */
extern struct dmf_metric dmf_m_store_queue_depth, dmf_m_store_rows_committed, dmf_m_store_rows_full,
    dmf_m_store_rows_failed, dmf_m_store_batches;
void dmf_store_writer_metrics_register(void);

/* The pure rule: true when a batch is due with queued rows of which the oldest has waited
 * age_ms, a flush asked for (flush) or the writer stopping. */
bool dmf_store_batch_due(const struct dmf_store_writer_config *cfg, size_t queued, uint64_t age_ms,
                         bool flush);

/* Starts the writer thread. cfg (copied) may be NULL for the defaults; its zero fields
 * take the defaults, but for full_wait_ms (0: a put into a full queue fails at once).
 * commit and ctx stay in use until dmf_store_writer_free. Never NULL. */
dmf_store_writer_t *dmf_store_writer_new(const struct dmf_store_writer_config *cfg,
                                         dmf_store_commit_cb commit, void *ctx);

/* Queues a row (copied). Returns 0, or -EAGAIN when the queue stayed full for
 * full_wait_ms (the row is not recorded; counted in dmf_m_store_rows_full). */
int dmf_store_writer_put(dmf_store_writer_t *w, const struct dmf_piece_row *row);

/* Commits every row queued so far now, and returns once they are committed (or failed).
 * Blocks for about one batch. */
void dmf_store_writer_flush(dmf_store_writer_t *w);

/* True when a row of task id is queued or being committed. */
bool dmf_store_writer_holds(dmf_store_writer_t *w, const char *id);

/* Rows queued and not yet committed. */
size_t dmf_store_writer_depth(dmf_store_writer_t *w);

/* Commits every queued row, stops the thread and frees w. NULL is fine. */
void dmf_store_writer_free(dmf_store_writer_t *w);

#endif
