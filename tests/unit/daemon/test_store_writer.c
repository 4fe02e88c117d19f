/* Unit tests for src/daemon/store_writer.c: rows are committed in queue order and in
 * batches, everything queued lands at shutdown, a flush commits at once, and a full queue
 * refuses a row (which is then not recorded) rather than block the loop for long. The
 * commit callback here records what it is given, as the store's would commit it. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/util.h"
#include "daemon/store_writer.h"

#define ID_A "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define ID_B "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"

/* What the writer committed, batch by batch. */
struct sink {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    uint32_t rows[8192];
    size_t nrows;
    size_t batches, largest;
    bool gate_closed; /* commit waits while true */
    bool in_commit;
    int fail;                   /* return this (negative) instead of committing */
    int fail_times;             /* ... this many times (-1: always) */
    uint64_t first_ms, last_ms; /* when the first and the last batch were committed */
};

static int sink_commit(void *arg, const struct dmf_piece_row *rows, size_t n)
{
    struct sink *k = arg;
    pthread_mutex_lock(&k->lock);
    k->in_commit = true;
    pthread_cond_broadcast(&k->changed);
    while (k->gate_closed)
        pthread_cond_wait(&k->changed, &k->lock);
    int ret = k->fail_times != 0 ? k->fail : 0;
    if (k->fail_times > 0)
        k->fail_times--;
    if (ret == 0) {
        k->last_ms = dmf_now_ms();
        if (k->batches == 0)
            k->first_ms = k->last_ms;
        for (size_t i = 0; i < n && k->nrows < 8192; i++)
            k->rows[k->nrows++] = rows[i].n;
        k->batches++;
        k->largest = DMF_MAX(k->largest, n);
        ret = (int)n;
    }
    k->in_commit = false;
    pthread_cond_broadcast(&k->changed);
    pthread_mutex_unlock(&k->lock);
    return ret;
}

static void sink_init(struct sink *k)
{
    memset(k, 0, sizeof(*k));
    pthread_mutex_init(&k->lock, NULL);
    pthread_cond_init(&k->changed, NULL);
}

static size_t sink_rows(struct sink *k)
{
    pthread_mutex_lock(&k->lock);
    size_t n = k->nrows;
    pthread_mutex_unlock(&k->lock);
    return n;
}

static struct dmf_piece_row row_of(const char *id, uint32_t n)
{
    struct dmf_piece_row r = {.n = n};
    snprintf(r.id, sizeof(r.id), "%s", id);
    memset(r.digest, (int)(n & 0xff), sizeof(r.digest));
    return r;
}

static void test_due_rule(void **state)
{
    struct dmf_store_writer_config c = DMF_STORE_WRITER_DEFAULTS;
    assert_false(dmf_store_batch_due(&c, 0, 0, false));
    assert_false(dmf_store_batch_due(&c, 0, 1000, true)); /* nothing to commit */
    assert_false(dmf_store_batch_due(&c, 10, 49, false));
    assert_true(dmf_store_batch_due(&c, 10, 50, false)); /* the oldest waited long enough */
    assert_true(dmf_store_batch_due(&c, 256, 0, false)); /* a full batch */
    assert_true(dmf_store_batch_due(&c, 1, 0, true));    /* a flush, or stopping */
}

/* Rows land in the order they were queued, batch after batch, none larger than allowed. */
static void test_order_and_batches(void **state)
{
    struct sink k;
    sink_init(&k);
    struct dmf_store_writer_config c = {.max_batch = 64, .max_delay_ms = 5, .capacity = 8192};
    dmf_store_writer_t *w = dmf_store_writer_new(&c, sink_commit, &k);
    for (uint32_t i = 0; i < 5000; i++) {
        struct dmf_piece_row r = row_of(ID_A, i);
        assert_int_equal(dmf_store_writer_put(w, &r), 0);
    }
    dmf_store_writer_free(w);
    assert_int_equal(k.nrows, 5000);
    for (uint32_t i = 0; i < 5000; i++)
        assert_int_equal(k.rows[i], i);
    assert_true(k.largest <= 64);
    assert_true(k.batches >= 5000 / 64);
}

