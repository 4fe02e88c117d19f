/* `damselfly cache ls|rm|gc`: the local daemon's cache, over its local API (the routes of
 * src/daemon/api/cache_routes.h). */
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/local_socket.h"
#include "common/cmd.h"
#include "common/config.h"
#include "common/util.h"

#define REPLY_MAX (64u << 20) /* an answer larger than this is refused */

enum {
    EXIT_OK = 0,
    EXIT_FAILED = 1,
    EXIT_USAGE = 2,
    EXIT_UNKNOWN = 3,   /* no such task */
    EXIT_IN_USE = 4,    /* the task is in use: not removed */
    EXIT_NO_DAEMON = 9, /* as `get`: no daemon at the socket */
    EXIT_DENIED = 10,   /* the socket refused this user */
};

struct cache_config {
    char *socket;
};

#define OPT(n, s, t, f, lo, hi, def, mv, h)                                                        \
    {                                                                                              \
        n, s, t, offsetof(struct cache_config, f), lo, hi, def, mv, h                              \
    }

static const struct dmf_option options[] = {
    OPT("socket", 0, DMF_OPT_STRING, socket, 0, 0, "/run/damselfly/daemon.sock", "PATH",
        "the local daemon's unix socket"),
};

static const char usage[] =
    "damselfly cache ls [--socket PATH]    list the cached tasks, least recently used first\n"
    "       damselfly cache rm ID|URL [--socket PATH]\n"
    "                                          remove a task (or every task of a URL)\n"
    "       damselfly cache gc [--socket PATH]    evict now what the limits say, print what "
    "was freed";

struct reply {
    int status;
    char *body; /* NUL-terminated, owned */
    size_t len;
};

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w < 0 ? -errno : -EIO;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* One request to the daemon; fills *r. Returns 0, or the exit code with a message printed. */
static int call(const char *socket, const char *method, const char *path, const char *body,
                struct reply *r)
{
    int fd, e = dmf_local_connect(socket, &fd);
    if (e == -ENOENT || e == -ECONNREFUSED || e == -ENOTSOCK) {
        fprintf(stderr, "damselfly cache: no daemon at %s (%s); is `damselfly daemon` running?\n",
                socket, dmf_strerror(e));
        return EXIT_NO_DAEMON;
    }
    if (e == -EACCES || e == -EPERM) {
        fprintf(stderr,
                "damselfly cache: %s refused this user (%s); ask for its group "
                "(--socket-group)\n",
                socket, dmf_strerror(e));
        return EXIT_DENIED;
    }
    if (e != 0) {
        fprintf(stderr, "damselfly cache: cannot connect to %s: %s\n", socket, dmf_strerror(e));
        return EXIT_FAILED;
    }
    size_t blen = body ? strlen(body) : 0;
    char *head = dmf_xasprintf("%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                               "Content-Type: text/plain\r\nContent-Length: %zu\r\n\r\n",
                               method, path, blen);
    e = write_all(fd, head, strlen(head));
    if (e == 0 && blen)
        e = write_all(fd, body, blen);
    free(head);
    size_t cap = 65536, len = 0;
    char *buf = dmf_xmalloc(cap + 1);
    while (e == 0) {
        if (len == cap) {
            if (cap >= REPLY_MAX) {
                e = -EMSGSIZE;
                break;
            }
            cap *= 2;
            buf = dmf_xrealloc(buf, cap + 1);
        }
        ssize_t got = read(fd, buf + len, cap - len);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            e = -errno;
        if (got <= 0)
            break;
        len += (size_t)got;
    }
    close(fd);
    buf[len] = '\0';
    char *sep = strstr(buf, "\r\n\r\n");
    int status = 0;
    if (e == 0 && (sep == NULL || sscanf(buf, "HTTP/1.%*d %d", &status) != 1))
        e = -EPROTO;
    if (e != 0) {
        fprintf(stderr, "damselfly cache: bad answer from the daemon at %s: %s\n", socket,
                dmf_strerror(e));
        free(buf);
        return EXIT_FAILED;
    }
    r->status = status;
    r->len = len - (size_t)(sep + 4 - buf);
    r->body = dmf_xmalloc(r->len + 1);
    memcpy(r->body, sep + 4, r->len);
    r->body[r->len] = '\0';
    free(buf);
    return 0;
}

static void human(uint64_t b, char *out, size_t len)
{
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)b;
    int i = 0;
    while (v >= 1024 && i < 4) {
        v /= 1024;
        i++;
    }
    snprintf(out, len, i ? "%.1f %s" : "%.0f %s", v, u[i]);
}

static void ago(int64_t ms, char *out, size_t len)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int64_t s = ((int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000 - ms) / 1000;
    if (s < 0)
        s = 0;
    if (s < 120)
        snprintf(out, len, "%llds ago", (long long)s);
    else if (s < 7200)
        snprintf(out, len, "%lldm ago", (long long)s / 60);
    else if (s < 172800)
        snprintf(out, len, "%lldh ago", (long long)s / 3600);
    else
        snprintf(out, len, "%lldd ago", (long long)s / 86400);
}

static int show_error(const struct reply *r, const char *what)
{
    fprintf(stderr, "damselfly cache: %s: %s", what, r->body[0] ? r->body : "failed\n");
    if (r->status == 404)
        return EXIT_UNKNOWN;
    if (r->status == 409)
        return EXIT_IN_USE;
    return EXIT_FAILED;
}

