/* Reading YAML event by event (libyaml) with errors that name "file:line". Shared by the
 * option tables (config.c) and the structured options that read their own sections
 * (the proxy's rules). */
#ifndef DMF_YAML_READER_H
#define DMF_YAML_READER_H

#include <stdbool.h>
#include <stddef.h>
#include <yaml.h>

struct dmf_yaml_reader {
    yaml_parser_t parser;
    const char *path; /* for messages */
    char *err;        /* the caller's buffer for a one-line reason */
    size_t errlen;
};

/* The 1-based line of a mark. */
unsigned long dmf_yaml_line(yaml_mark_t m);

/* Next event: 0, or -EINVAL with "path:line: invalid YAML: ..." in r->err (then *ev is
 * zeroed and needs no yaml_event_delete). */
int dmf_yaml_next(struct dmf_yaml_reader *r, yaml_event_t *ev);

/* Skips the rest of a value whose first event is first (a scalar, or a whole sequence or
 * mapping). The caller still deletes first. Returns 0 or -EINVAL. */
int dmf_yaml_skip(struct dmf_yaml_reader *r, const yaml_event_t *first);

/* Option names: equal with '_' and '-' taken as the same character. */
bool dmf_yaml_key_eq(const char *a, const char *b);

#endif
