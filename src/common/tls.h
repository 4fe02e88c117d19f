/* Mutual TLS material for the planes that use OpenSSL directly (the piece server and
 * tests): a cluster CA, this host's certificate and key, loaded into an SSL_CTX that
 * requires and verifies the other side's certificate; and the authenticated identity
 * (tls_identity.h) of a connected peer. Hostname checks are not made (peers are addressed
 * by IP): the identity in the verified certificate is what callers check.
 *
 * Reloading (SIGHUP) = building a new SSL_CTX from the files and using it for new
 * connections; connections already open keep the SSL_CTX they were made with (OpenSSL
 * counts references), so no transfer is dropped. */
#ifndef DMF_TLS_H
#define DMF_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "common/tls_identity.h"

struct dmf_tls_files {
    const char *cert; /* PEM certificate (chain) of this host; borrowed */
    const char *key;  /* PEM private key; borrowed; never logged */
    const char *ca;   /* PEM cluster CA that signs every member's certificate; borrowed */
};

/* All three set, or all three NULL (TLS off). 0, or -EINVAL with err filled. */
int dmf_tls_files_check(const struct dmf_tls_files *f, char *err, size_t errlen);
/* A new SSL_CTX (owned by the caller: SSL_CTX_free) for a server (server=true) or client
 * that presents f->cert/f->key and requires and verifies the other side's certificate
 * against f->ca, TLS 1.2 at least. NULL with err filled ("cannot load certificate
 * FILE: ...", never the key's contents) when a file is missing or they do not match. */
SSL_CTX *dmf_tls_ctx_new(const struct dmf_tls_files *f, bool server, char *err, size_t errlen);
/* The identity in a (verified) certificate. 0, or -EPERM with why filled. */
int dmf_tls_identity_from_x509(X509 *cert, struct dmf_tls_identity *out, char *why, size_t whylen);
/* The identity of the peer of an established connection: 0 when it presented a
 * certificate that verified against the CA and carries a valid identity; -EPERM with why
 * filled otherwise. */
int dmf_tls_peer_identity(SSL *ssl, struct dmf_tls_identity *out, char *why, size_t whylen);

#endif
