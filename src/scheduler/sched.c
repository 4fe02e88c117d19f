/* The scheduler's state and decisions; see sched.h and docs/internals/SCHEDULER.md. */
#include "scheduler/sched.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "common/log.h"
#include "common/pieces.h"
#include "common/taskid.h"
#include "common/util.h"
#include "scheduler/strmap.h"

#define UNREACHABLE_RING    8  /* recent unreachable reports remembered per host */
#define BLOCKED_MAX         16 /* parent hosts a peer asked not to be offered again */
#define SEED_FALLBACK_BELOW 2  /* a seed parent only for peers with fewer normal parents */

#define PEER_KEY_LEN (DMF_TASK_ID_LEN + DMF_SCHED_ID_MAX + 1)

struct host {
    char *id;
    char *hostname;
    char *ip;
    char *idc;
    char *location;
    uint32_t piece_port;
    uint32_t rpc_port;
    int type;
    uint64_t upload_capacity;
    uint64_t upload_rate;
    uint32_t active_uploads;
    uint64_t last_seen;
    uint32_t bad_reports;
    uint64_t last_bad_at;
    uint32_t unreachable_reports;
    uint64_t unreachable_at[UNREACHABLE_RING]; /* ring, indexed by count % size */
    bool leaving;                              /* being removed: offer nothing on it */
    LIST_HEAD(, dmf_scheduler_peer) peers;
    TAILQ_ENTRY(host) by_seen; /* oldest announce first */
    LIST_ENTRY(host) seeds;    /* on the seed list when type is seed */
};

struct header {
    char *name;
    char *value;
};

struct task {
    char id[DMF_TASK_ID_LEN + 1];
    /* The latest registrant's request, kept to trigger a seed; headers never logged. */
    char *url;
    struct header *headers;
    size_t nheaders;
    char *tag;
    char *digest;
    char **filter_query;
    size_t nfilter_query;

    int64_t content_length; /* -1 unknown */
    uint32_t piece_length;  /* 0 unknown */
    uint32_t total_pieces;  /* valid when content_length >= 0 */

    /* Piece digests in arrival order, and where each piece's digest sits (index + 1). */
    struct dmf_scheduler_digest *digests;
    size_t ndigests, digests_cap;
    uint32_t *digest_at;
    uint32_t digest_at_len;

    bool seed_failed; /* a seed trigger failed: ask none again for this task */
    size_t npeers;
    TAILQ_HEAD(, dmf_scheduler_peer) peers;
    TAILQ_ENTRY(task) link;
};

/* child -> parent in a task's parent graph (a DAG). */
struct edge {
    struct dmf_scheduler_peer *child, *parent;
    LIST_ENTRY(edge) in_child;
    LIST_ENTRY(edge) in_parent;
};

struct dmf_scheduler_peer {
    char key[PEER_KEY_LEN + 1]; /* task id then host id: the peer table's key */
    char *peer_id;
    struct task *task;
    struct host *host;
    enum dmf_scheduler_peer_state state;
    uint32_t held_base;  /* pieces held at register (a resumed download) */
    dmf_bitmap_t held;   /* pieces reported since */
    bool placeholder;    /* a seed asked to fetch; no stream has taken it over yet */
    bool triggered_seed; /* this peer exists because the scheduler triggered a seed */
    uint64_t trigger_id;
    void *stream;     /* the service's stream, or NULL when detached */
    size_t meta_sent; /* task digests already sent on the stream */
    char *blocked[BLOCKED_MAX];
    size_t nblocked;
    uint64_t mark;     /* traversal epoch */
    uint32_t nparents; /* parents in use (pushed candidates add up) */
    uint32_t nchildren;
    LIST_HEAD(, edge) parents;
    LIST_HEAD(, edge) children;
    TAILQ_ENTRY(dmf_scheduler_peer) in_task;
    LIST_ENTRY(dmf_scheduler_peer) in_host;
};

struct dmf_scheduler {
    struct dmf_scheduler_config cfg;
    struct dmf_scheduler_sink sink;
    void *sink_arg;
    dmf_strmap_t hosts; /* id -> struct host */
    dmf_strmap_t tasks; /* id -> struct task */
    dmf_strmap_t peers; /* task id + host id -> peer */
    TAILQ_HEAD(, host) hosts_by_seen;
    LIST_HEAD(, host) seeds;
    TAILQ_HEAD(, task) all_tasks;
    size_t nhosts, ntasks, npeers;
    uint64_t epoch;
    uint64_t next_trigger_id;
    dmf_scheduler_peer_t **scratch; /* traversal stack */
    size_t scratch_cap;
};

static const char *const state_names[] = {"PENDING", "RUNNING", "BACK_TO_SOURCE", "SUCCEEDED",
                                          "FAILED"};

const char *dmf_scheduler_peer_state_name(enum dmf_scheduler_peer_state st)
{
    return (unsigned)st < DMF_ARRAY_SIZE(state_names) ? state_names[st] : "?";
}

static uint64_t now_ms(const dmf_scheduler_t *s)
{
    return s->cfg.now ? s->cfg.now(s->cfg.now_arg) : dmf_now_ms();
}

static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (err && errlen)
        vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return code;
}

/* ------------------------------------------------------------ input checks */

/* An identifier: 1..max bytes of printable ASCII without spaces (it goes into logs). */
static int check_id(const char *what, const char *v, size_t max, char *err, size_t errlen)
{
    size_t n = v ? strlen(v) : 0;
    if (n == 0)
        return fail(err, errlen, -EINVAL, "%s is empty", what);
    if (n > max)
        return fail(err, errlen, -EINVAL, "%s is longer than %zu bytes", what, max);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)v[i] <= 0x20 || (unsigned char)v[i] >= 0x7f)
            return fail(err, errlen, -EINVAL, "%s contains a space or a non-printable byte", what);
    return 0;
}

/* Free text: 0..max bytes, no control characters. */
static int check_text(const char *what, const char *v, size_t max, char *err, size_t errlen)
{
    size_t n = v ? strlen(v) : 0;
    if (n > max)
        return fail(err, errlen, -EINVAL, "%s is longer than %zu bytes", what, max);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)v[i] < 0x20 || v[i] == 0x7f)
            return fail(err, errlen, -EINVAL, "%s contains a control character", what);
    return 0;
}

static int check_task_id(const char *id, char *err, size_t errlen)
{
    if (id == NULL || !dmf_task_id_valid(id))
        return fail(err, errlen, -EINVAL, "task_id must be 64 lower-case hex digits");
    return 0;
}

static int check_host_info(const dmf_scheduler_t *s, const struct dmf_scheduler_host_info *h,
                           char *err, size_t errlen)
{
    int rc;
    if ((rc = check_id("host id", h->id, DMF_SCHED_ID_MAX, err, errlen)) != 0 ||
        (rc = check_text("hostname", h->hostname, DMF_SCHED_HOSTNAME_MAX, err, errlen)) != 0 ||
        (rc = check_text("idc", h->idc, DMF_SCHED_ID_MAX, err, errlen)) != 0 ||
        (rc = check_text("location", h->location, DMF_SCHED_LOCATION_MAX, err, errlen)) != 0)
        return rc;
    unsigned char addr[16];
    if (h->ip == NULL || strlen(h->ip) > 64 ||
        (inet_pton(AF_INET, h->ip, addr) != 1 && inet_pton(AF_INET6, h->ip, addr) != 1))
        return fail(err, errlen, -EINVAL, "host %s: ip is not an IPv4 or IPv6 address", h->id);
    if (h->piece_port == 0 || h->piece_port > 65535)
        return fail(err, errlen, -EINVAL, "host %s: piece_port %u is not in 1..65535", h->id,
                    h->piece_port);
    if (h->rpc_port > 65535)
        return fail(err, errlen, -EINVAL, "host %s: rpc_port %u is not in 0..65535", h->id,
                    h->rpc_port);
    if (h->type != DMF_SCHED_HOST_NORMAL && h->type != DMF_SCHED_HOST_SEED)
        return fail(err, errlen, -EINVAL, "host %s: unknown host type %d", h->id, h->type);
    if (h->type == DMF_SCHED_HOST_SEED && h->rpc_port == 0)
        return fail(err, errlen, -EINVAL, "seed host %s needs an rpc_port", h->id);
    return 0;
}

