/* The manager's REST API; see api.h. */
#include "manager/api.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <sys/queue.h>
#include <event2/keyvalq_struct.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/application.h"
#include "common/log.h"
#include "common/cmd.h"
#include "common/metrics.h"
#include "common/util.h"
#include "damselfly/v1/manager.pb-c.h"
#include "manager/job_secrets.h"
#include "manager/jobs.h"
#include "manager/scope.h"
#include "manager/signin_limit.h"

static DMF_METRIC_COUNTER(m_requests, "damselfly_manager_http_requests_total", NULL,
                          "REST API requests answered.");
static DMF_METRIC_COUNTER(m_denied_401, "damselfly_manager_http_denied_total", "status=\"401\"",
                          "REST API requests refused for missing or invalid credentials.");
static DMF_METRIC_COUNTER(m_denied_403, "damselfly_manager_http_denied_total", "status=\"403\"",
                          "REST API requests refused for a missing role or scope.");
static DMF_METRIC_COUNTER(m_signin_throttled, "damselfly_manager_signin_throttled_total", NULL,
                          "Sign-ins refused (429) after repeated failures from the address or "
                          "for the name.");

#define NAME_MAX_LEN     64
#define PASSWORD_MIN_LEN 8
#define PASSWORD_MAX_LEN 256
#define BIO_MAX_LEN      1024
#define PER_PAGE_MAX     100
#define PAT_MAX_TTL_S    (366 * 24 * 3600)

/* One request on its way through a worker. */
struct api_req {
    struct dmf_manager *m;
    struct evhttp_request *req; /* NULL once the connection is gone */
    const struct route *route;
    int64_t ids[2];
    char *body;
    char *auth; /* the Authorization header, never logged */
    int64_t page, per_page;
    char peer[64];
    char path[256];
    /* Filled on the worker. */
    struct dmf_principal who;
    int64_t user_id;
    char user_name[NAME_MAX_LEN + 1];
    char token_hash[DMF_TOKEN_HASH_LEN + 1];
    enum dmf_token_kind token_kind;
    int status;
    json_t *resp;
    bool kick_jobs;      /* a job was created or cancelled: tell the runner */
    int64_t retry_after; /* seconds, sent with a 429 */
    char *live_addr;     /* the live view: ask this scheduler on the loop, then reply */
    dmf_rpc_channel_t *live_ch;
};

typedef int (*handler_fn)(struct api_req *r);

struct route {
    struct dmf_api_route_info info;
    handler_fn fn;
};

/* ---------------------------------------------------------------- helpers (worker) */

static int fail(struct api_req *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(struct api_req *r, int status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (r->resp)
        json_decref(r->resp);
    r->resp = json_pack("{s:s}", "error", msg);
    return status;
}

static int ok(struct api_req *r, int status, json_t *resp)
{
    if (r->resp)
        json_decref(r->resp);
    r->resp = resp;
    return status;
}

static int db_fail(struct api_req *r, int rc, const char *e)
{
    if (rc == -EEXIST)
        return fail(r, 409, "already exists");
    dmf_warn("api: %s %s: database: %s", dmf_api_method_name(r->route->info.method), r->path, e);
    return fail(r, 500, "database error");
}

/* Runs a statement; on failure sets the response and returns the HTTP status (else 0). */
#define Q(r, rowsp, sql, ...)                                                                      \
    ({                                                                                             \
        const char *p_[] = {__VA_ARGS__};                                                          \
        char e_[512];                                                                              \
        int rc_ = dmf_mdb_exec((r)->m->db, sql, p_, DMF_ARRAY_SIZE(p_), rowsp, e_, sizeof(e_));    \
        rc_ == 0 ? 0 : db_fail((r), rc_, e_);                                                      \
    })
#define Q0(r, rowsp, sql)                                                                          \
    ({                                                                                             \
        char e_[512];                                                                              \
        int rc_ = dmf_mdb_exec((r)->m->db, sql, NULL, 0, rowsp, e_, sizeof(e_));                   \
        rc_ == 0 ? 0 : db_fail((r), rc_, e_);                                                      \
    })

static void i64s(int64_t v, char out[24])
{
    snprintf(out, 24, "%lld", (long long)v);
}

static json_t *body_object(struct api_req *r, int *status)
{
    json_error_t je;
    if (!r->body || !*r->body) {
        *status = fail(r, 400, "a JSON object body is required");
        return NULL;
    }
    json_t *b = json_loads(r->body, JSON_REJECT_DUPLICATES, &je);
    if (!b || !json_is_object(b)) {
        *status = b ? fail(r, 400, "the body must be a JSON object")
                    : fail(r, 400, "invalid JSON at line %d: %s", je.line, je.text);
        json_decref(b);
        return NULL;
    }
    return b;
}

static bool valid_name(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > NAME_MAX_LEN)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-')))
            return false;
    }
    return true;
}

/* A string member: required or optional (then *out may stay NULL), at most max bytes. */
static int get_str(struct api_req *r, json_t *b, const char *key, bool required, size_t max,
                   const char **out)
{
    json_t *v = json_object_get(b, key);
    *out = NULL;
    if (!v || json_is_null(v))
        return required ? fail(r, 400, "'%s' is required", key) : 0;
    if (!json_is_string(v))
        return fail(r, 400, "'%s' must be a string", key);
    if (json_string_length(v) > max)
        return fail(r, 400, "'%s' is longer than %zu bytes", key, max);
    if (strlen(json_string_value(v)) != json_string_length(v))
        return fail(r, 400, "'%s' contains a NUL byte", key);
    *out = json_string_value(v);
    return 0;
}

/* Only the listed members may appear in b. */
static int only_keys(struct api_req *r, json_t *b, const char *const *keys)
{
    const char *k;
    json_t *v;
    json_object_foreach(b, k, v)
    {
        size_t i;
        for (i = 0; keys[i]; i++)
            if (strcmp(keys[i], k) == 0)
                break;
        if (!keys[i])
            return fail(r, 400, "unknown member '%s'", k);
    }
    return 0;
}

/* Replaces the text members named in keys with the JSON they hold. */
static void parse_json_members(json_t *row, const char *const *keys)
{
    for (size_t i = 0; keys[i]; i++) {
        const char *s = json_string_value(json_object_get(row, keys[i]));
        if (s)
            json_object_set_new(row, keys[i], json_loads(s, 0, NULL) ?: json_null());
    }
}

static void parse_json_rows(json_t *rows, const char *const *keys)
{
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row) parse_json_members(row, keys);
}

static void audit(struct api_req *r)
{
    char at[24], uid[24], st[24];
    i64s(dmf_manager_now(), at);
    i64s(r->user_id, uid);
    i64s(r->status, st);
    char action[32];
    snprintf(action, sizeof(action), "%s", dmf_api_method_name(r->route->info.method));
    const char *p[] = {at, r->user_id ? uid : NULL, r->user_name, action, r->path, st};
    char e[256];
    if (dmf_mdb_exec(r->m->db,
                     "INSERT INTO audit_log (at, user_id, user_name, action, target, status)"
                     " VALUES ($1, $2, $3, $4, $5, $6)",
                     p, 6, NULL, e, sizeof(e)) != 0)
        dmf_warn("api: audit log: %s", e);
}

/* Fills r->who from the bearer token (session or personal access token). */
static void authenticate(struct api_req *r)
{
    const char *tok = dmf_bearer_token(r->auth);
    r->token_kind = dmf_token_kind(tok);
    if (r->token_kind == DMF_TOKEN_INVALID)
        return;
    dmf_token_hash(tok, r->token_hash);
    char now[24];
    i64s(dmf_manager_now(), now);
    const char *p[] = {r->token_hash, now};
    const char *sql =
        r->token_kind == DMF_TOKEN_SESSION
            ? "SELECT u.id AS id, u.name AS name, u.role AS role, 'read,write,job' AS scopes"
              " FROM sessions s JOIN users u ON u.id = s.user_id"
              " WHERE s.token_hash = $1 AND s.expires_at > $2"
            : "SELECT u.id AS id, u.name AS name, u.role AS role, t.scopes AS scopes"
              " FROM personal_access_tokens t JOIN users u ON u.id = t.user_id"
              " WHERE t.token_hash = $1 AND t.expires_at > $2";
    char e[256];
    json_t *row = dmf_mdb_row(r->m->db, sql, p, 2, e, sizeof(e));
    if (!row)
        return;
    r->who.authenticated = true;
    r->who.role = dmf_role_parse(json_string_value(json_object_get(row, "role")));
    r->who.scopes = dmf_scope_parse(json_string_value(json_object_get(row, "scopes")));
    r->user_id = json_integer_value(json_object_get(row, "id"));
    snprintf(r->user_name, sizeof(r->user_name), "%s",
             json_string_value(json_object_get(row, "name")) ?: "");
    json_decref(row);
    if (r->token_kind == DMF_TOKEN_PAT)
        (void)dmf_mdb_exec(r->m->db,
                           "UPDATE personal_access_tokens SET last_used_at = $2"
                           " WHERE token_hash = $1",
                           p, 2, NULL, NULL, 0);
}

