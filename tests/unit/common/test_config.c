/* Option tables: defaults, YAML, flags, precedence, units, bounds and error messages. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/config.h"

struct testcfg {
    char *listen;
    int64_t candidate_limit;
    bool seed;
    bool verify;
    uint64_t piece_length;
    uint64_t timeout;
    char *output;
    char *tag;
    struct dmf_strlist header;
    struct dmf_strlist filter;
};

#define OPT(field) offsetof(struct testcfg, field)

static const struct dmf_option table[] = {
    {"listen", 0, DMF_OPT_ADDR, OPT(listen), 0, 0, "127.0.0.1:65002", NULL, "Piece server."},
    {"candidate-limit", 0, DMF_OPT_INT, OPT(candidate_limit), 1, 50, "4", NULL,
     "Parents | candidates."},
    {"seed", 0, DMF_OPT_BOOL, OPT(seed), 0, 0, NULL, NULL, "Act as a seed peer."},
    {"verify", 0, DMF_OPT_BOOL, OPT(verify), 0, 0, "true", NULL, "Verify the content."},
    {"piece-length", 0, DMF_OPT_SIZE, OPT(piece_length), 1 << 20, 16 << 20, "4m", NULL,
     "Piece length."},
    {"timeout", 't', DMF_OPT_DURATION, OPT(timeout), 100, 3600 * 1000, "30s", NULL,
     "Give up after this long."},
    {"output", 'O', DMF_OPT_STRING, OPT(output), 0, 0, NULL, "FILE", "Write to FILE."},
    {"tag", 0, DMF_OPT_STRING, OPT(tag), 0, 0, NULL, NULL, "Task tag."},
    {"header", 'H', DMF_OPT_LIST, OPT(header), 0, 0, NULL, "NAME:VALUE", "Extra header."},
    {"filter", 0, DMF_OPT_LIST, OPT(filter), 0, 0, "Expires,Signature", NULL,
     "Query parameters left out."},
};
#define NOPTS (sizeof(table) / sizeof(table[0]))

static char tmpdir[64];
static char paths[32][128];
static int npaths;

static int setup(void **state)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/dmf-config-XXXXXX");
    return mkdtemp(tmpdir) != NULL ? 0 : -1;
}

static int teardown(void **state)
{
    for (int i = 0; i < npaths; i++)
        unlink(paths[i]);
    return rmdir(tmpdir);
}

/* Writes text to tmpdir/name and returns the path (static storage). */
static const char *write_file(const char *name, const char *text)
{
    assert_true(npaths < 32);
    char *p = paths[npaths++];
    snprintf(p, 128, "%s/%s", tmpdir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return p;
}

/* Parses a NULL-terminated argument list (argv[0] is added). */
static int parse_args(struct testcfg *c, struct dmf_strlist *pos, bool *help, char *err,
                      size_t errlen, const char *const *args)
{
    char *argv[64] = {"test"};
    int argc = 1;
    while (args[argc - 1] != NULL)
        argv[argc] = (char *)args[argc - 1], argc++;
    memset(c, 0, sizeof(*c));
    return dmf_config_parse(table, NOPTS, c, argc, argv, pos, help, err, errlen);
}

#define PARSE(c, pos, err, ...)                                                                    \
    parse_args((c), (pos), &(bool){false}, (err), sizeof(err),                                     \
               (const char *const[]){__VA_ARGS__, NULL})

/* Expects the arguments to fail with exactly this message. */
#define PARSE_FAILS(msg, ...)                                                                      \
    do {                                                                                           \
        struct testcfg c_;                                                                         \
        char err_[512] = "";                                                                       \
        assert_int_equal(PARSE(&c_, NULL, err_, __VA_ARGS__), -EINVAL);                            \
        assert_string_equal(err_, msg);                                                            \
        assert_null(c_.listen); /* freed on error */                                               \
        assert_int_equal(c_.filter.n, 0);                                                          \
    } while (0)

static void test_defaults(void **state)
{
    struct testcfg c;
    struct dmf_strlist pos = {0};
    char err[256];
    bool help = true;
    assert_int_equal(parse_args(&c, &pos, &help, err, sizeof(err), (const char *const[]){NULL}), 0);
    assert_false(help);
    assert_string_equal(c.listen, "127.0.0.1:65002");
    assert_int_equal(c.candidate_limit, 4);
    assert_false(c.seed);
    assert_true(c.verify);
    assert_int_equal(c.piece_length, 4 << 20);
    assert_int_equal(c.timeout, 30000);
    assert_null(c.output);
    assert_int_equal(c.header.n, 0);
    assert_int_equal(c.filter.n, 2);
    assert_string_equal(c.filter.v[0], "Expires");
    assert_string_equal(c.filter.v[1], "Signature");
    assert_int_equal(pos.n, 0);
    dmf_config_free(table, NOPTS, &c);
    assert_null(c.listen);
    assert_int_equal(c.filter.n, 0);
    dmf_config_free(table, NOPTS, &c); /* twice is harmless */
}

static void test_flag_forms(void **state)
{
    struct testcfg c;
    struct dmf_strlist pos = {0};
    char err[256];
    assert_int_equal(PARSE(&c, &pos, err, "--candidate-limit", "7", "--tag=v1", "-O", "out.bin",
                           "URL", "-t500ms", "--seed", "--verify=false", "--listen=[::1]:80"),
                     0);
    assert_int_equal(c.candidate_limit, 7);
    assert_string_equal(c.tag, "v1");
    assert_string_equal(c.output, "out.bin");
    assert_int_equal(c.timeout, 500);
    assert_true(c.seed);
    assert_false(c.verify);
    assert_string_equal(c.listen, "[::1]:80");
    assert_int_equal(pos.n, 1);
    assert_string_equal(pos.v[0], "URL");
    dmf_config_free(table, NOPTS, &c);
    dmf_strlist_free(&pos);

    /* The last of a repeated scalar flag wins; underscores spell the same option. */
    assert_int_equal(PARSE(&c, NULL, err, "--candidate_limit", "2", "--candidate-limit=3"), 0);
    assert_int_equal(c.candidate_limit, 3);
    dmf_config_free(table, NOPTS, &c);

    /* An empty string is a value for a string option. */
    assert_int_equal(PARSE(&c, NULL, err, "--tag="), 0);
    assert_string_equal(c.tag, "");
    dmf_config_free(table, NOPTS, &c);
}

static void test_dash_and_double_dash(void **state)
{
    struct testcfg c;
    struct dmf_strlist pos = {0};
    char err[256];
    /* "-O -" means stdout: "-" is O's value, not a flag. */
    assert_int_equal(PARSE(&c, &pos, err, "-O", "-", "http://h/f"), 0);
    assert_string_equal(c.output, "-");
    assert_int_equal(pos.n, 1);
    dmf_config_free(table, NOPTS, &c);
    dmf_strlist_free(&pos);

    /* A lone "-" elsewhere is positional; after "--" everything is. */
    assert_int_equal(PARSE(&c, &pos, err, "-", "--", "--seed", "-O", "x"), 0);
    assert_false(c.seed);
    assert_null(c.output);
    assert_int_equal(pos.n, 4);
    assert_string_equal(pos.v[0], "-");
    assert_string_equal(pos.v[1], "--seed");
    assert_string_equal(pos.v[3], "x");
    dmf_config_free(table, NOPTS, &c);
    dmf_strlist_free(&pos);

    /* A value that starts with "--" must be attached. */
    assert_int_equal(PARSE(&c, &pos, err, "--tag=--odd", "-Ofile"), 0);
    assert_string_equal(c.tag, "--odd");
    assert_string_equal(c.output, "file");
    dmf_config_free(table, NOPTS, &c);
}

static void test_unknown_and_missing(void **state)
{
    PARSE_FAILS("unknown option '--foo' (see --help)", "--foo");
    PARSE_FAILS("unknown option '--foo' (see --help)", "--foo=bar");
    PARSE_FAILS("unknown option '-x' (see --help)", "-x");
    PARSE_FAILS("unknown option '-x' (see --help)", "-O", "o", "-x");
    PARSE_FAILS("--tag needs a value (--tag VALUE, or --tag=VALUE)", "--tag");
    PARSE_FAILS("--tag needs a value (--tag VALUE, or --tag=VALUE)", "--tag", "--seed");
    PARSE_FAILS("-O needs a value (-O FILE, or --output=VALUE)", "-O");
    /* No positional arguments accepted when the caller gives no list for them. */
    PARSE_FAILS("unexpected argument 'stray' (see --help)", "stray");
}

static void test_help_stops_parsing(void **state)
{
    struct testcfg c;
    char err[256];
    bool help = false;
    assert_int_equal(parse_args(&c, NULL, &help, err, sizeof(err),
                                (const char *const[]){"--seed", "--help", "--bogus", NULL}),
                     0);
    assert_true(help);
    dmf_config_free(table, NOPTS, &c);
    help = false;
    assert_int_equal(
        parse_args(&c, NULL, &help, err, sizeof(err), (const char *const[]){"-h", NULL}), 0);
    assert_true(help);
    dmf_config_free(table, NOPTS, &c);
    /* After "--", --help is an argument. */
    struct dmf_strlist pos = {0};
    help = false;
    assert_int_equal(
        parse_args(&c, &pos, &help, err, sizeof(err), (const char *const[]){"--", "--help", NULL}),
        0);
    assert_false(help);
    assert_int_equal(pos.n, 1);
    dmf_strlist_free(&pos);
    dmf_config_free(table, NOPTS, &c);
}

static void test_bools(void **state)
{
    struct testcfg c;
    struct dmf_strlist pos = {0};
    char err[256];
    /* A bool flag never takes the next argument. */
    assert_int_equal(PARSE(&c, &pos, err, "--seed", "false"), 0);
    assert_true(c.seed);
    assert_int_equal(pos.n, 1);
    dmf_config_free(table, NOPTS, &c);
    dmf_strlist_free(&pos);

    const char *yes[] = {"--seed=true", "--seed=YES", "--seed=on", "--seed=1"};
    const char *no[] = {"--seed=false", "--seed=No", "--seed=off", "--seed=0"};
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(PARSE(&c, NULL, err, yes[i]), 0);
        assert_true(c.seed);
        dmf_config_free(table, NOPTS, &c);
        assert_int_equal(PARSE(&c, NULL, err, "--seed", no[i]), 0);
        assert_false(c.seed);
        dmf_config_free(table, NOPTS, &c);
    }
    PARSE_FAILS("--seed: 'maybe' is not a boolean (true or false)", "--seed=maybe");
    PARSE_FAILS("--seed: '' is not a boolean (true or false)", "--seed=");
}

