/* Unit tests for src/daemon/store.c: what a restarted daemon finds, and what the store
 * refuses. Each test works in its own temporary data dir. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/digest.h"
#include "common/util.h"
#include "daemon/store.h"

#define ID_A "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define ID_B "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
#define PL   (1u << 20) /* piece length used by the tests */

struct fixture {
    char dir[64];
    dmf_store_t *s;
};

static int setup(void **state)
{
    struct fixture *f = dmf_xcalloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/dmf-store-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    char err[256] = "";
    assert_int_equal(dmf_store_open(f->dir, &f->s, err, sizeof(err)), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    dmf_store_close(f->s);
    char *cmd = dmf_xasprintf("rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(cmd);
    free(f);
    return 0;
}

static void reopen(struct fixture *f)
{
    char err[256] = "";
    dmf_store_close(f->s);
    f->s = NULL;
    assert_int_equal(dmf_store_open(f->dir, &f->s, err, sizeof(err)), 0);
}

static struct dmf_store_task task_of(const char *id, int64_t content_length)
{
    struct dmf_store_task t = {.content_length = content_length, .piece_length = PL};
    snprintf(t.id, sizeof(t.id), "%s", id);
    t.url = "https://example.com/blob?a=1";
    t.total_pieces = content_length >= 0 ? dmf_piece_count(content_length, PL) : 0;
    return t;
}

/* Writes piece n of task id with a byte pattern, records it, and returns its digest. */
static void write_piece(struct fixture *f, const char *id, int64_t content_length, uint32_t n,
                        uint8_t digest[DMF_SHA256_LEN])
{
    uint32_t size = dmf_piece_size(content_length, PL, n);
    uint8_t *buf = dmf_xmalloc(size);
    memset(buf, 'a' + (int)(n % 26), size);
    int fd = dmf_store_open_data(f->s, id, NULL);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, buf, size, (off_t)dmf_piece_offset(PL, n)), (ssize_t)size);
    close(fd);
    dmf_sha256(buf, size, digest);
    free(buf);
    assert_int_equal(dmf_store_piece_put(f->s, id, n, digest), 0);
}

static void test_save_load_roundtrip(void **state)
{
    struct fixture *f = *state;
    struct dmf_store_task t = task_of(ID_A, 5 * PL + 17);
    snprintf(t.content_digest, sizeof(t.content_digest), "sha256:%064d", 7);
    assert_int_equal(dmf_store_task_save(f->s, &t), 0);

    struct dmf_store_task *got = NULL;
    assert_int_equal(dmf_store_task_load(f->s, ID_A, &got), 0);
    assert_string_equal(got->id, ID_A);
    assert_string_equal(got->url, t.url);
    assert_int_equal(got->content_length, 5 * PL + 17);
    assert_int_equal(got->piece_length, PL);
    assert_int_equal(got->total_pieces, 6);
    assert_false(got->complete);
    assert_string_equal(got->content_digest, t.content_digest);
    assert_int_equal(got->have.count, 0);
    dmf_store_task_free(got);

    /* A second save updates the row (here: the task became complete, the URL changed). */
    t.complete = true;
    t.url = NULL;
    t.content_digest[0] = '\0';
    assert_int_equal(dmf_store_task_save(f->s, &t), 0);
    assert_int_equal(dmf_store_task_load(f->s, ID_A, &got), 0);
    assert_true(got->complete);
    assert_null(got->url);
    assert_string_equal(got->content_digest, "");
    dmf_store_task_free(got);

    assert_int_equal(dmf_store_task_load(f->s, ID_B, &got), -ENOENT);
    assert_null(got);
}

static void test_unknown_length(void **state)
{
    struct fixture *f = *state;
    struct dmf_store_task t = task_of(ID_B, -1);
    t.piece_length = DMF_PIECE_LENGTH_DEFAULT;
    assert_int_equal(dmf_store_task_save(f->s, &t), 0);
    uint8_t d[DMF_SHA256_LEN];
    memset(d, 9, sizeof(d));
    assert_int_equal(dmf_store_piece_put(f->s, ID_B, 3, d), 0);

    struct dmf_store_task *got = NULL;
    assert_int_equal(dmf_store_task_load(f->s, ID_B, &got), 0);
    assert_int_equal(got->content_length, -1);
    assert_true(got->ndigests >= 4);
    assert_true(dmf_bitmap_get(&got->have, 3));
    assert_false(dmf_bitmap_get(&got->have, 2));
    assert_memory_equal(got->digests[3], d, DMF_SHA256_LEN);
    dmf_store_task_free(got);
}

