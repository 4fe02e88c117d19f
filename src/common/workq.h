/* A small pool of worker threads for blocking work (hashing and writing pieces), with
 * results posted back to the event loop: work() runs on a worker, then done() runs on
 * the loop thread. Jobs are not ordered. */
#ifndef DMF_WORKQ_H
#define DMF_WORKQ_H

#include <stddef.h>

struct event_base;

typedef struct dmf_workq dmf_workq_t;

/* Starts nthreads workers; the loop must come from dmf_rpc_event_base_new() (threads
 * wake it). Never NULL. */
dmf_workq_t *dmf_workq_new(struct event_base *base, int nthreads);

/* Queues a job. arg is owned by the job until done() returns. */
void dmf_workq_submit(dmf_workq_t *q, void (*work)(void *arg), void (*done)(void *arg), void *arg);

/* Jobs submitted whose done() has not run yet. */
size_t dmf_workq_pending(const dmf_workq_t *q);

/* Waits for every queued job to be worked, runs their done() callbacks on the calling
 * (loop) thread, stops the workers and frees the pool. */
void dmf_workq_free(dmf_workq_t *q);

#endif
