/* Where a fetch that another host asked for (DownloadTask on the rpc port: a seed
 * trigger, a preheat) may go: the seed is not an SSRF engine for whoever reaches the
 * scheduler. The check runs on every address libcurl is about to connect to (through
 * dmf_http_opts.addr_check), so a name that resolves, or is re-bound, to a refused address
 * is refused too; the URL's host name is checked first.
 *
 * In order:
 *   1. a host name in --origin-deny, or an address in one of its networks: refused;
 *   2. a host name in --origin-allow: allowed at any address (the operator's word);
 *      an address in one of its networks: allowed;
 *   3. loopback, the unspecified address, link-local (cloud metadata) and this host's own
 *      addresses and the scheduler's and manager's: refused;
 *   4. anything else: allowed.
 * A host name entry is "name" (exactly, case-insensitive) or "*.domain" (any subdomain).
 * Decisions are pure over a filled policy; dmf_origin_policy_load does the I/O once. */
#ifndef DMF_ORIGIN_POLICY_H
#define DMF_ORIGIN_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "common/cidr.h"
#include "common/config.h"

#define DMF_ORIGIN_POLICY_MAX 64 /* entries of each list */
#define DMF_ORIGIN_HOST_MAX   256

struct dmf_origin_policy {
    struct dmf_cidr allow[DMF_ORIGIN_POLICY_MAX], deny[DMF_ORIGIN_POLICY_MAX];
    size_t nallow, ndeny;
    char allow_hosts[DMF_ORIGIN_POLICY_MAX][DMF_ORIGIN_HOST_MAX];
    char deny_hosts[DMF_ORIGIN_POLICY_MAX][DMF_ORIGIN_HOST_MAX];
    size_t nallow_hosts, ndeny_hosts;
    struct dmf_cidr own[DMF_ORIGIN_POLICY_MAX]; /* this host's and the cluster's addresses */
    size_t nown;
};

/* Fills p from --origin-allow and --origin-deny (CIDRs or host names), and adds this
 * host's interface addresses and what `cluster` ("host:port,..." of the schedulers and
 * managers; may be NULL) resolves to. 0, or -EINVAL with the option and value in err. */
int dmf_origin_policy_load(struct dmf_origin_policy *p, const struct dmf_strlist *allow,
                           const struct dmf_strlist *deny, const char *cluster, char *err,
                           size_t errlen);
/* Adds one of the cluster's own addresses (one host). */
void dmf_origin_policy_own(struct dmf_origin_policy *p, const struct sockaddr *sa);

/* The URL's host (a name or an IP literal, without brackets or port): NULL when it may be
 * fetched (*any_address says whether step 2's name rule lets it connect anywhere), else
 * the reason. */
const char *dmf_origin_policy_host(const struct dmf_origin_policy *p, const char *host,
                                   bool *any_address);
/* An address about to be connected to: NULL when allowed, else the reason. arg is a
 * const struct dmf_origin_policy * (the dmf_http_opts.addr_check signature). */
const char *dmf_origin_policy_addr(void *arg, const struct sockaddr *sa);
/* The host of an http(s) URL into host (lower case, no brackets); 0 or -EINVAL. */
int dmf_origin_policy_url_host(const char *url, char *host, size_t hostlen);

#endif
