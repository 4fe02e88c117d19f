/* A task's piece book (src/daemon/peer/piece_book.c): claims, layout, digests, held
 * bytes. */
#include <errno.h>
#include <stdlib.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/piecemem.h"
#include "daemon/peer/piece_book.h"

#define MIN DMF_PIECE_LENGTH_MIN
/* 10 pieces of MIN bytes, the last one 100 bytes long. */
#define TEN_PIECES ((int64_t)9 * MIN + 100)

/* A digest whose every byte is v. */
static const uint8_t *digest_of(uint8_t v)
{
    static uint8_t d[4][DMF_SHA256_LEN];
    static unsigned next;
    uint8_t *out = d[next++ % 4];
    memset(out, v, DMF_SHA256_LEN);
    return out;
}

static int setup_book(void **state)
{
    static struct dmf_piece_book b;
    dmf_book_init(&b);
    *state = &b;
    return 0;
}

static int teardown_book(void **state)
{
    dmf_book_free(*state);
    return 0;
}

/* A book that knows it holds 10 pieces (TEN_PIECES bytes in MIN pieces). */
static int setup_ten(void **state)
{
    setup_book(state);
    assert_int_equal(dmf_book_set_layout(*state, TEN_PIECES, MIN), DMF_BOOK_LAYOUT_CHANGED);
    return 0;
}

static void set_digests(struct dmf_piece_book *b, uint32_t from, uint32_t to)
{
    for (uint32_t n = from; n < to; n++)
        assert_int_equal(dmf_book_set_digest(b, n, digest_of((uint8_t)n)), 1);
}

static void commit(struct dmf_piece_book *b, uint32_t n)
{
    dmf_book_commit(b, n, digest_of((uint8_t)n));
}

static void test_claim_once(void **state)
{
    struct dmf_piece_book *b = *state;
    assert_false(dmf_book_claimed(b, 3));
    assert_true(dmf_book_claim(b, 3));
    assert_true(dmf_book_claimed(b, 3));
    assert_false(dmf_book_claim(b, 3));
    /* Released: claimable again. */
    dmf_book_release(b, 3);
    assert_false(dmf_book_claimed(b, 3));
    assert_true(dmf_book_claim(b, 3));
    /* A held piece is not fetched again. */
    commit(b, 4);
    assert_false(dmf_book_claim(b, 4));
    assert_false(dmf_book_claimed(b, 4));
    /* Releasing what was never claimed changes nothing. */
    dmf_book_release(b, 5);
    dmf_book_release(b, 500);
    assert_true(dmf_book_claimed(b, 3));
}

static void test_release_all(void **state)
{
    struct dmf_piece_book *b = *state;
    for (uint32_t n = 0; n < 10; n += 2)
        assert_true(dmf_book_claim(b, n));
    dmf_book_release_all(b);
    for (uint32_t n = 0; n < 10; n++)
        assert_false(dmf_book_claimed(b, n));
    for (uint32_t n = 0; n < 10; n++)
        assert_true(dmf_book_claim(b, n));
}

static void test_claim_range(void **state)
{
    struct dmf_piece_book *b = *state;
    /* Length unknown: any piece the bitmap can hold may be claimed. */
    assert_true(dmf_book_in_range(b, 5000));
    assert_true(dmf_book_claim(b, 5000));
    assert_false(dmf_book_in_range(b, DMF_PIECES_MAX));
    assert_false(dmf_book_claim(b, DMF_PIECES_MAX));
    dmf_book_release_all(b);
    /* Known: only pieces below the end. */
    assert_int_equal(dmf_book_set_layout(b, TEN_PIECES, MIN), DMF_BOOK_LAYOUT_CHANGED);
    assert_true(dmf_book_claim(b, 9));
    assert_false(dmf_book_in_range(b, 10));
    assert_false(dmf_book_claim(b, 10));
    assert_false(dmf_book_claim(b, 5000));
}

/* Every field of the book's layout. */
static void expect_layout(const struct dmf_piece_book *b, int64_t content_length,
                          uint32_t piece_length, uint32_t total)
{
    assert_int_equal(b->content_length, content_length);
    assert_int_equal(b->piece_length, piece_length);
    if (content_length >= 0)
        assert_int_equal(b->total_pieces, total);
}

