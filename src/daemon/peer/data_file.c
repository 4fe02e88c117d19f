/* Data-file descriptors as an LRU with a bound; see data_file.h. */
#include "daemon/peer/data_file.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"

DMF_METRIC_GAUGE(dmf_m_data_files_open, "damselfly_data_files_open", NULL,
                 "Tasks' data files open right now.");
DMF_METRIC_GAUGE(dmf_m_data_files_max, "damselfly_data_files_max", NULL,
                 "Bound on the tasks' data files open at once (--max-open-files).");

struct dmf_open_files {
    struct dmf_data_file *head, *tail; /* open files, most recently used first */
    uint32_t count, max;
};

struct dmf_open_files *dmf_open_files_new(uint32_t max)
{
    struct dmf_open_files *p = dmf_xcalloc(1, sizeof(*p));
    p->max = max ? max : 1;
    dmf_metric_set(&dmf_m_data_files_max, p->max);
    return p;
}

void dmf_open_files_free(struct dmf_open_files *p)
{
    free(p);
}

uint32_t dmf_open_files_count(const struct dmf_open_files *p)
{
    return p->count;
}

uint32_t dmf_open_files_max(const struct dmf_open_files *p)
{
    return p->max;
}

uint32_t dmf_open_files_default(uint64_t nofile)
{
    uint64_t q = nofile / 4;
    return (uint32_t)DMF_MIN(DMF_MAX(q, 16), 4096);
}

static void lru_unlink(struct dmf_data_file *f)
{
    struct dmf_open_files *p = f->pool;
    if (f->prev)
        f->prev->next = f->next;
    else
        p->head = f->next;
    if (f->next)
        f->next->prev = f->prev;
    else
        p->tail = f->prev;
    f->prev = f->next = NULL;
    p->count--;
    dmf_metric_set(&dmf_m_data_files_open, p->count);
}

static void lru_push_front(struct dmf_data_file *f)
{
    struct dmf_open_files *p = f->pool;
    f->prev = NULL;
    f->next = p->head;
    if (p->head)
        p->head->prev = f;
    p->head = f;
    if (p->tail == NULL)
        p->tail = f;
    p->count++;
    dmf_metric_set(&dmf_m_data_files_open, p->count);
}

static void really_close(struct dmf_data_file *f)
{
    lru_unlink(f);
    close(f->fd);
    f->fd = -1;
}

/* Closes the least recently used unpinned files (not keep) while over the bound. */
static void trim(struct dmf_open_files *p, const struct dmf_data_file *keep)
{
    struct dmf_data_file *f = p->tail;
    while (p->count > p->max && f != NULL) {
        struct dmf_data_file *prev = f->prev;
        if (f != keep && f->pins == 0) {
            dmf_debug("data files: closing %s (%u open, bound %u)", f->path ? f->path : "?",
                      p->count, p->max);
            really_close(f);
        }
        f = prev;
    }
}

void dmf_open_files_shed(struct dmf_open_files *p)
{
    uint32_t keep = p->count / 2, closed = 0;
    for (struct dmf_data_file *f = p->tail; f != NULL && p->count > keep;) {
        struct dmf_data_file *prev = f->prev;
        if (f->pins == 0) {
            really_close(f);
            closed++;
        }
        f = prev;
    }
    dmf_warn("data files: out of descriptors: closed %u idle data files (%u still open)", closed,
             p->count);
}

void dmf_data_file_init(struct dmf_data_file *f, struct dmf_open_files *p)
{
    *f = (struct dmf_data_file){.pool = p, .fd = -1};
}

int dmf_data_file_fd(struct dmf_data_file *f)
{
    if (f->fd < 0)
        return -1;
    if (f->pool->head != f) {
        lru_unlink(f);
        lru_push_front(f);
    }
    return f->fd;
}

void dmf_data_file_set(struct dmf_data_file *f, int fd, char *path)
{
    if (f->fd >= 0)
        really_close(f);
    struct stat st;
    bool same = f->gen > 0 && fstat(fd, &st) == 0 && st.st_dev == f->dev && st.st_ino == f->ino;
    if (!same) {
        f->gen++;
        if (fstat(fd, &st) == 0) {
            f->dev = st.st_dev;
            f->ino = st.st_ino;
        }
    }
    free(f->path);
    f->path = path;
    f->fd = fd;
    lru_push_front(f);
    trim(f->pool, f);
}

void dmf_data_file_close(struct dmf_data_file *f)
{
    if (f->fd >= 0 && f->pins == 0)
        really_close(f);
}

void dmf_data_file_forget(struct dmf_data_file *f)
{
    dmf_data_file_close(f);
    f->dev = (dev_t)-1; /* whatever opens next is a new file to the task's watchers */
    f->ino = 0;
}

void dmf_data_file_pin(struct dmf_data_file *f)
{
    f->pins++;
}

void dmf_data_file_unpin(struct dmf_data_file *f)
{
    if (f->pins > 0)
        f->pins--;
    if (f->pins == 0 && f->fd >= 0)
        trim(f->pool, NULL);
}

bool dmf_data_file_pinned(const struct dmf_data_file *f)
{
    return f->pins > 0;
}

void dmf_data_file_free(struct dmf_data_file *f)
{
    if (f->fd >= 0)
        really_close(f);
    free(f->path);
    f->path = NULL;
}