/* ---------------------------------------------------------------- users and sessions */

/* A valid hash of a password nobody has, verified when the user does not exist so that a
 * sign-in takes as long for an unknown name as for a wrong password. */
static char dummy_hash[128];
static pthread_once_t dummy_once = PTHREAD_ONCE_INIT;
static void make_dummy(void)
{
    char pw[25];
    dmf_password_random(pw);
    if (dmf_password_hash(pw, dummy_hash, sizeof(dummy_hash)) != 0)
        dummy_hash[0] = '\0';
}

static const char USER_COLS[] = "id, name, role, created_at, updated_at";

static int h_signin(struct api_req *r)
{
    int st = 0;
    json_t *b = body_object(r, &st);
    if (!b)
        return st;
    const char *name, *pw;
    static const char *const keys[] = {"name", "password", NULL};
    if ((st = only_keys(r, b, keys)) || (st = get_str(r, b, "name", true, NAME_MAX_LEN, &name)) ||
        (st = get_str(r, b, "password", true, PASSWORD_MAX_LEN, &pw)))
        goto out;
    char addr[64];
    dmf_signin_addr_of(r->peer, addr, sizeof(addr));
    int64_t wait =
        r->m->signin ? dmf_signin_limit_check(r->m->signin, addr, name, dmf_manager_now()) : 0;
    if (wait > 0) {
        dmf_metric_add(&m_signin_throttled, 1);
        dmf_info("api: sign-in for '%s' from %s refused for %llds after repeated failures", name,
                 r->peer, (long long)wait);
        r->retry_after = wait;
        st = fail(r, 429, "too many failed sign-ins; try again in %lld s", (long long)wait);
        goto out;
    }
    const char *p[] = {name};
    json_t *u = dmf_mdb_row(r->m->db,
                            "SELECT id, name, role, password_hash FROM users"
                            " WHERE name = $1",
                            p, 1, NULL, 0);
    /* argon2 takes tens of milliseconds: other requests use the database meanwhile. */
    dmf_mdb_unlock(r->m->db);
    pthread_once(&dummy_once, make_dummy);
    const char *hash = u ? json_string_value(json_object_get(u, "password_hash")) : dummy_hash;
    bool good = dmf_password_verify(hash, pw) && u;
    dmf_mdb_lock(r->m->db);
    if (!good) {
        json_decref(u);
        if (r->m->signin)
            dmf_signin_limit_failed(r->m->signin, addr, name, dmf_manager_now());
        dmf_info("api: sign-in refused for '%s' from %s", name, r->peer);
        st = fail(r, 401, "wrong name or password");
        goto out;
    }
    if (r->m->signin)
        dmf_signin_limit_succeeded(r->m->signin, addr, name);
    r->user_id = json_integer_value(json_object_get(u, "id"));
    snprintf(r->user_name, sizeof(r->user_name), "%s", name);
    char tok[DMF_TOKEN_LEN + 1], hash_hex[DMF_TOKEN_HASH_LEN + 1], uid[24], now[24], exp[24];
    dmf_token_new(DMF_TOKEN_SESSION, tok);
    dmf_token_hash(tok, hash_hex);
    int64_t expires = dmf_manager_now() + (int64_t)r->m->session_ttl_s;
    i64s(r->user_id, uid);
    i64s(dmf_manager_now(), now);
    i64s(expires, exp);
    if ((st = Q(r, NULL,
                "INSERT INTO sessions (token_hash, user_id, created_at, expires_at)"
                " VALUES ($1, $2, $3, $4)",
                hash_hex, uid, now, exp))) {
        json_decref(u);
        goto out;
    }
    /* Expired sessions go on each sign-in: the table stays as small as the live ones. */
    const char *pn[] = {now};
    (void)dmf_mdb_exec(r->m->db, "DELETE FROM sessions WHERE expires_at <= $1", pn, 1, NULL, NULL,
                       0);
    json_object_del(u, "password_hash");
    dmf_info("api: user '%s' signed in from %s", name, r->peer);
    st = ok(
        r, 200,
        json_pack("{s:s, s:I, s:o}", "token", tok, "expires_at", (json_int_t)expires, "user", u));
out:
    json_decref(b);
    return st;
}

static int h_signout(struct api_req *r)
{
    if (r->token_kind != DMF_TOKEN_SESSION)
        return fail(r, 400, "only a session token can sign out");
    int st = Q(r, NULL, "DELETE FROM sessions WHERE token_hash = $1", r->token_hash);
    return st ? st : ok(r, 200, json_pack("{s:b}", "signed_out", 1));
}

static int h_me(struct api_req *r)
{
    char uid[24];
    i64s(r->user_id, uid);
    json_t *rows = NULL;
    char sql[128];
    snprintf(sql, sizeof(sql), "SELECT %s FROM users WHERE id = $1", USER_COLS);
    int st = Q(r, &rows, sql, uid);
    if (st)
        return st;
    json_t *u = json_incref(json_array_get(rows, 0));
    json_decref(rows);
    return u ? ok(r, 200, u) : fail(r, 404, "no such user");
}

static int paged(struct api_req *r, const char *sql_base, const char *order, const char *param)
{
    char sql[512], lim[24], off[24];
    i64s(r->per_page, lim);
    i64s((r->page - 1) * r->per_page, off);
    json_t *rows = NULL;
    int st;
    if (param) {
        snprintf(sql, sizeof(sql), "%s ORDER BY %s LIMIT $2 OFFSET $3", sql_base, order);
        st = Q(r, &rows, sql, param, lim, off);
    } else {
        snprintf(sql, sizeof(sql), "%s ORDER BY %s LIMIT $1 OFFSET $2", sql_base, order);
        st = Q(r, &rows, sql, lim, off);
    }
    return st ? st : ok(r, 200, rows);
}

static int get_one(struct api_req *r, const char *sql, const char *what,
                   const char *const *json_keys)
{
    char id[24];
    i64s(r->ids[0], id);
    json_t *rows = NULL;
    int st = Q(r, &rows, sql, id);
    if (st)
        return st;
    json_t *row = json_incref(json_array_get(rows, 0));
    json_decref(rows);
    if (!row)
        return fail(r, 404, "no such %s", what);
    if (json_keys)
        parse_json_members(row, json_keys);
    return ok(r, 200, row);
}

static int delete_one(struct api_req *r, const char *table, const char *what)
{
    char id[24], sql[128];
    i64s(r->ids[0], id);
    snprintf(sql, sizeof(sql), "DELETE FROM %s WHERE id = $1 RETURNING id", table);
    json_t *rows = NULL;
    int st = Q(r, &rows, sql, id);
    if (st)
        return st;
    size_t n = json_array_size(rows);
    json_decref(rows);
    return n ? ok(r, 200, json_pack("{s:I}", "deleted", (json_int_t)r->ids[0]))
             : fail(r, 404, "no such %s", what);
}

static int h_users_list(struct api_req *r)
{
    char sql[128];
    snprintf(sql, sizeof(sql), "SELECT %s FROM users", USER_COLS);
    return paged(r, sql, "id", NULL);
}

static int h_users_get(struct api_req *r)
{
    char sql[128];
    snprintf(sql, sizeof(sql), "SELECT %s FROM users WHERE id = $1", USER_COLS);
    return get_one(r, sql, "user", NULL);
}

static int check_password(struct api_req *r, const char *pw)
{
    if (strlen(pw) < PASSWORD_MIN_LEN)
        return fail(r, 400, "'password' must have at least %d characters", PASSWORD_MIN_LEN);
    return 0;
}

