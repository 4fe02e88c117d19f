/* What a task knows of its pieces: the layout, which pieces are held (verified and
 * stored), which are claimed (being fetched, from a parent or the origin), and the
 * digest each piece must match. The task owns its book and is the only one to change
 * the layout, the held set and the digests; the engine's parts (parents, back-to-source)
 * read it and take and give back claims through dmf_book_claim / dmf_book_release, so a
 * piece is fetched by one transfer at a time. Pure bookkeeping: no I/O, no event loop. */
#ifndef DMF_PIECE_BOOK_H
#define DMF_PIECE_BOOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/digest.h"
#include "common/pieces.h"

/* Where a piece's bytes came from. */
enum dmf_piece_origin { DMF_FROM_ORIGIN, DMF_FROM_SEED, DMF_FROM_PEER };

/* Bytes of verified pieces of the current download, by where they came from. */
struct dmf_transfer_bytes {
    uint64_t origin, seed, peer;
};

struct dmf_piece_book {
    int64_t content_length; /* -1 unknown */
    uint32_t piece_length;  /* 0 unknown */
    uint32_t total_pieces;  /* valid when content_length >= 0 */
    dmf_bitmap_t have;      /* verified and stored */
    dmf_bitmap_t claimed;   /* being fetched */
    dmf_bitmap_t digest_known;
    uint8_t (*digests)[DMF_SHA256_LEN];
    uint32_t ndigests; /* entries allocated in digests */
};

/* Results of dmf_book_set_layout. */
enum dmf_book_layout {
    DMF_BOOK_LAYOUT_SAME,            /* nothing new */
    DMF_BOOK_LAYOUT_CHANGED,         /* piece length or content length learnt */
    DMF_BOOK_LAYOUT_BAD_LENGTH,      /* piece length out of bounds */
    DMF_BOOK_LAYOUT_PIECE_CHANGED,   /* contradicts the piece length already known */
    DMF_BOOK_LAYOUT_CONTENT_CHANGED, /* contradicts the content length already known */
    DMF_BOOK_LAYOUT_INVALID,         /* too many pieces, or pieces held past the end */
};

void dmf_book_init(struct dmf_piece_book *b);
void dmf_book_free(struct dmf_piece_book *b);

/* Learns the layout (content_length -1 = still unknown; 0 bytes with piece length 0
 * takes the minimum piece length). Changes nothing unless the result is SAME or CHANGED. */
enum dmf_book_layout dmf_book_set_layout(struct dmf_piece_book *b, int64_t content_length,
                                         uint32_t piece_length);
/* True when n may be a piece of this task (below the end once the length is known). */
bool dmf_book_in_range(const struct dmf_piece_book *b, uint32_t n);
/* The size piece n must have (the piece length while the content length is unknown). */
uint32_t dmf_book_piece_size(const struct dmf_piece_book *b, uint32_t n);
/* Every piece held (and the layout known). */
bool dmf_book_all_held(const struct dmf_piece_book *b);
/* Bytes of the held pieces. */
uint64_t dmf_book_held_bytes(const struct dmf_piece_book *b);

/* Claims piece n for one transfer: false when it is held or claimed already. */
bool dmf_book_claim(struct dmf_piece_book *b, uint32_t n);
/* Gives a claim back (the transfer ended, whatever its result). */
void dmf_book_release(struct dmf_piece_book *b, uint32_t n);
/* Drops every claim (every transfer was stopped). */
void dmf_book_release_all(struct dmf_piece_book *b);
bool dmf_book_claimed(const struct dmf_piece_book *b, uint32_t n);

/* Pieces 8*i .. 8*i+7 worth fetching from a parent: digest known, neither held nor
 * claimed (bit 0 = piece 8*i). */
uint8_t dmf_book_wanted_byte(const struct dmf_piece_book *b, uint32_t i);

/* The digest piece n must match; NULL when not known. */
const uint8_t *dmf_book_digest(const struct dmf_piece_book *b, uint32_t n);
/* Learns piece n's digest. Returns 1 when it is new, 0 when the same was known, -EEXIST
 * when another one was known (kept), -EINVAL out of range. */
int dmf_book_set_digest(struct dmf_piece_book *b, uint32_t n, const uint8_t digest[DMF_SHA256_LEN]);
/* Piece n is verified (against digest) and stored: held. */
void dmf_book_commit(struct dmf_piece_book *b, uint32_t n, const uint8_t digest[DMF_SHA256_LEN]);
/* Forgets held piece n (its cached bytes failed verification); its digest stays known. */
void dmf_book_drop(struct dmf_piece_book *b, uint32_t n);
/* Forgets every held piece (they did not add up to the content digest). */
void dmf_book_drop_all(struct dmf_piece_book *b);

/* The bytes of one piece as a transfer receives them: never more than the piece's size. */
struct dmf_piece_buf {
    uint8_t *buf;
    size_t len, want;
};

/* Starts receiving a piece of want bytes (the buffer is reused across pieces). */
void dmf_piece_buf_start(struct dmf_piece_buf *b, size_t want);
/* Appends what arrived: 0, or -EPROTO when it would pass the piece's size. */
int dmf_piece_buf_append(struct dmf_piece_buf *b, const char *data, size_t len);
/* True when exactly the piece's size arrived. */
bool dmf_piece_buf_full(const struct dmf_piece_buf *b);
/* Hands the bytes over (the caller frees them with dmf_piecemem_free: the buffer comes from
 * common/piecemem.c, counted against --memory-limit); the buffer is empty after. */
uint8_t *dmf_piece_buf_take(struct dmf_piece_buf *b);
void dmf_piece_buf_free(struct dmf_piece_buf *b);

#endif
