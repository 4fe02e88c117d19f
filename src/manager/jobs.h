/* Jobs: preheat (files and images), delete-task and where-is-task. A job is a row of the
 * jobs table; the runner claims pending jobs (one manager only, by an atomic UPDATE), hands
 * their preheat and delete items to the target clusters' schedulers (Scheduler.RunJobItem,
 * which attaches a repeated item to the running one) and writes every state change back, so
 * a restarted manager resumes what it had claimed and no job or item runs twice. State machine:
 * pending -> running -> succeeded | failed (with a reason); cancel moves pending or running to
 * failed ("cancelled"). */
#ifndef DMF_MANAGER_JOBS_H
#define DMF_MANAGER_JOBS_H

#include <jansson.h>
#include <stddef.h>

#include "manager/manager.h"

#define DMF_JOB_MAX_URLS    256
#define DMF_JOB_MAX_URL_LEN 4096
#define DMF_JOB_MAX_HEADERS 32

struct dmf_manager_jobs;

/* Checks a job request and writes its normal form into *norm (a new object
 * {"type", "args": {...}}). oapi: Dragonfly's open-API shape ({"type":"preheat",
 * "args":{"type":"image","url":...}, "scheduler_cluster_ids":[...]}). 0, or -EINVAL with a
 * reason in err. Pure. */
int dmf_job_validate(const json_t *body, int oapi, json_t **norm, char *err, size_t errlen);

/* A copy of args fit to show: passwords dropped, secret header values redacted. */
json_t *dmf_job_args_public(const json_t *args);

/* Splits a new job's credentials off its args (in place): the registry password and the
 * values of secret headers (log.h dmf_header_is_secret) go into the object returned (the
 * caller owns it; NULL when there are none), and args records what was withheld
 * ({"withheld": {"password": true, "headers": [names]}}). Pure. job_secrets.h keeps them. */
json_t *dmf_job_args_split(json_t *args);
/* Puts credentials split off by dmf_job_args_split back into args (in memory only). */
void dmf_job_args_merge_secrets(json_t *args, const json_t *secrets);

/* Starts the runner on m (its loop, worker pool, database and rpc). */
struct dmf_manager_jobs *dmf_jobs_start(struct dmf_manager *m);
/* Looks for pending work now (a job was created or cancelled). */
void dmf_jobs_kick(struct dmf_manager_jobs *j);
/* Stops the runner; running jobs stay claimed and resume at the next start. */
void dmf_jobs_stop(struct dmf_manager_jobs *j);

#endif
