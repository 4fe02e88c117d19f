/* `damselfly scheduler --manager ADDR`: the scheduler registers with the manager (a
 * KeepAlive stream, common/manager_client.h) and applies its cluster's dynamic config
 * (candidate limit) as it changes, without a restart. */
#ifndef DMF_SCHEDULER_MANAGER_LINK_H
#define DMF_SCHEDULER_MANAGER_LINK_H

#include <stdint.h>

#include "common/config.h"
#include "common/manager_client.h"
#include "scheduler/service.h"

/* Registers the scheduler serving on advertise_ip:port in cluster_id (0 = default) with
 * the first reachable manager. svc is borrowed. */
dmf_manager_keepalive_t *dmf_scheduler_manager_link_new(struct event_base *base, dmf_rpc_t *rpc,
                                                        dmf_scheduler_service_t *svc,
                                                        const struct dmf_strlist *managers,
                                                        const char *advertise_ip, int port,
                                                        uint64_t cluster_id);

#endif
