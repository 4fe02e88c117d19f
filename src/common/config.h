/* Declarative options: one table per component gives each option's name, type, bounds,
 * default, unit and help. The same table drives command-line flags, the YAML config file
 * (--config FILE), --help and docs/configuration.md. Precedence: default < YAML < flag. */
#ifndef DMF_CONFIG_H
#define DMF_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum dmf_opt_type {
    DMF_OPT_STRING,   /* char * (owned by the config; freed by dmf_config_free) */
    DMF_OPT_INT,      /* int64_t, bounded by min/max */
    DMF_OPT_BOOL,     /* bool; a flag without value sets true; YAML true/false */
    DMF_OPT_SIZE,     /* uint64_t bytes; accepts suffixes k, m, g (powers of 1024), bounded */
    DMF_OPT_DURATION, /* uint64_t milliseconds; accepts ms, s, m, h suffixes, bounded */
    DMF_OPT_ADDR,     /* char * "HOST:PORT", validated with dmf_parse_hostport */
    DMF_OPT_LIST,     /* struct dmf_strlist: repeatable flag, or a YAML sequence */
};

/* A growable list of owned strings (a repeatable option). */
struct dmf_strlist {
    char **v;
    size_t n;
};

struct dmf_option {
    const char *name;       /* long flag without "--" and YAML key, e.g. "piece-listen" */
    char short_name;        /* one-letter flag ("-O"), or 0 */
    enum dmf_opt_type type;
    size_t offset;          /* offsetof(component config struct, field) */
    int64_t min, max;       /* bounds for INT, SIZE, DURATION (max 0 = unbounded) */
    const char *def;        /* default, written as a user would (NULL = unset) */
    const char *metavar;    /* shown in --help, e.g. "ADDR:PORT" */
    const char *help;       /* one sentence */
};

/* Fills cfg (a zeroed struct) from defaults, then from the YAML file named by --config
 * (if the table or argv gives one), then from argv[1..argc). Arguments that are not
 * options are collected in positional (owned by cfg's caller; free with
 * dmf_strlist_free). "--help"/"-h" sets *want_help and stops parsing.
 * Returns 0, or -EINVAL with a one-line reason in err naming the flag, or the
 * "file:line" of the YAML key. */
int dmf_config_parse(const struct dmf_option *opts, size_t nopts, void *cfg, int argc,
                     char **argv, struct dmf_strlist *positional, bool *want_help, char *err,
                     size_t errlen);

/* Loads only a YAML file into cfg (keys are option names; '_' and '-' are the same). */
int dmf_config_load_yaml(const struct dmf_option *opts, size_t nopts, void *cfg,
                         const char *path, char *err, size_t errlen);

/* Frees the strings and lists the table owns inside cfg. */
void dmf_config_free(const struct dmf_option *opts, size_t nopts, void *cfg);

/* Prints "usage" then one line per option: flags, metavar, help, default and unit. */
void dmf_config_usage(FILE *out, const char *usage, const char *summary,
                      const struct dmf_option *opts, size_t nopts);

/* Prints the table as a Markdown table (for docs/configuration.md). */
void dmf_config_markdown(FILE *out, const struct dmf_option *opts, size_t nopts);

void dmf_strlist_push(struct dmf_strlist *l, const char *s);
void dmf_strlist_free(struct dmf_strlist *l);

#endif