static void test_bounds(void **state)
{
    PARSE_FAILS("--candidate-limit: 0 is below the minimum 1", "--candidate-limit", "0");
    PARSE_FAILS("--candidate-limit: 51 is above the maximum 50", "--candidate-limit=51");
    PARSE_FAILS("--candidate-limit: 'ten' is not an integer", "--candidate-limit=ten");
    PARSE_FAILS("--candidate-limit: '5x' is not an integer", "--candidate-limit=5x");
    PARSE_FAILS("--candidate-limit: '' is not an integer", "--candidate-limit=");
    PARSE_FAILS("--candidate-limit: '99999999999999999999' is not an integer in range",
                "--candidate-limit=99999999999999999999");
    PARSE_FAILS("--piece-length: 512k is below the minimum 1MiB", "--piece-length", "512k");
    PARSE_FAILS("--piece-length: 17m is above the maximum 16MiB", "--piece-length=17m");
    PARSE_FAILS("-t: 50ms is below the minimum 100ms", "-t", "50ms");
    PARSE_FAILS("--timeout: 2h is above the maximum 1h", "--timeout=2h");
    PARSE_FAILS("--listen: 'nowhere' is not HOST:PORT (e.g. 127.0.0.1:8002)", "--listen=nowhere");

    struct testcfg c;
    char err[256];
    assert_int_equal(PARSE(&c, NULL, err, "--candidate-limit=1", "--piece-length=16MiB"), 0);
    assert_int_equal(c.candidate_limit, 1);
    assert_int_equal(c.piece_length, 16 << 20);
    dmf_config_free(table, NOPTS, &c);
}

