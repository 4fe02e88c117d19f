/* Request headers read from files, as curl's `-H @FILE`: credentials stay off the command
 * line (which every local user can read in /proc). */
#ifndef DMF_HEADER_FILE_H
#define DMF_HEADER_FILE_H

#include <stddef.h>

#include "common/config.h"

#define DMF_HEADER_FILE_MAX  (64u << 10) /* bytes read from one file */
#define DMF_HEADER_LINE_MAX  (8u << 10)  /* one header, name and value */
#define DMF_HEADERS_FROM_MAX 64          /* headers in all, from flags and files */

/* Appends to out every header of the file at path ("-": standard input): one "Name: value"
 * per line, LF or CRLF, blank lines skipped. Returns 0, or a negative errno with a reason
 * in err that names the file and line but never quotes its contents (they are secrets). */
int dmf_header_file_read(const char *path, struct dmf_strlist *out, char *err, size_t errlen);

/* The headers of a `get`: each -H value as it is, or the file's headers for "@FILE";
 * then those of every --header-file. out must be empty; on error it is freed. */
int dmf_headers_expand(const struct dmf_strlist *flags, const struct dmf_strlist *files,
                       struct dmf_strlist *out, char *err, size_t errlen);

#endif
