/* Image resolution for preheat; see image.h. */
#include "manager/image.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

#include "common/http_client.h"
#include "common/log.h"
#include "common/util.h"

#define ACCEPT                                                                                     \
    "Accept: application/vnd.oci.image.index.v1+json, "                                            \
    "application/vnd.docker.distribution.manifest.list.v2+json, "                                  \
    "application/vnd.oci.image.manifest.v1+json, "                                                 \
    "application/vnd.docker.distribution.manifest.v2+json"

struct dmf_image_resolver {
    dmf_http_t *http;
    LIST_HEAD(, resolve) all;
};

enum step { STEP_TOP, STEP_TOKEN, STEP_PLATFORM };

struct resolve {
    dmf_image_resolver_t *res;
    json_t *args;
    dmf_image_cb cb;
    void *arg;
    char base[2048];
    char ref[512];
    char *auth;      /* "Authorization: ..." or NULL */
    bool tried_auth; /* a 401 was answered once */
    enum step step;
    char *retry_url; /* after a token: the manifest to fetch again */
    dmf_http_req_t *req;
    long status;
    char *body;
    size_t len;
    char *challenge;
    json_t *layers;
    json_t *todo; /* platform manifests still to fetch (digests) */
    LIST_ENTRY(resolve) link;
};

static void fetch(struct resolve *z, const char *url, bool accept);

int dmf_image_parse_url(const char *url, char *base, size_t baselen, char *ref, size_t reflen)
{
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)
        return -EINVAL;
    const char *m = strstr(url, "/manifests/");
    const char *v2 = strstr(url, "/v2/");
    if (!m || !v2 || v2 > m || (size_t)(m - url) >= baselen)
        return -EINVAL;
    const char *r = m + strlen("/manifests/");
    if (!*r || strchr(r, '/') || strlen(r) >= reflen)
        return -EINVAL;
    snprintf(base, baselen, "%.*s", (int)(m - url), url);
    snprintf(ref, reflen, "%s", r);
    return 0;
}

int dmf_image_platform_match(const json_t *p, const char *want)
{
    char os[64] = "", arch[64] = "", variant[64] = "";
    if (sscanf(want, "%63[^/]/%63[^/]/%63s", os, arch, variant) < 2)
        return 0;
    const char *pos = json_string_value(json_object_get(p, "os"));
    const char *parch = json_string_value(json_object_get(p, "architecture"));
    const char *pvar = json_string_value(json_object_get(p, "variant"));
    if (!pos || !parch || strcmp(pos, os) != 0 || strcmp(parch, arch) != 0)
        return 0;
    return variant[0] == '\0' || (pvar && strcmp(pvar, variant) == 0);
}

/* The value of key= in a challenge (quoted or not), into out. */
static int challenge_param(const char *c, const char *key, char *out, size_t outlen)
{
    size_t kl = strlen(key);
    for (const char *p = c; (p = strcasestr(p, key)) != NULL; p += kl) {
        if (p != c && p[-1] != ' ' && p[-1] != ',')
            continue;
        if (p[kl] != '=')
            continue;
        const char *v = p + kl + 1;
        size_t n;
        if (*v == '"') {
            v++;
            n = strcspn(v, "\"");
        } else {
            n = strcspn(v, ", ");
        }
        if (n >= outlen)
            return -EINVAL;
        memcpy(out, v, n);
        out[n] = '\0';
        return 0;
    }
    return -ENOENT;
}

/* Percent-encodes s (RFC 3986 unreserved characters stay) into a new string. */
static char *escape(const char *s)
{
    char *out = dmf_xmalloc(3 * strlen(s) + 1), *o = out;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (isalnum(*p) || *p == '-' || *p == '.' || *p == '_' || *p == '~') {
            *o++ = (char)*p;
        } else {
            sprintf(o, "%%%02X", *p);
            o += 3;
        }
    }
    *o = '\0';
    return out;
}

char *dmf_image_token_url(const char *c)
{
    if (!c || strncasecmp(c, "Bearer ", 7) != 0)
        return NULL;
    char realm[1024], service[512] = "", scope[1024] = "";
    if (challenge_param(c, "realm", realm, sizeof(realm)) != 0 ||
        (strncmp(realm, "http://", 7) != 0 && strncmp(realm, "https://", 8) != 0))
        return NULL;
    (void)challenge_param(c, "service", service, sizeof(service));
    (void)challenge_param(c, "scope", scope, sizeof(scope));
    char *es = escape(service), *sc = escape(scope);
    char *u =
        dmf_xasprintf("%s%s%s%s%s%s", realm, strchr(realm, '?') ? "&" : "?",
                      service[0] ? "service=" : "", service[0] ? es : "",
                      scope[0] ? (service[0] ? "&scope=" : "scope=") : "", scope[0] ? sc : "");
    free(es);
    free(sc);
    return u;
}

