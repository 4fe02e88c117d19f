/* The manager's database over SQLite or libpq; see mdb.h. */
#include "manager/mdb.h"

#include <errno.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/util.h"
#include "manager/migrations.h"

/* PostgreSQL type OIDs of the integer types (pg_type.h). */
#define PG_INT8 20
#define PG_INT2 21
#define PG_INT4 23

struct dmf_mdb {
    enum dmf_mdb_kind kind;
    sqlite3 *lite;
    PGconn *pg;
    pthread_mutex_t lock;
    int version;
};

enum dmf_mdb_kind dmf_mdb_kind(const dmf_mdb_t *db)
{
    return db->kind;
}

int dmf_mdb_version(const dmf_mdb_t *db)
{
    return db->version;
}

void dmf_mdb_lock(dmf_mdb_t *db)
{
    pthread_mutex_lock(&db->lock);
}

void dmf_mdb_unlock(dmf_mdb_t *db)
{
    pthread_mutex_unlock(&db->lock);
}

static void set_err(char *err, size_t errlen, const char *msg)
{
    if (err && errlen)
        snprintf(err, errlen, "%s", msg);
}

/* ---- SQLite */

static int lite_exec(dmf_mdb_t *db, const char *sql, const char *const *params, size_t n,
                     json_t **rows, char *err, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    int rc = -EIO;
    json_t *out = rows ? json_array() : NULL;
    if (sqlite3_prepare_v2(db->lite, sql, -1, &st, NULL) != SQLITE_OK) {
        set_err(err, errlen, sqlite3_errmsg(db->lite));
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        char name[24];
        snprintf(name, sizeof(name), "$%zu", i + 1);
        int idx = sqlite3_bind_parameter_index(st, name);
        if (idx == 0)
            continue;
        if (params[i])
            sqlite3_bind_text(st, idx, params[i], -1, SQLITE_TRANSIENT);
        else
            sqlite3_bind_null(st, idx);
    }
    int s;
    while ((s = sqlite3_step(st)) == SQLITE_ROW) {
        if (!out)
            continue;
        json_t *row = json_object();
        int nc = sqlite3_column_count(st);
        for (int c = 0; c < nc; c++) {
            const char *col = sqlite3_column_name(st, c);
            switch (sqlite3_column_type(st, c)) {
            case SQLITE_INTEGER:
                json_object_set_new(row, col, json_integer(sqlite3_column_int64(st, c)));
                break;
            case SQLITE_NULL:
                json_object_set_new(row, col, json_null());
                break;
            default:
                json_object_set_new(row, col,
                                    json_string((const char *)sqlite3_column_text(st, c)));
            }
        }
        json_array_append_new(out, row);
    }
    if (s != SQLITE_DONE) {
        rc = (sqlite3_extended_errcode(db->lite) == SQLITE_CONSTRAINT_UNIQUE ||
              sqlite3_extended_errcode(db->lite) == SQLITE_CONSTRAINT_PRIMARYKEY)
                 ? -EEXIST
                 : -EIO;
        set_err(err, errlen, sqlite3_errmsg(db->lite));
        goto out;
    }
    rc = 0;
out:
    sqlite3_finalize(st);
    if (rc == 0 && rows)
        *rows = out;
    else if (out)
        json_decref(out);
    return rc;
}

