/* SPDX-License-Identifier: Apache-2.0 */
/* test_gateway.c - the x-dd-proxy* header parser against CONTRACT §3.2. */
#include "unit.h"
#include "dd_gateway.h"

#include <apr_general.h>
#include <apr_strings.h>
#include <apr_lib.h>

#define NOW_MS 1736973768000LL

static apr_pool_t *pool;

static apr_table_t *headers(const char *const *kv)
{
    apr_table_t *t = apr_table_make(pool, 8);
    for (; kv[0]; kv += 2)
        apr_table_add(t, kv[0], kv[1]);
    return t;
}

static dd_gw_status_t parse(const char *const *kv, dd_gateway_t *gw)
{
    return dd_gateway_parse(pool, headers(kv), NOW_MS, gw);
}

static void test_full_rest(void)
{
    const char *kv[] = {"X-DD-Proxy",
                        "aws-apigateway",
                        "x-dd-proxy-request-time-ms",
                        "1736973768000",
                        "x-dd-proxy-path",
                        "/http-api-path",
                        "x-dd-proxy-resource-path",
                        "/{Path}",
                        "x-dd-proxy-httpmethod",
                        "POST",
                        "x-dd-proxy-domain-name",
                        "id.execute-api.us-east-1.amazonaws.com",
                        "x-dd-proxy-stage",
                        "prod",
                        "x-dd-proxy-account-id",
                        "123456789012",
                        "x-dd-proxy-api-id",
                        "abcdef123456",
                        "X-Dd-Proxy-Region",
                        "us-east-1",
                        "x-dd-proxy-user",
                        "apigw-user",
                        NULL};
    dd_gateway_t gw;
    CHECK(parse(kv, &gw) == DD_GW_OK);
    CHECK(gw.kind == DD_GW_AWS_APIGATEWAY);
    CHECK(gw.request_time_ms == 1736973768000LL);
    CHECK_STR(gw.path, "/http-api-path");
    CHECK_STR(gw.resource_path, "/{Path}");
    CHECK_STR(gw.method, "POST");
    CHECK_STR(gw.domain, "id.execute-api.us-east-1.amazonaws.com");
    CHECK_STR(gw.stage, "prod");
    CHECK_STR(gw.account_id, "123456789012");
    CHECK_STR(gw.api_id, "abcdef123456");
    CHECK_STR(gw.region, "us-east-1");
    CHECK_STR(gw.user, "apigw-user");
    CHECK(gw.truncated == 0);
    CHECK_STR(dd_gateway_span_name(gw.kind), "aws.apigateway");
    CHECK_STR(dd_gateway_component(gw.kind), "aws-apigateway");
}

/* A path without its leading "/" (APIM's UrlTemplate "carts/{id}/items") gets one, as
 * dd-trace-js gives it; the resource path is taken as sent (dd-trace-js too). */
static void test_path_without_slash(void)
{
    const char *kv[] = {"x-dd-proxy",
                        "azure-apim",
                        "x-dd-proxy-request-time-ms",
                        "1736973768000",
                        "x-dd-proxy-path",
                        "carts/{id}/items",
                        "x-dd-proxy-resource-path",
                        "carts/{id}",
                        NULL};
    const char *quoted[] = {"x-dd-proxy",
                            "aws-apigateway",
                            "x-dd-proxy-request-time-ms",
                            "1736973768000",
                            "x-dd-proxy-path",
                            "'a'",
                            NULL};
    const char *slash[] = {"x-dd-proxy",
                           "aws-apigateway",
                           "x-dd-proxy-request-time-ms",
                           "1736973768000",
                           "x-dd-proxy-path",
                           "/",
                           NULL};
    dd_gateway_t gw;
    CHECK(parse(kv, &gw) == DD_GW_OK);
    CHECK_STR(gw.path, "/carts/{id}/items");
    CHECK_STR(gw.resource_path, "carts/{id}");
    CHECK(parse(quoted, &gw) == DD_GW_OK);
    CHECK_STR(gw.path, "/a");
    CHECK(parse(slash, &gw) == DD_GW_OK);
    CHECK_STR(gw.path, "/");
}

