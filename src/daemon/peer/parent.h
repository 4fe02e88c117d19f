/* Parents of a task: peers we fetch pieces from. For each parent we keep its /have
 * stream open (it tells us which pieces it holds as it gets them) and up to
 * parent_concurrency piece requests in flight. Pieces are chosen rarest-first among what
 * our parents hold; a seed is asked only for pieces no other parent holds, so children
 * share among themselves and the seed's upload goes to new pieces. */
#ifndef DMF_PARENT_H
#define DMF_PARENT_H

#include <stdbool.h>
#include <stdint.h>

struct dmf_task;

struct dmf_parent_info {
    const char *peer_id;
    const char *host_id;
    const char *ip;
    uint16_t port;
    bool is_seed;
};

/* Adds a parent (a duplicate of one in use, or one excluded for bad pieces, is ignored). */
void dmf_parents_add(struct dmf_task *t, const struct dmf_parent_info *p);
/* Starts piece requests on idle parents. */
void dmf_parents_dispatch(struct dmf_task *t);
/* Parents that are connected or connecting (not failed or excluded). */
int dmf_parents_usable(const struct dmf_task *t);
/* The parent on host_id sent piece n with bytes that do not match its digest: it is
 * excluded for this task and reported to the scheduler. */
void dmf_parents_bad_piece(struct dmf_task *t, const char *host_id, uint32_t n);
/* Cancels every request and frees the parents. */
void dmf_parents_free_all(struct dmf_task *t);

#endif
