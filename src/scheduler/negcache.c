/* The scheduler's negative cache; see negcache.h. */
#include "scheduler/negcache.h"

#include <stdio.h>
#include <stdlib.h>

#include "common/util.h"

void dmf_negcache_init(struct dmf_negcache *nc, uint64_t ttl_ms, size_t max)
{
    dmf_strmap_init(&nc->map);
    TAILQ_INIT(&nc->order);
    nc->n = 0;
    nc->max = max;
    nc->ttl_ms = ttl_ms;
}

static void drop(struct dmf_negcache *nc, struct dmf_negcache_entry *e)
{
    dmf_strmap_del(&nc->map, e->task_id);
    TAILQ_REMOVE(&nc->order, e, link);
    nc->n--;
    free(e->task_id);
    free(e);
}

void dmf_negcache_free(struct dmf_negcache *nc)
{
    while (!TAILQ_EMPTY(&nc->order))
        drop(nc, TAILQ_FIRST(&nc->order));
    dmf_strmap_free(&nc->map);
}

static void expire(struct dmf_negcache *nc, uint64_t now)
{
    struct dmf_negcache_entry *e;
    while ((e = TAILQ_FIRST(&nc->order)) != NULL && e->expires <= now)
        drop(nc, e);
}

void dmf_negcache_put(struct dmf_negcache *nc, const char *task_id, uint32_t origin_status,
                      const char *reason, uint64_t now)
{
    if (nc->ttl_ms == 0 || nc->max == 0)
        return;
    expire(nc, now);
    struct dmf_negcache_entry *e = dmf_strmap_get(&nc->map, task_id);
    if (e != NULL)
        drop(nc, e);
    while (nc->n >= nc->max)
        drop(nc, TAILQ_FIRST(&nc->order));
    e = dmf_xcalloc(1, sizeof(*e));
    e->task_id = dmf_xstrdup(task_id);
    snprintf(e->reason, sizeof(e->reason), "%s", reason ? reason : "failed");
    e->origin_status = origin_status;
    e->expires = now + nc->ttl_ms;
    TAILQ_INSERT_TAIL(&nc->order, e, link);
    dmf_strmap_put(&nc->map, e->task_id, e);
    nc->n++;
}

const struct dmf_negcache_entry *dmf_negcache_get(struct dmf_negcache *nc, const char *task_id,
                                                  uint64_t now)
{
    expire(nc, now);
    return dmf_strmap_get(&nc->map, task_id);
}
