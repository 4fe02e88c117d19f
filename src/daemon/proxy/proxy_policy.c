/* The proxy's client and target policy; see proxy_policy.h. */
#include "daemon/proxy/proxy_policy.h"

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

static bool in_list(const struct dmf_cidr *l, size_t n, const struct sockaddr *sa)
{
    for (size_t i = 0; i < n; i++)
        if (dmf_cidr_match(&l[i], sa))
            return true;
    return false;
}

static bool is_loopback(int family, const uint8_t a[16])
{
    static const uint8_t v6_loop[16] = {[15] = 1};
    return family == AF_INET ? a[0] == 127 : memcmp(a, v6_loop, 16) == 0;
}

static bool is_unspecified(int family, const uint8_t a[16])
{
    static const uint8_t zero[16];
    return memcmp(a, zero, family == AF_INET ? 4 : 16) == 0;
}

static bool is_link_local(int family, const uint8_t a[16])
{
    return family == AF_INET ? a[0] == 169 && a[1] == 254 : a[0] == 0xfe && (a[1] & 0xc0) == 0x80;
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
        return is_loopback(family, a) ? NULL : "only loopback clients may use this proxy";
    return in_list(p->clients, p->nclients, sa) ? NULL : "client not in --proxy-allow-clients";
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
    if (in_list(p->allow, p->nallow, sa))
        return NULL;
    if (is_link_local(family, a))
        return "a link-local address (such as a cloud metadata service)";
    for (size_t i = 0; i < p->nsched; i++)
        if (same_endpoint((const struct sockaddr *)&p->sched[i], sa))
            return "the scheduler";
    bool local =
        is_loopback(family, a) || is_unspecified(family, a) || in_list(p->local, p->nlocal, sa);
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

static int load_cidrs(struct dmf_cidr *out, size_t *n, const struct dmf_strlist *l,
                      const char *flag, char *err, size_t errlen)
{
    for (size_t i = 0; l && i < l->n; i++) {
        if (*n >= DMF_PROXY_POLICY_MAX || dmf_cidr_parse(l->v[i], &out[*n]) != 0) {
            snprintf(err, errlen, "%s: '%s' is not a network (e.g. 10.0.0.0/8, fd00::/8)%s", flag,
                     l->v[i], *n >= DMF_PROXY_POLICY_MAX ? " or one too many" : "");
            return -EINVAL;
        }
        (*n)++;
    }
    return 0;
}

static void load_local(struct dmf_proxy_policy *p)
{
    struct ifaddrs *ifs = NULL;
    if (getifaddrs(&ifs) != 0)
        return;
    for (struct ifaddrs *i = ifs; i && p->nlocal < DMF_PROXY_POLICY_MAX; i = i->ifa_next) {
        struct dmf_cidr c = {0};
        if (i->ifa_addr == NULL || !dmf_sockaddr_ip(i->ifa_addr, &c.family, c.addr))
            continue;
        c.bits = c.family == AF_INET ? 32 : 128;
        p->local[p->nlocal++] = c;
    }
    freeifaddrs(ifs);
}

static void load_schedulers(struct dmf_proxy_policy *p, const char *list)
{
    char *copy = dmf_xstrdup(list ? list : ""), *save = NULL;
    for (char *s = strtok_r(copy, ",", &save); s; s = strtok_r(NULL, ",", &save)) {
        char host[256], why[128], port[8];
        uint16_t pn;
        if (dmf_parse_hostport(s, host, sizeof(host), &pn, why, sizeof(why)) != 0)
            continue; /* the announce client reports a bad --scheduler */
        snprintf(port, sizeof(port), "%u", pn);
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
        if (getaddrinfo(host, port, &hints, &ai) != 0)
            continue;
        for (struct addrinfo *a = ai; a && p->nsched < DMF_PROXY_POLICY_MAX; a = a->ai_next)
            if (a->ai_addrlen <= sizeof(p->sched[0]))
                memcpy(&p->sched[p->nsched++], a->ai_addr, a->ai_addrlen);
        freeaddrinfo(ai);
    }
    free(copy);
}

int dmf_proxy_policy_load(struct dmf_proxy_policy *p, const struct dmf_strlist *clients,
                          const struct dmf_strlist *allow, const struct dmf_strlist *connect_ports,
                          const char *schedulers, char *err, size_t errlen)
{
    memset(p, 0, sizeof(*p));
    if (load_cidrs(p->clients, &p->nclients, clients, "--proxy-allow-clients", err, errlen) ||
        load_cidrs(p->allow, &p->nallow, allow, "--proxy-allow-targets", err, errlen))
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
    load_local(p);
    load_schedulers(p, schedulers);
    return 0;
}
