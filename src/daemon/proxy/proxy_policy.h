/* Who may use the proxy, and where it may connect: the proxy is not an open relay.
 *
 * Clients: only loopback, unless --proxy-allow-clients lists networks (a proxy listening
 * on a wider address needs that list; the daemon refuses to start without it).
 * Targets, for pass-through requests (checked on every address libcurl connects to, so a
 * name that resolves to a refused address is refused too) and for CONNECT tunnels
 * (checked on the address the tunnel reached, before a byte is relayed):
 *   - a network in --proxy-allow-targets is always allowed (the operator's explicit word);
 *   - link-local addresses (169.254.0.0/16, fe80::/10: cloud metadata services) are not;
 *   - this host's own addresses (loopback, any interface, the unspecified address) at the
 *     daemon's own ports (proxy, piece server, rpc) are not;
 *   - the scheduler's endpoints are not;
 *   - a CONNECT goes only to the ports of --proxy-connect-ports (default 443; '*' any).
 * The decisions are pure functions of a filled policy and an address; dmf_proxy_policy_load
 * does the I/O (interface list, resolving the scheduler) once at start. */
#ifndef DMF_PROXY_POLICY_H
#define DMF_PROXY_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/cidr.h"
#include "common/config.h"
#include "common/util.h"

#define DMF_PROXY_POLICY_MAX 64 /* entries of each list */

struct dmf_proxy_policy {
    struct dmf_cidr clients[DMF_PROXY_POLICY_MAX];
    size_t nclients; /* 0: loopback clients only */
    struct dmf_cidr allow[DMF_PROXY_POLICY_MAX];
    size_t nallow;
    uint16_t connect_ports[DMF_PROXY_POLICY_MAX];
    size_t nconnect_ports;
    bool connect_any_port;
    struct dmf_cidr local[DMF_PROXY_POLICY_MAX]; /* this host's addresses (one host each) */
    size_t nlocal;
    uint16_t own_ports[8]; /* the daemon's listening ports */
    size_t nown;
    struct sockaddr_storage sched[DMF_PROXY_POLICY_MAX]; /* scheduler endpoints */
    size_t nsched;
};

/* Fills p from the option lists (CIDRs; ports or '*'), this host's interface addresses
 * and the scheduler list ("host:port[,host:port...]", may be NULL), resolved once.
 * 0, or -EINVAL with the offending option and value in err. */
int dmf_proxy_policy_load(struct dmf_proxy_policy *p, const struct dmf_strlist *clients,
                          const struct dmf_strlist *allow, const struct dmf_strlist *connect_ports,
                          const char *schedulers, char *err, size_t errlen);
/* Adds a port the daemon listens on (piece server, rpc, the proxy itself). */
void dmf_proxy_policy_own_port(struct dmf_proxy_policy *p, uint16_t port);

/* NULL when a client at sa may use the proxy, else the reason. */
const char *dmf_proxy_policy_client(const struct dmf_proxy_policy *p, const struct sockaddr *sa);
/* NULL when a CONNECT may go to this port, else the reason. */
const char *dmf_proxy_policy_connect_port(const struct dmf_proxy_policy *p, uint16_t port);
/* NULL when the proxy may connect to sa (address and port) for a pass-through request
 * (connect false) or a CONNECT tunnel (connect true), else the reason. */
const char *dmf_proxy_policy_target(const struct dmf_proxy_policy *p, const struct sockaddr *sa,
                                    bool connect);

#endif
