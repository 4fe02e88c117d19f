/* Who may call DownloadTask on the daemon's TCP rpc port: the scheduler(s) and manager(s)
 * this daemon is configured with (their addresses, resolved when the list changes), and
 * the networks of --rpc-allow. Anyone else could otherwise make this host fetch a URL of
 * their choosing (with the origin policy as the second wall). Local clients reach the
 * same service over the unix socket and are not checked here (its permissions are).
 * This is an address check, not authentication: mTLS is the stronger answer. */
#ifndef DMF_DAEMON_RPC_ACL_H
#define DMF_DAEMON_RPC_ACL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "common/cidr.h"
#include "common/config.h"

#define DMF_RPC_ACL_MAX 64

struct dmf_rpc_acl {
    struct dmf_cidr allow[DMF_RPC_ACL_MAX]; /* --rpc-allow */
    size_t nallow;
    struct sockaddr_storage cluster[DMF_RPC_ACL_MAX]; /* schedulers' and managers' */
    size_t ncluster;
    char *resolved_for; /* the scheduler list cluster[] was resolved from (owned) */
};

/* 0, or -EINVAL with "--rpc-allow: ..." in err. */
int dmf_rpc_acl_init(struct dmf_rpc_acl *a, const struct dmf_strlist *allow, char *err,
                     size_t errlen);
void dmf_rpc_acl_free(struct dmf_rpc_acl *a);
/* Resolves the schedulers ("host:port,...", may be NULL) and managers again when the list
 * differs from the last one (blocking name lookups: only on a change). */
void dmf_rpc_acl_cluster(struct dmf_rpc_acl *a, const char *schedulers,
                         const struct dmf_strlist *managers);
/* The address of a gRPC peer string ("ipv4:10.0.0.1:5000", "ipv6:[::1]:5000"): true and
 * *ss filled, false for anything else (a unix socket included). */
bool dmf_rpc_acl_peer_addr(const char *peer, struct sockaddr_storage *ss);
/* NULL when the gRPC peer may call DownloadTask, else the reason. "unix:" peers pass. */
const char *dmf_rpc_acl_check(const struct dmf_rpc_acl *a, const char *peer);

#endif
