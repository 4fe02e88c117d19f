/* Bounds checks of what the network sends the scheduler (AnnounceHost, RegisterPeer, the
 * ids of LeavePeer, LeaveHost, StatTask and ParentFailure), before anything is kept: ids,
 * free text, task ids, host info and register requests, against the DMF_SCHED_*_MAX
 * bounds of sched.h. Each check returns 0, or -EINVAL with a one-line reason in err that
 * names the field; a URL or a header value is never echoed (they may carry secrets).
 *
 * err may be NULL (or errlen 0): the code is returned all the same. Strings are borrowed
 * for the call; NULL reads as "". */
#ifndef DMF_SCHED_CHECK_H
#define DMF_SCHED_CHECK_H

#include <stddef.h>

#include "scheduler/sched.h"

/* Writes the formatted reason into err (truncated to errlen) and returns code. */
int dmf_sched_fail(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* An identifier named `what`: 1..max bytes of printable ASCII without spaces. */
int dmf_sched_check_id(const char *what, const char *v, size_t max, char *err, size_t errlen);
/* Free text named `what`: 0..max bytes, no control characters (DEL included). */
int dmf_sched_check_text(const char *what, const char *v, size_t max, char *err, size_t errlen);
/* A task id: 64 lower-case hex digits (dmf_task_id_valid). */
int dmf_sched_check_task_id(const char *id, char *err, size_t errlen);
/* An AnnounceHost: id, hostname, idc, location, an IPv4/IPv6 ip, ports, type (a seed needs
 * an rpc_port). */
int dmf_sched_check_host_info(const struct dmf_scheduler_host_info *h, char *err, size_t errlen);
/* A RegisterPeer: task, peer and host ids, tag, url, headers, filter_query, digest
 * ("sha256:HEX" when set) and held_pieces. */
int dmf_sched_check_register(const struct dmf_scheduler_register *r, char *err, size_t errlen);

#endif
