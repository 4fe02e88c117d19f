/* A token bucket and the fair share between flows that wait on buckets: pure arithmetic,
 * the caller passes the time (monotonic nanoseconds), so every result is exact and
 * unit-tested (tests/unit/common/test_bucket.c). throttle.h puts them on the event loop.
 *
 * A bucket is charged after bytes moved, and may go into debt: a transfer that found it
 * holding tokens moves the chunk it has (at most a read buffer), and the next one waits
 * until the debt is paid. Over any window of T seconds at most rate * T + burst + one
 * chunk pass, and with a backlog at least rate * T - one chunk. */
#ifndef DMF_BUCKET_H
#define DMF_BUCKET_H

#include <stdbool.h>
#include <stdint.h>

#define DMF_NS_PER_S 1000000000ull

struct dmf_bucket {
    uint64_t rate;    /* bytes per second; 0 = unlimited (never waits) */
    uint64_t burst;   /* most tokens saved up while idle */
    int64_t tokens;   /* bytes that may move now; negative: debt */
    uint64_t frac;    /* what rate * elapsed left below one byte, in byte-ns (< 1e9) */
    uint64_t last_ns; /* when tokens were last brought up to date */
};

/* The burst a rate gets by default: 1/8 s of it, at least 4 KiB. It only fills while the
 * bucket is idle or its loop runs late (a busy machine): with it a wake-up up to 125 ms
 * late loses nothing, and a window of 5 s passes at most 2.5 % more than the rate. */
uint64_t dmf_bucket_default_burst(uint64_t rate);

/* An empty bucket (no tokens saved: the first bytes wait for the first refill) of this
 * rate (0 = unlimited) and burst (0 = dmf_bucket_default_burst). */
void dmf_bucket_init(struct dmf_bucket *b, uint64_t rate, uint64_t burst, uint64_t now_ns);
/* Changes rate and burst from now on: tokens earned so far at the old rate are kept (up
 * to the new burst), a debt is kept up to one new burst. */
void dmf_bucket_set(struct dmf_bucket *b, uint64_t rate, uint64_t burst, uint64_t now_ns);
/* Brings the tokens up to now (a clock that went back counts as no time). */
void dmf_bucket_refill(struct dmf_bucket *b, uint64_t now_ns);
/* True when bytes may move now: unlimited, or at least one token after refilling. */
bool dmf_bucket_ready(struct dmf_bucket *b, uint64_t now_ns);
/* Takes n bytes (after refilling); the tokens may go negative. Unlimited: nothing. */
void dmf_bucket_charge(struct dmf_bucket *b, uint64_t n, uint64_t now_ns);
/* Nanoseconds from now until the bucket is ready (0 when it is). */
uint64_t dmf_bucket_wait_ns(struct dmf_bucket *b, uint64_t now_ns);

/* Weighted fair sharing between flows (tasks) that take from the same buckets: each flow
 * has a virtual time, the bytes it moved divided by its weight; the waiting flow with the
 * lowest virtual time goes next. A flow that comes back from idle starts at the virtual
 * time of the last flow served, so it gets its share from now on and no credit for the
 * time it waited for nothing (start-time fair queueing). No waiting flow starves: every
 * grant moves the clock of the flow served forward. */
struct dmf_share {
    uint64_t vtime;  /* bytes * DMF_SHARE_SCALE / weight, moved so far */
    uint32_t weight; /* >= 1 */
};
#define DMF_SHARE_SCALE 64

/* The weights of the priorities (get --priority). */
enum dmf_priority {
    DMF_PRIORITY_NORMAL = 0,
    DMF_PRIORITY_BACKGROUND = 1,
    DMF_PRIORITY_FOREGROUND = 2
};
uint32_t dmf_priority_weight(enum dmf_priority p);
/* "background", "normal", "foreground" (any case) into *p: 0, or -EINVAL. */
int dmf_priority_parse(const char *s, enum dmf_priority *p);
const char *dmf_priority_name(enum dmf_priority p);

/* The flow starts to wait: it catches up with the virtual time of the last flow served
 * (vnow), if it is behind. */
void dmf_share_join(struct dmf_share *s, uint64_t vnow);
/* The flow moved n bytes. */
void dmf_share_charge(struct dmf_share *s, uint64_t n);
/* Of n flows' virtual times, the index of the lowest (the first of equals); n > 0. */
unsigned dmf_share_pick(const uint64_t *vtimes, unsigned n);

#endif
