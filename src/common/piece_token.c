/* Piece-fetch tokens (see piece_token.h). */
#include "common/piece_token.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/hmac.h>

#include "common/util.h"

#define TOKEN_CONTEXT "damselfly-piece-token-v1"
#define MAC_LEN       32

int dmf_cluster_key_load(const char *path, struct dmf_cluster_key *key, char *err, size_t errlen)
{
    int rc = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    key->len = 0;
    if (fd < 0) {
        rc = -errno;
        snprintf(err, errlen, "cannot open cluster key file %s: %s", path, strerror(errno));
        goto out;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        rc = -EINVAL;
        snprintf(err, errlen, "cluster key file %s is not a regular file", path);
        goto out;
    }
    if (st.st_mode & 007) {
        rc = -EPERM;
        snprintf(err, errlen,
                 "cluster key file %s is accessible to other users (mode %03o): "
                 "chmod o-rwx it",
                 path, (unsigned)(st.st_mode & 0777));
        goto out;
    }
    size_t got = 0;
    uint8_t extra;
    while (got < sizeof(key->bytes)) {
        ssize_t n = read(fd, key->bytes + got, sizeof(key->bytes) - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -errno;
            snprintf(err, errlen, "cannot read cluster key file %s: %s", path, strerror(errno));
            goto out;
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    if (got == sizeof(key->bytes) && read(fd, &extra, 1) == 1) {
        rc = -EINVAL;
        snprintf(err, errlen, "cluster key file %s is larger than %d bytes", path,
                 DMF_CLUSTER_KEY_MAX);
        goto out;
    }
    if (got < DMF_CLUSTER_KEY_MIN) {
        rc = -EINVAL;
        snprintf(err, errlen, "cluster key file %s holds %zu bytes; at least %d are needed", path,
                 got, DMF_CLUSTER_KEY_MIN);
        goto out;
    }
    key->len = got;
out:
    if (rc != 0)
        dmf_cluster_key_clear(key);
    if (fd >= 0)
        close(fd);
    return rc;
}

void dmf_cluster_key_clear(struct dmf_cluster_key *key)
{
    explicit_bzero(key->bytes, sizeof(key->bytes));
    key->len = 0;
}

static int id_ok(const char *id)
{
    if (!id || !id[0])
        return 0;
    size_t n = strnlen(id, DMF_PIECE_TOKEN_ID_MAX + 1);
    if (n > DMF_PIECE_TOKEN_ID_MAX)
        return 0;
    return strchr(id, '\n') == NULL; /* the MAC's input separates fields with newlines */
}

static void mac_of(const struct dmf_cluster_key *key, const char *task_id, const char *host_id,
                   int64_t expiry, uint8_t out[MAC_LEN])
{
    char msg[sizeof(TOKEN_CONTEXT) + 2 * DMF_PIECE_TOKEN_ID_MAX + 32];
    int n =
        snprintf(msg, sizeof(msg), TOKEN_CONTEXT "\n%s\n%s\n%" PRId64, task_id, host_id, expiry);
    unsigned int len = MAC_LEN;
    HMAC(EVP_sha256(), key->bytes, (int)key->len, (const unsigned char *)msg, (size_t)n, out, &len);
    explicit_bzero(msg, sizeof(msg));
}

int dmf_piece_token_mint(const struct dmf_cluster_key *key, const char *task_id,
                         const char *host_id, int64_t expiry, char *out, size_t outlen)
{
    if (!id_ok(task_id) || !id_ok(host_id) || expiry < 0 || outlen < DMF_PIECE_TOKEN_MAX + 1 ||
        key->len == 0)
        return -EINVAL;
    uint8_t mac[MAC_LEN];
    mac_of(key, task_id, host_id, expiry, mac);
    int n = snprintf(out, outlen, "v1.%" PRId64 ".", expiry);
    dmf_hex_encode(mac, MAC_LEN, out + n);
    explicit_bzero(mac, sizeof(mac));
    return 0;
}

/* Parses "v1.<digits>.<64 hex>" into expiry and mac; 0 or -1. */
static int parse(const char *token, int64_t *expiry, uint8_t mac[MAC_LEN])
{
    if (strnlen(token, DMF_PIECE_TOKEN_MAX + 1) > DMF_PIECE_TOKEN_MAX)
        return -1;
    if (strncmp(token, "v1.", 3) != 0)
        return -1;
    const char *p = token + 3;
    int64_t e = 0;
    int digits = 0;
    for (; *p >= '0' && *p <= '9'; p++, digits++) {
        if (digits >= 18) /* stays far below INT64_MAX */
            return -1;
        e = e * 10 + (*p - '0');
    }
    if (digits == 0 || *p != '.' || (digits > 1 && token[3] == '0'))
        return -1; /* canonical: one spelling per token, as minted (no leading zero) */
    p++;
    if (strnlen(p, 2 * MAC_LEN + 1) != 2 * MAC_LEN ||
        strspn(p, "0123456789abcdef") != 2 * MAC_LEN || dmf_hex_decode(p, mac, MAC_LEN) != 0)
        return -1; /* lower-case hex only, as minted */
    *expiry = e;
    return 0;
}

enum dmf_piece_token_verdict dmf_piece_token_verify(const struct dmf_cluster_key *key,
                                                    const char *token, const char *task_id,
                                                    const char *host_id, int64_t now)
{
    if (!token || !token[0])
        return DMF_PIECE_TOKEN_MISSING;
    int64_t expiry;
    uint8_t got[MAC_LEN], want[MAC_LEN];
    if (parse(token, &expiry, got) != 0)
        return DMF_PIECE_TOKEN_MALFORMED;
    if (!id_ok(task_id) || !id_ok(host_id) || key->len == 0)
        return DMF_PIECE_TOKEN_FORGED;
    mac_of(key, task_id, host_id, expiry, want);
    int same = CRYPTO_memcmp(got, want, MAC_LEN) == 0;
    explicit_bzero(want, sizeof(want));
    if (!same)
        return DMF_PIECE_TOKEN_FORGED;
    /* Expiry is checked after the MAC: only a true token is reported as expired. */
    if (expiry <= now)
        return DMF_PIECE_TOKEN_EXPIRED;
    return DMF_PIECE_TOKEN_OK;
}

const char *dmf_piece_token_verdict_str(enum dmf_piece_token_verdict v)
{
    switch (v) {
    case DMF_PIECE_TOKEN_OK:
        return "ok";
    case DMF_PIECE_TOKEN_MISSING:
        return "missing";
    case DMF_PIECE_TOKEN_MALFORMED:
        return "malformed";
    case DMF_PIECE_TOKEN_EXPIRED:
        return "expired";
    case DMF_PIECE_TOKEN_FORGED:
        return "forged";
    }
    return "unknown";
}
