#define DMF_CURL_DL_IMPL
#include "common/curl_dl.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

struct dmf_curl_api dmf_curl_api;

static pthread_once_t once = PTHREAD_ONCE_INIT;
static char load_error[256];

#define RESOLVE(field, name)                                                                       \
    do {                                                                                           \
        *(void **)&dmf_curl_api.field = dlsym(h, name);                                            \
        if (dmf_curl_api.field == NULL) {                                                          \
            snprintf(load_error, sizeof(load_error), "libcurl.so.4 has no %s", name);              \
            return;                                                                                \
        }                                                                                          \
    } while (0)

static void load(void)
{
    void *h = dlopen("libcurl.so.4", RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        snprintf(load_error, sizeof(load_error), "cannot load libcurl.so.4: %s", dlerror());
        return;
    }
    RESOLVE(global_init, "curl_global_init");
    RESOLVE(easy_init, "curl_easy_init");
    RESOLVE(easy_setopt, "curl_easy_setopt");
    RESOLVE(easy_getinfo, "curl_easy_getinfo");
    RESOLVE(easy_perform, "curl_easy_perform");
    RESOLVE(easy_cleanup, "curl_easy_cleanup");
    RESOLVE(easy_strerror, "curl_easy_strerror");
    RESOLVE(easy_pause, "curl_easy_pause");
    RESOLVE(multi_init, "curl_multi_init");
    RESOLVE(multi_setopt, "curl_multi_setopt");
    RESOLVE(multi_assign, "curl_multi_assign");
    RESOLVE(multi_socket_action, "curl_multi_socket_action");
    RESOLVE(multi_info_read, "curl_multi_info_read");
    RESOLVE(multi_add_handle, "curl_multi_add_handle");
    RESOLVE(multi_remove_handle, "curl_multi_remove_handle");
    RESOLVE(multi_cleanup, "curl_multi_cleanup");
    RESOLVE(slist_append, "curl_slist_append");
    RESOLVE(slist_free_all, "curl_slist_free_all");
    RESOLVE(version_info, "curl_version_info");
    const curl_version_info_data *v = dmf_curl_api.version_info(CURLVERSION_NOW);
    if (v == NULL || (v->features & CURL_VERSION_ASYNCHDNS) == 0) {
        snprintf(load_error, sizeof(load_error),
                 "libcurl %s resolves names synchronously (no AsynchDNS); damselfly needs a "
                 "libcurl built with the threaded resolver or c-ares",
                 v && v->version ? v->version : "?");
        return;
    }
    if (dmf_curl_api.global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        snprintf(load_error, sizeof(load_error), "curl_global_init failed");
        dmf_curl_api.global_init = NULL;
        return;
    }
    load_error[0] = '\0';
}

int dmf_curl_load(char *err, size_t errlen)
{
    pthread_once(&once, load);
    if (load_error[0] == '\0' && dmf_curl_api.global_init)
        return 0;
    if (err)
        snprintf(err, errlen, "%s", load_error[0] ? load_error : "libcurl is not loaded");
    return -ENOENT;
}
