/* The seeds the cluster knows (`--seed-hosts`): a host is a seed only when its announce
 * matches an entry here, so a host that merely announces type=seed never becomes one (and
 * never receives a DownloadTask with another client's headers). An entry is
 * "ID|IP:PORT" (host id, announced ip and rpc port must all match) or "IP:PORT" (any host
 * id); PORT is the seed's rpc port, the address the scheduler will call. Pure: no I/O. */
#ifndef DMF_SCHEDULER_SEED_LIST_H
#define DMF_SCHEDULER_SEED_LIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DMF_SEED_LIST_MAX 256

struct dmf_seed_entry {
    char id[129]; /* "" = any host id */
    char ip[64];  /* an IPv4 or IPv6 literal, compared as text after normalising */
    uint16_t rpc_port;
};

struct dmf_seed_list {
    struct dmf_seed_entry v[DMF_SEED_LIST_MAX];
    size_t n;
};

/* Adds the entries of one option value (comma-separated). 0, or -EINVAL with a message
 * naming the bad entry in err (the list is left with the entries before it). */
int dmf_seed_list_add(struct dmf_seed_list *l, const char *value, char *err, size_t errlen);
/* True when a host announcing (id, ip, rpc_port) as a seed is a known seed. */
bool dmf_seed_list_admits(const struct dmf_seed_list *l, const char *id, const char *ip,
                          uint32_t rpc_port);

#endif
