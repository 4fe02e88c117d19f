/* Registry-mirror helpers: recognising OCI blob requests and choosing the upstream
 * registry of a mirror request.
 *
 * Upstream choice for a mirror request (`/v2/...`): the registry that containerd names in
 * the `ns` query parameter (hosts.toml mirrors add `?ns=<registry host>`), looked up in the
 * configured mapping (`--registry-map HOST=URL`), else the default (`--registry-mirror`)
 * when its host:port is that name, else `https://<ns>` (`docker.io` is
 * `https://registry-1.docker.io`); without `ns`, the default. The `ns` parameter itself is
 * never sent upstream. */
#ifndef DMF_REGISTRY_H
#define DMF_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>

#include "common/config.h"
#include "common/digest.h"

/* True when path (without query) is "/v2/<name>/blobs/sha256:<64 lower-case hex>" with a
 * non-empty name; then digest (DMF_DIGEST_STR_LEN + 1 bytes) gets "sha256:<hex>". */
bool dmf_registry_blob_path(const char *path, char *digest);

/* Splits an origin-form target into its path and the rest of its query without the `ns`
 * parameter: *out gets path[?query-without-ns] (caller frees) and *ns the decoded value of
 * the first `ns` parameter (caller frees) or NULL. */
void dmf_registry_strip_ns(const char *target, char **out, char **ns);

/* Checks a mapping entry "HOST[:PORT]=http(s)://host[:port]" (0 or -EINVAL with a reason). */
int dmf_registry_map_check(const char *entry, char *err, size_t errlen);

/* The upstream base URL (no trailing slash) for a mirror request: see above. map holds
 * "HOST=URL" entries; default_url may be NULL. Returns a new string, or NULL when there is
 * neither ns nor a default. */
char *dmf_registry_upstream(const struct dmf_strlist *map, const char *default_url, const char *ns);

#endif
