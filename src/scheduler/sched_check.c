/* Bounds checks of the scheduler's network input; see sched_check.h. */
#include "scheduler/sched_check.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/application.h"
#include "common/digest.h"
#include "common/pieces.h"
#include "common/taskid.h"

int dmf_sched_fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (err && errlen)
        vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return code;
}

/* It goes into logs: no spaces, nothing non-printable. */
int dmf_sched_check_id(const char *what, const char *v, size_t max, char *err, size_t errlen)
{
    size_t n = v ? strlen(v) : 0;
    if (n == 0)
        return dmf_sched_fail(err, errlen, -EINVAL, "%s is empty", what);
    if (n > max)
        return dmf_sched_fail(err, errlen, -EINVAL, "%s is longer than %zu bytes", what, max);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)v[i] <= 0x20 || (unsigned char)v[i] >= 0x7f)
            return dmf_sched_fail(err, errlen, -EINVAL,
                                  "%s contains a space or a non-printable byte", what);
    return 0;
}

int dmf_sched_check_text(const char *what, const char *v, size_t max, char *err, size_t errlen)
{
    size_t n = v ? strlen(v) : 0;
    if (n > max)
        return dmf_sched_fail(err, errlen, -EINVAL, "%s is longer than %zu bytes", what, max);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)v[i] < 0x20 || v[i] == 0x7f)
            return dmf_sched_fail(err, errlen, -EINVAL, "%s contains a control character", what);
    return 0;
}

int dmf_sched_check_task_id(const char *id, char *err, size_t errlen)
{
    if (id == NULL || !dmf_task_id_valid(id))
        return dmf_sched_fail(err, errlen, -EINVAL, "task_id must be 64 lower-case hex digits");
    return 0;
}

int dmf_sched_check_host_info(const struct dmf_scheduler_host_info *h, char *err, size_t errlen)
{
    int rc;
    if ((rc = dmf_sched_check_id("host id", h->id, DMF_SCHED_ID_MAX, err, errlen)) != 0 ||
        (rc = dmf_sched_check_text("hostname", h->hostname, DMF_SCHED_HOSTNAME_MAX, err, errlen)) !=
            0 ||
        (rc = dmf_sched_check_text("idc", h->idc, DMF_SCHED_ID_MAX, err, errlen)) != 0 ||
        (rc = dmf_sched_check_text("location", h->location, DMF_SCHED_LOCATION_MAX, err, errlen)) !=
            0)
        return rc;
    unsigned char addr[16];
    if (h->ip == NULL || strlen(h->ip) > 64 ||
        (inet_pton(AF_INET, h->ip, addr) != 1 && inet_pton(AF_INET6, h->ip, addr) != 1))
        return dmf_sched_fail(err, errlen, -EINVAL, "host %s: ip is not an IPv4 or IPv6 address",
                              h->id);
    if (h->piece_port == 0 || h->piece_port > 65535)
        return dmf_sched_fail(err, errlen, -EINVAL, "host %s: piece_port %u is not in 1..65535",
                              h->id, h->piece_port);
    if (h->rpc_port > 65535)
        return dmf_sched_fail(err, errlen, -EINVAL, "host %s: rpc_port %u is not in 0..65535",
                              h->id, h->rpc_port);
    if (h->type != DMF_SCHED_HOST_NORMAL && h->type != DMF_SCHED_HOST_SEED)
        return dmf_sched_fail(err, errlen, -EINVAL, "host %s: unknown host type %d", h->id,
                              h->type);
    if (h->type == DMF_SCHED_HOST_SEED && h->rpc_port == 0)
        return dmf_sched_fail(err, errlen, -EINVAL, "seed host %s needs an rpc_port", h->id);
    return 0;
}

int dmf_sched_check_register(const struct dmf_scheduler_register *r, char *err, size_t errlen)
{
    int rc;
    if ((rc = dmf_sched_check_task_id(r->task_id, err, errlen)) != 0 ||
        (rc = dmf_sched_check_id("peer_id", r->peer_id, DMF_SCHED_ID_MAX, err, errlen)) != 0 ||
        (rc = dmf_sched_check_id("host_id", r->host_id, DMF_SCHED_ID_MAX, err, errlen)) != 0 ||
        (rc = dmf_sched_check_text("tag", r->tag, DMF_SCHED_TAG_MAX, err, errlen)) != 0 ||
        (rc = dmf_application_check(r->application, err, errlen)) != 0)
        return rc;
    /* The URL may carry signed-query secrets: it is checked, never echoed. */
    size_t ul = r->url ? strlen(r->url) : 0;
    if (ul == 0)
        return dmf_sched_fail(err, errlen, -EINVAL, "url is empty");
    if (ul > DMF_SCHED_URL_MAX)
        return dmf_sched_fail(err, errlen, -EINVAL, "url is longer than %u bytes",
                              DMF_SCHED_URL_MAX);
    if ((rc = dmf_sched_check_text("url", r->url, DMF_SCHED_URL_MAX, err, errlen)) != 0)
        return rc;
    if (r->nheaders > DMF_SCHED_HEADERS_MAX)
        return dmf_sched_fail(err, errlen, -EINVAL, "more than %u headers", DMF_SCHED_HEADERS_MAX);
    for (size_t i = 0; i < r->nheaders; i++) {
        const char *n = r->headers[i].name ? r->headers[i].name : "";
        const char *v = r->headers[i].value ? r->headers[i].value : "";
        if (*n == '\0')
            return dmf_sched_fail(err, errlen, -EINVAL, "header %zu has an empty name", i);
        if (strlen(n) + strlen(v) > DMF_SCHED_HEADER_MAX)
            return dmf_sched_fail(err, errlen, -EINVAL, "header %zu is longer than %u bytes", i,
                                  DMF_SCHED_HEADER_MAX);
        if (strpbrk(n, "\r\n:") != NULL || strpbrk(v, "\r\n") != NULL)
            return dmf_sched_fail(err, errlen, -EINVAL,
                                  "header %zu contains CR, LF or ':' in its name", i);
    }
    if (r->nfilter_query > DMF_SCHED_FILTERS_MAX)
        return dmf_sched_fail(err, errlen, -EINVAL, "more than %u filter_query entries",
                              DMF_SCHED_FILTERS_MAX);
    for (size_t i = 0; i < r->nfilter_query; i++)
        if ((rc = dmf_sched_check_text("filter_query entry", r->filter_query[i],
                                       DMF_SCHED_FILTER_MAX, err, errlen)) != 0)
            return rc;
    if (r->digest && *r->digest) {
        uint8_t d[DMF_SHA256_LEN];
        char why[128];
        if (dmf_digest_parse(r->digest, d, why, sizeof(why)) != 0)
            return dmf_sched_fail(err, errlen, -EINVAL, "digest: %s", why);
    }
    if (r->held_pieces > DMF_PIECES_MAX)
        return dmf_sched_fail(err, errlen, -EINVAL, "held_pieces %u is more than %u",
                              r->held_pieces, DMF_PIECES_MAX);
    return 0;
}
