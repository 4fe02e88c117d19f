/* Piece-fetch tokens (src/common/piece_token.c): each guarantee attacked. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/piece_token.h"

#define TASK  "a3f1c0de"
#define HOST  "host-child-1"
#define NOW   1800000000
#define LATER (NOW + 600)

static struct dmf_cluster_key key_of(char fill)
{
    struct dmf_cluster_key k = {.len = 32};
    memset(k.bytes, fill, k.len);
    return k;
}

static void test_round_trip(void **state)
{
    struct dmf_cluster_key k = key_of('k');
    char tok[DMF_PIECE_TOKEN_MAX + 1];
    assert_int_equal(dmf_piece_token_mint(&k, TASK, HOST, LATER, tok, sizeof(tok)), 0);
    assert_true(strncmp(tok, "v1.1800000600.", 14) == 0);
    assert_int_equal(strlen(tok), 14 + 64);
    assert_int_equal(dmf_piece_token_verify(&k, tok, TASK, HOST, NOW), DMF_PIECE_TOKEN_OK);
    assert_int_equal(dmf_piece_token_verify(&k, tok, TASK, HOST, LATER - 1), DMF_PIECE_TOKEN_OK);
}

static void test_expiry_with_injected_clock(void **state)
{
    struct dmf_cluster_key k = key_of('k');
    char tok[DMF_PIECE_TOKEN_MAX + 1];
    assert_int_equal(dmf_piece_token_mint(&k, TASK, HOST, LATER, tok, sizeof(tok)), 0);
    assert_int_equal(dmf_piece_token_verify(&k, tok, TASK, HOST, LATER), DMF_PIECE_TOKEN_EXPIRED);
    assert_int_equal(dmf_piece_token_verify(&k, tok, TASK, HOST, LATER + 86400),
                     DMF_PIECE_TOKEN_EXPIRED);
    /* Pushing the expiry forward in the text breaks the MAC. */
    char longer[DMF_PIECE_TOKEN_MAX + 1];
    memcpy(longer, tok, sizeof(tok));
    longer[3] = '9';
    assert_int_equal(dmf_piece_token_verify(&k, longer, TASK, HOST, LATER), DMF_PIECE_TOKEN_FORGED);
}

static void test_bound_to_task_host_and_key(void **state)
{
    struct dmf_cluster_key k = key_of('k'), other = key_of('o');
    char tok[DMF_PIECE_TOKEN_MAX + 1];
    assert_int_equal(dmf_piece_token_mint(&k, TASK, HOST, LATER, tok, sizeof(tok)), 0);
    assert_int_equal(dmf_piece_token_verify(&k, tok, "a3f1c0df", HOST, NOW),
                     DMF_PIECE_TOKEN_FORGED);
    assert_int_equal(dmf_piece_token_verify(&k, tok, TASK, "host-child-2", NOW),
                     DMF_PIECE_TOKEN_FORGED);
    assert_int_equal(dmf_piece_token_verify(&other, tok, TASK, HOST, NOW), DMF_PIECE_TOKEN_FORGED);
    /* Fields cannot slide into each other: ("ab","c") and ("a","bc") differ. */
    char t2[DMF_PIECE_TOKEN_MAX + 1];
    assert_int_equal(dmf_piece_token_mint(&k, "ab", "c", LATER, t2, sizeof(t2)), 0);
    assert_int_equal(dmf_piece_token_verify(&k, t2, "a", "bc", NOW), DMF_PIECE_TOKEN_FORGED);
    /* Every single flipped MAC digit is caught. */
    for (size_t i = 14; i < strlen(tok); i++) {
        char f[DMF_PIECE_TOKEN_MAX + 1];
        memcpy(f, tok, sizeof(tok));
        f[i] = f[i] == '0' ? '1' : '0';
        assert_int_equal(dmf_piece_token_verify(&k, f, TASK, HOST, NOW), DMF_PIECE_TOKEN_FORGED);
    }
}

