/* Fuzzes URL normalisation and task-ID derivation: URLs come from users and, through the
 * proxy, from the network. Input: a URL, then optionally "\n" and a tag. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/taskid.h"
#include "common/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = dmf_xstrndup((const char *)data, size);
    char *tag = strchr(s, '\n');
    if (tag)
        *tag++ = '\0';
    struct dmf_strlist filter = {0};
    dmf_strlist_push(&filter, "X-Amz-Signature");
    dmf_strlist_push(&filter, "token");
    char err[256], id[DMF_TASK_ID_LEN + 1], *norm = NULL;
    if (dmf_url_normalize(s, &filter, &norm, err, sizeof(err)) == 0) {
        /* Normalising twice changes nothing. */
        char *again = NULL;
        if (dmf_url_normalize(norm, &filter, &again, err, sizeof(err)) != 0 ||
            strcmp(norm, again) != 0)
            abort();
        free(again);
        struct dmf_task_id_input in = {.url = s, .tag = tag, .filter_query = &filter};
        if (dmf_task_id(&in, id, err, sizeof(err)) != 0 || !dmf_task_id_valid(id))
            abort();
    }
    free(norm);
    dmf_strlist_free(&filter);
    free(s);
    return 0;
}
