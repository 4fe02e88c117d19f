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

#include "common/origin_policy.h"
#include "common/cmd.h"
#include "common/config.h"
#include "common/fdlimit.h"
#include "common/hostinfo.h"
#include "common/log.h"
#include "common/piece_token.h"
#include "common/piecemem.h"
#include "common/rpc.h"
#include "common/tls_identity.h"
#include "common/tls.h"
#include "common/util.h"
#include "common/workq.h"
#include "daemon/daemon.h"
#include "daemon/limits.h"
#include "daemon/manager_link.h"
#include "daemon/api/local_api.h"
#include "daemon/api/local_service.h"
#include "daemon/api/rpc_acl.h"
#include "daemon/api/socket_perms.h"
#include "daemon/proxy/proxy.h"
#include "daemon/proxy/registry.h"
#include "common/url_secrets.h"
#include "daemon/peer/data_file.h"
#include "daemon/peer/engine.h"

#define OPT(n, s, t, f, lo, hi, def, mv, h)                                                        \
    {                                                                                              \
        n, s, t, offsetof(struct dmf_daemon_config, f), lo, hi, def, mv, h                         \
    }

static const struct dmf_option options[] = {
    OPT("scheduler", 0, DMF_OPT_STRING, scheduler, 0, 0, NULL, "ADDR:PORT[,...]",
        "schedulers to announce to (each task goes to one of them by rendezvous hashing on its "
        "id, skipping dead ones); without one every download goes to the origin"),
    OPT("manager", 0, DMF_OPT_LIST, manager, 0, 0, NULL, "ADDR:PORT",
        "manager(s) that give this host its cluster's schedulers and config (repeatable)"),
    OPT("data-dir", 0, DMF_OPT_STRING, data_dir, 0, 0, "/var/lib/damselfly", "DIR",
        "where pieces and their metadata are kept"),
    OPT("ip", 0, DMF_OPT_STRING, ip, 0, 0, NULL, "ADDR",
        "address other hosts and the scheduler reach this host at (default: the address of "
        "the default route's interface; 127.0.0.1 only with a scheduler on loopback)"),
    OPT("piece-listen", 0, DMF_OPT_ADDR, piece_listen, 0, 0, "0.0.0.0:65002", "ADDR:PORT",
        "piece server (data plane between daemons, and /metrics)"),
    OPT("piece-header-timeout", 0, DMF_OPT_DURATION, piece_header_timeout, 100, 600000, "10s",
        "DURATION",
        "a piece-port connection must send a complete request head this long after it was "
        "accepted, and each later head on a keep-alive connection this long after its first "
        "byte, or it is closed (a client dripping header bytes keeps nothing)"),
    OPT("piece-idle-timeout", 0, DMF_OPT_DURATION, piece_idle_timeout, 100, 3600000, "60s",
        "DURATION",
        "close a piece server connection idle, or whose peer stalls reading or sending, this long"),
    OPT("rpc-listen", 0, DMF_OPT_ADDR, rpc_listen, 0, 0, NULL, "ADDR:PORT",
        "gRPC Daemon service for the scheduler (default: --ip with any free port)"),
    OPT("socket", 0, DMF_OPT_STRING, socket, 0, 0, "/run/damselfly/daemon.sock", "PATH",
        "unix socket of the local API used by `damselfly get`"),
    OPT("socket-group", 0, DMF_OPT_STRING, socket_group, 0, 0, NULL, "GROUP|GID",
        "group whose members may use the socket (get through P2P without reading the data "
        "dir, which stays 0700)"),
    OPT("socket-mode", 0, DMF_OPT_STRING, socket_mode, 0, 0, NULL, "MODE",
        "permission bits of the socket (default 0660 with --socket-group, else 0600)"),
    OPT("seed", 0, DMF_OPT_BOOL, seed, 0, 0, "false", NULL,
        "be a seed peer: fetch from origins when the scheduler asks, and cache"),
    OPT("host-id", 0, DMF_OPT_STRING, host_id, 0, 0, NULL, "ID",
        "this host's ID (default: HOSTNAME-MACHINEID-IP-PIECEPORT, MACHINEID the first 12 "
        "digits of /etc/machine-id; with --tls-cert, the certificate's CN, and a --host-id "
        "that differs is refused)"),
    OPT("idc", 0, DMF_OPT_STRING, idc, 0, 0, "", "NAME", "data centre label (locality)"),
    OPT("location", 0, DMF_OPT_STRING, location, 0, 0, "", "A|B|C",
        "location labels, most general first (locality)"),
    OPT("upload-capacity", 0, DMF_OPT_SIZE, upload_capacity, 0, 0, "1g", "BYTES/S",
        "upload bandwidth this host offers, announced to the scheduler"),
    OPT("download-limit", 0, DMF_OPT_SIZE, download_limit, 0, 0, NULL, "BYTES/S",
        "most this host downloads per second, from parents and origins together, shared "
        "fairly by its tasks (default unlimited; SIGHUP reloads it from --config)"),
    OPT("origin-limit", 0, DMF_OPT_SIZE, origin_limit, 0, 0, NULL, "BYTES/S",
        "most this host downloads per second from origins (back-to-source, the proxy's "
        "pass-through), within --download-limit (default unlimited; SIGHUP reloads it)"),
    OPT("upload-limit", 0, DMF_OPT_SIZE, upload_limit, 0, 0, NULL, "BYTES/S",
        "most this host uploads per second to other hosts; also the upload capacity it "
        "announces, if lower (default unlimited; SIGHUP reloads it)"),
    OPT("announce-interval", 0, DMF_OPT_DURATION, announce_interval, 100, 600000, "2s", "DURATION",
        "how often the host announces itself to the scheduler"),
    OPT("parent-stall-timeout", 0, DMF_OPT_DURATION, parent_stall_timeout, 100, 600000, "3s",
        "DURATION", "with no usable parent (and no new piece) this long, fetch from the origin"),
    OPT("progress-timeout", 0, DMF_OPT_DURATION, progress_timeout, 1000, 3600000, "30s", "DURATION",
        "longest a download waits for a new verified piece (the deadline follows the observed "
        "rate, at least 4s): then new parents, then the origin, then it fails"),
    OPT("revalidate-after", 0, DMF_OPT_DURATION, revalidate_after, 0, 2592000000ULL, "5m",
        "DURATION",
        "a cached URL task older than this is checked with the origin (one conditional "
        "request) before it is served; 0: at every get. Digest tasks never are"),
    OPT("source-concurrency", 0, DMF_OPT_INT, source_concurrency, 1, 16, "4", "N",
        "parallel range requests to an origin"),
    OPT("parent-concurrency", 0, DMF_OPT_INT, parent_concurrency, 1, 16, "2", "N",
        "piece requests in flight per parent"),
    OPT("upload-slots", 0, DMF_OPT_INT, upload_slots, 1, 256, "2", "N",
        "piece uploads at once (or one per 4 children watching, if more); further requests "
        "wait, those of the children furthest behind first"),
    OPT("cache-limit", 0, DMF_OPT_SIZE, cache_limit, 0, 0, "0", "SIZE",
        "bytes of task data this host keeps; above it the least recently used tasks not in use "
        "are evicted; 0: evict when the data dir's filesystem is over 80 % full, down to 70 %"),
    OPT("task-ttl", 0, DMF_OPT_DURATION, task_ttl, 1000, 0, "72h", "DURATION",
        "evict a task not used (downloaded, served or uploaded) for this long"),
    OPT("gc-interval", 0, DMF_OPT_DURATION, gc_interval, 100, 86400000, "60s", "DURATION",
        "how often the cache is checked against --cache-limit and --task-ttl (also after "
        "each download, and when the disk is full)"),
    OPT("max-open-files", 0, DMF_OPT_INT, max_open_files, 0, 1048576, "0", "N",
        "tasks' data files kept open at once, least recently used closed first; 0: a "
        "quarter of the nofile limit (16 to 4096)"),
    OPT("memory-limit", 0, DMF_OPT_SIZE, memory_limit, 0, 0, "512m", "BYTES",
        "piece bytes held in memory between the network and the disk, over every task (a "
        "transfer, or a streamed origin, waits for room; a piece larger than the bound goes "
        "when nothing else is held); 0 for no bound"),
    OPT("secret-query", 0, DMF_OPT_LIST, secret_query, 0, 0, DMF_SECRET_QUERY_DEFAULT, "NAME",
        "query parameter that authorises a URL (a signature, a token): left out of the task ID, "
        "never stored, logged or returned (any case; repeatable, replaces the default list)"),
    OPT("log-level", 0, DMF_OPT_STRING, log_level, 0, 0, "info", "LEVEL",
        "debug, info, warn or error"),
    OPT("config", 0, DMF_OPT_STRING, config, 0, 0, NULL, "FILE",
        "read options from this YAML file (flags override it)"),
    OPT("proxy-listen", 0, DMF_OPT_STRING, proxy_listen, 0, 0, "127.0.0.1:65001", "ADDR:PORT",
        "HTTP proxy and registry mirror for local clients; 'off' for none (a wider address "
        "needs --proxy-allow-clients)"),
    OPT("proxy-allow-clients", 0, DMF_OPT_LIST, proxy_allow_clients, 0, 0, NULL, "CIDR",
        "networks whose clients may use the proxy (default: loopback only)"),
    OPT("proxy-allow-targets", 0, DMF_OPT_LIST, proxy_allow_targets, 0, 0, NULL, "CIDR",
        "networks the proxy may reach even where its policy refuses (link-local, this "
        "daemon's own ports, the scheduler)"),
    OPT("proxy-connect-ports", 0, DMF_OPT_LIST, proxy_connect_ports, 0, 0, NULL, "PORT",
        "ports CONNECT may reach (default 443; '*' for any)"),
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
    OPT("origin-proxy", 0, DMF_OPT_STRING, origin_proxy, 0, 0, NULL, "URL",
        "HTTP proxy for the daemon's own requests to origins and registries (proxy "
        "environment variables such as http_proxy are ignored)"),
    OPT("proxy-rules", 0, DMF_OPT_YAML, proxy_rules_line, 0, 0, NULL, NULL,
        "forward-proxy rules: a list of {regex, p2p, limit, priority, application}; the first "
        "match decides (see docs/operations.md)"),
    OPT("proxy-header-timeout", 0, DMF_OPT_DURATION, proxy_header_timeout, 100, 600000, "30s",
        "DURATION",
        "a proxy request head must be complete this long after its first byte (else 408)"),
    OPT("proxy-idle-timeout", 0, DMF_OPT_DURATION, proxy_idle_timeout, 100, 3600000, "120s",
        "DURATION",
        "close a proxy connection idle between requests, or whose client reads nothing of a "
        "response this long; also bounds a CONNECT's connect"),
    OPT("origin-allow", 0, DMF_OPT_LIST, origin_allow, 0, 0, NULL, "CIDR|HOST",
        "origins that fetches asked for by other hosts (DownloadTask on the rpc port: seed "
        "triggers, preheats) may reach although the origin policy refuses them: loopback, "
        "link-local, this host's and the cluster's addresses (e.g. 127.0.0.0/8 for a test "
        "cluster on one machine; a host name or *.domain allows any address it resolves to)"),
    OPT("origin-deny", 0, DMF_OPT_LIST, origin_deny, 0, 0, NULL, "CIDR|HOST",
        "origins that fetches asked for by other hosts may never reach (before --origin-allow)"),
    OPT("rpc-allow", 0, DMF_OPT_LIST, rpc_allow, 0, 0, NULL, "CIDR",
        "callers allowed on the rpc port besides the addresses of --scheduler and --manager "
        "(e.g. a scheduler behind NAT)"),
    OPT("proxy-tunnel-timeout", 0, DMF_OPT_DURATION, proxy_tunnel_timeout, 100, 86400000, "10m",
        "DURATION", "close a CONNECT tunnel with no byte in either direction this long"),
    OPT("tls-cert", 0, DMF_OPT_STRING, tls_cert, 0, 0, NULL, "FILE",
        "PEM certificate of this host (CN = its host ID, OU = peer or seed), signed by "
        "--tls-ca: turns on mutual TLS for the rpc port, the piece server and this host's "
        "requests to other hosts (scripts/make-certs.sh; SIGHUP reloads it)"),
    OPT("tls-key", 0, DMF_OPT_STRING, tls_key, 0, 0, NULL, "FILE", "PEM private key of --tls-cert"),
    OPT("tls-ca", 0, DMF_OPT_STRING, tls_ca, 0, 0, NULL, "FILE",
        "PEM CA certificate of the cluster: every other host must present a certificate it "
        "signed"),
    OPT("cluster-key-file", 0, DMF_OPT_STRING, cluster_key_file, 0, 0, NULL, "FILE",
        "the cluster's secret key (32 bytes or more, not readable by others): with it, the "
        "piece server serves a task's pieces only to hosts holding a token the scheduler gave "
        "them for that task (403 otherwise)"),
};

