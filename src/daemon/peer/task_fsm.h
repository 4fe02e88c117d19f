/* A task's state machine as pure decisions: given the state, what happened and a few
 * facts, the next state and what to do. task.c applies the step (every transition goes
 * through its task_set_state(), which logs it); nothing here does I/O, so every
 * transition is unit-tested on its own (tests/unit/daemon/peer/test_task_fsm.c).
 *
 *   IDLE -> REGISTERING -> P2P ----------> (VERIFYING) -> SUCCEEDED
 *                |          |  \                          ^
 *                |          |   `-> BACK_TO_SOURCE -------'
 *                `----------+-----> BACK_TO_SOURCE
 *   any running state -> FAILED;  FAILED, SUCCEEDED or IDLE -> (start) -> REGISTERING ...
 *
 * Without a scheduler the task goes IDLE -> BACK_TO_SOURCE. A task whose pieces are all
 * held is SUCCEEDED at once (served from the local cache), unless a content digest was
 * asked for or a held piece is not verified in this session (after a restart, or the data
 * file changed): then it is VERIFYING first, and pieces that fail are fetched again. With
 * back-to-source disabled, every way to the origin becomes a failure instead.
 *
 * No running state waits without a timer (the progress watchdog, watchdog.h): a STALLED
 * REGISTERING task goes to the origin; a P2P task first asks the scheduler for new parents
 * (while its stream is open and it has usable parents), then goes to the origin; a task
 * stalled on the origin fails. A lost scheduler stream is reopened after a backoff
 * (RECONNECT) while the download goes on with its parents or the origin. */
#ifndef DMF_TASK_FSM_H
#define DMF_TASK_FSM_H

#include <stdbool.h>

enum dmf_task_state {
    DMF_TASK_IDLE,
    DMF_TASK_REGISTERING,
    DMF_TASK_P2P,
    DMF_TASK_BACK_TO_SOURCE,
    DMF_TASK_VERIFYING,
    DMF_TASK_SUCCEEDED,
    DMF_TASK_FAILED,
};
#define DMF_TASK_NSTATES (DMF_TASK_FAILED + 1)

enum dmf_task_event {
    DMF_TASK_EV_START,                /* a watcher wants the content */
    DMF_TASK_EV_CANDIDATES,           /* the scheduler offered parents */
    DMF_TASK_EV_META,                 /* the scheduler sent layout or digests */
    DMF_TASK_EV_SCHED_BACK_TO_SOURCE, /* the scheduler says: fetch it from the origin */
    DMF_TASK_EV_SCHED_LOST,           /* the AnnouncePeer stream ended */
    DMF_TASK_EV_STALLED,              /* the watchdog: no verified piece for its deadline */
    DMF_TASK_EV_ERROR,                /* a part of the download failed for good */
    DMF_TASK_EV_KICK,                 /* the deferred pass: something changed */
    DMF_TASK_EV_VERIFIED,             /* the content matched the digest asked for */
    DMF_TASK_EV_VERIFY_FAILED,        /* it did not, or could not be read */
    DMF_TASK_EV_CHECK_DROPPED,        /* cached pieces failed their digests: fetch them again */
    DMF_TASK_EV_RECONNECT,            /* the backoff after a lost scheduler stream ended */
};
#define DMF_TASK_NEVENTS (DMF_TASK_EV_RECONNECT + 1)

/* What the task knows when the event happens. */
struct dmf_task_facts {
    bool all_held;                /* every piece held (layout known) */
    bool has_scheduler;           /* --scheduler configured */
    bool back_to_source_disabled; /* --no-back-to-source */
    bool expect_digest;           /* a whole-content digest was asked for */
    bool needs_check;             /* a held piece is not verified in this session (cache) */
    bool has_error;               /* a failure is recorded, not acted on yet */
    int usable_parents;           /* parents connected or connecting */
    bool announced;               /* the AnnouncePeer stream is open */
    int stalls;                   /* STALLED: deadlines passed in a row without progress */
};

/* What to do, in this order (a step may ask for several). */
enum dmf_task_action {
    DMF_TASK_DO_RECORD_ERROR = 1u << 0,     /* keep the first failure's reason; kick */
    DMF_TASK_DO_FAIL_NO_SOURCE = 1u << 1,   /* record "..., and back-to-source is disabled" */
    DMF_TASK_DO_REGISTER = 1u << 2,         /* open the AnnouncePeer stream and register */
    DMF_TASK_DO_START_SOURCE = 1u << 3,     /* drop the parents, fetch from the origin */
    DMF_TASK_DO_APPLY_META = 1u << 4,       /* learn the layout and digests sent */
    DMF_TASK_DO_ADD_PARENTS = 1u << 5,      /* the candidates become parents */
    DMF_TASK_DO_DISPATCH_PARENTS = 1u << 6, /* start piece requests; watch for a stall */
    DMF_TASK_DO_DISPATCH_SOURCE = 1u << 7,  /* start range requests to the origin */
    DMF_TASK_DO_VERIFY = 1u << 8,           /* hash the whole content off the loop */
    DMF_TASK_DO_DROP_PIECES = 1u << 9,      /* forget every piece (digest mismatch) */
    DMF_TASK_DO_FINISH = 1u << 10,          /* stop transfers, report; watchers get the end */
    DMF_TASK_DO_TELL = 1u << 11,            /* tell watchers what is new (the end, if over) */
    DMF_TASK_DO_KICK = 1u << 12,            /* run a KICK pass on the next loop pass */
    DMF_TASK_DO_WARN_LOST = 1u << 13,       /* log: going on; reconnect after a backoff */
    DMF_TASK_DO_RESCHEDULE = 1u << 14,      /* register again: the scheduler picks new parents */
};

struct dmf_task_step {
    enum dmf_task_state to; /* == from when the state does not change */
    unsigned actions;       /* enum dmf_task_action bits; 0 = the event is ignored */
};

/* The decision for event ev in state from. */
struct dmf_task_step dmf_task_next(enum dmf_task_state from, enum dmf_task_event ev,
                                   const struct dmf_task_facts *f);
/* REGISTERING, P2P, BACK_TO_SOURCE or VERIFYING: a download is under way. */
bool dmf_task_state_running(enum dmf_task_state s);
const char *dmf_task_state_name(enum dmf_task_state s);
const char *dmf_task_event_name(enum dmf_task_event ev);

#endif
