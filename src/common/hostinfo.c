/* This machine as the network sees it; see hostinfo.h. */
#include "common/hostinfo.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ROUTE_TEXT_MAX (256u << 10) /* /proc/net/route of any sane routing table */

int dmf_route_default_iface(const char *text, char *ifname, size_t len)
{
    unsigned long best_metric = (unsigned long)-1;
    bool found = false;
    const char *line = text;
    while (line && *line) {
        const char *end = strchr(line, '\n');
        size_t n = end ? (size_t)(end - line) : strlen(line);
        char buf[512], name[IF_NAMESIZE + 1];
        unsigned long dest, gw, flags, refcnt, use, metric, mask;
        if (n < sizeof(buf)) {
            memcpy(buf, line, n);
            buf[n] = '\0';
            /* Iface Destination Gateway Flags RefCnt Use Metric Mask ... (hex fields) */
            if (sscanf(buf, "%16s %lx %lx %lx %lu %lu %lu %lx", name, &dest, &gw, &flags, &refcnt,
                       &use, &metric, &mask) == 8 &&
                dest == 0 && mask == 0 && (flags & 0x1) /* RTF_UP */ &&
                (!found || metric < best_metric)) {
                snprintf(ifname, len, "%s", name);
                best_metric = metric;
                found = true;
            }
        }
        line = end ? end + 1 : NULL;
    }
    return found ? 0 : -ENOENT;
}

static char *read_small_file(const char *path, size_t max)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return NULL;
    char *buf = malloc(max + 1);
    size_t n = buf ? fread(buf, 1, max, f) : 0;
    fclose(f);
    if (buf)
        buf[n] = '\0';
    return buf;
}

int dmf_default_ipv4(const char *route_path, char *ip, size_t len)
{
    char *text = read_small_file(route_path, ROUTE_TEXT_MAX);
    char ifname[IF_NAMESIZE + 1];
    int rc = text ? dmf_route_default_iface(text, ifname, sizeof(ifname)) : -ENOENT;
    free(text);
    if (rc != 0)
        return rc;
    struct ifaddrs *ifs, *i;
    if (getifaddrs(&ifs) != 0)
        return -ENOENT;
    rc = -ENOENT;
    for (i = ifs; i; i = i->ifa_next) {
        if (i->ifa_addr == NULL || i->ifa_addr->sa_family != AF_INET ||
            strcmp(i->ifa_name, ifname) != 0)
            continue;
        const struct sockaddr_in *sin = (const struct sockaddr_in *)i->ifa_addr;
        if (inet_ntop(AF_INET, &sin->sin_addr, ip, (socklen_t)len) != NULL) {
            rc = 0;
            break;
        }
    }
    freeifaddrs(ifs);
    return rc;
}

bool dmf_host_is_loopback(const char *host)
{
    if (host == NULL || *host == '\0')
        return false;
    if (strcasecmp(host, "localhost") == 0 || strcasecmp(host, "localhost.localdomain") == 0 ||
        strcasecmp(host, "ip6-localhost") == 0 || strcasecmp(host, "ip6-loopback") == 0)
        return true;
    char buf[64];
    size_t n = strlen(host);
    if (host[0] == '[' && n >= 2 && host[n - 1] == ']' && n - 2 < sizeof(buf)) {
        memcpy(buf, host + 1, n - 2);
        buf[n - 2] = '\0';
        host = buf;
    }
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6) || (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
    return false;
}

int dmf_machine_id(const char *path, char *out, size_t len)
{
    char *text = read_small_file(path, 256);
    if (text == NULL)
        return -ENOENT;
    size_t n = 0;
    while (isxdigit((unsigned char)text[n]))
        n++;
    int rc = -ENOENT;
    if (n >= 12 && len > 12) {
        for (size_t i = 0; i < 12; i++)
            out[i] = (char)tolower((unsigned char)text[i]);
        out[12] = '\0';
        rc = 0;
    }
    free(text);
    return rc;
}
