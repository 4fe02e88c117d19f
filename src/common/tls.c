/* OpenSSL contexts for mutual TLS and peer identity; see tls.h. */
#include "common/tls.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#define SUBJECT_MAX_ENTRIES 8 /* a subject with more CNs/OUs than this is refused */

int dmf_tls_files_check(const struct dmf_tls_files *f, char *err, size_t errlen)
{
    int set = (f->cert != NULL) + (f->key != NULL) + (f->ca != NULL);
    if (set == 0 || set == 3)
        return 0;
    snprintf(err, errlen, "--tls-cert, --tls-key and --tls-ca go together (%d of 3 given)", set);
    return -EINVAL;
}

static void ssl_error(char *err, size_t errlen, const char *what, const char *file)
{
    char buf[256] = "unknown error";
    unsigned long e = ERR_get_error();
    if (e != 0)
        ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    snprintf(err, errlen, "%s %s: %s", what, file, buf);
}

SSL_CTX *dmf_tls_ctx_new(const struct dmf_tls_files *f, bool server, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    if (ctx == NULL) {
        ssl_error(err, errlen, "cannot create TLS context", "");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (SSL_CTX_use_certificate_chain_file(ctx, f->cert) != 1) {
        ssl_error(err, errlen, "cannot load certificate", f->cert);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, f->key, SSL_FILETYPE_PEM) != 1) {
        /* the key's contents never go into the message, only its file name */
        bool mismatch = ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH;
        ERR_clear_error();
        if (mismatch)
            snprintf(err, errlen, "private key %s does not match certificate %s", f->key, f->cert);
        else
            snprintf(err, errlen, "cannot load private key %s", f->key);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        ERR_clear_error();
        snprintf(err, errlen, "private key %s does not match certificate %s", f->key, f->cert);
        goto fail;
    }
    if (SSL_CTX_load_verify_locations(ctx, f->ca, NULL) != 1) {
        ssl_error(err, errlen, "cannot load CA", f->ca);
        goto fail;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    SSL_CTX_set_verify_depth(ctx, 4);
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

/* The entries of nid in name, up to max; returns how many there are (may exceed max). */
static size_t subject_entries(X509_NAME *name, int nid, const char **v, size_t *lens, size_t max)
{
    size_t n = 0;
    for (int i = X509_NAME_get_index_by_NID(name, nid, -1); i >= 0;
         i = X509_NAME_get_index_by_NID(name, nid, i), n++) {
        if (n >= max)
            continue;
        ASN1_STRING *s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
        v[n] = (const char *)ASN1_STRING_get0_data(s);
        lens[n] = (size_t)ASN1_STRING_length(s);
    }
    return n;
}

int dmf_tls_identity_from_x509(X509 *cert, struct dmf_tls_identity *out, char *why, size_t whylen)
{
    memset(out, 0, sizeof(*out));
    if (cert == NULL) {
        snprintf(why, whylen, "no client certificate");
        return -EPERM;
    }
    X509_NAME *name = X509_get_subject_name(cert);
    const char *cns[SUBJECT_MAX_ENTRIES], *ous[SUBJECT_MAX_ENTRIES];
    size_t cn_lens[SUBJECT_MAX_ENTRIES], ou_lens[SUBJECT_MAX_ENTRIES];
    size_t n_cn = subject_entries(name, NID_commonName, cns, cn_lens, SUBJECT_MAX_ENTRIES);
    size_t n_ou =
        subject_entries(name, NID_organizationalUnitName, ous, ou_lens, SUBJECT_MAX_ENTRIES);
    if (n_cn > SUBJECT_MAX_ENTRIES || n_ou > SUBJECT_MAX_ENTRIES) {
        snprintf(why, whylen, "certificate subject has too many entries");
        return -EPERM;
    }
    /* ASN.1 strings are not NUL-terminated in general: copy them bounded. */
    char cbuf[SUBJECT_MAX_ENTRIES][DMF_TLS_ID_MAX + 2], obuf[SUBJECT_MAX_ENTRIES][32];
    const char *cp[SUBJECT_MAX_ENTRIES], *op[SUBJECT_MAX_ENTRIES];
    for (size_t i = 0; i < n_cn; i++) {
        size_t l = cn_lens[i] < sizeof(cbuf[i]) - 1 ? cn_lens[i] : sizeof(cbuf[i]) - 1;
        memcpy(cbuf[i], cns[i], l);
        cbuf[i][l] = '\0';
        cp[i] = cbuf[i];
        cn_lens[i] = cn_lens[i] == l ? l : (size_t)-1; /* too long: mismatch, refused */
    }
    for (size_t i = 0; i < n_ou; i++) {
        size_t l = ou_lens[i] < sizeof(obuf[i]) - 1 ? ou_lens[i] : sizeof(obuf[i]) - 1;
        memcpy(obuf[i], ous[i], l);
        obuf[i][l] = '\0';
        op[i] = obuf[i];
        ou_lens[i] = ou_lens[i] == l ? l : (size_t)-1;
    }
    return dmf_tls_identity_from_subject(cp, cn_lens, n_cn, op, ou_lens, n_ou, out, why, whylen);
}

int dmf_tls_peer_identity(SSL *ssl, struct dmf_tls_identity *out, char *why, size_t whylen)
{
    memset(out, 0, sizeof(*out));
    X509 *cert = SSL_get1_peer_certificate(ssl);
    if (cert == NULL) {
        snprintf(why, whylen, "no client certificate");
        return -EPERM;
    }
    int rc;
    if (SSL_get_verify_result(ssl) != X509_V_OK) {
        snprintf(why, whylen, "certificate not verified: %s",
                 X509_verify_cert_error_string(SSL_get_verify_result(ssl)));
        rc = -EPERM;
    } else {
        rc = dmf_tls_identity_from_x509(cert, out, why, whylen);
    }
    X509_free(cert);
    return rc;
}
