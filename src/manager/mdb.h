/* The manager's database: one small interface over SQLite (the default) and PostgreSQL
 * (libpq), one schema and versioned migrations (migrations.h) for both.
 *
 * SQL is written once for both backends: parameters are $1..$n (SQLite reads "$1" as a
 * named parameter; it is bound by name), integers are BIGINT, times are Unix seconds,
 * booleans are 0/1 integers, and "RETURNING id" gives a new row's id. Every call blocks:
 * it must run on a worker thread (dmf_workq), never on the event loop. A handle is used by
 * one thread at a time: take it with dmf_mdb_lock() for a whole unit of work (a
 * transaction), give it back with dmf_mdb_unlock(). */
#ifndef DMF_MANAGER_MDB_H
#define DMF_MANAGER_MDB_H

#include <jansson.h>
#include <stddef.h>

typedef struct dmf_mdb dmf_mdb_t;

enum dmf_mdb_kind { DMF_MDB_SQLITE, DMF_MDB_POSTGRES };

/* Most parameters one statement takes. */
#define DMF_MDB_MAX_PARAMS 16

/* Opens "sqlite:PATH" or "postgres://..." / "postgresql://..." and applies every pending
 * migration. Returns 0 and *out (caller frees with dmf_mdb_close), or a negative code with
 * a reason in err (the URL's password is never written there). */
int dmf_mdb_open(const char *url, dmf_mdb_t **out, char *err, size_t errlen);
void dmf_mdb_close(dmf_mdb_t *db);

enum dmf_mdb_kind dmf_mdb_kind(const dmf_mdb_t *db);
/* The schema version the database is at (after dmf_mdb_open: the latest). */
int dmf_mdb_version(const dmf_mdb_t *db);

void dmf_mdb_lock(dmf_mdb_t *db);
void dmf_mdb_unlock(dmf_mdb_t *db);

/* Runs one statement with text parameters (NULL = SQL NULL). With rows != NULL, *rows is a
 * new JSON array of objects (column name -> integer for integer columns, string, or null);
 * the caller decrefs it. Returns 0, -EEXIST for a unique-constraint violation, or -EIO with
 * the database's message in err. */
int dmf_mdb_exec(dmf_mdb_t *db, const char *sql, const char *const *params, size_t nparams,
                 json_t **rows, char *err, size_t errlen);

/* Convenience: the first row of a query (a new reference), or NULL when there is none or
 * on error (then err is filled when not NULL). */
json_t *dmf_mdb_row(dmf_mdb_t *db, const char *sql, const char *const *params, size_t nparams,
                    char *err, size_t errlen);

/* BEGIN / COMMIT / ROLLBACK; each returns 0 or -EIO. */
int dmf_mdb_begin(dmf_mdb_t *db);
int dmf_mdb_commit(dmf_mdb_t *db);
void dmf_mdb_rollback(dmf_mdb_t *db);

#endif
