/* Admission control of the scheduler: what one host may ask of it. Per host id: how many
 * AnnouncePeer streams it keeps registered at once, how fast it registers peers (a token
 * bucket), and how fast its peers make seeds fetch tasks (another bucket), so that one
 * client's flood is refused (RESOURCE_EXHAUSTED) while honest hosts keep their latency.
 * The limit on tasks per host is the scheduler's own (max_peers_per_host in sched.h).
 * Pure decisions over an injected clock; no I/O. */
#ifndef DMF_SCHEDULER_ADMISSION_H
#define DMF_SCHEDULER_ADMISSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "scheduler/strmap.h"

struct dmf_admission_config {
    uint32_t streams_per_host;  /* registered streams open at once; 0 = 1,000 */
    uint32_t registers_per_sec; /* sustained registers per host; 0 = 500 */
    uint32_t register_burst;    /* bucket size; 0 = 2,000 */
    uint32_t triggers_per_min;  /* seed triggers a host's peers cause; 0 = 60 */
    uint32_t trigger_burst;     /* bucket size; 0 = 20 */
    size_t max_hosts;           /* hosts tracked at once; 0 = 100,000 */
};

enum dmf_admission_refusal {
    DMF_ADMIT_OK = 0,
    DMF_ADMIT_STREAMS,       /* too many streams open */
    DMF_ADMIT_REGISTER_RATE, /* registers too fast */
    DMF_ADMIT_HOSTS,         /* too many hosts tracked */
};

struct dmf_admission {
    struct dmf_admission_config cfg;
    dmf_strmap_t hosts; /* id -> struct dmf_admission_host (private) */
};

/* cfg is copied, zeros replaced by the defaults above. */
void dmf_admission_init(struct dmf_admission *a, const struct dmf_admission_config *cfg);
void dmf_admission_free(struct dmf_admission *a);

/* A stream of host_id registers a peer at now_ms: DMF_ADMIT_OK (counted as open until
 * dmf_admission_stream_closed) or why it is refused (nothing counted). */
enum dmf_admission_refusal dmf_admission_register(struct dmf_admission *a, const char *host_id,
                                                  uint64_t now_ms);
/* A stream admitted by dmf_admission_register ended. */
void dmf_admission_stream_closed(struct dmf_admission *a, const char *host_id);
/* May a peer of host_id make a seed fetch a task at now_ms? Takes a token when it may. */
bool dmf_admission_trigger(struct dmf_admission *a, const char *host_id, uint64_t now_ms);
/* Forgets hosts with no open stream whose buckets are full again at now_ms (nothing to
 * remember about them); returns how many. */
size_t dmf_admission_sweep(struct dmf_admission *a, uint64_t now_ms);
/* Open streams of host_id (for tests and logs). */
uint32_t dmf_admission_streams(const struct dmf_admission *a, const char *host_id);
/* "streams", "register_rate", "hosts". */
const char *dmf_admission_refusal_name(enum dmf_admission_refusal r);

#endif