static const char usage[] =
    "damselfly daemon [--scheduler ADDR:PORT] [--data-dir DIR] [--ip ADDR]\n"
    "                 [--piece-listen ADDR:PORT] [--socket PATH] [--seed] [options]";

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

/* The daemon's life, driven by the main loop (set_phase logs every change):
 *   STARTING        daemon_start(): the resources that need no answer, in order
 *   ASKING_MANAGER  --manager: ListSchedulers is out (3 s at most)
 *   ANNOUNCING      every listener bound; the first AnnounceHost is out (2 s at most)
 *   SERVING         the local API is up: `get` may come
 *   STOPPING        a signal: every listener closed, then the tasks freed
 *   LEAVING         LeaveHost is out (1.5 s at most)
 *   DONE            the loop exits (also after a start-up step failed)
 * Nothing runs a nested loop: answers and timeouts are events of this one. */
enum daemon_phase {
    PHASE_STARTING,
    PHASE_ASKING_MANAGER,
    PHASE_ANNOUNCING,
    PHASE_SERVING,
    PHASE_STOPPING,
    PHASE_LEAVING,
    PHASE_DONE,
};

/* What this file keeps beside struct dmf_daemon, from check_config() to daemon_stop(). */
struct daemon_run {
    enum daemon_phase phase;
    bool failed;          /* a start-up step failed after the loop began: err says why */
    char err[1024];       /* why a start-up step failed */
    char piece_host[256]; /* of --piece-listen */
    uint16_t piece_port;
    bool proxy_on;
    struct dmf_proxy_rules rules; /* from --config, until the proxy takes them */
    struct dmf_socket_perms socket_perms;
    size_t nrules;    /* proxy rules given, for the ready line */
    bool socket_made; /* the local API's socket file exists */
    struct event *sigint, *sigterm, *sighup;
    struct dmf_daemon *d;
    int argc; /* the command line, for a reload of --config on SIGHUP */
    char **argv;
};

