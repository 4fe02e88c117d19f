/* Certificates for unit tests: two self-signed CAs and leaf certificates made in a fresh
 * temporary directory, so TLS tests run real handshakes without files in the repository.
 * The directory holds ca.pem/ca.key ("damselfly-ca"), other.pem/other.key ("other-ca") and
 * FILE.pem/FILE.key per host. Failures end the test (cmocka). */
#ifndef DMF_TEST_CERTS_H
#define DMF_TEST_CERTS_H

#include <stdbool.h>
#include <stddef.h>

#include "common/tls.h"

struct dmf_test_host {
    const char *file; /* FILE.pem / FILE.key */
    const char *cn;
    const char *ou; /* NULL: no OU */
    bool other_ca;  /* signed by other-ca instead of damselfly-ca */
};

/* Creates dir from template tmpl (mkdtemp, e.g. "/tmp/dmf-test-tls-XXXXXX"; copied into
 * dir, which must hold dirlen bytes) and writes the two CAs and hosts[0..n) into it. */
void dmf_test_certs_make(char *dir, size_t dirlen, const char *tmpl,
                         const struct dmf_test_host *hosts, size_t n);

/* The files of host name trusting CA file ca ("ca" or "other"). The strings live in a
 * static ring of 4: a fifth call reuses the first call's storage. */
struct dmf_tls_files dmf_test_tls_files(const char *dir, const char *name, const char *ca);

/* Removes dir and everything in it; 0 on success (a teardown's return value). */
int dmf_test_certs_remove(const char *dir);

#endif
