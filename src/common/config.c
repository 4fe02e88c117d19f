/* Declarative options: one table drives defaults, the YAML file, flags, --help and the
 * Markdown docs. See docs/internals/CONFIG.md. */
#include "common/config.h"
#include "common/yaml_reader.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "common/util.h"

#define KIB 1024ull
#define MIB (1024ull * KIB)
#define GIB (1024ull * MIB)
#define TIB (1024ull * GIB)

/* Every table accepts --config FILE; a table may also declare "config" itself (to give a
 * default path or to see the path), and then its entry is used instead of this one. */
static const struct dmf_option implicit_config = {
    .name = "config",
    .type = DMF_OPT_STRING,
    .metavar = "FILE",
    .help = "read options from this YAML file (flags override it)",
};

/* One option assignment taken from argv, applied after the YAML file. */
struct assign {
    const struct dmf_option *opt;
    const char *value;
    char what[72]; /* the flag as written, for errors: "--name" or "-O" */
};

void dmf_strlist_push(struct dmf_strlist *l, const char *s)
{
    l->v = dmf_xrealloc(l->v, (l->n + 1) * sizeof(*l->v));
    l->v[l->n++] = dmf_xstrdup(s);
}

void dmf_strlist_free(struct dmf_strlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

int dmf_parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < DMF_ARRAY_SIZE(yes); i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -EINVAL;
}

/* Parses a run of decimal digits at *s into *out; returns 0, or -EINVAL when there is no
 * digit or -ERANGE when the number does not fit. */
static int parse_digits(const char **s, uint64_t *out)
{
    const char *p = *s;
    uint64_t v = 0;
    if (*p < '0' || *p > '9')
        return -EINVAL;
    for (; *p >= '0' && *p <= '9'; p++) {
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -ERANGE;
        v = v * 10 + d;
    }
    *s = p;
    *out = v;
    return 0;
}

int dmf_parse_size(const char *s, uint64_t *bytes)
{
    static const struct {
        char letter;
        uint64_t mult;
    } units[] = {{'k', KIB}, {'m', MIB}, {'g', GIB}, {'t', TIB}};
    uint64_t v, mult = 1;
    int rc = parse_digits(&s, &v);
    if (rc != 0)
        return rc;
    const char *num_end = s;
    while (*s == ' ')
        s++;
    if (*s == '\0' && s != num_end)
        return -EINVAL; /* trailing blanks without a unit */
    if (*s != '\0') {
        /* k, K, kb, KiB, ki ... (all powers of 1024), or a lone b/B for bytes. */
        for (size_t i = 0; i < DMF_ARRAY_SIZE(units); i++) {
            if ((*s | 0x20) == units[i].letter) {
                mult = units[i].mult;
                s++;
                if ((*s | 0x20) == 'i')
                    s++;
                break;
            }
        }
        if ((*s | 0x20) == 'b')
            s++;
        if (*s != '\0')
            return -EINVAL;
    }
    if (v > UINT64_MAX / mult)
        return -ERANGE;
    *bytes = v * mult;
    return 0;
}

int dmf_parse_duration(const char *s, uint64_t *ms)
{
    uint64_t v, total = 0;
    int rc = parse_digits(&s, &v);
    if (rc != 0)
        return rc;
    if (*s == '\0') { /* a plain number is seconds */
        if (v > UINT64_MAX / 1000)
            return -ERANGE;
        *ms = v * 1000;
        return 0;
    }
    for (;;) {
        uint64_t mult;
        if (strncmp(s, "ms", 2) == 0) {
            mult = 1;
            s += 2;
        } else if (*s == 's') {
            mult = 1000;
            s++;
        } else if (*s == 'm') {
            mult = 60 * 1000;
            s++;
        } else if (*s == 'h') {
            mult = 3600 * 1000;
            s++;
        } else {
            return -EINVAL;
        }
        if (v > UINT64_MAX / mult || v * mult > UINT64_MAX - total)
            return -ERANGE;
        total += v * mult;
        if (*s == '\0')
            break;
        rc = parse_digits(&s, &v);
        if (rc != 0)
            return rc;
    }
    *ms = total;
    return 0;
}

