/* SPDX-License-Identifier: Apache-2.0 */
/* test_endpoint.c - http.endpoint from a path: dd-trace-cpp's own test vectors
 * (test/test_endpoint_inferral.cpp), then the edges of its endpoint_inferral.cpp. */
#include "unit.h"
#include "dd_endpoint.h"

#include <apr_general.h>
#include <apr_strings.h>

static apr_pool_t *pool;

static const char *infer(const char *path)
{
    return dd_endpoint_infer(pool, path, strlen(path));
}

#define EP(path, expected) CHECK_STR(infer(path), expected)

/* dd-trace-cpp test/test_endpoint_inferral.cpp, case by case */
static void test_dd_trace_cpp_vectors(void)
{
    /* invalid inputs and root */
    EP("", "/");
    EP("abc", "/");
    EP("/", "/");
    EP("////", "/");
    /* skips empty components */
    EP("/a//b", "/a/b");
    EP("/a/b/", "/a/b/");
    /* int and int_id replacement */
    EP("/users/12", "/users/{param:int}");
    EP("/v1/0-1_2.3", "/v1/{param:int_id}");
    EP("/x/09", "/x/09");
    EP("/1", "/1");
    /* hex and hex_id replacement */
    EP("/x/abcde9", "/x/{param:hex}");
    EP("/x/ab_cd-9", "/x/{param:hex_id}");
    /* long sequences of more than 20 chars yield str */
    EP("/x/aaaaaaaaaaaaaaaaaaaa", "/x/{param:str}");
    /* other specials yield str */
    {
        const char *specials = "%&'()*+,:=@";
        for (const char *c = specials; *c; c++)
            EP(apr_psprintf(pool, "/x/a%cb", *c), "/x/{param:str}");
    }
    /* max components limit */
    EP("/11/22/33/44/55/66/77/88/99/12",
       "/{param:int}/{param:int}/{param:int}/{param:int}/{param:int}/"
       "{param:int}/{param:int}/{param:int}/");
    /* minimum length boundaries */
    EP("/x/0-", "/x/0-");
    EP("/x/0__", "/x/{param:int_id}");
    EP("/x/abcd9", "/x/abcd9");
    EP("/x/ab_c9", "/x/ab_c9");
    EP("/x/ab_cd9", "/x/{param:hex_id}");
    EP("/x/aaaaaaaaaaaaaaaaaaa", "/x/aaaaaaaaaaaaaaaaaaa");
}

static void test_kinds(void)
{
    EP("/users/10", "/users/{param:int}");
    EP("/users/123456789012345678901234", "/users/{param:int}"); /* int before str, any length */
    EP("/a/007", "/a/{param:int_id}");                           /* a leading 0: not int, int_id */
    EP("/a/1.2", "/a/{param:int_id}");
    EP("/a/12.34.56", "/a/{param:int_id}");
    EP("/a/---", "/a/{param:int_id}"); /* dd-trace-cpp: int_id needs no digit */
    EP("/a/...", "/a/{param:int_id}");
    EP("/a/--", "/a/--");
    EP("/a/ABCDE1", "/a/{param:hex}");
    EP("/a/abcdef", "/a/abcdef"); /* hex needs a decimal digit */
    EP("/a/abc-def", "/a/abc-def");
    EP("/a/abc-de1", "/a/{param:hex_id}");
    EP("/a/123abc", "/a/{param:hex}");
    EP("/a/0123456789", "/a/{param:int_id}");
    EP("/a/5f3e2b1c-0000-4000-8000-000000000000", "/a/{param:hex_id}"); /* a UUID */
    EP("/a/g12345", "/a/g12345");
    EP("/a/user@example.com", "/a/{param:str}");
    EP("/a/%20", "/a/{param:str}");
    EP("/a/x=1", "/a/{param:str}");
    EP("/a/b~c", "/a/b~c"); /* ~ and ! and $ and ; are not str's specials */
    EP("/a/b;c", "/a/b;c");
    EP("/api/v1/users", "/api/v1/users");
    EP("/api/v2", "/api/v2");
    EP("/a/\xc3\xa9t\xc3\xa9", "/a/\xc3\xa9t\xc3\xa9");
    EP("/a/\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9",
       "/a/{param:str}"); /* 20 bytes (10 characters): dd-trace-cpp counts bytes */
}

static void test_query_and_limits(void)
{
    char buf[64];
    EP("/users/12?id=5", "/users/{param:int}");
    EP("/users/12/?x", "/users/{param:int}/");
    EP("/?a=b", "/");
    EP("?/a/b", "/");
    EP("/a#12", "/a#12");
    /* exactly 8 segments: no trailing slash; 8 and a slash: one; 9: cut, with one */
    EP("/a/b/c/d/e/f/g/h", "/a/b/c/d/e/f/g/h");
    EP("/a/b/c/d/e/f/g/h/", "/a/b/c/d/e/f/g/h/");
    EP("/a/b/c/d/e/f/g/h/i", "/a/b/c/d/e/f/g/h/");
    EP("/a//b//c//d//e//f//g//h//i", "/a/b/c/d/e/f/g/h/");
    /* len is honoured: the bytes after it are not read */
    strcpy(buf, "/users/12/more");
    CHECK_STR(dd_endpoint_infer(pool, buf, 9), "/users/{param:int}");
    CHECK_STR(dd_endpoint_infer(pool, buf, 0), "/");
    /* outputs longer than their paths: 8 placeholders each longer than its segment */
    EP("/a1_b2c/a1_b2c/a1_b2c/a1_b2c/a1_b2c/a1_b2c/a1_b2c/a1_b2c/a1_b2c",
       "/{param:hex_id}/{param:hex_id}/{param:hex_id}/{param:hex_id}/{param:hex_id}"
       "/{param:hex_id}/{param:hex_id}/{param:hex_id}/");
    EP("/12/12/12/12/12/12/12/12/", "/{param:int}/{param:int}/{param:int}/{param:int}"
                                    "/{param:int}/{param:int}/{param:int}/{param:int}/");
}

int main(void)
{
    apr_initialize();
    apr_pool_create(&pool, NULL);
    test_dd_trace_cpp_vectors();
    test_kinds();
    test_query_and_limits();
    apr_pool_destroy(pool);
    apr_terminate();
    UNIT_DONE();
}
