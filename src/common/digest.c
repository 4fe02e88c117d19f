/* SHA-256 through OpenSSL EVP. The algorithm is fetched once per process (OpenSSL 3 would
 * otherwise look it up in the provider store on every init). */
#include "common/digest.h"

#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/util.h"

/* Bytes read per pread() when hashing a file range. */
#define FD_CHUNK (256u << 10)

struct dmf_sha256_ctx {
    EVP_MD_CTX *md;
};

static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;
static EVP_MD *sha256_md;

static void sha256_fetch(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

static const EVP_MD *sha256(void)
{
    pthread_once(&sha256_once, sha256_fetch);
    if (sha256_md == NULL) {
        fprintf(stderr, "damselfly: OpenSSL has no SHA-256 implementation\n");
        abort();
    }
    return sha256_md;
}

static void ctx_init(dmf_sha256_ctx_t *c)
{
    if (EVP_DigestInit_ex(c->md, sha256(), NULL) != 1) {
        fprintf(stderr, "damselfly: EVP_DigestInit_ex(SHA-256) failed\n");
        abort();
    }
}

dmf_sha256_ctx_t *dmf_sha256_new(void)
{
    dmf_sha256_ctx_t *c = dmf_xmalloc(sizeof(*c));
    c->md = EVP_MD_CTX_new();
    if (c->md == NULL) {
        fprintf(stderr, "damselfly: out of memory allocating a digest context\n");
        abort();
    }
    ctx_init(c);
    return c;
}

void dmf_sha256_update(dmf_sha256_ctx_t *c, const void *data, size_t len)
{
    if (len > 0)
        EVP_DigestUpdate(c->md, data, len);
}

void dmf_sha256_final(dmf_sha256_ctx_t *c, uint8_t out[DMF_SHA256_LEN])
{
    unsigned int n = 0;
    EVP_DigestFinal_ex(c->md, out, &n);
    ctx_init(c);
}

void dmf_sha256_free(dmf_sha256_ctx_t *c)
{
    if (c == NULL)
        return;
    EVP_MD_CTX_free(c->md);
    free(c);
}

void dmf_sha256(const void *data, size_t len, uint8_t out[DMF_SHA256_LEN])
{
    unsigned int n = 0;
    if (EVP_Digest(data, len, out, &n, sha256(), NULL) != 1) {
        fprintf(stderr, "damselfly: EVP_Digest(SHA-256) failed\n");
        abort();
    }
}

int dmf_sha256_fd(int fd, uint64_t offset, uint64_t len, uint8_t out[DMF_SHA256_LEN])
{
    if (offset > INT64_MAX || len > INT64_MAX - offset)
        return -EINVAL;

    dmf_sha256_ctx_t *c = dmf_sha256_new();
    uint8_t *buf = dmf_xmalloc(FD_CHUNK);
    int rc = 0;

    while (len > 0) {
        size_t want = len < FD_CHUNK ? (size_t)len : FD_CHUNK;
        ssize_t n = pread(fd, buf, want, (off_t)offset);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            goto out;
        }
        if (n == 0) {
            rc = -EIO; /* the file ends before offset + len */
            goto out;
        }
        dmf_sha256_update(c, buf, (size_t)n);
        offset += (uint64_t)n;
        len -= (uint64_t)n;
    }
    dmf_sha256_final(c, out);
out:
    free(buf);
    dmf_sha256_free(c);
    return rc;
}

int dmf_digest_parse(const char *s, uint8_t out[DMF_SHA256_LEN], char *err, size_t errlen)
{
    const char *colon = s != NULL ? strchr(s, ':') : NULL;
    if (colon == NULL) {
        snprintf(err, errlen, "a digest is written sha256:<64 hex digits>");
        return -EINVAL;
    }
    size_t alen = (size_t)(colon - s);
    if (alen != 6 || strncasecmp(s, "sha256", 6) != 0) {
        /* Quote at most 32 bytes of what the user wrote. */
        snprintf(err, errlen, "unsupported digest algorithm '%.*s' (only sha256)",
                 (int)DMF_MIN(alen, 32), s);
        return -EINVAL;
    }
    const char *hex = colon + 1;
    size_t hlen = strlen(hex);
    if (hlen != 2 * DMF_SHA256_LEN) {
        snprintf(err, errlen, "sha256 digest must have 64 hex digits, not %zu", hlen);
        return -EINVAL;
    }
    if (dmf_hex_decode(hex, out, DMF_SHA256_LEN) != 0) {
        snprintf(err, errlen, "sha256 digest must have 64 hex digits (0-9, a-f)");
        return -EINVAL;
    }
    return 0;
}

void dmf_digest_format(const uint8_t d[DMF_SHA256_LEN], char *out)
{
    memcpy(out, "sha256:", 7);
    dmf_hex_encode(d, DMF_SHA256_LEN, out + 7);
}
