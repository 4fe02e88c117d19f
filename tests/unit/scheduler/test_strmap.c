/* The scheduler's string map: put, get, replace, and deletion that keeps probe runs whole. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "scheduler/strmap.h"

#define N 5000

static void test_put_get_replace(void **state)
{
    dmf_strmap_t m;
    dmf_strmap_init(&m);
    int a = 1, b = 2;
    assert_null(dmf_strmap_get(&m, "x"));
    assert_null(dmf_strmap_del(&m, "x"));
    assert_null(dmf_strmap_put(&m, "x", &a));
    assert_ptr_equal(dmf_strmap_get(&m, "x"), &a);
    assert_ptr_equal(dmf_strmap_put(&m, "x", &b), &a);
    assert_ptr_equal(dmf_strmap_get(&m, "x"), &b);
    assert_int_equal(m.n, 1);
    assert_ptr_equal(dmf_strmap_del(&m, "x"), &b);
    assert_null(dmf_strmap_get(&m, "x"));
    assert_int_equal(m.n, 0);
    dmf_strmap_free(&m);
}

/* Many keys, every other one deleted: the rest stay reachable (backward shift is right). */
static void test_many_keys_and_deletes(void **state)
{
    static char keys[N][16];
    dmf_strmap_t m;
    dmf_strmap_init(&m);
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof(keys[i]), "k%d", i);
        assert_null(dmf_strmap_put(&m, keys[i], keys[i]));
    }
    assert_int_equal(m.n, N);
    for (int i = 0; i < N; i += 2)
        assert_ptr_equal(dmf_strmap_del(&m, keys[i]), keys[i]);
    assert_int_equal(m.n, N / 2);
    for (int i = 0; i < N; i++) {
        if (i % 2 == 0)
            assert_null(dmf_strmap_get(&m, keys[i]));
        else
            assert_ptr_equal(dmf_strmap_get(&m, keys[i]), keys[i]);
    }
    /* Deleting in reverse and re-adding leaves a consistent table. */
    for (int i = N - 1; i >= 0; i -= 2)
        assert_ptr_equal(dmf_strmap_del(&m, keys[i]), keys[i]);
    assert_int_equal(m.n, 0);
    for (int i = 0; i < N; i++)
        assert_null(dmf_strmap_get(&m, keys[i]));
    for (int i = 0; i < 100; i++)
        dmf_strmap_put(&m, keys[i], keys[i]);
    for (int i = 0; i < 100; i++)
        assert_ptr_equal(dmf_strmap_get(&m, keys[i]), keys[i]);
    dmf_strmap_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_get_replace),
        cmocka_unit_test(test_many_keys_and_deletes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
