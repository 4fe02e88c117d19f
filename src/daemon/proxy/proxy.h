/* The daemon's HTTP proxy (default port 65001): one listener that serves, at once,
 *
 *   - registry-mirror requests (origin-form "/v2/..."): forwarded to the upstream registry
 *     (see registry.h); `GET /v2/<name>/blobs/sha256:<hex>` goes through P2P as the task of
 *     that digest, after a HEAD to the registry with the client's own headers proves the
 *     client may read the blob;
 *   - forward-proxy requests (absolute-form "http://host/path"): the URL rules
 *     (proxy_rules.h) decide which GETs go through P2P; the rest pass through;
 *   - CONNECT host:port: a byte-for-byte tunnel, or, for hosts listed for interception,
 *     TLS terminated with a leaf certificate from the operator's CA (proxy_tls.h) and the
 *     requests inside handled like forward-proxy requests to https://host:port.
 *
 * P2P responses start once the first piece is verified and continue in order from the
 * task's data file; the last piece is held back until the task is SUCCEEDED (with a
 * digest: the whole content verified), and a task that fails after bytes were sent aborts
 * the connection, so a client never receives a complete wrong body. A P2P task that fails
 * before any byte was sent falls back to fetching from the origin directly (a blob's
 * digest is still checked on that path, holding back the tail). Contract, threat model and
 * state machine: docs/internals/PROXY.md. Everything runs on the daemon's loop thread. */
#ifndef DMF_PROXY_H
#define DMF_PROXY_H

#include <stddef.h>
#include <stdint.h>

#include "common/metrics.h"
#include "daemon/daemon.h"
#include "daemon/proxy/proxy_rules.h"

#define DMF_PROXY_BODY_MAX   (16u << 20)  /* request body buffered for pass-through */
#define DMF_PROXY_OUT_HIGH   (1u << 20)   /* client output above this: stop producing */
#define DMF_PROXY_INPUT_HIGH (256u << 10) /* client input read ahead at most */
#define DMF_PROXY_CONNS_MAX  4096
/* The request header naming a request's application (application.h; Dragonfly's proxy
 * reads the same), removed before a request goes to the origin. */
#define DMF_PROXY_APPLICATION_HEADER "x-dragonfly-application"
#define DMF_PROXY_HOLD_BACK          (64u << 10) /* tail kept until a direct blob is verified */

typedef struct dmf_proxy dmf_proxy_t;

/* Starts the proxy on listen ("ADDR:PORT"; port 0 = any) with the daemon's settings
 * (registry mirror and map, intercepted hosts, CA files, origin CA). Takes ownership of
 * *rules (emptied). Returns NULL with a reason in err ("cannot listen on ...", "cannot
 * load the proxy CA: ..."). */
dmf_proxy_t *dmf_proxy_new(struct dmf_daemon *d, const char *listen, struct dmf_proxy_rules *rules,
                           char *err, size_t errlen);
uint16_t dmf_proxy_port(const dmf_proxy_t *p);
/* Closes every connection (their tasks go on) and the listener. */
void dmf_proxy_free(dmf_proxy_t *p);

/* Registers the proxy's metrics (call once at start). */
void dmf_proxy_metrics_register(void);

#endif
