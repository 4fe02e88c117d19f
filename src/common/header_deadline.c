/* Request-head deadline for evhttp servers; see header_deadline.h. */
#include "common/header_deadline.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "common/log.h"
#include "common/util.h"

#define BUCKETS 1024
#define REAP_MS 100 /* how soon a connection evhttp freed gives back its descriptor */

struct conn {
    struct bufferevent *bev;         /* one reference is ours */
    struct evbuffer_cb_entry *on_in; /* on the bufferevent's input: a head begins */
    uint64_t head_from_ms;           /* when the head being awaited began; 0: none */
    bool shut;                       /* shut down for a late head; waiting for evhttp to free it */
    struct conn *next;
};

struct dmf_header_deadline {
    struct event_base *base;
    struct event *sweep;
    uint64_t timeout_ms;
    const char *what;
    struct conn *buckets[BUCKETS];
    size_t nconns;
    uint64_t closed;
    dmf_header_deadline_make_cb make; /* or NULL: plain socket bufferevents */
    void *maker_arg;
};

bool dmf_header_deadline_late(uint64_t head_from_ms, uint64_t now_ms, uint64_t timeout_ms,
                              bool head_waiting)
{
    return head_from_ms != 0 && !head_waiting && now_ms >= head_from_ms &&
           now_ms - head_from_ms >= timeout_ms;
}

static size_t bucket_of(const struct bufferevent *bev)
{
    uintptr_t p = (uintptr_t)bev;
    return (size_t)((p >> 4) ^ (p >> 14)) % BUCKETS;
}

/* Bytes arrived on a connection with no head awaited: the next request's head begins. */
static bool freed_by_evhttp(struct bufferevent *bev);

static void on_input(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    struct conn *c = arg;
    if (info->n_added > 0 && freed_by_evhttp(c->bev)) {
        /* Nobody reads this connection any more: stop taking its bytes. */
        bufferevent_disable(c->bev, EV_READ | EV_WRITE);
        evbuffer_drain(buf, evbuffer_get_length(buf));
        return;
    }
    if (info->n_added > 0 && c->head_from_ms == 0)
        c->head_from_ms = dmf_now_ms();
}

/* evhttp_set_bevcb: the bufferevent of a new incoming connection (evhttp sets its fd). */
static struct bufferevent *on_new_connection(struct event_base *base, void *arg)
{
    dmf_header_deadline_t *hd = arg;
    /* The descriptor lives as long as the bufferevent (header_deadline.h: a stale read
     * event must never see its number reused). */
    struct bufferevent *bev = hd->make ? hd->make(base, hd->maker_arg) : NULL;
    if (bev == NULL)
        bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (bev == NULL)
        return NULL; /* evhttp makes its own (without a deadline) */
    bufferevent_incref(bev);
    struct conn *c = dmf_xcalloc(1, sizeof(*c));
    c->bev = bev;
    c->head_from_ms = dmf_now_ms(); /* the first head is due from accept */
    c->on_in = evbuffer_add_cb(bufferevent_get_input(bev), on_input, c);
    size_t b = bucket_of(bev);
    c->next = hd->buckets[b];
    hd->buckets[b] = c;
    hd->nconns++;
    return bev;
}

/* evhttp freed the connection: bufferevent_free cleared the callbacks it had set. */
static bool freed_by_evhttp(struct bufferevent *bev)
{
    bufferevent_data_cb r = NULL, w = NULL;
    bufferevent_event_cb e = NULL;
    bufferevent_getcb(bev, &r, &w, &e, NULL);
    return r == NULL && w == NULL && e == NULL;
}

/* A complete head sits in the input, not yet read by evhttp (it reads the next request
 * only once the response before it is sent): the client is not late. */
static bool head_waiting(struct bufferevent *bev)
{
    struct evbuffer *in = bufferevent_get_input(bev);
    return evbuffer_get_length(in) >= 4 && evbuffer_search(in, "\r\n\r\n", 4, NULL).pos >= 0;
}

static void conn_free(struct conn *c)
{
    if (c->on_in)
        evbuffer_remove_cb_entry(bufferevent_get_input(c->bev), c->on_in);
    bufferevent_decref(c->bev);
    free(c);
}

static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
    dmf_header_deadline_t *hd = arg;
    uint64_t now = dmf_now_ms();
    size_t late = 0;
    for (size_t b = 0; b < BUCKETS; b++) {
        struct conn **pp = &hd->buckets[b];
        while (*pp) {
            struct conn *c = *pp;
            if (freed_by_evhttp(c->bev)) {
                *pp = c->next;
                conn_free(c); /* the last reference: this closes the descriptor */
                hd->nconns--;
                continue;
            }
            if (!c->shut && c->head_from_ms != 0 &&
                dmf_header_deadline_late(c->head_from_ms, now, hd->timeout_ms,
                                         head_waiting(c->bev))) {
                evutil_socket_t s = bufferevent_getfd(c->bev);
                if (s >= 0)
                    shutdown(s, SHUT_RDWR);
                c->shut = true;
                late++;
            }
            pp = &c->next;
        }
    }
    if (late > 0) {
        hd->closed += late;
        dmf_info("%s: closed %zu connection(s) with no complete request head %llu ms after "
                 "it was due (accept, or its first byte on a keep-alive connection) "
                 "(%llu in all)",
                 hd->what, late, (unsigned long long)hd->timeout_ms,
                 (unsigned long long)hd->closed);
    }
}

static void arm(dmf_header_deadline_t *hd)
{
    /* Often enough to give back freed descriptors promptly; a late head is found within
     * REAP_MS of its deadline. */
    struct timeval tv = dmf_timeval_ms(REAP_MS);
    event_add(hd->sweep, &tv);
}

dmf_header_deadline_t *dmf_header_deadline_new(struct event_base *base, struct evhttp *http,
                                               uint64_t timeout_ms, const char *what)
{
    dmf_header_deadline_t *hd = dmf_xcalloc(1, sizeof(*hd));
    hd->base = base;
    hd->timeout_ms = timeout_ms ? timeout_ms : 10000;
    hd->what = what;
    hd->sweep = event_new(base, -1, EV_PERSIST, on_sweep, hd);
    arm(hd);
    evhttp_set_bevcb(http, on_new_connection, hd);
    return hd;
}

void dmf_header_deadline_set_maker(dmf_header_deadline_t *hd, dmf_header_deadline_make_cb make,
                                   void *arg)
{
    hd->make = make;
    hd->maker_arg = arg;
}

void dmf_header_deadline_set_timeout(dmf_header_deadline_t *hd, uint64_t timeout_ms)
{
    if (timeout_ms == 0)
        return;
    hd->timeout_ms = timeout_ms;
    event_del(hd->sweep);
    arm(hd);
}

void dmf_header_deadline_got_request(dmf_header_deadline_t *hd, struct evhttp_request *req)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
    if (bev == NULL)
        return;
    for (struct conn *c = hd->buckets[bucket_of(bev)]; c; c = c->next) {
        if (c->bev == bev) {
            c->head_from_ms = 0; /* met; the next head is due from its first byte */
            return;
        }
    }
}

uint64_t dmf_header_deadline_closed(const dmf_header_deadline_t *hd)
{
    return hd->closed;
}

void dmf_header_deadline_free(dmf_header_deadline_t *hd)
{
    if (hd == NULL)
        return;
    event_free(hd->sweep);
    for (size_t b = 0; b < BUCKETS; b++) {
        while (hd->buckets[b]) {
            struct conn *c = hd->buckets[b];
            hd->buckets[b] = c->next;
            conn_free(c);
        }
    }
    free(hd);
}
