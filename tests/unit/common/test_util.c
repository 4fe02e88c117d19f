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

static void test_content_type_valid(void **state)
{
    assert_true(dmf_content_type_valid("text/plain; charset=utf-8"));
    assert_false(dmf_content_type_valid(NULL));
    assert_false(dmf_content_type_valid(""));
    assert_false(dmf_content_type_valid("text/plain\r\nSet-Cookie: x=1"));
    assert_false(dmf_content_type_valid("text/\x7f"));
    assert_false(dmf_content_type_valid("text/\xc3\xa9"));
    char s[DMF_CONTENT_TYPE_MAX + 2];
    memset(s, 'a', sizeof(s));
    s[DMF_CONTENT_TYPE_MAX] = '\0';
    assert_true(dmf_content_type_valid(s));
    s[DMF_CONTENT_TYPE_MAX] = 'a';
    s[DMF_CONTENT_TYPE_MAX + 1] = '\0';
    assert_false(dmf_content_type_valid(s));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_xstrndup_stops_at_nul),
        cmocka_unit_test(test_xstrndup_bounds),
        cmocka_unit_test(test_content_type_valid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
