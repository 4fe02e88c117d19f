/* `damselfly daemon`: one per host. Stores, uploads and downloads pieces; serves the
 * local API on a unix socket; a seed (--seed) fetches from origins for the cluster. */
#include <errno.h>
#include <event2/event.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/cmd.h"
#include "common/config.h"
#include "common/log.h"
#include "common/util.h"
#include "common/workq.h"
#include "daemon/daemon.h"
#include "daemon/api/local_api.h"
#include "daemon/api/local_service.h"
#include "daemon/proxy/proxy.h"
#include "daemon/proxy/registry.h"
#include "daemon/peer/announce.h"
#include "daemon/peer/task.h"

#define OPT(n, s, t, f, lo, hi, def, mv, h)                                                        \
    {                                                                                              \
        n, s, t, offsetof(struct dmf_daemon_config, f), lo, hi, def, mv, h                         \
    }

static const struct dmf_option options[] = {
    OPT("scheduler", 0, DMF_OPT_ADDR, scheduler, 0, 0, NULL, "ADDR:PORT",
        "scheduler to announce to; without one every download goes to the origin"),
    OPT("data-dir", 0, DMF_OPT_STRING, data_dir, 0, 0, "/var/lib/damselfly", "DIR",
        "where pieces and their metadata are kept"),
    OPT("ip", 0, DMF_OPT_STRING, ip, 0, 0, "127.0.0.1", "ADDR",
        "address other hosts and the scheduler reach this host at"),
    OPT("piece-listen", 0, DMF_OPT_ADDR, piece_listen, 0, 0, "0.0.0.0:65002", "ADDR:PORT",
        "piece server (data plane between daemons, and /metrics)"),
    OPT("rpc-listen", 0, DMF_OPT_ADDR, rpc_listen, 0, 0, NULL, "ADDR:PORT",
        "gRPC Daemon service for the scheduler (default: --ip with any free port)"),
    OPT("socket", 0, DMF_OPT_STRING, socket, 0, 0, "/run/damselfly/daemon.sock", "PATH",
        "unix socket of the local API used by `damselfly get`"),
    OPT("seed", 0, DMF_OPT_BOOL, seed, 0, 0, "false", NULL,
        "be a seed peer: fetch from origins when the scheduler asks, and cache"),
    OPT("host-id", 0, DMF_OPT_STRING, host_id, 0, 0, NULL, "ID",
        "this host's ID (default: HOSTNAME-IP-PIECEPORT)"),
    OPT("idc", 0, DMF_OPT_STRING, idc, 0, 0, "", "NAME", "data centre label (locality)"),
    OPT("location", 0, DMF_OPT_STRING, location, 0, 0, "", "A|B|C",
        "location labels, most general first (locality)"),
    OPT("upload-capacity", 0, DMF_OPT_SIZE, upload_capacity, 0, 0, "1g", "BYTES/S",
        "upload bandwidth this host offers, announced to the scheduler"),
    OPT("announce-interval", 0, DMF_OPT_DURATION, announce_interval, 100, 600000, "2s", "DURATION",
        "how often the host announces itself to the scheduler"),
    OPT("parent-stall-timeout", 0, DMF_OPT_DURATION, parent_stall_timeout, 100, 600000, "3s",
        "DURATION", "with no usable parent this long, fetch from the origin"),
    OPT("source-concurrency", 0, DMF_OPT_INT, source_concurrency, 1, 16, "4", "N",
        "parallel range requests to an origin"),
    OPT("parent-concurrency", 0, DMF_OPT_INT, parent_concurrency, 1, 16, "2", "N",
        "piece requests in flight per parent"),
    OPT("upload-slots", 0, DMF_OPT_INT, upload_slots, 1, 256, "2", "N",
        "piece uploads at once (or one per 4 children watching, if more); further requests "
        "wait, those of the children furthest behind first"),
    OPT("log-level", 0, DMF_OPT_STRING, log_level, 0, 0, "info", "LEVEL",
        "debug, info, warn or error"),
    OPT("config", 0, DMF_OPT_STRING, config, 0, 0, NULL, "FILE",
        "read options from this YAML file (flags override it)"),
    OPT("proxy-listen", 0, DMF_OPT_STRING, proxy_listen, 0, 0, "0.0.0.0:65001", "ADDR:PORT",
        "HTTP proxy and registry mirror for local clients; 'off' for none"),
    OPT("registry-mirror", 0, DMF_OPT_STRING, registry_mirror, 0, 0, NULL, "URL",
        "default upstream registry of mirror requests without ?ns= (e.g. https://registry:5000)"),
    OPT("registry-map", 0, DMF_OPT_LIST, registry_map, 0, 0, NULL, "HOST=URL",
        "upstream URL of the registry a mirror request names in ?ns=HOST"),
    OPT("proxy-intercept", 0, DMF_OPT_LIST, proxy_intercept, 0, 0, NULL, "HOST[:PORT]",
        "CONNECT target whose TLS the proxy terminates with --proxy-ca-cert ('*' for all)"),
    OPT("proxy-ca-cert", 0, DMF_OPT_STRING, proxy_ca_cert, 0, 0, NULL, "FILE",
        "PEM CA certificate that signs the proxy's per-host certificates"),
    OPT("proxy-ca-key", 0, DMF_OPT_STRING, proxy_ca_key, 0, 0, NULL, "FILE",
        "PEM private key of --proxy-ca-cert"),
    OPT("origin-ca-file", 0, DMF_OPT_STRING, origin_ca_file, 0, 0, NULL, "FILE",
        "PEM CA certificates trusted for HTTPS origins and registries, besides the system's"),
    OPT("proxy-rules", 0, DMF_OPT_YAML, proxy_rules_line, 0, 0, NULL, NULL,
        "forward-proxy rules: a list of {regex, p2p}; the first match decides (see "
        "docs/operations.md)"),
};

