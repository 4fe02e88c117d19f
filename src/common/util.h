/* Small helpers shared by every component: allocation that aborts on failure, errors,
 * time, hex, and address parsing. */
#ifndef DMF_UTIL_H
#define DMF_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/time.h>

#define DMF_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define DMF_MIN(a, b)     ((a) < (b) ? (a) : (b))
#define DMF_MAX(a, b)     ((a) > (b) ? (a) : (b))

/* A non-owning view of bytes, passed by value. */
typedef struct dmf_slice {
    const char *ptr;
    size_t len;
} dmf_slice_t;

/* Allocation never returns NULL: on exhaustion the process aborts with a message. */
void *dmf_xmalloc(size_t n);
void *dmf_xcalloc(size_t count, size_t n);
void *dmf_xrealloc(void *p, size_t n);
char *dmf_xstrdup(const char *s);
/* At most n bytes of s, up to its first NUL (as strndup(3)), in a new string. */
char *dmf_xstrndup(const char *s, size_t n);
/* printf into a new string (caller frees). */
char *dmf_xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Human-readable text for a negative errno-style code returned by dmf_ functions. */
const char *dmf_strerror(int err);

/* Monotonic milliseconds, for timeouts and rates. */
uint64_t dmf_now_ms(void);
/* Wall-clock milliseconds since the epoch, for times that are stored (access times). */
int64_t dmf_wall_ms(void);
/* ms as a struct timeval (for libevent timeouts). */
struct timeval dmf_timeval_ms(uint64_t ms);

/* Lower-case hex of len bytes into out (2*len+1 bytes). */
void dmf_hex_encode(const uint8_t *in, size_t len, char *out);
/* The value of one hex digit (either case), or -1. */
int dmf_hex_digit(char c);
/* Decodes exactly 2*len hex characters; returns 0 or -EINVAL. */
int dmf_hex_decode(const char *hex, uint8_t *out, size_t len);

/* Parses "HOST:PORT" (IPv4 name or [IPv6]) into host (caller's buffer) and port.
 * On failure returns -EINVAL and fills err with a reason. */
int dmf_parse_hostport(const char *s, char *host, size_t hostlen, uint16_t *port, char *err,
                       size_t errlen);

/* Creates a directory and its parents (mode 0755); returns 0 or -errno. */
int dmf_mkdir_p(const char *path);

#define DMF_CONTENT_TYPE_MAX 256
/* Whether s may be passed on between hosts as an origin's Content-Type: 1..256 bytes of
 * printable ASCII (space included; no control character, so no CR/LF). */
bool dmf_content_type_valid(const char *s);

#endif
