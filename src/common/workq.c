#include "common/workq.h"

#include <event2/event.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "common/util.h"

struct job {
    void (*work)(void *);
    void (*done)(void *);
    void *arg;
    bool is_long;
    struct job *next;
};

/* A FIFO of jobs. */
struct jobq {
    struct job *head, *tail;
};

struct dmf_workq {
    pthread_mutex_t lock;
    pthread_cond_t cond;    /* a job may be taken, or stopping */
    pthread_cond_t drained; /* a job moved to finished */
    struct jobq todo;       /* short jobs */
    struct jobq todo_long;  /* long jobs, waiting for a slot */
    struct job *finished;   /* worked, waiting for done() on the loop */
    size_t pending;         /* loop thread only */
    size_t working;         /* jobs taken by a worker and not yet finished */
    size_t long_running;    /* long jobs among them */
    size_t max_long;
    bool stopping;
    struct event *wake;
    pthread_t *threads;
    int nthreads;
};

static void jobq_push(struct jobq *jq, struct job *j)
{
    j->next = NULL;
    if (jq->tail)
        jq->tail->next = j;
    else
        jq->head = j;
    jq->tail = j;
}

static struct job *jobq_pop(struct jobq *jq)
{
    struct job *j = jq->head;
    if (j != NULL) {
        jq->head = j->next;
        if (jq->head == NULL)
            jq->tail = NULL;
    }
    return j;
}

/* The job a worker takes now (under the lock): a waiting long one while the bound allows,
 * else a short one; NULL when there is none it may take. */
static struct job *take(dmf_workq_t *q)
{
    if (q->todo_long.head != NULL && q->long_running < q->max_long) {
        q->long_running++;
        return jobq_pop(&q->todo_long);
    }
    return jobq_pop(&q->todo);
}

static void *worker_main(void *arg)
{
    dmf_workq_t *q = arg;
    pthread_mutex_lock(&q->lock);
    for (;;) {
        struct job *j;
        while ((j = take(q)) == NULL && !q->stopping)
            pthread_cond_wait(&q->cond, &q->lock);
        if (j == NULL)
            break;
        q->working++;
        pthread_mutex_unlock(&q->lock);
        j->work(j->arg);
        pthread_mutex_lock(&q->lock);
        q->working--;
        if (j->is_long) {
            q->long_running--;
            if (q->todo_long.head != NULL)
                pthread_cond_signal(&q->cond); /* the next long job may start */
        }
        j->next = q->finished;
        q->finished = j;
        pthread_cond_broadcast(&q->drained);
        event_active(q->wake, 0, 0);
    }
    pthread_mutex_unlock(&q->lock);
    return NULL;
}

static void run_finished(dmf_workq_t *q)
{
    pthread_mutex_lock(&q->lock);
    struct job *j = q->finished;
    q->finished = NULL;
    pthread_mutex_unlock(&q->lock);
    while (j) {
        struct job *next = j->next;
        q->pending--;
        j->done(j->arg);
        free(j);
        j = next;
    }
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    run_finished(arg);
}

dmf_workq_t *dmf_workq_new(struct event_base *base, int nthreads)
{
    dmf_workq_t *q = dmf_xcalloc(1, sizeof(*q));
    pthread_mutex_init(&q->lock, NULL);
    pthread_cond_init(&q->cond, NULL);
    pthread_cond_init(&q->drained, NULL);
    q->wake = event_new(base, -1, 0, on_wake, q);
    q->nthreads = nthreads < 1 ? 1 : nthreads;
    q->max_long = q->nthreads > 1 ? (size_t)q->nthreads - 1 : 1;
    q->threads = dmf_xcalloc((size_t)q->nthreads, sizeof(*q->threads));
    for (int i = 0; i < q->nthreads; i++)
        if (pthread_create(&q->threads[i], NULL, worker_main, q) != 0)
            abort();
    return q;
}

void dmf_workq_set_max_long(dmf_workq_t *q, int max_long)
{
    size_t top = q->nthreads > 1 ? (size_t)q->nthreads - 1 : 1;
    pthread_mutex_lock(&q->lock);
    q->max_long = max_long < 1 ? 1 : DMF_MIN((size_t)max_long, top);
    pthread_cond_broadcast(&q->cond);
    pthread_mutex_unlock(&q->lock);
}

static void submit(dmf_workq_t *q, void (*work)(void *), void (*done)(void *), void *arg,
                   bool is_long)
{
    struct job *j = dmf_xmalloc(sizeof(*j));
    j->work = work;
    j->done = done;
    j->arg = arg;
    j->is_long = is_long;
    q->pending++;
    pthread_mutex_lock(&q->lock);
    jobq_push(is_long ? &q->todo_long : &q->todo, j);
    /* Any worker takes a short job; for a long one every waiting worker looks (the one
     * woken might not be allowed it). */
    if (is_long)
        pthread_cond_broadcast(&q->cond);
    else
        pthread_cond_signal(&q->cond);
    pthread_mutex_unlock(&q->lock);
}

void dmf_workq_submit(dmf_workq_t *q, void (*work)(void *), void (*done)(void *), void *arg)
{
    submit(q, work, done, arg, false);
}

void dmf_workq_submit_long(dmf_workq_t *q, void (*work)(void *), void (*done)(void *), void *arg)
{
    submit(q, work, done, arg, true);
}

size_t dmf_workq_long_running(dmf_workq_t *q)
{
    pthread_mutex_lock(&q->lock);
    size_t n = q->long_running;
    pthread_mutex_unlock(&q->lock);
    return n;
}

size_t dmf_workq_pending(const dmf_workq_t *q)
{
    return q->pending;
}

void dmf_workq_free(dmf_workq_t *q)
{
    if (q == NULL)
        return;
    /* Let the workers finish everything queued, then stop them. */
    pthread_mutex_lock(&q->lock);
    while (q->todo.head != NULL || q->todo_long.head != NULL || q->working > 0)
        pthread_cond_wait(&q->drained, &q->lock);
    q->stopping = true;
    pthread_cond_broadcast(&q->cond);
    pthread_mutex_unlock(&q->lock);
    for (int i = 0; i < q->nthreads; i++)
        pthread_join(q->threads[i], NULL);
    run_finished(q);
    /* A done() above may have queued more: with the workers gone, they run here. */
    for (;;) {
        pthread_mutex_lock(&q->lock);
        struct job *j = jobq_pop(&q->todo);
        if (j == NULL)
            j = jobq_pop(&q->todo_long);
        pthread_mutex_unlock(&q->lock);
        if (j == NULL)
            break;
        j->work(j->arg);
        q->pending--;
        j->done(j->arg);
        free(j);
    }
    event_free(q->wake);
    pthread_mutex_destroy(&q->lock);
    pthread_cond_destroy(&q->cond);
    pthread_cond_destroy(&q->drained);
    free(q->threads);
    free(q);
}
