/* The daemon's bandwidth limits; see limits.h. */
#include "daemon/limits.h"

#include <stdio.h>

#include "common/log.h"
#include "common/throttle.h"

static uint64_t lower_set(uint64_t a, uint64_t b)
{
    if (a == 0)
        return b;
    if (b == 0)
        return a;
    return a < b ? a : b;
}

struct dmf_limits dmf_limits_effective(const struct dmf_limits *local,
                                       const struct dmf_limits *manager)
{
    struct dmf_limits e = {
        .download = lower_set(local->download, manager->download),
        .origin = lower_set(local->origin, manager->origin),
        .upload = lower_set(local->upload, manager->upload),
    };
    e.origin = lower_set(e.origin, e.download);
    return e;
}

uint64_t dmf_limits_upload_capacity(uint64_t configured, uint64_t upload_limit)
{
    return upload_limit && upload_limit < configured ? upload_limit : configured;
}

static void apply(struct dmf_daemon *d, const char *why)
{
    struct dmf_limits e = dmf_limits_effective(&d->limits_local, &d->limits_manager);
    const uint64_t v[DMF_LIMIT_KINDS] = {e.download, e.origin, e.upload};
    for (int k = 0; k < DMF_LIMIT_KINDS; k++) {
        uint64_t was = dmf_throttle_get(d->throttle, k);
        if (was == v[k])
            continue;
        char a[32], b[32];
        if (was)
            snprintf(a, sizeof(a), "%llu B/s", (unsigned long long)was);
        else
            snprintf(a, sizeof(a), "unlimited");
        if (v[k])
            snprintf(b, sizeof(b), "%llu B/s", (unsigned long long)v[k]);
        else
            snprintf(b, sizeof(b), "unlimited");
        dmf_info("limits (%s): %s-limit %s -> %s", why, dmf_limit_name(k), a, b);
        dmf_throttle_set(d->throttle, k, v[k]);
    }
}

void dmf_daemon_limits_set_local(struct dmf_daemon *d, const struct dmf_limits *l, const char *why)
{
    d->limits_local = *l;
    apply(d, why);
}

void dmf_daemon_limits_set_manager(struct dmf_daemon *d, const struct dmf_limits *l)
{
    d->limits_manager = *l;
    apply(d, "manager");
}

uint64_t dmf_daemon_upload_capacity(const struct dmf_daemon *d)
{
    uint64_t up = d->throttle ? dmf_throttle_get(d->throttle, DMF_LIMIT_UPLOAD) : 0;
    return dmf_limits_upload_capacity(d->cfg.upload_capacity, up);
}
