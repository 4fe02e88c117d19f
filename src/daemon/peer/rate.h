/* Observed transfer rates and the deadline of one piece request, as pure decisions. Each
 * parent keeps a smoothed rate of its completed requests; a request may take MARGIN times
 * what a piece takes at the typical (median) rate of the task's parents, bounded, so a parent
 * that stalls (SIGSTOP, a dead link without a reset) or trickles loses the piece to
 * others long before a TCP timeout, while a parent as fast as the rest never does. */
#ifndef DMF_RATE_H
#define DMF_RATE_H

#include <stdbool.h>
#include <stdint.h>

#define DMF_RATE_MARGIN         6     /* a request may take this many pieces' time */
#define DMF_RATE_MIN_DEADLINE   500   /* ms: never less (loaded hosts, small pieces) */
#define DMF_RATE_MAX_DEADLINE   30000 /* ms: never more */
#define DMF_RATE_FIRST_DEADLINE 5000  /* ms: before any request completed anywhere */
#define DMF_RATE_STRIKES        3     /* late requests in a row before a silent parent is dropped */
#define DMF_RATE_ENDGAME_FACTOR 2     /* endgame: duplicate a request this many pieces' time old */
#define DMF_RATE_ENDGAME_MIN    100   /* ms: ... and never younger */

/* A smoothed rate in bytes per millisecond (0 = nothing observed yet). */
struct dmf_rate {
    double bytes_per_ms;
    uint32_t samples;
};

/* One completed request: len bytes in ms milliseconds (0 counts as 1). */
void dmf_rate_add(struct dmf_rate *r, uint64_t len, uint64_t ms);
/* How long a request for piece_size bytes may take, given the typical rate observed among a
 * task's parents (best->samples 0: nothing observed yet). */
uint64_t dmf_rate_deadline_ms(const struct dmf_rate *best, uint64_t piece_size);
/* How old a request for piece_size bytes must be before the endgame duplicates it to another
 * parent (dispatch.h): ENDGAME_FACTOR pieces' time at the typical rate, at least ENDGAME_MIN,
 * and half the first deadline while nothing was observed. */
uint64_t dmf_rate_endgame_ms(const struct dmf_rate *best, uint64_t piece_size);

#endif
