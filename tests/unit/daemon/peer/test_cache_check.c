/* Decisions on cached bytes (src/daemon/peer/cache_check.c): what counts as a changed data
 * file, which pieces a short file still holds, when a hard-linked file is left alone, and
 * the whole-file scan against real files. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/digest.h"
#include "daemon/peer/cache_check.h"

#define KIB 1024u

static struct dmf_file_mark mark(void)
{
    return (struct dmf_file_mark){
        .dev = 1, .ino = 2, .size = 1000, .mtime = {5, 6}, .ctime = {7, 8}, .nlink = 1};
}

static void test_compare(void **state)
{
    struct dmf_file_mark was = mark(), now = mark();
    assert_int_equal(dmf_cache_compare(&was, &now), DMF_CACHE_SAME);
    now.nlink = 2; /* a hard link alone changes nothing here (its ctime does) */
    assert_int_equal(dmf_cache_compare(&was, &now), DMF_CACHE_SAME);
    now = mark();
    now.ctime.tv_nsec++; /* written, chmod'ed or linked: users cannot set ctime back */
    assert_int_equal(dmf_cache_compare(&was, &now), DMF_CACHE_CHANGED);
    now = mark();
    now.mtime.tv_sec--;
    assert_int_equal(dmf_cache_compare(&was, &now), DMF_CACHE_CHANGED);
    now = mark();
    now.size--;
    assert_int_equal(dmf_cache_compare(&was, &now), DMF_CACHE_CHANGED);
    now = mark();
    now.ino = 3; /* another file */
    assert_int_equal(dmf_cache_compare(&was, &now), DMF_CACHE_CHANGED);
    now = mark();
    now.nlink = 0; /* unlinked from the data dir */
    assert_int_equal(dmf_cache_compare(&was, &now), DMF_CACHE_GONE);
}

static void test_piece_within(void **state)
{
    const uint32_t pl = 256 * KIB;
    const int64_t len = 3 * pl + 10; /* 4 pieces, the last of 10 bytes */
    assert_true(dmf_cache_piece_within(len, pl, 0, pl));
    assert_false(dmf_cache_piece_within(len, pl, 1, pl));
    assert_true(dmf_cache_piece_within(len, pl, 3, (uint64_t)len));
    assert_false(dmf_cache_piece_within(len, pl, 3, (uint64_t)len - 1));
    assert_false(dmf_cache_piece_within(len, pl, 0, 0));
    /* Length unknown: every piece is a full one. */
    assert_true(dmf_cache_piece_within(-1, pl, 1, 2 * pl));
    assert_false(dmf_cache_piece_within(-1, pl, 1, 2 * pl - 1));
    assert_false(dmf_cache_piece_within(len, 0, 0, 1u << 30));
}

static void test_must_detach(void **state)
{
    assert_false(dmf_cache_must_detach(1));
    assert_true(dmf_cache_must_detach(2));
    assert_true(dmf_cache_must_detach(7));
}

/* A temp file of len pseudo-random bytes; returns its fd (unlinked). */
static int temp_file(uint8_t *buf, size_t len)
{
    char path[] = "/tmp/test_cache_check-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    uint32_t x = 12345;
    for (size_t i = 0; i < len; i++) {
        x = x * 1103515245u + 12345u;
        buf[i] = (uint8_t)(x >> 16);
    }
    assert_int_equal(write(fd, buf, len), (ssize_t)len);
    return fd;
}

static void test_hash_piece_and_scan(void **state)
{
    const uint32_t pl = 256 * KIB;
    const size_t len = 2 * pl + 1000;
    uint8_t *buf = malloc(len), d[3][DMF_SHA256_LEN], whole[DMF_SHA256_LEN];
    int fd = temp_file(buf, len);
    for (int n = 0; n < 3; n++)
        dmf_sha256(buf + n * pl, n < 2 ? pl : 1000, d[n]);
    dmf_sha256(buf, len, whole);
    assert_int_equal(dmf_cache_hash_piece(fd, (int64_t)len, pl, 1, d[1]), 0);
    assert_int_equal(dmf_cache_hash_piece(fd, (int64_t)len, pl, 2, d[2]), 0);
    assert_int_equal(dmf_cache_hash_piece(fd, (int64_t)len, pl, 1, d[0]), -EBADMSG);

    struct dmf_cache_scan s = {.fd = fd, .content_length = (int64_t)len, .piece_length = pl};
    dmf_cache_scan_run(&s);
    assert_int_equal(s.err, 0);
    assert_int_equal(s.readable, len);
    assert_memory_equal(s.whole, whole, DMF_SHA256_LEN);
    for (int n = 0; n < 3; n++)
        assert_memory_equal(s.pieces[n], d[n], DMF_SHA256_LEN);
    dmf_cache_scan_free(&s);

    /* One byte flipped in piece 1: only its digest (and the whole) differ. */
    uint8_t b = buf[pl + 7] ^ 0xff;
    assert_int_equal(pwrite(fd, &b, 1, pl + 7), 1);
    assert_int_equal(dmf_cache_hash_piece(fd, (int64_t)len, pl, 1, d[1]), -EBADMSG);
    s = (struct dmf_cache_scan){.fd = fd, .content_length = (int64_t)len, .piece_length = pl};
    dmf_cache_scan_run(&s);
    assert_memory_equal(s.pieces[0], d[0], DMF_SHA256_LEN);
    assert_memory_not_equal(s.pieces[1], d[1], DMF_SHA256_LEN);
    assert_memory_equal(s.pieces[2], d[2], DMF_SHA256_LEN);
    assert_memory_not_equal(s.whole, whole, DMF_SHA256_LEN);
    dmf_cache_scan_free(&s);

    /* Truncated inside piece 1: the scan tells how far the file goes, without an error. */
    assert_int_equal(ftruncate(fd, pl + 100), 0);
    s = (struct dmf_cache_scan){.fd = fd, .content_length = (int64_t)len, .piece_length = pl};
    dmf_cache_scan_run(&s);
    assert_int_equal(s.err, 0);
    assert_int_equal(s.readable, pl + 100);
    assert_false(dmf_cache_piece_within((int64_t)len, pl, 1, s.readable));
    dmf_cache_scan_free(&s);
    assert_int_not_equal(dmf_cache_hash_piece(fd, (int64_t)len, pl, 1, d[1]), 0);
    close(fd);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_compare),
        cmocka_unit_test(test_piece_within),
        cmocka_unit_test(test_must_detach),
        cmocka_unit_test(test_hash_piece_and_scan),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
