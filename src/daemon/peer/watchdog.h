/* A task's progress watchdog as pure decisions: how long a download may go without a
 * newly verified piece before something is done about it, and whether that time has
 * passed. The deadline follows the rate observed so far (a piece at that rate, times a
 * margin), bounded by [min_ms, max_ms]; before the first piece it is max_ms. task.c owns
 * the timer and decides, through task_fsm.c, what a stall means (reschedule, back to
 * source, fail). No I/O, no clock of its own (tests/unit/daemon/peer/test_watchdog.c). */
#ifndef DMF_WATCHDOG_H
#define DMF_WATCHDOG_H

#include <stdbool.h>
#include <stdint.h>

#define DMF_WATCHDOG_MARGIN 8 /* a stall is this many pieces' time at the observed rate */

struct dmf_watchdog {
    uint64_t started_ms;  /* when the download (or the current stage) began */
    uint64_t progress_ms; /* the last verified piece, or started_ms */
    uint64_t bytes;       /* verified since started_ms */
    int stalls;           /* deadlines passed in a row without progress */
};

/* Starts watching at now (forgets everything before). */
void dmf_watchdog_start(struct dmf_watchdog *w, uint64_t now);
/* len bytes of verified piece at now: the stall count goes back to 0. */
void dmf_watchdog_progress(struct dmf_watchdog *w, uint64_t now, uint64_t len);
/* The time without progress that counts as a stall, for pieces of piece_size bytes. */
uint64_t dmf_watchdog_deadline(const struct dmf_watchdog *w, uint64_t piece_size, uint64_t min_ms,
                               uint64_t max_ms);
/* 0 when the deadline has passed at now, else the milliseconds left. */
uint64_t dmf_watchdog_left(const struct dmf_watchdog *w, uint64_t now, uint64_t deadline);
/* Records a stall at now (the next one needs a whole deadline more); returns the count. */
int dmf_watchdog_stalled(struct dmf_watchdog *w, uint64_t now);

#endif
