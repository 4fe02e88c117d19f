/* Leaf certificates minted per host, signed by the operator's CA; see proxy_tls.h. */
#include "daemon/proxy/proxy_tls.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/util.h"

struct leaf {
    char *host;
    X509 *cert;
    SSL_CTX *ctx;
};

struct dmf_proxy_tls {
    X509 *ca;
    EVP_PKEY *ca_key;
    EVP_PKEY *leaf_key;
    struct leaf cache[DMF_PROXY_TLS_CACHE_MAX]; /* oldest first */
    size_t n;
    unsigned long minted;
};

static void ssl_reason(char *err, size_t errlen, const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[160] = "";
    if (e)
        ERR_error_string_n(e, buf, sizeof(buf));
    snprintf(err, errlen, "%s%s%s", what, buf[0] ? ": " : "", buf);
    ERR_clear_error();
}

dmf_proxy_tls_t *dmf_proxy_tls_new(const char *ca_cert_path, const char *ca_key_path, char *err,
                                   size_t errlen)
{
    dmf_proxy_tls_t *tls = dmf_xcalloc(1, sizeof(*tls));
    FILE *f = fopen(ca_cert_path, "r");
    if (f == NULL) {
        snprintf(err, errlen, "cannot read the CA certificate %s", ca_cert_path);
        goto fail;
    }
    tls->ca = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if (tls->ca == NULL) {
        ssl_reason(err, errlen, "the CA certificate is not a PEM certificate");
        goto fail;
    }
    f = fopen(ca_key_path, "r");
    if (f == NULL) {
        snprintf(err, errlen, "cannot read the CA key %s", ca_key_path);
        goto fail;
    }
    tls->ca_key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    if (tls->ca_key == NULL) {
        ssl_reason(err, errlen, "the CA key is not an unencrypted PEM private key");
        goto fail;
    }
    if (X509_check_private_key(tls->ca, tls->ca_key) != 1) {
        ssl_reason(err, errlen, "the CA key does not match the CA certificate");
        goto fail;
    }
    if (X509_check_ca(tls->ca) == 0) {
        snprintf(err, errlen, "the CA certificate is not a CA (basicConstraints CA:TRUE)");
        goto fail;
    }
    tls->leaf_key = EVP_EC_gen("P-256");
    if (tls->leaf_key == NULL) {
        ssl_reason(err, errlen, "cannot make a key for leaf certificates");
        goto fail;
    }
    return tls;
fail:
    dmf_proxy_tls_free(tls);
    return NULL;
}

static void leaf_free(struct leaf *l)
{
    free(l->host);
    X509_free(l->cert);
    SSL_CTX_free(l->ctx);
}

void dmf_proxy_tls_free(dmf_proxy_tls_t *tls)
{
    if (tls == NULL)
        return;
    for (size_t i = 0; i < tls->n; i++)
        leaf_free(&tls->cache[i]);
    X509_free(tls->ca);
    EVP_PKEY_free(tls->ca_key);
    EVP_PKEY_free(tls->leaf_key);
    free(tls);
}

static int add_ext(X509 *cert, X509V3_CTX *ctx, int nid, const char *value)
{
    X509_EXTENSION *ex = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
    if (ex == NULL)
        return -1;
    int ok = X509_add_ext(cert, ex, -1);
    X509_EXTENSION_free(ex);
    return ok ? 0 : -1;
}

static X509 *mint(dmf_proxy_tls_t *tls, const char *host)
{
    X509 *x = X509_new();
    unsigned char serial[16];
    RAND_bytes(serial, sizeof(serial));
    serial[0] &= 0x7f; /* positive */
    BIGNUM *bn = BN_bin2bn(serial, sizeof(serial), NULL);
    X509_set_version(x, 2);
    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
    BN_free(bn);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), (long)DMF_PROXY_TLS_LEAF_DAYS * 86400);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)host, -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(tls->ca));
    X509_set_pubkey(x, tls->leaf_key);

    unsigned char ip[16];
    bool is_ip = inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1;
    char *san = dmf_xasprintf("%s:%s", is_ip ? "IP" : "DNS", host);
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, tls->ca, x, NULL, NULL, 0);
    int bad = add_ext(x, &ctx, NID_basic_constraints, "critical,CA:FALSE") |
              add_ext(x, &ctx, NID_key_usage, "critical,digitalSignature,keyEncipherment") |
              add_ext(x, &ctx, NID_ext_key_usage, "serverAuth") |
              add_ext(x, &ctx, NID_subject_alt_name, san) |
              add_ext(x, &ctx, NID_subject_key_identifier, "hash") |
              add_ext(x, &ctx, NID_authority_key_identifier, "keyid:always");
    free(san);
    if (bad || X509_sign(x, tls->ca_key, EVP_sha256()) == 0) {
        X509_free(x);
        return NULL;
    }
    return x;
}

static struct leaf *lookup(dmf_proxy_tls_t *tls, const char *host)
{
    for (size_t i = 0; i < tls->n; i++)
        if (strcasecmp(tls->cache[i].host, host) == 0)
            return &tls->cache[i];
    return NULL;
}

X509 *dmf_proxy_tls_leaf(dmf_proxy_tls_t *tls, const char *host)
{
    struct leaf *l = lookup(tls, host);
    return l ? l->cert : NULL;
}

unsigned long dmf_proxy_tls_minted(const dmf_proxy_tls_t *tls)
{
    return tls->minted;
}

SSL *dmf_proxy_tls_ssl_for(dmf_proxy_tls_t *tls, const char *host, char *err, size_t errlen)
{
    struct leaf *l = lookup(tls, host);
    if (l == NULL) {
        if (strlen(host) == 0 || strlen(host) > 253) {
            snprintf(err, errlen, "invalid host name for a certificate");
            return NULL;
        }
        X509 *cert = mint(tls, host);
        if (cert == NULL) {
            ssl_reason(err, errlen, "cannot mint a certificate");
            return NULL;
        }
        SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
        if (ctx == NULL || SSL_CTX_use_certificate(ctx, cert) != 1 ||
            SSL_CTX_use_PrivateKey(ctx, tls->leaf_key) != 1) {
            ssl_reason(err, errlen, "cannot set up TLS");
            X509_free(cert);
            SSL_CTX_free(ctx);
            return NULL;
        }
        SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
        if (tls->n == DMF_PROXY_TLS_CACHE_MAX) {
            leaf_free(&tls->cache[0]);
            memmove(&tls->cache[0], &tls->cache[1], (tls->n - 1) * sizeof(tls->cache[0]));
            tls->n--;
        }
        l = &tls->cache[tls->n++];
        l->host = dmf_xstrdup(host);
        l->cert = cert;
        l->ctx = ctx;
        tls->minted++;
    }
    SSL *ssl = SSL_new(l->ctx);
    if (ssl == NULL)
        ssl_reason(err, errlen, "cannot start TLS");
    return ssl;
}
