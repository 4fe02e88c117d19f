/* The input side of jobs: dmf_job_validate and dmf_job_args_public (see jobs.h). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/application.h"
#include "common/log.h"
#include "manager/jobs.h"

static int bad(char *err, size_t errlen, const char *msg, const char *what)
{
    snprintf(err, errlen, msg, what);
    return -EINVAL;
}

static int check_url(const char *u, char *err, size_t errlen)
{
    size_t n = strlen(u);
    if (n == 0 || n > DMF_JOB_MAX_URL_LEN)
        return bad(err, errlen, "%s: a URL must have 1..4096 characters", "args.urls");
    if (strncmp(u, "http://", 7) != 0 && strncmp(u, "https://", 8) != 0)
        return bad(err, errlen, "%s: only http:// and https:// URLs", "args.urls");
    for (const char *p = u; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f)
            return bad(err, errlen, "%s: a URL may not contain spaces or control characters",
                       "args.urls");
    return 0;
}

static int check_string(const json_t *v, const char *name, size_t max, char *err, size_t errlen)
{
    if (!json_is_string(v) || json_string_length(v) > max ||
        strlen(json_string_value(v)) != json_string_length(v)) {
        snprintf(err, errlen, "%s: expected a string of at most %zu bytes", name, max);
        return -EINVAL;
    }
    return 0;
}

int dmf_job_validate(const json_t *body, int oapi, json_t **norm, char *err, size_t errlen)
{
    const char *type = json_string_value(json_object_get(body, "type"));
    const json_t *args = json_object_get(body, "args");
    int rc = -EINVAL;
    json_t *out = NULL, *na = NULL;
    if (!type)
        return bad(err, errlen, "%s is required", "'type'");
    if (!json_is_object(args))
        return bad(err, errlen, "%s must be an object", "'args'");
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)body, k, v)
    {
        if (strcmp(k, "type") && strcmp(k, "args") && strcmp(k, "cluster_ids") &&
            strcmp(k, "scheduler_cluster_ids") && strcmp(k, "bio") && strcmp(k, "user_id"))
            return bad(err, errlen, "unknown member '%s'", k);
    }
    na = json_object();
    if (strcmp(type, "preheat") == 0) {
        const char *kind = json_string_value(json_object_get(args, "type")) ?: "file";
        if (strcmp(kind, "file") != 0 && strcmp(kind, "image") != 0) {
            rc = bad(err, errlen, "%s must be file or image", "args.type");
            goto out;
        }
        json_object_set_new(na, "type", json_string(kind));
        json_t *urls = json_array();
        json_object_set_new(na, "urls", urls);
        const json_t *one = json_object_get(args, "url");
        const json_t *many = json_object_get(args, "urls");
        if (one) {
            if (check_string(one, "args.url", DMF_JOB_MAX_URL_LEN, err, errlen))
                goto out;
            json_array_append(urls, (json_t *)one);
        }
        if (many) {
            if (!json_is_array(many) || json_array_size(many) > DMF_JOB_MAX_URLS) {
                rc = bad(err, errlen, "%s must be a list of at most 256 URLs", "args.urls");
                goto out;
            }
            size_t i;
            json_t *u;
            json_array_foreach(many, i, u)
            {
                if (check_string(u, "args.urls[]", DMF_JOB_MAX_URL_LEN, err, errlen))
                    goto out;
                json_array_append(urls, u);
            }
        }
        if (json_array_size(urls) == 0 || json_array_size(urls) > DMF_JOB_MAX_URLS) {
            rc = bad(err, errlen, "%s: give 1..256 URLs (url or urls)", "args");
            goto out;
        }
        if (strcmp(kind, "image") == 0 && json_array_size(urls) != 1) {
            rc = bad(err, errlen, "%s: an image preheat takes one url", "args");
            goto out;
        }
        size_t i;
        json_t *u;
        json_array_foreach(urls, i, u) if (check_url(json_string_value(u), err, errlen)) goto out;
        const char *scope = json_string_value(json_object_get(args, "scope")) ?: "single_seed_peer";
        if (strcmp(scope, "single_seed_peer") && strcmp(scope, "all_seed_peers") &&
            strcmp(scope, "all_peers")) {
            rc = bad(err, errlen, "%s must be single_seed_peer, all_seed_peers or all_peers",
                     "args.scope");
            goto out;
        }
        json_object_set_new(na, "scope", json_string(scope));
        const json_t *cc =
            json_object_get(args, "concurrent_count") ?: json_object_get(args, "concurrency");
        json_int_t conc = cc ? (json_is_integer(cc) ? json_integer_value(cc) : -1) : 4;
        if (conc < 1 || conc > 64) {
            rc = bad(err, errlen, "%s must be 1..64", "args.concurrency");
            goto out;
        }
        json_object_set_new(na, "concurrency", json_integer(conc));
        const json_t *hd = json_object_get(args, "headers");
        json_t *nh = json_object();
        json_object_set_new(na, "headers", nh);
        if (hd && !json_is_null(hd)) {
            if (!json_is_object(hd) || json_object_size(hd) > DMF_JOB_MAX_HEADERS) {
                rc = bad(err, errlen, "%s must be an object of at most 32 headers", "args.headers");
                goto out;
            }
            json_object_foreach((json_t *)hd, k, v)
            {
                if (strlen(k) == 0 || strlen(k) > 128 || strpbrk(k, " :\r\n\t") ||
                    check_string(v, "args.headers value", 8192, err, errlen) ||
                    strpbrk(json_string_value(v), "\r\n")) {
                    rc =
                        bad(err, errlen, "%s: a header name or value is not valid", "args.headers");
                    goto out;
                }
                json_object_set(nh, k, v);
            }
        }
        static const char *const strs[] = {"platform", "username", "password", "tag",
                                           "application"};
        for (size_t s = 0; s < sizeof(strs) / sizeof(strs[0]); s++) {
            const json_t *sv = json_object_get(args, strs[s]);
            if (!sv || json_is_null(sv))
                continue;
            char name[32];
            snprintf(name, sizeof(name), "args.%s", strs[s]);
            if (check_string(sv, name, 1024, err, errlen))
                goto out;
            json_object_set(na, strs[s], (json_t *)sv);
        }
        char aerr[160];
        const char *app = json_string_value(json_object_get(na, "application"));
        if (app && (app[0] == '\0' || dmf_application_check(app, aerr, sizeof(aerr)) != 0)) {
            rc = bad(err, errlen, "args.application: %s", app[0] ? aerr : "an empty name");
            goto out;
        }
        const char *plat = json_string_value(json_object_get(na, "platform"));
        if (plat && (strlen(plat) == 0 || !strchr(plat, '/') || strpbrk(plat, " \t"))) {
            rc = bad(err, errlen, "%s must look like os/arch[/variant]", "args.platform");
            goto out;
        }
    } else if (strcmp(type, "delete_task") == 0 || strcmp(type, "get_task") == 0) {
        const json_t *tid = json_object_get(args, "task_id");
        if (check_string(tid, "args.task_id", 64, err, errlen))
            goto out;
        if (json_string_length(tid) != 64) {
            rc = bad(err, errlen, "%s must be 64 lowercase hex digits", "args.task_id");
            goto out;
        }
        for (const char *p = json_string_value(tid); *p; p++)
            if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) {
                rc = bad(err, errlen, "%s must be 64 lowercase hex digits", "args.task_id");
                goto out;
            }
        json_object_set(na, "task_id", (json_t *)tid);
    } else {
        rc = bad(err, errlen, "'type' must be preheat, delete_task or get_task (not %.64s)", type);
        goto out;
    }
    const json_t *cl = json_object_get(body, oapi ? "scheduler_cluster_ids" : "cluster_ids");
    if (!cl)
        cl = json_object_get(body, "scheduler_cluster_ids") ?: json_object_get(body, "cluster_ids");
    json_t *ncl = json_array();
    json_object_set_new(na, "cluster_ids", ncl);
    if (cl && !json_is_null(cl)) {
        if (!json_is_array(cl) || json_array_size(cl) > 64) {
            rc = bad(err, errlen, "%s must be a list of cluster ids", "cluster_ids");
            goto out;
        }
        size_t i;
        json_t *c;
        json_array_foreach(cl, i, c)
        {
            if (!json_is_integer(c) || json_integer_value(c) < 1) {
                rc = bad(err, errlen, "%s must be a list of positive integers", "cluster_ids");
                goto out;
            }
            json_array_append(ncl, c);
        }
    }
    out = json_pack("{s:s, s:O}", "type", type, "args", na);
    rc = 0;
out:
    json_decref(na);
    if (rc == 0)
        *norm = out;
    return rc;
}

json_t *dmf_job_args_public(const json_t *args)
{
    json_t *a = json_deep_copy(args);
    if (!a)
        return json_null();
    json_object_del(a, "password");
    json_object_del(a, "secrets_ref");
    json_t *h = json_object_get(a, "headers");
    const char *k;
    json_t *v;
    json_object_foreach(h, k, v)
    {
        if (dmf_header_is_secret(k))
            json_object_set_new(h, k, json_string("<redacted>"));
    }
    /* Headers kept in memory only (dmf_job_args_split) show as they did before. */
    json_t *hidden = json_object_get(json_object_get(a, "withheld"), "headers");
    size_t i;
    json_array_foreach(hidden, i, v)
    {
        if (!json_is_object(h)) {
            h = json_object();
            json_object_set_new(a, "headers", h);
        }
        if (json_is_string(v))
            json_object_set_new(h, json_string_value(v), json_string("<redacted>"));
    }
    return a;
}

