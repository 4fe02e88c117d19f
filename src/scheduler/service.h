/* The gRPC Scheduler service (scheduler.proto) over src/common/rpc.h: unpacks each request,
 * hands it to the scheduler's state (sched.h) and turns its decisions into
 * AnnouncePeerResponse messages on the right stream. It also triggers seeds (DownloadTask
 * on the seed's Daemon service, one channel per seed host), expires hosts every second and
 * keeps the damselfly_scheduler_* metrics. See docs/internals/SCHEDULER.md. */
#ifndef DMF_SCHEDULER_SERVICE_H
#define DMF_SCHEDULER_SERVICE_H

#include <stddef.h>

#include "common/piece_token.h"
#include "common/rpc.h"
#include "scheduler/admission.h"
#include "scheduler/sched.h"
#include "scheduler/seed_list.h"

struct event_base;

typedef struct dmf_scheduler_service dmf_scheduler_service_t;

struct dmf_scheduler_service_config {
    struct dmf_scheduler_config sched;
    struct dmf_admission_config admission;
    /* The known seeds: a host announcing type=seed that matches none is a normal peer.
     * Borrowed for the call; copied. NULL or empty: no host is a seed. */
    const struct dmf_seed_list *seeds;
    /* --cluster-key-file: every Candidates carries a piece-fetch token for the task and
     * the peer's host, renewed while the stream lasts (piece_token.h). Borrowed for the
     * call; copied. NULL: no tokens. */
    const struct dmf_cluster_key *cluster_key;
    int64_t piece_token_ttl_s; /* a token's life (renewed at half of it); 0: 600 */
};

/* Creates the service and its gRPC server on rpc (both borrowed; they outlive the
 * service). cfg is copied. Registers the metrics. Never NULL. */
dmf_scheduler_service_t *dmf_scheduler_service_new(struct event_base *base, dmf_rpc_t *rpc,
                                                   const struct dmf_scheduler_service_config *cfg);
/* Adds a listening address ("HOST:PORT"); *bound_port (may be NULL) gets the port. Returns
 * 0, or a negative code with "cannot listen on ADDR: reason" in err. */
int dmf_scheduler_service_listen(dmf_scheduler_service_t *svc, const char *addr, int *bound_port,
                                 char *err, size_t errlen);
/* Starts serving and the once-a-second host expiry. */
void dmf_scheduler_service_start(dmf_scheduler_service_t *svc);
/* The scheduler's state (borrowed), for the manager link's dynamic config. */
dmf_scheduler_t *dmf_scheduler_service_sched(dmf_scheduler_service_t *svc);
/* Stops the server (every call is cancelled), ends the seed triggers and frees everything.
 * Must run before dmf_rpc_free(). */
void dmf_scheduler_service_free(dmf_scheduler_service_t *svc);

#endif
