/* The scheduler's live view (manager.proto's SchedulerView.ListLive): every host it knows
 * now, its load, and its peers with their state and progress, for the manager's API. */
#ifndef DMF_SCHEDULER_LIVE_VIEW_H
#define DMF_SCHEDULER_LIVE_VIEW_H

#include <stdbool.h>

#include "common/rpc.h"
#include "scheduler/sched.h"

#define DMF_LIVE_DEFAULT_HOSTS 1000
#define DMF_LIVE_MAX_HOSTS     10000
#define DMF_LIVE_MAX_PEERS     100000 /* per answer, all hosts together */

/* Takes the call when method is SchedulerView's (returns true; it answers and releases
 * it), else returns false. s is borrowed and must outlive the call's few loop passes. */
bool dmf_scheduler_live_on_call(dmf_scheduler_t *s, dmf_rpc_call_t *call, const char *method);

#endif
