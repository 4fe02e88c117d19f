/* The output of `damselfly get`; see output.h. */
#include "cli/output.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <linux/fs.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "common/util.h"

int dmf_output_name_from_url(const char *url, char **name)
{
    *name = NULL;
    const char *p = strstr(url, "://");
    p = p ? p + 3 : url;
    p += strcspn(p, "/?#"); /* past the authority */
    if (*p != '/')
        return -EINVAL;
    size_t end = strcspn(p, "?#");
    const char *last = p;
    for (size_t i = 0; i < end; i++)
        if (p[i] == '/')
            last = p + i + 1;
    size_t len = (size_t)(p + end - last);
    if (len == 0 || (len == 1 && last[0] == '.') || (len == 2 && strncmp(last, "..", 2) == 0))
        return -EINVAL;
    *name = dmf_xstrndup(last, len);
    return 0;
}

int dmf_output_check(const char *path, const struct dmf_output_found *f, bool overwrite, char *err,
                     size_t errlen)
{
    if (!f->exists)
        return 0;
    if (f->symlink && !f->target_ok) {
        snprintf(err, errlen, "%s is a symlink to nothing: refusing to write through it", path);
        return -EINVAL;
    }
    if (S_ISDIR(f->mode)) {
        snprintf(err, errlen, "%s is a directory (-O %s/ writes %s/<name from the URL>)", path,
                 path, path);
        return -EISDIR;
    }
    if (S_ISCHR(f->mode) || S_ISBLK(f->mode)) {
        snprintf(err, errlen, "%s is a device: refusing to replace it", path);
        return -ENODEV;
    }
    if (!S_ISREG(f->mode)) {
        snprintf(err, errlen, "%s is a %s: refusing to replace it", path,
                 S_ISFIFO(f->mode)   ? "FIFO"
                 : S_ISSOCK(f->mode) ? "socket"
                                     : "special file");
        return -EINVAL;
    }
    if (!overwrite) {
        snprintf(err, errlen, "%s exists (--overwrite replaces it)", path);
        return -EEXIST;
    }
    return 0;
}

/* ---------------------------------------------------------------- signals */

/* The temp file the signal handlers remove (set while one exists). */
static char *volatile pending_tmp;

static void on_fatal_signal(int sig)
{
    char *tmp = pending_tmp;
    if (tmp)
        unlink(tmp);
    _exit(128 + sig);
}

static void install_handlers(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_fatal_signal;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGINT);
    sigaddset(&sa.sa_mask, SIGTERM);
    sigaddset(&sa.sa_mask, SIGHUP);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

/* ---------------------------------------------------------------- the file */

static mode_t new_file_mode(void)
{
    mode_t u = umask(0);
    umask(u);
    return 0666 & ~u;
}

/* The final path for arg: a -O DIR/ gets the URL's file name. */
static int final_path(const char *arg, const char *url, char **out, char *err, size_t errlen)
{
    size_t n = strlen(arg);
    if (n == 0 || arg[n - 1] != '/') {
        *out = dmf_xstrdup(arg);
        return 0;
    }
    struct stat st;
    if (stat(arg, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "%s is not a directory", arg);
        return -ENOTDIR;
    }
    char *name;
    if (dmf_output_name_from_url(url, &name) != 0) {
        snprintf(err, errlen, "the URL names no file to write in %s: give -O %sFILE", arg, arg);
        return -EINVAL;
    }
    *out = dmf_xasprintf("%s%s", arg, name);
    free(name);
    return 0;
}

int dmf_output_prepare(struct dmf_output *o, const char *arg, const char *url, bool overwrite,
                       char *err, size_t errlen)
{
    memset(o, 0, sizeof(*o));
    o->fd = -1;
    if (strcmp(arg, "-") == 0) {
        o->fd = STDOUT_FILENO;
        return 0;
    }
    char *path = NULL;
    int e = final_path(arg, url, &path, err, errlen);
    if (e != 0)
        return e;
    struct dmf_output_found f = {0};
    struct stat st;
    if (lstat(path, &st) == 0) {
        f.exists = true;
        f.mode = st.st_mode;
        if (S_ISLNK(st.st_mode)) {
            f.symlink = true;
            f.target_ok = stat(path, &st) == 0;
            f.mode = st.st_mode;
        }
    }
    if ((e = dmf_output_check(path, &f, overwrite, err, errlen)) != 0) {
        free(path);
        return e;
    }
    if (f.symlink) {
        /* curl's rule: write through to the target. */
        char *real = realpath(path, NULL);
        if (real == NULL) {
            e = -errno;
            snprintf(err, errlen, "cannot resolve the symlink %s: %s", path, strerror(errno));
            free(path);
            return e;
        }
        free(path);
        path = real;
    }
    o->path = path;
    o->replace = f.exists;
    o->mode = f.exists ? (st.st_mode & 07777) : new_file_mode();
    char *dcopy = dmf_xstrdup(path), *bcopy = dmf_xstrdup(path);
    char *dir = dirname(dcopy);
    o->tmp = dmf_xasprintf("%s/.%s.damselfly-XXXXXX", dir, basename(bcopy));
    install_handlers();
    o->fd = mkostemp(o->tmp, O_CLOEXEC);
    if (o->fd < 0) {
        e = -errno;
        snprintf(err, errlen, "cannot write in %s: %s", dir, strerror(errno));
        free(o->tmp);
        o->tmp = NULL;
    } else {
        pending_tmp = o->tmp;
    }
    free(dcopy);
    free(bcopy);
    return e;
}

