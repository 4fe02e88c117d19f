/* Piece layout at edge sizes, and the piece bitmap. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common/pieces.h"

#define MIB (1ll << 20)
#define GIB (1ll << 30)

static void test_piece_length_for(void **state)
{
    assert_int_equal(dmf_piece_length_for(-1), DMF_PIECE_LENGTH_DEFAULT);
    assert_int_equal(dmf_piece_length_for(0), DMF_PIECE_LENGTH_MIN);
    assert_int_equal(dmf_piece_length_for(1), DMF_PIECE_LENGTH_MIN);
    /* Up to 1024 pieces of 1 MiB, then the length doubles. */
    assert_int_equal(dmf_piece_length_for(1 * GIB), 1 * MIB);
    assert_int_equal(dmf_piece_length_for(1 * GIB + 1), 2 * MIB);
    assert_int_equal(dmf_piece_length_for(2 * GIB), 2 * MIB);
    assert_int_equal(dmf_piece_length_for(2 * GIB + 1), 4 * MIB);
    assert_int_equal(dmf_piece_length_for(8 * GIB + 1), 16 * MIB);
    assert_int_equal(dmf_piece_length_for(16 * GIB), 16 * MIB);
    /* Past 16 GiB pieces stay at the maximum. */
    assert_int_equal(dmf_piece_length_for(16 * GIB + 1), DMF_PIECE_LENGTH_MAX);
    assert_int_equal(dmf_piece_length_for(INT64_MAX), DMF_PIECE_LENGTH_MAX);
    /* The chosen length always keeps the count within 1024 below 16 GiB. */
    for (int64_t len = 1; len <= 16 * GIB; len = len * 3 + 1)
        assert_true(dmf_piece_count(len, dmf_piece_length_for(len)) <= 1024);
}

static void test_count_and_sizes_at_edges(void **state)
{
    const uint32_t pl = 4 * MIB;
    /* 0 bytes: no piece at all. */
    assert_int_equal(dmf_piece_count(0, pl), 0);
    assert_int_equal(dmf_piece_size(0, pl, 0), 0);
    /* 1 byte: one piece of 1 byte. */
    assert_int_equal(dmf_piece_count(1, pl), 1);
    assert_int_equal(dmf_piece_size(1, pl, 0), 1);
    assert_int_equal(dmf_piece_size(1, pl, 1), 0);
    /* Exactly one piece. */
    assert_int_equal(dmf_piece_count(pl, pl), 1);
    assert_int_equal(dmf_piece_size(pl, pl, 0), pl);
    /* One piece and one byte: a second piece of 1 byte. */
    assert_int_equal(dmf_piece_count(pl + 1, pl), 2);
    assert_int_equal(dmf_piece_size(pl + 1, pl, 0), pl);
    assert_int_equal(dmf_piece_size(pl + 1, pl, 1), 1);
    assert_int_equal(dmf_piece_offset(pl, 1), pl);
    /* A non-multiple: 10 MiB + 12345 in 4 MiB pieces. */
    int64_t len = 10 * MIB + 12345;
    assert_int_equal(dmf_piece_count(len, pl), 3);
    assert_int_equal(dmf_piece_size(len, pl, 2), 2 * MIB + 12345);
    assert_int_equal(dmf_piece_offset(pl, 2), 8 * MIB);
    uint64_t total = 0;
    for (uint32_t i = 0; i < 3; i++)
        total += dmf_piece_size(len, pl, i);
    assert_int_equal(total, len);
    /* Invalid inputs give no pieces rather than garbage. */
    assert_int_equal(dmf_piece_count(-1, pl), 0);
    assert_int_equal(dmf_piece_count(100, 0), 0);
}

static void test_huge_sizes(void **state)
{
    /* 1 TiB + 1 in 16 MiB pieces: offsets past 4 GiB must not wrap. */
    int64_t len = (1ll << 40) + 1;
    uint32_t pl = DMF_PIECE_LENGTH_MAX;
    uint32_t n = dmf_piece_count(len, pl);
    assert_int_equal(n, 65537);
    assert_int_equal(dmf_piece_offset(pl, n - 1), 1ull << 40);
    assert_int_equal(dmf_piece_size(len, pl, n - 1), 1);
    assert_int_equal(dmf_piece_size(len, pl, n - 2), pl);
    /* A count beyond 32 bits saturates instead of wrapping to a small number. */
    assert_int_equal(dmf_piece_count(INT64_MAX, 1), UINT32_MAX);
    assert_int_equal(dmf_piece_offset(UINT32_MAX, UINT32_MAX), (uint64_t)UINT32_MAX * UINT32_MAX);
}

