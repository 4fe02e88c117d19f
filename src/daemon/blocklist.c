/* The cluster's URL block list; see blocklist.h. */
#include "daemon/blocklist.h"

#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

struct dmf_blocklist {
    size_t n;
    char **patterns;
    regex_t *res;
};

void dmf_blocklist_free(struct dmf_blocklist *b)
{
    if (b == NULL)
        return;
    for (size_t i = 0; i < b->n; i++) {
        regfree(&b->res[i]);
        free(b->patterns[i]);
    }
    free(b->res);
    free(b->patterns);
    free(b);
}

struct dmf_blocklist *dmf_blocklist_new(const char *const *patterns, size_t n, char *err,
                                        size_t errlen)
{
    if (n > DMF_BLOCKLIST_MAX) {
        snprintf(err, errlen, "%zu URL patterns (at most %d)", n, DMF_BLOCKLIST_MAX);
        return NULL;
    }
    struct dmf_blocklist *b = dmf_xcalloc(1, sizeof(*b));
    b->patterns = dmf_xcalloc(n ? n : 1, sizeof(*b->patterns));
    b->res = dmf_xcalloc(n ? n : 1, sizeof(*b->res));
    for (size_t i = 0; i < n; i++) {
        if (patterns[i] == NULL || strlen(patterns[i]) > DMF_BLOCKLIST_PATTERN_MAX) {
            snprintf(err, errlen, "URL pattern %zu is longer than %d bytes", i,
                     DMF_BLOCKLIST_PATTERN_MAX);
            dmf_blocklist_free(b);
            return NULL;
        }
        int rc = regcomp(&b->res[i], patterns[i], REG_EXTENDED | REG_NOSUB);
        if (rc != 0) {
            char why[128];
            regerror(rc, &b->res[i], why, sizeof(why));
            snprintf(err, errlen, "URL pattern %zu is not a valid regex: %s", i, why);
            dmf_blocklist_free(b);
            return NULL;
        }
        b->patterns[i] = dmf_xstrdup(patterns[i]);
        b->n = i + 1;
    }
    return b;
}

bool dmf_blocklist_same(const struct dmf_blocklist *a, const char *const *patterns, size_t n)
{
    size_t have = a ? a->n : 0;
    if (have != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (strcmp(a->patterns[i], patterns[i]) != 0)
            return false;
    return true;
}

size_t dmf_blocklist_count(const struct dmf_blocklist *b)
{
    return b ? b->n : 0;
}

const char *dmf_blocklist_match(const struct dmf_blocklist *b, const char *url)
{
    if (b == NULL || url == NULL)
        return NULL;
    for (size_t i = 0; i < b->n; i++)
        if (regexec(&b->res[i], url, 0, NULL, 0) == 0)
            return b->patterns[i];
    return NULL;
}
