/* Registry-mirror helpers; see registry.h. */
#include "daemon/proxy/registry.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/util.h"

bool dmf_registry_blob_path(const char *path, char *digest)
{
    static const char marker[] = "/blobs/sha256:";
    if (strncmp(path, "/v2/", 4) != 0)
        return false;
    const char *m = strstr(path + 4, marker);
    if (m == NULL || m == path + 4)
        return false;
    /* The name is everything between /v2/ and /blobs/ and has no empty component. */
    for (const char *p = path + 4; p < m; p++)
        if (p[0] == '/' && (p == path + 4 || p[1] == '/' || p + 1 == m))
            return false;
    const char *hex = m + sizeof(marker) - 1;
    for (int i = 0; i < 64; i++)
        if (!((hex[i] >= '0' && hex[i] <= '9') || (hex[i] >= 'a' && hex[i] <= 'f')))
            return false;
    if (hex[64] != '\0')
        return false;
    snprintf(digest, DMF_DIGEST_STR_LEN + 1, "sha256:%.64s", hex);
    return true;
}

static int unhex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static char *pct_decode(const char *s, size_t n)
{
    char *out = dmf_xmalloc(n + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n && unhex(s[i + 1]) >= 0 && unhex(s[i + 2]) >= 0) {
            out[o++] = (char)(unhex(s[i + 1]) * 16 + unhex(s[i + 2]));
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
    return out;
}

void dmf_registry_strip_ns(const char *target, char **out, char **ns)
{
    *ns = NULL;
    const char *q = strchr(target, '?');
    if (q == NULL) {
        *out = dmf_xstrdup(target);
        return;
    }
    size_t cap = strlen(target) + 1, o = (size_t)(q - target);
    char *res = dmf_xmalloc(cap);
    memcpy(res, target, o);
    bool first = true;
    for (const char *p = q + 1; *p;) {
        size_t n = strcspn(p, "&");
        if (n > 3 && strncmp(p, "ns=", 3) == 0) {
            if (*ns == NULL)
                *ns = pct_decode(p + 3, n - 3);
        } else if (n > 0) {
            res[o++] = first ? '?' : '&';
            memcpy(res + o, p, n);
            o += n;
            first = false;
        }
        p += n;
        if (*p == '&')
            p++;
    }
    res[o] = '\0';
    *out = res;
}

int dmf_registry_map_check(const char *entry, char *err, size_t errlen)
{
    const char *eq = strchr(entry, '=');
    if (eq == NULL || eq == entry ||
        (strncmp(eq + 1, "http://", 7) != 0 && strncmp(eq + 1, "https://", 8) != 0) ||
        strchr(eq + 1, '?') != NULL) {
        snprintf(err, errlen, "'%.100s' is not HOST=http(s)://host[:port]", entry);
        return -EINVAL;
    }
    return 0;
}

/* "http://h:p/x" -> "h:p" compared with host (case-insensitive). */
static bool url_host_is(const char *url, const char *host)
{
    const char *h = strstr(url, "://");
    if (h == NULL)
        return false;
    h += 3;
    size_t n = strcspn(h, "/");
    return strlen(host) == n && strncasecmp(h, host, n) == 0;
}

static char *trim_slash(const char *url)
{
    size_t n = strlen(url);
    while (n > 0 && url[n - 1] == '/')
        n--;
    return dmf_xstrndup(url, n);
}

char *dmf_registry_upstream(const struct dmf_strlist *map, const char *default_url, const char *ns)
{
    if (ns == NULL || ns[0] == '\0')
        return default_url ? trim_slash(default_url) : NULL;
    for (size_t i = 0; map && i < map->n; i++) {
        const char *eq = strchr(map->v[i], '=');
        if (eq && (size_t)(eq - map->v[i]) == strlen(ns) &&
            strncasecmp(map->v[i], ns, (size_t)(eq - map->v[i])) == 0)
            return trim_slash(eq + 1);
    }
    if (default_url && url_host_is(default_url, ns))
        return trim_slash(default_url);
    if (strcasecmp(ns, "docker.io") == 0)
        return dmf_xstrdup("https://registry-1.docker.io");
    /* A host name only: anything else could smuggle a path or credentials. */
    for (const char *p = ns; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '-' || *p == ':' || *p == '[' || *p == ']'))
            return NULL;
    return dmf_xasprintf("https://%s", ns);
}
