/* Allocation and string helpers (src/common/util.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/util.h"

static void test_xstrndup_stops_at_nul(void **state)
{
    /* A 3-byte buffer with a NUL at 1: a longer n must not read past it (ASan catches an
     * over-read of the heap block). */
    char *src = malloc(3);
    memcpy(src, "a\0b", 3);
    char *p = dmf_xstrndup(src, 1000);
    assert_string_equal(p, "a");
    free(p);
    free(src);
}

static void test_xstrndup_bounds(void **state)
{
    char *p = dmf_xstrndup("abcdef", 3);
    assert_string_equal(p, "abc");
    free(p);
    p = dmf_xstrndup("abc", 0);
    assert_string_equal(p, "");
    free(p);
    /* An unterminated buffer of exactly n bytes is copied whole. */
    char raw[4] = {'w', 'x', 'y', 'z'};
    p = dmf_xstrndup(raw, sizeof(raw));
    assert_string_equal(p, "wxyz");
    free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_xstrndup_stops_at_nul),
        cmocka_unit_test(test_xstrndup_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
