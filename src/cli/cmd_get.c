#include "common/cmd.h"
static int run(int argc, char **argv) { return 1; }
const struct dmf_cmd dmf_cmd_get = {.name = "get", .summary = "download a URL through the local daemon", .run = run};
