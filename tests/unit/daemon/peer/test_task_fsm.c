/* The task state machine (src/daemon/peer/task_fsm.c): every event in every state, as
 * tables of (from, event, facts) -> (to, actions), plus properties over the whole space
 * (nothing leaves a finished state but START, names exist for every value). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "daemon/peer/task_fsm.h"

#define FACTS(...) ((struct dmf_task_facts){__VA_ARGS__})
#define NO_FACTS   FACTS(.usable_parents = 0)

/* Sets of states, as bit masks. */
#define S(x)     (1u << DMF_TASK_##x)
#define RUNNING  (S(REGISTERING) | S(P2P) | S(BACK_TO_SOURCE) | S(VERIFYING))
#define FINISHED (S(IDLE) | S(SUCCEEDED) | S(FAILED))
#define ALL      (RUNNING | FINISHED)

enum {
    RECORD_ERROR = DMF_TASK_DO_RECORD_ERROR,
    FAIL_NO_SOURCE = DMF_TASK_DO_FAIL_NO_SOURCE,
    REGISTER = DMF_TASK_DO_REGISTER,
    START_SOURCE = DMF_TASK_DO_START_SOURCE,
    APPLY_META = DMF_TASK_DO_APPLY_META,
    ADD_PARENTS = DMF_TASK_DO_ADD_PARENTS,
    DISPATCH_PARENTS = DMF_TASK_DO_DISPATCH_PARENTS,
    DISPATCH_SOURCE = DMF_TASK_DO_DISPATCH_SOURCE,
    VERIFY = DMF_TASK_DO_VERIFY,
    DROP_PIECES = DMF_TASK_DO_DROP_PIECES,
    FINISH = DMF_TASK_DO_FINISH,
    TELL = DMF_TASK_DO_TELL,
    KICK = DMF_TASK_DO_KICK,
    WARN_LOST = DMF_TASK_DO_WARN_LOST,
    RESCHEDULE = DMF_TASK_DO_RESCHEDULE,
};

/* One expected decision. */
struct row {
    enum dmf_task_state from;
    struct dmf_task_facts facts;
    enum dmf_task_state to;
    unsigned actions;
};

static void expect(enum dmf_task_state from, enum dmf_task_event ev, struct dmf_task_facts f,
                   enum dmf_task_state to, unsigned actions)
{
    struct dmf_task_step s = dmf_task_next(from, ev, &f);
    if (s.to != to || s.actions != actions)
        fail_msg("%s in %s (held %d sched %d no-bts %d digest %d error %d parents %d): got %s "
                 "0x%x, want %s 0x%x",
                 dmf_task_event_name(ev), dmf_task_state_name(from), f.all_held, f.has_scheduler,
                 f.back_to_source_disabled, f.expect_digest, f.has_error, f.usable_parents,
                 dmf_task_state_name(s.to), s.actions, dmf_task_state_name(to), actions);
}

static void expect_rows(enum dmf_task_event ev, const struct row *rows, size_t n)
{
    for (size_t i = 0; i < n; i++)
        expect(rows[i].from, ev, rows[i].facts, rows[i].to, rows[i].actions);
}
#define EXPECT_ROWS(ev, rows) expect_rows(ev, rows, sizeof(rows) / sizeof(rows[0]))

/* ev in each state of the mask, with facts f, changes nothing and does nothing. */
static void expect_ignored(unsigned states, enum dmf_task_event ev, struct dmf_task_facts f)
{
    for (int s = 0; s < DMF_TASK_NSTATES; s++)
        if (states & (1u << s))
            expect((enum dmf_task_state)s, ev, f, (enum dmf_task_state)s, 0);
}

/* A spread of facts, for the properties that must hold whatever the task knows. */
static struct dmf_task_facts facts_from_bits(unsigned bits)
{
    return FACTS(.all_held = bits & 1, .has_scheduler = bits & 2,
                 .back_to_source_disabled = bits & 4, .expect_digest = bits & 8,
                 .has_error = bits & 16, .usable_parents = (bits & 32) ? 3 : 0,
                 .needs_check = bits & 64);
}
#define NFACTS 128u

