/* The Daemon gRPC service (DownloadTask, StatTask) for local clients and the scheduler. */
#ifndef DMF_LOCAL_SERVICE_H
#define DMF_LOCAL_SERVICE_H

#include "common/rpc.h"
#include "damselfly/v1/daemon.pb-c.h"

struct dmf_daemon;
struct dmf_download;

/* How a download's answers reach its client: over gRPC, or over the local HTTP API. */
struct dmf_download_transport {
    void (*send)(void *ctx, const Damselfly__V1__DownloadTaskResponse *r);
    /* The last call for this download: a gRPC status code and a one-line reason. The
     * transport may free the download (dmf_download_abandon) inside. */
    void (*finish)(void *ctx, int status, const char *details);
    /* Passes an open read-only descriptor of the task's data to the client (borrowed: the
     * caller closes it) before the answer that first lists its pieces, and again when the
     * task starts a fresh data file. NULL when the transport cannot carry descriptors
     * (gRPC over TCP). 0 or -errno. */
    int (*send_fd)(void *ctx, int fd);
};

/* Validates the request, derives the task ID and starts (or joins, or answers from the
 * cache) the download; answers go through tr. The transport owns the returned download
 * and must dmf_download_abandon() it once the client is gone or finish was called. */
struct dmf_origin_policy;
/* policy (borrowed, may be NULL): the request comes from another host, so the origin
 * fetch is held to it (origin_policy.h); a URL it refuses fails at once with
 * PERMISSION_DENIED. NULL: a local client's request. */
struct dmf_download *dmf_download_start(struct dmf_daemon *d,
                                        const Damselfly__V1__DownloadTaskRequest *req,
                                        const struct dmf_download_transport *tr, void *ctx,
                                        const struct dmf_origin_policy *policy);
void dmf_download_abandon(struct dmf_download *dl);

/* Registers damselfly_rpc_refused_total (call once at start). */
void dmf_local_service_metrics_register(void);
/* dmf_rpc_on_call for a server whose arg is the struct dmf_daemon. */
void dmf_local_service_on_call(void *arg, dmf_rpc_call_t *call, const char *method);

#endif
