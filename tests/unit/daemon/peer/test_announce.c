/* Decoding what the scheduler answers on an AnnouncePeer stream (dmf_announce_decode in
 * src/daemon/peer/announce.c): real AnnouncePeerResponse messages, packed with protobuf-c,
 * decoded into a sink that records what it is told. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "daemon/peer/announce.h"
#include "damselfly/v1/scheduler.pb-c.h"

#define SELF "host-self"
#define MIB  (1u << 20)

/* What the sink was told, copied out of the borrowed callback arguments. */
struct rec {
    int ncandidates, nmeta, nback, nlost, nfailed;
    uint32_t origin_status;
    struct {
        char peer_id[80], host_id[80], ip[80];
        uint16_t port;
        bool is_seed;
    } parents[8];
    size_t nparents;
    bool seed_triggered;
    struct dmf_announce_meta meta; /* digests not kept: see numbers and first_sha */
    uint32_t numbers[8];
    uint8_t first_sha[DMF_SHA256_LEN];
    char reason[128];
};

static struct rec rec;

static void keep_meta(const struct dmf_announce_meta *m)
{
    rec.meta = *m;
    rec.meta.digests = NULL;
    assert_true(m->ndigests <= 8);
    for (size_t i = 0; i < m->ndigests; i++)
        rec.numbers[i] = m->digests[i].number;
    if (m->ndigests)
        memcpy(rec.first_sha, m->digests[0].sha256, DMF_SHA256_LEN);
}

static void on_candidates(void *arg, const struct dmf_parent_info *parents, size_t n,
                          bool seed_triggered, const struct dmf_announce_meta *meta)
{
    assert_ptr_equal(arg, &rec);
    assert_true(n <= 8);
    rec.ncandidates++;
    rec.nparents = n;
    rec.seed_triggered = seed_triggered;
    for (size_t i = 0; i < n; i++) {
        snprintf(rec.parents[i].peer_id, sizeof(rec.parents[i].peer_id), "%s", parents[i].peer_id);
        snprintf(rec.parents[i].host_id, sizeof(rec.parents[i].host_id), "%s", parents[i].host_id);
        snprintf(rec.parents[i].ip, sizeof(rec.parents[i].ip), "%s", parents[i].ip);
        rec.parents[i].port = parents[i].port;
        rec.parents[i].is_seed = parents[i].is_seed;
    }
    keep_meta(meta);
}

static void on_meta(void *arg, const struct dmf_announce_meta *meta)
{
    rec.nmeta++;
    keep_meta(meta);
}

static void on_back_to_source(void *arg, const char *reason)
{
    rec.nback++;
    assert_non_null(reason);
    snprintf(rec.reason, sizeof(rec.reason), "%s", reason);
}

static void on_failed(void *arg, const char *reason, uint32_t origin_status, bool changed)
{
    rec.nfailed++;
    rec.origin_status = origin_status;
    snprintf(rec.reason, sizeof(rec.reason), "%s", reason);
}

static void on_lost(void *arg, const char *details)
{
    rec.nlost++;
}

static const struct dmf_announce_sink sink = {
    .candidates = on_candidates,
    .meta = on_meta,
    .back_to_source = on_back_to_source,
    .failed = on_failed,
    .lost = on_lost,
};

static int decode_bytes(const uint8_t *data, size_t len)
{
    memset(&rec, 0, sizeof(rec));
    return dmf_announce_decode(data, len, SELF, &sink, &rec);
}

/* Packs m and decodes it; the decoding must succeed. */
static void decode(const Damselfly__V1__AnnouncePeerResponse *m)
{
    size_t len = damselfly__v1__announce_peer_response__get_packed_size(m);
    uint8_t *buf = malloc(len + 1);
    assert_int_equal(damselfly__v1__announce_peer_response__pack(m, buf), len);
    assert_int_equal(decode_bytes(buf, len), 0);
    free(buf);
}

