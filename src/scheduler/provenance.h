/* Digest provenance: whose piece digests the scheduler accepts, and what a disagreement
 * between two accepted reporters means. Pure decisions, no state and no I/O (sched.c
 * keeps the digests and acts on the verdicts); see docs/architecture.md, "Trust model".
 *
 * A piece digest is the reference every other host checks bytes against, so it counts
 * only when its reporter fetched that piece from the origin because the scheduler told it
 * to: a seed host (the scheduler sends a seed nowhere but to the origin), or a peer the
 * scheduler sent back to source while no seed could fetch the task (not one whose host
 * spent its budget of seed triggers, or that reported the seeds away: sched.c). A peer in
 * P2P mode, or one that only says it
 * is at the origin (a re-register with from_source), reports digests of bytes it got from anyone:
 * they are ignored. Whether a host is a seed is the host table's business (its announce,
 * and a seed allow-list where one is configured). */
#ifndef DMF_PROVENANCE_H
#define DMF_PROVENANCE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/digest.h"

/* --digest-sources: who may report piece digests. */
enum dmf_digest_sources {
    DMF_DIGEST_SOURCES_FETCHERS = 0, /* seeds and peers the scheduler sent to the origin */
    DMF_DIGEST_SOURCES_SEEDS = 1,    /* seed hosts only */
};

/* Parses "fetchers" or "seeds" into *out. 0, or -EINVAL (out untouched). */
int dmf_digest_sources_parse(const char *s, enum dmf_digest_sources *out);
/* The option value of p ("fetchers" or "seeds"). */
const char *dmf_digest_sources_name(enum dmf_digest_sources p);

/* What the scheduler knows of the peer that reports a digest. */
struct dmf_provenance_reporter {
    bool seed_host;      /* the peer runs on a seed host */
    bool source_ordered; /* the scheduler sent this peer to the origin (back to source) */
};

/* Whether digests from r count at all under policy. */
bool dmf_provenance_trusted(enum dmf_digest_sources policy,
                            const struct dmf_provenance_reporter *r);

enum dmf_provenance_verdict {
    DMF_PROV_UNTRUSTED,      /* ignored: r did not fetch the piece from the origin on order */
    DMF_PROV_NEW,            /* the piece's first accepted digest: stored */
    DMF_PROV_SAME,           /* agrees with the stored digest */
    DMF_PROV_SEED_OVERRULES, /* disagrees; r is a seed and the stored one is not: replaced */
    DMF_PROV_SEED_STANDS,    /* disagrees; the stored one is a seed's and r is not: ignored */
    DMF_PROV_CONFLICT,       /* disagrees between equals: the origin gave two answers */
};

/* Judges digest `got` for a piece from reporter r. have is the stored digest of that piece
 * (NULL when none), have_from_seed whether a seed host reported it. Every verdict from
 * SEED_OVERRULES on marks the task conflicted. */
enum dmf_provenance_verdict dmf_provenance_judge(enum dmf_digest_sources policy,
                                                 const struct dmf_provenance_reporter *r,
                                                 const uint8_t *have, bool have_from_seed,
                                                 const uint8_t got[DMF_SHA256_LEN]);

/* A name for a verdict, for logs ("untrusted", "new", ...). */
const char *dmf_provenance_verdict_name(enum dmf_provenance_verdict v);

/* The origin's validators (ETag, Last-Modified) follow the same rule: pinned for the task
 * only from a reporter whose digests count. A registrant that is not one (its conditional
 * request's validators) pins them provisionally: a triggered seed is told them, TaskMeta
 * is not, and they refuse nobody. */
enum dmf_validators_verdict {
    DMF_VAL_KEEP,    /* nothing reported, or an untrusted reporter with validators pinned */
    DMF_VAL_PIN,     /* none pinned: pinned, trusted or provisional as the reporter is */
    DMF_VAL_REPLACE, /* provisional ones pinned, a trusted reporter's replace them */
    DMF_VAL_FILL,    /* trusted ones pinned: only those still missing are added */
};

/* What validators from a reporter (reporter_trusted: dmf_provenance_trusted) do to a task
 * with validators pinned or not (pinned_trusted: by a trusted reporter); reported: the
 * report carries one. */
enum dmf_validators_verdict dmf_provenance_validators(bool pinned, bool pinned_trusted,
                                                      bool reporter_trusted, bool reported);
/* Whether progress with validators other than the pinned ones is refused as another
 * version: only against validators a trusted reporter pinned (a provisional pin must not
 * let a registrant make the sources' progress fail). */
bool dmf_provenance_refuses_version(bool pinned_trusted, bool differs);

#endif
