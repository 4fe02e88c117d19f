/* A task's parents: the peers it fetches pieces from. For each parent the set keeps its
 * /have stream open (it tells which pieces the parent holds as it gets them) and piece
 * requests in flight; which piece goes to which parent is dispatch.c's decision. Bytes
 * that arrive go to the task through the sink (it checks them against the piece digest
 * off the loop); a parent that fails or sends a bad piece is dropped and reported. */
#ifndef DMF_PARENT_H
#define DMF_PARENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/http_client.h"
#include "daemon/peer/piece_book.h"

struct event_base;
struct dmf_parents;

/* Endgame duplicates sent, and requests cancelled because the other copy came first. */
extern struct dmf_metric dmf_m_endgame_requests, dmf_m_endgame_cancels;

struct dmf_parent_info {
    const char *peer_id;
    const char *host_id;
    const char *ip;
    uint16_t port;
    bool is_seed;
};

/* How the set reports to its task. */
struct dmf_parents_sink {
    /* Piece n's bytes from a parent on host_id (buf, malloc'd, is taken over). Returns 0,
     * or -EINVAL when the piece cannot be right (wrong size): that parent is excluded. */
    int (*piece)(void *arg, uint32_t n, uint8_t *buf, size_t len, enum dmf_piece_origin from,
                 const char *host_id);
    /* A parent is no longer used: unreachable, or it sent a bad piece (then piece is it). */
    void (*parent_failed)(void *arg, const char *peer_id, const char *host_id, bool bad_piece,
                          uint32_t piece);
    /* Something changed (a parent holds more, a request ended): a dispatch pass is due. */
    void (*changed)(void *arg);
    /* True when verified pieces wait for the workers: start no new request. */
    bool (*busy)(void *arg);
};

struct dmf_parents_env {
    struct event_base *base;
    dmf_http_t *http;
    struct dmf_piece_book *book; /* the task's: read, and claims taken and given back */
    const char *task_id;         /* borrowed: outlive the set */
    const char *peer_id;
    int parent_concurrency;
    struct dmf_flow *flow; /* the task's bandwidth share (borrowed; NULL: none) */
    const struct dmf_parents_sink *sink;
    void *arg;
    /* Mutual TLS to the parents (the http client has dmf_http_set_peer_tls): their URLs are
     * https:// and each parent's certificate must name the host ID the scheduler gave. */
    bool tls;
    /* The task's piece-fetch token (piece_token.h): a buffer the task updates in place
     * whenever the scheduler renews it, read at each request; "" or NULL: none. Sent in
     * DMF_PIECE_TOKEN_HEADER, with this host's ID in DMF_HOST_ID_HEADER (self_host_id). */
    const char *piece_token;
    const char *self_host_id;
};

/* An empty set; env is copied (the strings and the book it points to are borrowed). */
struct dmf_parents *dmf_parents_new(const struct dmf_parents_env *env);
/* Cancels every request (giving their claims back) and frees the set. NULL is ignored. */
void dmf_parents_free(struct dmf_parents *ps);
/* Adds a parent (a duplicate of one in use, or one excluded for bad pieces, is ignored;
 * one that had failed gets another chance). */
void dmf_parents_add(struct dmf_parents *ps, const struct dmf_parent_info *p);
/* Starts the piece requests dispatch.c plans. */
void dmf_parents_dispatch(struct dmf_parents *ps);
/* Parents that are connected or connecting (not failed or excluded); 0 for NULL. */
int dmf_parents_usable(const struct dmf_parents *ps);
/* The download is over: every parent (not a seed) asked for a piece at least a second ago
 * that never sent a byte is reported through the sink as failed, so the scheduler learns of hosts
 * that offer pieces and then stall even when other parents carried the whole task; each parent
 * once. NULL is ignored. */
void dmf_parents_report_stalled(struct dmf_parents *ps);
/* The parent on host_id sent piece n with bytes that do not match its digest: it is
 * excluded for this task and reported through the sink. */
void dmf_parents_bad_piece(struct dmf_parents *ps, const char *host_id, uint32_t n);

#endif
