/* Back-to-source decisions without I/O (src/daemon/peer/source.c): what the probe's answer
 * means, and whether a range response is the piece asked for. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "daemon/peer/source.h"

#define MIN DMF_PIECE_LENGTH_MIN
#define MIB (1ll << 20)

struct answer {
    int rc;
    enum dmf_source_mode mode;
    int64_t total;
    uint32_t piece_length;
    char err[128];
};

static struct answer probe(long status, const char *content_range, const char *content_length,
                           uint32_t known_piece_length)
{
    struct answer a = {.mode = DMF_SOURCE_PROBING, .total = -2};
    a.rc = dmf_source_probe_answer(status, content_range, content_length, known_piece_length,
                                   &a.mode, &a.total, &a.piece_length, a.err, sizeof(a.err));
    return a;
}

static void expect_ok(struct answer a, enum dmf_source_mode mode, int64_t total,
                      uint32_t piece_length)
{
    assert_int_equal(a.rc, 0);
    assert_int_equal(a.mode, mode);
    assert_int_equal(a.total, total);
    assert_int_equal(a.piece_length, piece_length);
}

static void expect_refused(struct answer a, const char *err)
{
    assert_int_equal(a.rc, -EPROTO);
    assert_string_equal(a.err, err);
}

static void test_ranges(void **state)
{
    /* The probe asks for bytes 0-0: the total is the content length. */
    expect_ok(probe(206, "bytes 0-0/1000", NULL, 0), DMF_SOURCE_RANGES, 1000,
              dmf_piece_length_for(1000));
    expect_ok(probe(206, "bytes 0-0/1", "1", 0), DMF_SOURCE_RANGES, 1, MIN);
    expect_ok(probe(206, "bytes 0-0/3221225472", NULL, 0), DMF_SOURCE_RANGES, 3 * 1024 * MIB,
              dmf_piece_length_for(3 * 1024 * MIB));
    /* More than asked, from the start, is fine. */
    expect_ok(probe(206, "bytes 0-99/1000", NULL, 0), DMF_SOURCE_RANGES, 1000, MIN);
}

static void test_ranges_refused(void **state)
{
    static const char *const bad[] = {
        "bytes 5-5/1000",           /* not from the start */
        "bytes 0-0/*",              /* no total */
        "bytes */1000",             /* unsatisfiable, with 206 */
        "0-0/1000",                 /* no unit */
        "bytes 0-0/0",              /* a total inside the range */
        "bytes 0-0/10x",  "", NULL, /* no header at all */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_refused(probe(206, bad[i], "1", 0), "the origin sent an invalid Content-Range");
}

static void test_stream(void **state)
{
    expect_ok(probe(200, NULL, "5000", 0), DMF_SOURCE_STREAM, 5000, MIN);
    expect_ok(probe(200, NULL, "0", 0), DMF_SOURCE_STREAM, 0, MIN);
    /* An empty Content-Length is not 0 bytes. */
    expect_refused(probe(200, NULL, "", 0), "the origin sent an empty Content-Length");
    /* No length: unknown, in default pieces. */
    expect_ok(probe(200, NULL, NULL, 0), DMF_SOURCE_STREAM, -1, DMF_PIECE_LENGTH_DEFAULT);
    /* A Content-Range on a 200 means nothing. */
    expect_ok(probe(200, "bytes 0-0/99", "5000", 0), DMF_SOURCE_STREAM, 5000, MIN);
    static const char *const bad[] = {"-1", "12abc", "abc", "99999999999999999999", "5 "};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_refused(probe(200, NULL, bad[i], 0), "the origin sent an invalid Content-Length");
}

static void test_empty_content(void **state)
{
    expect_ok(probe(416, "bytes */0", NULL, 0), DMF_SOURCE_DONE, 0, MIN);
    /* A piece length the task knows already is kept (it is part of the layout). */
    expect_ok(probe(416, "bytes */0", NULL, 4 * MIB), DMF_SOURCE_DONE, 0, 4 * MIB);
    /* Unsatisfiable for another reason: an error like any other status. */
    expect_refused(probe(416, "bytes */1000", NULL, 0), "the origin answered HTTP 416");
    expect_refused(probe(416, NULL, NULL, 0), "the origin answered HTTP 416");
}

static void test_retryable(void **state)
{
    static const long again[] = {0, 408, 429, 500, 502, 503, 504, 599};
    static const long never[] = {400, 401, 403, 404, 410, 416, 301, 200, 206, 600};
    for (size_t i = 0; i < sizeof(again) / sizeof(again[0]); i++)
        assert_true(dmf_source_retryable(again[i]));
    for (size_t i = 0; i < sizeof(never) / sizeof(never[0]); i++)
        assert_false(dmf_source_retryable(never[i]));
}

static void test_same_version(void **state)
{
    assert_true(dmf_source_same_version(NULL, NULL));
    assert_true(dmf_source_same_version("\"v1\"", NULL)); /* one answer without it */
    assert_true(dmf_source_same_version(NULL, "\"v1\""));
    assert_true(dmf_source_same_version("\"v1\"", "\"v1\""));
    assert_false(dmf_source_same_version("\"v1\"", "\"v2\""));
    assert_false(dmf_source_same_version("W/\"v1\"", "\"v1\""));
}

static void test_other_statuses(void **state)
{
    static const long statuses[] = {404, 500, 301, 204, 0};
    char want[64];
    for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++) {
        snprintf(want, sizeof(want), "the origin answered HTTP %ld", statuses[i]);
        expect_refused(probe(statuses[i], "bytes 0-0/1000", "1", 0), want);
    }
}

