/* Fuzzes the decoding of the scheduler's AnnouncePeer answers (a scheduler, or whatever
 * answers on its address, is untrusted input to a daemon): whatever decodes, every
 * candidate handed to the task is well-formed and never this host, and every digest is
 * 32 bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/peer/announce.h"

#define SELF "self-host"

static void check_meta(const struct dmf_announce_meta *m)
{
    if (m->content_length < -1)
        abort();
    for (size_t i = 0; i < m->ndigests; i++)
        if (m->digests[i].sha256 == NULL)
            abort();
}

static void on_candidates(void *arg, const struct dmf_parent_info *p, size_t n, bool seed,
                          const struct dmf_announce_meta *m)
{
    for (size_t i = 0; i < n; i++)
        if (p[i].ip == NULL || p[i].ip[0] == '\0' || strlen(p[i].ip) > 64 || p[i].port == 0 ||
            p[i].host_id == NULL || p[i].host_id[0] == '\0' || strcmp(p[i].host_id, SELF) == 0 ||
            p[i].peer_id == NULL)
            abort();
    check_meta(m);
}

static void on_meta(void *arg, const struct dmf_announce_meta *m)
{
    check_meta(m);
}

static void on_back_to_source(void *arg, const char *reason)
{
    if (reason == NULL)
        abort();
}

static void on_failed(void *arg, const char *reason, uint32_t origin_status, bool changed)
{
    if (reason == NULL || reason[0] == '\0')
        abort(); /* always a reason to show the user */
}

static void on_lost(void *arg, const char *details)
{
    abort(); /* decoding never ends a stream */
}

static const struct dmf_announce_sink sink = {
    .candidates = on_candidates,
    .meta = on_meta,
    .back_to_source = on_back_to_source,
    .failed = on_failed,
    .lost = on_lost,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    dmf_announce_decode(data, size, SELF, &sink, NULL);
    return 0;
}
