/* The job runner; see jobs.h. */
#include "manager/jobs.h"

#include <event2/event.h>
#include <stdlib.h>

#include "common/log.h"
#include "common/util.h"

struct dmf_manager_jobs {
    struct dmf_manager *m;
    struct event *tick;
};

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
}

struct dmf_manager_jobs *dmf_jobs_start(struct dmf_manager *m)
{
    struct dmf_manager_jobs *j = dmf_xcalloc(1, sizeof(*j));
    j->m = m;
    j->tick = event_new(m->base, -1, EV_PERSIST, on_tick, j);
    struct timeval tv = {1, 0};
    event_add(j->tick, &tv);
    return j;
}

void dmf_jobs_kick(struct dmf_manager_jobs *j)
{
    event_active(j->tick, EV_TIMEOUT, 0);
}

void dmf_jobs_stop(struct dmf_manager_jobs *j)
{
    if (!j)
        return;
    event_free(j->tick);
    free(j);
}
