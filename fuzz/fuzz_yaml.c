/* Fuzzes the YAML config loader against the daemon-like option table below. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/config.h"
#include "common/util.h"

struct cfg {
    char *s;
    int64_t i;
    bool b;
    uint64_t size, dur;
    char *addr;
    struct dmf_strlist list;
};

static const struct dmf_option opts[] = {
    {"name", 0, DMF_OPT_STRING, offsetof(struct cfg, s), 0, 0, "x", "S", "a string"},
    {"count", 0, DMF_OPT_INT, offsetof(struct cfg, i), 1, 100, "4", "N", "an integer"},
    {"flag", 0, DMF_OPT_BOOL, offsetof(struct cfg, b), 0, 0, "false", NULL, "a bool"},
    {"size", 0, DMF_OPT_SIZE, offsetof(struct cfg, size), 0, 0, "1m", "B", "a size"},
    {"wait", 0, DMF_OPT_DURATION, offsetof(struct cfg, dur), 0, 0, "2s", "D", "a duration"},
    {"listen", 0, DMF_OPT_ADDR, offsetof(struct cfg, addr), 0, 0, NULL, "A:P", "an address"},
    {"item", 0, DMF_OPT_LIST, offsetof(struct cfg, list), 0, 0, NULL, "X", "a list"},
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[] = "/tmp/dmf-fuzz-yaml-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return 0;
    if (write(fd, data, size) != (ssize_t)size) {
        close(fd);
        unlink(path);
        return 0;
    }
    close(fd);
    struct cfg c = {0};
    char err[256];
    dmf_config_load_yaml(opts, DMF_ARRAY_SIZE(opts), &c, path, err, sizeof(err));
    dmf_config_free(opts, DMF_ARRAY_SIZE(opts), &c);
    unlink(path);
    return 0;
}
