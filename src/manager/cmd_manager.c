/* `damselfly manager`: the cluster registry, dynamic config, jobs, users and tokens; the
 * REST API (--listen), the gRPC Manager service (--grpc-listen) and /metrics
 * (--metrics-listen), until SIGINT or SIGTERM. */
#include <errno.h>
#include <event2/event.h>
#include <event2/http.h>
#include <netinet/in.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/cmd.h"
#include "common/config.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/rpc.h"
#include "common/tls_identity.h"
#include "common/util.h"
#include "manager/api.h"
#include "manager/grpc_service.h"
#include "manager/signin_limit.h"
#include "manager/job_secrets.h"
#include "manager/jobs.h"
#include "manager/manager.h"
#include "manager/mdb.h"

struct manager_opts {
    char *listen;
    char *grpc_listen;
    char *metrics_listen;
    char *data_dir;
    char *database;
    char *root_password_file;
    uint64_t keepalive_timeout;
    uint64_t session_ttl;
    uint64_t config_interval;
    int64_t workers;
    char *log_level;
    char *config;
    char *tls_cert, *tls_key, *tls_ca;
};

#define OPT(n, t, f, lo, hi, def, mv, h)                                                           \
    {                                                                                              \
        n, 0, t, offsetof(struct manager_opts, f), lo, hi, def, mv, h                              \
    }

static const struct dmf_option options[] = {
    OPT("listen", DMF_OPT_ADDR, listen, 0, 0, "0.0.0.0:8080", "ADDR:PORT",
        "REST API (/api/v1/, /oapi/v1/) and its OpenAPI document"),
    OPT("grpc-listen", DMF_OPT_ADDR, grpc_listen, 0, 0, "0.0.0.0:65003", "ADDR:PORT",
        "gRPC Manager service for schedulers, seed peers and daemons"),
    OPT("metrics-listen", DMF_OPT_ADDR, metrics_listen, 0, 0, "127.0.0.1:8004", "ADDR:PORT",
        "Prometheus endpoint (GET /metrics)"),
    OPT("data-dir", DMF_OPT_STRING, data_dir, 0, 0, "/var/lib/damselfly/manager", "DIR",
        "where the default SQLite database is kept"),
    OPT("database", DMF_OPT_STRING, database, 0, 0, NULL, "URL",
        "sqlite:PATH or postgres://USER@HOST:PORT/DB (default: sqlite:DATA-DIR/manager.db)"),
    OPT("root-password-file", DMF_OPT_STRING, root_password_file, 0, 0, NULL, "FILE",
        "password of the root user made at first start (default: a random one, printed once)"),
    OPT("keepalive-timeout", DMF_OPT_DURATION, keepalive_timeout, 500, 600000, "15s", "DURATION",
        "a scheduler or seed peer silent this long is inactive"),
    OPT("session-ttl", DMF_OPT_DURATION, session_ttl, 60000, 2592000000, "24h", "DURATION",
        "how long a sign-in's session token is valid"),
    OPT("config-interval", DMF_OPT_DURATION, config_interval, 200, 3600000, "30s", "DURATION",
        "how often daemons ask again for their schedulers and dynamic config"),
    OPT("workers", DMF_OPT_INT, workers, 1, 64, "4", "N",
        "worker threads for database calls and password hashing"),
    OPT("tls-cert", DMF_OPT_STRING, tls_cert, 0, 0, NULL, "FILE",
        "PEM certificate of this manager (OU = manager), signed by --tls-ca: turns on mutual "
        "TLS for the gRPC Manager service (callers must present a certificate signed by "
        "--tls-ca) and for the manager's calls to schedulers (jobs, live view), which accept "
        "only a scheduler's certificate; reread every 2 s. All three --tls-* or none"),
    OPT("tls-key", DMF_OPT_STRING, tls_key, 0, 0, NULL, "FILE", "PEM private key of --tls-cert"),
    OPT("tls-ca", DMF_OPT_STRING, tls_ca, 0, 0, NULL, "FILE",
        "PEM CA bundle that signs the cluster's certificates"),
    OPT("log-level", DMF_OPT_STRING, log_level, 0, 0, "info", "LEVEL",
        "debug, info, warn or error"),
    OPT("config", DMF_OPT_STRING, config, 0, 0, NULL, "FILE",
        "read options from this YAML file (flags override it)"),
};

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    dmf_info("signal %d: shutting down", (int)sig);
    event_base_loopbreak(arg);
}

