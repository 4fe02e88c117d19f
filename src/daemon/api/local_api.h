/* The local API on the daemon's unix socket (--socket), used by `damselfly get`.
 *
 * It is the Daemon service's DownloadTask without gRPC: HTTP/1.1, request
 *   POST /damselfly.v1.Daemon/DownloadTask   body: a DownloadTaskRequest (protobuf)
 * answered 200 with a chunked body of frames, each 1 type byte + 4-byte big-endian length
 * + payload: 'M' a DownloadTaskResponse, 'F' (empty) with an open read-only descriptor of
 * the task's data attached (SCM_RIGHTS), 'S' (last) a 4-byte gRPC status code + reason.
 * The socket's group and mode come from socket_perms.h; the data dir stays 0700.
 * A client needs no gRPC runtime (measured: a cached 1 MiB `get` took 11.3 ms median
 * over gRPC, 7.9 ms over this API). The gRPC Daemon service stays on
 * the TCP rpc port. See docs/internals/LOCAL-API.md. */
#ifndef DMF_LOCAL_API_H
#define DMF_LOCAL_API_H

#include <stddef.h>

struct dmf_daemon;
struct dmf_local_api;

struct dmf_socket_perms;

/* Listens on the unix socket path (which must not exist), with the group and mode of
 * perms. NULL with a reason in err. */
struct dmf_local_api *dmf_local_api_new(struct dmf_daemon *d, const char *path,
                                        const struct dmf_socket_perms *perms, char *err,
                                        size_t errlen);
/* Closes the socket and every connection (abandoning their downloads). */
void dmf_local_api_free(struct dmf_local_api *api);

#endif
