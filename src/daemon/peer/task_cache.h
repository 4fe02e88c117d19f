/* A task's trust in its cached pieces, applied (cache_check.h decides): the data file
 * looked at before its pieces are used, pieces hashed lazily before they are first served
 * or handed out after a restart, bad ones dropped (and fetched again by the task), and a
 * data file shared with a user's hard link left alone once it was found altered.
 * Engine-private; runs on the loop thread.
 *
 * It works on the parts of a task it is handed (struct dmf_task_cache), never on the task
 * itself: task.c calls this module, and this module reaches back only through the hooks
 * task.c gives, so the dependency runs one way. */
#ifndef DMF_TASK_CACHE_H
#define DMF_TASK_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/peer/cache_check.h"
#include "daemon/peer/data_file.h"
#include "daemon/peer/piece_book.h"
#include "daemon/piece_server.h"
#include "daemon/store.h"

/* What the cache asks of the task's owner (owner is dmf_task_cache.owner). */
struct dmf_task_cache_hooks {
    /* The open descriptor of the data file (opened first when it was closed), borrowed
     * for the call; -errno. */
    int (*data_fd)(void *owner);
    /* Opens a fresh data file (after the old one was let go): 0 or -errno. */
    int (*reopen)(void *owner);
    /* Piece n was verified (again): watchers are to be told. */
    void (*verified)(void *owner, uint32_t n);
};

/* One task's parts, borrowed for a call. */
struct dmf_task_cache {
    const char *id;
    struct dmf_cache_state *state; /* which held pieces are verified now */
    struct dmf_piece_book *book;
    struct dmf_data_file *file;
    dmf_store_t *store;
    dmf_piece_server_t *pieces; /* NULL once the piece server is gone */
    bool running;               /* a download runs: it writes the data file */
    const struct dmf_task_cache_hooks *hooks;
    void *owner;
};
/* Stops using the task's data file (a user's hard link keeps it): every piece is dropped
 * and a fresh, empty data file is opened; why is logged. */
void dmf_task_cache_detach(const struct dmf_task_cache *c, const char *why);
/* Records the data file as the daemon left it (after its own last write). */
void dmf_task_cache_mark(const struct dmf_task_cache *c);
/* Unless a download runs (which writes the file), compares the data file with its mark:
 * a change clears the verified set, a shorter file drops the pieces past its end, an
 * unlinked one drops every piece and opens a fresh data file. */
void dmf_task_cache_refresh(const struct dmf_task_cache *c);
/* The data file was just opened; found is its size before it was extended (-1: it did
 * not exist). Drops the held pieces it cannot contain. */
void dmf_task_cache_opened(const struct dmf_task_cache *c, int64_t found);
/* True when a held piece is not verified in this session. */
bool dmf_task_cache_needs_check(const struct dmf_cache_state *state,
                                const struct dmf_piece_book *book);
/* True when piece n is held and verified, hashing it now (one piece, on the loop) when it
 * was held but not verified yet; a piece that fails is dropped. */
bool dmf_task_cache_verify_piece(const struct dmf_task_cache *c, uint32_t n);
/* Applies a whole-file scan: held pieces that match become verified (and are told to
 * watchers as fresh), the others are dropped. Returns how many were dropped. */
size_t dmf_task_cache_apply_scan(const struct dmf_task_cache *c, const struct dmf_cache_scan *s);

#endif
