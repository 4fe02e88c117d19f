/* Candidate scoring and selection: which peers of its task a peer should get as parents,
 * best first, and which seed host should fetch a task nobody holds. The formula and the
 * rules are in docs/internals/SCHEDULER.md ("Scoring", "Decisions").
 *
 * Pure functions over the state they are given: they read hosts, tasks and peers
 * (sched_state.h) and a struct dmf_sched_view, and change nothing. The clock, the traversal
 * marks that keep a DAG acyclic, and the tables are sched.c's; it fills the view. */
#ifndef DMF_SCHED_RANK_H
#define DMF_SCHED_RANK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "scheduler/sched_state.h"

/* What the rules read besides the peers (all borrowed for the call). */
struct dmf_sched_view {
    uint64_t now;                   /* monotonic ms, for recent failures and host liveness */
    bool mesh;                      /* dmf_scheduler_config.mesh */
    uint32_t bad_parent_threshold;  /* hosts with this many bad-piece reports are excluded */
    uint32_t unreachable_threshold; /* ... with this many recent unreachable reporters (0: no) */
    uint64_t host_timeout_ms;       /* a seed that has not announced within it is dead */
    uint64_t epoch;                 /* pick_candidates skips peers marked with it */
    const struct dmf_sched_host_list *seeds; /* the seed hosts */
    const dmf_strmap_t *peers;               /* the peer table (dmf_sched_peer_find) */
};

/* A candidate with its score for one child; tiebreak orders equal scores. */
struct dmf_sched_ranked {
    dmf_scheduler_peer_t *peer; /* borrowed */
    double score;
    uint64_t tiebreak;
};

/* How close two '|'-separated locations are, in [0, 1]: shared leading elements over the
 * element count of the longer ("" shares nothing). */
double dmf_sched_location_affinity(const char *a, const char *b);
/* Candidate c's score as a parent of child, in [0, 1]: free upload capacity, progress in
 * the task, locality and health (recent unreachable reports). */
double dmf_sched_score(const struct dmf_sched_view *v, const dmf_scheduler_peer_t *child,
                       const dmf_scheduler_peer_t *c);
/* Candidate c's rank key: an upper bound of its score as a parent of any child, less the
 * child's locality bonus (dmf_sched_locality_bound); -1 when c cannot serve. It reads c's
 * state, held pieces and children, its task's layout and its host's upload figures:
 * whoever changes one of them updates c in its task's rank index. */
double dmf_sched_rank_key(bool mesh, const dmf_scheduler_peer_t *c);
/* The most locality can add to a score for this child (its idc and location). */
double dmf_sched_locality_bound(const dmf_scheduler_peer_t *child);
/* Fills best[0..n) with p's best new parents, at most limit, best first; returns n. The
 * caller has marked with v->epoch the peers that may not be offered (p, its parents and,
 * under the DAG rule, its descendants). See SCHEDULER.md for the seed rule. It walks the
 * task's rank index best key first and stops once no later peer can beat the limit-th
 * pick; seeds come from the seed list. The result is the scan's below, except among more
 * than 64 candidates that tie exactly with the last pick: the picks' scores are the same,
 * the tiebreak is applied to the first 64 of them met (sched_rank.c). */
size_t dmf_sched_pick_candidates(const struct dmf_sched_view *v, const dmf_scheduler_peer_t *p,
                                 struct dmf_sched_ranked *best, size_t limit);
/* The same choice by scoring every peer of the task: the reference for the index (tests,
 * and dmf_scheduler_config.check_indexes). */
size_t dmf_sched_pick_candidates_scan(const struct dmf_sched_view *v, const dmf_scheduler_peer_t *p,
                                      struct dmf_sched_ranked *best, size_t limit);
/* The rendezvous weight of a host for a task: the seed with the highest weight gets it. */
uint64_t dmf_sched_rendezvous(const char *task_id, const char *host_id);
/* The seed host (borrowed) that should fetch p's task: alive, not excluded, not blocked by
 * p, holding no peer of the task, highest rendezvous weight; NULL when there is none or a
 * seed trigger already failed for the task. */
struct dmf_sched_host *dmf_sched_pick_seed(const struct dmf_sched_view *v,
                                           const dmf_scheduler_peer_t *p);

/* The peer of task t to fetch from the origin when none does (its fetcher is gone): an
 * attached RUNNING peer on a host that is not leaving, holding the most pieces (ties: the
 * smallest peer id); NULL when there is none. */
dmf_scheduler_peer_t *dmf_sched_pick_fetcher(const struct dmf_sched_task *t);

#endif
