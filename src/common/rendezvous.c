/* Rendezvous hashing; see rendezvous.h. */
#include "common/rendezvous.h"

#define FNV_OFFSET 1469598103934665603ull
#define FNV_PRIME  1099511628211ull

static uint64_t fnv1a(uint64_t h, const char *s)
{
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= FNV_PRIME;
    }
    return h;
}

/* splitmix64's finalizer: every input bit affects every output bit. */
static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t dmf_rendezvous_weight(const char *key, const char *node)
{
    uint64_t h = fnv1a(FNV_OFFSET, key);
    h ^= 0xff; /* a separator no string contains: ("ab", "c") != ("a", "bc") */
    h *= FNV_PRIME;
    return mix64(fnv1a(h, node));
}

size_t dmf_rendezvous_pick(const char *key, const char *const *nodes, const bool *usable, size_t n)
{
    size_t best = n;
    uint64_t best_w = 0;
    for (size_t i = 0; i < n; i++) {
        if (usable && !usable[i])
            continue;
        uint64_t w = dmf_rendezvous_weight(key, nodes[i]);
        if (best == n || w > best_w) {
            best = i;
            best_w = w;
        }
    }
    return best;
}
