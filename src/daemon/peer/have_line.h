/* One line of a parent's /have stream (docs/internals/PIECE-PROTOCOL.md), parsed without
 * I/O so that the parser is unit-tested and fuzzed (fuzz/fuzz_have.c). */
#ifndef DMF_HAVE_LINE_H
#define DMF_HAVE_LINE_H

#include <stddef.h>
#include <stdint.h>

enum dmf_have_line {
    DMF_HAVE_BAD = -1, /* not the protocol: the stream is dropped */
    DMF_HAVE_PIECE,    /* "have <n>": piece n is held */
    DMF_HAVE_DONE,     /* "done <total>": every piece is held, the stream ends */
};

/* Parses line[0..len) (without its '\n'): "have N" or "done N", N a canonical decimal
 * below limit (DMF_PIECES_MAX, or the task's total pieces when known). *n is set for both. */
enum dmf_have_line dmf_have_line_parse(const char *line, size_t len, uint32_t limit, uint32_t *n);

#endif
