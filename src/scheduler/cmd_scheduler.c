#include "common/cmd.h"
static int run(int argc, char **argv) { return 1; }
const struct dmf_cmd dmf_cmd_scheduler = {.name = "scheduler", .summary = "run the scheduler", .run = run};
