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
    DMF_OPT_DURATION, /* uint64_t milliseconds; accepts ms, s, m, h suffixes ("1h30m"),
                       * bounded; a plain number is SECONDS */
    DMF_OPT_ADDR,     /* char * "HOST:PORT", validated with dmf_parse_hostport */
    DMF_OPT_LIST,     /* struct dmf_strlist: repeatable flag, or a YAML sequence */
    DMF_OPT_YAML,     /* a structured value (any YAML shape) in the config file only, read by
                       * the module that owns it (it re-reads the file); the table only
                       * skips it, and records its line (unsigned long, 0 = absent) */
};

/* Inputs are bounded: one option value, and the whole YAML file. */
#define DMF_CONFIG_VALUE_MAX 8192
#define DMF_CONFIG_FILE_MAX  (1u << 20)

/* A growable list of owned strings (a repeatable option). */
struct dmf_strlist {
    char **v;
    size_t n;
};

struct dmf_option {
    const char *name; /* long flag without "--" and YAML key, e.g. "piece-listen" */
    char short_name;  /* one-letter flag ("-O"), or 0 */
    enum dmf_opt_type type;
    size_t offset;       /* offsetof(component config struct, field) */
    int64_t min, max;    /* bounds for INT, SIZE, DURATION (max 0 = unbounded) */
    const char *def;     /* default, written as a user would (NULL = unset) */
    const char *metavar; /* shown in --help, e.g. "ADDR:PORT" */
    const char *help;    /* one sentence */
};

/* Fills cfg (a zeroed struct) from defaults, then from the YAML file named by --config
 * (if the table or argv gives one), then from argv[1..argc). Arguments that are not
 * options are collected in positional (owned by cfg's caller; free with
 * dmf_strlist_free). "--help"/"-h" sets *want_help and stops parsing.
 * Returns 0, or -EINVAL with a one-line reason in err naming the flag, or the
 * "file:line" of the YAML key.
 *
 * Flags: "--name value", "--name=value", "-O value", "-Ovalue". A BOOL flag takes no
 * separate value ("--seed"), only an attached one ("--seed=false"). A separate value may
 * not start with "--" (write "--name=--x" for that). A lone "-" is a positional argument
 * (so "-O -" gives O the value "-"); "--" ends the options. A LIST flag may be repeated;
 * its first use replaces the list from the defaults or the YAML file. --config FILE is
 * accepted by every table; a table that declares a STRING option named "config" gets the
 * path in it, and a default path there is read only when that file exists.
 * positional may be NULL: then a positional argument is an error. On error, cfg's owned
 * memory is freed (calling dmf_config_free again is harmless) and positional is untouched.
 * A LIST default is written comma-separated. */
int dmf_config_parse(const struct dmf_option *opts, size_t nopts, void *cfg, int argc, char **argv,
                     struct dmf_strlist *positional, bool *want_help, char *err, size_t errlen);

/* Loads only a YAML file into cfg (keys are option names; '_' and '-' are the same).
 * The file is one mapping of option: value. A LIST takes a sequence or one scalar and
 * replaces the list; a null value ("key:", "~") leaves the option as it was; a key set
 * twice is an error. Errors read "cfg.yaml:3: unknown option 'foo'". Returns 0 or -EINVAL.
 * The file must be at most DMF_CONFIG_FILE_MAX bytes. */
int dmf_config_load_yaml(const struct dmf_option *opts, size_t nopts, void *cfg, const char *path,
                         char *err, size_t errlen);

/* Frees the strings and lists the table owns inside cfg. */
void dmf_config_free(const struct dmf_option *opts, size_t nopts, void *cfg);

/* Prints "usage" then one line per option: flags, metavar, help, default and unit. */
void dmf_config_usage(FILE *out, const char *usage, const char *summary,
                      const struct dmf_option *opts, size_t nopts);

/* Prints the table as a Markdown table (for docs/configuration.md). */
void dmf_config_markdown(FILE *out, const struct dmf_option *opts, size_t nopts);

/* Appends a copy of s. */
void dmf_strlist_push(struct dmf_strlist *l, const char *s);
/* Frees every string and leaves the list empty (reusable). */
void dmf_strlist_free(struct dmf_strlist *l);

/* The value parsers behind the table, for code that reads a value outside a table.
 * Each returns 0, -EINVAL for a malformed value or -ERANGE for one that overflows. */
/* true/yes/on/1 or false/no/off/0, any case. */
int dmf_parse_bool(const char *s, bool *out);
/* Decimal bytes with an optional suffix k, m, g, t (any case, optionally followed by
 * "i" and/or "b": 4m = 4M = 4MiB = 4MB = 4 MiB = 4194304; all powers of 1024). */
int dmf_parse_size(const char *s, uint64_t *bytes);
/* Milliseconds from "250ms", "30s", "5m", "2h", "1h30m"; a plain number is seconds. */
int dmf_parse_duration(const char *s, uint64_t *ms);

#endif
