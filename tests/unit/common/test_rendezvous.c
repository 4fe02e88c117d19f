/* Rendezvous hashing (src/common/rendezvous.c): stable, balanced, minimal movement. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "common/rendezvous.h"

static const char *const nodes[] = {"10.0.0.1:8002", "10.0.0.2:8002", "10.0.0.3:8002"};

static void test_balanced(void **state)
{
    /* Task ids that differ in their last characters, as real ones do. */
    size_t count[3] = {0};
    char key[80];
    for (int i = 0; i < 3000; i++) {
        snprintf(key, sizeof(key), "%064x", i);
        count[dmf_rendezvous_pick(key, nodes, NULL, 3)]++;
    }
    for (int i = 0; i < 3; i++)
        assert_true(count[i] > 850 && count[i] < 1150); /* 1000 each, give or take */
}

static void test_only_the_dead_nodes_keys_move(void **state)
{
    char key[80];
    bool usable[3] = {true, false, true};
    int moved = 0;
    for (int i = 0; i < 2000; i++) {
        snprintf(key, sizeof(key), "%064x", i * 7919);
        size_t all = dmf_rendezvous_pick(key, nodes, NULL, 3);
        size_t some = dmf_rendezvous_pick(key, nodes, usable, 3);
        assert_true(some == 0 || some == 2);
        if (all != 1)
            assert_int_equal(some, all);
        else
            moved++;
    }
    assert_true(moved > 500 && moved < 850);
}

static void test_edges(void **state)
{
    bool none[3] = {false, false, false};
    assert_int_equal(dmf_rendezvous_pick("k", nodes, none, 3), 3);
    assert_int_equal(dmf_rendezvous_pick("k", nodes, NULL, 0), 0);
    assert_int_equal(dmf_rendezvous_pick("k", nodes, NULL, 1), 0);
    /* Same inputs, same weight; the separator keeps concatenations apart. */
    assert_true(dmf_rendezvous_weight("ab", "c") == dmf_rendezvous_weight("ab", "c"));
    assert_true(dmf_rendezvous_weight("ab", "c") != dmf_rendezvous_weight("a", "bc"));
    /* Nodes one character apart get unrelated weights (the final mix). */
    uint64_t a = dmf_rendezvous_weight("task", "node1"), b = dmf_rendezvous_weight("task", "node2");
    assert_true(__builtin_popcountll(a ^ b) > 16);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_balanced),
        cmocka_unit_test(test_only_the_dead_nodes_keys_move),
        cmocka_unit_test(test_edges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
