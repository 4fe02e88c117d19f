/* Network lists; see netlist.h. */
#include "common/netlist.h"

#include <errno.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

int dmf_netlist_cidrs(struct dmf_cidr *out, size_t max, size_t *n, const struct dmf_strlist *l,
                      const char *flag, char *err, size_t errlen)
{
    for (size_t i = 0; l && i < l->n; i++) {
        if (*n >= max || dmf_cidr_parse(l->v[i], &out[*n]) != 0) {
            snprintf(err, errlen, "%s: '%s' is not a network (e.g. 10.0.0.0/8, fd00::/8)%s", flag,
                     l->v[i], *n >= max ? " or one too many" : "");
            return -EINVAL;
        }
        (*n)++;
    }
    return 0;
}

size_t dmf_netlist_local(struct dmf_cidr *out, size_t max)
{
    struct ifaddrs *ifs = NULL;
    size_t n = 0;
    if (getifaddrs(&ifs) != 0)
        return 0;
    for (struct ifaddrs *i = ifs; i && n < max; i = i->ifa_next) {
        struct dmf_cidr c = {0};
        if (i->ifa_addr == NULL || !dmf_sockaddr_ip(i->ifa_addr, &c.family, c.addr))
            continue;
        c.bits = c.family == AF_INET ? 32 : 128;
        out[n++] = c;
    }
    freeifaddrs(ifs);
    return n;
}

size_t dmf_netlist_resolve(const char *list, struct sockaddr_storage *out, size_t max)
{
    char *copy = dmf_xstrdup(list ? list : ""), *save = NULL;
    size_t n = 0;
    for (char *s = strtok_r(copy, ",", &save); s; s = strtok_r(NULL, ",", &save)) {
        char host[256], why[128], port[8];
        uint16_t pn;
        if (dmf_parse_hostport(s, host, sizeof(host), &pn, why, sizeof(why)) != 0)
            continue;
        snprintf(port, sizeof(port), "%u", pn);
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
        if (getaddrinfo(host, port, &hints, &ai) != 0)
            continue;
        for (struct addrinfo *a = ai; a && n < max; a = a->ai_next)
            if (a->ai_addrlen <= sizeof(out[0]))
                memcpy(&out[n++], a->ai_addr, a->ai_addrlen);
        freeaddrinfo(ai);
    }
    free(copy);
    return n;
}