/* The restart case: what a daemon verified is still held after close and reopen. */
static void test_pieces_survive_restart(void **state)
{
    struct fixture *f = *state;
    int64_t len = 3 * PL + 100;
    struct dmf_store_task t = task_of(ID_A, len);
    assert_int_equal(dmf_store_task_save(f->s, &t), 0);
    uint8_t d0[DMF_SHA256_LEN], d3[DMF_SHA256_LEN];
    write_piece(f, ID_A, len, 0, d0);
    write_piece(f, ID_A, len, 3, d3);

    reopen(f);

    struct dmf_store_task *got = NULL;
    assert_int_equal(dmf_store_task_load(f->s, ID_A, &got), 0);
    assert_int_equal(got->have.count, 2);
    assert_true(got->have.nbits >= 4);
    assert_true(dmf_bitmap_get(&got->have, 0));
    assert_false(dmf_bitmap_get(&got->have, 1));
    assert_false(dmf_bitmap_get(&got->have, 2));
    assert_true(dmf_bitmap_get(&got->have, 3));
    assert_true(got->ndigests >= 4);
    assert_memory_equal(got->digests[0], d0, DMF_SHA256_LEN);
    assert_memory_equal(got->digests[3], d3, DMF_SHA256_LEN);
    dmf_store_task_free(got);

    /* The bytes are where the piece says. */
    int fd = dmf_store_open_data(f->s, ID_A, NULL);
    assert_true(fd >= 0);
    uint8_t check[DMF_SHA256_LEN];
    assert_int_equal(dmf_sha256_fd(fd, dmf_piece_offset(PL, 3), 100, check), 0);
    assert_memory_equal(check, d3, DMF_SHA256_LEN);
    close(fd);
}

static void test_piece_put_idempotent_and_drop(void **state)
{
    struct fixture *f = *state;
    struct dmf_store_task t = task_of(ID_A, 4 * PL);
    t.complete = true;
    assert_int_equal(dmf_store_task_save(f->s, &t), 0);
    uint8_t d1[DMF_SHA256_LEN], d2[DMF_SHA256_LEN];
    memset(d1, 1, sizeof(d1));
    memset(d2, 2, sizeof(d2));
    assert_int_equal(dmf_store_piece_put(f->s, ID_A, 1, d1), 0);
    assert_int_equal(dmf_store_piece_put(f->s, ID_A, 1, d1), 0);
    assert_int_equal(dmf_store_piece_put(f->s, ID_A, 2, d1), 0);
    assert_int_equal(dmf_store_piece_put(f->s, ID_A, 2, d2), 0); /* replaces the digest */

    struct dmf_store_task *got = NULL;
    assert_int_equal(dmf_store_task_load(f->s, ID_A, &got), 0);
    assert_int_equal(got->have.count, 2);
    assert_memory_equal(got->digests[2], d2, DMF_SHA256_LEN);
    dmf_store_task_free(got);

    assert_int_equal(dmf_store_piece_drop(f->s, ID_A, 1), 0);
    assert_int_equal(dmf_store_piece_drop(f->s, ID_A, 1), 0); /* already gone: fine */
    assert_int_equal(dmf_store_task_load(f->s, ID_A, &got), 0);
    assert_int_equal(got->have.count, 1);
    assert_false(dmf_bitmap_get(&got->have, 1));
    assert_true(dmf_bitmap_get(&got->have, 2));
    assert_false(got->complete); /* a task missing a piece is not complete */
    dmf_store_task_free(got);

    /* A piece of a task that was never saved is not recorded (the writer skips it; the
     * batch around it still lands). */
    assert_int_equal(dmf_store_piece_put(f->s, ID_B, 0, d1), 0);
    assert_int_equal(dmf_store_piece_put(f->s, ID_A, 3, d1), 0);
    dmf_store_flush(f->s);
    assert_int_equal(dmf_store_task_load(f->s, ID_B, &got), -ENOENT);
    assert_int_equal(dmf_store_task_load(f->s, ID_A, &got), 0);
    assert_true(dmf_bitmap_get(&got->have, 3));
    dmf_store_task_free(got);
}

