/* The piece store: sparse data files plus one SQLite database. See docs/internals/STORE.md
 * for the layout, the schema and what survives a crash or a power loss. */
#include "daemon/store.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "daemon/store_writer.h"

#define SCHEMA_VERSION  2
#define BUSY_TIMEOUT_MS 5000
#define BOOT_ID_PATH    "/proc/sys/kernel/random/boot_id"

/* Every statement the store runs after open, prepared once and kept for its lifetime. */
enum stmt_id {
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_TASK_GET,
    ST_TASK_UPSERT,
    ST_TASK_DELETE,
    ST_TASK_LIST,
    ST_TASK_INCOMPLETE,
    ST_PIECES_GET,
    ST_PIECES_DELETE,
    ST_PIECES_ALL,
    ST_PIECE_PUT,
    ST_PIECE_DROP,
    ST_META_GET,
    ST_META_SET,
    ST_TASK_USAGE,
    ST_TASK_TOUCH,
    ST_COUNT
};

static const char *const stmt_sql[ST_COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_TASK_GET] = "SELECT url, content_length, piece_length, total_pieces, complete, "
                    "content_digest, etag, last_modified, validated_at, content_type FROM tasks "
                    "WHERE id = ?1",
    [ST_TASK_UPSERT] =
        "INSERT INTO tasks (id, url, content_length, piece_length, total_pieces, complete, "
        "content_digest, created_at, accessed_at, etag, last_modified, validated_at, "
        "content_type) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9, ?10, ?11, ?12) "
        "ON CONFLICT (id) DO UPDATE SET url = excluded.url, "
        "content_length = excluded.content_length, piece_length = excluded.piece_length, "
        "total_pieces = excluded.total_pieces, complete = excluded.complete, "
        "content_digest = excluded.content_digest, accessed_at = excluded.accessed_at, "
        "etag = excluded.etag, last_modified = excluded.last_modified, "
        "validated_at = excluded.validated_at, content_type = excluded.content_type",
    [ST_TASK_DELETE] = "DELETE FROM tasks WHERE id = ?1",
    [ST_TASK_LIST] = "SELECT id FROM tasks ORDER BY accessed_at, id",
    [ST_TASK_INCOMPLETE] = "UPDATE tasks SET complete = 0 WHERE id = ?1",
    [ST_PIECES_GET] = "SELECT num, digest FROM pieces WHERE task_id = ?1 ORDER BY num",
    [ST_PIECES_DELETE] = "DELETE FROM pieces WHERE task_id = ?1",
    [ST_PIECES_ALL] = "SELECT p.task_id, p.num, p.digest, t.content_length, t.piece_length "
                      "FROM pieces p JOIN tasks t ON t.id = p.task_id ORDER BY p.task_id, p.num",
    [ST_PIECE_PUT] = "INSERT INTO pieces (task_id, num, digest) VALUES (?1, ?2, ?3) "
                     "ON CONFLICT (task_id, num) DO UPDATE SET digest = excluded.digest",
    [ST_PIECE_DROP] = "DELETE FROM pieces WHERE task_id = ?1 AND num = ?2",
    [ST_META_GET] = "SELECT value FROM meta WHERE key = ?1",
    [ST_META_SET] = "INSERT INTO meta (key, value) VALUES (?1, ?2) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    /* Bytes held: every piece is piece_length long but the last one of a known length. */
    [ST_TASK_USAGE] =
        "SELECT t.id, t.url, t.accessed_at, t.content_length, t.total_pieces, t.complete, "
        "count(p.num), coalesce(sum(CASE WHEN t.content_length >= 0 AND p.num = "
        "t.total_pieces - 1 THEN t.content_length - p.num * t.piece_length ELSE t.piece_length "
        "END), 0) FROM tasks t LEFT JOIN pieces p ON p.task_id = t.id GROUP BY t.id "
        "ORDER BY t.accessed_at, t.id",
    [ST_TASK_TOUCH] = "UPDATE tasks SET accessed_at = max(accessed_at, ?2) WHERE id = ?1",
};

static const char schema_v1[] =
    "CREATE TABLE tasks ("
    " id TEXT PRIMARY KEY NOT NULL,"
    " url TEXT,"
    " content_length INTEGER NOT NULL DEFAULT -1,"
    " piece_length INTEGER NOT NULL DEFAULT 0,"
    " total_pieces INTEGER NOT NULL DEFAULT 0,"
    " complete INTEGER NOT NULL DEFAULT 0,"
    " content_digest TEXT,"
    " created_at INTEGER NOT NULL,"
    " accessed_at INTEGER NOT NULL);"
    "CREATE INDEX tasks_by_access ON tasks (accessed_at);"
    "CREATE TABLE pieces ("
    " task_id TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,"
    " num INTEGER NOT NULL,"
    " digest BLOB NOT NULL CHECK (length(digest) = 32),"
    " PRIMARY KEY (task_id, num)) WITHOUT ROWID;"
    "CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value TEXT) WITHOUT ROWID;"
    "PRAGMA user_version = 1;";

/* Version 2: the origin's validators pinned per task, when the cached copy was last known
 * to be the origin's current one (fetched, or a 304 to a conditional request), and the
 * origin's Content-Type (the proxy passes it on). A
 * version-1 row gets none: its first get after the upgrade revalidates without conditions
 * (a 200 then counts as a new version). */