static Damselfly__V1__Parent parent(const char *host_id, const char *ip, uint32_t port)
{
    Damselfly__V1__Parent p = DAMSELFLY__V1__PARENT__INIT;
    p.peer_id = "peer-of-";
    p.host_id = (char *)host_id;
    p.ip = (char *)ip;
    p.piece_port = port;
    return p;
}

/* Wraps one message in an AnnouncePeerResponse, decodes it, and checks that exactly one
 * callback was called, the one counted by *called. */
static void decode_one(Damselfly__V1__AnnouncePeerResponse__MsgCase msg_case, void *msg,
                       const int *called)
{
    Damselfly__V1__AnnouncePeerResponse m = DAMSELFLY__V1__ANNOUNCE_PEER_RESPONSE__INIT;
    m.msg_case = msg_case;
    m.candidates = msg; /* a union: any member */
    decode(&m);
    assert_int_equal(*called, 1);
    assert_int_equal(rec.ncandidates + rec.nmeta + rec.nback + rec.nlost + rec.nfailed, 1);
}

/* Candidates of n parents (and task, may be NULL). */
static void decode_candidates(Damselfly__V1__Parent *parents, size_t n, bool seed_triggered,
                              Damselfly__V1__TaskMeta *task)
{
    Damselfly__V1__Parent *ptrs[16];
    assert_true(n <= 16);
    for (size_t i = 0; i < n; i++)
        ptrs[i] = &parents[i];
    Damselfly__V1__Candidates c = DAMSELFLY__V1__CANDIDATES__INIT;
    c.n_parents = n;
    c.parents = ptrs;
    c.seed_triggered = seed_triggered;
    c.task = task;
    decode_one(DAMSELFLY__V1__ANNOUNCE_PEER_RESPONSE__MSG_CANDIDATES, &c, &rec.ncandidates);
}

static void decode_task_meta(Damselfly__V1__TaskMeta *task)
{
    decode_one(DAMSELFLY__V1__ANNOUNCE_PEER_RESPONSE__MSG_TASK_META, task, &rec.nmeta);
}

static Damselfly__V1__TaskMeta task_meta(int64_t content_length, uint32_t piece_length)
{
    Damselfly__V1__TaskMeta t = DAMSELFLY__V1__TASK_META__INIT;
    t.task_id = "task";
    t.content_length = content_length;
    t.piece_length = piece_length;
    return t;
}

static void test_good_candidates(void **state)
{
    uint8_t sha[2][DMF_SHA256_LEN];
    memset(sha[0], 0x11, DMF_SHA256_LEN);
    memset(sha[1], 0x22, DMF_SHA256_LEN);
    Damselfly__V1__PieceDigest d[2] = {DAMSELFLY__V1__PIECE_DIGEST__INIT,
                                       DAMSELFLY__V1__PIECE_DIGEST__INIT};
    Damselfly__V1__PieceDigest *dp[2] = {&d[0], &d[1]};
    for (int i = 0; i < 2; i++) {
        d[i].number = (uint32_t)(7 + i);
        d[i].sha256 = (ProtobufCBinaryData){DMF_SHA256_LEN, sha[i]};
    }
    Damselfly__V1__TaskMeta t = task_meta(10 * MIB, 4 * MIB);
    t.n_digests = 2;
    t.digests = dp;
    Damselfly__V1__Parent ps[2] = {parent("host-a", "10.0.0.1", 65002),
                                   parent("host-b", "fd00::2", 1)};
    ps[0].peer_id = "peer-a";
    ps[1].peer_id = "peer-b";
    ps[1].is_seed = true;
    decode_candidates(ps, 2, true, &t);
    assert_int_equal(rec.nparents, 2);
    assert_true(rec.seed_triggered);
    assert_string_equal(rec.parents[0].peer_id, "peer-a");
    assert_string_equal(rec.parents[0].host_id, "host-a");
    assert_string_equal(rec.parents[0].ip, "10.0.0.1");
    assert_int_equal(rec.parents[0].port, 65002);
    assert_false(rec.parents[0].is_seed);
    assert_string_equal(rec.parents[1].ip, "fd00::2");
    assert_int_equal(rec.parents[1].port, 1);
    assert_true(rec.parents[1].is_seed);
    assert_true(rec.meta.has_layout);
    assert_int_equal(rec.meta.content_length, 10 * MIB);
    assert_int_equal(rec.meta.piece_length, 4 * MIB);
    assert_int_equal(rec.meta.ndigests, 2);
    assert_int_equal(rec.numbers[0], 7);
    assert_int_equal(rec.numbers[1], 8);
    assert_memory_equal(rec.first_sha, sha[0], DMF_SHA256_LEN);
}

