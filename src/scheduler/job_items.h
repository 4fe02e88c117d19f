/* Job items the manager hands to this scheduler (Scheduler.RunJobItem): the scheduler
 * carries each out on the target host's Daemon service (DownloadTask for a preheat,
 * DeleteTask for a delete) with its own cluster identity (a scheduler certificate with
 * TLS) and streams progress and the result to every caller watching the item.
 *
 * Items are keyed by item_id: a call for an item already running attaches to it (no second
 * DownloadTask); a finished item's result is kept DMF_JOB_ITEMS_KEEP_MS (at most
 * DMF_JOB_ITEMS_DONE_MAX of them), so a manager that restarts and asks again gets the
 * result instead of a second run. An item keeps running when its callers go away.
 * See docs/internals/MANAGER.md, "Jobs carried by the schedulers". */
#ifndef DMF_SCHEDULER_JOB_ITEMS_H
#define DMF_SCHEDULER_JOB_ITEMS_H

#include <stdbool.h>

#include "common/rpc.h"
#include "scheduler/sched.h"

#define DMF_JOB_ITEMS_RUNNING_MAX 1024             /* items under way at once */
#define DMF_JOB_ITEMS_DONE_MAX    4096             /* finished items remembered */
#define DMF_JOB_ITEMS_KEEP_MS     (15 * 60 * 1000) /* how long a result is remembered */
#define DMF_JOB_ITEMS_TIMEOUT_MS  (30 * 60 * 1000) /* one item's call to the host */

typedef struct dmf_job_items dmf_job_items_t;

/* rpc and sched are borrowed and outlive the result. Never NULL. */
dmf_job_items_t *dmf_job_items_new(dmf_rpc_t *rpc, dmf_scheduler_t *sched);
/* Takes the call when method is RunJobItem (returns true; it answers and releases it),
 * else returns false. */
bool dmf_job_items_on_call(dmf_job_items_t *j, dmf_rpc_call_t *call, const char *method);
/* Items running now (for tests and metrics). */
size_t dmf_job_items_running(const dmf_job_items_t *j);
/* Cancels the calls to hosts, ends every caller's call and frees everything. After the
 * server is gone. */
void dmf_job_items_free(dmf_job_items_t *j);

#endif