/* Writes a bound the way a user would write it: "4MiB", "30s", "100". */
static void format_amount(enum dmf_opt_type type, uint64_t v, char *out, size_t outlen)
{
    static const struct {
        uint64_t mult;
        const char *unit;
    } sizes[] = {{TIB, "TiB"}, {GIB, "GiB"}, {MIB, "MiB"}, {KIB, "KiB"}},
      durations[] = {{3600000, "h"}, {60000, "m"}, {1000, "s"}};
    if (type == DMF_OPT_SIZE && v > 0) {
        for (size_t i = 0; i < DMF_ARRAY_SIZE(sizes); i++)
            if (v % sizes[i].mult == 0) {
                snprintf(out, outlen, "%" PRIu64 "%s", v / sizes[i].mult, sizes[i].unit);
                return;
            }
    }
    if (type == DMF_OPT_DURATION) {
        for (size_t i = 0; v > 0 && i < DMF_ARRAY_SIZE(durations); i++)
            if (v % durations[i].mult == 0) {
                snprintf(out, outlen, "%" PRIu64 "%s", v / durations[i].mult, durations[i].unit);
                return;
            }
        snprintf(out, outlen, "%" PRIu64 "ms", v);
        return;
    }
    snprintf(out, outlen, "%" PRIu64, v);
}

static void *field(const struct dmf_option *o, void *cfg)
{
    return (char *)cfg + o->offset;
}

/* Checks an unsigned amount (SIZE, DURATION) against the option's bounds. */
static int check_bounds_u(const struct dmf_option *o, const char *what, const char *value,
                          uint64_t v, char *err, size_t errlen)
{
    char bound[32];
    if (o->min > 0 && v < (uint64_t)o->min) {
        format_amount(o->type, (uint64_t)o->min, bound, sizeof(bound));
        snprintf(err, errlen, "%s: %s is below the minimum %s", what, value, bound);
        return -EINVAL;
    }
    if (o->max > 0 && v > (uint64_t)o->max) {
        format_amount(o->type, (uint64_t)o->max, bound, sizeof(bound));
        snprintf(err, errlen, "%s: %s is above the maximum %s", what, value, bound);
        return -EINVAL;
    }
    return 0;
}

/* Converts value and stores it in the option's field. what names the option in errors
 * ("--name", "-O" or the YAML key). A LIST appends, after emptying the list first when
 * *fresh is false (the first value from a new source replaces the older source's list). */
