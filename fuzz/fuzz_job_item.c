/* Fuzzes a RunJobItem request as the scheduler reads it (the manager, or whatever reaches
 * the scheduler's port without TLS, is untrusted input): whatever decodes and passes
 * dmf_job_item_check is bounded (item ID, URL, headers, task ID) and names a target, and
 * the refusal reason never quotes a header value. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler/job_item_check.h"

static size_t len_of(const char *s)
{
    return s ? strlen(s) : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Damselfly__V1__RunJobItemRequest *r =
        damselfly__v1__run_job_item_request__unpack(NULL, size, data);
    if (r == NULL)
        return 0;
    char why[256] = "";
    int rc = dmf_job_item_check(r, why, sizeof(why));
    if (rc == 0) {
        size_t id = len_of(r->item_id);
        if (id == 0 || id > DMF_JOB_ITEM_ID_MAX)
            abort();
        if (len_of(r->host_id) == 0 && len_of(r->ip) == 0)
            abort(); /* no target */
        if (r->kind == DAMSELFLY__V1__JOB_ITEM_KIND__JOB_ITEM_PREHEAT) {
            if (len_of(r->url) == 0 || len_of(r->url) > DMF_JOB_ITEM_URL_MAX ||
                r->n_headers > DMF_JOB_ITEM_HEADERS)
                abort();
            for (size_t i = 0; i < r->n_headers; i++)
                if (len_of(r->headers[i]->name) == 0 ||
                    len_of(r->headers[i]->name) + len_of(r->headers[i]->value) >
                        DMF_JOB_ITEM_HEADER_MAX)
                    abort();
        } else if (r->kind == DAMSELFLY__V1__JOB_ITEM_KIND__JOB_ITEM_DELETE) {
            if (len_of(r->task_id) != 64)
                abort();
        } else {
            abort();
        }
    } else {
        if (why[0] == '\0')
            abort(); /* always a reason */
        for (size_t i = 0; i < r->n_headers; i++) {
            const char *v = r->headers[i]->value;
            if (v && strlen(v) >= 8 && strstr(why, v))
                abort();
        }
    }
    damselfly__v1__run_job_item_request__free_unpacked(r, NULL);
    return 0;
}