static void test_sizes(void **state)
{
    static const struct {
        const char *s;
        uint64_t v;
    } good[] = {
        {"0", 0},           {"123", 123},       {"1k", 1024},         {"1K", 1024},
        {"1KiB", 1024},     {"1kb", 1024},      {"2m", 2 << 20},      {"2MiB", 2 << 20},
        {"2 MiB", 2 << 20}, {"3g", 3ull << 30}, {"3GiB", 3ull << 30}, {"1t", 1ull << 40},
        {"5b", 5},          {"7B", 7},          {"4Mi", 4 << 20},
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        uint64_t v = 1;
        if (dmf_parse_size(good[i].s, &v) != 0)
            fail_msg("'%s' should parse", good[i].s);
        assert_int_equal(v, good[i].v);
    }
    const char *bad[] = {"", "k", "-1", "1.5m", "1x", "1kk", "1 ", " 1", "1mib2", "1i"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint64_t v;
        if (dmf_parse_size(bad[i], &v) != -EINVAL)
            fail_msg("'%s' should be rejected", bad[i]);
    }
    uint64_t v;
    assert_int_equal(dmf_parse_size("18446744073709551616", &v), -ERANGE);
    assert_int_equal(dmf_parse_size("17179869184g", &v), -ERANGE);
    PARSE_FAILS("--piece-length: '4q' is not a size (e.g. 512k, 4MiB, 1g)", "--piece-length=4q");
}

