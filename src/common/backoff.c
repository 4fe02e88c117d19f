/* Capped exponential backoff with jitter; see backoff.h. */
#include "common/backoff.h"

uint64_t dmf_backoff_ms(unsigned attempt, uint64_t base_ms, uint64_t cap_ms, uint32_t rnd)
{
    uint64_t d = base_ms < cap_ms ? base_ms : cap_ms;
    for (unsigned i = 0; i < attempt && d < cap_ms; i++)
        d = d > cap_ms / 2 ? cap_ms : d * 2;
    uint64_t half = d / 2;
    return half + (half ? (uint64_t)rnd % (d - half + 1) : (uint64_t)rnd % (d + 1));
}
