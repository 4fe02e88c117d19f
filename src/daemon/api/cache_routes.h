/* The cache's routes on the local API (used by `damselfly cache`), plain text:
 *
 *   GET  /cache       200, one line per stored task, least recently used first, fields
 *                     separated by tabs: id, bytes held, pieces held, total pieces, last
 *                     access (ms since the epoch), state, "in-use" or "-", URL (tabs and
 *                     line breaks in it written %09, %0A, %0D; "-" when none).
 *   POST /cache/rm    body: a task id or a URL (at most DMF_CACHE_RM_MAX bytes). 200
 *                     "removed N BYTES"; 404 when no task matches; 409 when one is in use
 *                     (nothing is removed); 400 for an empty or oversized body.
 *   POST /cache/gc    runs eviction now. 200 "evicted N BYTES EXPIRED TASKS-LEFT
 *                     BYTES-LEFT IN-USE".
 *
 * Other methods get 405. See docs/internals/LOCAL-API.md. */
#ifndef DMF_CACHE_ROUTES_H
#define DMF_CACHE_ROUTES_H

#define DMF_CACHE_RM_MAX 8192

struct evhttp;
struct dmf_daemon;

/* Adds the routes to http (the local API's); d is borrowed for http's lifetime. */
void dmf_cache_routes_add(struct evhttp *http, struct dmf_daemon *d);

#endif
