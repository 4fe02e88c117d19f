#include "scheduler/strmap.h"

#include <stdlib.h>
#include <string.h>

#include "common/util.h"

/* FNV-1a, 64 bit: keys are short ids; the map's quality does not need more. */
static uint64_t hash_key(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

void dmf_strmap_init(dmf_strmap_t *m)
{
    memset(m, 0, sizeof(*m));
}

void dmf_strmap_free(dmf_strmap_t *m)
{
    free(m->slots);
    memset(m, 0, sizeof(*m));
}

/* The slot holding key, or the empty slot where it would go. */
static size_t find_slot(const dmf_strmap_t *m, const char *key, uint64_t h)
{
    size_t mask = m->cap - 1;
    size_t i = (size_t)h & mask;
    while (m->slots[i].key != NULL) {
        if (m->slots[i].hash == h && strcmp(m->slots[i].key, key) == 0)
            return i;
        i = (i + 1) & mask;
    }
    return i;
}

void *dmf_strmap_get(const dmf_strmap_t *m, const char *key)
{
    if (m->n == 0)
        return NULL;
    size_t i = find_slot(m, key, hash_key(key));
    return m->slots[i].key ? m->slots[i].val : NULL;
}

static void grow(dmf_strmap_t *m)
{
    size_t oldcap = m->cap;
    struct dmf_strmap_slot *old = m->slots;
    m->cap = oldcap ? oldcap * 2 : 16;
    m->slots = dmf_xcalloc(m->cap, sizeof(*m->slots));
    for (size_t i = 0; i < oldcap; i++) {
        if (old[i].key == NULL)
            continue;
        size_t j = find_slot(m, old[i].key, old[i].hash);
        m->slots[j] = old[i];
    }
    free(old);
}

void *dmf_strmap_put(dmf_strmap_t *m, const char *key, void *val)
{
    /* Keep the load at or under 3/4 so probes stay short. */
    if ((m->n + 1) * 4 > m->cap * 3)
        grow(m);
    uint64_t h = hash_key(key);
    size_t i = find_slot(m, key, h);
    void *prev = m->slots[i].key ? m->slots[i].val : NULL;
    if (m->slots[i].key == NULL)
        m->n++;
    m->slots[i].key = key;
    m->slots[i].val = val;
    m->slots[i].hash = h;
    return prev;
}

void *dmf_strmap_del(dmf_strmap_t *m, const char *key)
{
    if (m->n == 0)
        return NULL;
    size_t mask = m->cap - 1;
    size_t i = find_slot(m, key, hash_key(key));
    if (m->slots[i].key == NULL)
        return NULL;
    void *val = m->slots[i].val;
    /* Backward shift: move later members of the probe run into the hole when their home
     * slot does not lie between the hole and their position. */
    size_t hole = i;
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (m->slots[j].key == NULL)
            break;
        size_t home = (size_t)m->slots[j].hash & mask;
        int between = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (between)
            continue;
        m->slots[hole] = m->slots[j];
        hole = j;
    }
    m->slots[hole].key = NULL;
    m->slots[hole].val = NULL;
    m->n--;
    return val;
}
