/* Descriptors: the process's open-file limit, and listeners that survive running out.
 *
 * When accept() fails for want of a descriptor (EMFILE, ENFILE) or of memory, the pending
 * connection stays in the kernel's queue and the listening socket stays readable: a
 * listener that just logs and retries spins at 100 % CPU and floods the log. A guarded
 * listener instead stops accepting for a moment (DMF_ACCEPT_PAUSE_MS), so that closing
 * connections can free descriptors, and logs one line per DMF_ACCEPT_LOG_MS interval with
 * the count of failures since the last one. */
#ifndef DMF_FDLIMIT_H
#define DMF_FDLIMIT_H

#include <stdint.h>

#include <event2/listener.h>

#define DMF_ACCEPT_PAUSE_MS 200
#define DMF_ACCEPT_LOG_MS   10000

/* Raises the soft RLIMIT_NOFILE to the hard limit and returns the limit now in force (0
 * when it cannot be read). Logs the figure, and a warning when it stays below 4096. */
uint64_t dmf_fd_limit_raise(void);

/* Guards l, which otherwise works as before: on accept errors it pauses and logs as above.
 * `name` ("piece server") is borrowed and names the listener in the log. The guard owns a
 * timer on l's event base; free it (dmf_listener_guard_free, NULL is fine) before l. */
struct dmf_listener_guard;
struct dmf_listener_guard *dmf_listener_guard_new(struct evconnlistener *l, const char *name);
void dmf_listener_guard_free(struct dmf_listener_guard *g);

#endif
