/* `damselfly scheduler`: the gRPC Scheduler service plus a /metrics endpoint, until SIGINT or
 * SIGTERM. */
#include <errno.h>
#include <event2/event.h>
#include <event2/http.h>
#include <netdb.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/cmd.h"
#include "common/config.h"
#include "common/fdlimit.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/rpc.h"
#include "common/tls_identity.h"
#include "common/url_secrets.h"
#include "common/util.h"
#include "scheduler/manager_link.h"
#include "scheduler/provenance.h"
#include "scheduler/seed_list.h"
#include "scheduler/service.h"

struct scheduler_opts {
    char *listen;
    char *metrics_listen;
    int64_t candidate_limit;
    uint64_t host_timeout;
    int64_t bad_parent_threshold;
    int64_t unreachable_threshold;
    uint64_t negative_cache_ttl;
    char *parent_graph;
    char *digest_sources;
    char *log_level;
    struct dmf_strlist secret_query;
    struct dmf_strlist manager;
    char *advertise_ip;
    int64_t cluster_id;
    struct dmf_strlist seed_hosts;
    int64_t max_streams_per_host;
    int64_t max_registers_per_sec;
    int64_t register_burst;
    int64_t max_tasks_per_host;
    int64_t seed_triggers_per_min;
    int64_t seed_trigger_burst;
    uint64_t seed_trigger_bytes_per_hour;
    uint64_t peer_ttl;
    char *tls_cert, *tls_key, *tls_ca;
    char *cluster_key_file;
    uint64_t piece_token_ttl;
};

