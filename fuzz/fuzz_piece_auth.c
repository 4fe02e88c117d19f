/* Fuzzes what a requester puts in the piece server's authorisation headers (any host that
 * reaches the piece port sends them): X-Damselfly-Piece-Token, checked by
 * dmf_piece_token_verify, and X-Damselfly-Host-Id, checked by dmf_tls_host_id_valid.
 * A token is accepted only when it is, byte for byte, the one the key mints for that task,
 * host and expiry; a claimed host ID is used only when it is made of host-ID characters. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/piece_token.h"
#include "common/tls_identity.h"
#include "common/util.h"

#define TASK "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define HOST "host-1"
#define NOW  1800000000

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct dmf_cluster_key key;
    if (key.len == 0) {
        for (size_t i = 0; i < 48; i++)
            key.bytes[i] = (uint8_t)(i * 7 + 3);
        key.len = 48;
    }
    char *s = dmf_xstrndup((const char *)data, size);
    enum dmf_piece_token_verdict v = dmf_piece_token_verify(&key, s, TASK, HOST, NOW);
    if (v == DMF_PIECE_TOKEN_OK || v == DMF_PIECE_TOKEN_EXPIRED) {
        /* A true MAC: the input must be exactly the token minted for its expiry. */
        long long expiry = strtoll(s + 3, NULL, 10);
        char again[DMF_PIECE_TOKEN_MAX + 1];
        if (strncmp(s, "v1.", 3) != 0 ||
            dmf_piece_token_mint(&key, TASK, HOST, expiry, again, sizeof(again)) != 0 ||
            strcmp(again, s) != 0 || (v == DMF_PIECE_TOKEN_OK) != (expiry > NOW))
            abort();
    }
    /* The C string up to a NUL is what is checked (a header value is one). */
    if (dmf_tls_host_id_valid(s)) {
        size_t n = strlen(s);
        if (n == 0 || n > DMF_TLS_ID_MAX || s[0] == '.' || s[0] == '-' ||
            strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-") != n)
            abort();
    }
    free(s);
    return 0;
}
