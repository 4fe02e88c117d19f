/* Admission control (src/scheduler/admission.c): streams per host, the register bucket,
 * the seed-trigger bucket, and forgetting idle hosts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "scheduler/admission.h"

static void test_streams_per_host(void **state)
{
    struct dmf_admission a;
    dmf_admission_init(&a, &(struct dmf_admission_config){.streams_per_host = 2});
    assert_int_equal(dmf_admission_register(&a, "h", 0), DMF_ADMIT_OK);
    assert_int_equal(dmf_admission_register(&a, "h", 0), DMF_ADMIT_OK);
    assert_int_equal(dmf_admission_register(&a, "h", 0), DMF_ADMIT_STREAMS);
    assert_int_equal(dmf_admission_register(&a, "other", 0), DMF_ADMIT_OK);
    dmf_admission_stream_closed(&a, "h");
    assert_int_equal(dmf_admission_streams(&a, "h"), 1);
    assert_int_equal(dmf_admission_register(&a, "h", 0), DMF_ADMIT_OK);
    dmf_admission_free(&a);
}

static void test_register_rate(void **state)
{
    struct dmf_admission a;
    dmf_admission_init(&a, &(struct dmf_admission_config){.registers_per_sec = 10,
                                                          .register_burst = 5,
                                                          .streams_per_host = 1000});
    for (int i = 0; i < 5; i++) {
        assert_int_equal(dmf_admission_register(&a, "h", 1000), DMF_ADMIT_OK);
        dmf_admission_stream_closed(&a, "h");
    }
    assert_int_equal(dmf_admission_register(&a, "h", 1000), DMF_ADMIT_REGISTER_RATE);
    /* 10 per second: one more every 100 ms. */
    assert_int_equal(dmf_admission_register(&a, "h", 1099), DMF_ADMIT_REGISTER_RATE);
    assert_int_equal(dmf_admission_register(&a, "h", 1100), DMF_ADMIT_OK);
    assert_int_equal(dmf_admission_register(&a, "h", 1100), DMF_ADMIT_REGISTER_RATE);
    dmf_admission_free(&a);
}

#define OK DMF_ADMIT_OK

static void test_trigger_budget_and_sweep(void **state)
{
    struct dmf_admission a;
    dmf_admission_init(&a,
                       &(struct dmf_admission_config){.triggers_per_min = 60, .trigger_burst = 2});
    assert_int_equal(dmf_admission_trigger(&a, "h", 0), OK);
    assert_int_equal(dmf_admission_trigger(&a, "h", 0), OK);
    assert_int_equal(dmf_admission_trigger(&a, "h", 500), DMF_ADMIT_TRIGGER_RATE);
    assert_int_equal(dmf_admission_trigger(&a, "h", 1000), OK); /* one a second */
    assert_int_equal(dmf_admission_trigger(&a, "other", 1000), OK);
    /* Not forgotten while its bucket is short: that would hand it a fresh one. */
    assert_int_equal(dmf_admission_sweep(&a, 1500), 0);
    assert_int_equal(dmf_admission_trigger(&a, "h", 1500), DMF_ADMIT_TRIGGER_RATE);
    /* Nor while a trigger's size is outstanding. */
    assert_int_equal(dmf_admission_sweep(&a, 10000), 0);
    for (int i = 0; i < 3; i++)
        dmf_admission_trigger_sized(&a, "h", -1, 10000);
    dmf_admission_trigger_sized(&a, "other", 100, 10000);
    assert_int_equal(dmf_admission_sweep(&a, 10000), 2); /* both full again */
    assert_int_equal(a.hosts.n, 0);
    dmf_admission_free(&a);
}

static void test_trigger_bytes_budget(void **state)
{
    struct dmf_admission a;
    uint64_t hour = 3600000;
    dmf_admission_init(&a, &(struct dmf_admission_config){.trigger_burst = 100,
                                                          .trigger_bytes_per_hour = 1000,
                                                          .trigger_unsized = 2});
    assert_int_equal(dmf_admission_trigger(&a, "h", 0), OK);
    assert_int_equal(dmf_admission_trigger(&a, "h", 0), OK);
    /* Two sizes outstanding: the third waits for one of them. */
    assert_int_equal(dmf_admission_trigger(&a, "h", 0), DMF_ADMIT_TRIGGER_UNSIZED);
    dmf_admission_trigger_sized(&a, "h", 600, 0);
    assert_int_equal(dmf_admission_trigger_bytes_left(&a, "h", 0), 400);
    assert_int_equal(dmf_admission_trigger(&a, "h", 0), OK);
    dmf_admission_trigger_sized(&a, "h", 600, 0);  /* into debt */
    dmf_admission_trigger_sized(&a, "h", 5000, 0); /* at most an hour's worth */
    assert_int_equal(dmf_admission_trigger_bytes_left(&a, "h", 0), -1000);
    assert_int_equal(dmf_admission_trigger(&a, "h", hour / 2), DMF_ADMIT_TRIGGER_BYTES);
    assert_int_equal(dmf_admission_trigger(&a, "other", 0), OK); /* per host */
    /* Refilled at 1000 bytes an hour, never above 1000. */
    assert_int_equal(dmf_admission_trigger_bytes_left(&a, "h", hour + hour / 10), 100);
    assert_int_equal(dmf_admission_trigger(&a, "h", hour + hour / 10), OK);
    assert_int_equal(dmf_admission_trigger_bytes_left(&a, "h", 10 * hour), 1000);
    dmf_admission_free(&a);
}

static void test_host_table_is_bounded(void **state)
{
    struct dmf_admission a;
    dmf_admission_init(&a, &(struct dmf_admission_config){.max_hosts = 2});
    assert_int_equal(dmf_admission_register(&a, "a", 0), DMF_ADMIT_OK);
    assert_int_equal(dmf_admission_register(&a, "b", 0), DMF_ADMIT_OK);
    assert_int_equal(dmf_admission_register(&a, "c", 0), DMF_ADMIT_HOSTS);
    assert_int_equal(dmf_admission_trigger(&a, "c", 0), DMF_ADMIT_HOSTS);
    dmf_admission_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_streams_per_host),
        cmocka_unit_test(test_register_rate),
        cmocka_unit_test(test_trigger_budget_and_sweep),
        cmocka_unit_test(test_trigger_bytes_budget),
        cmocka_unit_test(test_host_table_is_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
