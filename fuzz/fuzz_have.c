/* Fuzzes the /have stream's line parser (a parent's bytes are untrusted input to its
 * children): the input is split on '\n' as the stream is; every accepted line is exactly
 * "have N" or "done N" in canonical form, within the limit taken from the first byte. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/pieces.h"
#include "daemon/peer/have_line.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    uint32_t limit = data[0] == 0 ? DMF_PIECES_MAX : data[0];
    const char *p = (const char *)data + 1, *end = (const char *)data + size;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        uint32_t n = UINT32_MAX;
        enum dmf_have_line k = dmf_have_line_parse(p, len, limit, &n);
        if (k != DMF_HAVE_BAD) {
            char again[32];
            int w =
                snprintf(again, sizeof(again), "%s %u", k == DMF_HAVE_PIECE ? "have" : "done", n);
            if ((size_t)w != len || memcmp(again, p, len) != 0)
                abort();
            if (k == DMF_HAVE_PIECE ? n >= limit : n > limit)
                abort();
        }
        p += len + 1;
    }
    return 0;
}