static struct dmf_limits limits_of(const struct dmf_daemon_config *cfg)
{
    struct dmf_limits l = {cfg->download_limit, cfg->origin_limit, cfg->upload_limit};
    return l;
}

/* Fills err with "flag: why" and returns -1. */
static int flag_error(char *err, size_t errlen, const char *flag, const char *why)
{
    snprintf(err, errlen, "%s: %s", flag, why);
    return -1;
}

/* The bandwidth limits: unset, or at least DMF_LIMIT_MIN. 0, or -1 with the message in err. */
static int check_limits(const struct dmf_daemon_config *cfg, char *err, size_t errlen)
{
    const struct {
        const char *flag;
        uint64_t v;
    } limits[] = {{"--download-limit", cfg->download_limit},
                  {"--origin-limit", cfg->origin_limit},
                  {"--upload-limit", cfg->upload_limit}};
    for (size_t i = 0; i < DMF_ARRAY_SIZE(limits); i++)
        if (limits[i].v != 0 && limits[i].v < DMF_LIMIT_MIN)
            return flag_error(err, errlen, limits[i].flag,
                              "a limit is at least 64k (bytes per second), or unset");
    return 0;
}

static struct dmf_tls_files tls_files_of(const struct dmf_daemon_config *cfg)
{
    struct dmf_tls_files f = {cfg->tls_cert, cfg->tls_key, cfg->tls_ca};
    return f;
}

