/* Secret query parameters; see url_secrets.h. */
#include "common/url_secrets.h"

#include <stdbool.h>
#include <string.h>
#include <strings.h>

#include "common/util.h"

static bool listed(const struct dmf_strlist *names, const char *name, size_t len)
{
    for (size_t i = 0; names && i < names->n; i++)
        if (strlen(names->v[i]) == len && strncasecmp(names->v[i], name, len) == 0)
            return true;
    return false;
}

char *dmf_url_redact(const char *url, const struct dmf_strlist *names)
{
    if (url == NULL)
        return dmf_xstrdup("");
    size_t len = strlen(url);
    /* At worst every byte starts an empty parameter whose value becomes the marker. */
    char *out = dmf_xmalloc(len * (sizeof(DMF_URL_REDACTED) + 1) + 1), *o = out;

    /* Scheme and authority, without userinfo. */
    const char *p = url, *sep = strstr(url, "://");
    if (sep != NULL && strcspn(url, "/?#") < (size_t)(sep - url))
        sep = NULL; /* a "://" in the path or query is not the scheme's */
    if (sep != NULL) {
        const char *auth = sep + 3;
        size_t alen = strcspn(auth, "/?#");
        const char *at = NULL;
        for (size_t i = 0; i < alen; i++)
            if (auth[i] == '@')
                at = auth + i;
        memcpy(o, url, (size_t)(auth - url));
        o += auth - url;
        p = at ? at + 1 : auth;
    }
    /* Up to the query. */
    size_t n = strcspn(p, "?#");
    memcpy(o, p, n);
    o += n;
    p += n;
    if (*p == '?') {
        *o++ = *p++;
        while (*p != '\0' && *p != '#') {
            size_t plen = strcspn(p, "&#");
            size_t nlen = strcspn(p, "=&#");
            memcpy(o, p, nlen);
            o += nlen;
            if (nlen < plen && listed(names, p, nlen)) {
                memcpy(o, "=" DMF_URL_REDACTED, sizeof(DMF_URL_REDACTED));
                o += sizeof(DMF_URL_REDACTED);
            } else {
                memcpy(o, p + nlen, plen - nlen);
                o += plen - nlen;
            }
            p += plen;
            if (*p == '&')
                *o++ = *p++;
        }
    }
    /* The fragment is never sent to the origin, and whatever it holds is not shown. */
    *o = '\0';
    return out;
}

void dmf_strlist_merge(struct dmf_strlist *dst, const struct dmf_strlist *src)
{
    for (size_t i = 0; src && i < src->n; i++) {
        bool have = false;
        for (size_t j = 0; j < dst->n && !have; j++)
            have = strcmp(dst->v[j], src->v[i]) == 0;
        if (!have)
            dmf_strlist_push(dst, src->v[i]);
    }
}
