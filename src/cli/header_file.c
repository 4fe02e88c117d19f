/* Request headers from files; see header_file.h. */
#include "cli/header_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util.h"

/* Reads at most DMF_HEADER_FILE_MAX bytes of fd into a new NUL-terminated buffer. */
static int read_bounded(int fd, char **out, size_t *len)
{
    char *buf = dmf_xmalloc(DMF_HEADER_FILE_MAX + 2);
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, buf + n, DMF_HEADER_FILE_MAX + 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = -errno;
            explicit_bzero(buf, n);
            free(buf);
            return e;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n > DMF_HEADER_FILE_MAX) {
            explicit_bzero(buf, n);
            free(buf);
            return -EFBIG;
        }
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

int dmf_header_file_read(const char *path, struct dmf_strlist *out, char *err, size_t errlen)
{
    int fd = strcmp(path, "-") == 0 ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "cannot read header file %s: %s", path, strerror(errno));
        return -errno;
    }
    char *buf = NULL;
    size_t len = 0;
    int rc = read_bounded(fd, &buf, &len);
    if (fd != STDIN_FILENO)
        close(fd);
    if (rc == -EFBIG) {
        snprintf(err, errlen, "header file %s is larger than %u bytes", path, DMF_HEADER_FILE_MAX);
        return rc;
    }
    if (rc != 0) {
        snprintf(err, errlen, "cannot read header file %s: %s", path, strerror(-rc));
        return rc;
    }
    if (memchr(buf, '\0', len) != NULL) {
        snprintf(err, errlen, "header file %s holds a NUL byte", path);
        rc = -EINVAL;
        goto out;
    }
    unsigned line = 0;
    for (char *p = buf; *p != '\0';) {
        line++;
        size_t n = strcspn(p, "\n");
        char *next = p[n] == '\n' ? p + n + 1 : p + n;
        p[n] = '\0';
        if (n > 0 && p[n - 1] == '\r')
            p[--n] = '\0';
        if (n == 0) {
            p = next;
            continue;
        }
        const char *colon = strchr(p, ':');
        if (n > DMF_HEADER_LINE_MAX || colon == NULL || colon == p || strchr(p, '\r')) {
            snprintf(err, errlen, "header file %s, line %u: not 'Name: value' of at most %u bytes",
                     path, line, DMF_HEADER_LINE_MAX);
            rc = -EINVAL;
            goto out;
        }
        if (out->n >= DMF_HEADERS_FROM_MAX) {
            snprintf(err, errlen, "header file %s: more than %u headers", path,
                     DMF_HEADERS_FROM_MAX);
            rc = -E2BIG;
            goto out;
        }
        dmf_strlist_push(out, p);
        p = next;
    }
out:
    explicit_bzero(buf, len);
    free(buf);
    return rc;
}

int dmf_headers_expand(const struct dmf_strlist *flags, const struct dmf_strlist *files,
                       struct dmf_strlist *out, char *err, size_t errlen)
{
    int rc = 0;
    for (size_t i = 0; flags && i < flags->n && rc == 0; i++) {
        const char *h = flags->v[i];
        if (h[0] == '@')
            rc = dmf_header_file_read(h + 1, out, err, errlen);
        else if (out->n < DMF_HEADERS_FROM_MAX)
            dmf_strlist_push(out, h);
        else {
            snprintf(err, errlen, "more than %u headers", DMF_HEADERS_FROM_MAX);
            rc = -E2BIG;
        }
    }
    for (size_t i = 0; files && i < files->n && rc == 0; i++)
        rc = dmf_header_file_read(files->v[i], out, err, errlen);
    if (rc != 0)
        dmf_strlist_free(out);
    return rc;
}
