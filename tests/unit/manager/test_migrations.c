/* The migrations list: versions 1..n without gaps, every statement rendered for both
 * backends, and applied once on a fresh SQLite database (then not again). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "manager/mdb.h"
#include "manager/migrations.h"

static void test_list(void **state)
{
    size_t n;
    const struct dmf_migration *m = dmf_migrations(&n);
    assert_true(n >= 3);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(m[i].version, (int)i + 1);
        assert_non_null(m[i].name);
        assert_non_null(m[i].sql[0]);
    }
}

static void test_render(void **state)
{
    char *s = dmf_migration_render("CREATE TABLE t (id %ID%, x %ID%)", "BIGSERIAL PRIMARY KEY");
    assert_string_equal(s, "CREATE TABLE t (id BIGSERIAL PRIMARY KEY, x BIGSERIAL PRIMARY KEY)");
    free(s);
    s = dmf_migration_render("no placeholder", "X");
    assert_string_equal(s, "no placeholder");
    free(s);
}

static void test_sqlite_applies_once(void **state)
{
    char dir[] = "/tmp/dmf-mig-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char url[300], path[200], err[512];
    snprintf(path, sizeof(path), "%s/m.db", dir);
    snprintf(url, sizeof(url), "sqlite:%s", path);
    size_t n;
    dmf_migrations(&n);
    dmf_mdb_t *db = NULL;
    assert_int_equal(dmf_mdb_open(url, &db, err, sizeof(err)), 0);
    assert_int_equal(dmf_mdb_version(db), (int)n);
    json_t *rows = NULL;
    assert_int_equal(dmf_mdb_exec(db, "SELECT version FROM schema_migrations ORDER BY version",
                                  NULL, 0, &rows, err, sizeof(err)),
                     0);
    assert_int_equal(json_array_size(rows), n);
    json_decref(rows);
    /* Parameters by number, integers back as integers, unique violations as -EEXIST. */
    const char *p[] = {"c1", "b", "{}", "{}", "0", "5"};
    const char *ins = "INSERT INTO clusters (name, bio, scopes, config, is_default, created_at,"
                      " updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING id, created_at";
    assert_int_equal(dmf_mdb_exec(db, ins, p, 6, &rows, err, sizeof(err)), 0);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(rows, 0), "created_at")), 5);
    json_decref(rows);
    assert_int_equal(dmf_mdb_exec(db, ins, p, 6, NULL, err, sizeof(err)), -17);
    dmf_mdb_close(db);
    /* A second open applies nothing. */
    assert_int_equal(dmf_mdb_open(url, &db, err, sizeof(err)), 0);
    assert_int_equal(dmf_mdb_version(db), (int)n);
    json_t *row = dmf_mdb_row(db, "SELECT COUNT(*) AS c FROM schema_migrations", NULL, 0, NULL, 0);
    assert_int_equal(json_integer_value(json_object_get(row, "c")), n);
    json_decref(row);
    /* A newer schema than this build knows is refused. */
    const char *v[] = {"999"};
    assert_int_equal(dmf_mdb_exec(db,
                                  "INSERT INTO schema_migrations (version, name, applied_at)"
                                  " VALUES ($1, 'future', 0)",
                                  v, 1, NULL, err, sizeof(err)),
                     0);
    dmf_mdb_close(db);
    assert_int_not_equal(dmf_mdb_open(url, &db, err, sizeof(err)), 0);
    assert_non_null(strstr(err, "newer"));
    assert_int_not_equal(dmf_mdb_open("mysql://x", &db, err, sizeof(err)), 0);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_list),
        cmocka_unit_test(test_render),
        cmocka_unit_test(test_sqlite_applies_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
