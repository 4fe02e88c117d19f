/* Back-to-source: fetching a task from its origin with libcurl. A probe asks for one
 * byte (Range: bytes=0-0). A 206 gives the length and proves ranges work: then pieces
 * are fetched as parallel range requests (source_concurrency at a time). A 200 means no
 * range support: that same response is read as one stream and cut into pieces (its
 * length may be unknown until the end). A 416 means an empty content. Each piece is
 * hashed here; its digest becomes the reference for every other peer. */
#ifndef DMF_SOURCE_H
#define DMF_SOURCE_H

struct dmf_task;

void dmf_source_start(struct dmf_task *t);
/* Starts range requests for missing pieces (after a piece completes). */
void dmf_source_dispatch(struct dmf_task *t);
void dmf_source_free(struct dmf_task *t);

#endif
