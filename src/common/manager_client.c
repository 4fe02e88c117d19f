/* The components' side of the manager; see manager_client.h. */
#include "common/manager_client.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"

#define KEEPALIVE "/damselfly.v1.Manager/KeepAlive"
#define LIST      "/damselfly.v1.Manager/ListSchedulers"

struct dmf_manager_keepalive {
    struct event_base *base;
    dmf_rpc_t *rpc;
    struct dmf_strlist managers;
    size_t idx;
    Damselfly__V1__Component comp;
    dmf_manager_config_cb on_config;
    void *arg;
    dmf_rpc_channel_t *ch;
    dmf_rpc_call_t *call;
    struct event *ping, *retry;
    uint64_t ping_ms;
    bool answered; /* the current stream got an answer */
};

static void ka_connect(dmf_manager_keepalive_t *k);

/* A channel to a manager: with this process's TLS on (--tls-*), mutual TLS, and only a
 * server whose certificate's role is manager is accepted (the manager learns who is
 * registering; nobody else hears the registration or hands out schedulers). */
static dmf_rpc_channel_t *manager_channel(dmf_rpc_t *rpc, const char *target)
{
    struct dmf_tls_expect expect = {.role = DMF_TLS_ROLE_MANAGER, .host_id = NULL};
    return dmf_rpc_channel_new_member(rpc, target, &expect);
}

static void ka_close(dmf_manager_keepalive_t *k)
{
    if (k->call) {
        dmf_rpc_call_release(k->call);
        k->call = NULL;
    }
    if (k->ch) {
        dmf_rpc_channel_free(k->ch);
        k->ch = NULL;
    }
    evtimer_del(k->ping);
}

static void ka_on_message(void *arg, dmf_rpc_call_t *call, const uint8_t *data, size_t len)
{
    dmf_manager_keepalive_t *k = arg;
    if (!data)
        return;
    Damselfly__V1__KeepAliveResponse *r =
        damselfly__v1__keep_alive_response__unpack(NULL, len, data);
    if (!r)
        return;
    if (!k->answered)
        dmf_info("manager %s: registered (cluster %llu)", k->managers.v[k->idx],
                 (unsigned long long)r->cluster_id);
    k->answered = true;
    if (r->keepalive_timeout_ms >= 300) {
        uint64_t ms = r->keepalive_timeout_ms / 3;
        if (ms != k->ping_ms) {
            k->ping_ms = ms;
            struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
            evtimer_add(k->ping, &tv);
        }
    }
    if (k->on_config && r->config)
        k->on_config(k->arg, r->config);
    damselfly__v1__keep_alive_response__free_unpacked(r, NULL);
}

static void ka_on_end(void *arg, dmf_rpc_call_t *call, grpc_status_code st, const char *details)
{
    dmf_manager_keepalive_t *k = arg;
    dmf_warn("manager %s: keepalive stream ended (%d: %s); trying %s", k->managers.v[k->idx],
             (int)st, details ? details : "", k->managers.n > 1 ? "the next manager" : "again");
    ka_close(k);
    k->idx = (k->idx + 1) % k->managers.n;
    struct timeval sec = {1, 0};
    evtimer_add(k->retry, &sec);
}

static const struct dmf_rpc_call_handler ka_handler = {
    .on_message = ka_on_message,
    .on_end = ka_on_end,
};

static void on_ping(evutil_socket_t fd, short what, void *arg)
{
    dmf_manager_keepalive_t *k = arg;
    if (!k->call)
        return;
    Damselfly__V1__Ping ping = DAMSELFLY__V1__PING__INIT;
    Damselfly__V1__KeepAliveRequest req = DAMSELFLY__V1__KEEP_ALIVE_REQUEST__INIT;
    req.msg_case = DAMSELFLY__V1__KEEP_ALIVE_REQUEST__MSG_PING;
    req.ping = &ping;
    (void)dmf_rpc_call_send(k->call, &req.base);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    ka_connect(arg);
}

static void ka_connect(dmf_manager_keepalive_t *k)
{
    k->answered = false;
    k->ch = manager_channel(k->rpc, k->managers.v[k->idx]);
    k->call = dmf_rpc_call_start(k->ch, KEEPALIVE, 0, false);
    dmf_rpc_call_set_handler(k->call, &ka_handler, k);
    Damselfly__V1__KeepAliveRequest req = DAMSELFLY__V1__KEEP_ALIVE_REQUEST__INIT;
    req.msg_case = DAMSELFLY__V1__KEEP_ALIVE_REQUEST__MSG_REGISTER;
    req.register_ = &k->comp;
    (void)dmf_rpc_call_send(k->call, &req.base);
    struct timeval tv = {(time_t)(k->ping_ms / 1000), (suseconds_t)(k->ping_ms % 1000) * 1000};
    evtimer_add(k->ping, &tv);
}

