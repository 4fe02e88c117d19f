/* SHA-256 helpers and "sha256:HEX" parsing. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/digest.h"
#include "common/util.h"

/* SHA-256("abc") and SHA-256("") from FIPS 180-2. */
#define ABC_HEX   "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
#define EMPTY_HEX "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

static void hex_of(const uint8_t d[DMF_SHA256_LEN], char *out)
{
    dmf_hex_encode(d, DMF_SHA256_LEN, out);
}

static void test_oneshot_known_answers(void **state)
{
    uint8_t d[DMF_SHA256_LEN];
    char hex[65];
    dmf_sha256("abc", 3, d);
    hex_of(d, hex);
    assert_string_equal(hex, ABC_HEX);
    dmf_sha256("", 0, d);
    hex_of(d, hex);
    assert_string_equal(hex, EMPTY_HEX);
}

static void test_incremental_and_reset(void **state)
{
    uint8_t d[DMF_SHA256_LEN];
    char hex[65];
    dmf_sha256_ctx_t *c = dmf_sha256_new();
    dmf_sha256_update(c, "a", 1);
    dmf_sha256_update(c, "", 0);
    dmf_sha256_update(c, "bc", 2);
    dmf_sha256_final(c, d);
    hex_of(d, hex);
    assert_string_equal(hex, ABC_HEX);
    /* final resets: the context is reusable for a new message. */
    dmf_sha256_final(c, d);
    hex_of(d, hex);
    assert_string_equal(hex, EMPTY_HEX);
    dmf_sha256_update(c, "abc", 3);
    dmf_sha256_final(c, d);
    hex_of(d, hex);
    assert_string_equal(hex, ABC_HEX);
    dmf_sha256_free(c);
    dmf_sha256_free(NULL);
}

static void test_fd_ranges(void **state)
{
    char path[] = "/tmp/dmf-digest-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    /* 1 MiB + 3 bytes so that a range spans several read chunks. */
    size_t n = (1u << 20) + 3;
    uint8_t *buf = malloc(n);
    for (size_t i = 0; i < n; i++)
        buf[i] = (uint8_t)(i * 7 + 3);
    assert_int_equal(write(fd, buf, n), (ssize_t)n);

    uint8_t want[DMF_SHA256_LEN], got[DMF_SHA256_LEN];
    dmf_sha256(buf + 5, n - 5, want);
    assert_int_equal(dmf_sha256_fd(fd, 5, n - 5, got), 0);
    assert_memory_equal(got, want, DMF_SHA256_LEN);

    dmf_sha256(buf + 1000, 10, want);
    assert_int_equal(dmf_sha256_fd(fd, 1000, 10, got), 0);
    assert_memory_equal(got, want, DMF_SHA256_LEN);

    dmf_sha256("", 0, want);
    assert_int_equal(dmf_sha256_fd(fd, n, 0, got), 0);
    assert_memory_equal(got, want, DMF_SHA256_LEN);

    /* A range past the end of the file is a short file. */
    assert_int_equal(dmf_sha256_fd(fd, n - 2, 3, got), -EIO);
    assert_int_equal(dmf_sha256_fd(-1, 0, 1, got), -EBADF);
    free(buf);
    close(fd);
}

static void test_parse_good(void **state)
{
    uint8_t d[DMF_SHA256_LEN], want[DMF_SHA256_LEN];
    char err[128], s[DMF_DIGEST_STR_LEN + 1];
    dmf_sha256("abc", 3, want);
    assert_int_equal(dmf_digest_parse("sha256:" ABC_HEX, d, err, sizeof(err)), 0);
    assert_memory_equal(d, want, DMF_SHA256_LEN);
    dmf_digest_format(d, s);
    assert_string_equal(s, "sha256:" ABC_HEX);
    assert_int_equal(strlen(s), DMF_DIGEST_STR_LEN);
}

static void test_parse_uppercase(void **state)
{
    uint8_t d[DMF_SHA256_LEN];
    char err[128], s[DMF_DIGEST_STR_LEN + 1];
    assert_int_equal(dmf_digest_parse("sha256:BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9C"
                                      "B410FF61F20015AD",
                                      d, err, sizeof(err)),
                     0);
    dmf_digest_format(d, s);
    assert_string_equal(s, "sha256:" ABC_HEX); /* formatted back in lower case */
}

static void assert_parse_fails(const char *s, const char *why)
{
    uint8_t d[DMF_SHA256_LEN];
    char err[128] = "";
    assert_int_equal(dmf_digest_parse(s, d, err, sizeof(err)), -EINVAL);
    if (strstr(err, why) == NULL)
        fail_msg("'%s': error '%s' does not mention '%s'", s ? s : "(null)", err, why);
}

static void test_parse_bad(void **state)
{
    assert_parse_fails("sha256:" ABC_HEX "0", "64 hex digits");
    assert_parse_fails("sha256:ba7816bf", "64 hex digits");
    assert_parse_fails("sha256:", "64 hex digits");
    assert_parse_fails("sha256:zz7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
                       "hex");
    assert_parse_fails("md5:d41d8cd98f00b204e9800998ecf8427e",
                       "unsupported digest algorithm 'md5'");
    assert_parse_fails("sha512:" ABC_HEX ABC_HEX, "'sha512'");
    assert_parse_fails(ABC_HEX, "sha256:");
    assert_parse_fails("", "sha256:");
    assert_parse_fails("garbage", "sha256:");
    assert_parse_fails(NULL, "sha256:");
    /* err may be omitted. */
    uint8_t d[DMF_SHA256_LEN];
    assert_int_equal(dmf_digest_parse("nope", d, NULL, 0), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_oneshot_known_answers),
        cmocka_unit_test(test_incremental_and_reset),
        cmocka_unit_test(test_fd_ranges),
        cmocka_unit_test(test_parse_good),
        cmocka_unit_test(test_parse_uppercase),
        cmocka_unit_test(test_parse_bad),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