static void test_bad_parents_dropped(void **state)
{
    char ip64[65], ip65[66];
    memset(ip64, '1', 64);
    ip64[64] = '\0';
    memset(ip65, '1', 65);
    ip65[65] = '\0';
    Damselfly__V1__Parent ps[] = {
        parent("host-empty-ip", "", 80),
        parent("host-port-0", "10.0.0.2", 0),
        parent("host-port-big", "10.0.0.3", 65536),
        parent("host-ip-long", ip65, 80),
        parent("", "10.0.0.4", 80),
        parent(SELF, "10.0.0.5", 80),
        parent("host-good", "10.0.0.6", 65535),
        parent("host-ip-64", ip64, 80),
    };
    ps[6].peer_id = ""; /* a peer id is not required */
    decode_candidates(ps, sizeof(ps) / sizeof(ps[0]), false, NULL);
    assert_int_equal(rec.nparents, 2);
    assert_string_equal(rec.parents[0].host_id, "host-good");
    assert_string_equal(rec.parents[0].peer_id, "");
    assert_int_equal(rec.parents[0].port, 65535);
    assert_string_equal(rec.parents[1].host_id, "host-ip-64");
    assert_false(rec.seed_triggered);
    /* No task meta: nothing to apply. */
    assert_false(rec.meta.has_layout);
    assert_int_equal(rec.meta.content_length, -1);
    assert_int_equal(rec.meta.ndigests, 0);
}

static void test_no_good_parent_left(void **state)
{
    Damselfly__V1__Parent ps[] = {parent(SELF, "10.0.0.1", 80)};
    /* Reported still, with no parent: the meta may matter. */
    decode_candidates(ps, 1, false, NULL);
    assert_int_equal(rec.nparents, 0);
}

static void test_bad_digests_dropped(void **state)
{
    static const size_t lens[] = {31, 0, 32, 33, 64};
    uint8_t sha[64];
    memset(sha, 0x5a, sizeof(sha));
    Damselfly__V1__PieceDigest d[5], *dp[5];
    for (size_t i = 0; i < 5; i++) {
        d[i] = (Damselfly__V1__PieceDigest)DAMSELFLY__V1__PIECE_DIGEST__INIT;
        d[i].number = (uint32_t)i;
        d[i].sha256 = (ProtobufCBinaryData){lens[i], sha};
        dp[i] = &d[i];
    }
    Damselfly__V1__TaskMeta t = task_meta(-1, 0);
    t.n_digests = 5;
    t.digests = dp;
    decode_task_meta(&t);
    assert_int_equal(rec.meta.ndigests, 1);
    assert_int_equal(rec.numbers[0], 2);
    assert_memory_equal(rec.first_sha, sha, DMF_SHA256_LEN);
    /* The same in candidates. */
    Damselfly__V1__Parent ps[] = {parent("host-a", "10.0.0.1", 80)};
    decode_candidates(ps, 1, false, &t);
    assert_int_equal(rec.meta.ndigests, 1);
    assert_int_equal(rec.numbers[0], 2);
}

