/* The scheduler's link to the manager; see manager_link.h. */
#include "scheduler/manager_link.h"

#include <stdio.h>
#include <unistd.h>

#include "common/log.h"

static void on_config(void *arg, const Damselfly__V1__DynamicConfig *cfg)
{
    dmf_scheduler_t *s = dmf_scheduler_service_sched(arg);
    if (cfg->candidate_limit == 0)
        return; /* the cluster leaves it to --candidate-limit */
    uint32_t before = dmf_scheduler_set_candidate_limit(s, 0);
    uint32_t now = dmf_scheduler_set_candidate_limit(s, cfg->candidate_limit);
    if (now != before)
        dmf_info("manager: candidate limit %u -> %u", before, now);
}

dmf_manager_keepalive_t *dmf_scheduler_manager_link_new(struct event_base *base, dmf_rpc_t *rpc,
                                                        dmf_scheduler_service_t *svc,
                                                        const struct dmf_strlist *managers,
                                                        const char *advertise_ip, int port,
                                                        uint64_t cluster_id)
{
    char hn[256] = "";
    gethostname(hn, sizeof(hn) - 1);
    struct dmf_manager_component c = {
        .seed = false,
        .hostname = hn,
        .ip = advertise_ip,
        .port = (uint32_t)port,
        .cluster_id = cluster_id,
    };
    return dmf_manager_keepalive_new(base, rpc, managers, &c, on_config, svc);
}