static int h_users_create(struct api_req *r)
{
    int st = 0;
    json_t *b = body_object(r, &st);
    if (!b)
        return st;
    static const char *const keys[] = {"name", "password", "role", NULL};
    const char *name, *pw, *role;
    if ((st = only_keys(r, b, keys)) || (st = get_str(r, b, "name", true, NAME_MAX_LEN, &name)) ||
        (st = get_str(r, b, "password", true, PASSWORD_MAX_LEN, &pw)) ||
        (st = get_str(r, b, "role", true, 16, &role)))
        goto out;
    if (!valid_name(name)) {
        st = fail(r, 400, "'name' must be 1-64 of A-Z a-z 0-9 . _ - (not starting with . _ -)");
        goto out;
    }
    if (dmf_role_parse(role) == DMF_ROLE_NONE) {
        st = fail(r, 400, "'role' must be root, operator or viewer");
        goto out;
    }
    if ((st = check_password(r, pw)))
        goto out;
    char hash[128], now[24];
    if (dmf_password_hash(pw, hash, sizeof(hash)) != 0) {
        st = fail(r, 500, "cannot hash the password");
        goto out;
    }
    i64s(dmf_manager_now(), now);
    json_t *rows = NULL;
    if ((st = Q(r, &rows,
                "INSERT INTO users (name, password_hash, role, created_at, updated_at)"
                " VALUES ($1, $2, $3, $4, $4) RETURNING id, name, role, created_at, updated_at",
                name, hash, role, now)))
        goto out;
    dmf_info("api: user '%s' (%s) created by '%s'", name, role, r->user_name);
    st = ok(r, 201, json_incref(json_array_get(rows, 0)));
    json_decref(rows);
out:
    json_decref(b);
    return st;
}

static int h_users_update(struct api_req *r)
{
    int st = 0;
    json_t *b = body_object(r, &st);
    if (!b)
        return st;
    static const char *const keys[] = {"password", "role", NULL};
    const char *pw, *role;
    char id[24], now[24], hash[128];
    i64s(r->ids[0], id);
    i64s(dmf_manager_now(), now);
    if ((st = only_keys(r, b, keys)) ||
        (st = get_str(r, b, "password", false, PASSWORD_MAX_LEN, &pw)) ||
        (st = get_str(r, b, "role", false, 16, &role)))
        goto out;
    if (role && dmf_role_parse(role) == DMF_ROLE_NONE) {
        st = fail(r, 400, "'role' must be root, operator or viewer");
        goto out;
    }
    if (role && r->ids[0] == r->user_id && strcmp(role, "root") != 0) {
        st = fail(r, 400, "a root user cannot demote itself");
        goto out;
    }
    if (pw && ((st = check_password(r, pw)) || dmf_password_hash(pw, hash, sizeof(hash)) != 0)) {
        st = st ?: fail(r, 500, "cannot hash the password");
        goto out;
    }
    json_t *rows = NULL;
    if ((st = Q(r, &rows,
                "UPDATE users SET role = COALESCE($2, role),"
                " password_hash = COALESCE($3, password_hash), updated_at = $4 WHERE id = $1"
                " RETURNING id, name, role, created_at, updated_at",
                id, role, pw ? hash : NULL, now)))
        goto out;
    json_t *u = json_incref(json_array_get(rows, 0));
    json_decref(rows);
    if (!u) {
        st = fail(r, 404, "no such user");
        goto out;
    }
    if (pw) /* a new password ends the user's sessions */
        (void)Q(r, NULL, "DELETE FROM sessions WHERE user_id = $1", id);
    st = ok(r, 200, u);
out:
    json_decref(b);
    return st;
}

static int h_users_delete(struct api_req *r)
{
    if (r->ids[0] == r->user_id)
        return fail(r, 400, "a user cannot delete itself");
    return delete_one(r, "users", "user");
}

/* ---------------------------------------------------------------- personal access tokens */

static const char PAT_COLS[] = "id, name, user_id, scopes, created_at, expires_at, last_used_at";

static int h_pats_list(struct api_req *r)
{
    char sql[160], uid[24];
    i64s(r->user_id, uid);
    if (r->who.role == DMF_ROLE_ROOT) {
        snprintf(sql, sizeof(sql), "SELECT %s FROM personal_access_tokens", PAT_COLS);
        return paged(r, sql, "id", NULL);
    }
    snprintf(sql, sizeof(sql), "SELECT %s FROM personal_access_tokens WHERE user_id = $1",
             PAT_COLS);
    return paged(r, sql, "id", uid);
}

static int h_pats_create(struct api_req *r)
{
    int st = 0;
    json_t *b = body_object(r, &st);
    if (!b)
        return st;
    static const char *const keys[] = {"name", "scopes", "expires_in", NULL};
    const char *name;
    if ((st = only_keys(r, b, keys)) || (st = get_str(r, b, "name", true, NAME_MAX_LEN, &name)))
        goto out;
    if (!valid_name(name)) {
        st = fail(r, 400, "'name' must be 1-64 of A-Z a-z 0-9 . _ -");
        goto out;
    }
    json_t *sc = json_object_get(b, "scopes");
    int mask = 0;
    if (!json_is_array(sc) || json_array_size(sc) == 0 || json_array_size(sc) > 3) {
        st = fail(r, 400, "'scopes' must be a non-empty list of read, write, job");
        goto out;
    }
    size_t i;
    json_t *e;
    json_array_foreach(sc, i, e)
    {
        int bit = json_is_string(e) ? dmf_scope_parse(json_string_value(e)) : 0;
        if (bit == 0 || strchr(json_string_value(e), ',')) {
            st = fail(r, 400, "'scopes[%zu]' must be read, write or job", i);
            goto out;
        }
        mask |= bit;
    }
    json_t *ei = json_object_get(b, "expires_in");
    json_int_t ttl = ei ? (json_is_integer(ei) ? json_integer_value(ei) : -1) : 30 * 24 * 3600;
    if (ttl <= 0 || ttl > PAT_MAX_TTL_S) {
        st = fail(r, 400, "'expires_in' must be 1..%d seconds", PAT_MAX_TTL_S);
        goto out;
    }
    char tok[DMF_TOKEN_LEN + 1], hash[DMF_TOKEN_HASH_LEN + 1], uid[24], now[24], exp[24];
    char scopes[32];
    dmf_scope_format(mask, scopes, sizeof(scopes));
    dmf_token_new(DMF_TOKEN_PAT, tok);
    dmf_token_hash(tok, hash);
    i64s(r->user_id, uid);
    i64s(dmf_manager_now(), now);
    i64s(dmf_manager_now() + ttl, exp);
    json_t *rows = NULL;
    char sql[256];
    snprintf(sql, sizeof(sql),
             "INSERT INTO personal_access_tokens (name, token_hash, user_id, scopes, created_at,"
             " expires_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING %s",
             PAT_COLS);
    if ((st = Q(r, &rows, sql, name, hash, uid, scopes, now, exp)))
        goto out;
    json_t *row = json_incref(json_array_get(rows, 0));
    json_decref(rows);
    /* The only time the token is shown. */
    json_object_set_new(row, "token", json_string(tok));
    dmf_info("api: personal access token '%s' (%s) created by '%s'", name, scopes, r->user_name);
    st = ok(r, 201, row);
out:
    json_decref(b);
    return st;
}

static int h_pats_delete(struct api_req *r)
{
    char id[24], uid[24];
    i64s(r->ids[0], id);
    i64s(r->user_id, uid);
    json_t *rows = NULL;
    int st = r->who.role == DMF_ROLE_ROOT
                 ? Q(r, &rows, "DELETE FROM personal_access_tokens WHERE id = $1 RETURNING id", id)
                 : Q(r, &rows,
                     "DELETE FROM personal_access_tokens WHERE id = $1 AND user_id = $2"
                     " RETURNING id",
                     id, uid);
    if (st)
        return st;
    size_t n = json_array_size(rows);
    json_decref(rows);
    return n ? ok(r, 200, json_pack("{s:I}", "deleted", (json_int_t)r->ids[0]))
             : fail(r, 404, "no such token");
}

/* ---------------------------------------------------------------- clusters */

