/* A load generator for the scheduler, on the project's own gRPC layer (common/rpc.h), so
 * that the client is not what limits the figures: bench/sched-load runs it.
 *
 *   dmf-sched-load --scheduler ADDR --pid PID [--hosts N] [--rounds R] [--tasks T]
 *                  [--peers K] [--window W] [--register-window RW] [--pieces P]
 *
 * Phase 1 announces N hosts once (new hosts), then R more times each (steady state), W
 * calls in flight. Phase 2 registers K peers on each of T tasks, one AnnouncePeer stream
 * per peer, RW registrations (--register-window, default 16, so that the latency is the
 * scheduler's and not a queue's) waiting for their first answer at a time; a peer that is sent
 * back to source reports P pieces with digests (so that later peers of its task have a
 * parent to be offered), as a daemon would. The streams stay open until the end, so the
 * scheduler holds every peer when its memory is read.
 *
 * For each phase it prints the calls per scheduler CPU-second (the scheduler's own
 * user+system time from /proc/PID/stat, read before and after), the wall time, the
 * latency to the first answer (p50, p99, max) for registrations, and the scheduler's RSS
 * per host and per attached peer (VmRSS differences). Exit 1 when a call failed. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/digest.h"
#include "common/rpc.h"
#include "common/util.h"
#include "damselfly/v1/scheduler.pb-c.h"

#define PEERS_PER_CHANNEL 256 /* one HTTP/2 connection carries this many peers' streams */

struct load {
    struct event_base *base;
    dmf_rpc_t *rpc;
    dmf_rpc_channel_t **chans;
    size_t nchans;
    int pid;
    unsigned hosts, rounds, tasks, peers, window, rwindow, pieces;
    /* phase state */
    uint64_t next, done, failed, inflight, total;
    struct peer *peer;
    double *lat_ms;
    size_t nlat;
    struct event *tick;
};

