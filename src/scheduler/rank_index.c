/* The rank index: a binary max-heap of peers by key; see rank_index.h. */
#include "scheduler/rank_index.h"

#include <stdlib.h>

#include "common/util.h"
#include "scheduler/sched_state.h"

void dmf_rank_index_init(struct dmf_rank_index *ix)
{
    ix->heap = NULL;
    ix->n = ix->cap = 0;
}

void dmf_rank_index_free(struct dmf_rank_index *ix)
{
    free(ix->heap);
    dmf_rank_index_init(ix);
}

static void place(struct dmf_rank_index *ix, uint32_t i, dmf_scheduler_peer_t *p)
{
    ix->heap[i] = p;
    p->rank_at = i + 1;
}

static void sift_up(struct dmf_rank_index *ix, uint32_t i)
{
    dmf_scheduler_peer_t *p = ix->heap[i];
    while (i > 0) {
        uint32_t up = (i - 1) / 2;
        if (ix->heap[up]->rank_key >= p->rank_key)
            break;
        place(ix, i, ix->heap[up]);
        i = up;
    }
    place(ix, i, p);
}

static void sift_down(struct dmf_rank_index *ix, uint32_t i)
{
    dmf_scheduler_peer_t *p = ix->heap[i];
    for (;;) {
        uint32_t l = 2 * i + 1, best = l;
        if (l >= ix->n)
            break;
        if (l + 1 < ix->n && ix->heap[l + 1]->rank_key > ix->heap[l]->rank_key)
            best = l + 1;
        if (ix->heap[best]->rank_key <= p->rank_key)
            break;
        place(ix, i, ix->heap[best]);
        i = best;
    }
    place(ix, i, p);
}

void dmf_rank_index_remove(struct dmf_rank_index *ix, dmf_scheduler_peer_t *p)
{
    if (p->rank_at == 0)
        return;
    uint32_t i = p->rank_at - 1;
    p->rank_at = 0;
    dmf_scheduler_peer_t *last = ix->heap[--ix->n];
    if (i == ix->n)
        return;
    double old = p->rank_key;
    place(ix, i, last);
    if (last->rank_key > old)
        sift_up(ix, i);
    else
        sift_down(ix, i);
}

void dmf_rank_index_update(struct dmf_rank_index *ix, dmf_scheduler_peer_t *p, double key)
{
    if (key < 0) {
        dmf_rank_index_remove(ix, p);
        return;
    }
    if (p->rank_at == 0) {
        if (ix->n == ix->cap) {
            ix->cap = ix->cap ? ix->cap * 2 : 16;
            ix->heap = dmf_xrealloc(ix->heap, ix->cap * sizeof(*ix->heap));
        }
        p->rank_key = key;
        place(ix, ix->n++, p);
        sift_up(ix, ix->n - 1);
        return;
    }
    if (key == p->rank_key)
        return;
    double old = p->rank_key;
    p->rank_key = key;
    if (key > old)
        sift_up(ix, p->rank_at - 1);
    else
        sift_down(ix, p->rank_at - 1);
}

/* The walk: a second, small max-heap (the frontier) of heap positions whose parents were
 * visited; popping its best and pushing that one's two children visits the index in
 * descending key order, at O(log k) per peer visited. */

static double front_key(const struct dmf_rank_walk *w, uint32_t k)
{
    return w->ix->heap[w->front[k]]->rank_key;
}

static void front_push(struct dmf_rank_walk *w, uint32_t pos)
{
    if (w->n == w->cap) {
        uint32_t cap = w->cap * 2;
        uint32_t *f = dmf_xmalloc(cap * sizeof(*f));
        memcpy(f, w->front, w->n * sizeof(*f));
        if (w->front != w->inline_buf)
            free(w->front);
        w->front = f;
        w->cap = cap;
    }
    uint32_t i = w->n++;
    w->front[i] = pos;
    double key = front_key(w, i);
    while (i > 0 && front_key(w, (i - 1) / 2) < key) {
        w->front[i] = w->front[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    w->front[i] = pos;
}

static uint32_t front_pop(struct dmf_rank_walk *w)
{
    uint32_t top = w->front[0];
    uint32_t last = w->front[--w->n];
    if (w->n == 0)
        return top;
    double key = w->ix->heap[last]->rank_key;
    uint32_t i = 0;
    for (;;) {
        uint32_t l = 2 * i + 1, best = l;
        if (l >= w->n)
            break;
        if (l + 1 < w->n && front_key(w, l + 1) > front_key(w, l))
            best = l + 1;
        if (front_key(w, best) <= key)
            break;
        w->front[i] = w->front[best];
        i = best;
    }
    w->front[i] = last;
    return top;
}

void dmf_rank_walk_begin(struct dmf_rank_walk *w, const struct dmf_rank_index *ix)
{
    w->ix = ix;
    w->front = w->inline_buf;
    w->cap = DMF_RANK_WALK_INLINE;
    w->n = 0;
    if (ix->n > 0)
        front_push(w, 0);
}

dmf_scheduler_peer_t *dmf_rank_walk_next(struct dmf_rank_walk *w)
{
    if (w->n == 0)
        return NULL;
    uint32_t pos = front_pop(w);
    if (2 * pos + 1 < w->ix->n)
        front_push(w, 2 * pos + 1);
    if (2 * pos + 2 < w->ix->n)
        front_push(w, 2 * pos + 2);
    return w->ix->heap[pos];
}

void dmf_rank_walk_end(struct dmf_rank_walk *w)
{
    if (w->front != w->inline_buf)
        free(w->front);
    w->front = w->inline_buf;
    w->n = 0;
}
