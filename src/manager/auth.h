/* The manager's authentication and authorisation: roles, tokens, passwords, and the one
 * decision every REST route goes through. Everything but the password functions is pure.
 *
 * Tokens are random: a session token is "dmfs_" + 64 hex digits, a personal access token
 * "dmfp_" + 64 hex digits. Only their SHA-256 (hex) is stored, so a database dump gives no
 * usable token. Passwords are stored as argon2id encoded hashes. */
#ifndef DMF_MANAGER_AUTH_H
#define DMF_MANAGER_AUTH_H

#include <stdbool.h>
#include <stddef.h>

enum dmf_role {
    DMF_ROLE_NONE = 0, /* a public route: no credentials needed */
    DMF_ROLE_VIEWER = 1,
    DMF_ROLE_OPERATOR = 2,
    DMF_ROLE_ROOT = 3,
};

/* Scopes a personal access token may carry (a session has all of them). */
enum dmf_scope {
    DMF_SCOPE_READ = 1 << 0,  /* every GET */
    DMF_SCOPE_WRITE = 1 << 1, /* changes to clusters, schedulers, seeds, users, tokens */
    DMF_SCOPE_JOB = 1 << 2,   /* creating and cancelling jobs (preheat, delete, where-is) */
};
#define DMF_SCOPE_ALL (DMF_SCOPE_READ | DMF_SCOPE_WRITE | DMF_SCOPE_JOB)

enum dmf_token_kind { DMF_TOKEN_INVALID = 0, DMF_TOKEN_SESSION, DMF_TOKEN_PAT };

#define DMF_TOKEN_LEN      69 /* 5-character prefix + 64 hex digits */
#define DMF_TOKEN_HASH_LEN 64 /* hex SHA-256 */

/* The role named "root", "operator" or "viewer"; DMF_ROLE_NONE for anything else. */
enum dmf_role dmf_role_parse(const char *s);
const char *dmf_role_name(enum dmf_role r);

/* Parses a comma-separated list of "read", "write", "job" into a mask; 0 when the list is
 * empty or names an unknown scope. */
int dmf_scope_parse(const char *s);
/* Writes the mask as "read,write,job" into out. */
void dmf_scope_format(int mask, char *out, size_t outlen);

/* The kind of a token by its shape alone (prefix, length, lowercase hex). */
enum dmf_token_kind dmf_token_kind(const char *token);
/* The token carried by an Authorization header value "Bearer TOKEN" (scheme in any case,
 * one or more spaces), or NULL; points into value. */
const char *dmf_bearer_token(const char *value);
/* A new random token of this kind into out (DMF_TOKEN_LEN + 1 bytes). */
void dmf_token_new(enum dmf_token_kind kind, char *out);
/* Lowercase hex SHA-256 of token into out (DMF_TOKEN_HASH_LEN + 1 bytes). */
void dmf_token_hash(const char *token, char *out);

/* Who is calling, as far as the route decision needs it. */
struct dmf_principal {
    bool authenticated;
    enum dmf_role role;
    int scopes; /* DMF_SCOPE_ALL for a session */
};

/* The route decision: 0 allowed, 401 (no valid credentials) or 403 (a role or scope the
 * route needs is missing). Deny by default: a route that requires no role is the only one
 * an anonymous caller reaches. */
int dmf_auth_decide(enum dmf_role need_role, int need_scope, const struct dmf_principal *p);

/* argon2id of password into out (an encoded "$argon2id$..." string, at most 128 bytes).
 * Slow by design (about 19 MiB and tens of milliseconds): call on a worker. 0 or -EIO. */
int dmf_password_hash(const char *password, char *out, size_t outlen);
/* True when password matches the encoded hash. */
bool dmf_password_verify(const char *encoded, const char *password);
/* A random password of 24 URL-safe characters into out (25 bytes). */
void dmf_password_random(char *out);

#endif