static const char *const CLUSTER_JSON[] = {"scopes", "config", NULL};
static const char CLUSTER_COLS[] = "id, name, bio, scopes, config, is_default, created_at, "
                                   "updated_at";

/* Checks a cluster's dynamic config and fills in the defaults. */
static int check_config(struct api_req *r, json_t *cfg)
{
    static const struct {
        const char *key;
        json_int_t min, max, def;
    } ints[] = {
        {"candidate_limit", 0, 64, 0}, /* 0 = the scheduler's own --candidate-limit */
        {"download_rate_limit", 0, (json_int_t)1 << 50, 0}, /* bytes/s, 0 = unlimited */
        {"upload_rate_limit", 0, (json_int_t)1 << 50, 0},
        {"cache_limit", 0, (json_int_t)1 << 60, 0}, /* bytes, 0 = unlimited */
    };
    const char *k;
    json_t *v;
    json_object_foreach(cfg, k, v)
    {
        size_t i;
        for (i = 0; i < DMF_ARRAY_SIZE(ints); i++)
            if (strcmp(ints[i].key, k) == 0)
                break;
        if (i < DMF_ARRAY_SIZE(ints)) {
            if (!json_is_integer(v) || json_integer_value(v) < ints[i].min ||
                json_integer_value(v) > ints[i].max)
                return fail(r, 400, "config.%s must be an integer in %lld..%lld", k,
                            (long long)ints[i].min, (long long)ints[i].max);
            continue;
        }
        if (strcmp(k, "block_urls") == 0 || strcmp(k, "block_applications") == 0) {
            if (!json_is_array(v) || json_array_size(v) > DMF_SCOPE_MAX_ITEMS)
                return fail(r, 400, "config.%s must be a list of at most %d strings", k,
                            DMF_SCOPE_MAX_ITEMS);
            size_t j;
            json_t *e;
            json_array_foreach(v, j, e)
            {
                if (!json_is_string(e) || json_string_length(e) > DMF_SCOPE_MAX_LEN)
                    return fail(r, 400, "config.%s[%zu] must be a string of at most %d bytes", k, j,
                                DMF_SCOPE_MAX_LEN);
                regex_t re;
                char why[160];
                if (k[6] == 'a' &&
                    (json_string_length(e) == 0 ||
                     dmf_application_check(json_string_value(e), why, sizeof(why)) != 0))
                    return fail(r, 400, "config.block_applications[%zu]: %s", j,
                                json_string_length(e) ? why : "an empty name");
                if (k[6] == 'u') {
                    if (regcomp(&re, json_string_value(e), REG_EXTENDED | REG_NOSUB) != 0)
                        return fail(r, 400, "config.block_urls[%zu] is not a valid regex", j);
                    regfree(&re);
                }
            }
            continue;
        }
        return fail(r, 400, "config: unknown member '%s'", k);
    }
    for (size_t i = 0; i < DMF_ARRAY_SIZE(ints); i++)
        if (!json_object_get(cfg, ints[i].key))
            json_object_set_new(cfg, ints[i].key, json_integer(ints[i].def));
    return 0;
}

static int h_clusters_list(struct api_req *r)
{
    char sql[160];
    snprintf(sql, sizeof(sql), "SELECT %s FROM clusters", CLUSTER_COLS);
    int st = paged(r, sql, "id", NULL);
    if (st == 200)
        parse_json_rows(r->resp, CLUSTER_JSON);
    return st;
}

static int h_clusters_get(struct api_req *r)
{
    char sql[160];
    snprintf(sql, sizeof(sql), "SELECT %s FROM clusters WHERE id = $1", CLUSTER_COLS);
    return get_one(r, sql, "cluster", CLUSTER_JSON);
}

/* Validates the members of a cluster body; scopes/config are replaced by their JSON text in
 * *scopes_s / *config_s (new strings, NULL when absent). */
static int cluster_body(struct api_req *r, json_t *b, bool create, const char **name,
                        const char **bio, char **scopes_s, char **config_s, int *is_default)
{
    static const char *const keys[] = {"name", "bio", "scopes", "config", "is_default", NULL};
    int st;
    *scopes_s = *config_s = NULL;
    if ((st = only_keys(r, b, keys)) || (st = get_str(r, b, "name", create, NAME_MAX_LEN, name)) ||
        (st = get_str(r, b, "bio", false, BIO_MAX_LEN, bio)))
        return st;
    if (*name && !valid_name(*name))
        return fail(r, 400, "'name' must be 1-64 of A-Z a-z 0-9 . _ -");
    json_t *sc = json_object_get(b, "scopes");
    if (sc) {
        char e[300];
        if (dmf_scope_validate(sc, e, sizeof(e)) != 0)
            return fail(r, 400, "%s", e);
        *scopes_s = json_dumps(sc, JSON_COMPACT | JSON_SORT_KEYS);
    } else if (create) {
        *scopes_s = dmf_xstrdup("{}");
    }
    json_t *cf = json_object_get(b, "config");
    if (cf && !json_is_object(cf))
        return fail(r, 400, "'config' must be an object");
    if (cf || create) {
        json_t *c = cf ? json_deep_copy(cf) : json_object();
        st = check_config(r, c);
        if (!st)
            *config_s = json_dumps(c, JSON_COMPACT | JSON_SORT_KEYS);
        json_decref(c);
        if (st)
            return st;
    }
    json_t *d = json_object_get(b, "is_default");
    *is_default = -1;
    if (d) {
        if (!json_is_boolean(d))
            return fail(r, 400, "'is_default' must be true or false");
        *is_default = json_is_true(d);
    }
    return 0;
}

static int h_clusters_create(struct api_req *r)
{
    int st = 0, is_default;
    json_t *b = body_object(r, &st);
    if (!b)
        return st;
    const char *name, *bio;
    char *scopes = NULL, *config = NULL;
    if ((st = cluster_body(r, b, true, &name, &bio, &scopes, &config, &is_default)))
        goto out;
    char now[24];
    i64s(dmf_manager_now(), now);
    json_t *rows = NULL;
    char sql[256];
    if (is_default == 1 && (st = Q0(r, NULL, "UPDATE clusters SET is_default = 0")))
        goto out;
    snprintf(sql, sizeof(sql),
             "INSERT INTO clusters (name, bio, scopes, config, is_default, created_at, updated_at)"
             " VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING %s",
             CLUSTER_COLS);
    if ((st = Q(r, &rows, sql, name, bio ?: "", scopes, config, is_default == 1 ? "1" : "0", now)))
        goto out;
    json_t *row = json_incref(json_array_get(rows, 0));
    json_decref(rows);
    parse_json_members(row, CLUSTER_JSON);
    dmf_info("api: cluster '%s' created by '%s'", name, r->user_name);
    st = ok(r, 201, row);
out:
    free(scopes);
    free(config);
    json_decref(b);
    return st;
}

static int h_clusters_update(struct api_req *r)
{
    int st = 0, is_default;
    json_t *b = body_object(r, &st);
    if (!b)
        return st;
    const char *name, *bio;
    char *scopes = NULL, *config = NULL;
    if ((st = cluster_body(r, b, false, &name, &bio, &scopes, &config, &is_default)))
        goto out;
    char id[24], now[24];
    i64s(r->ids[0], id);
    i64s(dmf_manager_now(), now);
    if (is_default == 1 &&
        (st = Q(r, NULL, "UPDATE clusters SET is_default = 0 WHERE id <> $1", id)))
        goto out;
    json_t *rows = NULL;
    char sql[400];
    snprintf(sql, sizeof(sql),
             "UPDATE clusters SET name = COALESCE($2, name), bio = COALESCE($3, bio),"
             " scopes = COALESCE($4, scopes), config = COALESCE($5, config),"
             " is_default = COALESCE($6, is_default), updated_at = $7 WHERE id = $1"
             " RETURNING %s",
             CLUSTER_COLS);
    if ((st = Q(r, &rows, sql, id, name, bio, scopes, config,
                is_default < 0 ? NULL : (is_default ? "1" : "0"), now)))
        goto out;
    json_t *row = json_incref(json_array_get(rows, 0));
    json_decref(rows);
    if (!row) {
        st = fail(r, 404, "no such cluster");
        goto out;
    }
    parse_json_members(row, CLUSTER_JSON);
    dmf_info("api: cluster %lld updated by '%s'", (long long)r->ids[0], r->user_name);
    st = ok(r, 200, row);
out:
    free(scopes);
    free(config);
    json_decref(b);
    return st;
}

