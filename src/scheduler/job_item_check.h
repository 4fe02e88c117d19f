/* The pure checks behind RunJobItem (scheduler.proto): is a request well-formed and bounded,
 * which of the hosts this scheduler knows is its target, and may the caller send it. No I/O.
 * See docs/internals/MANAGER.md, "Jobs carried by the schedulers". */
#ifndef DMF_SCHEDULER_JOB_ITEM_CHECK_H
#define DMF_SCHEDULER_JOB_ITEM_CHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/tls_identity.h"
#include "damselfly/v1/scheduler.pb-c.h"

#define DMF_JOB_ITEM_ID_MAX     128
#define DMF_JOB_ITEM_URL_MAX    4096
#define DMF_JOB_ITEM_HEADERS    32
#define DMF_JOB_ITEM_HEADER_MAX 8192 /* one header's name plus value */

/* Is req a well-formed item: an item_id of 1..DMF_JOB_ITEM_ID_MAX of [A-Za-z0-9._:/-], a
 * known kind, a target (host_id or ip with rpc_port 1..65535), and for a preheat an http(s)
 * URL of at most DMF_JOB_ITEM_URL_MAX bytes with at most DMF_JOB_ITEM_HEADERS printable
 * headers, for a delete a task ID of 64 lower-case hex digits? 0, or -EINVAL with why
 * filled (never quoting a header value). */
int dmf_job_item_check(const Damselfly__V1__RunJobItemRequest *req, char *why, size_t whylen);

/* Is the known host (id, ip, rpc_port) the target req names? Its host_id, when set, must
 * be id; its ip and rpc_port, when set, must be the host's; rpc_port 0 (no Daemon service)
 * never matches. */
bool dmf_job_item_targets(const Damselfly__V1__RunJobItemRequest *req, const char *id,
                          const char *ip, uint32_t rpc_port);

/* May caller run job items? With TLS off (NULL) anyone may; with TLS on only a manager
 * certificate. */
bool dmf_job_item_may_run(const struct dmf_tls_identity *caller);

/* Do a and b describe the same work (kind, URL or task, and a target that agrees: host
 * IDs where both give one, addresses where both give one)? A second call with an item_id
 * already in use must: else it is refused rather than attached. */
bool dmf_job_item_same(const Damselfly__V1__RunJobItemRequest *a,
                       const Damselfly__V1__RunJobItemRequest *b);

#endif
