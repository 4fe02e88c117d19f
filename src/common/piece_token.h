/* Piece-fetch tokens: the scheduler's word that a host may fetch a task's pieces.
 *
 * A token is "v1.<expiry>.<hex HMAC-SHA256>" where the MAC is taken, under the cluster
 * key, over "damselfly-piece-token-v1\n<task id>\n<host id>\n<expiry>" (expiry in Unix
 * seconds). A parent's piece server checks it without asking anyone: the MAC
 * (compared in constant time), the task and host it names, and the expiry against a
 * clock the caller passes (so tests inject time). Tokens are secrets: never log them.
 *
 * This module is pure but for dmf_cluster_key_load (one file read at start-up). */
#ifndef DMF_PIECE_TOKEN_H
#define DMF_PIECE_TOKEN_H

#include <stddef.h>
#include <stdint.h>

#define DMF_CLUSTER_KEY_MIN    32   /* bytes of key material at least */
#define DMF_CLUSTER_KEY_MAX    4096 /* a key file larger than this is refused */
#define DMF_PIECE_TOKEN_MAX    128  /* longest token, without NUL ("v1." + 20 + "." + 64) */
#define DMF_PIECE_TOKEN_ID_MAX 256  /* longest task or host ID a token can name */

struct dmf_cluster_key {
    uint8_t bytes[DMF_CLUSTER_KEY_MAX];
    size_t len;
};

/* Reads the key from path. Refuses (-EPERM) a file readable or writable by "others"
 * (mode & 007), a file that is not a regular file (-EINVAL), and fewer than
 * DMF_CLUSTER_KEY_MIN or more than DMF_CLUSTER_KEY_MAX bytes (-EINVAL), with the reason in
 * err. The key's bytes are taken as they are (a trailing newline included). */
int dmf_cluster_key_load(const char *path, struct dmf_cluster_key *key, char *err, size_t errlen);

/* Wipes the key (explicit_bzero). */
void dmf_cluster_key_clear(struct dmf_cluster_key *key);

/* Writes into out (outlen >= DMF_PIECE_TOKEN_MAX + 1) the token for host_id to fetch
 * task_id's pieces until expiry (Unix seconds). Returns 0, or -EINVAL for an empty or
 * too long ID or a short buffer. */
int dmf_piece_token_mint(const struct dmf_cluster_key *key, const char *task_id,
                         const char *host_id, int64_t expiry, char *out, size_t outlen);

enum dmf_piece_token_verdict {
    DMF_PIECE_TOKEN_OK = 0,
    DMF_PIECE_TOKEN_MISSING,   /* no token, or an empty one */
    DMF_PIECE_TOKEN_MALFORMED, /* not "v1.<digits>.<64 lower-case hex>" as minted */
    DMF_PIECE_TOKEN_EXPIRED,   /* a true MAC whose expiry is at or before now */
    DMF_PIECE_TOKEN_FORGED,    /* the MAC does not match this task, host and expiry */
};

/* Checks token (NULL = missing) for host_id fetching task_id at time now (Unix seconds).
 * A token minted for another task or host is FORGED: the MAC covers both. */
enum dmf_piece_token_verdict dmf_piece_token_verify(const struct dmf_cluster_key *key,
                                                    const char *token, const char *task_id,
                                                    const char *host_id, int64_t now);

/* A static word for the verdict ("ok", "missing", "malformed", "expired", "forged"). */
const char *dmf_piece_token_verdict_str(enum dmf_piece_token_verdict v);

#endif
