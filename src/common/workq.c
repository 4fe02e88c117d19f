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
    struct job *next;
};

struct dmf_workq {
    pthread_mutex_t lock;
    pthread_cond_t cond;    /* todo has a job, or stopping */
    pthread_cond_t drained; /* a job moved to finished */
    struct job *todo, *todo_tail;
    struct job *finished; /* worked, waiting for done() on the loop */
    size_t pending;       /* loop thread only */
    size_t working;       /* jobs taken by a worker and not yet finished */
    bool stopping;
    struct event *wake;
    pthread_t *threads;
    int nthreads;
};

static void *worker_main(void *arg)
{
    dmf_workq_t *q = arg;
    pthread_mutex_lock(&q->lock);
    for (;;) {
        while (q->todo == NULL && !q->stopping)
            pthread_cond_wait(&q->cond, &q->lock);
        if (q->todo == NULL)
            break;
        struct job *j = q->todo;
        q->todo = j->next;
        if (q->todo == NULL)
            q->todo_tail = NULL;
        q->working++;
        pthread_mutex_unlock(&q->lock);
        j->work(j->arg);
        pthread_mutex_lock(&q->lock);
        q->working--;
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
    q->threads = dmf_xcalloc((size_t)q->nthreads, sizeof(*q->threads));
    for (int i = 0; i < q->nthreads; i++)
        if (pthread_create(&q->threads[i], NULL, worker_main, q) != 0)
            abort();
    return q;
}

void dmf_workq_submit(dmf_workq_t *q, void (*work)(void *), void (*done)(void *), void *arg)
{
    struct job *j = dmf_xmalloc(sizeof(*j));
    j->work = work;
    j->done = done;
    j->arg = arg;
    j->next = NULL;
    q->pending++;
    pthread_mutex_lock(&q->lock);
    if (q->todo_tail)
        q->todo_tail->next = j;
    else
        q->todo = j;
    q->todo_tail = j;
    pthread_cond_signal(&q->cond);
    pthread_mutex_unlock(&q->lock);
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
    while (q->todo != NULL || q->working > 0)
        pthread_cond_wait(&q->drained, &q->lock);
    q->stopping = true;
    pthread_cond_broadcast(&q->cond);
    pthread_mutex_unlock(&q->lock);
    for (int i = 0; i < q->nthreads; i++)
        pthread_join(q->threads[i], NULL);
    run_finished(q);
    event_free(q->wake);
    pthread_mutex_destroy(&q->lock);
    pthread_cond_destroy(&q->cond);
    pthread_cond_destroy(&q->drained);
    free(q->threads);
    free(q);
}
