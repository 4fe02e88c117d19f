/* The components' side of the manager (manager.proto): a KeepAlive stream that registers a
 * scheduler or seed peer and pings it alive, and ListSchedulers for daemons. Both take a
 * list of managers and move on to the next one when a manager fails, so one dead manager
 * stops nothing. Everything runs on the loop thread. */
#ifndef DMF_MANAGER_CLIENT_H
#define DMF_MANAGER_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/config.h"
#include "common/rpc.h"
#include "damselfly/v1/manager.pb-c.h"

struct event_base;

/* A component's registration (strings copied). */
struct dmf_manager_component {
    bool seed; /* a seed peer, else a scheduler */
    const char *hostname;
    const char *ip;
    uint32_t port;       /* scheduler: gRPC port; seed: Daemon rpc port */
    uint32_t piece_port; /* seed only */
    const char *idc;
    const char *location;
    uint64_t cluster_id; /* 0 = the default cluster */
};

/* The cluster's dynamic config, as each KeepAlive answer or ListSchedulers brings it
 * (borrowed for the call). */
typedef void (*dmf_manager_config_cb)(void *arg, const Damselfly__V1__DynamicConfig *cfg);

typedef struct dmf_manager_keepalive dmf_manager_keepalive_t;

/* Opens the stream to managers[0] (then the next on failure, retrying every second) and
 * keeps it alive. managers is copied. on_config may be NULL. Never NULL. */
dmf_manager_keepalive_t *dmf_manager_keepalive_new(struct event_base *base, dmf_rpc_t *rpc,
                                                   const struct dmf_strlist *managers,
                                                   const struct dmf_manager_component *c,
                                                   dmf_manager_config_cb on_config, void *arg);
/* Closes the stream (the manager marks us inactive) and frees everything. */
void dmf_manager_keepalive_free(dmf_manager_keepalive_t *k);

/* The answer of ListSchedulers (borrowed for the callback), or resp == NULL when no manager
 * answered (err says why). */
typedef void (*dmf_manager_list_cb)(void *arg, const Damselfly__V1__ListSchedulersResponse *resp,
                                    const char *err);

typedef struct dmf_manager_list dmf_manager_list_t;

/* Asks managers in turn, starting with the first, each with timeout_ms. The handle is valid
 * until cb has run (then it is freed) or dmf_manager_list_cancel. */
dmf_manager_list_t *dmf_manager_list_schedulers(dmf_rpc_t *rpc, const struct dmf_strlist *managers,
                                                const Damselfly__V1__ListSchedulersRequest *req,
                                                uint64_t timeout_ms, dmf_manager_list_cb cb,
                                                void *arg);
/* Stops asking: cb never runs. */
void dmf_manager_list_cancel(dmf_manager_list_t *l);

#endif