static void test_layout_learn(void **state)
{
    struct dmf_piece_book *b = *state;
    /* The piece length first (a streamed origin), then the length. */
    assert_int_equal(dmf_book_set_layout(b, -1, 4 * MIN), DMF_BOOK_LAYOUT_CHANGED);
    expect_layout(b, -1, 4 * MIN, 0);
    assert_int_equal(dmf_book_piece_size(b, 7), 4 * MIN);
    assert_int_equal(dmf_book_set_layout(b, -1, 4 * MIN), DMF_BOOK_LAYOUT_SAME);
    /* A piece held before the length is known stays held. */
    commit(b, 2);
    assert_int_equal(dmf_book_set_layout(b, 10 * MIN + 1, 4 * MIN), DMF_BOOK_LAYOUT_CHANGED);
    expect_layout(b, 10 * MIN + 1, 4 * MIN, 3);
    assert_int_equal(dmf_book_piece_size(b, 2), 2 * MIN + 1);
    assert_true(dmf_bitmap_get(&b->have, 2));
    /* Told again, or told nothing new. */
    assert_int_equal(dmf_book_set_layout(b, 10 * MIN + 1, 4 * MIN), DMF_BOOK_LAYOUT_SAME);
    assert_int_equal(dmf_book_set_layout(b, -1, 4 * MIN), DMF_BOOK_LAYOUT_SAME);
    expect_layout(b, 10 * MIN + 1, 4 * MIN, 3);
}

static void test_layout_contradictions(void **state)
{
    struct dmf_piece_book *b = *state; /* TEN_PIECES in MIN pieces */
    assert_int_equal(dmf_book_set_layout(b, TEN_PIECES, 2 * MIN), DMF_BOOK_LAYOUT_PIECE_CHANGED);
    assert_int_equal(dmf_book_set_layout(b, -1, 2 * MIN), DMF_BOOK_LAYOUT_PIECE_CHANGED);
    assert_int_equal(dmf_book_set_layout(b, TEN_PIECES + 1, MIN), DMF_BOOK_LAYOUT_CONTENT_CHANGED);
    assert_int_equal(dmf_book_set_layout(b, 0, MIN), DMF_BOOK_LAYOUT_CONTENT_CHANGED);
    /* Both wrong: the piece length is reported. */
    assert_int_equal(dmf_book_set_layout(b, 1, 2 * MIN), DMF_BOOK_LAYOUT_PIECE_CHANGED);
    expect_layout(b, TEN_PIECES, MIN, 10);
}

static void test_layout_bad_piece_length(void **state)
{
    struct dmf_piece_book *b = *state;
    static const struct {
        int64_t content_length;
        uint32_t piece_length;
    } bad[] = {
        {100, 0}, {-1, 0}, {100, MIN - 1}, {100, DMF_PIECE_LENGTH_MAX + 1}, {0, MIN / 2},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(dmf_book_set_layout(b, bad[i].content_length, bad[i].piece_length),
                         DMF_BOOK_LAYOUT_BAD_LENGTH);
        expect_layout(b, -1, 0, 0);
    }
    /* The bounds themselves are fine. */
    assert_int_equal(dmf_book_set_layout(b, -1, DMF_PIECE_LENGTH_MAX), DMF_BOOK_LAYOUT_CHANGED);
}

static void test_layout_invalid(void **state)
{
    struct dmf_piece_book *b = *state;
    /* One piece too many. */
    assert_int_equal(dmf_book_set_layout(b, (int64_t)(DMF_PIECES_MAX + 1u) * MIN, MIN),
                     DMF_BOOK_LAYOUT_INVALID);
    expect_layout(b, -1, 0, 0);
    assert_int_equal(dmf_book_set_layout(b, (int64_t)DMF_PIECES_MAX * MIN, MIN),
                     DMF_BOOK_LAYOUT_CHANGED);
    dmf_book_free(b);
    dmf_book_init(b);
    /* A piece held past the end the length now puts. */
    assert_int_equal(dmf_book_set_layout(b, -1, MIN), DMF_BOOK_LAYOUT_CHANGED);
    commit(b, 20);
    assert_int_equal(dmf_book_set_layout(b, 5 * MIN, MIN), DMF_BOOK_LAYOUT_INVALID);
    expect_layout(b, -1, MIN, 0);
    /* The last piece held is still inside. */
    assert_int_equal(dmf_book_set_layout(b, 20 * MIN + 1, MIN), DMF_BOOK_LAYOUT_CHANGED);
    expect_layout(b, 20 * MIN + 1, MIN, 21);
}

