/* One line of a /have stream; see have_line.h. */
#include "daemon/peer/have_line.h"

#include <string.h>

/* A canonical decimal (no sign, no leading zero) in s[0..len) of at most 10 digits. */
static int parse_decimal(const char *s, size_t len, uint64_t *out)
{
    if (len == 0 || len > 10 || (len > 1 && s[0] == '0'))
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return 0;
}

enum dmf_have_line dmf_have_line_parse(const char *line, size_t len, uint32_t limit, uint32_t *n)
{
    uint64_t v;
    if (len < 6 || line[4] != ' ' || parse_decimal(line + 5, len - 5, &v) != 0)
        return DMF_HAVE_BAD;
    if (memcmp(line, "have", 4) == 0) {
        if (v >= limit)
            return DMF_HAVE_BAD;
        *n = (uint32_t)v;
        return DMF_HAVE_PIECE;
    }
    if (memcmp(line, "done", 4) == 0) {
        if (v > limit)
            return DMF_HAVE_BAD;
        *n = (uint32_t)v;
        return DMF_HAVE_DONE;
    }
    return DMF_HAVE_BAD;
}
