/* Host-wide bandwidth limits on the event loop: the token buckets of bucket.h shared by
 * every transfer of the host, and one per task (a flow), with the fair share between
 * tasks. Downloads (libcurl, http_client.h) charge the buckets as bytes arrive and pause
 * while a bucket is in debt; uploads (the piece server's evhttp connections) go through a
 * libevent rate-limit group. One per daemon; everything runs on the loop thread.
 *
 *   download  everything the host downloads: from parents and from origins together
 *   origin    what it downloads from origins (back-to-source, the proxy's pass-through),
 *             within the download limit
 *   upload    pieces served to other hosts
 *   a flow    one task (get --limit), within the others; its priority is its weight in
 *             the fair share (bucket.h) */
#ifndef DMF_THROTTLE_H
#define DMF_THROTTLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/bucket.h"

struct event_base;
struct bufferevent;

enum dmf_limit_kind { DMF_LIMIT_DOWNLOAD, DMF_LIMIT_ORIGIN, DMF_LIMIT_UPLOAD, DMF_LIMIT_KINDS };
/* Which host buckets a transfer charges (bits of 1 << kind). */
#define DMF_CHARGE_DOWNLOAD (1u << DMF_LIMIT_DOWNLOAD)
#define DMF_CHARGE_ORIGIN   (1u << DMF_LIMIT_ORIGIN)

typedef struct dmf_throttle dmf_throttle_t;
struct dmf_flow;

/* A transfer's place in the queue of those waiting for tokens (embedded in the transfer;
 * zeroed before first use). wake runs on a later loop pass when the transfer may go on:
 * its next dmf_throttle_take then passes. */
struct dmf_throttle_wait {
    void (*wake)(void *arg);
    void *arg;
    struct dmf_flow *flow; /* borrowed reference of the transfer (may be NULL) */
    unsigned charge;       /* DMF_CHARGE_* */
    size_t len;            /* the bytes it waits to move (charged when granted) */
    bool queued, granted;
    bool pending; /* let go by the queue, not yet moved: its task counts as backlogged */
    uint64_t since_ns;
    struct dmf_throttle_wait *prev, *next;
};

/* Unlimited until dmf_throttle_set. Registers the limit metrics. */
dmf_throttle_t *dmf_throttle_new(struct event_base *base);
/* Frees; no transfer may still wait. NULL is ignored. */
void dmf_throttle_free(dmf_throttle_t *t);
/* Sets a host limit in bytes per second (0 = unlimited), effective at once: waiting
 * transfers are served again by the new rate. */
void dmf_throttle_set(dmf_throttle_t *t, enum dmf_limit_kind kind, uint64_t rate);
uint64_t dmf_throttle_get(const dmf_throttle_t *t, enum dmf_limit_kind kind);
const char *dmf_limit_name(enum dmf_limit_kind kind);

/* A flow for one task: its own limit (0 = none) and priority. Returns a new reference. */
struct dmf_flow *dmf_flow_new(dmf_throttle_t *t, uint64_t rate, enum dmf_priority prio);
struct dmf_flow *dmf_flow_ref(struct dmf_flow *f);
/* Drops a reference; the last one frees (no transfer of the flow may still wait). NULL is
 * ignored. */
void dmf_flow_unref(struct dmf_flow *f);
void dmf_flow_set(struct dmf_flow *f, uint64_t rate, enum dmf_priority prio);
uint64_t dmf_flow_rate(const struct dmf_flow *f);
enum dmf_priority dmf_flow_priority(const struct dmf_flow *f);

/* Whether a download transfer may consume len bytes now. 0: yes, charged to its buckets
 * (w->charge, the flow's). 1: no; w is queued and w->wake runs when it may (then call
 * again with the bytes). A transfer that finds others waiting before it queues behind
 * them. */
int dmf_throttle_take(dmf_throttle_t *t, struct dmf_throttle_wait *w, size_t len);
/* Bytes charged by a take that the transfer did not consume after all (its reader paused
 * for its own reasons): they are offered again, the next take of w charges only what
 * exceeds len. */
void dmf_throttle_unused(struct dmf_throttle_wait *w, size_t len);
/* Leaves the queue (a transfer that ends or is cancelled). Harmless when not queued. */
void dmf_throttle_cancel(dmf_throttle_t *t, struct dmf_throttle_wait *w);

/* Puts an upload connection under the upload limit (no-op while unlimited; once in, a
 * connection follows every later change). */
void dmf_throttle_add_upload(dmf_throttle_t *t, struct bufferevent *bev);

#endif
