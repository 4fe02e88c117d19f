/* Roles, scopes, tokens and passwords; see auth.h. */
#include "manager/auth.h"

#include <argon2.h>
#include <ctype.h>
#include <errno.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/digest.h"
#include "common/util.h"

/* OWASP's argon2id minimum: 19 MiB, 2 passes, 1 lane. */
#define ARGON2_T      2
#define ARGON2_M_KIB  19456
#define ARGON2_P      1
#define ARGON2_SALT   16
#define ARGON2_HASHLN 32

enum dmf_role dmf_role_parse(const char *s)
{
    if (!s)
        return DMF_ROLE_NONE;
    if (strcmp(s, "root") == 0)
        return DMF_ROLE_ROOT;
    if (strcmp(s, "operator") == 0)
        return DMF_ROLE_OPERATOR;
    if (strcmp(s, "viewer") == 0)
        return DMF_ROLE_VIEWER;
    return DMF_ROLE_NONE;
}

const char *dmf_role_name(enum dmf_role r)
{
    switch (r) {
    case DMF_ROLE_ROOT:
        return "root";
    case DMF_ROLE_OPERATOR:
        return "operator";
    case DMF_ROLE_VIEWER:
        return "viewer";
    default:
        return "none";
    }
}

static const struct {
    const char *name;
    int bit;
} scope_names[] = {{"read", DMF_SCOPE_READ}, {"write", DMF_SCOPE_WRITE}, {"job", DMF_SCOPE_JOB}};

int dmf_scope_parse(const char *s)
{
    int mask = 0;
    if (!s)
        return 0;
    while (*s) {
        size_t n = strcspn(s, ",");
        size_t i;
        for (i = 0; i < DMF_ARRAY_SIZE(scope_names); i++)
            if (strlen(scope_names[i].name) == n && strncmp(s, scope_names[i].name, n) == 0)
                break;
        if (i == DMF_ARRAY_SIZE(scope_names))
            return 0;
        mask |= scope_names[i].bit;
        s += n;
        if (*s == ',')
            s++;
    }
    return mask;
}

void dmf_scope_format(int mask, char *out, size_t outlen)
{
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; i < DMF_ARRAY_SIZE(scope_names); i++)
        if (mask & scope_names[i].bit)
            o += (size_t)snprintf(out + o, o < outlen ? outlen - o : 0, "%s%s", o ? "," : "",
                                  scope_names[i].name);
}

enum dmf_token_kind dmf_token_kind(const char *t)
{
    if (!t || strlen(t) != DMF_TOKEN_LEN)
        return DMF_TOKEN_INVALID;
    enum dmf_token_kind k;
    if (strncmp(t, "dmfs_", 5) == 0)
        k = DMF_TOKEN_SESSION;
    else if (strncmp(t, "dmfp_", 5) == 0)
        k = DMF_TOKEN_PAT;
    else
        return DMF_TOKEN_INVALID;
    for (const char *p = t + 5; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return DMF_TOKEN_INVALID;
    return k;
}

const char *dmf_bearer_token(const char *v)
{
    if (!v)
        return NULL;
    while (*v == ' ')
        v++;
    if (strncasecmp(v, "bearer", 6) != 0 || v[6] != ' ')
        return NULL;
    v += 6;
    while (*v == ' ')
        v++;
    return *v ? v : NULL;
}

static void random_bytes(uint8_t *b, size_t n)
{
    if (RAND_bytes(b, (int)n) != 1) {
        fprintf(stderr, "damselfly: no random bytes from OpenSSL\n");
        abort();
    }
}

void dmf_token_new(enum dmf_token_kind kind, char *out)
{
    uint8_t b[32];
    random_bytes(b, sizeof(b));
    memcpy(out, kind == DMF_TOKEN_PAT ? "dmfp_" : "dmfs_", 5);
    dmf_hex_encode(b, sizeof(b), out + 5);
}

void dmf_token_hash(const char *token, char *out)
{
    uint8_t d[DMF_SHA256_LEN];
    dmf_sha256(token, strlen(token), d);
    dmf_hex_encode(d, sizeof(d), out);
}

int dmf_auth_decide(enum dmf_role need_role, int need_scope, const struct dmf_principal *p)
{
    if (need_role == DMF_ROLE_NONE)
        return 0;
    if (!p || !p->authenticated || p->role == DMF_ROLE_NONE)
        return 401;
    if (p->role < need_role)
        return 403;
    if (need_scope == 0 || (p->scopes & need_scope) != need_scope)
        return need_scope == 0 ? 0 : 403;
    return 0;
}

int dmf_password_hash(const char *password, char *out, size_t outlen)
{
    uint8_t salt[ARGON2_SALT];
    random_bytes(salt, sizeof(salt));
    int rc = argon2id_hash_encoded(ARGON2_T, ARGON2_M_KIB, ARGON2_P, password, strlen(password),
                                   salt, sizeof(salt), ARGON2_HASHLN, out, outlen);
    return rc == ARGON2_OK ? 0 : -EIO;
}

bool dmf_password_verify(const char *encoded, const char *password)
{
    if (!encoded || !password || strncmp(encoded, "$argon2id$", 10) != 0)
        return false;
    return argon2id_verify(encoded, password, strlen(password)) == ARGON2_OK;
}

void dmf_password_random(char *out)
{
    static const char alphabet[] =
        "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789-_"; /* 59 */
    uint8_t b[24];
    random_bytes(b, sizeof(b));
    for (size_t i = 0; i < sizeof(b); i++)
        out[i] = alphabet[b[i] % (sizeof(alphabet) - 1)];
    out[sizeof(b)] = '\0';
}