static void test_durations(void **state)
{
    static const struct {
        const char *s;
        uint64_t ms;
    } good[] = {
        {"0", 0},        {"30", 30000},      {"250ms", 250},   {"2s", 2000},      {"5m", 300000},
        {"2h", 7200000}, {"1h30m", 5400000}, {"1m30s", 90000}, {"1s500ms", 1500}, {"90m", 5400000},
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        uint64_t ms = 1;
        if (dmf_parse_duration(good[i].s, &ms) != 0)
            fail_msg("'%s' should parse", good[i].s);
        assert_int_equal(ms, good[i].ms);
    }
    const char *bad[] = {"", "s", "1.5s", "1d", "1S", "10 s", "1h30", "-1s", "1mss"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint64_t ms;
        if (dmf_parse_duration(bad[i], &ms) != -EINVAL)
            fail_msg("'%s' should be rejected", bad[i]);
    }
    uint64_t ms;
    assert_int_equal(dmf_parse_duration("18446744073709551615", &ms), -ERANGE);
    assert_int_equal(dmf_parse_duration("5124095576030432h", &ms), -ERANGE);

    /* A plain number in a flag is seconds. */
    struct testcfg c;
    char err[256];
    assert_int_equal(PARSE(&c, NULL, err, "--timeout", "2"), 0);
    assert_int_equal(c.timeout, 2000);
    dmf_config_free(table, NOPTS, &c);
    PARSE_FAILS("--timeout: '1.5s' is not a duration (e.g. 500ms, 30s, 5m, 1h30m; a plain "
                "number is seconds)",
                "--timeout=1.5s");
}

static void test_lists_from_flags(void **state)
{
    struct testcfg c;
    char err[256];
    /* Repeated flags append; the first one replaces the default list. */
    assert_int_equal(PARSE(&c, NULL, err, "-H", "A: 1", "--header=B: 2", "--filter", "sig"), 0);
    assert_int_equal(c.header.n, 2);
    assert_string_equal(c.header.v[0], "A: 1");
    assert_string_equal(c.header.v[1], "B: 2");
    assert_int_equal(c.filter.n, 1);
    assert_string_equal(c.filter.v[0], "sig");
    dmf_config_free(table, NOPTS, &c);
}

