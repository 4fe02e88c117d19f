/* Freshness of a cached URL task as pure decisions: whether a get must ask the origin
 * first, which conditional headers ask it, what the origin's answer means, and whether a
 * client's own conditional request (to the proxy) matches what the cache holds. A digest
 * task is immutable and never revalidated. revalidate.c does the I/O; the local API and
 * the proxy act on the verdicts. No I/O, no clock of its own
 * (tests/unit/daemon/peer/test_freshness.c). */
#ifndef DMF_FRESHNESS_H
#define DMF_FRESHNESS_H

#include <stdbool.h>
#include <stdint.h>

#include "common/config.h"

/* What a cached task is, for the decision. Strings may be NULL or "" (none). */
struct dmf_fresh_cache {
    bool digest_task; /* named by its content digest: immutable */
    const char *etag; /* the origin's validators of the cached version */
    const char *last_modified;
    int64_t validated_at_s; /* when that version was last known current (0: never) */
};

/* True when a get at now_s must revalidate first: a URL task whose last validation is
 * revalidate_after_ms or more ago (0: always). A clock that went backwards counts as old. */
bool dmf_fresh_needs_check(const struct dmf_fresh_cache *c, int64_t now_s,
                           uint64_t revalidate_after_ms);

/* Appends the conditional headers for c to out ("If-None-Match: <etag>", "If-Modified-Since:
 * <date>"); returns how many (0: the origin gave no validator, the request is plain and
 * any 2xx counts as a new version). */
int dmf_fresh_conditional_headers(const struct dmf_fresh_cache *c, struct dmf_strlist *out);

/* True when validators known elsewhere (etag, last_modified; NULL or "" unknown) name
 * another version than the cached one: one that both sides know differs. */
bool dmf_fresh_other_version(const struct dmf_fresh_cache *c, const char *etag,
                             const char *last_modified);

/* What the origin's answer to a revalidation means. */
enum dmf_fresh_verdict {
    DMF_FRESH_CURRENT,     /* 304, or a 2xx with the cached validators: serve the cache */
    DMF_FRESH_NEW_VERSION, /* another version (or the URL is gone, 4xx): drop the cache */
    DMF_FRESH_UNREACHABLE, /* no answer, or 5xx/408/429: serve the cache (or fail when fresh
                            * content is required) */
};
const char *dmf_fresh_verdict_name(enum dmf_fresh_verdict v);

/* status: the origin's HTTP status, 0 when it did not answer. etag, last_modified: the
 * answer's validators (NULL when absent). */
enum dmf_fresh_verdict dmf_fresh_answer(const struct dmf_fresh_cache *c, long status,
                                        const char *etag, const char *last_modified);

/* Whether a client's conditional request is satisfied by the cached version, i.e. the
 * proxy may answer 304: If-None-Match (a list of entity tags, weak compared, or "*")
 * takes precedence; If-Modified-Since matches when it equals the cached Last-Modified
 * (an exact date comparison needs the same clock as the origin's: equality is the safe
 * form). NULL or "" headers are absent. */
bool dmf_fresh_client_match(const char *if_none_match, const char *if_modified_since,
                            const char *etag, const char *last_modified);

#endif
