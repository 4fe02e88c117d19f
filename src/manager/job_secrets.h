/* The credentials of jobs, kept in this manager's memory only: a job's registry password
 * and the values of its secret request headers (Authorization, ...; log.h
 * dmf_header_is_secret) never go to the database. The API splits them off a new job's
 * args (dmf_job_args_split) and puts them here under a random reference, which the stored
 * args carry ("secrets_ref"); the runner takes them when it claims the job. A job claimed
 * by a manager that does not hold them (after a restart, or another manager after its
 * creator died) knows from the reference that they were given and are gone: see
 * docs/internals/MANAGER.md ("Credentials of jobs").
 *
 * Bounded: at most DMF_JOB_SECRETS_MAX entries, each dropped an hour after it was put
 * when no runner took it. Thread-safe (the API puts them from a worker thread). */
#ifndef DMF_MANAGER_JOB_SECRETS_H
#define DMF_MANAGER_JOB_SECRETS_H

#include <jansson.h>

#define DMF_JOB_SECRETS_MAX     1024
#define DMF_JOB_SECRETS_REF_LEN 32 /* hex digits */
#define DMF_JOB_SECRETS_TTL_S   3600

struct dmf_job_secrets;

struct dmf_job_secrets *dmf_job_secrets_new(void);
void dmf_job_secrets_free(struct dmf_job_secrets *s);
/* Keeps secrets (the store takes the reference) and writes its reference into ref
 * (DMF_JOB_SECRETS_REF_LEN + 1 bytes). When the store is full the oldest entry goes. */
void dmf_job_secrets_put(struct dmf_job_secrets *s, json_t *secrets, char *ref);
/* The secrets under ref, removed from the store (the caller owns them), or NULL. */
json_t *dmf_job_secrets_take(struct dmf_job_secrets *s, const char *ref);

#endif
