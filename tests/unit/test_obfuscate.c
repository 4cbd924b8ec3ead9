/* SPDX-License-Identifier: Apache-2.0 */
/* test_obfuscate.c - query string obfuscation: the system-tests' Test_StandardTagsUrl and
 * Test_Config_ObfuscationQueryStringRegexp cases, the cap, the limits, and what the tracers'
 * default does not catch (why http.url carries no query string unless asked). */
#include "unit.h"
#include "dd_obfuscate.h"

#include <apr_general.h>
#include <apr_strings.h>
#include <time.h>

static const char *ob(const dd_qs_obfuscator_t *o, apr_pool_t *p, const char *q, int *cut)
{
    return dd_qs_obfuscate(o, p, q, strlen(q), cut);
}

static void test_default(apr_pool_t *p)
{
    const char *why = NULL;
    size_t at = 0;
    int cut = 0;
    dd_qs_obfuscator_t *o = dd_qs_obfuscator_create(p, dd_qs_default_regexp, &why, &at);
    CHECK(o != NULL);
    if (!o) {
        fprintf(stderr, "default regexp: %s at %zu\n", why, at);
        return;
    }
    CHECK_STR(ob(o, p, "key1=val1&key2=val2&key3=val3", &cut), "key1=val1&key2=val2&key3=val3");
    CHECK_STR(ob(o, p, "pass=03cb9f67-dbbc-4cb8-b966-329951e10934&key2=val2&key3=val3", &cut),
              "<redacted>&key2=val2&key3=val3");
    CHECK_STR(ob(o, p,
                 "key1=val1&public_key=MDNjYjlmNjctZGJiYy00Y2I4LWI5NjYtMzI5OTUxZTEwOTM0&key3=val3",
                 &cut),
              "key1=val1&<redacted>&key3=val3");
    CHECK_STR(ob(o, p, "key1=val1&key2=val2&token=03cb9f67dbbc4cb8b966329951e10934", &cut),
              "key1=val1&key2=val2&<redacted>");
    CHECK_STR(ob(o, p, "key1=val1&key2=val2&application_key=123", &cut),
              "key1=val1&key2=val2&<redacted>");
    CHECK_STR(ob(o, p,
                 "json=%7B%20%22sign%22%3A%20%22%7B0x03cb9f67%2C0xdbbc%2C0x4cb8%2C%7B0xb9%2C0x66%"
                 "2C0x32%2C0x99%2C0x51%2C0xe1%2C0x09%2C0x34%7D%7D%22%7D",
                 &cut),
              "json=%7B%20<redacted>%7D");
    CHECK_STR(ob(o, p,
                 "token=03cb9f67dbbc4cb8b9&key1=val1&key2=val2&pass=03cb9f67-dbbc-4cb8-b966-"
                 "329951e10934&public_key=MDNjYjlmNjctZGJiYy00Y2I4LWI5NjYtMzI5OTUxZTEwOTM0&key3="
                 "val3&application-key=dogkey&json=%7B%20%22sign%22%3A%20%22%7D%7D%22%7D&ecdsa-1-"
                 "1%20aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaabbbbbaaaaaaa"
                 "aaaaaaaaaaaaaaaaaaaaaaaa=%09test&json=%7B%20%22app-key%22%3A%20%22test%22%7D",
                 &cut),
              "<redacted>&key1=val1&key2=val2&<redacted>&<redacted>&key3=val3&<redacted>&json=%7B%"
              "20<redacted>%7D&<redacted>&json=%7B%20<redacted>%7D");
    /* case-insensitive, values that are secrets whatever their key */
    CHECK_STR(ob(o, p, "PassWord=x&a=b", &cut), "<redacted>&a=b");
    CHECK_STR(ob(o, p, "t=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig&a=b", &cut), "t=<redacted>&a=b");
    CHECK_STR(ob(o, p, "x=ghp_0123456789abcdefghijABCDEFGHIJ012345", &cut), "x=<redacted>");
    CHECK(!cut);

    /* what the tracers' default lets through: Azure SAS signatures (sig=), Google API keys
     * (key=), OAuth authorization codes (code=). The reason the module's default is Off. */
    CHECK_STR(ob(o, p, "sv=2022-11-02&sig=abcDEF%2Bghi%3D", &cut),
              "sv=2022-11-02&sig=abcDEF%2Bghi%3D");
    CHECK_STR(ob(o, p, "key=AIzaSyA1234567890", &cut), "key=AIzaSyA1234567890");
    CHECK_STR(ob(o, p, "code=4%2F0AX4XfWh&state=xyz", &cut), "code=4%2F0AX4XfWh&state=xyz");
}

