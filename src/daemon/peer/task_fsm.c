/* The task state machine's decisions; see task_fsm.h. */
#include "daemon/peer/task_fsm.h"

static const char *const state_names[DMF_TASK_NSTATES] = {
    [DMF_TASK_IDLE] = "IDLE",
    [DMF_TASK_REGISTERING] = "REGISTERING",
    [DMF_TASK_P2P] = "P2P",
    [DMF_TASK_BACK_TO_SOURCE] = "BACK_TO_SOURCE",
    [DMF_TASK_VERIFYING] = "VERIFYING",
    [DMF_TASK_SUCCEEDED] = "SUCCEEDED",
    [DMF_TASK_FAILED] = "FAILED",
};

static const char *const event_names[DMF_TASK_NEVENTS] = {
    [DMF_TASK_EV_START] = "start",
    [DMF_TASK_EV_CANDIDATES] = "candidates",
    [DMF_TASK_EV_META] = "meta",
    [DMF_TASK_EV_SCHED_BACK_TO_SOURCE] = "scheduler-back-to-source",
    [DMF_TASK_EV_SCHED_LOST] = "scheduler-lost",
    [DMF_TASK_EV_STALLED] = "stalled",
    [DMF_TASK_EV_ERROR] = "error",
    [DMF_TASK_EV_KICK] = "kick",
    [DMF_TASK_EV_VERIFIED] = "verified",
    [DMF_TASK_EV_VERIFY_FAILED] = "verify-failed",
    [DMF_TASK_EV_CHECK_DROPPED] = "check-dropped",
    [DMF_TASK_EV_RECONNECT] = "reconnect",
};

const char *dmf_task_state_name(enum dmf_task_state s)
{
    return (unsigned)s < DMF_TASK_NSTATES ? state_names[s] : "?";
}

const char *dmf_task_event_name(enum dmf_task_event ev)
{
    return (unsigned)ev < DMF_TASK_NEVENTS ? event_names[ev] : "?";
}

bool dmf_task_state_running(enum dmf_task_state s)
{
    return s == DMF_TASK_REGISTERING || s == DMF_TASK_P2P || s == DMF_TASK_BACK_TO_SOURCE ||
           s == DMF_TASK_VERIFYING;
}

static struct dmf_task_step step(enum dmf_task_state to, unsigned actions)
{
    return (struct dmf_task_step){.to = to, .actions = actions};
}

/* Every way to the origin: go there, or fail when the user forbade it (the failure is
 * acted on in the next KICK pass, from a running state so that watchers are told). */
static struct dmf_task_step to_origin(enum dmf_task_state from, const struct dmf_task_facts *f)
{
    if (f->back_to_source_disabled)
        return step(dmf_task_state_running(from) ? from : DMF_TASK_REGISTERING,
                    DMF_TASK_DO_FAIL_NO_SOURCE | DMF_TASK_DO_KICK);
    return step(DMF_TASK_BACK_TO_SOURCE, DMF_TASK_DO_START_SOURCE);
}

static bool asking_scheduler(enum dmf_task_state s)
{
    return s == DMF_TASK_REGISTERING || s == DMF_TASK_P2P;
}

static struct dmf_task_step on_kick(enum dmf_task_state from, const struct dmf_task_facts *f)
{
    bool running = dmf_task_state_running(from);
    if (running && f->has_error && from != DMF_TASK_VERIFYING)
        return step(DMF_TASK_FAILED, DMF_TASK_DO_FINISH);
    unsigned dispatch = from == DMF_TASK_P2P              ? DMF_TASK_DO_DISPATCH_PARENTS
                        : from == DMF_TASK_BACK_TO_SOURCE ? DMF_TASK_DO_DISPATCH_SOURCE
                                                          : 0;
    if (f->all_held &&
        (from == DMF_TASK_REGISTERING || from == DMF_TASK_P2P || from == DMF_TASK_BACK_TO_SOURCE)) {
        if (f->expect_digest || f->needs_check)
            return step(DMF_TASK_VERIFYING, dispatch | DMF_TASK_DO_VERIFY);
        return step(DMF_TASK_SUCCEEDED, dispatch | DMF_TASK_DO_FINISH);
    }
    return step(from, dispatch | DMF_TASK_DO_TELL);
}

