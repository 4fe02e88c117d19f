/* Descriptors of tasks' data files, opened on demand and closed when idle: an LRU with a
 * bound (--max-open-files). A daemon that held every task's data file open for ever ran
 * out of descriptors after about a thousand distinct downloads at the common nofile limit
 * of 1024 (issue 16); with the pool, open data files stay at most at the bound.
 *
 * A dmf_data_file is one task's slot: its descriptor when open, the file's path, and the
 * generation (a new one each time the task starts a fresh data file, not when the same
 * file is opened again). Opening is the caller's (the store knows the layout): it hands
 * the descriptor over with dmf_data_file_set, which closes the least recently used files
 * of other tasks beyond the bound. A file in use is pinned (a piece being written on a
 * worker thread): the pool never closes a pinned one, so it may go above the bound by the
 * number of pinned files. Closing does not forget the task's pieces: the next open checks
 * the file against the task's mark (task_cache.h), so a file changed or replaced while it
 * was closed is detected as before.
 *
 * Everything here runs on the daemon's loop thread; pins are taken and dropped there too. */
#ifndef DMF_DATA_FILE_H
#define DMF_DATA_FILE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/metrics.h"

struct dmf_open_files;

/* Data files open now, and the bound. */
extern struct dmf_metric dmf_m_data_files_open, dmf_m_data_files_max;

struct dmf_data_file {
    struct dmf_open_files *pool;
    struct dmf_data_file *prev, *next; /* in pool's LRU while open, most recent first */
    int fd;                            /* -1 while closed */
    unsigned pins;                     /* users that need fd to stay open */
    uint32_t gen;                      /* distinct files opened so far; 0: none yet */
    dev_t dev;                         /* of the file last opened (to tell a new one) */
    ino_t ino;
    char *path; /* of the file last opened (owned), or NULL */
};

/* A pool of at most max open data files (max >= 1). Owned by the caller. */
struct dmf_open_files *dmf_open_files_new(uint32_t max);
/* Every file must be closed or freed (dmf_data_file_free) first. NULL is ignored. */
void dmf_open_files_free(struct dmf_open_files *p);
/* Data files open right now, and the bound. */
uint32_t dmf_open_files_count(const struct dmf_open_files *p);
uint32_t dmf_open_files_max(const struct dmf_open_files *p);
/* The bound for a process whose nofile limit is nofile: a quarter of it, at least 16 and
 * at most 4096 (the rest is for sockets: connections, children, the proxy). Pure. */
uint32_t dmf_open_files_default(uint64_t nofile);

/* Out of descriptors (EMFILE): closes the older half of the open, unpinned files. */
void dmf_open_files_shed(struct dmf_open_files *p);

/* A closed slot of pool p. */
void dmf_data_file_init(struct dmf_data_file *f, struct dmf_open_files *p);
/* The open descriptor, made the most recently used; -1 when closed (open it and call
 * dmf_data_file_set). */
int dmf_data_file_fd(struct dmf_data_file *f);
/* Takes over fd (open) and path (malloc'd; may be NULL), closing the file open before if
 * any. The generation moves on when the file is another one than the last opened. Then
 * closes other slots' least recently used unpinned files while the pool is over its bound. */
void dmf_data_file_set(struct dmf_data_file *f, int fd, char *path);
/* Closes the descriptor (the slot keeps its path and generation). A pinned file stays
 * open (the pool closes it once unpinned, when it is over its bound). */
void dmf_data_file_close(struct dmf_data_file *f);
/* Forgets the file: the next dmf_data_file_set starts a new generation whatever it is
 * (the task detached its data file). Closes it as dmf_data_file_close. */
void dmf_data_file_forget(struct dmf_data_file *f);
/* Keeps the open file open until the matching unpin (which may close it when the pool is
 * over its bound). */
void dmf_data_file_pin(struct dmf_data_file *f);
void dmf_data_file_unpin(struct dmf_data_file *f);
bool dmf_data_file_pinned(const struct dmf_data_file *f);
/* Closes the file and frees the path. */
void dmf_data_file_free(struct dmf_data_file *f);

#endif