static const char schema_v2[] = "ALTER TABLE tasks ADD COLUMN etag TEXT;"
                                "ALTER TABLE tasks ADD COLUMN last_modified TEXT;"
                                "ALTER TABLE tasks ADD COLUMN validated_at INTEGER NOT NULL "
                                "DEFAULT 0;"
                                "ALTER TABLE tasks ADD COLUMN content_type TEXT;"
                                "PRAGMA user_version = 2;";

/* What turns version i into version i + 1 (index 0: an empty database). */
static const char *const migrations[SCHEMA_VERSION] = {schema_v1, schema_v2};

/* The statements of the writer's own connection. */
enum wstmt_id { WS_BEGIN, WS_COMMIT, WS_ROLLBACK, WS_PIECE_PUT, WS_COUNT };
static const enum stmt_id wstmt_sql[WS_COUNT] = {ST_BEGIN, ST_COMMIT, ST_ROLLBACK, ST_PIECE_PUT};

struct dmf_store {
    char *data_dir;
    char *db_path;
    int lock_fd; /* flock'ed <data-dir>/lock: one daemon per data dir */
    sqlite3 *db; /* the loop's connection: reads, and the writes that are not per piece */
    sqlite3_stmt *st[ST_COUNT];
    /* Piece rows are written only by the writer thread, on its own connection. */
    sqlite3 *wdb;
    sqlite3_stmt *wst[WS_COUNT];
    dmf_store_writer_t *writer;
};

/* ---- small helpers ---- */

static void db_fail(dmf_store_t *s, const char *what, const char *id)
{
    dmf_error("store: %s%s%s: %s", what, id ? " for task " : "", id ? id : "",
              sqlite3_errmsg(s->db));
}

/* Returns the cached statement, ready for binding. Callers reset it with stmt_done() as
 * soon as they are finished, so that no read transaction stays open (it would stop WAL
 * checkpoints). */
static sqlite3_stmt *stmt(dmf_store_t *s, enum stmt_id id)
{
    sqlite3_stmt *st = s->st[id];
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return st;
}

static void stmt_done(sqlite3_stmt *st)
{
    sqlite3_reset(st);
}

/* Runs a statement that returns no rows; returns the sqlite result code. */
static int stmt_run(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? SQLITE_DONE : rc;
}

static int tx(dmf_store_t *s, enum stmt_id id)
{
    int rc = stmt_run(stmt(s, id));
    if (rc != SQLITE_DONE) {
        db_fail(s, stmt_sql[id], NULL);
        return -EIO;
    }
    return 0;
}

static char *task_dir(const dmf_store_t *s, const char *id)
{
    return dmf_xasprintf("%s/tasks/%.3s/%s", s->data_dir, id, id);
}

static char *data_path(const dmf_store_t *s, const char *id)
{
    return dmf_xasprintf("%s/tasks/%.3s/%s/data", s->data_dir, id, id);
}

/* ---- clean shutdown and power-loss detection ---- */

/* Reads the kernel's boot id into buf ("" when unavailable, e.g. not Linux). */
static void read_boot_id(char *buf, size_t len)
{
    buf[0] = '\0';
    FILE *f = fopen(BOOT_ID_PATH, "re");
    if (f == NULL)
        return;
    if (fgets(buf, (int)len, f) == NULL)
        buf[0] = '\0';
    fclose(f);
    buf[strcspn(buf, "\n")] = '\0';
}

/* Copies meta[key] into buf; "" when absent. Returns 0 or -EIO. */
static int meta_get(dmf_store_t *s, const char *key, char *buf, size_t len)
{
    sqlite3_stmt *st = stmt(s, ST_META_GET);
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    buf[0] = '\0';
    if (rc == SQLITE_ROW) {
        const char *v = (const char *)sqlite3_column_text(st, 0);
        if (v != NULL)
            snprintf(buf, len, "%s", v);
    }
    stmt_done(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        db_fail(s, "reading meta", NULL);
        return -EIO;
    }
    return 0;
}

/* Writes the session record durably: synchronous=FULL makes this one commit reach the disk
 * before we go on, whatever the store's normal setting. */
static int meta_set_durable(dmf_store_t *s, const char *boot_id, const char *clean)
{
    int ret = -EIO;
    if (sqlite3_exec(s->db, "PRAGMA synchronous = FULL", NULL, NULL, NULL) != SQLITE_OK ||
        tx(s, ST_BEGIN) != 0)
        goto out;
    const char *kv[2][2] = {{"boot_id", boot_id}, {"clean", clean}};
    for (int i = 0; i < 2; i++) {
        sqlite3_stmt *st = stmt(s, ST_META_SET);
        sqlite3_bind_text(st, 1, kv[i][0], -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, kv[i][1], -1, SQLITE_STATIC);
        if (stmt_run(st) != SQLITE_DONE) {
            db_fail(s, "writing meta", NULL);
            tx(s, ST_ROLLBACK);
            goto out;
        }
    }
    ret = tx(s, ST_COMMIT);
out:
    sqlite3_exec(s->db, "PRAGMA synchronous = NORMAL", NULL, NULL, NULL);
    return ret;
}

/* After a power loss (or a kernel crash) the page cache is gone: a piece row committed
 * before the loss may describe bytes that never reached the disk. Re-hash every recorded
 * piece and forget the ones whose bytes no longer match their digest. Runs at open,
 * before the daemon serves anything. */
