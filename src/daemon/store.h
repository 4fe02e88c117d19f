/* The piece store of one daemon: one sparse data file per task, pieces written at their
 * offsets, plus one SQLite database (WAL) holding tasks, the verified-piece bitmap, piece
 * digests and access times. A restarted daemon keeps and re-serves what it verified.
 *
 * Layout: <data-dir>/tasks/<first 3 hex of id>/<id>/data and <data-dir>/meta.db.
 * One thread (the daemon's loop) calls these functions. Piece rows are recorded by the
 * store's writer thread (store_writer.h) on a connection of its own, in batches: the loop
 * only queues them. Reads and the writes that are not per piece (task rows, accesses,
 * drops, deletes) stay on the loop's connection; a drop or a delete first takes
 * the rows it concerns out of the writer's queue (a put queued before cannot land after);
 * usage and the load of a task with rows queued flush the writer first, which waits for
 * about one batch. */
#ifndef DMF_STORE_H
#define DMF_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/config.h"
#include "common/digest.h"
#include "common/pieces.h"
#include "common/taskid.h"

typedef struct dmf_store dmf_store_t;

#define DMF_VALIDATOR_MAX 1024 /* longest ETag or Last-Modified kept for a task */

/* A task's persisted record. Never holds request headers or credentials. */
struct dmf_store_task {
    char id[DMF_TASK_ID_LEN + 1];
    char *url;              /* normalised URL, owned; may be NULL */
    int64_t content_length; /* -1 while unknown */
    uint32_t piece_length;  /* 0 while unknown */
    uint32_t total_pieces;  /* valid when content_length >= 0 */
    bool complete;          /* every piece verified (and the content digest, if known) */
    char content_digest[DMF_DIGEST_STR_LEN + 1]; /* "sha256:hex" or "" */
    dmf_bitmap_t have;                           /* verified pieces */
    uint8_t (*digests)[DMF_SHA256_LEN];          /* digests[n] valid where have has bit n */
    uint32_t ndigests;                           /* entries allocated in digests */
    /* The origin's validators of the version the pieces are (owned; NULL when the origin
     * sent none), and when that version was last known current (Unix seconds: the fetch,
     * or a 304 to a conditional request; 0 = never). */
    char *etag, *last_modified;
    int64_t validated_at;
    char *content_type; /* the origin's Content-Type, when this host fetched it (or NULL) */
};

/* Opens (creating) the store under data_dir. Returns 0 or -errno with a reason in err
 * ("cannot create /x/tasks: permission denied", "meta.db is corrupt: ..."). Takes an
 * exclusive lock on <data-dir>/lock: a second open of the same data dir fails with -EBUSY.
 * When the previous session did not close cleanly and the machine rebooted since (power
 * loss), every recorded piece is re-hashed here and the damaged ones are dropped (see
 * docs/internals/STORE.md); this reads the whole store once. */
int dmf_store_open(const char *data_dir, dmf_store_t **out, char *err, size_t errlen);
/* Commits the queued piece rows and stops the writer, flushes the data files (syncfs),
 * records a clean shutdown and frees s. */
void dmf_store_close(dmf_store_t *s);

/* Loads a task with its bitmap and digests; *out is owned by the caller
 * (dmf_store_task_free). Returns 0, -ENOENT, -EINVAL (malformed id) or -EIO.
 * Every function taking an id rejects a malformed one with -EINVAL, before any path or
 * query is built from it. */
int dmf_store_task_load(dmf_store_t *s, const char *id, struct dmf_store_task **out);
void dmf_store_task_free(struct dmf_store_task *t);

/* Inserts or updates the task row (url, lengths, complete, content digest, access time);
 * pieces are recorded with dmf_store_piece_put. Returns 0, -EINVAL or -EIO. */
int dmf_store_task_save(dmf_store_t *s, const struct dmf_store_task *t);

/* Opens the task's data file read-write, creating it and its directory. When the task row
 * has a known content length, a shorter file is extended to it with ftruncate (a hole: no
 * disk is used until pieces are written). Returns the fd (owned by the caller) or -errno.
 * *path, when not NULL, gets the file's path (caller frees). */
int dmf_store_open_data(dmf_store_t *s, const char *id, char **path);

/* As dmf_store_open_data; *found gets the file's size before it was extended, or -1 when
 * it did not exist (it was created empty). */
int dmf_store_open_data_found(dmf_store_t *s, const char *id, char **path, int64_t *found);

/* Unlinks the task's data file from the data dir if it is still the file fd has open (a
 * user's hard link to it keeps the inode); the next dmf_store_open_data starts a fresh
 * one. Returns 0 or -errno. */
int dmf_store_detach_data(dmf_store_t *s, const char *id, int fd);

/* Queues the record that piece n's bytes are written to the data file and verified
 * against digest; the writer commits it with its batch (within 50 ms). Call it only after
 * the bytes are written. Idempotent (a second put replaces the digest). Returns 0, -EINVAL,
 * or -EAGAIN when the writer's queue stayed full (the piece is not recorded: a restarted
 * daemon fetches it again). A row whose task row was never saved, or a batch that fails,
 * is not recorded either (logged and counted in damselfly_store_rows_total). */
int dmf_store_piece_put(dmf_store_t *s, const char *id, uint32_t n,
                        const uint8_t digest[DMF_SHA256_LEN]);

/* Commits every piece row queued so far, now; returns once they are committed. */
void dmf_store_flush(dmf_store_t *s);

/* Forgets that piece n is held (e.g. found bad) and marks the task incomplete.
 * Returns 0, -EINVAL or -EIO. */
int dmf_store_piece_drop(dmf_store_t *s, const char *id, uint32_t n);

/* Deletes the task's metadata and its data file and directory (rows first). Returns 0,
 * -ENOENT when there was neither a row nor a file, or -errno. */
int dmf_store_task_delete(dmf_store_t *s, const char *id);

/* Appends the IDs of every stored task to ids, least recently saved first (the order in
 * which garbage collection evicts). Returns 0 or -EIO. */
int dmf_store_task_list(dmf_store_t *s, struct dmf_strlist *ids);

/* What the cache holds, per task (the rows `damselfly cache ls` and eviction look at). */
struct dmf_store_usage {
    char id[DMF_TASK_ID_LEN + 1];
    char *url;        /* owned; NULL when none was recorded */
    int64_t accessed; /* last access, seconds since the epoch */
    int64_t content_length;
    uint32_t total_pieces, held_pieces;
    uint64_t held_bytes; /* bytes of the pieces held (task data only, not the database) */
    bool complete;
};
/* Every task with what it holds, least recently accessed first, into a malloc'd array
 * (*out, *n; free with dmf_store_usage_free). Returns 0 or -EIO. */
int dmf_store_usage(dmf_store_t *s, struct dmf_store_usage **out, size_t *n);
void dmf_store_usage_free(struct dmf_store_usage *u, size_t n);
/* Records an access to the task at when (seconds since the epoch; an earlier time than the
 * recorded one is ignored). Returns 0, -EINVAL or -EIO. */
int dmf_store_task_touch(dmf_store_t *s, const char *id, int64_t when);

#endif