/* The data plane's mutual TLS (--tls-*): the piece server's context for new connections,
 * and the certificate and CA of this host's requests to other daemons. At start-up and on
 * SIGHUP (the files are read again; connections already open keep going). 0, or -1 with
 * the message in err (nothing changed). */
static int load_piece_tls(struct dmf_daemon *d, char *err, size_t errlen)
{
    struct dmf_tls_files f = tls_files_of(&d->cfg);
    char why[512];
    if (f.ca == NULL)
        return 0;
    SSL_CTX *ctx = dmf_tls_ctx_new(&f, true, why, sizeof(why));
    if (ctx == NULL)
        return flag_error(err, errlen, "--tls-cert", why);
    if (dmf_http_set_peer_tls(d->http, &f, why, sizeof(why)) != 0) {
        SSL_CTX_free(ctx);
        return flag_error(err, errlen, "--tls-ca", why);
    }
    if (d->pieces) /* gone once the shutdown sequence began */
        dmf_piece_server_set_tls(d->pieces, ctx);
    SSL_CTX_free(ctx); /* the piece server holds its own reference */
    d->peer_tls = true;
    return 0;
}

/* Start-up: TLS on the data plane and the cluster key of piece-fetch tokens. */
static int setup_piece_tls(struct dmf_daemon *d, char *err, size_t errlen)
{
    if (load_piece_tls(d, err, errlen) != 0)
        return -1;
    if (d->cfg.cluster_key_file != NULL) {
        struct dmf_cluster_key *key = dmf_xcalloc(1, sizeof(*key));
        char why[512];
        int rc = dmf_cluster_key_load(d->cfg.cluster_key_file, key, why, sizeof(why));
        if (rc == 0)
            dmf_piece_server_set_cluster_key(d->pieces, key); /* copies it */
        dmf_cluster_key_clear(key);
        free(key);
        if (rc != 0)
            return flag_error(err, errlen, "--cluster-key-file", why);
    }
    dmf_info("piece server: %s, %s", d->peer_tls ? "HTTPS with client certificates" : "plain HTTP",
             d->cfg.cluster_key_file ? "piece-fetch tokens required" : "no piece-fetch tokens");
    return 0;
}

/* SIGHUP: reads the command line and --config again (flags still win over the file) and
 * applies the bandwidth limits they give now; other options need a restart. */
static void on_sighup(evutil_socket_t sig, short what, void *arg)
{
    struct daemon_run *r = arg;
    struct dmf_daemon *d = r->d;
    struct dmf_daemon_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    char err[1024];
    bool help = false;
    if (dmf_config_parse(options, DMF_ARRAY_SIZE(options), &cfg, r->argc, r->argv, NULL, &help, err,
                         sizeof(err)) != 0 ||
        check_limits(&cfg, err, sizeof(err)) != 0) {
        dmf_warn("SIGHUP: config not reloaded, limits unchanged: %s", err);
    } else {
        struct dmf_limits l = limits_of(&cfg);
        dmf_info("SIGHUP: reloaded %s", cfg.config ? cfg.config : "the command line");
        dmf_daemon_limits_set_local(d, &l, "SIGHUP");
        d->cfg.download_limit = cfg.download_limit;
        d->cfg.origin_limit = cfg.origin_limit;
        d->cfg.upload_limit = cfg.upload_limit;
    }
    dmf_config_free(options, DMF_ARRAY_SIZE(options), &cfg);
    /* gRPC rereads the TLS files by itself; tell whether the ones on disk are good. */
    if (dmf_rpc_tls_recheck(d->rpc, err, sizeof(err)) != 0)
        dmf_warn("SIGHUP: the TLS files do not load: %s (new gRPC connections fail until they "
                 "do)",
                 err);
    else if (dmf_rpc_tls_on(d->rpc))
        dmf_info("SIGHUP: the TLS files load; new gRPC connections use them within %d s",
                 DMF_RPC_TLS_REFRESH_S);
    if (d->peer_tls) {
        if (load_piece_tls(d, err, sizeof(err)) != 0)
            dmf_warn("SIGHUP: TLS certificates not reloaded, the old ones stay in use: %s", err);
        else
            dmf_info("SIGHUP: reloaded the TLS certificate, key and CA for new connections");
    }
}

/* Every check of cfg that needs no resource: 0, or -1 with the message in err. Parses
 * --piece-listen into r and loads --config's proxy-rules into r->rules. */