static void test_kinds_and_quotes(void)
{
    dd_gateway_t gw;
    const char *httpapi[] = {"x-dd-proxy", "AWS-HttpApi", "x-dd-proxy-request-time-ms",
                             "1736973767000", NULL};
    const char *apim[] = {"x-dd-proxy",
                          "azure-apim",
                          "x-dd-proxy-request-time-ms",
                          "1736973768000",
                          "x-dd-proxy-region",
                          "canada central",
                          NULL};
    const char *quoted[] = {"x-dd-proxy",
                            "'aws-apigateway'",
                            "x-dd-proxy-request-time-ms",
                            "'1736973768000'",
                            "x-dd-proxy-region",
                            "'us-east-1'",
                            "x-dd-proxy-stage",
                            "''",
                            NULL};
    CHECK(parse(httpapi, &gw) == DD_GW_OK && gw.kind == DD_GW_AWS_HTTPAPI);
    CHECK_STR(dd_gateway_span_name(DD_GW_AWS_HTTPAPI), "aws.httpapi");
    CHECK(parse(apim, &gw) == DD_GW_OK && gw.kind == DD_GW_AZURE_APIM);
    CHECK_STR(gw.region, "canada central");
    CHECK_STR(dd_gateway_span_name(DD_GW_AZURE_APIM), "azure.apim");
    CHECK_STR(dd_gateway_component(DD_GW_AZURE_APIM), "azure-apim");
    CHECK(parse(quoted, &gw) == DD_GW_OK && gw.kind == DD_GW_AWS_APIGATEWAY);
    CHECK_STR(gw.region, "us-east-1");
    CHECK(gw.stage == NULL); /* '' is an empty value */
    CHECK(gw.domain == NULL && gw.method == NULL && gw.path == NULL);
}

/* Azure Application Gateway and Front Door (dd-trace-js's azure-gw, azure-fd) have no time to
 * send: without one the span starts with the request (no_time, request_time_ms = now); every
 * other header is read as for the other gateways; a time they do send is checked as any. */
