/* Back-to-source: fetching a task from its origin with libcurl. A probe asks for one
 * byte (Range: bytes=0-0). A 206 gives the length and proves ranges work: then pieces
 * are fetched as parallel range requests (source_concurrency at a time). A 200 means no
 * range support: that same response is read as one stream and cut into pieces (its
 * length may be unknown until the end). A 416 means an empty content. The pieces go to
 * the task through the sink, which hashes them: their digests become the reference for
 * every other peer. */
#ifndef DMF_SOURCE_H
#define DMF_SOURCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/config.h"
#include "common/http_client.h"
#include "daemon/peer/piece_book.h"

struct dmf_source;

/* Why back-to-source gave up. */
struct dmf_source_failure {
    const char *reason;
    long http_status;     /* the origin's status when it is why (a 4xx, a last 5xx), else 0 */
    bool for_good;        /* anyone asking would get the same (a 4xx) */
    bool content_changed; /* the origin's validators or length changed mid-download: the
                           * pieces fetched so far belong to another version */
    bool not_shared;      /* the origin varies its answer on a header this request sets
                           * (Vary): this content is not for other users of the URL */
};

/* How back-to-source reports to its task. */
struct dmf_source_sink {
    /* Piece n from the origin (buf, malloc'd, is taken over): 0, -ECANCELED when the task
     * no longer wants it, or another negative code (the source then fails). */
    int (*piece)(void *arg, uint32_t n, uint8_t *buf, size_t len, enum dmf_piece_origin from,
                 const char *host_id);
    /* The origin told the length (content_length -1: unknown) and the piece length to cut
     * it in: 0, or -EINVAL when it contradicts what the task knows (the task failed). */
    int (*layout)(void *arg, int64_t content_length, uint32_t piece_length);
    /* The origin's validators and Content-Type (any may be NULL) for the content being
     * fetched. */
    void (*validators)(void *arg, const char *etag, const char *last_modified,
                       const char *content_type);
    /* The download from the origin failed (after the retries worth making). */
    void (*failed)(void *arg, const struct dmf_source_failure *f);
    void (*changed)(void *arg);
    bool (*busy)(void *arg);
};

struct dmf_source_env {
    struct event_base *base; /* for the retry timer */
    dmf_http_t *http;
    struct dmf_piece_book *book; /* the task's: read, and claims taken and given back */
    const char *task_id;         /* borrowed: outlive the source */
    const char *url;
    const struct dmf_strlist *headers; /* secrets: passed to the origin, never logged */
    /* Checked on every address connected to (origin_policy.h); NULL = none. */
    const struct dmf_origin_policy *origin_policy;
    int concurrency;       /* range requests at once */
    struct dmf_flow *flow; /* the task's bandwidth share (borrowed; NULL: none) */
    /* The validators the task's pieces so far are of (from the scheduler, or an earlier
     * fetch); NULL = none known. Read when the origin answers: another version fails the
     * fetch (content_changed) instead of mixing. */
    char *const *etag, *const *last_modified;
    bool immutable; /* a digest task: the content digest decides, Vary does not matter */
    const struct dmf_source_sink *sink;
    void *arg;
};

/* Starts fetching (env is copied; what it points to is borrowed). */
struct dmf_source *dmf_source_start(const struct dmf_source_env *env);
/* Starts range requests for missing pieces, or resumes a paused stream. */
void dmf_source_dispatch(struct dmf_source *src);
/* Cancels every request (giving their claims back) and frees. NULL is ignored. */
void dmf_source_free(struct dmf_source *src);

/* ---- the origin's answers, decided without I/O (exposed for tests) ---- */

enum dmf_source_mode { DMF_SOURCE_PROBING, DMF_SOURCE_RANGES, DMF_SOURCE_STREAM, DMF_SOURCE_DONE };

/* What the probe's answer means: the mode, the content length (-1 unknown) and the piece
 * length to use (known_piece_length when the task has one). Returns 0, or -EPROTO with
 * the reason in err. */
int dmf_source_probe_answer(long status, const char *content_range, const char *content_length,
                            uint32_t known_piece_length, enum dmf_source_mode *mode, int64_t *total,
                            uint32_t *piece_length, char *err, size_t errlen);
/* Whether a failed request is worth another try: connection errors, timeouts and 5xx
 * (and 408, 429) are; any other HTTP status is the origin's answer. status 0 = no HTTP
 * answer at all. */
bool dmf_source_retryable(long status);
/* True when two values of a validator (ETag, Last-Modified) name the same content: equal,
 * or the origin did not send one of them. */
bool dmf_source_same_version(const char *pinned, const char *now);
/* True when a range response (its Content-Range) is exactly piece n of the book. */
bool dmf_source_range_matches(const struct dmf_piece_book *book, uint32_t n,
                              const char *content_range);

#endif
