/* The name of the application a download is for (`get --application`, a proxy rule's
 * `application`, the proxy's X-Dragonfly-Application header), as Dragonfly's dfget
 * `--application` gives it. It is a label for policy and observability: the cluster's
 * `block_applications` refuses the downloads of a named application, and the scheduler's
 * live view shows it per peer. It is not part of the task ID: two applications asking for
 * the same content share it.
 *
 * A name is 1 to DMF_APPLICATION_MAX bytes of [A-Za-z0-9._-], starting with a letter or a
 * digit; "" means none. Every place a name arrives from (command line, proxy header,
 * local API, the scheduler's register, the manager's config) checks it with
 * dmf_application_check. */
#ifndef DMF_APPLICATION_H
#define DMF_APPLICATION_H

#include <stddef.h>

#define DMF_APPLICATION_MAX 64

/* 0 when name is NULL, "" (none) or a valid name; else -EINVAL with the reason in err
 * (which never quotes an invalid name: it may be anything a client sent). */
int dmf_application_check(const char *name, char *err, size_t errlen);

#endif