static void test_delete(void **state)
{
    struct fixture *f = *state;
    int64_t len = 2 * PL;
    struct dmf_store_task t = task_of(ID_A, len);
    assert_int_equal(dmf_store_task_save(f->s, &t), 0);
    uint8_t d[DMF_SHA256_LEN];
    write_piece(f, ID_A, len, 1, d);
    char *path = NULL;
    int fd = dmf_store_open_data(f->s, ID_A, &path);
    assert_true(fd >= 0);
    close(fd);
    char *expected = dmf_xasprintf("%s/tasks/012/%s/data", f->dir, ID_A);
    assert_string_equal(path, expected);
    free(expected);

    assert_int_equal(dmf_store_task_delete(f->s, ID_A), 0);
    struct stat sb;
    assert_int_equal(stat(path, &sb), -1);
    char *dir = dmf_xasprintf("%s/tasks/012", f->dir);
    assert_int_equal(stat(dir, &sb), -1); /* the empty prefix directory went too */
    free(dir);
    free(path);
    struct dmf_store_task *got = NULL;
    assert_int_equal(dmf_store_task_load(f->s, ID_A, &got), -ENOENT);
    assert_int_equal(dmf_store_task_delete(f->s, ID_A), -ENOENT);

    /* The piece rows went with the task: a new task under the same id starts empty. */
    assert_int_equal(dmf_store_task_save(f->s, &t), 0);
    assert_int_equal(dmf_store_task_load(f->s, ID_A, &got), 0);
    assert_int_equal(got->have.count, 0);
    dmf_store_task_free(got);
}

static void test_list(void **state)
{
    struct fixture *f = *state;
    struct dmf_strlist ids = {0};
    assert_int_equal(dmf_store_task_list(f->s, &ids), 0);
    assert_int_equal(ids.n, 0);

    struct dmf_store_task a = task_of(ID_A, 10), b = task_of(ID_B, 20);
    assert_int_equal(dmf_store_task_save(f->s, &a), 0);
    assert_int_equal(dmf_store_task_save(f->s, &b), 0);
    assert_int_equal(dmf_store_task_list(f->s, &ids), 0);
    assert_int_equal(ids.n, 2);
    bool seen_a = false, seen_b = false;
    for (size_t i = 0; i < ids.n; i++) {
        seen_a |= strcmp(ids.v[i], ID_A) == 0;
        seen_b |= strcmp(ids.v[i], ID_B) == 0;
    }
    assert_true(seen_a && seen_b);
    dmf_strlist_free(&ids);
}

static void test_invalid_id_rejected(void **state)
{
    struct fixture *f = *state;
    static const char *const bad[] = {
        "",
        "../../../../etc/passwd",
        "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",  /* upper case */
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde",   /* 63 */
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0", /* 65 */
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd/.",
    };
    uint8_t d[DMF_SHA256_LEN] = {0};
    for (size_t i = 0; i < DMF_ARRAY_SIZE(bad); i++) {
        struct dmf_store_task *got = NULL;
        char *path = NULL;
        assert_int_equal(dmf_store_open_data(f->s, bad[i], &path), -EINVAL);
        assert_null(path);
        assert_int_equal(dmf_store_task_load(f->s, bad[i], &got), -EINVAL);
        assert_int_equal(dmf_store_piece_put(f->s, bad[i], 0, d), -EINVAL);
        assert_int_equal(dmf_store_piece_drop(f->s, bad[i], 0), -EINVAL);
        assert_int_equal(dmf_store_task_delete(f->s, bad[i]), -EINVAL);
        if (strlen(bad[i]) <= DMF_TASK_ID_LEN) { /* a longer one does not fit the struct */
            struct dmf_store_task t = {.content_length = -1};
            snprintf(t.id, sizeof(t.id), "%s", bad[i]);
            assert_int_equal(dmf_store_task_save(f->s, &t), -EINVAL);
        }
    }
    /* Nothing was created outside the tasks directory. */
    struct stat sb;
    assert_int_equal(stat("/etc/passwd/data", &sb), -1);
}