static int verify_all_pieces(dmf_store_t *s)
{
    struct bad {
        char id[DMF_TASK_ID_LEN + 1];
        uint32_t n;
    } *bad = NULL;
    size_t nbad = 0, capbad = 0, checked = 0;
    char cur_id[DMF_TASK_ID_LEN + 1] = "";
    int fd = -1, ret = 0;

    sqlite3_stmt *st = stmt(s, ST_PIECES_ALL);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(st, 0);
        int64_t num = sqlite3_column_int64(st, 1);
        const void *want = sqlite3_column_blob(st, 2);
        int wantlen = sqlite3_column_bytes(st, 2);
        int64_t content_length = sqlite3_column_int64(st, 3);
        int64_t piece_length = sqlite3_column_int64(st, 4);
        if (id == NULL || !dmf_task_id_valid(id) || num < 0 || num >= DMF_PIECES_MAX)
            continue; /* not reachable through the API; left alone */
        if (strcmp(id, cur_id) != 0) {
            if (fd >= 0)
                close(fd);
            snprintf(cur_id, sizeof(cur_id), "%s", id);
            char *path = data_path(s, id);
            fd = open(path, O_RDONLY | O_CLOEXEC);
            free(path);
        }
        uint32_t n = (uint32_t)num;
        uint64_t size = 0;
        if (piece_length > 0 && piece_length <= DMF_PIECE_LENGTH_MAX)
            size = content_length >= 0 ? dmf_piece_size(content_length, (uint32_t)piece_length, n)
                                       : (uint64_t)piece_length;
        uint8_t got[DMF_SHA256_LEN];
        bool ok = fd >= 0 && size > 0 && wantlen == DMF_SHA256_LEN &&
                  dmf_sha256_fd(fd, dmf_piece_offset((uint32_t)piece_length, n), size, got) == 0 &&
                  memcmp(got, want, DMF_SHA256_LEN) == 0;
        checked++;
        if (!ok) {
            if (nbad == capbad) {
                capbad = capbad ? capbad * 2 : 64;
                bad = dmf_xrealloc(bad, capbad * sizeof(*bad));
            }
            snprintf(bad[nbad].id, sizeof(bad[nbad].id), "%s", id);
            bad[nbad].n = n;
            nbad++;
        }
    }
    stmt_done(st);
    if (fd >= 0)
        close(fd);
    if (rc != SQLITE_DONE) {
        db_fail(s, "listing pieces to verify", NULL);
        ret = -EIO;
        goto out;
    }
    if (nbad > 0) {
        if ((ret = tx(s, ST_BEGIN)) != 0)
            goto out;
        for (size_t i = 0; i < nbad; i++) {
            sqlite3_stmt *d = stmt(s, ST_PIECE_DROP);
            sqlite3_bind_text(d, 1, bad[i].id, -1, SQLITE_STATIC);
            sqlite3_bind_int64(d, 2, bad[i].n);
            sqlite3_stmt *c = NULL;
            if (stmt_run(d) == SQLITE_DONE) {
                c = stmt(s, ST_TASK_INCOMPLETE);
                sqlite3_bind_text(c, 1, bad[i].id, -1, SQLITE_STATIC);
            }
            if (c == NULL || stmt_run(c) != SQLITE_DONE) {
                db_fail(s, "dropping a damaged piece", bad[i].id);
                tx(s, ST_ROLLBACK);
                ret = -EIO;
                goto out;
            }
            dmf_warn("store: piece %u of task %s did not survive the power loss; dropped", bad[i].n,
                     bad[i].id);
        }
        if ((ret = tx(s, ST_COMMIT)) != 0)
            goto out;
    }
    dmf_info("store: re-verified %zu pieces after an unclean shutdown, dropped %zu", checked, nbad);
out:
    free(bad);
    return ret;
}

/* ---- open and close ---- */

static int sqlite_errno(sqlite3 *db, int rc)
{
    int e = db ? sqlite3_system_errno(db) : 0;
    if ((rc & 0xff) == SQLITE_CANTOPEN && e != 0)
        return -e;
    if ((rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED)
        return -EBUSY;
    if ((rc & 0xff) == SQLITE_READONLY || (rc & 0xff) == SQLITE_PERM)
        return -EACCES;
    if ((rc & 0xff) == SQLITE_FULL)
        return -ENOSPC;
    return -EIO;
}

/* Fills err for a failed SQLite call during open; returns the errno-style code. */
static int open_fail(dmf_store_t *s, int rc, const char *doing, char *err, size_t errlen)
{
    int code = rc & 0xff;
    const char *msg = s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc);
    if (code == SQLITE_NOTADB || code == SQLITE_CORRUPT)
        snprintf(err, errlen, "%s is corrupt (%s: %s); move it aside to start with an empty store",
                 s->db_path, doing, msg);
    else
        snprintf(err, errlen, "cannot open %s (%s): %s", s->db_path, doing, msg);
    return sqlite_errno(s->db, rc);
}

static int open_schema(dmf_store_t *s, char *err, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL);
    if (rc != SQLITE_OK)
        return open_fail(s, rc, "reading the schema version", err, errlen);
    rc = sqlite3_step(st);
    int version = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : -1;
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW)
        return open_fail(s, rc, "reading the schema version", err, errlen);

    if (version > SCHEMA_VERSION) {
        snprintf(err, errlen,
                 "%s has schema version %d; this damselfly understands up to version %d",
                 s->db_path, version, SCHEMA_VERSION);
        return -ENOTSUP;
    }
    if (version == SCHEMA_VERSION)
        return 0;
    /* Older or new: every migration in one transaction (the lock file keeps it to one
     * daemon). */
    rc = sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    for (int v = version; rc == SQLITE_OK && v < SCHEMA_VERSION; v++)
        rc = sqlite3_exec(s->db, migrations[v], NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        int ret = open_fail(s, rc, version == 0 ? "creating the schema" : "migrating the schema",
                            err, errlen);
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        return ret;
    }
    if (version > 0) {
        dmf_info("store: migrated %s from schema version %d to %d", s->db_path, version,
                 SCHEMA_VERSION);
        return 0;
    }
    dmf_info("store: created %s (schema version %d)", s->db_path, SCHEMA_VERSION);
    return 0;
}