static int h_clusters_delete(struct api_req *r)
{
    return delete_one(r, "clusters", "cluster");
}

/* ---------------------------------------------------------------- schedulers, seeds, hosts */

/* "active" only while the keepalive stream is held and recent. */
#define STATE_EXPR                                                                                 \
    "CASE WHEN state = 'active' AND last_keepalive_at >= $1 THEN 'active' ELSE 'inactive' END"

static int list_components(struct api_req *r, const char *table, const char *cols)
{
    char sql[512], since[24], lim[24], off[24];
    i64s(dmf_manager_now() - (int64_t)(r->m->keepalive_timeout_ms + 999) / 1000, since);
    i64s(r->per_page, lim);
    i64s((r->page - 1) * r->per_page, off);
    snprintf(sql, sizeof(sql),
             "SELECT %s, " STATE_EXPR " AS state FROM %s ORDER BY id LIMIT $2 OFFSET $3", cols,
             table);
    json_t *rows = NULL;
    int st = Q(r, &rows, sql, since, lim, off);
    return st ? st : ok(r, 200, rows);
}

static int get_component(struct api_req *r, const char *table, const char *cols, const char *what)
{
    char sql[512], since[24], id[24];
    i64s(dmf_manager_now() - (int64_t)(r->m->keepalive_timeout_ms + 999) / 1000, since);
    i64s(r->ids[0], id);
    snprintf(sql, sizeof(sql), "SELECT %s, " STATE_EXPR " AS state FROM %s WHERE id = $2", cols,
             table);
    json_t *rows = NULL;
    int st = Q(r, &rows, sql, since, id);
    if (st)
        return st;
    json_t *row = json_incref(json_array_get(rows, 0));
    json_decref(rows);
    return row ? ok(r, 200, row) : fail(r, 404, "no such %s", what);
}

static const char SCHED_COLS[] = "id, cluster_id, hostname, ip, port, idc, location, "
                                 "last_keepalive_at, created_at, updated_at";
static const char SEED_COLS[] = "id, cluster_id, hostname, ip, port, piece_port, idc, location, "
                                "last_keepalive_at, created_at, updated_at";

static int h_schedulers_list(struct api_req *r)
{
    return list_components(r, "schedulers", SCHED_COLS);
}
static int h_schedulers_get(struct api_req *r)
{
    return get_component(r, "schedulers", SCHED_COLS, "scheduler");
}
static int h_schedulers_delete(struct api_req *r)
{
    return delete_one(r, "schedulers", "scheduler");
}
/* The live view: the answer comes from the scheduler itself (req_done asks it). */
static int h_schedulers_live(struct api_req *r)
{
    int st = get_component(r, "schedulers", SCHED_COLS, "scheduler");
    if (st != 200)
        return st;
    json_t *s = r->resp;
    if (strcmp(json_string_value(json_object_get(s, "state")) ?: "", "active") != 0)
        return fail(r, 409, "scheduler %lld is inactive", (long long)r->ids[0]);
    r->live_addr = dmf_xasprintf("%s:%lld", json_string_value(json_object_get(s, "ip")),
                                 (long long)json_integer_value(json_object_get(s, "port")));
    return 200;
}

static int h_seeds_list(struct api_req *r)
{
    return list_components(r, "seed_peers", SEED_COLS);
}
static int h_seeds_get(struct api_req *r)
{
    return get_component(r, "seed_peers", SEED_COLS, "seed peer");
}
static int h_seeds_delete(struct api_req *r)
{
    return delete_one(r, "seed_peers", "seed peer");
}
static int h_hosts_list(struct api_req *r)
{
    return paged(r,
                 "SELECT id, host_id, hostname, ip, rpc_port, piece_port, idc, location, type,"
                 " cluster_id, last_seen_at, created_at FROM hosts",
                 "id", NULL);
}

static int h_audit_list(struct api_req *r)
{
    return paged(r, "SELECT id, at, user_id, user_name, action, target, status FROM audit_log",
                 "id DESC", NULL);
}

/* ---------------------------------------------------------------- jobs */

static const char *const JOB_JSON[] = {"args", "result", NULL};
static const char JOB_COLS[] = "id, type, state, args, result, reason, user_id, created_at, "
                               "updated_at";

/* Job args as the API shows them: no passwords, secret headers redacted. */
static void job_row_public(json_t *row)
{
    json_t *a = json_object_get(row, "args");
    if (a)
        json_object_set_new(row, "args", dmf_job_args_public(a));
}

static int h_jobs_list(struct api_req *r)
{
    char sql[160];
    snprintf(sql, sizeof(sql), "SELECT %s FROM jobs", JOB_COLS);
    int st = paged(r, sql, "id DESC", NULL);
    if (st == 200) {
        parse_json_rows(r->resp, JOB_JSON);
        size_t i;
        json_t *row;
        json_array_foreach(r->resp, i, row) job_row_public(row);
    }
    return st;
}

static int h_jobs_get(struct api_req *r)
{
    char sql[160];
    snprintf(sql, sizeof(sql), "SELECT %s FROM jobs WHERE id = $1", JOB_COLS);
    int st = get_one(r, sql, "job", JOB_JSON);
    if (st == 200)
        job_row_public(r->resp);
    return st;
}

static int create_job(struct api_req *r, bool oapi)
{
    int st = 0;
    json_t *b = body_object(r, &st);
    if (!b)
        return st;
    char e[300] = "invalid job";
    json_t *norm = NULL;
    if (dmf_job_validate(b, oapi, &norm, e, sizeof(e)) != 0) {
        st = fail(r, 400, "%s", e);
        goto out;
    }
    /* Credentials stay in this manager's memory (job_secrets.h); the row names what was
     * withheld, and is reserved for this manager, which holds them (the runner claims a
     * job reserved by another only once that reservation is stale). */
    json_t *jargs = json_object_get(norm, "args");
    json_t *secrets = dmf_job_args_split(jargs);
    char ref[DMF_JOB_SECRETS_REF_LEN + 1] = "";
    if (secrets) {
        dmf_job_secrets_put(r->m->secrets, secrets, ref);
        json_object_set_new(jargs, "secrets_ref", json_string(ref));
    }
    char *args = json_dumps(jargs, JSON_COMPACT | JSON_SORT_KEYS);
    const char *type = json_string_value(json_object_get(norm, "type"));
    char now[24], uid[24];
    i64s(dmf_manager_now(), now);
    i64s(r->user_id, uid);
    json_t *rows = NULL;
    char sql[320];
    snprintf(sql, sizeof(sql),
             "INSERT INTO jobs (type, state, args, result, reason, user_id, created_at,"
             " updated_at, claimed_by, claimed_at) VALUES ($1, 'pending', $2, '{}', '', $3, $4,"
             " $4, %s) RETURNING %s",
             secrets ? "$5, $4" : "NULL, NULL", JOB_COLS);
    if (secrets)
        st = Q(r, &rows, sql, type, args, uid, now, r->m->id);
    else
        st = Q(r, &rows, sql, type, args, uid, now);
    free(args);
    if (st)
        goto out;
    json_t *row = json_incref(json_array_get(rows, 0));
    json_decref(rows);
    parse_json_members(row, JOB_JSON);
    job_row_public(row);
    dmf_info("job %lld: created (%s) by '%s'",
             (long long)json_integer_value(json_object_get(row, "id")), type, r->user_name);
    r->kick_jobs = true;
    st = ok(r, oapi ? 200 : 201, row);
out:
    json_decref(norm);
    json_decref(b);
    return st;
}

static int h_jobs_create(struct api_req *r)
{
    return create_job(r, false);
}
static int h_oapi_jobs_create(struct api_req *r)
{
    return create_job(r, true);
}

