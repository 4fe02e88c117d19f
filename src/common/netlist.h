/* Lists of networks and addresses that policies are built from: CIDRs from an option,
 * this host's interface addresses, and the addresses a "host:port,..." list resolves to.
 * These do the I/O (getifaddrs, getaddrinfo) once, at start or on a change; the checks
 * over the lists are pure (cidr.h). */
#ifndef DMF_NETLIST_H
#define DMF_NETLIST_H

#include <stddef.h>
#include <sys/socket.h>

#include "common/cidr.h"
#include "common/config.h"

/* Appends the CIDRs of l to out (at most max in all, *n counts them). 0, or -EINVAL with
 * "FLAG: 'value' is not a network ..." in err. */
int dmf_netlist_cidrs(struct dmf_cidr *out, size_t max, size_t *n, const struct dmf_strlist *l,
                      const char *flag, char *err, size_t errlen);
/* Appends this host's interface addresses (one host each) to out; returns how many. */
size_t dmf_netlist_local(struct dmf_cidr *out, size_t max);
/* Appends the addresses "host:port[,host:port...]" resolves to (blocking; bad entries are
 * skipped) to out; returns how many. list may be NULL. */
size_t dmf_netlist_resolve(const char *list, struct sockaddr_storage *out, size_t max);

#endif
