/* The metrics registry: one list of caller-owned, statically allocated metrics, kept
 * grouped by name (a new series is inserted after the last one of the same name) so that
 * rendering is a single pass. Values are read with atomic loads; the list itself is only
 * walked or changed under registry_lock. */
#include "common/evx.h"
#include "common/metrics.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct dmf_metric *registry;

void dmf_metric_register(struct dmf_metric *m)
{
    pthread_mutex_lock(&registry_lock);
    struct dmf_metric **link = &registry, **after_same = NULL;
    for (struct dmf_metric *p = registry; p != NULL; p = p->next) {
        if (p == m)
            goto out; /* already registered */
        if (strcmp(p->name, m->name) == 0)
            after_same = &p->next;
        link = &p->next;
    }
    if (after_same != NULL)
        link = after_same;
    m->next = *link;
    *link = m;
out:
    pthread_mutex_unlock(&registry_lock);
}

void dmf_metric_add(struct dmf_metric *m, int64_t delta)
{
    __atomic_fetch_add(&m->value, delta, __ATOMIC_RELAXED);
}

void dmf_metric_set(struct dmf_metric *m, int64_t value)
{
    __atomic_store_n(&m->value, value, __ATOMIC_RELAXED);
}

int64_t dmf_metric_get(const struct dmf_metric *m)
{
    return __atomic_load_n(&m->value, __ATOMIC_RELAXED);
}

/* A string under construction; grows by doubling (the registry bounds its size). */
struct strbuf {
    char *p;
    size_t len, cap;
};

static void sb_append(struct strbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        while (b->len + n + 1 > b->cap)
            b->cap = b->cap ? b->cap * 2 : 1024;
        b->p = dmf_xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_puts(struct strbuf *b, const char *s)
{
    sb_append(b, s, strlen(s));
}

/* HELP text escapes backslash and newline (text exposition format 0.0.4). */
static void sb_help(struct strbuf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\')
            sb_puts(b, "\\\\");
        else if (*s == '\n')
            sb_puts(b, "\\n");
        else
            sb_append(b, s, 1);
    }
}

char *dmf_metrics_render(void)
{
    struct strbuf b = {0};
    char num[32];

    sb_puts(&b, ""); /* an empty registry renders as "" */
    pthread_mutex_lock(&registry_lock);
    const char *prev = NULL;
    for (const struct dmf_metric *m = registry; m != NULL; m = m->next) {
        if (prev == NULL || strcmp(prev, m->name) != 0) {
            sb_puts(&b, "# HELP ");
            sb_puts(&b, m->name);
            sb_puts(&b, " ");
            sb_help(&b, m->help != NULL ? m->help : "");
            sb_puts(&b, "\n# TYPE ");
            sb_puts(&b, m->name);
            sb_puts(&b, " ");
            sb_puts(&b, m->type);
            sb_puts(&b, "\n");
            prev = m->name;
        }
        sb_puts(&b, m->name);
        if (m->labels != NULL && m->labels[0] != '\0') {
            sb_puts(&b, "{");
            sb_puts(&b, m->labels);
            sb_puts(&b, "}");
        }
        snprintf(num, sizeof(num), " %" PRId64 "\n", dmf_metric_get(m));
        sb_puts(&b, num);
    }
    pthread_mutex_unlock(&registry_lock);
    return b.p;
}

void dmf_metrics_http_handler(struct evhttp_request *req, void *arg)
{
    struct evkeyvalq *headers = evhttp_request_get_output_headers(req);
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);

    if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
        evhttp_add_header(headers, "Allow", "GET, HEAD");
        evhttp_send_error(req, 405, "Method Not Allowed");
        return;
    }
    char *text = dmf_metrics_render();
    struct evbuffer *body = dmf_xevbuffer_new();
    evbuffer_add(body, text, strlen(text));
    free(text);
    evhttp_add_header(headers, "Content-Type", "text/plain; version=0.0.4");
    evhttp_send_reply(req, 200, "OK", body);
    evbuffer_free(body);
}