static void test_start(void **state)
{
    /* A download under way ignores START, whatever the facts. */
    for (unsigned b = 0; b < NFACTS; b++)
        expect_ignored(RUNNING, DMF_TASK_EV_START, facts_from_bits(b));
    static const struct row rows[] = {
        /* Everything held: done at once, from the cache (even with a scheduler). */
        {DMF_TASK_IDLE, FACTS(.all_held = true), DMF_TASK_SUCCEEDED, KICK},
        {DMF_TASK_IDLE, FACTS(.all_held = true, .has_scheduler = true), DMF_TASK_SUCCEEDED, KICK},
        {DMF_TASK_FAILED, FACTS(.all_held = true), DMF_TASK_SUCCEEDED, KICK},
        {DMF_TASK_SUCCEEDED, FACTS(.all_held = true), DMF_TASK_SUCCEEDED, KICK},
        /* Held but not verified in this session (a restart, a changed data file), or a
         * content digest asked for: the cache is checked first. */
        {DMF_TASK_IDLE, FACTS(.all_held = true, .needs_check = true), DMF_TASK_VERIFYING, VERIFY},
        {DMF_TASK_SUCCEEDED, FACTS(.all_held = true, .expect_digest = true), DMF_TASK_VERIFYING,
         VERIFY},
        {DMF_TASK_FAILED, FACTS(.all_held = true, .needs_check = true, .has_scheduler = true),
         DMF_TASK_VERIFYING, VERIFY},
        /* With a scheduler: register (back-to-source disabled or not). */
        {DMF_TASK_IDLE, FACTS(.has_scheduler = true), DMF_TASK_REGISTERING, REGISTER},
        {DMF_TASK_FAILED, FACTS(.has_scheduler = true), DMF_TASK_REGISTERING, REGISTER},
        {DMF_TASK_SUCCEEDED, FACTS(.has_scheduler = true), DMF_TASK_REGISTERING, REGISTER},
        {DMF_TASK_IDLE, FACTS(.has_scheduler = true, .back_to_source_disabled = true),
         DMF_TASK_REGISTERING, REGISTER},
        /* Without one: straight to the origin. */
        {DMF_TASK_IDLE, NO_FACTS, DMF_TASK_BACK_TO_SOURCE, START_SOURCE},
        {DMF_TASK_FAILED, NO_FACTS, DMF_TASK_BACK_TO_SOURCE, START_SOURCE},
        {DMF_TASK_SUCCEEDED, NO_FACTS, DMF_TASK_BACK_TO_SOURCE, START_SOURCE},
        /* Neither a scheduler nor the origin: the task enters a running state
         * (REGISTERING, without registering) so that the KICK pass fails it through
         * FINISH and the watchers are told (see test_start_without_any_way). */
        {DMF_TASK_IDLE, FACTS(.back_to_source_disabled = true), DMF_TASK_REGISTERING,
         FAIL_NO_SOURCE | KICK},
        {DMF_TASK_FAILED, FACTS(.back_to_source_disabled = true), DMF_TASK_REGISTERING,
         FAIL_NO_SOURCE | KICK},
        {DMF_TASK_SUCCEEDED, FACTS(.back_to_source_disabled = true), DMF_TASK_REGISTERING,
         FAIL_NO_SOURCE | KICK},
    };
    EXPECT_ROWS(DMF_TASK_EV_START, rows);
}

/* START with no way to the content, followed by the KICK pass it asks for (the failure is
 * recorded by then): FAILED through FINISH, from whichever state the task was in. */
static void test_start_without_any_way(void **state)
{
    static const enum dmf_task_state from[] = {DMF_TASK_IDLE, DMF_TASK_FAILED, DMF_TASK_SUCCEEDED};
    for (size_t i = 0; i < sizeof(from) / sizeof(from[0]); i++) {
        struct dmf_task_facts f = FACTS(.back_to_source_disabled = true);
        struct dmf_task_step s = dmf_task_next(from[i], DMF_TASK_EV_START, &f);
        f.has_error = true;
        s = dmf_task_next(s.to, DMF_TASK_EV_KICK, &f);
        assert_int_equal(s.to, DMF_TASK_FAILED);
        assert_int_equal(s.actions, FINISH);
    }
}

