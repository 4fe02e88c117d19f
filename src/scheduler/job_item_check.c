/* RunJobItem's checks; see job_item_check.h. */
#include "scheduler/job_item_check.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/application.h"

static bool id_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == ':' || c == '/' || c == '-';
}

static bool printable(const char *s, bool allow_space)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c == 0x7f || (!allow_space && c == ' '))
            return false;
    }
    return true;
}

static bool task_id_ok(const char *s)
{
    if (s == NULL || strlen(s) != 64)
        return false;
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
            return false;
    return true;
}

static const char *or_empty(const char *s)
{
    return s ? s : "";
}

int dmf_job_item_check(const Damselfly__V1__RunJobItemRequest *req, char *why, size_t whylen)
{
    const char *id = or_empty(req->item_id);
    size_t idlen = strlen(id);
    if (idlen == 0 || idlen > DMF_JOB_ITEM_ID_MAX) {
        snprintf(why, whylen, "item_id must be 1 to %d characters", DMF_JOB_ITEM_ID_MAX);
        return -EINVAL;
    }
    for (const char *p = id; *p; p++)
        if (!id_char(*p)) {
            snprintf(why, whylen, "item_id may hold only letters, digits and ._:/-");
            return -EINVAL;
        }
    const char *host = or_empty(req->host_id), *ip = or_empty(req->ip);
    if (strlen(host) > DMF_TLS_ID_MAX || (host[0] && !dmf_tls_host_id_valid(host))) {
        snprintf(why, whylen, "host_id is not a valid host ID");
        return -EINVAL;
    }
    if (strlen(ip) > 64 || !printable(ip, false)) {
        snprintf(why, whylen, "ip is not an address");
        return -EINVAL;
    }
    if (ip[0] && (req->rpc_port == 0 || req->rpc_port > 65535)) {
        snprintf(why, whylen, "rpc_port must be 1 to 65535 with an ip");
        return -EINVAL;
    }
    if (!host[0] && !ip[0]) {
        snprintf(why, whylen, "no target: give host_id or ip and rpc_port");
        return -EINVAL;
    }
    switch (req->kind) {
    case DAMSELFLY__V1__JOB_ITEM_KIND__JOB_ITEM_PREHEAT: {
        const char *url = or_empty(req->url);
        size_t ul = strlen(url);
        if (ul == 0 || ul > DMF_JOB_ITEM_URL_MAX || !printable(url, false) ||
            (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)) {
            snprintf(why, whylen, "url must be an http or https URL of at most %d bytes",
                     DMF_JOB_ITEM_URL_MAX);
            return -EINVAL;
        }
        if (req->n_headers > DMF_JOB_ITEM_HEADERS) {
            snprintf(why, whylen, "more than %d headers", DMF_JOB_ITEM_HEADERS);
            return -EINVAL;
        }
        for (size_t i = 0; i < req->n_headers; i++) {
            const char *n = or_empty(req->headers[i]->name), *v = or_empty(req->headers[i]->value);
            if (!n[0] || strlen(n) + strlen(v) > DMF_JOB_ITEM_HEADER_MAX || !printable(n, false) ||
                strchr(n, ':') || !printable(v, true)) {
                snprintf(why, whylen, "header %zu is malformed or too long", i + 1);
                return -EINVAL;
            }
        }
        if (strlen(or_empty(req->digest)) > 80 || strlen(or_empty(req->tag)) > 256) {
            snprintf(why, whylen, "digest or tag too long");
            return -EINVAL;
        }
        char aerr[128];
        if (dmf_application_check(req->application, aerr, sizeof(aerr)) != 0) {
            snprintf(why, whylen, "application: %s", aerr);
            return -EINVAL;
        }
        return 0;
    }
    case DAMSELFLY__V1__JOB_ITEM_KIND__JOB_ITEM_DELETE:
        if (!task_id_ok(req->task_id)) {
            snprintf(why, whylen, "task_id must be 64 lower-case hex digits");
            return -EINVAL;
        }
        return 0;
    default:
        snprintf(why, whylen, "unknown kind %d", (int)req->kind);
        return -EINVAL;
    }
}

bool dmf_job_item_targets(const Damselfly__V1__RunJobItemRequest *req, const char *id,
                          const char *ip, uint32_t rpc_port)
{
    const char *want_id = or_empty(req->host_id), *want_ip = or_empty(req->ip);
    if (rpc_port == 0)
        return false;
    if (want_id[0] && strcmp(want_id, or_empty(id)) != 0)
        return false;
    if (want_ip[0] && (strcmp(want_ip, or_empty(ip)) != 0 || req->rpc_port != rpc_port))
        return false;
    return want_id[0] || want_ip[0];
}

bool dmf_job_item_may_run(const struct dmf_tls_identity *caller)
{
    return caller == NULL || caller->role == DMF_TLS_ROLE_MANAGER;
}

/* Two ways of naming a target agree where both name it (the manager learns a seed's host
 * ID from the first answer and sends it when it asks again). */
static bool both_or_any(const char *a, const char *b)
{
    return !a || !b || !a[0] || !b[0] || strcmp(a, b) == 0;
}

bool dmf_job_item_same(const Damselfly__V1__RunJobItemRequest *a,
                       const Damselfly__V1__RunJobItemRequest *b)
{
    bool ip_both = a->ip && a->ip[0] && b->ip && b->ip[0];
    return a->kind == b->kind && both_or_any(a->host_id, b->host_id) &&
           (!ip_both || (strcmp(a->ip, b->ip) == 0 && a->rpc_port == b->rpc_port)) &&
           strcmp(or_empty(a->url), or_empty(b->url)) == 0 &&
           strcmp(or_empty(a->task_id), or_empty(b->task_id)) == 0;
}
