/* The manager's REST API under /api/v1/ (and Dragonfly's /oapi/v1/jobs), on evhttp with
 * JSON bodies (jansson). Every route is one row of a table: method, path pattern, the role
 * and token scope it needs, and its handler; the same table writes the OpenAPI document
 * at /api/v1/openapi.json. A request is matched and bounded on the loop; authentication,
 * the route decision (auth.h) and the handler's database work run on a worker; the reply
 * is sent back on the loop. See docs/internals/MANAGER.md. */
#ifndef DMF_MANAGER_API_H
#define DMF_MANAGER_API_H

#include <stddef.h>
#include <stdint.h>

#include "manager/auth.h"
#include "manager/manager.h"

struct evhttp;

/* Largest request body accepted (larger: 413). */
#define DMF_API_MAX_BODY (64u * 1024)

enum dmf_api_method { DMF_API_GET, DMF_API_POST, DMF_API_PATCH, DMF_API_DELETE };

/* Matches path against pattern ("/api/v1/clusters/{id}"); each {id} takes a decimal id of
 * 1..18 digits, stored in ids (at most 2). Returns 1 on a match. Pure. */
int dmf_api_path_match(const char *pattern, const char *path, int64_t ids[2]);

/* One route as the table lists it (for the OpenAPI document and the tests). */
struct dmf_api_route_info {
    enum dmf_api_method method;
    const char *pattern;
    enum dmf_role role;
    int scope;
    const char *summary;
};
/* The i-th route, or NULL past the end. */
const struct dmf_api_route_info *dmf_api_route(size_t i);
const char *dmf_api_method_name(enum dmf_api_method m);

/* Installs the API on http (borrowed); m outlives it. */
void dmf_api_install(struct dmf_manager *m, struct evhttp *http);

/* Creates the root user when the users table is empty: with the password read from
 * password_file, or a random one printed once on stdout. Runs before the loop starts.
 * 0, or -errno with a reason in err. */
int dmf_api_bootstrap_root(struct dmf_manager *m, const char *password_file, char *err,
                           size_t errlen);

#endif