static int set_value(const struct dmf_option *o, void *cfg, const char *value, bool *fresh,
                     const char *what, char *err, size_t errlen)
{
    size_t vlen = strlen(value);
    if (vlen > DMF_CONFIG_VALUE_MAX) {
        snprintf(err, errlen, "%s: value is longer than %d bytes", what, DMF_CONFIG_VALUE_MAX);
        return -EINVAL;
    }
    switch (o->type) {
    case DMF_OPT_ADDR: {
        char host[256], why[256];
        uint16_t port;
        if (dmf_parse_hostport(value, host, sizeof(host), &port, why, sizeof(why)) != 0) {
            snprintf(err, errlen, "%s: %s", what, why);
            return -EINVAL;
        }
    }
        /* fall through */
    case DMF_OPT_STRING: {
        char **p = field(o, cfg);
        free(*p);
        *p = dmf_xstrdup(value);
        return 0;
    }
    case DMF_OPT_INT: {
        char *end;
        errno = 0;
        int64_t v = strtoll(value, &end, 10);
        if (end == value || *end != '\0' || errno != 0 || isspace((unsigned char)value[0])) {
            snprintf(err, errlen, "%s: '%s' is not an integer%s", what, value,
                     errno == ERANGE ? " in range" : "");
            return -EINVAL;
        }
        if (v < o->min) {
            snprintf(err, errlen, "%s: %s is below the minimum %" PRId64, what, value, o->min);
            return -EINVAL;
        }
        if (o->max != 0 && v > o->max) {
            snprintf(err, errlen, "%s: %s is above the maximum %" PRId64, what, value, o->max);
            return -EINVAL;
        }
        *(int64_t *)field(o, cfg) = v;
        return 0;
    }
    case DMF_OPT_BOOL:
        if (dmf_parse_bool(value, field(o, cfg)) != 0) {
            snprintf(err, errlen, "%s: '%s' is not a boolean (true or false)", what, value);
            return -EINVAL;
        }
        return 0;
    case DMF_OPT_SIZE: {
        uint64_t v;
        int rc = dmf_parse_size(value, &v);
        if (rc != 0) {
            snprintf(err, errlen, "%s: '%s' is %s (e.g. 512k, 4MiB, 1g)", what, value,
                     rc == -ERANGE ? "too large a size" : "not a size");
            return -EINVAL;
        }
        if (check_bounds_u(o, what, value, v, err, errlen) != 0)
            return -EINVAL;
        *(uint64_t *)field(o, cfg) = v;
        return 0;
    }
    case DMF_OPT_DURATION: {
        uint64_t v;
        int rc = dmf_parse_duration(value, &v);
        if (rc != 0) {
            snprintf(err, errlen,
                     "%s: '%s' is %s (e.g. 500ms, 30s, 5m, 1h30m; a plain number is seconds)", what,
                     value, rc == -ERANGE ? "too long a duration" : "not a duration");
            return -EINVAL;
        }
        if (check_bounds_u(o, what, value, v, err, errlen) != 0)
            return -EINVAL;
        *(uint64_t *)field(o, cfg) = v;
        return 0;
    }
    case DMF_OPT_YAML:
        snprintf(err, errlen, "%s: set in the config file only (see docs/operations.md)", what);
        return -EINVAL;
    case DMF_OPT_LIST: {
        struct dmf_strlist *l = field(o, cfg);
        if (!*fresh) {
            dmf_strlist_free(l);
            *fresh = true;
        }
        dmf_strlist_push(l, value);
        return 0;
    }
    }
    snprintf(err, errlen, "%s: option has an unknown type", what);
    return -EINVAL;
}

/* Option names match with '_' and '-' taken as the same character. */
static bool name_eq(const char *name, const char *s, size_t len)
{
    size_t i;
    for (i = 0; i < len && name[i] != '\0'; i++) {
        char a = name[i] == '_' ? '-' : name[i], b = s[i] == '_' ? '-' : s[i];
        if (a != b)
            return false;
    }
    return i == len && name[i] == '\0';
}

/* Finds an option by name, falling back on the implicit --config; NULL when unknown. */
static const struct dmf_option *find_option(const struct dmf_option *opts, size_t nopts,
                                            const char *s, size_t len)
{
    for (size_t i = 0; i < nopts; i++)
        if (name_eq(opts[i].name, s, len))
            return &opts[i];
    return name_eq(implicit_config.name, s, len) ? &implicit_config : NULL;
}

void dmf_config_free(const struct dmf_option *opts, size_t nopts, void *cfg)
{
    for (size_t i = 0; i < nopts; i++) {
        const struct dmf_option *o = &opts[i];
        if (o->type == DMF_OPT_STRING || o->type == DMF_OPT_ADDR) {
            char **p = field(o, cfg);
            free(*p);
            *p = NULL;
        } else if (o->type == DMF_OPT_LIST) {
            dmf_strlist_free(field(o, cfg));
        }
    }
}

static int apply_defaults(const struct dmf_option *opts, size_t nopts, void *cfg, char *err,
                          size_t errlen)
{
    for (size_t i = 0; i < nopts; i++) {
        const struct dmf_option *o = &opts[i];
        bool fresh = true;
        char what[80];
        if (o->def == NULL)
            continue;
        snprintf(what, sizeof(what), "default of --%s", o->name);
        if (o->type != DMF_OPT_LIST) {
            if (set_value(o, cfg, o->def, &fresh, what, err, errlen) != 0)
                return -EINVAL;
            continue;
        }
        /* A list's default is written comma-separated. */
        for (const char *p = o->def; *p != '\0';) {
            size_t n = strcspn(p, ",");
            char *item = dmf_xstrndup(p, n);
            int rc = set_value(o, cfg, item, &fresh, what, err, errlen);
            free(item);
            if (rc != 0)
                return rc;
            p += n;
            if (*p == ',')
                p++;
        }
    }
    return 0;
}

