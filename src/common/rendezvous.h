/* Rendezvous (highest random weight) hashing: each key goes to the node with the highest
 * weight(key, node), so every client that knows the same nodes picks the same one, and
 * when a node goes only its keys move (each to its next best). The weight is FNV-1a over
 * both strings followed by a full 64-bit finalizer (splitmix64), so that nodes whose names
 * differ in one character still get independent weights. */
#ifndef DMF_RENDEZVOUS_H
#define DMF_RENDEZVOUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

uint64_t dmf_rendezvous_weight(const char *key, const char *node);
/* The index of key's node among nodes[0..n) for which usable[i] is true (usable NULL: all
 * are); n when none is. Ties (never in practice) go to the lower index. */
size_t dmf_rendezvous_pick(const char *key, const char *const *nodes, const bool *usable, size_t n);

#endif
