/* Prometheus metrics: counters and gauges in static storage, registered once, rendered
 * in the text exposition format at /metrics. Updates are atomic (any thread). */
#ifndef DMF_METRICS_H
#define DMF_METRICS_H

#include <stdint.h>

struct evhttp_request;

struct dmf_metric {
    const char *name; /* e.g. "damselfly_download_bytes_total" */
    const char *type; /* "counter" or "gauge" */
    const char *help;
    const char *labels; /* e.g. "source=\"origin\"", or NULL */
    int64_t value;      /* accessed with __atomic builtins only */
    struct dmf_metric *next;
};

#define DMF_METRIC_COUNTER(var, mname, mlabels, mhelp)                                             \
    struct dmf_metric var = {.name = mname, .type = "counter", .help = mhelp, .labels = mlabels}
#define DMF_METRIC_GAUGE(var, mname, mlabels, mhelp)                                               \
    struct dmf_metric var = {.name = mname, .type = "gauge", .help = mhelp, .labels = mlabels}

/* Adds the metric to the registry (idempotent; call at startup). */
void dmf_metric_register(struct dmf_metric *m);
void dmf_metric_add(struct dmf_metric *m, int64_t delta);
void dmf_metric_set(struct dmf_metric *m, int64_t value);
int64_t dmf_metric_get(const struct dmf_metric *m);

/* Renders every registered metric; HELP and TYPE once per name, series with the same name
 * grouped. Returns a new string (caller frees). */
char *dmf_metrics_render(void);

/* An evhttp callback that answers GET /metrics with dmf_metrics_render(). */
void dmf_metrics_http_handler(struct evhttp_request *req, void *arg);

#endif
