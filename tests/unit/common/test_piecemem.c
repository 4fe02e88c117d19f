/* Counted piece buffers (src/common/piecemem.c): what is held is exactly what was
 * allocated and not freed, whoever frees it; a transfer may start when its piece fits the
 * limit, or when nothing is held (nothing but the caller's own buffer, for a stream). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/metrics.h"
#include "common/piecemem.h"

static void test_accounting(void **state)
{
    dmf_piecemem_set_limit(0);
    uint64_t base = dmf_piecemem_used();
    uint8_t *a = dmf_piecemem_alloc(1000);
    uint8_t *b = dmf_piecemem_alloc(0);
    assert_non_null(a);
    assert_non_null(b);
    memset(a, 0xAB, 1000);
    assert_int_equal(dmf_piecemem_used() - base, 1000);
    a = dmf_piecemem_realloc(a, 4000); /* grows, keeps the bytes */
    assert_int_equal(a[999], 0xAB);
    assert_int_equal(dmf_piecemem_used() - base, 4000);
    a = dmf_piecemem_realloc(a, 10);
    assert_int_equal(dmf_piecemem_used() - base, 10);
    uint8_t *c = dmf_piecemem_realloc(NULL, 7);
    assert_int_equal(dmf_piecemem_used() - base, 17);
    assert_int_equal(dmf_metric_get(&dmf_m_piecemem_bytes), (int64_t)dmf_piecemem_used());
    dmf_piecemem_free(a);
    dmf_piecemem_free(b);
    dmf_piecemem_free(c);
    dmf_piecemem_free(NULL);
    assert_int_equal(dmf_piecemem_used(), base);
}

static void count_wake(void *arg)
{
    ++*(int *)arg;
}

static void test_may_start(void **state)
{
    dmf_piecemem_set_limit(0);
    int wakes = 0;
    dmf_piecemem_set_wake(count_wake, &wakes);
    assert_true(dmf_piecemem_may_start(SIZE_MAX / 2)); /* no bound */
    dmf_piecemem_set_limit(100);
    assert_int_equal(dmf_piecemem_limit(), 100);
    assert_true(dmf_piecemem_may_start(1000)); /* nothing held: even a piece over the bound */
    uint8_t *a = dmf_piecemem_alloc(60), *b = dmf_piecemem_alloc(20);
    assert_true(dmf_piecemem_may_start(20)); /* exactly fits */
    int64_t waits = dmf_metric_get(&dmf_m_piecemem_waits);
    assert_false(dmf_piecemem_may_start(21));
    assert_false(dmf_piecemem_may_start(50));
    assert_int_equal(dmf_metric_get(&dmf_m_piecemem_waits), waits + 2);
    assert_int_equal(wakes, 0);
    /* A free after refusals wakes the waiters once; another free without a refusal does not. */
    dmf_piecemem_free(b);
    assert_int_equal(wakes, 1);
    uint8_t *c = dmf_piecemem_alloc(10);
    dmf_piecemem_free(c);
    assert_int_equal(wakes, 1);
    assert_true(dmf_piecemem_may_start(40));
    assert_false(dmf_piecemem_may_start(41));
    dmf_piecemem_free(a);
    assert_int_equal(wakes, 2);
    dmf_piecemem_set_wake(NULL, NULL);
    dmf_piecemem_set_limit(0);
}

/* A stream going on into its next piece: its own buffer never holds it back, others' do,
 * and it is woken by the free it waits for even when that leaves it above the limit. */
static void test_may_grow(void **state)
{
    int wakes = 0;
    dmf_piecemem_set_wake(count_wake, &wakes);
    dmf_piecemem_set_limit(100);
    uint8_t *own = dmf_piecemem_alloc(80);
    assert_true(dmf_piecemem_may_grow(20, 80)); /* fits */
    assert_true(dmf_piecemem_may_grow(80, 80)); /* over, but only its own is held */
    assert_false(dmf_piecemem_may_start(80));   /* a transfer holding nothing: over */
    dmf_piecemem_set_limit(50);                 /* its own buffer alone is over the limit */
    assert_true(dmf_piecemem_may_grow(80, 80));
    uint8_t *other = dmf_piecemem_alloc(30);
    int64_t waits = dmf_metric_get(&dmf_m_piecemem_waits);
    assert_false(dmf_piecemem_may_grow(80, 80)); /* another's buffer is held too */
    assert_int_equal(dmf_metric_get(&dmf_m_piecemem_waits), waits + 1);
    int before = wakes;
    dmf_piecemem_free(other); /* 80 still held, over the limit: a wake all the same */
    assert_int_equal(wakes, before + 1);
    assert_true(dmf_piecemem_may_grow(80, 80));
    dmf_piecemem_free(own);
    dmf_piecemem_set_wake(NULL, NULL);
    dmf_piecemem_set_limit(0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accounting),
        cmocka_unit_test(test_may_start),
        cmocka_unit_test(test_may_grow),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
