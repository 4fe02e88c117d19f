/* The manager's schema; see migrations.h and docs/internals/MANAGER.md. */
#include "manager/migrations.h"

#include <string.h>

#include "common/util.h"

static const char *const v1[] = {
    "CREATE TABLE users (id %ID%, name TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL,"
    " role TEXT NOT NULL, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL)",
    "CREATE TABLE sessions (id %ID%, token_hash TEXT NOT NULL UNIQUE,"
    " user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
    " created_at BIGINT NOT NULL, expires_at BIGINT NOT NULL)",
    "CREATE TABLE personal_access_tokens (id %ID%, name TEXT NOT NULL,"
    " token_hash TEXT NOT NULL UNIQUE,"
    " user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
    " scopes TEXT NOT NULL, created_at BIGINT NOT NULL, expires_at BIGINT NOT NULL,"
    " last_used_at BIGINT)",
    "CREATE TABLE clusters (id %ID%, name TEXT NOT NULL UNIQUE, bio TEXT NOT NULL,"
    " scopes TEXT NOT NULL, config TEXT NOT NULL, is_default BIGINT NOT NULL,"
    " created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL)",
    "CREATE TABLE schedulers (id %ID%, cluster_id BIGINT NOT NULL REFERENCES clusters(id)"
    " ON DELETE CASCADE, hostname TEXT NOT NULL, ip TEXT NOT NULL, port BIGINT NOT NULL,"
    " idc TEXT NOT NULL, location TEXT NOT NULL, state TEXT NOT NULL,"
    " last_keepalive_at BIGINT NOT NULL, created_at BIGINT NOT NULL,"
    " updated_at BIGINT NOT NULL, UNIQUE (cluster_id, ip, port))",
    "CREATE TABLE seed_peers (id %ID%, cluster_id BIGINT NOT NULL REFERENCES clusters(id)"
    " ON DELETE CASCADE, hostname TEXT NOT NULL, ip TEXT NOT NULL, port BIGINT NOT NULL,"
    " piece_port BIGINT NOT NULL, idc TEXT NOT NULL, location TEXT NOT NULL,"
    " state TEXT NOT NULL, last_keepalive_at BIGINT NOT NULL, created_at BIGINT NOT NULL,"
    " updated_at BIGINT NOT NULL, UNIQUE (cluster_id, ip, port))",
    "CREATE TABLE hosts (id %ID%, host_id TEXT NOT NULL UNIQUE, hostname TEXT NOT NULL,"
    " ip TEXT NOT NULL, idc TEXT NOT NULL, location TEXT NOT NULL, type TEXT NOT NULL,"
    " cluster_id BIGINT, last_seen_at BIGINT NOT NULL, created_at BIGINT NOT NULL)",
    "CREATE TABLE jobs (id %ID%, type TEXT NOT NULL, state TEXT NOT NULL,"
    " args TEXT NOT NULL, result TEXT NOT NULL, reason TEXT NOT NULL,"
    " user_id BIGINT, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL)",
    "CREATE INDEX jobs_state ON jobs (state)",
    "CREATE TABLE audit_log (id %ID%, at BIGINT NOT NULL, user_id BIGINT,"
    " user_name TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL,"
    " status BIGINT NOT NULL)",
    NULL,
};

/* Every job is claimed by exactly one manager before any scheduler is asked to run it. */
static const char *const v2[] = {
    "ALTER TABLE jobs ADD COLUMN claimed_by TEXT",
    "ALTER TABLE jobs ADD COLUMN claimed_at BIGINT",
    NULL,
};

/* Hosts can be reached for all_peers preheats. */
static const char *const v3[] = {
    "ALTER TABLE hosts ADD COLUMN rpc_port BIGINT NOT NULL DEFAULT 0",
    "ALTER TABLE hosts ADD COLUMN piece_port BIGINT NOT NULL DEFAULT 0",
    NULL,
};

static const struct dmf_migration migrations[] = {
    {1, "users, tokens, clusters, schedulers, seed peers, hosts, jobs, audit log", v1},
    {2, "job claims", v2},
    {3, "hosts' rpc and piece ports", v3},
};

const struct dmf_migration *dmf_migrations(size_t *n)
{
    *n = DMF_ARRAY_SIZE(migrations);
    return migrations;
}

char *dmf_migration_render(const char *statement, const char *id_type)
{
    size_t cap = strlen(statement) + 1, idl = strlen(id_type);
    for (const char *p = statement; (p = strstr(p, "%ID%")) != NULL; p += 4)
        cap += idl;
    char *out = dmf_xmalloc(cap), *o = out;
    for (const char *p = statement; *p;) {
        if (strncmp(p, "%ID%", 4) == 0) {
            memcpy(o, id_type, idl);
            o += idl;
            p += 4;
        } else {
            *o++ = *p++;
        }
    }
    *o = '\0';
    return out;
}