static int h_jobs_cancel(struct api_req *r)
{
    char id[24], now[24];
    i64s(r->ids[0], id);
    i64s(dmf_manager_now(), now);
    json_t *rows = NULL;
    char sql[256];
    snprintf(sql, sizeof(sql),
             "UPDATE jobs SET state = 'failed', reason = 'cancelled', updated_at = $2"
             " WHERE id = $1 AND state IN ('pending', 'running') RETURNING %s",
             JOB_COLS);
    int st = Q(r, &rows, sql, id, now);
    if (st)
        return st;
    json_t *row = json_incref(json_array_get(rows, 0));
    json_decref(rows);
    if (!row) {
        json_t *j = dmf_mdb_row(r->m->db, "SELECT state FROM jobs WHERE id = $1",
                                (const char *[]){id}, 1, NULL, 0);
        st = j ? fail(r, 409, "job is already %s", json_string_value(json_object_get(j, "state")))
               : fail(r, 404, "no such job");
        json_decref(j);
        return st;
    }
    dmf_info("job %lld: -> failed (cancelled by '%s')", (long long)r->ids[0], r->user_name);
    parse_json_members(row, JOB_JSON);
    job_row_public(row);
    r->kick_jobs = true;
    return ok(r, 200, row);
}

/* ---------------------------------------------------------------- the table */

static int h_openapi(struct api_req *r);

#define R(meth, pat, role, scope, fn, sum)                                                         \
    {                                                                                              \
        {DMF_API_##meth, pat, role, scope, sum}, fn                                                \
    }
#define V  DMF_ROLE_VIEWER
#define O  DMF_ROLE_OPERATOR
#define RT DMF_ROLE_ROOT
#define RD DMF_SCOPE_READ
#define WR DMF_SCOPE_WRITE
#define JB DMF_SCOPE_JOB

static const struct route routes[] = {
    R(GET, "/api/v1/openapi.json", DMF_ROLE_NONE, 0, h_openapi, "This document."),
    R(POST, "/api/v1/users/signin", DMF_ROLE_NONE, 0, h_signin,
      "Sign in with name and password; returns a session token."),
    R(POST, "/api/v1/users/signout", V, 0, h_signout, "End this session."),
    R(GET, "/api/v1/users/me", V, RD, h_me, "The signed-in user."),
    R(GET, "/api/v1/users", RT, RD, h_users_list, "List users."),
    R(POST, "/api/v1/users", RT, WR, h_users_create, "Create a user (name, password, role)."),
    R(GET, "/api/v1/users/{id}", RT, RD, h_users_get, "One user."),
    R(PATCH, "/api/v1/users/{id}", RT, WR, h_users_update, "Change a user's role or password."),
    R(DELETE, "/api/v1/users/{id}", RT, WR, h_users_delete, "Delete a user."),
    R(GET, "/api/v1/personal-access-tokens", V, RD, h_pats_list,
      "List personal access tokens (yours; root: all)."),
    R(POST, "/api/v1/personal-access-tokens", O, WR, h_pats_create,
      "Create a personal access token (name, scopes, expires_in); the token is shown once."),
    R(DELETE, "/api/v1/personal-access-tokens/{id}", O, WR, h_pats_delete,
      "Revoke a personal access token."),
    R(GET, "/api/v1/clusters", V, RD, h_clusters_list, "List clusters."),
    R(POST, "/api/v1/clusters", O, WR, h_clusters_create,
      "Create a cluster (name, bio, scopes, config, is_default)."),
    R(GET, "/api/v1/clusters/{id}", V, RD, h_clusters_get, "One cluster."),
    R(PATCH, "/api/v1/clusters/{id}", O, WR, h_clusters_update,
      "Change a cluster (its dynamic config reaches daemons without a restart)."),
    R(DELETE, "/api/v1/clusters/{id}", O, WR, h_clusters_delete, "Delete a cluster."),
    R(GET, "/api/v1/schedulers", V, RD, h_schedulers_list, "List schedulers with their state."),
    R(GET, "/api/v1/schedulers/{id}", V, RD, h_schedulers_get, "One scheduler."),
    R(DELETE, "/api/v1/schedulers/{id}", O, WR, h_schedulers_delete, "Forget a scheduler."),
    R(GET, "/api/v1/schedulers/{id}/live", V, RD, h_schedulers_live,
      "The scheduler's hosts, tasks and peers now (asked of the scheduler)."),
    R(GET, "/api/v1/seed-peers", V, RD, h_seeds_list, "List seed peers with their state."),
    R(GET, "/api/v1/seed-peers/{id}", V, RD, h_seeds_get, "One seed peer."),
    R(DELETE, "/api/v1/seed-peers/{id}", O, WR, h_seeds_delete, "Forget a seed peer."),
    R(GET, "/api/v1/hosts", V, RD, h_hosts_list, "Daemons that asked for their schedulers."),
    R(GET, "/api/v1/jobs", V, RD, h_jobs_list, "List jobs, newest first."),
    R(POST, "/api/v1/jobs", O, JB, h_jobs_create, "Create a job (preheat)."),
    R(GET, "/api/v1/jobs/{id}", V, RD, h_jobs_get, "One job with its progress."),
    R(POST, "/api/v1/jobs/{id}/cancel", O, JB, h_jobs_cancel, "Cancel a pending or running job."),
    R(GET, "/api/v1/audit-logs", RT, RD, h_audit_list, "The audit log, newest first."),
    R(POST, "/oapi/v1/jobs", O, JB, h_oapi_jobs_create,
      "Dragonfly's open API: create a preheat job with a personal access token."),
    R(GET, "/oapi/v1/jobs/{id}", V, RD, h_jobs_get, "Dragonfly's open API: one job."),
};

const struct dmf_api_route_info *dmf_api_route(size_t i)
{
    return i < DMF_ARRAY_SIZE(routes) ? &routes[i].info : NULL;
}

const char *dmf_api_method_name(enum dmf_api_method m)
{
    static const char *const names[] = {"GET", "POST", "PATCH", "DELETE"};
    return names[m];
}

int dmf_api_path_match(const char *pat, const char *path, int64_t ids[2])
{
    int nid = 0;
    while (*pat && *path) {
        if (strncmp(pat, "{id}", 4) == 0) {
            size_t n = 0;
            int64_t v = 0;
            while (path[n] >= '0' && path[n] <= '9') {
                if (n == 18)
                    return 0; /* 19 digits may overflow: no id is that long */
                v = v * 10 + (path[n] - '0');
                n++;
            }
            if (n == 0 || n > 18 || v == 0 || (path[n] && path[n] != '/') || nid >= 2)
                return 0;
            ids[nid++] = v;
            pat += 4;
            path += n;
            continue;
        }
        if (*pat != *path)
            return 0;
        pat++;
        path++;
    }
    return *pat == '\0' && *path == '\0';
}

static int h_openapi(struct api_req *r)
{
    json_t *paths = json_object();
    for (size_t i = 0; i < DMF_ARRAY_SIZE(routes); i++) {
        const struct dmf_api_route_info *ri = &routes[i].info;
        json_t *p = json_object_get(paths, ri->pattern);
        if (!p) {
            p = json_object();
            json_object_set_new(paths, ri->pattern, p);
        }
        char method[8];
        snprintf(method, sizeof(method), "%s", dmf_api_method_name(ri->method));
        for (char *c = method; *c; c++)
            *c = (char)(*c - 'A' + 'a');
        char scopes[32];
        dmf_scope_format(ri->scope, scopes, sizeof(scopes));
        json_t *op = json_pack("{s:s, s:s, s:s}", "summary", ri->summary, "x-damselfly-role",
                               dmf_role_name(ri->role), "x-damselfly-scope", scopes);
        if (ri->role == DMF_ROLE_NONE)
            json_object_set_new(op, "security", json_array());
        if (strstr(ri->pattern, "{id}"))
            json_object_set_new(op, "parameters",
                                json_pack("[{s:s, s:s, s:b, s:{s:s, s:i}}]", "name", "id", "in",
                                          "path", "required", 1, "schema", "type", "integer",
                                          "minimum", 1));
        json_object_set_new(op, "responses",
                            json_pack("{s:{s:s}, s:{s:s}, s:{s:s}, s:{s:s}}", "200", "description",
                                      "success", "400", "description", "invalid request", "401",
                                      "description", "no valid credentials", "403", "description",
                                      "role or token scope missing"));
        json_object_set_new(p, method, op);
    }
    json_t *doc = json_pack("{s:s, s:{s:s, s:s}, s:o, s:{s:{s:{s:s, s:s}}}, s:[{s:[]}]}", "openapi",
                            "3.0.3", "info", "title", "damselfly manager", "version", DMF_VERSION,
                            "paths", paths, "components", "securitySchemes", "bearer", "type",
                            "http", "scheme", "bearer", "security", "bearer");
    return ok(r, 200, doc);
}

/* ---------------------------------------------------------------- request path (loop) */

static void on_conn_close(struct evhttp_connection *conn, void *arg)
{
    struct api_req *r = arg;
    r->req = NULL;
}

static void req_work(void *arg)
{
    struct api_req *r = arg;
    dmf_mdb_lock(r->m->db);
    if (r->route->info.role != DMF_ROLE_NONE)
        authenticate(r);
    int d = dmf_auth_decide(r->route->info.role, r->route->info.scope, &r->who);
    if (d == 401) {
        dmf_metric_add(&m_denied_401, 1);
        r->status = fail(r, 401, "valid credentials required (Authorization: Bearer TOKEN)");
    } else if (d == 403) {
        dmf_metric_add(&m_denied_403, 1);
        r->status = fail(r, 403, "the %s role%s is required", dmf_role_name(r->route->info.role),
                         r->token_kind == DMF_TOKEN_PAT ? " and a token scope" : "");
    } else {
        r->status = r->route->fn(r);
    }
    if (r->route->info.method != DMF_API_GET)
        audit(r);
    dmf_mdb_unlock(r->m->db);
}

static void reply(struct api_req *r);
static void live_ask(struct api_req *r);

static void req_done(void *arg)
{
    struct api_req *r = arg;
    if (r->live_addr && r->status == 200 && r->req) {
        live_ask(r);
        return;
    }
    reply(r);
}

static void reply(struct api_req *r)
{
    dmf_metric_add(&m_requests, 1);
    dmf_log(r->status >= 500 ? DMF_LOG_WARN : DMF_LOG_DEBUG, "api: %s %s from %s: %d%s%s",
            dmf_api_method_name(r->route->info.method), r->path, r->peer, r->status,
            r->user_name[0] ? " user " : "", r->user_name);
    if (r->kick_jobs && r->m->jobs)
        dmf_jobs_kick(r->m->jobs);
    if (r->req) {
        evhttp_connection_set_closecb(evhttp_request_get_connection(r->req), NULL, NULL);
        struct evbuffer *out = evbuffer_new();
        char *text = r->resp ? json_dumps(r->resp, JSON_COMPACT) : dmf_xstrdup("{}");
        evbuffer_add(out, text, strlen(text));
        evbuffer_add(out, "\n", 1);
        free(text);
        struct evkeyvalq *h = evhttp_request_get_output_headers(r->req);
        evhttp_add_header(h, "Content-Type", "application/json");
        evhttp_add_header(h, "Cache-Control", "no-store");
        if (r->status == 401)
            evhttp_add_header(h, "WWW-Authenticate", "Bearer");
        if (r->status == 429 && r->retry_after > 0) {
            char ra[24];
            snprintf(ra, sizeof(ra), "%lld", (long long)r->retry_after);
            evhttp_add_header(h, "Retry-After", ra);
        }
        evhttp_send_reply(r->req, r->status, NULL, out);
        evbuffer_free(out);
    }
    json_decref(r->resp);
    free(r->live_addr);
    free(r->body);
    free(r->auth);
    free(r);
}

/* ListLive's answer as the API shows it: hosts with their load and peers, and the same
 * peers grouped by task. */
static json_t *live_json(const Damselfly__V1__ListLiveResponse *l, json_int_t id)
{
    json_t *hosts = json_array(), *tasks = json_object();
    for (size_t i = 0; i < l->n_hosts; i++) {
        const Damselfly__V1__LiveHost *h = l->hosts[i];
        json_t *peers = json_array();
        for (size_t k = 0; k < h->n_peers; k++) {
            const Damselfly__V1__LivePeer *p = h->peers[k];
            json_array_append_new(
                peers, json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:{s:I, s:I}}", "task_id",
                                 p->task_id, "peer_id", p->peer_id, "application", p->application,
                                 "state", p->state, "held_pieces", (json_int_t)p->held_pieces,
                                 "total_pieces", (json_int_t)p->total_pieces, "bytes", "parents",
                                 (json_int_t)p->bytes_from_parents, "origin",
                                 (json_int_t)p->bytes_from_origin));
            json_t *t = json_object_get(tasks, p->task_id);
            if (!t) {
                t = json_pack("{s:s, s:s, s:I, s:I, s:[]}", "task_id", p->task_id, "url", p->url,
                              "content_length", (json_int_t)p->content_length, "total_pieces",
                              (json_int_t)p->total_pieces, "peers");
                json_object_set_new(tasks, p->task_id, t);
            }
            json_array_append_new(json_object_get(t, "peers"),
                                  json_pack("{s:s, s:s, s:s, s:s, s:I}", "host_id", h->id,
                                            "peer_id", p->peer_id, "application", p->application,
                                            "state", p->state, "held_pieces",
                                            (json_int_t)p->held_pieces));
        }
        json_array_append_new(
            hosts,
            json_pack("{s:s, s:s, s:s, s:b, s:s, s:s, s:I, s:I, s:I, s:I, s:{s:I, s:I}, s:o}", "id",
                      h->id, "hostname", h->hostname, "ip", h->ip, "seed", h->seed, "idc", h->idc,
                      "location", h->location, "upload_capacity", (json_int_t)h->upload_capacity,
                      "upload_rate", (json_int_t)h->upload_rate, "active_uploads",
                      (json_int_t)h->active_uploads, "last_seen_ms_ago",
                      (json_int_t)h->last_seen_ms_ago, "bytes", "parents",
                      (json_int_t)h->bytes_from_parents, "origin", (json_int_t)h->bytes_from_origin,
                      "peers", peers));
    }
    json_t *tl = json_array();
    const char *k;
    json_t *v;
    json_object_foreach(tasks, k, v) json_array_append(tl, v);
    json_decref(tasks);
    return json_pack("{s:I, s:I, s:I, s:I, s:o, s:o}", "scheduler_id", id, "total_hosts",
                     (json_int_t)l->total_hosts, "total_tasks", (json_int_t)l->total_tasks,
                     "total_peers", (json_int_t)l->total_peers, "hosts", hosts, "tasks", tl);
}

