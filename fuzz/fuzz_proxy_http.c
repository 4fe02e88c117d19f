/* Fuzzes the proxy's HTTP/1.1 input handling (client bytes are untrusted): the request-head
 * parser, fed the input whole and then byte by byte as a slow client would send it (both
 * must agree), the chunked-body decoder over arbitrary splits, and the Range parser. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/util.h"
#include "daemon/proxy/proxy_http.h"

static void check_request(const struct dmf_proxy_request *r)
{
    if (r->method == NULL || r->target == NULL || r->nh > DMF_PROXY_HEADERS_MAX)
        abort();
    if (r->chunked && r->content_length >= 0)
        abort();
    for (size_t i = 0; i < r->nh; i++)
        if (r->h[i].name[0] == '\0' || strchr(r->h[i].name, ':') || strchr(r->h[i].value, '\n'))
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    struct dmf_proxy_request r;
    char err[128];

    int whole = dmf_proxy_request_parse(buf, size, &r, err, sizeof(err));
    if (whole > 0) {
        if ((size_t)whole > size || (size_t)whole > DMF_PROXY_HEAD_MAX + 16)
            abort();
        check_request(&r);
        dmf_proxy_request_free(&r);
    }
    /* Incrementally: the first prefix that parses gives the same answer. */
    size_t limit = DMF_MIN(size, 2048);
    for (size_t n = 0; n <= limit; n++) {
        int rc = dmf_proxy_request_parse(buf, n, &r, err, sizeof(err));
        if (rc == 0)
            continue;
        if (rc > 0) {
            check_request(&r);
            dmf_proxy_request_free(&r);
            if (whole <= 0 || rc != whole)
                abort();
        } else if (whole > 0) {
            abort(); /* a prefix of a valid head is never an error */
        }
        break;
    }

    /* The chunked decoder, fed in pieces of varying size, never writes past its input. */
    char *out = malloc(size + 1);
    struct dmf_proxy_chunked c = {0};
    size_t pos = 0, step = 1;
    while (pos < size) {
        size_t n = DMF_MIN(step, size - pos), outlen = 0, used = 0;
        int rc = dmf_proxy_chunked_decode(&c, buf + pos, n, out, &outlen, &used);
        if (used > n || outlen > used)
            abort();
        pos += used;
        if (rc != 0)
            break;
        step = step * 3 % 17 + 1;
    }
    free(out);

    /* Range: what is accepted lies inside the content. */
    char *s = dmf_xstrndup(buf, DMF_MIN(size, 256));
    int64_t total = size, start, end;
    if (dmf_proxy_parse_range(s, total, &start, &end) == 1 &&
        (start < 0 || end < start || end >= total))
        abort();
    free(s);
    return 0;
}