/* ---- YAML ---- */

static bool scalar_is_null(const yaml_event_t *ev)
{
    const char *v = (const char *)ev->data.scalar.value;
    return ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
           (v[0] == '\0' || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 ||
            strcmp(v, "Null") == 0 || strcmp(v, "NULL") == 0);
}

/* Checks that a scalar event's value is one C string (no embedded NUL). */
static int scalar_ok(struct dmf_yaml_reader *r, const yaml_event_t *ev, const char *key)
{
    if (strlen((const char *)ev->data.scalar.value) != ev->data.scalar.length) {
        snprintf(r->err, r->errlen, "%s:%lu: %s: value contains a NUL byte", r->path,
                 dmf_yaml_line(ev->start_mark), key);
        return -EINVAL;
    }
    return 0;
}

/* Applies a scalar value to an option, prefixing errors with "file:line: ". */
static int yaml_set(struct dmf_yaml_reader *r, const struct dmf_option *o, void *cfg,
                    const yaml_event_t *ev, bool *fresh)
{
    char why[512];
    if (scalar_ok(r, ev, o->name) != 0)
        return -EINVAL;
    if (set_value(o, cfg, (const char *)ev->data.scalar.value, fresh, o->name, why, sizeof(why)) !=
        0) {
        snprintf(r->err, r->errlen, "%s:%lu: %s", r->path, dmf_yaml_line(ev->start_mark), why);
        return -EINVAL;
    }
    return 0;
}

/* Reads the value of key o (the next event onward) into cfg. */
static int yaml_value(struct dmf_yaml_reader *r, const struct dmf_option *o, void *cfg)
{
    yaml_event_t ev;
    bool fresh = false;
    int rc = dmf_yaml_next(r, &ev);
    if (rc != 0)
        return rc;
    if (o->type == DMF_OPT_YAML) {
        *(unsigned long *)field(o, cfg) = dmf_yaml_line(ev.start_mark);
        rc = dmf_yaml_skip(r, &ev);
        yaml_event_delete(&ev);
        return rc;
    }
    switch (ev.type) {
    case YAML_SCALAR_EVENT:
        if (!scalar_is_null(&ev))
            rc = yaml_set(r, o, cfg, &ev, &fresh);
        break;
    case YAML_SEQUENCE_START_EVENT:
        if (o->type != DMF_OPT_LIST) {
            snprintf(r->err, r->errlen, "%s:%lu: option '%s' takes one value, not a list", r->path,
                     dmf_yaml_line(ev.start_mark), o->name);
            rc = -EINVAL;
            break;
        }
        dmf_strlist_free(field(o, cfg)); /* "[]" empties the list */
        fresh = true;
        for (;;) {
            yaml_event_delete(&ev);
            rc = dmf_yaml_next(r, &ev);
            if (rc != 0 || ev.type == YAML_SEQUENCE_END_EVENT)
                break;
            if (ev.type != YAML_SCALAR_EVENT) {
                snprintf(r->err, r->errlen, "%s:%lu: items of '%s' must be plain values", r->path,
                         dmf_yaml_line(ev.start_mark), o->name);
                rc = -EINVAL;
                break;
            }
            rc = yaml_set(r, o, cfg, &ev, &fresh);
            if (rc != 0)
                break;
        }
        break;
    case YAML_ALIAS_EVENT:
        snprintf(r->err, r->errlen, "%s:%lu: YAML aliases are not supported", r->path,
                 dmf_yaml_line(ev.start_mark));
        rc = -EINVAL;
        break;
    default:
        snprintf(r->err, r->errlen, "%s:%lu: option '%s' takes a value, not a mapping", r->path,
                 dmf_yaml_line(ev.start_mark), o->name);
        rc = -EINVAL;
        break;
    }
    yaml_event_delete(&ev);
    return rc;
}

