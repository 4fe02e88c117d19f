/* Digest provenance decisions; see provenance.h. */
#include "scheduler/provenance.h"

#include <errno.h>
#include <string.h>

#include "common/util.h"

int dmf_digest_sources_parse(const char *s, enum dmf_digest_sources *out)
{
    if (s != NULL && strcmp(s, "fetchers") == 0)
        *out = DMF_DIGEST_SOURCES_FETCHERS;
    else if (s != NULL && strcmp(s, "seeds") == 0)
        *out = DMF_DIGEST_SOURCES_SEEDS;
    else
        return -EINVAL;
    return 0;
}

const char *dmf_digest_sources_name(enum dmf_digest_sources p)
{
    return p == DMF_DIGEST_SOURCES_SEEDS ? "seeds" : "fetchers";
}

bool dmf_provenance_trusted(enum dmf_digest_sources policy, const struct dmf_provenance_reporter *r)
{
    if (r->seed_host)
        return true;
    return policy == DMF_DIGEST_SOURCES_FETCHERS && r->source_ordered;
}

enum dmf_provenance_verdict dmf_provenance_judge(enum dmf_digest_sources policy,
                                                 const struct dmf_provenance_reporter *r,
                                                 const uint8_t *have, bool have_from_seed,
                                                 const uint8_t got[DMF_SHA256_LEN])
{
    if (!dmf_provenance_trusted(policy, r))
        return DMF_PROV_UNTRUSTED;
    if (have == NULL)
        return DMF_PROV_NEW;
    if (memcmp(have, got, DMF_SHA256_LEN) == 0)
        return DMF_PROV_SAME;
    if (r->seed_host && !have_from_seed)
        return DMF_PROV_SEED_OVERRULES;
    if (!r->seed_host && have_from_seed)
        return DMF_PROV_SEED_STANDS;
    return DMF_PROV_CONFLICT;
}

const char *dmf_provenance_verdict_name(enum dmf_provenance_verdict v)
{
    static const char *const names[] = {"untrusted",      "new",         "same",
                                        "seed overrules", "seed stands", "conflict"};
    return (unsigned)v < DMF_ARRAY_SIZE(names) ? names[v] : "?";
}

enum dmf_validators_verdict dmf_provenance_validators(bool pinned, bool pinned_trusted,
                                                      bool reporter_trusted, bool reported)
{
    if (!reported)
        return DMF_VAL_KEEP;
    if (!pinned)
        return DMF_VAL_PIN;
    if (!reporter_trusted)
        return DMF_VAL_KEEP;
    return pinned_trusted ? DMF_VAL_FILL : DMF_VAL_REPLACE;
}

bool dmf_provenance_refuses_version(bool pinned_trusted, bool differs)
{
    return pinned_trusted && differs;
}
