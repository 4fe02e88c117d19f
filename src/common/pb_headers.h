/* "Name: value" header lines (as -H and the task keep them) turned into the repeated
 * damselfly.v1.Header field of a request, and back to nothing. */
#ifndef DMF_PB_HEADERS_H
#define DMF_PB_HEADERS_H

#include <stddef.h>

#include "common/config.h"
#include "damselfly/v1/common.pb-c.h"

/* Owns what the message fields point at; valid until dmf_pb_headers_free. */
struct dmf_pb_headers {
    Damselfly__V1__Header *items;
    Damselfly__V1__Header **ptrs; /* what a message's `headers` field takes */
    char **names;
    size_t n;
};

/* Splits each line at its first ':' (a line without one becomes a name with an empty
 * value) and skips the blanks after it. Values point into lines, which must outlive h. */
void dmf_pb_headers_init(struct dmf_pb_headers *h, const struct dmf_strlist *lines);
void dmf_pb_headers_free(struct dmf_pb_headers *h);

#endif