static int check_config(const struct dmf_daemon_config *cfg, struct daemon_run *r, char *err,
                        size_t errlen)
{
    char why[512];
    dmf_log_set_component(cfg->seed ? "seed" : "daemon");
    if (dmf_log_set_level(cfg->log_level) != 0) {
        snprintf(err, errlen, "--log-level: '%s' is not debug, info, warn or error",
                 cfg->log_level);
        return -1;
    }
    r->proxy_on =
        cfg->proxy_listen && cfg->proxy_listen[0] && strcmp(cfg->proxy_listen, "off") != 0;
    if (r->proxy_on) {
        char h[256];
        uint16_t pp;
        if (dmf_parse_hostport(cfg->proxy_listen, h, sizeof(h), &pp, why, sizeof(why)) != 0)
            return flag_error(err, errlen, "--proxy-listen", why);
    }
    if (cfg->registry_mirror && strncmp(cfg->registry_mirror, "http://", 7) != 0 &&
        strncmp(cfg->registry_mirror, "https://", 8) != 0) {
        snprintf(err, errlen, "--registry-mirror: '%s' is not an http(s) URL",
                 cfg->registry_mirror);
        return -1;
    }
    for (size_t i = 0; i < cfg->registry_map.n; i++)
        if (dmf_registry_map_check(cfg->registry_map.v[i], why, sizeof(why)) != 0)
            return flag_error(err, errlen, "--registry-map", why);
    if (cfg->config && cfg->proxy_rules_line &&
        dmf_proxy_rules_load_yaml(&r->rules, cfg->config, "proxy-rules", err, errlen) != 0)
        return -1;
    if (cfg->scheduler) {
        char *list = dmf_xstrdup(cfg->scheduler), *save = NULL, h[256];
        uint16_t sp;
        int n = 0, bad = 0;
        for (char *a = strtok_r(list, ", ", &save); a && !bad; a = strtok_r(NULL, ", ", &save)) {
            n++;
            bad = dmf_parse_hostport(a, h, sizeof(h), &sp, why, sizeof(why)) != 0;
        }
        free(list);
        if (bad)
            return flag_error(err, errlen, "--scheduler", why);
        if (n == 0 || n > 16)
            return flag_error(err, errlen, "--scheduler",
                              "give 1 to 16 ADDR:PORT, comma-separated");
    }
    if (dmf_parse_hostport(cfg->piece_listen, r->piece_host, sizeof(r->piece_host), &r->piece_port,
                           why, sizeof(why)) != 0)
        return flag_error(err, errlen, "--piece-listen", why);
    if (check_limits(cfg, err, errlen) != 0)
        return -1;
    struct dmf_tls_files tf = tls_files_of(cfg);
    if (dmf_tls_files_check(&tf, err, errlen) != 0)
        return -1;
    if (dmf_socket_perms_parse(cfg->socket_group, cfg->socket_mode, &r->socket_perms, err,
                               errlen) != 0)
        return -1;
    return 0;
}

/* --ip: given, or the default route's interface address. A loopback address is refused
 * when the scheduler is not on loopback: other hosts would be told to fetch from
 * themselves. 0, or -1 with the message in err. */
static int resolve_ip(struct dmf_daemon_config *cfg, char *err, size_t errlen)
{
    char ip[64], host[256], why[256];
    uint16_t port;
    if (cfg->ip == NULL) {
        if (dmf_default_ipv4("/proc/net/route", ip, sizeof(ip)) != 0) {
            snprintf(ip, sizeof(ip), "127.0.0.1");
            dmf_warn("no default route: using --ip 127.0.0.1 (only hosts on this machine can "
                     "reach it)");
        }
        cfg->ip = dmf_xstrdup(ip);
    }
    if (cfg->scheduler == NULL || !dmf_host_is_loopback(cfg->ip))
        return 0;
    char *list = dmf_xstrdup(cfg->scheduler), *save = NULL;
    int rc = 0;
    for (char *a = strtok_r(list, ", ", &save); a && rc == 0; a = strtok_r(NULL, ", ", &save)) {
        if (dmf_parse_hostport(a, host, sizeof(host), &port, why, sizeof(why)) == 0 &&
            !dmf_host_is_loopback(host)) {
            snprintf(err, errlen,
                     "--ip %s is a loopback address but the scheduler at %s is not: other hosts "
                     "would be told to fetch pieces from themselves; pass --ip with an address "
                     "they can reach",
                     cfg->ip, a);
            rc = -1;
        }
    }
    free(list);
    return rc;
}

/* Acquires the daemon's resources in order, the local API socket last: once it exists the
 * daemon is ready for `get`. 0, or -1 with the message in err; either way daemon_stop()
 * releases what was made. */
/* With --tls-*: the gRPC planes use the certificate, and this host's ID is its CN. A
 * --host-id that differs, or a certificate that is not a peer's or seed's, is refused. */
static int daemon_tls_setup(struct dmf_daemon *d, char *err, size_t errlen)
{
    struct dmf_daemon_config *cfg = &d->cfg;
    struct dmf_tls_files f = {.cert = cfg->tls_cert, .key = cfg->tls_key, .ca = cfg->tls_ca};
    char why[300];
    if (dmf_rpc_tls_enable(d->rpc, &f, why, sizeof(why)) != 0)
        return flag_error(err, errlen, "--tls-cert/--tls-key/--tls-ca", why);
    if (!dmf_rpc_tls_on(d->rpc))
        return 0;
    struct dmf_tls_identity id = *dmf_rpc_tls_identity(d->rpc);
    if (id.role != DMF_TLS_ROLE_PEER && id.role != DMF_TLS_ROLE_SEED) {
        snprintf(err, errlen,
                 "--tls-cert %s is a %s certificate (host %s): a daemon needs a peer "
                 "or seed certificate",
                 f.cert, dmf_tls_role_name(id.role), id.host_id);
        return -1;
    }
    if (cfg->host_id != NULL && strcmp(cfg->host_id, id.host_id) != 0) {
        snprintf(err, errlen,
                 "--host-id %s differs from the host ID %s in --tls-cert %s: with "
                 "TLS the certificate names the host (drop --host-id)",
                 cfg->host_id, id.host_id, f.cert);
        return -1;
    }
    free(cfg->host_id);
    cfg->host_id = dmf_xstrdup(id.host_id);
    dmf_info("mutual TLS on: this host is %s (role %s) by its certificate %s", id.host_id,
             dmf_tls_role_name(id.role), f.cert);
    if (cfg->seed && id.role != DMF_TLS_ROLE_SEED)
        dmf_warn("this seed peer's certificate is a %s certificate: the scheduler treats it as "
                 "a seed only if its --seed-hosts lists it",
                 dmf_tls_role_name(id.role));
    return 0;
}