/* Reads the top-level mapping of option: value pairs. */
static int yaml_mapping(struct dmf_yaml_reader *r, const struct dmf_option *opts, size_t nopts,
                        void *cfg)
{
    bool *seen = dmf_xcalloc(nopts + 1, sizeof(*seen));
    yaml_event_t ev;
    int rc;

    for (;;) {
        rc = dmf_yaml_next(r, &ev);
        if (rc != 0 || ev.type == YAML_MAPPING_END_EVENT)
            break;
        if (ev.type != YAML_SCALAR_EVENT) {
            snprintf(r->err, r->errlen, "%s:%lu: expected an option name", r->path,
                     dmf_yaml_line(ev.start_mark));
            rc = -EINVAL;
            break;
        }
        const char *key = (const char *)ev.data.scalar.value;
        const struct dmf_option *o = find_option(opts, nopts, key, ev.data.scalar.length);
        if (o == NULL || o == &implicit_config) {
            snprintf(r->err, r->errlen, "%s:%lu: unknown option '%.64s'", r->path,
                     dmf_yaml_line(ev.start_mark), key);
            rc = -EINVAL;
            break;
        }
        size_t idx = (size_t)(o - opts);
        if (seen[idx]) {
            snprintf(r->err, r->errlen, "%s:%lu: option '%s' is set twice", r->path,
                     dmf_yaml_line(ev.start_mark), o->name);
            rc = -EINVAL;
            break;
        }
        seen[idx] = true;
        yaml_event_delete(&ev);
        rc = yaml_value(r, o, cfg);
        if (rc != 0)
            goto out; /* ev already deleted */
    }
    yaml_event_delete(&ev);
out:
    free(seen);
    return rc;
}

/* Reads at most DMF_CONFIG_FILE_MAX bytes of path into a new buffer. */
static int read_file(const char *path, char **out, size_t *outlen, char *err, size_t errlen)
{
    struct stat st;
    char *buf = NULL;
    size_t len = 0;
    int rc = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0 || fstat(fd, &st) != 0) {
        rc = -errno;
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = -EINVAL;
        snprintf(err, errlen, "cannot read %s: not a regular file", path);
        goto out;
    }
    buf = dmf_xmalloc(DMF_CONFIG_FILE_MAX + 1);
    for (;;) {
        ssize_t n = read(fd, buf + len, DMF_CONFIG_FILE_MAX + 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -errno;
            snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
            goto out;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len > DMF_CONFIG_FILE_MAX) {
            rc = -EFBIG;
            snprintf(err, errlen, "%s: config file is larger than %u KiB", path,
                     DMF_CONFIG_FILE_MAX / 1024);
            goto out;
        }
    }
    *out = buf;
    *outlen = len;
    buf = NULL;
out:
    free(buf);
    if (fd >= 0)
        close(fd);
    return rc;
}

int dmf_config_load_yaml(const struct dmf_option *opts, size_t nopts, void *cfg, const char *path,
                         char *err, size_t errlen)
{
    struct dmf_yaml_reader r = {.path = path, .err = err, .errlen = errlen};
    yaml_event_t ev;
    char *buf = NULL;
    size_t len = 0;
    int rc = read_file(path, &buf, &len, err, errlen);
    if (rc != 0)
        return -EINVAL;

    if (!yaml_parser_initialize(&r.parser)) {
        fprintf(stderr, "damselfly: out of memory initialising the YAML parser\n");
        abort();
    }
    yaml_parser_set_input_string(&r.parser, (const unsigned char *)buf, len);

    /* stream-start, then an optional document holding one mapping (or nothing). */
    rc = dmf_yaml_next(&r, &ev);
    if (rc != 0)
        goto out;
    yaml_event_delete(&ev);
    rc = dmf_yaml_next(&r, &ev);
    if (rc != 0 || ev.type == YAML_STREAM_END_EVENT)
        goto out_event;     /* an empty file sets nothing */
    yaml_event_delete(&ev); /* document-start */
    rc = dmf_yaml_next(&r, &ev);
    if (rc != 0)
        goto out;
    if (ev.type == YAML_MAPPING_START_EVENT) {
        yaml_event_delete(&ev);
        rc = yaml_mapping(&r, opts, nopts, cfg);
        if (rc != 0)
            goto out;
    } else if (!(ev.type == YAML_SCALAR_EVENT && scalar_is_null(&ev))) {
        snprintf(err, errlen, "%s:%lu: the config file must be a mapping of option: value", path,
                 dmf_yaml_line(ev.start_mark));
        rc = -EINVAL;
        goto out_event;
    } else {
        yaml_event_delete(&ev);
    }
    rc = dmf_yaml_next(&r, &ev); /* document-end */
    if (rc != 0)
        goto out;
    yaml_event_delete(&ev);
    rc = dmf_yaml_next(&r, &ev);
    if (rc == 0 && ev.type != YAML_STREAM_END_EVENT) {
        snprintf(err, errlen, "%s:%lu: only one YAML document is allowed", path,
                 dmf_yaml_line(ev.start_mark));
        rc = -EINVAL;
    }
out_event:
    yaml_event_delete(&ev);
out:
    yaml_parser_delete(&r.parser);
    free(buf);
    return rc;
}