static const struct dmf_option options[] = {
    {"listen", 0, DMF_OPT_ADDR, offsetof(struct scheduler_opts, listen), 0, 0, "0.0.0.0:8002",
     "ADDR:PORT", "Address of the gRPC Scheduler service."},
    {"metrics-listen", 0, DMF_OPT_ADDR, offsetof(struct scheduler_opts, metrics_listen), 0, 0,
     "127.0.0.1:8003", "ADDR:PORT", "Address of the Prometheus endpoint (GET /metrics)."},
    {"parent-graph", 0, DMF_OPT_STRING, offsetof(struct scheduler_opts, parent_graph), 0, 0, "mesh",
     "mesh|dag",
     "mesh: peers exchange pieces both ways; dag: no peer is offered one of its descendants."},
    {"digest-sources", 0, DMF_OPT_STRING, offsetof(struct scheduler_opts, digest_sources), 0, 0,
     "fetchers", "fetchers|seeds",
     "Whose piece digests count. fetchers: seed hosts and peers this scheduler sent to the "
     "origin; seeds: seed hosts only. A peer in P2P mode never reports one."},
    {"candidate-limit", 0, DMF_OPT_INT, offsetof(struct scheduler_opts, candidate_limit), 1,
     DMF_SCHED_CANDIDATES_MAX, "16", "N", "Most parents a peer is given to download from."},
    {"host-timeout", 0, DMF_OPT_DURATION, offsetof(struct scheduler_opts, host_timeout), 1000,
     3600000, "10s", "DURATION",
     "A host that has not announced for this long is dropped with its peers."},
    {"bad-parent-threshold", 0, DMF_OPT_INT, offsetof(struct scheduler_opts, bad_parent_threshold),
     1, 1000, "2", "N",
     "Bad-piece reports (one per reporting peer) after which a host is never a parent again."},
    {"unreachable-threshold", 0, DMF_OPT_INT,
     offsetof(struct scheduler_opts, unreachable_threshold), 0, 8, "2", "N",
     "Distinct hosts that found a parent unreachable or stalled within a minute before it is "
     "offered to nobody until the reports age out (seeds exempt; 0 = never)."},
    {"negative-cache-ttl", 0, DMF_OPT_DURATION, offsetof(struct scheduler_opts, negative_cache_ttl),
     0, 3600000, "10s", "DURATION",
     "How long a task whose origin fetch failed for good (4xx, wrong digest) is answered "
     "with that error instead of a new fetch (0: never)."},
    {"secret-query", 0, DMF_OPT_LIST, offsetof(struct scheduler_opts, secret_query), 0, 0,
     DMF_SECRET_QUERY_DEFAULT, "NAME",
     "Query parameter hidden in what StatTask returns, besides each request's filtered ones "
     "(any case; repeatable, replaces the default list). URLs are never logged."},
    {"log-level", 0, DMF_OPT_STRING, offsetof(struct scheduler_opts, log_level), 0, 0, "info",
     "LEVEL", "debug, info, warn or error."},
    {"manager", 0, DMF_OPT_LIST, offsetof(struct scheduler_opts, manager), 0, 0, NULL, "ADDR:PORT",
     "Manager(s) to register with and take dynamic config from (repeatable)."},
    {"advertise-ip", 0, DMF_OPT_STRING, offsetof(struct scheduler_opts, advertise_ip), 0, 0, NULL,
     "IP", "Address daemons reach this scheduler at, given to the manager (default: --listen's)."},
    {"cluster-id", 0, DMF_OPT_INT, offsetof(struct scheduler_opts, cluster_id), 0, INT64_MAX, "0",
     "ID", "Manager cluster to join (0: the default cluster)."},
    {"seed-hosts", 0, DMF_OPT_LIST, offsetof(struct scheduler_opts, seed_hosts), 0, 0, NULL,
     "[ID|]IP:RPC_PORT",
     "The known seed peers (repeatable or comma-separated): a host is a seed, and is sent "
     "DownloadTask with the requester's headers, only when its announced id, ip and rpc port "
     "match an entry. A host announcing type=seed that matches none is a normal peer. "
     "Default: none (no host is a seed; peers fetch from the origin themselves)."},
    {"max-streams-per-host", 0, DMF_OPT_INT, offsetof(struct scheduler_opts, max_streams_per_host),
     1, 1000000, "1000", "N",
     "AnnouncePeer streams one host may keep registered at once (more: RESOURCE_EXHAUSTED)."},
    {"max-registers-per-sec", 0, DMF_OPT_INT,
     offsetof(struct scheduler_opts, max_registers_per_sec), 1, 1000000, "500", "N",
     "Sustained peer registers per second from one host (more: RESOURCE_EXHAUSTED)."},
    {"register-burst", 0, DMF_OPT_INT, offsetof(struct scheduler_opts, register_burst), 1, 10000000,
     "2000", "N", "Registers one host may make at once above --max-registers-per-sec."},
    {"max-tasks-per-host", 0, DMF_OPT_INT, offsetof(struct scheduler_opts, max_tasks_per_host), 1,
     1000000, "10000", "N",
     "Tasks (peers) the scheduler keeps for one host, finished ones included (more: "
     "RESOURCE_EXHAUSTED)."},
    {"seed-triggers-per-min", 0, DMF_OPT_INT,
     offsetof(struct scheduler_opts, seed_triggers_per_min), 1, 1000000, "60", "N",
     "Tasks one host's peers may make a seed fetch per minute; beyond it they go to the "
     "origin themselves."},
    {"seed-trigger-burst", 0, DMF_OPT_INT, offsetof(struct scheduler_opts, seed_trigger_burst), 1,
     1000000, "20", "N", "Seed triggers one host may cause at once above the rate."},
    {"seed-trigger-bytes-per-hour", 0, DMF_OPT_SIZE,
     offsetof(struct scheduler_opts, seed_trigger_bytes_per_hour), 0, 0, "100g", "BYTES",
     "Bytes one host's peers may make seeds fetch per hour, charged when a triggered task's "
     "size is known (at most 8 triggers of unknown size at once); beyond it they go to the "
     "origin themselves (0: no byte budget)."},
    {"peer-ttl", 0, DMF_OPT_DURATION, offsetof(struct scheduler_opts, peer_ttl), 0, 2592000000ULL,
     "1h", "DURATION",
     "A finished peer whose stream closed is forgotten after this long, so finished tasks do "
     "not pile up (0: never)."},
    {"tls-cert", 0, DMF_OPT_STRING, offsetof(struct scheduler_opts, tls_cert), 0, 0, NULL, "FILE",
     "PEM certificate of this scheduler (OU = scheduler), signed by --tls-ca: turns on mutual "
     "TLS; every caller must then present a certificate, and acts only for the host ID it "
     "names (scripts/make-certs.sh; the files are reread every 2 s: a rotated certificate "
     "serves new connections, open ones keep theirs)."},
    {"tls-key", 0, DMF_OPT_STRING, offsetof(struct scheduler_opts, tls_key), 0, 0, NULL, "FILE",
     "PEM private key of --tls-cert."},
    {"tls-ca", 0, DMF_OPT_STRING, offsetof(struct scheduler_opts, tls_ca), 0, 0, NULL, "FILE",
     "PEM CA certificate of the cluster, which signs every member's certificate."},
    {"cluster-key-file", 0, DMF_OPT_STRING, offsetof(struct scheduler_opts, cluster_key_file), 0, 0,
     NULL, "FILE",
     "The cluster's secret key (as the daemons'): the scheduler gives each child a token, bound "
     "to the task and the child's host ID, that its parents' piece servers check."},
    {"piece-token-ttl", 0, DMF_OPT_DURATION, offsetof(struct scheduler_opts, piece_token_ttl), 2000,
     86400000, "10m", "DURATION",
     "How long a piece-fetch token is valid; the scheduler sends a peer a fresh one when half of "
     "it is gone, for as long as the peer's stream lasts."},
};

