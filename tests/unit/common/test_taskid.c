/* Task IDs: URL normalisation, the derivation contract and its golden vectors. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/taskid.h"

/* The same vectors as tests/unit/common/taskid_vectors.txt (read by the Python tests):
 * url, tag, filter (comma-separated), expected ID; a "digest" url means the second column
 * is a digest. */
static const char *const vectors[][4] = {
    {"HTTPS://Example.COM:443/path/file.tar.gz?b=2&a=1&token=secret#frag", "", "token",
     "87a65f34b30812cb1da027baba941c5fc7c660ac1d6e103b07e94f3dc472d9fa"},
    {"https://example.com/path/file.tar.gz?a=1&b=2", "", "",
     "87a65f34b30812cb1da027baba941c5fc7c660ac1d6e103b07e94f3dc472d9fa"},
    {"http://example.com:8080/blob?x=1&x=0&sig=abc&Expires=5", "v1", "sig,Expires",
     "f58eeabf254d94e9841d0fc1a09a33db5d6a7cb3541f6b99c1a515ea92a865f2"},
    {"http://example.com/file", "", "",
     "1fe6f1f249c5661f668b02523f78e09a16c8dd905b046bb497c65bc753bd3e14"},
    {"http://[2001:DB8::1]:80/a?&&z=1&y", "tag with spaces", "",
     "67da9d46fb7200a531c42d49c8c489e3aab991d492f07956ef09bdb4df41cbc4"},
    {"digest", "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824", "",
     "1fc8e850655ab744b4ca08113af5bc6c1d355c38b9090fbb9571a41882597fe5"},
    {"digest", "sha256:2CF24DBA5FB0A30E26E83B2AC5B9E29E1B161E5C1FA7425E73043362938B9824", "",
     "1fc8e850655ab744b4ca08113af5bc6c1d355c38b9090fbb9571a41882597fe5"},
};

static void split_filter(const char *s, struct dmf_strlist *l)
{
    while (*s != '\0') {
        size_t n = strcspn(s, ",");
        char *item = strndup(s, n);
        dmf_strlist_push(l, item);
        free(item);
        s += n;
        if (*s == ',')
            s++;
    }
}

/* Derives the ID of one vector into id. */
static int vector_id(const char *const v[4], char *id, char *err, size_t errlen)
{
    struct dmf_strlist filter = {0};
    struct dmf_task_id_input in = {0};
    split_filter(v[2], &filter);
    if (strcmp(v[0], "digest") == 0) {
        in.url = "http://ignored.example/";
        in.digest = v[1];
    } else {
        in.url = v[0];
        in.tag = v[1];
        in.filter_query = &filter;
    }
    int rc = dmf_task_id(&in, id, err, errlen);
    dmf_strlist_free(&filter);
    return rc;
}

static void test_golden_vectors(void **state)
{
    char id[DMF_TASK_ID_LEN + 1], err[256];
    for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
        assert_int_equal(vector_id(vectors[i], id, err, sizeof(err)), 0);
        assert_string_equal(id, vectors[i][3]);
        assert_true(dmf_task_id_valid(id));
    }
}

/* The vectors file must hold exactly the vectors above, in the same order. */
static void test_vectors_file_matches(void **state)
{
    char path[4096], line[16384];
    const char *slash = strrchr(__FILE__, '/');
    assert_non_null(slash);
    snprintf(path, sizeof(path), "%.*s/taskid_vectors.txt", (int)(slash - __FILE__), __FILE__);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        char *cols[4];
        char *p = line;
        for (int c = 0; c < 4; c++) {
            cols[c] = p;
            p = strchr(p, '\t');
            if (c < 3) {
                assert_non_null(p);
                *p++ = '\0';
            }
        }
        assert_null(p);
        assert_true(n < sizeof(vectors) / sizeof(vectors[0]));
        for (int c = 0; c < 4; c++)
            assert_string_equal(cols[c], vectors[n][c]);
        n++;
    }
    fclose(f);
    assert_int_equal(n, sizeof(vectors) / sizeof(vectors[0]));
}

static void id_of(const char *url, const char *tag, const struct dmf_strlist *filter, char *id)
{
    char err[256];
    struct dmf_task_id_input in = {.url = url, .tag = tag, .filter_query = filter};
    int rc = dmf_task_id(&in, id, err, sizeof(err));
    if (rc != 0)
        fail_msg("dmf_task_id(%s): %s", url, err);
}

