/* The piece server's request targets (docs/internals/PIECE-PROTOCOL.md), parsed without
 * I/O so that the parser is unit-tested and fuzzed (fuzz/fuzz_piece_request.c). */
#ifndef DMF_PIECE_TARGET_H
#define DMF_PIECE_TARGET_H

#include <stdint.h>

#include "common/taskid.h"

enum dmf_piece_target_kind {
    DMF_TARGET_NOT_FOUND = 0, /* no such resource */
    DMF_TARGET_METRICS,       /* /metrics */
    DMF_TARGET_PIECE,         /* /pieces/<id>/<n> */
    DMF_TARGET_HAVE,          /* /have/<id> */
    DMF_TARGET_BAD_PIECE,     /* /pieces/... that is not <64 hex>/<canonical decimal> */
    DMF_TARGET_BAD_HAVE,      /* /have/... that is not <64 hex> */
};

struct dmf_piece_target {
    enum dmf_piece_target_kind kind;
    char task_id[DMF_TASK_ID_LEN + 1]; /* PIECE and HAVE: a valid task id */
    uint32_t piece;                    /* PIECE */
};

/* Parses the decoded path of a GET into *out (always filled). */
void dmf_piece_target_parse(const char *path, struct dmf_piece_target *out);

/* A canonical decimal (no sign, no leading zero, no spaces) of at most UINT32_MAX, the
 * whole of s. 0 or -EINVAL. */
int dmf_parse_index(const char *s, uint32_t *out);

#endif
