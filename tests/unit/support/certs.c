#include "certs.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

static EVP_PKEY *key_new(void)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    assert_non_null(k);
    return k;
}

/* A certificate for (cn, ou) signed by issuer/ikey (a self-signed CA when issuer is NULL). */
static X509 *cert_new(const char *cn, const char *ou, EVP_PKEY *key, X509 *issuer, EVP_PKEY *ikey)
{
    static long serial = 1;
    X509 *x = X509_new();
    assert_non_null(x);
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

static void pem_write(const char *dir, const char *name, X509 *x, EVP_PKEY *k)
{
    char p[256];
    snprintf(p, sizeof(p), "%s/%s.pem", dir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    assert_true(PEM_write_X509(f, x) == 1);
    assert_int_equal(fclose(f), 0);
    snprintf(p, sizeof(p), "%s/%s.key", dir, name);
    f = fopen(p, "w");
    assert_non_null(f);
    assert_true(PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL) == 1);
    assert_int_equal(fclose(f), 0);
}

void dmf_test_certs_make(char *dir, size_t dirlen, const char *tmpl,
                         const struct dmf_test_host *hosts, size_t n)
{
    assert_true(strlen(tmpl) < dirlen);
    snprintf(dir, dirlen, "%s", tmpl);
    assert_non_null(mkdtemp(dir));
    EVP_PKEY *cak = key_new(), *otherk = key_new();
    X509 *ca = cert_new("damselfly-ca", NULL, cak, NULL, NULL);
    X509 *other = cert_new("other-ca", NULL, otherk, NULL, NULL);
    pem_write(dir, "ca", ca, cak);
    pem_write(dir, "other", other, otherk);
    for (size_t i = 0; i < n; i++) {
        EVP_PKEY *k = key_new();
        X509 *x = cert_new(hosts[i].cn, hosts[i].ou, k, hosts[i].other_ca ? other : ca,
                           hosts[i].other_ca ? otherk : cak);
        pem_write(dir, hosts[i].file, x, k);
        X509_free(x);
        EVP_PKEY_free(k);
    }
    X509_free(ca);
    X509_free(other);
    EVP_PKEY_free(cak);
    EVP_PKEY_free(otherk);
}

struct dmf_tls_files dmf_test_tls_files(const char *dir, const char *name, const char *ca)
{
    static char c[4][256], k[4][256], a[4][256];
    static int slot;
    slot = (slot + 1) % 4;
    snprintf(c[slot], sizeof(c[slot]), "%s/%s.pem", dir, name);
    snprintf(k[slot], sizeof(k[slot]), "%s/%s.key", dir, name);
    snprintf(a[slot], sizeof(a[slot]), "%s/%s.pem", dir, ca);
    return (struct dmf_tls_files){.cert = c[slot], .key = k[slot], .ca = a[slot]};
}

int dmf_test_certs_remove(const char *dir)
{
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}