static void test_layout(void **state)
{
    static const struct {
        int64_t content_length;
        uint32_t piece_length;
        bool has_layout;
        int64_t decoded_length;
    } cases[] = {
        {10 * MIB, 4 * MIB, true, 10 * MIB},
        {-1, 4 * MIB, true, -1}, /* the piece length alone (a streamed origin) */
        {0, 0, true, 0},         /* 0 bytes: nothing more to know */
        {0, 4 * MIB, true, 0},
        {-1, 0, false, -1},
        {10 * MIB, 0, false, 10 * MIB},
        {-7, 0, false, -1},
        {INT64_MIN, 4 * MIB, true, -1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        Damselfly__V1__TaskMeta t = task_meta(cases[i].content_length, cases[i].piece_length);
        decode_task_meta(&t);
        assert_int_equal(rec.meta.has_layout, cases[i].has_layout);
        assert_int_equal(rec.meta.content_length, cases[i].decoded_length);
        assert_int_equal(rec.meta.piece_length, cases[i].piece_length);
        assert_int_equal(rec.meta.ndigests, 0);
    }
}

static void expect_back_to_source(char *reason, const char *want)
{
    Damselfly__V1__BackToSource b = DAMSELFLY__V1__BACK_TO_SOURCE__INIT;
    b.reason = reason;
    decode_one(DAMSELFLY__V1__ANNOUNCE_PEER_RESPONSE__MSG_BACK_TO_SOURCE, &b, &rec.nback);
    assert_string_equal(rec.reason, want);
}

static void test_back_to_source(void **state)
{
    expect_back_to_source("no parent has it", "no parent has it");
    expect_back_to_source("", "");
    expect_back_to_source(NULL, "");
}

static void test_task_failed(void **state)
{
    Damselfly__V1__TaskFailed f = DAMSELFLY__V1__TASK_FAILED__INIT;
    f.reason = "the origin answered HTTP 404";
    f.origin_status = 404;
    decode_one(DAMSELFLY__V1__ANNOUNCE_PEER_RESPONSE__MSG_TASK_FAILED, &f, &rec.nfailed);
    assert_string_equal(rec.reason, "the origin answered HTTP 404");
    assert_int_equal(rec.origin_status, 404);
    /* Without a reason the user is still told something. */
    memset(&rec, 0, sizeof(rec));
    Damselfly__V1__TaskFailed g = DAMSELFLY__V1__TASK_FAILED__INIT;
    decode_one(DAMSELFLY__V1__ANNOUNCE_PEER_RESPONSE__MSG_TASK_FAILED, &g, &rec.nfailed);
    assert_string_equal(rec.reason, "failed");
}

static void test_garbage(void **state)
{
    static const uint8_t truncated[] = {0x0a, 0x05, 0x01}; /* field 1: 5 bytes, 1 there */
    static const uint8_t bad_varint[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                         0xff, 0xff, 0xff, 0xff, 0xff};
    static const uint8_t bad_inner[] = {0x0a, 0x02, 0x0a, 0x7f}; /* a parent past its end */
    static const uint8_t group[] = {0x0b};                       /* a start-group tag */
    const struct {
        const uint8_t *data;
        size_t len;
    } cases[] = {{truncated, sizeof(truncated)},
                 {bad_varint, sizeof(bad_varint)},
                 {bad_inner, sizeof(bad_inner)},
                 {group, sizeof(group)}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(decode_bytes(cases[i].data, cases[i].len), -EBADMSG);
        assert_int_equal(rec.ncandidates + rec.nmeta + rec.nback + rec.nlost + rec.nfailed, 0);
    }
    /* An empty message decodes, and says nothing. */
    assert_int_equal(decode_bytes((const uint8_t *)"", 0), 0);
    assert_int_equal(rec.ncandidates + rec.nmeta + rec.nback + rec.nlost + rec.nfailed, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_candidates),
        cmocka_unit_test(test_bad_parents_dropped),
        cmocka_unit_test(test_no_good_parent_left),
        cmocka_unit_test(test_bad_digests_dropped),
        cmocka_unit_test(test_layout),
        cmocka_unit_test(test_back_to_source),
        cmocka_unit_test(test_task_failed),
        cmocka_unit_test(test_garbage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
