/* Counted piece buffers; see piecemem.h. Each buffer carries its size in a header in front
 * of it, so whoever frees it (the task, after the write) need not know what was asked. */
#include "common/piecemem.h"

#include <stdlib.h>

#include "common/metrics.h"
#include "common/util.h"

DMF_METRIC_GAUGE(dmf_m_piecemem_bytes, "damselfly_piece_buffer_bytes", NULL,
                 "Bytes of pieces held in memory between the network and the disk");
DMF_METRIC_GAUGE(dmf_m_piecemem_peak, "damselfly_piece_buffer_peak_bytes", NULL,
                 "The most bytes of pieces held in memory at once since the start");
DMF_METRIC_COUNTER(dmf_m_piecemem_waits, "damselfly_piece_buffer_waits_total", NULL,
                   "Piece transfers held back because --memory-limit was reached");

/* In front of every buffer; 16 bytes keep the data as aligned as malloc's. */
struct header {
    size_t size;
    size_t pad;
};

static uint64_t used, limit;
static bool waiting; /* a transfer was refused since the last wake */
static void (*wake_cb)(void *arg);
static void *wake_arg;

void dmf_piecemem_set_wake(void (*wake)(void *arg), void *arg)
{
    wake_cb = wake;
    wake_arg = arg;
}

void dmf_piecemem_set_limit(uint64_t bytes)
{
    __atomic_store_n(&limit, bytes, __ATOMIC_RELAXED);
}

uint64_t dmf_piecemem_limit(void)
{
    return __atomic_load_n(&limit, __ATOMIC_RELAXED);
}

uint64_t dmf_piecemem_used(void)
{
    return __atomic_load_n(&used, __ATOMIC_RELAXED);
}

bool dmf_piecemem_may_grow(size_t n, size_t own)
{
    uint64_t lim = dmf_piecemem_limit(), held = dmf_piecemem_used();
    if (lim == 0 || held <= own || held + n <= lim)
        return true;
    __atomic_store_n(&waiting, true, __ATOMIC_RELAXED);
    dmf_metric_add(&dmf_m_piecemem_waits, 1);
    return false;
}

bool dmf_piecemem_may_start(size_t n)
{
    return dmf_piecemem_may_grow(n, 0);
}

static void account(int64_t delta)
{
    uint64_t now = __atomic_add_fetch(&used, (uint64_t)delta, __ATOMIC_RELAXED);
    dmf_metric_add(&dmf_m_piecemem_bytes, delta);
    int64_t peak = dmf_metric_get(&dmf_m_piecemem_peak);
    while ((int64_t)now > peak &&
           !__atomic_compare_exchange_n(&dmf_m_piecemem_peak.value, &peak, (int64_t)now, true,
                                        __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        ;
}

uint8_t *dmf_piecemem_realloc(uint8_t *p, size_t n)
{
    struct header *h = p ? (struct header *)(void *)p - 1 : NULL;
    size_t old = h ? h->size : 0;
    h = dmf_xrealloc(h, sizeof(*h) + n);
    h->size = n;
    account((int64_t)n - (int64_t)old);
    return (uint8_t *)(h + 1);
}

uint8_t *dmf_piecemem_alloc(size_t n)
{
    return dmf_piecemem_realloc(NULL, n);
}

void dmf_piecemem_free(uint8_t *p)
{
    if (p == NULL)
        return;
    struct header *h = (struct header *)(void *)p - 1;
    account(-(int64_t)h->size);
    free(h);
    /* Any free may be the one a refused caller waits for, even above the limit: one that
     * holds a buffer of its own may go on once nothing else is held. */
    if (wake_cb && __atomic_exchange_n(&waiting, false, __ATOMIC_RELAXED))
        wake_cb(wake_arg);
}
