/* IP networks in CIDR notation ("10.0.0.0/8", "fd00::/8", or a bare address for one host),
 * and whether an address lies in one. IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are
 * taken as the IPv4 address they carry, so a dual-stack socket cannot slip past an IPv4
 * rule. Pure: no I/O, no allocation. */
#ifndef DMF_CIDR_H
#define DMF_CIDR_H

#include <stdbool.h>
#include <stddef.h>
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
/* True when sa lies in one of the n networks of l. */
bool dmf_cidr_list_match(const struct dmf_cidr *l, size_t n, const struct sockaddr *sa);
/* Classes of an address as dmf_sockaddr_ip gives it: loopback (127.0.0.0/8, ::1), the
 * unspecified address (0.0.0.0, ::), link-local (169.254.0.0/16, fe80::/10: cloud
 * metadata services live there). */
bool dmf_ip_is_loopback(int family, const uint8_t a[16]);
bool dmf_ip_is_unspecified(int family, const uint8_t a[16]);
bool dmf_ip_is_link_local(int family, const uint8_t a[16]);

#endif
