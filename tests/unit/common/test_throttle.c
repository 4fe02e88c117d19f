/* The host's throttle on a real event loop (src/common/throttle.c): transfers that always
 * have bytes to move, as libcurl's would, share the limits by task, not by connection. */
#include <event2/event.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <cmocka.h>

#include "common/throttle.h"

#define CHUNK (16 * 1024)

struct xfer {
    dmf_throttle_t *t;
    struct dmf_throttle_wait w;
    struct event *go;
    uint64_t *bytes; /* its task's counter */
};

/* Takes chunks while the throttle lets it; waits for its wake otherwise. */
static void xfer_run(evutil_socket_t fd, short what, void *arg)
{
    struct xfer *x = arg;
    for (int i = 0; i < 1000; i++) {
        if (dmf_throttle_take(x->t, &x->w, CHUNK) != 0)
            return;
        *x->bytes += CHUNK;
    }
    event_active(x->go, 0, 0); /* let the others run too */
}

static void on_wake(void *arg)
{
    struct xfer *x = arg;
    event_active(x->go, 0, 0);
}

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
    event_base_loopbreak(arg);
}

/* Runs nx transfers for ms milliseconds; xfer i belongs to task task_of[i]. */
static void run(dmf_throttle_t *t, struct event_base *base, struct dmf_flow **flows,
                const int *task_of, int nx, uint64_t *bytes, int ms)
{
    struct xfer x[16];
    for (int i = 0; i < nx; i++) {
        x[i] = (struct xfer){.t = t, .bytes = &bytes[task_of[i]]};
        x[i].w.wake = on_wake;
        x[i].w.arg = &x[i];
        x[i].w.flow = flows[task_of[i]];
        x[i].w.charge = DMF_CHARGE_DOWNLOAD;
        x[i].go = event_new(base, -1, 0, xfer_run, &x[i]);
        event_active(x[i].go, 0, 0);
    }
    struct event *stop = evtimer_new(base, on_stop, base);
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(stop, &tv);
    event_base_dispatch(base);
    for (int i = 0; i < nx; i++) {
        dmf_throttle_cancel(t, &x[i].w);
        event_free(x[i].go);
    }
    event_free(stop);
}

static void test_shared_by_task_not_by_connection(void **state)
{
    struct event_base *base = event_base_new();
    dmf_throttle_t *t = dmf_throttle_new(base);
    dmf_throttle_set(t, DMF_LIMIT_DOWNLOAD, 4 << 20);
    struct dmf_flow *f[2] = {dmf_flow_new(t, 0, DMF_PRIORITY_NORMAL),
                             dmf_flow_new(t, 0, DMF_PRIORITY_NORMAL)};
    /* Task 0 has one connection, task 1 has five. */
    const int task_of[] = {0, 1, 1, 1, 1, 1};
    uint64_t bytes[2] = {0, 0};
    run(t, base, f, task_of, 6, bytes, 1000);
    uint64_t total = bytes[0] + bytes[1];
    /* 1 s at 4 MiB/s, starting empty: at most the rate and a chunk a connection; a loop
     * that runs late on a loaded machine may lose tokens, so only a loose lower bound. */
    assert_true(total <= (4u << 20) + 6 * CHUNK);
    assert_true(total >= (2u << 20));
    assert_true(bytes[0] * 100 >= total * 40 && bytes[0] * 100 <= total * 60);
    dmf_flow_unref(f[0]);
    dmf_flow_unref(f[1]);
    dmf_throttle_free(t);
    event_base_free(base);
}

static void test_priority_and_own_limit(void **state)
{
    struct event_base *base = event_base_new();
    dmf_throttle_t *t = dmf_throttle_new(base);
    dmf_throttle_set(t, DMF_LIMIT_DOWNLOAD, 4 << 20);
    /* Foreground against background: 16 to 1, and the background still moves. A third
     * task limited to 256 KiB/s takes that and leaves the others the rest. */
    struct dmf_flow *f[3] = {dmf_flow_new(t, 0, DMF_PRIORITY_FOREGROUND),
                             dmf_flow_new(t, 0, DMF_PRIORITY_BACKGROUND),
                             dmf_flow_new(t, 256 << 10, DMF_PRIORITY_FOREGROUND)};
    const int task_of[] = {0, 1, 2};
    uint64_t bytes[3] = {0, 0, 0};
    run(t, base, f, task_of, 3, bytes, 1000);
    uint64_t shared = bytes[0] + bytes[1];
    assert_true(bytes[0] * 100 >= shared * 85);
    assert_true(bytes[1] > 0);
    assert_true(bytes[2] <= (256u << 10) + 4096 + CHUNK);
    assert_true(bytes[2] >= (128u << 10));
    for (int i = 0; i < 3; i++)
        dmf_flow_unref(f[i]);
    dmf_throttle_free(t);
    event_base_free(base);
}

static void count_wake(void *arg)
{
    (*(int *)arg)++;
}

static void test_unlimited_never_waits_and_a_lifted_limit_wakes(void **state)
{
    struct event_base *base = event_base_new();
    dmf_throttle_t *t = dmf_throttle_new(base);
    int woken = 0;
    struct dmf_throttle_wait w = {.wake = count_wake, .arg = &woken};
    w.charge = DMF_CHARGE_DOWNLOAD | DMF_CHARGE_ORIGIN;
    for (int i = 0; i < 10000; i++)
        assert_int_equal(dmf_throttle_take(t, &w, 1 << 20), 0);
    /* Limited: a take waits once the bucket is in debt (the first may find a token that
     * arrived since the limit was set, on a slow machine) ... */
    dmf_throttle_set(t, DMF_LIMIT_ORIGIN, 1 << 20);
    assert_int_equal(dmf_throttle_get(t, DMF_LIMIT_ORIGIN), 1 << 20);
    if (dmf_throttle_take(t, &w, 1 << 20) == 0)
        assert_int_equal(dmf_throttle_take(t, &w, 1 << 20), 1);
    assert_true(w.queued);
    /* ... and lifting the limit lets it go at once: woken, and its next take passes. */
    dmf_throttle_set(t, DMF_LIMIT_ORIGIN, 0);
    assert_int_equal(woken, 1);
    assert_false(w.queued);
    assert_int_equal(dmf_throttle_take(t, &w, 1 << 20), 0);
    /* Cancelled while waiting: never woken. */
    dmf_throttle_set(t, DMF_LIMIT_DOWNLOAD, 64 << 10);
    if (dmf_throttle_take(t, &w, 1 << 20) == 0)
        assert_int_equal(dmf_throttle_take(t, &w, 1 << 20), 1);
    dmf_throttle_cancel(t, &w);
    assert_false(w.queued);
    dmf_throttle_set(t, DMF_LIMIT_DOWNLOAD, 0);
    assert_int_equal(woken, 1);
    dmf_throttle_free(t);
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shared_by_task_not_by_connection),
        cmocka_unit_test(test_priority_and_own_limit),
        cmocka_unit_test(test_unlimited_never_waits_and_a_lifted_limit_wakes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