static void test_azure_without_time(void)
{
    const struct {
        const char *proxy, *span_name;
        dd_gw_kind_t kind;
    } kinds[] = {{"azure-gw", "azure.app-gateway", DD_GW_AZURE_GW},
                 {"AZURE-FD", "azure.frontdoor", DD_GW_AZURE_FD}};
    for (size_t k = 0; k < 2; k++) {
        const char *full[] = {"x-dd-proxy",
                              kinds[k].proxy,
                              "x-dd-proxy-httpmethod",
                              "GET",
                              "x-dd-proxy-path",
                              "api/orders/7",
                              "x-dd-proxy-resource-path",
                              "/api/orders/{id}",
                              "x-dd-proxy-domain-name",
                              "shop.azurefd.net",
                              "x-dd-proxy-stage",
                              "prod",
                              "x-dd-proxy-region",
                              "west europe",
                              "x-dd-proxy-account-id",
                              "sub-1",
                              "x-dd-proxy-api-id",
                              "api-1",
                              "x-dd-proxy-user",
                              "someone",
                              NULL};
        const char *empty_time[] = {"x-dd-proxy", kinds[k].proxy, "x-dd-proxy-request-time-ms",
                                    "''", NULL};
        const char *with_time[] = {"x-dd-proxy", kinds[k].proxy, "x-dd-proxy-request-time-ms",
                                   "1736973767000", NULL};
        const char *bad_time[] = {"x-dd-proxy", kinds[k].proxy, "x-dd-proxy-request-time-ms", "abc",
                                  NULL};
        const char *old_time[] = {"x-dd-proxy", kinds[k].proxy, "x-dd-proxy-request-time-ms", "0",
                                  NULL};
        dd_gateway_t gw;
        CHECK(parse(full, &gw) == DD_GW_OK);
        CHECK(gw.kind == kinds[k].kind);
        CHECK(gw.no_time == 1);
        CHECK(gw.request_time_ms == NOW_MS);
        CHECK_STR(gw.method, "GET");
        CHECK_STR(gw.path, "/api/orders/7");
        CHECK_STR(gw.resource_path, "/api/orders/{id}");
        CHECK_STR(gw.domain, "shop.azurefd.net");
        CHECK_STR(gw.stage, "prod");
        CHECK_STR(gw.region, "west europe");
        CHECK_STR(gw.account_id, "sub-1");
        CHECK_STR(gw.api_id, "api-1");
        CHECK_STR(gw.user, "someone");
        CHECK_STR(dd_gateway_span_name(gw.kind), kinds[k].span_name);
        CHECK_STR(dd_gateway_component(gw.kind),
                  kinds[k].proxy[6] == 'g' ? "azure-gw" : "azure-fd");
        CHECK(!dd_gateway_is_aws(gw.kind));
        CHECK(parse(empty_time, &gw) == DD_GW_OK && gw.no_time == 1 &&
              gw.request_time_ms == NOW_MS);
        CHECK(parse(with_time, &gw) == DD_GW_OK && gw.no_time == 0 &&
              gw.request_time_ms == 1736973767000LL);
        CHECK(parse(bad_time, &gw) == DD_GW_BAD_TIME);
        CHECK(parse(old_time, &gw) == DD_GW_TIME_TOO_OLD);
    }
    /* the others still need their time */
    const char *apim[] = {"x-dd-proxy", "azure-apim", NULL};
    const char *gw_typo[] = {"x-dd-proxy", "azure-gateway", NULL};
    dd_gateway_t gw;
    CHECK(parse(apim, &gw) == DD_GW_NO_TIME);
    CHECK(parse(gw_typo, &gw) == DD_GW_UNKNOWN_PROXY);
    CHECK(dd_gateway_is_aws(DD_GW_AWS_APIGATEWAY) && dd_gateway_is_aws(DD_GW_AWS_HTTPAPI));
    CHECK(!dd_gateway_is_aws(DD_GW_AZURE_APIM));
}

