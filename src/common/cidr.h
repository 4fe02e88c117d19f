/* IP networks in CIDR notation ("10.0.0.0/8", "fd00::/8", or a bare address for one host),
 * and whether an address lies in one. IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are
 * taken as the IPv4 address they carry, so a dual-stack socket cannot slip past an IPv4
 * rule. Pure: no I/O, no allocation. */
#ifndef DMF_CIDR_H
#define DMF_CIDR_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

struct dmf_cidr {
    int family; /* AF_INET or AF_INET6 */
    uint8_t addr[16];
    int bits;
};

/* 0, or -EINVAL for anything but an address with an optional /bits in range. */
int dmf_cidr_parse(const char *s, struct dmf_cidr *out);
/* True when sa (AF_INET or AF_INET6; the port is ignored) lies in c. */
bool dmf_cidr_match(const struct dmf_cidr *c, const struct sockaddr *sa);
/* The same for text: true when ip (an IPv4 or IPv6 address) lies in cidr; false when
 * either is malformed. */
bool dmf_cidr_contains(const char *cidr, const char *ip);
/* The address of sa in the form dmf_cidr_match compares: family and bytes (IPv4-mapped
 * IPv6 unwrapped). false for other families. */
bool dmf_sockaddr_ip(const struct sockaddr *sa, int *family, uint8_t addr[16]);

#endif
