/* The download engine as the daemon's other wings see it: the one header that api/,
 * proxy/ and cmd_daemon.c include from peer/. A task is opaque here; what a watcher may
 * know of it is a dmf_task_info snapshot, and what it may do is open it, start it, watch
 * it, and read its verified bytes. The engine's own parts (task, parents, announce,
 * back-to-source) live behind this header and are not included by other wings.
 *
 * Everything here runs on the daemon's loop thread. */
#ifndef DMF_ENGINE_H
#define DMF_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "daemon/daemon.h"
#include "daemon/piece_server.h"
#include "daemon/peer/cache_gc.h"
#include "daemon/peer/task_view.h"

struct dmf_task;

/* Creates the engine of daemon d: its tasks, and the scheduler's client when
 * d->cfg.scheduler is set; it announces nothing yet). Call before any listener that can
 * reach a task (piece server, rpc server, proxy, local API) is made. */
void dmf_engine_new(struct dmf_daemon *d);
/* The end of the start-up announce or of the shutdown's goodbye; announced: some scheduler
 * has (had) this host. */
typedef void (*dmf_engine_done_cb)(void *arg, bool announced);

/* Announces this host and calls ready (from the loop) once the scheduler answered or 2 s
 * passed, so that the daemon starts serving `get` when the first download can find the
 * host known. Returns false, and ready never runs, without a scheduler: nothing to wait
 * for. Call once every listener is bound: a daemon about to fail must not be offered to
 * others as a parent. */
bool dmf_engine_start(struct dmf_daemon *d, dmf_engine_done_cb ready, void *arg);
/* The engine's part of the shutdown sequence: tells every watcher the daemon is shutting
 * down and frees every task (no task is loaded or made after this), then says LeaveHost
 * and calls left (from the loop) once the schedulers answered or 1.5 s passed. Returns
 * false, and left never runs, when there is nobody to leave (no scheduler, or no engine).
 * Pieces still on the worker queue must have landed (dmf_workq_free), and every listener
 * that can reach a task must be gone. */
bool dmf_engine_stop(struct dmf_daemon *d, dmf_engine_done_cb left, void *arg);
/* Frees the engine (and its tasks, when dmf_engine_stop never ran). Runs no loop. Nothing
 * happens when the engine was never made. */
void dmf_engine_free(struct dmf_daemon *d);
/* Cancels the tasks' long jobs on the worker pool (whole-content verifications), so that
 * dmf_workq_free at shutdown does not wait for them; call it just before. */
void dmf_engine_cancel_long_work(struct dmf_daemon *d);
/* Uses the scheduler at addr from now on (the manager's ListSchedulers moved us); the
 * first one given to a daemon started without a scheduler makes the scheduler's client. */
void dmf_engine_set_scheduler(struct dmf_daemon *d, const char *addr);
/* Registers the engine's metrics (bytes by source, verify failures, tasks by result). */
void dmf_engine_metrics_register(void);

/* The task with this id, in memory or in the store; NULL when unknown (or id invalid). */
struct dmf_task *dmf_engine_find(struct dmf_daemon *d, const char *id);
/* Finds or creates the task id for a request, records what the request asked for (unless
 * a download is running: it keeps the request that started it), and opens its data file.
 * 0 and *out, or -errno when the data file cannot be opened (*out is then NULL). */
int dmf_engine_open(struct dmf_daemon *d, const char *id, const struct dmf_task_request *req,
                    struct dmf_task **out);

/* The cache's collector: list, remove, evict now (cache_gc.h). NULL before
 * dmf_engine_new and after dmf_engine_stop. */
struct dmf_cache_gc *dmf_engine_cache(struct dmf_daemon *d);

/* The piece server's view of a task (a dmf_piece_lookup_cb; daemon is the dmf_daemon). */
int dmf_engine_piece_lookup(void *daemon, const char *task_id, struct dmf_piece_view *view);

#endif
