/* A small pool of worker threads for blocking work (hashing and writing pieces, hashing a
 * whole data file), with results posted back to the event loop: work() runs on a worker,
 * then done() runs on the loop thread. Jobs are not ordered.
 *
 * Long jobs (a whole-content verification: seconds to minutes) are bounded: at most
 * max_long of them run at once (fewer than the workers, so short jobs always find one),
 * the others wait in the order they came. A waiting long job is taken before short ones
 * by a worker the bound allows, so long jobs are never starved by a steady flow of short
 * ones. */
#ifndef DMF_WORKQ_H
#define DMF_WORKQ_H

#include <stddef.h>

struct event_base;

typedef struct dmf_workq dmf_workq_t;

/* Starts nthreads workers; the loop must come from dmf_rpc_event_base_new() (threads
 * wake it). At most nthreads - 1 long jobs run at once (1 with a single worker). Never
 * NULL. */
dmf_workq_t *dmf_workq_new(struct event_base *base, int nthreads);

/* Sets how many long jobs may run at once (clamped to 1 .. max(1, nthreads - 1)). */
void dmf_workq_set_max_long(dmf_workq_t *q, int max_long);

/* Queues a job. arg is owned by the job until done() returns. */
void dmf_workq_submit(dmf_workq_t *q, void (*work)(void *arg), void (*done)(void *arg), void *arg);

/* Queues a long job (see above). arg is owned by the job until done() returns. */
void dmf_workq_submit_long(dmf_workq_t *q, void (*work)(void *arg), void (*done)(void *arg),
                           void *arg);

/* Long jobs running now (any thread; a snapshot). */
size_t dmf_workq_long_running(dmf_workq_t *q);

/* Jobs submitted (short and long) whose done() has not run yet. */
size_t dmf_workq_pending(const dmf_workq_t *q);

/* Waits for every queued job (short and long) to be worked, runs their done() callbacks on the
 * calling (loop) thread, stops the workers and frees the pool. */
void dmf_workq_free(dmf_workq_t *q);

#endif
