/* Admission control; see admission.h. */
#include "scheduler/admission.h"

#include <stdlib.h>
#include <string.h>

#include "common/util.h"

/* A token bucket in milli-tokens, refilled lazily from the time of the last look. */
struct bucket {
    uint64_t milli;
    uint64_t at_ms;
};

/* Bytes a host's triggers may still make seeds fetch: refilled at trigger_bytes_per_hour up
 * to that much, charged when a triggered task's size is known (so it may go into debt). */
struct byte_budget {
    int64_t bytes;
    uint64_t at_ms;
};

struct dmf_admission_host {
    char *id;
    uint32_t streams;
    struct bucket registers;
    struct bucket triggers;
    struct byte_budget trigger_bytes;
    uint32_t unsized; /* triggers whose task's size is not known yet */
};

static void bucket_refill(struct bucket *b, uint64_t per_sec_milli_x1000, uint64_t burst,
                          uint64_t now)
{
    /* per_sec_milli_x1000: milli-tokens per second = tokens per second * 1000. */
    if (now > b->at_ms) {
        uint64_t add = (now - b->at_ms) * per_sec_milli_x1000 / 1000;
        b->milli = DMF_MIN(burst * 1000, b->milli + add);
        b->at_ms = now;
    }
}

static bool bucket_take(struct bucket *b, uint64_t rate_milli_per_sec, uint64_t burst, uint64_t now)
{
    bucket_refill(b, rate_milli_per_sec, burst, now);
    if (b->milli < 1000)
        return false;
    b->milli -= 1000;
    return true;
}

static void budget_refill(struct byte_budget *b, uint64_t per_hour, uint64_t now)
{
    if (now <= b->at_ms)
        return;
    uint64_t dt = DMF_MIN(now - b->at_ms, (uint64_t)3600000);
    uint64_t add = dt * (per_hour / 3600000) + dt * (per_hour % 3600000) / 3600000;
    int64_t cap = (int64_t)per_hour; /* <= INT64_MAX / 4 (init); bytes in [-cap, cap] */
    b->bytes = add >= (uint64_t)(cap - b->bytes) ? cap : b->bytes + (int64_t)add;
    b->at_ms = now;
}

/* Milli-tokens per second of each bucket. */
static uint64_t register_rate(const struct dmf_admission *a)
{
    return (uint64_t)a->cfg.registers_per_sec * 1000;
}

static uint64_t trigger_rate(const struct dmf_admission *a)
{
    return (uint64_t)a->cfg.triggers_per_min * 1000 / 60;
}

void dmf_admission_init(struct dmf_admission *a, const struct dmf_admission_config *cfg)
{
    a->cfg = *cfg;
    if (a->cfg.streams_per_host == 0)
        a->cfg.streams_per_host = 1000;
    if (a->cfg.registers_per_sec == 0)
        a->cfg.registers_per_sec = 500;
    if (a->cfg.register_burst == 0)
        a->cfg.register_burst = 2000;
    if (a->cfg.triggers_per_min == 0)
        a->cfg.triggers_per_min = 60;
    if (a->cfg.trigger_burst == 0)
        a->cfg.trigger_burst = 20;
    if (a->cfg.max_hosts == 0)
        a->cfg.max_hosts = 100000;
    if (a->cfg.trigger_unsized == 0)
        a->cfg.trigger_unsized = 8;
    a->cfg.trigger_bytes_per_hour = DMF_MIN(a->cfg.trigger_bytes_per_hour, (uint64_t)INT64_MAX / 4);
    dmf_strmap_init(&a->hosts);
}

static void host_free(struct dmf_admission_host *h)
{
    free(h->id);
    free(h);
}

void dmf_admission_free(struct dmf_admission *a)
{
    for (size_t i = 0; i < a->hosts.cap; i++)
        if (a->hosts.slots[i].key)
            host_free(a->hosts.slots[i].val);
    dmf_strmap_free(&a->hosts);
}

/* The host's entry, made with full buckets; NULL when max_hosts are tracked. */
static struct dmf_admission_host *host_get(struct dmf_admission *a, const char *id, uint64_t now)
{
    struct dmf_admission_host *h = dmf_strmap_get(&a->hosts, id);
    if (h != NULL || a->hosts.n >= a->cfg.max_hosts)
        return h;
    h = dmf_xcalloc(1, sizeof(*h));
    h->id = dmf_xstrdup(id);
    h->registers = (struct bucket){(uint64_t)a->cfg.register_burst * 1000, now};
    h->triggers = (struct bucket){(uint64_t)a->cfg.trigger_burst * 1000, now};
    h->trigger_bytes = (struct byte_budget){(int64_t)a->cfg.trigger_bytes_per_hour, now};
    dmf_strmap_put(&a->hosts, h->id, h);
    return h;
}

