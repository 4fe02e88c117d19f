/* Freshness decisions; see freshness.h. */
#include "daemon/peer/freshness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/util.h"

static bool set(const char *s)
{
    return s != NULL && s[0] != '\0';
}

bool dmf_fresh_needs_check(const struct dmf_fresh_cache *c, int64_t now_s,
                           uint64_t revalidate_after_ms)
{
    if (c->digest_task)
        return false;
    if (revalidate_after_ms == 0 || c->validated_at_s <= 0 || now_s < c->validated_at_s)
        return true;
    return (uint64_t)(now_s - c->validated_at_s) * 1000 >= revalidate_after_ms;
}

int dmf_fresh_conditional_headers(const struct dmf_fresh_cache *c, struct dmf_strlist *out)
{
    int n = 0;
    char *line;
    if (set(c->etag)) {
        line = dmf_xasprintf("If-None-Match: %s", c->etag);
        dmf_strlist_push(out, line);
        free(line);
        n++;
    }
    if (set(c->last_modified)) {
        line = dmf_xasprintf("If-Modified-Since: %s", c->last_modified);
        dmf_strlist_push(out, line);
        free(line);
        n++;
    }
    return n;
}

bool dmf_fresh_other_version(const struct dmf_fresh_cache *c, const char *etag,
                             const char *last_modified)
{
    return (set(etag) && set(c->etag) && strcmp(etag, c->etag) != 0) ||
           (set(last_modified) && set(c->last_modified) &&
            strcmp(last_modified, c->last_modified) != 0);
}

const char *dmf_fresh_verdict_name(enum dmf_fresh_verdict v)
{
    switch (v) {
    case DMF_FRESH_CURRENT:
        return "current";
    case DMF_FRESH_NEW_VERSION:
        return "new version";
    default:
        return "unreachable";
    }
}

/* An entity tag without its weak prefix: W/"x" and "x" name the same version (weak
 * comparison, RFC 9110 8.8.3.2). Returns a pointer into tag and its length. */
static const char *opaque_tag(const char *tag, size_t len, size_t *out_len)
{
    if (len >= 2 && (tag[0] == 'W' || tag[0] == 'w') && tag[1] == '/') {
        tag += 2;
        len -= 2;
    }
    *out_len = len;
    return tag;
}

static bool same_tag(const char *a, size_t alen, const char *b)
{
    size_t la, lb;
    const char *x = opaque_tag(a, alen, &la), *y = opaque_tag(b, strlen(b), &lb);
    return la == lb && memcmp(x, y, la) == 0;
}

enum dmf_fresh_verdict dmf_fresh_answer(const struct dmf_fresh_cache *c, long status,
                                        const char *etag, const char *last_modified)
{
    if (status == 304)
        return DMF_FRESH_CURRENT;
    if (status == 0 || status == 408 || status == 429 || (status >= 500 && status <= 599))
        return DMF_FRESH_UNREACHABLE;
    if (status >= 200 && status <= 299) {
        /* The origin ignored the conditions but names the same version: still current. */
        bool have = set(c->etag) || set(c->last_modified);
        bool etag_same = !set(c->etag) || (set(etag) && same_tag(etag, strlen(etag), c->etag));
        bool lm_same = !set(c->last_modified) ||
                       (set(last_modified) && strcmp(last_modified, c->last_modified) == 0);
        return have && etag_same && lm_same ? DMF_FRESH_CURRENT : DMF_FRESH_NEW_VERSION;
    }
    if (status >= 300 && status <= 399)
        return DMF_FRESH_UNREACHABLE; /* a redirect not followed: no verdict on the content */
    return DMF_FRESH_NEW_VERSION;     /* 4xx: what the cache holds is no longer there */
}

bool dmf_fresh_client_match(const char *if_none_match, const char *if_modified_since,
                            const char *etag, const char *last_modified)
{
    if (set(if_none_match)) {
        if (!set(etag))
            return false;
        const char *p = if_none_match;
        while (*p) {
            while (*p == ' ' || *p == '\t' || *p == ',')
                p++;
            const char *start = p;
            while (*p && *p != ',')
                p++;
            const char *end = p;
            while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
                end--;
            if (end - start == 1 && *start == '*')
                return true;
            if (end > start && same_tag(start, (size_t)(end - start), etag))
                return true;
        }
        return false; /* If-Modified-Since is ignored when If-None-Match is present */
    }
    return set(if_modified_since) && set(last_modified) &&
           strcasecmp(if_modified_since, last_modified) == 0;
}
