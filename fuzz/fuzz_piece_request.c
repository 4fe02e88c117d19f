/* Fuzzes the piece server's request targets (any host that reaches the piece port sends
 * them): whatever parses as a piece or /have request names a valid task id and a piece
 * number written canonically in the path; nothing else carries an id. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/taskid.h"
#include "common/util.h"
#include "daemon/piece_target.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *path = dmf_xstrndup((const char *)data, size);
    struct dmf_piece_target t;
    dmf_piece_target_parse(path, &t);
    char again[16 + DMF_TASK_ID_LEN + 16];
    switch (t.kind) {
    case DMF_TARGET_PIECE:
        snprintf(again, sizeof(again), "/pieces/%s/%u", t.task_id, t.piece);
        if (!dmf_task_id_valid(t.task_id) || strcmp(again, path) != 0)
            abort();
        break;
    case DMF_TARGET_HAVE:
        snprintf(again, sizeof(again), "/have/%s", t.task_id);
        if (!dmf_task_id_valid(t.task_id) || strcmp(again, path) != 0)
            abort();
        break;
    default:
        if (t.task_id[0] != '\0' || t.piece != 0)
            abort();
    }
    /* The X-Dmf-Progress header's parser: canonical decimals only. */
    uint32_t v;
    if (dmf_parse_index(path, &v) == 0) {
        snprintf(again, sizeof(again), "%u", v);
        if (strcmp(again, path) != 0)
            abort();
    }
    free(path);
    return 0;
}
