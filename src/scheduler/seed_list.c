/* Known seeds; see seed_list.h. */
#include "scheduler/seed_list.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/util.h"

/* The canonical text of an IP literal (so "::1" and "0:0::1" compare equal); false when s
 * is not one. */
static bool ip_canonical(const char *s, char *out, size_t outlen)
{
    unsigned char buf[16];
    if (inet_pton(AF_INET, s, buf) == 1)
        return inet_ntop(AF_INET, buf, out, (socklen_t)outlen) != NULL;
    if (inet_pton(AF_INET6, s, buf) == 1)
        return inet_ntop(AF_INET6, buf, out, (socklen_t)outlen) != NULL;
    return false;
}

static int add_one(struct dmf_seed_list *l, const char *entry, char *err, size_t errlen)
{
    struct dmf_seed_entry e = {0};
    char host[256], why[256];
    const char *addr = entry;
    const char *bar = strchr(entry, '|');
    if (bar != NULL) {
        size_t idlen = (size_t)(bar - entry);
        if (idlen == 0 || idlen >= sizeof(e.id)) {
            snprintf(err, errlen, "seed '%s': the host id must have 1 to %zu characters", entry,
                     sizeof(e.id) - 1);
            return -EINVAL;
        }
        memcpy(e.id, entry, idlen);
        addr = bar + 1;
    }
    if (dmf_parse_hostport(addr, host, sizeof(host), &e.rpc_port, why, sizeof(why)) != 0 ||
        e.rpc_port == 0) {
        snprintf(err, errlen, "seed '%s': want [ID|]IP:RPC_PORT (%s)", entry,
                 e.rpc_port == 0 ? "no rpc port" : why);
        return -EINVAL;
    }
    if (!ip_canonical(host, e.ip, sizeof(e.ip))) {
        snprintf(err, errlen, "seed '%s': '%s' is not an IP address", entry, host);
        return -EINVAL;
    }
    if (l->n >= DMF_SEED_LIST_MAX) {
        snprintf(err, errlen, "more than %d seeds", DMF_SEED_LIST_MAX);
        return -EINVAL;
    }
    l->v[l->n++] = e;
    return 0;
}

int dmf_seed_list_add(struct dmf_seed_list *l, const char *value, char *err, size_t errlen)
{
    char buf[4096];
    if (strlen(value) >= sizeof(buf)) {
        snprintf(err, errlen, "seed list longer than %zu bytes", sizeof(buf) - 1);
        return -EINVAL;
    }
    snprintf(buf, sizeof(buf), "%s", value);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        if (*tok == '\0')
            continue;
        int rc = add_one(l, tok, err, errlen);
        if (rc != 0)
            return rc;
    }
    return 0;
}

bool dmf_seed_list_admits(const struct dmf_seed_list *l, const char *id, const char *ip,
                          uint32_t rpc_port)
{
    char canon[64];
    if (l == NULL || id == NULL || ip == NULL || !ip_canonical(ip, canon, sizeof(canon)))
        return false;
    for (size_t i = 0; i < l->n; i++) {
        const struct dmf_seed_entry *e = &l->v[i];
        if (e->rpc_port == rpc_port && strcmp(e->ip, canon) == 0 &&
            (e->id[0] == '\0' || strcmp(e->id, id) == 0))
            return true;
    }
    return false;
}
