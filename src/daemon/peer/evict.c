/* The eviction decision; see evict.h. */
#include "daemon/peer/evict.h"

#include <stdlib.h>

#include "common/util.h"

const char *dmf_evict_reason_name(enum dmf_evict_reason r)
{
    switch (r) {
    case DMF_EVICT_EXPIRED:
        return "expired";
    case DMF_EVICT_SPACE:
        return "space";
    case DMF_EVICT_FAILED:
        return "failed";
    default:
        return "keep";
    }
}

uint64_t dmf_evict_room_needed(uint64_t want, uint64_t fs_free)
{
    uint64_t w = want + DMF_EVICT_ROOM_MARGIN;
    return fs_free >= w ? 0 : w - fs_free;
}

uint64_t dmf_evict_excess(uint64_t total, const struct dmf_evict_policy *p)
{
    uint64_t over = 0;
    if (p->limit > 0) {
        over = total > p->limit ? total - p->limit : 0;
    } else if (p->fs_size > 0) {
        uint64_t used = p->fs_size > p->fs_free ? p->fs_size - p->fs_free : 0;
        uint64_t high = p->fs_size / 100 * DMF_EVICT_HIGH_PCT;
        uint64_t low = p->fs_size / 100 * DMF_EVICT_LOW_PCT;
        if (used > high)
            over = used - low;
    }
    return over + p->need;
}

struct rank {
    int64_t accessed;
    size_t i;
};

/* Least recently used first; ties by position (the store lists them in a stable order). */
static int by_access(const void *a, const void *b)
{
    const struct rank *x = a, *y = b;
    if (x->accessed != y->accessed)
        return x->accessed < y->accessed ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

size_t dmf_evict_plan(const struct dmf_evict_task *tasks, size_t n,
                      const struct dmf_evict_policy *p, enum dmf_evict_reason *out, uint64_t *freed)
{
    uint64_t total = 0, gone = 0;
    size_t count = 0;
    for (size_t i = 0; i < n; i++) {
        out[i] = DMF_EVICT_KEEP;
        total += tasks[i].bytes;
    }
    for (size_t i = 0; i < n; i++) {
        const struct dmf_evict_task *t = &tasks[i];
        if (t->in_use)
            continue;
        int64_t idle = p->now - t->accessed;
        int64_t grace = p->ttl > 0 && p->ttl < DMF_EVICT_FAILED_GRACE ? (int64_t)p->ttl
                                                                      : DMF_EVICT_FAILED_GRACE;
        if (t->failed && (t->bytes == 0 || idle >= grace))
            out[i] = DMF_EVICT_FAILED;
        else if (p->ttl > 0 && idle >= (int64_t)p->ttl)
            out[i] = DMF_EVICT_EXPIRED;
        else
            continue;
        gone += t->bytes;
        count++;
    }
    uint64_t excess = dmf_evict_excess(total, p);
    if (gone < excess && n > 0) {
        struct rank *order = dmf_xmalloc(n * sizeof(*order));
        /* Failed tasks first (their pieces are only a head start for a retry), then the
         * least recently used. */
        for (size_t i = 0; i < n; i++)
            order[i] = (struct rank){tasks[i].failed ? INT64_MIN : tasks[i].accessed, i};
        qsort(order, n, sizeof(*order), by_access);
        for (size_t k = 0; k < n && gone < excess; k++) {
            size_t i = order[k].i;
            if (out[i] != DMF_EVICT_KEEP || tasks[i].in_use)
                continue;
            out[i] = DMF_EVICT_SPACE;
            gone += tasks[i].bytes;
            count++;
        }
        free(order);
    }
    if (freed)
        *freed = gone;
    return count;
}