/* ---- command line ---- */

/* Splits argv into assignments and positional arguments without converting any value. */
static int tokenize(const struct dmf_option *opts, size_t nopts, int argc, char **argv,
                    struct assign *as, size_t *nas, struct dmf_strlist *pos, bool *help, char *err,
                    size_t errlen)
{
    bool options_done = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const struct dmf_option *o = NULL;
        const char *value = NULL;
        struct assign *x = &as[*nas];

        if (options_done || a[0] != '-' || a[1] == '\0') { /* "-" is positional */
            dmf_strlist_push(pos, a);
            continue;
        }
        if (strcmp(a, "--") == 0) {
            options_done = true;
            continue;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            *help = true;
            return 0;
        }
        if (a[1] == '-') {
            const char *name = a + 2, *eq = strchr(name, '=');
            size_t nlen = eq != NULL ? (size_t)(eq - name) : strlen(name);
            o = find_option(opts, nopts, name, nlen);
            if (o == NULL) {
                snprintf(err, errlen, "unknown option '--%.*s' (see --help)",
                         (int)DMF_MIN(nlen, 64), name);
                return -EINVAL;
            }
            snprintf(x->what, sizeof(x->what), "--%s", o->name);
            if (eq != NULL)
                value = eq + 1;
            else if (o->type == DMF_OPT_BOOL)
                value = "true";
        } else {
            for (size_t k = 0; k < nopts && o == NULL; k++)
                if (opts[k].short_name != 0 && opts[k].short_name == a[1])
                    o = &opts[k];
            if (o == NULL || (o->type == DMF_OPT_BOOL && a[2] != '\0')) {
                snprintf(err, errlen, "unknown option '%.64s' (see --help)", a);
                return -EINVAL;
            }
            snprintf(x->what, sizeof(x->what), "-%c", a[1]);
            if (a[2] != '\0')
                value = a + 2; /* "-Ofile" */
            else if (o->type == DMF_OPT_BOOL)
                value = "true";
        }
        if (value == NULL) {
            /* The value is the next argument, unless that is another long option. */
            if (i + 1 >= argc || strncmp(argv[i + 1], "--", 2) == 0) {
                snprintf(err, errlen, "%s needs a value (%s %s, or --%s=VALUE)", x->what, x->what,
                         o->metavar != NULL ? o->metavar : "VALUE", o->name);
                return -EINVAL;
            }
            value = argv[++i];
        }
        x->opt = o;
        x->value = value;
        (*nas)++;
    }
    return 0;
}

int dmf_config_parse(const struct dmf_option *opts, size_t nopts, void *cfg, int argc, char **argv,
                     struct dmf_strlist *positional, bool *want_help, char *err, size_t errlen)
{
    struct assign *as = dmf_xcalloc((size_t)(argc > 0 ? argc : 1), sizeof(*as));
    bool *fresh = dmf_xcalloc(nopts + 1, sizeof(*fresh));
    struct dmf_strlist pos = {0};
    size_t nas = 0;
    bool help = false;
    int rc;

    rc = apply_defaults(opts, nopts, cfg, err, errlen);
    if (rc != 0)
        goto out;
    rc = tokenize(opts, nopts, argc, argv, as, &nas, &pos, &help, err, errlen);
    if (rc != 0 || help)
        goto out;

