/* Sign-in throttling; see signin_limit.h. */
#include "manager/signin_limit.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

struct entry {
    char key[DMF_SIGNIN_KEY_MAX + 1]; /* "" = free slot */
    uint32_t failures;
    int64_t last_failure;
    int64_t locked_until;
};

struct dmf_signin_limit {
    pthread_mutex_t mu;
    struct entry e[DMF_SIGNIN_KEYS];
};

struct dmf_signin_limit *dmf_signin_limit_new(void)
{
    struct dmf_signin_limit *l = dmf_xcalloc(1, sizeof(*l));
    pthread_mutex_init(&l->mu, NULL);
    return l;
}

void dmf_signin_limit_free(struct dmf_signin_limit *l)
{
    if (l == NULL)
        return;
    pthread_mutex_destroy(&l->mu);
    free(l);
}

/* The two keys of a sign-in: its address's and its name's. */
static void keys_of(const char *addr, const char *name, char *ka, char *kn)
{
    snprintf(ka, DMF_SIGNIN_KEY_MAX + 1, "addr:%s", addr ? addr : "");
    snprintf(kn, DMF_SIGNIN_KEY_MAX + 1, "user:%s", name ? name : "");
}

/* The key's entry, or NULL; a forgotten one is cleared on the way. */
static struct entry *find(struct dmf_signin_limit *l, const char *key, int64_t now)
{
    for (size_t i = 0; i < DMF_SIGNIN_KEYS; i++) {
        struct entry *e = &l->e[i];
        if (e->key[0] && now - e->last_failure >= DMF_SIGNIN_FORGET_S)
            e->key[0] = '\0';
        if (e->key[0] && strcmp(e->key, key) == 0)
            return e;
    }
    return NULL;
}

/* A free slot, or the least recently failed entry's. */
static struct entry *make(struct dmf_signin_limit *l, const char *key)
{
    struct entry *victim = &l->e[0];
    for (size_t i = 0; i < DMF_SIGNIN_KEYS; i++) {
        if (l->e[i].key[0] == '\0') {
            victim = &l->e[i];
            break;
        }
        if (l->e[i].last_failure < victim->last_failure)
            victim = &l->e[i];
    }
    memset(victim, 0, sizeof(*victim));
    snprintf(victim->key, sizeof(victim->key), "%s", key);
    return victim;
}

static int64_t wait_of(const struct entry *e, int64_t now)
{
    return e && e->locked_until > now ? e->locked_until - now : 0;
}

int64_t dmf_signin_limit_check(struct dmf_signin_limit *l, const char *addr, const char *name,
                               int64_t now)
{
    char ka[DMF_SIGNIN_KEY_MAX + 1], kn[DMF_SIGNIN_KEY_MAX + 1];
    keys_of(addr, name, ka, kn);
    pthread_mutex_lock(&l->mu);
    int64_t a = wait_of(find(l, ka, now), now), n = wait_of(find(l, kn, now), now);
    pthread_mutex_unlock(&l->mu);
    return a > n ? a : n;
}

static void fail_key(struct dmf_signin_limit *l, const char *key, int64_t now)
{
    struct entry *e = find(l, key, now);
    if (e == NULL)
        e = make(l, key);
    e->failures++;
    e->last_failure = now;
    if (e->failures >= DMF_SIGNIN_FREE_FAILURES) {
        uint32_t over = e->failures - DMF_SIGNIN_FREE_FAILURES;
        int64_t lock = over >= 10 ? DMF_SIGNIN_MAX_LOCK_S : (int64_t)1 << over;
        e->locked_until = now + (lock < DMF_SIGNIN_MAX_LOCK_S ? lock : DMF_SIGNIN_MAX_LOCK_S);
    }
}

void dmf_signin_limit_failed(struct dmf_signin_limit *l, const char *addr, const char *name,
                             int64_t now)
{
    char ka[DMF_SIGNIN_KEY_MAX + 1], kn[DMF_SIGNIN_KEY_MAX + 1];
    keys_of(addr, name, ka, kn);
    pthread_mutex_lock(&l->mu);
    fail_key(l, ka, now);
    fail_key(l, kn, now);
    pthread_mutex_unlock(&l->mu);
}

void dmf_signin_limit_succeeded(struct dmf_signin_limit *l, const char *addr, const char *name)
{
    char ka[DMF_SIGNIN_KEY_MAX + 1], kn[DMF_SIGNIN_KEY_MAX + 1];
    keys_of(addr, name, ka, kn);
    pthread_mutex_lock(&l->mu);
    for (size_t i = 0; i < DMF_SIGNIN_KEYS; i++)
        if (strcmp(l->e[i].key, ka) == 0 || strcmp(l->e[i].key, kn) == 0)
            l->e[i].key[0] = '\0';
    pthread_mutex_unlock(&l->mu);
}

void dmf_signin_addr_of(const char *peer, char *out, size_t outlen)
{
    const char *p = peer ? peer : "";
    size_t n;
    if (p[0] == '[') {
        const char *close = strchr(p, ']');
        n = close ? (size_t)(close - p - 1) : strlen(p + 1);
        p++;
    } else {
        const char *colon = strrchr(p, ':');
        /* One colon: host:port; more: a bare IPv6 address (evhttp gives no brackets). */
        n = colon && strchr(p, ':') == colon ? (size_t)(colon - p) : strlen(p);
    }
    snprintf(out, outlen, "%.*s", (int)n, p);
}