/* On the writer thread: records a batch of piece rows in one transaction. A row whose task
 * row is gone (deleted since it was queued) is skipped. Returns the rows recorded, or
 * -ENOSPC / -EIO when the batch failed (nothing recorded). */
static int commit_rows(void *arg, const struct dmf_piece_row *rows, size_t n)
{
    dmf_store_t *s = arg;
    int recorded = 0, rc = stmt_run(s->wst[WS_BEGIN]);
    for (size_t i = 0; rc == SQLITE_DONE && i < n; i++) {
        sqlite3_stmt *st = s->wst[WS_PIECE_PUT];
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        sqlite3_bind_text(st, 1, rows[i].id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, rows[i].n);
        sqlite3_bind_blob(st, 3, rows[i].digest, DMF_SHA256_LEN, SQLITE_STATIC);
        rc = stmt_run(st);
        if (rc == SQLITE_CONSTRAINT_FOREIGNKEY) {
            dmf_debug("store: piece %u of task %s not recorded: the task is gone", rows[i].n,
                      rows[i].id);
            rc = SQLITE_DONE;
        } else if (rc == SQLITE_DONE) {
            recorded++;
        }
    }
    if (rc == SQLITE_DONE)
        rc = stmt_run(s->wst[WS_COMMIT]);
    if (rc != SQLITE_DONE) {
        dmf_error("store: recording %zu pieces: %s", n, sqlite3_errmsg(s->wdb));
        stmt_run(s->wst[WS_ROLLBACK]);
        return (rc & 0xff) == SQLITE_FULL ? -ENOSPC : -EIO;
    }
    return recorded;
}

/* Opens the writer's connection and starts its thread. */
static int open_writer(dmf_store_t *s, char *err, size_t errlen)
{
    if (!sqlite3_threadsafe()) {
        snprintf(err, errlen,
                 "this SQLite was built without thread support (the store's writer "
                 "needs it)");
        return -ENOTSUP;
    }
    int rc =
        sqlite3_open_v2(s->db_path, &s->wdb, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_extended_result_codes(s->wdb, 1);
        sqlite3_busy_timeout(s->wdb, BUSY_TIMEOUT_MS);
        rc = sqlite3_exec(s->wdb, "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON", NULL,
                          NULL, NULL);
    }
    for (int i = 0; rc == SQLITE_OK && i < WS_COUNT; i++)
        rc = sqlite3_prepare_v3(s->wdb, stmt_sql[wstmt_sql[i]], -1, SQLITE_PREPARE_PERSISTENT,
                                &s->wst[i], NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "cannot open %s for the store's writer: %s", s->db_path,
                 s->wdb ? sqlite3_errmsg(s->wdb) : sqlite3_errstr(rc));
        return sqlite_errno(s->wdb, rc);
    }
    dmf_store_writer_metrics_register();
    s->writer = dmf_store_writer_new(NULL, commit_rows, s);
    return 0;
}