static void test_rejections(void)
{
    dd_gateway_t gw;
    struct {
        const char *proxy, *time;
        dd_gw_status_t want;
    } cases[] = {
        {NULL, NULL, DD_GW_ABSENT},
        {NULL, "1736973768000", DD_GW_NO_PROXY},
        {"", "1736973768000", DD_GW_EMPTY_PROXY},
        {"''", "1736973768000", DD_GW_EMPTY_PROXY},
        {"dummy-proxy", "1736973768000", DD_GW_UNKNOWN_PROXY},
        {"aws-apigateway2", "1736973768000", DD_GW_UNKNOWN_PROXY},
        {"aws-apigateway, aws-apigateway", "1736973768000", DD_GW_UNKNOWN_PROXY},
        {"aws-apigateway", NULL, DD_GW_NO_TIME},
        {"aws-apigateway", "", DD_GW_NO_TIME},
        {"aws-httpapi", NULL, DD_GW_NO_TIME},
        {"azure-apim", NULL, DD_GW_NO_TIME},
        {"azure-gw", NULL, DD_GW_OK},
        {"azure-fd", "", DD_GW_OK},
        {"azure-fd", "abc", DD_GW_BAD_TIME},
        {"azure-gw", "1736974068001", DD_GW_TIME_IN_FUTURE},
        {"aws-apigateway", "abc", DD_GW_BAD_TIME},
        {"aws-apigateway", "1.736973768e12", DD_GW_BAD_TIME},
        {"aws-apigateway", "1736973768000.5", DD_GW_BAD_TIME},
        {"aws-apigateway", "-1736973768000", DD_GW_BAD_TIME},
        {"aws-apigateway", "+1736973768000", DD_GW_BAD_TIME},
        {"aws-apigateway", "0x1944d0d6a40", DD_GW_BAD_TIME},
        {"aws-apigateway", "99999999999999999999999", DD_GW_BAD_TIME},
        {"aws-apigateway", "18446744073709551615", DD_GW_BAD_TIME},
        {"aws-apigateway", "1736973768000, 1736973768000", DD_GW_BAD_TIME},
        {"aws-apigateway", "1736970167999", DD_GW_TIME_TOO_OLD}, /* 1 h + 1 ms ago */
        {"aws-apigateway", "1736970168000", DD_GW_OK},           /* exactly 1 h ago */
        {"aws-apigateway", "1736974068000", DD_GW_OK},           /* exactly 5 min ahead */
        {"aws-apigateway", "1736974068001", DD_GW_TIME_IN_FUTURE},
        {"aws-apigateway", "0", DD_GW_TIME_TOO_OLD},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *kv[6] = {NULL};
        int n = 0;
        if (cases[i].proxy) {
            kv[n++] = "x-dd-proxy";
            kv[n++] = cases[i].proxy;
        }
        if (cases[i].time) {
            kv[n++] = "x-dd-proxy-request-time-ms";
            kv[n++] = cases[i].time;
        }
        dd_gw_status_t got = parse(kv, &gw);
        if (got != cases[i].want)
            fprintf(stderr, "case %zu (%s, %s): got %s\n", i, cases[i].proxy, cases[i].time,
                    dd_gateway_status_name(got));
        CHECK(got == cases[i].want);
    }
}

static void test_caps(void)
{
    dd_gateway_t gw;
    char *long_path = apr_palloc(pool, 5001), *long_domain = apr_palloc(pool, 2001);
    memset(long_path, 'p', 5000);
    long_path[0] = '/';
    long_path[5000] = '\0';
    memset(long_domain, 'd', 2000);
    long_domain[2000] = '\0';
    const char *kv[] = {"x-dd-proxy",
                        "aws-apigateway",
                        "x-dd-proxy-request-time-ms",
                        "1736973768000",
                        "x-dd-proxy-path",
                        long_path,
                        "x-dd-proxy-domain-name",
                        long_domain,
                        "x-dd-proxy-stage",
                        "st\xff\xfe",
                        NULL};
    CHECK(parse(kv, &gw) == DD_GW_OK);
    CHECK(strlen(gw.path) == 4096);
    CHECK(strlen(gw.domain) == 1024);
    CHECK_STR(gw.stage, "st\xef\xbf\xbd\xef\xbf\xbd");
    CHECK(gw.truncated == 1);
}

/* Header names match in any case and only exactly: every name in random case is found, and
 * every name with one byte changed (to another token character, case aside) or with a byte
 * added or removed is not, whatever its length. */
