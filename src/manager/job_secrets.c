/* Jobs' credentials in memory; see job_secrets.h. */
#include "manager/job_secrets.h"

#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/util.h"

struct entry {
    char ref[DMF_JOB_SECRETS_REF_LEN + 1];
    json_t *secrets;
    time_t put_at;
};

struct dmf_job_secrets {
    pthread_mutex_t mu;
    struct entry v[DMF_JOB_SECRETS_MAX];
    size_t n;
};

struct dmf_job_secrets *dmf_job_secrets_new(void)
{
    struct dmf_job_secrets *s = dmf_xcalloc(1, sizeof(*s));
    pthread_mutex_init(&s->mu, NULL);
    return s;
}

void dmf_job_secrets_free(struct dmf_job_secrets *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->n; i++)
        json_decref(s->v[i].secrets);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

static void drop(struct dmf_job_secrets *s, size_t i)
{
    json_decref(s->v[i].secrets);
    memmove(&s->v[i], &s->v[i + 1], (s->n - i - 1) * sizeof(s->v[0]));
    s->n--;
}

/* Entries nobody took within the TTL go (under the lock). */
static void expire(struct dmf_job_secrets *s, time_t now)
{
    while (s->n > 0 && now - s->v[0].put_at > DMF_JOB_SECRETS_TTL_S)
        drop(s, 0);
}

void dmf_job_secrets_put(struct dmf_job_secrets *s, json_t *secrets, char *ref)
{
    unsigned char raw[DMF_JOB_SECRETS_REF_LEN / 2];
    if (RAND_bytes(raw, sizeof(raw)) != 1) {
        fprintf(stderr, "damselfly: no randomness for a job's secrets reference\n");
        abort();
    }
    for (size_t i = 0; i < sizeof(raw); i++)
        snprintf(ref + 2 * i, 3, "%02x", raw[i]);
    time_t now = time(NULL);
    pthread_mutex_lock(&s->mu);
    expire(s, now);
    if (s->n == DMF_JOB_SECRETS_MAX)
        drop(s, 0); /* the oldest: its job, if it ever runs, fails for want of them */
    struct entry *e = &s->v[s->n++];
    memcpy(e->ref, ref, sizeof(e->ref));
    e->secrets = secrets;
    e->put_at = now;
    pthread_mutex_unlock(&s->mu);
}

json_t *dmf_job_secrets_take(struct dmf_job_secrets *s, const char *ref)
{
    json_t *out = NULL;
    if (s == NULL || ref == NULL)
        return NULL;
    pthread_mutex_lock(&s->mu);
    expire(s, time(NULL));
    for (size_t i = 0; i < s->n; i++) {
        if (strcmp(s->v[i].ref, ref) == 0) {
            out = s->v[i].secrets;
            s->v[i].secrets = NULL;
            drop(s, i);
            break;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return out;
}
