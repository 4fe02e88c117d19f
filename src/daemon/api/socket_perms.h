/* Who may use the local API: the socket's group and mode (--socket-group, --socket-mode).
 * The socket is the only way local users reach cached data (the data dir is 0700); a
 * user who may connect may ask for any URL, and receives a descriptor of that task's data
 * only (docs/internals/LOCAL-API.md). */
#ifndef DMF_SOCKET_PERMS_H
#define DMF_SOCKET_PERMS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct dmf_socket_perms {
    bool has_group;
    gid_t gid;
    mode_t mode; /* permission bits of the socket file */
};

/* From the flags: group is a name or a numeric GID (NULL: none), mode an octal string
 * (NULL: 0660 with a group, else 0600). 0, or -EINVAL with the reason in err ("no group
 * named 'x'", "--socket-mode wants octal permission bits like 0660"). */
int dmf_socket_perms_parse(const char *group, const char *mode, struct dmf_socket_perms *out,
                           char *err, size_t errlen);
/* Gives the socket file at path its group and mode. 0 or -errno with the reason in err. */
int dmf_socket_perms_apply(const char *path, const struct dmf_socket_perms *p, char *err,
                           size_t errlen);

#endif