static void test_known_piece_length(void **state)
{
    /* The task's piece length wins over the one the length would give. */
    expect_ok(probe(206, "bytes 0-0/1000", NULL, 8 * MIB), DMF_SOURCE_RANGES, 1000, 8 * MIB);
    expect_ok(probe(200, NULL, "5000", 2 * MIB), DMF_SOURCE_STREAM, 5000, 2 * MIB);
    expect_ok(probe(200, NULL, NULL, 2 * MIB), DMF_SOURCE_STREAM, -1, 2 * MIB);
}

/* A book of 3 pieces of MIN bytes and a last one of 100. */
static int setup_book(void **state)
{
    static struct dmf_piece_book b;
    dmf_book_init(&b);
    assert_int_equal(dmf_book_set_layout(&b, 3 * MIN + 100, MIN), DMF_BOOK_LAYOUT_CHANGED);
    *state = &b;
    return 0;
}

static int teardown_book(void **state)
{
    dmf_book_free(*state);
    return 0;
}

static void test_range_matches(void **state)
{
    const struct dmf_piece_book *b = *state;
    /* 262144-byte pieces in 786532 bytes. */
    assert_true(dmf_source_range_matches(b, 0, "bytes 0-262143/786532"));
    assert_true(dmf_source_range_matches(b, 1, "bytes 262144-524287/786532"));
    assert_true(dmf_source_range_matches(b, 3, "bytes 786432-786531/786532"));
    /* Another piece's range. */
    assert_false(dmf_source_range_matches(b, 1, "bytes 0-262143/786532"));
    /* Wrong start, same length. */
    assert_false(dmf_source_range_matches(b, 1, "bytes 262145-524288/786532"));
    /* Wrong length. */
    assert_false(dmf_source_range_matches(b, 1, "bytes 262144-524286/786532"));
    assert_false(dmf_source_range_matches(b, 3, "bytes 786432-1048575/1048576"));
    assert_false(dmf_source_range_matches(b, 3, "bytes 786432-786530/786532"));
    /* Wrong total. */
    assert_false(dmf_source_range_matches(b, 1, "bytes 262144-524287/786533"));
    assert_false(dmf_source_range_matches(b, 1, "bytes 262144-524287/*"));
    /* Past the end, or nothing to parse. */
    assert_false(dmf_source_range_matches(b, 4, "bytes 1048576-1048675/786532"));
    assert_false(dmf_source_range_matches(b, 0, NULL));
    assert_false(dmf_source_range_matches(b, 0, "bytes */786532"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ranges),
        cmocka_unit_test(test_ranges_refused),
        cmocka_unit_test(test_stream),
        cmocka_unit_test(test_empty_content),
        cmocka_unit_test(test_other_statuses),
        cmocka_unit_test(test_retryable),
        cmocka_unit_test(test_same_version),
        cmocka_unit_test(test_known_piece_length),
        cmocka_unit_test_setup_teardown(test_range_matches, setup_book, teardown_book),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
