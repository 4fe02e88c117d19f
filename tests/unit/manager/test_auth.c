/* Roles, scopes, token shapes, the Authorization header and the route decision; argon2id
 * round trip. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "manager/auth.h"

static void test_roles(void **state)
{
    assert_int_equal(dmf_role_parse("root"), DMF_ROLE_ROOT);
    assert_int_equal(dmf_role_parse("operator"), DMF_ROLE_OPERATOR);
    assert_int_equal(dmf_role_parse("viewer"), DMF_ROLE_VIEWER);
    assert_int_equal(dmf_role_parse("Root"), DMF_ROLE_NONE);
    assert_int_equal(dmf_role_parse(""), DMF_ROLE_NONE);
    assert_int_equal(dmf_role_parse(NULL), DMF_ROLE_NONE);
    assert_string_equal(dmf_role_name(DMF_ROLE_OPERATOR), "operator");
}

static void test_scopes(void **state)
{
    char out[32];
    assert_int_equal(dmf_scope_parse("read"), DMF_SCOPE_READ);
    assert_int_equal(dmf_scope_parse("job,read"), DMF_SCOPE_READ | DMF_SCOPE_JOB);
    assert_int_equal(dmf_scope_parse("read,write,job"), DMF_SCOPE_ALL);
    assert_int_equal(dmf_scope_parse(""), 0);
    assert_int_equal(dmf_scope_parse("admin"), 0);
    assert_int_equal(dmf_scope_parse("read,admin"), 0);
    assert_int_equal(dmf_scope_parse("rea"), 0);
    assert_int_equal(dmf_scope_parse("reads"), 0);
    dmf_scope_format(DMF_SCOPE_JOB | DMF_SCOPE_READ, out, sizeof(out));
    assert_string_equal(out, "read,job");
    dmf_scope_format(0, out, sizeof(out));
    assert_string_equal(out, "");
}

static void test_tokens(void **state)
{
    char s[DMF_TOKEN_LEN + 1], p[DMF_TOKEN_LEN + 1], h1[65], h2[65];
    dmf_token_new(DMF_TOKEN_SESSION, s);
    dmf_token_new(DMF_TOKEN_PAT, p);
    assert_int_equal(strlen(s), DMF_TOKEN_LEN);
    assert_int_equal(dmf_token_kind(s), DMF_TOKEN_SESSION);
    assert_int_equal(dmf_token_kind(p), DMF_TOKEN_PAT);
    assert_string_not_equal(s + 5, p + 5);
    char bad[DMF_TOKEN_LEN + 2];
    strcpy(bad, s);
    bad[10] = 'G';
    assert_int_equal(dmf_token_kind(bad), DMF_TOKEN_INVALID);
    strcpy(bad, s);
    bad[10] = 'A'; /* uppercase hex is not what we issue */
    assert_int_equal(dmf_token_kind(bad), DMF_TOKEN_INVALID);
    strcpy(bad, s);
    strcat(bad, "0");
    assert_int_equal(dmf_token_kind(bad), DMF_TOKEN_INVALID);
    assert_int_equal(dmf_token_kind("dmfx_00"), DMF_TOKEN_INVALID);
    assert_int_equal(dmf_token_kind(NULL), DMF_TOKEN_INVALID);
    dmf_token_hash(s, h1);
    dmf_token_hash(s, h2);
    assert_string_equal(h1, h2);
    assert_int_equal(strlen(h1), 64);
    assert_null(strstr(h1, s + 5));
}

static void test_bearer(void **state)
{
    assert_string_equal(dmf_bearer_token("Bearer abc"), "abc");
    assert_string_equal(dmf_bearer_token("bearer   abc"), "abc");
    assert_string_equal(dmf_bearer_token("  BEARER abc"), "abc");
    assert_null(dmf_bearer_token("Bearer"));
    assert_null(dmf_bearer_token("Bearer "));
    assert_null(dmf_bearer_token("Bearerabc"));
    assert_null(dmf_bearer_token("Basic cm9vdDpyb290"));
    assert_null(dmf_bearer_token(NULL));
}

