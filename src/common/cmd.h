/* One descriptor per subcommand; src/main.c lists them all in one table. */
#ifndef DMF_CMD_H
#define DMF_CMD_H

#include <stddef.h>

struct dmf_option;

struct dmf_cmd {
    const char *name;
    const char *summary;              /* one line for `damselfly --help` */
    const struct dmf_option *options; /* its option table (docs/configuration.md) */
    size_t noptions;
    /* Runs the subcommand with argv[0] = its name; returns the process exit code. */
    int (*run)(int argc, char **argv);
};

extern const struct dmf_cmd dmf_cmd_scheduler;
extern const struct dmf_cmd dmf_cmd_daemon;
extern const struct dmf_cmd dmf_cmd_get;
extern const struct dmf_cmd dmf_cmd_cache;
extern const struct dmf_cmd dmf_cmd_manager;

#define DMF_VERSION "0.1.0"

#endif