static const char *bind_reason(int err)
{
    switch (err) {
    case EADDRINUSE:
        return "address in use";
    case EADDRNOTAVAIL:
        return "address not available";
    case EACCES:
        return "permission denied";
    default:
        return strerror(err);
    }
}

/* Opens a listening TCP socket on "HOST:PORT" (non-blocking). Returns the fd, or -1 with
 * "cannot listen on ADDR: reason" in err. */
static int open_listener(const char *addr, char *err, size_t errlen)
{
    char host[256], why[256], port_s[8];
    uint16_t port;
    if (dmf_parse_hostport(addr, host, sizeof(host), &port, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", addr, why);
        return -1;
    }
    snprintf(port_s, sizeof(port_s), "%u", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(host, port_s, &hints, &res);
    if (gai != 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", addr, gai_strerror(gai));
        return -1;
    }
    int fd = socket(res->ai_family, res->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int e = 0, one = 1;
    if (fd < 0) {
        e = errno;
    } else {
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 128) != 0) {
            e = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0)
        snprintf(err, errlen, "cannot listen on %s: %s", addr, bind_reason(e));
    return fd;
}

/* "HOST:PORT" with the port actually bound (the configured one unless it was 0). */
static void bound_addr(const char *addr, int port, char *out, size_t outlen)
{
    const char *colon = strrchr(addr, ':');
    int hl = colon ? (int)(colon - addr) : (int)strlen(addr);
    snprintf(out, outlen, "%.*s:%d", hl, addr, port);
}

static int socket_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0)
        return 0;
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

/* SIGHUP: nothing to reload by hand (gRPC rereads the TLS files every few seconds), but
 * say whether the files on disk now are good, and do not die of the signal. */
static void on_sighup(evutil_socket_t sig, short what, void *arg)
{
    dmf_rpc_t *rpc = arg;
    char err[512];
    if (!dmf_rpc_tls_on(rpc))
        dmf_info("SIGHUP: nothing to reload");
    else if (dmf_rpc_tls_recheck(rpc, err, sizeof(err)) != 0)
        dmf_warn("SIGHUP: the TLS files do not load: %s (new connections fail until they do)", err);
    else
        dmf_info("SIGHUP: the TLS files load; new connections use them within %d s",
                 DMF_RPC_TLS_REFRESH_S);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    dmf_info("signal %d: shutting down", (int)sig);
    event_base_loopbreak(arg);
}

static int run(int argc, char **argv)
{
    struct scheduler_opts o = {0};
    char err[512];
    bool help = false;
    int rc = 1, metrics_fd = -1;
    struct event_base *base = NULL;
    dmf_rpc_t *rpc = NULL;
    dmf_scheduler_service_t *svc = NULL;
    struct evhttp *http = NULL;
    struct dmf_listener_guard *guard = NULL;
    struct event *sigint = NULL, *sigterm = NULL, *sighup = NULL;
    dmf_manager_keepalive_t *mlink = NULL;
    struct dmf_seed_list *seeds = dmf_xcalloc(1, sizeof(*seeds));
    struct dmf_cluster_key *ckey = NULL; /* --cluster-key-file */

    if (dmf_config_parse(options, DMF_ARRAY_SIZE(options), &o, argc, argv, NULL, &help, err,
                         sizeof(err)) != 0) {
        fprintf(stderr, "damselfly scheduler: %s\n", err);
        return 2;
    }
    if (help) {
        dmf_config_usage(stdout, "damselfly scheduler [options]", dmf_cmd_scheduler.summary,
                         options, DMF_ARRAY_SIZE(options));
        rc = 0;
        goto out;
    }
    if (dmf_log_set_level(o.log_level) != 0) {
        fprintf(stderr,
                "damselfly scheduler: --log-level: '%s' is not debug, info, warn or error\n",
                o.log_level);
        rc = 2;
        goto out;
    }
    if (strcmp(o.parent_graph, "mesh") != 0 && strcmp(o.parent_graph, "dag") != 0) {
        fprintf(stderr, "damselfly scheduler: --parent-graph: '%s' is not mesh or dag\n",
                o.parent_graph);
        rc = 2;
        goto out;
    }
    for (size_t i = 0; i < o.seed_hosts.n; i++) {
        if (dmf_seed_list_add(seeds, o.seed_hosts.v[i], err, sizeof(err)) != 0) {
            fprintf(stderr, "damselfly scheduler: --seed-hosts: %s\n", err);
            rc = 2;
            goto out;
        }
    }
    enum dmf_digest_sources digest_sources;
    if (dmf_digest_sources_parse(o.digest_sources, &digest_sources) != 0) {
        fprintf(stderr, "damselfly scheduler: --digest-sources: '%s' is not fetchers or seeds\n",
                o.digest_sources);
        rc = 2;
        goto out;
    }
    if (o.cluster_key_file != NULL) {
        ckey = dmf_xcalloc(1, sizeof(*ckey));
        if (dmf_cluster_key_load(o.cluster_key_file, ckey, err, sizeof(err)) != 0) {
            fprintf(stderr, "damselfly scheduler: --cluster-key-file: %s\n", err);
            rc = 2;
            goto out;
        }
    }
    dmf_log_set_component("scheduler");
    signal(SIGPIPE, SIG_IGN);

    /* Bind the plain sockets first so a taken port is reported precisely: gRPC only says
     * that it could not bind. The gRPC port is probed and released. */
    int probe = open_listener(o.listen, err, sizeof(err));
    if (probe < 0) {
        fprintf(stderr, "damselfly scheduler: %s\n", err);
        goto out;
    }
    close(probe);
    metrics_fd = open_listener(o.metrics_listen, err, sizeof(err));
    if (metrics_fd < 0) {
        fprintf(stderr, "damselfly scheduler: %s\n", err);
        goto out;
    }

    base = dmf_rpc_event_base_new();
    rpc = dmf_rpc_new(base);
    struct dmf_tls_files tls = {.cert = o.tls_cert, .key = o.tls_key, .ca = o.tls_ca};
    if (dmf_rpc_tls_enable(rpc, &tls, err, sizeof(err)) != 0) {
        fprintf(stderr, "damselfly scheduler: --tls-cert/--tls-key/--tls-ca: %s\n", err);
        goto out;
    }
    const struct dmf_tls_identity *self = dmf_rpc_tls_identity(rpc);
    if (self && self->role != DMF_TLS_ROLE_SCHEDULER) {
        fprintf(stderr,
                "damselfly scheduler: --tls-cert %s is a %s certificate (host %s): a scheduler "
                "needs one whose OU is scheduler (scripts/make-certs.sh DIR host ID scheduler)\n",
                o.tls_cert, dmf_tls_role_name(self->role), self->host_id);
        goto out;
    }
    if (self)
        dmf_info("mutual TLS on: this scheduler is %s by its certificate; callers must present a "
                 "certificate signed by %s",
                 self->host_id, o.tls_ca);
    struct dmf_scheduler_service_config cfg = {
        .sched =
            {
                .candidate_limit = (uint32_t)o.candidate_limit,
                .host_timeout_ms = o.host_timeout,
                .bad_parent_threshold = (uint32_t)o.bad_parent_threshold,
                .unreachable_threshold = (uint32_t)o.unreachable_threshold,
                .mesh = strcmp(o.parent_graph, "mesh") == 0,
                .digest_sources = digest_sources,
                .secret_query = &o.secret_query,
                .negative_ttl_ms = o.negative_cache_ttl,
                .negative_ttl_set = true,
                .max_peers_per_host = (size_t)o.max_tasks_per_host,
                .peer_ttl_ms = o.peer_ttl,
                .peer_ttl_set = true,
            },
        .admission =
            {
                .streams_per_host = (uint32_t)o.max_streams_per_host,
                .registers_per_sec = (uint32_t)o.max_registers_per_sec,
                .register_burst = (uint32_t)o.register_burst,
                .triggers_per_min = (uint32_t)o.seed_triggers_per_min,
                .trigger_burst = (uint32_t)o.seed_trigger_burst,
                .trigger_bytes_per_hour = o.seed_trigger_bytes_per_hour,
            },
        .seeds = seeds,
        .cluster_key = ckey,
        .piece_token_ttl_s = (int64_t)(o.piece_token_ttl / 1000),
    };
    dmf_fd_limit_raise();
    svc = dmf_scheduler_service_new(base, rpc, &cfg);
    int port = 0;
    if (dmf_scheduler_service_listen(svc, o.listen, &port, err, sizeof(err)) != 0) {
        fprintf(stderr, "damselfly scheduler: %s\n", err);
        goto out;
    }

    http = evhttp_new(base);
    evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
    evhttp_set_cb(http, "/metrics", dmf_metrics_http_handler, NULL);
    struct evhttp_bound_socket *bound = evhttp_accept_socket_with_handle(http, metrics_fd);
    if (bound == NULL) {
        fprintf(stderr, "damselfly scheduler: cannot serve metrics on %s\n", o.metrics_listen);
        goto out;
    }
    guard = dmf_listener_guard_new(evhttp_bound_socket_get_listener(bound), "metrics");
    int metrics_port = socket_port(metrics_fd);
    metrics_fd = -1; /* evhttp owns it now */

    sigint = evsignal_new(base, SIGINT, on_signal, base);
    sigterm = evsignal_new(base, SIGTERM, on_signal, base);
    sighup = evsignal_new(base, SIGHUP, on_sighup, rpc);
    event_add(sigint, NULL);
    event_add(sigterm, NULL);
    event_add(sighup, NULL);
    dmf_scheduler_service_start(svc);

    char a[300], m[300];
    bound_addr(o.listen, port, a, sizeof(a));
    bound_addr(o.metrics_listen, metrics_port, m, sizeof(m));
    if (o.manager.n > 0) {
        char ip[256];
        const char *colon = strrchr(o.listen, ':');
        snprintf(ip, sizeof(ip), "%.*s", colon ? (int)(colon - o.listen) : 0, o.listen);
        if (!o.advertise_ip && (strcmp(ip, "0.0.0.0") == 0 || strcmp(ip, "[::]") == 0))
            snprintf(ip, sizeof(ip), "127.0.0.1");
        mlink = dmf_scheduler_manager_link_new(base, rpc, svc, &o.manager,
                                               o.advertise_ip ? o.advertise_ip : ip, port,
                                               (uint64_t)o.cluster_id);
    }
    if (seeds->n == 0)
        dmf_info("no --seed-hosts: no host is a seed (announced seeds are normal peers)");
    for (size_t i = 0; i < seeds->n; i++)
        dmf_info("known seed: %s%s%s:%u", seeds->v[i].id, seeds->v[i].id[0] ? "|" : "",
                 seeds->v[i].ip, seeds->v[i].rpc_port);
    printf("scheduler listening on %s (metrics on %s)\n", a, m);
    fflush(stdout);

    event_base_dispatch(base);
    rc = 0;
out:
    dmf_manager_keepalive_free(mlink);
    dmf_scheduler_service_free(svc);
    dmf_listener_guard_free(guard);
    if (http)
        evhttp_free(http);
    if (sigint)
        event_free(sigint);
    if (sigterm)
        event_free(sigterm);
    if (sighup)
        event_free(sighup);
    if (metrics_fd >= 0)
        close(metrics_fd);
    dmf_rpc_free(rpc);
    if (base)
        event_base_free(base);
    dmf_config_free(options, DMF_ARRAY_SIZE(options), &o);
    free(seeds);
    if (ckey != NULL) {
        dmf_cluster_key_clear(ckey);
        free(ckey);
    }
    return rc;
}

const struct dmf_cmd dmf_cmd_scheduler = {
    .name = "scheduler",
    .summary = "run the scheduler (knows hosts and tasks, picks each peer's parents)",
    .run = run,
    .options = options,
    .noptions = DMF_ARRAY_SIZE(options),
};