static void test_name_matching(void)
{
    static const char *const names[] = {
        "x-dd-proxy-httpmethod",  "x-dd-proxy-path",   "x-dd-proxy-resource-path",
        "x-dd-proxy-domain-name", "x-dd-proxy-stage",  "x-dd-proxy-region",
        "x-dd-proxy-account-id",  "x-dd-proxy-api-id", "x-dd-proxy-user"};
    static const char tokens[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                 "0123456789-_.!#$%&'*+^`|~@[]{}\r";
    uint64_t x = 0x2545F4914F6CDD1DULL;
    int right = 0, runs = 0;
    for (int r = 0; r < 20000; r++) {
        size_t which = (size_t)(r % 9), n = strlen(names[which]);
        char name[40];
        int mutate = r % 3;
        dd_gateway_t gw;
        const char *got, **fields[9];
        memcpy(name, names[which], n + 1);
        for (size_t i = 0; i < n; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            if (x & 1)
                name[i] = (char)apr_toupper(name[i]);
        }
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        if (mutate == 1) { /* one byte becomes another character (not the same letter) */
            size_t at = (size_t)(x % n);
            char c;
            do {
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                c = tokens[x % (sizeof(tokens) - 1)];
            } while (apr_tolower(c) == apr_tolower(name[at]));
            name[at] = c;
        } else if (mutate == 2) { /* one byte more or one less at the end */
            if (x & 2) {
                name[n - 1] = '\0';
            } else {
                name[n] = 's';
                name[n + 1] = '\0';
            }
        }
        const char *kv[] = {"x-dd-proxy",
                            "aws-apigateway",
                            "x-dd-proxy-request-time-ms",
                            "1736973768000",
                            name,
                            "v",
                            NULL};
        CHECK(parse(kv, &gw) == DD_GW_OK);
        fields[0] = &gw.method, fields[1] = &gw.path, fields[2] = &gw.resource_path;
        fields[3] = &gw.domain, fields[4] = &gw.stage, fields[5] = &gw.region;
        fields[6] = &gw.account_id, fields[7] = &gw.api_id, fields[8] = &gw.user;
        got = *fields[which];
        right += mutate == 0 ? (got && strcmp(got, "v") == 0) : got == NULL;
        runs++;
        if (mutate == 0 ? !got : got != NULL)
            fprintf(stderr, "name '%s' %s\n", name, got ? "matched" : "not matched");
    }
    CHECK(right == runs);

    /* x-dd-proxy itself, in any case; near misses are not it */
    const char *proxy_names[] = {"X-Dd-PrOxY", "x-dd-proxy", "X-DD-PROXY"};
    const char *not_proxy[] = {"x-dd-prox", "x-dd-proxyy", "x_dd-proxy", "x-dd-pr0xy",
                               "x-d-proxy", "x-dd\rproxy", "y-dd-proxy", "x-dd-proxz"};
    for (size_t i = 0; i < 3; i++) {
        const char *kv[] = {proxy_names[i], "aws-apigateway", "x-dd-proxy-request-time-ms",
                            "1736973768000", NULL};
        dd_gateway_t gw;
        CHECK(parse(kv, &gw) == DD_GW_OK);
    }
    for (size_t i = 0; i < sizeof(not_proxy) / sizeof(not_proxy[0]); i++) {
        const char *kv[] = {not_proxy[i], "aws-apigateway", "x-dd-proxy-request-time-ms",
                            "1736973768000", NULL};
        dd_gateway_t gw;
        CHECK(parse(kv, &gw) == DD_GW_NO_PROXY);
    }
}

static void test_strip(void)
{
    const char *kv[] = {"X-DD-PROXY", "a", "x-dd-proxy-path", "/p", "x-dd-proxy-path",    "/q",
                        "Host",       "h", "x-dd-proxyish",   "z",  "x-datadog-trace-id", "1",
                        NULL};
    apr_table_t *t = headers(kv);
    dd_gateway_strip(t);
    CHECK(apr_table_get(t, "x-dd-proxy") == NULL);
    CHECK(apr_table_get(t, "x-dd-proxy-path") == NULL);
    CHECK(apr_table_get(t, "x-dd-proxyish") == NULL);
    CHECK_STR(apr_table_get(t, "host"), "h");
    CHECK_STR(apr_table_get(t, "x-datadog-trace-id"), "1");
    CHECK(apr_table_elts(t)->nelts == 2);
}

int main(void)
{
    apr_initialize();
    apr_pool_create(&pool, NULL);
    test_full_rest();
    test_path_without_slash();
    test_kinds_and_quotes();
    test_azure_without_time();
    test_rejections();
    test_caps();
    test_strip();
    test_name_matching();
    apr_pool_destroy(pool);
    apr_terminate();
    UNIT_DONE();
}