static int check_register(const struct dmf_scheduler_register *r, char *err, size_t errlen)
{
    int rc;
    if ((rc = check_task_id(r->task_id, err, errlen)) != 0 ||
        (rc = check_id("peer_id", r->peer_id, DMF_SCHED_ID_MAX, err, errlen)) != 0 ||
        (rc = check_id("host_id", r->host_id, DMF_SCHED_ID_MAX, err, errlen)) != 0 ||
        (rc = check_text("tag", r->tag, DMF_SCHED_TAG_MAX, err, errlen)) != 0)
        return rc;
    /* The URL may carry signed-query secrets: it is checked, never echoed. */
    size_t ul = r->url ? strlen(r->url) : 0;
    if (ul == 0)
        return fail(err, errlen, -EINVAL, "url is empty");
    if (ul > DMF_SCHED_URL_MAX)
        return fail(err, errlen, -EINVAL, "url is longer than %u bytes", DMF_SCHED_URL_MAX);
    if ((rc = check_text("url", r->url, DMF_SCHED_URL_MAX, err, errlen)) != 0)
        return rc;
    if (r->nheaders > DMF_SCHED_HEADERS_MAX)
        return fail(err, errlen, -EINVAL, "more than %u headers", DMF_SCHED_HEADERS_MAX);
    for (size_t i = 0; i < r->nheaders; i++) {
        const char *n = r->headers[i].name ? r->headers[i].name : "";
        const char *v = r->headers[i].value ? r->headers[i].value : "";
        if (*n == '\0')
            return fail(err, errlen, -EINVAL, "header %zu has an empty name", i);
        if (strlen(n) + strlen(v) > DMF_SCHED_HEADER_MAX)
            return fail(err, errlen, -EINVAL, "header %zu is longer than %u bytes", i,
                        DMF_SCHED_HEADER_MAX);
        if (strpbrk(n, "\r\n:") != NULL || strpbrk(v, "\r\n") != NULL)
            return fail(err, errlen, -EINVAL, "header %zu contains CR, LF or ':' in its name", i);
    }
    if (r->nfilter_query > DMF_SCHED_FILTERS_MAX)
        return fail(err, errlen, -EINVAL, "more than %u filter_query entries",
                    DMF_SCHED_FILTERS_MAX);
    for (size_t i = 0; i < r->nfilter_query; i++)
        if ((rc = check_text("filter_query entry", r->filter_query[i], DMF_SCHED_FILTER_MAX, err,
                             errlen)) != 0)
            return rc;
    if (r->digest && *r->digest) {
        uint8_t d[DMF_SHA256_LEN];
        char why[128];
        if (dmf_digest_parse(r->digest, d, why, sizeof(why)) != 0)
            return fail(err, errlen, -EINVAL, "digest: %s", why);
    }
    if (r->held_pieces > DMF_PIECES_MAX)
        return fail(err, errlen, -EINVAL, "held_pieces %u is more than %u", r->held_pieces,
                    DMF_PIECES_MAX);
    return 0;
}

/* ------------------------------------------------------------ hosts */

static struct host *host_get(const dmf_scheduler_t *s, const char *id)
{
    return dmf_strmap_get(&s->hosts, id);
}

static void host_free(struct host *h)
{
    free(h->id);
    free(h->hostname);
    free(h->ip);
    free(h->idc);
    free(h->location);
    free(h);
}

static uint32_t host_recent_unreachable(const struct host *h, uint64_t now)
{
    uint32_t n = 0;
    uint32_t kept = DMF_MIN(h->unreachable_reports, (uint32_t)UNREACHABLE_RING);
    for (uint32_t i = 0; i < kept; i++)
        if (now - h->unreachable_at[i] < DMF_SCHED_UNREACHABLE_WIN)
            n++;
    return n;
}

static bool host_excluded(const dmf_scheduler_t *s, const struct host *h)
{
    return h->leaving || h->bad_reports >= s->cfg.bad_parent_threshold;
}

static void replace_str(char **dst, const char *src)
{
    free(*dst);
    *dst = dmf_xstrdup(src ? src : "");
}

int dmf_scheduler_announce_host(dmf_scheduler_t *s, const struct dmf_scheduler_host_info *in,
                                char *err, size_t errlen)
{
    int rc = check_host_info(s, in, err, errlen);
    if (rc != 0)
        return rc;
    struct host *h = host_get(s, in->id);
    if (h == NULL) {
        if (s->nhosts >= s->cfg.max_hosts)
            return fail(err, errlen, -ENOSPC, "too many hosts (%zu): host %s refused",
                        s->cfg.max_hosts, in->id);
        h = dmf_xcalloc(1, sizeof(*h));
        h->id = dmf_xstrdup(in->id);
        LIST_INIT(&h->peers);
        h->type = DMF_SCHED_HOST_NORMAL;
        dmf_strmap_put(&s->hosts, h->id, h);
        s->nhosts++;
        dmf_info("host %s (%s) announced: %s piece port %u%s", in->id,
                 in->hostname ? in->hostname : "", in->ip, in->piece_port,
                 in->type == DMF_SCHED_HOST_SEED ? ", seed" : "");
    } else {
        TAILQ_REMOVE(&s->hosts_by_seen, h, by_seen);
    }
    replace_str(&h->hostname, in->hostname);
    replace_str(&h->ip, in->ip);
    replace_str(&h->idc, in->idc);
    replace_str(&h->location, in->location);
    h->piece_port = in->piece_port;
    h->rpc_port = in->rpc_port;
    if (h->type != in->type) {
        if (in->type == DMF_SCHED_HOST_SEED)
            LIST_INSERT_HEAD(&s->seeds, h, seeds);
        else
            LIST_REMOVE(h, seeds);
        h->type = in->type;
    }
    h->upload_capacity = in->upload_capacity;
    h->upload_rate = in->upload_rate;
    h->active_uploads = in->active_uploads;
    h->last_seen = now_ms(s);
    TAILQ_INSERT_TAIL(&s->hosts_by_seen, h, by_seen);
    return 0;
}

/* ------------------------------------------------------------ tasks */

static void task_clear_request(struct task *t)
{
    free(t->url);
    for (size_t i = 0; i < t->nheaders; i++) {
        free(t->headers[i].name);
        /* Credentials do not linger in freed memory. */
        explicit_bzero(t->headers[i].value, strlen(t->headers[i].value));
        free(t->headers[i].value);
    }
    free(t->headers);
    free(t->tag);
    free(t->digest);
    for (size_t i = 0; i < t->nfilter_query; i++)
        free(t->filter_query[i]);
    free(t->filter_query);
    t->url = NULL;
    t->headers = NULL;
    t->nheaders = 0;
    t->tag = t->digest = NULL;
    t->filter_query = NULL;
    t->nfilter_query = 0;
}