int dmf_store_open(const char *data_dir, dmf_store_t **out, char *err, size_t errlen)
{
    dmf_store_t *s = dmf_xcalloc(1, sizeof(*s));
    char *tasks = NULL, *lock_path = NULL;
    int ret, rc;

    *out = NULL;
    s->lock_fd = -1;
    s->data_dir = dmf_xstrdup(data_dir);
    s->db_path = dmf_xasprintf("%s/meta.db", data_dir);

    tasks = dmf_xasprintf("%s/tasks", data_dir);
    if ((ret = dmf_mkdir_p(tasks)) != 0) {
        snprintf(err, errlen, "cannot create %s: %s", tasks, dmf_strerror(ret));
        goto out;
    }
    /* Local users reach cached data only through the daemon (docs/internals/LOCAL-API.md). */
    if (chmod(data_dir, 0700) != 0) {
        ret = -errno;
        snprintf(err, errlen, "cannot make %s private (chmod 0700): %s", data_dir,
                 dmf_strerror(ret));
        goto out;
    }
    lock_path = dmf_xasprintf("%s/lock", data_dir);
    s->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (s->lock_fd < 0) {
        ret = -errno;
        snprintf(err, errlen, "cannot open %s: %s", lock_path, dmf_strerror(ret));
        goto out;
    }
    if (flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        ret = errno == EWOULDBLOCK ? -EBUSY : -errno;
        if (ret == -EBUSY)
            snprintf(err, errlen,
                     "data dir %s is in use by another damselfly process (%s is locked)", data_dir,
                     lock_path);
        else
            snprintf(err, errlen, "cannot lock %s: %s", lock_path, dmf_strerror(ret));
        goto out;
    }

    rc = sqlite3_open_v2(s->db_path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc != SQLITE_OK) {
        ret = open_fail(s, rc, "opening", err, errlen);
        goto out;
    }
    sqlite3_extended_result_codes(s->db, 1);
    sqlite3_busy_timeout(s->db, BUSY_TIMEOUT_MS);

    /* journal_mode is the first statement that reads the file: a file that is not a
     * database fails here with SQLITE_NOTADB. */
    sqlite3_stmt *st = NULL;
    rc = sqlite3_prepare_v2(s->db, "PRAGMA journal_mode = WAL", -1, &st, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *mode = (const char *)sqlite3_column_text(st, 0);
        if (mode == NULL || strcmp(mode, "wal") != 0) {
            snprintf(err, errlen, "cannot open %s: WAL journal mode refused (got %s)", s->db_path,
                     mode ? mode : "nothing");
            sqlite3_finalize(st);
            ret = -EIO;
            goto out;
        }
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_OK) {
        ret = open_fail(s, rc, "enabling WAL", err, errlen);
        goto out;
    }
    rc = sqlite3_exec(s->db, "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON", NULL, NULL,
                      NULL);
    if (rc != SQLITE_OK) {
        ret = open_fail(s, rc, "setting pragmas", err, errlen);
        goto out;
    }
    if ((ret = open_schema(s, err, errlen)) != 0)
        goto out;

    for (int i = 0; i < ST_COUNT; i++) {
        rc = sqlite3_prepare_v3(s->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->st[i], NULL);
        if (rc != SQLITE_OK) {
            ret = open_fail(s, rc, "preparing statements", err, errlen);
            goto out;
        }
    }

    /* The previous session ended cleanly (clean = 1), or crashed. A process crash keeps
     * the page cache, so every recorded piece is intact; a crash of the whole machine
     * (new boot id, or no boot id to compare) may have lost unsynced bytes. */
    char boot_id[64], prev_boot[64], clean[8];
    read_boot_id(boot_id, sizeof(boot_id));
    if ((ret = meta_get(s, "boot_id", prev_boot, sizeof(prev_boot))) != 0 ||
        (ret = meta_get(s, "clean", clean, sizeof(clean))) != 0) {
        snprintf(err, errlen, "cannot read %s: %s", s->db_path, sqlite3_errmsg(s->db));
        goto out;
    }
    if (strcmp(clean, "0") == 0) {
        bool rebooted = boot_id[0] == '\0' || strcmp(boot_id, prev_boot) != 0;
        dmf_warn("store: %s was not closed cleanly (%s)", s->db_path,
                 rebooted ? "the machine restarted since: re-verifying every piece"
                          : "same boot: the page cache kept every written piece");
        if (rebooted && (ret = verify_all_pieces(s)) != 0) {
            snprintf(err, errlen, "cannot verify pieces in %s: %s", s->db_path,
                     sqlite3_errmsg(s->db));
            goto out;
        }
    }
    if ((ret = meta_set_durable(s, boot_id, "0")) != 0) {
        snprintf(err, errlen, "cannot write %s: %s", s->db_path, sqlite3_errmsg(s->db));
        goto out;
    }
    if ((ret = open_writer(s, err, errlen)) != 0)
        goto out;

    *out = s;
    s = NULL;
    ret = 0;
out:
    if (s != NULL) {
        for (int i = 0; i < WS_COUNT; i++)
            sqlite3_finalize(s->wst[i]);
        sqlite3_close(s->wdb);
        for (int i = 0; i < ST_COUNT; i++)
            sqlite3_finalize(s->st[i]);
        sqlite3_close(s->db);
        if (s->lock_fd >= 0)
            close(s->lock_fd);
        free(s->data_dir);
        free(s->db_path);
        free(s);
    }
    free(tasks);
    free(lock_path);
    return ret;
}

void dmf_store_close(dmf_store_t *s)
{
    if (s == NULL)
        return;
    /* Every queued piece row first (their bytes are written: the rows may follow). */
    dmf_store_writer_free(s->writer);
    for (int i = 0; i < WS_COUNT; i++)
        sqlite3_finalize(s->wst[i]);
    if (sqlite3_close(s->wdb) != SQLITE_OK)
        dmf_error("store: closing the writer's %s: %s", s->db_path, sqlite3_errmsg(s->wdb));
    /* Flush every data file before recording a clean shutdown: after this, a power loss
     * cannot take back any piece this session recorded. */
    int dfd = open(s->data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int sync_err = dfd < 0 || syncfs(dfd) != 0 ? errno : 0;
    if (dfd >= 0)
        close(dfd);
    if (sync_err != 0) {
        dmf_warn("store: cannot sync %s: %s; the next start re-verifies after a reboot",
                 s->data_dir, strerror(sync_err));
    } else {
        char boot_id[64];
        read_boot_id(boot_id, sizeof(boot_id));
        meta_set_durable(s, boot_id, "1");
    }
    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(s->st[i]);
    if (sqlite3_close(s->db) != SQLITE_OK)
        dmf_error("store: closing %s: %s", s->db_path, sqlite3_errmsg(s->db));
    close(s->lock_fd); /* releases the flock */
    free(s->data_dir);
    free(s->db_path);
    free(s);
}

/* ---- tasks ---- */

void dmf_store_task_free(struct dmf_store_task *t)
{
    if (t == NULL)
        return;
    free(t->url);
    free(t->etag);
    free(t->last_modified);
    free(t->content_type);
    dmf_bitmap_free(&t->have);
    free(t->digests);
    free(t);
}

/* Loads the piece rows of t (already filled from its task row). Returns 0 or -EIO. */
static int load_pieces(dmf_store_t *s, struct dmf_store_task *t)
{
    uint32_t cap = t->content_length >= 0 ? t->total_pieces : 0;
    if (cap > 0) {
        dmf_bitmap_resize(&t->have, cap);
        t->digests = dmf_xcalloc(cap, DMF_SHA256_LEN);
        t->ndigests = cap;
    }
    sqlite3_stmt *st = stmt(s, ST_PIECES_GET);
    sqlite3_bind_text(st, 1, t->id, -1, SQLITE_STATIC);
    int rc, ret = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t num = sqlite3_column_int64(st, 0);
        const void *d = sqlite3_column_blob(st, 1);
        if (num < 0 || num >= DMF_PIECES_MAX || d == NULL ||
            sqlite3_column_bytes(st, 1) != DMF_SHA256_LEN) {
            dmf_error("store: task %s has a malformed piece row (piece %lld)", t->id,
                      (long long)num);
            ret = -EIO;
            goto out;
        }
        uint32_t n = (uint32_t)num;
        if (n >= t->ndigests) {
            uint32_t grow = DMF_MAX(n + 1, t->ndigests * 2);
            grow = DMF_MIN(grow, DMF_PIECES_MAX);
            t->digests = dmf_xrealloc(t->digests, (size_t)grow * DMF_SHA256_LEN);
            memset(t->digests[t->ndigests], 0, (size_t)(grow - t->ndigests) * DMF_SHA256_LEN);
            t->ndigests = grow;
        }
        memcpy(t->digests[n], d, DMF_SHA256_LEN);
        dmf_bitmap_set(&t->have, n);
    }
    if (rc != SQLITE_DONE) {
        db_fail(s, "loading pieces", t->id);
        ret = -EIO;
    }
out:
    stmt_done(st);
    return ret;
}

