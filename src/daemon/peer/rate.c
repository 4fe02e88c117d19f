/* Observed transfer rates and request deadlines; see rate.h. */
#include "daemon/peer/rate.h"

#include <stddef.h>

#define ALPHA 0.3 /* weight of the newest sample */

void dmf_rate_add(struct dmf_rate *r, uint64_t len, uint64_t ms)
{
    double v = (double)len / (double)(ms ? ms : 1);
    r->bytes_per_ms = r->samples == 0 ? v : ALPHA * v + (1 - ALPHA) * r->bytes_per_ms;
    r->samples++;
}

/* pieces pieces' time at the rate best, within [lo, DMF_RATE_MAX_DEADLINE]; none_yet when
 * nothing was observed. */
static uint64_t pieces_time(const struct dmf_rate *best, uint64_t piece_size, double pieces,
                            uint64_t lo, uint64_t none_yet)
{
    if (best == NULL || best->samples == 0 || best->bytes_per_ms <= 0)
        return none_yet;
    double ms = (double)piece_size / best->bytes_per_ms * pieces;
    if (ms < (double)lo)
        return lo;
    if (ms > DMF_RATE_MAX_DEADLINE)
        return DMF_RATE_MAX_DEADLINE;
    return (uint64_t)ms;
}

uint64_t dmf_rate_deadline_ms(const struct dmf_rate *best, uint64_t piece_size)
{
    return pieces_time(best, piece_size, DMF_RATE_MARGIN, DMF_RATE_MIN_DEADLINE,
                       DMF_RATE_FIRST_DEADLINE);
}

uint64_t dmf_rate_endgame_ms(const struct dmf_rate *best, uint64_t piece_size)
{
    return pieces_time(best, piece_size, DMF_RATE_ENDGAME_FACTOR, DMF_RATE_ENDGAME_MIN,
                       DMF_RATE_FIRST_DEADLINE / 2);
}