static void test_filter_query_removes_params(void **state)
{
    struct dmf_strlist filter = {0};
    char a[65], b[65], c[65];
    dmf_strlist_push(&filter, "Signature");
    dmf_strlist_push(&filter, "Expires");
    id_of("https://cdn.example/f?Signature=abc&Expires=1&v=2", NULL, &filter, a);
    id_of("https://cdn.example/f?v=2&Signature=zzz&Expires=9", NULL, &filter, b);
    assert_string_equal(a, b);
    /* Without the filter the signature makes them different tasks. */
    id_of("https://cdn.example/f?Signature=abc&Expires=1&v=2", NULL, NULL, c);
    assert_string_not_equal(a, c);
    /* Filtering every parameter leaves no '?' behind. */
    id_of("https://cdn.example/f?Signature=abc", NULL, &filter, a);
    id_of("https://cdn.example/f", NULL, NULL, b);
    assert_string_equal(a, b);
    /* Names match exactly: a parameter that only starts like a filtered one stays. */
    id_of("https://cdn.example/f?Signature2=abc", NULL, &filter, a);
    assert_string_not_equal(a, b);
    dmf_strlist_free(&filter);
}

static void test_query_order_insensitive(void **state)
{
    char a[65], b[65], c[65];
    id_of("http://h.example/p?b=2&a=1&c=3", NULL, NULL, a);
    id_of("http://h.example/p?c=3&a=1&b=2", NULL, NULL, b);
    assert_string_equal(a, b);
    /* A different value is a different task. */
    id_of("http://h.example/p?c=3&a=1&b=4", NULL, NULL, c);
    assert_string_not_equal(a, c);
}

static void test_fields_change_id(void **state)
{
    char base[65], id[65], err[256];
    id_of("http://h.example/p", NULL, NULL, base);
    /* NULL and "" tag are the same. */
    id_of("http://h.example/p", "", NULL, id);
    assert_string_equal(base, id);
    id_of("http://h.example/p", "v2", NULL, id);
    assert_string_not_equal(base, id);

    struct dmf_task_id_input in = {.url = "http://h.example/p", .application = "registry"};
    assert_int_equal(dmf_task_id(&in, id, err, sizeof(err)), 0);
    assert_string_not_equal(base, id);
    /* Length prefixes: moving bytes between fields changes the ID. */
    char tag_a[65];
    struct dmf_task_id_input in2 = {.url = "http://h.example/p", .tag = "registry"};
    assert_int_equal(dmf_task_id(&in2, tag_a, err, sizeof(err)), 0);
    assert_string_not_equal(tag_a, id);

    struct dmf_task_id_input in3 = {.url = "http://h.example/p", .piece_length = 4u << 20};
    assert_int_equal(dmf_task_id(&in3, id, err, sizeof(err)), 0);
    assert_string_not_equal(base, id);
    /* The known value for piece_length 4 MiB and application "app". */
    struct dmf_task_id_input in4 = {
        .url = "http://example.com/file", .application = "app", .piece_length = 4194304};
    assert_int_equal(dmf_task_id(&in4, id, err, sizeof(err)), 0);
    assert_string_equal(id, "264b77f0ef65afca2f46c0efcf7749cb22162d4d7d72abbfa3873d0ac936d02c");
}

static void test_digest_ignores_url(void **state)
{
    char a[65], b[65], err[256];
    const char *d = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
    struct dmf_task_id_input in = {.url = "https://registry-1.example/v2/x/blobs/1", .digest = d};
    assert_int_equal(dmf_task_id(&in, a, err, sizeof(err)), 0);
    in = (struct dmf_task_id_input){
        .url = "http://mirror.example:5000/other", .tag = "t", .application = "a", .digest = d};
    assert_int_equal(dmf_task_id(&in, b, err, sizeof(err)), 0);
    assert_string_equal(a, b);
    /* No URL at all is fine with a digest. */
    in = (struct dmf_task_id_input){.digest = d};
    assert_int_equal(dmf_task_id(&in, b, err, sizeof(err)), 0);
    assert_string_equal(a, b);
    /* A bad digest is an error, not a URL-derived ID. */
    in = (struct dmf_task_id_input){.url = "http://h.example/", .digest = "md5:abcd"};
    assert_int_equal(dmf_task_id(&in, b, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "md5"));
    /* Neither URL nor digest. */
    in = (struct dmf_task_id_input){0};
    assert_int_equal(dmf_task_id(&in, b, err, sizeof(err)), -EINVAL);
}

static void assert_normalizes(const char *url, const struct dmf_strlist *filter, const char *expect)
{
    char *out = NULL, err[256];
    int rc = dmf_url_normalize(url, filter, &out, err, sizeof(err));
    if (rc != 0)
        fail_msg("%s: %s", url, err);
    assert_string_equal(out, expect);
    free(out);
}

