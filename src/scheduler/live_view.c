/* The scheduler's live view; see live_view.h. */
#include "scheduler/live_view.h"

#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "damselfly/v1/manager.pb-c.h"
#include "scheduler/sched_state.h"

#define METHOD "/damselfly.v1.SchedulerView/ListLive"

struct collect {
    size_t max_hosts;
    size_t hosts, peers;
    Damselfly__V1__LiveHost *hv;
    Damselfly__V1__LiveHost **hp;
    Damselfly__V1__LivePeer *pv;
    Damselfly__V1__LivePeer **pp;
    uint64_t now;
};

static bool count_host(void *arg, const struct dmf_sched_host *h)
{
    struct collect *c = arg;
    c->hosts++;
    const dmf_scheduler_peer_t *p;
    LIST_FOREACH(p, &h->peers, in_host) c->peers++;
    return true;
}

static bool add_host(void *arg, const struct dmf_sched_host *h)
{
    struct collect *c = arg;
    if (c->hosts >= c->max_hosts)
        return false;
    Damselfly__V1__LiveHost *o = &c->hv[c->hosts];
    damselfly__v1__live_host__init(o);
    o->id = h->id;
    o->hostname = h->hostname ? h->hostname : "";
    o->ip = h->ip ? h->ip : "";
    o->seed = dmf_sched_host_is_seed(h);
    o->idc = h->idc ? h->idc : "";
    o->location = h->location ? h->location : "";
    o->upload_capacity = h->upload_capacity;
    o->upload_rate = h->upload_rate;
    o->active_uploads = h->active_uploads;
    o->last_seen_ms_ago = c->now > h->last_seen ? c->now - h->last_seen : 0;
    o->peers = &c->pp[c->peers];
    const dmf_scheduler_peer_t *p;
    LIST_FOREACH(p, &h->peers, in_host)
    {
        if (c->peers >= DMF_LIVE_MAX_PEERS)
            break;
        Damselfly__V1__LivePeer *q = &c->pv[c->peers];
        damselfly__v1__live_peer__init(q);
        q->task_id = (char *)p->task->id;
        q->peer_id = p->peer_id ? p->peer_id : "";
        q->state = (char *)dmf_scheduler_peer_state_name(p->state);
        q->held_pieces = dmf_sched_peer_held(p);
        q->total_pieces = p->task->total_pieces;
        q->content_length = p->task->content_length;
        q->url = p->task->url ? p->task->url : "";
        q->application = p->application ? p->application : "";
        q->bytes_from_parents = p->bytes_from_parents;
        q->bytes_from_origin = p->bytes_from_origin;
        o->bytes_from_parents += p->bytes_from_parents;
        o->bytes_from_origin += p->bytes_from_origin;
        c->pp[c->peers++] = q;
        o->n_peers++;
    }
    c->hp[c->hosts++] = o;
    return true;
}

static void on_message(void *arg, dmf_rpc_call_t *call, const uint8_t *data, size_t len)
{
    dmf_scheduler_t *s = arg;
    if (!data)
        return;
    Damselfly__V1__ListLiveRequest *req = damselfly__v1__list_live_request__unpack(NULL, len, data);
    if (!req) {
        dmf_rpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "malformed ListLiveRequest");
        return;
    }
    struct collect c = {.max_hosts = req->max_hosts ? req->max_hosts : DMF_LIVE_DEFAULT_HOSTS};
    damselfly__v1__list_live_request__free_unpacked(req, NULL);
    if (c.max_hosts > DMF_LIVE_MAX_HOSTS)
        c.max_hosts = DMF_LIVE_MAX_HOSTS;
    dmf_scheduler_each_host(s, count_host, &c);
    struct dmf_scheduler_counts counts;
    dmf_scheduler_counts(s, &counts);
    size_t nh = DMF_MIN(c.hosts, c.max_hosts), np = DMF_MIN(c.peers, (size_t)DMF_LIVE_MAX_PEERS);
    c.hv = dmf_xcalloc(nh + 1, sizeof(*c.hv));
    c.hp = dmf_xcalloc(nh + 1, sizeof(*c.hp));
    c.pv = dmf_xcalloc(np + 1, sizeof(*c.pv));
    c.pp = dmf_xcalloc(np + 1, sizeof(*c.pp));
    c.hosts = c.peers = 0;
    c.now = dmf_now_ms();
    dmf_scheduler_each_host(s, add_host, &c);
    Damselfly__V1__ListLiveResponse resp = DAMSELFLY__V1__LIST_LIVE_RESPONSE__INIT;
    resp.hosts = c.hp;
    resp.n_hosts = c.hosts;
    resp.total_hosts = (uint32_t)counts.hosts;
    resp.total_tasks = (uint32_t)counts.tasks;
    resp.total_peers = (uint32_t)counts.peers;
    dmf_rpc_call_send(call, &resp.base);
    dmf_rpc_call_finish(call, GRPC_STATUS_OK, NULL);
    free(c.hv);
    free(c.hp);
    free(c.pv);
    free(c.pp);
}

static void on_end(void *arg, dmf_rpc_call_t *call, grpc_status_code st, const char *details)
{
    dmf_rpc_call_release(call);
}

static const struct dmf_rpc_call_handler handler = {
    .on_message = on_message,
    .on_end = on_end,
};

bool dmf_scheduler_live_on_call(dmf_scheduler_t *s, dmf_rpc_call_t *call, const char *method)
{
    if (strcmp(method, METHOD) != 0)
        return false;
    dmf_rpc_call_set_handler(call, &handler, s);
    return true;
}
