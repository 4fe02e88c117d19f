/* Forward-proxy URL rules; see proxy_rules.h. */
#include "daemon/proxy/proxy_rules.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

#include "common/config.h"
#include "common/util.h"
#include "common/yaml_reader.h"

int dmf_proxy_rules_add(struct dmf_proxy_rules *r, const char *regex, bool p2p, char *err,
                        size_t errlen)
{
    if (r->n >= DMF_PROXY_RULES_MAX) {
        snprintf(err, errlen, "more than %d proxy rules", DMF_PROXY_RULES_MAX);
        return -EINVAL;
    }
    regex_t re;
    int e = regcomp(&re, regex, REG_EXTENDED | REG_NOSUB);
    if (e != 0) {
        char why[128];
        regerror(e, &re, why, sizeof(why));
        snprintf(err, errlen, "invalid regex '%.80s': %s", regex, why);
        return -EINVAL;
    }
    r->v = dmf_xrealloc(r->v, (r->n + 1) * sizeof(*r->v));
    struct dmf_proxy_rule *x = &r->v[r->n++];
    x->regex = dmf_xstrdup(regex);
    x->re = re;
    x->p2p = p2p;
    x->limit = 0;
    x->priority = DMF_PRIORITY_NORMAL;
    x->line = 0;
    return 0;
}

const struct dmf_proxy_rule *dmf_proxy_rules_find(const struct dmf_proxy_rules *r, const char *url)
{
    for (size_t i = 0; i < r->n; i++)
        if (regexec(&r->v[i].re, url, 0, NULL, 0) == 0)
            return &r->v[i];
    return NULL;
}

int dmf_proxy_rules_match(const struct dmf_proxy_rules *r, const char *url)
{
    const struct dmf_proxy_rule *x = dmf_proxy_rules_find(r, url);
    return x == NULL ? -1 : x->p2p ? 1 : 0;
}

void dmf_proxy_rules_free(struct dmf_proxy_rules *r)
{
    for (size_t i = 0; i < r->n; i++) {
        regfree(&r->v[i].re);
        free(r->v[i].regex);
    }
    free(r->v);
    r->v = NULL;
    r->n = 0;
}

/* ---- YAML ---- */

static int fail_at(struct dmf_yaml_reader *rd, const yaml_event_t *ev, const char *what)
{
    snprintf(rd->err, rd->errlen, "%s:%lu: %s", rd->path, dmf_yaml_line(ev->start_mark), what);
    return -EINVAL;
}

/* One rule: a mapping {regex: ..., p2p: ...}; the mapping-start event is consumed. */
static int read_rule(struct dmf_yaml_reader *rd, struct dmf_proxy_rules *r,
                     const yaml_event_t *start)
{
    char *regex = NULL;
    bool p2p = true, seen_p2p = false, seen_limit = false, seen_prio = false, seen_app = false;
    char app[DMF_APPLICATION_MAX + 1] = "";
    uint64_t limit = 0;
    enum dmf_priority prio = DMF_PRIORITY_NORMAL;
    int rc = 0;
    for (;;) {
        yaml_event_t k, v;
        if (dmf_yaml_next(rd, &k) != 0)
            return -EINVAL;
        if (k.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&k);
            break;
        }
        if (k.type != YAML_SCALAR_EVENT) {
            rc = fail_at(rd, &k,
                         "a rule's keys are 'regex', 'p2p', 'limit', 'priority' and 'application'");
            yaml_event_delete(&k);
            goto out;
        }
        if (dmf_yaml_next(rd, &v) != 0) {
            yaml_event_delete(&k);
            rc = -EINVAL;
            goto out;
        }
        const char *key = (const char *)k.data.scalar.value;
        if (v.type != YAML_SCALAR_EVENT) {
            rc = fail_at(rd, &v, "a rule's values are plain scalars");
        } else if (strcmp(key, "regex") == 0) {
            if (regex != NULL)
                rc = fail_at(rd, &k, "'regex' set twice");
            else if (strlen((const char *)v.data.scalar.value) != v.data.scalar.length ||
                     v.data.scalar.length > DMF_CONFIG_VALUE_MAX)
                rc = fail_at(rd, &v, "regex too long or contains a NUL byte");
            else
                regex = dmf_xstrdup((const char *)v.data.scalar.value);
        } else if (strcmp(key, "p2p") == 0) {
            if (seen_p2p || dmf_parse_bool((const char *)v.data.scalar.value, &p2p) != 0)
                rc = fail_at(rd, &v, "'p2p' must be true or false, once");
            seen_p2p = true;
        } else if (strcmp(key, "limit") == 0) {
            if (seen_limit || dmf_parse_size((const char *)v.data.scalar.value, &limit) != 0 ||
                (limit != 0 && limit < 64 * 1024))
                rc = fail_at(rd, &v, "'limit' must be a rate of at least 64k (bytes/s), once");
            seen_limit = true;
        } else if (strcmp(key, "priority") == 0) {
            if (seen_prio || dmf_priority_parse((const char *)v.data.scalar.value, &prio) != 0)
                rc = fail_at(rd, &v, "'priority' must be background, normal or foreground, once");
            seen_prio = true;
        } else if (strcmp(key, "application") == 0) {
            const char *val = (const char *)v.data.scalar.value;
            char why[160];
            if (seen_app || strlen(val) != v.data.scalar.length || val[0] == '\0') {
                rc = fail_at(rd, &v, "'application' must be a name, once");
            } else if (dmf_application_check(val, why, sizeof(why)) != 0) {
                rc = fail_at(rd, &v, why);
            } else {
                snprintf(app, sizeof(app), "%s", val);
            }
            seen_app = true;
        } else {
            char why[160];
            snprintf(
                why, sizeof(why),
                "unknown key '%.64s' in a proxy rule (regex, p2p, limit, priority, application)",
                key);
            rc = fail_at(rd, &k, why);
        }
        yaml_event_delete(&k);
        yaml_event_delete(&v);
        if (rc != 0)
            goto out;
    }
    if (regex == NULL) {
        rc = fail_at(rd, start, "a proxy rule needs a 'regex'");
        goto out;
    }
    char why[256];
    if (dmf_proxy_rules_add(r, regex, p2p, why, sizeof(why)) != 0) {
        rc = fail_at(rd, start, why);
        goto out;
    }
    r->v[r->n - 1].line = dmf_yaml_line(start->start_mark);
    r->v[r->n - 1].limit = limit;
    r->v[r->n - 1].priority = prio;
    memcpy(r->v[r->n - 1].application, app, sizeof(app));
