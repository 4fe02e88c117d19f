/* A cluster's scopes, and how a host is matched to a cluster (pure).
 *
 * Scopes are a JSON object: {"idc": "a|b", "location": "region|zone", "cidrs": ["10.0.0.0/8"],
 * "hostnames": ["^node-[0-9]+$"]}, every member optional. A host scores against a cluster:
 * +8 when its IP is in one of the CIDRs, +4 when its hostname matches one of the regexes
 * (POSIX extended), +2 when its IDC is one of the '|'-separated IDCs, +1 per leading
 * location element shared. The cluster with the highest positive score wins; with none, the
 * default cluster. */
#ifndef DMF_MANAGER_SCOPE_H
#define DMF_MANAGER_SCOPE_H

#include <jansson.h>
#include <stddef.h>

#include "common/cidr.h" /* dmf_cidr_contains, for CIDR scopes */

#define DMF_SCOPE_MAX_ITEMS 32  /* CIDRs, and hostname regexes, per cluster */
#define DMF_SCOPE_MAX_LEN   256 /* one IDC list, location, CIDR or regex */

/* Checks scopes (must be an object of the shape above; every regex compiles, every CIDR
 * parses). 0, or -EINVAL with a reason naming the member in err. */
int dmf_scope_validate(const json_t *scopes, char *err, size_t errlen);

/* The host's score against scopes (0 = no match). Any argument may be "" (unknown). */
int dmf_scope_score(const json_t *scopes, const char *hostname, const char *ip, const char *idc,
                    const char *location);

#endif