static int lite_open(dmf_mdb_t *db, const char *path, char *err, size_t errlen)
{
    if (sqlite3_open_v2(path, &db->lite,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        snprintf(err, errlen, "cannot open %s: %s", path,
                 db->lite ? sqlite3_errmsg(db->lite) : "out of memory");
        return -EIO;
    }
    sqlite3_busy_timeout(db->lite, 5000);
    const char *pragmas[] = {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL",
                             "PRAGMA foreign_keys=ON"};
    for (size_t i = 0; i < DMF_ARRAY_SIZE(pragmas); i++) {
        char e[256];
        if (lite_exec(db, pragmas[i], NULL, 0, NULL, e, sizeof(e)) != 0) {
            snprintf(err, errlen, "%s: %s", path, e);
            return -EIO;
        }
    }
    return 0;
}

/* ---- PostgreSQL */

static int pg_exec(dmf_mdb_t *db, const char *sql, const char *const *params, size_t n,
                   json_t **rows, char *err, size_t errlen)
{
    /* A server that restarted (or a dropped connection): connect again once. */
    if (PQstatus(db->pg) == CONNECTION_BAD) {
        PQreset(db->pg);
        if (PQstatus(db->pg) == CONNECTION_OK)
            dmf_warn("database: reconnected to postgres");
    }
    PGresult *r = PQexecParams(db->pg, sql, (int)n, NULL, params, NULL, NULL, 0);
    ExecStatusType s = PQresultStatus(r);
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) {
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        int rc = state && strcmp(state, "23505") == 0 ? -EEXIST : -EIO;
        char msg[512];
        snprintf(msg, sizeof(msg), "%s", PQerrorMessage(db->pg));
        msg[strcspn(msg, "\n")] = '\0';
        set_err(err, errlen, msg);
        PQclear(r);
        return rc;
    }
    if (rows) {
        json_t *out = json_array();
        int nr = PQntuples(r), nc = PQnfields(r);
        for (int i = 0; i < nr; i++) {
            json_t *row = json_object();
            for (int c = 0; c < nc; c++) {
                const char *col = PQfname(r, c);
                Oid t = PQftype(r, c);
                if (PQgetisnull(r, i, c))
                    json_object_set_new(row, col, json_null());
                else if (t == PG_INT8 || t == PG_INT4 || t == PG_INT2)
                    json_object_set_new(row, col,
                                        json_integer(strtoll(PQgetvalue(r, i, c), NULL, 10)));
                else
                    json_object_set_new(row, col, json_string(PQgetvalue(r, i, c)));
            }
            json_array_append_new(out, row);
        }
        *rows = out;
    }
    PQclear(r);
    return 0;
}

static void on_pg_notice(void *arg, const char *message)
{
    dmf_debug("postgres: %.*s", (int)strcspn(message, "\n"), message);
}

static int pg_open(dmf_mdb_t *db, const char *url, char *err, size_t errlen)
{
    db->pg = PQconnectdb(url);
    if (PQstatus(db->pg) != CONNECTION_OK) {
        char msg[512];
        snprintf(msg, sizeof(msg), "%s", PQerrorMessage(db->pg));
        msg[strcspn(msg, "\n")] = '\0';
        snprintf(err, errlen, "cannot connect to postgres: %s", msg);
        return -EIO;
    }
    PQsetNoticeProcessor(db->pg, on_pg_notice, NULL);
    return 0;
}

/* ---- both */

int dmf_mdb_exec(dmf_mdb_t *db, const char *sql, const char *const *params, size_t nparams,
                 json_t **rows, char *err, size_t errlen)
{
    if (nparams > DMF_MDB_MAX_PARAMS) {
        set_err(err, errlen, "too many parameters");
        return -EINVAL;
    }
    if (db->kind == DMF_MDB_SQLITE)
        return lite_exec(db, sql, params, nparams, rows, err, errlen);
    return pg_exec(db, sql, params, nparams, rows, err, errlen);
}

json_t *dmf_mdb_row(dmf_mdb_t *db, const char *sql, const char *const *params, size_t nparams,
                    char *err, size_t errlen)
{
    json_t *rows = NULL;
    if (dmf_mdb_exec(db, sql, params, nparams, &rows, err, errlen) != 0)
        return NULL;
    json_t *row = json_array_get(rows, 0);
    json_incref(row);
    json_decref(rows);
    return row;
}

int dmf_mdb_begin(dmf_mdb_t *db)
{
    char e[256];
    int rc = dmf_mdb_exec(db, db->kind == DMF_MDB_SQLITE ? "BEGIN IMMEDIATE" : "BEGIN", NULL, 0,
                          NULL, e, sizeof(e));
    if (rc != 0)
        dmf_warn("database: begin: %s", e);
    return rc;
}

int dmf_mdb_commit(dmf_mdb_t *db)
{
    char e[256];
    int rc = dmf_mdb_exec(db, "COMMIT", NULL, 0, NULL, e, sizeof(e));
    if (rc != 0) {
        dmf_warn("database: commit: %s", e);
        dmf_mdb_rollback(db);
    }
    return rc;
}

void dmf_mdb_rollback(dmf_mdb_t *db)
{
    (void)dmf_mdb_exec(db, "ROLLBACK", NULL, 0, NULL, NULL, 0);
}

/* Applies every migration above the recorded version, each in its own transaction. On
 * PostgreSQL an advisory lock keeps two managers starting at once from racing. */