    /* The config file: the last --config, else the default of a declared "config". */
    const struct dmf_option *decl = find_option(opts, nopts, "config", 6);
    const char *path = decl != NULL && decl->def != NULL ? decl->def : NULL;
    bool given = false;
    for (size_t i = 0; i < nas; i++)
        if (as[i].opt == decl) {
            path = as[i].value;
            given = true;
        }
    if (path != NULL && path[0] != '\0' && (given || access(path, F_OK) == 0)) {
        rc = dmf_config_load_yaml(opts, nopts, cfg, path, err, errlen);
        if (rc != 0)
            goto out;
    }

    for (size_t i = 0; i < nas; i++) {
        if (as[i].opt == &implicit_config)
            continue;
        size_t idx = (size_t)(as[i].opt - opts);
        rc = set_value(as[i].opt, cfg, as[i].value, &fresh[idx], as[i].what, err, errlen);
        if (rc != 0)
            goto out;
    }

    if (positional == NULL && pos.n > 0) {
        snprintf(err, errlen, "unexpected argument '%.64s' (see --help)", pos.v[0]);
        rc = -EINVAL;
        goto out;
    }
out:
    if (want_help != NULL)
        *want_help = help;
    if (rc == 0 && positional != NULL) {
        for (size_t i = 0; i < pos.n; i++)
            dmf_strlist_push(positional, pos.v[i]);
    }
    if (rc != 0)
        dmf_config_free(opts, nopts, cfg);
    dmf_strlist_free(&pos);
    free(fresh);
    free(as);
    return rc;
}

/* ---- help and docs ---- */

static const char *type_metavar(const struct dmf_option *o)
{
    if (o->metavar != NULL)
        return o->metavar;
    switch (o->type) {
    case DMF_OPT_INT:
        return "N";
    case DMF_OPT_SIZE:
        return "SIZE";
    case DMF_OPT_DURATION:
        return "DURATION";
    case DMF_OPT_ADDR:
        return "HOST:PORT";
    case DMF_OPT_BOOL:
        return "";
    default:
        return "VALUE";
    }
}

static const char *type_name(enum dmf_opt_type t)
{
    switch (t) {
    case DMF_OPT_STRING:
        return "string";
    case DMF_OPT_INT:
        return "integer";
    case DMF_OPT_BOOL:
        return "boolean";
    case DMF_OPT_SIZE:
        return "size";
    case DMF_OPT_DURATION:
        return "duration";
    case DMF_OPT_ADDR:
        return "address";
    case DMF_OPT_LIST:
        return "list";
    case DMF_OPT_YAML:
        return "YAML";
    }
    return "?";
}

/* "1MiB..16MiB", "at least 1", or "" when the option has no bounds. */
static void format_range(const struct dmf_option *o, char *out, size_t outlen)
{
    char lo[32], hi[32];
    out[0] = '\0';
    if (o->type != DMF_OPT_INT && o->type != DMF_OPT_SIZE && o->type != DMF_OPT_DURATION)
        return;
    if (o->type == DMF_OPT_INT)
        snprintf(lo, sizeof(lo), "%" PRId64, o->min);
    else
        format_amount(o->type, o->min > 0 ? (uint64_t)o->min : 0, lo, sizeof(lo));
    if (o->type == DMF_OPT_INT)
        snprintf(hi, sizeof(hi), "%" PRId64, o->max);
    else
        format_amount(o->type, o->max > 0 ? (uint64_t)o->max : 0, hi, sizeof(hi));
    if (o->max != 0)
        snprintf(out, outlen, "%s..%s", lo, hi);
    else if (o->min != 0)
        snprintf(out, outlen, "at least %s", lo);
}