/* ev while the scheduler is asked (REGISTERING, P2P), whatever the facts: from
 * REGISTERING to from_registering, P2P stays; actions both times; ignored elsewhere. */
static void expect_while_asking(enum dmf_task_event ev, enum dmf_task_state from_registering,
                                unsigned actions)
{
    for (unsigned b = 0; b < NFACTS; b++) {
        struct dmf_task_facts f = facts_from_bits(b);
        expect(DMF_TASK_REGISTERING, ev, f, from_registering, actions);
        expect(DMF_TASK_P2P, ev, f, DMF_TASK_P2P, actions);
        expect_ignored(ALL & ~(S(REGISTERING) | S(P2P)), ev, f);
    }
}

static void test_candidates(void **state)
{
    expect_while_asking(DMF_TASK_EV_CANDIDATES, DMF_TASK_P2P, APPLY_META | ADD_PARENTS | KICK);
}

static void test_meta(void **state)
{
    expect_while_asking(DMF_TASK_EV_META, DMF_TASK_REGISTERING, APPLY_META);
}

static void test_sched_back_to_source(void **state)
{
    static const struct row rows[] = {
        {DMF_TASK_REGISTERING, NO_FACTS, DMF_TASK_BACK_TO_SOURCE, START_SOURCE},
        {DMF_TASK_P2P, FACTS(.has_scheduler = true, .usable_parents = 2), DMF_TASK_BACK_TO_SOURCE,
         START_SOURCE},
        /* Disabled: the failure is recorded and acted on in the next pass. */
        {DMF_TASK_REGISTERING, FACTS(.back_to_source_disabled = true), DMF_TASK_REGISTERING,
         FAIL_NO_SOURCE | KICK},
        {DMF_TASK_P2P, FACTS(.back_to_source_disabled = true), DMF_TASK_P2P, FAIL_NO_SOURCE | KICK},
    };
    EXPECT_ROWS(DMF_TASK_EV_SCHED_BACK_TO_SOURCE, rows);
    expect_ignored(ALL & ~(S(REGISTERING) | S(P2P)), DMF_TASK_EV_SCHED_BACK_TO_SOURCE, NO_FACTS);
    expect_ignored(ALL & ~(S(REGISTERING) | S(P2P)), DMF_TASK_EV_SCHED_BACK_TO_SOURCE,
                   FACTS(.back_to_source_disabled = true));
}

static void test_sched_lost(void **state)
{
    static const struct row rows[] = {
        /* Before any parent: the origin is the only way left. */
        {DMF_TASK_REGISTERING, NO_FACTS, DMF_TASK_BACK_TO_SOURCE, START_SOURCE},
        {DMF_TASK_REGISTERING, FACTS(.back_to_source_disabled = true), DMF_TASK_REGISTERING,
         FAIL_NO_SOURCE | KICK},
        /* With parents, or the origin: go on with them, say so, reconnect later. */
        {DMF_TASK_P2P, NO_FACTS, DMF_TASK_P2P, WARN_LOST},
        {DMF_TASK_P2P, FACTS(.usable_parents = 3), DMF_TASK_P2P, WARN_LOST},
        {DMF_TASK_P2P, FACTS(.back_to_source_disabled = true), DMF_TASK_P2P, WARN_LOST},
        {DMF_TASK_BACK_TO_SOURCE, NO_FACTS, DMF_TASK_BACK_TO_SOURCE, WARN_LOST},
    };
    EXPECT_ROWS(DMF_TASK_EV_SCHED_LOST, rows);
    for (unsigned b = 0; b < NFACTS; b++)
        expect_ignored(ALL & ~(S(REGISTERING) | S(P2P) | S(BACK_TO_SOURCE)), DMF_TASK_EV_SCHED_LOST,
                       facts_from_bits(b));
}

