/* A task's rank index: the peers that can serve as parents in a binary max-heap by their
 * rank key (dmf_sched_rank_key: an upper bound of the part of their score that does not
 * depend on the child), walked best key first. It lets dmf_sched_pick_candidates score a
 * few dozen peers of a big task instead of all of them, with the same result (see
 * sched_rank.h and docs/internals/SCHEDULER.md, "The rank index").
 *
 * sched.c owns the index (in struct dmf_sched_task) and keeps it current: every change of
 * what a key reads goes through dmf_rank_index_update. The peers are borrowed; each peer
 * records its place (rank_at) and key (rank_key). */
#ifndef DMF_SCHED_RANK_INDEX_H
#define DMF_SCHED_RANK_INDEX_H

#include <stddef.h>
#include <stdint.h>

struct dmf_scheduler_peer;

struct dmf_rank_index {
    struct dmf_scheduler_peer **heap; /* owned array; the peers are borrowed */
    uint32_t n, cap;
};

void dmf_rank_index_init(struct dmf_rank_index *ix);
/* Frees the array (not the peers). */
void dmf_rank_index_free(struct dmf_rank_index *ix);
/* Puts p under `key`, or takes it out when key < 0 (a peer that cannot serve). Cheap when
 * nothing changed. */
void dmf_rank_index_update(struct dmf_rank_index *ix, struct dmf_scheduler_peer *p, double key);
/* Takes p out (when it is in). */
void dmf_rank_index_remove(struct dmf_rank_index *ix, struct dmf_scheduler_peer *p);

/* A walk over an index in descending key order (ties in no particular order). Its
 * frontier lives inline up to DMF_RANK_WALK_INLINE entries, then in an owned array:
 * dmf_rank_walk_end frees it. The index must not change during the walk. */
#define DMF_RANK_WALK_INLINE 128
struct dmf_rank_walk {
    const struct dmf_rank_index *ix;
    uint32_t *front; /* heap positions, a max-heap by key */
    uint32_t n, cap;
    uint32_t inline_buf[DMF_RANK_WALK_INLINE];
};

void dmf_rank_walk_begin(struct dmf_rank_walk *w, const struct dmf_rank_index *ix);
/* The peer with the next best key (borrowed), or NULL at the end. */
struct dmf_scheduler_peer *dmf_rank_walk_next(struct dmf_rank_walk *w);
void dmf_rank_walk_end(struct dmf_rank_walk *w);

#endif
