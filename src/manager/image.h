/* Image preheat's first step: resolve an image reference through its registry into the
 * blobs to preheat. The job's URL is the manifest's ("https://REGISTRY/v2/NAME/manifests/
 * REF", as Dragonfly takes it); an index (or Docker manifest list) is narrowed to the
 * platforms asked for ("linux/amd64", several separated by commas; default linux/amd64),
 * and each platform's manifest gives its layers. Registry auth: the job's username and
 * password, as Basic or through the registry's Bearer token service (the challenge in
 * WWW-Authenticate). Runs on the loop with common/http_client.h. */
#ifndef DMF_MANAGER_IMAGE_H
#define DMF_MANAGER_IMAGE_H

#include <jansson.h>

struct event_base;

typedef struct dmf_image_resolver dmf_image_resolver_t;

#define DMF_IMAGE_MAX_MANIFEST (4u << 20) /* bytes of one manifest or index */
#define DMF_IMAGE_MAX_LAYERS   1024

/* layers: a new array of {"url", "digest"} (blob URL, "sha256:..."), with "headers" set
 * on the job's args to what a daemon needs to fetch them (the registry token), or NULL
 * and a reason. The callback owns layers. */
typedef void (*dmf_image_cb)(void *arg, json_t *layers, const char *err);

dmf_image_resolver_t *dmf_image_resolver_new(struct event_base *base);
/* Cancels every resolution without calling back. */
void dmf_image_resolver_free(dmf_image_resolver_t *r);

/* Resolves args ({"urls": [manifest URL], "platform", "username", "password",
 * "headers"}); may add an Authorization header to args.headers. */
void dmf_image_resolve(dmf_image_resolver_t *r, json_t *args, dmf_image_cb cb, void *arg);

/* Pure helpers, for the tests. */
/* Splits "https://host/v2/NAME/manifests/REF" into base ("https://host/v2/NAME") and ref;
 * 0 or -EINVAL. */
int dmf_image_parse_url(const char *url, char *base, size_t baselen, char *ref, size_t reflen);
/* True when an index entry's platform object matches "os/arch[/variant]". */
int dmf_image_platform_match(const json_t *platform, const char *want);
/* Reads a "Bearer realm=...,service=...,scope=..." challenge into a token URL (caller frees),
 * or NULL. */
char *dmf_image_token_url(const char *challenge);

#endif
