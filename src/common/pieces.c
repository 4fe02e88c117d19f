/* Piece layout arithmetic and the piece bitmap. All arithmetic is done in 64 bits so a
 * layout read from the network cannot overflow it. */
#include "common/pieces.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

/* Pieces a task aims for when dmf_piece_length_for picks the length. */
#define PIECES_TARGET 1024u

uint32_t dmf_piece_length_for(int64_t content_length)
{
    if (content_length < 0)
        return DMF_PIECE_LENGTH_DEFAULT;
    uint64_t len = (uint64_t)content_length;
    uint32_t pl = DMF_PIECE_LENGTH_MIN;
    while (pl < DMF_PIECE_LENGTH_MAX && len > (uint64_t)pl * PIECES_TARGET)
        pl <<= 1;
    return pl;
}

uint32_t dmf_piece_count(int64_t content_length, uint32_t piece_length)
{
    if (content_length <= 0 || piece_length == 0)
        return 0;
    uint64_t n = ((uint64_t)content_length - 1) / piece_length + 1;
    return n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
}

uint64_t dmf_piece_offset(uint32_t piece_length, uint32_t n)
{
    return (uint64_t)piece_length * n;
}

uint32_t dmf_piece_size(int64_t content_length, uint32_t piece_length, uint32_t n)
{
    if (n >= dmf_piece_count(content_length, piece_length))
        return 0;
    uint64_t rest = (uint64_t)content_length - dmf_piece_offset(piece_length, n);
    return rest < piece_length ? (uint32_t)rest : piece_length;
}

int dmf_piece_layout_check(int64_t content_length, uint32_t piece_length, uint32_t total_pieces)
{
    if (content_length < 0)
        return -EINVAL;
    if (piece_length == 0)
        return content_length == 0 && total_pieces == 0 ? 0 : -EINVAL;
    if (piece_length < DMF_PIECE_LENGTH_MIN || piece_length > DMF_PIECE_LENGTH_MAX)
        return -EINVAL;
    uint32_t n = dmf_piece_count(content_length, piece_length);
    if (n > DMF_PIECES_MAX || n != total_pieces)
        return -EINVAL;
    return 0;
}

/* Bytes allocated for nbits: the byte count rounded up to a power of two (at least 8), so
 * setting pieces one after another reallocates O(log n) times. The capacity is a function
 * of nbits alone, which is why the struct needs no capacity field. */
static size_t bitmap_cap(uint32_t nbits)
{
    size_t bytes = ((size_t)nbits + 7) / 8;
    size_t cap = 8;
    while (cap < bytes)
        cap <<= 1;
    return cap;
}

void dmf_bitmap_init(dmf_bitmap_t *b)
{
    memset(b, 0, sizeof(*b));
}

void dmf_bitmap_free(dmf_bitmap_t *b)
{
    free(b->bits);
    memset(b, 0, sizeof(*b));
}

void dmf_bitmap_resize(dmf_bitmap_t *b, uint32_t nbits)
{
    if (nbits > DMF_PIECES_MAX)
        nbits = DMF_PIECES_MAX;
    if (nbits <= b->nbits)
        return;
    size_t oldcap = b->bits != NULL ? bitmap_cap(b->nbits) : 0;
    size_t cap = bitmap_cap(nbits);
    if (cap > oldcap) {
        b->bits = dmf_xrealloc(b->bits, cap);
        memset(b->bits + oldcap, 0, cap - oldcap);
    }
    b->nbits = nbits;
}

bool dmf_bitmap_get(const dmf_bitmap_t *b, uint32_t i)
{
    if (i >= b->nbits)
        return false;
    return (b->bits[i / 8] >> (i % 8)) & 1;
}

uint8_t dmf_bitmap_byte(const dmf_bitmap_t *b, uint32_t i)
{
    return i < (b->nbits + 7) / 8 ? b->bits[i] : 0;
}

bool dmf_bitmap_set(dmf_bitmap_t *b, uint32_t i)
{
    if (i >= DMF_PIECES_MAX)
        return false;
    if (i >= b->nbits)
        dmf_bitmap_resize(b, i + 1);
    uint8_t mask = (uint8_t)(1u << (i % 8));
    if (b->bits[i / 8] & mask)
        return false;
    b->bits[i / 8] |= mask;
    b->count++;
    return true;
}

void dmf_bitmap_clear(dmf_bitmap_t *b, uint32_t i)
{
    if (i >= b->nbits)
        return;
    uint8_t mask = (uint8_t)(1u << (i % 8));
    if (b->bits[i / 8] & mask) {
        b->bits[i / 8] &= (uint8_t)~mask;
        b->count--;
    }
}
