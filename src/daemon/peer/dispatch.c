/* Piece selection; see dispatch.h. */
#include "daemon/peer/dispatch.h"

#include <limits.h>
#include <stdlib.h>

#include "common/util.h"

/* Pieces worth asking p for, in bits 8*i .. 8*i+7: p holds them, the book wants them
 * (digest known, neither held nor claimed), p has not deferred them and this plan has not
 * taken them already. */
static uint8_t wanted_byte(const struct dmf_dispatch_in *in, const struct dmf_dispatch_parent *p,
                           const dmf_bitmap_t *planned, uint32_t i)
{
    uint8_t deferred = p->deferred ? dmf_bitmap_byte(p->deferred, i) : 0;
    return dmf_bitmap_byte(p->has, i) & (uint8_t)~deferred & (uint8_t)~dmf_bitmap_byte(planned, i) &
           dmf_book_wanted_byte(in->book, i);
}

/* Rarest-first with reservoir sampling among the rarest; a seed only for pieces no
 * (non-seed) peer holds: count[n] counts every usable holder, peers[n] the non-seeds. */
static bool pick(const struct dmf_dispatch_in *in, const struct dmf_dispatch_parent *p,
                 const dmf_bitmap_t *planned, const uint16_t *count, const uint16_t *peers,
                 uint32_t npieces, uint32_t *out)
{
    uint32_t best = UINT32_MAX, ties = 0;
    uint16_t best_count = UINT16_MAX;
    for (uint32_t i = 0; i * 8 < npieces; i++) {
        for (unsigned want = wanted_byte(in, p, planned, i); want != 0; want &= want - 1) {
            uint32_t n = i * 8 + (uint32_t)__builtin_ctz(want);
            if (n >= npieces)
                break;
            if (p->is_seed && peers[n] > 0)
                continue;
            if (count[n] < best_count) {
                best = n;
                best_count = count[n];
                ties = 1;
            } else if (count[n] == best_count && in->random(in->random_arg) % ++ties == 0) {
                best = n;
            }
        }
    }
    if (best == UINT32_MAX)
        return false;
    *out = best;
    return true;
}

struct dmf_dispatch_budget dmf_dispatch_budget(const struct dmf_dispatch_in *in, uint32_t npieces)
{
    struct dmf_dispatch_budget b = {.per_parent = in->parent_concurrency, .total = INT_MAX};
    uint64_t sum = 0;
    int downloaders = 0, peers = 0;
    for (size_t i = 0; i < in->nparents; i++) {
        const struct dmf_dispatch_parent *p = &in->parents[i];
        if (p->is_seed)
            continue;
        b.in_flight += p->inflight;
        if (!p->active)
            continue;
        peers++;
        if (!p->complete) {
            sum += p->has->count;
            downloaders++;
        }
    }
    /* With one or two parents, per-parent requests alone would leave a fast link idle
     * between pieces: keep MIN_IN_FLIGHT in flight over all of them. */
    if (peers > 0)
        b.per_parent = DMF_MAX(b.per_parent, (DMF_DISPATCH_MIN_IN_FLIGHT + peers - 1) / peers);
    b.per_parent = DMF_MIN(b.per_parent, DMF_DISPATCH_SLOTS_MAX);
    uint32_t lead_allowed = DMF_MAX(npieces / DMF_DISPATCH_LEAD_DIVISOR, DMF_DISPATCH_LEAD_MIN);
    if (downloaders > 0 && in->book->have.count > sum / (uint64_t)downloaders + lead_allowed) {
        b.per_parent = 1;
        b.total = DMF_MAX(2, peers / 2);
    }
    return b;
}