static int migrate(dmf_mdb_t *db, char *err, size_t errlen)
{
    char e[512];
    int rc = -EIO;
    bool pg = db->kind == DMF_MDB_POSTGRES;
    if (pg && dmf_mdb_exec(db, "SELECT pg_advisory_lock(72656)", NULL, 0, NULL, e, sizeof(e))) {
        snprintf(err, errlen, "migrations: %s", e);
        return -EIO;
    }
    if (dmf_mdb_exec(db,
                     "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY,"
                     " name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
                     NULL, 0, NULL, e, sizeof(e)) != 0) {
        snprintf(err, errlen, "migrations: %s", e);
        goto out;
    }
    json_t *row = dmf_mdb_row(db, "SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations",
                              NULL, 0, e, sizeof(e));
    if (!row) {
        snprintf(err, errlen, "migrations: %s", e);
        goto out;
    }
    db->version = (int)json_integer_value(json_object_get(row, "v"));
    json_decref(row);
    size_t n;
    const struct dmf_migration *m = dmf_migrations(&n);
    if (db->version > m[n - 1].version) {
        snprintf(err, errlen, "database schema is at version %d, newer than this manager (%d)",
                 db->version, m[n - 1].version);
        goto out;
    }
    const char *id_type = pg ? "BIGSERIAL PRIMARY KEY" : "INTEGER PRIMARY KEY AUTOINCREMENT";
    for (size_t i = 0; i < n; i++) {
        if (m[i].version <= db->version)
            continue;
        if (dmf_mdb_begin(db) != 0) {
            snprintf(err, errlen, "migration %d: cannot begin", m[i].version);
            goto out;
        }
        for (const char *const *s = m[i].sql; *s; s++) {
            char *sql = dmf_migration_render(*s, id_type);
            int r = dmf_mdb_exec(db, sql, NULL, 0, NULL, e, sizeof(e));
            free(sql);
            if (r != 0) {
                dmf_mdb_rollback(db);
                snprintf(err, errlen, "migration %d (%s): %s", m[i].version, m[i].name, e);
                goto out;
            }
        }
        char v[16], at[24];
        snprintf(v, sizeof(v), "%d", m[i].version);
        snprintf(at, sizeof(at), "%lld", (long long)time(NULL));
        const char *p[] = {v, m[i].name, at};
        if (dmf_mdb_exec(db,
                         "INSERT INTO schema_migrations (version, name, applied_at)"
                         " VALUES ($1, $2, $3)",
                         p, 3, NULL, e, sizeof(e)) != 0 ||
            dmf_mdb_commit(db) != 0) {
            dmf_mdb_rollback(db);
            snprintf(err, errlen, "migration %d: %s", m[i].version, e);
            goto out;
        }
        db->version = m[i].version;
        dmf_info("database: migration %d applied (%s)", m[i].version, m[i].name);
    }
    rc = 0;
out:
    if (pg)
        (void)dmf_mdb_exec(db, "SELECT pg_advisory_unlock(72656)", NULL, 0, NULL, NULL, 0);
    return rc;
}

int dmf_mdb_open(const char *url, dmf_mdb_t **out, char *err, size_t errlen)
{
    dmf_mdb_t *db = dmf_xcalloc(1, sizeof(*db));
    pthread_mutex_init(&db->lock, NULL);
    int rc;
    if (strncmp(url, "sqlite:", 7) == 0) {
        db->kind = DMF_MDB_SQLITE;
        rc = lite_open(db, url + 7, err, errlen);
    } else if (strncmp(url, "postgres://", 11) == 0 || strncmp(url, "postgresql://", 13) == 0) {
        db->kind = DMF_MDB_POSTGRES;
        rc = pg_open(db, url, err, errlen);
    } else {
        snprintf(err, errlen, "--database: expected sqlite:PATH or postgres://...");
        rc = -EINVAL;
    }
    if (rc == 0)
        rc = migrate(db, err, errlen);
    if (rc != 0) {
        dmf_mdb_close(db);
        return rc;
    }
    *out = db;
    return 0;
}

void dmf_mdb_close(dmf_mdb_t *db)
{
    if (!db)
        return;
    if (db->lite)
        sqlite3_close(db->lite);
    if (db->pg)
        PQfinish(db->pg);
    pthread_mutex_destroy(&db->lock);
    free(db);
}