static void task_set_request(struct task *t, const struct dmf_scheduler_register *r)
{
    task_clear_request(t);
    t->url = dmf_xstrdup(r->url);
    t->headers = dmf_xcalloc(r->nheaders, sizeof(*t->headers));
    for (size_t i = 0; i < r->nheaders; i++) {
        t->headers[i].name = dmf_xstrdup(r->headers[i].name);
        t->headers[i].value = dmf_xstrdup(r->headers[i].value ? r->headers[i].value : "");
    }
    t->nheaders = r->nheaders;
    t->tag = dmf_xstrdup(r->tag ? r->tag : "");
    t->digest = dmf_xstrdup(r->digest ? r->digest : "");
    t->filter_query = dmf_xcalloc(r->nfilter_query, sizeof(char *));
    for (size_t i = 0; i < r->nfilter_query; i++)
        t->filter_query[i] = dmf_xstrdup(r->filter_query[i]);
    t->nfilter_query = r->nfilter_query;
}

static struct task *task_new(dmf_scheduler_t *s, const char *id)
{
    struct task *t = dmf_xcalloc(1, sizeof(*t));
    memcpy(t->id, id, DMF_TASK_ID_LEN);
    t->content_length = -1;
    TAILQ_INIT(&t->peers);
    dmf_strmap_put(&s->tasks, t->id, t);
    TAILQ_INSERT_TAIL(&s->all_tasks, t, link);
    s->ntasks++;
    return t;
}

static void task_free(struct task *t)
{
    task_clear_request(t);
    free(t->digests);
    free(t->digest_at);
    free(t);
}

static void task_remove(dmf_scheduler_t *s, struct task *t)
{
    dmf_strmap_del(&s->tasks, t->id);
    TAILQ_REMOVE(&s->all_tasks, t, link);
    s->ntasks--;
    dmf_debug("task %s: no peers left, forgotten", t->id);
    task_free(t);
}

static void task_meta(const struct task *t, size_t from, struct dmf_scheduler_meta *m)
{
    m->task_id = t->id;
    m->content_length = t->content_length;
    m->piece_length = t->piece_length;
    m->total_pieces = t->content_length >= 0 ? t->total_pieces : 0;
    m->digests = from < t->ndigests ? t->digests + from : NULL;
    m->ndigests = from < t->ndigests ? t->ndigests - from : 0;
}

/* The stored digest of piece n, or NULL. */
static const struct dmf_scheduler_digest *task_digest(const struct task *t, uint32_t n)
{
    if (n >= t->digest_at_len || t->digest_at[n] == 0)
        return NULL;
    return &t->digests[t->digest_at[n] - 1];
}

static void task_add_digest(struct task *t, const struct dmf_scheduler_digest *d)
{
    if (d->number >= t->digest_at_len) {
        uint32_t len = t->digest_at_len ? t->digest_at_len : 64;
        while (len <= d->number)
            len = len > DMF_PIECES_MAX / 2 ? DMF_PIECES_MAX : len * 2;
        t->digest_at = dmf_xrealloc(t->digest_at, len * sizeof(*t->digest_at));
        memset(t->digest_at + t->digest_at_len, 0,
               (len - t->digest_at_len) * sizeof(*t->digest_at));
        t->digest_at_len = len;
    }
    if (t->ndigests == t->digests_cap) {
        t->digests_cap = t->digests_cap ? t->digests_cap * 2 : 64;
        t->digests = dmf_xrealloc(t->digests, t->digests_cap * sizeof(*t->digests));
    }
    t->digests[t->ndigests++] = *d;
    t->digest_at[d->number] = (uint32_t)t->ndigests;
}

/* A task's layout: content_length -1 and piece_length 0 while unknown; total_pieces is
 * valid when content_length >= 0. */
struct layout {
    int64_t content_length;
    uint32_t piece_length;
    uint32_t total_pieces;
};

static struct layout task_layout(const struct task *t)
{
    return (struct layout){t->content_length, t->piece_length, t->total_pieces};
}

/* Merges a report into the task's layout, into *out: content_length -1 and piece_length 0
 * mean "not said"; total (UINT32_MAX for "not said") comes only with PeerFinished. The
 * layout is checked with dmf_piece_layout_check once length and piece length are known. */
static int layout_merge(const struct layout *cur, int64_t cl, uint32_t pl, uint32_t total,
                        struct layout *out, char *err, size_t errlen)
{
    struct layout n = *cur;

    if (cl < -1)
        return fail(err, errlen, -EINVAL, "content_length %lld is negative", (long long)cl);
    if (pl != 0) {
        if (pl < DMF_PIECE_LENGTH_MIN || pl > DMF_PIECE_LENGTH_MAX)
            return fail(err, errlen, -EINVAL, "piece_length %u is not in [%u, %u]", pl,
                        DMF_PIECE_LENGTH_MIN, DMF_PIECE_LENGTH_MAX);
        if (n.piece_length != 0 && n.piece_length != pl)
            return fail(err, errlen, -EINVAL, "piece_length %u conflicts with the task's %u", pl,
                        n.piece_length);
        n.piece_length = pl;
    }
    if (cl >= 0) {
        if (n.content_length >= 0 && n.content_length != cl)
            return fail(err, errlen, -EINVAL, "content_length %lld conflicts with the task's %lld",
                        (long long)cl, (long long)n.content_length);
        n.content_length = cl;
    }
    if (n.content_length == 0) {
        n.total_pieces = 0;
    } else if (n.content_length > 0 && n.piece_length != 0) {
        n.total_pieces = dmf_piece_count(n.content_length, n.piece_length);
        if (dmf_piece_layout_check(n.content_length, n.piece_length, n.total_pieces) != 0)
            return fail(err, errlen, -EINVAL,
                        "content_length %lld with piece_length %u is not a valid layout "
                        "(at most %u pieces)",
                        (long long)n.content_length, n.piece_length, DMF_PIECES_MAX);
        if (cur->content_length > 0 && cur->piece_length == 0 &&
            n.total_pieces != cur->total_pieces)
            return fail(err, errlen, -EINVAL,
                        "piece_length %u gives %u pieces, but the task has %u", n.piece_length,
                        n.total_pieces, cur->total_pieces);
    } else if (n.content_length > 0 && cur->content_length < 0) {
        /* The length without the piece length: only a finished peer may say how many. */
        if (total == UINT32_MAX)
            return fail(err, errlen, -EINVAL, "content_length without piece_length");
        if (total == 0 || total > DMF_PIECES_MAX)
            return fail(err, errlen, -EINVAL, "total_pieces %u is not in 1..%u", total,
                        DMF_PIECES_MAX);
        n.total_pieces = total;
    } else if (n.content_length < 0) {
        n.total_pieces = 0;
    }
    if (total != UINT32_MAX && n.content_length >= 0 && total != n.total_pieces)
        return fail(err, errlen, -EINVAL, "total_pieces %u does not match the layout (%u)", total,
                    n.total_pieces);
    *out = n;
    return 0;
}

/* Stores a merged layout; true when the task learnt something. */
static bool task_set_layout(struct task *t, const struct layout *l)
{
    bool changed = l->content_length != t->content_length || l->piece_length != t->piece_length ||
                   l->total_pieces != t->total_pieces;
    t->content_length = l->content_length;
    t->piece_length = l->piece_length;
    t->total_pieces = l->total_pieces;
    return changed;
}

/* ------------------------------------------------------------ peers and the graph */

static void peer_set_state(dmf_scheduler_peer_t *p, enum dmf_scheduler_peer_state st)
{
    if (p->state == st)
        return;
    dmf_info("task %s peer %s host %s: %s -> %s", p->task->id, p->peer_id, p->host->id,
             dmf_scheduler_peer_state_name(p->state), dmf_scheduler_peer_state_name(st));
    p->state = st;
}

