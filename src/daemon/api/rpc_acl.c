/* The rpc port's caller check; see rpc_acl.h. */
#include "daemon/api/rpc_acl.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/netlist.h"
#include "common/util.h"

int dmf_rpc_acl_init(struct dmf_rpc_acl *a, const struct dmf_strlist *allow, char *err,
                     size_t errlen)
{
    memset(a, 0, sizeof(*a));
    return dmf_netlist_cidrs(a->allow, DMF_RPC_ACL_MAX, &a->nallow, allow, "--rpc-allow", err,
                             errlen);
}

void dmf_rpc_acl_free(struct dmf_rpc_acl *a)
{
    free(a->resolved_for);
    a->resolved_for = NULL;
}

void dmf_rpc_acl_cluster(struct dmf_rpc_acl *a, const char *schedulers,
                         const struct dmf_strlist *managers)
{
    const char *now = schedulers ? schedulers : "";
    if (a->resolved_for && strcmp(a->resolved_for, now) == 0)
        return;
    free(a->resolved_for);
    a->resolved_for = dmf_xstrdup(now);
    a->ncluster = dmf_netlist_resolve(now, a->cluster, DMF_RPC_ACL_MAX);
    for (size_t i = 0; managers && i < managers->n; i++)
        a->ncluster += dmf_netlist_resolve(managers->v[i], a->cluster + a->ncluster,
                                           DMF_RPC_ACL_MAX - a->ncluster);
}

bool dmf_rpc_acl_peer_addr(const char *peer, struct sockaddr_storage *ss)
{
    char buf[128];
    memset(ss, 0, sizeof(*ss));
    if (peer == NULL || strlen(peer) >= sizeof(buf))
        return false;
    if (strncmp(peer, "ipv4:", 5) == 0) {
        snprintf(buf, sizeof(buf), "%s", peer + 5);
        char *colon = strrchr(buf, ':');
        if (colon)
            *colon = '\0';
        struct sockaddr_in *sin = (struct sockaddr_in *)ss;
        sin->sin_family = AF_INET;
        return inet_pton(AF_INET, buf, &sin->sin_addr) == 1;
    }
    if (strncmp(peer, "ipv6:[", 6) == 0) {
        snprintf(buf, sizeof(buf), "%s", peer + 6);
        char *end = strchr(buf, ']');
        if (end == NULL)
            return false;
        *end = '\0';
        char *pct = strchr(buf, '%'); /* a zone: "fe80::1%eth0" */
        if (pct)
            *pct = '\0';
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
        sin6->sin6_family = AF_INET6;
        return inet_pton(AF_INET6, buf, &sin6->sin6_addr) == 1;
    }
    return false;
}

static bool same_ip(const struct sockaddr *a, const struct sockaddr *b)
{
    int fa, fb;
    uint8_t xa[16], xb[16];
    return dmf_sockaddr_ip(a, &fa, xa) && dmf_sockaddr_ip(b, &fb, xb) && fa == fb &&
           memcmp(xa, xb, fa == AF_INET ? 4 : 16) == 0;
}

const char *dmf_rpc_acl_check(const struct dmf_rpc_acl *a, const char *peer)
{
    if (peer && strncmp(peer, "unix:", 5) == 0)
        return NULL;
    struct sockaddr_storage ss;
    if (!dmf_rpc_acl_peer_addr(peer, &ss))
        return "the caller's address is unknown";
    const struct sockaddr *sa = (const struct sockaddr *)&ss;
    if (dmf_cidr_list_match(a->allow, a->nallow, sa))
        return NULL;
    for (size_t i = 0; i < a->ncluster; i++)
        if (same_ip((const struct sockaddr *)&a->cluster[i], sa))
            return NULL;
    return "only this daemon's scheduler or manager (or --rpc-allow) may call DownloadTask "
           "on the rpc port";
}