static void resolve_free(struct resolve *z)
{
    LIST_REMOVE(z, link);
    if (z->req)
        dmf_http_cancel(z->req);
    json_decref(z->layers);
    json_decref(z->todo);
    free(z->auth);
    free(z->retry_url);
    free(z->body);
    free(z->challenge);
    free(z);
}

static void finish(struct resolve *z, const char *err)
{
    json_t *layers = err ? NULL : json_incref(z->layers);
    z->req = NULL;
    z->cb(z->arg, layers, err);
    resolve_free(z);
}

static char *basic_auth(json_t *args)
{
    const char *u = json_string_value(json_object_get(args, "username"));
    const char *p = json_string_value(json_object_get(args, "password"));
    if (!u || !p)
        return NULL;
    char *up = dmf_xasprintf("%s:%s", u, p);
    size_t n = strlen(up);
    unsigned char *b64 = dmf_xmalloc(4 * ((n + 2) / 3) + 1);
    EVP_EncodeBlock(b64, (unsigned char *)up, (int)n);
    memset(up, 0, n);
    free(up);
    char *h = dmf_xasprintf("Authorization: Basic %s", b64);
    free(b64);
    return h;
}

static int on_headers(void *arg, dmf_http_req_t *req, long status)
{
    struct resolve *z = arg;
    z->status = status;
    const struct dmf_strlist *h = dmf_http_all_headers(req, NULL);
    for (size_t i = 0; h && i < h->n; i++)
        if (strncasecmp(h->v[i], "WWW-Authenticate:", 17) == 0) {
            const char *v = h->v[i] + 17;
            while (*v == ' ')
                v++;
            free(z->challenge);
            z->challenge = dmf_xstrdup(v);
        }
    return 0;
}

static int on_data(void *arg, dmf_http_req_t *req, const char *data, size_t len)
{
    struct resolve *z = arg;
    if (z->len + len > DMF_IMAGE_MAX_MANIFEST)
        return -EFBIG;
    z->body = dmf_xrealloc(z->body, z->len + len + 1);
    memcpy(z->body + z->len, data, len);
    z->len += len;
    z->body[z->len] = '\0';
    return 0;
}

/* Adds a manifest's layers. 0, or -EINVAL with the reason in err. */
static int take_layers(struct resolve *z, json_t *man, char *err, size_t errlen)
{
    json_t *layers = json_object_get(man, "layers");
    if (!json_is_array(layers)) {
        snprintf(err, errlen, "the manifest has no layers");
        return -EINVAL;
    }
    size_t i;
    json_t *l;
    json_array_foreach(layers, i, l)
    {
        const char *d = json_string_value(json_object_get(l, "digest"));
        if (!d || strncmp(d, "sha256:", 7) != 0 || strlen(d) != 71) {
            snprintf(err, errlen, "a layer has no sha256 digest");
            return -EINVAL;
        }
        if (json_array_size(z->layers) >= DMF_IMAGE_MAX_LAYERS) {
            snprintf(err, errlen, "more than %d layers", DMF_IMAGE_MAX_LAYERS);
            return -EINVAL;
        }
        char *url = dmf_xasprintf("%s/blobs/%s", z->base, d);
        json_array_append_new(z->layers, json_pack("{s:s, s:s}", "url", url, "digest", d));
        free(url);
    }
    return 0;
}

static void next_platform(struct resolve *z)
{
    if (json_array_size(z->todo) == 0) {
        /* What a daemon needs to fetch the blobs: the same credentials. */
        if (z->auth) {
            json_t *h = json_object_get(z->args, "headers");
            if (!json_is_object(h)) {
                h = json_object();
                json_object_set_new(z->args, "headers", h);
            }
            json_object_set_new(h, "Authorization", json_string(z->auth + 15));
        }
        finish(z, json_array_size(z->layers) ? NULL : "no layers to preheat");
        return;
    }
    char *url =
        dmf_xasprintf("%s/manifests/%s", z->base, json_string_value(json_array_get(z->todo, 0)));
    json_array_remove(z->todo, 0);
    z->step = STEP_PLATFORM;
    fetch(z, url, true);
    free(url);
}