json_t *dmf_job_args_split(json_t *args)
{
    json_t *sec = json_object(), *withheld = json_object(), *names = json_array();
    json_t *pw = json_object_get(args, "password");
    if (json_is_string(pw)) {
        json_object_set(sec, "password", pw);
        json_object_set_new(withheld, "password", json_true());
    }
    json_object_del(args, "password");
    json_t *h = json_object_get(args, "headers"), *sh = json_object();
    const char *k;
    json_t *v;
    void *tmp;
    json_object_foreach_safe(h, tmp, k, v)
    {
        if (!dmf_header_is_secret(k))
            continue;
        json_object_set(sh, k, v);
        json_array_append_new(names, json_string(k));
        json_object_del(h, k);
    }
    if (json_object_size(sh) > 0) {
        json_object_set(sec, "headers", sh);
        json_object_set(withheld, "headers", names);
    }
    json_decref(sh);
    json_decref(names);
    if (json_object_size(sec) == 0) {
        json_decref(sec);
        json_decref(withheld);
        return NULL;
    }
    json_object_set_new(args, "withheld", withheld);
    return sec;
}

void dmf_job_args_merge_secrets(json_t *args, const json_t *secrets)
{
    json_t *pw = json_object_get(secrets, "password");
    if (json_is_string(pw))
        json_object_set(args, "password", pw);
    json_t *sh = json_object_get(secrets, "headers");
    if (json_object_size(sh) == 0)
        return;
    json_t *h = json_object_get(args, "headers");
    if (!json_is_object(h)) {
        h = json_object();
        json_object_set_new(args, "headers", h);
    }
    const char *k;
    json_t *v;
    json_object_foreach(sh, k, v) json_object_set(h, k, v);
}
