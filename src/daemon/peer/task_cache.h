/* A task's trust in its cached pieces, applied (cache_check.h decides): the data file
 * looked at before its pieces are used, pieces hashed lazily before they are first served
 * or handed out after a restart, bad ones dropped (and fetched again by the task), and a
 * data file shared with a user's hard link left alone once it was found altered.
 * Engine-private; runs on the loop thread. */
#ifndef DMF_TASK_CACHE_H
#define DMF_TASK_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/peer/cache_check.h"

struct dmf_task;

/* Frees the task's cache state (dmf_task_free). */
void dmf_task_cache_free(struct dmf_task *t);
/* Stops using the task's data file (a user's hard link keeps it): every piece is dropped
 * and a fresh, empty data file is opened; why is logged. */
void dmf_task_cache_detach(struct dmf_task *t, const char *why);
/* Records the data file as the daemon left it (after its own last write). */
void dmf_task_cache_mark(struct dmf_task *t);
/* Unless a download runs (which writes the file), compares the data file with its mark:
 * a change clears the verified set, a shorter file drops the pieces past its end, an
 * unlinked one drops every piece and opens a fresh data file. */
void dmf_task_cache_refresh(struct dmf_task *t);
/* The data file was just opened; found is its size before it was extended (-1: it did
 * not exist). Drops the held pieces it cannot contain. */
void dmf_task_cache_opened(struct dmf_task *t, int64_t found);
/* True when a held piece is not verified in this session. */
bool dmf_task_cache_needs_check(const struct dmf_task *t);
/* True when piece n is held and verified, hashing it now (one piece, on the loop) when it
 * was held but not verified yet; a piece that fails is dropped. */
bool dmf_task_cache_verify_piece(struct dmf_task *t, uint32_t n);
/* Applies a whole-file scan: held pieces that match become verified (and are told to
 * watchers as fresh), the others are dropped. Returns how many were dropped. */
size_t dmf_task_cache_apply_scan(struct dmf_task *t, const struct dmf_cache_scan *s);

#endif
