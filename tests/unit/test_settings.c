/* SPDX-License-Identifier: Apache-2.0 */
/* test_settings.c - booleans, DD_TAGS, header-tag lists and error-status sets, with the
 * tracers' own cases (dd-trace-py parse_tags_str, system-tests header_tag_vars.py,
 * dd-trace-js http-error-statuses.js). */
#include "unit.h"
#include "dd_settings.h"
#include "dd_span.h"

#include <apr_general.h>

static void test_bool(void)
{
    int v = -1;
    CHECK(dd_parse_bool("true", &v) && v == 1);
    CHECK(dd_parse_bool(" FALSE ", &v) && v == 0);
    CHECK(dd_parse_bool("1", &v) && v == 1);
    CHECK(dd_parse_bool("0", &v) && v == 0);
    CHECK(dd_parse_bool("Yes", &v) && v == 1);
    CHECK(dd_parse_bool("off", &v) && v == 0);
    CHECK(!dd_parse_bool("", &v));
    CHECK(!dd_parse_bool("maybe", &v));
    CHECK(!dd_parse_bool("truefalse", &v));
}

static const char *tag(const apr_array_header_t *t, const char *key)
{
    return dd_tags_get(t, key);
}

static void test_tags(apr_pool_t *p)
{
    apr_array_header_t *t = dd_parse_tags(p, "team:core,tier:web");
    CHECK(t->nelts == 2);
    CHECK_STR(tag(t, "team"), "core");
    CHECK_STR(tag(t, "tier"), "web");

    t = dd_parse_tags(p, "team:core tier:web"); /* no comma: spaces separate */
    CHECK(t->nelts == 2);
    CHECK_STR(tag(t, "tier"), "web");

    /* a comma anywhere: commas separate, spaces inside values stay, entries are trimmed */
    t = dd_parse_tags(p, " owner : Q A , url:http://x:8080/y,flag,, :nokey,dup:1,dup:2");
    CHECK_STR(tag(t, "owner"), "Q A");
    CHECK_STR(tag(t, "url"), "http://x:8080/y"); /* split on the first ':' */
    CHECK_STR(tag(t, "flag"), "");               /* a key without a value */
    CHECK_STR(tag(t, "dup"), "2");               /* the last one wins */
    CHECK(tag(t, "") == NULL);
    CHECK(t->nelts == 4);
    dd_tags_remove(t, "dup");
    CHECK(tag(t, "dup") == NULL && t->nelts == 3);

    t = dd_parse_tags(p, "env:prod  version:1.2  service:web");
    CHECK(t->nelts == 3);
    CHECK_STR(tag(t, "env"), "prod");
    CHECK_STR(tag(t, "version"), "1.2");
    t = dd_parse_tags(p, "");
    CHECK(t->nelts == 0);
    t = dd_parse_tags(p, "   ");
    CHECK(t->nelts == 0);
}

static const dd_header_tag_t *ht(const apr_array_header_t *a, int i)
{
    return &((const dd_header_tag_t *)a->elts)[i];
}