size_t dmf_dispatch_plan(const struct dmf_dispatch_in *in, struct dmf_dispatch_req *out, size_t max)
{
    const struct dmf_piece_book *book = in->book;
    if (book->piece_length == 0 || in->nparents == 0 || max == 0)
        return 0;
    uint32_t npieces = 0;
    for (size_t i = 0; i < in->nparents; i++)
        if (in->parents[i].usable)
            npieces = DMF_MAX(npieces, in->parents[i].has->nbits);
    if (book->content_length >= 0)
        npieces = DMF_MIN(npieces, book->total_pieces);
    if (npieces == 0)
        return 0;
    /* How many usable parents hold each piece (a seed counts like any other: a piece held
     * by a seed and a peer counts 2), and how many of them are not seeds (pick() leaves the
     * seeds out for a piece a peer holds; two seeds alone share the pieces). */
    uint16_t *count = dmf_xcalloc(npieces, sizeof(*count));
    uint16_t *peers = dmf_xcalloc(npieces, sizeof(*peers));
    for (size_t k = 0; k < in->nparents; k++) {
        const struct dmf_dispatch_parent *p = &in->parents[k];
        if (!p->usable)
            continue;
        for (uint32_t i = 0; i * 8 < npieces; i++)
            for (unsigned b = dmf_bitmap_byte(p->has, i); b != 0; b &= b - 1) {
                uint32_t n = i * 8 + (uint32_t)__builtin_ctz(b);
                if (n < npieces && count[n] < UINT16_MAX) {
                    count[n]++;
                    peers[n] += !p->is_seed;
                }
            }
    }
    int *inflight = dmf_xcalloc(in->nparents, sizeof(*inflight));
    for (size_t k = 0; k < in->nparents; k++)
        inflight[k] = in->parents[k].inflight;
    dmf_bitmap_t planned;
    dmf_bitmap_init(&planned);
    struct dmf_dispatch_budget budget = dmf_dispatch_budget(in, npieces);
    size_t nout = 0;
    bool progress = true;
    while (progress && nout < max) {
        progress = false;
        for (size_t k = 0; k < in->nparents && nout < max; k++) {
            const struct dmf_dispatch_parent *p = &in->parents[k];
            bool full = p->is_seed
                            ? inflight[k] >= DMF_DISPATCH_SEED_SLOTS
                            : inflight[k] >= budget.per_parent || budget.in_flight >= budget.total;
            uint32_t n;
            if (!p->active || full || !pick(in, p, &planned, count, peers, npieces, &n))
                continue;
            dmf_bitmap_set(&planned, n);
            out[nout++] = (struct dmf_dispatch_req){.parent = k, .piece = n};
            inflight[k]++;
            budget.in_flight += !p->is_seed;
            progress = true;
        }
    }
    dmf_bitmap_free(&planned);
    free(inflight);
    free(peers);
    free(count);
    return nout;
}

bool dmf_dispatch_in_endgame(const struct dmf_piece_book *book)
{
    if (book->content_length < 0 || book->piece_length == 0 || dmf_book_all_held(book))
        return false;
    for (uint32_t i = 0; i * 8 < book->total_pieces; i++) {
        unsigned lacking =
            (uint8_t) ~(dmf_bitmap_byte(&book->have, i) | dmf_bitmap_byte(&book->claimed, i));
        uint32_t left = book->total_pieces - i * 8;
        if (left < 8)
            lacking &= (1u << left) - 1;
        if (lacking)
            return false;
    }
    return true;
}

/* How many of the flights are for piece n, and whether one of them goes to parent k. */
static int flights_of(const struct dmf_dispatch_flight *f, size_t nf, uint32_t n, size_t k,
                      bool *to_k)
{
    int count = 0;
    *to_k = false;
    for (size_t i = 0; i < nf; i++)
        if (f[i].piece == n) {
            count++;
            *to_k |= f[i].parent == k;
        }
    return count;
}

size_t dmf_dispatch_endgame(const struct dmf_dispatch_in *in,
                            const struct dmf_dispatch_flight *flights, size_t nf,
                            uint64_t min_age_ms, struct dmf_dispatch_req *out, size_t max)
{
    if (nf == 0 || max == 0 || !dmf_dispatch_in_endgame(in->book))
        return 0;
    struct dmf_dispatch_budget budget = dmf_dispatch_budget(in, in->book->total_pieces);
    int *inflight = dmf_xcalloc(in->nparents, sizeof(*inflight));
    for (size_t k = 0; k < in->nparents; k++)
        inflight[k] = in->parents[k].inflight;
    bool *done = dmf_xcalloc(nf, sizeof(*done)); /* looked at (duplicated, or cannot be) */
    size_t nout = 0;
    while (nout < max) {
        /* The oldest request not looked at yet. */
        size_t oldest = nf;
        for (size_t i = 0; i < nf; i++)
            if (!done[i] && flights[i].age_ms >= min_age_ms &&
                (oldest == nf || flights[i].age_ms > flights[oldest].age_ms))
                oldest = i;
        if (oldest == nf)
            break;
        done[oldest] = true;
        uint32_t n = flights[oldest].piece;
        bool dummy;
        if (flights_of(flights, nf, n, nf, &dummy) > 1)
            continue; /* duplicated already */
        size_t best = in->nparents;
        for (size_t k = 0; k < in->nparents; k++) {
            const struct dmf_dispatch_parent *p = &in->parents[k];
            bool fetching;
            flights_of(flights, nf, n, k, &fetching);
            if (!p->active || p->is_seed || fetching || !dmf_bitmap_get(p->has, n) ||
                inflight[k] >= budget.per_parent)
                continue;
            if (best == in->nparents || inflight[k] < inflight[best])
                best = k;
        }
        if (best == in->nparents)
            continue;
        out[nout++] = (struct dmf_dispatch_req){.parent = best, .piece = n};
        inflight[best]++;
    }
    free(done);
    free(inflight);
    return nout;
}
