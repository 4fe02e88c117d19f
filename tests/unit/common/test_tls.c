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

static char dir[64];

static EVP_PKEY *new_key(void)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    assert_non_null(k);
    return k;
}

/* A certificate for (cn, ou) signed by issuer/ikey (self-signed CA when issuer is NULL). */
static X509 *new_cert(const char *cn, const char *ou, EVP_PKEY *key, X509 *issuer, EVP_PKEY *ikey)
{
    static long serial = 1;
    X509 *x = X509_new();
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, key);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    if (ou != NULL)
        X509_NAME_add_entry_by_txt(n, "OU", MBSTRING_ASC, (const unsigned char *)ou, -1, -1, 0);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : n);
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, issuer ? issuer : x, x, NULL, NULL, 0);
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, NID_basic_constraints,
                                            issuer ? "CA:FALSE" : "critical,CA:TRUE");
    X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
    assert_true(X509_sign(x, issuer ? ikey : key, EVP_sha256()) > 0);
    return x;
}

static void write_pem(const char *name, X509 *x, EVP_PKEY *k)
{
    char p[128];
    snprintf(p, sizeof(p), "%s/%s.pem", dir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    PEM_write_X509(f, x);
    fclose(f);
    snprintf(p, sizeof(p), "%s/%s.key", dir, name);
    f = fopen(p, "w");
    assert_non_null(f);
    PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
    fclose(f);
}

static struct dmf_tls_files files(const char *name, const char *ca)
{
    static char c[4][128], k[4][128], a[4][128];
    static int slot;
    slot = (slot + 1) % 4;
    snprintf(c[slot], sizeof(c[slot]), "%s/%s.pem", dir, name);
    snprintf(k[slot], sizeof(k[slot]), "%s/%s.key", dir, name);
    snprintf(a[slot], sizeof(a[slot]), "%s/%s.pem", dir, ca);
    return (struct dmf_tls_files){.cert = c[slot], .key = k[slot], .ca = a[slot]};
}

static int setup(void **state)
{
    snprintf(dir, sizeof(dir), "/tmp/dmf-test-tls-XXXXXX");
    assert_non_null(mkdtemp(dir));
    EVP_PKEY *cak = new_key(), *otherk = new_key();
    X509 *ca = new_cert("damselfly-ca", NULL, cak, NULL, NULL);
    X509 *other = new_cert("other-ca", NULL, otherk, NULL, NULL);
    write_pem("ca", ca, cak);
    write_pem("other", other, otherk);
    struct {
        const char *name, *cn, *ou;
        X509 *ca;
        EVP_PKEY *cak;
    } hosts[] = {
        {"srv", "srv", "peer", ca, cak},        {"hA", "hA", NULL, ca, cak},
        {"seed", "s1", "seed", ca, cak},        {"sched", "sch", "scheduler", ca, cak},
        {"rogue", "hA", "seed", other, otherk}, {"badou", "hB", "admin", ca, cak},
    };
    for (size_t i = 0; i < sizeof(hosts) / sizeof(hosts[0]); i++) {
        EVP_PKEY *k = new_key();
        X509 *x = new_cert(hosts[i].cn, hosts[i].ou, k, hosts[i].ca, hosts[i].cak);
        write_pem(hosts[i].name, x, k);
        X509_free(x);
        EVP_PKEY_free(k);
    }
    X509_free(ca);
    X509_free(other);
    EVP_PKEY_free(cak);
    EVP_PKEY_free(otherk);
    return 0;
}

static int teardown(void **state)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
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
