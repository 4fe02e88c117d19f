/* damselfly: one executable, one subcommand per file (src/<component>/cmd_*.c). */
#include <stdio.h>
#include <string.h>

#include "common/cmd.h"

static const struct dmf_cmd *const commands[] = {
    &dmf_cmd_scheduler,
    &dmf_cmd_daemon,
    &dmf_cmd_get,
};

static void usage(FILE *out)
{
    fprintf(out, "usage: damselfly <command> [options]\n"
                 "       damselfly <command> --help\n\n"
                 "Peer-to-peer file distribution.\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(out, "  %-10s %s\n", commands[i]->name, commands[i]->summary);
    fprintf(out, "\noptions:\n  --version  print the version and exit\n"
                 "  --help     print this help and exit\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
        printf("damselfly %s\n", DMF_VERSION);
        return 0;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(argv[1], commands[i]->name) == 0)
            return commands[i]->run(argc - 1, argv + 1);
    fprintf(stderr, "damselfly: unknown command '%s' (see damselfly --help)\n", argv[1]);
    return 2;
}
