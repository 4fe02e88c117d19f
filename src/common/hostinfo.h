/* What a daemon needs to know about its machine to be reachable and unique on a real
 * network: the address of the interface the default route leaves by (the --ip default),
 * whether an address is loopback, and the machine id (part of the default host id, so two
 * machines with the same hostname never merge). The parsers are pure (unit-tested); the
 * readers take the files' paths so tests can point them elsewhere. */
#ifndef DMF_HOSTINFO_H
#define DMF_HOSTINFO_H

#include <stdbool.h>
#include <stddef.h>

/* The interface of the default IPv4 route in the text of /proc/net/route (the lowest
 * metric wins). 0 with its name in ifname, -ENOENT when there is none. */
int dmf_route_default_iface(const char *route_text, char *ifname, size_t len);
/* The IPv4 address of this host's default route interface (route_path: /proc/net/route).
 * 0 with the address in ip, or -ENOENT (no default route, or no IPv4 on it). */
int dmf_default_ipv4(const char *route_path, char *ip, size_t len);
/* True for "localhost", 127.0.0.0/8, ::1 (bracketed or not) and other loopback names. */
bool dmf_host_is_loopback(const char *host);
/* The first 12 hex digits of the machine id in the file at path (/etc/machine-id),
 * lower-cased. 0, or -ENOENT when there is no well-formed one. */
int dmf_machine_id(const char *path, char *out, size_t len);

#endif