static const char *phase_name(enum daemon_phase p)
{
    static const char *const names[] = {
        "starting", "asking the manager", "announcing", "serving", "stopping", "leaving", "done"};
    return p <= PHASE_DONE ? names[p] : "?";
}

static void set_phase(struct daemon_run *r, enum daemon_phase to, const char *why)
{
    dmf_info("daemon: %s -> %s (%s)", phase_name(r->phase), phase_name(to), why);
    r->phase = to;
    if (to == PHASE_DONE)
        event_base_loopbreak(r->d->base);
}

/* A start-up step that ran from the loop failed (r->err says why): the loop ends. */
static void start_failed(struct daemon_run *r)
{
    r->failed = true;
    set_phase(r, PHASE_DONE, "start-up failed");
}

/* LEAVING ends: every scheduler answered LeaveHost, or its time is up. */
static void on_left(void *arg, bool announced)
{
    struct daemon_run *r = arg;
    if (r->phase == PHASE_LEAVING)
        set_phase(r, PHASE_DONE, "the schedulers were told");
}

/* Closes whatever can reach a task, in the one safe order (each may be gone already). */
static void close_listeners(struct dmf_daemon *d)
{
    dmf_proxy_free(d->proxy); /* before the tasks its connections watch */
    d->proxy = NULL;
    dmf_local_api_free(d->local_api);
    d->local_api = NULL;
    dmf_rpc_server_free(d->rpc_server);
    d->rpc_server = NULL;
    dmf_daemon_manager_link_free(d);
    d->stopping = true;             /* no new verification starts from a landing piece */
    dmf_engine_cancel_long_work(d); /* nor does a running one hold the shutdown up */
    dmf_workq_free(d->workq);       /* pieces being written land before their tasks go */
    d->workq = NULL;
    /* The piece server last of the listeners: the pieces above landed while children could
     * still hear of them. No loop ran since the first listener closed. */
    dmf_piece_server_free(d->pieces);
    d->pieces = NULL;
}

/* The shutdown sequence: nothing can reach a task any more before the tasks go (a request
 * in that window would load a task nobody frees), then the goodbye to the schedulers. */
static void begin_shutdown(struct daemon_run *r, const char *why)
{
    struct dmf_daemon *d = r->d;
    if (r->phase >= PHASE_STOPPING)
        return;
    d->stopping = true;
    set_phase(r, PHASE_STOPPING, why);
    close_listeners(d);
    if (dmf_engine_stop(d, on_left, r))
        set_phase(r, PHASE_LEAVING, "listeners closed, tasks freed: LeaveHost");
    else
        set_phase(r, PHASE_DONE, "listeners closed, tasks freed, no scheduler to leave");
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct daemon_run *r = arg;
    char why[64];
    snprintf(why, sizeof(why), "signal %d: shutting down", (int)sig);
    dmf_info("%s", why);
    begin_shutdown(r, why);
}

static int start_listeners(struct daemon_run *r);
static int start_serving(struct daemon_run *r);

/* ASKING_MANAGER ends: d->cfg.scheduler is what the manager said (or still unset). */
static void on_manager_resolved(void *arg)
{
    struct daemon_run *r = arg;
    if (r->phase == PHASE_ASKING_MANAGER && start_listeners(r) != 0)
        start_failed(r);
}

/* ANNOUNCING ends: the scheduler answered, or its time is up. */
static void on_first_announce(void *arg, bool announced)
{
    struct daemon_run *r = arg;
    if (r->phase == PHASE_ANNOUNCING && start_serving(r) != 0)
        start_failed(r);
}

