/* Piece layout of a task and a piece bitmap. A task of content_length bytes is cut into
 * pieces of piece_length bytes; the last one may be shorter; a 0-byte task has no piece. */
#ifndef DMF_PIECES_H
#define DMF_PIECES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DMF_PIECE_LENGTH_MIN     (1u << 18)  /* 256 KiB */
#define DMF_PIECE_LENGTH_MAX     (16u << 20) /* 16 MiB */
#define DMF_PIECE_LENGTH_DEFAULT (4u << 20)  /* when the length is unknown (streamed origin) */
#define DMF_PIECES_MAX           (1u << 20)  /* a task has at most this many pieces */

/* The piece length for a content length: the smallest power of two in [MIN, MAX] that
 * keeps the task at or under 1024 pieces (past 16 GiB, pieces stay at 16 MiB); for an
 * unknown length (-1), DMF_PIECE_LENGTH_DEFAULT. */
uint32_t dmf_piece_length_for(int64_t content_length);

/* Number of pieces (0 for 0 bytes); content_length must be >= 0 and piece_length > 0
 * (otherwise 0). Saturates at UINT32_MAX; dmf_piece_layout_check bounds real layouts. */
uint32_t dmf_piece_count(int64_t content_length, uint32_t piece_length);

/* Offset of piece n and its size (the last piece may be shorter; 0 past the last). */
uint64_t dmf_piece_offset(uint32_t piece_length, uint32_t n);
uint32_t dmf_piece_size(int64_t content_length, uint32_t piece_length, uint32_t n);

/* Checks that a layout received from the network is coherent: piece_length in
 * [MIN, MAX] (or 0 with content_length 0), total_pieces equal to dmf_piece_count, and
 * the count at most DMF_PIECES_MAX. Returns 0 or -EINVAL. */
int dmf_piece_layout_check(int64_t content_length, uint32_t piece_length, uint32_t total_pieces);

/* A growable bitmap of pieces. */
typedef struct dmf_bitmap {
    uint8_t *bits;
    uint32_t nbits; /* pieces covered (bits beyond are 0) */
    uint32_t count; /* bits set */
} dmf_bitmap_t;

void dmf_bitmap_init(dmf_bitmap_t *b);
void dmf_bitmap_free(dmf_bitmap_t *b);
/* Grows to cover at least nbits (new bits 0); never shrinks. nbits <= DMF_PIECES_MAX
 * (larger values are clamped to it). */
void dmf_bitmap_resize(dmf_bitmap_t *b, uint32_t nbits);
bool dmf_bitmap_get(const dmf_bitmap_t *b, uint32_t i); /* false beyond nbits */
/* Bits 8*i .. 8*i+7 (bit 0 = piece 8*i); 0 beyond nbits. For scans that skip empty bytes. */
uint8_t dmf_bitmap_byte(const dmf_bitmap_t *b, uint32_t i);
/* Sets bit i (growing as needed); returns true when it was not set before. An index at or
 * past DMF_PIECES_MAX is ignored (returns false). Clearing a bit past nbits does nothing. */
bool dmf_bitmap_set(dmf_bitmap_t *b, uint32_t i);
void dmf_bitmap_clear(dmf_bitmap_t *b, uint32_t i);

#endif