static const char usage[] =
    "damselfly daemon [--scheduler ADDR:PORT] [--data-dir DIR] [--ip ADDR]\n"
    "                 [--piece-listen ADDR:PORT] [--socket PATH] [--seed] [options]";

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct dmf_daemon *d = arg;
    dmf_info("signal %d: shutting down", (int)sig);
    d->stopping = true;
    event_base_loopbreak(d->base);
}

/* A socket file left by a daemon that died: remove it; one in use: refuse. */
static int prepare_socket_path(const char *path, char *err, size_t errlen)
{
    struct sockaddr_un sa;
    if (strlen(path) >= sizeof(sa.sun_path)) {
        snprintf(err, errlen, "socket path too long: %s", path);
        return -ENAMETOOLONG;
    }
    char *dir = dmf_xstrdup(path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        int e = dmf_mkdir_p(dir);
        if (e != 0) {
            snprintf(err, errlen, "cannot create %s: %s", dir, dmf_strerror(e));
            free(dir);
            return e;
        }
    }
    free(dir);
    struct stat st;
    if (lstat(path, &st) != 0)
        return 0;
    if (!S_ISSOCK(st.st_mode)) {
        snprintf(err, errlen, "%s exists and is not a socket", path);
        return -EEXIST;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int in_use = fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    if (fd >= 0)
        close(fd);
    if (in_use) {
        snprintf(err, errlen, "another daemon is listening on %s", path);
        return -EADDRINUSE;
    }
    unlink(path);
    return 0;
}

static int run(int argc, char **argv)
{
    struct dmf_daemon d;
    memset(&d, 0, sizeof(d));
    struct dmf_daemon_config *cfg = &d.cfg;
    char err[512];
    bool help = false;
    int rc = 1;
    struct event *sigint = NULL, *sigterm = NULL;
    struct dmf_proxy_rules rules = {0};
    size_t nrules = 0;

    if (dmf_config_parse(options, DMF_ARRAY_SIZE(options), cfg, argc, argv, NULL, &help, err,
                         sizeof(err)) != 0) {
        fprintf(stderr, "damselfly daemon: %s\n", err);
        return 2;
    }
    if (help) {
        dmf_config_usage(stdout, usage,
                         "Run a daemon: download, store and upload pieces for this host.", options,
                         DMF_ARRAY_SIZE(options));
        dmf_config_free(options, DMF_ARRAY_SIZE(options), cfg);
        return 0;
    }
    dmf_log_set_component(cfg->seed ? "seed" : "daemon");
    if (dmf_log_set_level(cfg->log_level) != 0) {
        fprintf(stderr, "damselfly daemon: --log-level: '%s' is not debug, info, warn or error\n",
                cfg->log_level);
        goto out_cfg;
    }
    bool proxy_on =
        cfg->proxy_listen && cfg->proxy_listen[0] && strcmp(cfg->proxy_listen, "off") != 0;
    if (proxy_on) {
        char h[256];
        uint16_t pp;
        if (dmf_parse_hostport(cfg->proxy_listen, h, sizeof(h), &pp, err, sizeof(err)) != 0) {
            fprintf(stderr, "damselfly daemon: --proxy-listen: %s\n", err);
            goto out_cfg;
        }
    }
    if (cfg->registry_mirror && strncmp(cfg->registry_mirror, "http://", 7) != 0 &&
        strncmp(cfg->registry_mirror, "https://", 8) != 0) {
        fprintf(stderr, "damselfly daemon: --registry-mirror: '%s' is not an http(s) URL\n",
                cfg->registry_mirror);
        goto out_cfg;
    }
    for (size_t i = 0; i < cfg->registry_map.n; i++) {
        if (dmf_registry_map_check(cfg->registry_map.v[i], err, sizeof(err)) != 0) {
            fprintf(stderr, "damselfly daemon: --registry-map: %s\n", err);
            goto out_cfg;
        }
    }
    if (cfg->config && cfg->proxy_rules_line &&
        dmf_proxy_rules_load_yaml(&rules, cfg->config, "proxy-rules", err, sizeof(err)) != 0) {
        fprintf(stderr, "damselfly daemon: %s\n", err);
        dmf_proxy_rules_free(&rules);
        goto out_cfg;
    }
    char host[256];
    uint16_t piece_port;
    if (dmf_parse_hostport(cfg->piece_listen, host, sizeof(host), &piece_port, err, sizeof(err)) !=
        0) {
        fprintf(stderr, "damselfly daemon: --piece-listen: %s\n", err);
        goto out_cfg;
    }
    char hostname[256] = "localhost";
    gethostname(hostname, sizeof(hostname) - 1);
    cfg->hostname = dmf_xstrdup(hostname);
    signal(SIGPIPE, SIG_IGN);
    srandom((unsigned)time(NULL) ^ (unsigned)getpid());

    int e = dmf_mkdir_p(cfg->data_dir);
    if (e != 0) {
        fprintf(stderr, "damselfly daemon: cannot create %s: %s\n", cfg->data_dir, dmf_strerror(e));
        goto out_cfg;
    }
    if (dmf_store_open(cfg->data_dir, &d.store, err, sizeof(err)) != 0) {
        fprintf(stderr, "damselfly daemon: %s\n", err);
        goto out_cfg;
    }
    if (prepare_socket_path(cfg->socket, err, sizeof(err)) != 0) {
        fprintf(stderr, "damselfly daemon: %s\n", err);
        goto out_store;
    }

    dmf_metric_register(&dmf_m_bytes_origin);
    dmf_metric_register(&dmf_m_bytes_seed);
    dmf_metric_register(&dmf_m_bytes_peer);
    dmf_metric_register(&dmf_m_bytes_local);
    dmf_metric_register(&dmf_m_verify_failures);
    dmf_metric_register(&dmf_m_tasks_succeeded);
    dmf_metric_register(&dmf_m_tasks_failed);

    dmf_proxy_metrics_register();

    d.base = dmf_rpc_event_base_new();
    d.rpc = dmf_rpc_new(d.base);
    d.http = dmf_http_new(d.base);
    d.workq = dmf_workq_new(d.base, 2);
    if (cfg->origin_ca_file) {
        e = dmf_http_set_extra_ca(d.http, cfg->origin_ca_file);
        if (e != 0) {
            fprintf(stderr,
                    "damselfly daemon: --origin-ca-file: cannot read certificates from %s\n",
                    cfg->origin_ca_file);
            goto out_loop;
        }
    }
    d.pieces =
        dmf_piece_server_new(d.base, host, piece_port, dmf_task_piece_lookup, &d, err, sizeof(err));
    if (d.pieces == NULL) {
        fprintf(stderr, "damselfly daemon: %s\n", err);
        goto out_loop;
    }
    dmf_piece_server_set_upload_slots(d.pieces, (uint32_t)cfg->upload_slots);
    d.piece_port = dmf_piece_server_port(d.pieces);
    if (cfg->host_id == NULL)
        cfg->host_id = dmf_xasprintf("%s-%s-%u", hostname, cfg->ip, d.piece_port);
    if (cfg->rpc_listen == NULL)
        cfg->rpc_listen = dmf_xasprintf("%s:0", cfg->ip);

    d.rpc_server = dmf_rpc_server_new(d.rpc, dmf_local_service_on_call, &d);
    if (dmf_rpc_server_listen(d.rpc_server, cfg->rpc_listen, &d.rpc_port, err, sizeof(err)) != 0) {
        fprintf(stderr, "damselfly daemon: --rpc-listen: %s\n", err);
        goto out_servers;
    }
    dmf_rpc_server_start(d.rpc_server);

    if (proxy_on) {
        nrules = rules.n;
        d.proxy = dmf_proxy_new(&d, cfg->proxy_listen, &rules, err, sizeof(err));
        if (d.proxy == NULL) {
            fprintf(stderr, "damselfly daemon: --proxy-listen: %s\n", err);
            goto out_servers;
        }
    }

    /* Announce only once every listener is bound: a daemon that is about to fail must not
     * be offered to others as a parent. */
    if (cfg->scheduler) {
        d.sched = dmf_sched_client_new(&d);
        dmf_sched_client_announce_sync(d.sched, 2000);
    }

    /* The socket comes last: once it exists, the daemon is ready for `get`. */
    d.local_api = dmf_local_api_new(&d, cfg->socket, err, sizeof(err));
    if (d.local_api == NULL) {
        fprintf(stderr, "damselfly daemon: --socket: %s\n", err);
        goto out_servers;
    }

    sigint = evsignal_new(d.base, SIGINT, on_signal, &d);
    sigterm = evsignal_new(d.base, SIGTERM, on_signal, &d);
    event_add(sigint, NULL);
    event_add(sigterm, NULL);
    dmf_info("%s ready: host %s, pieces on %s:%u, rpc on port %d, socket %s, scheduler %s",
             cfg->seed ? "seed peer" : "daemon", cfg->host_id, host, d.piece_port, d.rpc_port,
             cfg->socket, cfg->scheduler ? cfg->scheduler : "none (origin only)");
    if (d.proxy)
        dmf_info("proxy on %s (port %u), registry mirror %s, %zu rules, %zu intercepted hosts",
                 cfg->proxy_listen, dmf_proxy_port(d.proxy),
                 cfg->registry_mirror ? cfg->registry_mirror : "none", nrules,
                 cfg->proxy_intercept.n);
    event_base_dispatch(d.base);
    rc = d.stopping ? 0 : 1;

out_servers:
    dmf_proxy_free(d.proxy); /* before the tasks its connections watch */
    dmf_local_api_free(d.local_api);
    dmf_rpc_server_free(d.rpc_server);
    dmf_workq_free(d.workq); /* pieces being written land before their tasks go */
    d.workq = NULL;
    dmf_tasks_free_all(&d);
    dmf_sched_client_free(d.sched);
    dmf_piece_server_free(d.pieces);
out_loop:
    dmf_workq_free(d.workq);
    if (sigint)
        event_free(sigint);
    if (sigterm)
        event_free(sigterm);
    dmf_http_free(d.http);
    dmf_rpc_free(d.rpc);
    event_base_free(d.base);
    if (d.local_api)
        unlink(cfg->socket);
out_store:
    dmf_store_close(d.store);
out_cfg:
    dmf_proxy_rules_free(&rules);
    free(cfg->hostname);
    cfg->hostname = NULL;
    dmf_config_free(options, DMF_ARRAY_SIZE(options), cfg);
    return rc;
}

const struct dmf_cmd dmf_cmd_daemon = {
    .name = "daemon",
    .summary = "run a daemon (or a seed peer with --seed) on this host",
    .run = run,
    .options = options,
    .noptions = DMF_ARRAY_SIZE(options),
};
