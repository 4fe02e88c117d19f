/* The local API socket's group and mode; see socket_perms.h. */
#include "daemon/api/socket_perms.h"

#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static bool all_digits(const char *s, const char *digits)
{
    if (*s == '\0')
        return false;
    for (; *s; s++)
        if (!strchr(digits, *s))
            return false;
    return true;
}

int dmf_socket_perms_parse(const char *group, const char *mode, struct dmf_socket_perms *out,
                           char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (group && group[0]) {
        if (all_digits(group, "0123456789")) {
            unsigned long v = strtoul(group, NULL, 10);
            if (v >= (gid_t)-1 || strlen(group) > 10) {
                snprintf(err, errlen, "--socket-group: GID %s is out of range", group);
                return -EINVAL;
            }
            out->gid = (gid_t)v;
        } else {
            struct group *g = getgrnam(group);
            if (g == NULL) {
                snprintf(err, errlen, "--socket-group: no group named '%s'", group);
                return -EINVAL;
            }
            out->gid = g->gr_gid;
        }
        out->has_group = true;
    }
    out->mode = out->has_group ? 0660 : 0600;
    if (mode && mode[0]) {
        unsigned long v = strtoul(mode, NULL, 8);
        if (!all_digits(mode, "01234567") || strlen(mode) > 4 || v > 0777) {
            snprintf(err, errlen, "--socket-mode wants octal permission bits like 0660, not '%s'",
                     mode);
            return -EINVAL;
        }
        out->mode = (mode_t)v;
    }
    return 0;
}

int dmf_socket_perms_apply(const char *path, const struct dmf_socket_perms *p, char *err,
                           size_t errlen)
{
    if (p->has_group && chown(path, (uid_t)-1, p->gid) != 0) {
        int e = -errno;
        snprintf(err, errlen, "cannot give %s to group %u: %s", path, (unsigned)p->gid,
                 strerror(errno));
        return e;
    }
    if (chmod(path, p->mode) != 0) {
        int e = -errno;
        snprintf(err, errlen, "cannot chmod %s to %04o: %s", path, (unsigned)p->mode,
                 strerror(errno));
        return e;
    }
    return 0;
}