static uint32_t peer_held(const dmf_scheduler_peer_t *p)
{
    const struct task *t = p->task;
    if (p->state == DMF_PEER_SUCCEEDED && t->content_length >= 0)
        return t->total_pieces;
    uint64_t n = (uint64_t)p->held_base + p->held.count;
    if (t->content_length >= 0 && n > t->total_pieces)
        n = t->total_pieces;
    return (uint32_t)DMF_MIN(n, (uint64_t)DMF_PIECES_MAX);
}

static void edge_add(dmf_scheduler_peer_t *child, dmf_scheduler_peer_t *parent)
{
    struct edge *e = dmf_xmalloc(sizeof(*e));
    e->child = child;
    e->parent = parent;
    LIST_INSERT_HEAD(&child->parents, e, in_child);
    LIST_INSERT_HEAD(&parent->children, e, in_parent);
    child->nparents++;
    parent->nchildren++;
}

static void edge_remove(struct edge *e)
{
    e->child->nparents--;
    e->parent->nchildren--;
    LIST_REMOVE(e, in_child);
    LIST_REMOVE(e, in_parent);
    free(e);
}

static void peer_drop_parents(dmf_scheduler_peer_t *p)
{
    while (!LIST_EMPTY(&p->parents))
        edge_remove(LIST_FIRST(&p->parents));
}

/* Whether the peer reported this host as a parent that failed it. */
static bool peer_blocked(const dmf_scheduler_peer_t *p, const char *host_id)
{
    for (size_t i = 0; i < p->nblocked && i < BLOCKED_MAX; i++)
        if (strcmp(p->blocked[i], host_id) == 0)
            return true;
    return false;
}

/* Remembers a parent host the peer must not be offered again (the oldest is forgotten
 * when the list is full). */
static void peer_block(dmf_scheduler_peer_t *p, const char *host_id)
{
    size_t i = p->nblocked % BLOCKED_MAX;
    if (p->nblocked >= BLOCKED_MAX)
        free(p->blocked[i]);
    p->blocked[i] = dmf_xstrdup(host_id);
    p->nblocked++;
}

static dmf_scheduler_peer_t *peer_get(const dmf_scheduler_t *s, const char *task_id,
                                      const char *host_id)
{
    char key[PEER_KEY_LEN + 1];
    snprintf(key, sizeof(key), "%s%s", task_id, host_id);
    return dmf_strmap_get(&s->peers, key);
}

static dmf_scheduler_peer_t *peer_new(dmf_scheduler_t *s, struct task *t, struct host *h,
                                      const char *peer_id)
{
    dmf_scheduler_peer_t *p = dmf_xcalloc(1, sizeof(*p));
    snprintf(p->key, sizeof(p->key), "%s%s", t->id, h->id);
    p->peer_id = dmf_xstrdup(peer_id);
    p->task = t;
    p->host = h;
    p->state = DMF_PEER_PENDING;
    dmf_bitmap_init(&p->held);
    LIST_INIT(&p->parents);
    LIST_INIT(&p->children);
    TAILQ_INSERT_TAIL(&t->peers, p, in_task);
    t->npeers++;
    LIST_INSERT_HEAD(&h->peers, p, in_host);
    dmf_strmap_put(&s->peers, p->key, p);
    s->npeers++;
    dmf_info("task %s peer %s host %s: (new) -> PENDING", t->id, p->peer_id, h->id);
    return p;
}

static void peer_free(dmf_scheduler_peer_t *p)
{
    for (size_t i = 0; i < DMF_MIN(p->nblocked, (size_t)BLOCKED_MAX); i++)
        free(p->blocked[i]);
    dmf_bitmap_free(&p->held);
    free(p->peer_id);
    free(p);
}

/* Marks with a fresh epoch every peer that has p as an ancestor (p's descendants, by
 * child edges), and p itself: none of them may become p's parent. */
static uint64_t mark_descendants(dmf_scheduler_t *s, dmf_scheduler_peer_t *p)
{
    uint64_t epoch = ++s->epoch;
    size_t need = p->task->npeers + 1;
    if (s->scratch_cap < need) {
        s->scratch_cap = need * 2;
        s->scratch = dmf_xrealloc(s->scratch, s->scratch_cap * sizeof(*s->scratch));
    }
    size_t top = 0;
    p->mark = epoch;
    s->scratch[top++] = p;
    while (top > 0) {
        dmf_scheduler_peer_t *q = s->scratch[--top];
        struct edge *e;
        LIST_FOREACH(e, &q->children, in_parent)
        {
            if (e->child->mark != epoch) {
                e->child->mark = epoch;
                s->scratch[top++] = e->child;
            }
        }
    }
    return epoch;
}

/* How close two '|'-separated locations are: shared leading elements over the longer. */
static double location_affinity(const char *a, const char *b)
{
    if (*a == '\0' || *b == '\0')
        return 0.0;
    unsigned na = 1, nb = 1, common = 0;
    for (const char *c = a; *c; c++)
        na += *c == '|';
    for (const char *c = b; *c; c++)
        nb += *c == '|';
    while (*a && *b) {
        size_t la = strcspn(a, "|"), lb = strcspn(b, "|");
        if (la != lb || memcmp(a, b, la) != 0)
            break;
        common++;
        a += la;
        b += lb;
        if (*a != *b)
            break;
        if (*a == '|') {
            a++;
            b++;
        }
    }
    return (double)common / (double)DMF_MAX(na, nb);
}

/* How much of the task the candidate holds, in [0, 1]. */
static double peer_progress(const dmf_scheduler_peer_t *p)
{
    if (p->state == DMF_PEER_SUCCEEDED)
        return 1.0;
    uint32_t held = peer_held(p);
    if (p->task->content_length >= 0)
        return p->task->total_pieces ? (double)held / p->task->total_pieces : 1.0;
    /* Total unknown: saturate, so more pieces still rank higher. */
    return (double)held / (held + 16.0);
}

/* The candidate's score for this child, in [0, 1]; see docs/internals/SCHEDULER.md. */
static double score(const dmf_scheduler_t *s, const dmf_scheduler_peer_t *child,
                    const dmf_scheduler_peer_t *c, uint64_t now)
{
    const struct host *h = c->host;
    const struct host *me = child->host;
    double free_upload = 0.5;
    if (h->upload_capacity > 0)
        free_upload = h->upload_rate >= h->upload_capacity
                          ? 0.0
                          : 1.0 - (double)h->upload_rate / (double)h->upload_capacity;
    double capacity = 0.5 * free_upload + 0.5 / (1.0 + h->active_uploads);
    /* Mesh: the children the scheduler already gave this peer are its upload's future load
     * (host announces lag by seconds; a burst of registrations would otherwise all pick the
     * same few parents and leave the other uplinks idle). */
    if (s->cfg.mesh)
        capacity = 0.5 * capacity + 0.5 / (1.0 + c->nchildren);
    double idc = *me->idc && strcmp(me->idc, h->idc) == 0 ? 1.0 : 0.0;
    double locality = 0.5 * idc + 0.5 * location_affinity(me->location, h->location);
    double health = 1.0 / (1.0 + host_recent_unreachable(h, now));
    return 0.3 * capacity + 0.3 * peer_progress(c) + 0.2 * locality + 0.2 * health;
}

static bool peer_can_serve(const dmf_scheduler_peer_t *c)
{
    return c->state == DMF_PEER_RUNNING || c->state == DMF_PEER_BACK_TO_SOURCE ||
           c->state == DMF_PEER_SUCCEEDED || c->placeholder;
}

struct ranked {
    dmf_scheduler_peer_t *peer;
    double score;
    uint64_t tiebreak;
};

