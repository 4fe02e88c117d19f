/* Leaf certificates minted per host by the operator's CA, and cached. */
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "daemon/proxy/proxy_tls.h"

static char dir[64];
static char crt[128], key[128];
static X509 *ca;

static int setup(void **state)
{
    strcpy(dir, "/tmp/dmf-tls-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(crt, sizeof(crt), "%s/ca.crt", dir);
    snprintf(key, sizeof(key), "%s/ca.key", dir);
    EVP_PKEY *k = EVP_EC_gen("P-256");
    ca = X509_new();
    X509_set_version(ca, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(ca), 1);
    X509_gmtime_adj(X509_getm_notBefore(ca), -60);
    X509_gmtime_adj(X509_getm_notAfter(ca), 86400);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(ca), "CN", MBSTRING_ASC,
                               (const unsigned char *)"test CA", -1, -1, 0);
    X509_set_issuer_name(ca, X509_get_subject_name(ca));
    X509_set_pubkey(ca, k);
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, ca, ca, NULL, NULL, 0);
    X509_EXTENSION *ex = X509V3_EXT_conf_nid(NULL, &ctx, NID_basic_constraints, "critical,CA:TRUE");
    X509_add_ext(ca, ex, -1);
    X509_EXTENSION_free(ex);
    ex = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_key_identifier, "hash");
    X509_add_ext(ca, ex, -1);
    X509_EXTENSION_free(ex);
    X509_sign(ca, k, EVP_sha256());
    FILE *f = fopen(crt, "w");
    PEM_write_X509(f, ca);
    fclose(f);
    f = fopen(key, "w");
    PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    EVP_PKEY_free(k);
    return 0;
}

static int teardown(void **state)
{
    X509_free(ca);
    unlink(crt);
    unlink(key);
    rmdir(dir);
    return 0;
}

static void test_mint_verify_and_cache(void **state)
{
    char err[256];
    dmf_proxy_tls_t *tls = dmf_proxy_tls_new(crt, key, err, sizeof(err));
    assert_non_null(tls);
    SSL *a = dmf_proxy_tls_ssl_for(tls, "registry.example", err, sizeof(err));
    SSL *b = dmf_proxy_tls_ssl_for(tls, "registry.example", err, sizeof(err));
    SSL *c = dmf_proxy_tls_ssl_for(tls, "127.0.0.1", err, sizeof(err));
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    assert_int_equal(dmf_proxy_tls_minted(tls), 2); /* the second one came from the cache */

    X509 *leaf = dmf_proxy_tls_leaf(tls, "registry.example");
    assert_non_null(leaf);
    assert_int_equal(X509_check_host(leaf, "registry.example", 0, 0, NULL), 1);
    assert_int_not_equal(X509_check_host(leaf, "other.example", 0, 0, NULL), 1);
    assert_int_equal(X509_check_ip_asc(dmf_proxy_tls_leaf(tls, "127.0.0.1"), "127.0.0.1", 0), 1);

    /* The leaf verifies against the CA, for a TLS server. */
    X509_STORE *st = X509_STORE_new();
    X509_STORE_add_cert(st, ca);
    X509_STORE_CTX *vc = X509_STORE_CTX_new();
    X509_STORE_CTX_init(vc, st, leaf, NULL);
    X509_STORE_CTX_set_purpose(vc, X509_PURPOSE_SSL_SERVER);
    assert_int_equal(X509_verify_cert(vc), 1);
    X509_STORE_CTX_free(vc);
    X509_STORE_free(st);

    SSL_free(a);
    SSL_free(b);
    SSL_free(c);
    dmf_proxy_tls_free(tls);
}

static void test_bad_inputs(void **state)
{
    char err[256];
    assert_null(dmf_proxy_tls_new("/nonexistent.crt", key, err, sizeof(err)));
    assert_non_null(strstr(err, "cannot read"));
    assert_null(dmf_proxy_tls_new(key, key, err, sizeof(err))); /* a key is not a certificate */
    assert_null(dmf_proxy_tls_new(crt, crt, err, sizeof(err))); /* nor a certificate a key */
    dmf_proxy_tls_t *tls = dmf_proxy_tls_new(crt, key, err, sizeof(err));
    assert_null(dmf_proxy_tls_ssl_for(tls, "", err, sizeof(err)));
    dmf_proxy_tls_free(tls);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mint_verify_and_cache),
        cmocka_unit_test(test_bad_inputs),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