/* call() that also turns an answer other than 200 into its exit code (what names the
 * request in the message). 0 with *r to free, or the exit code. */
static int call_ok(const struct cache_config *cfg, const char *method, const char *path,
                   const char *body, const char *what, struct reply *r)
{
    int rc = call(cfg->socket, method, path, body, r);
    if (rc != 0 || r->status == 200)
        return rc;
    rc = show_error(r, what);
    free(r->body);
    return rc;
}

static int cache_ls(const struct cache_config *cfg)
{
    struct reply r;
    int rc = call_ok(cfg, "GET", "/cache", NULL, "ls", &r);
    if (rc != 0)
        return rc;
    printf("%-64s  %10s  %11s  %-9s  %-9s  %s\n", "TASK", "SIZE", "PIECES", "ACCESSED", "STATE",
           "URL");
    uint64_t total = 0;
    size_t n = 0;
    char *save = NULL;
    for (char *line = strtok_r(r.body, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char id[65], state[32], use[16];
        unsigned long long bytes;
        unsigned held, pieces;
        long long acc;
        int off = 0;
        if (sscanf(line, "%64[0-9a-f]\t%llu\t%u\t%u\t%lld\t%31[^\t]\t%15[^\t]\t%n", id, &bytes,
                   &held, &pieces, &acc, state, use, &off) != 7 ||
            off == 0)
            continue;
        char size[32], when[32], pc[32], st[48];
        human(bytes, size, sizeof(size));
        ago(acc, when, sizeof(when));
        snprintf(pc, sizeof(pc), "%u/%u", held, pieces);
        snprintf(st, sizeof(st), "%s%s", state, strcmp(use, "in-use") == 0 ? ",in-use" : "");
        printf("%-64s  %10s  %11s  %-9s  %-9s  %s\n", id, size, pc, when, st, line + off);
        total += bytes;
        n++;
    }
    char t[32];
    human(total, t, sizeof(t));
    printf("%zu task(s), %s of task data\n", n, t);
    free(r.body);
    return EXIT_OK;
}

static int cache_rm(const struct cache_config *cfg, const char *what)
{
    if (what[0] == '\0' || strlen(what) > 8192 || strpbrk(what, "\r\n") != NULL) {
        fprintf(stderr, "damselfly cache rm: give a task id (64 hex digits) or a URL\n");
        return EXIT_USAGE;
    }
    struct reply r;
    int rc = call_ok(cfg, "POST", "/cache/rm", what, what, &r);
    if (rc != 0)
        return rc;
    size_t n = 0;
    unsigned long long freed = 0;
    sscanf(r.body, "removed %zu %llu", &n, &freed);
    char f[32];
    human(freed, f, sizeof(f));
    printf("removed %zu task(s), %s freed\n", n, f);
    free(r.body);
    return EXIT_OK;
}

static int cache_gc(const struct cache_config *cfg)
{
    struct reply r;
    int rc = call_ok(cfg, "POST", "/cache/gc", NULL, "gc", &r);
    if (rc != 0)
        return rc;
    size_t n = 0, expired = 0, left = 0, in_use = 0;
    unsigned long long freed = 0, bytes = 0;
    sscanf(r.body, "evicted %zu %llu %zu %zu %llu %zu", &n, &freed, &expired, &left, &bytes,
           &in_use);
    char f[32], b[32];
    human(freed, f, sizeof(f));
    human(bytes, b, sizeof(b));
    printf("evicted %zu task(s) (%zu expired), %s freed; %zu task(s), %s left (%zu in use)\n", n,
           expired, f, left, b, in_use);
    free(r.body);
    return EXIT_OK;
}

static int run(int argc, char **argv)
{
    struct cache_config cfg = {0};
    struct dmf_strlist pos = {0};
    char err[512];
    bool help = false;
    int rc = EXIT_USAGE;
    if (dmf_config_parse(options, DMF_ARRAY_SIZE(options), &cfg, argc, argv, &pos, &help, err,
                         sizeof(err)) != 0) {
        fprintf(stderr, "damselfly cache: %s\n", err);
        return EXIT_USAGE;
    }
    if (help) {
        dmf_config_usage(stdout, usage,
                         "The local daemon's cache: list it, remove a task, evict now. Exit "
                         "codes: 0 done, 3 no such task, 4 task in use, 9 no daemon, 10 socket "
                         "refused, 2 usage.",
                         options, DMF_ARRAY_SIZE(options));
        rc = EXIT_OK;
        goto out;
    }
    const char *sub = pos.n > 0 ? pos.v[0] : "";
    if (strcmp(sub, "ls") == 0 && pos.n == 1)
        rc = cache_ls(&cfg);
    else if (strcmp(sub, "rm") == 0 && pos.n == 2)
        rc = cache_rm(&cfg, pos.v[1]);
    else if (strcmp(sub, "gc") == 0 && pos.n == 1)
        rc = cache_gc(&cfg);
    else
        fprintf(stderr, "usage: %s\n(see damselfly cache --help)\n", usage);
out:
    dmf_strlist_free(&pos);
    dmf_config_free(options, DMF_ARRAY_SIZE(options), &cfg);
    return rc;
}

const struct dmf_cmd dmf_cmd_cache = {
    .name = "cache",
    .summary = "list, remove or evict the local daemon's cached tasks",
    .run = run,
    .options = options,
    .noptions = DMF_ARRAY_SIZE(options),
};
