/* A string-keyed hash map for the scheduler's tables (hosts, tasks, peers).
 *
 * Open addressing with linear probing and backward-shift deletion (no tombstones). Keys
 * are borrowed: each key must live inside (or as long as) its value, and stay unchanged
 * while the entry is in the map. Values are opaque pointers, never NULL. */
#ifndef DMF_SCHED_STRMAP_H
#define DMF_SCHED_STRMAP_H

#include <stddef.h>
#include <stdint.h>

struct dmf_strmap_slot {
    const char *key; /* NULL = empty */
    void *val;
    uint64_t hash;
};

typedef struct dmf_strmap {
    struct dmf_strmap_slot *slots;
    size_t cap; /* 0 or a power of two */
    size_t n;
} dmf_strmap_t;

void dmf_strmap_init(dmf_strmap_t *m);
/* Frees the table (not the values). */
void dmf_strmap_free(dmf_strmap_t *m);

/* The value stored under key, or NULL. */
void *dmf_strmap_get(const dmf_strmap_t *m, const char *key);
/* Stores val under key (borrowed). Returns the value it replaced, or NULL. */
void *dmf_strmap_put(dmf_strmap_t *m, const char *key, void *val);
/* Removes key; returns its value, or NULL when absent. */
void *dmf_strmap_del(dmf_strmap_t *m, const char *key);

#endif
