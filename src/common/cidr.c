/* CIDR parsing and matching; see cidr.h. */
#include "common/cidr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int dmf_cidr_parse(const char *s, struct dmf_cidr *out)
{
    char buf[INET6_ADDRSTRLEN + 8];
    if (s == NULL || strlen(s) >= sizeof(buf))
        return -EINVAL;
    strcpy(buf, s);
    int bits = -1;
    char *slash = strchr(buf, '/');
    if (slash) {
        *slash = '\0';
        const char *b = slash + 1;
        if (*b == '\0' || strlen(b) > 3)
            return -EINVAL;
        bits = 0;
        for (; *b; b++) {
            if (*b < '0' || *b > '9')
                return -EINVAL;
            bits = bits * 10 + (*b - '0');
        }
    }
    struct dmf_cidr c = {0};
    if (inet_pton(AF_INET, buf, c.addr) == 1) {
        c.family = AF_INET;
        c.bits = bits < 0 ? 32 : bits;
        if (c.bits > 32)
            return -EINVAL;
    } else if (inet_pton(AF_INET6, buf, c.addr) == 1) {
        c.family = AF_INET6;
        c.bits = bits < 0 ? 128 : bits;
        if (c.bits > 128)
            return -EINVAL;
    } else {
        return -EINVAL;
    }
    *out = c;
    return 0;
}

bool dmf_sockaddr_ip(const struct sockaddr *sa, int *family, uint8_t addr[16])
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    memset(addr, 0, 16);
    if (sa->sa_family == AF_INET) {
        *family = AF_INET;
        memcpy(addr, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        return true;
    }
    if (sa->sa_family == AF_INET6) {
        const uint8_t *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
        if (memcmp(a, mapped, 12) == 0) {
            *family = AF_INET;
            memcpy(addr, a + 12, 4);
        } else {
            *family = AF_INET6;
            memcpy(addr, a, 16);
        }
        return true;
    }
    return false;
}

static bool match_bytes(const struct dmf_cidr *c, int family, const uint8_t a[16])
{
    if (family != c->family)
        return false;
    int full = c->bits / 8, rest = c->bits % 8;
    if (memcmp(a, c->addr, (size_t)full) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (a[full] & mask) == (c->addr[full] & mask);
}

bool dmf_cidr_match(const struct dmf_cidr *c, const struct sockaddr *sa)
{
    int family;
    uint8_t a[16];
    return dmf_sockaddr_ip(sa, &family, a) && match_bytes(c, family, a);
}

bool dmf_cidr_contains(const char *cidr, const char *ip)
{
    struct dmf_cidr c, host;
    if (cidr == NULL || ip == NULL || strchr(ip, '/') || dmf_cidr_parse(cidr, &c) != 0 ||
        dmf_cidr_parse(ip, &host) != 0)
        return false;
    return match_bytes(&c, host.family, host.addr);
}

bool dmf_cidr_list_match(const struct dmf_cidr *l, size_t n, const struct sockaddr *sa)
{
    for (size_t i = 0; i < n; i++)
        if (dmf_cidr_match(&l[i], sa))
            return true;
    return false;
}

bool dmf_ip_is_loopback(int family, const uint8_t a[16])
{
    static const uint8_t v6_loop[16] = {[15] = 1};
    return family == AF_INET ? a[0] == 127 : memcmp(a, v6_loop, 16) == 0;
}

bool dmf_ip_is_unspecified(int family, const uint8_t a[16])
{
    static const uint8_t zero[16];
    return memcmp(a, zero, family == AF_INET ? 4 : 16) == 0;
}

bool dmf_ip_is_link_local(int family, const uint8_t a[16])
{
    return family == AF_INET ? a[0] == 169 && a[1] == 254 : a[0] == 0xfe && (a[1] & 0xc0) == 0x80;
}