int dmf_store_task_load(dmf_store_t *s, const char *id, struct dmf_store_task **out)
{
    *out = NULL;
    if (!dmf_task_id_valid(id))
        return -EINVAL;

    /* A task's own rows still queued are committed first (rare: the task was unloaded
     * while its last pieces were queued); other tasks' rows do not hold the load up. */
    if (dmf_store_writer_holds(s->writer, id))
        dmf_store_writer_flush(s->writer);
    struct dmf_store_task *t = dmf_xcalloc(1, sizeof(*t));
    dmf_bitmap_init(&t->have);
    memcpy(t->id, id, DMF_TASK_ID_LEN + 1);

    int ret = 0;
    sqlite3_stmt *st = stmt(s, ST_TASK_GET);
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        ret = -ENOENT;
    } else if (rc != SQLITE_ROW) {
        db_fail(s, "loading", id);
        ret = -EIO;
    } else {
        const char *url = (const char *)sqlite3_column_text(st, 0);
        int64_t piece_length = sqlite3_column_int64(st, 2);
        int64_t total = sqlite3_column_int64(st, 3);
        const char *digest = (const char *)sqlite3_column_text(st, 5);
        const char *etag = (const char *)sqlite3_column_text(st, 6);
        const char *lm = (const char *)sqlite3_column_text(st, 7);
        t->url = url ? dmf_xstrdup(url) : NULL;
        t->etag = etag && *etag && strlen(etag) <= DMF_VALIDATOR_MAX ? dmf_xstrdup(etag) : NULL;
        t->last_modified = lm && *lm && strlen(lm) <= DMF_VALIDATOR_MAX ? dmf_xstrdup(lm) : NULL;
        t->validated_at = sqlite3_column_int64(st, 8);
        const char *ct = (const char *)sqlite3_column_text(st, 9);
        t->content_type = ct && *ct && strlen(ct) <= DMF_VALIDATOR_MAX ? dmf_xstrdup(ct) : NULL;
        t->content_length = sqlite3_column_int64(st, 1);
        t->complete = sqlite3_column_int(st, 4) != 0;
        if (piece_length < 0 || piece_length > UINT32_MAX || total < 0 || total > DMF_PIECES_MAX ||
            t->content_length < -1 || (digest && strlen(digest) > DMF_DIGEST_STR_LEN)) {
            dmf_error("store: task %s has a malformed row", id);
            ret = -EIO;
        } else {
            t->piece_length = (uint32_t)piece_length;
            t->total_pieces = (uint32_t)total;
            snprintf(t->content_digest, sizeof(t->content_digest), "%s", digest ? digest : "");
        }
    }
    stmt_done(st);
    if (ret == 0)
        ret = load_pieces(s, t);
    if (ret != 0) {
        dmf_store_task_free(t);
        return ret;
    }
    *out = t;
    return 0;
}

int dmf_store_task_save(dmf_store_t *s, const struct dmf_store_task *t)
{
    if (!dmf_task_id_valid(t->id) || t->total_pieces > DMF_PIECES_MAX || t->content_length < -1)
        return -EINVAL;
    sqlite3_stmt *st = stmt(s, ST_TASK_UPSERT);
    sqlite3_bind_text(st, 1, t->id, -1, SQLITE_STATIC);
    if (t->url != NULL)
        sqlite3_bind_text(st, 2, t->url, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, t->content_length);
    sqlite3_bind_int64(st, 4, t->piece_length);
    sqlite3_bind_int64(st, 5, t->total_pieces);
    sqlite3_bind_int(st, 6, t->complete ? 1 : 0);
    if (t->content_digest[0] != '\0')
        sqlite3_bind_text(st, 7, t->content_digest, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 8, (int64_t)time(NULL));
    if (t->etag != NULL && *t->etag && strlen(t->etag) <= DMF_VALIDATOR_MAX)
        sqlite3_bind_text(st, 9, t->etag, -1, SQLITE_STATIC);
    if (t->last_modified != NULL && *t->last_modified &&
        strlen(t->last_modified) <= DMF_VALIDATOR_MAX)
        sqlite3_bind_text(st, 10, t->last_modified, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 11, t->validated_at);
    if (t->content_type != NULL && *t->content_type && strlen(t->content_type) <= DMF_VALIDATOR_MAX)
        sqlite3_bind_text(st, 12, t->content_type, -1, SQLITE_STATIC);
    if (stmt_run(st) != SQLITE_DONE) {
        db_fail(s, "saving", t->id);
        return -EIO;
    }
    return 0;
}

