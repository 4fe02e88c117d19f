/* libcurl, loaded on first use with dlopen() instead of at process start.
 *
 * Linking libcurl makes the dynamic loader map ~30 shared libraries (TLS, Kerberos,
 * LDAP, IDN...) in every process: about 7 ms before main(), on every `damselfly get`,
 * which mostly never calls curl. Files that use curl include this header instead of
 * <curl/curl.h>: the curl_* calls below then go through a table filled by
 * dmf_curl_load(), which must have succeeded before the first call. */
#ifndef DMF_CURL_DL_H
#define DMF_CURL_DL_H

#include <curl/curl.h>
#include <stddef.h>

struct dmf_curl_api {
    __typeof__(curl_global_init) *global_init;
    __typeof__(curl_easy_init) *easy_init;
    __typeof__(curl_easy_setopt) *easy_setopt;
    __typeof__(curl_easy_getinfo) *easy_getinfo;
    __typeof__(curl_easy_perform) *easy_perform;
    __typeof__(curl_easy_cleanup) *easy_cleanup;
    __typeof__(curl_easy_strerror) *easy_strerror;
    __typeof__(curl_easy_pause) *easy_pause;
    __typeof__(curl_multi_init) *multi_init;
    __typeof__(curl_multi_setopt) *multi_setopt;
    __typeof__(curl_multi_assign) *multi_assign;
    __typeof__(curl_multi_socket_action) *multi_socket_action;
    __typeof__(curl_multi_info_read) *multi_info_read;
    __typeof__(curl_multi_add_handle) *multi_add_handle;
    __typeof__(curl_multi_remove_handle) *multi_remove_handle;
    __typeof__(curl_multi_cleanup) *multi_cleanup;
    __typeof__(curl_slist_append) *slist_append;
    __typeof__(curl_slist_free_all) *slist_free_all;
    __typeof__(curl_version_info) *version_info;
};

extern struct dmf_curl_api dmf_curl_api;

/* Loads libcurl and calls curl_global_init once (thread-safe, idempotent). Returns 0, or
 * -ENOENT with a reason in err ("cannot load libcurl.so.4: ..."). A libcurl without an
 * asynchronous resolver (CURL_VERSION_ASYNCHDNS: the threaded resolver or c-ares) is
 * refused: its name lookups would block the event loop that drives every transfer. */
int dmf_curl_load(char *err, size_t errlen);

#ifndef DMF_CURL_DL_IMPL
#undef curl_easy_setopt
#undef curl_easy_getinfo
#undef curl_multi_setopt
#define curl_global_init         dmf_curl_api.global_init
#define curl_easy_init           dmf_curl_api.easy_init
#define curl_easy_setopt         dmf_curl_api.easy_setopt
#define curl_easy_getinfo        dmf_curl_api.easy_getinfo
#define curl_easy_perform        dmf_curl_api.easy_perform
#define curl_easy_cleanup        dmf_curl_api.easy_cleanup
#define curl_easy_strerror       dmf_curl_api.easy_strerror
#define curl_easy_pause          dmf_curl_api.easy_pause
#define curl_multi_init          dmf_curl_api.multi_init
#define curl_multi_setopt        dmf_curl_api.multi_setopt
#define curl_multi_assign        dmf_curl_api.multi_assign
#define curl_multi_socket_action dmf_curl_api.multi_socket_action
#define curl_multi_info_read     dmf_curl_api.multi_info_read
#define curl_multi_add_handle    dmf_curl_api.multi_add_handle
#define curl_multi_remove_handle dmf_curl_api.multi_remove_handle
#define curl_multi_cleanup       dmf_curl_api.multi_cleanup
#define curl_slist_append        dmf_curl_api.slist_append
#define curl_slist_free_all      dmf_curl_api.slist_free_all
#define curl_version_info        dmf_curl_api.version_info
#endif

#endif