enum dmf_admission_refusal dmf_admission_register(struct dmf_admission *a, const char *host_id,
                                                  uint64_t now_ms)
{
    struct dmf_admission_host *h = host_get(a, host_id, now_ms);
    if (h == NULL)
        return DMF_ADMIT_HOSTS;
    if (h->streams >= a->cfg.streams_per_host)
        return DMF_ADMIT_STREAMS;
    if (!bucket_take(&h->registers, register_rate(a), a->cfg.register_burst, now_ms))
        return DMF_ADMIT_REGISTER_RATE;
    h->streams++;
    return DMF_ADMIT_OK;
}

void dmf_admission_stream_closed(struct dmf_admission *a, const char *host_id)
{
    struct dmf_admission_host *h = dmf_strmap_get(&a->hosts, host_id);
    if (h != NULL && h->streams > 0)
        h->streams--;
}

enum dmf_admission_refusal dmf_admission_trigger(struct dmf_admission *a, const char *host_id,
                                                 uint64_t now_ms)
{
    struct dmf_admission_host *h = host_get(a, host_id, now_ms);
    if (h == NULL)
        return DMF_ADMIT_HOSTS;
    if (a->cfg.trigger_bytes_per_hour > 0) {
        budget_refill(&h->trigger_bytes, a->cfg.trigger_bytes_per_hour, now_ms);
        if (h->trigger_bytes.bytes <= 0)
            return DMF_ADMIT_TRIGGER_BYTES;
    }
    if (h->unsized >= a->cfg.trigger_unsized)
        return DMF_ADMIT_TRIGGER_UNSIZED;
    if (!bucket_take(&h->triggers, trigger_rate(a), a->cfg.trigger_burst, now_ms))
        return DMF_ADMIT_TRIGGER_RATE;
    h->unsized++;
    return DMF_ADMIT_OK;
}

void dmf_admission_trigger_sized(struct dmf_admission *a, const char *host_id, int64_t bytes,
                                 uint64_t now_ms)
{
    struct dmf_admission_host *h = dmf_strmap_get(&a->hosts, host_id);
    if (h == NULL)
        return;
    if (h->unsized > 0)
        h->unsized--;
    if (bytes <= 0 || a->cfg.trigger_bytes_per_hour == 0)
        return;
    budget_refill(&h->trigger_bytes, a->cfg.trigger_bytes_per_hour, now_ms);
    int64_t floor = -(int64_t)a->cfg.trigger_bytes_per_hour; /* at most an hour in debt */
    int64_t *left = &h->trigger_bytes.bytes;
    *left = bytes >= *left - floor ? floor : *left - bytes;
}

int64_t dmf_admission_trigger_bytes_left(struct dmf_admission *a, const char *host_id,
                                         uint64_t now_ms)
{
    struct dmf_admission_host *h = dmf_strmap_get(&a->hosts, host_id);
    if (a->cfg.trigger_bytes_per_hour == 0)
        return INT64_MAX;
    if (h == NULL)
        return (int64_t)a->cfg.trigger_bytes_per_hour;
    budget_refill(&h->trigger_bytes, a->cfg.trigger_bytes_per_hour, now_ms);
    return h->trigger_bytes.bytes;
}

size_t dmf_admission_sweep(struct dmf_admission *a, uint64_t now_ms)
{
    size_t n = 0;
    for (size_t i = 0; i < a->hosts.cap;) {
        struct dmf_admission_host *h = a->hosts.slots[i].key ? a->hosts.slots[i].val : NULL;
        if (h == NULL || h->streams > 0 || h->unsized > 0) {
            i++;
            continue;
        }
        bucket_refill(&h->registers, register_rate(a), a->cfg.register_burst, now_ms);
        bucket_refill(&h->triggers, trigger_rate(a), a->cfg.trigger_burst, now_ms);
        budget_refill(&h->trigger_bytes, a->cfg.trigger_bytes_per_hour, now_ms);
        if (h->registers.milli < (uint64_t)a->cfg.register_burst * 1000 ||
            h->triggers.milli < (uint64_t)a->cfg.trigger_burst * 1000 ||
            h->trigger_bytes.bytes < (int64_t)a->cfg.trigger_bytes_per_hour) {
            i++;
            continue;
        }
        /* Backward-shift deletion may move another entry into slot i: look at it again. */
        dmf_strmap_del(&a->hosts, h->id);
        host_free(h);
        n++;
    }
    return n;
}

uint32_t dmf_admission_streams(const struct dmf_admission *a, const char *host_id)
{
    const struct dmf_admission_host *h = dmf_strmap_get(&a->hosts, host_id);
    return h ? h->streams : 0;
}

const char *dmf_admission_refusal_name(enum dmf_admission_refusal r)
{
    switch (r) {
    case DMF_ADMIT_STREAMS:
        return "streams";
    case DMF_ADMIT_REGISTER_RATE:
        return "register_rate";
    case DMF_ADMIT_HOSTS:
        return "hosts";
    case DMF_ADMIT_TRIGGER_RATE:
        return "trigger_budget";
    case DMF_ADMIT_TRIGGER_BYTES:
        return "trigger_bytes";
    case DMF_ADMIT_TRIGGER_UNSIZED:
        return "trigger_unsized";
    default:
        return "ok";
    }
}
