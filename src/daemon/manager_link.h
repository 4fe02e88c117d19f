/* `damselfly daemon --manager ADDR` (a list): the daemon asks the managers which schedulers
 * serve its cluster (ListSchedulers, matched by scopes), uses one of them, asks again every
 * refresh interval and moves to another when its own is no longer given (inactive). A seed
 * peer also registers itself (KeepAlive). --scheduler, when given, wins over the manager's
 * answer. Dead managers are skipped. */
#ifndef DMF_DAEMON_MANAGER_LINK_H
#define DMF_DAEMON_MANAGER_LINK_H

#include <stdbool.h>
#include <stdint.h>

#include "daemon/daemon.h"

/* The end of dmf_daemon_manager_resolve's question (answered or not). */
typedef void (*dmf_manager_resolved_cb)(void *arg);

/* Before the engine is made: asks the managers and sets d->cfg.scheduler to a scheduler of
 * this host's cluster, unless --scheduler was given; resolved runs (from the loop, once)
 * when the answer came or timeout_ms passed. Without an answer the daemon starts without a
 * scheduler and keeps asking. Returns false, and resolved never runs, without --manager.
 * Never runs the loop itself. */
bool dmf_daemon_manager_resolve(struct dmf_daemon *d, uint64_t timeout_ms,
                                dmf_manager_resolved_cb resolved, void *arg);
/* Once the listeners are bound: starts the re-polls and, for a seed, the KeepAlive. */
void dmf_daemon_manager_link_start(struct dmf_daemon *d);
void dmf_daemon_manager_link_free(struct dmf_daemon *d);

/* The pattern of the cluster's block list (blocklist.h) that url matches, with its secret
 * query parameters removed, or NULL: such a download is refused. */
const char *dmf_daemon_url_blocked(struct dmf_daemon *d, const char *url);
/* Is application (a checked name, application.h; NULL or "" = none, never blocked) on
 * the cluster's block_applications? Such a download is refused. */
bool dmf_daemon_application_blocked(struct dmf_daemon *d, const char *application);

#endif