static void test_yaml_and_precedence(void **state)
{
    const char *path = write_file("all.yaml", "# a comment\n"
                                              "candidate-limit: 10\n"
                                              "tag: from-yaml\n"
                                              "piece_length: 8MiB\n"
                                              "timeout: 5m\n"
                                              "seed: yes\n"
                                              "verify: false\n"
                                              "listen: \"0.0.0.0:1\"\n"
                                              "header:\n"
                                              "  - 'X-A: 1'\n"
                                              "  - 'X-B: 2'\n"
                                              "filter: token\n"
                                              "output: ~\n");
    struct testcfg c;
    char err[256];
    /* YAML overrides defaults. */
    assert_int_equal(PARSE(&c, NULL, err, "--config", path), 0);
    assert_int_equal(c.candidate_limit, 10);
    assert_string_equal(c.tag, "from-yaml");
    assert_int_equal(c.piece_length, 8 << 20);
    assert_int_equal(c.timeout, 300000);
    assert_true(c.seed);
    assert_false(c.verify);
    assert_string_equal(c.listen, "0.0.0.0:1");
    assert_int_equal(c.header.n, 2);
    assert_string_equal(c.header.v[1], "X-B: 2");
    assert_int_equal(c.filter.n, 1); /* a scalar replaces the default list */
    assert_string_equal(c.filter.v[0], "token");
    assert_null(c.output); /* null leaves the default */
    dmf_config_free(table, NOPTS, &c);

    /* Flags override YAML wherever they appear, even before --config. */
    assert_int_equal(PARSE(&c, NULL, err, "--candidate-limit=20",
                           "--config="
                           "x",
                           "-H", "X-C: 3", "--config", path, "--verify"),
                     0);
    assert_int_equal(c.candidate_limit, 20);
    assert_string_equal(c.tag, "from-yaml");
    assert_true(c.verify);
    assert_int_equal(c.header.n, 1);
    assert_string_equal(c.header.v[0], "X-C: 3");
    dmf_config_free(table, NOPTS, &c);

    /* dmf_config_load_yaml on its own, over defaults already there. */
    memset(&c, 0, sizeof(c));
    c.candidate_limit = 99;
    assert_int_equal(dmf_config_load_yaml(table, NOPTS, &c, path, err, sizeof(err)), 0);
    assert_int_equal(c.candidate_limit, 10);
    dmf_config_free(table, NOPTS, &c);

    /* An empty file (or only comments) sets nothing; "[]" empties a list. */
    const char *empty = write_file("empty.yaml", "# nothing\n");
    assert_int_equal(PARSE(&c, NULL, err, "--config", empty), 0);
    assert_int_equal(c.candidate_limit, 4);
    dmf_config_free(table, NOPTS, &c);
    const char *clear = write_file("clear.yaml", "filter: []\n");
    assert_int_equal(PARSE(&c, NULL, err, "--config", clear), 0);
    assert_int_equal(c.filter.n, 0);
    dmf_config_free(table, NOPTS, &c);
}

/* Expects --config <file with text> to fail with "<path>:<suffix>". */
static void assert_yaml_fails(const char *name, const char *text, const char *suffix)
{
    const char *path = write_file(name, text);
    struct testcfg c;
    char err[512], want[512];
    assert_int_equal(PARSE(&c, NULL, err, "--config", path), -EINVAL);
    snprintf(want, sizeof(want), "%s:%s", path, suffix);
    assert_string_equal(err, want);
    assert_null(c.listen);
}

static void test_yaml_errors(void **state)
{
    assert_yaml_fails("unknown.yaml", "seed: true\ntag: a\nfoo: 1\n", "3: unknown option 'foo'");
    assert_yaml_fails("bound.yaml", "\n\ncandidate-limit: 0\n",
                      "3: candidate-limit: 0 is below the minimum 1");
    assert_yaml_fails("size.yaml", "piece-length:\n  64k\n",
                      "2: piece-length: 64k is below the minimum 1MiB");
    assert_yaml_fails("twice.yaml", "tag: a\ntag: b\n", "2: option 'tag' is set twice");
    assert_yaml_fails("notlist.yaml", "tag:\n  - a\n",
                      "2: option 'tag' takes one value, not a list");
    assert_yaml_fails("map.yaml", "tag: {a: 1}\n", "1: option 'tag' takes a value, not a mapping");
    assert_yaml_fails("nested.yaml", "header:\n  - [a]\n",
                      "2: items of 'header' must be plain values");
    assert_yaml_fails("top.yaml", "- a\n- b\n",
                      "1: the config file must be a mapping of option: value");
    assert_yaml_fails("docs.yaml", "tag: a\n---\ntag: b\n", "2: only one YAML document is allowed");
    assert_yaml_fails("alias.yaml", "tag: &x a\noutput: *x\n", "2: YAML aliases are not supported");
    assert_yaml_fails("nul.yaml", "tag: \"a\\0b\"\n", "1: tag: value contains a NUL byte");
    assert_yaml_fails("config.yaml", "config: other.yaml\n", "1: unknown option 'config'");

    /* A syntax error names the line libyaml stopped at. */
    const char *path = write_file("syntax.yaml", "tag: a\noutput: 'unterminated\n");
    struct testcfg c;
    char err[512];
    assert_int_equal(PARSE(&c, NULL, err, "--config", path), -EINVAL);
    assert_int_equal(strncmp(err, path, strlen(path)), 0);
    assert_non_null(strstr(err, ": invalid YAML: "));

    /* A missing file. */
    char missing[160];
    snprintf(missing, sizeof(missing), "%s/missing.yaml", tmpdir);
    assert_int_equal(PARSE(&c, NULL, err, "--config", missing), -EINVAL);
    assert_non_null(strstr(err, "cannot read"));
    assert_non_null(strstr(err, "No such file"));

    /* More than 1 MiB is refused before parsing. */
    size_t n = DMF_CONFIG_FILE_MAX + 1;
    char *big = malloc(n + 1);
    memset(big, '#', n);
    big[n] = '\0';
    path = write_file("big.yaml", big);
    free(big);
    assert_int_equal(PARSE(&c, NULL, err, "--config", path), -EINVAL);
    assert_non_null(strstr(err, "larger than 1024 KiB"));
}