/* Binds evhttp on "HOST:PORT"; returns the port bound, or -1 with a reason in err. */
static int http_bind(struct evhttp *http, const char *addr, char *err, size_t errlen)
{
    char host[256], why[256];
    uint16_t port;
    if (dmf_parse_hostport(addr, host, sizeof(host), &port, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", addr, why);
        return -1;
    }
    errno = 0;
    struct evhttp_bound_socket *bs = evhttp_bind_socket_with_handle(http, host, port);
    if (!bs) {
        snprintf(err, errlen, "cannot listen on %s: %s", addr,
                 errno == EADDRINUSE ? "address in use"
                 : errno             ? strerror(errno)
                                     : "failed");
        return -1;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&ss, &sl) != 0)
        return port;
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static void host_of(const char *addr, char *out, size_t n)
{
    const char *colon = strrchr(addr, ':');
    snprintf(out, n, "%.*s", colon ? (int)(colon - addr) : (int)strlen(addr), addr);
}

static int run_manager(int argc, char **argv)
{
    struct manager_opts o = {0};
    char err[512];
    bool help = false;
    int rc = 1;
    struct dmf_manager m = {0};
    struct evhttp *http = NULL, *mhttp = NULL;
    dmf_manager_grpc_t *grpc = NULL;
    struct event *sigint = NULL, *sigterm = NULL;
    char *dburl = NULL;

    if (dmf_config_parse(options, DMF_ARRAY_SIZE(options), &o, argc, argv, NULL, &help, err,
                         sizeof(err)) != 0) {
        fprintf(stderr, "damselfly manager: %s\n", err);
        return 2;
    }
    if (help) {
        dmf_config_usage(stdout, "damselfly manager [--listen ADDR:PORT] [--database URL]",
                         dmf_cmd_manager.summary, options, DMF_ARRAY_SIZE(options));
        rc = 0;
        goto out;
    }
    if (dmf_log_set_level(o.log_level) != 0) {
        fprintf(stderr, "damselfly manager: --log-level: '%s' is not debug, info, warn or error\n",
                o.log_level);
        rc = 2;
        goto out;
    }
    dmf_log_set_component("manager");
    signal(SIGPIPE, SIG_IGN);
    if (o.database) {
        dburl = dmf_xstrdup(o.database);
    } else {
        int e = dmf_mkdir_p(o.data_dir);
        if (e != 0) {
            fprintf(stderr, "damselfly manager: cannot create %s: %s\n", o.data_dir,
                    dmf_strerror(e));
            goto out;
        }
        dburl = dmf_xasprintf("sqlite:%s/manager.db", o.data_dir);
    }
    if (dmf_mdb_open(dburl, &m.db, err, sizeof(err)) != 0) {
        fprintf(stderr, "damselfly manager: %s\n", err);
        goto out;
    }
    char hn[64] = "";
    gethostname(hn, sizeof(hn) - 1);
    snprintf(m.id, sizeof(m.id), "%s-%d-%lld", hn, (int)getpid(), (long long)time(NULL));
    m.keepalive_timeout_ms = o.keepalive_timeout;
    m.session_ttl_s = o.session_ttl / 1000;
    m.config_interval_ms = o.config_interval;
    m.signin = dmf_signin_limit_new();
    m.secrets = dmf_job_secrets_new();
    /* Before the loop runs, so blocking is fine here. */
    if (dmf_api_bootstrap_root(&m, o.root_password_file, err, sizeof(err)) != 0) {
        fprintf(stderr, "damselfly manager: %s\n", err);
        goto out;
    }

    m.base = dmf_rpc_event_base_new();
    m.rpc = dmf_rpc_new(m.base);
    struct dmf_tls_files tls = {.cert = o.tls_cert, .key = o.tls_key, .ca = o.tls_ca};
    if (dmf_rpc_tls_enable(m.rpc, &tls, err, sizeof(err)) != 0) {
        fprintf(stderr, "damselfly manager: --tls-cert/--tls-key/--tls-ca: %s\n", err);
        goto out;
    }
    const struct dmf_tls_identity *self = dmf_rpc_tls_identity(m.rpc);
    if (self && self->role != DMF_TLS_ROLE_MANAGER) {
        fprintf(stderr,
                "damselfly manager: --tls-cert %s is a %s certificate (host %s): a manager "
                "needs one whose OU is manager (scripts/make-certs.sh DIR host ID manager)\n",
                o.tls_cert, dmf_tls_role_name(self->role), self->host_id);
        goto out;
    }
    if (self)
        dmf_info("mutual TLS on: this manager is %s by its certificate; callers must present a "
                 "certificate signed by %s",
                 self->host_id, o.tls_ca);
    m.wq = dmf_workq_new(m.base, (int)o.workers);
    http = evhttp_new(m.base);
    dmf_api_install(&m, http);
    int port = http_bind(http, o.listen, err, sizeof(err));
    if (port < 0) {
        fprintf(stderr, "damselfly manager: %s\n", err);
        goto out;
    }
    mhttp = evhttp_new(m.base);
    evhttp_set_allowed_methods(mhttp, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
    evhttp_set_cb(mhttp, "/metrics", dmf_metrics_http_handler, NULL);
    int mport = http_bind(mhttp, o.metrics_listen, err, sizeof(err));
    if (mport < 0) {
        fprintf(stderr, "damselfly manager: %s\n", err);
        goto out;
    }
    grpc = dmf_manager_grpc_new(&m);
    int gport = 0;
    if (dmf_manager_grpc_listen(grpc, o.grpc_listen, &gport, err, sizeof(err)) != 0) {
        fprintf(stderr, "damselfly manager: %s\n", err);
        goto out;
    }
    dmf_manager_grpc_start(grpc);
    m.jobs = dmf_jobs_start(&m);

    sigint = evsignal_new(m.base, SIGINT, on_signal, m.base);
    sigterm = evsignal_new(m.base, SIGTERM, on_signal, m.base);
    event_add(sigint, NULL);
    event_add(sigterm, NULL);

    char h1[256], h2[256], h3[256];
    host_of(o.listen, h1, sizeof(h1));
    host_of(o.grpc_listen, h2, sizeof(h2));
    host_of(o.metrics_listen, h3, sizeof(h3));
    dmf_info("manager %s ready: database %s (schema v%d)", m.id,
             dmf_mdb_kind(m.db) == DMF_MDB_SQLITE ? "sqlite" : "postgres", dmf_mdb_version(m.db));
    printf("manager listening on %s:%d (grpc on %s:%d, metrics on %s:%d)\n", h1, port, h2, gport,
           h3, mport);
    fflush(stdout);
    event_base_dispatch(m.base);
    rc = 0;
out:
    m.stopping = true;
    dmf_jobs_stop(m.jobs);
    dmf_manager_grpc_stop(grpc);
    if (http)
        evhttp_free(http);
    if (mhttp)
        evhttp_free(mhttp);
    if (m.wq)
        dmf_workq_free(m.wq);
    dmf_manager_grpc_free(grpc);
    if (sigint)
        event_free(sigint);
    if (sigterm)
        event_free(sigterm);
    if (m.rpc)
        dmf_rpc_free(m.rpc);
    if (m.base)
        event_base_free(m.base);
    dmf_mdb_close(m.db);
    dmf_signin_limit_free(m.signin); /* after the workers that use it */
    dmf_job_secrets_free(m.secrets);
    free(dburl);
    dmf_config_free(options, DMF_ARRAY_SIZE(options), &o);
    return rc;
}

const struct dmf_cmd dmf_cmd_manager = {
    .name = "manager",
    .summary = "run the manager (cluster registry, dynamic config, preheat jobs, REST API)",
    .run = run_manager,
    .options = options,
    .noptions = DMF_ARRAY_SIZE(options),
};
