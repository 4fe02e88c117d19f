/* TLS interception for the proxy: the operator gives a CA certificate and its key; for
 * each intercepted host the proxy mints a leaf certificate (CN and subjectAltName = the
 * host, signed by that CA, valid from an hour ago for DMF_PROXY_TLS_LEAF_DAYS days) and
 * keeps it, with its SSL_CTX, in a bounded cache. All leaves share one P-256 key made at
 * start. Clients that trust the CA then talk TLS to the proxy as if to the host. */
#ifndef DMF_PROXY_TLS_H
#define DMF_PROXY_TLS_H

#include <stddef.h>

#include <openssl/ssl.h>

#define DMF_PROXY_TLS_CACHE_MAX 512
#define DMF_PROXY_TLS_LEAF_DAYS 30

typedef struct dmf_proxy_tls dmf_proxy_tls_t;

/* Loads the CA (PEM certificate and PEM private key, RSA or EC). Returns NULL with a
 * reason in err when a file cannot be read, the key does not match the certificate, or
 * the certificate is not a CA. */
dmf_proxy_tls_t *dmf_proxy_tls_new(const char *ca_cert_path, const char *ca_key_path, char *err,
                                   size_t errlen);
void dmf_proxy_tls_free(dmf_proxy_tls_t *tls);

/* A new server-side SSL presenting host's leaf (minted on first use, then cached); the
 * caller owns it. host is a DNS name or an IP address (no port). NULL on failure (reason
 * in err). */
SSL *dmf_proxy_tls_ssl_for(dmf_proxy_tls_t *tls, const char *host, char *err, size_t errlen);

/* The cached leaf certificate of host (borrowed), or NULL before its first use. */
X509 *dmf_proxy_tls_leaf(dmf_proxy_tls_t *tls, const char *host);

/* Leaves minted since start (each host once while it stays cached). */
unsigned long dmf_proxy_tls_minted(const dmf_proxy_tls_t *tls);

#endif