static void test_value_too_long(void **state)
{
    size_t n = DMF_CONFIG_VALUE_MAX + 1;
    char *arg = malloc(n + 7);
    memcpy(arg, "--tag=", 6);
    memset(arg + 6, 'v', n);
    arg[6 + n] = '\0';
    PARSE_FAILS("--tag: value is longer than 8192 bytes", arg);
    arg[6 + n - 1] = '\0'; /* exactly the limit is fine */
    struct testcfg c;
    char err[256];
    assert_int_equal(PARSE(&c, NULL, err, arg), 0);
    assert_int_equal(strlen(c.tag), DMF_CONFIG_VALUE_MAX);
    dmf_config_free(table, NOPTS, &c);
    free(arg);
}

/* A table that declares "config" itself gets the path and may name a default file. */
struct cfgcfg {
    char *config;
    char *tag;
};

static void test_declared_config(void **state)
{
    char def[160];
    snprintf(def, sizeof(def), "%s/default.yaml", tmpdir);
    struct dmf_option opts[] = {
        {"config", 'c', DMF_OPT_STRING, offsetof(struct cfgcfg, config), 0, 0, def, "FILE",
         "Config file."},
        {"tag", 0, DMF_OPT_STRING, offsetof(struct cfgcfg, tag), 0, 0, "none", NULL, "Tag."},
    };
    char *argv[] = {"test", NULL, NULL};
    struct cfgcfg c = {0};
    char err[256];
    /* The default file does not exist yet: that is not an error. */
    assert_int_equal(dmf_config_parse(opts, 2, &c, 1, argv, NULL, NULL, err, sizeof(err)), 0);
    assert_string_equal(c.tag, "none");
    assert_string_equal(c.config, def);
    dmf_config_free(opts, 2, &c);

    /* Once it exists it is read. */
    write_file("default.yaml", "tag: from-default\n");
    assert_int_equal(dmf_config_parse(opts, 2, &c, 1, argv, NULL, NULL, err, sizeof(err)), 0);
    assert_string_equal(c.tag, "from-default");
    dmf_config_free(opts, 2, &c);

    /* -c replaces the default path. */
    const char *other = write_file("other.yaml", "tag: from-other\n");
    argv[1] = "-c";
    argv[2] = (char *)other;
    assert_int_equal(dmf_config_parse(opts, 2, &c, 3, argv, NULL, NULL, err, sizeof(err)), 0);
    assert_string_equal(c.tag, "from-other");
    assert_string_equal(c.config, other);
    dmf_config_free(opts, 2, &c);
}

static void test_bad_default_reported(void **state)
{
    struct dmf_option opts[] = {
        {"n", 0, DMF_OPT_INT, 0, 1, 10, "20", NULL, "N."},
    };
    int64_t v = 0;
    char *argv[] = {"test"};
    char err[256];
    assert_int_equal(dmf_config_parse(opts, 1, &v, 1, argv, NULL, NULL, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "default of --n: 20 is above the maximum 10");
}

static bool starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static char *capture(void (*fn)(FILE *))
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    fn(f);
    fclose(f);
    return buf;
}

static void print_usage(FILE *f)
{
    dmf_config_usage(f, "damselfly test [options] URL", "Test things.", table, NOPTS);
}

