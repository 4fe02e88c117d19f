/* Admission control of the scheduler: what one host may ask of it. Per host id: how many
 * AnnouncePeer streams it keeps registered at once, how fast it registers peers (a token
 * bucket), and how fast its peers make seeds fetch tasks (another bucket) and how many bytes
 * (a budget per hour, charged once a triggered task's size is known; while sizes are
 * unknown, at most trigger_unsized triggers are outstanding, which bounds the overshoot to
 * that many tasks), so that one
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
    uint32_t streams_per_host;       /* registered streams open at once; 0 = 1,000 */
    uint32_t registers_per_sec;      /* sustained registers per host; 0 = 500 */
    uint32_t register_burst;         /* bucket size; 0 = 2,000 */
    uint32_t triggers_per_min;       /* seed triggers a host's peers cause; 0 = 60 */
    uint32_t trigger_burst;          /* bucket size; 0 = 20 */
    size_t max_hosts;                /* hosts tracked at once; 0 = 100,000 */
    uint64_t trigger_bytes_per_hour; /* bytes a host's triggers make seeds fetch; 0 = no bound */
    uint32_t trigger_unsized;        /* triggers outstanding before their size is known; 0 = 8 */
};

enum dmf_admission_refusal {
    DMF_ADMIT_OK = 0,
    DMF_ADMIT_STREAMS,         /* too many streams open */
    DMF_ADMIT_REGISTER_RATE,   /* registers too fast */
    DMF_ADMIT_HOSTS,           /* too many hosts tracked */
    DMF_ADMIT_TRIGGER_RATE,    /* seed triggers too fast (the task bucket) */
    DMF_ADMIT_TRIGGER_BYTES,   /* the host's triggered bytes this hour are spent */
    DMF_ADMIT_TRIGGER_UNSIZED, /* too many triggers whose size is not known yet */
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
/* May a peer of host_id make a seed fetch a task at now_ms? DMF_ADMIT_OK takes a token and
 * counts the trigger as unsized until dmf_admission_trigger_sized; else why not. */
enum dmf_admission_refusal dmf_admission_trigger(struct dmf_admission *a, const char *host_id,
                                                 uint64_t now_ms);
/* A trigger admitted for host_id learnt its task's size (bytes), or ended before it was known
 * (bytes < 0): no longer unsized; bytes are charged to the host's byte budget (which may go
 * into debt, down to minus one hour's worth). Call once per admitted trigger. */
void dmf_admission_trigger_sized(struct dmf_admission *a, const char *host_id, int64_t bytes,
                                 uint64_t now_ms);
/* Bytes host_id's triggers may still make seeds fetch (INT64_MAX without a byte budget). */
int64_t dmf_admission_trigger_bytes_left(struct dmf_admission *a, const char *host_id,
                                         uint64_t now_ms);
/* Forgets hosts with no open stream whose buckets are full again at now_ms (nothing to
 * remember about them); returns how many. */
size_t dmf_admission_sweep(struct dmf_admission *a, uint64_t now_ms);
/* Open streams of host_id (for tests and logs). */
uint32_t dmf_admission_streams(const struct dmf_admission *a, const char *host_id);
/* "streams", "register_rate", "hosts", "trigger_budget", "trigger_bytes", "trigger_unsized". */
const char *dmf_admission_refusal_name(enum dmf_admission_refusal r);

#endif