static uint64_t fnv1a(uint64_t h, const char *str)
{
    for (const char *c = str; *c; c++)
        h = (h ^ (unsigned char)*c) * 1099511628211ull;
    return (h ^ 0xff) * 1099511628211ull;
}

/* Equal scores: by peer id under the DAG rule (reproducible); in a mesh by a hash of both
 * peers, so that different children order equal candidates differently. */
static uint64_t tiebreak(const dmf_scheduler_t *s, const dmf_scheduler_peer_t *child,
                         const dmf_scheduler_peer_t *c)
{
    if (!s->cfg.mesh)
        return 0;
    return fnv1a(fnv1a(1469598103934665603ull, child->peer_id), c->peer_id);
}

static bool ranks_before(const struct ranked *a, const struct ranked *b)
{
    if (a->score != b->score)
        return a->score > b->score;
    if (a->tiebreak != b->tiebreak)
        return a->tiebreak < b->tiebreak;
    return strcmp(a->peer->peer_id, b->peer->peer_id) < 0;
}

/* Keeps the best `limit` candidates in best[0..*n), best first. */
static void rank_insert(struct ranked *best, size_t *n, size_t limit, struct ranked r)
{
    if (limit == 0 || (*n == limit && !ranks_before(&r, &best[*n - 1])))
        return;
    size_t i = *n < limit ? (*n)++ : *n - 1;
    while (i > 0 && ranks_before(&r, &best[i - 1])) {
        best[i] = best[i - 1];
        i--;
    }
    best[i] = r;
}

static bool is_seed_host(const struct host *h)
{
    return h->type == DMF_SCHED_HOST_SEED;
}

/* The best new parents for p, at most limit, best first: not p's descendants (the graph
 * stays a DAG), not parents it already uses. Seeds are parents of last resort: one is
 * added only while p would have fewer than SEED_FALLBACK_BELOW normal parents, so the
 * seed's upload goes to the peers that have nobody else. */
static size_t pick_candidates(dmf_scheduler_t *s, dmf_scheduler_peer_t *p, struct ranked *best,
                              size_t limit)
{
    uint64_t now = now_ms(s);
    uint64_t epoch;
    if (s->cfg.mesh) {
        epoch = ++s->epoch;
        p->mark = epoch;
    } else {
        epoch = mark_descendants(s, p);
    }
    size_t n = 0, nseed = 0, normal_in_use = 0;
    bool seed_in_use = false;
    struct ranked seed;
    dmf_scheduler_peer_t *c;
    struct edge *e;
    LIST_FOREACH(e, &p->parents, in_child)
    {
        e->parent->mark = epoch;
        if (is_seed_host(e->parent->host))
            seed_in_use = true;
        else
            normal_in_use++;
    }
    TAILQ_FOREACH(c, &p->task->peers, in_task)
    {
        if (c->mark == epoch || !peer_can_serve(c) || host_excluded(s, c->host) ||
            peer_blocked(p, c->host->id))
            continue;
        struct ranked r = {c, score(s, p, c, now), tiebreak(s, p, c)};
        if (is_seed_host(c->host))
            rank_insert(&seed, &nseed, 1, r);
        else
            rank_insert(best, &n, limit, r);
    }
    if (s->cfg.mesh && nseed && !seed_in_use) {
        /* Mesh: every peer has the seed among its parents. The daemon asks a seed only
         * for pieces no other parent holds, and the seed serves each piece once before
         * it serves any twice, so its upload carries new pieces to whoever can take
         * them (a peer whose own uplink is full receives slowly: its ACKs queue). */
        if (n == limit)
            n--;
        best[n++] = seed;
    } else if (nseed && !seed_in_use && n < limit && normal_in_use + n < SEED_FALLBACK_BELOW) {
        best[n++] = seed;
    }
    return n;
}

static uint64_t rendezvous(const char *task_id, const char *host_id)
{
    uint64_t h = 1469598103934665603ull;
    for (const char *c = task_id; *c; c++)
        h = (h ^ (unsigned char)*c) * 1099511628211ull;
    h = (h ^ 0xff) * 1099511628211ull;
    for (const char *c = host_id; *c; c++)
        h = (h ^ (unsigned char)*c) * 1099511628211ull;
    return h;
}

/* A seed host that could fetch p's task: alive, not excluded, holding no peer of the task.
 * Rendezvous hashing on the task id sends the same task to the same seed. */
static struct host *pick_seed(dmf_scheduler_t *s, dmf_scheduler_peer_t *p)
{
    if (p->task->seed_failed)
        return NULL;
    uint64_t now = now_ms(s);
    struct host *best = NULL, *h;
    uint64_t best_w = 0;
    LIST_FOREACH(h, &s->seeds, seeds)
    {
        if (host_excluded(s, h) || peer_blocked(p, h->id) ||
            now - h->last_seen >= s->cfg.host_timeout_ms || peer_get(s, p->task->id, h->id))
            continue;
        uint64_t w = rendezvous(p->task->id, h->id);
        if (best == NULL || w > best_w) {
            best = h;
            best_w = w;
        }
    }
    return best;
}

static void send_meta_update(dmf_scheduler_peer_t *p, struct dmf_scheduler_meta *m)
{
    task_meta(p->task, p->meta_sent, m);
    p->meta_sent = p->task->ndigests;
}

static void trigger_seed(dmf_scheduler_t *s, dmf_scheduler_peer_t *ph)
{
    struct task *t = ph->task;
    const char **filters = dmf_xcalloc(t->nfilter_query, sizeof(char *));
    struct dmf_scheduler_header *headers = dmf_xcalloc(t->nheaders, sizeof(*headers));
    for (size_t i = 0; i < t->nfilter_query; i++)
        filters[i] = t->filter_query[i];
    for (size_t i = 0; i < t->nheaders; i++) {
        headers[i].name = t->headers[i].name;
        headers[i].value = t->headers[i].value;
    }
    struct dmf_scheduler_seed_trigger tr = {
        .trigger_id = ph->trigger_id,
        .task_id = t->id,
        .host_id = ph->host->id,
        .ip = ph->host->ip,
        .rpc_port = ph->host->rpc_port,
        .url = t->url ? t->url : "",
        .headers = headers,
        .nheaders = t->nheaders,
        .tag = t->tag ? t->tag : "",
        .digest = t->digest ? t->digest : "",
        .filter_query = filters,
        .nfilter_query = t->nfilter_query,
    };
    dmf_info("task %s: seed host %s asked to fetch it (trigger %llu)", t->id, ph->host->id,
             (unsigned long long)ph->trigger_id);
    s->sink.trigger_seed(s->sink_arg, &tr);
    free(filters);
    free(headers);
}

/* Gives p more parents until it uses candidate_limit of them, and tells its stream (a
 * pushed Candidates adds to the parents in use). A peer left with no parent at all gets a
 * freshly triggered seed, or is sent back to the source. p must be PENDING or RUNNING and
 * attached. */
