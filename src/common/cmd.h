/* One descriptor per subcommand; src/main.c lists them all in one table. */
#ifndef DMF_CMD_H
#define DMF_CMD_H

struct dmf_cmd {
    const char *name;
    const char *summary; /* one line for `damselfly --help` */
    /* Runs the subcommand with argv[0] = its name; returns the process exit code. */
    int (*run)(int argc, char **argv);
};

extern const struct dmf_cmd dmf_cmd_scheduler;
extern const struct dmf_cmd dmf_cmd_daemon;
extern const struct dmf_cmd dmf_cmd_get;

#define DMF_VERSION "0.1.0"

#endif
