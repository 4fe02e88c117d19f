#include "common/evx.h"

#include <stdio.h>
#include <stdlib.h>

void *dmf_xcheck(void *p, const char *what)
{
    if (p == NULL) {
        fprintf(stderr, "damselfly: out of memory allocating %s\n", what);
        abort();
    }
    return p;
}

struct event *dmf_xevent_new(struct event_base *base, evutil_socket_t fd, short what,
                             event_callback_fn cb, void *arg)
{
    return dmf_xcheck(event_new(base, fd, what, cb, arg), "an event");
}

struct evbuffer *dmf_xevbuffer_new(void)
{
    return dmf_xcheck(evbuffer_new(), "an evbuffer");
}