static void schedule(dmf_scheduler_t *s, dmf_scheduler_peer_t *p)
{
    struct ranked best[DMF_SCHED_CANDIDATES_MAX];
    struct dmf_scheduler_parent parents[DMF_SCHED_CANDIDATES_MAX];
    struct dmf_scheduler_meta meta;
    bool seed_triggered = false;

    size_t limit = s->cfg.candidate_limit;
    size_t want = p->nparents < limit ? limit - p->nparents : 0;
    size_t n = want ? pick_candidates(s, p, best, want) : 0;
    if (n == 0 && p->nparents > 0) {
        dmf_debug("task %s peer %s host %s: no new parent; keeps its %u", p->task->id, p->peer_id,
                  p->host->id, p->nparents);
        return;
    }
    if (n == 0) {
        struct host *seed = pick_seed(s, p);
        if (seed == NULL || s->npeers >= s->cfg.max_peers) {
            peer_set_state(p, DMF_PEER_BACK_TO_SOURCE);
            s->sink.back_to_source(s->sink_arg, p->stream,
                                   "no seed peer and no peer holds the task");
            return;
        }
        char *ph_id = dmf_xasprintf("seed-%s", seed->id);
        dmf_scheduler_peer_t *ph = peer_new(s, p->task, seed, ph_id);
        free(ph_id);
        ph->placeholder = true;
        ph->triggered_seed = true;
        ph->trigger_id = ++s->next_trigger_id;
        trigger_seed(s, ph);
        best[0].peer = ph;
        n = 1;
    }
    for (size_t i = 0; i < n; i++) {
        dmf_scheduler_peer_t *c = best[i].peer;
        edge_add(p, c);
        parents[i].peer_id = c->peer_id;
        parents[i].host_id = c->host->id;
        parents[i].ip = c->host->ip;
        parents[i].piece_port = c->host->piece_port;
        parents[i].is_seed = is_seed_host(c->host);
        seed_triggered |= c->triggered_seed;
    }
    peer_set_state(p, DMF_PEER_RUNNING);
    send_meta_update(p, &meta);
    s->sink.candidates(s->sink_arg, p->stream, parents, n, seed_triggered, &meta);
}

/* Mesh: a newly registered peer p becomes a parent of every running peer of the task that
 * still has room for one (earlier registrants would otherwise never learn of p). */
static void offer_to_others(dmf_scheduler_t *s, dmf_scheduler_peer_t *p, uint32_t room)
{
    dmf_scheduler_peer_t *q;
    TAILQ_FOREACH(q, &p->task->peers, in_task)
    {
        if (q == p || q->stream == NULL || q->state != DMF_PEER_RUNNING || q->nparents >= room ||
            peer_blocked(q, p->host->id) || host_excluded(s, p->host) || q->host->leaving)
            continue;
        struct edge *e;
        bool already = false;
        LIST_FOREACH(e, &q->parents, in_child)
        already |= e->parent == p;
        if (already)
            continue;
        edge_add(q, p);
        struct dmf_scheduler_parent parent = {
            .peer_id = p->peer_id,
            .host_id = p->host->id,
            .ip = p->host->ip,
            .piece_port = p->host->piece_port,
            .is_seed = is_seed_host(p->host),
        };
        struct dmf_scheduler_meta meta;
        send_meta_update(q, &meta);
        s->sink.candidates(s->sink_arg, q->stream, &parent, 1, false, &meta);
    }
}

/* A peer that lost a parent (or asked for others) gets a new set, when it still needs one. */
static void reschedule(dmf_scheduler_t *s, dmf_scheduler_peer_t *p)
{
    if (p->stream == NULL || p->host->leaving ||
        (p->state != DMF_PEER_PENDING && p->state != DMF_PEER_RUNNING))
        return;
    schedule(s, p);
}

/* Removes p; its attached stream (unless it is the one going away) hears why; children
 * that still download are rescheduled; an empty task is forgotten. */
static void peer_remove(dmf_scheduler_t *s, dmf_scheduler_peer_t *p, const char *why,
                        bool tell_stream)
{
    struct task *t = p->task;
    dmf_info("task %s peer %s host %s: %s -> (removed: %s)", t->id, p->peer_id, p->host->id,
             dmf_scheduler_peer_state_name(p->state), why);
    if (p->stream && tell_stream && s->sink.peer_gone)
        s->sink.peer_gone(s->sink_arg, p->stream, why);
    p->stream = NULL;
    peer_drop_parents(p);

    size_t nkids = 0, cap = 0;
    dmf_scheduler_peer_t **kids = NULL;
    while (!LIST_EMPTY(&p->children)) {
        struct edge *e = LIST_FIRST(&p->children);
        if (nkids == cap) {
            cap = cap ? cap * 2 : 8;
            kids = dmf_xrealloc(kids, cap * sizeof(*kids));
        }
        kids[nkids++] = e->child;
        edge_remove(e);
    }
    TAILQ_REMOVE(&t->peers, p, in_task);
    t->npeers--;
    LIST_REMOVE(p, in_host);
    dmf_strmap_del(&s->peers, p->key);
    s->npeers--;
    peer_free(p);

    for (size_t i = 0; i < nkids; i++)
        reschedule(s, kids[i]);
    free(kids);
    if (t->npeers == 0)
        task_remove(s, t);
}

static void host_remove(dmf_scheduler_t *s, struct host *h, const char *why)
{
    char reason[DMF_SCHED_ID_MAX + 64];
    snprintf(reason, sizeof(reason), "host %s %s", h->id, why);
    dmf_info("host %s: %s, removing %s", h->id, why,
             LIST_EMPTY(&h->peers) ? "it" : "it and its peers");
    h->leaving = true;
    while (!LIST_EMPTY(&h->peers))
        peer_remove(s, LIST_FIRST(&h->peers), reason, true);
    if (s->sink.host_gone)
        s->sink.host_gone(s->sink_arg, h->id);
    dmf_strmap_del(&s->hosts, h->id);
    TAILQ_REMOVE(&s->hosts_by_seen, h, by_seen);
    if (h->type == DMF_SCHED_HOST_SEED)
        LIST_REMOVE(h, seeds);
    s->nhosts--;
    host_free(h);
}

int dmf_scheduler_leave_host(dmf_scheduler_t *s, const char *host_id, char *err, size_t errlen)
{
    int rc = check_id("host_id", host_id, DMF_SCHED_ID_MAX, err, errlen);
    if (rc != 0)
        return rc;
    struct host *h = host_get(s, host_id);
    if (h == NULL)
        return fail(err, errlen, -ENOENT, "host %s is not known", host_id);
    host_remove(s, h, "left");
    return 0;
}

size_t dmf_scheduler_expire_hosts(dmf_scheduler_t *s)
{
    uint64_t now = now_ms(s);
    size_t n = 0;
    struct host *h;
    while ((h = TAILQ_FIRST(&s->hosts_by_seen)) != NULL &&
           now - h->last_seen >= s->cfg.host_timeout_ms) {
        host_remove(s, h, "expired (no announce)");
        n++;
    }
    return n;
}

/* ------------------------------------------------------------ peer decisions */

