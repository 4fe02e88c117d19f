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
    /* The request's headers ("Name: value"; may be NULL): those that select content and
     * are shared (a Host other than the URL's, Accept-Encoding) are part of the ID of a URL
     * task; see dmf_task_header_role. Ignored with a digest. */
    const struct dmf_strlist *headers;
};

/* What a request header means for task identity (docs/architecture.md, task identity). */
enum dmf_header_role {
    DMF_HEADER_PASSED,   /* passed to the origin, not part of the identity (User-Agent, ...) */
    DMF_HEADER_IDENTITY, /* selects content; part of the task ID (Host, Accept-Encoding) */
    DMF_HEADER_BYPASS,   /* selects content per request (Cookie, Range, conditionals): the
                          * request is not shared through P2P, it goes to the origin */
};
/* The role of header line "Name: value" (the name compared case-insensitively). */
enum dmf_header_role dmf_task_header_role(const char *line);
/* The name (a static string) of the first header in headers whose role is BYPASS, or
 * NULL. headers may be NULL. */
const char *dmf_task_bypass_header(const struct dmf_strlist *headers);
/* Whether an origin's Vary answer makes the content unshareable for this request: Vary
 * "*" , or a header named in it that the request carries and that is not part of the
 * identity. Fills name (at most namelen bytes) with the header concerned. */
int dmf_task_vary_conflict(const char *vary, const struct dmf_strlist *headers, char *name,
                           size_t namelen);

/* Normalises an absolute URL: lower-cases scheme and host, drops a default port (80 for
 * http, 443 for https) and the fragment, removes the filtered query parameters and sorts
 * the rest (stable, by name then value). Returns 0 and a new string in *out (caller frees),
 * or -EINVAL with a reason in err (not http/https, no host, too long: 8 KiB at most).
 *
 * Precisely: the query (after the first '?', before the first '#') is split on '&'; empty
 * pieces are dropped; a piece's name is the bytes before its first '=' (all of it if there
 * is none) and its value the bytes after; pieces whose name equals (case-sensitively) an
 * entry of filter_query are dropped; the rest are sorted by byte order of name, then value,
 * keeping input order on ties, and rejoined with '&' after a '?' (no '?' when none is left).
 * A port is written in decimal without leading zeros. Nothing is percent-decoded, the path
 * is kept byte for byte (an empty path stays empty). Also rejected: userinfo
 * ("user:pass@host": credentials belong in headers), spaces, control and non-ASCII bytes,
 * invalid ports. err never quotes the URL, whose query may carry a signature. */
int dmf_url_normalize(const char *url, const struct dmf_strlist *filter_query, char **out,
                      char *err, size_t errlen);

/* Derives the task ID into out (DMF_TASK_ID_LEN + 1 bytes): hex SHA-256 of the normalised
 * URL, tag, application and piece length, each field length-prefixed so that no two
 * different inputs collide by concatenation. With a digest, the ID is derived from the
 * digest alone ("the same blob behind any URL is one task"). Returns 0 or -EINVAL.
 *
 * The bytes hashed (a contract with other implementations; tests/unit/common/
 * taskid_vectors.txt holds golden vectors): for each field in order url, tag, application,
 * piece_length, "<field>=<len>:<value>\n", where value is the normalised URL, the tag ("" if
 * NULL), the application ("" if NULL), the piece length in decimal ("0" when unset) and
 * <len> is value's length in bytes, in decimal. With a digest, only
 * "digest=<len>:<value>\n" where value is "sha256:" + 64 lower-case hex digits. With a
 * digest, url may be NULL; when given it is still validated. Then, for a URL task only and
 * only when present: "host=<len>:<value>\n" for a Host header whose value (lower-cased,
 * default port dropped) differs from the URL's host[:port], and
 * "accept_encoding=<len>:<value>\n" with the Accept-Encoding tokens lower-cased, without
 * spaces, sorted and joined by ",". */
int dmf_task_id(const struct dmf_task_id_input *in, char *out, char *err, size_t errlen);

/* True when s is a well-formed task ID (64 lower-case hex digits). Used to validate IDs
 * that arrive from the network before they are used in paths. */
int dmf_task_id_valid(const char *s);

#endif
