#include "common/yaml_reader.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

unsigned long dmf_yaml_line(yaml_mark_t m)
{
    return (unsigned long)m.line + 1;
}

int dmf_yaml_next(struct dmf_yaml_reader *r, yaml_event_t *ev)
{
    if (yaml_parser_parse(&r->parser, ev))
        return 0;
    snprintf(r->err, r->errlen, "%s:%lu: invalid YAML: %s", r->path,
             dmf_yaml_line(r->parser.problem_mark),
             r->parser.problem != NULL ? r->parser.problem : "syntax error");
    memset(ev, 0, sizeof(*ev)); /* nothing to delete */
    return -EINVAL;
}

int dmf_yaml_skip(struct dmf_yaml_reader *r, const yaml_event_t *first)
{
    int depth = first->type == YAML_SEQUENCE_START_EVENT || first->type == YAML_MAPPING_START_EVENT;
    while (depth > 0) {
        yaml_event_t ev;
        if (dmf_yaml_next(r, &ev) != 0)
            return -EINVAL;
        if (ev.type == YAML_SEQUENCE_START_EVENT || ev.type == YAML_MAPPING_START_EVENT)
            depth++;
        else if (ev.type == YAML_SEQUENCE_END_EVENT || ev.type == YAML_MAPPING_END_EVENT)
            depth--;
        yaml_event_delete(&ev);
    }
    return 0;
}

bool dmf_yaml_key_eq(const char *a, const char *b)
{
    for (; *a && *b; a++, b++) {
        char x = *a == '_' ? '-' : *a, y = *b == '_' ? '-' : *b;
        if (x != y)
            return false;
    }
    return *a == *b;
}