int dmf_scheduler_register(dmf_scheduler_t *s, const struct dmf_scheduler_register *r, void *stream,
                           dmf_scheduler_peer_t **out, char *err, size_t errlen)
{
    int rc = check_register(r, err, errlen);
    if (rc != 0)
        return rc;
    struct host *h = host_get(s, r->host_id);
    if (h == NULL || h->leaving)
        return fail(err, errlen, -ESRCH, "host %s has not announced", r->host_id);
    struct task *t = dmf_strmap_get(&s->tasks, r->task_id);
    dmf_scheduler_peer_t *p = t ? peer_get(s, t->id, h->id) : NULL;
    if (t) {
        dmf_scheduler_peer_t *q;
        TAILQ_FOREACH(q, &t->peers, in_task)
        {
            if (q != p && strcmp(q->peer_id, r->peer_id) == 0)
                return fail(err, errlen, -EEXIST, "peer %s is already registered from host %s",
                            r->peer_id, q->host->id);
        }
    } else if (s->ntasks >= s->cfg.max_tasks) {
        return fail(err, errlen, -ENOSPC, "too many tasks (%zu): task %s refused", s->cfg.max_tasks,
                    r->task_id);
    }
    if (p == NULL && s->npeers >= s->cfg.max_peers)
        return fail(err, errlen, -ENOSPC, "too many peers (%zu): peer %s refused", s->cfg.max_peers,
                    r->peer_id);

    if (t == NULL)
        t = task_new(s, r->task_id);
    task_set_request(t, r);
    if (p == NULL) {
        p = peer_new(s, t, h, r->peer_id);
    } else {
        /* The same host registers the task again (a restarted daemon, or the seed taking
         * over its placeholder): the peer keeps its children, the newest stream wins. */
        if (p->stream && s->sink.peer_gone)
            s->sink.peer_gone(s->sink_arg, p->stream,
                              "a newer register for this task arrived from the same host");
        if (strcmp(p->peer_id, r->peer_id) != 0) {
            dmf_info("task %s peer %s host %s: now peer %s", t->id, p->peer_id, h->id, r->peer_id);
            replace_str(&p->peer_id, r->peer_id);
        }
        p->placeholder = false;
        peer_drop_parents(p);
        dmf_bitmap_free(&p->held);
        dmf_bitmap_init(&p->held);
        if (h->type != DMF_SCHED_HOST_SEED)
            peer_set_state(p, DMF_PEER_PENDING);
    }
    p->stream = stream;
    p->meta_sent = 0;
    p->held_base = r->held_pieces;
    *out = p;

    if (h->type == DMF_SCHED_HOST_SEED) {
        peer_set_state(p, DMF_PEER_BACK_TO_SOURCE);
        s->sink.back_to_source(s->sink_arg, stream, "seed peer fetches from the origin");
        return 0;
    }
    schedule(s, p);
    if (s->cfg.mesh && p->state == DMF_PEER_RUNNING)
        offer_to_others(s, p, s->cfg.candidate_limit);
    return 0;
}

/* Sends what the task learnt to every attached peer but `except` (already up to date). */
static void push_meta(dmf_scheduler_t *s, struct task *t, dmf_scheduler_peer_t *except, bool layout)
{
    dmf_scheduler_peer_t *q;
    TAILQ_FOREACH(q, &t->peers, in_task)
    {
        if (q == except || q->stream == NULL || (!layout && q->meta_sent >= t->ndigests))
            continue;
        struct dmf_scheduler_meta m;
        send_meta_update(q, &m);
        s->sink.task_meta(s->sink_arg, q->stream, &m);
    }
}

int dmf_scheduler_progress(dmf_scheduler_t *s, dmf_scheduler_peer_t *p,
                           const struct dmf_scheduler_progress *pr, char *err, size_t errlen)
{
    struct task *t = p->task;
    struct layout cur = task_layout(t), l;

    /* Check everything first: a bad message changes nothing. */
    int rc = layout_merge(&cur, pr->content_length, pr->piece_length, UINT32_MAX, &l, err, errlen);
    if (rc != 0)
        return rc;
    uint32_t limit = l.content_length >= 0 ? l.total_pieces : DMF_PIECES_MAX;
    for (size_t i = 0; i < pr->npieces; i++)
        if (pr->pieces[i] >= limit)
            return fail(err, errlen, -EINVAL, "piece %u is out of range (task has %u)",
                        pr->pieces[i], limit);
    for (size_t i = 0; i < pr->ndigests; i++)
        if (pr->digests[i].number >= limit)
            return fail(err, errlen, -EINVAL, "digest of piece %u is out of range (task has %u)",
                        pr->digests[i].number, limit);

    bool layout_changed = task_set_layout(t, &l);
    for (size_t i = 0; i < pr->npieces; i++)
        dmf_bitmap_set(&p->held, pr->pieces[i]);

    bool reporter_current = p->meta_sent >= t->ndigests;
    size_t before = t->ndigests;
    for (size_t i = 0; i < pr->ndigests; i++) {
        const struct dmf_scheduler_digest *d = &pr->digests[i];
        const struct dmf_scheduler_digest *have = task_digest(t, d->number);
        if (have == NULL) {
            task_add_digest(t, d);
        } else if (memcmp(have->sha256, d->sha256, DMF_SHA256_LEN) != 0) {
            char a[2 * DMF_SHA256_LEN + 1], b[2 * DMF_SHA256_LEN + 1];
            dmf_hex_encode(have->sha256, DMF_SHA256_LEN, a);
            dmf_hex_encode(d->sha256, DMF_SHA256_LEN, b);
            dmf_warn("task %s peer %s host %s: digest of piece %u is %s, but %s was received "
                     "first; ignored",
                     t->id, p->peer_id, p->host->id, d->number, b, a);
        }
    }
    if (reporter_current)
        p->meta_sent = t->ndigests;
    if (t->ndigests != before || layout_changed)
        push_meta(s, t, p, layout_changed);
    return 0;
}

int dmf_scheduler_finished(dmf_scheduler_t *s, dmf_scheduler_peer_t *p, int64_t content_length,
                           uint32_t total_pieces, char *err, size_t errlen)
{
    struct task *t = p->task;
    struct layout cur = task_layout(t), l;
    if (content_length < 0)
        return fail(err, errlen, -EINVAL, "a finished peer must know the content_length");
    int rc = layout_merge(&cur, content_length, 0, total_pieces, &l, err, errlen);
    if (rc != 0)
        return rc;
    bool layout_changed = task_set_layout(t, &l);
    peer_drop_parents(p);
    peer_set_state(p, DMF_PEER_SUCCEEDED);
    if (layout_changed)
        push_meta(s, t, p, true);
    /* Mesh: a peer that holds everything can serve any peer still downloading; without
     * this its uplink would idle while peers whose parents lack pieces wait on the seed.
     * Up to twice the candidate limit of parents per peer. */
    if (s->cfg.mesh)
        offer_to_others(s, p, 2 * s->cfg.candidate_limit);
    return 0;
}

void dmf_scheduler_failed(dmf_scheduler_t *s, dmf_scheduler_peer_t *p, const char *reason)
{
    char why[DMF_SCHED_REASON_MAX + 16];
    snprintf(why, sizeof(why), "failed: %s", reason && *reason ? reason : "no reason given");
    peer_set_state(p, DMF_PEER_FAILED);
    peer_remove(s, p, why, false);
}

void dmf_scheduler_stream_closed(dmf_scheduler_t *s, dmf_scheduler_peer_t *p)
{
    p->stream = NULL;
    if (p->state == DMF_PEER_SUCCEEDED) {
        dmf_debug("task %s peer %s host %s: stream closed, stays a parent", p->task->id, p->peer_id,
                  p->host->id);
        return;
    }
    peer_remove(s, p, "stream closed", false);
}

int dmf_scheduler_parent_failure(dmf_scheduler_t *s, dmf_scheduler_peer_t *p,
                                 const char *parent_peer_id, const char *parent_host_id, int reason,
                                 char *err, size_t errlen)
{
    int rc = check_id("parent_host_id", parent_host_id, DMF_SCHED_ID_MAX, err, errlen);
    if (rc != 0)
        return rc;
    if (parent_peer_id && *parent_peer_id &&
        (rc = check_id("parent_peer_id", parent_peer_id, DMF_SCHED_ID_MAX, err, errlen)) != 0)
        return rc;
    if (reason != DMF_PARENT_UNREACHABLE && reason != DMF_PARENT_BAD_PIECE)
        return fail(err, errlen, -EINVAL, "unknown parent failure reason %d", reason);

    struct host *h = host_get(s, parent_host_id);
    /* One report per (peer, parent host) counts: a peer cannot exclude a host alone. */
    if (h && !peer_blocked(p, parent_host_id)) {
        uint64_t now = now_ms(s);
        if (reason == DMF_PARENT_BAD_PIECE) {
            h->bad_reports++;
            h->last_bad_at = now;
            dmf_warn("task %s peer %s host %s: parent host %s sent a bad piece (%u of %u "
                     "reports before exclusion)",
                     p->task->id, p->peer_id, p->host->id, h->id, h->bad_reports,
                     s->cfg.bad_parent_threshold);
        } else {
            h->unreachable_at[h->unreachable_reports % UNREACHABLE_RING] = now;
            h->unreachable_reports++;
            dmf_info("task %s peer %s host %s: parent host %s unreachable", p->task->id, p->peer_id,
                     p->host->id, h->id);
        }
    }
    if (!peer_blocked(p, parent_host_id))
        peer_block(p, parent_host_id);
    struct edge *e, *next;
    for (e = LIST_FIRST(&p->parents); e != NULL; e = next) {
        next = LIST_NEXT(e, in_child);
        if (strcmp(e->parent->host->id, parent_host_id) == 0)
            edge_remove(e);
    }
    reschedule(s, p);
    return 0;
}