static void test_config(apr_pool_t *p)
{
    const char *why = NULL;
    size_t at = 0;
    int cut = 0;
    /* "" = no obfuscation (Test_Config_ObfuscationQueryStringRegexp_Empty) */
    dd_qs_obfuscator_t *o = dd_qs_obfuscator_create(p, "", &why, &at);
    CHECK(o != NULL);
    CHECK_STR(ob(o, p, "application_key=123", &cut), "application_key=123");
    /* a configured expression (..._Configured) */
    o = dd_qs_obfuscator_create(p, "ssn=\\d{3}-\\d{2}-\\d{4}", &why, &at);
    CHECK(o != NULL);
    CHECK_STR(ob(o, p, "ssn=123-45-6789&application_key=123", &cut),
              "<redacted>&application_key=123");
    /* ".*": the whole query, once (an empty match redacts nothing) */
    o = dd_qs_obfuscator_create(p, ".*", &why, &at);
    CHECK_STR(ob(o, p, "a=1&b=2", &cut), "<redacted>");
    /* an expression that can match empty everywhere changes nothing */
    o = dd_qs_obfuscator_create(p, "x*", &why, &at);
    CHECK_STR(ob(o, p, "a=1&b=2", &cut), "a=1&b=2");
    CHECK_STR(ob(o, p, "axxb", &cut), "a<redacted>b");
    /* the README's broader expression */
    o = dd_qs_obfuscator_create(p,
                                "(?<![^&])(?:sig|key|code|[a-z_-]*(?:pass|pwd|secret|token|key|"
                                "sign|auth)[a-z_-]*)=[^&]*",
                                &why, &at);
    CHECK(o != NULL);
    if (o)
        CHECK_STR(ob(o, p, "sv=1&sig=a%3D&key=AIza&code=4&Api_Key=x&q=shoes&asig=2", &cut),
                  "sv=1&<redacted>&<redacted>&<redacted>&<redacted>&q=shoes&asig=2");
    /* bad expressions are refused with PCRE2's reason and where */
    why = NULL;
    CHECK(dd_qs_obfuscator_create(p, "(unclosed", &why, &at) == NULL);
    CHECK(why != NULL && at == 9);
    CHECK(dd_qs_obfuscator_create(p, "a{2,1}", &why, &at) == NULL);
}

static void test_cap_and_limits(apr_pool_t *p)
{
    const char *why;
    size_t at;
    int cut = 0;
    dd_qs_obfuscator_t *o = dd_qs_obfuscator_create(p, dd_qs_default_regexp, &why, &at);
    char *q = apr_palloc(p, 20001), *w = q;
    const char *r;
    /* 20 KB of parameters ending in a GitHub token cut in two by the cap */
    while (w - q < DD_QS_CAP - 40) {
        memcpy(w, "aaaaaaaaa=b&", 12);
        w += 12;
    }
    strcpy(w, "x=ghp_0123456789abcdefghijABCDEFGHIJ012345&more=1");
    r = ob(o, p, q, &cut);
    CHECK(cut);
    CHECK(strlen(r) <= DD_QS_CAP);
    CHECK(strstr(r, "ghp_") == NULL); /* the parameter the cap cut is dropped whole */
    CHECK(r[strlen(r) - 1] == 'b');   /* ends on a whole parameter, without '&' */

    /* no '&' within the cap: nothing is shown */
    memset(q, 'z', 20000);
    q[20000] = '\0';
    cut = 0;
    CHECK_STR(ob(o, p, q, &cut), "");
    CHECK(cut);

    /* a catastrophic expression hits the match limit: the query is not shown */
    o = dd_qs_obfuscator_create(p, "(a+)+$", &why, &at);
    memset(q, 'a', 4000);
    q[4000] = 'b';
    q[4001] = '\0';
    {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        r = ob(o, p, q, &cut);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        CHECK_STR(r, "<redacted>");
        /* bounded: well under a second even under sanitizers on a loaded machine */
        CHECK((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000 < 1000);
    }
}

/* What a query costs with the default expression (printed, not asserted). */
static void measure(apr_pool_t *p)
{
    const char *why;
    size_t at;
    int cut = 0;
    dd_qs_obfuscator_t *o = dd_qs_obfuscator_create(p, dd_qs_default_regexp, &why, &at);
    const char *small = "q=shoes&page=2&sort=price&token=abc123";
    char *big = apr_palloc(p, DD_QS_CAP + 1), *w = big;
    struct timespec t0, t1;
    apr_pool_t *sub;
    while (w - big < DD_QS_CAP - 12) {
        memcpy(w, "param=value&", 12);
        w += 12;
    }
    *w = '\0';
    apr_pool_create(&sub, p);
    for (int k = 0; k < 2; k++) {
        const char *q = k ? big : small;
        int n = k ? 200 : 20000;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (int i = 0; i < n; i++) {
            ob(o, sub, q, &cut);
            apr_pool_clear(sub);
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        printf("  default expression, %zu-byte query: %.2f us per query\n", strlen(q),
               ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / 1e3 / n);
    }
}

int main(void)
{
    apr_pool_t *p;
    apr_initialize();
    apr_pool_create(&p, NULL);
    test_default(p);
    test_config(p);
    test_cap_and_limits(p);
    measure(p);
    apr_pool_destroy(p);
    apr_terminate();
    UNIT_DONE();
}