static int daemon_start(struct dmf_daemon *d, struct daemon_run *r)
{
    struct dmf_daemon_config *cfg = &d->cfg;
    char *err = r->err, why[512];
    size_t errlen = sizeof(r->err);
    char hostname[256] = "localhost";
    gethostname(hostname, sizeof(hostname) - 1);
    cfg->hostname = dmf_xstrdup(hostname);
    if (resolve_ip(cfg, err, errlen) != 0)
        return -1;
    signal(SIGPIPE, SIG_IGN);
    uint64_t nofile = dmf_fd_limit_raise();
    uint32_t max_files = cfg->max_open_files > 0 ? (uint32_t)cfg->max_open_files
                                                 : dmf_open_files_default(nofile ? nofile : 1024);
    d->open_files = dmf_open_files_new(max_files);
    dmf_info("data files: at most %u open at once (nofile %llu)", max_files,
             (unsigned long long)nofile);
    srandom((unsigned)time(NULL) ^ (unsigned)getpid());

    int e = dmf_mkdir_p(cfg->data_dir);
    if (e != 0) {
        snprintf(err, errlen, "cannot create %s: %s", cfg->data_dir, dmf_strerror(e));
        return -1;
    }
    if (dmf_store_open(cfg->data_dir, &d->store, err, errlen) != 0)
        return -1;
    if (prepare_socket_path(cfg->socket, err, errlen) != 0)
        return -1;

    dmf_engine_metrics_register();
    dmf_proxy_metrics_register();
    dmf_local_service_metrics_register();

    if (dmf_http_load(why, sizeof(why)) != 0) {
        snprintf(err, errlen, "%s", why);
        return -1;
    }
    d->base = dmf_rpc_event_base_new();
    d->rpc = dmf_rpc_new(d->base);
    if (daemon_tls_setup(d, err, errlen) != 0)
        return -1;
    d->http = dmf_http_new(d->base);
    d->throttle = dmf_throttle_new(d->base);
    dmf_http_set_throttle(d->http, d->throttle);
    struct dmf_limits limits = limits_of(cfg);
    dmf_daemon_limits_set_local(d, &limits, "config");
    d->workq = dmf_workq_new(d->base, 2);

    /* A signal from here on runs the shutdown sequence, in whichever phase it comes. */
    r->sigint = evsignal_new(d->base, SIGINT, on_signal, r);
    r->sigterm = evsignal_new(d->base, SIGTERM, on_signal, r);
    event_add(r->sigint, NULL);
    event_add(r->sigterm, NULL);
    r->sighup = evsignal_new(d->base, SIGHUP, on_sighup, r);
    event_add(r->sighup, NULL);
    if (dmf_daemon_manager_resolve(d, 3000, on_manager_resolved, r)) {
        set_phase(r, PHASE_ASKING_MANAGER, "--manager: ListSchedulers");
        return 0;
    }
    return start_listeners(r);
}

/* The policies that need the scheduler's address, the engine, then every listener that
 * can reach a task; then the first announce. 0, or -1 with the message in r->err. */
static int start_listeners(struct daemon_run *r)
{
    struct dmf_daemon *d = r->d;
    struct dmf_daemon_config *cfg = &d->cfg;
    char *err = r->err, why[512];
    size_t errlen = sizeof(r->err);
    /* The engine exists before any listener that can reach a task: the piece server, the
     * rpc server and the proxy serve requests during the announce below. */
    d->rpc_acl = dmf_xcalloc(1, sizeof(*d->rpc_acl));
    if (dmf_rpc_acl_init(d->rpc_acl, &cfg->rpc_allow, err, errlen) != 0)
        return -1;
    dmf_rpc_acl_cluster(d->rpc_acl, cfg->scheduler, &cfg->manager);
    d->origin_policy = dmf_xcalloc(1, sizeof(*d->origin_policy));
    char *cluster = dmf_xasprintf("%s", cfg->scheduler ? cfg->scheduler : "");
    for (size_t i = 0; i < cfg->manager.n; i++) {
        char *more = dmf_xasprintf("%s,%s", cluster, cfg->manager.v[i]);
        free(cluster);
        cluster = more;
    }
    int pe = dmf_origin_policy_load(d->origin_policy, &cfg->origin_allow, &cfg->origin_deny,
                                    cluster, err, errlen);
    free(cluster);
    if (pe != 0)
        return -1;
    dmf_engine_new(d);
    dmf_http_set_proxy(d->http, cfg->origin_proxy);
    if (cfg->origin_ca_file && dmf_http_set_extra_ca(d->http, cfg->origin_ca_file) != 0) {
        snprintf(err, errlen, "--origin-ca-file: cannot read certificates from %s",
                 cfg->origin_ca_file);
        return -1;
    }
    d->pieces = dmf_piece_server_new(d->base, r->piece_host, r->piece_port, dmf_engine_piece_lookup,
                                     d, err, errlen);
    if (d->pieces != NULL)
        dmf_piece_server_set_timeout(d->pieces, cfg->piece_idle_timeout);
    if (d->pieces != NULL)
        dmf_piece_server_set_header_timeout(d->pieces, cfg->piece_header_timeout);
    dmf_piecemem_set_limit(cfg->memory_limit);
    if (d->pieces == NULL)
        return -1;
    if (setup_piece_tls(d, err, errlen) != 0)
        return -1;
    dmf_piece_server_set_upload_slots(d->pieces, (uint32_t)cfg->upload_slots);
    dmf_piece_server_set_throttle(d->pieces, d->throttle);
    d->piece_port = dmf_piece_server_port(d->pieces);
    if (cfg->host_id == NULL) {
        char hostname[256] = "localhost";
        gethostname(hostname, sizeof(hostname) - 1);
        /* The machine id keeps two machines with one hostname (and a NAT'd address) apart. */
        char mid[16];
        if (dmf_machine_id("/etc/machine-id", mid, sizeof(mid)) != 0 &&
            dmf_machine_id("/var/lib/dbus/machine-id", mid, sizeof(mid)) != 0)
            snprintf(mid, sizeof(mid), "nomid");
        cfg->host_id = dmf_xasprintf("%s-%s-%s-%u", hostname, mid, cfg->ip, d->piece_port);
    }
    if (cfg->rpc_listen == NULL)
        cfg->rpc_listen = dmf_xasprintf("%s:0", cfg->ip);

    d->rpc_server = dmf_rpc_server_new(d->rpc, dmf_local_service_on_call, d);
    if (dmf_rpc_server_listen(d->rpc_server, cfg->rpc_listen, &d->rpc_port, why, sizeof(why)) != 0)
        return flag_error(err, errlen, "--rpc-listen", why);
    dmf_rpc_server_start(d->rpc_server);

    size_t nrules = r->rules.n;
    if (r->proxy_on) {
        d->proxy = dmf_proxy_new(d, cfg->proxy_listen, &r->rules, why, sizeof(why));
        if (d->proxy == NULL)
            return flag_error(err, errlen, "--proxy-listen", why);
    }

    r->nrules = nrules;
    /* Announce only once every listener is bound: a daemon that is about to fail must not
     * be offered to others as a parent. */
    if (dmf_engine_start(d, on_first_announce, r)) {
        set_phase(r, PHASE_ANNOUNCING, "listeners bound: AnnounceHost");
        return 0;
    }
    return start_serving(r);
}