static void test_malformed_and_missing(void **state)
{
    struct dmf_cluster_key k = key_of('k');
    char tok[DMF_PIECE_TOKEN_MAX + 1];
    assert_int_equal(dmf_piece_token_mint(&k, TASK, HOST, LATER, tok, sizeof(tok)), 0);
    assert_int_equal(dmf_piece_token_verify(&k, NULL, TASK, HOST, NOW), DMF_PIECE_TOKEN_MISSING);
    assert_int_equal(dmf_piece_token_verify(&k, "", TASK, HOST, NOW), DMF_PIECE_TOKEN_MISSING);
    const char *bad[] = {"v2.1800000600.00", "v1..00",  "v1.12",
                         "v1.-5.00",         "garbage", "v1.1800000600.ABCDEF"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(dmf_piece_token_verify(&k, bad[i], TASK, HOST, NOW),
                         DMF_PIECE_TOKEN_MALFORMED);
    /* A trailing byte, a truncated MAC, a 19-digit expiry. */
    char f[2 * DMF_PIECE_TOKEN_MAX];
    snprintf(f, sizeof(f), "%sx", tok);
    assert_int_equal(dmf_piece_token_verify(&k, f, TASK, HOST, NOW), DMF_PIECE_TOKEN_MALFORMED);
    snprintf(f, sizeof(f), "%.*s", (int)strlen(tok) - 1, tok);
    assert_int_equal(dmf_piece_token_verify(&k, f, TASK, HOST, NOW), DMF_PIECE_TOKEN_MALFORMED);
    snprintf(f, sizeof(f), "v1.1234567890123456789.%s", tok + 14);
    assert_int_equal(dmf_piece_token_verify(&k, f, TASK, HOST, NOW), DMF_PIECE_TOKEN_MALFORMED);
    /* One spelling per token: the true MAC in upper case, or a leading zero on the expiry,
     * is malformed (the fuzzer found both accepted). */
    snprintf(f, sizeof(f), "%s", tok);
    for (char *c = strrchr(f, '.'); *c; c++)
        if (*c >= 'a' && *c <= 'f')
            *c = (char)(*c - 'a' + 'A');
    assert_int_equal(dmf_piece_token_verify(&k, f, TASK, HOST, NOW), DMF_PIECE_TOKEN_MALFORMED);
    snprintf(f, sizeof(f), "v1.0%s", tok + 3);
    assert_int_equal(dmf_piece_token_verify(&k, f, TASK, HOST, NOW), DMF_PIECE_TOKEN_MALFORMED);
    char big[4096];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(dmf_piece_token_verify(&k, big, TASK, HOST, NOW), DMF_PIECE_TOKEN_MALFORMED);
    assert_string_equal(dmf_piece_token_verdict_str(DMF_PIECE_TOKEN_EXPIRED), "expired");
}

static void test_mint_refuses_bad_input(void **state)
{
    struct dmf_cluster_key k = key_of('k'), empty = {0};
    char tok[DMF_PIECE_TOKEN_MAX + 1];
    assert_int_equal(dmf_piece_token_mint(&k, "", HOST, LATER, tok, sizeof(tok)), -EINVAL);
    assert_int_equal(dmf_piece_token_mint(&k, TASK, "a\nb", LATER, tok, sizeof(tok)), -EINVAL);
    assert_int_equal(dmf_piece_token_mint(&k, TASK, HOST, LATER, tok, 10), -EINVAL);
    assert_int_equal(dmf_piece_token_mint(&empty, TASK, HOST, LATER, tok, sizeof(tok)), -EINVAL);
    char id[DMF_PIECE_TOKEN_ID_MAX + 2];
    memset(id, 'x', sizeof(id) - 1);
    id[sizeof(id) - 1] = '\0';
    assert_int_equal(dmf_piece_token_mint(&k, id, HOST, LATER, tok, sizeof(tok)), -EINVAL);
    /* The largest accepted expiry still fits the buffer. */
    assert_int_equal(dmf_piece_token_mint(&k, TASK, HOST, 999999999999999999LL, tok, sizeof(tok)),
                     0);
    assert_int_equal(dmf_piece_token_verify(&k, tok, TASK, HOST, NOW), DMF_PIECE_TOKEN_OK);
}

static void write_key(const char *path, size_t n, mode_t mode)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (size_t i = 0; i < n; i++)
        fputc((int)(i * 7 + 1), f);
    fclose(f);
    assert_int_equal(chmod(path, mode), 0);
}

static void test_key_file(void **state)
{
    char dir[] = "/tmp/dmf-piece-token-XXXXXX", path[64], err[256];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/key", dir);
    struct dmf_cluster_key k;

    write_key(path, 32, 0600);
    assert_int_equal(dmf_cluster_key_load(path, &k, err, sizeof(err)), 0);
    assert_int_equal(k.len, 32);
    write_key(path, 64, 0640); /* group-readable is allowed: the operator's group */
    assert_int_equal(dmf_cluster_key_load(path, &k, err, sizeof(err)), 0);

    write_key(path, 32, 0644);
    assert_int_equal(dmf_cluster_key_load(path, &k, err, sizeof(err)), -EPERM);
    assert_non_null(strstr(err, "accessible to other users"));
    assert_int_equal(k.len, 0);
    write_key(path, 31, 0600);
    assert_int_equal(dmf_cluster_key_load(path, &k, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "at least 32"));
    write_key(path, DMF_CLUSTER_KEY_MAX + 1, 0600);
    assert_int_equal(dmf_cluster_key_load(path, &k, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "larger than"));
    assert_int_equal(dmf_cluster_key_load(dir, &k, err, sizeof(err)), -EINVAL);
    unlink(path);
    assert_int_equal(dmf_cluster_key_load(path, &k, err, sizeof(err)), -ENOENT);
    assert_non_null(strstr(err, "cannot open"));
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_expiry_with_injected_clock),
        cmocka_unit_test(test_bound_to_task_host_and_key),
        cmocka_unit_test(test_malformed_and_missing),
        cmocka_unit_test(test_mint_refuses_bad_input),
        cmocka_unit_test(test_key_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
