/* Descriptor limit and accept-error backoff; see fdlimit.h. */
#include "common/evx.h"
#include "common/fdlimit.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <event2/event.h>

#include "common/log.h"
#include "common/util.h"

struct dmf_listener_guard {
    struct dmf_listener_guard *next;
    struct evconnlistener *l;
    const char *name;
    struct event *resume;
    uint64_t failures;    /* accept errors since the last log line */
    uint64_t last_log_ms; /* 0: never logged */
};

/* libevent hands the error callback the listener's own argument (the accept callback's),
 * not ours: the guards of the process are found by listener in this short list (one per
 * listening socket; all on the loop thread). */
static struct dmf_listener_guard *guards;

uint64_t dmf_fd_limit_raise(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 0;
    if (rl.rlim_cur < rl.rlim_max) {
        rlim_t was = rl.rlim_cur;
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            rl.rlim_cur = was;
    }
    uint64_t n = rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : (uint64_t)rl.rlim_cur;
    if (n < 4096)
        dmf_warn("open files limit: %llu (low: each connection and open task takes one; raise "
                 "the hard limit, e.g. LimitNOFILE= or ulimit -Hn)",
                 (unsigned long long)n);
    else
        dmf_info("open files limit: %llu", (unsigned long long)n);
    return n;
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
    struct dmf_listener_guard *g = arg;
    evconnlistener_enable(g->l);
}

static void on_accept_error(struct evconnlistener *l, void *arg)
{
    int e = EVUTIL_SOCKET_ERROR();
    struct dmf_listener_guard *g = guards;
    while (g && g->l != l)
        g = g->next;
    if (g == NULL)
        return;
    g->failures++;
    uint64_t now = dmf_now_ms();
    if (g->last_log_ms == 0 || now - g->last_log_ms >= DMF_ACCEPT_LOG_MS) {
        dmf_warn("%s: cannot accept connections: %s (%llu failures since the last report); "
                 "pausing accepts for %d ms at a time",
                 g->name, strerror(e), (unsigned long long)g->failures, DMF_ACCEPT_PAUSE_MS);
        g->failures = 0;
        g->last_log_ms = now;
    }
    /* Whatever the error, do not retry at once: the socket stays readable. */
    evconnlistener_disable(l);
    struct timeval tv = dmf_timeval_ms(DMF_ACCEPT_PAUSE_MS);
    evtimer_add(g->resume, &tv);
}

struct dmf_listener_guard *dmf_listener_guard_new(struct evconnlistener *l, const char *name)
{
    struct dmf_listener_guard *g = dmf_xcalloc(1, sizeof(*g));
    g->l = l;
    g->name = name;
    g->resume = dmf_xevtimer_new(evconnlistener_get_base(l), on_resume, g);
    evconnlistener_set_error_cb(l, on_accept_error);
    g->next = guards;
    guards = g;
    return g;
}

void dmf_listener_guard_free(struct dmf_listener_guard *g)
{
    if (g == NULL)
        return;
    for (struct dmf_listener_guard **pp = &guards; *pp; pp = &(*pp)->next)
        if (*pp == g) {
            *pp = g->next;
            break;
        }
    event_free(g->resume);
    free(g);
}
