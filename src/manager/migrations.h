/* The manager's schema as an ordered list of migrations. Migration n moves the schema from
 * version n-1 to n; the applied ones are recorded in schema_migrations(version). The SQL
 * of each is written once; "%ID%" stands for the backend's auto-increment primary key. */
#ifndef DMF_MANAGER_MIGRATIONS_H
#define DMF_MANAGER_MIGRATIONS_H

#include <stddef.h>

struct dmf_migration {
    int version;            /* 1, 2, 3... without gaps */
    const char *name;       /* what it does, for the log */
    const char *const *sql; /* statements, NULL-terminated */
};

/* The migrations in order; *n gets their count. */
const struct dmf_migration *dmf_migrations(size_t *n);

/* Writes statement with "%ID%" replaced by id_type into a new string (caller frees). */
char *dmf_migration_render(const char *statement, const char *id_type);

#endif