/* The last of start-up: the manager's re-polls, then the local API socket: once it exists
 * the daemon is ready for `get`. 0, or -1 with the message in r->err. */
static int start_serving(struct daemon_run *r)
{
    struct dmf_daemon *d = r->d;
    struct dmf_daemon_config *cfg = &d->cfg;
    char why[512];
    dmf_daemon_manager_link_start(d);

    d->local_api = dmf_local_api_new(d, cfg->socket, &r->socket_perms, why, sizeof(why));
    if (d->local_api == NULL)
        return flag_error(r->err, sizeof(r->err), "--socket", why);
    r->socket_made = true; /* unlinked at the end, also when the shutdown freed the API */
    set_phase(r, PHASE_SERVING, "the local API is up");
    dmf_info("%s ready: host %s, pieces on %s:%u, rpc on port %d, socket %s, scheduler %s",
             cfg->seed ? "seed peer" : "daemon", cfg->host_id, r->piece_host, d->piece_port,
             d->rpc_port, cfg->socket, cfg->scheduler ? cfg->scheduler : "none (origin only)");
    if (d->proxy)
        dmf_info("proxy on %s (port %u), registry mirror %s, %zu rules, %zu intercepted hosts",
                 cfg->proxy_listen, dmf_proxy_port(d->proxy),
                 cfg->registry_mirror ? cfg->registry_mirror : "none", r->nrules,
                 cfg->proxy_intercept.n);
    return 0;
}

/* Releases what daemon_start() made, in the one order that is safe, skipping what it
 * never got to. */
static void daemon_stop(struct dmf_daemon *d, struct daemon_run *r)
{
    bool socket_made = d->local_api != NULL || r->socket_made;
    close_listeners(d); /* when the shutdown sequence did not run: a failed start */
    dmf_engine_free(d);
    dmf_open_files_free(d->open_files);
    d->open_files = NULL;
    if (r->sigint)
        event_free(r->sigint);
    if (r->sigterm)
        event_free(r->sigterm);
    if (r->sighup)
        event_free(r->sighup);
    dmf_http_free(d->http);
    dmf_throttle_free(d->throttle); /* after every request that could wait on it */
    d->throttle = NULL;
    dmf_rpc_free(d->rpc); /* answers still due (an announce) arrive here */
    if (d->base)
        event_base_free(d->base);
    if (socket_made)
        unlink(d->cfg.socket);
    dmf_store_close(d->store);
    dmf_proxy_rules_free(&r->rules);
    if (d->rpc_acl)
        dmf_rpc_acl_free(d->rpc_acl);
    free(d->rpc_acl);
    free(d->origin_policy);
    free(d->cfg.hostname);
    d->cfg.hostname = NULL;
}

static int run(int argc, char **argv)
{
    struct dmf_daemon d;
    memset(&d, 0, sizeof(d));
    struct daemon_run r = {.argc = argc, .argv = argv, .d = &d};
    char err[1024];
    bool help = false;
    int rc = 1;

    if (dmf_config_parse(options, DMF_ARRAY_SIZE(options), &d.cfg, argc, argv, NULL, &help, err,
                         sizeof(err)) != 0) {
        fprintf(stderr, "damselfly daemon: %s\n", err);
        return 2;
    }
    if (help) {
        dmf_config_usage(stdout, usage,
                         "Run a daemon: download, store and upload pieces for this host.", options,
                         DMF_ARRAY_SIZE(options));
        dmf_config_free(options, DMF_ARRAY_SIZE(options), &d.cfg);
        return 0;
    }
    if (check_config(&d.cfg, &r, err, sizeof(err)) != 0) {
        fprintf(stderr, "damselfly daemon: %s\n", err);
    } else if (daemon_start(&d, &r) != 0) {
        fprintf(stderr, "damselfly daemon: %s\n", r.err);
    } else {
        event_base_dispatch(d.base);
        if (r.failed)
            fprintf(stderr, "damselfly daemon: %s\n", r.err);
        rc = d.stopping && !r.failed ? 0 : 1;
    }
    daemon_stop(&d, &r);
    dmf_config_free(options, DMF_ARRAY_SIZE(options), &d.cfg);
    return rc;
}

const struct dmf_cmd dmf_cmd_daemon = {
    .name = "daemon",
    .summary = "run a daemon (or a seed peer with --seed) on this host",
    .run = run,
    .options = options,
    .noptions = DMF_ARRAY_SIZE(options),
};