static void on_live(void *arg, grpc_status_code st, const char *details, const uint8_t *resp,
                    size_t len)
{
    struct api_req *r = arg;
    dmf_rpc_channel_free(r->live_ch);
    r->live_ch = NULL;
    Damselfly__V1__ListLiveResponse *l =
        st == GRPC_STATUS_OK ? damselfly__v1__list_live_response__unpack(NULL, len, resp) : NULL;
    json_decref(r->resp);
    if (l) {
        r->resp = live_json(l, (json_int_t)r->ids[0]);
        damselfly__v1__list_live_response__free_unpacked(l, NULL);
    } else {
        r->status = 502;
        r->resp = json_pack("{s:s, s:s}", "error", "the scheduler did not answer", "detail",
                            details ? details : "");
    }
    reply(r);
}

static void live_ask(struct api_req *r)
{
    Damselfly__V1__ListLiveRequest q = DAMSELFLY__V1__LIST_LIVE_REQUEST__INIT;
    /* With --tls-*, only a server whose certificate is a scheduler's hears the request. */
    struct dmf_tls_expect expect = {.role = DMF_TLS_ROLE_SCHEDULER, .host_id = NULL};
    r->live_ch = dmf_rpc_channel_new_member(r->m->rpc, r->live_addr, &expect);
    dmf_rpc_unary(r->live_ch, "/damselfly.v1.SchedulerView/ListLive", &q.base, 5000, on_live, r);
}

static void reply_now(struct evhttp_request *req, int status, const char *msg)
{
    struct evbuffer *out = evbuffer_new();
    json_t *j = json_pack("{s:s}", "error", msg);
    char *text = json_dumps(j, JSON_COMPACT);
    evbuffer_add_printf(out, "%s\n", text);
    free(text);
    json_decref(j);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    evhttp_send_reply(req, status, NULL, out);
    evbuffer_free(out);
}

static int method_of(struct evhttp_request *req, enum dmf_api_method *m)
{
    switch (evhttp_request_get_command(req)) {
    case EVHTTP_REQ_GET:
        *m = DMF_API_GET;
        return 0;
    case EVHTTP_REQ_POST:
        *m = DMF_API_POST;
        return 0;
    case EVHTTP_REQ_PATCH:
        *m = DMF_API_PATCH;
        return 0;
    case EVHTTP_REQ_DELETE:
        *m = DMF_API_DELETE;
        return 0;
    default:
        return -1;
    }
}