/* The watchdog fired: escalate, so that no running state waits for ever. */
static struct dmf_task_step on_stalled(enum dmf_task_state from, const struct dmf_task_facts *f)
{
    switch (from) {
    case DMF_TASK_REGISTERING:
        return to_origin(from, f); /* the scheduler never answered */
    case DMF_TASK_P2P:
        /* Parents that send nothing: new ones first (or, with the stream lost, one more
         * deadline for the reconnect to bring the digests that may be missing). */
        if (f->usable_parents > 0 && f->stalls <= 1)
            return step(from, f->announced ? DMF_TASK_DO_RESCHEDULE : 0);
        return to_origin(from, f);
    case DMF_TASK_BACK_TO_SOURCE:
        return f->has_error ? step(from, 0)
                            : step(from, DMF_TASK_DO_RECORD_ERROR | DMF_TASK_DO_KICK);
    default:
        return step(from, 0);
    }
}

struct dmf_task_step dmf_task_next(enum dmf_task_state from, enum dmf_task_event ev,
                                   const struct dmf_task_facts *f)
{
    bool running = dmf_task_state_running(from);
    switch (ev) {
    case DMF_TASK_EV_START:
        if (running)
            return step(from, 0);
        if (f->all_held && (f->expect_digest || f->needs_check))
            return step(DMF_TASK_VERIFYING, DMF_TASK_DO_VERIFY);
        if (f->all_held)
            return step(DMF_TASK_SUCCEEDED, DMF_TASK_DO_KICK);
        if (f->has_scheduler)
            return step(DMF_TASK_REGISTERING, DMF_TASK_DO_REGISTER);
        return to_origin(from, f);
    case DMF_TASK_EV_CANDIDATES:
        if (!asking_scheduler(from))
            return step(from, 0);
        return step(DMF_TASK_P2P,
                    DMF_TASK_DO_APPLY_META | DMF_TASK_DO_ADD_PARENTS | DMF_TASK_DO_KICK);
    case DMF_TASK_EV_META:
        return step(from, asking_scheduler(from) ? DMF_TASK_DO_APPLY_META : 0);
    case DMF_TASK_EV_SCHED_BACK_TO_SOURCE:
        return asking_scheduler(from) ? to_origin(from, f) : step(from, 0);
    case DMF_TASK_EV_SCHED_LOST:
        if (from == DMF_TASK_REGISTERING)
            return to_origin(from, f);
        return step(from, from == DMF_TASK_P2P || from == DMF_TASK_BACK_TO_SOURCE
                              ? DMF_TASK_DO_WARN_LOST
                              : 0);
    case DMF_TASK_EV_RECONNECT:
        return step(from, (from == DMF_TASK_P2P || from == DMF_TASK_BACK_TO_SOURCE) &&
                                  f->has_scheduler && !f->announced
                              ? DMF_TASK_DO_REGISTER
                              : 0);
    case DMF_TASK_EV_STALLED:
        return on_stalled(from, f);
    case DMF_TASK_EV_ERROR:
        /* The first reason wins; acted on in the next KICK pass, because the part that
         * failed is usually inside a transfer's callback and failing tears them down. */
        if (!running || f->has_error)
            return step(from, 0);
        return step(from, DMF_TASK_DO_RECORD_ERROR | DMF_TASK_DO_KICK);
    case DMF_TASK_EV_KICK:
        return on_kick(from, f);
    case DMF_TASK_EV_VERIFIED:
        return from == DMF_TASK_VERIFYING ? step(DMF_TASK_SUCCEEDED, DMF_TASK_DO_FINISH)
                                          : step(from, 0);
    case DMF_TASK_EV_VERIFY_FAILED:
        return from == DMF_TASK_VERIFYING
                   ? step(DMF_TASK_FAILED, DMF_TASK_DO_DROP_PIECES | DMF_TASK_DO_FINISH)
                   : step(from, 0);
    case DMF_TASK_EV_CHECK_DROPPED:
        if (from != DMF_TASK_VERIFYING)
            return step(from, 0);
        if (f->has_scheduler)
            return step(DMF_TASK_REGISTERING, DMF_TASK_DO_REGISTER);
        return to_origin(DMF_TASK_REGISTERING, f);
    }
    return step(from, 0);
}