int dmf_store_open_data(dmf_store_t *s, const char *id, char **path)
{
    int64_t found;
    return dmf_store_open_data_found(s, id, path, &found);
}

int dmf_store_open_data_found(dmf_store_t *s, const char *id, char **path, int64_t *found)
{
    *found = -1;
    if (path != NULL)
        *path = NULL;
    if (!dmf_task_id_valid(id))
        return -EINVAL;

    char *dir = task_dir(s, id);
    char *file = data_path(s, id);
    struct stat sb;
    int fd = -1, ret = dmf_mkdir_p(dir);
    if (ret != 0) {
        dmf_error("store: cannot create %s: %s", dir, dmf_strerror(ret));
        goto out;
    }
    fd = open(file, O_RDWR | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT)
        fd = open(file, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    else if (fd >= 0 && fstat(fd, &sb) == 0)
        *found = sb.st_size;
    if (fd < 0) {
        ret = -errno;
        dmf_error("store: cannot open %s: %s", file, dmf_strerror(ret));
        goto out;
    }

    /* When the length is known, give the file its final size up front: a hole costs no
     * disk, and reads of any piece range stay inside the file. */
    sqlite3_stmt *st = stmt(s, ST_TASK_GET);
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int64_t content_length = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 1) : -1;
    stmt_done(st);
    if (content_length > 0 && fstat(fd, &sb) == 0 && sb.st_size < content_length &&
        ftruncate(fd, content_length) != 0) {
        ret = -errno;
        dmf_error("store: cannot size %s to %lld bytes: %s", file, (long long)content_length,
                  dmf_strerror(ret));
        close(fd);
        fd = -1;
        goto out;
    }
    ret = fd;
    if (path != NULL) {
        *path = file;
        file = NULL;
    }
out:
    free(dir);
    free(file);
    return ret;
}

int dmf_store_piece_put(dmf_store_t *s, const char *id, uint32_t n,
                        const uint8_t digest[DMF_SHA256_LEN])
{
    if (!dmf_task_id_valid(id) || n >= DMF_PIECES_MAX)
        return -EINVAL;
    struct dmf_piece_row row = {.n = n};
    memcpy(row.id, id, DMF_TASK_ID_LEN + 1);
    memcpy(row.digest, digest, DMF_SHA256_LEN);
    return dmf_store_writer_put(s->writer, &row);
}

void dmf_store_flush(dmf_store_t *s)
{
    dmf_store_writer_flush(s->writer);
}

