/* Cluster scopes; see scope.h. */
#include "manager/scope.h"

#include <arpa/inet.h>
#include <errno.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cidr.h"
#include "common/util.h"

static int check_string(const json_t *v, const char *name, char *err, size_t errlen)
{
    if (!json_is_string(v)) {
        snprintf(err, errlen, "scopes.%s: expected a string", name);
        return -EINVAL;
    }
    if (json_string_length(v) > DMF_SCOPE_MAX_LEN) {
        snprintf(err, errlen, "scopes.%s: longer than %d characters", name, DMF_SCOPE_MAX_LEN);
        return -EINVAL;
    }
    return 0;
}

int dmf_scope_validate(const json_t *scopes, char *err, size_t errlen)
{
    if (!json_is_object(scopes)) {
        snprintf(err, errlen, "scopes: expected an object");
        return -EINVAL;
    }
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)scopes, key, v)
    {
        if (strcmp(key, "idc") == 0 || strcmp(key, "location") == 0) {
            if (check_string(v, key, err, errlen) != 0)
                return -EINVAL;
        } else if (strcmp(key, "cidrs") == 0 || strcmp(key, "hostnames") == 0) {
            if (!json_is_array(v) || json_array_size(v) > DMF_SCOPE_MAX_ITEMS) {
                snprintf(err, errlen, "scopes.%s: expected a list of at most %d strings", key,
                         DMF_SCOPE_MAX_ITEMS);
                return -EINVAL;
            }
            size_t i;
            json_t *e;
            json_array_foreach(v, i, e)
            {
                if (check_string(e, key, err, errlen) != 0)
                    return -EINVAL;
                const char *s = json_string_value(e);
                if (key[0] == 'c') {
                    struct dmf_cidr c;
                    if (dmf_cidr_parse(s, &c) != 0) {
                        snprintf(err, errlen, "scopes.cidrs[%zu]: '%s' is not a CIDR", i, s);
                        return -EINVAL;
                    }
                } else {
                    regex_t re;
                    int rc = regcomp(&re, s, REG_EXTENDED | REG_NOSUB);
                    if (rc != 0) {
                        char why[128];
                        regerror(rc, &re, why, sizeof(why));
                        snprintf(err, errlen, "scopes.hostnames[%zu]: %s", i, why);
                        return -EINVAL;
                    }
                    regfree(&re);
                }
            }
        } else {
            snprintf(err, errlen, "scopes: unknown member '%s'", key);
            return -EINVAL;
        }
    }
    return 0;
}

static int idc_in(const char *list, const char *idc)
{
    size_t n = strlen(idc);
    if (n == 0)
        return 0;
    for (const char *p = list; *p;) {
        size_t l = strcspn(p, "|");
        if (l == n && strncmp(p, idc, n) == 0)
            return 1;
        p += l;
        if (*p == '|')
            p++;
    }
    return 0;
}

/* Leading '|'-separated elements a and b share. */
static int location_shared(const char *a, const char *b)
{
    int shared = 0;
    while (*a && *b) {
        size_t la = strcspn(a, "|"), lb = strcspn(b, "|");
        if (la != lb || strncmp(a, b, la) != 0)
            break;
        shared++;
        a += la;
        b += lb;
        if (*a == '|')
            a++;
        if (*b == '|')
            b++;
    }
    return shared;
}

int dmf_scope_score(const json_t *scopes, const char *hostname, const char *ip, const char *idc,
                    const char *location)
{
    int score = 0;
    if (!json_is_object(scopes))
        return 0;
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(scopes, "cidrs"), i, e)
    {
        if (ip && *ip && dmf_cidr_contains(json_string_value(e), ip)) {
            score += 8;
            break;
        }
    }
    json_array_foreach(json_object_get(scopes, "hostnames"), i, e)
    {
        regex_t re;
        if (!hostname || !*hostname || !json_is_string(e) ||
            regcomp(&re, json_string_value(e), REG_EXTENDED | REG_NOSUB) != 0)
            continue;
        int m = regexec(&re, hostname, 0, NULL, 0) == 0;
        regfree(&re);
        if (m) {
            score += 4;
            break;
        }
    }
    const char *sidc = json_string_value(json_object_get(scopes, "idc"));
    if (sidc && idc && idc_in(sidc, idc))
        score += 2;
    const char *sloc = json_string_value(json_object_get(scopes, "location"));
    if (sloc && location)
        score += location_shared(sloc, location);
    return score;
}
