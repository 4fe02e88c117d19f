/* The daemon's bandwidth limits: where they come from (the command line and YAML config,
 * reloaded on SIGHUP; the manager's dynamic config) and the one hook that applies them to
 * the host's throttle (common/throttle.h) and to the upload capacity announced to the
 * scheduler. Runs on the loop thread. */
#ifndef DMF_DAEMON_LIMITS_H
#define DMF_DAEMON_LIMITS_H

#include <stdint.h>

#include "daemon/daemon.h"

/* The lowest host limit accepted (bytes/s): below it a piece of 4 MiB takes over a minute. */
#define DMF_LIMIT_MIN (64 * 1024)

/* Pure: the limits in force given the local ones and the manager's: each the lower of the
 * two that are set (a host never exceeds either), 0 when neither is. The origin limit is
 * capped by the download limit. */
struct dmf_limits dmf_limits_effective(const struct dmf_limits *local,
                                       const struct dmf_limits *manager);
/* Pure: the upload capacity to announce: the configured one, lowered to the upload limit
 * in force (the scheduler ranks parents by it). */
uint64_t dmf_limits_upload_capacity(uint64_t configured, uint64_t upload_limit);

/* The hook: sets the local limits (from the config, or its reload: why says which) and
 * applies the effective ones at once, logging every value that changed. */
void dmf_daemon_limits_set_local(struct dmf_daemon *d, const struct dmf_limits *l, const char *why);
/* The same from the manager's dynamic config (its fields; 0 = the manager sets none). */
void dmf_daemon_limits_set_manager(struct dmf_daemon *d, const struct dmf_limits *l);
/* The upload capacity this host announces now. */
uint64_t dmf_daemon_upload_capacity(const struct dmf_daemon *d);

#endif
