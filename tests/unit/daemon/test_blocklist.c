/* The cluster's URL block list (src/daemon/blocklist.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "daemon/blocklist.h"

static void test_matches_the_first_pattern(void **state)
{
    const char *pats[] = {"/private/", "\\.iso$"};
    char err[256];
    struct dmf_blocklist *b = dmf_blocklist_new(pats, 2, err, sizeof(err));
    assert_non_null(b);
    assert_int_equal(dmf_blocklist_count(b), 2);
    assert_string_equal(dmf_blocklist_match(b, "http://o/private/k"), "/private/");
    assert_string_equal(dmf_blocklist_match(b, "http://o/a/disk.iso"), "\\.iso$");
    assert_null(dmf_blocklist_match(b, "http://o/a/disk.iso.txt"));
    assert_null(dmf_blocklist_match(NULL, "http://o/private/k"));
    assert_true(dmf_blocklist_same(b, pats, 2));
    assert_false(dmf_blocklist_same(b, pats, 1));
    assert_true(dmf_blocklist_same(NULL, NULL, 0));
    dmf_blocklist_free(b);
}

static void test_bad_lists_are_refused(void **state)
{
    char err[256];
    const char *bad[] = {"ok", "(unclosed"};
    assert_null(dmf_blocklist_new(bad, 2, err, sizeof(err)));
    assert_non_null(strstr(err, "pattern 1 is not a valid regex"));
    const char *many[DMF_BLOCKLIST_MAX + 1];
    for (size_t i = 0; i <= DMF_BLOCKLIST_MAX; i++)
        many[i] = "x";
    assert_null(dmf_blocklist_new(many, DMF_BLOCKLIST_MAX + 1, err, sizeof(err)));
    static char longp[DMF_BLOCKLIST_PATTERN_MAX + 2];
    memset(longp, 'a', sizeof(longp) - 1);
    const char *one[] = {longp};
    assert_null(dmf_blocklist_new(one, 1, err, sizeof(err)));
    struct dmf_blocklist *empty = dmf_blocklist_new(NULL, 0, err, sizeof(err));
    assert_non_null(empty);
    assert_null(dmf_blocklist_match(empty, "http://o/x"));
    dmf_blocklist_free(empty);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_the_first_pattern),
        cmocka_unit_test(test_bad_lists_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
