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

uint64_t dmf_rate_deadline_ms(const struct dmf_rate *best, uint64_t piece_size)
{
    if (best == NULL || best->samples == 0 || best->bytes_per_ms <= 0)
        return DMF_RATE_FIRST_DEADLINE;
    double ms = (double)piece_size / best->bytes_per_ms * DMF_RATE_MARGIN;
    if (ms < DMF_RATE_MIN_DEADLINE)
        return DMF_RATE_MIN_DEADLINE;
    if (ms > DMF_RATE_MAX_DEADLINE)
        return DMF_RATE_MAX_DEADLINE;
    return (uint64_t)ms;
}
