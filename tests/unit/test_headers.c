/* SPDX-License-Identifier: Apache-2.0 */
/* test_headers.c - header tags from request/response tables, addresses, and client IP
 * resolution with the cases of dd-trace-go's clientip tests and system-tests'
 * Test_StandardTagsClientIp. */
#include "unit.h"
#include "dd_headers.h"
#include "dd_util.h"

#include <apr_general.h>
#include <apr_strings.h>

static const char *meta(const apr_array_header_t *a, const char *key)
{
    const dd_meta_t *m = a ? (const dd_meta_t *)a->elts : NULL;
    for (int i = 0; a && i < a->nelts; i++)
        if (strcmp(m[i].key, key) == 0)
            return m[i].value;
    return NULL;
}

static void test_header_tags(apr_pool_t *p)
{
    apr_array_header_t *cfg = NULL, *out = NULL;
    apr_table_t *req = apr_table_make(p, 4), *out1 = apr_table_make(p, 4),
                *out2 = apr_table_make(p, 4);
    const char *bad, *why;
    int cut = 0;
    char big[3000];

    CHECK(dd_header_tags_parse(p, "X-Request-Id, header5, x-mapped:my.tag, Set-Cookie, absent",
                               &cfg, &bad, &why) == 0);
    apr_table_set(req, "x-request-id", "abc-123");
    apr_table_set(req, "Header5", " v a l ");
    apr_table_set(req, "X-Mapped", "m");
    dd_header_tags_collect(p, cfg, 0, req, NULL, &out, &cut);
    CHECK(out && out->nelts == 3);
    CHECK_STR(meta(out, "http.request.headers.x-request-id"), "abc-123");
    CHECK_STR(meta(out, "http.request.headers.header5"), "v a l"); /* trimmed, inner kept */
    CHECK_STR(meta(out, "my.tag"), "m");
    CHECK(meta(out, "http.request.headers.absent") == NULL);
    CHECK(!cut);

    /* response: both tables, repeated headers joined */
    out = NULL;
    apr_table_add(out1, "Set-Cookie", "a=1");
    apr_table_add(out1, "Set-Cookie", "b=2");
    apr_table_add(out2, "set-cookie", "c=3");
    apr_table_set(out2, "X-Mapped", "resp");
    dd_header_tags_collect(p, cfg, 1, out1, out2, &out, &cut);
    CHECK(out && out->nelts == 2);
    CHECK_STR(meta(out, "http.response.headers.set-cookie"), "a=1, b=2, c=3");
    CHECK_STR(meta(out, "my.tag"), "resp");

    /* nothing present: nothing made */
    out = NULL;
    dd_header_tags_collect(p, cfg, 1, apr_table_make(p, 1), NULL, &out, &cut);
    CHECK(out == NULL);

    /* cleaned and capped like every header value */
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    apr_table_set(req, "x-request-id", big);
    apr_table_set(req, "header5", "bad \xff utf8");
    out = NULL;
    dd_header_tags_collect(p, cfg, 0, req, NULL, &out, &cut);
    CHECK(cut);
    CHECK(strlen(meta(out, "http.request.headers.x-request-id")) == DD_CAP_VALUE);
    CHECK_STR(meta(out, "http.request.headers.header5"), "bad \xEF\xBF\xBD utf8");
}

static void test_ip_parse(void)
{
    dd_ip_t ip;
    CHECK(dd_ip_parse("1.2.3.4", 7, &ip) && !ip.v6 && ip.b[3] == 4);
    CHECK(dd_ip_parse(" 1.2.3.4:8080 ", 14, &ip) && !ip.v6);
    CHECK(dd_ip_parse("2001:db8::1", 11, &ip) && ip.v6);
    CHECK(dd_ip_parse("[2001:db8::1]", 13, &ip) && ip.v6);
    CHECK(dd_ip_parse("[2001:db8::1]:443", 17, &ip) && ip.v6);
    CHECK(!dd_ip_parse("[2001:db8::1]x", 14, &ip));
    CHECK(!dd_ip_parse("", 0, &ip));
    CHECK(!dd_ip_parse("unknown", 7, &ip));
    CHECK(!dd_ip_parse("_hidden", 7, &ip));
    CHECK(!dd_ip_parse("1.2.3", 5, &ip));
    CHECK(!dd_ip_parse("1.2.3.4.5", 9, &ip));
    CHECK(!dd_ip_parse("999.1.1.1", 9, &ip));
}

static int is_public(const char *s)
{
    dd_ip_t ip;
    return dd_ip_parse(s, strlen(s), &ip) && dd_ip_is_public(&ip);
}

static void test_public(void)
{
    const char *pub[] = {"43.43.43.43",          "8.8.8.8",
                         "172.15.255.255",       "172.32.0.1",
                         "100.63.255.255",       "100.128.0.0",
                         "169.253.1.1",          "11.0.0.1",
                         "2001:4860:4860::8888", "2001:4860:4860:0:0:0:0:8888",
                         "::ffff:8.8.8.8"};
    const char *priv[] = {"10.0.0.1",    "10.255.255.255",  "172.16.0.1",   "172.31.255.255",
                          "192.168.1.1", "127.0.0.1",       "127.1.2.3",    "169.254.1.1",
                          "100.64.0.1",  "100.127.255.255", "0.0.0.0",      "::1",
                          "::",          "fc00::1",         "fd12:3456::1", "fe80::1",
                          "febf::1",     "fec0::1",         "feff::1",      "::ffff:10.0.0.1"};
    for (size_t i = 0; i < sizeof(pub) / sizeof(*pub); i++) {
        CHECK(is_public(pub[i]));
        if (!is_public(pub[i]))
            fprintf(stderr, "  not public: %s\n", pub[i]);
    }
    for (size_t i = 0; i < sizeof(priv) / sizeof(*priv); i++) {
        CHECK(!is_public(priv[i]));
        if (is_public(priv[i]))
            fprintf(stderr, "  public: %s\n", priv[i]);
    }
}

