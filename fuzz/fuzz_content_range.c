/* Fuzzes the Content-Range parser (origin responses are untrusted input). */
#include <stdint.h>
#include <stdlib.h>

#include "common/http_client.h"
#include "common/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = dmf_xstrndup((const char *)data, size);
    int64_t start, end, total;
    if (dmf_http_parse_content_range(s, &start, &end, &total) == 0) {
        /* What the parser accepts is coherent. */
        if (start >= 0 && (end < start || (total >= 0 && end >= total)))
            abort();
    }
    free(s);
    return 0;
}