static void test_normalize(void **state)
{
    assert_normalizes("HTTP://WWW.Example.COM:80/A/B?x#frag", NULL, "http://www.example.com/A/B?x");
    assert_normalizes("https://h.example:443", NULL, "https://h.example");
    assert_normalizes("http://h.example:443/", NULL, "http://h.example:443/");
    assert_normalizes("https://h.example:80/", NULL, "https://h.example:80/");
    assert_normalizes("http://h.example:0080/", NULL, "http://h.example/");
    assert_normalizes("http://h.example:/p", NULL, "http://h.example/p");
    assert_normalizes("http://[::1]:8080/p", NULL, "http://[::1]:8080/p");
    /* No percent-decoding; path case kept; same names sorted by value; empty pieces gone. */
    assert_normalizes("http://h/%7Euser/P?b=%2F&a=2&a=1&&", NULL,
                      "http://h/%7Euser/P?a=1&a=2&b=%2F");
    assert_normalizes("http://h/p?", NULL, "http://h/p");
    assert_normalizes("http://h?q=1", NULL, "http://h?q=1");
}

static void assert_rejected(const char *url, const char *why)
{
    char *out = (char *)"untouched", err[256] = "";
    assert_int_equal(dmf_url_normalize(url, NULL, &out, err, sizeof(err)), -EINVAL);
    assert_null(out);
    if (strstr(err, why) == NULL)
        fail_msg("%s: error '%s' does not mention '%s'", url, err, why);
}

static void test_bad_urls_rejected(void **state)
{
    assert_rejected("ftp://h.example/f", "scheme 'ftp'");
    assert_rejected("h.example/f", "not absolute");
    assert_rejected("://h.example/f", "not absolute");
    assert_rejected("http:///f", "no host");
    assert_rejected("http://:80/f", "no host");
    assert_rejected("http://[]/f", "no host");
    assert_rejected("http://[::1/f", "IPv6");
    assert_rejected("http://h:99999/f", "port");
    assert_rejected("http://h:0/f", "port");
    assert_rejected("http://h:8a/f", "port");
    assert_rejected("http://h/a b", "space");
    assert_rejected("http://h/\xc3\xa9", "non-ASCII");
    assert_rejected("http://h<x>/", "invalid character");
    assert_rejected("", "no URL");
    /* Credentials are refused, and the error does not repeat them. */
    assert_rejected("https://alice:s3cret@h.example/f", "credentials");
    char *out = NULL, err[256];
    dmf_url_normalize("https://alice:s3cret@h.example/f", NULL, &out, err, sizeof(err));
    assert_null(strstr(err, "s3cret"));

    /* 8 KiB is the limit. */
    size_t n = 8192;
    char *url = malloc(n + 2);
    memset(url, 'a', n + 1);
    memcpy(url, "http://h/", 9);
    url[n] = '\0';
    assert_int_equal(dmf_url_normalize(url, NULL, &out, err, sizeof(err)), 0);
    free(out);
    url[n] = 'a';
    url[n + 1] = '\0';
    assert_rejected(url, "longer than 8192");
    free(url);

    char id[65];
    struct dmf_task_id_input in = {.url = "gopher://h/"};
    assert_int_equal(dmf_task_id(&in, id, err, sizeof(err)), -EINVAL);
}

static void test_task_id_valid(void **state)
{
    assert_true(dmf_task_id_valid(vectors[0][3]));
    assert_false(dmf_task_id_valid(NULL));
    assert_false(dmf_task_id_valid(""));
    assert_false(
        dmf_task_id_valid("87A65f34b30812cb1da027baba941c5fc7c660ac1d6e103b07e94f3dc472d9fa"));
    assert_false(
        dmf_task_id_valid("87a65f34b30812cb1da027baba941c5fc7c660ac1d6e103b07e94f3dc472d9f"));
    assert_false(
        dmf_task_id_valid("87a65f34b30812cb1da027baba941c5fc7c660ac1d6e103b07e94f3dc472d9fa0"));
    assert_false(
        dmf_task_id_valid("../5f34b30812cb1da027baba941c5fc7c660ac1d6e103b07e94f3dc472d9fa"));
}

static void id_with(const char *url, const struct dmf_strlist *headers, char *out)
{
    char err[128];
    struct dmf_task_id_input in = {.url = url, .headers = headers};
    assert_int_equal(dmf_task_id(&in, out, err, sizeof(err)), 0);
}

/* Host (another than the URL's) and Accept-Encoding select content: part of the ID; other
 * headers are not; the URL's own authority in Host, or a different spelling of the same
 * encodings, is the same task. */