static void print_markdown(FILE *f)
{
    dmf_config_markdown(f, table, NOPTS);
}

/* DMF_OPT_YAML: a structured value owned by another module; the table skips it and
 * records its line, and refuses it as a flag. */
struct ycfg {
    char *tag;
    unsigned long rules_line;
};
static const struct dmf_option ytable[] = {
    {"tag", 0, DMF_OPT_STRING, offsetof(struct ycfg, tag), 0, 0, NULL, NULL, "Task tag."},
    {"proxy-rules", 0, DMF_OPT_YAML, offsetof(struct ycfg, rules_line), 0, 0, NULL, NULL, "Rules."},
};

static void test_yaml_only_option(void **state)
{
    struct ycfg c;
    char err[512];
    const char *path = write_file("yamlonly.yaml", "tag: a\nproxy_rules:\n  - regex: x\n"
                                                   "    p2p: true\n  - {regex: [y, z]}\n"
                                                   "# end\n");
    char *argv[] = {"test", "--config", (char *)path};
    memset(&c, 0, sizeof(c));
    assert_int_equal(dmf_config_parse(ytable, 2, &c, 3, argv, NULL, NULL, err, sizeof(err)), 0);
    assert_string_equal(c.tag, "a");
    assert_int_equal(c.rules_line, 3);
    dmf_config_free(ytable, 2, &c);

    char *argv2[] = {"test", "--proxy-rules", "x"};
    memset(&c, 0, sizeof(c));
    assert_int_equal(dmf_config_parse(ytable, 2, &c, 3, argv2, NULL, NULL, err, sizeof(err)),
                     -EINVAL);
    assert_non_null(strstr(err, "config file only"));

    char *argv3[] = {"test"};
    memset(&c, 0, sizeof(c));
    assert_int_equal(dmf_config_parse(ytable, 2, &c, 1, argv3, NULL, NULL, err, sizeof(err)), 0);
    assert_int_equal(c.rules_line, 0);
    dmf_config_free(ytable, 2, &c);
}

static void test_usage(void **state)
{
    char *text = capture(print_usage);
    assert_true(
        starts_with(text, "usage: damselfly test [options] URL\n\nTest things.\n\noptions:\n"));
    assert_non_null(strstr(text, "  -O, --output FILE "));
    assert_non_null(strstr(text, "      --candidate-limit N "));
    assert_non_null(strstr(text, "Parents | candidates. [default: 4; 1..50]\n"));
    assert_non_null(strstr(text, "Piece length. [default: 4m; 1MiB..16MiB]\n"));
    assert_non_null(strstr(text, "Give up after this long. [default: 30s; 100ms..1h]\n"));
    assert_non_null(strstr(text, "Extra header. [repeatable]\n"));
    assert_non_null(strstr(text, "Verify the content. [default: true]\n"));
    assert_non_null(strstr(text, "Act as a seed peer.\n")); /* off by default: no note */
    assert_non_null(strstr(text, "--config FILE"));
    assert_non_null(strstr(text, "-h, --help"));
    assert_non_null(strstr(text, "a plain number is seconds"));
    free(text);

    text = capture(print_markdown);
    assert_true(starts_with(text, "| Option | Type | Default | Range | Description |\n|---|"));
    assert_non_null(
        strstr(text, "| `--piece-length SIZE` | size | `4m` | 1MiB..16MiB | Piece length. |\n"));
    assert_non_null(strstr(text, "| `--output FILE`, `-O` | string |  |  | Write to FILE. |\n"));
    assert_non_null(strstr(text, "Parents \\| candidates."));
    assert_non_null(strstr(text, "`--config FILE`"));
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_flag_forms),
        cmocka_unit_test(test_dash_and_double_dash),
        cmocka_unit_test(test_unknown_and_missing),
        cmocka_unit_test(test_help_stops_parsing),
        cmocka_unit_test(test_bools),
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_durations),
        cmocka_unit_test(test_lists_from_flags),
        cmocka_unit_test(test_yaml_and_precedence),
        cmocka_unit_test(test_yaml_errors),
        cmocka_unit_test(test_value_too_long),
        cmocka_unit_test(test_declared_config),
        cmocka_unit_test(test_bad_default_reported),
        cmocka_unit_test(test_usage),
        cmocka_unit_test(test_yaml_only_option),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
