/* The progress watchdog's decisions; see watchdog.h. */
#include "daemon/peer/watchdog.h"

void dmf_watchdog_start(struct dmf_watchdog *w, uint64_t now)
{
    *w = (struct dmf_watchdog){.started_ms = now, .progress_ms = now};
}

void dmf_watchdog_progress(struct dmf_watchdog *w, uint64_t now, uint64_t len)
{
    w->bytes += len;
    if (now > w->progress_ms)
        w->progress_ms = now;
    w->stalls = 0;
}

uint64_t dmf_watchdog_deadline(const struct dmf_watchdog *w, uint64_t piece_size, uint64_t min_ms,
                               uint64_t max_ms)
{
    if (min_ms > max_ms)
        min_ms = max_ms;
    uint64_t elapsed = w->progress_ms - w->started_ms;
    if (w->bytes == 0 || elapsed == 0)
        return max_ms;
    /* A piece at the observed rate is elapsed * piece_size / bytes; computed in a way that
     * cannot overflow for any piece size and any duration a download can have. */
    double ms = (double)elapsed * (double)piece_size / (double)w->bytes * DMF_WATCHDOG_MARGIN;
    if (ms < (double)min_ms)
        return min_ms;
    if (ms > (double)max_ms)
        return max_ms;
    return (uint64_t)ms;
}

uint64_t dmf_watchdog_left(const struct dmf_watchdog *w, uint64_t now, uint64_t deadline)
{
    uint64_t since = now > w->progress_ms ? now - w->progress_ms : 0;
    return since >= deadline ? 0 : deadline - since;
}

int dmf_watchdog_stalled(struct dmf_watchdog *w, uint64_t now)
{
    if (now > w->progress_ms)
        w->progress_ms = now;
    return ++w->stalls;
}
