/* The manager's gRPC service (manager.proto) over src/common/rpc.h: schedulers' and seeds'
 * KeepAlive streams (register, pings, inactive at once when the stream ends or goes quiet
 * past the keepalive timeout) and daemons' ListSchedulers (cluster matched by scopes,
 * active schedulers only, the cluster's dynamic config). Database work runs on the worker
 * pool; every callback here runs on the loop. */
#ifndef DMF_MANAGER_GRPC_SERVICE_H
#define DMF_MANAGER_GRPC_SERVICE_H

#include <stddef.h>

#include "manager/manager.h"

typedef struct dmf_manager_grpc dmf_manager_grpc_t;

dmf_manager_grpc_t *dmf_manager_grpc_new(struct dmf_manager *m);
/* Adds "HOST:PORT"; *bound_port gets the port. 0 or a negative code with a reason in err. */
int dmf_manager_grpc_listen(dmf_manager_grpc_t *g, const char *addr, int *bound_port, char *err,
                            size_t errlen);
void dmf_manager_grpc_start(dmf_manager_grpc_t *g);
/* Stops the server and releases every call: before dmf_workq_free (whose done() callbacks
 * then only drop their results) and dmf_rpc_free. */
void dmf_manager_grpc_stop(dmf_manager_grpc_t *g);
/* Frees the service; after dmf_workq_free. */
void dmf_manager_grpc_free(dmf_manager_grpc_t *g);

#endif