static const char *resolve(apr_pool_t *p, const char *peer, const char *header, ...)
{
    apr_table_t *t = apr_table_make(p, 4);
    va_list ap;
    const char *k;
    va_start(ap, header);
    while ((k = va_arg(ap, const char *)) != NULL)
        apr_table_add(t, k, va_arg(ap, const char *));
    va_end(ap);
    return dd_client_ip_resolve(p, t, header, peer);
}

static void test_resolve(apr_pool_t *p)
{
    const char *pub = "43.43.43.43";
    /* every header of the list, alone (system-tests FORWARD_HEADERS and vendor headers) */
    for (const char *const *h = dd_client_ip_headers; *h; h++) {
        const char *v = strcmp(*h, "forwarded") == 0 ? "for=43.43.43.43" : pub;
        CHECK_STR(resolve(p, "127.0.0.1", NULL, *h, v, NULL), pub);
    }
    CHECK_STR(
        resolve(p, "127.0.0.1", NULL, "cf-connecting-ipv6", "2001:4860:4860:0:0:0:0:8888", NULL),
        "2001:4860:4860:0:0:0:0:8888");
    /* the first public address of a list */
    CHECK_STR(resolve(p, "127.0.0.1", NULL, "x-cluster-client-ip",
                      "10.42.42.42, 43.43.43.43, fe80::1", NULL),
              pub);
    /* header order: a public address in a later header beats a private one in an earlier */
    CHECK_STR(
        resolve(p, "127.0.0.1", NULL, "x-forwarded-for", "10.0.0.1", "x-real-ip", "8.8.8.8", NULL),
        "8.8.8.8");
    /* and the earlier header wins when both are public */
    CHECK_STR(
        resolve(p, "127.0.0.1", NULL, "x-real-ip", "8.8.4.4", "x-forwarded-for", "8.8.8.8", NULL),
        "8.8.8.8");
    /* only private addresses: the first one, over a private peer */
    CHECK_STR(resolve(p, "127.0.0.1", NULL, "x-forwarded-for", "invalid, 10.0.0.1, 10.0.0.2",
                      "x-real-ip", "192.168.0.1", NULL),
              "10.0.0.1");
    /* ... but a public peer beats a private header address */
    CHECK_STR(resolve(p, "9.9.9.9", NULL, "x-forwarded-for", "10.0.0.1", NULL), "9.9.9.9");
    /* ... and a public header address beats a public peer */
    CHECK_STR(resolve(p, "9.9.9.9", NULL, "x-forwarded-for", "8.8.8.8", NULL), "8.8.8.8");
    /* nothing usable: the peer */
    CHECK_STR(resolve(p, "127.0.0.1", NULL, "x-forwarded-for", "garbage, , unknown", NULL),
              "127.0.0.1");
    CHECK_STR(resolve(p, "127.0.0.1", NULL, NULL), "127.0.0.1");
    CHECK(resolve(p, NULL, NULL, NULL) == NULL);
    CHECK(resolve(p, "not-an-ip", NULL, NULL) == NULL);
    /* ports and brackets go */
    CHECK_STR(resolve(p, "127.0.0.1", NULL, "x-forwarded-for", "8.8.8.8:1234", NULL), "8.8.8.8");
    CHECK_STR(resolve(p, "127.0.0.1", NULL, "x-forwarded-for", "[2001:4860::1]:443", NULL),
              "2001:4860::1");
    /* Forwarded: for= of each element, quoted, with IPv6 and ports; by= is not the client */
    CHECK_STR(resolve(p, "127.0.0.1", NULL, "forwarded",
                      "for=10.0.0.1;proto=http;by=8.8.4.4, For=\"[2001:4860::8]:4711\"", NULL),
              "2001:4860::8");
    CHECK_STR(
        resolve(p, "127.0.0.1", NULL, "forwarded", "for=_hidden, for=unknown;by=8.8.8.8", NULL),
        "127.0.0.1");
    CHECK_STR(resolve(p, "127.0.0.1", NULL, "forwarded", "proto=https; for=\"8.8.8.8:80\"", NULL),
              "8.8.8.8");
    CHECK_STR(resolve(p, "127.0.0.1", NULL, "forwarded", "for=\"unterminated", NULL), "127.0.0.1");
    /* a configured header: only that one */
    CHECK_STR(resolve(p, "127.0.0.1", "x-my-ip", "x-forwarded-for", "8.8.8.8", "X-My-IP",
                      "10.1.1.1, 4.4.4.4", NULL),
              "4.4.4.4");
    CHECK_STR(resolve(p, "127.0.0.1", "x-my-ip", "x-forwarded-for", "8.8.8.8", NULL), "127.0.0.1");
    CHECK_STR(resolve(p, "127.0.0.1", "forwarded", "forwarded", "for=8.8.8.8", NULL), "8.8.8.8");
}

int main(void)
{
    apr_pool_t *p;
    apr_initialize();
    apr_pool_create(&p, NULL);
    test_header_tags(p);
    test_ip_parse();
    test_public();
    test_resolve(p);
    apr_pool_destroy(p);
    apr_terminate();
    UNIT_DONE();
}
