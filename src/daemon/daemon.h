/* The daemon's shared context: configuration and the long-lived objects every daemon
 * module uses. One per process; everything runs on its event loop thread. */
#ifndef DMF_DAEMON_H
#define DMF_DAEMON_H

#include <stdbool.h>
#include <stdint.h>

#include "common/config.h"
#include "common/http_client.h"
#include "common/metrics.h"
#include "common/rpc.h"
#include "common/throttle.h"
#include "daemon/piece_server.h"
#include "daemon/store.h"

struct dmf_daemon_config {
    char *scheduler; /* "HOST:PORT" or NULL: no scheduler, every download from the origin */
    char *data_dir;
    char *ip;           /* the address peers and the scheduler reach us at */
    char *piece_listen; /* "ADDR:PORT" of the piece server */
    char *rpc_listen;   /* "ADDR:PORT" of the Daemon gRPC service for the scheduler */
    char *socket;       /* unix socket of the local Daemon gRPC service */
    char *socket_group; /* group (name or GID) allowed to use it, or NULL */
    char *socket_mode;  /* its permission bits (octal), or NULL for the default */
    bool seed;
    char *host_id;
    char *hostname;
    char *idc;
    char *location;
    uint64_t upload_capacity; /* bytes per second, announced to the scheduler */
    uint64_t download_limit;  /* bytes per second, 0 = unlimited (limits.h) */
    uint64_t origin_limit;
    uint64_t upload_limit;
    uint64_t announce_interval;      /* ms */
    uint64_t parent_stall_timeout;   /* ms without any usable parent before going to the origin */
    uint64_t revalidate_after;       /* ms: age of a cached URL task checked with the origin */
    uint64_t progress_timeout;       /* ms: the progress watchdog's upper bound (watchdog.h) */
    int64_t source_concurrency;      /* parallel range requests to the origin */
    int64_t parent_concurrency;      /* piece requests in flight per parent */
    int64_t upload_slots;            /* piece uploads at once; more requests wait */
    uint64_t memory_limit;           /* bytes of piece buffers (piecemem.h), 0 = no bound */
    struct dmf_strlist secret_query; /* query parameters never stored, logged or shown */
    uint64_t cache_limit;   /* bytes of task data; 0: by the filesystem's use (80 % -> 70 %) */
    uint64_t task_ttl;      /* ms without use before a task is evicted */
    uint64_t gc_interval;   /* ms between cache checks */
    int64_t max_open_files; /* data files open at once; 0: from the nofile limit */
    char *log_level;
    char *config; /* the YAML file given with --config, or NULL */

    /* The HTTP proxy (proxy.h). */
    char *proxy_listen;                     /* "ADDR:PORT", or "off"/"" for no proxy */
    char *registry_mirror;                  /* default upstream registry URL, or NULL */
    struct dmf_strlist registry_map;        /* "HOST=URL": upstream for a registry name (?ns=) */
    struct dmf_strlist proxy_intercept;     /* CONNECT hosts whose TLS is terminated */
    char *proxy_ca_cert, *proxy_ca_key;     /* the operator's CA for interception (PEM) */
    char *origin_ca_file;                   /* extra CAs trusted for HTTPS origins (PEM) */
    struct dmf_strlist proxy_allow_clients; /* CIDRs of clients; empty = loopback only */
    struct dmf_strlist proxy_allow_targets; /* CIDRs reachable despite the target policy */
    struct dmf_strlist proxy_connect_ports; /* CONNECT ports ("*" any); empty = 443 */
    char *origin_proxy;                     /* proxy for the daemon's own outbound HTTP, or NULL */
    unsigned long proxy_rules_line;         /* line of proxy-rules in the config file, 0 = none */
    uint64_t piece_idle_timeout;            /* ms: piece server connection idle or stalled */
    uint64_t piece_header_timeout;          /* ms: accept to the first request head */
    uint64_t proxy_header_timeout;          /* ms from a request head's first byte to its end */
    uint64_t proxy_idle_timeout;   /* ms: keep-alive idle, a client not reading, a connect */
    uint64_t proxy_tunnel_timeout; /* ms without a byte either way in a CONNECT tunnel */

    struct dmf_strlist manager; /* managers giving the schedulers (manager_link.h) */

    /* Requests from other hosts (DownloadTask on the rpc port). */
    struct dmf_strlist origin_allow; /* CIDRs / host names the origin policy allows */
    struct dmf_strlist origin_deny;  /* CIDRs / host names it refuses */
    struct dmf_strlist rpc_allow;    /* callers allowed besides the schedulers and managers */

    /* Mutual TLS on the rpc port, the piece server and their client sides (common/tls.h):
     * all three or none. The certificate's CN is this host's ID. */
    char *tls_cert, *tls_key, *tls_ca;
    char *cluster_key_file; /* HMAC key of piece-fetch tokens (common/piece_token.h) */
};

/* Host bandwidth limits in bytes per second; 0 = unlimited (limits.h applies them). */
struct dmf_limits {
    uint64_t download, origin, upload;
};

struct dmf_engine;
struct dmf_open_files;
struct dmf_cache_gc;
struct dmf_proxy;
struct dmf_daemon_manager_link;
struct dmf_origin_policy;
struct dmf_rpc_acl;

struct dmf_daemon {
    struct dmf_daemon_config cfg;
    struct event_base *base;
    dmf_rpc_t *rpc;
    dmf_http_t *http;
    struct dmf_workq *workq; /* hashes and writes pieces off the loop */
    dmf_store_t *store;
    dmf_piece_server_t *pieces;
    struct dmf_local_api *local_api; /* unix socket (local_api.h) */
    dmf_rpc_server_t *rpc_server;    /* TCP, for the scheduler */
    int rpc_port;                    /* bound TCP port of rpc_server */
    uint16_t piece_port;
    struct dmf_engine *engine;         /* the download engine (peer/engine.h) */
    struct dmf_open_files *open_files; /* tasks' data-file descriptors (peer/data_file.h) */
    struct dmf_cache_gc *cache_gc;     /* the cache's eviction (peer/cache_gc.h) */
    struct dmf_proxy *proxy;           /* NULL with --proxy-listen off */
    /* The manager's ListSchedulers polls and a seed's KeepAlive; NULL without --manager. */
    struct dmf_daemon_manager_link *manager_link;
    struct dmf_origin_policy *origin_policy; /* for fetches others ask for (owned) */
    struct dmf_rpc_acl *rpc_acl;             /* who may call DownloadTask (owned) */
    /* Bandwidth limits: the host's buckets, and where their values come from (limits.h). */
    dmf_throttle_t *throttle;
    struct dmf_limits limits_local, limits_manager;
    uint64_t cache_limit_manager; /* the cluster's cache limit (manager_link.h); 0 = none */
    bool stopping;

    /* --tls-*: pieces are fetched from other daemons over mutual TLS. */
    bool peer_tls;
};

#endif