int dmf_output_share(struct dmf_output *o, int src_fd)
{
    if (o->path == NULL || o->fd < 0)
        return -EINVAL;
    if (ioctl(o->fd, FICLONE, src_fd) == 0)
        return 0; /* a reflink: the output has its own inode on shared blocks */
    struct stat s, d;
    if (fstat(src_fd, &s) != 0 || fstat(o->fd, &d) != 0)
        return -errno;
    if (s.st_dev != d.st_dev)
        return -EXDEV;
    if (s.st_uid != geteuid())
        return -EPERM; /* the output would be someone else's file */
    char proc[64];
    snprintf(proc, sizeof(proc), "/proc/self/fd/%d", src_fd);
    close(o->fd);
    o->fd = -1;
    unlink(o->tmp);
    if (linkat(AT_FDCWD, proc, AT_FDCWD, o->tmp, AT_SYMLINK_FOLLOW) == 0)
        return 0;
    int e = -errno;
    o->fd = open(o->tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (o->fd < 0)
        return -errno;
    return e;
}

/* Puts tmp in place of path atomically. Over an existing file, ext4 flushes the new
 * file's data on a plain rename (auto_da_alloc: about 1 ms for 1 MiB here); exchanging the
 * two names and then removing the old file does not, and path never lacks a whole file.
 * Without replace, a file that appeared meanwhile is kept (EEXIST). */
static int put_in_place(const char *tmp, const char *path, bool replace)
{
    if (!replace)
        return renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE);
    if (renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_EXCHANGE) == 0) {
        struct stat st;
        /* tmp now names the old file: remove it unless it is not a regular file. */
        if (lstat(tmp, &st) == 0 && !S_ISREG(st.st_mode)) {
            renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_EXCHANGE);
            errno = EISDIR;
            return -1;
        }
        unlink(tmp);
        return 0;
    }
    return rename(tmp, path);
}

int dmf_output_commit(struct dmf_output *o, int64_t length, char *err, size_t errlen)
{
    if (o->path == NULL)
        return 0;
    int e = 0;
    if (o->fd >= 0) {
        if (ftruncate(o->fd, length) != 0 || fchmod(o->fd, o->mode) != 0 || close(o->fd) != 0)
            e = -errno;
        o->fd = -1;
    } else {
        /* A hard link: the inode is the daemon's; it takes the output's mode. */
        struct stat st;
        if (stat(o->tmp, &st) == 0 && (st.st_mode & 07777) != o->mode && chmod(o->tmp, o->mode))
            e = -errno;
    }
    if (e != 0) {
        snprintf(err, errlen, "cannot write %s: %s", o->path, strerror(-e));
    } else if (put_in_place(o->tmp, o->path, o->replace) != 0) {
        e = -errno;
        if (e == -EEXIST)
            snprintf(err, errlen, "%s appeared during the download (--overwrite replaces it)",
                     o->path);
        else
            snprintf(err, errlen, "cannot rename into %s: %s", o->path, strerror(errno));
    }
    if (e != 0) {
        dmf_output_abort(o);
        return e;
    }
    pending_tmp = NULL;
    free(o->tmp);
    o->tmp = NULL;
    return 0;
}

void dmf_output_free(struct dmf_output *o)
{
    dmf_output_abort(o);
}

void dmf_output_abort(struct dmf_output *o)
{
    if (o->tmp) {
        unlink(o->tmp);
        pending_tmp = NULL;
        free(o->tmp);
        o->tmp = NULL;
    }
    if (o->path && o->fd >= 0)
        close(o->fd);
    o->fd = -1;
    free(o->path);
    o->path = NULL;
}