static void test_layout_check(void **state)
{
    assert_int_equal(dmf_piece_layout_check(0, 0, 0), 0);
    assert_int_equal(dmf_piece_layout_check(0, 4 * MIB, 0), 0);
    assert_int_equal(dmf_piece_layout_check(10 * MIB, 4 * MIB, 3), 0);
    assert_int_equal(dmf_piece_layout_check(10 * MIB, 4 * MIB, 2), -EINVAL);
    assert_int_equal(dmf_piece_layout_check(10 * MIB, 4 * MIB, 4), -EINVAL);
    assert_int_equal(dmf_piece_layout_check(10, 0, 1), -EINVAL);
    assert_int_equal(dmf_piece_layout_check(0, 0, 1), -EINVAL);
    assert_int_equal(dmf_piece_layout_check(-1, 4 * MIB, 0), -EINVAL);
    assert_int_equal(dmf_piece_layout_check(10, DMF_PIECE_LENGTH_MIN - 1, 1), -EINVAL);
    assert_int_equal(dmf_piece_layout_check(10, DMF_PIECE_LENGTH_MAX + 1, 1), -EINVAL);
    /* The most pieces a task may have, and one more. */
    int64_t max = (int64_t)DMF_PIECES_MAX * DMF_PIECE_LENGTH_MIN;
    assert_int_equal(dmf_piece_layout_check(max, DMF_PIECE_LENGTH_MIN, DMF_PIECES_MAX), 0);
    assert_int_equal(dmf_piece_layout_check(max + 1, DMF_PIECE_LENGTH_MIN, DMF_PIECES_MAX + 1),
                     -EINVAL);
    /* A count that saturates must not pass for a valid one. */
    assert_int_equal(dmf_piece_layout_check(INT64_MAX, DMF_PIECE_LENGTH_MIN, UINT32_MAX), -EINVAL);
}

/* dmf_bitmap_byte: eight pieces at a time, piece 8*i in bit 0, nothing beyond nbits. */
static void test_bitmap_byte(void **state)
{
    dmf_bitmap_t b;
    dmf_bitmap_init(&b);
    assert_int_equal(dmf_bitmap_byte(&b, 0), 0); /* nothing allocated yet */
    dmf_bitmap_set(&b, 0);
    dmf_bitmap_set(&b, 9);
    dmf_bitmap_set(&b, 15);
    assert_int_equal(dmf_bitmap_byte(&b, 0), 0x01);
    assert_int_equal(dmf_bitmap_byte(&b, 1), 0x82);
    assert_int_equal(dmf_bitmap_byte(&b, 2), 0);
    assert_int_equal(dmf_bitmap_byte(&b, 1000), 0);
    dmf_bitmap_clear(&b, 9);
    assert_int_equal(dmf_bitmap_byte(&b, 1), 0x80);
    dmf_bitmap_free(&b);
}

static void test_bitmap(void **state)
{
    dmf_bitmap_t b;
    dmf_bitmap_init(&b);
    assert_int_equal(b.nbits, 0);
    assert_false(dmf_bitmap_get(&b, 0));
    dmf_bitmap_clear(&b, 5); /* harmless beyond nbits */

    assert_true(dmf_bitmap_set(&b, 0));
    assert_false(dmf_bitmap_set(&b, 0)); /* already set */
    assert_int_equal(b.count, 1);
    assert_true(dmf_bitmap_set(&b, 9));
    assert_int_equal(b.nbits, 10);
    assert_true(dmf_bitmap_get(&b, 9));
    assert_false(dmf_bitmap_get(&b, 8));
    assert_false(dmf_bitmap_get(&b, 10));
    assert_int_equal(b.count, 2);

    dmf_bitmap_clear(&b, 9);
    assert_false(dmf_bitmap_get(&b, 9));
    assert_int_equal(b.count, 1);
    dmf_bitmap_clear(&b, 9); /* clearing twice does not miscount */
    assert_int_equal(b.count, 1);

    /* Resize grows with zero bits and never shrinks. */
    dmf_bitmap_resize(&b, 100000);
    assert_int_equal(b.nbits, 100000);
    for (uint32_t i = 1; i < 100000; i += 997)
        assert_false(dmf_bitmap_get(&b, i));
    dmf_bitmap_resize(&b, 3);
    assert_int_equal(b.nbits, 100000);
    assert_true(dmf_bitmap_get(&b, 0));

    /* Setting every piece in order, across reallocations, keeps earlier bits. */
    for (uint32_t i = 0; i < 200000; i++)
        dmf_bitmap_set(&b, i);
    assert_int_equal(b.count, 200000);
    assert_true(dmf_bitmap_get(&b, 199999));
    assert_true(dmf_bitmap_get(&b, 12345));

    /* The last index allowed, and the first refused. */
    assert_true(dmf_bitmap_set(&b, DMF_PIECES_MAX - 1));
    assert_false(dmf_bitmap_set(&b, DMF_PIECES_MAX));
    assert_false(dmf_bitmap_get(&b, DMF_PIECES_MAX));
    assert_int_equal(b.nbits, DMF_PIECES_MAX);
    dmf_bitmap_resize(&b, UINT32_MAX);
    assert_int_equal(b.nbits, DMF_PIECES_MAX);

    dmf_bitmap_free(&b);
    assert_null(b.bits);
    assert_int_equal(b.count, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_piece_length_for), cmocka_unit_test(test_count_and_sizes_at_edges),
        cmocka_unit_test(test_huge_sizes),       cmocka_unit_test(test_layout_check),
        cmocka_unit_test(test_bitmap),           cmocka_unit_test(test_bitmap_byte),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