static void test_reconnect(void **state)
{
    static const struct row rows[] = {
        {DMF_TASK_P2P, FACTS(.has_scheduler = true), DMF_TASK_P2P, REGISTER},
        {DMF_TASK_BACK_TO_SOURCE, FACTS(.has_scheduler = true), DMF_TASK_BACK_TO_SOURCE, REGISTER},
        /* A stream opened meanwhile (a rejoin) needs no second one. */
        {DMF_TASK_P2P, FACTS(.has_scheduler = true, .announced = true), DMF_TASK_P2P, 0},
        {DMF_TASK_P2P, NO_FACTS, DMF_TASK_P2P, 0},
    };
    EXPECT_ROWS(DMF_TASK_EV_RECONNECT, rows);
    for (unsigned b = 0; b < NFACTS; b++)
        expect_ignored(ALL & ~(S(P2P) | S(BACK_TO_SOURCE)), DMF_TASK_EV_RECONNECT,
                       facts_from_bits(b));
}

static void test_stalled(void **state)
{
    static const struct row rows[] = {
        /* No parent left: the origin at once. */
        {DMF_TASK_P2P, FACTS(.stalls = 1), DMF_TASK_BACK_TO_SOURCE, START_SOURCE},
        {DMF_TASK_P2P, FACTS(.back_to_source_disabled = true, .stalls = 1), DMF_TASK_P2P,
         FAIL_NO_SOURCE | KICK},
        /* Parents that send nothing: first new parents from the scheduler, then the origin,
         * then (origin forbidden) a failure. */
        {DMF_TASK_P2P, FACTS(.usable_parents = 2, .announced = true, .stalls = 1), DMF_TASK_P2P,
         RESCHEDULE},
        {DMF_TASK_P2P, FACTS(.usable_parents = 2, .announced = true, .stalls = 2),
         DMF_TASK_BACK_TO_SOURCE, START_SOURCE},
        {DMF_TASK_P2P,
         FACTS(.usable_parents = 2, .announced = true, .stalls = 2,
               .back_to_source_disabled = true),
         DMF_TASK_P2P, FAIL_NO_SOURCE | KICK},
        /* The stream is lost: one more deadline for the reconnect, then the origin. */
        {DMF_TASK_P2P, FACTS(.usable_parents = 2, .stalls = 1), DMF_TASK_P2P, 0},
        {DMF_TASK_P2P, FACTS(.usable_parents = 2, .stalls = 2), DMF_TASK_BACK_TO_SOURCE,
         START_SOURCE},
        /* The scheduler never answered the register. */
        {DMF_TASK_REGISTERING, FACTS(.announced = true, .stalls = 1), DMF_TASK_BACK_TO_SOURCE,
         START_SOURCE},
        /* The origin sends nothing: the download fails (the first reason wins). */
        {DMF_TASK_BACK_TO_SOURCE, FACTS(.stalls = 1), DMF_TASK_BACK_TO_SOURCE, RECORD_ERROR | KICK},
        {DMF_TASK_BACK_TO_SOURCE, FACTS(.stalls = 1, .has_error = true), DMF_TASK_BACK_TO_SOURCE,
         0},
    };
    EXPECT_ROWS(DMF_TASK_EV_STALLED, rows);
    for (unsigned b = 0; b < NFACTS; b++)
        expect_ignored(ALL & ~(S(P2P) | S(REGISTERING) | S(BACK_TO_SOURCE)), DMF_TASK_EV_STALLED,
                       facts_from_bits(b));
}

static void test_error(void **state)
{
    for (int s = 0; s < DMF_TASK_NSTATES; s++) {
        if (!(RUNNING & (1u << s)))
            continue;
        expect((enum dmf_task_state)s, DMF_TASK_EV_ERROR, NO_FACTS, (enum dmf_task_state)s,
               RECORD_ERROR | KICK);
        /* The first failure wins. */
        expect_ignored(1u << s, DMF_TASK_EV_ERROR, FACTS(.has_error = true));
    }
    for (unsigned b = 0; b < NFACTS; b++)
        expect_ignored(FINISHED, DMF_TASK_EV_ERROR, facts_from_bits(b));
}

