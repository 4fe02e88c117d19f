/* Sign-in throttling: password guessing against the manager's REST API is slowed per
 * client address and per user name, so that neither one address trying many names nor
 * many addresses trying one name gets far.
 *
 * Each key (an address without its port, or "user:" + a name) counts its failed sign-ins;
 * from the DMF_SIGNIN_FREE_FAILURES-th on, the key is locked for a delay that doubles with
 * each further failure, from 1 s up to DMF_SIGNIN_MAX_LOCK_S. A success clears the name's
 * key and the address's. A key with no failure for DMF_SIGNIN_FORGET_S is forgotten. The
 * table holds at most DMF_SIGNIN_KEYS keys; when full, the least recently failed one
 * makes room (a flood of addresses cannot grow it).
 *
 * A decision over an injected clock (seconds), no I/O; a mutex inside makes it safe from
 * the API's worker threads. */
#ifndef DMF_MANAGER_SIGNIN_LIMIT_H
#define DMF_MANAGER_SIGNIN_LIMIT_H

#include <stddef.h>
#include <stdint.h>

#define DMF_SIGNIN_FREE_FAILURES 5
#define DMF_SIGNIN_MAX_LOCK_S    900
#define DMF_SIGNIN_FORGET_S      3600
#define DMF_SIGNIN_KEYS          4096
#define DMF_SIGNIN_KEY_MAX       128

struct dmf_signin_limit;

struct dmf_signin_limit *dmf_signin_limit_new(void);
void dmf_signin_limit_free(struct dmf_signin_limit *l);

/* May a sign-in from addr for name be tried at now? 0: yes; else the seconds until it may
 * (the later of the two keys' locks). */
int64_t dmf_signin_limit_check(struct dmf_signin_limit *l, const char *addr, const char *name,
                               int64_t now);
/* The outcome of a sign-in that was tried. */
void dmf_signin_limit_failed(struct dmf_signin_limit *l, const char *addr, const char *name,
                             int64_t now);
void dmf_signin_limit_succeeded(struct dmf_signin_limit *l, const char *addr, const char *name);

/* The address part of "HOST:PORT" or "[V6]:PORT" into out (for the address key). */
void dmf_signin_addr_of(const char *peer, char *out, size_t outlen);

#endif
