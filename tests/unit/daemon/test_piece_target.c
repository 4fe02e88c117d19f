/* The piece server's request targets (src/daemon/piece_target.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "daemon/piece_target.h"

#define ID "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static int kind(const char *path)
{
    struct dmf_piece_target t;
    dmf_piece_target_parse(path, &t);
    return t.kind;
}

static void test_targets(void **state)
{
    struct dmf_piece_target t;
    dmf_piece_target_parse("/pieces/" ID "/42", &t);
    assert_int_equal(t.kind, DMF_TARGET_PIECE);
    assert_string_equal(t.task_id, ID);
    assert_int_equal(t.piece, 42);
    dmf_piece_target_parse("/have/" ID, &t);
    assert_int_equal(t.kind, DMF_TARGET_HAVE);
    assert_string_equal(t.task_id, ID);
    assert_int_equal(kind("/metrics"), DMF_TARGET_METRICS);
    assert_int_equal(kind("/"), DMF_TARGET_NOT_FOUND);
    assert_int_equal(kind("/metrics/x"), DMF_TARGET_NOT_FOUND);
    assert_int_equal(kind("/pieces/" ID "/4294967295"), DMF_TARGET_PIECE);
    /* Hostile forms: non-canonical numbers, a short or upper-case id, traversal. */
    const char *bad[] = {
        "/pieces/" ID "/007", "/pieces/" ID "/-1", "/pieces/" ID "/ 1", "/pieces/" ID "/4294967296",
        "/pieces/" ID "/",    "/pieces/" ID,       "/pieces/ABC/1",     "/pieces/../1",
        "/pieces/" ID "/1/2"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        dmf_piece_target_parse(bad[i], &t);
        assert_int_equal(t.kind, DMF_TARGET_BAD_PIECE);
        assert_string_equal(t.task_id, "");
    }
    assert_int_equal(kind("/have/" ID "/x"), DMF_TARGET_BAD_HAVE);
    assert_int_equal(kind("/have/../../etc/passwd"), DMF_TARGET_BAD_HAVE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_targets)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