static void test_kick(void **state)
{
    static const struct row rows[] = {
        /* A recorded failure ends a download... */
        {DMF_TASK_REGISTERING, FACTS(.has_error = true), DMF_TASK_FAILED, FINISH},
        {DMF_TASK_P2P, FACTS(.has_error = true, .all_held = true), DMF_TASK_FAILED, FINISH},
        {DMF_TASK_BACK_TO_SOURCE, FACTS(.has_error = true), DMF_TASK_FAILED, FINISH},
        /* ... but not while the content is being hashed (the verdict decides). */
        {DMF_TASK_VERIFYING, FACTS(.has_error = true), DMF_TASK_VERIFYING, TELL},
        /* Under way: dispatch to whoever serves this state, tell the watchers. */
        {DMF_TASK_REGISTERING, NO_FACTS, DMF_TASK_REGISTERING, TELL},
        {DMF_TASK_P2P, NO_FACTS, DMF_TASK_P2P, DISPATCH_PARENTS | TELL},
        {DMF_TASK_BACK_TO_SOURCE, NO_FACTS, DMF_TASK_BACK_TO_SOURCE, DISPATCH_SOURCE | TELL},
        {DMF_TASK_VERIFYING, NO_FACTS, DMF_TASK_VERIFYING, TELL},
        /* Everything held: hash it when a digest was asked for, else done. */
        {DMF_TASK_REGISTERING, FACTS(.all_held = true), DMF_TASK_SUCCEEDED, FINISH},
        {DMF_TASK_P2P, FACTS(.all_held = true), DMF_TASK_SUCCEEDED, DISPATCH_PARENTS | FINISH},
        {DMF_TASK_BACK_TO_SOURCE, FACTS(.all_held = true), DMF_TASK_SUCCEEDED,
         DISPATCH_SOURCE | FINISH},
        {DMF_TASK_REGISTERING, FACTS(.all_held = true, .expect_digest = true), DMF_TASK_VERIFYING,
         VERIFY},
        {DMF_TASK_P2P, FACTS(.all_held = true, .expect_digest = true), DMF_TASK_VERIFYING,
         DISPATCH_PARENTS | VERIFY},
        {DMF_TASK_BACK_TO_SOURCE, FACTS(.all_held = true, .expect_digest = true),
         DMF_TASK_VERIFYING, DISPATCH_SOURCE | VERIFY},
        /* Hashing already: not again. */
        {DMF_TASK_VERIFYING, FACTS(.all_held = true, .expect_digest = true), DMF_TASK_VERIFYING,
         TELL},
    };
    EXPECT_ROWS(DMF_TASK_EV_KICK, rows);
    /* Not running: only tell (the end, to whoever watches), whatever the facts. */
    for (unsigned b = 0; b < NFACTS; b++)
        for (int s = 0; s < DMF_TASK_NSTATES; s++)
            if (FINISHED & (1u << s))
                expect((enum dmf_task_state)s, DMF_TASK_EV_KICK, facts_from_bits(b),
                       (enum dmf_task_state)s, TELL);
}

static void test_verify_verdicts(void **state)
{
    for (unsigned b = 0; b < NFACTS; b++) {
        struct dmf_task_facts f = facts_from_bits(b);
        expect(DMF_TASK_VERIFYING, DMF_TASK_EV_VERIFIED, f, DMF_TASK_SUCCEEDED, FINISH);
        expect(DMF_TASK_VERIFYING, DMF_TASK_EV_VERIFY_FAILED, f, DMF_TASK_FAILED,
               DROP_PIECES | FINISH);
        expect_ignored(ALL & ~S(VERIFYING), DMF_TASK_EV_VERIFIED, f);
        expect_ignored(ALL & ~S(VERIFYING), DMF_TASK_EV_VERIFY_FAILED, f);
    }
}

/* Over every state, event and spread of facts: a task that is not running gets to a
 * running state only by START, and then only to REGISTERING or BACK_TO_SOURCE, or to
 * VERIFYING when everything is held but must be checked (the
 * REGISTERING without a scheduler being the back-to-source-disabled failure). */
/* Cached pieces that failed their digests were dropped: fetched again, as a download. */
static void test_check_dropped(void **state)
{
    static const struct row rows[] = {
        {DMF_TASK_VERIFYING, FACTS(.has_scheduler = true), DMF_TASK_REGISTERING, REGISTER},
        {DMF_TASK_VERIFYING, NO_FACTS, DMF_TASK_BACK_TO_SOURCE, START_SOURCE},
        {DMF_TASK_VERIFYING, FACTS(.back_to_source_disabled = true), DMF_TASK_REGISTERING,
         FAIL_NO_SOURCE | KICK},
    };
    EXPECT_ROWS(DMF_TASK_EV_CHECK_DROPPED, rows);
    for (unsigned b = 0; b < NFACTS; b++)
        expect_ignored(ALL & ~S(VERIFYING), DMF_TASK_EV_CHECK_DROPPED, facts_from_bits(b));
}