static void test_layout_zero_bytes(void **state)
{
    struct dmf_piece_book *b = *state;
    assert_false(dmf_book_all_held(b));
    /* 0 bytes and no piece length: the minimum; no piece, all of them held. */
    assert_int_equal(dmf_book_set_layout(b, 0, 0), DMF_BOOK_LAYOUT_CHANGED);
    expect_layout(b, 0, MIN, 0);
    assert_true(dmf_book_all_held(b));
    assert_int_equal(dmf_book_held_bytes(b), 0);
    assert_false(dmf_book_claim(b, 0));
    assert_int_equal(dmf_book_set_layout(b, 0, 0), DMF_BOOK_LAYOUT_SAME);
    assert_int_equal(dmf_book_set_layout(b, 0, MIN), DMF_BOOK_LAYOUT_SAME);
}

static void test_wanted_byte(void **state)
{
    struct dmf_piece_book *b = *state;               /* 10 pieces */
    assert_int_equal(dmf_book_wanted_byte(b, 0), 0); /* no digest known yet */
    set_digests(b, 0, 5);
    set_digests(b, 6, 10); /* piece 5's digest is unknown */
    commit(b, 1);
    assert_true(dmf_book_claim(b, 2));
    /* Pieces 0, 3, 4, 6, 7; then 8 and 9. */
    assert_int_equal(dmf_book_wanted_byte(b, 0), 0xd9);
    assert_int_equal(dmf_book_wanted_byte(b, 1), 0x03);
    assert_int_equal(dmf_book_wanted_byte(b, 2), 0);
    dmf_book_release(b, 2);
    assert_int_equal(dmf_book_wanted_byte(b, 0), 0xdd);
}

static void test_set_digest(void **state)
{
    struct dmf_piece_book *b = *state; /* 10 pieces */
    assert_null(dmf_book_digest(b, 3));
    assert_int_equal(dmf_book_set_digest(b, 3, digest_of(0xaa)), 1);
    assert_memory_equal(dmf_book_digest(b, 3), digest_of(0xaa), DMF_SHA256_LEN);
    assert_int_equal(dmf_book_set_digest(b, 3, digest_of(0xaa)), 0);
    /* Another digest for the same piece: refused, the first one kept. */
    assert_int_equal(dmf_book_set_digest(b, 3, digest_of(0xbb)), -EEXIST);
    assert_memory_equal(dmf_book_digest(b, 3), digest_of(0xaa), DMF_SHA256_LEN);
    /* Past the end. */
    assert_int_equal(dmf_book_set_digest(b, 10, digest_of(0xcc)), -EINVAL);
    assert_null(dmf_book_digest(b, 10));
    assert_null(dmf_book_digest(b, 4));
    /* The last piece. */
    assert_int_equal(dmf_book_set_digest(b, 9, digest_of(0xdd)), 1);
    assert_memory_equal(dmf_book_digest(b, 9), digest_of(0xdd), DMF_SHA256_LEN);
}

static void test_set_digest_length_unknown(void **state)
{
    struct dmf_piece_book *b = *state;
    /* Digests may come before the layout, for any piece (the table grows). */
    assert_int_equal(dmf_book_set_digest(b, 1000, digest_of(1)), 1);
    assert_int_equal(dmf_book_set_digest(b, 7, digest_of(2)), 1);
    assert_memory_equal(dmf_book_digest(b, 1000), digest_of(1), DMF_SHA256_LEN);
    assert_memory_equal(dmf_book_digest(b, 7), digest_of(2), DMF_SHA256_LEN);
    assert_int_equal(dmf_book_set_digest(b, DMF_PIECES_MAX, digest_of(3)), -EINVAL);
}