/* One piece written at a high offset must not allocate the file up to that offset. */
static void test_data_file_is_sparse(void **state)
{
    struct fixture *f = *state;
    int64_t len = (int64_t)1024 * PL; /* 1 GiB */
    struct dmf_store_task t = task_of(ID_A, len);
    assert_int_equal(dmf_store_task_save(f->s, &t), 0);
    uint8_t d[DMF_SHA256_LEN];
    write_piece(f, ID_A, len, 1000, d);

    int fd = dmf_store_open_data(f->s, ID_A, NULL);
    assert_true(fd >= 0);
    struct stat sb;
    assert_int_equal(fstat(fd, &sb), 0);
    close(fd);
    assert_int_equal(sb.st_size, len); /* sized to the content length */
    assert_true((int64_t)sb.st_blocks * 512 < 4 * (int64_t)PL);
}

static void test_corrupt_db(void **state)
{
    char dir[64];
    snprintf(dir, sizeof(dir), "/tmp/dmf-store-XXXXXX");
    assert_non_null(mkdtemp(dir));
    char *db = dmf_xasprintf("%s/meta.db", dir);
    FILE *fp = fopen(db, "w");
    assert_non_null(fp);
    for (int i = 0; i < 512; i++)
        fputs("this is not a database ", fp);
    fclose(fp);

    dmf_store_t *s = NULL;
    char err[512] = "";
    int r = dmf_store_open(dir, &s, err, sizeof(err));
    assert_true(r < 0);
    assert_null(s);
    assert_non_null(strstr(err, "corrupt"));
    assert_non_null(strstr(err, db));

    char *cmd = dmf_xasprintf("rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    free(cmd);
    free(db);
}

static void test_unwritable_dir(void **state)
{
    dmf_store_t *s = NULL;
    char err[512] = "";
    int r = dmf_store_open("/proc/dmf-no-such-dir", &s, err, sizeof(err));
    assert_true(r < 0);
    assert_null(s);
    assert_non_null(strstr(err, "cannot create /proc/dmf-no-such-dir/tasks"));
}

static void test_second_open_refused(void **state)
{
    struct fixture *f = *state;
    dmf_store_t *s2 = NULL;
    char err[512] = "";
    assert_int_equal(dmf_store_open(f->dir, &s2, err, sizeof(err)), -EBUSY);
    assert_null(s2);
    assert_non_null(strstr(err, "in use"));
}

/* Rewrites the session record left by the last close, as a crash would have left it. */
static void fake_unclean(const char *dir, const char *boot_id)
{
    char *path = dmf_xasprintf("%s/meta.db", dir);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    char *sql = sqlite3_mprintf("UPDATE meta SET value = '0' WHERE key = 'clean';"
                                "UPDATE meta SET value = %Q WHERE key = 'boot_id'",
                                boot_id);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_free(sql);
    sqlite3_close(db);
    free(path);
}

static void current_boot_id(char *buf, size_t len)
{
    buf[0] = '\0';
    FILE *fp = fopen("/proc/sys/kernel/random/boot_id", "r");
    if (fp != NULL) {
        if (fgets(buf, (int)len, fp) == NULL)
            buf[0] = '\0';
        fclose(fp);
    }
    buf[strcspn(buf, "\n")] = '\0';
}

/* After a power loss a recorded piece may have lost its bytes: the next open re-hashes
 * and drops it. After a mere process crash (same boot) nothing is re-read. */
static void test_power_loss_recheck(void **state)
{
    struct fixture *f = *state;
    int64_t len = 3 * PL;
    struct dmf_store_task t = task_of(ID_A, len);
    t.complete = true;
    assert_int_equal(dmf_store_task_save(f->s, &t), 0);
    uint8_t d[DMF_SHA256_LEN];
    for (uint32_t n = 0; n < 3; n++)
        write_piece(f, ID_A, len, n, d);
    /* Piece 1's bytes "never reached the disk". */
    int fd = dmf_store_open_data(f->s, ID_A, NULL);
    assert_true(fd >= 0);
    uint8_t zero[4096] = {0};
    assert_int_equal(pwrite(fd, zero, sizeof(zero), PL), (ssize_t)sizeof(zero));
    close(fd);
    dmf_store_close(f->s);
    f->s = NULL;

    char boot[64];
    current_boot_id(boot, sizeof(boot));
    char err[256] = "";
    struct dmf_store_task *got = NULL;
    if (boot[0] != '\0') {
        /* Same boot: the page cache was never lost; the record is trusted as it is. */
        fake_unclean(f->dir, boot);
        assert_int_equal(dmf_store_open(f->dir, &f->s, err, sizeof(err)), 0);
        assert_int_equal(dmf_store_task_load(f->s, ID_A, &got), 0);
        assert_int_equal(got->have.count, 3);
        dmf_store_task_free(got);
        dmf_store_close(f->s);
        f->s = NULL;
    }

    fake_unclean(f->dir, "another-boot");
    assert_int_equal(dmf_store_open(f->dir, &f->s, err, sizeof(err)), 0);
    assert_int_equal(dmf_store_task_load(f->s, ID_A, &got), 0);
    assert_int_equal(got->have.count, 2);
    assert_true(dmf_bitmap_get(&got->have, 0));
    assert_false(dmf_bitmap_get(&got->have, 1));
    assert_true(dmf_bitmap_get(&got->have, 2));
    assert_false(got->complete);
    dmf_store_task_free(got);
}

/* The origin's validators and the last validation survive a restart. */
static void test_validators_persisted(void **state)
{
    struct fixture *f = *state;
    struct dmf_store_task t = {.id = ID_A,
                               .url = "http://o/x",
                               .content_length = 10,
                               .piece_length = PL,
                               .total_pieces = 1,
                               .complete = true,
                               .etag = "\"v1\"",
                               .last_modified = "Mon, 01 Jan 2024 00:00:00 GMT",
                               .validated_at = 1700000000};
    assert_int_equal(dmf_store_task_save(f->s, &t), 0);
    reopen(f);
    struct dmf_store_task *got;
    assert_int_equal(dmf_store_task_load(f->s, ID_A, &got), 0);
    assert_string_equal(got->etag, "\"v1\"");
    assert_string_equal(got->last_modified, "Mon, 01 Jan 2024 00:00:00 GMT");
    assert_int_equal(got->validated_at, 1700000000);
    dmf_store_task_free(got);
    /* None sent by the origin: none kept (not ""). */
    t.etag = NULL;
    t.last_modified = "";
    assert_int_equal(dmf_store_task_save(f->s, &t), 0);
    assert_int_equal(dmf_store_task_load(f->s, ID_A, &got), 0);
    assert_null(got->etag);
    assert_null(got->last_modified);
    dmf_store_task_free(got);
}

/* A data dir made by a daemon of schema version 1 opens, keeps its tasks and pieces, and
 * gets the new columns (no validators, never validated). */
static void test_migrates_schema_v1(void **state)
{
    char dir[64];
    snprintf(dir, sizeof(dir), "/tmp/dmf-store-XXXXXX");
    assert_non_null(mkdtemp(dir));
    char *db_path = dmf_xasprintf("%s/meta.db", dir);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(db_path, &db), SQLITE_OK);
    const char *v1 =
        "CREATE TABLE tasks (id TEXT PRIMARY KEY NOT NULL, url TEXT,"
        " content_length INTEGER NOT NULL DEFAULT -1, piece_length INTEGER NOT NULL DEFAULT 0,"
        " total_pieces INTEGER NOT NULL DEFAULT 0, complete INTEGER NOT NULL DEFAULT 0,"
        " content_digest TEXT, created_at INTEGER NOT NULL, accessed_at INTEGER NOT NULL);"
        "CREATE INDEX tasks_by_access ON tasks (accessed_at);"
        "CREATE TABLE pieces (task_id TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,"
        " num INTEGER NOT NULL, digest BLOB NOT NULL CHECK (length(digest) = 32),"
        " PRIMARY KEY (task_id, num)) WITHOUT ROWID;"
        "CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value TEXT) WITHOUT ROWID;"
        "INSERT INTO tasks VALUES ('" ID_A "', 'http://o/old', 5, 1048576, 1, 1, NULL, 1, 1);"
        "INSERT INTO pieces VALUES ('" ID_A "', 0, zeroblob(32));"
        "PRAGMA user_version = 1;";
    assert_int_equal(sqlite3_exec(db, v1, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);

    dmf_store_t *s;
    char err[256] = "";
    assert_int_equal(dmf_store_open(dir, &s, err, sizeof(err)), 0);
    struct dmf_store_task *got;
    assert_int_equal(dmf_store_task_load(s, ID_A, &got), 0);
    assert_string_equal(got->url, "http://o/old");
    assert_true(got->complete);
    assert_true(dmf_bitmap_get(&got->have, 0));
    assert_null(got->etag);
    assert_int_equal(got->validated_at, 0);
    got->etag = dmf_xstrdup("\"e\"");
    assert_int_equal(dmf_store_task_save(s, got), 0);
    dmf_store_task_free(got);
    dmf_store_close(s);
    /* Opened again: already version 2, the saved validator is there. */
    assert_int_equal(dmf_store_open(dir, &s, err, sizeof(err)), 0);
    assert_int_equal(dmf_store_task_load(s, ID_A, &got), 0);
    assert_string_equal(got->etag, "\"e\"");
    dmf_store_task_free(got);
    dmf_store_close(s);
    assert_int_equal(sqlite3_open(db_path, &db), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 2);
    sqlite3_finalize(st);
    sqlite3_close(db);
    char *cmd = dmf_xasprintf("rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    free(cmd);
    free(db_path);
}

/* Piece rows go through the writer's queue; a drop or a delete after a put takes the
 * queued row with it, so the put never lands after them (even on a task saved again). */
static void test_queued_rows_do_not_outlive_drop_or_delete(void **state)
{
    struct fixture *f = *state;
    int64_t len = 4 * PL;
    struct dmf_store_task t = task_of(ID_A, len), *got;
    assert_int_equal(dmf_store_task_save(f->s, &t), 0);
    uint8_t d[DMF_SHA256_LEN];
    memset(d, 7, sizeof(d));
    for (uint32_t n = 0; n < 4; n++)
        assert_int_equal(dmf_store_piece_put(f->s, ID_A, n, d), 0);
    assert_int_equal(dmf_store_piece_drop(f->s, ID_A, 2), 0);
    dmf_store_flush(f->s);
    assert_int_equal(dmf_store_task_load(f->s, ID_A, &got), 0);
    assert_int_equal(got->have.count, 3);
    assert_false(dmf_bitmap_get(&got->have, 2));
    dmf_store_task_free(got);

    for (uint32_t n = 0; n < 4; n++)
        assert_int_equal(dmf_store_piece_put(f->s, ID_A, n, d), 0);
    assert_int_equal(dmf_store_task_delete(f->s, ID_A), 0);
    assert_int_equal(dmf_store_task_save(f->s, &t), 0); /* a new download of the task */
    dmf_store_flush(f->s);
    assert_int_equal(dmf_store_task_load(f->s, ID_A, &got), 0);
    assert_int_equal(got->have.count, 0);
    dmf_store_task_free(got);

    /* Rows still queued at close are committed: the next open finds them. */
    for (uint32_t n = 0; n < 4; n++)
        assert_int_equal(dmf_store_piece_put(f->s, ID_A, n, d), 0);
    reopen(f);
    assert_int_equal(dmf_store_task_load(f->s, ID_A, &got), 0);
    assert_int_equal(got->have.count, 4);
    dmf_store_task_free(got);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_save_load_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_length, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pieces_survive_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_piece_put_idempotent_and_drop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_id_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_data_file_is_sparse, setup, teardown),
        cmocka_unit_test(test_corrupt_db),
        cmocka_unit_test(test_unwritable_dir),
        cmocka_unit_test_setup_teardown(test_second_open_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_power_loss_recheck, setup, teardown),
        cmocka_unit_test_setup_teardown(test_validators_persisted, setup, teardown),
        cmocka_unit_test(test_migrates_schema_v1),
        cmocka_unit_test_setup_teardown(test_queued_rows_do_not_outlive_drop_or_delete, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