static void usage_line(FILE *out, const struct dmf_option *o)
{
    char flags[96], range[80];
    const char *mv = type_metavar(o);
    if (o->type == DMF_OPT_YAML) {
        fprintf(out, "  %-28s %s [config file only]\n", o->name, o->help ? o->help : "");
        return;
    }
    if (o->short_name != 0)
        snprintf(flags, sizeof(flags), "-%c, --%s%s%s", o->short_name, o->name, mv[0] ? " " : "",
                 mv);
    else
        snprintf(flags, sizeof(flags), "    --%s%s%s", o->name, mv[0] ? " " : "", mv);
    if (strlen(flags) > 28)
        fprintf(out, "  %s\n  %-28s ", flags, "");
    else
        fprintf(out, "  %-28s ", flags);
    fputs(o->help != NULL ? o->help : "", out);

    format_range(o, range, sizeof(range));
    bool def_true = false;
    bool shown_def = o->def != NULL && o->def[0] != '\0';
    if (o->type == DMF_OPT_BOOL) /* only a flag that is on by default needs saying */
        shown_def = shown_def && dmf_parse_bool(o->def, &def_true) == 0 && def_true;
    if (shown_def || range[0] != '\0' || o->type == DMF_OPT_LIST) {
        const char *sep = "";
        fputs(" [", out);
        if (shown_def) {
            fprintf(out, "default: %s", o->def);
            sep = "; ";
        }
        if (range[0] != '\0') {
            fprintf(out, "%s%s", sep, range);
            sep = "; ";
        }
        if (o->type == DMF_OPT_LIST)
            fprintf(out, "%srepeatable", sep);
        fputs("]", out);
    }
    fputs("\n", out);
}

void dmf_config_usage(FILE *out, const char *usage, const char *summary,
                      const struct dmf_option *opts, size_t nopts)
{
    bool sizes = false, durations = false;
    fprintf(out, "usage: %s\n", usage);
    if (summary != NULL && summary[0] != '\0')
        fprintf(out, "\n%s\n", summary);
    fputs("\noptions:\n", out);
    for (size_t i = 0; i < nopts; i++) {
        usage_line(out, &opts[i]);
        sizes |= opts[i].type == DMF_OPT_SIZE;
        durations |= opts[i].type == DMF_OPT_DURATION;
    }
    if (find_option(opts, nopts, "config", 6) == &implicit_config)
        usage_line(out, &implicit_config);
    fprintf(out, "  %-28s %s\n", "-h, --help", "print this help and exit");
    if (sizes || durations)
        fputs("\n", out);
    if (sizes)
        fputs("Sizes are bytes, or take a k, m, g or t suffix (powers of 1024: 4m = 4MiB).\n", out);
    if (durations)
        fputs("Durations take ms, s, m or h suffixes (1h30m); a plain number is seconds.\n", out);
}

/* Writes s with '|' escaped so that it stays in its Markdown table cell. */
static void md_cell(FILE *out, const char *s)
{
    for (; s != NULL && *s; s++) {
        if (*s == '|')
            fputc('\\', out);
        fputc(*s == '\n' ? ' ' : *s, out);
    }
}

static void markdown_row(FILE *out, const struct dmf_option *o)
{
    char range[80];
    const char *mv = type_metavar(o);
    if (o->type == DMF_OPT_YAML) {
        fprintf(out, "| `%s` (config file only) | YAML |  |  | ", o->name);
        md_cell(out, o->help);
        fputs(" |\n", out);
        return;
    }
    fprintf(out, "| `--%s%s%s`", o->name, mv[0] ? " " : "", mv);
    if (o->short_name != 0)
        fprintf(out, ", `-%c`", o->short_name);
    fprintf(out, " | %s | ", type_name(o->type));
    if (o->def != NULL && o->def[0] != '\0') {
        fputc('`', out);
        md_cell(out, o->def);
        fputc('`', out);
    }
    format_range(o, range, sizeof(range));
    fprintf(out, " | %s | ", range);
    md_cell(out, o->help);
    fputs(" |\n", out);
}

void dmf_config_markdown(FILE *out, const struct dmf_option *opts, size_t nopts)
{
    fputs("| Option | Type | Default | Range | Description |\n", out);
    fputs("|---|---|---|---|---|\n", out);
    for (size_t i = 0; i < nopts; i++)
        markdown_row(out, &opts[i]);
    if (find_option(opts, nopts, "config", 6) == &implicit_config)
        markdown_row(out, &implicit_config);
}
