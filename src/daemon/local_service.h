/* The Daemon gRPC service (DownloadTask, StatTask) for local clients and the scheduler. */
#ifndef DMF_LOCAL_SERVICE_H
#define DMF_LOCAL_SERVICE_H

#include "common/rpc.h"

/* dmf_rpc_on_call for a server whose arg is the struct dmf_daemon. */
void dmf_local_service_on_call(void *arg, dmf_rpc_call_t *call, const char *method);

#endif