static void test_no_restart_but_start(void **state)
{
    for (unsigned b = 0; b < NFACTS; b++) {
        struct dmf_task_facts f = facts_from_bits(b);
        for (int s = 0; s < DMF_TASK_NSTATES; s++) {
            if (dmf_task_state_running((enum dmf_task_state)s))
                continue;
            for (int ev = 0; ev < DMF_TASK_NEVENTS; ev++) {
                struct dmf_task_step st =
                    dmf_task_next((enum dmf_task_state)s, (enum dmf_task_event)ev, &f);
                if (!dmf_task_state_running(st.to))
                    continue;
                if (ev != DMF_TASK_EV_START)
                    fail_msg("%s leads from %s to %s", dmf_task_event_name(ev),
                             dmf_task_state_name(s), dmf_task_state_name(st.to));
                if (st.to == DMF_TASK_REGISTERING && !f.has_scheduler) {
                    assert_true(f.back_to_source_disabled);
                    assert_int_equal(st.actions, FAIL_NO_SOURCE | KICK);
                } else if (st.to == DMF_TASK_VERIFYING) {
                    assert_true(f.all_held && (f.expect_digest || f.needs_check));
                    assert_int_equal(st.actions, VERIFY);
                } else {
                    assert_true(st.to == DMF_TASK_REGISTERING || st.to == DMF_TASK_BACK_TO_SOURCE);
                }
            }
        }
    }
}

/* An event past the enum (a newer caller, a corrupt value) changes nothing. */
static void test_unknown_event(void **state)
{
    for (unsigned b = 0; b < NFACTS; b++)
        expect_ignored(ALL, (enum dmf_task_event)DMF_TASK_NEVENTS, facts_from_bits(b));
}

static void test_names(void **state)
{
    static const char *const states[] = {"IDLE",      "REGISTERING", "P2P",   "BACK_TO_SOURCE",
                                         "VERIFYING", "SUCCEEDED",   "FAILED"};
    assert_int_equal(sizeof(states) / sizeof(states[0]), DMF_TASK_NSTATES);
    for (int s = 0; s < DMF_TASK_NSTATES; s++) {
        assert_non_null(dmf_task_state_name((enum dmf_task_state)s));
        assert_string_equal(dmf_task_state_name((enum dmf_task_state)s), states[s]);
    }
    for (int ev = 0; ev < DMF_TASK_NEVENTS; ev++) {
        const char *name = dmf_task_event_name((enum dmf_task_event)ev);
        assert_non_null(name);
        assert_true(name[0] != '\0' && name[0] != '?');
    }
    assert_string_equal(dmf_task_state_name((enum dmf_task_state)DMF_TASK_NSTATES), "?");
    assert_string_equal(dmf_task_event_name((enum dmf_task_event)DMF_TASK_NEVENTS), "?");
    assert_string_equal(dmf_task_state_name((enum dmf_task_state) - 1), "?");
    assert_true(dmf_task_state_running(DMF_TASK_VERIFYING));
    assert_false(dmf_task_state_running(DMF_TASK_IDLE));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_start),
        cmocka_unit_test(test_start_without_any_way),
        cmocka_unit_test(test_candidates),
        cmocka_unit_test(test_meta),
        cmocka_unit_test(test_sched_back_to_source),
        cmocka_unit_test(test_sched_lost),
        cmocka_unit_test(test_stalled),
        cmocka_unit_test(test_reconnect),
        cmocka_unit_test(test_error),
        cmocka_unit_test(test_kick),
        cmocka_unit_test(test_verify_verdicts),
        cmocka_unit_test(test_check_dropped),
        cmocka_unit_test(test_no_restart_but_start),
        cmocka_unit_test(test_unknown_event),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