/* Reads ?page=&per_page= (defaults 1 and 50). 0 or -EINVAL. */
static int parse_paging(const char *query, int64_t *page, int64_t *per_page)
{
    *page = 1;
    *per_page = 50;
    if (!query)
        return 0;
    struct evkeyvalq q;
    if (evhttp_parse_query_str(query, &q) != 0)
        return -EINVAL;
    int rc = 0;
    struct evkeyval *kv;
    TAILQ_FOREACH(kv, &q, next)
    {
        int64_t *dst = strcmp(kv->key, "page") == 0       ? page
                       : strcmp(kv->key, "per_page") == 0 ? per_page
                                                          : NULL;
        if (!dst)
            continue;
        char *end;
        long long v = strtoll(kv->value, &end, 10);
        if (!*kv->value || *end || v < 1 || v > (dst == page ? 1000000 : PER_PAGE_MAX))
            rc = -EINVAL;
        else
            *dst = v;
    }
    evhttp_clear_headers(&q);
    return rc;
}

static void on_request(struct evhttp_request *req, void *arg)
{
    struct dmf_manager *m = arg;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    enum dmf_api_method meth;
    if (!path || strlen(path) > 200) {
        reply_now(req, 404, "no such route");
        return;
    }
    bool path_known = false;
    const struct route *rt = NULL;
    int64_t ids[2] = {0, 0};
    bool have_method = method_of(req, &meth) == 0;
    for (size_t i = 0; i < DMF_ARRAY_SIZE(routes); i++) {
        int64_t t[2] = {0, 0};
        if (!dmf_api_path_match(routes[i].info.pattern, path, t))
            continue;
        path_known = true;
        if (have_method && routes[i].info.method == meth) {
            rt = &routes[i];
            memcpy(ids, t, sizeof(ids));
            break;
        }
    }
    if (!rt) {
        reply_now(req, path_known ? 405 : 404, path_known ? "method not allowed" : "no such route");
        return;
    }
    struct api_req *r = dmf_xcalloc(1, sizeof(*r));
    r->m = m;
    r->req = req;
    r->route = rt;
    memcpy(r->ids, ids, sizeof(ids));
    snprintf(r->path, sizeof(r->path), "%s", path);
    if (parse_paging(evhttp_uri_get_query(uri), &r->page, &r->per_page) != 0) {
        free(r);
        reply_now(req, 400, "page must be 1..1000000 and per_page 1..100");
        return;
    }
    const char *auth = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    if (auth && strlen(auth) < 512)
        r->auth = dmf_xstrdup(auth);
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t n = evbuffer_get_length(in);
    if (n > 0) {
        r->body = dmf_xmalloc(n + 1);
        evbuffer_remove(in, r->body, n);
        r->body[n] = '\0';
        if (strlen(r->body) != n) {
            free(r->body);
            free(r->auth);
            free(r);
            reply_now(req, 400, "the body contains a NUL byte");
            return;
        }
    }
    struct evhttp_connection *conn = evhttp_request_get_connection(req);
    char *host = NULL;
    ev_uint16_t port = 0;
    evhttp_connection_get_peer(conn, &host, &port);
    /* An IPv6 address in brackets: the address is then told from the port. */
    snprintf(r->peer, sizeof(r->peer), host && strchr(host, ':') ? "[%s]:%u" : "%s:%u",
             host ? host : "?", port);
    evhttp_connection_set_closecb(conn, on_conn_close, r);
    dmf_workq_submit(m->wq, req_work, req_done, r);
}

void dmf_api_install(struct dmf_manager *m, struct evhttp *http)
{
    dmf_metric_register(&m_requests);
    dmf_metric_register(&m_denied_401);
    dmf_metric_register(&m_denied_403);
    dmf_metric_register(&m_signin_throttled);
    evhttp_set_max_body_size(http, DMF_API_MAX_BODY);
    evhttp_set_max_headers_size(http, 16 * 1024);
    evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PATCH |
                                         EVHTTP_REQ_DELETE | EVHTTP_REQ_HEAD);
    evhttp_set_timeout(http, 30);
    evhttp_set_gencb(http, on_request, m);
}

/* ---------------------------------------------------------------- first start */

int dmf_api_bootstrap_root(struct dmf_manager *m, const char *password_file, char *err,
                           size_t errlen)
{
    int rc = -EIO;
    char e[256], pw[PASSWORD_MAX_LEN + 2], hash[128], now[24];
    bool generated = false;
    dmf_mdb_lock(m->db);
    i64s(dmf_manager_now(), now);
    json_t *row = dmf_mdb_row(m->db, "SELECT COUNT(*) AS n FROM clusters", NULL, 0, e, sizeof(e));
    if (!row) {
        snprintf(err, errlen, "database: %s", e);
        goto out;
    }
    if (json_integer_value(json_object_get(row, "n")) == 0) {
        const char *p[] = {now};
        /* Schedulers and daemons that name no cluster land in this one. */
        if (dmf_mdb_exec(m->db,
                         "INSERT INTO clusters (name, bio, scopes, config, is_default, created_at,"
                         " updated_at) VALUES ('default', 'made at first start', '{}',"
                         " '{\"block_applications\":[],\"block_urls\":[],\"cache_limit\":0,"
                         "\"candidate_limit\":0,\"download_rate_limit\":0,"
                         "\"upload_rate_limit\":0}', 1, $1, $1)",
                         p, 1, NULL, e, sizeof(e)) != 0 &&
            dmf_mdb_exec(m->db, "SELECT 1", NULL, 0, NULL, NULL, 0) != 0) {
            json_decref(row);
            snprintf(err, errlen, "database: %s", e);
            goto out;
        }
    }
    json_decref(row);
    row = dmf_mdb_row(m->db, "SELECT COUNT(*) AS n FROM users", NULL, 0, e, sizeof(e));
    if (!row) {
        snprintf(err, errlen, "database: %s", e);
        goto out;
    }
    json_int_t users = json_integer_value(json_object_get(row, "n"));
    json_decref(row);
    if (users > 0) {
        rc = 0;
        goto out;
    }
    if (password_file) {
        int fd = open(password_file, O_RDONLY | O_CLOEXEC);
        ssize_t n = fd >= 0 ? read(fd, pw, sizeof(pw) - 1) : -1;
        if (fd >= 0)
            close(fd);
        if (n < 0) {
            snprintf(err, errlen, "cannot read --root-password-file %s", password_file);
            goto out;
        }
        pw[n] = '\0';
        pw[strcspn(pw, "\r\n")] = '\0';
        if (strlen(pw) < PASSWORD_MIN_LEN || (size_t)n > PASSWORD_MAX_LEN + 1) {
            snprintf(err, errlen, "--root-password-file: the password must have %d..%d characters",
                     PASSWORD_MIN_LEN, PASSWORD_MAX_LEN);
            goto out;
        }
    } else {
        dmf_password_random(pw);
        generated = true;
    }
    if (dmf_password_hash(pw, hash, sizeof(hash)) != 0) {
        snprintf(err, errlen, "cannot hash the root password");
        goto out;
    }
    const char *p[] = {hash, now};
    if (dmf_mdb_exec(m->db,
                     "INSERT INTO users (name, password_hash, role, created_at, updated_at)"
                     " VALUES ('root', $1, 'root', $2, $2)",
                     p, 2, NULL, e, sizeof(e)) != 0) {
        /* Another manager on the same database made it first. */
        if (strstr(e, "UNIQUE") || strstr(e, "unique") || strstr(e, "duplicate")) {
            rc = 0;
            goto out;
        }
        snprintf(err, errlen, "cannot create the root user: %s", e);
        goto out;
    }
    if (generated) {
        /* The one time this password exists outside the hash; it is not logged. */
        printf("root password (shown once, change it): %s\n", pw);
        fflush(stdout);
    }
    dmf_info("api: root user created%s", generated ? " with a one-time password" : "");
    rc = 0;
out:
    memset(pw, 0, sizeof(pw));
    dmf_mdb_unlock(m->db);
    return rc;
}
