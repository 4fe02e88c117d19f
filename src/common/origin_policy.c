/* The origin policy of fetches asked for by other hosts; see origin_policy.h. */
#include "common/origin_policy.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/netlist.h"

static bool name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n >= DMF_ORIGIN_HOST_MAX)
        return false;
    for (const char *c = s; *c; c++)
        if (!isalnum((unsigned char)*c) && !strchr("-._*", *c))
            return false;
    return strchr(s + (s[0] == '*'), '*') == NULL && (s[0] != '*' || s[1] == '.');
}

/* Splits the entries of l into networks and host names. */
static int load_list(struct dmf_cidr *nets, size_t *nnets, char (*hosts)[DMF_ORIGIN_HOST_MAX],
                     size_t *nhosts, const struct dmf_strlist *l, const char *flag, char *err,
                     size_t errlen)
{
    for (size_t i = 0; l && i < l->n; i++) {
        const char *v = l->v[i];
        struct dmf_cidr c;
        if (dmf_cidr_parse(v, &c) == 0 && *nnets < DMF_ORIGIN_POLICY_MAX) {
            nets[(*nnets)++] = c;
        } else if (name_ok(v) && strchr(v, ':') == NULL && *nhosts < DMF_ORIGIN_POLICY_MAX) {
            size_t j = 0;
            for (; v[j]; j++)
                hosts[*nhosts][j] = (char)tolower((unsigned char)v[j]);
            hosts[(*nhosts)++][j] = '\0';
        } else {
            snprintf(err, errlen,
                     "%s: '%s' is not a network (10.0.0.0/8), a host name or *.domain, or one "
                     "too many (at most %d of each)",
                     flag, v, DMF_ORIGIN_POLICY_MAX);
            return -EINVAL;
        }
    }
    return 0;
}

int dmf_origin_policy_load(struct dmf_origin_policy *p, const struct dmf_strlist *allow,
                           const struct dmf_strlist *deny, const char *cluster, char *err,
                           size_t errlen)
{
    memset(p, 0, sizeof(*p));
    if (load_list(p->allow, &p->nallow, p->allow_hosts, &p->nallow_hosts, allow, "--origin-allow",
                  err, errlen) != 0 ||
        load_list(p->deny, &p->ndeny, p->deny_hosts, &p->ndeny_hosts, deny, "--origin-deny", err,
                  errlen) != 0)
        return -EINVAL;
    p->nown = dmf_netlist_local(p->own, DMF_ORIGIN_POLICY_MAX);
    struct sockaddr_storage ss[16];
    size_t n = dmf_netlist_resolve(cluster, ss, 16);
    for (size_t i = 0; i < n; i++)
        dmf_origin_policy_own(p, (const struct sockaddr *)&ss[i]);
    return 0;
}

void dmf_origin_policy_own(struct dmf_origin_policy *p, const struct sockaddr *sa)
{
    struct dmf_cidr c = {0};
    if (p->nown >= DMF_ORIGIN_POLICY_MAX || !dmf_sockaddr_ip(sa, &c.family, c.addr))
        return;
    c.bits = c.family == AF_INET ? 32 : 128;
    p->own[p->nown++] = c;
}

static bool host_in(char (*hosts)[DMF_ORIGIN_HOST_MAX], size_t n, const char *host)
{
    size_t hl = strlen(host);
    for (size_t i = 0; i < n; i++) {
        const char *e = hosts[i];
        if (e[0] == '*') {
            size_t sl = strlen(e + 1); /* ".domain" */
            if (hl > sl && strcasecmp(host + hl - sl, e + 1) == 0)
                return true;
        } else if (strcasecmp(host, e) == 0) {
            return true;
        }
    }
    return false;
}

const char *dmf_origin_policy_host(const struct dmf_origin_policy *p, const char *host,
                                   bool *any_address)
{
    *any_address = false;
    if (host_in((char(*)[DMF_ORIGIN_HOST_MAX])p->deny_hosts, p->ndeny_hosts, host))
        return "the host is in --origin-deny";
    if (host_in((char(*)[DMF_ORIGIN_HOST_MAX])p->allow_hosts, p->nallow_hosts, host))
        *any_address = true;
    return NULL;
}

const char *dmf_origin_policy_addr(void *arg, const struct sockaddr *sa)
{
    const struct dmf_origin_policy *p = arg;
    int family;
    uint8_t a[16];
    if (!dmf_sockaddr_ip(sa, &family, a))
        return "not an IP address";
    if (dmf_cidr_list_match(p->deny, p->ndeny, sa))
        return "the address is in --origin-deny";
    if (dmf_cidr_list_match(p->allow, p->nallow, sa))
        return NULL;
    if (dmf_ip_is_loopback(family, a))
        return "a loopback address (allow it with --origin-allow)";
    if (dmf_ip_is_unspecified(family, a))
        return "the unspecified address";
    if (dmf_ip_is_link_local(family, a))
        return "a link-local address (such as a cloud metadata service)";
    if (dmf_cidr_list_match(p->own, p->nown, sa))
        return "an address of this host or of the cluster (allow it with --origin-allow)";
    return NULL;
}

int dmf_origin_policy_url_host(const char *url, char *host, size_t hostlen)
{
    const char *s = NULL;
    if (strncasecmp(url, "http://", 7) == 0)
        s = url + 7;
    else if (strncasecmp(url, "https://", 8) == 0)
        s = url + 8;
    if (s == NULL)
        return -EINVAL;
    const char *at = NULL;
    const char *end = s + strcspn(s, "/?#");
    for (const char *c = s; c < end; c++)
        if (*c == '@')
            at = c;
    if (at)
        s = at + 1;
    const char *hend;
    if (*s == '[') {
        s++;
        hend = memchr(s, ']', (size_t)(end - s));
        if (hend == NULL)
            return -EINVAL;
    } else {
        hend = memchr(s, ':', (size_t)(end - s));
        if (hend == NULL)
            hend = end;
    }
    size_t n = (size_t)(hend - s);
    if (n == 0 || n >= hostlen)
        return -EINVAL;
    for (size_t i = 0; i < n; i++)
        host[i] = (char)tolower((unsigned char)s[i]);
    host[n] = '\0';
    return 0;
}