struct peer {
    struct load *l;
    dmf_rpc_call_t *call;
    unsigned task, host;
    uint64_t t0_us;
    bool answered;
};

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static double cpu_s(int pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    if (p == NULL ||
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static long rss_kib(int pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    long kib = -1;
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    if (f)
        fclose(f);
    return kib;
}

static void host_id(unsigned i, char *out, size_t n)
{
    snprintf(out, n, "load-host-%u", i);
}

static void task_id(unsigned t, char out[65])
{
    char seed[32];
    snprintf(seed, sizeof(seed), "load-task-%u", t);
    uint8_t d[DMF_SHA256_LEN];
    dmf_sha256(seed, strlen(seed), d);
    dmf_hex_encode(d, sizeof(d), out);
}

static dmf_rpc_channel_t *chan_for(struct load *l, unsigned i)
{
    return l->chans[i % l->nchans];
}

/* ---------------------------------------------------------------- phase 1: AnnounceHost */

static void announce_next(struct load *l);

static void on_announced(void *arg, grpc_status_code status, const char *details,
                         const uint8_t *resp, size_t len)
{
    struct load *l = arg;
    l->inflight--;
    l->done++;
    if (status != GRPC_STATUS_OK && l->failed++ == 0)
        fprintf(stderr, "sched-load: AnnounceHost: %d %s\n", status, details ? details : "");
    announce_next(l);
    if (l->done == l->total)
        event_base_loopbreak(l->base);
}

static void announce_next(struct load *l)
{
    while (l->inflight < l->window && l->next < l->total) {
        unsigned i = (unsigned)(l->next++ % l->hosts);
        char id[32], ip[32];
        host_id(i, id, sizeof(id));
        snprintf(ip, sizeof(ip), "10.%u.%u.%u", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        Damselfly__V1__Host h = DAMSELFLY__V1__HOST__INIT;
        h.id = id;
        h.hostname = id;
        h.ip = ip;
        h.piece_port = 65002;
        h.rpc_port = 65003;
        h.upload_capacity = 125000000;
        h.upload_rate = (uint64_t)(i % 7) * 1000000;
        Damselfly__V1__AnnounceHostRequest req = DAMSELFLY__V1__ANNOUNCE_HOST_REQUEST__INIT;
        req.host = &h;
        l->inflight++;
        dmf_rpc_unary(chan_for(l, i), "/damselfly.v1.Scheduler/AnnounceHost", &req.base, 30000,
                      on_announced, l);
    }
}

/* The loop runs until a phase's last answer breaks it: the rpc layer hands completions to
 * the loop from its own thread, so with nothing else registered a plain dispatch would
 * return at once. */
static void run_announces(struct load *l, uint64_t count)
{
    l->next = l->done = l->failed = l->inflight = 0;
    l->total = count;
    announce_next(l);
    event_base_loop(l->base, EVLOOP_NO_EXIT_ON_EMPTY);
}

/* ---------------------------------------------------------------- phase 2: RegisterPeer */

static void register_next(struct load *l);

static void report_pieces(struct peer *p)
{
    struct load *l = p->l;
    uint32_t nums[64];
    uint8_t sha[64][DMF_SHA256_LEN];
    Damselfly__V1__PieceDigest dg[64], *dp[64];
    unsigned n = l->pieces < 64 ? l->pieces : 64;
    for (unsigned i = 0; i < n; i++) {
        nums[i] = i;
        char s[48];
        snprintf(s, sizeof(s), "task %u piece %u", p->task, i);
        dmf_sha256(s, strlen(s), sha[i]);
        damselfly__v1__piece_digest__init(&dg[i]);
        dg[i].number = i;
        dg[i].sha256.data = sha[i];
        dg[i].sha256.len = DMF_SHA256_LEN;
        dp[i] = &dg[i];
    }
    Damselfly__V1__PieceProgress pr = DAMSELFLY__V1__PIECE_PROGRESS__INIT;
    pr.pieces = nums;
    pr.n_pieces = n;
    pr.digests = dp;
    pr.n_digests = n;
    pr.content_length = (int64_t)n * 4 * 1024 * 1024;
    pr.piece_length = 4 * 1024 * 1024;
    pr.bytes_from_origin = (uint64_t)pr.content_length;
    Damselfly__V1__AnnouncePeerRequest req = DAMSELFLY__V1__ANNOUNCE_PEER_REQUEST__INIT;
    req.msg_case = DAMSELFLY__V1__ANNOUNCE_PEER_REQUEST__MSG_PROGRESS;
    req.progress = &pr;
    dmf_rpc_call_send(p->call, &req.base);
}

static void peer_answered(struct peer *p, bool ok)
{
    struct load *l = p->l;
    if (p->answered)
        return;
    p->answered = true;
    l->lat_ms[l->nlat++] = (double)(now_us() - p->t0_us) / 1000.0;
    l->inflight--;
    l->done++;
    if (!ok && l->failed++ == 0)
        fprintf(stderr, "sched-load: a registration failed\n");
    register_next(l);
    if (l->done == l->total)
        event_base_loopbreak(l->base);
}

static void peer_on_message(void *arg, dmf_rpc_call_t *call, const uint8_t *data, size_t len)
{
    struct peer *p = arg;
    if (data == NULL)
        return;
    Damselfly__V1__AnnouncePeerResponse *r =
        damselfly__v1__announce_peer_response__unpack(NULL, len, data);
    if (r == NULL) {
        peer_answered(p, false);
        return;
    }
    bool first = !p->answered;
    if (r->msg_case == DAMSELFLY__V1__ANNOUNCE_PEER_RESPONSE__MSG_BACK_TO_SOURCE && first &&
        p->l->pieces > 0)
        report_pieces(p);
    damselfly__v1__announce_peer_response__free_unpacked(r, NULL);
    peer_answered(p, true);
}

static void peer_on_end(void *arg, dmf_rpc_call_t *call, grpc_status_code status,
                        const char *details)
{
    struct peer *p = arg;
    if (!p->answered) {
        if (p->l->failed == 0)
            fprintf(stderr, "sched-load: AnnouncePeer ended: %d %s\n", status,
                    details ? details : "");
        peer_answered(p, false);
    }
}

static const struct dmf_rpc_call_handler peer_handler = {peer_on_message, peer_on_end};

static void register_next(struct load *l)
{
    while (l->inflight < l->rwindow && l->next < l->total) {
        uint64_t k = l->next++;
        struct peer *p = &l->peer[k];
        p->l = l;
        p->task = (unsigned)(k / l->peers);
        p->host = (unsigned)(k % l->hosts);
        char tid[65], pid[96], hid[32], url[96];
        task_id(p->task, tid);
        host_id(p->host, hid, sizeof(hid));
        snprintf(pid, sizeof(pid), "%s-peer-%" PRIu64, hid, k);
        snprintf(url, sizeof(url), "http://origin.invalid/load/%u.bin", p->task);
        p->call = dmf_rpc_call_start(chan_for(l, (unsigned)k / PEERS_PER_CHANNEL),
                                     "/damselfly.v1.Scheduler/AnnouncePeer", 0, true);
        dmf_rpc_call_set_handler(p->call, &peer_handler, p);
        Damselfly__V1__RegisterPeer reg = DAMSELFLY__V1__REGISTER_PEER__INIT;
        reg.task_id = tid;
        reg.peer_id = pid;
        reg.host_id = hid;
        reg.url = url;
        reg.tag = "";
        reg.digest = "";
        Damselfly__V1__AnnouncePeerRequest req = DAMSELFLY__V1__ANNOUNCE_PEER_REQUEST__INIT;
        req.msg_case = DAMSELFLY__V1__ANNOUNCE_PEER_REQUEST__MSG_REGISTER;
        req.register_ = &reg;
        l->inflight++;
        p->t0_us = now_us();
        dmf_rpc_call_send(p->call, &req.base);
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(const double *v, size_t n, double q)
{
    if (n == 0)
        return 0;
    size_t i = (size_t)(q * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

/* ---------------------------------------------------------------- main */

static void row(const char *what, uint64_t n, double cpu, double wall, const double *lat,
                size_t nlat, long rss)
{
    printf("%-18s %9" PRIu64 " %10.2f %12.0f %8.2f", what, n, cpu, cpu > 0 ? (double)n / cpu : 0,
           wall);
    if (nlat)
        printf(" %8.2f %8.2f %8.2f", pct(lat, nlat, 0.5), pct(lat, nlat, 0.99), lat[nlat - 1]);
    else
        printf(" %8s %8s %8s", "-", "-", "-");
    printf(" %9.1f\n", (double)rss / 1024.0);
}

static unsigned arg_uint(const char *flag, const char *v, unsigned lo, unsigned hi)
{
    char *end;
    unsigned long x = strtoul(v, &end, 10);
    if (*v == '\0' || *end != '\0' || x < lo || x > hi) {
        fprintf(stderr, "sched-load: %s wants a number from %u to %u, not '%s'\n", flag, lo, hi, v);
        exit(2);
    }
    return (unsigned)x;
}

int main(int argc, char **argv)
{
    struct load l = {.hosts = 1000,
                     .rounds = 5,
                     .tasks = 10,
                     .peers = 100,
                     .window = 256,
                     .rwindow = 16,
                     .pieces = 4,
                     .pid = -1};
    const char *addr = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            printf("usage: dmf-sched-load --scheduler ADDR --pid PID [--hosts N] [--rounds R]\n"
                   "       [--tasks T] [--peers K] [--window W] [--register-window RW]\n"
                   "       [--pieces P]\n"
                   "(normally run through bench/sched-load, which starts the scheduler)\n");
            return 0;
        }
        if (v == NULL) {
            fprintf(stderr, "sched-load: %s needs a value (see --help)\n", a);
            return 2;
        }
        if (strcmp(a, "--scheduler") == 0)
            addr = v;
        else if (strcmp(a, "--pid") == 0)
            l.pid = (int)arg_uint(a, v, 1, 1u << 30);
        else if (strcmp(a, "--hosts") == 0)
            l.hosts = arg_uint(a, v, 1, 1000000);
        else if (strcmp(a, "--rounds") == 0)
            l.rounds = arg_uint(a, v, 0, 1000);
        else if (strcmp(a, "--tasks") == 0)
            l.tasks = arg_uint(a, v, 0, 100000);
        else if (strcmp(a, "--peers") == 0)
            l.peers = arg_uint(a, v, 1, 100000);
        else if (strcmp(a, "--window") == 0)
            l.window = arg_uint(a, v, 1, 65536);
        else if (strcmp(a, "--register-window") == 0)
            l.rwindow = arg_uint(a, v, 1, 65536);
        else if (strcmp(a, "--pieces") == 0)
            l.pieces = arg_uint(a, v, 0, 64);
        else {
            fprintf(stderr, "sched-load: unknown option %s (see --help)\n", a);
            return 2;
        }
        i++;
    }
    if (addr == NULL || l.pid < 0 || cpu_s(l.pid) < 0) {
        fprintf(stderr, "sched-load: --scheduler ADDR and --pid of a running scheduler needed\n");
        return 2;
    }
    uint64_t npeers = (uint64_t)l.tasks * l.peers;
    if (npeers > 2000000) {
        fprintf(stderr, "sched-load: --tasks x --peers is at most 2,000,000\n");
        return 2;
    }
    l.base = dmf_rpc_event_base_new();
    l.rpc = dmf_rpc_new(l.base);
    l.nchans = (size_t)(npeers / PEERS_PER_CHANNEL + 1);
    if (l.nchans < 4)
        l.nchans = 4;
    l.chans = dmf_xcalloc(l.nchans, sizeof(*l.chans));
    for (size_t i = 0; i < l.nchans; i++)
        l.chans[i] = dmf_rpc_channel_new(l.rpc, addr);

    printf("sched-load: scheduler %s (pid %d): %u hosts, %u more rounds of announces (%u in "
           "flight), %u tasks x %u peers (%u registering at a time)\n",
           addr, l.pid, l.hosts, l.rounds, l.window, l.tasks, l.peers, l.rwindow);
    printf("%-18s %9s %10s %12s %8s %8s %8s %8s %9s\n", "phase", "calls", "sched CPU-s",
           "per CPU-s", "wall s", "p50 ms", "p99 ms", "max ms", "RSS MiB");
    long rss0 = rss_kib(l.pid);
    row("(idle)", 0, 0, 0, NULL, 0, rss0);

    double c0 = cpu_s(l.pid);
    uint64_t t0 = now_us();
    run_announces(&l, l.hosts);
    double c1 = cpu_s(l.pid);
    long rss1 = rss_kib(l.pid);
    row("announce (new)", l.hosts, c1 - c0, (double)(now_us() - t0) / 1e6, NULL, 0, rss1);
    uint64_t failed = l.failed;
    if (l.rounds) {
        t0 = now_us();
        run_announces(&l, (uint64_t)l.hosts * l.rounds);
        double c2 = cpu_s(l.pid);
        row("announce (again)", (uint64_t)l.hosts * l.rounds, c2 - c1,
            (double)(now_us() - t0) / 1e6, NULL, 0, rss_kib(l.pid));
        failed += l.failed;
    }

    long rss2 = rss_kib(l.pid);
    if (npeers) {
        l.peer = dmf_xcalloc(npeers, sizeof(*l.peer));
        l.lat_ms = dmf_xcalloc(npeers, sizeof(*l.lat_ms));
        l.next = l.done = l.failed = l.inflight = 0;
        l.total = npeers;
        double c3 = cpu_s(l.pid);
        t0 = now_us();
        register_next(&l);
        event_base_loop(l.base, EVLOOP_NO_EXIT_ON_EMPTY);
        double c4 = cpu_s(l.pid);
        double wall = (double)(now_us() - t0) / 1e6;
        qsort(l.lat_ms, l.nlat, sizeof(*l.lat_ms), cmp_double);
        /* Let the scheduler settle (the progress reports land) before reading memory. */
        struct timeval tv = {1, 0};
        event_base_loopexit(l.base, &tv);
        event_base_loop(l.base, EVLOOP_NO_EXIT_ON_EMPTY);
        long rss3 = rss_kib(l.pid);
        row("register", npeers, c4 - c3, wall, l.lat_ms, l.nlat, rss3);
        failed += l.failed;
        printf("\nscheduler RSS: %.2f KiB per host, %.2f KiB per attached peer\n",
               (double)(rss1 - rss0) / l.hosts, (double)(rss3 - rss2) / (double)npeers);
        for (uint64_t k = 0; k < npeers; k++)
            if (l.peer[k].call)
                dmf_rpc_call_release(l.peer[k].call);
        free(l.peer);
        free(l.lat_ms);
    } else {
        printf("\nscheduler RSS: %.2f KiB per host\n", (double)(rss1 - rss0) / l.hosts);
    }
    printf("failed calls: %" PRIu64 "\n", failed);
    for (size_t i = 0; i < l.nchans; i++)
        dmf_rpc_channel_free(l.chans[i]);
    free(l.chans);
    dmf_rpc_free(l.rpc);
    event_base_free(l.base);
    return failed ? 1 : 0;
}
