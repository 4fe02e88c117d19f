/* A /have stream's lines (src/daemon/peer/have_line.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "daemon/peer/have_line.h"

static enum dmf_have_line parse(const char *s, uint32_t limit, uint32_t *n)
{
    return dmf_have_line_parse(s, strlen(s), limit, n);
}

static void test_lines(void **state)
{
    uint32_t n = 0;
    assert_int_equal(parse("have 0", 10, &n), DMF_HAVE_PIECE);
    assert_int_equal(n, 0);
    assert_int_equal(parse("have 9", 10, &n), DMF_HAVE_PIECE);
    assert_int_equal(n, 9);
    assert_int_equal(parse("done 10", 10, &n), DMF_HAVE_DONE);
    assert_int_equal(n, 10);
    /* What strtoul used to let through, and what lies outside the task. */
    const char *bad[] = {
        "have 10", "have -0", "have  1", "have +1", "have 01", "have 1 ",          "have",
        "have ",   "hav 1",   "done",    "done 11", "Have 1",  "have 99999999999", "done x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(parse(bad[i], 10, &n), DMF_HAVE_BAD);
    /* Not NUL-terminated: only len bytes count. */
    assert_int_equal(dmf_have_line_parse("have 12", 6, 10, &n), DMF_HAVE_PIECE);
    assert_int_equal(n, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_lines)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
