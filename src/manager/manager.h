/* What every part of the manager shares: the loop, the worker pool, the database and the
 * settings. The REST API (api.h), the gRPC service (grpc_service.h) and the job runner
 * (jobs.h) each take a pointer to it. */
#ifndef DMF_MANAGER_MANAGER_H
#define DMF_MANAGER_MANAGER_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "common/rpc.h"
#include "common/workq.h"
#include "manager/mdb.h"

struct event_base;

struct dmf_manager {
    struct event_base *base;
    dmf_workq_t *wq;
    dmf_mdb_t *db;
    dmf_rpc_t *rpc;
    char id[96];                     /* this manager: "hostname-pid-start", claims jobs */
    uint64_t keepalive_timeout_ms;   /* a component silent this long is inactive */
    uint64_t session_ttl_s;          /* a sign-in's lifetime */
    uint64_t config_interval_ms;     /* daemons re-poll their dynamic config this often */
    struct dmf_manager_jobs *jobs;   /* jobs.h */
    struct dmf_signin_limit *signin; /* failed sign-ins per address and name (signin_limit.h) */
    struct dmf_job_secrets *secrets; /* jobs' credentials, in memory only (job_secrets.h) */
    bool stopping;
};

/* Seconds since the epoch (the one clock of the manager's records). */
static inline int64_t dmf_manager_now(void)
{
    return (int64_t)time(NULL);
}

#endif