static void test_decide(void **state)
{
    struct dmf_principal anon = {0};
    struct dmf_principal viewer = {true, DMF_ROLE_VIEWER, DMF_SCOPE_ALL};
    struct dmf_principal op = {true, DMF_ROLE_OPERATOR, DMF_SCOPE_ALL};
    struct dmf_principal root = {true, DMF_ROLE_ROOT, DMF_SCOPE_ALL};
    struct dmf_principal op_pat_read = {true, DMF_ROLE_OPERATOR, DMF_SCOPE_READ};
    struct dmf_principal op_pat_job = {true, DMF_ROLE_OPERATOR, DMF_SCOPE_JOB};
    struct dmf_principal no_role = {true, DMF_ROLE_NONE, DMF_SCOPE_ALL};
    /* Public routes only. */
    assert_int_equal(dmf_auth_decide(DMF_ROLE_NONE, 0, &anon), 0);
    assert_int_equal(dmf_auth_decide(DMF_ROLE_NONE, 0, NULL), 0);
    /* No credentials: 401 on everything else. */
    assert_int_equal(dmf_auth_decide(DMF_ROLE_VIEWER, DMF_SCOPE_READ, &anon), 401);
    assert_int_equal(dmf_auth_decide(DMF_ROLE_VIEWER, DMF_SCOPE_READ, NULL), 401);
    assert_int_equal(dmf_auth_decide(DMF_ROLE_VIEWER, 0, &no_role), 401);
    /* Roles are ordered. */
    assert_int_equal(dmf_auth_decide(DMF_ROLE_VIEWER, DMF_SCOPE_READ, &viewer), 0);
    assert_int_equal(dmf_auth_decide(DMF_ROLE_OPERATOR, DMF_SCOPE_WRITE, &viewer), 403);
    assert_int_equal(dmf_auth_decide(DMF_ROLE_OPERATOR, DMF_SCOPE_WRITE, &op), 0);
    assert_int_equal(dmf_auth_decide(DMF_ROLE_ROOT, DMF_SCOPE_READ, &op), 403);
    assert_int_equal(dmf_auth_decide(DMF_ROLE_ROOT, DMF_SCOPE_WRITE, &root), 0);
    /* A token's scopes narrow its user's role. */
    assert_int_equal(dmf_auth_decide(DMF_ROLE_VIEWER, DMF_SCOPE_READ, &op_pat_read), 0);
    assert_int_equal(dmf_auth_decide(DMF_ROLE_OPERATOR, DMF_SCOPE_WRITE, &op_pat_read), 403);
    assert_int_equal(dmf_auth_decide(DMF_ROLE_OPERATOR, DMF_SCOPE_JOB, &op_pat_job), 0);
    assert_int_equal(dmf_auth_decide(DMF_ROLE_VIEWER, DMF_SCOPE_READ, &op_pat_job), 403);
    /* A route that needs a role but no scope (sign out) is open to any token of that role. */
    assert_int_equal(dmf_auth_decide(DMF_ROLE_VIEWER, 0, &op_pat_job), 0);
}

static void test_password(void **state)
{
    char hash[128], pw[25];
    dmf_password_random(pw);
    assert_int_equal(strlen(pw), 24);
    assert_int_equal(dmf_password_hash(pw, hash, sizeof(hash)), 0);
    assert_memory_equal(hash, "$argon2id$", 10);
    assert_null(strstr(hash, pw));
    assert_true(dmf_password_verify(hash, pw));
    assert_false(dmf_password_verify(hash, "wrong"));
    assert_false(dmf_password_verify("", pw));
    assert_false(dmf_password_verify("$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$abc", pw));
    assert_false(dmf_password_verify(NULL, pw));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roles),  cmocka_unit_test(test_scopes),
        cmocka_unit_test(test_tokens), cmocka_unit_test(test_bearer),
        cmocka_unit_test(test_decide), cmocka_unit_test(test_password),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
