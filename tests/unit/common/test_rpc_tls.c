/* Mutual TLS in the gRPC bridge (rpc.h), with real handshakes over loopback TCP and
 * certificates from scripts/make-certs.sh: the server sees the client's certificate
 * identity; a member channel reaches only the server it expects; plaintext clients and
 * clients without a certificate never get a call through; bad files are refused. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/event.h>

#include "common/rpc.h"
#include "common/util.h"
#include "damselfly/v1/daemon.pb-c.h"

#define METHOD "/damselfly.v1.Daemon/StatTask"

static char dir[] = "/tmp/dmf-rpc-tls-XXXXXX";
static char path_buf[8][512];

static const char *path(int slot, const char *name)
{
    snprintf(path_buf[slot], sizeof(path_buf[slot]), "%s/%s", dir, name);
    return path_buf[slot];
}

static struct dmf_tls_files files_of(const char *host, int slot)
{
    char cert[64], key[64];
    snprintf(cert, sizeof(cert), "%s.pem", host);
    snprintf(key, sizeof(key), "%s.key", host);
    struct dmf_tls_files f = {
        .cert = path(slot, cert), .key = path(slot + 1, key), .ca = path(slot + 2, "ca.pem")};
    return f;
}

/* ---- a server that answers StatTask with the caller's host ID as task_id ---- */

struct server_state {
    int calls;
};

static void srv_on_message(void *arg, dmf_rpc_call_t *call, const uint8_t *data, size_t len)
{
    if (data == NULL)
        return;
    const struct dmf_tls_identity *id = dmf_rpc_call_identity(call);
    Damselfly__V1__StatLocalTaskResponse r = DAMSELFLY__V1__STAT_LOCAL_TASK_RESPONSE__INIT;
    char who[200];
    snprintf(who, sizeof(who), "%s/%s", id ? id->host_id : "-",
             id ? dmf_tls_role_name(id->role) : "-");
    r.task_id = who;
    dmf_rpc_call_send(call, &r.base);
    dmf_rpc_call_finish(call, GRPC_STATUS_OK, NULL);
}

static void srv_on_end(void *arg, dmf_rpc_call_t *call, grpc_status_code status,
                       const char *details)
{
    dmf_rpc_call_release(call);
}

static const struct dmf_rpc_call_handler srv_handler = {srv_on_message, srv_on_end};

static void on_call(void *arg, dmf_rpc_call_t *call, const char *method)
{
    struct server_state *st = arg;
    st->calls++;
    dmf_rpc_call_set_handler(call, &srv_handler, st);
}

struct result {
    bool done;
    grpc_status_code status;
    char who[200];
};

static void on_unary(void *arg, grpc_status_code status, const char *details, const uint8_t *resp,
                     size_t len)
{
    struct result *r = arg;
    r->done = true;
    r->status = status;
    if (resp) {
        Damselfly__V1__StatLocalTaskResponse *m =
            damselfly__v1__stat_local_task_response__unpack(NULL, len, resp);
        assert_non_null(m);
        snprintf(r->who, sizeof(r->who), "%s", m->task_id);
        damselfly__v1__stat_local_task_response__free_unpacked(m, NULL);
    }
}

struct fixture {
    struct event_base *base;
    dmf_rpc_t *srv_rpc, *cli_rpc, *plain_rpc;
    dmf_rpc_server_t *server;
    struct server_state st;
    char target[64];
};