static void on_done(void *arg, dmf_http_req_t *req, int err, const char *reason)
{
    struct resolve *z = arg;
    char why[512];
    z->req = NULL;
    if (err != 0) {
        snprintf(why, sizeof(why), "registry: %s", reason ? reason : "request failed");
        finish(z, why);
        return;
    }
    if (z->status == 401 && !z->tried_auth && z->step != STEP_TOKEN) {
        z->tried_auth = true;
        char *tok = dmf_image_token_url(z->challenge);
        if (tok) {
            free(z->retry_url);
            z->retry_url = dmf_xasprintf("%s/manifests/%s", z->base, z->ref);
            z->step = STEP_TOKEN;
            fetch(z, tok, false);
            free(tok);
            return;
        }
        free(z->auth);
        z->auth = basic_auth(z->args);
        if (z->auth) {
            char *u = dmf_xasprintf("%s/manifests/%s", z->base, z->ref);
            fetch(z, u, true);
            free(u);
            return;
        }
    }
    if (z->status != 200) {
        snprintf(why, sizeof(why), "registry answered %ld for the %s", z->status,
                 z->step == STEP_TOKEN ? "token" : "manifest");
        finish(z, why);
        return;
    }
    json_error_t je;
    json_t *doc = json_loadb(z->body ? z->body : "", z->len, 0, &je);
    if (!json_is_object(doc)) {
        json_decref(doc);
        finish(z, "registry: the answer is not a JSON object");
        return;
    }
    if (z->step == STEP_TOKEN) {
        const char *t = json_string_value(json_object_get(doc, "token"))
                            ?: json_string_value(json_object_get(doc, "access_token"));
        if (!t || strlen(t) > 16384) {
            json_decref(doc);
            finish(z, "registry: no token in the token service's answer");
            return;
        }
        free(z->auth);
        z->auth = dmf_xasprintf("Authorization: Bearer %s", t);
        json_decref(doc);
        z->step = STEP_TOP;
        fetch(z, z->retry_url, true);
        return;
    }
    json_t *manifests = json_object_get(doc, "manifests");
    if (z->step == STEP_TOP && json_is_array(manifests)) {
        const char *want = json_string_value(json_object_get(z->args, "platform")) ?: "linux/amd64";
        char buf[256];
        snprintf(buf, sizeof(buf), "%s", want);
        size_t i;
        json_t *m;
        json_array_foreach(manifests, i, m)
        {
            const char *d = json_string_value(json_object_get(m, "digest"));
            bool match = false;
            char *save = NULL;
            char tmp[256];
            snprintf(tmp, sizeof(tmp), "%s", buf);
            for (char *p = strtok_r(tmp, ",", &save); p; p = strtok_r(NULL, ",", &save))
                match = match || dmf_image_platform_match(json_object_get(m, "platform"), p);
            if (match && d && strncmp(d, "sha256:", 7) == 0 && strlen(d) == 71)
                json_array_append_new(z->todo, json_string(d));
        }
        json_decref(doc);
        if (json_array_size(z->todo) == 0) {
            snprintf(why, sizeof(why), "the index has no manifest for %s", want);
            finish(z, why);
            return;
        }
        next_platform(z);
        return;
    }
    char e[200];
    int rc = take_layers(z, doc, e, sizeof(e));
    json_decref(doc);
    if (rc != 0) {
        finish(z, e);
        return;
    }
    next_platform(z);
}

static const struct dmf_http_req_ops ops = {
    .on_headers = on_headers,
    .on_data = on_data,
    .on_done = on_done,
};

static void fetch(struct resolve *z, const char *url, bool accept)
{
    free(z->body);
    z->body = NULL;
    z->len = 0;
    z->status = 0;
    struct dmf_strlist h = {0};
    if (accept)
        dmf_strlist_push(&h, ACCEPT);
    /* The token service takes the job's credentials as Basic; the registry the token. */
    char *basic = z->step == STEP_TOKEN ? basic_auth(z->args) : NULL;
    if (basic)
        dmf_strlist_push(&h, basic);
    else if (z->auth)
        dmf_strlist_push(&h, z->auth);
    struct dmf_http_opts o = {.headers = &h, .follow_redirects = 1, .keep_all_headers = 1};
    z->req = dmf_http_get(z->res->http, url, &o, &ops, z);
    if (basic) {
        memset(basic, 0, strlen(basic));
        free(basic);
    }
    dmf_strlist_free(&h);
}

dmf_image_resolver_t *dmf_image_resolver_new(struct event_base *base)
{
    dmf_image_resolver_t *r = dmf_xcalloc(1, sizeof(*r));
    r->http = dmf_http_new(base);
    LIST_INIT(&r->all);
    return r;
}

void dmf_image_resolver_free(dmf_image_resolver_t *r)
{
    if (!r)
        return;
    while (!LIST_EMPTY(&r->all))
        resolve_free(LIST_FIRST(&r->all));
    dmf_http_free(r->http);
    free(r);
}

void dmf_image_resolve(dmf_image_resolver_t *r, json_t *args, dmf_image_cb cb, void *arg)
{
    struct resolve *z = dmf_xcalloc(1, sizeof(*z));
    z->res = r;
    z->args = args;
    z->cb = cb;
    z->arg = arg;
    z->layers = json_array();
    z->todo = json_array();
    LIST_INSERT_HEAD(&r->all, z, link);
    const char *url = json_string_value(json_array_get(json_object_get(args, "urls"), 0));
    if (!url || dmf_image_parse_url(url, z->base, sizeof(z->base), z->ref, sizeof(z->ref)) != 0) {
        finish(z, "an image preheat's url must be https://REGISTRY/v2/NAME/manifests/REFERENCE");
        return;
    }
    z->auth = NULL;
    z->step = STEP_TOP;
    fetch(z, url, true);
}
