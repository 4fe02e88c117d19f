/* The piece store of one daemon: one sparse data file per task, pieces written at their
 * offsets, plus one SQLite database (WAL) holding tasks, the verified-piece bitmap, piece
 * digests and access times. A restarted daemon keeps and re-serves what it verified.
 *
 * Layout: <data-dir>/tasks/<first 3 hex of id>/<id>/data and <data-dir>/meta.db.
 * Not thread-safe: one thread (the daemon's loop) uses a store. */
#ifndef DMF_STORE_H
#define DMF_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/config.h"
#include "common/digest.h"
#include "common/pieces.h"
#include "common/taskid.h"

typedef struct dmf_store dmf_store_t;

/* A task's persisted record. Never holds request headers or credentials. */
struct dmf_store_task {
    char id[DMF_TASK_ID_LEN + 1];
    char *url;              /* normalised URL, owned; may be NULL */
    int64_t content_length; /* -1 while unknown */
    uint32_t piece_length;  /* 0 while unknown */
    uint32_t total_pieces;  /* valid when content_length >= 0 */
    bool complete;          /* every piece verified (and the content digest, if known) */
    char content_digest[DMF_DIGEST_STR_LEN + 1]; /* "sha256:hex" or "" */
    dmf_bitmap_t have;      /* verified pieces */
    uint8_t (*digests)[DMF_SHA256_LEN]; /* digests[n] valid where have has bit n */
    uint32_t ndigests;      /* entries allocated in digests */
};

/* Opens (creating) the store under data_dir. Returns 0 or -errno with a reason in err
 * ("cannot create /x/tasks: permission denied", "meta.db is corrupt: ..."). */
int dmf_store_open(const char *data_dir, dmf_store_t **out, char *err, size_t errlen);
void dmf_store_close(dmf_store_t *s);

/* Loads a task with its bitmap and digests; *out is owned by the caller
 * (dmf_store_task_free). Returns 0, -ENOENT, or -EIO. */
int dmf_store_task_load(dmf_store_t *s, const char *id, struct dmf_store_task **out);
void dmf_store_task_free(struct dmf_store_task *t);

/* Inserts or updates the task row (url, lengths, complete, content digest, access time);
 * pieces are recorded with dmf_store_piece_put. Returns 0 or -EIO. */
int dmf_store_task_save(dmf_store_t *s, const struct dmf_store_task *t);

/* Opens the task's data file read-write, creating it and its directory. Returns the fd
 * (owned by the caller) or -errno. *path, when not NULL, gets the file's path (caller
 * frees). */
int dmf_store_open_data(dmf_store_t *s, const char *id, char **path);

/* Records that piece n's bytes are written to the data file and verified against digest.
 * Returns 0 or -EIO. */
int dmf_store_piece_put(dmf_store_t *s, const char *id, uint32_t n,
                        const uint8_t digest[DMF_SHA256_LEN]);

/* Forgets that piece n is held (e.g. found bad). Returns 0 or -EIO. */
int dmf_store_piece_drop(dmf_store_t *s, const char *id, uint32_t n);

/* Deletes the task's metadata and its data file and directory. Returns 0 or -errno. */
int dmf_store_task_delete(dmf_store_t *s, const char *id);

/* Appends the IDs of every stored task to ids. Returns 0 or -EIO. */
int dmf_store_task_list(dmf_store_t *s, struct dmf_strlist *ids);

#endif
