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
#include <unistd.h>

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

/* Long jobs that record how many of them run at once, and in which order they start. */
struct long_job {
    pthread_mutex_t *lock;
    int *running, *max_running, *started, *order;
    int index;
    int *done_count;
};

static void long_work(void *arg)
{
    struct long_job *j = arg;
    pthread_mutex_lock(j->lock);
    j->order[(*j->started)++] = j->index;
    if (++*j->running > *j->max_running)
        *j->max_running = *j->running;
    pthread_mutex_unlock(j->lock);
    usleep(20000);
    pthread_mutex_lock(j->lock);
    --*j->running;
    pthread_mutex_unlock(j->lock);
}

static void long_done(void *arg)
{
    struct long_job *j = arg;
    (*j->done_count)++;
}

static void test_long_jobs_are_bounded_and_in_order(void **state)
{
    loop_thread = pthread_self();
    struct event_base *base = dmf_rpc_event_base_new();
    dmf_workq_t *q = dmf_workq_new(base, 3); /* at most 2 long jobs at once */
    pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    int running = 0, max_running = 0, started = 0, order[8], done_count = 0;
    struct long_job jobs[8];
    for (int i = 0; i < 8; i++) {
        jobs[i] = (struct long_job){&lock, &running, &max_running, &started, order, i, &done_count};
        dmf_workq_submit_long(q, long_work, long_done, &jobs[i]);
    }
    dmf_workq_free(q);
    assert_int_equal(done_count, 8);
    assert_int_equal(max_running, 2);

    /* One at a time: they start in the order they came. */
    q = dmf_workq_new(base, 3);
    dmf_workq_set_max_long(q, 1);
    running = max_running = started = done_count = 0;
    for (int i = 0; i < 8; i++)
        dmf_workq_submit_long(q, long_work, long_done, &jobs[i]);
    dmf_workq_free(q);
    assert_int_equal(done_count, 8);
    assert_int_equal(max_running, 1);
    for (int i = 0; i < 8; i++)
        assert_int_equal(order[i], i);
    event_base_free(base);
}

/* A short job queued behind long ones that fill their bound still runs at once. */
static void test_short_jobs_pass_long_ones(void **state)
{
    loop_thread = pthread_self();
    struct event_base *base = dmf_rpc_event_base_new();
    dmf_workq_t *q = dmf_workq_new(base, 2);
    dmf_workq_set_max_long(q, 5); /* clamped to 1: one worker stays for short jobs */
    pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    int running = 0, max_running = 0, started = 0, order[4], long_done_count = 0;
    struct long_job jobs[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] =
            (struct long_job){&lock, &running, &max_running, &started, order, i, &long_done_count};
        dmf_workq_submit_long(q, long_work, long_done, &jobs[i]);
    }
    struct job shorts[10];
    int done_count = 0;
    for (int i = 0; i < 10; i++) {
        shorts[i] = (struct job){.value = i, .done_count = &done_count};
        dmf_workq_submit(q, work, done, &shorts[i]);
    }
    uint64_t t0 = dmf_now_ms(), deadline = t0 + 10000;
    while (done_count < 10 && dmf_now_ms() < deadline)
        event_base_loop(base, EVLOOP_ONCE);
    assert_int_equal(done_count, 10);
    /* The four long jobs take 80 ms one after another; the short ones did not wait. */
    assert_true(long_done_count < 4);
    assert_true(dmf_workq_long_running(q) <= 1);
    dmf_workq_free(q);
    assert_int_equal(long_done_count, 4);
    assert_int_equal(max_running, 1);
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jobs_run_off_the_loop_and_finish_on_it),
        cmocka_unit_test(test_free_drains_queued_jobs),
        cmocka_unit_test(test_long_jobs_are_bounded_and_in_order),
        cmocka_unit_test(test_short_jobs_pass_long_ones),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
