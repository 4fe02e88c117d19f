/* libevent allocations that never return NULL: on exhaustion the process aborts with a
 * message, as dmf_xmalloc does (an unchecked NULL event or buffer crashed later, far from
 * the cause). */
#ifndef DMF_EVX_H
#define DMF_EVX_H

#include <event2/buffer.h>
#include <event2/event.h>

struct event *dmf_xevent_new(struct event_base *base, evutil_socket_t fd, short what,
                             event_callback_fn cb, void *arg);
#define dmf_xevtimer_new(base, cb, arg) dmf_xevent_new((base), -1, 0, (cb), (arg))
struct evbuffer *dmf_xevbuffer_new(void);
/* Aborts with a message naming what when p is NULL; returns p. */
void *dmf_xcheck(void *p, const char *what);

#endif