static void test_header_tags(apr_pool_t *p)
{
    apr_array_header_t *a = NULL;
    const char *bad = NULL, *why = NULL;
    /* the system-tests' valid configurations */
    CHECK(dd_header_tags_parse(p, "header1, header2:mapped-header, header3 , header4: t a g ", &a,
                               &bad, &why) == 0);
    CHECK(a && a->nelts == 4);
    CHECK_STR(ht(a, 0)->header, "header1");
    CHECK_STR(ht(a, 0)->request_tag, "http.request.headers.header1");
    CHECK_STR(ht(a, 0)->response_tag, "http.response.headers.header1");
    CHECK(ht(a, 0)->request_klen == strlen("http.request.headers.header1"));
    CHECK_STR(ht(a, 1)->request_tag, "mapped-header");
    CHECK_STR(ht(a, 1)->response_tag, "mapped-header");
    CHECK_STR(ht(a, 2)->header, "header3");
    CHECK_STR(ht(a, 3)->request_tag, "t a g");

    /* normalization of the default tag name (dd-trace-py) */
    a = NULL;
    CHECK(dd_header_tags_parse(p, "X-Request.ID,My_Header!", &a, &bad, &why) == 0);
    CHECK_STR(ht(a, 0)->request_tag, "http.request.headers.x-request_id");
    CHECK_STR(ht(a, 1)->response_tag, "http.response.headers.my_header_");
    CHECK_STR(ht(a, 0)->header, "X-Request.ID"); /* matched case-insensitively by APR */

    /* a tag may hold ':' (split on the first one) */
    a = NULL;
    CHECK(dd_header_tags_parse(p, "x-a:ns:tag", &a, &bad, &why) == 0);
    CHECK_STR(ht(a, 0)->header, "x-a");
    CHECK_STR(ht(a, 0)->request_tag, "ns:tag");

    /* the system-tests' invalid ones, and others */
    const char *invalid[] = {":header7", "header8:", "*", "bad header", "x-\x01", "a@b"};
    for (size_t i = 0; i < sizeof(invalid) / sizeof(*invalid); i++) {
        a = NULL;
        bad = why = NULL;
        CHECK(dd_header_tags_parse(p, invalid[i], &a, &bad, &why) == -1);
        CHECK(bad && why);
    }
    a = NULL;
    CHECK(dd_header_tags_parse(p, "ok, :header7", &a, &bad, &why) == -1);
    CHECK_STR(bad, ":header7");

    /* appending to an existing list; empty entries are skipped */
    a = NULL;
    CHECK(dd_header_tags_parse(p, "a", &a, &bad, &why) == 0);
    CHECK(dd_header_tags_parse(p, ",b,,", &a, &bad, &why) == 0);
    CHECK(a->nelts == 2);
}

static void test_statuses(void)
{
    dd_status_set_t s;
    const char *why = NULL;
    CHECK(dd_status_set_parse("500-599", &s, &why) == 0);
    CHECK(dd_status_set_has(&s, 500) && dd_status_set_has(&s, 599));
    CHECK(!dd_status_set_has(&s, 499) && !dd_status_set_has(&s, 600));
    CHECK(!dd_status_set_has(&s, -1) && !dd_status_set_has(&s, 100000));

    CHECK(dd_status_set_parse(" 500-599 , 429 ", &s, &why) == 0);
    CHECK(dd_status_set_has(&s, 429) && dd_status_set_has(&s, 503));
    CHECK(!dd_status_set_has(&s, 428) && !dd_status_set_has(&s, 430));

    CHECK(dd_status_set_parse("403-400", &s, &why) == 0); /* either way round */
    CHECK(dd_status_set_has(&s, 400) && dd_status_set_has(&s, 403) && !dd_status_set_has(&s, 404) &&
          !dd_status_set_has(&s, 500));

    CHECK(dd_status_set_parse("100,199-101", &s, &why) == 0);
    CHECK(dd_status_set_has(&s, 150) && !dd_status_set_has(&s, 200));

    const char *bad[] = {"",        " ",    "abc",    "600",  "99",           "5000",
                         "500-",    "-500", "500,",   ",500", "500-599,,429", "500--599",
                         "500-600", "1e3",  "500;429"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        why = NULL;
        CHECK(dd_status_set_parse(bad[i], &s, &why) == -1);
        CHECK(why != NULL);
        if (dd_status_set_parse(bad[i], &s, &why) == 0)
            fprintf(stderr, "accepted %s\n", bad[i]);
    }
}

int main(void)
{
    apr_pool_t *p;
    apr_initialize();
    apr_pool_create(&p, NULL);
    test_bool();
    test_tags(p);
    test_header_tags(p);
    test_statuses();
    apr_pool_destroy(p);
    apr_terminate();
    UNIT_DONE();
}
