/* A task's pieces: layout, held, claimed, digests; see piece_book.h. */
#include "daemon/peer/piece_book.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/piecemem.h"
#include "common/util.h"

void dmf_book_init(struct dmf_piece_book *b)
{
    memset(b, 0, sizeof(*b));
    b->content_length = -1;
    dmf_bitmap_init(&b->have);
    dmf_bitmap_init(&b->claimed);
    dmf_bitmap_init(&b->digest_known);
}

void dmf_book_free(struct dmf_piece_book *b)
{
    dmf_bitmap_free(&b->have);
    dmf_bitmap_free(&b->claimed);
    dmf_bitmap_free(&b->digest_known);
    free(b->digests);
    b->digests = NULL;
    b->ndigests = 0;
}

static void ensure_digest_cap(struct dmf_piece_book *b, uint32_t n)
{
    if (n < b->ndigests)
        return;
    uint32_t cap = b->ndigests ? b->ndigests : 64;
    while (cap <= n)
        cap *= 2;
    b->digests = dmf_xrealloc(b->digests, (size_t)cap * DMF_SHA256_LEN);
    memset(b->digests + b->ndigests, 0, (size_t)(cap - b->ndigests) * DMF_SHA256_LEN);
    b->ndigests = cap;
}

enum dmf_book_layout dmf_book_set_layout(struct dmf_piece_book *b, int64_t content_length,
                                         uint32_t piece_length)
{
    if (content_length == 0 && piece_length == 0)
        piece_length = DMF_PIECE_LENGTH_MIN;
    if (piece_length < DMF_PIECE_LENGTH_MIN || piece_length > DMF_PIECE_LENGTH_MAX)
        return DMF_BOOK_LAYOUT_BAD_LENGTH;
    if (b->piece_length != 0 && b->piece_length != piece_length)
        return DMF_BOOK_LAYOUT_PIECE_CHANGED;
    if (content_length >= 0 && b->content_length >= 0 && content_length != b->content_length)
        return DMF_BOOK_LAYOUT_CONTENT_CHANGED;
    bool learn_length = content_length >= 0 && b->content_length < 0;
    uint32_t total = 0;
    if (learn_length) {
        total = dmf_piece_count(content_length, piece_length);
        if (dmf_piece_layout_check(content_length, piece_length, total) != 0 ||
            b->have.nbits > total + 0u || (b->have.count && dmf_bitmap_get(&b->have, total)))
            return DMF_BOOK_LAYOUT_INVALID;
    }
    bool changed = b->piece_length != piece_length || learn_length;
    b->piece_length = piece_length;
    if (learn_length) {
        b->content_length = content_length;
        b->total_pieces = total;
        dmf_bitmap_resize(&b->have, total);
        dmf_bitmap_resize(&b->claimed, total);
        dmf_bitmap_resize(&b->digest_known, total);
        if (total)
            ensure_digest_cap(b, total - 1);
    }
    return changed ? DMF_BOOK_LAYOUT_CHANGED : DMF_BOOK_LAYOUT_SAME;
}

bool dmf_book_in_range(const struct dmf_piece_book *b, uint32_t n)
{
    if (n >= DMF_PIECES_MAX)
        return false;
    return b->content_length < 0 || n < b->total_pieces;
}

uint32_t dmf_book_piece_size(const struct dmf_piece_book *b, uint32_t n)
{
    return b->content_length >= 0 ? dmf_piece_size(b->content_length, b->piece_length, n)
                                  : b->piece_length;
}

bool dmf_book_all_held(const struct dmf_piece_book *b)
{
    return b->content_length >= 0 && b->piece_length > 0 && b->have.count == b->total_pieces;
}

uint64_t dmf_book_held_bytes(const struct dmf_piece_book *b)
{
    if (b->piece_length == 0)
        return 0;
    uint64_t n = (uint64_t)b->have.count * b->piece_length;
    if (b->content_length >= 0 && b->total_pieces > 0 &&
        dmf_bitmap_get(&b->have, b->total_pieces - 1))
        n -= b->piece_length -
             dmf_piece_size(b->content_length, b->piece_length, b->total_pieces - 1);
    return n;
}

bool dmf_book_claim(struct dmf_piece_book *b, uint32_t n)
{
    if (!dmf_book_in_range(b, n) || dmf_bitmap_get(&b->have, n) || dmf_bitmap_get(&b->claimed, n))
        return false;
    return dmf_bitmap_set(&b->claimed, n);
}

void dmf_book_release(struct dmf_piece_book *b, uint32_t n)
{
    dmf_bitmap_clear(&b->claimed, n);
}

void dmf_book_release_all(struct dmf_piece_book *b)
{
    dmf_bitmap_free(&b->claimed);
    dmf_bitmap_init(&b->claimed);
}

bool dmf_book_claimed(const struct dmf_piece_book *b, uint32_t n)
{
    return dmf_bitmap_get(&b->claimed, n);
}

uint8_t dmf_book_wanted_byte(const struct dmf_piece_book *b, uint32_t i)
{
    return (uint8_t)~dmf_bitmap_byte(&b->have, i) & (uint8_t)~dmf_bitmap_byte(&b->claimed, i) &
           dmf_bitmap_byte(&b->digest_known, i);
}

const uint8_t *dmf_book_digest(const struct dmf_piece_book *b, uint32_t n)
{
    return dmf_bitmap_get(&b->digest_known, n) ? b->digests[n] : NULL;
}

int dmf_book_set_digest(struct dmf_piece_book *b, uint32_t n, const uint8_t digest[DMF_SHA256_LEN])
{
    if (!dmf_book_in_range(b, n))
        return -EINVAL;
    ensure_digest_cap(b, n);
    if (dmf_bitmap_get(&b->digest_known, n))
        return memcmp(b->digests[n], digest, DMF_SHA256_LEN) == 0 ? 0 : -EEXIST;
    memcpy(b->digests[n], digest, DMF_SHA256_LEN);
    dmf_bitmap_set(&b->digest_known, n);
    return 1;
}

void dmf_book_commit(struct dmf_piece_book *b, uint32_t n, const uint8_t digest[DMF_SHA256_LEN])
{
    ensure_digest_cap(b, n);
    memcpy(b->digests[n], digest, DMF_SHA256_LEN);
    dmf_bitmap_set(&b->digest_known, n);
    dmf_bitmap_set(&b->have, n);
}

void dmf_book_drop(struct dmf_piece_book *b, uint32_t n)
{
    dmf_bitmap_clear(&b->have, n);
}

void dmf_book_drop_all(struct dmf_piece_book *b)
{
    dmf_bitmap_free(&b->have);
    dmf_bitmap_init(&b->have);
    dmf_bitmap_resize(&b->have, b->total_pieces);
}

void dmf_piece_buf_start(struct dmf_piece_buf *b, size_t want)
{
    b->len = 0;
    b->want = want;
    b->buf = dmf_piecemem_realloc(b->buf, want);
}

int dmf_piece_buf_append(struct dmf_piece_buf *b, const char *data, size_t len)
{
    if (len > b->want - b->len)
        return -EPROTO;
    memcpy(b->buf + b->len, data, len);
    b->len += len;
    return 0;
}

bool dmf_piece_buf_full(const struct dmf_piece_buf *b)
{
    return b->len == b->want;
}

uint8_t *dmf_piece_buf_take(struct dmf_piece_buf *b)
{
    uint8_t *buf = b->buf;
    b->buf = NULL;
    return buf;
}

void dmf_piece_buf_free(struct dmf_piece_buf *b)
{
    dmf_piecemem_free(b->buf);
    b->buf = NULL;
    b->len = b->want = 0;
}
