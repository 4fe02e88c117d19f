/* The cluster's block list of URLs (the manager's dynamic config, `block_urls`): POSIX
 * extended regexes; a download whose URL matches one is refused, whether asked for by
 * `damselfly get`, the proxy or another host. The URL matched is the request's with its
 * secret query parameters removed (url_secrets.h), so a pattern never needs, and a log
 * line never shows, a credential. Bounded: at most DMF_BLOCKLIST_MAX patterns of at most
 * DMF_BLOCKLIST_PATTERN_MAX bytes (the manager enforces smaller ones). */
#ifndef DMF_BLOCKLIST_H
#define DMF_BLOCKLIST_H

#include <stdbool.h>
#include <stddef.h>

#define DMF_BLOCKLIST_MAX         64
#define DMF_BLOCKLIST_PATTERN_MAX 1024

struct dmf_blocklist;

/* A list of n patterns (copied); NULL with err filled when one does not compile or the
 * bounds are passed. n == 0 gives an empty list (blocks nothing). */
struct dmf_blocklist *dmf_blocklist_new(const char *const *patterns, size_t n, char *err,
                                        size_t errlen);
void dmf_blocklist_free(struct dmf_blocklist *b);
/* Do a and b hold the same patterns in the same order? (NULL = empty.) */
bool dmf_blocklist_same(const struct dmf_blocklist *a, const char *const *patterns, size_t n);
size_t dmf_blocklist_count(const struct dmf_blocklist *b);
/* The first pattern url matches (borrowed), or NULL. b NULL: NULL. */
const char *dmf_blocklist_match(const struct dmf_blocklist *b, const char *url);

#endif
