/* Mutual TLS contexts and peer identity (common/tls.h): real OpenSSL handshakes between a
 * server and a client context over an in-memory BIO pair, with a CA and certificates made
 * here (in a fresh temporary directory). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "common/tls.h"
#include "support/certs.h"

static char dir[64];

static struct dmf_tls_files files(const char *name, const char *ca)
{
    return dmf_test_tls_files(dir, name, ca);
}

static int setup(void **state)
{
    static const struct dmf_test_host hosts[] = {
        {"srv", "srv", "peer", false}, {"hA", "hA", NULL, false},
        {"seed", "s1", "seed", false}, {"sched", "sch", "scheduler", false},
        {"rogue", "hA", "seed", true}, {"badou", "hB", "admin", false},
    };
    dmf_test_certs_make(dir, sizeof(dir), "/tmp/dmf-test-tls-XXXXXX", hosts,
                        sizeof(hosts) / sizeof(hosts[0]));
    return 0;
}

static int teardown(void **state)
{
    return dmf_test_certs_remove(dir);
}

/* Handshake between a server context and a client context (client NULL: a client with
 * no certificate). Returns true when both sides completed; *id the server's view. */
static bool handshake(SSL_CTX *sctx, SSL_CTX *cctx, struct dmf_tls_identity *id, int *idrc)
{
    bool own = false;
    if (cctx == NULL) {
        cctx = SSL_CTX_new(TLS_client_method());
        SSL_CTX_set_verify(cctx, SSL_VERIFY_NONE, NULL);
        own = true;
    }
    SSL *s = SSL_new(sctx), *c = SSL_new(cctx);
    BIO *sb, *cb;
    assert_int_equal(BIO_new_bio_pair(&sb, 0, &cb, 0), 1);
    SSL_set_bio(s, sb, sb);
    SSL_set_bio(c, cb, cb);
    SSL_set_accept_state(s);
    SSL_set_connect_state(c);
    bool sdone = false, cdone = false, failed = false;
    for (int i = 0; i < 100 && !(sdone && cdone) && !failed; i++) {
        if (!cdone) {
            int r = SSL_do_handshake(c);
            if (r == 1)
                cdone = true;
            else if (SSL_get_error(c, r) != SSL_ERROR_WANT_READ)
                failed = true;
        }
        if (!sdone) {
            int r = SSL_do_handshake(s);
            if (r == 1)
                sdone = true;
            else if (SSL_get_error(s, r) != SSL_ERROR_WANT_READ)
                failed = true;
        }
    }
    /* TLS 1.3: the client finishes before the server has checked its certificate; a
     * refused client learns it on its first read. */
    if (sdone && cdone) {
        char b;
        SSL_write(c, "x", 1);
        if (SSL_read(s, &b, 1) != 1)
            failed = true;
    }
    char why[256];
    *idrc = sdone ? dmf_tls_peer_identity(s, id, why, sizeof(why)) : -EPERM;
    SSL_free(s);
    SSL_free(c);
    if (own)
        SSL_CTX_free(cctx);
    ERR_clear_error();
    return sdone && cdone && !failed;
}

static SSL_CTX *ctx(const char *name, const char *ca, bool server)
{
    char err[256];
    struct dmf_tls_files f = files(name, ca);
    SSL_CTX *c = dmf_tls_ctx_new(&f, server, err, sizeof(err));
    assert_non_null(c);
    return c;
}

static void test_mutual_ok(void **state)
{
    SSL_CTX *s = ctx("srv", "ca", true), *c = ctx("hA", "ca", false);
    struct dmf_tls_identity id;
    int rc;
    assert_true(handshake(s, c, &id, &rc));
    assert_int_equal(rc, 0);
    assert_string_equal(id.host_id, "hA");
    assert_int_equal(id.role, DMF_TLS_ROLE_PEER);
    SSL_CTX_free(c);
    c = ctx("seed", "ca", false);
    assert_true(handshake(s, c, &id, &rc));
    assert_int_equal(rc, 0);
    assert_string_equal(id.host_id, "s1");
    assert_int_equal(id.role, DMF_TLS_ROLE_SEED);
    SSL_CTX_free(c);
    SSL_CTX_free(s);
}