int dmf_scheduler_leave_peer(dmf_scheduler_t *s, const char *task_id, const char *peer_id,
                             char *err, size_t errlen)
{
    int rc;
    if ((rc = check_task_id(task_id, err, errlen)) != 0 ||
        (rc = check_id("peer_id", peer_id, DMF_SCHED_ID_MAX, err, errlen)) != 0)
        return rc;
    struct task *t = dmf_strmap_get(&s->tasks, task_id);
    dmf_scheduler_peer_t *p = t ? TAILQ_FIRST(&t->peers) : NULL;
    while (p != NULL && strcmp(p->peer_id, peer_id) != 0)
        p = TAILQ_NEXT(p, in_task);
    if (p == NULL)
        return fail(err, errlen, -ENOENT, "peer %s of task %s is not known", peer_id, task_id);
    peer_remove(s, p, "left", true);
    return 0;
}

void dmf_scheduler_seed_result(dmf_scheduler_t *s, const char *task_id, const char *host_id,
                               uint64_t trigger_id, bool ok, const char *reason)
{
    dmf_scheduler_peer_t *p = peer_get(s, task_id, host_id);
    if (p == NULL || p->trigger_id != trigger_id)
        return;
    if (ok) {
        if (p->placeholder) {
            /* The seed had (or fetched) the task without announcing it: it holds it. */
            p->placeholder = false;
            peer_set_state(p, DMF_PEER_SUCCEEDED);
        }
        return;
    }
    if (!p->placeholder && (p->stream != NULL || p->state == DMF_PEER_SUCCEEDED))
        return; /* the seed's own stream reports on it */
    dmf_warn("task %s: seed host %s could not fetch it: %s", task_id, host_id,
             reason && *reason ? reason : "unknown error");
    p->task->seed_failed = true;
    p->placeholder = false;
    peer_set_state(p, DMF_PEER_FAILED);
    peer_remove(s, p, "seed trigger failed", false);
}

/* ------------------------------------------------------------ queries and lifetime */

const char *dmf_scheduler_peer_id(const dmf_scheduler_peer_t *p)
{
    return p->peer_id;
}

const char *dmf_scheduler_peer_task_id(const dmf_scheduler_peer_t *p)
{
    return p->task->id;
}

const char *dmf_scheduler_peer_host_id(const dmf_scheduler_peer_t *p)
{
    return p->host->id;
}

enum dmf_scheduler_peer_state dmf_scheduler_peer_state(const dmf_scheduler_peer_t *p)
{
    return p->state;
}

int dmf_scheduler_stat_task(dmf_scheduler_t *s, const char *task_id,
                            struct dmf_scheduler_task_stat *st, char *err, size_t errlen)
{
    memset(st, 0, sizeof(*st));
    int rc = check_task_id(task_id, err, errlen);
    if (rc != 0)
        return rc;
    struct task *t = dmf_strmap_get(&s->tasks, task_id);
    if (t == NULL)
        return fail(err, errlen, -ENOENT, "task %s is not known", task_id);
    task_meta(t, t->ndigests, &st->meta);
    st->url = t->url ? t->url : "";
    st->peers = dmf_xcalloc(t->npeers, sizeof(*st->peers));
    dmf_scheduler_peer_t *p;
    TAILQ_FOREACH(p, &t->peers, in_task)
    {
        struct dmf_scheduler_peer_stat *ps = &st->peers[st->npeers++];
        ps->peer_id = p->peer_id;
        ps->host_id = p->host->id;
        ps->state = p->state;
        ps->finished_pieces = peer_held(p);
    }
    return 0;
}

void dmf_scheduler_task_stat_free(struct dmf_scheduler_task_stat *st)
{
    free(st->peers);
    memset(st, 0, sizeof(*st));
}

void dmf_scheduler_counts(const dmf_scheduler_t *s, struct dmf_scheduler_counts *c)
{
    c->hosts = s->nhosts;
    c->tasks = s->ntasks;
    c->peers = s->npeers;
}

uint64_t dmf_scheduler_host_timeout_ms(const dmf_scheduler_t *s)
{
    return s->cfg.host_timeout_ms;
}

dmf_scheduler_t *dmf_scheduler_new(const struct dmf_scheduler_config *cfg,
                                   const struct dmf_scheduler_sink *sink, void *sink_arg)
{
    dmf_scheduler_t *s = dmf_xcalloc(1, sizeof(*s));
    s->cfg = *cfg;
    if (s->cfg.candidate_limit == 0)
        s->cfg.candidate_limit = DMF_SCHED_CANDIDATES_DEFAULT;
    if (s->cfg.candidate_limit > DMF_SCHED_CANDIDATES_MAX)
        s->cfg.candidate_limit = DMF_SCHED_CANDIDATES_MAX;
    if (s->cfg.host_timeout_ms == 0)
        s->cfg.host_timeout_ms = 10000;
    if (s->cfg.bad_parent_threshold == 0)
        s->cfg.bad_parent_threshold = 2;
    if (s->cfg.max_hosts == 0)
        s->cfg.max_hosts = 100000;
    if (s->cfg.max_tasks == 0)
        s->cfg.max_tasks = 100000;
    if (s->cfg.max_peers == 0)
        s->cfg.max_peers = 1000000;
    s->sink = *sink;
    s->sink_arg = sink_arg;
    dmf_strmap_init(&s->hosts);
    dmf_strmap_init(&s->tasks);
    dmf_strmap_init(&s->peers);
    TAILQ_INIT(&s->hosts_by_seen);
    LIST_INIT(&s->seeds);
    TAILQ_INIT(&s->all_tasks);
    return s;
}

void dmf_scheduler_free(dmf_scheduler_t *s)
{
    if (s == NULL)
        return;
    struct task *t;
    dmf_scheduler_peer_t *p;
    /* Every edge first (each is on its child's list), then the peers they linked. */
    TAILQ_FOREACH(t, &s->all_tasks, link)
    {
        TAILQ_FOREACH(p, &t->peers, in_task)
        {
            peer_drop_parents(p);
        }
    }
    while ((t = TAILQ_FIRST(&s->all_tasks)) != NULL) {
        while ((p = TAILQ_FIRST(&t->peers)) != NULL) {
            TAILQ_REMOVE(&t->peers, p, in_task);
            peer_free(p);
        }
        TAILQ_REMOVE(&s->all_tasks, t, link);
        task_free(t);
    }
    struct host *h;
    while ((h = TAILQ_FIRST(&s->hosts_by_seen)) != NULL) {
        TAILQ_REMOVE(&s->hosts_by_seen, h, by_seen);
        host_free(h);
    }
    dmf_strmap_free(&s->hosts);
    dmf_strmap_free(&s->tasks);
    dmf_strmap_free(&s->peers);
    free(s->scratch);
    free(s);
}
