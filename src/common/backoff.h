/* Capped exponential backoff with jitter, as a pure function: retry n waits between half
 * and all of min(cap, base * 2^n), so that many clients that failed together do not come
 * back together (AWS's "equal jitter"). The caller supplies the randomness. */
#ifndef DMF_BACKOFF_H
#define DMF_BACKOFF_H

#include <stdint.h>

/* The wait before retry number attempt (0 for the first), in ms, with rnd any random
 * 32-bit value. Never more than cap_ms, never less than half of min(cap_ms, base_ms). */
uint64_t dmf_backoff_ms(unsigned attempt, uint64_t base_ms, uint64_t cap_ms, uint32_t rnd);

#endif
