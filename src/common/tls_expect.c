/* Expected identities of gRPC servers and StatTask's rule; see tls_expect.h. */
#include "common/tls_expect.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

int dmf_tls_expect_check(const struct dmf_tls_expect *e, const struct dmf_tls_identity *id,
                         char *why, size_t whylen)
{
    if (id == NULL || id->role == DMF_TLS_ROLE_NONE) {
        snprintf(why, whylen, "server certificate carries no damselfly identity");
        return -EPERM;
    }
    if (e->role != DMF_TLS_ROLE_NONE && id->role != e->role) {
        snprintf(why, whylen, "server certificate is host %s with role %s, expected role %s",
                 id->host_id, dmf_tls_role_name(id->role), dmf_tls_role_name(e->role));
        return -EPERM;
    }
    if (e->host_id != NULL && strcmp(e->host_id, id->host_id) != 0) {
        snprintf(why, whylen, "server certificate is host %s, expected host %s", id->host_id,
                 e->host_id);
        return -EPERM;
    }
    return 0;
}

bool dmf_tls_may_stat_task(const struct dmf_tls_identity *caller, bool host_in_task)
{
    if (caller == NULL)
        return true;
    switch (caller->role) {
    case DMF_TLS_ROLE_SCHEDULER:
    case DMF_TLS_ROLE_MANAGER:
        return true;
    case DMF_TLS_ROLE_PEER:
    case DMF_TLS_ROLE_SEED:
        return host_in_task;
    default:
        return false;
    }
}