static int group_setup(void **state)
{
    if (mkdtemp(dir) == NULL)
        return -1;
    /* The repository is three levels above this file (CMake compiles absolute paths). */
    char root[512];
    snprintf(root, sizeof(root), "%s", __FILE__);
    char *cut = strstr(root, "/tests/unit/common/");
    if (cut == NULL)
        return -1;
    *cut = '\0';
    char cmd[2048];
    snprintf(cmd, sizeof(cmd),
             "sh '%s/scripts/make-certs.sh' '%s' ca && "
             "sh '%s/scripts/make-certs.sh' '%s' host sch scheduler && "
             "sh '%s/scripts/make-certs.sh' '%s' host d1 peer",
             root, dir, root, dir, root, dir);
    return system(cmd) == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static int setup(void **state)
{
    struct fixture *f = dmf_xcalloc(1, sizeof(*f));
    char err[512];
    f->base = dmf_rpc_event_base_new();
    f->srv_rpc = dmf_rpc_new(f->base);
    f->cli_rpc = dmf_rpc_new(f->base);
    f->plain_rpc = dmf_rpc_new(f->base);
    struct dmf_tls_files sf = files_of("sch", 0), cf = files_of("d1", 3);
    assert_int_equal(dmf_rpc_tls_enable(f->srv_rpc, &sf, err, sizeof(err)), 0);
    assert_int_equal(dmf_rpc_tls_enable(f->cli_rpc, &cf, err, sizeof(err)), 0);
    assert_string_equal(dmf_rpc_tls_identity(f->cli_rpc)->host_id, "d1");
    assert_int_equal(dmf_rpc_tls_identity(f->srv_rpc)->role, DMF_TLS_ROLE_SCHEDULER);
    assert_null(dmf_rpc_tls_identity(f->plain_rpc));
    f->server = dmf_rpc_server_new(f->srv_rpc, on_call, &f->st);
    int port = 0;
    assert_int_equal(dmf_rpc_server_listen(f->server, "127.0.0.1:0", &port, err, sizeof(err)), 0);
    dmf_rpc_server_start(f->server);
    snprintf(f->target, sizeof(f->target), "127.0.0.1:%d", port);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    dmf_rpc_server_free(f->server);
    dmf_rpc_free(f->plain_rpc);
    dmf_rpc_free(f->cli_rpc);
    dmf_rpc_free(f->srv_rpc);
    event_base_free(f->base);
    free(f);
    return 0;
}

static struct result call_on(struct fixture *f, dmf_rpc_channel_t *ch)
{
    struct result r = {0};
    Damselfly__V1__StatLocalTaskRequest req = DAMSELFLY__V1__STAT_LOCAL_TASK_REQUEST__INIT;
    req.task_id = "t";
    dmf_rpc_unary(ch, METHOD, &req.base, 5000, on_unary, &r);
    uint64_t deadline = dmf_now_ms() + 10000;
    while (!r.done && dmf_now_ms() < deadline)
        event_base_loop(f->base, EVLOOP_ONCE);
    assert_true(r.done);
    return r;
}

static void test_server_sees_the_client_certificate(void **state)
{
    struct fixture *f = *state;
    struct dmf_tls_expect e = {.role = DMF_TLS_ROLE_SCHEDULER};
    dmf_rpc_channel_t *ch = dmf_rpc_channel_new_member(f->cli_rpc, f->target, &e);
    struct result r = call_on(f, ch);
    assert_int_equal(r.status, GRPC_STATUS_OK);
    assert_string_equal(r.who, "d1/peer");
    /* The server's host ID works as well as its role. */
    struct dmf_tls_expect by_id = {.host_id = "sch"};
    dmf_rpc_channel_t *ch2 = dmf_rpc_channel_new_member(f->cli_rpc, f->target, &by_id);
    r = call_on(f, ch2);
    assert_int_equal(r.status, GRPC_STATUS_OK);
    assert_int_equal(f->st.calls, 2);
    dmf_rpc_channel_free(ch);
    dmf_rpc_channel_free(ch2);
}

static void test_channel_refuses_an_unexpected_server(void **state)
{
    struct fixture *f = *state;
    struct dmf_tls_expect other_host = {.host_id = "seed1"};
    struct dmf_tls_expect seed_role = {.role = DMF_TLS_ROLE_SEED};
    const struct dmf_tls_expect *cases[] = {&other_host, &seed_role};
    for (size_t i = 0; i < 2; i++) {
        dmf_rpc_channel_t *ch = dmf_rpc_channel_new_member(f->cli_rpc, f->target, cases[i]);
        struct result r = call_on(f, ch);
        assert_int_not_equal(r.status, GRPC_STATUS_OK);
        dmf_rpc_channel_free(ch);
    }
    assert_int_equal(f->st.calls, 0); /* nothing reached the server */
}

static void test_plaintext_clients_never_get_in(void **state)
{
    struct fixture *f = *state;
    struct dmf_tls_expect e = {.role = DMF_TLS_ROLE_SCHEDULER};
    /* An insecure channel from a TLS process, and a member channel without TLS. */
    dmf_rpc_channel_t *a = dmf_rpc_channel_new(f->cli_rpc, f->target);
    dmf_rpc_channel_t *b = dmf_rpc_channel_new_member(f->plain_rpc, f->target, &e);
    assert_int_not_equal(call_on(f, a).status, GRPC_STATUS_OK);
    assert_int_not_equal(call_on(f, b).status, GRPC_STATUS_OK);
    assert_int_equal(f->st.calls, 0);
    dmf_rpc_channel_free(a);
    dmf_rpc_channel_free(b);
}

static void test_bad_files_are_refused(void **state)
{
    struct fixture *f = *state;
    char err[512];
    struct dmf_tls_files some = {.cert = path(6, "d1.pem")};
    assert_int_equal(dmf_rpc_tls_enable(f->plain_rpc, &some, err, sizeof(err)), -EINVAL);
    struct dmf_tls_files mismatched = files_of("d1", 3);
    mismatched.key = path(7, "sch.key");
    assert_int_equal(dmf_rpc_tls_enable(f->plain_rpc, &mismatched, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "sch.key"));
    assert_false(dmf_rpc_tls_on(f->plain_rpc));
    assert_int_equal(dmf_rpc_tls_recheck(f->srv_rpc, err, sizeof(err)), 0);
    assert_int_equal(dmf_rpc_tls_recheck(f->plain_rpc, err, sizeof(err)), 0); /* TLS off */
    struct dmf_tls_files none = {0};
    assert_int_equal(dmf_rpc_tls_enable(f->plain_rpc, &none, err, sizeof(err)), 0);
    assert_false(dmf_rpc_tls_on(f->plain_rpc));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_server_sees_the_client_certificate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_channel_refuses_an_unexpected_server, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plaintext_clients_never_get_in, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_files_are_refused, setup, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
