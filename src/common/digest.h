/* SHA-256 digests: of pieces (integrity of each transfer) and of whole contents
 * ("sha256:HEX", as users, OCI and --digest write them). */
#ifndef DMF_DIGEST_H
#define DMF_DIGEST_H

#include <stddef.h>
#include <stdint.h>

#define DMF_SHA256_LEN     32
#define DMF_DIGEST_STR_LEN (7 + 64) /* "sha256:" + 64 hex, without NUL */

/* Incremental SHA-256 (OpenSSL EVP underneath; uses the CPU's SHA extensions). */
typedef struct dmf_sha256_ctx dmf_sha256_ctx_t;
dmf_sha256_ctx_t *dmf_sha256_new(void); /* never NULL; free with dmf_sha256_free */
void dmf_sha256_update(dmf_sha256_ctx_t *c, const void *data, size_t len);
void dmf_sha256_final(dmf_sha256_ctx_t *c, uint8_t out[DMF_SHA256_LEN]); /* also resets */
void dmf_sha256_free(dmf_sha256_ctx_t *c);

void dmf_sha256(const void *data, size_t len, uint8_t out[DMF_SHA256_LEN]);

/* Hashes len bytes of fd from offset with pread; returns 0, -errno, or -EIO on short file. */
int dmf_sha256_fd(int fd, uint64_t offset, uint64_t len, uint8_t out[DMF_SHA256_LEN]);

/* Parses "sha256:HEX" (64 hex digits, either case). Returns 0 or -EINVAL with a reason in
 * err ("unsupported digest algorithm 'md5'", "sha256 digest must have 64 hex digits"). */
int dmf_digest_parse(const char *s, uint8_t out[DMF_SHA256_LEN], char *err, size_t errlen);

/* Writes "sha256:hex" (lower case) into out, which holds DMF_DIGEST_STR_LEN + 1 bytes. */
void dmf_digest_format(const uint8_t d[DMF_SHA256_LEN], char *out);

#endif