/* A row that comes to an idle writer is committed at once; rows that follow soon after
 * wait for the next batch, max_delay_ms later, and go in it together. Shutdown commits
 * what is queued without waiting for the delay. */
static void test_delay_and_flush_on_shutdown(void **state)
{
    struct sink k;
    sink_init(&k);
    struct dmf_store_writer_config c = {.max_delay_ms = 50};
    dmf_store_writer_t *w = dmf_store_writer_new(&c, sink_commit, &k);
    uint64_t t0 = dmf_now_ms();
    struct dmf_piece_row r = row_of(ID_A, 0);
    assert_int_equal(dmf_store_writer_put(w, &r), 0);
    while (sink_rows(&k) < 1 && dmf_now_ms() - t0 < 5000)
        usleep(500);
    assert_int_equal(sink_rows(&k), 1);
    for (uint32_t i = 1; i < 4; i++) {
        r = row_of(ID_A, i);
        assert_int_equal(dmf_store_writer_put(w, &r), 0);
    }
    while (sink_rows(&k) < 4 && dmf_now_ms() - t0 < 5000)
        usleep(1000);
    assert_int_equal(sink_rows(&k), 4);
    assert_int_equal(k.batches, 2);            /* the three later rows went together */
    assert_true(k.last_ms - k.first_ms >= 45); /* a batch at most every 50 ms */
    assert_int_equal(dmf_store_writer_depth(w), 0);
    dmf_store_writer_free(w);

    /* A long delay: free() commits at once. */
    sink_init(&k);
    c.max_delay_ms = 60000;
    w = dmf_store_writer_new(&c, sink_commit, &k);
    for (uint32_t i = 0; i < 10; i++) {
        struct dmf_piece_row r = row_of(ID_B, i);
        assert_int_equal(dmf_store_writer_put(w, &r), 0);
    }
    assert_true(dmf_store_writer_holds(w, ID_B));
    assert_false(dmf_store_writer_holds(w, ID_A));
    t0 = dmf_now_ms();
    dmf_store_writer_free(w);
    assert_true(dmf_now_ms() - t0 < 5000);
    assert_int_equal(k.nrows, 10);
}

static void test_flush_commits_now(void **state)
{
    struct sink k;
    sink_init(&k);
    struct dmf_store_writer_config c = {.max_delay_ms = 60000};
    dmf_store_writer_t *w = dmf_store_writer_new(&c, sink_commit, &k);
    /* The first row reaches an idle writer and is committed at once; the next ones wait
     * for the next batch, a minute away. */
    struct dmf_piece_row r = row_of(ID_A, 0);
    assert_int_equal(dmf_store_writer_put(w, &r), 0);
    uint64_t t0 = dmf_now_ms();
    while (sink_rows(&k) < 1 && dmf_now_ms() - t0 < 5000)
        usleep(500);
    assert_int_equal(sink_rows(&k), 1);
    for (uint32_t i = 1; i < 6; i++) {
        r = row_of(ID_A, i);
        assert_int_equal(dmf_store_writer_put(w, &r), 0);
    }
    assert_int_equal(dmf_store_writer_depth(w), 5);
    dmf_store_writer_flush(w);
    assert_int_equal(sink_rows(&k), 6);
    assert_int_equal(dmf_store_writer_depth(w), 0);
    assert_false(dmf_store_writer_holds(w, ID_A));
    dmf_store_writer_flush(w); /* nothing queued: returns at once */
    dmf_store_writer_free(w);
}

/* The writer is stuck in a commit (a slow disk): the queue fills, a put waits full_wait_ms
 * and is refused; that row is never recorded, the others all are, in order. */
