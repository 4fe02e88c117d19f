/* Request headers from files (src/cli/header_file.c). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cli/header_file.h"
#include "common/util.h"

static char path[64];

static void write_file(const char *data, size_t len)
{
    snprintf(path, sizeof(path), "/tmp/dmf-hdr-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    close(fd);
}

static void test_reads_lines(void **state)
{
    const char *s = "Authorization: Bearer s3cr3t\r\n\nX-One: 1\nX-Two:2";
    write_file(s, strlen(s));
    struct dmf_strlist out = {0};
    char err[256];
    assert_int_equal(dmf_header_file_read(path, &out, err, sizeof(err)), 0);
    assert_int_equal(out.n, 3);
    assert_string_equal(out.v[0], "Authorization: Bearer s3cr3t");
    assert_string_equal(out.v[1], "X-One: 1");
    assert_string_equal(out.v[2], "X-Two:2");
    dmf_strlist_free(&out);
    unlink(path);
}

static void test_errors_never_quote_contents(void **state)
{
    const char *s = "X-Ok: 1\nBearer s3cr3t\n";
    write_file(s, strlen(s));
    struct dmf_strlist out = {0};
    char err[256];
    assert_int_equal(dmf_header_file_read(path, &out, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "line 2"));
    assert_null(strstr(err, "s3cr3t"));
    dmf_strlist_free(&out);
    unlink(path);
    /* A NUL byte, a file too large, too many headers, a missing file. */
    write_file("A: 1\0B: 2\n", 10);
    assert_int_equal(dmf_header_file_read(path, &out, err, sizeof(err)), -EINVAL);
    dmf_strlist_free(&out);
    unlink(path);
    char *big = dmf_xmalloc(DMF_HEADER_FILE_MAX + 10);
    memset(big, 'a', DMF_HEADER_FILE_MAX + 10);
    big[0] = 'A';
    big[1] = ':';
    write_file(big, DMF_HEADER_FILE_MAX + 10);
    free(big);
    assert_int_equal(dmf_header_file_read(path, &out, err, sizeof(err)), -EFBIG);
    unlink(path);
    char many[DMF_HEADERS_FROM_MAX * 8 + 16] = "";
    for (int i = 0; i <= DMF_HEADERS_FROM_MAX; i++)
        strcat(many, "X-A: 1\n");
    write_file(many, strlen(many));
    assert_int_equal(dmf_header_file_read(path, &out, err, sizeof(err)), -E2BIG);
    dmf_strlist_free(&out);
    assert_true(dmf_header_file_read("/nonexistent/h", &out, err, sizeof(err)) < 0);
    unlink(path);
}

static void test_expand(void **state)
{
    const char *s = "Authorization: Bearer x\n";
    write_file(s, strlen(s));
    struct dmf_strlist flags = {0}, files = {0}, out = {0};
    char at[80], err[256];
    snprintf(at, sizeof(at), "@%s", path);
    dmf_strlist_push(&flags, "X-First: 1");
    dmf_strlist_push(&flags, at);
    dmf_strlist_push(&files, path);
    assert_int_equal(dmf_headers_expand(&flags, &files, &out, err, sizeof(err)), 0);
    assert_int_equal(out.n, 3);
    assert_string_equal(out.v[0], "X-First: 1");
    assert_string_equal(out.v[1], "Authorization: Bearer x");
    assert_string_equal(out.v[2], "Authorization: Bearer x");
    dmf_strlist_free(&out);
    dmf_strlist_push(&files, "/nonexistent/h");
    assert_true(dmf_headers_expand(&flags, &files, &out, err, sizeof(err)) < 0);
    assert_int_equal(out.n, 0);
    dmf_strlist_free(&flags);
    dmf_strlist_free(&files);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reads_lines),
        cmocka_unit_test(test_errors_never_quote_contents),
        cmocka_unit_test(test_expand),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
