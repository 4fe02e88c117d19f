/* Token bucket and fair share arithmetic; see bucket.h. */
#include "common/bucket.h"

#include <errno.h>
#include <strings.h>

uint64_t dmf_bucket_default_burst(uint64_t rate)
{
    uint64_t b = rate / 8;
    return b < 4096 ? 4096 : b;
}

void dmf_bucket_init(struct dmf_bucket *b, uint64_t rate, uint64_t burst, uint64_t now_ns)
{
    b->rate = rate;
    b->burst = burst ? burst : dmf_bucket_default_burst(rate);
    b->tokens = 0;
    b->frac = 0;
    b->last_ns = now_ns;
}

void dmf_bucket_refill(struct dmf_bucket *b, uint64_t now_ns)
{
    if (now_ns <= b->last_ns) {
        return;
    }
    uint64_t dt = now_ns - b->last_ns;
    b->last_ns = now_ns;
    if (b->rate == 0) {
        return;
    }
    /* rate * dt in byte-ns: 128 bits, so no rate or gap overflows. */
    unsigned __int128 credit = (unsigned __int128)b->rate * dt + b->frac;
    unsigned __int128 bytes = credit / DMF_NS_PER_S;
    b->frac = (uint64_t)(credit % DMF_NS_PER_S);
    unsigned __int128 room = (unsigned __int128)((__int128)b->burst - b->tokens);
    if (bytes >= room) {
        b->tokens = (int64_t)b->burst;
        b->frac = 0; /* a full bucket saves nothing more */
    } else {
        b->tokens += (int64_t)bytes;
    }
}

void dmf_bucket_set(struct dmf_bucket *b, uint64_t rate, uint64_t burst, uint64_t now_ns)
{
    dmf_bucket_refill(b, now_ns);
    b->rate = rate;
    b->burst = burst ? burst : dmf_bucket_default_burst(rate);
    if (b->tokens > (int64_t)b->burst)
        b->tokens = (int64_t)b->burst;
    if (b->tokens < -(int64_t)b->burst)
        b->tokens = -(int64_t)b->burst;
    if (rate == 0) {
        b->tokens = 0;
        b->frac = 0;
    }
}

bool dmf_bucket_ready(struct dmf_bucket *b, uint64_t now_ns)
{
    if (b->rate == 0)
        return true;
    dmf_bucket_refill(b, now_ns);
    return b->tokens > 0;
}

void dmf_bucket_charge(struct dmf_bucket *b, uint64_t n, uint64_t now_ns)
{
    if (b->rate == 0)
        return;
    dmf_bucket_refill(b, now_ns);
    if (n > (uint64_t)INT64_MAX / 2)
        n = (uint64_t)INT64_MAX / 2;
    b->tokens -= (int64_t)n;
    if (b->tokens < INT64_MIN / 2)
        b->tokens = INT64_MIN / 2;
}

uint64_t dmf_bucket_wait_ns(struct dmf_bucket *b, uint64_t now_ns)
{
    if (dmf_bucket_ready(b, now_ns))
        return 0;
    /* Ready at one token: (1 - tokens) bytes, less the fraction already earned. */
    unsigned __int128 need = (unsigned __int128)(1 - b->tokens) * DMF_NS_PER_S - b->frac;
    unsigned __int128 ns = (need + b->rate - 1) / b->rate;
    return ns > UINT64_MAX ? UINT64_MAX : (uint64_t)ns;
}

uint32_t dmf_priority_weight(enum dmf_priority p)
{
    switch (p) {
    case DMF_PRIORITY_BACKGROUND:
        return 1;
    case DMF_PRIORITY_FOREGROUND:
        return 16;
    default:
        return 4;
    }
}

int dmf_priority_parse(const char *s, enum dmf_priority *p)
{
    static const enum dmf_priority all[] = {DMF_PRIORITY_NORMAL, DMF_PRIORITY_BACKGROUND,
                                            DMF_PRIORITY_FOREGROUND};
    for (unsigned i = 0; s && i < sizeof(all) / sizeof(all[0]); i++)
        if (strcasecmp(s, dmf_priority_name(all[i])) == 0) {
            *p = all[i];
            return 0;
        }
    return -EINVAL;
}

const char *dmf_priority_name(enum dmf_priority p)
{
    switch (p) {
    case DMF_PRIORITY_BACKGROUND:
        return "background";
    case DMF_PRIORITY_FOREGROUND:
        return "foreground";
    default:
        return "normal";
    }
}

void dmf_share_join(struct dmf_share *s, uint64_t vnow)
{
    if (s->vtime < vnow)
        s->vtime = vnow;
}

void dmf_share_charge(struct dmf_share *s, uint64_t n)
{
    uint32_t w = s->weight ? s->weight : 1;
    s->vtime += n * DMF_SHARE_SCALE / w;
}

unsigned dmf_share_pick(const uint64_t *vtimes, unsigned n)
{
    unsigned best = 0;
    for (unsigned i = 1; i < n; i++)
        if (vtimes[i] < vtimes[best])
            best = i;
    return best;
}
