/* Memory for piece bytes on their way between the network and the disk. Every buffer that
 * holds a piece in flight (a parent's or the origin's response, a piece waiting to be
 * hashed and written) comes from here, so the daemon knows how much it holds and keeps it
 * within --memory-limit: a transfer starts only when its piece fits (or nothing at all is
 * held, so a piece bigger than the bound still goes), and whoever was refused is woken when
 * memory is freed (dmf_piecemem_set_wake), so a waiting task never depends on its own
 * traffic to be looked at again. Callers allocate a piece's whole buffer once allowed, so
 * what is held stays within the limit, or within two pieces when the limit is smaller (a
 * stream's own buffer and its next one). Counters are atomic; the daemon frees on its
 * loop. */
#ifndef DMF_PIECEMEM_H
#define DMF_PIECEMEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dmf_metric;

/* Bytes of piece buffers held now, the most held at once, and refusals for want of memory. */
extern struct dmf_metric dmf_m_piecemem_bytes, dmf_m_piecemem_peak, dmf_m_piecemem_waits;

/* The bound in bytes (0 = none). */
void dmf_piecemem_set_limit(uint64_t bytes);
uint64_t dmf_piecemem_limit(void);
/* Bytes held in piece buffers now. */
uint64_t dmf_piecemem_used(void);

/* True when a transfer of n more bytes may start now: they fit the limit, or nothing is
 * held. A refusal is counted, and the wake callback runs at the next free. */
bool dmf_piecemem_may_start(size_t n);
/* As dmf_piecemem_may_start, for a caller that already holds own bytes and needs n more (a
 * stream going on into its next piece): they fit the limit, or nothing but its own is held,
 * so a caller is never held back by its own buffer alone. */
bool dmf_piecemem_may_grow(size_t n, size_t own);
/* What to call (on the freeing thread) when memory frees up after a refusal. */
void dmf_piecemem_set_wake(void (*wake)(void *arg), void *arg);

/* A buffer of n bytes (never NULL), counted until dmf_piecemem_free. */
uint8_t *dmf_piecemem_alloc(size_t n);
/* Resizes a buffer of this module (p NULL: allocates). */
uint8_t *dmf_piecemem_realloc(uint8_t *p, size_t n);
/* Frees a buffer of this module; NULL is ignored. */
void dmf_piecemem_free(uint8_t *p);

#endif