dmf_manager_keepalive_t *dmf_manager_keepalive_new(struct event_base *base, dmf_rpc_t *rpc,
                                                   const struct dmf_strlist *managers,
                                                   const struct dmf_manager_component *c,
                                                   dmf_manager_config_cb on_config, void *arg)
{
    dmf_manager_keepalive_t *k = dmf_xcalloc(1, sizeof(*k));
    k->base = base;
    k->rpc = rpc;
    for (size_t i = 0; i < managers->n; i++)
        dmf_strlist_push(&k->managers, managers->v[i]);
    damselfly__v1__component__init(&k->comp);
    k->comp.type = c->seed ? DAMSELFLY__V1__COMPONENT_TYPE__COMPONENT_TYPE_SEED_PEER
                           : DAMSELFLY__V1__COMPONENT_TYPE__COMPONENT_TYPE_SCHEDULER;
    k->comp.hostname = dmf_xstrdup(c->hostname ? c->hostname : "");
    k->comp.ip = dmf_xstrdup(c->ip ? c->ip : "");
    k->comp.port = c->port;
    k->comp.piece_port = c->piece_port;
    k->comp.idc = dmf_xstrdup(c->idc ? c->idc : "");
    k->comp.location = dmf_xstrdup(c->location ? c->location : "");
    k->comp.cluster_id = c->cluster_id;
    k->on_config = on_config;
    k->arg = arg;
    k->ping_ms = 1000;
    k->ping = event_new(base, -1, EV_PERSIST, on_ping, k);
    k->retry = evtimer_new(base, on_retry, k);
    ka_connect(k);
    return k;
}

void dmf_manager_keepalive_free(dmf_manager_keepalive_t *k)
{
    if (!k)
        return;
    ka_close(k);
    event_free(k->ping);
    event_free(k->retry);
    free(k->comp.hostname);
    free(k->comp.ip);
    free(k->comp.idc);
    free(k->comp.location);
    dmf_strlist_free(&k->managers);
    free(k);
}

/* ---- ListSchedulers */

struct dmf_manager_list {
    dmf_rpc_t *rpc;
    struct dmf_strlist managers;
    size_t idx;
    ProtobufCMessage *msg; /* the request, sent to each manager in turn */
    uint64_t timeout_ms;
    dmf_manager_list_cb cb;
    void *arg;
    dmf_rpc_channel_t *ch;
    dmf_rpc_call_t *call;
    uint8_t *resp;
    size_t resp_len;
    bool have_resp;
    char err[512];
};

static void list_try(dmf_manager_list_t *l);

static void list_close(dmf_manager_list_t *l)
{
    if (l->call) {
        dmf_rpc_call_release(l->call);
        l->call = NULL;
    }
    if (l->ch) {
        dmf_rpc_channel_free(l->ch);
        l->ch = NULL;
    }
    free(l->resp);
    l->resp = NULL;
    l->have_resp = false;
}

static void list_free(dmf_manager_list_t *l)
{
    list_close(l);
    dmf_strlist_free(&l->managers);
    protobuf_c_message_free_unpacked(l->msg, NULL);
    free(l);
}

static void list_on_message(void *arg, dmf_rpc_call_t *call, const uint8_t *data, size_t len)
{
    dmf_manager_list_t *l = arg;
    if (!data || l->have_resp)
        return;
    l->resp = dmf_xmalloc(len ? len : 1);
    memcpy(l->resp, data, len);
    l->resp_len = len;
    l->have_resp = true;
}

static void list_on_end(void *arg, dmf_rpc_call_t *call, grpc_status_code st, const char *details)
{
    dmf_manager_list_t *l = arg;
    Damselfly__V1__ListSchedulersResponse *r =
        st == GRPC_STATUS_OK && l->have_resp
            ? damselfly__v1__list_schedulers_response__unpack(NULL, l->resp_len, l->resp)
            : NULL;
    if (r) {
        list_close(l);
        l->cb(l->arg, r, NULL);
        damselfly__v1__list_schedulers_response__free_unpacked(r, NULL);
        list_free(l);
        return;
    }
    size_t o = strlen(l->err);
    snprintf(l->err + o, sizeof(l->err) - o, "%s%s: %s", o ? "; " : "", l->managers.v[l->idx],
             st == GRPC_STATUS_OK  ? "malformed answer"
             : details && *details ? details
                                   : "failed");
    list_close(l);
    if (++l->idx < l->managers.n) {
        list_try(l);
        return;
    }
    l->cb(l->arg, NULL, l->err);
    list_free(l);
}

static const struct dmf_rpc_call_handler list_handler = {
    .on_message = list_on_message,
    .on_end = list_on_end,
};

static void list_try(dmf_manager_list_t *l)
{
    l->ch = manager_channel(l->rpc, l->managers.v[l->idx]);
    l->call = dmf_rpc_call_start(l->ch, LIST, l->timeout_ms, false);
    dmf_rpc_call_set_handler(l->call, &list_handler, l);
    dmf_rpc_call_send(l->call, l->msg);
    dmf_rpc_call_close_send(l->call);
}

dmf_manager_list_t *dmf_manager_list_schedulers(dmf_rpc_t *rpc, const struct dmf_strlist *managers,
                                                const Damselfly__V1__ListSchedulersRequest *req,
                                                uint64_t timeout_ms, dmf_manager_list_cb cb,
                                                void *arg)
{
    dmf_manager_list_t *l = dmf_xcalloc(1, sizeof(*l));
    l->rpc = rpc;
    for (size_t i = 0; i < managers->n; i++)
        dmf_strlist_push(&l->managers, managers->v[i]);
    size_t n = protobuf_c_message_get_packed_size(&req->base);
    uint8_t *buf = dmf_xmalloc(n ? n : 1);
    protobuf_c_message_pack(&req->base, buf);
    l->msg = protobuf_c_message_unpack(&damselfly__v1__list_schedulers_request__descriptor, NULL, n,
                                       buf);
    free(buf);
    l->timeout_ms = timeout_ms;
    l->cb = cb;
    l->arg = arg;
    if (l->managers.n == 0) {
        cb(arg, NULL, "no manager given");
        list_free(l);
        return NULL;
    }
    list_try(l);
    return l;
}

void dmf_manager_list_cancel(dmf_manager_list_t *l)
{
    if (l)
        list_free(l);
}
