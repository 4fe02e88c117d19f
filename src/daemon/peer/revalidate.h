/* Revalidation of a cached URL task: one conditional request to the origin (If-None-Match
 * / If-Modified-Since from the pinned validators, with the caller's own headers and
 * Range: bytes=0-0, so a new version costs one byte), whose answer freshness.c judges and
 * task.c applies (still current, or a new version). The calls are in task_view.h (the
 * local API and the proxy start them); this header is what the engine needs. Arrows run
 * from here to task.c only. Engine-private. */
#ifndef DMF_REVALIDATE_H
#define DMF_REVALIDATE_H

struct dmf_task;

/* Ends every revalidation of t in flight: each caller's callback gets
 * DMF_FRESH_UNREACHABLE with why. The engine calls it before it frees a task. */
void dmf_revalidations_abort(struct dmf_task *t, const char *why);

#endif