static void test_identity_headers(void **state)
{
    char plain[DMF_TASK_ID_LEN + 1], x[DMF_TASK_ID_LEN + 1];
    const char *url = "http://Example.com:80/a";
    id_with(url, NULL, plain);
    struct dmf_strlist h = {0};
    dmf_strlist_push(&h, "User-Agent: x");
    dmf_strlist_push(&h, "Authorization: Bearer t");
    id_with(url, &h, x);
    assert_string_equal(x, plain);
    dmf_strlist_push(&h, "host: EXAMPLE.com:80");
    id_with(url, &h, x);
    assert_string_equal(x, plain); /* the URL's own authority */
    dmf_strlist_free(&h);
    dmf_strlist_push(&h, "Host: evil.example");
    id_with(url, &h, x);
    assert_string_not_equal(x, plain);
    dmf_strlist_free(&h);

    char a[DMF_TASK_ID_LEN + 1], b[DMF_TASK_ID_LEN + 1];
    dmf_strlist_push(&h, "Accept-Encoding: gzip, br");
    id_with(url, &h, a);
    dmf_strlist_free(&h);
    dmf_strlist_push(&h, "accept-encoding:BR,gzip");
    id_with(url, &h, b);
    dmf_strlist_free(&h);
    assert_string_equal(a, b);
    assert_string_not_equal(a, plain);
    /* With a digest the headers do not matter. */
    char d1[DMF_TASK_ID_LEN + 1], d2[DMF_TASK_ID_LEN + 1], err[128];
    const char *dg = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    struct dmf_task_id_input in = {.url = url, .digest = dg};
    assert_int_equal(dmf_task_id(&in, d1, err, sizeof(err)), 0);
    dmf_strlist_push(&h, "Host: evil.example");
    in.headers = &h;
    assert_int_equal(dmf_task_id(&in, d2, err, sizeof(err)), 0);
    dmf_strlist_free(&h);
    assert_string_equal(d1, d2);
}

static void test_header_roles(void **state)
{
    assert_int_equal(dmf_task_header_role("HOST: x"), DMF_HEADER_IDENTITY);
    assert_int_equal(dmf_task_header_role("Accept-Encoding: gzip"), DMF_HEADER_IDENTITY);
    assert_int_equal(dmf_task_header_role("cookie: a=b"), DMF_HEADER_BYPASS);
    assert_int_equal(dmf_task_header_role("Range: bytes=0-1"), DMF_HEADER_BYPASS);
    assert_int_equal(dmf_task_header_role("If-None-Match: \"x\""), DMF_HEADER_BYPASS);
    assert_int_equal(dmf_task_header_role("Authorization: t"), DMF_HEADER_PASSED);
    assert_int_equal(dmf_task_header_role("Cookies: a"), DMF_HEADER_PASSED);
    assert_int_equal(dmf_task_header_role("no colon"), DMF_HEADER_PASSED);
    struct dmf_strlist h = {0};
    assert_null(dmf_task_bypass_header(&h));
    assert_null(dmf_task_bypass_header(NULL));
    dmf_strlist_push(&h, "X-A: 1");
    dmf_strlist_push(&h, "cookie: s=1");
    assert_string_equal(dmf_task_bypass_header(&h), "Cookie");
    dmf_strlist_free(&h);
}

static void test_vary_conflict(void **state)
{
    char name[64];
    struct dmf_strlist h = {0};
    dmf_strlist_push(&h, "X-Variant: evil");
    dmf_strlist_push(&h, "Accept-Encoding: gzip");
    assert_true(dmf_task_vary_conflict("Accept-Encoding, x-variant", &h, name, sizeof(name)));
    assert_string_equal(name, "x-variant");
    /* Headers in the identity, or not carried by this request, are no conflict. */
    assert_false(dmf_task_vary_conflict("Accept-Encoding", &h, name, sizeof(name)));
    assert_false(dmf_task_vary_conflict("User-Agent, Origin", &h, name, sizeof(name)));
    assert_false(dmf_task_vary_conflict(NULL, &h, name, sizeof(name)));
    assert_false(dmf_task_vary_conflict(" , ", &h, name, sizeof(name)));
    assert_true(dmf_task_vary_conflict("*", NULL, name, sizeof(name)));
    assert_false(dmf_task_vary_conflict("X-Variant", NULL, name, sizeof(name)));
    dmf_strlist_free(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_vectors),
        cmocka_unit_test(test_vectors_file_matches),
        cmocka_unit_test(test_filter_query_removes_params),
        cmocka_unit_test(test_query_order_insensitive),
        cmocka_unit_test(test_fields_change_id),
        cmocka_unit_test(test_digest_ignores_url),
        cmocka_unit_test(test_normalize),
        cmocka_unit_test(test_bad_urls_rejected),
        cmocka_unit_test(test_task_id_valid),
        cmocka_unit_test(test_identity_headers),
        cmocka_unit_test(test_header_roles),
        cmocka_unit_test(test_vary_conflict),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
