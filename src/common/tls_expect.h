/* Who the other end of a mutual-TLS gRPC connection must be, and what an authenticated
 * caller of the scheduler may ask: the pure decisions behind the gRPC planes' `--tls-*`.
 *
 * A client names the identity it expects of the server it dials (the scheduler: any host
 * whose certificate's role is scheduler; a seed: that seed's host ID), since peers are
 * addressed by IP and certificates carry host IDs, not host names. Pure: no I/O. */
#ifndef DMF_TLS_EXPECT_H
#define DMF_TLS_EXPECT_H

#include <stdbool.h>
#include <stddef.h>

#include "common/tls_identity.h"

struct dmf_tls_expect {
    enum dmf_tls_role role; /* DMF_TLS_ROLE_NONE = any role */
    const char *host_id;    /* NULL = any host ID; borrowed */
};

/* Does the server's (verified) identity id match e? 0, or -EPERM with why filled
 * ("server certificate is host X, expected host Y"). An identity of role NONE never
 * matches. */
int dmf_tls_expect_check(const struct dmf_tls_expect *e, const struct dmf_tls_identity *id,
                         char *why, size_t whylen);
/* May the caller read the scheduler's view of a task (StatTask: its URL and peers)? With
 * TLS off (caller NULL) anyone may; with TLS on a scheduler or manager certificate, or a
 * host that has a peer in the task (host_in_task). */
bool dmf_tls_may_stat_task(const struct dmf_tls_identity *caller, bool host_in_task);

#endif
