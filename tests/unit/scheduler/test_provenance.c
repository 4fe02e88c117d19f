/* Digest provenance decisions (src/scheduler/provenance.c). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "scheduler/provenance.h"

static const struct dmf_provenance_reporter p2p = {false, false}, fetcher = {false, true},
                                            seed = {true, false}, seed_sent = {true, true};

static void test_who_counts(void **state)
{
    assert_false(dmf_provenance_trusted(DMF_DIGEST_SOURCES_FETCHERS, &p2p));
    assert_true(dmf_provenance_trusted(DMF_DIGEST_SOURCES_FETCHERS, &fetcher));
    assert_true(dmf_provenance_trusted(DMF_DIGEST_SOURCES_FETCHERS, &seed));
    assert_false(dmf_provenance_trusted(DMF_DIGEST_SOURCES_SEEDS, &p2p));
    assert_false(dmf_provenance_trusted(DMF_DIGEST_SOURCES_SEEDS, &fetcher));
    assert_true(dmf_provenance_trusted(DMF_DIGEST_SOURCES_SEEDS, &seed_sent));
}

static void test_verdicts(void **state)
{
    uint8_t a[DMF_SHA256_LEN], b[DMF_SHA256_LEN];
    memset(a, 0xaa, sizeof(a));
    memset(b, 0xbb, sizeof(b));
    enum dmf_digest_sources f = DMF_DIGEST_SOURCES_FETCHERS;
    /* Untrusted whatever is stored, even when it agrees. */
    assert_int_equal(dmf_provenance_judge(f, &p2p, NULL, false, a), DMF_PROV_UNTRUSTED);
    assert_int_equal(dmf_provenance_judge(f, &p2p, a, true, a), DMF_PROV_UNTRUSTED);
    assert_int_equal(dmf_provenance_judge(DMF_DIGEST_SOURCES_SEEDS, &fetcher, NULL, false, a),
                     DMF_PROV_UNTRUSTED);
    assert_int_equal(dmf_provenance_judge(f, &fetcher, NULL, false, a), DMF_PROV_NEW);
    assert_int_equal(dmf_provenance_judge(f, &fetcher, a, true, a), DMF_PROV_SAME);
    /* Disagreements: never "first wins" between equals. */
    assert_int_equal(dmf_provenance_judge(f, &fetcher, a, false, b), DMF_PROV_CONFLICT);
    assert_int_equal(dmf_provenance_judge(f, &seed, a, true, b), DMF_PROV_CONFLICT);
    assert_int_equal(dmf_provenance_judge(f, &seed, a, false, b), DMF_PROV_SEED_OVERRULES);
    assert_int_equal(dmf_provenance_judge(f, &fetcher, a, true, b), DMF_PROV_SEED_STANDS);
}

/* Validators: pinned only from a digest source; a registrant's are provisional and refuse
 * nobody; a digest source's replace them. */
static void test_validators(void **state)
{
    /* (pinned, pinned_trusted, reporter_trusted, reported) */
    assert_int_equal(dmf_provenance_validators(false, false, false, false), DMF_VAL_KEEP);
    assert_int_equal(dmf_provenance_validators(false, false, false, true), DMF_VAL_PIN);
    assert_int_equal(dmf_provenance_validators(false, false, true, true), DMF_VAL_PIN);
    assert_int_equal(dmf_provenance_validators(true, false, false, true), DMF_VAL_KEEP);
    assert_int_equal(dmf_provenance_validators(true, true, false, true), DMF_VAL_KEEP);
    assert_int_equal(dmf_provenance_validators(true, false, true, true), DMF_VAL_REPLACE);
    assert_int_equal(dmf_provenance_validators(true, true, true, true), DMF_VAL_FILL);
    assert_int_equal(dmf_provenance_validators(true, false, true, false), DMF_VAL_KEEP);
    assert_true(dmf_provenance_refuses_version(true, true));
    assert_false(dmf_provenance_refuses_version(false, true));
    assert_false(dmf_provenance_refuses_version(true, false));
}

static void test_parse(void **state)
{
    enum dmf_digest_sources p = DMF_DIGEST_SOURCES_SEEDS;
    assert_int_equal(dmf_digest_sources_parse("fetchers", &p), 0);
    assert_int_equal(p, DMF_DIGEST_SOURCES_FETCHERS);
    assert_int_equal(dmf_digest_sources_parse("seeds", &p), 0);
    assert_int_equal(p, DMF_DIGEST_SOURCES_SEEDS);
    assert_string_equal(dmf_digest_sources_name(p), "seeds");
    assert_int_equal(dmf_digest_sources_parse("anyone", &p), -EINVAL);
    assert_int_equal(dmf_digest_sources_parse(NULL, &p), -EINVAL);
    assert_int_equal(p, DMF_DIGEST_SOURCES_SEEDS);
    assert_string_equal(dmf_provenance_verdict_name(DMF_PROV_CONFLICT), "conflict");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_who_counts),
        cmocka_unit_test(test_verdicts),
        cmocka_unit_test(test_validators),
        cmocka_unit_test(test_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
