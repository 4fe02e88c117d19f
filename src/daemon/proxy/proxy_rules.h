/* The forward proxy's URL rules: an ordered list of (POSIX extended regex, p2p) pairs; the
 * first rule whose regex matches a request's absolute URL decides whether a GET goes
 * through P2P or straight to the origin. They come from the YAML config (key
 * `proxy-rules`, a list of mappings), which the option table leaves to this module:
 *
 *   proxy-rules:
 *     - regex: '^https?://[^/]+/v2/.+/blobs/sha256:[0-9a-f]{64}$'
 *       p2p: true
 *     - regex: '\.tar\.gz$'
 *       p2p: true
 *     - regex: '.*'
 *       p2p: false
 *
 * A P2P rule may also give the task's bandwidth: `limit: 4m` (bytes per second, as
 * `get --limit`) and `priority: background|normal|foreground` (as `get --priority`).
 *
 * Any rule may name the application its requests are for: `application: NAME` (as
 * `get --application`; application.h). It wins over the client's X-Dragonfly-Application
 * header, so a client cannot move its requests out of a blocked application the operator
 * named; without it the header's name is used.
 */
#ifndef DMF_PROXY_RULES_H
#define DMF_PROXY_RULES_H

#include <regex.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/application.h"
#include "common/bucket.h"

#define DMF_PROXY_RULES_MAX 256

struct dmf_proxy_rule {
    char *regex; /* as written */
    regex_t re;
    bool p2p;
    uint64_t limit;                            /* bytes/s of the task (0 = none) */
    enum dmf_priority priority;                /* of the task */
    char application[DMF_APPLICATION_MAX + 1]; /* "" = none (the client's header decides) */
    unsigned long line;                        /* where it was written (0 when not from a file) */
};

struct dmf_proxy_rules {
    struct dmf_proxy_rule *v;
    size_t n;
};

/* Appends a rule. Returns 0, or -EINVAL with the regex compiler's reason in err. */
int dmf_proxy_rules_add(struct dmf_proxy_rules *r, const char *regex, bool p2p, char *err,
                        size_t errlen);
/* The first matching rule's decision: 1 = P2P, 0 = direct; -1 when no rule matches. */
int dmf_proxy_rules_match(const struct dmf_proxy_rules *r, const char *url);
/* The first matching rule, or NULL (borrowed from r). */
const struct dmf_proxy_rule *dmf_proxy_rules_find(const struct dmf_proxy_rules *r, const char *url);
void dmf_proxy_rules_free(struct dmf_proxy_rules *r);

/* Reads the value of the top-level key `key` (e.g. "proxy-rules"; '_' and '-' are the
 * same) of the YAML file at path into r: a sequence of mappings with keys `regex`
 * (required), `p2p` (boolean, default true), `limit` (a size per second, at least 64k),
 * `priority` and `application`. Other top-level keys are skipped; a file
 * without the key adds nothing. Returns 0 or -EINVAL with "file:line: reason" in err. */
int dmf_proxy_rules_load_yaml(struct dmf_proxy_rules *r, const char *path, const char *key,
                              char *err, size_t errlen);

#endif