out:
    free(regex);
    return rc;
}

static int read_rules(struct dmf_yaml_reader *rd, struct dmf_proxy_rules *r)
{
    yaml_event_t ev;
    if (dmf_yaml_next(rd, &ev) != 0)
        return -EINVAL;
    int rc = 0;
    if (ev.type == YAML_SCALAR_EVENT && ev.data.scalar.length == 0) {
        yaml_event_delete(&ev); /* "proxy-rules:" with nothing: no rules */
        return 0;
    }
    if (ev.type != YAML_SEQUENCE_START_EVENT) {
        rc = fail_at(rd, &ev, "proxy-rules must be a list of {regex, p2p} mappings");
        yaml_event_delete(&ev);
        return rc;
    }
    yaml_event_delete(&ev);
    for (;;) {
        if (dmf_yaml_next(rd, &ev) != 0)
            return -EINVAL;
        if (ev.type == YAML_SEQUENCE_END_EVENT)
            break;
        if (ev.type != YAML_MAPPING_START_EVENT) {
            rc = fail_at(rd, &ev, "each proxy rule is a mapping {regex: ..., p2p: ...}");
            break;
        }
        rc = read_rule(rd, r, &ev);
        if (rc != 0)
            break;
        yaml_event_delete(&ev);
    }
    yaml_event_delete(&ev);
    return rc;
}

int dmf_proxy_rules_load_yaml(struct dmf_proxy_rules *r, const char *path, const char *key,
                              char *err, size_t errlen)
{
    struct dmf_yaml_reader rd = {.path = path, .err = err, .errlen = errlen};
    struct stat st;
    FILE *f = fopen(path, "rb");
    if (f == NULL || fstat(fileno(f), &st) != 0 || st.st_size > DMF_CONFIG_FILE_MAX) {
        snprintf(err, errlen, "cannot read %s: %s", path,
                 f == NULL ? strerror(errno) : "too large or unreadable");
        if (f)
            fclose(f);
        return -EINVAL;
    }
    if (!yaml_parser_initialize(&rd.parser)) {
        fprintf(stderr, "damselfly: out of memory initialising the YAML parser\n");
        abort();
    }
    yaml_parser_set_input_file(&rd.parser, f);
    int rc = 0, depth = 0;
    bool expect_key = false;
    for (;;) {
        yaml_event_t ev;
        if (dmf_yaml_next(&rd, &ev) != 0) {
            rc = -EINVAL;
            break;
        }
        if (ev.type == YAML_STREAM_END_EVENT) {
            yaml_event_delete(&ev);
            break;
        }
        if (ev.type == YAML_MAPPING_START_EVENT && depth == 0) {
            depth = 1;
            expect_key = true;
        } else if (ev.type == YAML_MAPPING_END_EVENT && depth == 1) {
            depth = 0;
        } else if (depth == 1 && expect_key && ev.type == YAML_SCALAR_EVENT) {
            if (dmf_yaml_key_eq((const char *)ev.data.scalar.value, key)) {
                rc = read_rules(&rd, r);
            } else {
                yaml_event_t v;
                rc = dmf_yaml_next(&rd, &v);
                if (rc == 0)
                    rc = dmf_yaml_skip(&rd, &v);
                yaml_event_delete(&v);
            }
        }
        yaml_event_delete(&ev);
        if (rc != 0)
            break;
    }
    yaml_parser_delete(&rd.parser);
    fclose(f);
    return rc;
}
