/* The worker pool: every job's work runs off the loop thread, every done() on it, and
 * freeing the pool drains what is queued. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>
#include <event2/event.h>
#include <pthread.h>

#include "common/rpc.h"
#include "common/util.h"
#include "common/workq.h"

static pthread_t loop_thread;

struct job {
    int value;
    int result;
    bool worked_off_loop;
    int *done_count;
    bool done_on_loop;
};

static void work(void *arg)
{
    struct job *j = arg;
    j->worked_off_loop = !pthread_equal(pthread_self(), loop_thread);
    j->result = j->value * 2;
}

static void done(void *arg)
{
    struct job *j = arg;
    j->done_on_loop = pthread_equal(pthread_self(), loop_thread);
    (*j->done_count)++;
}

static void test_jobs_run_off_the_loop_and_finish_on_it(void **state)
{
    loop_thread = pthread_self();
    struct event_base *base = dmf_rpc_event_base_new();
    dmf_workq_t *q = dmf_workq_new(base, 2);
    struct job jobs[100];
    int done_count = 0;
    for (int i = 0; i < 100; i++) {
        jobs[i] = (struct job){.value = i, .done_count = &done_count};
        dmf_workq_submit(q, work, done, &jobs[i]);
    }
    assert_int_equal(dmf_workq_pending(q), 100);
    uint64_t deadline = dmf_now_ms() + 10000;
    while (done_count < 100 && dmf_now_ms() < deadline)
        event_base_loop(base, EVLOOP_ONCE);
    assert_int_equal(done_count, 100);
    assert_int_equal(dmf_workq_pending(q), 0);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(jobs[i].result, 2 * i);
        assert_true(jobs[i].worked_off_loop);
        assert_true(jobs[i].done_on_loop);
    }
    dmf_workq_free(q);
    event_base_free(base);
}

static void test_free_drains_queued_jobs(void **state)
{
    loop_thread = pthread_self();
    struct event_base *base = dmf_rpc_event_base_new();
    dmf_workq_t *q = dmf_workq_new(base, 1);
    struct job jobs[20];
    int done_count = 0;
    for (int i = 0; i < 20; i++) {
        jobs[i] = (struct job){.value = i, .done_count = &done_count};
        dmf_workq_submit(q, work, done, &jobs[i]);
    }
    dmf_workq_free(q); /* no loop pass: free itself must finish them */
    assert_int_equal(done_count, 20);
    for (int i = 0; i < 20; i++)
        assert_int_equal(jobs[i].result, 2 * i);
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jobs_run_off_the_loop_and_finish_on_it),
        cmocka_unit_test(test_free_drains_queued_jobs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
