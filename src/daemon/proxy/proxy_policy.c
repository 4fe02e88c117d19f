/* The proxy's client and target policy; see proxy_policy.h. */
#include "daemon/proxy/proxy_policy.h"

#include "common/netlist.h"

#include <errno.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint16_t port_of(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)sa)->sin_port);
    if (sa->sa_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
    return 0;
}

static bool same_endpoint(const struct sockaddr *a, const struct sockaddr *b)
{
    int fa, fb;
    uint8_t xa[16], xb[16];
    return dmf_sockaddr_ip(a, &fa, xa) && dmf_sockaddr_ip(b, &fb, xb) && fa == fb &&
           memcmp(xa, xb, 16) == 0 && port_of(a) == port_of(b);
}

const char *dmf_proxy_policy_client(const struct dmf_proxy_policy *p, const struct sockaddr *sa)
{
    int family;
    uint8_t a[16];
    if (!dmf_sockaddr_ip(sa, &family, a))
        return "not an IP client";
    if (p->nclients == 0)
        return dmf_ip_is_loopback(family, a) ? NULL : "only loopback clients may use this proxy";
    return dmf_cidr_list_match(p->clients, p->nclients, sa) ? NULL
                                                            : "client not in --proxy-allow-clients";
}

const char *dmf_proxy_policy_connect_port(const struct dmf_proxy_policy *p, uint16_t port)
{
    for (size_t i = 0; i < p->nconnect_ports; i++)
        if (p->connect_ports[i] == port)
            return NULL;
    return p->connect_any_port ? NULL
                               : "CONNECT to this port is not allowed (see --proxy-connect-ports)";
}

const char *dmf_proxy_policy_target(const struct dmf_proxy_policy *p, const struct sockaddr *sa,
                                    bool connect)
{
    int family;
    uint8_t a[16];
    if (!dmf_sockaddr_ip(sa, &family, a))
        return "not an IP address";
    uint16_t port = port_of(sa);
    const char *why = connect ? dmf_proxy_policy_connect_port(p, port) : NULL;
    if (why != NULL)
        return why;
    if (dmf_cidr_list_match(p->allow, p->nallow, sa))
        return NULL;
    if (dmf_ip_is_link_local(family, a))
        return "a link-local address (such as a cloud metadata service)";
    for (size_t i = 0; i < p->nsched; i++)
        if (same_endpoint((const struct sockaddr *)&p->sched[i], sa))
            return "the scheduler";
    bool local = dmf_ip_is_loopback(family, a) || dmf_ip_is_unspecified(family, a) ||
                 dmf_cidr_list_match(p->local, p->nlocal, sa);
    for (size_t i = 0; local && i < p->nown; i++)
        if (p->own_ports[i] == port)
            return "this daemon's own port";
    return NULL;
}

void dmf_proxy_policy_own_port(struct dmf_proxy_policy *p, uint16_t port)
{
    if (port != 0 && p->nown < DMF_ARRAY_SIZE(p->own_ports))
        p->own_ports[p->nown++] = port;
}

int dmf_proxy_policy_load(struct dmf_proxy_policy *p, const struct dmf_strlist *clients,
                          const struct dmf_strlist *allow, const struct dmf_strlist *connect_ports,
                          const char *schedulers, char *err, size_t errlen)
{
    memset(p, 0, sizeof(*p));
    if (dmf_netlist_cidrs(p->clients, DMF_PROXY_POLICY_MAX, &p->nclients, clients,
                          "--proxy-allow-clients", err, errlen) ||
        dmf_netlist_cidrs(p->allow, DMF_PROXY_POLICY_MAX, &p->nallow, allow,
                          "--proxy-allow-targets", err, errlen))
        return -EINVAL;
    if (connect_ports == NULL || connect_ports->n == 0) {
        p->connect_ports[p->nconnect_ports++] = 443;
    }
    for (size_t i = 0; connect_ports && i < connect_ports->n; i++) {
        const char *s = connect_ports->v[i];
        char *end = NULL;
        long v = strcmp(s, "*") == 0 ? 0 : strtol(s, &end, 10);
        if (strcmp(s, "*") == 0) {
            p->connect_any_port = true;
        } else if (end == s || *end != '\0' || v < 1 || v > 65535 ||
                   p->nconnect_ports >= DMF_PROXY_POLICY_MAX) {
            snprintf(err, errlen, "--proxy-connect-ports: '%s' is not a port (1-65535) or '*'", s);
            return -EINVAL;
        } else {
            p->connect_ports[p->nconnect_ports++] = (uint16_t)v;
        }
    }
    p->nlocal = dmf_netlist_local(p->local, DMF_PROXY_POLICY_MAX);
    p->nsched = dmf_netlist_resolve(schedulers, p->sched, DMF_PROXY_POLICY_MAX);
    return 0;
}