static void test_held_bytes(void **state)
{
    struct dmf_piece_book *b = *state; /* 9 pieces of MIN, then 100 bytes */
    assert_int_equal(dmf_book_held_bytes(b), 0);
    assert_int_equal(dmf_book_piece_size(b, 9), 100);
    commit(b, 0);
    assert_int_equal(dmf_book_held_bytes(b), MIN);
    commit(b, 9);
    assert_int_equal(dmf_book_held_bytes(b), MIN + 100);
    for (uint32_t n = 1; n < 9; n++) {
        assert_false(dmf_book_all_held(b));
        commit(b, n);
    }
    assert_int_equal(dmf_book_held_bytes(b), TEN_PIECES);
    assert_true(dmf_book_all_held(b));
}

static void test_held_bytes_length_unknown(void **state)
{
    struct dmf_piece_book *b = *state;
    commit(b, 0);
    assert_int_equal(dmf_book_held_bytes(b), 0); /* no piece length: nothing to count */
    assert_int_equal(dmf_book_set_layout(b, -1, MIN), DMF_BOOK_LAYOUT_CHANGED);
    commit(b, 1);
    assert_int_equal(dmf_book_held_bytes(b), 2 * MIN);
    assert_false(dmf_book_all_held(b));
}

static void test_drop_all(void **state)
{
    struct dmf_piece_book *b = *state; /* 10 pieces */
    for (uint32_t n = 0; n < 10; n++)
        commit(b, n);
    assert_true(dmf_book_all_held(b));
    dmf_book_drop_all(b);
    assert_false(dmf_book_all_held(b));
    assert_int_equal(dmf_book_held_bytes(b), 0);
    assert_int_equal(b->have.count, 0);
    for (uint32_t n = 0; n < 10; n++) {
        assert_false(dmf_bitmap_get(&b->have, n));
        /* The digests the pieces were verified against stay known. */
        assert_memory_equal(dmf_book_digest(b, n), digest_of((uint8_t)n), DMF_SHA256_LEN);
        assert_true(dmf_book_claim(b, n));
    }
    assert_int_equal(dmf_book_wanted_byte(b, 0), 0);
    dmf_book_release_all(b);
    assert_int_equal(dmf_book_wanted_byte(b, 0), 0xff);
    assert_int_equal(dmf_book_wanted_byte(b, 1), 0x03);
}

/* A piece's buffer takes exactly its size: a parent or an origin that sends one byte too
 * many is refused, and a short piece is not full. */
static void test_piece_buf_bounds(void **state)
{
    struct dmf_piece_buf b = {0};
    dmf_piece_buf_start(&b, 5);
    assert_int_equal(dmf_piece_buf_append(&b, "abc", 3), 0);
    assert_false(dmf_piece_buf_full(&b));
    assert_int_equal(dmf_piece_buf_append(&b, "def", 3), -EPROTO);
    assert_int_equal(b.len, 3);
    assert_int_equal(dmf_piece_buf_append(&b, "de", 2), 0);
    assert_true(dmf_piece_buf_full(&b));
    uint8_t *got = dmf_piece_buf_take(&b);
    assert_memory_equal(got, "abcde", 5);
    assert_null(b.buf);
    dmf_piecemem_free(got);
    /* Started again after a take, and for an empty piece. */
    dmf_piece_buf_start(&b, 0);
    assert_true(dmf_piece_buf_full(&b));
    assert_int_equal(dmf_piece_buf_append(&b, "x", 1), -EPROTO);
    dmf_piece_buf_free(&b);
    assert_null(b.buf);
}

#define BOOK_TEST(f) cmocka_unit_test_setup_teardown(f, setup_book, teardown_book)
#define TEN_TEST(f)  cmocka_unit_test_setup_teardown(f, setup_ten, teardown_book)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_piece_buf_bounds),
        TEN_TEST(test_claim_once),
        TEN_TEST(test_release_all),
        BOOK_TEST(test_claim_range),
        BOOK_TEST(test_layout_learn),
        TEN_TEST(test_layout_contradictions),
        BOOK_TEST(test_layout_bad_piece_length),
        BOOK_TEST(test_layout_invalid),
        BOOK_TEST(test_layout_zero_bytes),
        TEN_TEST(test_wanted_byte),
        TEN_TEST(test_set_digest),
        BOOK_TEST(test_set_digest_length_unknown),
        TEN_TEST(test_held_bytes),
        BOOK_TEST(test_held_bytes_length_unknown),
        TEN_TEST(test_drop_all),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
