/* Task identity: which downloads are "the same content" and can share pieces. */
#ifndef DMF_TASKID_H
#define DMF_TASKID_H

#include <stddef.h>
#include <stdint.h>

#include "common/config.h"

#define DMF_TASK_ID_LEN 64 /* hex SHA-256, without NUL */

struct dmf_task_id_input {
    const char *url;                        /* required: absolute http(s) URL */
    const char *tag;                        /* NULL or "" = none */
    const char *application;                /* NULL or "" = none */
    const struct dmf_strlist *filter_query; /* query parameter names left out; may be NULL */
    const char *digest;                     /* "sha256:HEX" or NULL: then the ID is the digest's */
    uint32_t piece_length;                  /* 0 unless the user fixed the piece length */
};

/* Normalises an absolute URL: lower-cases scheme and host, drops a default port (80 for
 * http, 443 for https) and the fragment, removes the filtered query parameters and sorts
 * the rest (stable, by name then value). Returns 0 and a new string in *out (caller frees),
 * or -EINVAL with a reason in err (not http/https, no host, too long: 8 KiB at most). */
int dmf_url_normalize(const char *url, const struct dmf_strlist *filter_query, char **out,
                      char *err, size_t errlen);

/* Derives the task ID into out (DMF_TASK_ID_LEN + 1 bytes): hex SHA-256 of the normalised
 * URL, tag, application and piece length, each field length-prefixed so that no two
 * different inputs collide by concatenation. With a digest, the ID is derived from the
 * digest alone ("the same blob behind any URL is one task"). Returns 0 or -EINVAL. */
int dmf_task_id(const struct dmf_task_id_input *in, char *out, char *err, size_t errlen);

/* True when s is a well-formed task ID (64 lower-case hex digits). Used to validate IDs
 * that arrive from the network before they are used in paths. */
int dmf_task_id_valid(const char *s);

#endif
