/* The output path rules of `get` (src/cli/output.c): names from URLs, and what is refused. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "cli/output.h"

static void expect_name(const char *url, const char *want)
{
    char *name = NULL;
    int e = dmf_output_name_from_url(url, &name);
    if (want == NULL) {
        assert_int_equal(e, -EINVAL);
        assert_null(name);
        return;
    }
    assert_int_equal(e, 0);
    assert_string_equal(name, want);
    free(name);
}

static void test_name_from_url(void **state)
{
    expect_name("http://h/a/b/file.tar.gz", "file.tar.gz");
    expect_name("https://h:8080/f.bin?sig=1&x=/y", "f.bin");
    expect_name("http://h/f.bin#frag", "f.bin");
    expect_name("http://h/v2/x/blobs/sha256:abc", "sha256:abc");
    expect_name("http://h/", NULL);
    expect_name("http://h", NULL);
    expect_name("http://h/dir/", NULL);
    expect_name("http://h/..", NULL);
    expect_name("http://h/a/.", NULL);
    expect_name("http://h?x=/a", NULL);
}

static int check(mode_t mode, bool exists, bool symlink, bool target_ok, bool overwrite)
{
    char err[256] = "";
    struct dmf_output_found f = {exists, symlink, target_ok, mode};
    int e = dmf_output_check("/o", &f, overwrite, err, sizeof(err));
    if (e != 0)
        assert_true(strlen(err) > 0 && strchr(err, '\n') == NULL);
    return e;
}

static void test_check(void **state)
{
    assert_int_equal(check(0, false, false, false, false), 0);
    assert_int_equal(check(S_IFREG | 0644, true, false, false, false), -EEXIST);
    assert_int_equal(check(S_IFREG | 0644, true, false, false, true), 0);
    for (int ow = 0; ow < 2; ow++) {
        assert_int_equal(check(S_IFDIR | 0755, true, false, false, ow), -EISDIR);
        assert_int_equal(check(S_IFCHR | 0666, true, false, false, ow), -ENODEV);
        assert_int_equal(check(S_IFBLK | 0660, true, false, false, ow), -ENODEV);
        assert_int_equal(check(S_IFIFO | 0644, true, false, false, ow), -EINVAL);
        assert_int_equal(check(S_IFSOCK | 0755, true, false, false, ow), -EINVAL);
        /* A symlink counts as its target; one to nothing is refused. */
        assert_int_equal(check(S_IFLNK | 0777, true, true, false, ow), -EINVAL);
        assert_int_equal(check(S_IFDIR | 0755, true, true, true, ow), -EISDIR);
    }
    assert_int_equal(check(S_IFREG | 0600, true, true, true, false), -EEXIST);
    assert_int_equal(check(S_IFREG | 0600, true, true, true, true), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_name_from_url),
        cmocka_unit_test(test_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
