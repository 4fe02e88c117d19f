/* Who a mutual-TLS peer is, and what it may do: the pure decisions behind `--tls-*`.
 *
 * A certificate names one host: its subject CN is the host ID (the same ID the host
 * announces to the scheduler), and its single subject OU is the host's role: "peer",
 * "seed", "scheduler" or "manager". A certificate with no OU is a plain peer; one with an
 * unknown OU, more than one OU, or a CN that is not a valid host ID carries no identity at
 * all (refused). scripts/make-certs.sh makes such certificates.
 *
 * Pure: no I/O, no allocation; src/common/tls.c reads the fields from an X509. */
#ifndef DMF_TLS_IDENTITY_H
#define DMF_TLS_IDENTITY_H

#include <stdbool.h>
#include <stddef.h>

#define DMF_TLS_ID_MAX 128 /* longest host ID a certificate may carry */

enum dmf_tls_role {
    DMF_TLS_ROLE_NONE = 0, /* no valid identity: refuse */
    DMF_TLS_ROLE_PEER,
    DMF_TLS_ROLE_SEED,
    DMF_TLS_ROLE_SCHEDULER,
    DMF_TLS_ROLE_MANAGER,
};

struct dmf_tls_identity {
    char host_id[DMF_TLS_ID_MAX + 1];
    enum dmf_tls_role role;
};

/* True when s is usable as a host ID: 1..DMF_TLS_ID_MAX bytes of [A-Za-z0-9._:-], not
 * starting with '.' or '-'. */
bool dmf_tls_host_id_valid(const char *s);
/* The role an OU names ("peer", "seed", "scheduler", "manager"; exact, lower case), or
 * DMF_TLS_ROLE_NONE. */
enum dmf_tls_role dmf_tls_role_parse(const char *ou);
const char *dmf_tls_role_name(enum dmf_tls_role r);
/* Builds *out from a certificate's subject: cns/n_cn its CN entries, ous/n_ou its OU
 * entries (borrowed; NUL-terminated; len_* their byte lengths, so an embedded NUL is
 * seen). 0, or -EPERM with why filled when the subject carries no usable identity
 * (not exactly one CN, an invalid CN, more than one OU, an unknown OU). */
int dmf_tls_identity_from_subject(const char *const *cns, const size_t *cn_lens, size_t n_cn,
                                  const char *const *ous, const size_t *ou_lens, size_t n_ou,
                                  struct dmf_tls_identity *out, char *why, size_t whylen);
/* May an authenticated caller act for claimed_host_id (announce, register, leave, report
 * progress, stat)? Only for itself. With TLS off (caller NULL) everything is allowed, as
 * before TLS. */
bool dmf_tls_may_act_for(const struct dmf_tls_identity *caller, const char *claimed_host_id);
/* Is the caller a seed? With TLS on, only a certificate whose role is seed, or a host the
 * scheduler's --seed-hosts list admits (listed); never a host that merely announces it. */
bool dmf_tls_is_seed(const struct dmf_tls_identity *caller, bool listed);
/* May the caller send DownloadTask to a daemon's rpc port? With TLS on only a scheduler
 * or manager certificate. */
bool dmf_tls_may_trigger_download(const struct dmf_tls_identity *caller);

#endif