static void test_full_queue_refuses_after_a_wait(void **state)
{
    struct sink k;
    sink_init(&k);
    k.gate_closed = true;
    struct dmf_store_writer_config c = {
        .max_batch = 2, .max_delay_ms = 1, .capacity = 4, .full_wait_ms = 30};
    dmf_store_writer_t *w = dmf_store_writer_new(&c, sink_commit, &k);
    int64_t full0 = dmf_metric_get(&dmf_m_store_rows_full);
    struct dmf_piece_row r = row_of(ID_A, 0);
    assert_int_equal(dmf_store_writer_put(w, &r), 0);
    pthread_mutex_lock(&k.lock);
    while (!k.in_commit) /* row 0 taken into a batch: the writer now waits at the gate */
        pthread_cond_wait(&k.changed, &k.lock);
    pthread_mutex_unlock(&k.lock);
    for (uint32_t i = 1; i <= 4; i++) {
        r = row_of(ID_A, i);
        assert_int_equal(dmf_store_writer_put(w, &r), 0);
    }
    r = row_of(ID_A, 99);
    uint64_t t0 = dmf_now_ms();
    assert_int_equal(dmf_store_writer_put(w, &r), -EAGAIN);
    assert_true(dmf_now_ms() - t0 >= 25); /* it waited for room, briefly */
    assert_true(dmf_now_ms() - t0 < 2000);
    assert_int_equal(dmf_metric_get(&dmf_m_store_rows_full) - full0, 1);
    assert_int_equal(dmf_store_writer_depth(w), 5);

    pthread_mutex_lock(&k.lock);
    k.gate_closed = false;
    pthread_cond_broadcast(&k.changed);
    pthread_mutex_unlock(&k.lock);
    dmf_store_writer_free(w);
    assert_int_equal(k.nrows, 5);
    for (uint32_t i = 0; i < 5; i++)
        assert_int_equal(k.rows[i], i);
}

/* A failed batch is not recorded and counted; the writer goes on with the next rows. */
static void test_failed_batch_is_not_recorded(void **state)
{
    struct sink k;
    sink_init(&k);
    k.fail = -EIO;
    k.fail_times = -1;
    int64_t failed0 = dmf_metric_get(&dmf_m_store_rows_failed);
    struct dmf_store_writer_config c = {.retries = 0};
    dmf_store_writer_t *w = dmf_store_writer_new(&c, sink_commit, &k);
    for (uint32_t i = 0; i < 3; i++) {
        struct dmf_piece_row r = row_of(ID_A, i);
        assert_int_equal(dmf_store_writer_put(w, &r), 0);
    }
    dmf_store_writer_flush(w);
    assert_int_equal(dmf_metric_get(&dmf_m_store_rows_failed) - failed0, 3);
    pthread_mutex_lock(&k.lock);
    k.fail_times = 0;
    pthread_mutex_unlock(&k.lock);
    struct dmf_piece_row r = row_of(ID_A, 7);
    assert_int_equal(dmf_store_writer_put(w, &r), 0);
    dmf_store_writer_free(w);
    assert_int_equal(k.nrows, 1);
    assert_int_equal(k.rows[0], 7);
}

/* A batch that fails a few times (a full disk that gets room) is tried again and lands. */
static void test_failed_batch_is_tried_again(void **state)
{
    struct sink k;
    sink_init(&k);
    k.fail = -ENOSPC;
    k.fail_times = 2;
    int64_t failed0 = dmf_metric_get(&dmf_m_store_rows_failed);
    struct dmf_store_writer_config c = {.retry_ms = 5, .retries = 4};
    dmf_store_writer_t *w = dmf_store_writer_new(&c, sink_commit, &k);
    for (uint32_t i = 0; i < 3; i++) {
        struct dmf_piece_row r = row_of(ID_A, i);
        assert_int_equal(dmf_store_writer_put(w, &r), 0);
    }
    dmf_store_writer_flush(w); /* returns while the batch waits to be tried again */
    dmf_store_writer_free(w);  /* waits for the tries */
    assert_int_equal(k.nrows, 3);
    assert_int_equal(dmf_metric_get(&dmf_m_store_rows_failed) - failed0, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_due_rule),
        cmocka_unit_test(test_order_and_batches),
        cmocka_unit_test(test_delay_and_flush_on_shutdown),
        cmocka_unit_test(test_flush_commits_now),
        cmocka_unit_test(test_full_queue_refuses_after_a_wait),
        cmocka_unit_test(test_failed_batch_is_not_recorded),
        cmocka_unit_test(test_failed_batch_is_tried_again),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
