/* Connecting to the local daemon's unix socket (the local API), for the CLI. */
#ifndef DMF_LOCAL_SOCKET_H
#define DMF_LOCAL_SOCKET_H

/* Connects to the unix socket at path: 0 with *fd_out (owned by the caller), or -errno
 * (-ENOENT, -ECONNREFUSED: no daemon; -EACCES: not allowed; -ENAMETOOLONG). */
int dmf_local_connect(const char *path, int *fd_out);

#endif
