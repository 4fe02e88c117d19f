/* Which piece to ask which parent for: the engine's piece selection as a pure function
 * over the task's piece book and a view of its parents (no I/O; parent.c starts the
 * requests it plans). The rules (docs/internals/PIECE-PROTOCOL.md):
 *  - rarest first: among the pieces worth asking a parent for, one that the fewest usable
 *    parents hold, chosen at random among those, so that children of one parent do not
 *    all ask for the same pieces in the same order;
 *  - seed last: a seed is asked only for pieces no peer (non-seed parent) holds, and for
 *    one at a time, so the peers pass on what it sent once and its uplink goes to new
 *    pieces (two seeds and no peer share the pieces between them);
 *  - pacing: parent_concurrency requests per (non-seed) parent, at least MIN_IN_FLIGHT over
 *    all of them; a child ahead of the other downloaders among its parents keeps one per
 *    parent and at most half its parents busy;
 *  - endgame: once every piece the task lacks is claimed, a request that has taken longer
 *    than a piece should (at the parents' typical rate) is duplicated to another parent that
 *    holds the piece and has a free slot, oldest first, at most two requests per piece; the
 *    first to arrive wins and parent.c cancels the other. So the last pieces never wait on
 *    the slowest parent, and the cost is bounded by the requests in flight at the end. */
#ifndef DMF_DISPATCH_H
#define DMF_DISPATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/pieces.h"
#include "daemon/peer/piece_book.h"

#define DMF_DISPATCH_SLOTS_MAX     16 /* piece requests in flight to one parent, at most */
#define DMF_DISPATCH_SEED_SLOTS    1  /* ... to a seed: its upload is shared */
#define DMF_DISPATCH_MIN_IN_FLIGHT 4  /* requests to the non-seed parents together, at least */
/* A child may be this far ahead (in pieces: npieces / DIVISOR, at least MIN) of the other
 * downloaders among its parents before it paces itself. */
#define DMF_DISPATCH_LEAD_DIVISOR 64
#define DMF_DISPATCH_LEAD_MIN     4

/* A parent as selection sees it (borrowed for the call). */
struct dmf_dispatch_parent {
    const dmf_bitmap_t *has;      /* pieces it holds */
    const dmf_bitmap_t *deferred; /* pieces not to ask it for now (may be NULL) */
    bool usable;                  /* connected or connecting: counts for rarity */
    bool active;                  /* its /have stream is open: may be asked */
    bool is_seed;
    bool complete; /* it holds everything */
    int inflight;  /* requests to it now */
};

struct dmf_dispatch_in {
    const struct dmf_piece_book *book;
    const struct dmf_dispatch_parent *parents;
    size_t nparents;
    int parent_concurrency;        /* requests per parent (configured) */
    uint32_t (*random)(void *arg); /* tie-breaks among equally rare pieces */
    void *random_arg;
};

/* How many requests the child may have in flight to its non-seed parents. */
struct dmf_dispatch_budget {
    int per_parent, total, in_flight;
};

struct dmf_dispatch_req {
    size_t parent; /* index into in->parents */
    uint32_t piece;
};

/* The budget for these parents (npieces: the pieces the selection looks at). */
struct dmf_dispatch_budget dmf_dispatch_budget(const struct dmf_dispatch_in *in, uint32_t npieces);
/* Plans new requests, round-robin over the parents (one per parent per round) until no
 * parent can take one more: up to max into out, returns how many. Each piece appears at
 * most once, and never one the book holds, has claimed, or has no digest for. */
size_t dmf_dispatch_plan(const struct dmf_dispatch_in *in, struct dmf_dispatch_req *out,
                         size_t max);

/* A piece request in flight, as the endgame sees it. */
struct dmf_dispatch_flight {
    size_t parent; /* index into in->parents */
    uint32_t piece;
    uint64_t age_ms; /* since it was sent */
};

/* True when every piece the task lacks is claimed (being fetched or checked): nothing is
 * left for dmf_dispatch_plan, and only a duplicate can make the end come sooner. */
bool dmf_dispatch_in_endgame(const struct dmf_piece_book *book);
/* Plans duplicates of the nf requests in flight (see the endgame rule above): a request at
 * least min_age_ms old, of a piece requested once, goes to the active non-seed parent
 * holding the piece with the fewest requests in flight (below the per-parent budget).
 * Up to max into out; returns how many (0 outside the endgame). */
size_t dmf_dispatch_endgame(const struct dmf_dispatch_in *in,
                            const struct dmf_dispatch_flight *flights, size_t nf,
                            uint64_t min_age_ms, struct dmf_dispatch_req *out, size_t max);

#endif
