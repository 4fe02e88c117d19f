/* Peer identity and role decisions; see tls_identity.h. */
#include "common/tls_identity.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static const char *const role_names[] = {
    [DMF_TLS_ROLE_NONE] = "none",       [DMF_TLS_ROLE_PEER] = "peer",
    [DMF_TLS_ROLE_SEED] = "seed",       [DMF_TLS_ROLE_SCHEDULER] = "scheduler",
    [DMF_TLS_ROLE_MANAGER] = "manager",
};

bool dmf_tls_host_id_valid(const char *s)
{
    if (s == NULL || s[0] == '\0' || s[0] == '.' || s[0] == '-')
        return false;
    size_t n = 0;
    for (const char *p = s; *p != '\0'; p++, n++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == ':' || c == '-';
        if (!ok || n >= DMF_TLS_ID_MAX)
            return false;
    }
    return true;
}

enum dmf_tls_role dmf_tls_role_parse(const char *ou)
{
    if (ou == NULL)
        return DMF_TLS_ROLE_NONE;
    for (int r = DMF_TLS_ROLE_PEER; r <= DMF_TLS_ROLE_MANAGER; r++)
        if (strcmp(ou, role_names[r]) == 0)
            return (enum dmf_tls_role)r;
    return DMF_TLS_ROLE_NONE;
}

const char *dmf_tls_role_name(enum dmf_tls_role r)
{
    if ((int)r < 0 || r > DMF_TLS_ROLE_MANAGER)
        return "none";
    return role_names[r];
}

int dmf_tls_identity_from_subject(const char *const *cns, const size_t *cn_lens, size_t n_cn,
                                  const char *const *ous, const size_t *ou_lens, size_t n_ou,
                                  struct dmf_tls_identity *out, char *why, size_t whylen)
{
    memset(out, 0, sizeof(*out));
    if (n_cn != 1) {
        snprintf(why, whylen, "certificate subject has %zu CNs, need exactly 1", n_cn);
        return -EPERM;
    }
    if (strlen(cns[0]) != cn_lens[0] || !dmf_tls_host_id_valid(cns[0])) {
        snprintf(why, whylen, "certificate CN is not a valid host ID");
        return -EPERM;
    }
    enum dmf_tls_role role = DMF_TLS_ROLE_PEER;
    if (n_ou > 1) {
        snprintf(why, whylen, "certificate subject has %zu OUs, need at most 1", n_ou);
        return -EPERM;
    }
    if (n_ou == 1) {
        role = strlen(ous[0]) == ou_lens[0] ? dmf_tls_role_parse(ous[0]) : DMF_TLS_ROLE_NONE;
        if (role == DMF_TLS_ROLE_NONE) {
            snprintf(why, whylen, "certificate OU is not a damselfly role");
            return -EPERM;
        }
    }
    memcpy(out->host_id, cns[0], cn_lens[0] + 1);
    out->role = role;
    return 0;
}

bool dmf_tls_may_act_for(const struct dmf_tls_identity *caller, const char *claimed_host_id)
{
    if (caller == NULL)
        return true;
    if (caller->role == DMF_TLS_ROLE_NONE || claimed_host_id == NULL)
        return false;
    return strcmp(caller->host_id, claimed_host_id) == 0;
}

bool dmf_tls_is_seed(const struct dmf_tls_identity *caller, bool listed)
{
    if (caller == NULL)
        return listed;
    if (caller->role == DMF_TLS_ROLE_NONE)
        return false;
    return caller->role == DMF_TLS_ROLE_SEED || listed;
}

bool dmf_tls_may_trigger_download(const struct dmf_tls_identity *caller)
{
    if (caller == NULL)
        return true;
    return caller->role == DMF_TLS_ROLE_SCHEDULER || caller->role == DMF_TLS_ROLE_MANAGER;
}