int dmf_store_piece_drop(dmf_store_t *s, const char *id, uint32_t n)
{
    if (!dmf_task_id_valid(id))
        return -EINVAL;
    /* A put queued before must not land after the drop. */
    dmf_store_writer_forget(s->writer, id, false, n);
    int ret = tx(s, ST_BEGIN);
    if (ret != 0)
        return ret;
    sqlite3_stmt *d = stmt(s, ST_PIECE_DROP);
    sqlite3_bind_text(d, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(d, 2, n);
    sqlite3_stmt *c = NULL;
    if (stmt_run(d) == SQLITE_DONE) {
        /* A task missing a piece is not complete, whatever its row said. */
        c = stmt(s, ST_TASK_INCOMPLETE);
        sqlite3_bind_text(c, 1, id, -1, SQLITE_STATIC);
    }
    if (c == NULL || stmt_run(c) != SQLITE_DONE) {
        db_fail(s, "dropping a piece", id);
        tx(s, ST_ROLLBACK);
        return -EIO;
    }
    return tx(s, ST_COMMIT);
}

/* Deletes the task's rows in one transaction: 0, -ENOSPC when the journal cannot grow (a
 * full disk), or -EIO. *had_row tells whether there was a task row. */
static int delete_rows(dmf_store_t *s, const char *id, bool *had_row)
{
    int ret = tx(s, ST_BEGIN);
    if (ret != 0)
        return ret;
    sqlite3_stmt *p = stmt(s, ST_PIECES_DELETE);
    sqlite3_bind_text(p, 1, id, -1, SQLITE_STATIC);
    sqlite3_stmt *t = NULL;
    int rc = stmt_run(p);
    if (rc == SQLITE_DONE) {
        t = stmt(s, ST_TASK_DELETE);
        sqlite3_bind_text(t, 1, id, -1, SQLITE_STATIC);
        rc = stmt_run(t);
    }
    if (rc != SQLITE_DONE) {
        db_fail(s, "deleting", id);
        tx(s, ST_ROLLBACK);
        return (rc & 0xff) == SQLITE_FULL ? -ENOSPC : -EIO;
    }
    *had_row = sqlite3_changes(s->db) > 0;
    rc = stmt_run(stmt(s, ST_COMMIT));
    if (rc != SQLITE_DONE) {
        db_fail(s, "deleting (commit)", id);
        tx(s, ST_ROLLBACK);
        return (rc & 0xff) == SQLITE_FULL ? -ENOSPC : -EIO;
    }
    return 0;
}

int dmf_store_task_delete(dmf_store_t *s, const char *id)
{
    if (!dmf_task_id_valid(id))
        return -EINVAL;

    /* Rows first, then the file: a crash in between leaves an orphan directory (wasted
     * space), never a row that describes bytes that are gone. On a full disk the journal
     * cannot grow: then the file goes first to make room for it (a crash in between leaves
     * rows whose data file is missing, which dmf_task_cache_opened treats as no piece). */
    /* No put queued before may land after the delete (on a task saved again meanwhile). */
    dmf_store_writer_forget(s->writer, id, true, 0);
    char *file = data_path(s, id);
    char *dir = task_dir(s, id);
    char *prefix = dmf_xasprintf("%s/tasks/%.3s", s->data_dir, id);
    bool had_row = false, had_file = true, unlinked = false;
    int ret = delete_rows(s, id, &had_row);
    if (ret == -ENOSPC) {
        dmf_warn("store: disk full: removing the data file of task %s before its rows", id);
        unlinked = unlink(file) == 0;
        had_file = unlinked;
        ret = delete_rows(s, id, &had_row);
    }
    if (ret != 0)
        goto out;
    if (!unlinked && unlink(file) != 0) {
        if (errno != ENOENT) {
            ret = -errno;
            dmf_error("store: cannot remove %s: %s", file, dmf_strerror(ret));
            goto out;
        }
        had_file = false;
    }
    if (rmdir(dir) != 0 && errno != ENOENT)
        dmf_warn("store: cannot remove %s: %s", dir, strerror(errno));
    /* The prefix directory is shared with other tasks; it goes when it is empty. */
    if (rmdir(prefix) != 0 && errno != ENOTEMPTY && errno != EEXIST && errno != ENOENT)
        dmf_warn("store: cannot remove %s: %s", prefix, strerror(errno));
    ret = had_row || had_file ? 0 : -ENOENT;
    dmf_store_writer_retry_now(s->writer); /* a batch that found the disk full may fit now */
out:
    free(file);
    free(dir);
    free(prefix);
    return ret;
}

int dmf_store_task_list(dmf_store_t *s, struct dmf_strlist *ids)
{
    sqlite3_stmt *st = stmt(s, ST_TASK_LIST);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(st, 0);
        if (id != NULL)
            dmf_strlist_push(ids, id);
    }
    stmt_done(st);
    if (rc != SQLITE_DONE) {
        db_fail(s, "listing tasks", NULL);
        return -EIO;
    }
    return 0;
}

int dmf_store_detach_data(dmf_store_t *s, const char *id, int fd)
{
    if (!dmf_task_id_valid(id))
        return -EINVAL;
    char *file = data_path(s, id);
    struct stat a, b;
    int ret = 0;
    /* Only the file fd has open: a fresh one already there stays. */
    if (fstat(fd, &a) == 0 && lstat(file, &b) == 0 && a.st_dev == b.st_dev &&
        a.st_ino == b.st_ino && unlink(file) != 0)
        ret = -errno;
    free(file);
    return ret;
}

void dmf_store_usage_free(struct dmf_store_usage *u, size_t n)
{
    for (size_t i = 0; u && i < n; i++)
        free(u[i].url);
    free(u);
}

int dmf_store_usage(dmf_store_t *s, struct dmf_store_usage **out, size_t *nout)
{
    struct dmf_store_usage *u = NULL;
    size_t n = 0, cap = 0;
    dmf_store_writer_flush(s->writer); /* counts every piece written so far */
    sqlite3_stmt *st = stmt(s, ST_TASK_USAGE);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(st, 0);
        if (id == NULL || !dmf_task_id_valid(id))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            u = dmf_xrealloc(u, cap * sizeof(*u));
        }
        struct dmf_store_usage *r = &u[n++];
        memset(r, 0, sizeof(*r));
        memcpy(r->id, id, DMF_TASK_ID_LEN + 1);
        const char *url = (const char *)sqlite3_column_text(st, 1);
        r->url = url ? dmf_xstrdup(url) : NULL;
        r->accessed = sqlite3_column_int64(st, 2);
        r->content_length = sqlite3_column_int64(st, 3);
        int64_t total = sqlite3_column_int64(st, 4);
        r->total_pieces = total >= 0 && total <= DMF_PIECES_MAX ? (uint32_t)total : 0;
        r->complete = sqlite3_column_int(st, 5) != 0;
        int64_t held = sqlite3_column_int64(st, 6), bytes = sqlite3_column_int64(st, 7);
        r->held_pieces = held >= 0 && held <= DMF_PIECES_MAX ? (uint32_t)held : 0;
        r->held_bytes = bytes > 0 ? (uint64_t)bytes : 0;
    }
    stmt_done(st);
    if (rc != SQLITE_DONE) {
        db_fail(s, "listing the cache", NULL);
        dmf_store_usage_free(u, n);
        return -EIO;
    }
    *out = u;
    *nout = n;
    return 0;
}

int dmf_store_task_touch(dmf_store_t *s, const char *id, int64_t when)
{
    if (!dmf_task_id_valid(id))
        return -EINVAL;
    sqlite3_stmt *st = stmt(s, ST_TASK_TOUCH);
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, when);
    if (stmt_run(st) != SQLITE_DONE) {
        db_fail(s, "recording an access", id);
        return -EIO;
    }
    return 0;
}
