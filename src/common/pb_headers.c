#include "common/pb_headers.h"

#include <stdlib.h>
#include <string.h>

#include "common/util.h"

void dmf_pb_headers_init(struct dmf_pb_headers *h, const struct dmf_strlist *lines)
{
    size_t n = lines ? lines->n : 0;
    h->n = n;
    h->items = dmf_xcalloc(n ? n : 1, sizeof(*h->items));
    h->ptrs = dmf_xcalloc(n ? n : 1, sizeof(*h->ptrs));
    h->names = dmf_xcalloc(n ? n : 1, sizeof(*h->names));
    for (size_t i = 0; i < n; i++) {
        const char *line = lines->v[i], *colon = strchr(line, ':');
        const char *v = colon ? colon + 1 : "";
        while (*v == ' ' || *v == '\t')
            v++;
        damselfly__v1__header__init(&h->items[i]);
        h->names[i] = dmf_xstrndup(line, colon ? (size_t)(colon - line) : strlen(line));
        h->items[i].name = h->names[i];
        h->items[i].value = (char *)v;
        h->ptrs[i] = &h->items[i];
    }
}

void dmf_pb_headers_free(struct dmf_pb_headers *h)
{
    for (size_t i = 0; i < h->n; i++)
        free(h->names[i]);
    free(h->names);
    free(h->items);
    free(h->ptrs);
    memset(h, 0, sizeof(*h));
}
