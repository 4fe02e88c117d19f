/* Fuzzes what crosses the local API socket: a DownloadTaskRequest as the daemon decodes it
 * (any local user may send one), then the checks its fields go through — the URL's
 * normal form and task ID, its redacted form, the headers — and the frames of an answer
 * as `get` reads them ('M' DownloadTaskResponse, 'S' status, 'F' descriptor: a type byte
 * and a 4-byte big-endian length). Invariants: a redacted URL never holds the value of a
 * secret parameter; frame lengths never run past the input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/config.h"
#include "common/taskid.h"
#include "common/url_secrets.h"
#include "common/util.h"
#include "damselfly/v1/daemon.pb-c.h"

/* Every parameter of the query (after the first '?', split on '&', up to '#') whose name
 * is listed has the value DMF_URL_REDACTED. */
static void check_redacted(const char *shown, const struct dmf_strlist *names)
{
    const char *q = strchr(shown, '?');
    if (q == NULL)
        return;
    for (const char *p = q + 1; *p != '\0' && *p != '#';) {
        size_t plen = strcspn(p, "&#"), nlen = strcspn(p, "=&#");
        for (size_t i = 0; nlen < plen && i < names->n; i++)
            if (strlen(names->v[i]) == nlen && strncasecmp(names->v[i], p, nlen) == 0 &&
                (plen - nlen - 1 != strlen(DMF_URL_REDACTED) ||
                 memcmp(p + nlen + 1, DMF_URL_REDACTED, plen - nlen - 1) != 0))
                abort();
        p += plen;
        if (*p == '&')
            p++;
    }
}

static void check_request(const Damselfly__V1__DownloadTaskRequest *req)
{
    if (req->url == NULL)
        return;
    struct dmf_strlist filter = {0};
    for (size_t i = 0; i < req->n_filter_query && i < 64; i++)
        dmf_strlist_push(&filter, req->filter_query[i]);
    dmf_strlist_push(&filter, "token");
    char err[256], id[DMF_TASK_ID_LEN + 1], *norm = NULL;
    struct dmf_task_id_input in = {.url = req->url, .tag = req->tag, .filter_query = &filter};
    if (dmf_url_normalize(req->url, &filter, &norm, err, sizeof(err)) == 0 &&
        (dmf_task_id(&in, id, err, sizeof(err)) != 0 || !dmf_task_id_valid(id)))
        abort();
    free(norm);
    char *shown = dmf_url_redact(req->url, &filter);
    check_redacted(shown, &filter);
    free(shown);
    dmf_strlist_free(&filter);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Damselfly__V1__DownloadTaskRequest *req =
        damselfly__v1__download_task_request__unpack(NULL, size, data);
    if (req) {
        check_request(req);
        damselfly__v1__download_task_request__free_unpacked(req, NULL);
    }
    /* The same bytes as a stream of answer frames. */
    size_t off = 0;
    while (size - off >= 5) {
        uint8_t type = data[off];
        uint32_t len = (uint32_t)data[off + 1] << 24 | (uint32_t)data[off + 2] << 16 |
                       (uint32_t)data[off + 3] << 8 | data[off + 4];
        off += 5;
        if (len > size - off)
            break;
        if (type == 'M') {
            Damselfly__V1__DownloadTaskResponse *r =
                damselfly__v1__download_task_response__unpack(NULL, len, data + off);
            if (r)
                damselfly__v1__download_task_response__free_unpacked(r, NULL);
        } else if (type == 'S' && len >= 4) {
            char *msg = dmf_xstrndup((const char *)data + off + 4, len - 4);
            free(msg);
        }
        off += len;
    }
    return 0;
}
