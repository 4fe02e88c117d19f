/* The piece server's request targets; see piece_target.h. */
#include "daemon/piece_target.h"

#include <errno.h>
#include <string.h>

int dmf_parse_index(const char *s, uint32_t *out)
{
    size_t len = strlen(s);
    if (len == 0 || len > 10 || (len > 1 && s[0] == '0'))
        return -EINVAL;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -EINVAL;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (v > UINT32_MAX)
        return -EINVAL;
    *out = (uint32_t)v;
    return 0;
}

/* Copies a task id of exactly DMF_TASK_ID_LEN characters from s[0..len) into out. */
static int parse_task_id(const char *s, size_t len, char out[DMF_TASK_ID_LEN + 1])
{
    if (len != DMF_TASK_ID_LEN)
        return -EINVAL;
    memcpy(out, s, DMF_TASK_ID_LEN);
    out[DMF_TASK_ID_LEN] = '\0';
    return dmf_task_id_valid(out) ? 0 : -EINVAL;
}

void dmf_piece_target_parse(const char *path, struct dmf_piece_target *out)
{
    memset(out, 0, sizeof(*out));
    if (strcmp(path, "/metrics") == 0) {
        out->kind = DMF_TARGET_METRICS;
    } else if (strncmp(path, "/pieces/", 8) == 0) {
        const char *rest = path + 8, *slash = strchr(rest, '/');
        out->kind = slash && parse_task_id(rest, (size_t)(slash - rest), out->task_id) == 0 &&
                            dmf_parse_index(slash + 1, &out->piece) == 0
                        ? DMF_TARGET_PIECE
                        : DMF_TARGET_BAD_PIECE;
    } else if (strncmp(path, "/have/", 6) == 0) {
        out->kind = parse_task_id(path + 6, strlen(path + 6), out->task_id) == 0
                        ? DMF_TARGET_HAVE
                        : DMF_TARGET_BAD_HAVE;
    } else {
        out->kind = DMF_TARGET_NOT_FOUND;
    }
    if (out->kind != DMF_TARGET_PIECE && out->kind != DMF_TARGET_HAVE) {
        out->task_id[0] = '\0';
        out->piece = 0;
    }
}