static void test_no_client_cert_refused(void **state)
{
    SSL_CTX *s = ctx("srv", "ca", true);
    struct dmf_tls_identity id;
    int rc;
    assert_false(handshake(s, NULL, &id, &rc));
    assert_int_equal(rc, -EPERM);
    SSL_CTX_free(s);
}

static void test_other_ca_refused(void **state)
{
    /* a certificate for hA with role seed, signed by another CA: refused both ways */
    SSL_CTX *s = ctx("srv", "ca", true), *c = ctx("rogue", "ca", false);
    struct dmf_tls_identity id;
    int rc;
    assert_false(handshake(s, c, &id, &rc));
    assert_int_not_equal(rc, 0);
    SSL_CTX_free(c);
    /* and a client that trusts only the other CA refuses our server */
    c = ctx("rogue", "other", false);
    assert_false(handshake(s, c, &id, &rc));
    SSL_CTX_free(c);
    SSL_CTX_free(s);
}

static void test_unknown_role_no_identity(void **state)
{
    SSL_CTX *s = ctx("srv", "ca", true), *c = ctx("badou", "ca", false);
    struct dmf_tls_identity id;
    int rc;
    (void)handshake(s, c, &id, &rc); /* the CA signed it; the role is what is wrong */
    assert_int_equal(rc, -EPERM);
    assert_int_equal(id.role, DMF_TLS_ROLE_NONE);
    assert_false(dmf_tls_may_act_for(&id, "hB"));
    SSL_CTX_free(c);
    SSL_CTX_free(s);
}

static void test_load_errors(void **state)
{
    char err[256];
    struct dmf_tls_files f = files("hA", "ca");
    struct dmf_tls_files missing = f;
    missing.cert = "/nonexistent/cert.pem";
    assert_null(dmf_tls_ctx_new(&missing, true, err, sizeof(err)));
    assert_non_null(strstr(err, "/nonexistent/cert.pem"));
    struct dmf_tls_files mismatch = f;
    mismatch.key = files("srv", "ca").key; /* another host's key */
    assert_null(dmf_tls_ctx_new(&mismatch, true, err, sizeof(err)));
    assert_non_null(strstr(err, "does not match"));
    struct dmf_tls_files partial = {.cert = f.cert};
    assert_int_equal(dmf_tls_files_check(&partial, err, sizeof(err)), -EINVAL);
    struct dmf_tls_files none = {0};
    assert_int_equal(dmf_tls_files_check(&none, err, sizeof(err)), 0);
    assert_int_equal(dmf_tls_files_check(&f, err, sizeof(err)), 0);
}

static void test_reload_new_ctx(void **state)
{
    /* A reload is a new context from the files: an old SSL keeps working while the new
     * context serves new handshakes with the new certificate. */
    SSL_CTX *old = ctx("srv", "ca", true);
    SSL *held = SSL_new(old);
    SSL_CTX_free(old); /* the SSL holds a reference */
    SSL_CTX *fresh = ctx("sched", "ca", true), *c = ctx("hA", "ca", false);
    struct dmf_tls_identity id;
    int rc;
    assert_true(handshake(fresh, c, &id, &rc));
    assert_int_equal(rc, 0);
    assert_non_null(SSL_get_SSL_CTX(held));
    SSL_free(held);
    SSL_CTX_free(c);
    SSL_CTX_free(fresh);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mutual_ok),        cmocka_unit_test(test_no_client_cert_refused),
        cmocka_unit_test(test_other_ca_refused), cmocka_unit_test(test_unknown_role_no_identity),
        cmocka_unit_test(test_load_errors),      cmocka_unit_test(test_reload_new_ctx),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
