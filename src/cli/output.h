/* Where `damselfly get` writes, by the rules curl, wget and dfget users expect:
 *
 *   -O -        stdout, in order;
 *   -O DIR/     DIR/<last segment of the URL's path> (wget); refused when the URL's path
 *               names no file;
 *   -O FILE     FILE, which must not be a directory, a device, a FIFO or a socket; an
 *               existing file is replaced only with --overwrite and keeps its mode; a
 *               symlink is written through to its target (curl), a dangling one refused.
 *
 * The content goes to a temp file .<name>.damselfly-XXXXXX next to the final path (made
 * before anything is downloaded, which checks the directory is writable), renamed into
 * place once complete; SIGINT, SIGTERM and SIGHUP remove it and exit 128 + the signal. A
 * new file gets 0666 & ~umask. When the daemon's data file is on the same filesystem
 * and owned by this user, the output shares its blocks (FICLONE, else a hard link)
 * instead of being a second copy. */
#ifndef DMF_CLI_OUTPUT_H
#define DMF_CLI_OUTPUT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>

/* What is at the output path now (from lstat and, for a symlink, stat). */
struct dmf_output_found {
    bool exists;    /* lstat succeeded */
    bool symlink;   /* it is a symlink */
    bool target_ok; /* a symlink's target exists (stat succeeded) */
    mode_t mode;    /* the file's (a symlink's target's) st_mode */
};

/* The file name -O DIR/ takes from url: the last segment of its path, without query or
 * fragment. 0 with *name malloc'd, or -EINVAL when the path names no file ("/", "..").
 * Pure. */
int dmf_output_name_from_url(const char *url, char **name);
/* Whether path may be written, given what is there (pure). 0, or -errno with the one-line
 * reason in err: -EISDIR, -ENODEV (device), -EINVAL (FIFO, socket, dangling symlink),
 * -EEXIST (a file, without overwrite). */
int dmf_output_check(const char *path, const struct dmf_output_found *f, bool overwrite, char *err,
                     size_t errlen);

/* One output file being written. */
struct dmf_output {
    char *path; /* the final path (a symlink resolved); NULL for stdout */
    char *tmp;  /* the temp file next to it */
    int fd;     /* the temp file, or stdout */
    mode_t mode;
    bool replace; /* an existing file is replaced (--overwrite) */
};

/* Resolves arg (-O) against url and checks it, then creates the temp file and installs
 * the signal handlers that remove it. 0, or -errno with a one-line reason in err. */
int dmf_output_prepare(struct dmf_output *o, const char *arg, const char *url, bool overwrite,
                       char *err, size_t errlen);
/* Makes the temp file share src_fd's blocks (FICLONE, or a hard link when the filesystem
 * has no reflink): 0, or -errno when neither works here (then copy into o->fd). */
int dmf_output_share(struct dmf_output *o, int src_fd);
/* Gives the complete temp file its length and mode and renames it into place. 0, or
 * -errno with the reason in err (the temp file is removed, o freed). */
int dmf_output_commit(struct dmf_output *o, int64_t length, char *err, size_t errlen);
/* Removes the temp file (a failed download) and frees what o holds. */
void dmf_output_abort(struct dmf_output *o);
/* Frees what o holds after a commit (o->path is valid until then). */
void dmf_output_free(struct dmf_output *o);

#endif
